"""The two environment contracts.

``PufferEnv`` is what a user writes: one agent, Gymnasium-like, ``reset(seed) -> (obs, info)`` and
``step(action) -> StepResult``. ``VecEnv`` is what the trainer consumes: ``num_envs`` rows stepped
together, writing into preallocated numpy buffers and auto-resetting finished rows.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from puffer.spaces import Box, Discrete, MultiDiscrete, Space

__all__ = ["Buffers", "EnvClosedError", "Infos", "PufferEnv", "ResetNeeded", "StepResult", "VecEnv"]

Infos = dict[str, np.ndarray]
"""What a ``VecEnv`` reports about episodes that ended in a step: each key maps to a 1-D array with
one value per ended episode that reported it (``episode_return``, ``episode_length``, env-specific
keys such as ``success``). Empty on steps where no episode ended."""


def check_int(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``owner`` and ``name`` unless it is a whole
    number (an int, or a float such as 500.0) of at least ``minimum``."""
    try:
        ok = int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):  # None, "3", NaN, inf
        ok = False
    if not ok:
        need = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{owner}: {name}={value!r} must be {need}")
    return int(value)


class ResetNeeded(RuntimeError):
    """``step`` was called before ``reset``, or after the episode ended without a new ``reset``."""


class EnvClosedError(RuntimeError):
    """The environment was used after ``close()``."""


class StepResult(NamedTuple):
    """What ``PufferEnv.step`` returns; unpacks like Gymnasium's 5-tuple.

    ``observation`` is a value of ``observation_space``; ``reward`` a float; ``terminated`` means the
    episode reached a terminal state (no bootstrapping); ``truncated`` that it was cut short (e.g. a
    time limit), so the value of ``observation`` should be bootstrapped.
    """

    observation: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        """The episode ended: ``terminated or truncated``."""
        return bool(self.terminated or self.truncated)


# Lifecycle phases, tracked on the instance so that subclasses need not call super().__init__().
_NEW, _READY, _ENDED, _CLOSED = "new", "ready", "ended", "closed"


def _lifecycle_error(name: str, method: str, phase: str) -> RuntimeError:
    if phase == _CLOSED:
        return EnvClosedError(f"{name}.{method}() called after close(); create a new env")
    if phase == _NEW:
        return ResetNeeded(f"{name}.{method}() called before reset(); call reset() first")
    return ResetNeeded(
        f"{name}.{method}() called after the episode ended (terminated or truncated); "
        "call reset() to start a new one"
    )


def _require_space(space: Any, what: str) -> None:
    if not isinstance(space, Space):
        hint = (
            " (convert gymnasium spaces with puffer.spaces.from_gymnasium)"
            if type(space).__module__.startswith("gymnasium")
            else ""
        )
        raise TypeError(f"{what} is {space!r}, not a puffer.spaces.Space{hint}")


def _check_spaces(env: PufferEnv) -> None:
    for attr in ("observation_space", "action_space"):
        _require_space(getattr(env, attr, None), f"{type(env).__name__}.{attr}")


def _guard_reset(fn: Any) -> Any:
    @functools.wraps(fn)
    def reset(self: PufferEnv, seed: int | None = None, **kw: Any) -> tuple[Any, dict[str, Any]]:
        phase = self.__dict__.get("_puffer_phase", _NEW)
        if phase == _CLOSED:
            raise _lifecycle_error(type(self).__name__, "reset", _CLOSED)
        if phase == _NEW:
            _check_spaces(self)
        out = fn(self, seed=seed, **kw)
        if type(out) is not tuple or len(out) != 2:
            raise TypeError(
                f"{type(self).__name__}.reset() returned {type(out).__name__}; it must return "
                "a tuple (observation, info)"
            )
        self._puffer_phase = _READY
        return out

    reset._puffer_guarded = True  # type: ignore[attr-defined]
    return reset


