"""Policies against computations written out in numpy: the MLP trunk for each activation, the LSTM
cell equations with episode starts inside segments, every action head's log-probability and
entropy, the CNN's layer shapes, and each PolicyConfig option's effect on the built network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import puffer.policy as P
from puffer.policy import heads as H
from puffer.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, Tuple

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OBS = Box(-1.0, 1.0, shape=(3,))


def build(action_space=None, obs_space=OBS, **cfg):
    config = P.PolicyConfig(**cfg)
    return P.build(config, obs_space, action_space or Discrete(4), seed=0)


def linears(module: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W, b)`` of every Linear layer of ``module``, in order, as float64 numpy."""
    return [
        (m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
        for m in module.modules()
        if isinstance(m, nn.Linear)
    ]


def np_act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0.0)
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))  # exact GELU


def np_mlp(policy, x: np.ndarray, activation: str) -> np.ndarray:
    for w, b in linears(policy.encoder):
        x = np_act(activation, x @ w.T + b)
    return x


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_mlp_forward_by_hand(activation):
    policy = build(hidden_sizes=[5, 7], activation=activation)
    assert [w.shape for w, _ in linears(policy.encoder)] == [(5, 3), (7, 5)]
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    h = np_mlp(policy, x, activation)
    (wh, bh), (wc, bc) = linears(policy.head)[0], linears(policy.critic)[0]
    logits, value, state = policy(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(logits.detach().numpy(), h @ wh.T + bh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value.detach().numpy(), (h @ wc.T + bc)[:, 0], rtol=1e-5, atol=1e-6)
    assert state is None and not policy.is_recurrent


def np_lstm_step(x, h, c, wi, wh, bi, bh):
    """PyTorch's LSTM cell: gates i, f, g, o stacked in that order."""
    z = x @ wi.T + bi + h @ wh.T + bh
    i, f, g, o = np.split(z, 4, axis=-1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def test_lstm_sequence_by_hand_with_episode_starts():
    policy = build(name="lstm", hidden_sizes=[4], lstm_hidden_size=6)
    assert policy.is_recurrent and policy.core.hidden_size == 6
    cell = policy.core.cell
    wi, wh, bi, bh = (
        p.detach().double().numpy()
        for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    )
    S, T = 3, 5
    rng = np.random.default_rng(1)
    obs = rng.uniform(-1, 1, (S, T, 3))
    starts = np.zeros((S, T), bool)
    starts[0, 0] = True  # segment 0 starts an episode: its carried state is dropped
    starts[1, 2] = starts[1, 4] = True  # segment 1: two episodes start inside it
    h0, c0 = rng.normal(0, 0.5, (S, 6)), rng.normal(0, 0.5, (S, 6))
    feats = np_mlp(policy, obs.reshape(S * T, 3), "tanh").reshape(S, T, 4)
    expected = np.zeros((S, T, 6))
    for s in range(S):
        h, c = h0[s], c0[s]
        for k in range(T):
            if starts[s, k]:
                h, c = np.zeros(6), np.zeros(6)
            h, c = np_lstm_step(feats[s, k], h, c, wi, wh, bi, bh)
            expected[s, k] = h
    (wc, bc), (whd, bhd) = linears(policy.critic)[0], linears(policy.head)[0]
    state = (torch.tensor(h0, dtype=torch.float32), torch.tensor(c0, dtype=torch.float32))
    params, value = policy.forward_sequence(
        torch.tensor(obs, dtype=torch.float32), state, torch.tensor(starts)
    )
    np.testing.assert_allclose(value.detach().numpy(), (expected @ wc.T + bc)[..., 0], atol=1e-5)
    np.testing.assert_allclose(params.detach().numpy(), expected @ whd.T + bhd, atol=1e-5)
    # one step at a time gives the same
    st = state
    for k in range(T):
        _, v_k, st = policy(
            torch.tensor(obs[:, k], dtype=torch.float32), st, torch.tensor(starts[:, k])
        )
        np.testing.assert_allclose(v_k.detach().numpy(), value[:, k].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(st[0].detach().numpy(), expected[:, -1], atol=1e-5)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_categorical_head_by_hand():
    policy = build(Discrete(4, start=10))
    head = policy.head
    logits = np.array([[0.5, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    actions = np.array([2, 1])
    lp, ent = head.log_prob_entropy(torch.tensor(logits), torch.tensor(actions))
    ref = np_log_softmax(logits)
    np.testing.assert_allclose(lp.numpy(), ref[[0, 1], actions], rtol=1e-12)
    np.testing.assert_allclose(ent.numpy(), -(np.exp(ref) * ref).sum(-1), rtol=1e-12)
    assert ent[1].item() == pytest.approx(math.log(4))
    assert head.mode(torch.tensor(logits)).tolist() == [2, 0]
    assert head.to_env(torch.tensor([0, 3])).tolist() == [10, 13]  # start added


def test_multicategorical_head_with_ragged_nvec_by_hand():
    head = build(MultiDiscrete([2, 3])).head
    logits = np.array([[0.3, -0.2, 1.0, 0.0, -1.0]])
    actions = np.array([[1, 2]])
    lp, ent = head.log_prob_entropy(torch.tensor(logits), torch.tensor(actions))
    a, b = np_log_softmax(logits[0, :2]), np_log_softmax(logits[0, 2:])
    assert lp.item() == pytest.approx(a[1] + b[2], rel=1e-9)
    h = -(np.exp(a) * a).sum() - (np.exp(b) * b).sum()
    assert ent.item() == pytest.approx(h, rel=1e-9)
    assert head.mode(torch.tensor(logits)).tolist() == [[0, 0]]


def test_integer_box_head_maps_indices_to_values():
    head = build(Box(-2, 1, shape=(2,), dtype=np.int64)).head
    assert head.nvec == [4, 4]
    assert head.to_env(torch.tensor([[0, 3]])).tolist() == [[-2, 1]]


@pytest.mark.parametrize("init_log_std", [0.0, -0.7])
def test_gaussian_head_by_hand(init_log_std):
    space = Box(-1.0, 1.0, shape=(2,))
    head = build(space, init_log_std=init_log_std).head
    assert head.log_std.tolist() == [pytest.approx(init_log_std)] * 2
    mean = np.array([[0.1, -0.3], [0.0, 0.5]])
    act = np.array([[0.4, -0.2], [1.5, 0.5]])
    lp, ent = head.log_prob_entropy(torch.tensor(mean), torch.tensor(act))
    s = math.exp(init_log_std)
    ref = (-0.5 * ((act - mean) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
    np.testing.assert_allclose(lp.detach().numpy(), ref, rtol=1e-6)
    h = 2 * (0.5 + 0.5 * math.log(2 * math.pi) + init_log_std)
    np.testing.assert_allclose(ent.detach().numpy(), [h, h], rtol=1e-6)
    assert head.to_env(torch.tensor([[2.0, -3.0]])).tolist() == [[1.0, -1.0]]  # clipped
    np.testing.assert_array_equal(head.mode(torch.tensor(mean)).numpy(), mean)


def test_sampling_frequencies_follow_the_probabilities():
    head = build(Discrete(3)).head
    logits = torch.tensor([[1.0, 0.0, -1.0]]).expand(6000, 3)
    g = torch.Generator().manual_seed(0)
    action, lp = head.sample(logits, g)
    p = np.exp(np_log_softmax(np.array([1.0, 0.0, -1.0])))
    freq = np.bincount(action.numpy(), minlength=3) / 6000
    assert np.abs(freq - p).max() < 4 * math.sqrt(0.25 / 6000)
    np.testing.assert_allclose(lp.numpy(), np.log(p)[action.numpy()], rtol=1e-5)


def test_cnn_options_set_the_layer_shapes():
    space = Box(0, 255, shape=(3, 20, 24), dtype=np.uint8)
    policy = build(
        Discrete(2),
        space,
        name="cnn",
        cnn_channels=[4, 6],
        cnn_kernels=[4, 3],
        cnn_strides=[2, 1],
        cnn_hidden_size=10,
    )
    convs = [m for m in policy.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 4, (4, 4), (2, 2)),
        (4, 6, (3, 3), (1, 1)),
    ]
    h, w = (20 - 4) // 2 + 1, (24 - 4) // 2 + 1  # 9, 11
    h, w = h - 3 + 1, w - 3 + 1  # 7, 9
    fc = next(m for m in policy.encoder.modules() if isinstance(m, nn.Linear))
    assert (fc.in_features, fc.out_features) == (6 * h * w, 10)
    img = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    _, va, _ = policy(img)
    with torch.no_grad():
        scaled = img.float() / 255
        feats = policy.encoder.net(scaled)
    np.testing.assert_allclose(
        va.detach().numpy(), policy.critic(feats)[:, 0].detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_encoder_and_core_overrides():
    lstm_mlp = build(name="mlp", core="lstm", lstm_hidden_size=9)
    assert lstm_mlp.is_recurrent and lstm_mlp.initial_state(2)[0].shape == (2, 9)
    plain = build(name="lstm", core="none")
    assert not plain.is_recurrent and plain.initial_state(2) is None


# -- action heads on (batch, time, ...) parameters, generators, devices, init ----------------------

HEAD_SPACES = {
    "categorical": Discrete(3),
    "multicategorical": MultiDiscrete([2, 3]),
    "bernoulli": MultiBinary(3),
    "gaussian": Box(-1.0, 1.0, shape=(2,)),
}


def np_log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def np_head_log_prob_entropy(name, params, action):
    """Log-probability and entropy of ``action`` under the head ``name`` in numpy, any lead shape."""
    if name == "categorical":
        ref = np_log_softmax(params)
        lp = np.take_along_axis(ref, action[..., None], -1)[..., 0]
        return lp, -(np.exp(ref) * ref).sum(-1)
    if name == "multicategorical":
        a, b = np_log_softmax(params[..., :2]), np_log_softmax(params[..., 2:])
        lp = np.take_along_axis(a, action[..., :1], -1)[..., 0]
        lp = lp + np.take_along_axis(b, action[..., 1:], -1)[..., 0]
        return lp, -(np.exp(a) * a).sum(-1) - (np.exp(b) * b).sum(-1)
    if name == "bernoulli":
        on, off = np_log_sigmoid(params), np_log_sigmoid(-params)
        p = np.exp(on)
        return np.where(action == 1, on, off).sum(-1), -(p * on + (1 - p) * off).sum(-1)
    z = action - params  # gaussian with log_std 0
    lp = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    return lp, np.full(params.shape[:-1], 2 * (0.5 + 0.5 * math.log(2 * math.pi)))


@pytest.mark.parametrize("name", HEAD_SPACES)
def test_head_on_batch_by_time_parameters(name):
    """Parameters ``(B, T, P)``: sampled actions, their log-probabilities, ``log_prob_entropy`` and
    the mode keep the ``(B, T)`` lead shape and match numpy."""
    head = H.make_head(HEAD_SPACES[name], 4)
    params = torch.randn(2, 3, head.linear.out_features, generator=torch.Generator().manual_seed(1))
    params = params.double()
    action, logp = head.sample(params, torch.Generator().manual_seed(2))
    assert action.shape == (2, 3, *head.action_shape) and logp.shape == (2, 3)
    np_action = action.detach().numpy()
    ref_lp, ref_ent = np_head_log_prob_entropy(name, params.numpy(), np_action)
    np.testing.assert_allclose(logp.detach().numpy(), ref_lp, rtol=1e-6)
    lp, ent = head.log_prob_entropy(params, action)
    np.testing.assert_allclose(lp.detach().numpy(), ref_lp, rtol=1e-6)
    np.testing.assert_allclose(ent.detach().numpy(), ref_ent, rtol=1e-6)
    mode = head.mode(params).numpy()
    if name == "categorical":
        np.testing.assert_array_equal(mode, params.numpy().argmax(-1))
    elif name == "multicategorical":
        p = params.numpy()
        np.testing.assert_array_equal(
            mode, np.stack([p[..., :2].argmax(-1), p[..., 2:].argmax(-1)], -1)
        )
    elif name == "bernoulli":
        np.testing.assert_array_equal(mode, (params.numpy() > 0).astype(np.int64))


@pytest.mark.parametrize("name", HEAD_SPACES)
def test_head_sampling_uses_only_the_given_generator(name):
    """Equal generator seeds give equal actions whatever the global RNG's state."""
    head = H.make_head(HEAD_SPACES[name], 4)
    params = torch.zeros(64, head.linear.out_features)
    draws = []
    with torch.random.fork_rng():
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            draws.append(head.sample(params, torch.Generator().manual_seed(5))[0])
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("name", ["bernoulli", "gaussian"])
def test_head_samples_on_the_parameters_device(name):
    """Noise is drawn on the parameters' device (``meta``: the only device besides the CPU)."""
    head = H.make_head(HEAD_SPACES[name], 4).to("meta")
    action, logp = head.sample(torch.empty(5, head.linear.out_features, device="meta"))
    assert action.device.type == logp.device.type == "meta" and action.shape[0] == 5


@pytest.mark.parametrize("name", HEAD_SPACES)
def test_head_forward_is_affine_with_small_orthogonal_init(name):
    """``forward(h) = h W^T + b``; ``W`` is orthogonal with gain 0.01 (rows of norm 0.01 when
    ``P <= hidden``), ``b`` starts at 0."""
    head = H.make_head(HEAD_SPACES[name], 8)
    w = head.linear.weight.detach().numpy()
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 0.01, rtol=1e-5)
    assert not head.linear.bias.detach().any()
    with torch.no_grad():
        head.linear.bias.copy_(torch.arange(w.shape[0], dtype=torch.float32) + 1)
    h = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    out = head(torch.from_numpy(h)).detach().numpy()
    np.testing.assert_allclose(out, h @ w.T + np.arange(w.shape[0]) + 1, rtol=1e-5)


def test_gaussian_default_log_std_is_zero_and_noise_keeps_float64():
    space = HEAD_SPACES["gaussian"]
    assert H.make_head(space, 4).log_std.tolist() == [0.0, 0.0]
    head = H.GaussianHead(4, space).double()
    assert head.log_std.tolist() == [0.0, 0.0]
    action, _ = head.sample(torch.zeros(256, 2, dtype=torch.float64), torch.Generator())
    # float64 noise: not every value is a float32 value
    assert action.dtype == torch.float64 and (action.float().double() != action).any()


def test_bernoulli_mode_and_draw_at_the_boundary():
    """Logit 0 (p = 1/2) has mode 0, like argmax's first of equal logits; an element is on when its
    uniform draw is strictly below p, so p = 0 (logit -inf) is never on."""
    head = H.make_head(MultiBinary(2), 4)
    assert head.mode(torch.tensor([[0.0, 1e-6]])).tolist() == [[0, 1]]
    # Logits whose p equals the uniform draw exactly (the draw is read from a copy of the generator).
    g = torch.Generator().manual_seed(0)
    u = torch.rand(4, 256, generator=torch.Generator().set_state(g.get_state()))
    logits = torch.logit(u.double()).float()
    tie = torch.sigmoid(logits) == u
    assert tie.sum() > 100
    action, _ = head.sample(logits, g)
    assert not action[tie].any()


def test_multicategorical_pad_index_is_not_saved():
    """The padding index is rebuilt from the space: a state_dict holds only the linear layer."""
    head = H.make_head(MultiDiscrete([2, 3]), 4)
    assert sorted(head.state_dict()) == ["linear.bias", "linear.weight"]


def test_integer_box_head_with_bounds_beyond_float64_precision():
    """Bounds near 2**60 stay exact (int64, not float64): 4 values, mapped back exactly."""
    low = 2**60
    head = H.make_head(Box(low, low + 3, shape=(1,), dtype=np.int64), 4)
    assert head.nvec == [4]
    assert head.to_env(torch.tensor([[1], [3]])).tolist() == [[low + 1], [low + 3]]


@pytest.mark.parametrize("low", [0, -5])
def test_integer_box_category_limit(low):
    """At most MAX_CATEGORIES = 1024 values per element: 1024 is accepted, 1025 is refused with the
    whole message; an int64 range that overflows int64 arithmetic is refused too."""
    assert H.make_head(Box(low, low + 1023, shape=(2,), dtype=np.int64), 4).nvec == [1024] * 2
    space = Box(low, low + 1024, shape=(2,), dtype=np.int64)
    with pytest.raises(ValueError) as err:
        H.make_head(space, 4)
    assert str(err.value) == (
        f"action space {space!r}: an integer Box action becomes one categorical per element, with "
        "at most 1024 values each (this one has up to 1025); use a float Box (Gaussian head), "
        "Discrete or MultiDiscrete"
    )
    with pytest.raises(ValueError, match="at most 1024 values each"):
        H.make_head(Box(-(2**62), 2**62, shape=(1,), dtype=np.int64), 4)


def test_head_error_messages_in_full():
    space = Box(0, 3, shape=(2,), dtype=np.int64)
    with pytest.raises(ValueError) as err:
        H.GaussianHead(4, space)
    assert str(err.value) == (
        f"GaussianHead: action space {space!r} has dtype int64; a Gaussian policy needs a float "
        "Box (integer Box actions get a categorical head from make_head)"
    )
    bad = Tuple([Discrete(2), Discrete(3)])
    with pytest.raises(ValueError) as err:
        H.make_head(bad, 4)
    assert str(err.value) == (
        f"action space {bad!r} cannot be trained: policies support Discrete, MultiDiscrete, "
        "MultiBinary and Box actions (flatten Dict/Tuple actions into one of them in a wrapper)"
    )


# -- encoders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,layout",
    [
        ((5, 7), (1, 5, 7, False)),  # (H, W): one channel
        ((10, 12, 4), (4, 10, 12, True)),  # last axis <= 4, first > 4: (H, W, C)
        ((10, 12, 3), (3, 10, 12, True)),
        ((10, 3, 2), (2, 10, 3, True)),  # only the first and last axes decide
        ((10, 12, 5), (10, 12, 5, False)),  # last axis 5: (C, H, W)
        ((4, 6, 3), (4, 6, 3, False)),  # first axis 4 is not > 4: (C, H, W)
        ((3, 84, 84), (3, 84, 84, False)),
    ],
)
def test_image_layout_by_hand(shape, layout):
    from puffer.policy.encoders import image_layout

    assert image_layout(shape) == layout


def test_is_image_needs_uint8_and_two_or_three_axes():
    from puffer.policy.encoders import is_image

    assert is_image(Box(0, 255, (8, 8), np.uint8)) and is_image(Box(0, 255, (3, 8, 8), np.uint8))
    assert not is_image(Box(0.0, 1.0, (3, 8, 8), np.float32))
    assert not is_image(Box(0, 255, (8,), np.uint8)) and not is_image(
        Box(0, 255, (1, 2, 8, 8), np.uint8)
    )
    assert not is_image(Discrete(3))


def test_mlp_encoder_defaults_to_tanh():
    from puffer.policy.encoders import MLPEncoder

    enc = MLPEncoder(3, [4])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    [(w, b)] = linears(enc)
    np.testing.assert_allclose(
        enc(torch.from_numpy(x)).detach().numpy(), np.tanh(x @ w.T + b), rtol=1e-5
    )


def test_mlp_encoder_casts_other_dtypes_to_float32():
    from puffer.policy.encoders import MLPEncoder

    enc = MLPEncoder(3, [4], "relu")
    [(w, b)] = linears(enc)
    for x in (np.array([[1.5, -2.0, 0.25]]), np.array([[3, 0, 7]], np.uint8)):
        out = enc(torch.from_numpy(x))
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.detach().numpy(), np.maximum(x @ w.T + b, 0), rtol=1e-5)


SMALL_CNN = {"channels": (4, 8), "kernels": (3, 3), "strides": (2, 1), "hidden_size": 16}


def cnn_reference(enc, x: torch.Tensor) -> torch.Tensor:
    """The CNN on ``x`` (float32, NCHW, already scaled), written with the functional ops."""
    for conv in (m for m in enc.modules() if isinstance(m, nn.Conv2d)):
        x = torch.relu(torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride))
    [linear] = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    return torch.relu(x.flatten(1) @ linear.weight.T + linear.bias)


@pytest.mark.parametrize(
    "shape,to_nchw",
    [
        ((3, 10, 12), lambda x: x),
        ((10, 12, 3), lambda x: x.permute(0, 3, 1, 2)),  # (H, W, C)
        ((10, 12), lambda x: x[:, None]),  # (H, W): one channel
    ],
)
def test_nature_cnn_scales_uint8_by_default_in_every_layout(shape, to_nchw):
    from puffer.policy.encoders import NatureCNN

    enc = NatureCNN(shape, **SMALL_CNN)
    x = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(0))
    x = x.to(torch.uint8)
    with torch.no_grad():
        expected = cnn_reference(enc, to_nchw(x).float() / 255)
        torch.testing.assert_close(enc(x), expected, rtol=1e-5, atol=1e-6)
        unscaled = NatureCNN(shape, scale=False, **SMALL_CNN)
        torch.testing.assert_close(unscaled(x), cnn_reference(unscaled, to_nchw(x).float()))


def test_nature_cnn_scales_float32_input_without_touching_it():
    from puffer.policy.encoders import NatureCNN

    enc = NatureCNN((3, 10, 12), **SMALL_CNN)
    x = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(0)) * 255
    before = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(enc(x), cnn_reference(enc, before / 255), rtol=1e-5, atol=1e-6)
    assert torch.equal(x, before)


def test_nature_cnn_size_checks_and_defaults():
    """A kernel as large as the image fits (a 1x1 output); one larger on either side is refused
    with the whole message; the layer lists must have equal lengths; the default width is 512."""
    from puffer.policy.encoders import NatureCNN

    assert NatureCNN((3, 8, 8), channels=(4,), kernels=(8,), strides=(1,)).output_size == 512
    for shape in ((3, 7, 20), (3, 20, 7)):
        with pytest.raises(ValueError) as err:
            NatureCNN(shape, channels=(4,), kernels=(8,), strides=(4,))
        assert str(err.value) == (
            f"image observations of shape {shape} are too small for the CNN (kernels [8], strides "
            "[4]): use smaller kernels, e.g. policy.cnn_kernels=[3,3] policy.cnn_strides=[1,1] "
            "policy.cnn_channels=[16,32]"
        )
    with pytest.raises(ValueError):
        NatureCNN((3, 32, 32), channels=(4, 8, 8), kernels=(3, 3), strides=(1, 1))


def multi_input_space():
    return Dict(
        {
            "img": Box(0, 255, (8, 8), np.uint8),
            "a": Box(-1.0, 1.0, (2,)),
            "t": Tuple([Box(-1.0, 1.0, (1,)), Box(0, 255, (8, 8, 3), np.uint8)]),
            "n": Dict({"x": Box(-1.0, 1.0, (3,))}),
        }
    )


def test_leaves_paths_and_offsets_by_hand():
    from puffer.policy.encoders import leaves

    got = [(p, s.shape, o) for p, s, o in leaves(multi_input_space())]
    assert got == [
        ("img", (8, 8), 0),
        ("a", (2,), 64),
        ("t[0]", (1,), 66),
        ("t[1]", (8, 8, 3), 67),
        ("n.x", (3,), 259),
    ]
    top = Tuple([Box(-1.0, 1.0, (2,)), Tuple([Box(-1.0, 1.0, (4,)), Box(-1.0, 1.0, (1,))])])
    assert [(p, o) for p, _, o in leaves(top)] == [("[0]", 0), ("[1][0]", 2), ("[1][1]", 6)]
    assert [(p, o) for p, _, o in leaves(top, 10, "obs")] == [
        ("obs[0]", 10),
        ("obs[1][0]", 12),
        ("obs[1][1]", 16),
    ]


def test_multi_input_encoder_against_its_parts_by_hand():
    """One CNN per image leaf (on its slice of the flat vector, in its own layout) and a tanh MLP
    over the other leaves' slices, concatenated in leaf order."""
    from puffer.policy.encoders import MultiInputEncoder

    enc = MultiInputEncoder(multi_input_space(), [5, 6, 4], "tanh", SMALL_CNN)
    assert enc.image_keys == ["img", "t[1]"] and enc.output_size == 16 + 16 + 4
    flat = torch.randint(0, 256, (2, 262), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        img = cnn_reference(enc.cnns[0], flat[:, 0:64].reshape(2, 1, 8, 8) / 255)
        t1 = cnn_reference(
            enc.cnns[1], flat[:, 67:259].reshape(2, 8, 8, 3).permute(0, 3, 1, 2) / 255
        )
        vec = torch.cat([flat[:, 64:67], flat[:, 259:262]], -1).double().numpy()
        for w, b in linears(enc.mlp):
            vec = np.tanh(vec @ w.T + b)
        got = enc(flat)
    assert got.shape == (2, 36)
    torch.testing.assert_close(got[:, :16], img, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, 16:32], t1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 32:].numpy(), vec, rtol=1e-5, atol=1e-6)


def test_multi_input_encoder_with_images_only_and_with_none():
    from puffer.policy.encoders import MultiInputEncoder

    space = Dict({"img": Box(0, 255, (8, 8), np.uint8)})
    enc = MultiInputEncoder(space, [4], "tanh", SMALL_CNN)
    assert enc.mlp is None and enc.output_size == 16
    x = torch.randint(0, 256, (3, 64), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    with torch.no_grad():
        expected = cnn_reference(enc.cnns[0], x.reshape(3, 1, 8, 8).float() / 255)
        torch.testing.assert_close(enc(x), expected, rtol=1e-5, atol=1e-6)
    mixed = Dict({"img": Box(0, 255, (8, 8), np.uint8), "a": Box(-1.0, 1.0, (2,))})
    both = MultiInputEncoder(mixed, [3], "relu", SMALL_CNN)
    assert both(torch.zeros(1, 66)).shape == (1, 19)  # one image and one vector: both kept
    vectors = Dict({"a": Box(-1.0, 1.0, (2,))})
    with pytest.raises(ValueError) as err:
        MultiInputEncoder(vectors, [4], "tanh", SMALL_CNN)
    assert str(err.value) == (
        "policy encoder 'cnn' needs image observations (uint8 Box of 2 or 3 axes); "
        f"{vectors!r} has none: use policy=mlp (or lstm)"
    )


@pytest.mark.parametrize(
    "space",
    [
        Box(0, 3, shape=(0,), dtype=np.int64),
        Box(-1.0, 1.0, shape=(2, 0), dtype=np.float32),
        MultiBinary(0),
    ],
)
def test_an_action_space_with_no_elements_is_refused_naming_it(space):
    with pytest.raises(
        ValueError, match=r"action space .* has no elements: there is no action to learn"
    ):
        H.make_head(space, 8)


def test_predict_is_the_mode_by_default_and_carries_the_state():
    torch.manual_seed(0)
    policy = P.build(
        P.PolicyConfig(name="lstm", hidden_sizes=[8], lstm_hidden_size=8),
        Box.uniform([3], -1, 1),
        Discrete(5, start=2),
        seed=0,
    )
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    state = policy.initial_state(64)
    state = tuple(torch.randn_like(s) for s in state)
    params, _, next_state = policy(torch.from_numpy(obs), state)
    actions, got_state = policy.predict(obs, state)
    assert actions.tolist() == (params.argmax(-1) + 2).tolist()  # the mode, in the env's range
    for got, want in zip(got_state, next_state, strict=True):
        torch.testing.assert_close(got, want)  # the given state, stepped
    fresh, _ = policy.predict(obs)  # from the initial state: other actions on these logits
    assert fresh.tolist() != actions.tolist()
    sampled, _ = policy.predict(obs, state, deterministic=False)
    assert sampled.tolist() != actions.tolist()  # near-uniform logits: 64 draws differ somewhere


def test_running_norm_clips_both_sides():
    from puffer.policy.norm import RunningNorm

    norm = RunningNorm(2, clip=3.0)
    norm.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, var 1
    norm.enabled = True
    out = norm(torch.tensor([[10.0, -10.0], [1.5, 0.5]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, -3.0], [0.5, -0.5]]), atol=1e-6, rtol=0)


# --- which path Tanh takes, the LSTM's run plan, and the policy's wiring ---------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_tanh_takes_the_sigmoid_form_only_for_large_float32_cpu_inputs():
    from puffer.policy.layers import SIGMOID_TANH_MIN, Tanh

    def sigmoid_form(x):
        return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)

    gen = torch.Generator().manual_seed(0)
    at_the_bound = torch.randn(SIGMOID_TANH_MIN, generator=gen) * 3
    assert torch.equal(Tanh()(at_the_bound), sigmoid_form(at_the_bound))
    assert not torch.equal(sigmoid_form(at_the_bound), torch.tanh(at_the_bound))  # tells them apart
    below = at_the_bound[:-1]
    assert torch.equal(Tanh()(below), torch.tanh(below))
    wide = at_the_bound.double()
    assert torch.equal(Tanh()(wide), torch.tanh(wide))
    traced = torch.jit.trace(Tanh(), at_the_bound)
    assert "aten::tanh" in str(traced.graph) and "sigmoid" not in str(traced.graph)


