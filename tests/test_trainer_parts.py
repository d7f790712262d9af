"""The parts the Trainer delegates to: the buffer sizing and writing itself, the update's metrics
dict, the config's loss/advantage coefficients, numpy batches reaching the device."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import puffer.envs
import puffer.policy as P
from puffer.device import HostToDevice
from puffer.ppo import ExperienceBuffer, PPOConfig
from puffer.ppo.metrics import PHASES, update_metrics


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_buffer_for_rollout_takes_its_shapes_from_the_env_and_policy(policy):
    vecenv = puffer.envs.make("cartpole", num_envs=6, seed=0)
    net = P.make(P.PolicyConfig(name=policy, hidden_sizes=[8], lstm_hidden_size=5), vecenv)
    buf = ExperienceBuffer.for_rollout(vecenv, net, horizon=3, device=torch.device("cpu"))
    assert buf.observations.shape == (6, 3, 4) and buf.observations.dtype == torch.float32
    assert buf.actions.shape == (6, 3) and buf.actions.dtype == torch.int64
    assert buf.size == 18 and buf.host_rewards.shape == (3, 6)
    expected = [(6, 5), (6, 5)] if policy == "lstm" else []
    assert [tuple(s.shape) for s in buf.initial_state] == expected
    vecenv.close()


def test_buffer_store_results_marks_where_the_next_episodes_start():
    vecenv = puffer.envs.make("cartpole", num_envs=4, seed=0)
    net = P.make(P.PolicyConfig(name="lstm", hidden_sizes=[8], lstm_hidden_size=5), vecenv)
    buf = ExperienceBuffer.for_rollout(vecenv, net, horizon=2, device=torch.device("cpu"))
    state = tuple(torch.full((4, 5), float(i + 1)) for i in range(2))
    buf.start_segments(np.array([True, False, False, True]), state)
    assert buf.host_starts[0].tolist() == [True, False, False, True]
    assert [s[:, 0].tolist() for s in buf.initial_state] == [[1.0] * 4, [2.0] * 4]
    terminals, truncations = np.array([1, 0, 0, 0], bool), np.array([0, 0, 1, 0], bool)
    buf.store_results(0, np.arange(4.0), terminals, truncations)
    assert buf.host_starts[1].tolist() == [True, False, True, False]
    assert buf.host_rewards[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert buf.host_terminals[0].tolist() == terminals.tolist()
    assert buf.host_truncations[0].tolist() == truncations.tolist()
    buf.store_results(1, np.ones(4), ~terminals, truncations)  # the last step: no step 2 to mark
    assert buf.host_starts[1].tolist() == [True, False, True, False]
    assert buf.host_terminals[1].tolist() == [False, True, True, True]
    vecenv.close()


def test_update_metrics_in_the_sinks_order():
    times = {"env": 0.5, "forward": 0.25, "rollout": 1.0, "learn": 1.0}
    assert set(times) == set(PHASES)
    metrics = update_metrics(
        global_step=4096,
        update=2,
        steps=2048,
        learning_rate=1e-3,
        losses={"policy_loss": 0.1, "explained_variance": 0.5},
        times=times,
        episodes={"env/episode_return": 9.0},
    )
    assert list(metrics) == [
        "global_step",
        "update",
        "sps",
        "learning_rate",
        "losses/policy_loss",
        "losses/explained_variance",
        "time/env",
        "time/forward",
        "time/overhead",
        "time/learn",
        "env/episode_return",
    ]
    assert metrics["sps"] == 1024.0 and metrics["time/overhead"] == 0.25
    assert metrics["global_step"] == 4096.0 and isinstance(metrics["update"], float)
    # the rest of the rollout is never negative; no measured time: no SPS
    zero = dict(global_step=0, update=0, steps=1, learning_rate=0.0, losses={}, episodes={})
    late = update_metrics(**zero, times={**times, "env": 2.0})
    assert late["time/overhead"] == 0.0 and late["sps"] == 0.5
    assert math.isnan(update_metrics(**zero, times=dict.fromkeys(PHASES, 0.0))["sps"])


def test_loss_and_advantage_coefficients_come_from_the_config():
    c = PPOConfig(clip_coef=0.1, vf_clip_coef=0.3, ent_coef=0.02, vf_coef=0.7)
    assert c.loss_coefs() == dict(clip_coef=0.1, vf_clip_coef=0.3, ent_coef=0.02, vf_coef=0.7)
    assert PPOConfig(clip_vloss=False).loss_coefs()["vf_clip_coef"] is None
    v = PPOConfig(gamma=0.9, gae_lambda=0.8, vtrace_rho_clip=0.7, vtrace_c_clip=0.6)
    assert v.advantage_coefs() == dict(gamma=0.9, gae_lambda=0.8, rho_clip=0.7, c_clip=0.6)


def test_host_to_device_reuses_the_view_of_an_array_rewritten_in_place():
    to_device = HostToDevice(torch.device("cpu"))
    array = np.zeros(3, np.float32)
    view = to_device.reused(array)
    assert to_device.reused(array) is view  # made once
    array[1] = 5.0
    assert view.tolist() == [0.0, 5.0, 0.0]  # zero-copy
    other = np.ones(3, np.float32)
    assert to_device.reused(other).tolist() == [1.0, 1.0, 1.0]  # a new array, a new view
    plain = to_device(array)
    assert plain is not view and plain.data_ptr() == view.data_ptr()


def test_a_budget_below_one_rollout_is_warned_about():
    import puffer.envs
    import puffer.policy as P
    from puffer.ppo import PPOConfig, Trainer

    vecenv = puffer.envs.make("cartpole", num_envs=4, seed=0)
    policy = P.make(P.PolicyConfig(hidden_sizes=[8]), vecenv, seed=0)
    config = PPOConfig(total_timesteps=100, horizon=32, num_minibatches=1)
    with pytest.warns(
        UserWarning, match=r"ppo.total_timesteps=100 is less than one rollout \(128 "
    ):
        trainer = Trainer(config, vecenv, policy, device="cpu")
    assert trainer.num_updates == 1
    trainer.close()
