"""Built-in envs: registry, seeding, bounds, auto-reset, state, one-agent form, env-specific rules."""

from __future__ import annotations

import numpy as np
import pytest

import puffer.envs as envs
from puffer.envs.bandit import BanditVec
from puffer.envs.base import OneAgent
from puffer.envs.cartpole import CartPoleVec, dynamics
from puffer.envs.memory import MemoryVec
from puffer.envs.squared import SquaredVec

NAMES = sorted(envs.names())
ONE_AGENT = [n for n in NAMES if envs.spec(n).one is not None]


def rollout(env, steps, seed=0, actions_seed=1):
    """Reset ``env`` with ``seed`` and step random actions; copies of everything returned."""
    rng = np.random.default_rng(actions_seed)
    out = [env.reset(seed)[0].copy()]
    for _ in range(steps):
        obs, rew, term, trunc, infos = env.step(
            env.single_action_space.sample_batch(env.num_envs, rng)
        )
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy()))
        out.append({k: v.copy() for k, v in infos.items()})
        out.append(env.final_observations[term | trunc].copy())
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])
        elif isinstance(x, tuple):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(x, y)


def test_registry_names_describe_and_errors():
    assert NAMES == ["bandit", "cartpole", "memory", "reach", "squared"]
    assert ONE_AGENT == ["bandit", "cartpole", "memory", "squared"]
    for name, line in envs.names().items():
        assert line and "\n" not in line
        assert envs.describe(name).startswith(f"{name}: obs ")
    with pytest.raises(KeyError, match="Did you mean 'cartpole'"):
        envs.make("cartpol")
    with pytest.raises(KeyError, match="Built-in envs: bandit, cartpole, memory, reach, squared"):
        envs.make_one("nope")
    with pytest.raises(TypeError, match="'reach' is multi-agent and has no one-agent form"):
        envs.make_one("reach")


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_trajectory_and_dtypes(name):
    a, b = envs.make(name, num_envs=16), envs.make(name, num_envs=16)
    ra, rb = rollout(a, 120, seed=5), rollout(b, 120, seed=5)
    assert_same(ra, rb)
    space = a.single_observation_space
    assert a.observations.dtype == space.dtype and a.observations.shape == (16, *space.shape)
    assert a.rewards.dtype == np.float32
    if name != "bandit":  # bandit observations are constant, whatever the seed
        rc = rollout(envs.make(name, num_envs=16), 120, seed=6)
        assert not all(np.array_equal(x, y) for x, y in zip(ra[:1], rc[:1]))


