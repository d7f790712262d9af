"""Custom networks (``policy=custom``) and custom env creators (``env=custom``) checked in process
against values computed here: how the network contract is wired to puffer's action head, the
recurrent fallback that steps ``forward`` once per step, and the message of every refusal."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from puffer.envs.config import EnvConfig, creator, env_label, import_creator
from puffer.policy import Policy
from puffer.policy.custom import CustomPolicy, build_custom, import_target
from puffer.spaces import Box, Discrete

OBS, ACT = Box.uniform([3], -1, 1), Discrete(4)


class Trunk(nn.Module):
    """Feed-forward: features ``tanh(W obs + b)``, value from a linear layer on them."""

    def __init__(self, observation_space, action_space, hidden=5):
        super().__init__()
        self.output_size = hidden
        self.spaces = (observation_space, action_space)
        self.trunk = nn.Linear(observation_space.shape[0], hidden)
        self.value = nn.Linear(hidden, 1)

    def forward(self, obs):
        features = torch.tanh(self.trunk(obs))
        return features, self.value(features).squeeze(-1)


class RunningSum(nn.Module):
    """Recurrent: the state is the sum of the observations since the episode started; the features
    are that sum and the value is twice its first element."""

    output_size = 3

    def __init__(self, observation_space, action_space):
        super().__init__()
        self.calls = 0

    def initial_state(self, batch_size, device):
        return (torch.zeros(batch_size, 3, device=device),)

    def forward(self, obs, state, starts):
        self.calls += 1
        total = state[0].masked_fill(starts.unsqueeze(-1), 0.0) + obs
        return total, 2 * total[:, 0], (total,)


class RunningSumWithSequence(RunningSum):
    """Has its own ``forward_sequence``: features of sevens plus the state's sum, values of minus
    ones where an episode starts and zeros elsewhere."""

    def forward_sequence(self, obs, state, starts):
        return torch.full_like(obs, 7.0) + state[0].sum(), starts.float().neg()


class WithOriginal(Trunk):
    def __init__(self, observation_space, action_space, original_observation_space, hidden=5):
        super().__init__(observation_space, action_space, hidden)
        self.original = original_observation_space


class SizedWrong(nn.Module):
    def __init__(self, observation_space, action_space, size=None):
        super().__init__()
        if size is not None:
            self.output_size = size


class AlreadyAPolicy(Policy):
    def __init__(self, observation_space, action_space):
        nn.Module.__init__(self)


@pytest.fixture
def nets(monkeypatch):
    """The classes above as the importable module ``custom_nets`` (and ``custom_pkg.nets``)."""
    module = types.ModuleType("custom_nets")
    for cls in (Trunk, RunningSum, RunningSumWithSequence, WithOriginal, SizedWrong):
        setattr(module, cls.__name__, cls)
    module.AlreadyAPolicy, module.not_a_module = AlreadyAPolicy, lambda **_: 3
    monkeypatch.setitem(sys.modules, "custom_nets", module)
    monkeypatch.setitem(sys.modules, "custom_pkg", types.ModuleType("custom_pkg"))
    monkeypatch.setitem(sys.modules, "custom_pkg.nets", module)
    return module


def by_hand_head(policy: CustomPolicy, features: torch.Tensor) -> torch.Tensor:
    """The Discrete head's logits ``features @ W.T + b``, written out."""
    weight, bias = policy.head.linear.weight, policy.head.linear.bias
    return (features.unsqueeze(-2) * weight).sum(-1) + bias


# --- import_target and build_custom ---------------------------------------------------------------