def test_lstm_run_plan_by_hand():
    from puffer.policy.cores import _plan

    starts = np.array([[0, 0, 1, 0], [0, 1, 0, 0]], bool)
    plan = _plan(starts)  # runs: [0, 1], [2, 3] | [4], [5, 6, 7]: all in one padded call of 3
    assert plan.runs == 4 and plan.first.tolist() == [0, 2]
    assert len(plan.calls) == 1
    runs, length, src, dst = plan.calls[0]
    assert runs.tolist() == [0, 1, 2, 3] and length == 3
    assert src.tolist() == list(range(8)) and dst.tolist() == [0, 1, 3, 4, 6, 9, 10, 11]
    assert plan.inverse.tolist() == list(range(8))


def test_lstm_run_plan_gives_a_lone_long_run_its_own_call():
    from puffer.policy.cores import _plan

    starts = np.ones((4, 64), bool)
    starts[0] = False  # segment 0: one run of 64 steps; the others: 192 runs of one step
    plan = _plan(starts)
    assert [(len(runs), length) for runs, length, _, _ in plan.calls] == [(192, 1), (1, 64)]
    assert plan.calls[1][0].tolist() == [0] and plan.calls[1][2].tolist() == list(range(64))
    policy = P.LSTM(Box.uniform([3], -1, 1), Discrete(2), [8], lstm_hidden_size=8)
    obs = torch.randn(4, 64, 3, generator=torch.Generator().manual_seed(0))
    state = tuple(torch.randn(4, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    assert_sequence_equals_steps(policy, obs, state, torch.from_numpy(starts))


def assert_sequence_equals_steps(policy, obs, state, starts) -> None:
    """``forward_sequence`` over ``(S, T)`` gives the values of ``T`` one-step calls."""
    with torch.no_grad():
        _, values = policy.forward_sequence(obs, state, starts)
        step_state, expected = state, []
        for t in range(obs.shape[1]):
            _, value, step_state = policy(obs[:, t], step_state, starts[:, t])
            expected.append(value)
    torch.testing.assert_close(values, torch.stack(expected, 1))


@pytest.mark.parametrize(
    ("klass", "lengths", "groups"),
    [
        # one long run apart from 100 short ones: 131 + 158 beats 30 + 64 * 102 merged
        ([0] * 100 + [6], [1] * 100 + [64], [[0], [6]]),
        # two runs of 4 and two of 8: 30 + 8 * 5 = 70 merged beats 42 + 54 apart
        ([2, 2, 3, 3], [4, 4, 8, 8], [[2, 3]]),
        # short classes merge (44), the long one stays apart (3294): 3338 is the least
        ([0] * 3 + [1] * 3 + [6] * 50, [1] * 3 + [2] * 3 + [64] * 50, [[0, 1], [6]]),
    ],
)
def test_lstm_length_classes_merge_by_the_cost_model(klass, lengths, groups):
    from puffer.policy.cores import CALL_COST, STEP_COST, _merge

    assert (CALL_COST, STEP_COST) == (30.0, 1.0)  # the costs the hand sums above use
    assert _merge(np.array(klass), np.array(lengths)) == groups


def test_policy_defaults_and_what_the_constructors_pass_on():
    obs, box = Box.uniform([3], -1, 1), Box.uniform([2], -1, 1)
    assert P.MLP(obs, box).head.log_std.tolist() == [0.0, 0.0]
    lstm = P.LSTM(obs, box)
    assert lstm.head.log_std.tolist() == [0.0, 0.0] and lstm.core.hidden_size == 64
    assert P.LSTM(obs, box, init_log_std=-1.0).head.log_std.tolist() == [-1.0, -1.0]
    for cls in (P.MLP, P.LSTM):
        relu = cls(obs, Discrete(2), [4], activation="relu")
        assert isinstance(relu.encoder.net[1], nn.ReLU)
    encoder = nn.Sequential(nn.Linear(3, 5))
    assert P.Policy(obs, box, encoder=_sized(encoder, 5)).head.log_std.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"^LSTM: pass encoder_size, the output size of the given"):
        P.LSTM(obs, box, encoder=nn.Linear(3, 5))
    assert P.LSTM(obs, box, encoder=nn.Linear(3, 5), encoder_size=5).core.input_size == 5


def _sized(module: nn.Module, size: int) -> nn.Module:
    module.output_size = size
    return module


def test_an_encoder_without_normalizable_gets_flat_float32_normalized_input():
    obs_space = Box.uniform([2, 2], -10, 10)
    seen = []

    class Spy(nn.Module):
        output_size = 4

        def forward(self, x):
            seen.append(x)
            return x

    policy = P.Policy(obs_space, Discrete(2), encoder=Spy())
    policy.obs_norm.update(torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 4.0, 6.0, 8.0]]))
    policy.obs_norm.enabled = True  # allowed: flat input by default
    policy(torch.tensor([[[3.0, 6.0], [9.0, 12.0]]], dtype=torch.float64))
    assert seen[-1].dtype == torch.float32 and seen[-1].shape == (1, 4)
    # mean (1, 2, 3, 4), std (1, 2, 3, 4): every feature is 2 standard deviations out
    torch.testing.assert_close(seen[-1], torch.full((1, 4), 2.0))


