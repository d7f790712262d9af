"""``check_env(env)``: validate a ``PufferEnv`` or a ``VecEnv`` against its contract.

Checks spaces, the types, shapes, dtypes and bounds of what ``reset``/``step`` return, that the
same seed gives the same trajectory, that observations are not aliased across steps (one-agent),
that a ``VecEnv`` returns views of its in-place buffers and keeps final observations of ended rows,
and that invalid actions are refused. Raises ``EnvCheckError`` saying what is wrong and how to fix
it; returns ``None`` when the env passes.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from puffer.env import Buffers, PufferEnv, StepResult, VecEnv, array_space
from puffer.spaces import Box, Dict, Discrete, MultiDiscrete, Space, Tuple

__all__ = ["EnvCheckError", "check_env"]


class EnvCheckError(ValueError):
    """The env breaks its contract; the message says what and how to fix it."""


def check_env(env: PufferEnv | VecEnv, steps: int = 200, seed: int = 0) -> None:
    """Validate ``env`` (a ``PufferEnv`` or a ``VecEnv``) over ``steps`` random steps.

    The env is reset and stepped (so its state changes) but not closed.
    """
    if isinstance(env, VecEnv):
        _VecChecker(env, steps, seed).run()
    elif isinstance(env, PufferEnv):
        _OneChecker(env, steps, seed).run()
    else:
        hint = (
            " Wrap gymnasium envs: puffer.emulation.GymnasiumEnv(env)."
            if type(env).__module__.startswith("gymnasium")
            else " Subclass puffer.env.PufferEnv (one agent) or puffer.env.VecEnv (batched)."
        )
        raise EnvCheckError(f"check_env: {env!r} is neither a PufferEnv nor a VecEnv.{hint}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and not isinstance(a, np.ndarray):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def _copy(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_copy(v) for v in x)
    return np.array(x, copy=True)


class _Checker:
    def __init__(self, env: Any, steps: int, seed: int):
        self.env, self.steps, self.seed = env, int(steps), int(seed)
        self.name = type(env).__name__

    def fail(self, problem: str, fix: str) -> EnvCheckError:
        return EnvCheckError(f"{self.name}: {problem}. Fix: {fix}")

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except EnvCheckError:
            raise
        except Exception as e:
            raise self.fail(f"{what} raised {type(e).__name__}: {e}", "see the error above") from e

    def check_space(self, attr: str, space: Any) -> None:
        if not isinstance(space, Space):
            gym = type(space).__module__.startswith("gymnasium")
            raise self.fail(
                f"{attr} is {space!r}, not a puffer.spaces.Space",
                "convert it with puffer.spaces.from_gymnasium(space)"
                if gym
                else f"set {attr} to a Discrete, MultiDiscrete, Box, Dict or Tuple",
            )

    def check_value(self, space: Space, value: Any, what: str) -> None:
        """A one-agent observation: exact type, dtype and shape, then bounds."""
        if isinstance(space, Dict):
            if not isinstance(value, Mapping) or set(value) != set(space.spaces):
                raise self.fail(
                    f"{what} is {type(value).__name__}, expected a dict with keys {list(space)}",
                    "return one value per key of the Dict space",
                )
            for k, sub in space.items():
                self.check_value(sub, value[k], f"{what}[{k!r}]")
            return
        if isinstance(space, Tuple):
            if not isinstance(value, tuple) or len(value) != len(space):
                raise self.fail(
                    f"{what} is {type(value).__name__}, expected a tuple of {len(space)} values",
                    "return one value per subspace of the Tuple space",
                )
            for i, (sub, v) in enumerate(zip(space, value)):
                self.check_value(sub, v, f"{what}[{i}]")
            return
        if isinstance(space, Discrete):
            if isinstance(value, (bool, np.bool_)) or not (
                isinstance(value, (int, np.integer))
                or (
                    isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "iu"
                )
            ):
                raise self.fail(
                    f"{what} is {value!r} ({type(value).__name__}), expected an int for {space!r}",
                    "return an int",
                )
        else:
            if not isinstance(value, np.ndarray):
                raise self.fail(
                    f"{what} is a {type(value).__name__}, expected a numpy array",
                    f"return np.asarray(obs, dtype=np.{space.dtype})",
                )
            if value.shape != space.shape:
                raise self.fail(
                    f"{what} has shape {value.shape}, but the space {space!r} says {space.shape}",
                    "return arrays of the space's shape or fix the space",
                )
            if value.dtype != space.dtype:
                raise self.fail(
                    f"{what} has dtype {value.dtype}, but the space {space!r} says {space.dtype}",
                    f"return np.asarray(obs, dtype=np.{space.dtype}) or change the space's dtype",
                )
        try:
            space.check(value, where=what)
        except ValueError as e:
            raise self.fail(
                f"{e}", "keep observations inside the space or widen its bounds"
            ) from None


class _OneChecker(_Checker):
    env: PufferEnv

    def run(self) -> None:
        env = self.env
        self.check_space("observation_space", getattr(env, "observation_space", None))
        self.check_space("action_space", getattr(env, "action_space", None))
        first, first_resets = self.rollout()
        second, _ = self.rollout()
        for t, (a, b) in enumerate(zip(first, second)):
            if not _same(a, b):
                what = "the seeded reset" if t == 0 else f"entry {t}"
                if first_resets and t > first_resets[0]:
                    raise self.fail(
                        f"two runs from reset(seed={self.seed}) with the same actions agree until "
                        f"the first reset() without a seed, then differ ({what}: {a!r} vs {b!r})",
                        "reset(seed=None) must keep using the RNG seeded before: "
                        "if seed is not None: self.rng = np.random.default_rng(seed)",
                    )
                raise self.fail(
                    f"two runs from reset(seed={self.seed}) with the same actions differ at "
                    f"{what}: {a!r} vs {b!r}",
                    "draw all randomness from an RNG created in reset(seed), e.g. "
                    "self.rng = np.random.default_rng(seed) (not np.random.* or random.*)",
                )
        self.check_refuses_bad_action()

    def rollout(self) -> tuple[list[Any], list[int]]:
        """The trace of a seeded run and where in it the unseeded resets happened."""
        env = self.env
        rng = np.random.default_rng(self.seed)
        resets: list[int] = []
        out = self.call(f"reset(seed={self.seed})", env.reset, self.seed)
        obs = self.check_reset(out)
        trace: list[Any] = [_copy(obs)]
        held = (obs, _copy(obs))
        for t in range(1, self.steps + 1):
            action = env.action_space.sample(rng)
            result = self.call(f"step({action!r})", env.step, action)
            self.check_step(result, t)
            if not _same(held[0], held[1]):
                raise self.fail(
                    f"the observation returned before step {t} changed when step {t} ran: it is "
                    "an array the env keeps writing into",
                    "return a fresh array (e.g. self.state.copy()) from reset and step",
                )
            trace.append(
                (
                    _copy(result.observation),
                    float(result.reward),
                    result.terminated,
                    result.truncated,
                )
            )
            held = (result.observation, _copy(result.observation))
            if result.terminated or result.truncated:
                obs = self.check_reset(self.call("reset()", env.reset, None))
                resets.append(len(trace))
                trace.append(_copy(obs))
                held = (obs, _copy(obs))
        return trace, resets

    def check_reset(self, out: Any) -> Any:
        if not isinstance(out, tuple) or len(out) != 2:
            raise self.fail(
                f"reset() returned {type(out).__name__}, not (observation, info)",
                "return obs, {}",
            )
        obs, info = out
        if not isinstance(info, dict):
            raise self.fail(f"reset() info is {type(info).__name__}, not a dict", "return obs, {}")
        self.check_value(self.env.observation_space, obs, "reset() observation")
        return obs

    def check_step(self, result: Any, t: int) -> None:
        where = f"step {t}"
        if not isinstance(result, StepResult):
            raise self.fail(
                f"{where} returned {type(result).__name__}",
                "return StepResult(observation, reward, terminated, truncated, info)",
            )
        self.check_value(self.env.observation_space, result.observation, f"{where} observation")
        r = result.reward
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real):
            raise self.fail(
                f"{where} reward is {r!r} ({type(r).__name__}), not a real number",
                "return a float (e.g. float(reward))",
            )
        if not np.isfinite(r):
            raise self.fail(f"{where} reward is {r}", "return finite rewards")
        for flag in ("terminated", "truncated"):
            v = getattr(result, flag)
            if not isinstance(v, (bool, np.bool_)):
                raise self.fail(
                    f"{where} {flag} is {v!r} ({type(v).__name__}), not a bool",
                    f"return bool({flag})",
                )
        if not isinstance(result.info, dict):
            raise self.fail(
                f"{where} info is {type(result.info).__name__}, not a dict", "return {}"
            )

    def check_refuses_bad_action(self) -> None:
        env = self.env
        self.call(f"reset(seed={self.seed})", env.reset, self.seed)
        bad = _bad_action(env.action_space)
        if bad is None:
            return
        try:
            env.step(bad)
        except ValueError:
            return
        except Exception as e:
            raise self.fail(
                f"step({bad!r}) with an invalid action raised {type(e).__name__}, not ValueError",
                "subclass puffer.env.PufferEnv, which checks actions before step runs",
            ) from e
        raise self.fail(
            f"step({bad!r}) accepted an action outside {env.action_space!r}",
            "subclass puffer.env.PufferEnv, which checks actions before step runs",
        )


def _bad_action(space: Space) -> Any:
    if isinstance(space, Discrete):
        return space.start + space.n
    if isinstance(space, MultiDiscrete):
        return space.nvec.copy()
    if isinstance(space, Box):
        return np.zeros((*space.shape, 2), space.dtype)  # wrong shape
    return None


class _VecChecker(_Checker):
    env: VecEnv

    def run(self) -> None:
        env = self.env
        obs_space = getattr(env, "single_observation_space", None)
        act_space = getattr(env, "single_action_space", None)
        self.check_space("single_observation_space", obs_space)
        self.check_space("single_action_space", act_space)
        for attr, space in (("observation", obs_space), ("action", act_space)):
            try:
                array_space(space, f"single_{attr}_space")
            except TypeError as e:
                raise self.fail(
                    str(e), "flatten Dict/Tuple spaces with puffer.spaces.flatten_space"
                ) from None
        n = env.num_envs
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise self.fail(f"num_envs is {n!r}", "set num_envs to a positive int")
        self.check_buffers()
        if env.batch_size != n:
            self.check_async()
            return
        first, second = self.rollout(), self.rollout()
        for t, (a, b) in enumerate(zip(first, second)):
            if not _same(a, b):
                what = "reset" if t == 0 else f"step {t}"
                raise self.fail(
                    f"two runs from reset(seed={self.seed}) with the same actions differ at {what}",
                    "draw all randomness from an RNG seeded in reset(seed)",
                )
        self.check_refuses_bad_actions()

    def check_buffers(self) -> None:
        env = self.env
        specs = Buffers.specs(env.single_observation_space, env.single_action_space, env.num_envs)
        del specs["actions"]  # the env's input, not part of what it returns
        for name, (shape, dtype) in specs.items():
            arr = getattr(env, name, None)
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = (
                    f"shape {arr.shape} dtype {arr.dtype}"
                    if isinstance(arr, np.ndarray)
                    else repr(arr)
                )
                raise self.fail(
                    f"buffer {name} is {got}, expected shape {shape} dtype {dtype}",
                    "allocate buffers with puffer.env.Buffers.allocate (VecEnv.__init__ does)",
                )

    def check_views(self, out: tuple[Any, ...], names: tuple[str, ...], what: str) -> None:
        for value, name in zip(out, names):
            buffer = getattr(self.env, name)
            if not (isinstance(value, np.ndarray) and np.shares_memory(value, buffer)):
                raise self.fail(
                    f"{what} returned {name} that are not a view of env.{name}",
                    f"write into env.{name} in place and return it (no copies)",
                )

    def check_infos(self, infos: Any, ended: int, what: str) -> None:
        if not isinstance(infos, dict):
            raise self.fail(f"{what} infos is {type(infos).__name__}, not a dict", "return {}")
        for key, value in infos.items():
            if not isinstance(value, np.ndarray) or value.ndim != 1 or len(value) > max(ended, 0):
                got = (
                    f"shape {value.shape}"
                    if isinstance(value, np.ndarray)
                    else type(value).__name__
                )
                raise self.fail(
                    f"{what} infos[{key!r}] is {got} with {ended} episodes ended",
                    "report one value per episode that ended in this step, as a 1-D array",
                )

    def rows_in_space(self, arr: np.ndarray, what: str, rows: np.ndarray | None = None) -> None:
        space = self.env.single_observation_space
        values = arr if rows is None else arr[rows]
        try:
            space.check_batch(values, len(values), where=what)
        except ValueError as e:
            raise self.fail(
                str(e), "keep observations inside the space or widen its bounds"
            ) from None

    def rollout(self) -> list[Any]:
        env = self.env
        n, space = env.num_envs, env.single_action_space
        rng = np.random.default_rng(self.seed)
        out = self.call(f"reset(seed={self.seed})", env.reset, self.seed)
        if not isinstance(out, tuple) or len(out) != 2:
            raise self.fail("reset() did not return (observations, infos)", "return both")
        self.check_views(out[:1], ("observations",), "reset()")
        self.check_infos(out[1], 0, "reset()")
        self.rows_in_space(out[0], "reset() observations")
        trace: list[Any] = [out[0].copy()]
        poison = env.single_observation_space.dtype.kind == "f"
        for t in range(1, self.steps + 1):
            actions = space.sample_batch(n, rng)
            if poison:  # rows that end must overwrite this with their final observation
                env.final_observations.fill(np.nan)
            result = self.call(f"step() {t}", env.step, actions)
            if not isinstance(result, tuple) or len(result) != 5:
                raise self.fail(
                    f"step() returned {type(result).__name__}, not a 5-tuple",
                    "return (observations, rewards, terminals, truncations, infos)",
                )
            obs, rewards, terms, truncs, infos = result
            names = ("observations", "rewards", "terminals", "truncations")
            self.check_views(result[:4], names, f"step {t}")
            done = np.flatnonzero(terms | truncs)
            self.check_infos(infos, len(done), f"step {t}")
            self.rows_in_space(obs, f"step {t} observations")
            if not np.isfinite(rewards).all():
                raise self.fail(
                    f"step {t} rewards are not all finite: {rewards}", "return finite rewards"
                )
            if poison and len(done):
                unwritten = np.isnan(env.final_observations[done]).all(
                    axis=tuple(range(1, env.final_observations.ndim))
                )
                if unwritten.any():
                    row = int(done[np.argmax(unwritten)])
                    raise self.fail(
                        f"step {t}: row {row} ended but final_observations[{row}] was not written",
                        "copy each ended row's last observation into final_observations before "
                        "resetting the row (NativeVecEnv does this)",
                    )
            if len(done):
                self.rows_in_space(
                    env.final_observations, f"step {t} final_observations of ended rows", done
                )
            trace.append(
                (
                    obs.copy(),
                    rewards.copy(),
                    terms.copy(),
                    truncs.copy(),
                    env.final_observations[done].copy(),
                )
            )
        return trace

    def check_refuses_bad_actions(self) -> None:
        env, n = self.env, self.env.num_envs
        space = env.single_action_space
        self.call(f"reset(seed={self.seed})", env.reset, self.seed)
        bad = np.zeros((n + 1, *space.shape), space.dtype)
        try:
            env.step(bad)
        except ValueError:
            return
        except Exception as e:
            raise self.fail(
                f"step() with actions of the wrong shape {bad.shape} raised {type(e).__name__}, "
                "not ValueError",
                "validate actions with single_action_space.check_batch (VecEnv.send does)",
            ) from e
        raise self.fail(
            f"step() accepted actions of shape {bad.shape} for {n} rows",
            "validate actions with single_action_space.check_batch (VecEnv.send does)",
        )

    def check_async(self) -> None:
        env = self.env
        space = env.single_action_space
        rng = np.random.default_rng(self.seed)
        self.call("async_reset()", env.async_reset, self.seed)
        for t in range(self.steps):
            out = self.call("recv()", env.recv)
            if not isinstance(out, tuple) or len(out) != 6:
                raise self.fail(
                    "recv() did not return (obs, rewards, terminals, truncations, infos, env_ids)",
                    "return all six",
                )
            obs, rewards, terms, truncs, infos, env_ids = out
            k = len(env_ids)
            for name, arr in (("rewards", rewards), ("terminals", terms), ("truncations", truncs)):
                if not isinstance(arr, np.ndarray) or arr.shape != (k,):
                    raise self.fail(
                        f"recv() {name} is not an array of one value per env id ({k})",
                        "return one row per env id",
                    )
            self.rows_in_space(obs, f"recv() {t} observations")
            self.check_infos(infos, int((terms | truncs).sum()), f"recv() {t}")
            self.call("send()", env.send, space.sample_batch(k, rng))