def _guard_step(fn: Any) -> Any:
    @functools.wraps(fn)
    def step(self: PufferEnv, action: Any) -> StepResult:
        phase = self.__dict__.get("_puffer_phase", _NEW)
        if phase != _READY:
            raise _lifecycle_error(type(self).__name__, "step", phase)
        action = self.action_space.check(action, where=f"{type(self).__name__}.step")
        result = fn(self, action)
        if type(result) is not StepResult:
            if not isinstance(result, tuple) or len(result) != 5:
                raise TypeError(
                    f"{type(self).__name__}.step() returned {type(result).__name__}"
                    f"{f' of length {len(result)}' if isinstance(result, tuple) else ''}; it must "
                    "return StepResult(observation, reward, terminated, truncated, info)"
                )
            result = StepResult(*result)
        if result.terminated or result.truncated:
            self._puffer_phase = _ENDED
        return result

    step._puffer_guarded = True  # type: ignore[attr-defined]
    return step


def _guard_close(fn: Any) -> Any:
    @functools.wraps(fn)
    def close(self: PufferEnv) -> None:
        # Each close() in the class chain runs once: the outermost call marks the env closed,
        # and the super().close() calls made while it runs still run their own bodies.
        d = self.__dict__
        running = d.get("_puffer_closing")
        if running is None:
            if d.get("_puffer_phase") == _CLOSED:
                return
            self._puffer_phase = _CLOSED
            running = d["_puffer_closing"] = {fn}
            try:
                fn(self)
            finally:
                del d["_puffer_closing"]
        elif fn not in running:
            running.add(fn)
            fn(self)

    close._puffer_guarded = True  # type: ignore[attr-defined]
    return close


class PufferEnv:
    """One-agent environment: the simple API a user writes.

    Subclasses set ``observation_space`` and ``action_space`` (class attributes, instance attributes
    or properties) and implement ``reset`` and ``step``. ``step`` receives an action already checked
    against ``action_space`` (wrong shape, dtype, range or NaN raise ``ValueError`` naming the env),
    and calling it before ``reset``, after the episode ended, or after ``close`` raises a clear error.
    These checks are added to subclasses automatically, as are clear errors for a ``reset`` without
    a ``seed`` parameter (at class definition), non-puffer spaces, and wrong return values.
    ``reset(seed=None)`` should continue the env's RNG; a seed restarts it.

    Example::

        class MyEnv(PufferEnv):
            observation_space = Box.uniform([1], 0.0, 1.0)
            action_space = Discrete(2)

            def reset(self, seed=None):
                self.state = 0.0
                return np.array([self.state], np.float32), {}

            def step(self, action):
                self.state = 1.0 if action == 1 else 0.0
                obs = np.array([self.state], np.float32)
                return StepResult(obs, self.state, terminated=True, truncated=False, info={})
    """

    observation_space: Space
    action_space: Space

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        reset = cls.__dict__.get("reset")
        if reset is not None and not getattr(reset, "_puffer_guarded", False):
            try:
                params = inspect.signature(reset).parameters
            except (TypeError, ValueError):  # not introspectable: let reset() itself fail
                params = {"seed": None}  # type: ignore[dict-item]
            if "seed" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                raise TypeError(
                    f"{cls.__name__}.reset{inspect.signature(reset)} must accept a seed "
                    "argument: def reset(self, seed=None)"
                )
        for name, guard in (
            ("reset", _guard_reset),
            ("step", _guard_step),
            ("close", _guard_close),
        ):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_puffer_guarded", False):
                setattr(cls, name, guard(fn))

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``seed`` reseeds the env's RNG. Returns ``(observation, info)``."""
        raise NotImplementedError

    def step(self, action: Any) -> StepResult:
        """Advance one step with a value of ``action_space``."""
        raise NotImplementedError

    def render(self) -> Any:
        """A text (ANSI) or image (uint8 HxWx3) rendering of the current state; None if unsupported."""
        return None

    def close(self) -> None:
        """Release resources. Safe to call twice."""

    @property
    def unwrapped(self) -> PufferEnv:
        return self

    def __enter__(self) -> PufferEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the batched contract -----------------------------------------------------------------------


def array_space(space: Space, what: str) -> None:
    """Raise unless ``space`` is stored as one array per row (Box, Discrete, MultiDiscrete)."""
    _require_space(space, what)
    if not isinstance(space, (Box, Discrete, MultiDiscrete)):
        raise TypeError(
            f"{what} {space!r} cannot be stored in a VecEnv buffer: use Box, Discrete or "
            "MultiDiscrete (Dict/Tuple observations are flattened by puffer.vector.make)"
        )


