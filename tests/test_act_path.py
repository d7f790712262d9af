"""The rollout's fused act path agrees with the training path, and samples its distribution."""

from __future__ import annotations

import pytest
import torch

import puffer.envs
import puffer.policy as P
from puffer.ppo import PPOConfig, Trainer
from puffer.spaces import MultiDiscrete

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ragged_multicategorical_samples_each_component_distribution():
    head = P.MultiCategoricalHead(4, MultiDiscrete([2, 3]))
    probs = [torch.tensor([0.8, 0.2]), torch.tensor([0.1, 0.3, 0.6])]
    logits = torch.cat([p.log() for p in probs]).expand(60_000, 5)
    action, logp = head.sample(logits, torch.Generator().manual_seed(0))
    for i, p in enumerate(probs):
        freq = torch.bincount(action[:, i], minlength=len(p)) / len(action)
        torch.testing.assert_close(freq, p, atol=0.01, rtol=0)
    expected = probs[0].log()[action[:, 0]] + probs[1].log()[action[:, 1]]
    torch.testing.assert_close(logp, expected)


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_rollout_log_probs_and_values_match_the_training_forward(policy):
    """What ``act`` stored during the rollout is what ``forward_sequence`` + ``log_prob_entropy``
    compute for the same actions before any update (the PPO ratio starts at exactly 1)."""
    vecenv = puffer.envs.make("cartpole", num_envs=8, seed=0)
    config = P.PolicyConfig(name=policy, hidden_sizes=[16], lstm_hidden_size=8)
    net = P.make(config, vecenv, seed=0)
    trainer = Trainer(PPOConfig(horizon=32), vecenv, net, device="cpu", seed=0)
    trainer.rollout()
    buf = trainer.buffer
    assert buf.starts[:, 1:].any()  # episodes end inside segments: the LSTM resets mid-segment
    state = buf.initial_state or None
    with torch.no_grad():
        params, values = net.forward_sequence(buf.observations, state, buf.starts)
        log_prob, _ = net.head.log_prob_entropy(params, buf.actions)
    torch.testing.assert_close(log_prob, buf.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, buf.values, rtol=1e-5, atol=1e-5)
    trainer.close()
