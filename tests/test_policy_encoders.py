"""Encoders and custom networks: the Nature CNN on uint8 images (kept uint8 to the network),
multi-input Dict observations, MultiBinary actions training, ``policy=custom`` through the real
``python -m puffer.train``/``puffer.eval``, and a pixel task solved by the CNN (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest
import torch

import puffer.policy as P
import puffer.ppo
import puffer.vector
from puffer.emulation import GymnasiumEnv
from puffer.env import PufferEnv, StepResult
from puffer.spaces import Box, Discrete, MultiBinary

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_space(shape) -> Box:
    return Box(0, 255, shape=shape, dtype=np.uint8)


@pytest.mark.parametrize(
    ("shape", "channels"), [((4, 84, 84), 4), ((84, 84, 3), 3), ((84, 84), 1), ((36, 36, 1), 1)]
)
def test_cnn_policy_shapes_on_uint8_images(shape, channels):
    policy = P.build(P.PolicyConfig(name="cnn"), image_space(shape), Discrete(6), seed=0)
    assert isinstance(policy.encoder, P.NatureCNN) and policy.hidden_size == 512
    conv = policy.encoder.net[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (
        channels,
        32,
        (8, 8),
        (4, 4),
    )
    obs = torch.randint(0, 256, (5, *shape), dtype=torch.uint8)
    before = obs.clone()
    out = policy.act(obs, generator=torch.Generator().manual_seed(0))
    assert out.action.shape == (5,) and out.value.shape == (5,) and out.log_prob.shape == (5,)
    assert torch.equal(obs, before) and obs.dtype == torch.uint8  # scaled in the net, not in place
    _, values = policy.forward_sequence(obs.view(1, 5, *shape))
    torch.testing.assert_close(values[0], out.value)


def test_cnn_scales_uint8_by_1_over_255():
    cnn = P.NatureCNN((84, 84, 3), scale=True)
    images = torch.randint(0, 256, (2, 84, 84, 3), dtype=torch.uint8)
    reference = cnn.net(images.permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(cnn(images), reference)


def test_cnn_lstm_and_overrides_compose_the_parts():
    space = image_space((4, 84, 84))
    policy = P.build(P.PolicyConfig(name="cnn_lstm", lstm_hidden_size=32), space, Discrete(3))
    assert policy.is_recurrent and policy.core.input_size == 512 and policy.hidden_size == 32
    mlp_lstm = P.build(
        P.PolicyConfig(name="mlp", core="lstm"), Box.uniform([3], -1, 1), Discrete(2)
    )
    assert isinstance(mlp_lstm, P.LSTM)
    state = policy.initial_state(2)
    out = policy.act(torch.zeros(2, 4, 84, 84, dtype=torch.uint8), state)
    assert out.state[0].shape == (2, 32)


def test_cnn_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError, match=r"needs image observations.*use policy=mlp"):
        P.build(P.PolicyConfig(name="cnn"), Box.uniform([4], -1, 1), Discrete(2))
    with pytest.raises(ValueError, match=r"\(7, 7, 3\) are too small.*policy.cnn_kernels=\[3,3\]"):
        P.build(P.PolicyConfig(name="cnn"), image_space((7, 7, 3)), Discrete(2))
    small = P.PolicyConfig(
        name="cnn", cnn_channels=[16, 32], cnn_kernels=[3, 3], cnn_strides=[1, 1]
    )
    assert P.build(small, image_space((7, 7, 3)), Discrete(2)).hidden_size == 512
    with pytest.raises(ValueError, match="one entry per conv layer"):
        P.build(P.PolicyConfig(name="cnn", cnn_kernels=[3]), image_space((7, 7, 3)), Discrete(2))
    policy = P.build(P.PolicyConfig(name="cnn"), image_space((36, 36)), Discrete(2))
    with pytest.raises(ValueError, match=r"normalize_observations=true.*set it to false"):
        policy.obs_norm.enabled = True


class ImageAndDirection(gymnasium.Env):
    """Dict observations as MiniGrid has them: a uint8 image and a Discrete direction."""

    def __init__(self, extra_float: bool = False):
        spaces = {
            "image": gymnasium.spaces.Box(0, 255, (40, 40, 3), np.uint8),
            "direction": gymnasium.spaces.Discrete(4),
        }
        if extra_float:
            spaces["speed"] = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.observation_space = gymnasium.spaces.Dict(spaces)
        self.action_space = gymnasium.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize("extra_float", [False, True])
def test_dict_observations_get_the_multi_input_encoder(extra_float):
    vec = puffer.vector.make(lambda: GymnasiumEnv(ImageAndDirection(extra_float)), num_envs=3)
    try:
        flat = vec.single_observation_space
        # Images and small integers only: the flat vector stays uint8 (no float copy anywhere).
        assert flat.dtype == (np.float32 if extra_float else np.uint8)
        policy = P.make(P.PolicyConfig(name="cnn", hidden_sizes=[16]), vec, seed=0)
        encoder = policy.encoder
        assert isinstance(encoder, P.MultiInputEncoder) and encoder.image_keys == ["image"]
        assert policy.hidden_size == 512 + 16
        obs = torch.from_numpy(vec.reset(0)[0])
        seen = []
        encoder.cnns[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        params, value, _ = policy(obs)
        assert params.shape == (3, 3) and value.shape == (3,)
        image = seen[0]  # a view of the observation batch, not a copy
        assert image.untyped_storage().data_ptr() == obs.untyped_storage().data_ptr()
        parts = puffer.spaces.unflatten(vec.original_observation_space, obs)
        hidden = torch.cat(
            [encoder.cnns[0](parts["image"]), encoder.mlp(_vector_part(parts).float())], -1
        )
        torch.testing.assert_close(policy.critic(hidden).squeeze(-1), value)
    finally:
        vec.close()


def _vector_part(parts: dict) -> torch.Tensor:
    keys = [k for k in parts if k != "image"]  # flatten's order: the Dict's sorted keys
    return torch.cat([parts[k].reshape(parts[k].shape[0], -1) for k in keys], -1)


class Switches(gymnasium.Env):
    """MultiBinary(4) actions; the reward counts the switches turned on (8 steps an episode)."""

    observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gymnasium.spaces.MultiBinary(4)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        assert action.dtype == np.int8 and action.shape == (4,)
        self.t += 1
        return np.zeros(3, np.float32), float(np.sum(action)), False, self.t >= 8, {}


def test_multibinary_actions_train():
    vec = puffer.vector.make(lambda: GymnasiumEnv(Switches()), num_envs=8, seed=0)
    assert vec.single_action_space == MultiBinary(4)
    policy = P.make(P.PolicyConfig(hidden_sizes=[16]), vec, seed=0)
    assert isinstance(policy.head, P.BernoulliHead)
    config = puffer.ppo.PPOConfig(
        total_timesteps=8192, learning_rate=0.01, horizon=16, num_minibatches=2, ent_coef=0.0
    )
    trainer = puffer.ppo.train(config, vec, policy, device="cpu", seed=0, torch_threads=1)
    returns = trainer.recent_episodes("episode_return")
    trainer.close()
    assert np.mean(returns[-20:]) > 28  # of 32 (random: 16)


NETS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TwoTrunks(nn.Module):
        def __init__(self, observation_space, action_space, hidden=8):
            super().__init__()
            n = observation_space.shape[0]
            self.actor = nn.Sequential(nn.Linear(n, hidden), nn.Tanh())
            self.critic = nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            self.output_size = hidden

        def forward(self, obs):
            return self.actor(obs), self.critic(obs).squeeze(-1)
    """
)


