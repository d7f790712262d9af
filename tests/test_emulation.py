"""GymnasiumEnv: any gymnasium env (instance or id) as a PufferEnv."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces as gs

from puffer.checker import check_env
from puffer.emulation import GymnasiumEnv
from puffer.env import ResetNeeded
from puffer.spaces import Box, Dict, Discrete, MultiDiscrete, Tuple, unflatten


class DictEnv(gymnasium.Env):
    """Dict observations with a nested Tuple; MultiDiscrete actions; truncates after 6 steps."""

    def __init__(self, action_space=None):
        self.observation_space = gs.Dict(
            {
                "image": gs.Box(0, 255, shape=(2, 2), dtype=np.uint8),
                "pair": gs.Tuple((gs.Discrete(4), gs.Box(-1.0, 1.0, shape=(1,), dtype=np.float32))),
            }
        )
        self.action_space = action_space or gs.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"start": True}

    def _obs(self):
        image = self.np_random.integers(0, 256, size=(2, 2)).astype(np.uint8)
        return {"image": image, "pair": (self.t % 4, np.array([0.5], np.float32))}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.last_action = action
        self.t += 1
        return self._obs(), float(np.sum(action)), False, self.t >= 6, {"t": self.t}


def test_cartpole_by_id_matches_gymnasium_step_for_step():
    env = GymnasiumEnv("CartPole-v1")
    ref = gymnasium.make("CartPole-v1")
    assert env.observation_space == Box(
        ref.observation_space.low, ref.observation_space.high, dtype=np.float32
    )
    assert env.action_space == Discrete(2)
    obs, _ = env.reset(seed=3)
    ref_obs, _ = ref.reset(seed=3)
    np.testing.assert_array_equal(obs, ref_obs)
    for a in [0, 1] * 6:
        r = env.step(np.int64(a))
        expected = ref.step(a)
        np.testing.assert_array_equal(r.observation, expected[0])
        assert (r.reward, r.terminated, r.truncated) == expected[1:4]
        assert isinstance(r.reward, float) and type(r.terminated) is bool


def test_make_kwargs_and_truncation_pass_through():
    env = GymnasiumEnv("CartPole-v1", max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    flags = []
    for _ in range(5):
        r = env.step(int(obs[2] + obs[3] > 0))  # keep it up: only the time limit ends it
        obs = r.observation
        flags.append((r.terminated, r.truncated))
    assert flags[-1] == (False, True) and flags[:-1] == [(False, False)] * 4
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_instance_with_dict_observations_is_flattened_and_unflattens():
    env = GymnasiumEnv(DictEnv())
    assert env.original_observation_space == Dict(
        image=Box(0, 255, shape=(2, 2), dtype=np.uint8),
        pair=Tuple([Discrete(4), Box(-1.0, 1.0, shape=(1,))]),
    )
    assert env.observation_space.shape == (6,) and env.observation_space.dtype == np.float32
    assert env.action_space == MultiDiscrete([3, 2])
    obs, info = env.reset(seed=1)
    assert info == {"start": True} and obs.dtype == np.float32
    r = env.step(np.array([2, 1]))
    assert r.reward == 3.0 and r.info == {"t": 1}
    assert env.env.last_action.dtype == np.int64
    parts = unflatten(env.original_observation_space, r.observation)
    assert parts["pair"][0] == 1 and parts["image"].dtype == np.uint8
    parts_t = unflatten(env.original_observation_space, torch.as_tensor(r.observation))
    assert parts_t["image"].shape == (2, 2)
    check_env(env)


def test_seeding_is_passed_to_gymnasium():
    env = GymnasiumEnv(DictEnv())
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("gym_space", "action", "expected"),
    [
        (gs.Discrete(3, start=1), 3, 3),
        (
            gs.Box(-2.0, 2.0, shape=(2,), dtype=np.float64),
            np.array([1.5, -2.0], np.float32),
            [1.5, -2.0],
        ),
        (gs.MultiBinary(3), np.array([1, 0, 1], np.int8), [1, 0, 1]),
    ],
)
def test_action_conversions(gym_space, action, expected):
    inner = DictEnv(action_space=gym_space)
    env = GymnasiumEnv(inner)
    env.reset(seed=0)
    env.step(action)
    np.testing.assert_array_equal(inner.last_action, expected)
    if isinstance(gym_space, gs.Discrete):
        assert type(inner.last_action) is int
    else:
        assert inner.last_action.dtype == gym_space.dtype


def test_box_actions_pendulum_and_check_env():
    env = GymnasiumEnv("Pendulum-v1")
    assert env.action_space == Box(-2.0, 2.0, shape=(1,))
    check_env(env, steps=50)
    with pytest.raises(ValueError, match=r"GymnasiumEnv\.step: value 3\.0 out of range"):
        env.reset(seed=0)
        env.step(np.array([3.0], np.float32))


def test_bad_arguments():
    with pytest.raises(ValueError, match="make_kwargs"):
        GymnasiumEnv(DictEnv(), max_episode_steps=3)
    with pytest.raises(TypeError, match=r"gymnasium\.Env or a registered id"):
        GymnasiumEnv(42)
    with pytest.raises(ValueError, match=r"action space .* is not supported"):
        GymnasiumEnv(DictEnv(action_space=gs.Dict({"a": gs.Discrete(2)})))
    with pytest.raises(gymnasium.error.Error):
        GymnasiumEnv("NoSuchEnv-v0")


class Painted(DictEnv):
    """Renders an RGB frame whose colour is the step count."""

    def __init__(self):
        super().__init__()
        self.render_mode = "rgb_array"
        self.closed = False

    def render(self):
        return np.full((3, 4, 3), self.t, np.uint8)

    def close(self):
        self.closed = True


def test_render_and_close():
    inner = Painted()
    env = GymnasiumEnv(inner)
    env.reset(seed=0)
    env.step(np.array([1, 0]))
    frame = env.render()
    assert frame.shape == (3, 4, 3) and frame.dtype == np.uint8 and (frame == 1).all()
    env.close()
    assert inner.closed
