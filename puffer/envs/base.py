"""Shared machinery for built-in envs: ``NativeVecEnv`` (numpy over all rows) and ``OneAgent``."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.env import Buffers, Infos, PufferEnv, StepResult, VecEnv
from puffer.spaces import Space


class NativeVecEnv(VecEnv):
    """A ``VecEnv`` whose dynamics are numpy over all rows at once (the fast path).

    Subclasses implement ``_reset_rows(rows)`` (start new episodes in ``rows``, an index array, and
    write their first observations) and ``_simulate()`` (advance every row using ``self.actions``,
    writing ``observations``, ``rewards``, ``terminals`` and ``truncations``). This class tracks
    episode returns and lengths, copies final observations and resets ended rows.

    ``state_keys`` names the array attributes that, with the RNG, make up the env's state.
    ``_episode_infos(rows)`` may add env-specific per-episode values (e.g. ``success``).
    """

    state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        single_observation_space: Space,
        single_action_space: Space,
        num_envs: int = 1,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        super().__init__(single_observation_space, single_action_space, num_envs, buffers)
        self.rng = np.random.default_rng(seed)
        self.episode_returns = np.zeros(self.num_envs, np.float32)
        self.episode_lengths = np.zeros(self.num_envs, np.int64)

    def _reset(self, seed: int | None) -> Infos:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.episode_returns[:] = 0
        self.episode_lengths[:] = 0
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self._reset_rows(np.arange(self.num_envs))
        return {}

    def _step(self) -> Infos:
        self._simulate()
        self.episode_returns += self.rewards
        self.episode_lengths += 1
        done = self.terminals | self.truncations
        if not done.any():
            return {}
        rows = np.flatnonzero(done)
        self.final_observations[rows] = self.observations[rows]
        infos = {
            "episode_return": self.episode_returns[rows],
            "episode_length": self.episode_lengths[rows],
            **self._episode_infos(rows),
        }
        self.episode_returns[rows] = 0
        self.episode_lengths[rows] = 0
        self._reset_rows(rows)
        return infos

    def _reset_rows(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _simulate(self) -> None:
        raise NotImplementedError

    def _episode_infos(self, rows: np.ndarray) -> Infos:
        return {}

    def state(self) -> dict[str, Any]:
        keys = ("observations", "episode_returns", "episode_lengths", *self.state_keys)
        return {
            "rng": self.rng.bit_generator.state,
            **{k: np.array(getattr(self, k), copy=True) for k in keys},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._check_not_closed("load_state")
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        for key, value in state.items():
            if key != "rng":
                getattr(self, key)[...] = value
        self._phase = "ready"
        self._pending = None


class OneAgent(PufferEnv):
    """The one-agent ``PufferEnv`` form of a ``NativeVecEnv``: the same dynamics with one row.

    Returns the ended episode's final observation on the step it ends (not the auto-reset one).
    """

    def __init__(self, vec: NativeVecEnv):
        if vec.num_envs != 1:
            raise ValueError(f"OneAgent needs a one-row env, got num_envs={vec.num_envs}")
        self.vec = vec
        self.observation_space = vec.single_observation_space
        self.action_space = vec.single_action_space
        self._action = np.zeros((1, *self.action_space.shape), self.action_space.dtype)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        obs, _ = self.vec.reset(seed)
        return obs[0].copy(), {}

    def step(self, action: Any) -> StepResult:
        self._action[0] = action
        obs, rewards, terminals, truncations, infos = self.vec.step(self._action)
        terminated, truncated = bool(terminals[0]), bool(truncations[0])
        if terminated or truncated:
            obs = self.vec.final_observations
            info = {k: v[0].item() for k, v in infos.items()}
        else:
            info = {}
        return StepResult(obs[0].copy(), float(rewards[0]), terminated, truncated, info)

    def render(self) -> Any:
        return self.vec.render(0)

    def close(self) -> None:
        self.vec.close()
