"""check_env: passes every built-in env and catches realistic mistakes with a useful message."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import puffer.envs as envs
from puffer.checker import EnvCheckError, check_env
from puffer.emulation import GymnasiumEnv
from puffer.env import PufferEnv, StepResult, VecEnv
from puffer.envs.base import NativeVecEnv
from puffer.envs.cartpole import CartPoleVec
from puffer.spaces import Box, Dict, Discrete
from puffer.wrappers import EpisodeStats, FlattenObservation, TimeLimit


@pytest.mark.parametrize("name", sorted(envs.names()))
def test_builtin_envs_pass(name):
    check_env(envs.make(name, num_envs=32, seed=0))
    if envs.spec(name).one is None:  # multi-agent: no one-agent form
        return
    check_env(envs.make_one(name))
    check_env(TimeLimit(EpisodeStats(envs.make_one(name)), 7))


def test_builtin_options_and_gymnasium_envs_pass():
    check_env(envs.make("cartpole", num_envs=4, continuous=True))
    check_env(envs.make("bandit", num_envs=4, reward_noise=0.1))
    check_env(envs.make_one("cartpole", continuous=True))
    check_env(GymnasiumEnv("CartPole-v1"))
    check_env(GymnasiumEnv("FrozenLake-v1"))  # Discrete observations: flattened
    check_env(FlattenObservation(GymnasiumEnv("Blackjack-v1")))


class Walk(PufferEnv):
    """A correct random walk on [-1, 1]; the broken variants below change one thing."""

    observation_space = Box(-1.0, 1.0, shape=(2,))
    action_space = Discrete(3)

    def reset(self, seed=None):
        if seed is not None or not hasattr(self, "rng"):
            self.rng = np.random.default_rng(seed)
        self.pos = np.zeros(2, np.float32)
        self.t = 0
        return self.pos.copy(), {}

    def step(self, action):
        self.t += 1
        self.pos = np.clip(
            self.pos + 0.1 * (action - 1) + self.rng.normal(0, 0.01, 2), -1, 1
        ).astype(np.float32)
        return StepResult(self.pos.copy(), float(self.pos[0]), self.t >= 20, False, {})


def test_the_correct_walk_passes():
    check_env(Walk())


class Float64Obs(Walk):
    def step(self, action):
        r = super().step(action)
        return r._replace(observation=r.observation.astype(np.float64))


class GlobalRandom(Walk):
    def reset(self, seed=None):
        obs, info = super().reset(seed)
        self.rng = np.random.default_rng()  # ignores the seed
        return obs, info


class Aliased(Walk):
    def step(self, action):
        r = super().step(action)
        self.buf = getattr(self, "buf", np.zeros(2, np.float32))
        self.buf[:] = r.observation
        return r._replace(observation=self.buf)


class OutOfBounds(Walk):
    def step(self, action):
        r = super().step(action)
        return r._replace(observation=r.observation * 0 + np.float32(3))


class ArrayReward(Walk):
    def step(self, action):
        r = super().step(action)
        return r._replace(reward=np.array([r.reward]))


class IntFlags(Walk):
    def step(self, action):
        r = super().step(action)
        return r._replace(terminated=int(r.terminated))


class ListObs(Walk):
    def reset(self, seed=None):
        obs, info = super().reset(seed)
        return obs.tolist(), info


class FreshRngEveryReset(Walk):
    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)  # seed=None: a fresh, unseeded RNG
        return super().reset(seed)


class GymSpaces(Walk):
    action_space = gymnasium.spaces.Discrete(3)


@pytest.mark.parametrize(
    ("env_cls", "message"),
    [
        (
            Float64Obs,
            r"has dtype float64, but the space .* says float32.*np.asarray\(obs, dtype=np.float32\)",
        ),
        (
            FreshRngEveryReset,
            r"agree until the first reset\(\) without a seed.*if seed is not None",
        ),
        (
            GlobalRandom,
            r"two runs from reset\(seed=0\) with the same actions differ.*default_rng\(seed\)",
        ),
        (Aliased, r"changed when step 2 ran.*return a fresh array"),
        (OutOfBounds, r"value 3.0 out of range.*widen its bounds"),
        (ArrayReward, r"reward is array\(\[.*\]\) \(ndarray\), not a real number"),
        (IntFlags, r"terminated is 0 \(int\), not a bool.*bool\(terminated\)"),
        (ListObs, r"reset\(\) observation is a list, expected a numpy array"),
        (GymSpaces, r"action_space is Discrete\(3\), not a puffer.spaces.Space.*from_gymnasium"),
    ],
)
def test_broken_one_agent_envs_are_caught(env_cls, message):
    with pytest.raises(EnvCheckError, match=message) as e:
        check_env(env_cls())
    assert str(e.value).startswith(f"{env_cls.__name__}: ") and "Fix:" in str(e.value)


class NoFinalObs(CartPoleVec):
    """Forgets the final observation: resets rows itself without copying it."""

    def _step(self):
        self._simulate()
        done = np.flatnonzero(self.terminals | self.truncations)
        self._reset_rows(done)
        return {}


class Copies(CartPoleVec):
    def step(self, actions):
        return tuple(x.copy() if isinstance(x, np.ndarray) else x for x in super().step(actions))


class NoActionCheck(CartPoleVec):
    def check_actions(self, actions, n):
        return np.resize(np.asarray(actions), n)


class UnseededVec(NativeVecEnv):
    def __init__(self, num_envs=4):
        super().__init__(Box(0.0, 1.0, shape=(1,)), Discrete(2), num_envs)

    def _reset_rows(self, rows):
        self.observations[rows] = np.random.random((len(rows), 1))

    def _simulate(self):
        self.observations[:] = np.random.random((self.num_envs, 1))
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (NoFinalObs(8), r"row \d+ ended but final_observations\[\d+\] was not written"),
        (Copies(8), r"returned observations that are not a view of env.observations"),
        (NoActionCheck(8), r"step\(\) accepted actions of shape \(9,\) for 8 rows"),
        (UnseededVec(), r"two runs from reset\(seed=0\) with the same actions differ at reset"),
    ],
    ids=["no-final-obs", "copies", "no-action-check", "unseeded"],
)
def test_broken_vecenvs_are_caught(env, message):
    with pytest.raises(EnvCheckError, match=message):
        check_env(env)


def test_vecenv_spaces_that_do_not_fit_a_buffer_are_caught():
    env = CartPoleVec(2)
    env.single_observation_space = Dict(x=Discrete(2))
    with pytest.raises(
        EnvCheckError,
        match=r"single_observation_space Dict\(x: Discrete\(2\)\) "
        r"cannot be stored in a VecEnv buffer.*Fix: flatten",
    ):
        check_env(env)


def test_not_an_env():
    with pytest.raises(EnvCheckError, match="GymnasiumEnv"):
        check_env(gymnasium.make("CartPole-v1"))
    with pytest.raises(EnvCheckError, match="neither a PufferEnv nor a VecEnv"):
        check_env(object())


def test_errors_raised_inside_the_env_are_reported_with_context():
    class Crashes(Walk):
        def step(self, action):
            raise KeyError("boom")

    with pytest.raises(EnvCheckError, match=r"Crashes: step\(.*\) raised KeyError: 'boom'"):
        check_env(Crashes())


def test_async_vecenv_path():
    class Halves(CartPoleVec):
        """Hands out the rows in two batches: the asynchronous protocol in its simplest form."""

        def __init__(self, n):
            super().__init__(n, seed=0)
            self.batch_size = n // 2
            self._turn = 0

        def recv(self):
            obs, rew, term, trunc, infos, _ = super().recv()
            rows = slice(0, self.batch_size) if self._turn == 0 else slice(self.batch_size, None)
            ids = self.env_ids[rows]
            done = int((term[rows] | trunc[rows]).sum())
            infos = {k: v[:done] for k, v in infos.items()}
            return obs[rows], rew[rows], term[rows], trunc[rows], infos, ids

        def send(self, actions):
            full = np.zeros(self.num_envs, np.int64)
            full[: len(actions)] = actions
            self._turn ^= 1
            VecEnv.send(self, full)

    check_env(Halves(8), steps=20)