def test_import_target_takes_a_dot_or_a_colon(nets):
    assert import_target("custom_nets.Trunk") is Trunk
    assert import_target("custom_nets:Trunk") is Trunk
    assert import_target("custom_pkg.nets:Trunk") is Trunk  # the colon splits, not the last dot
    assert import_target("custom_pkg.nets.Trunk") is Trunk


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Trunk", r"policy._target_='Trunk': give a dotted path to a class, e\.g\. my_pkg"),
        (":Trunk", r"policy._target_=':Trunk': give a dotted path"),
        ("custom_nets:", r"policy._target_='custom_nets:': give a dotted path"),
        ("custom_nets.", r"policy._target_='custom_nets.': give a dotted path"),
        ("no_such_pkg_q.Net", r"_target_='no_such_pkg_q.Net': cannot import 'no_such_pkg_q' \("),
        ("custom_nets.Trunc", r"_target_='custom_nets.Trunc': custom_nets has no 'Trunc'$"),
    ],
)
def test_import_target_names_what_is_wrong(nets, target, message):
    with pytest.raises(ValueError, match=message):
        import_target(target)


def test_build_custom_passes_the_spaces_and_kwargs_and_adds_the_head(nets):
    kwargs = {"hidden": 6}
    policy = build_custom("custom_nets.Trunk", kwargs, OBS, ACT)
    assert kwargs == {"hidden": 6}  # the caller's dict is not changed
    assert isinstance(policy, CustomPolicy) and isinstance(policy.network, Trunk)
    assert policy.network.spaces == (OBS, ACT) and policy.network.output_size == 6
    assert policy.hidden_size == 6 and policy.obs_shape == (3,) and policy.obs_dim == 3
    assert (policy.head.linear.in_features, policy.head.linear.out_features) == (6, 4)
    assert not policy.is_recurrent and policy.core is None
    assert policy.initial_state(5) is None
    assert list(policy.critic.parameters()) == []  # the network's own value, nothing added
    assert policy.device == torch.device("cpu")


def test_build_custom_gives_the_gaussian_head_its_initial_log_std(nets):
    policy = build_custom("custom_nets.Trunk", {}, OBS, Box.uniform([2], -1, 1), init_log_std=-0.5)
    assert policy.head.log_std.tolist() == [-0.5, -0.5]
    default = build_custom("custom_nets.Trunk", {}, OBS, Box.uniform([2], -1, 1))
    assert default.head.log_std.tolist() == [0.0, 0.0]


def test_a_factory_whose_signature_cannot_be_read_is_still_called(nets):
    class Opaque:
        """A callable whose signature inspect cannot read."""

        @property
        def __signature__(self):
            raise ValueError("no signature")

        def __call__(self, observation_space, action_space):
            return Trunk(observation_space, action_space)

    nets.opaque = Opaque()
    assert isinstance(build_custom("custom_nets.opaque", {}, OBS, ACT).network, Trunk)


def test_only_a_constructor_that_asks_gets_the_original_space(nets):
    original = Box.uniform([1, 3], -1, 1)
    policy = build_custom("custom_nets.WithOriginal", {}, OBS, ACT, original)
    assert policy.network.original is original
    assert build_custom("custom_nets.WithOriginal", {}, OBS, ACT).network.original is OBS
    assert build_custom("custom_nets.Trunk", {}, OBS, ACT, original).network.spaces == (OBS, ACT)


