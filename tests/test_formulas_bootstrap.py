"""Truncation bootstrapping, checked where the final observation differs from the reset one.

``Steps`` starts every episode in state A (observation 0) and moves to state B (observation 1) for
good; it never terminates and is truncated after ``LIMIT`` steps, in state B. Reward is 0 for the
step out of A and 1 for every step in B, so with discount ``gamma`` the true values are
``V(B) = 1 / (1 - gamma)`` and ``V(A) = gamma * V(B)``. Bootstrapping a truncated step from the
observation after the auto-reset (A) instead of the final one (B) gives ``V(B) ~ 4.2`` instead of
5 for ``gamma = 0.8``; treating truncation as termination gives 2.5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from puffer.envs.base import NativeVecEnv
from puffer.policy import MLP
from puffer.ppo.config import PPOConfig
from puffer.ppo.trainer import Trainer
from puffer.spaces import Box, Discrete

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIMIT = 5


class Steps(NativeVecEnv):
    """A (obs 0) -> B (obs 1) forever; reward 0 out of A, 1 in B; truncated after LIMIT steps."""

    def __init__(self, num_envs: int = 1, seed: int | None = None):
        super().__init__(Box.uniform([1], 0.0, 1.0), Discrete(2), num_envs, seed=seed)
        self.steps = np.zeros(self.num_envs, np.int64)

    def _reset_rows(self, rows):
        self.steps[rows] = 0
        self.observations[rows, 0] = 0.0

    def _simulate(self):
        self.rewards[:] = self.observations[:, 0]  # 0 for the step out of A, 1 in B
        self.observations[:, 0] = 1.0
        self.steps += 1
        self.terminals[:] = False
        np.greater_equal(self.steps, LIMIT, out=self.truncations)


def test_env_final_observation_differs_from_reset_observation():
    env = Steps(num_envs=2, seed=0)
    obs, _ = env.reset()
    assert obs[:, 0].tolist() == [0.0, 0.0]
    rewards = []
    for _ in range(LIMIT):
        obs, rew, term, trunc, _ = env.step(np.zeros(2, np.int64))
        rewards.append(rew[0])
    assert rewards == [0.0, 1.0, 1.0, 1.0, 1.0] and trunc.all() and not term.any()
    assert env.final_observations[:, 0].tolist() == [1.0, 1.0]  # B, where the episode was cut
    assert obs[:, 0].tolist() == [0.0, 0.0]  # A, where the next one starts


def test_truncation_bootstraps_from_the_final_observation_not_the_reset_one():
    gamma = 0.8
    env = Steps(num_envs=32, seed=0)
    policy = MLP(env.single_observation_space, env.single_action_space, [32, 32])
    config = PPOConfig(
        total_timesteps=32 * 7 * 150,
        horizon=7,  # segment ends fall mid-episode too
        num_minibatches=1,
        update_epochs=4,
        learning_rate=1e-2,
        lr_schedule="constant",
        gamma=gamma,
        gae_lambda=0.95,
        clip_vloss=False,
        vf_coef=1.0,
    )
    trainer = Trainer(config, env, policy, device="cpu", seed=0)
    while not trainer.done:
        trainer.rollout()
        trainer.update()
    with torch.no_grad():
        _, value, _ = policy(torch.tensor([[0.0], [1.0]]))
    v_a, v_b = value.tolist()
    assert v_b == pytest.approx(1 / (1 - gamma), rel=0.05)  # 5
    assert v_a == pytest.approx(gamma / (1 - gamma), rel=0.05)  # 4