@dataclass
class Buffers:
    """The arrays a ``VecEnv`` writes in place, one row per env.

    ``observations`` ``(n, *obs_shape)`` of the observation dtype; ``rewards`` ``(n,)`` float32;
    ``terminals``/``truncations`` ``(n,)`` bool; ``final_observations`` like ``observations``, where
    row ``i`` holds the last observation of the episode that ended in this step (valid only where
    ``terminals[i] | truncations[i]``, since ``observations[i]`` already starts the next episode);
    ``actions`` ``(n, *act_shape)`` of the action dtype, read by the env on ``step``;
    ``masks`` ``(n,)`` bool, True where the row holds a live agent whose step counts (always True
    for one-agent envs; a multi-agent env sets it False for agents that are done or not yet
    present, and the trainer leaves those rows out of the loss and the statistics).
    """

    observations: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    final_observations: np.ndarray
    actions: np.ndarray
    masks: np.ndarray

    @staticmethod
    def specs(obs_space: Space, act_space: Space, n: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        """``{name: (shape, dtype)}`` of every buffer, e.g. to allocate shared memory."""
        array_space(obs_space, "observation space")
        array_space(act_space, "action space")
        obs = ((n, *obs_space.shape), obs_space.dtype)
        return {
            "observations": obs,
            "rewards": ((n,), np.dtype(np.float32)),
            "terminals": ((n,), np.dtype(np.bool_)),
            "truncations": ((n,), np.dtype(np.bool_)),
            "final_observations": obs,
            "actions": ((n, *act_space.shape), act_space.dtype),
            "masks": ((n,), np.dtype(np.bool_)),
        }

    @classmethod
    def allocate(cls, obs_space: Space, act_space: Space, n: int) -> Buffers:
        """Fresh zeroed buffers for ``n`` rows (``masks`` all True)."""
        buffers = cls(
            **{k: np.zeros(s, d) for k, (s, d) in cls.specs(obs_space, act_space, n).items()}
        )
        buffers.masks[:] = True
        return buffers

    def __getitem__(self, rows: slice) -> Buffers:
        """Views of a contiguous range of rows (what a sub-env or worker writes into)."""
        return Buffers(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.rewards)


class VecEnv:
    """``num_envs`` environment rows stepped together, writing in place into ``Buffers``.

    ``reset(seed)`` returns ``(observations, infos)``; ``step(actions)`` returns ``(observations,
    rewards, terminals, truncations, infos)``. The arrays returned are views of this env's buffers,
    overwritten by the next call: copy what you keep. A row whose episode ends is reset within the
    same step: ``observations[i]`` is the new episode's first observation and
    ``final_observations[i]`` the ended episode's last one. ``infos`` is an ``Infos`` dict.

    The asynchronous form, ``async_reset(seed)`` then alternating ``recv()`` and ``send(actions)``,
    hands back ``(observations, rewards, terminals, truncations, infos, env_ids)`` for a batch of
    ``batch_size`` rows (``env_ids`` the row indices, in order) and takes their actions in ``send``.
    For synchronous envs a batch is every row.

    Subclasses implement ``_reset(seed) -> Infos`` and ``_step() -> Infos`` (reading
    ``self.actions``), and may override ``send``/``recv`` for asynchronous batches.
    """

    def __init__(
        self,
        single_observation_space: Space,
        single_action_space: Space,
        num_envs: int,
        buffers: Buffers | None = None,
    ):
        num_envs = check_int(type(self).__name__, "num_envs", num_envs)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        # The observation space before flattening: a Dict/Tuple that a policy may unflatten.
        self.original_observation_space = single_observation_space
        self.num_envs = num_envs
        self.batch_size = self.num_envs
        if buffers is None:
            buffers = Buffers.allocate(single_observation_space, single_action_space, self.num_envs)
        self.bind_buffers(buffers)
        self.env_ids = np.arange(self.num_envs)
        self._phase = _NEW
        self._pending: Infos | None = None

    def bind_buffers(self, buffers: Buffers) -> None:
        """Write into ``buffers`` from now on (e.g. views of a vectorizer's shared memory).

        Call before ``reset``; every implementation reads and writes its buffers through these
        attributes, so rebinding moves the env's output without a copy.
        """
        specs = Buffers.specs(
            self.single_observation_space, self.single_action_space, self.num_envs
        )
        for name, (shape, dtype) in specs.items():
            arr = getattr(buffers, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(
                    f"{type(self).__name__}: buffer {name} has shape {arr.shape} and dtype "
                    f"{arr.dtype}, expected {shape} and {dtype}"
                )
        self.buffers = buffers
        self.observations = buffers.observations
        self.rewards = buffers.rewards
        self.terminals = buffers.terminals
        self.truncations = buffers.truncations
        self.final_observations = buffers.final_observations
        self.actions = buffers.actions
        self.masks = buffers.masks

    # -- the public API, shared by every implementation ------------------------------------------

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every row (``seed`` reseeds; ``None`` continues the RNG streams)."""
        self.async_reset(seed)
        observations, _, _, _, infos, _ = self.recv()
        return observations, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every row with ``actions`` of shape ``(num_envs, *single_action_space.shape)``."""
        if self.batch_size != self.num_envs:
            raise RuntimeError(
                f"{type(self).__name__} runs asynchronous batches of {self.batch_size} of "
                f"{self.num_envs} rows: use send()/recv(), or batch_size=None for step()"
            )
        self.send(actions)
        observations, rewards, terminals, truncations, infos, _ = self.recv()
        return observations, rewards, terminals, truncations, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Begin a reset of every row; the next ``recv()`` returns the first batch."""
        self._check_not_closed("reset")
        self._pending = self._reset(seed)
        self._phase = _READY

    def send(self, actions: Any) -> None:
        """Act in the rows of the last ``recv()`` batch."""
        self._check_ready("send")
        if self._pending is not None:
            raise RuntimeError(f"{type(self).__name__}.send() called twice without recv()")
        self.actions[...] = self.check_actions(actions, self.num_envs)
        self._pending = self._step()

    def recv(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray]:
        """Results of the last ``send``/``async_reset``, with the ``env_ids`` they belong to."""
        self._check_ready("recv")
        if self._pending is None:
            raise RuntimeError(f"{type(self).__name__}.recv() called without send() or reset()")
        infos, self._pending = self._pending, None
        return (
            self.observations,
            self.rewards,
            self.terminals,
            self.truncations,
            infos,
            self.env_ids,
        )

    def check_actions(self, actions: Any, n: int) -> np.ndarray:
        """Validate a batch of ``n`` actions; raises ``ValueError`` naming this env."""
        return self.single_action_space.check_batch(actions, n, where=f"{type(self).__name__}.step")

    def close(self) -> None:
        """Release resources (processes, shared memory). Safe to call twice."""
        if self._phase == _CLOSED:
            return
        self._phase = _CLOSED
        self._close()

    def render(self, row: int = 0) -> Any:
        """A rendering of one row, if the env supports it."""
        return None

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (arrays, RNG states), for checkpoints."""
        raise NotImplementedError(f"{type(self).__name__} does not support state()")

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state()`` returned; the env is then ready to ``step``."""
        raise NotImplementedError(f"{type(self).__name__} does not support load_state()")

    # -- for subclasses ----------------------------------------------------------------------------

    def _reset(self, seed: int | None) -> Infos:
        raise NotImplementedError

    def _step(self) -> Infos:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _restored(self) -> None:
        """Mark the env ready to step after ``load_state`` put it mid-episode (no reset pending)."""
        self._phase = _READY
        self._pending = None

    def _check_not_closed(self, method: str) -> None:
        if self._phase == _CLOSED:
            raise _lifecycle_error(type(self).__name__, method, _CLOSED)

    def _check_ready(self, method: str) -> None:
        if self._phase != _READY:
            raise _lifecycle_error(type(self).__name__, method, self._phase)

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_envs={self.num_envs}, "
            f"obs={self.single_observation_space!r}, act={self.single_action_space!r})"
        )