def test_a_policy_subclass_is_used_as_it_is(nets):
    policy = build_custom("custom_nets.AlreadyAPolicy", {}, OBS, ACT)
    assert type(policy) is AlreadyAPolicy


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("custom_nets.not_a_module", {}, r"'custom_nets.not_a_module' built 3, not a torch nn"),
        ("custom_nets.SizedWrong", {}, r"int attribute output_size .*, got None$"),
        ("custom_nets.SizedWrong", {"size": 0}, r"got 0$"),
        ("custom_nets.SizedWrong", {"size": 1.0}, r"got 1\.0$"),
        ("custom_nets.SizedWrong", {"size": "4"}, r"got '4'$"),
    ],
)
def test_build_custom_refuses_a_network_off_the_contract(nets, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_custom(target, kwargs, OBS, ACT)


def test_output_size_one_is_enough(nets):
    assert build_custom("custom_nets.SizedWrong", {"size": 1}, OBS, ACT).hidden_size == 1


def test_a_custom_policy_refuses_observation_normalization(nets):
    policy = build_custom("custom_nets.Trunk", {}, OBS, ACT)
    with pytest.raises(ValueError, match="cannot apply to a custom policy"):
        policy.obs_norm.enabled = True
    assert not policy.obs_norm.enabled


# --- the forward passes ---------------------------------------------------------------------------


def test_feed_forward_params_are_the_head_on_the_network_features(nets):
    torch.manual_seed(0)
    policy = build_custom("custom_nets.Trunk", {}, OBS, ACT)
    obs = torch.randn(7, 3)
    features = torch.tanh(obs @ policy.network.trunk.weight.T + policy.network.trunk.bias)
    value = features @ policy.network.value.weight[0] + policy.network.value.bias[0]
    params, values, state = policy(obs)
    assert params.shape == (7, 4) and values.shape == (7,) and state is None
    torch.testing.assert_close(params, by_hand_head(policy, features))
    torch.testing.assert_close(values, value)
    seq_params, seq_values = policy.forward_sequence(obs.view(1, 7, 3).repeat(2, 1, 1))
    assert seq_params.shape == (2, 7, 4) and seq_values.shape == (2, 7)
    torch.testing.assert_close(seq_params[1], params)
    torch.testing.assert_close(seq_values[0], values)


def test_recurrent_forward_starts_from_zeros_and_resets_at_starts(nets):
    policy = build_custom("custom_nets.RunningSum", {}, OBS, ACT)
    assert policy.is_recurrent
    (zeros,) = policy.initial_state(2)
    assert torch.equal(zeros, torch.zeros(2, 3))
    obs = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    params, value, (total,) = policy(obs)  # no state: from zeros; no starts: nothing reset
    assert torch.equal(total, obs) and value.tolist() == [2.0, 8.0]
    torch.testing.assert_close(params, by_hand_head(policy, obs))
    _, value, (total,) = policy(obs, (total,))
    assert value.tolist() == [4.0, 16.0]
    _, value, (total,) = policy(obs, (total,), torch.tensor([True, False]))
    assert total.tolist() == [[1.0, 2.0, 3.0], [12.0, 15.0, 18.0]] and value.tolist() == [2.0, 24.0]


def test_without_its_own_forward_sequence_each_step_is_one_forward(nets):
    policy = build_custom("custom_nets.RunningSum", {}, OBS, ACT)
    rng = np.random.default_rng(0)
    obs = rng.integers(-3, 4, size=(2, 5, 3)).astype(np.float32)
    starts = np.zeros((2, 5), bool)
    starts[0, 2] = starts[1, 0] = starts[1, 4] = True
    state = np.array([[10.0, 0.0, 0.0], [20.0, 0.0, 0.0]], np.float32)
    expected = np.zeros_like(obs)
    for s in range(2):
        running = state[s]
        for t in range(5):
            running = (0 if starts[s, t] else running) + obs[s, t]
            expected[s, t] = running
    params, values = policy.forward_sequence(
        torch.from_numpy(obs), (torch.from_numpy(state),), torch.from_numpy(starts)
    )
    assert policy.network.calls == 5  # one call per step over both segments
    assert params.shape == (2, 5, 4) and values.shape == (2, 5)
    torch.testing.assert_close(values, torch.from_numpy(2 * expected[..., 0]))
    torch.testing.assert_close(params, by_hand_head(policy, torch.from_numpy(expected)))
    _, values = policy.forward_sequence(torch.from_numpy(obs))  # from zeros, never reset
    torch.testing.assert_close(values, torch.from_numpy(2 * obs[..., 0].cumsum(1)))


def test_a_network_s_own_forward_sequence_is_used(nets):
    policy = build_custom("custom_nets.RunningSumWithSequence", {}, OBS, ACT)
    params, values = policy.forward_sequence(torch.zeros(2, 4, 3))  # zero state, no starts
    assert policy.network.calls == 0 and torch.equal(values, torch.zeros(2, 4))
    torch.testing.assert_close(params, by_hand_head(policy, torch.full((2, 4, 3), 7.0)))
    starts = torch.tensor([[True, False, False, False], [False, False, True, False]])
    params, values = policy.forward_sequence(torch.zeros(2, 4, 3), (torch.ones(2, 3),), starts)
    assert torch.equal(values, -starts.float())  # the given starts and state reach the network
    torch.testing.assert_close(params, by_hand_head(policy, torch.full((2, 4, 3), 13.0)))


def test_reset_state_zeroes_the_done_rows_of_every_tensor():
    h, c = torch.arange(6.0).view(3, 2) + 1, -torch.arange(6.0).view(3, 2) - 1
    for done in (torch.tensor([False, True, False]), np.array([False, True, False])):
        new_h, new_c = Policy.reset_state((h, c), done)
        assert new_h.tolist() == [[1.0, 2.0], [0.0, 0.0], [5.0, 6.0]]
        assert new_c.tolist() == [[-1.0, -2.0], [0.0, 0.0], [-5.0, -6.0]]
    assert h[1].tolist() == [3.0, 4.0]  # a new tuple: the old state is not written
    assert Policy.reset_state(None, np.array([True])) is None


# --- env=custom: labels, creators, checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "label"),
    [
        (("gymnasium", "ale_py:ALE/Pong-v5"), "ALE-Pong-v5"),
        (("gymnasium", "CartPole-v1"), "CartPole-v1"),
        (("custom", None, "my_envs:Corridor"), "Corridor"),
        (("custom", None, "my_pkg.envs:make_corridor"), "make_corridor"),
        (("custom", None, "my_pkg.envs.Corridor"), "Corridor"),
        (("cartpole",), "cartpole"),
        (("pettingzoo", None, "pettingzoo.classic.rps_v2:parallel_env"), "rps_v2"),
        (("pettingzoo", None, "pettingzoo.butterfly.pistonball_v6:env"), "pistonball_v6"),
        (("pettingzoo", None, "my_games:make_tag"), "make_tag"),
        (("custom", None, "my_games:parallel_env"), "parallel_env"),
    ],
)
def test_env_label(args, label):
    assert env_label(*args) == label


