"""Bandit: ``num_arms`` arms, one of which pays; one-step episodes.

Observation ``Box(1, 1, (1,), float32)``, always 1 (there is nothing to see). Action
``Discrete(num_arms)``: the arm to pull. Reward ``reward_scale`` for the paying arm, 0 otherwise,
plus ``reward_noise`` times a standard normal draw. Every step ends the episode (terminated).
Per-episode info: ``success`` (1.0 if the paying arm was pulled, else 0.0), ``episode_return``,
``episode_length``.

The paying arm, ``best_arm``, is drawn from ``arm_seed``, not from the reset seed, so it is the same
in every row and every worker of a vectorized env, whatever seeds they are reset with.
"""

from __future__ import annotations

import numpy as np

from puffer.env import Buffers, Infos, check_int
from puffer.envs.base import NativeVecEnv, OneAgent
from puffer.spaces import Box, Discrete


class BanditVec(NativeVecEnv):
    """``num_envs`` bandits sharing one paying arm; see the module docstring."""

    state_keys = ("last_action", "last_reward")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        num_arms: int = 4,
        arm_seed: int = 0,
        reward_scale: float = 1.0,
        reward_noise: float = 0.0,
        buffers: Buffers | None = None,
        seed: int | None = None,
    ):
        self.num_arms = check_int("BanditVec", "num_arms", num_arms, minimum=2)
        if reward_noise < 0:
            raise ValueError(f"BanditVec: reward_noise={reward_noise!r} must be >= 0")
        obs_space = Box(1.0, 1.0, shape=(1,), dtype=np.float32)
        super().__init__(obs_space, Discrete(self.num_arms), num_envs, buffers, seed)
        self.best_arm = int(np.random.default_rng(arm_seed).integers(self.num_arms))
        self.reward_scale = float(reward_scale)
        self.reward_noise = float(reward_noise)
        self.last_action = np.full(self.num_envs, -1, np.int64)
        self.last_reward = np.zeros(self.num_envs, np.float32)
        self._success = np.zeros(self.num_envs, np.float32)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.observations[rows] = 1.0

    def _simulate(self) -> None:
        np.equal(self.actions, self.best_arm, out=self._success, casting="unsafe")
        np.multiply(self._success, self.reward_scale, out=self.rewards)
        if self.reward_noise:
            noise = self.rng.standard_normal(self.num_envs, dtype=np.float32)
            noise *= self.reward_noise
            self.rewards += noise
        self.terminals.fill(True)
        self.last_action[:] = self.actions
        self.last_reward[:] = self.rewards

    def _episode_infos(self, rows: np.ndarray) -> Infos:
        return {"success": self._success[rows]}

    def render(self, row: int = 0) -> str:
        last = int(self.last_action[row])
        arms = "".join("[*]" if a == last else "[ ]" for a in range(self.num_arms))
        pulled = "none yet" if last < 0 else f"arm {last}, reward {self.last_reward[row]:+.2f}"
        return f"bandit {arms}  last pull: {pulled}"


class Bandit(OneAgent):
    """The one-agent bandit: ``BanditVec`` with one row."""

    def __init__(
        self,
        *,
        num_arms: int = 4,
        arm_seed: int = 0,
        reward_scale: float = 1.0,
        reward_noise: float = 0.0,
        seed: int | None = None,
    ):
        super().__init__(
            BanditVec(
                1,
                num_arms=num_arms,
                arm_seed=arm_seed,
                reward_scale=reward_scale,
                reward_noise=reward_noise,
                seed=seed,
            )
        )
