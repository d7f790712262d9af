"""Wrappers for one-agent ``PufferEnv``s."""

from __future__ import annotations

from typing import Any

from puffer.env import PufferEnv, StepResult

__all__ = ["EpisodeStats", "Wrapper"]


class Wrapper(PufferEnv):
    """A ``PufferEnv`` around another; forwards everything it does not override."""

    def __init__(self, env: PufferEnv):
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
