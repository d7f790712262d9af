"""Built-in env rules pinned by hand-computed values: cartpole's termination bounds row by row,
bandit, squared and memory rewards (see each env's module docstring for the rules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from puffer.envs.cartpole import TAU, THETA_THRESHOLD, X_THRESHOLD, CartPoleVec


def set_rows(env: CartPoleVec, states: list[tuple[float, float, float, float]]) -> None:
    """Put row ``i`` of ``env`` in physical state ``states[i]`` (x, x_dot, theta, theta_dot)."""
    env.physics[:] = np.array(states, dtype=np.float64).T
    env.observations[:] = np.array(states, dtype=np.float32)


def test_cartpole_only_the_row_that_left_the_track_terminates():
    env = CartPoleVec(5, seed=0)
    env.reset()
    set_rows(
        env,
        [
            (0.0, 0.0, 0.0, 0.0),  # stays
            (2.39, 2.0, 0.0, 0.0),  # leaves right: x = 2.39 + 0.02 * 2 = 2.43
            (-2.39, -2.0, 0.0, 0.0),  # leaves left
            (X_THRESHOLD, 0.0, 0.0, 0.0),  # exactly on the bound: still on the track
            (0.0, 0.0, THETA_THRESHOLD, 0.0),  # exactly at the angle bound: still up
        ],
    )
    # push so that rows 3 and 4 keep x and theta for one step (the force moves only velocities)
    obs, rew, term, trunc, infos = env.step(np.array([1, 1, 0, 1, 1]))
    assert term.tolist() == [False, True, True, False, False]
    assert not trunc.any()
    np.testing.assert_allclose(env.final_observations[1, 0], 2.39 + TAU * 2.0, rtol=1e-6)
    np.testing.assert_allclose(env.final_observations[2, 0], -2.39 - TAU * 2.0, rtol=1e-6)
    assert (np.abs(obs[1:3]) <= 0.05).all()  # the ended rows started new episodes
    assert obs[3, 0] == np.float32(X_THRESHOLD) and obs[4, 2] == np.float32(THETA_THRESHOLD)
    assert infos["episode_length"].tolist() == [1, 1]
    assert rew.tolist() == [1.0] * 5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cartpole_pole_past_the_angle_bound_terminates_that_row_only(sign):
    env = CartPoleVec(3, seed=0)
    env.reset()
    theta = sign * (THETA_THRESHOLD - 0.001)
    set_rows(env, [(0.0, 0.0, 0.0, 0.0), (0.0, 0.0, theta, sign * 1.0), (0.0, 0.0, 0.0, 0.0)])
    env.step(np.array([0, 0, 0]))
    assert env.terminals.tolist() == [False, True, False]
    assert math.isclose(env.final_observations[1, 2], theta + TAU * sign, rel_tol=1e-6)