def test_observations_of_any_dtype_reach_the_mlp_as_float32():
    policy = P.MLP(Box.uniform([3], -5, 5), Discrete(2), [4])
    as_float = policy(torch.tensor([[1.0, -2.0, 3.0]]))
    for dtype in (torch.float64, torch.int64, torch.int16):
        params, value, _ = policy(torch.tensor([[1, -2, 3]], dtype=dtype))
        torch.testing.assert_close(params, as_float[0])
        torch.testing.assert_close(value, as_float[1])


def test_recurrent_forward_sequence_without_a_state_starts_from_zeros():
    policy = P.LSTM(Box.uniform([3], -1, 1), Discrete(2), [4], lstm_hidden_size=6)
    obs = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        implicit = policy.forward_sequence(obs)
        explicit = policy.forward_sequence(obs, policy.initial_state(2))
    for a, b in zip(implicit, explicit, strict=True):
        torch.testing.assert_close(a, b)


def test_act_builds_no_autograd_graph():
    policy = P.MLP(Box.uniform([3], -1, 1), Box.uniform([2], -1, 1), [4])
    out = policy.act(torch.randn(5, 3))
    assert not any(t.requires_grad for t in (out.action, out.log_prob, out.value))


def test_build_passes_every_setting_to_every_kind_of_policy():
    obs, image, box = Box.uniform([3], -1, 1), Box(0.0, 1.0, (36, 36, 3)), Box.uniform([2], -1, 1)
    cases = [("mlp", obs), ("lstm", obs), ("cnn", image), ("cnn_lstm", image)]
    for name, space in cases:
        config = P.PolicyConfig(name=name, init_log_std=-0.7, cnn_hidden_size=16)
        policy = P.build(config, space, box)
        assert policy.head.log_std.tolist() == pytest.approx([-0.7, -0.7]), name
    cnn = P.build(P.PolicyConfig(name="cnn", cnn_hidden_size=16), image, box).encoder
    assert cnn.scale is False  # float images are used as they are; uint8 ones are scaled


