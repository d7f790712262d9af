"""Shared machinery for built-in envs: ``NativeVecEnv`` (numpy over all rows) and ``OneAgent``."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.env import Buffers, Infos, PufferEnv, StepResult, VecEnv
from puffer.spaces import Space


class NativeVecEnv(VecEnv):
    """A ``VecEnv`` whose dynamics are numpy over all rows at once (the fast path).

    Subclasses implement ``_reset_rows(rows)`` (start new episodes in ``rows``, an int index array,
    and write their first observations) and ``_simulate()`` (advance every row using
    ``self.actions``, writing ``observations``, ``rewards``, ``terminals`` and ``truncations``). This
    class tracks episode returns and lengths, copies final observations and resets ended rows.

    ``state_keys`` names the array attributes that, with the RNG, make up the env's state
    (``state()``/``load_state()``). ``_episode_infos(rows)`` may add env-specific per-episode values
    (e.g. ``success``); it runs before the ended rows are reset.
    """

    state_keys: tuple[str, ...] = ()

    @classmethod
    def rows_per_env(cls, **kw: Any) -> int:
        """The rows that must stay together (one game's agents); 1 for one-agent envs."""
        return 1

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
        self._done = np.zeros(self.num_envs, np.bool_)

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
        done = np.logical_or(self.terminals, self.truncations, out=self._done)
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

    def _state_names(self) -> tuple[str, ...]:
        return ("observations", "episode_returns", "episode_lengths", *self.state_keys)

    def state(self) -> dict[str, Any]:
        """Copies of the state arrays plus the RNG state (a dict of ints and strings).

        For ``torch.load(weights_only=True)`` store the arrays as tensors (``torch.from_numpy``);
        ``load_state`` takes arrays or CPU tensors.
        """
        return {
            "rng": self.rng.bit_generator.state,
            **{k: np.array(getattr(self, k), copy=True) for k in self._state_names()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore ``state()``'s output; the env is then ready to ``step`` from there."""
        self._check_not_closed("load_state")
        name = type(self).__name__
        expected = {"rng", *self._state_names()}
        if set(state) != expected:
            raise ValueError(
                f"{name}.load_state: keys {sorted(state)} do not match this env's "
                f"{sorted(expected)}; was the state saved from another env?"
            )
        for key in self._state_names():
            target, value = getattr(self, key), np.asarray(state[key])
            if value.shape != target.shape:
                raise ValueError(
                    f"{name}.load_state: {key} has shape {value.shape}, this env needs "
                    f"{target.shape} (num_envs={self.num_envs}); make the env as it was saved"
                )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.rng = rng
        for key in self._state_names():
            getattr(self, key)[...] = np.asarray(state[key])
        self._restored()


class OneAgent(PufferEnv):
    """The one-agent ``PufferEnv`` form of a one-row ``NativeVecEnv``: the same dynamics.

    On the step an episode ends it returns that episode's final observation (not the auto-reset
    one) and the env's per-episode ``Infos`` (``episode_return``, ``episode_length``, ...) as
    Python scalars in ``info``. ``reset()`` without a seed then returns the episode the row had
    already started, so the one-agent form and a one-row ``VecEnv`` produce the same trajectories.
    """

    def __init__(self, vec: NativeVecEnv):
        if vec.num_envs != 1:
            raise ValueError(f"OneAgent needs a one-row env, got num_envs={vec.num_envs}")
        self.vec = vec
        self.observation_space = vec.single_observation_space
        self.action_space = vec.single_action_space
        self._auto_reset = False  # the vec already began the next episode

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        # After an episode ends the vec has already started the next one (as a VecEnv row would):
        # without a new seed, that episode is the one returned, so trajectories match the vec's.
        if seed is not None or not self._auto_reset:
            self.vec.reset(seed)
        self._auto_reset = False
        return self.vec.observations[0].copy(), {}

    def step(self, action: Any) -> StepResult:
        vec = self.vec
        vec.actions[0] = action  # already checked against action_space by PufferEnv's guard
        infos = vec._step()
        terminated, truncated = bool(vec.terminals[0]), bool(vec.truncations[0])
        if terminated or truncated:
            self._auto_reset = True
            obs = vec.final_observations[0].copy()
            info = {k: v[0].item() for k, v in infos.items()}
        else:
            obs, info = vec.observations[0].copy(), {}
        return StepResult(obs, float(vec.rewards[0]), terminated, truncated, info)

    def render(self) -> Any:
        return self.vec.render(0)

    def close(self) -> None:
        self.vec.close()

    def __repr__(self) -> str:
        return f"OneAgent({self.vec!r})"
