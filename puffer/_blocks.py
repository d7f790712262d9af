"""Block envs: one ``VecEnv`` over a contiguous block of a vectorizer's rows.

A ``Recipe`` builds the block env of rows ``lo..hi`` the same way in this process (``Serial``) and
in a worker process (``Multiprocessing``), so both backends step identical envs (``puffer.vector``).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer.env import Buffers, Infos, PufferEnv, VecEnv
from puffer.seeding import row_seed
from puffer.spaces import Dict, Discrete, Space, Tuple


def _is_scalar(value: Any) -> bool:
    if isinstance(value, (bool, int, float, np.bool_, np.number)):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf"


def infos_from(ended: list[dict[str, Any]]) -> Infos:
    """``Infos`` from the info dicts of the steps that ended episodes (numeric scalars only)."""
    values: dict[str, list[Any]] = {}
    for info in ended:
        for key, value in info.items():
            if _is_scalar(value):
                values.setdefault(key, []).append(value)
    return {key: np.asarray(v) for key, v in values.items()}


def merge_infos(parts: Sequence[Infos]) -> Infos:
    """Concatenate per-block ``Infos`` in block order."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return parts[0] if parts else {}
    keys: dict[str, None] = {}
    for p in parts:
        keys.update(dict.fromkeys(p))
    return {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}


def step_in_place(env: VecEnv) -> Infos:
    """Step ``env`` with the actions already in ``env.actions``; return its ``Infos``."""
    if type(env).send is VecEnv.send and type(env).recv is VecEnv.recv:
        return env._step()  # the subclass contract: skips re-validating checked actions
    env.send(env.actions)
    return env.recv()[4]


def _has_wrapper(env: Any, kind: type) -> bool:
    while env is not None:
        if isinstance(env, kind):
            return True
        env = getattr(env, "__dict__", {}).get("env")
    return False


def as_one_agent(obj: Any) -> tuple[PufferEnv, Space]:
    """``obj`` as a ``PufferEnv`` with flat observations and episode stats; its original space."""
    from puffer.wrappers import EpisodeStats

    if not isinstance(obj, PufferEnv):
        gym = sys.modules.get("gymnasium")
        if gym is None or not isinstance(obj, gym.Env):
            raise TypeError(
                f"env_creator returned {type(obj).__name__}; expected a puffer PufferEnv, a "
                "gymnasium.Env or a puffer VecEnv"
            )
        from puffer.emulation import GymnasiumEnv

        obj = GymnasiumEnv(obj)
    original = getattr(obj, "original_observation_space", obj.observation_space)
    if isinstance(obj.observation_space, (Dict, Tuple)):
        from puffer.wrappers import FlattenObservation

        obj = FlattenObservation(obj)
    if not _has_wrapper(obj, EpisodeStats):
        obj = EpisodeStats(obj)
    return obj, original