def test_build_of_a_custom_policy_passes_the_spaces_and_settings(monkeypatch):
    import sys
    import types

    class Net(nn.Module):
        output_size = 3

        def __init__(self, observation_space, action_space, original_observation_space, width):
            super().__init__()
            self.got = (observation_space, action_space, original_observation_space, width)
            self.linear = nn.Linear(3, 3)

        def forward(self, obs):
            return self.linear(obs), obs.sum(-1)

    module = types.ModuleType("build_nets_q")
    module.Net = Net
    monkeypatch.setitem(sys.modules, "build_nets_q", module)
    obs, box, original = (
        Box.uniform([3], -1, 1),
        Box.uniform([2], -1, 1),
        Box.uniform([1, 3], -1, 1),
    )
    config = P.PolicyConfig(
        name="custom", _target_="build_nets_q.Net", kwargs={"width": 9}, init_log_std=-0.3
    )
    policy = P.build(config, obs, box, original_observation_space=original)
    assert policy.network.got == (obs, box, original, 9)
    assert policy.head.log_std.tolist() == pytest.approx([-0.3, -0.3])


def test_make_reads_the_vecenv_spaces_and_seeds_the_weights():
    from types import SimpleNamespace

    vecenv = SimpleNamespace(
        single_observation_space=Box.uniform([3], -1, 1), single_action_space=Discrete(2)
    )  # no original_observation_space: a flat env
    config = P.PolicyConfig(hidden_sizes=[4])
    first, again = P.make(config, vecenv, seed=3), P.make(config, vecenv, seed=3)
    other = P.make(config, vecenv, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not torch.equal(first.encoder.net[0].weight, other.encoder.net[0].weight)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encoder": "vit"}, r"^policy.encoder='vit' is unknown: use one of \('mlp', 'cnn'\)$"),
        ({"core": "gru"}, r"^policy.core='gru' is unknown: use one of \('none', 'lstm'\)$"),
        (
            {"hidden_sizes": [1.5]},
            r"^policy.hidden_sizes=\[1.5\]: give one or more positive ints, e.g. \[64, 64\]$",
        ),
        (
            {"hidden_sizes": []},
            r"^policy.hidden_sizes=\[\]: give one or more positive ints, e.g. \[64, 64\]$",
        ),
        (
            {"lstm_hidden_size": 0},
            r"^policy.lstm_hidden_size=\[0\]: give one or more positive ints, e.g. 128$",
        ),
        (
            {"cnn_hidden_size": -1},
            r"^policy.cnn_hidden_size=\[-1\]: give one or more positive ints, e.g. 128$",
        ),
        ({"cnn_channels": [0]}, r"^policy.cnn_channels=\[0\]: .*, e.g. \[32,64,64\]$"),
        ({"cnn_kernels": [0]}, r"^policy.cnn_kernels=\[0\]: .*, e.g. \[8,4,3\]$"),
        ({"cnn_strides": [0]}, r"^policy.cnn_strides=\[0\]: .*, e.g. \[4,2,1\]$"),
        (
            {"cnn_channels": [1, 2], "cnn_kernels": [3, 4, 5], "cnn_strides": [6]},
            r"^policy.cnn_channels=\[1, 2\], cnn_kernels=\[3, 4, 5\], cnn_strides=\[6\]: give "
            r"one entry per conv layer in each$",
        ),
        (
            {"name": "custom"},
            r"^policy=custom needs policy._target_, the dotted path of your network class, "
            r"e.g. policy._target_=my_pkg.nets.MyPolicy$",
        ),
        (
            {"_target_": "a.B"},
            r"^policy._target_='a.B' is set but policy.name='mlp': use policy=custom to build it$",
        ),
    ],
)
def test_policy_config_errors_in_full(overrides, message):
    with pytest.raises(ValueError, match=message):
        P.PolicyConfig(**overrides).validate()