def train_with_module(helpers, tmp_path, module: str, source: str, *args: str):
    """The run dir of a completed tiny ``python -m puffer.train`` with ``module.py`` in its cwd."""
    (tmp_path / f"{module}.py").write_text(source)
    proc = helpers.run_module("puffer.train", *helpers.TINY, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = helpers.only_run(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    return run_dir


def test_custom_policy_from_the_command_line(helpers, tmp_path):
    args = ["policy=custom", "policy._target_=my_nets.TwoTrunks", "+policy.kwargs.hidden=12"]
    run_dir = train_with_module(helpers, tmp_path, "my_nets", NETS, *args)
    assert "_target_: my_nets.TwoTrunks" in (run_dir / ".hydra" / "config.yaml").read_text()
    proc = helpers.run_module("puffer.eval", f"run={run_dir}", "episodes=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_custom_policy_errors_name_the_target():
    obs, act = Box.uniform([4], -1, 1), Discrete(2)
    with pytest.raises(ValueError, match=r"policy=custom needs policy._target_"):
        P.build(P.PolicyConfig(name="custom"), obs, act)
    with pytest.raises(ValueError, match=r"_target_='no_such_pkg.Net': cannot import"):
        P.build(P.PolicyConfig(name="custom", _target_="no_such_pkg.Net"), obs, act)
    with pytest.raises(ValueError, match=r"'torch.nn.Identity'.*output_size"):
        P.build(P.PolicyConfig(name="custom", _target_="torch.nn.Identity"), obs, act)
    with pytest.raises(ValueError, match=r"is set but policy.name='mlp'"):
        P.build(P.PolicyConfig(_target_="torch.nn.Identity"), obs, act)


def test_cli_refuses_an_untrainable_action_space_naming_it(helpers, tmp_path):
    (tmp_path / "dict_actions.py").write_text(
        textwrap.dedent(
            """
            import gymnasium, numpy as np

            class DictActions(gymnasium.Env):
                observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
                action_space = gymnasium.spaces.Box(0, 10**6, (2,), np.int64)

                def reset(self, seed=None, options=None):
                    return np.zeros(2, np.float32), {}

                def step(self, action):
                    return np.zeros(2, np.float32), 0.0, False, False, {}

            gymnasium.register("DictActions-v0", entry_point=DictActions)
            """
        )
    )
    code = "import dict_actions, runpy; runpy.run_module('puffer.train', run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", code, *helpers.TINY, "env=gymnasium", "env.id=DictActions-v0"],
        cwd=tmp_path,
        env=helpers.clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Box(0, 1000000, (2,), int64)" in proc.stderr and "at most 1024" in proc.stderr


class FindTheLight(PufferEnv):
    """Pixels: a (36, 36, 1) uint8 frame with one bright 6x6 square in its left or right half;
    action 0/1 names the half (reward 1 when right); 8 frames an episode, so returns are 0..8."""

    observation_space = Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)
    action_space = Discrete(2)

    def reset(self, seed=None):
        self.rng, self.t = np.random.default_rng(seed), 0
        return self._frame(), {}

    def _frame(self) -> np.ndarray:
        self.side = int(self.rng.integers(2))
        y, x = self.rng.integers(0, 31), self.rng.integers(0, 13) + 18 * self.side
        frame = np.zeros((36, 36, 1), np.uint8)
        frame[y : y + 6, x : x + 6] = 255
        return frame

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return StepResult(self._frame(), reward, self.t >= 8, False, {})


@pytest.mark.slow
def test_cnn_solves_a_pixel_task():
    """Solved (mean return of the last 100 episodes >= 7.6 of 8; random play: 4) within 40k
    steps, about half a minute on one CPU thread."""
    vec = puffer.vector.make(FindTheLight, num_envs=32, seed=0)
    policy = P.make(P.PolicyConfig(name="cnn"), vec, seed=0)
    config = puffer.ppo.PPOConfig(
        total_timesteps=40_960, learning_rate=1e-3, horizon=16, num_minibatches=4, update_epochs=2
    )
    trainer = puffer.ppo.train(
        config,
        vec,
        policy,
        device="cpu",
        seed=0,
        torch_threads=1,
        callback=lambda metrics: metrics.get("env/episode_return", 0.0) >= 7.8,
    )
    returns = trainer.recent_episodes("episode_return")
    assert trainer.buffer.observations.dtype == torch.uint8  # frames stay uint8 in the buffer
    assert trainer.global_step < config.total_timesteps  # stopped early: solved
    trainer.close()
    assert len(returns) >= 100 and np.mean(returns[-100:]) >= 7.6, np.mean(returns[-100:])


@pytest.mark.parametrize(
    ("overrides", "kind", "recurrent"),
    [
        (["policy=cnn"], P.NatureCNN, False),
        (["policy=cnn_lstm", "policy.lstm_hidden_size=16"], P.NatureCNN, True),
        (["policy=mlp", "policy.core=lstm"], P.MLPEncoder, True),
        (["policy=cnn_lstm", "policy.encoder=mlp", "policy.core=none"], P.MLPEncoder, False),
    ],
)
def test_presets_compose_with_hydra_and_build(overrides, kind, recurrent):
    from omegaconf import OmegaConf

    from puffer.config import compose

    cfg = OmegaConf.to_object(compose(["env=cartpole", *overrides]).policy)
    policy = P.build(cfg, image_space((36, 36, 1)), Discrete(2), seed=0)
    assert isinstance(policy.encoder, kind) and policy.is_recurrent == recurrent


PIXEL_ENV = """
import numpy as np
from puffer.env import PufferEnv, StepResult
from puffer.spaces import Box, Discrete
""" + textwrap.dedent(
    """
    class FindTheLight(PufferEnv):
        observation_space = Box(0, 255, shape=(36, 36, 1), dtype=np.uint8)
        action_space = Discrete(2)

        def reset(self, seed=None):
            self.rng, self.t = np.random.default_rng(seed), 0
            return self._frame(), {}

        def _frame(self):
            self.side = int(self.rng.integers(2))
            frame = np.zeros((36, 36, 1), np.uint8)
            frame[10:16, 3 + 18 * self.side : 9 + 18 * self.side] = 255
            return frame

        def step(self, action):
            reward = float(int(action) == self.side)
            self.t += 1
            return StepResult(self._frame(), reward, self.t >= 8, False, {})
    """
)


def test_cnn_policy_from_the_command_line_on_uint8_frames(helpers, tmp_path):
    args = ["env=custom", "env.creator=pixels:FindTheLight", "policy=cnn_lstm"]
    run_dir = train_with_module(helpers, tmp_path, "pixels", PIXEL_ENV, *args)
    from puffer import checkpoint

    latest = checkpoint.CheckpointDir(run_dir / "checkpoints").latest()
    weights = checkpoint.policy_state(checkpoint.load(latest))
    kernels = [k for k, w in weights.items() if getattr(w, "ndim", 0) == 4]  # (out, in, h, w)
    assert kernels and any("lstm" in k or "core" in k for k in weights), list(weights)
