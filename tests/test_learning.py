"""Learning: each built-in env is solved with its tuned values (conf/tuned/<env>.yaml), fixed seeds.

Marked slow (``pytest -m slow``). Each trains the tuned ``total_timesteps`` (what
``python -m puffer.train env=X`` runs) and checks the result at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import puffer.envs
import puffer.policy as P
from puffer.ppo import PPOConfig, Trainer

TUNED = Path(__file__).resolve().parents[1] / "conf" / "tuned"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def tuned(env: str) -> tuple[PPOConfig, P.PolicyConfig, int]:
    cfg = OmegaConf.to_container(OmegaConf.load(TUNED / f"{env}.yaml"))
    return PPOConfig(**cfg["ppo"]), P.PolicyConfig(**cfg["policy"]), cfg["vector"]["num_envs"]


def train(env: str, seed: int, policy_name: str | None = None, **env_kw) -> Trainer:
    ppo, policy_cfg, num_envs = tuned(env)
    if policy_name is not None:
        policy_cfg.name = policy_name
    vecenv = puffer.envs.make(env, num_envs=num_envs, seed=seed, **env_kw)
    policy = P.make(policy_cfg, vecenv, seed=seed)
    trainer = Trainer(ppo, vecenv, policy, device="cpu", seed=seed, torch_threads=1)
    while not trainer.done:
        trainer.rollout()
        trainer.update()
    return trainer


def final_rate(trainer: Trainer, key: str = "success") -> float:
    """``key``'s mean over the episodes of one more rollout (the policy as trained)."""
    return trainer.rollout()[f"env/{key}"]


def deterministic_rate(trainer: Trainer, env: str, key: str = "success", rows: int = 100) -> float:
    """``key``'s mean over the first episode of each of ``rows`` rows of a fresh env, all started
    together, with deterministic actions (as ``puffer eval`` runs them).

    Every row's first episode counts, long or short, so an env where failures end episodes early
    (cartpole) cannot look better than it is.
    """
    return float(first_episodes(trainer.policy, env, key, rows).mean())


def first_episodes(
    policy: P.Policy, env: str, key: str, rows: int, seed: int = 12345
) -> np.ndarray:
    """``key`` of the first episode of every row ``(rows,)``; raises if a row never ends one."""
    vecenv = puffer.envs.make(env, num_envs=rows, seed=seed)
    obs, _ = vecenv.reset(seed)
    state = policy.initial_state(rows)
    scores = np.full(rows, np.nan)
    for _ in range(10_000):
        actions, state = policy.predict(obs, state, deterministic=True)
        obs, _, terminals, truncations, infos = vecenv.step(actions)
        ended = np.flatnonzero(terminals | truncations)  # infos are in this row order
        if len(ended):
            first = np.isnan(scores[ended])
            scores[ended[first]] = infos[key][first]
        if not np.isnan(scores).any():
            break
        state = policy.reset_state(state, torch.as_tensor(terminals | truncations))
    vecenv.close()
    assert not np.isnan(scores).any(), f"{env}: rows {np.flatnonzero(np.isnan(scores))} never ended"
    return scores


def test_bandit_best_arm():
    trainer = train("bandit", seed=0)
    assert final_rate(trainer) > 0.95
    assert deterministic_rate(trainer, "bandit") == 1.0
    probe = torch.ones(1, 1)
    action = trainer.policy.act(probe, deterministic=True).action.item()
    assert action == trainer.vecenv.best_arm


@pytest.mark.parametrize("seed", [0, 1])
def test_cartpole(seed):
    trainer = train("cartpole", seed=seed)
    last100 = trainer.recent_episodes("episode_return")
    assert len(last100) == 100
    assert np.mean(last100) >= 475
    assert deterministic_rate(trainer, "cartpole", "episode_return") >= 475


def test_squared():
    trainer = train("squared", seed=0)
    assert final_rate(trainer) >= 0.95
    assert deterministic_rate(trainer, "squared") >= 0.95


def test_memory_needs_the_lstm():
    lstm = train("memory", seed=0)
    assert lstm.vecenv.length >= 8
    assert final_rate(lstm) >= 0.95
    assert deterministic_rate(lstm, "memory") >= 0.95
    mlp = train("memory", seed=0, policy_name="mlp")
    assert 0.35 <= final_rate(mlp) <= 0.65  # memoryless: a coin flip at the recall step