def test_policy_config_parts():
    assert P.PolicyConfig().parts() == ("mlp", "none")
    assert P.PolicyConfig(name="cnn_lstm").parts() == ("cnn", "lstm")
    assert P.PolicyConfig(name="custom", _target_="a.B").parts() == ("mlp", "none")
    assert P.PolicyConfig(name="lstm", encoder="cnn", core="none").parts() == ("cnn", "none")


def test_lstm_core_weights_are_orthogonal_with_gain_one_and_biases_zero():
    from puffer.policy.cores import LSTMCore

    core = LSTMCore(3, 5)
    for weight in (core.cell.weight_ih, core.cell.weight_hh):  # (20, 3) and (20, 5)
        gram = weight.T @ weight  # orthonormal columns: the identity
        torch.testing.assert_close(gram, torch.eye(weight.shape[1]), atol=1e-5, rtol=0)
    assert not core.cell.bias_ih.any() and not core.cell.bias_hh.any()


def test_lstm_sequence_with_a_start_only_at_the_second_step():
    policy = P.LSTM(Box.uniform([3], -1, 1), Discrete(2), [4], lstm_hidden_size=6)
    obs = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    state = tuple(torch.randn(2, 6, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    starts = torch.zeros(2, 5, dtype=torch.bool)
    starts[1, 1] = True
    assert_sequence_equals_steps(policy, obs, state, starts)


def test_running_norm_defaults():
    from puffer.policy.norm import RunningNorm

    norm = RunningNorm(3)
    assert (norm.clip, norm.eps, norm.enabled) == (10.0, 1e-8, False)
    assert norm.mean.dtype == norm.var.dtype == norm.count.dtype == torch.float64
