"""Policies: shapes and dtypes per action space, distributions, deterministic actions, init, LSTM
sequence/step equivalence with resets, observation normalization, ``make``."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import puffer.envs
import puffer.policy as P
import puffer.vector
from puffer.env import PufferEnv, StepResult
from puffer.ppo import PPOConfig, Trainer
from puffer.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, unflatten

OBS = Box.uniform([2, 3], -1.0, 1.0)
ACTION_SPACES = {
    "discrete": Discrete(3),
    "discrete_start": Discrete(4, start=-2),
    "multidiscrete": MultiDiscrete([2, 5, 3]),
    "box": Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    "multibinary": MultiBinary((2, 3)),
    "int_box": Box(-1, 2, shape=(2, 2), dtype=np.int32),
    "ragged_multidiscrete": MultiDiscrete([2, 7]),
}


def policies(action_space, **kw):
    return [
        P.MLP(OBS, action_space, [16, 16], **kw),
        P.LSTM(OBS, action_space, [16], lstm_hidden_size=8, **kw),
    ]


@pytest.mark.parametrize("space_name", ACTION_SPACES)
def test_act_shapes_dtypes_and_env_actions(space_name):
    space = ACTION_SPACES[space_name]
    for policy in policies(space):
        obs = torch.rand(5, 2, 3) * 2 - 1
        state = policy.initial_state(5)
        out = policy.act(obs, state, generator=torch.Generator().manual_seed(0))
        assert out.value.shape == (5,) and out.log_prob.shape == (5,)
        assert out.action.shape == (5, *policy.head.action_shape)
        assert out.action.dtype == policy.head.action_dtype
        if policy.is_recurrent:
            assert out.state[0].shape == (5, 8)
        else:
            assert out.state is None
        env_actions = policy.env_action(out.action)
        space.check_batch(env_actions, 5)  # raises if the env would refuse them
        # log_prob from sampling == log_prob re-evaluated by the training path
        params, _, _ = policy(obs, state)
        logp, entropy = policy.head.log_prob_entropy(params, out.action)
        torch.testing.assert_close(logp, out.log_prob)
        assert entropy.shape == (5,)


def test_discrete_start_offset_reaches_env():
    policy = P.MLP(OBS, Discrete(4, start=-2), [8])
    actions = policy.env_action(torch.tensor([0, 3]))
    assert actions.tolist() == [-2, 1]


def test_initial_categorical_is_near_uniform():
    policy = P.MLP(OBS, Discrete(3), [16, 16])
    params, _, _ = policy(torch.rand(64, 2, 3))
    _, entropy = policy.head.log_prob_entropy(params, torch.zeros(64, dtype=torch.long))
    assert entropy.min().item() == pytest.approx(math.log(3), abs=1e-3)


def test_multidiscrete_log_prob_sums_components():
    policy = P.MLP(OBS, MultiDiscrete([2, 5, 3]), [8])
    logits = torch.randn(4, 10)
    action = torch.tensor([[1, 4, 0], [0, 0, 2], [1, 2, 1], [0, 3, 0]])
    logp, entropy = policy.head.log_prob_entropy(logits, action)
    expected_logp, expected_ent = torch.zeros(4), torch.zeros(4)
    for i, part in enumerate(logits.split([2, 5, 3], -1)):
        dist = torch.distributions.Categorical(logits=part)
        expected_logp += dist.log_prob(action[:, i])
        expected_ent += dist.entropy()
    torch.testing.assert_close(logp, expected_logp)
    torch.testing.assert_close(entropy, expected_ent)


def test_gaussian_matches_torch_normal_and_env_gets_clipped_actions():
    space = Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    policy = P.MLP(OBS, space, [8], init_log_std=1.0)
    mean = torch.randn(6, 2)
    action = torch.randn(6, 2) * 3
    logp, entropy = policy.head.log_prob_entropy(mean, action)
    normal = torch.distributions.Normal(mean, torch.full_like(mean, math.e))
    torch.testing.assert_close(logp, normal.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy().sum(-1))
    # Sampling keeps the unclipped action for the buffer; the env gets it clipped.
    out = policy.act(torch.rand(256, 2, 3), generator=torch.Generator().manual_seed(1))
    assert out.action.abs().max() > 1.0
    env_actions = policy.env_action(out.action)
    assert env_actions.dtype == np.float32 and env_actions.shape == (256, 2)
    assert np.abs(env_actions).max() <= 1.0


def test_integer_box_gets_a_categorical_per_element_or_a_clear_refusal():
    space = Box(-1, 2, shape=(2, 2), dtype=np.int32)
    policy = P.MLP(OBS, space, [8])
    assert isinstance(policy.head, P.MultiCategoricalHead) and policy.head.nvec == [4] * 4
    env_actions = policy.env_action(torch.tensor([[0, 1, 2, 3]]))
    assert env_actions.dtype == np.int32 and env_actions.tolist() == [[[-1, 0], [1, 2]]]
    with pytest.raises(ValueError, match=r"Box\(0, 100000, \(3,\), int32\).*at most 1024"):
        P.MLP(OBS, Box(0, 100_000, shape=(3,), dtype=np.int32), [8])
    with pytest.raises(ValueError, match=r"Dict.*cannot be trained.*MultiBinary"):
        P.MLP(OBS, Dict({"a": Discrete(2)}), [8])


def test_bernoulli_matches_torch_and_samples_its_probabilities():
    policy = P.MLP(OBS, MultiBinary(3), [8])
    logits = torch.tensor([[-2.0, 0.0, 3.0]]).expand(50_000, 3)
    action, logp = policy.head.sample(logits, torch.Generator().manual_seed(0))
    torch.testing.assert_close(action.float().mean(0), torch.sigmoid(logits[0]), atol=0.01, rtol=0)
    dist = torch.distributions.Bernoulli(logits=logits)
    torch.testing.assert_close(logp, dist.log_prob(action.float()).sum(-1))
    logp2, entropy = policy.head.log_prob_entropy(logits, action)
    torch.testing.assert_close(logp2, logp)
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    env_actions = policy.env_action(action[:2])
    assert env_actions.dtype == np.int8 and env_actions.shape == (2, 3)


def test_ragged_multidiscrete_never_samples_padding():
    head = P.MultiCategoricalHead(4, MultiDiscrete([2, 7]))
    logits = torch.zeros(20_000, 9)
    action, logp = head.sample(logits, torch.Generator().manual_seed(0))
    assert action[:, 0].max() == 1 and action[:, 1].max() == 6 and action.min() == 0
    torch.testing.assert_close(logp, torch.full((20_000,), -math.log(14)))


@pytest.mark.parametrize("space_name", ACTION_SPACES)
def test_deterministic_actions(space_name):
    space = ACTION_SPACES[space_name]
    for policy in policies(space):
        obs = torch.rand(7, 2, 3)
        state = policy.initial_state(7)
        a = policy.act(obs, state, deterministic=True).action
        b = policy.act(obs, state, deterministic=True).action
        assert torch.equal(a, b)
        params, _, _ = policy(obs, state)
        if isinstance(space, Discrete):
            assert torch.equal(a, params.argmax(-1))
        elif isinstance(space, MultiBinary):
            assert torch.equal(a, (params > 0).long())
        elif isinstance(space, Box) and space.dtype.kind == "f":
            assert torch.equal(a, params)


def test_predict_numpy_in_env_actions_out():
    env = puffer.envs.make("cartpole", num_envs=4, seed=0)
    obs, _ = env.reset(0)
    for name in ("mlp", "lstm"):
        policy = P.make(P.PolicyConfig(name=name), env, seed=0)
        state = policy.initial_state(4)
        actions, state = policy.predict(obs, state)
        assert isinstance(actions, np.ndarray) and actions.shape == (4,)
        env.step(actions)
    env.close()


def orthogonal_gain(weight: torch.Tensor) -> float:
    """For an orthogonally initialized matrix, the common singular value (the gain)."""
    s = torch.linalg.svdvals(weight.detach())
    assert s.max() / s.min() == pytest.approx(1.0, rel=1e-4)
    return s.mean().item()


def test_orthogonal_init_and_kept_after_wrapping():
    mlp = P.MLP(OBS, Discrete(3), [16, 16])
    layers = mlp.encoder.net
    assert orthogonal_gain(layers[0].weight) == pytest.approx(math.sqrt(2), rel=1e-4)
    assert orthogonal_gain(layers[2].weight) == pytest.approx(math.sqrt(2), rel=1e-4)
    assert orthogonal_gain(mlp.head.linear.weight) == pytest.approx(0.01, rel=1e-4)
    assert orthogonal_gain(mlp.critic.weight) == pytest.approx(1.0, rel=1e-4)
    assert all(not m.bias.detach().any() for m in (layers[0], mlp.critic))

    encoder = P.mlp([6, 12], "tanh")
    before = encoder[0].weight.detach().clone()
    lstm = P.LSTM(OBS, Discrete(3), encoder=encoder, encoder_size=12, lstm_hidden_size=8)
    assert torch.equal(lstm.encoder[0].weight, before)  # the wrapped encoder's init is kept
    assert orthogonal_gain(lstm.head.linear.weight) == pytest.approx(0.01, rel=1e-4)
    assert orthogonal_gain(lstm.critic.weight) == pytest.approx(1.0, rel=1e-4)


def test_lstm_sequence_equals_steps_with_resets():
    policy = P.LSTM(OBS, Discrete(3), [16], lstm_hidden_size=8)
    S, T = 4, 6
    obs = torch.rand(S, T, 2, 3)
    starts = torch.rand(S, T) < 0.3
    state = (torch.randn(S, 8), torch.randn(S, 8))
    params_seq, values_seq = policy.forward_sequence(obs, state, starts)
    h = state
    for step in range(T):
        params, values, h = policy(obs[:, step], h, starts[:, step])
        torch.testing.assert_close(params, params_seq[:, step])
        torch.testing.assert_close(values, values_seq[:, step])


def test_lstm_state_zeroed_where_episode_starts():
    policy = P.LSTM(OBS, Discrete(3), [16], lstm_hidden_size=8)
    obs = torch.rand(2, 2, 3)
    carried = (torch.randn(2, 8), torch.randn(2, 8))
    starts = torch.tensor([True, False])
    out_reset, _, _ = policy(obs, carried, starts)
    out_fresh, _, _ = policy(obs, policy.initial_state(2))
    out_carried, _, _ = policy(obs, carried)
    torch.testing.assert_close(out_reset[0], out_fresh[0])  # row 0 starts over
    torch.testing.assert_close(out_reset[1], out_carried[1])  # row 1 continues
    assert not torch.allclose(out_fresh[1], out_carried[1])


def test_mlp_sequence_equals_steps():
    policy = P.MLP(OBS, MultiDiscrete([2, 3]), [16])
    obs = torch.rand(3, 5, 2, 3)
    params_seq, values_seq = policy.forward_sequence(obs)
    params, values, _ = policy(obs.reshape(15, 2, 3))
    torch.testing.assert_close(params_seq.reshape(15, -1), params)
    torch.testing.assert_close(values_seq.reshape(15), values)


def test_running_norm_statistics_and_state_dict():
    norm = P.RunningNorm(3)
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, size=(n, 3)) for n in (5, 50, 1, 200)]
    for b in batches:
        norm.update(torch.from_numpy(b))
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-10)
    x = torch.from_numpy(data[:4]).float()
    assert torch.equal(norm(x), x)  # disabled: the identity
    norm.enabled = True
    expected = (data[:4] - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # Saved and restored with the flag, and loadable with weights_only=True.
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    fresh = P.RunningNorm(3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.enabled
    torch.testing.assert_close(fresh(x), norm(x))


def test_make_validates_and_is_reproducible():
    env = puffer.envs.make("cartpole", num_envs=2, seed=0)
    a = P.make(P.PolicyConfig(), env, seed=3)
    b = P.make(P.PolicyConfig(), env, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert isinstance(P.make(P.PolicyConfig(name="lstm"), env), P.LSTM)
    with pytest.raises(ValueError, match=r"policy.name='gru'.*'cnn', 'cnn_lstm', 'custom', 'lstm'"):
        P.make(P.PolicyConfig(name="gru"), env)
    with pytest.raises(ValueError, match=r"policy\.activation='swish'"):
        P.make(P.PolicyConfig(activation="swish"), env)
    with pytest.raises(ValueError, match=r"policy.hidden_sizes=\[\]"):
        P.make(P.PolicyConfig(hidden_sizes=[]), env)
    env.close()


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.1, 0.6, 0.3])
    head = P.CategoricalHead(4, Discrete(3))
    logits = probs.log().expand(100_000, 3)
    action, logp = head.sample(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(action, minlength=3) / len(action)
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    torch.testing.assert_close(logp, probs.log()[action])


class DictObs(PufferEnv):
    """Dict observations: a position and a flag (the last action)."""

    observation_space = Dict({"pos": Box.uniform([2], -1.0, 1.0), "flag": Discrete(3)})
    action_space = Discrete(3)

    def reset(self, seed=None):
        self.rng, self.t = np.random.default_rng(seed), 0
        return {"pos": np.zeros(2, np.float32), "flag": np.int64(0)}, {}

    def step(self, action):
        self.t += 1
        obs = {"pos": self.rng.uniform(-1, 1, 2).astype(np.float32), "flag": np.int64(action)}
        return StepResult(obs, float(action == 2), False, self.t >= 4, {})


class FlagEmbedding(P.MLP):
    """A custom ``encode`` that takes the flat observation apart with ``unflatten``."""

    def __init__(self, vecenv):
        super().__init__(vecenv.single_observation_space, vecenv.single_action_space, [8])
        self.space = vecenv.original_observation_space
        self.embed = torch.nn.Embedding(3, 6)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
        self.seen: list[torch.Tensor] = []

    def encode(self, obs):
        parts = unflatten(self.space, obs)
        self.seen.append(parts["flag"])
        x = torch.cat([parts["pos"], self.embed(parts["flag"].long())], -1)
        return self.encoder(x)


def test_dict_observations_reach_a_custom_encoder():
    vecenv = puffer.vector.make(DictObs, num_envs=4)
    policy = FlagEmbedding(vecenv)
    trainer = Trainer(PPOConfig(horizon=8, num_minibatches=2), vecenv, policy, device="cpu")
    trainer.rollout()
    metrics = trainer.update()
    assert math.isfinite(metrics["losses/policy_loss"])
    flags = torch.cat([f.flatten() for f in policy.seen])
    assert set(flags.tolist()) <= {0.0, 1.0, 2.0} and len(set(flags.tolist())) > 1
    trainer.close()


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.3, 1.0])
def test_lstm_sequence_runs_equal_the_step_reference_with_gradients(rate):
    """``forward_sequence`` (fused nn.LSTM over runs between episode starts) against a loop of
    ``forward`` steps: the same outputs and the same parameter gradients."""
    policy = P.LSTM(OBS, MultiDiscrete([2, 3]), [16], lstm_hidden_size=8)
    S, T = 6, 37
    gen = torch.Generator().manual_seed(int(rate * 100))
    obs = torch.rand(S, T, 2, 3, generator=gen)
    starts = torch.rand(S, T, generator=gen) < rate
    starts[1, 0] = True  # a carried state that a start at t=0 discards
    state = (torch.randn(S, 8, generator=gen), torch.randn(S, 8, generator=gen))

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        policy.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in policy.parameters()]

    params_seq, values_seq = policy.forward_sequence(obs, state, starts)
    seq_grads = grads(params_seq.square().sum() + values_seq.sum())
    outputs, h = [], state
    for t in range(T):
        params, values, h = policy(obs[:, t], h, starts[:, t])
        outputs.append((params, values))
    params_ref = torch.stack([p for p, _ in outputs], 1)
    values_ref = torch.stack([v for _, v in outputs], 1)
    ref_grads = grads(params_ref.square().sum() + values_ref.sum())
    torch.testing.assert_close(params_seq, params_ref)
    torch.testing.assert_close(values_seq, values_ref)
    for a, b in zip(seq_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_tanh_through_a_sigmoid_equals_torch_tanh_with_its_gradient():
    """The MLP's Tanh on a large batch (the sigmoid form) against ``torch.tanh``: values within
    float32 rounding, gradients ``1 - y^2`` alike; small batches take ``torch.tanh`` itself."""
    from puffer.policy.layers import SIGMOID_TANH_MIN, Tanh

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SIGMOID_TANH_MIN // 64, 64, generator=gen) * 4
    x[0, :4] = torch.tensor([0.0, 1e-6, -30.0, 30.0])
    x.requires_grad_()
    weights = torch.randn(x.shape, generator=gen)
    y = Tanh()(x)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    y_ref = torch.tanh(x)
    (grad_ref,) = torch.autograd.grad((y_ref * weights).sum(), x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=3e-7)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=2e-6)
    assert y.abs().max() <= 1.0
    small = torch.randn(4, 8, generator=gen)
    assert torch.equal(Tanh()(small), torch.tanh(small))