@pytest.mark.parametrize("name", NAMES)
def test_observations_in_bounds_and_final_observations_kept(name):
    env = envs.make(name, num_envs=64, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    space = env.single_observation_space
    ended = 0
    for _ in range(300):
        obs, rew, term, trunc, infos = env.step(env.single_action_space.sample_batch(64, rng))
        space.check_batch(obs, 64, where=f"{name} observations")
        assert np.isfinite(rew).all()
        done = np.flatnonzero(term | trunc)
        if len(done):
            ended += len(done)
            space.check_batch(env.final_observations[done], len(done), where="final")
            assert set(infos) >= {"episode_return", "episode_length"}
            # per-agent keys (agent_0/episode_return) hold that agent's share of the episodes
            assert all(len(v) == len(done) for k, v in infos.items() if "/" not in k)
            assert sum(len(v) for k, v in infos.items() if k.endswith("/episode_return")) in (
                0,
                len(done),
            )
            assert (infos["episode_length"] >= 1).all()
        else:
            assert infos == {}
    assert ended > 64


@pytest.mark.parametrize("name", NAMES)
def test_state_restores_exactly(name):
    env = envs.make(name, num_envs=8, seed=3)
    rollout(env, 13)
    saved = env.state()
    rng = np.random.default_rng(9)
    actions = [env.single_action_space.sample_batch(8, rng) for _ in range(40)]

    def run():
        out = []
        for a in actions:
            obs, rew, term, trunc, infos = env.step(a)
            out += [
                (obs.copy(), rew.copy(), term.copy(), trunc.copy()),
                {k: v.copy() for k, v in infos.items()},
            ]
        return out

    first = run()
    env.load_state(saved)
    assert_same(first, run())
    fresh = envs.make(name, num_envs=8)  # into another instance, too
    fresh.load_state(saved)
    env = fresh
    assert_same(first, run())


@pytest.mark.parametrize("name", ONE_AGENT)
def test_one_agent_form_matches_one_row_vec(name):
    one, vec = envs.make_one(name), envs.make(name, num_envs=1)
    obs1, info = one.reset(seed=4)
    obsv, _ = vec.reset(seed=4)
    assert info == {} and np.array_equal(obs1, obsv[0])
    assert one.observation_space == vec.single_observation_space
    assert one.action_space == vec.single_action_space
    rng = np.random.default_rng(2)
    episodes = 0
    for _ in range(300):
        a = one.action_space.sample(rng)
        r1 = one.step(a)
        obs, rew, term, trunc, infos = vec.step(np.array([a]))
        expected_obs = vec.final_observations[0] if term[0] or trunc[0] else obs[0]
        np.testing.assert_array_equal(r1.observation, expected_obs)
        assert (r1.reward, r1.terminated, r1.truncated) == (rew[0], term[0], trunc[0])
        assert r1.info == {k: v[0].item() for k, v in infos.items()}
        if r1.done:
            episodes += 1
            one_obs, _ = one.reset()
            np.testing.assert_array_equal(one_obs, obs[0])  # the vec auto-reset the same way
    assert episodes >= 5


@pytest.mark.parametrize("name", NAMES)
def test_render_is_text(name):
    vec = envs.make(name, num_envs=2, seed=0)
    vec.reset()
    text = vec.render(1)
    assert isinstance(text, str) and len(text) > 10
    if name not in ONE_AGENT:
        return
    one = envs.make_one(name, seed=0)
    one.reset()
    assert isinstance(one.render(), str)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("bandit", {"num_arms": 1}, "num_arms=1"),
        ("bandit", {"reward_noise": -1.0}, "reward_noise"),
        ("squared", {"size": 1}, "size=1"),
        ("squared", {"max_steps": 0}, "max_steps=0"),
        ("memory", {"length": -1}, "length=-1"),
        ("cartpole", {"max_steps": 0}, "max_steps=0"),
        # not numbers at all: these raised a TypeError from int() that named no argument
        ("cartpole", {"max_steps": None}, "CartPole(Vec)?: max_steps=None must be a positive int"),
        ("squared", {"size": "7"}, "size='7' must be an int >= 2"),
        ("memory", {"length": 1.5}, "length=1.5 must be an int >= 0"),
    ],
)
def test_bad_env_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        envs.make(name, num_envs=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        envs.make_one(name, **kwargs)


# --- bandit -------------------------------------------------------------------------------------


def test_bandit_paying_arm_is_shared_across_rows_workers_and_seeds():
    arms = {BanditVec(4, seed=s).best_arm for s in range(20)}
    assert len(arms) == 1  # independent of the reset/worker seed
    assert len({BanditVec(1, num_arms=10, arm_seed=s).best_arm for s in range(20)}) > 1
    env = BanditVec(32, num_arms=5, seed=0)
    env.reset()
    best = env.best_arm
    obs, rew, term, trunc, infos = env.step(np.full(32, best))
    assert (rew == 1).all() and term.all() and not trunc.any()
    assert (infos["success"] == 1).all() and (infos["episode_length"] == 1).all()
    assert (obs == 1).all()
    obs, rew, term, trunc, infos = env.step(np.full(32, (best + 1) % 5))
    assert (rew == 0).all() and (infos["success"] == 0).all()


def test_bandit_reward_noise_and_scale():
    env = BanditVec(4096, num_arms=3, reward_scale=2.0, reward_noise=0.5, seed=0)
    env.reset()
    _, rew, *_ = env.step(np.full(4096, env.best_arm))
    assert abs(rew.mean() - 2.0) < 0.05 and abs(rew.std() - 0.5) < 0.05
    assert "[*]" in env.render(0)


# --- squared ------------------------------------------------------------------------------------


def greedy(obs):
    """Move along the larger offset toward the target (never leaves the grid)."""
    dx, dy = obs[:, 0], obs[:, 1]
    horiz = np.abs(dx) >= np.abs(dy)
    return np.where(horiz, np.where(dx > 0, 4, 3), np.where(dy > 0, 2, 1))


def test_squared_greedy_always_succeeds():
    env = SquaredVec(256, size=9, seed=0)
    obs, _ = env.reset()
    assert (np.abs(obs[:, :2]).sum(1) > 0).all()  # the target is never on the start cell
    np.testing.assert_array_equal(obs[:, 2:], 0.0)  # start in the centre
    successes = []
    for _ in range(60):
        obs, _rew, _term, trunc, infos = env.step(greedy(obs))
        if "success" in infos:
            successes += infos["success"].tolist()
            assert (infos["episode_return"] == 1).all()
            assert (infos["episode_length"] <= 8).all()  # <= |dx| + |dy| <= 2 * (size // 2)
    assert len(successes) > 256 and all(s == 1 for s in successes)
    assert not trunc.any()


def test_squared_off_grid_and_timeout_cost_one():
    env = SquaredVec(1, size=3, max_steps=5, seed=0)
    env.reset()
    env.pos[:, 0] = (0, 0)
    env.target[:, 0] = (2, 2)
    _, rew, term, trunc, infos = env.step(np.array([3]))  # left, off the grid
    assert rew[0] == -1 and term[0] and not trunc[0] and infos["success"][0] == 0
    np.testing.assert_array_equal(env.final_observations[0], [1.0, 1.0, -1.0, -1.0])
    env.reset()
    for _t in range(5):
        _, rew, term, trunc, infos = env.step(np.array([0]))  # noop until time runs out
    assert rew[0] == -1 and trunc[0] and not term[0] and infos["episode_length"][0] == 5
    assert infos["success"][0] == 0


def test_squared_observation_decodes_to_offset_and_position():
    env = SquaredVec(64, size=5, seed=1)
    obs, _ = env.reset()
    np.testing.assert_allclose(obs[:, 0] * 4, env.target[0] - env.pos[0], atol=1e-6)
    np.testing.assert_allclose(obs[:, 1] * 4, env.target[1] - env.pos[1], atol=1e-6)
    np.testing.assert_allclose((obs[:, 2] + 1) * 2, env.pos[0], atol=1e-6)
    assert "A" in env.render(0) and "T" in env.render(0)


# --- memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 8])
def test_memory_episode_structure_and_a_recalling_policy(length):
    env = MemoryVec(64, length=length, seed=0)
    obs, _ = env.reset()
    assert set(obs[:, 0].tolist()) == {-1.0, 1.0} and (obs[:, 1] == 0).all()
    remembered = obs[:, 0].copy()
    for t in range(length + 1):  # blanks, then the recall prompt
        obs, rew, term, trunc, infos = env.step(np.zeros(64, np.int64))
        assert (rew == 0).all() and not (term | trunc).any() and (obs[:, 0] == 0).all()
        assert (obs[:, 1] == (1.0 if t == length else 0.0)).all()
    obs, rew, term, _trunc, infos = env.step((remembered > 0).astype(np.int64))
    assert term.all() and (rew == 1).all() and (infos["success"] == 1).all()
    assert (infos["episode_length"] == length + 2).all()


def test_memory_memoryless_policies_are_at_chance():
    """Every deterministic memoryless policy (a map from the 4 possible observations to an action;
    stochastic ones are mixtures of these) succeeds half the time: the recall observation is the
    same whatever the cue, and no action changes what is observed."""
    length, n = 4, 4096
    index = {(1.0, 0.0): 0, (-1.0, 0.0): 1, (0.0, 0.0): 2, (0.0, 1.0): 3}
    for code in range(16):
        table = np.array([(code >> i) & 1 for i in range(4)])
        env = MemoryVec(n, length=length, seed=code)
        obs, _ = env.reset()
        recall_obs = set()
        for _ in range(length + 2):
            recall_obs |= {tuple(o) for o in obs[obs[:, 1] == 1].tolist()}
            obs, _rew, term, _trunc, infos = env.step(
                table[[index[tuple(o)] for o in obs.tolist()]]
            )
        assert recall_obs == {(0.0, 1.0)}
        assert term.all()
        rate = infos["success"].mean()
        assert abs(rate - 0.5) < 0.03, (code, rate)  # 4096 episodes: 0.03 is 3.8 sigma


def test_memory_render():
    env = MemoryVec(1, length=3, seed=0)
    env.reset()
    assert "cue" in env.render()
    env.step(np.array([0]))
    assert "blank" in env.render()


# --- cartpole -----------------------------------------------------------------------------------


def test_cartpole_continuous_extremes_equal_discrete_actions():
    rng = np.random.default_rng(0)
    disc, cont = CartPoleVec(32, seed=1), CartPoleVec(32, continuous=True, seed=1)
    disc.reset()
    cont.reset()
    for _ in range(200):
        a = rng.integers(2, size=32)
        d = disc.step(a)
        c = cont.step((2.0 * a - 1.0).astype(np.float32)[:, None])
        for x, y in zip(d[:4], c[:4]):
            np.testing.assert_array_equal(x, y)
    half = CartPoleVec(1, continuous=True, seed=0)
    half.reset()
    expected = dynamics(*half.physics[:, 0].tolist(), 5.0)  # half the force
    half.step(np.array([[0.5]], np.float32))
    assert tuple(half.physics[:, 0].tolist()) == expected


def test_cartpole_max_steps_truncates():
    env = CartPoleVec(4, max_steps=10, seed=0)
    obs, _ = env.reset()
    for _t in range(10):
        # a balancing rule keeps the pole up for 10 steps
        obs, _rew, term, trunc, infos = env.step((obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64))
    assert trunc.all() and not term.any() and (infos["episode_length"] == 10).all()
    assert (infos["episode_return"] == 10).all()


def test_one_agent_wrapper_requires_one_row():
    with pytest.raises(ValueError, match="num_envs=2"):
        OneAgent(CartPoleVec(2))
