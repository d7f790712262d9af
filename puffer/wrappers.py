"""Wrappers for one-agent ``PufferEnv``s: ``EpisodeStats``, ``ClipAction``, ``TimeLimit``,
``FlattenObservation``, ``NormalizeObservation``.

A wrapper is itself a ``PufferEnv`` (so actions are checked against the wrapper's own
``action_space``) and forwards attributes it does not define to the env inside.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.env import PufferEnv, StepResult, check_int
from puffer.spaces import Box, Space, flatten, flatten_space

__all__ = [
    "ClipAction",
    "EpisodeStats",
    "FlattenObservation",
    "NormalizeObservation",
    "TimeLimit",
    "Wrapper",
]


class Wrapper(PufferEnv):
    """A ``PufferEnv`` around another; forwards everything it does not override."""

    def __init__(self, env: PufferEnv):
        if not isinstance(env, PufferEnv):
            hint = (
                " (wrap gymnasium envs in puffer.emulation.GymnasiumEnv first)"
                if type(env).__module__.startswith("gymnasium")
                else ""
            )
            raise TypeError(f"{type(self).__name__} wraps a PufferEnv, got {env!r}{hint}")
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed)

    def step(self, action: Any) -> StepResult:
        return self.env.step(action)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    @property
    def unwrapped(self) -> PufferEnv:
        return self.env.unwrapped

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"


class EpisodeStats(Wrapper):
    """Adds ``episode_return`` (float) and ``episode_length`` (int) to ``info`` when an episode ends.

    The same keys that native ``VecEnv``s report in their ``Infos``.
    """

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        self.episode_return = 0.0
        self.episode_length = 0
        return self.env.reset(seed)

    def step(self, action: Any) -> StepResult:
        result = self.env.step(action)
        self.episode_return += float(result.reward)
        self.episode_length += 1
        if result.terminated or result.truncated:
            info = dict(result.info)
            info["episode_return"] = self.episode_return
            info["episode_length"] = self.episode_length
            return result._replace(info=info)
        return result


class ClipAction(Wrapper):
    """Clips ``Box`` actions to the wrapped env's bounds.

    Its own ``action_space`` is unbounded (same shape and dtype), so any finite or infinite action
    is accepted and clipped; NaN and wrong shapes are still refused.
    """

    def __init__(self, env: PufferEnv):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, Box):
            raise TypeError(f"ClipAction needs a Box action space, got {space!r}")
        if space.dtype.kind == "f":
            low, high = -np.inf, np.inf
        else:
            low, high = np.iinfo(space.dtype).min, np.iinfo(space.dtype).max
        self.action_space = Box(low, high, shape=space.shape, dtype=space.dtype)

    def step(self, action: Any) -> StepResult:
        inner = self.env.action_space
        return self.env.step(np.clip(action, inner.low, inner.high).astype(inner.dtype))


class TimeLimit(Wrapper):
    """Ends episodes after ``max_steps`` steps by setting ``truncated`` (as gymnasium's TimeLimit)."""

    def __init__(self, env: PufferEnv, max_steps: int):
        super().__init__(env)
        self.max_steps = check_int("TimeLimit", "max_steps", max_steps)
        self.elapsed = 0

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        self.elapsed = 0
        return self.env.reset(seed)

    def step(self, action: Any) -> StepResult:
        result = self.env.step(action)
        self.elapsed += 1
        if self.elapsed >= self.max_steps and not result.truncated:
            return result._replace(truncated=True)
        return result


class FlattenObservation(Wrapper):
    """Observations of any space as one float32 vector (``puffer.spaces.flatten``).

    ``observation_space`` becomes ``flatten_space(original)``; ``original_observation_space`` keeps
    the original so a model can ``puffer.spaces.unflatten`` the vector.
    """

    def __init__(self, env: PufferEnv):
        super().__init__(env)
        self.original_observation_space: Space = env.observation_space
        self.observation_space = flatten_space(env.observation_space)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed)
        return flatten(self.original_observation_space, obs), info

    def step(self, action: Any) -> StepResult:
        result = self.env.step(action)
        return result._replace(
            observation=flatten(self.original_observation_space, result.observation)
        )


class NormalizeObservation(Wrapper):
    """Standardizes ``Box`` observations by a running mean and variance, then clips to ``±clip``.

    The statistics (``mean``, ``var``, ``count``) update on every observation while ``update`` is
    true; set it false to evaluate with frozen statistics. ``observation_space`` becomes
    ``Box(-clip, clip)`` of float32.
    """

    def __init__(self, env: PufferEnv, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, Box):
            raise TypeError(
                f"NormalizeObservation needs a Box observation space, got {space!r} "
                "(wrap in FlattenObservation first)"
            )
        self.clip, self.epsilon, self.update = float(clip), float(epsilon), True
        self.mean = np.zeros(space.shape, np.float64)
        self.var = np.ones(space.shape, np.float64)
        self.count = 0
        self.observation_space = Box(-self.clip, self.clip, shape=space.shape, dtype=np.float32)

    def _normalize(self, obs: Any) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        if self.update:  # Welford / Chan: merge one sample into the running moments
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.var += (delta * (x - self.mean) - self.var) / self.count
        z = (x - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed)
        return self._normalize(obs), info

    def step(self, action: Any) -> StepResult:
        result = self.env.step(action)
        return result._replace(observation=self._normalize(result.observation))
