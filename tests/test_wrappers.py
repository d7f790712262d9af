"""Wrappers: EpisodeStats, ClipAction, TimeLimit, FlattenObservation, NormalizeObservation."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import puffer.envs as envs
from puffer.env import PufferEnv, ResetNeeded, StepResult
from puffer.spaces import Box, Dict, Discrete, Tuple, unflatten
from puffer.wrappers import (
    ClipAction,
    EpisodeStats,
    FlattenObservation,
    NormalizeObservation,
    TimeLimit,
    Wrapper,
)


class Counter(PufferEnv):
    """Reward = action; ends after ``n`` steps; observation is a Dict."""

    observation_space = Dict(count=Discrete(100), pos=Box(-1.0, 1.0, shape=(2,)))
    action_space = Box(-1.0, 1.0, shape=(2,))

    def __init__(self, n=5):
        self.n = n
        self.actions = []

    def reset(self, seed=None):
        self.t = 0
        return {"count": 0, "pos": np.zeros(2, np.float32)}, {}

    def step(self, action):
        self.t += 1
        self.actions.append(np.array(action))
        obs = {"count": self.t, "pos": np.asarray(action, np.float32)}
        return StepResult(obs, float(np.sum(action)), self.t >= self.n, False, {"t": self.t})


def test_episode_stats_matches_native_infos():
    env = EpisodeStats(Counter(n=3))
    env.reset()
    results = [env.step(np.array([0.5, 0.25])) for _ in range(3)]
    assert "episode_return" not in results[0].info
    assert results[-1].info == {"t": 3, "episode_return": 2.25, "episode_length": 3}
    env.reset()
    assert env.step(np.zeros(2)).info == {"t": 1}
    # same keys as the one-agent form of a native env reports on its own
    one = envs.make_one("squared", seed=0)
    one.reset()
    for _ in range(100):
        r = one.step(0)
        if r.done:
            break
    assert {"episode_return", "episode_length"} <= set(r.info)


def test_clip_action_clips_and_still_refuses_nan_and_bad_shapes():
    inner = Counter()
    env = ClipAction(inner)
    assert env.action_space == Box(-np.inf, np.inf, shape=(2,))
    env.reset()
    env.step(np.array([5.0, -np.inf]))
    np.testing.assert_array_equal(inner.actions[-1], [1.0, -1.0])
    assert inner.actions[-1].dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="wrong shape"):
        env.step(np.zeros(3))
    with pytest.raises(TypeError, match="needs a Box action space"):
        ClipAction(envs.make_one("cartpole"))
    cont = ClipAction(envs.make_one("cartpole", continuous=True))
    cont.reset(seed=0)
    assert cont.step(np.array([3.0])).reward == 1.0


def test_clip_action_integer_box():
    class IntAct(Counter):
        action_space = Box(0, 10, shape=(2,), dtype=np.int64)

    inner = IntAct()
    env = ClipAction(inner)
    env.reset()
    env.step(np.array([-5, 50]))
    np.testing.assert_array_equal(inner.actions[-1], [0, 10])


def test_time_limit_truncates_and_resets_its_count():
    env = TimeLimit(Counter(n=100), max_steps=4)
    for _ in range(2):
        env.reset()
        flags = [env.step(np.zeros(2)).truncated for _ in range(4)]
        assert flags == [False, False, False, True]
        with pytest.raises(ResetNeeded):
            env.step(np.zeros(2))
    ended = TimeLimit(Counter(n=2), max_steps=2)
    ended.reset()
    ended.step(np.zeros(2))
    last = ended.step(np.zeros(2))
    assert last.terminated and last.truncated  # as gymnasium's TimeLimit
    with pytest.raises(ValueError, match="max_steps=0"):
        TimeLimit(Counter(), 0)


def test_flatten_observation_keeps_the_original_space():
    env = FlattenObservation(Counter())
    assert env.observation_space == Box(
        np.array([0, -1, -1], np.float32), np.array([99, 1, 1], np.float32)
    )
    assert env.original_observation_space == Counter.observation_space
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (3,)
    r = env.step(np.array([0.5, -0.5]))
    np.testing.assert_array_equal(r.observation, [1, 0.5, -0.5])
    back = unflatten(env.original_observation_space, r.observation)
    assert back["count"] == 1 and back["pos"].tolist() == [0.5, -0.5]
    tup = FlattenObservation(TupleObs())
    assert tup.reset()[0].tolist() == [1.0, 2.0, 3.0]


class TupleObs(PufferEnv):
    observation_space = Tuple([Discrete(3), Box(0.0, 5.0, shape=(2,))])
    action_space = Discrete(2)

    def reset(self, seed=None):
        return (1, np.array([2.0, 3.0], np.float32)), {}

    def step(self, action):
        return StepResult(self.reset()[0], 0.0, True, False, {})


def test_normalize_observation_standardizes_and_freezes():
    env = NormalizeObservation(envs.make_one("cartpole", seed=0), clip=5.0)
    assert env.observation_space == Box(-5.0, 5.0, shape=(4,))
    rng = np.random.default_rng(0)
    seen = []
    env.reset(seed=0)
    for _ in range(3000):
        r = env.step(int(rng.integers(2)))
        seen.append(r.observation)
        if r.done:
            env.reset()
    late = np.array(seen[1000:])
    assert np.abs(late.mean(0)).max() < 0.3 and np.abs(late.std(0) - 1).max() < 0.3
    assert np.abs(late).max() <= 5.0
    env.update = False
    count, mean = env.count, env.mean.copy()
    env.reset()
    env.step(0)
    assert env.count == count and np.array_equal(env.mean, mean)
    with pytest.raises(TypeError, match="FlattenObservation first"):
        NormalizeObservation(Counter())


def test_wrapper_forwards_attributes_and_unwrapped():
    inner = envs.make_one("squared", size=5)
    env = TimeLimit(EpisodeStats(inner), 10)
    assert env.unwrapped is inner
    assert env.vec.size == 5  # forwarded through two wrappers
    assert repr(env).startswith("TimeLimit(EpisodeStats(OneAgent(")
    with pytest.raises(AttributeError):
        env.no_such_attribute  # noqa: B018
    env.reset(seed=0)
    assert isinstance(env.render(), str)
    env.close()
    assert inner.vec._phase == "closed"


def test_wrapping_a_gymnasium_env_points_to_the_bridge():
    with pytest.raises(TypeError, match="GymnasiumEnv"):
        Wrapper(gymnasium.make("CartPole-v1"))
