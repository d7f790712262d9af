"""Any gymnasium env as a ``PufferEnv``: ``GymnasiumEnv(env_or_id, **make_kwargs)``.

Spaces are converted with ``puffer.spaces.from_gymnasium``. ``Box`` observations pass through (cast
to the space's dtype); any other observation space (Dict, Tuple, Discrete, MultiDiscrete) is
flattened to one float32 ``Box`` vector, with ``original_observation_space`` kept so a model can
``puffer.spaces.unflatten`` it. Actions may be ``Discrete``, ``MultiDiscrete``, ``Box`` or
``MultiBinary``. Gymnasium's ``terminated``/``truncated`` pass through unchanged (so a ``TimeLimit``
registered with the id reports truncation), and ``reset(seed)`` calls ``env.reset(seed=seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.env import PufferEnv, StepResult
from puffer.spaces import (
    Box,
    Discrete,
    MultiDiscrete,
    Space,
    flatten,
    flatten_space,
    from_gymnasium,
)

__all__ = ["GymnasiumEnv"]


class GymnasiumEnv(PufferEnv):
    """A gymnasium env (an instance, or an id for ``gymnasium.make(id, **make_kwargs)``)."""

    def __init__(self, env_or_id: Any, **make_kwargs: Any):
        import gymnasium

        if isinstance(env_or_id, str):
            env = gymnasium.make(env_or_id, **make_kwargs)
        elif isinstance(env_or_id, gymnasium.Env):
            if make_kwargs:
                raise ValueError(
                    f"GymnasiumEnv: make_kwargs {sorted(make_kwargs)} only apply to an env id, "
                    f"not to the instance {env_or_id!r}"
                )
            env = env_or_id
        else:
            raise TypeError(
                f"GymnasiumEnv needs a gymnasium.Env or a registered id, got {env_or_id!r}"
            )
        self.env = env
        self.original_observation_space: Space = from_gymnasium(env.observation_space)
        self._flatten = not isinstance(self.original_observation_space, Box)
        self.observation_space = (
            flatten_space(self.original_observation_space)
            if self._flatten
            else self.original_observation_space
        )
        self.action_space = from_gymnasium(env.action_space)
        if not isinstance(self.action_space, (Box, Discrete, MultiDiscrete)):
            raise ValueError(
                f"GymnasiumEnv: action space {env.action_space} is not supported; use Discrete, "
                "MultiDiscrete, Box or MultiBinary actions"
            )
        self._gym_action_dtype = getattr(env.action_space, "dtype", None)

    def _observation(self, obs: Any) -> np.ndarray:
        if self._flatten:
            return flatten(self.original_observation_space, obs)
        return np.asarray(obs, dtype=self.observation_space.dtype)

    def _action(self, action: Any) -> Any:
        if isinstance(self.action_space, Discrete):
            return int(action)
        return np.asarray(action, dtype=self._gym_action_dtype)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        return self._observation(obs), dict(info)

    def step(self, action: Any) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(self._action(action))
        return StepResult(
            self._observation(obs), float(reward), bool(terminated), bool(truncated), dict(info)
        )

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"GymnasiumEnv({self.env})"
