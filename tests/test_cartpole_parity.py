"""puffer's cartpole (native VecEnv and one-agent form) against gymnasium's CartPole-v1.

Both are stepped from the same state with the same actions for 10,000 steps; gymnasium's state is
copied into puffer's at every episode start. Observations, rewards, terminated and truncated must
agree to float tolerance through long episodes (500-step truncation) and falls (termination).
CartPole is chaotic (errors grow about e^4 per simulated second), so this only holds if the
dynamics perform the same float64 operations as gymnasium's.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

import puffer.vector
from puffer.envs.cartpole import CartPole, CartPoleVec
from puffer.seeding import row_seed
from puffer.spaces import from_gymnasium

STEPS = 10_000


def policy(obs, rng, noise):
    """A balancing rule with ``noise`` probability of a random action (noisier: shorter episodes)."""
    if rng.random() < noise:
        return int(rng.integers(2))
    x, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0)


def test_spaces_and_seeded_start_match_gymnasium():
    g = gymnasium.make("CartPole-v1")
    vec, one = CartPoleVec(1), CartPole()
    assert from_gymnasium(g.observation_space) == vec.single_observation_space
    assert from_gymnasium(g.action_space) == one.action_space
    for seed in (0, 1, 123):
        expected, _ = g.reset(seed=seed)
        np.testing.assert_array_equal(vec.reset(seed)[0][0], expected)
        np.testing.assert_array_equal(one.reset(seed)[0], expected)


@pytest.mark.parametrize("seed", [0, 7])
def test_vectorized_rows_start_as_gymnasium_seeded_with_their_row_seed(seed):
    """Row i of a vectorized run starts where CartPole-v1 reset(seed=row_seed(seed, i)) does, for
    one-agent rows and for one-row native blocks."""
    g = gymnasium.make("CartPole-v1")
    with puffer.vector.make(CartPole, 4, num_workers=2, seed=seed) as one_agent:
        obs = one_agent.reset()[0]
        for i in range(4):
            np.testing.assert_array_equal(obs[i], g.reset(seed=row_seed(seed, i))[0])
    with puffer.vector.make("cartpole", 2, num_workers=2, seed=seed) as native:  # 1-row blocks
        obs = native.reset()[0]
        for lo in (0, 1):
            np.testing.assert_array_equal(obs[lo], g.reset(seed=row_seed(seed, lo))[0])


@pytest.mark.parametrize("form", ["vec", "one"])
def test_10k_steps_equal_gymnasium(form):
    g = gymnasium.make("CartPole-v1")
    rng = np.random.default_rng(0)
    vec = CartPoleVec(1, seed=0)
    one = CartPole(seed=0)

    def start(seed):
        obs, _ = g.reset(seed=seed)
        state = g.unwrapped.state.copy()
        if form == "vec":
            vec.reset()
            vec.physics[:, 0] = state
            vec.observations[0] = obs
        else:
            one.reset()
            one.state = tuple(state.tolist())
        return obs

    obs = start(0)
    noise = 0.0
    ends = {"terminated": 0, "truncated": 0}
    max_err = 0.0
    for t in range(STEPS):
        action = policy(obs, rng, noise)
        obs, reward, terminated, truncated, _ = g.step(action)
        if form == "vec":
            o, r, term, trunc, _ = vec.step(np.array([action]))
            p_obs = vec.final_observations[0] if term[0] or trunc[0] else o[0]
            p = (p_obs, float(r[0]), bool(term[0]), bool(trunc[0]))
        else:
            res = one.step(action)
            p = (res.observation, res.reward, res.terminated, res.truncated)
        max_err = max(max_err, float(np.abs(p[0] - obs).max()))
        np.testing.assert_allclose(p[0], obs, rtol=1e-6, atol=1e-6, err_msg=f"step {t}")
        assert p[1:] == (reward, terminated, truncated), f"step {t}"
        if terminated or truncated:
            ends["terminated" if terminated else "truncated"] += 1
            noise = [0.0, 1.0, 0.5][sum(ends.values()) % 3]  # long, short and medium episodes
            obs = start(t)
    assert ends["truncated"] >= 4 and ends["terminated"] >= 10, ends
    assert max_err < 1e-6