@pytest.fixture
def envs_module(monkeypatch):
    module = types.ModuleType("custom_envs")
    module.Corridor, module._private = object(), object()
    monkeypatch.setitem(sys.modules, "custom_envs", module)
    return module


def test_import_creator_returns_the_attribute(envs_module):
    assert import_creator("custom_envs:Corridor") is envs_module.Corridor


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("custom_envs.Corridor", r"env.creator='custom_envs.Corridor': use 'module:callable', e"),
        (":Corridor", r"env.creator=':Corridor': use 'module:callable'"),
        ("custom_envs:", r"env.creator='custom_envs:': use 'module:callable'"),
        (
            "no_such_mod_q:Env",
            r"cannot import 'no_such_mod_q' \(.*\); make it importable \(run from its directory "
            r"or add it to PYTHONPATH\)$",
        ),
        ("custom_envs:Coridor", r"custom_envs has no 'Coridor'\. Did you mean 'Corridor'\?$"),
        ("custom_envs:Zebra", r"custom_envs has no 'Zebra'\.$"),
        ("custom_envs:_privat", r"custom_envs has no '_privat'\.$"),  # private names: no hint
    ],
)
def test_import_creator_names_the_fix(envs_module, spec, message):
    with pytest.raises(ValueError, match=message):
        import_creator(spec)