class OneAgents(VecEnv):
    """A block of one-agent ``PufferEnv``s, one per row, auto-reset when an episode ends.

    ``reset(seed)`` takes the run's seed: the env in row ``i`` is reset with
    ``row_seed(seed, first_row + i)``, so a row's stream does not depend on how rows are split.
    """

    def __init__(self, envs: list[PufferEnv], buffers: Buffers | None = None, first_row: int = 0):
        self.envs = envs
        self.first_row = first_row
        super().__init__(envs[0].observation_space, envs[0].action_space, len(envs), buffers)
        self._as_list = isinstance(self.single_action_space, Discrete)

    def _reset(self, seed: int | None) -> Infos:
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        for i, env in enumerate(self.envs):
            s = None if seed is None else row_seed(seed, self.first_row + i)
            self._put(self.observations, i, env.reset(s)[0])
        return {}

    def _step(self) -> Infos:
        actions = self.actions.tolist() if self._as_list else self.actions
        ended = []
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            self.rewards[i] = reward
            self.terminals[i] = terminated
            self.truncations[i] = truncated
            if terminated or truncated:
                self._put(self.final_observations, i, obs)
                obs = env.reset()[0]
                ended.append(info)
            self._put(self.observations, i, obs)
        return infos_from(ended) if ended else {}

    def _put(self, buffer: np.ndarray, i: int, obs: Any) -> None:
        try:
            buffer[i] = obs
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{type(self.envs[i].unwrapped).__name__} returned an observation that does not "
                f"fit its observation_space {self.single_observation_space!r}: {obs!r:.80} ({e})"
            ) from e

    def state(self) -> dict[str, Any]:
        try:
            blob = pickle.dumps(self.envs, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # NotImplementedError: a checkpoint is still written, without envs
            raise NotImplementedError(
                f"state(): cannot pickle the one-agent env {type(self.envs[0]).__name__} "
                f"({type(e).__name__}: {e}); make it picklable to checkpoint the env exactly"
            ) from e
        return {
            "envs": np.frombuffer(blob, np.uint8).copy(),
            "observations": self.observations.copy(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        envs = pickle.loads(np.asarray(state["envs"], np.uint8).tobytes())
        if len(envs) != self.num_envs:
            raise ValueError(f"load_state: state holds {len(envs)} envs, block has {self.num_envs}")
        for env in self.envs:
            env.close()
        self.envs = envs
        self.observations[...] = state["observations"]
        self._restored()

    def render(self, row: int = 0) -> Any:
        return self.envs[row].render()

    def _close(self) -> None:
        for env in self.envs:
            env.close()


class Concat(VecEnv):
    """A block of native ``VecEnv``s of ``k`` rows each, side by side.

    ``reset(seed)`` takes the run's seed: sub ``j`` is reset with ``row_seed(seed, r)``, ``r`` its
    first row (``first_row + j * k``).
    """

    def __init__(self, subs: list[VecEnv], buffers: Buffers | None = None, first_row: int = 0):
        self.subs = subs
        self.first_row = first_row
        self.k = subs[0].num_envs
        super().__init__(
            subs[0].single_observation_space,
            subs[0].single_action_space,
            self.k * len(subs),
            buffers,
        )
        self.original_observation_space = subs[0].original_observation_space

    def bind_buffers(self, buffers: Buffers) -> None:
        super().bind_buffers(buffers)
        for j, sub in enumerate(self.subs):
            sub.bind_buffers(buffers[j * self.k : (j + 1) * self.k])

    def _reset(self, seed: int | None) -> Infos:
        return merge_infos(
            [
                sub.reset(None if seed is None else row_seed(seed, self.first_row + j * self.k))[1]
                for j, sub in enumerate(self.subs)
            ]
        )

    def _step(self) -> Infos:
        return merge_infos([step_in_place(sub) for sub in self.subs])

    def state(self) -> dict[str, Any]:
        return {"subs": [sub.state() for sub in self.subs]}

    def load_state(self, state: dict[str, Any]) -> None:
        for sub, s in zip(self.subs, state["subs"], strict=True):
            sub.load_state(s)
        self._restored()

    def render(self, row: int = 0) -> Any:
        return self.subs[row // self.k].render(row % self.k)

    def _close(self) -> None:
        for sub in self.subs:
            sub.close()


@dataclass
class Recipe:
    """How to build the block env of rows ``lo..hi``; picklable when the creator is."""

    creator: str | Callable[..., Any]
    env_kwargs: dict[str, Any]
    kind: str  # "native": a registry name; "vec": creator returns a VecEnv; "one": one agent
    rows_per_env: int

    def build(self, lo: int, hi: int, seed: int, buffers: Buffers) -> VecEnv:
        """The block env of rows ``lo..hi`` writing into ``buffers`` (views of those rows).

        Reset it with ``block_seed(seed, lo)``: a native block is one env with one generator,
        seeded ``row_seed(seed, lo)``; the other kinds take the run's seed and derive each row's.
        """
        n = hi - lo
        if self.kind == "native":
            import puffer.envs

            env = puffer.envs.make(
                self.creator, num_envs=n, seed=row_seed(seed, lo), **self.env_kwargs
            )
            env.bind_buffers(buffers)
            return env
        made = [self.creator(**self.env_kwargs) for _ in range(n // self.rows_per_env)]
        if self.kind == "vec":
            for sub in made:
                check_vec(sub, self.rows_per_env)
            return Concat(made, buffers, first_row=lo)
        return OneAgents([as_one_agent(obj)[0] for obj in made], buffers, first_row=lo)

    def block_seed(self, seed: int | None, lo: int) -> int | None:
        """The seed to reset the block env of first row ``lo`` with, for the run's ``seed``."""
        if seed is None or self.kind != "native":
            return seed
        return row_seed(seed, lo)


def check_vec(env: VecEnv, rows: int) -> None:
    if env.num_envs != rows:
        raise ValueError(
            f"env_creator returned a VecEnv with {env.num_envs} rows, earlier {rows}: every call "
            "must return the same number of rows"
        )
    if env.batch_size != env.num_envs:
        raise ValueError(
            f"env_creator returned an asynchronous VecEnv (batch_size={env.batch_size} of "
            f"{env.num_envs} rows); return a synchronous one"
        )