def test_import_creator_finds_modules_next_to_where_it_runs(tmp_path, monkeypatch):
    (tmp_path / "corridor_here_q.py").write_text("class Corridor:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "corridor_here_q", raising=False)
    assert import_creator("corridor_here_q:Corridor").__name__ == "Corridor"
    assert sys.path[-1] == str(tmp_path)
    import_creator("corridor_here_q:Corridor")
    assert sys.path.count(str(tmp_path)) == 1  # appended once
    monkeypatch.setattr(sys, "path", ["", *(p for p in sys.path if p != str(tmp_path))])
    import_creator("corridor_here_q:Corridor")
    assert str(tmp_path) not in sys.path  # "" already stands for the working directory


def test_creator_of_a_built_in_or_custom_env_resolves_its_kwargs(envs_module):
    built_in = EnvConfig(name="cartpole", kwargs={"max_steps": 7})
    assert creator(built_in) == ("cartpole", {"max_steps": 7})
    assert creator(built_in)[1] is not built_in.kwargs  # a copy the env may keep
    config = OmegaConf.create(
        {"n": 3, "env": {"name": "custom", "creator": "custom_envs:Corridor"}}
    )
    config.env.kwargs = {"length": "${n}", "shape": {"w": "${n}"}}
    made, kwargs = creator(config.env)
    assert made is envs_module.Corridor and kwargs == {"length": 3, "shape": {"w": 3}}
    assert type(kwargs) is dict and type(kwargs["shape"]) is dict  # plain, picklable


def test_creator_of_atari_keeps_lives_only_for_evaluation():
    atari = EnvConfig(name="atari", id="Breakout")
    assert creator(atari)[0].keywords["training"] is True
    assert creator(atari, training=False)[0].keywords["training"] is False


def test_creator_of_a_family_is_the_family_s(envs_module):
    made, kwargs = creator(EnvConfig(name="gymnasium", id="CartPole-v1"))
    assert callable(made) and made(**kwargs).observation_space.shape == (4,)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            EnvConfig(name="custom"),
            r"^env=custom needs env.creator='module:callable' \(a PufferEnv, gymnasium Env or "
            r"VecEnv factory\), e.g. env=custom env.creator=my_envs:Corridor$",
        ),
        (EnvConfig(name="custom", creator="custom_envs:Nope"), r"custom_envs has no 'Nope'"),
        (EnvConfig(name="gymnasium"), r"env.id"),
        (
            EnvConfig(name="cartpol"),
            r"^env.name='cartpol' is not a built-in env\. Did you mean 'cartpole'\? Built-in envs: "
            r"bandit, cartpole, memory, reach, squared; or env=gymnasium env.id=<gymnasium id>, "
            r"or env=custom env.creator=<module:callable>\.$",
        ),
        (EnvConfig(name="zzzz"), r"^env.name='zzzz' is not a built-in env\. Built-in envs: "),
    ],
)
def test_env_config_validate_names_the_fix(envs_module, env, message):
    with pytest.raises(ValueError, match=message):
        env.validate()


def test_env_config_validate_accepts_what_it_can_build(envs_module):
    for env in (
        EnvConfig(),
        EnvConfig(name="reach"),
        EnvConfig("custom", creator="custom_envs:Corridor"),
    ):
        env.validate()


def test_did_you_mean_lists_up_to_three_close_names(monkeypatch):
    module = types.ModuleType("many_envs_q")
    for name in ("Corridor1", "Corridor2", "Corridor3", "Corridor4", "Maze"):
        setattr(module, name, object())
    monkeypatch.setitem(sys.modules, "many_envs_q", module)
    with pytest.raises(ValueError) as info:
        import_creator("many_envs_q:Corridor")
    hint = "Did you mean 'Corridor4' or 'Corridor3' or 'Corridor2'?"  # difflib's order
    assert str(info.value).endswith(hint), str(info.value)
    module.Abcdefgh = object()  # "Abcdxyzw" is 0.5 alike: a hint at the 0.5 cutoff
    with pytest.raises(ValueError, match=r"Did you mean 'Abcdefgh'\?$"):
        import_creator("many_envs_q:Abcdxyzw")
