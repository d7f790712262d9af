"""GAE, V-trace and the puff advantage: hand computations, a plain-loop reference, their
equivalences, and the infinite-horizon bootstrap test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from puffer.ppo.advantage import (
    compute_gae,
    compute_puff_advantage,
    compute_vtrace,
    discounted_cumsum,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def random_rollout(seed: int, segments: int = 5, horizon: int = 9):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(segments, horizon, generator=g)
    values = torch.randn(segments, horizon, generator=g)
    next_values = torch.randn(segments, horizon, generator=g)
    u = torch.rand(segments, horizon, generator=g)
    terminals = u < 0.15
    truncations = (u >= 0.15) & (u < 0.3)
    ratios = torch.rand(segments, horizon, generator=g) * 2
    # As in a real rollout: within an episode, the next value is the next step's value.
    ended = (terminals | truncations)[:, :-1]
    next_values[:, :-1] = torch.where(ended, next_values[:, :-1], values[:, 1:])
    return rewards, values, next_values, terminals, truncations, ratios


def loop_reference(
    rewards, values, next_values, terminals, truncations, ratios, gamma, lam, rho_bar, c_bar
):
    """Per env, per step, backwards: the puff advantage written as plainly as possible."""
    S, T = rewards.shape
    out = np.zeros((S, T))
    for s in range(S):
        acc = 0.0
        for k in reversed(range(T)):
            if terminals[s, k]:
                target = float(rewards[s, k])
            else:
                target = float(rewards[s, k]) + gamma * float(next_values[s, k])
            rho = min(float(ratios[s, k]), rho_bar)
            c = min(float(ratios[s, k]), c_bar)
            delta = rho * (target - float(values[s, k]))
            ended = bool(terminals[s, k]) or bool(truncations[s, k])
            acc = delta + (0.0 if ended else gamma * lam * c * acc)
            out[s, k] = acc
    return out


def test_gae_by_hand():
    # One segment of 3 steps; the episode terminates at step 1, a new one starts at step 2.
    rewards = t([[1.0, 2.0, 3.0]])
    values = t([[0.5, 1.0, 2.0]])
    next_values = t([[1.0, 99.0, 4.0]])  # 99: after a termination, must be ignored
    terminals = t([[False, True, False]], torch.bool)
    truncations = t([[False, False, False]], torch.bool)
    gamma, lam = 0.9, 0.8
    adv = compute_gae(
        rewards, values, next_values, terminals, truncations, gamma=gamma, gae_lambda=lam
    )
    d2 = 3.0 + 0.9 * 4.0 - 2.0  # bootstrapped from the segment's next value
    d1 = 2.0 - 1.0  # terminal: no bootstrap
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = [d0 + gamma * lam * d1, d1, d2]
    assert adv.tolist()[0] == pytest.approx(expected, rel=1e-6)


def test_truncation_bootstraps_from_final_value():
    rewards = t([[1.0, 1.0]])
    values = t([[0.0, 0.0]])
    next_values = t([[5.0, 7.0]])  # step 0 truncated: 5.0 is V(final observation)
    terminals = t([[False, False]], torch.bool)
    truncations = t([[True, False]], torch.bool)
    adv = compute_gae(
        rewards, values, next_values, terminals, truncations, gamma=0.5, gae_lambda=1.0
    )
    # Step 0 bootstraps from its final observation and does not see step 1 (a new episode).
    assert adv.tolist()[0] == pytest.approx([1.0 + 0.5 * 5.0, 1.0 + 0.5 * 7.0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_loop(seed, gamma, lam):
    r, v, nv, term, trunc, _ = random_rollout(seed)
    adv = compute_gae(r, v, nv, term, trunc, gamma=gamma, gae_lambda=lam)
    ones = torch.ones_like(r)
    ref = loop_reference(r, v, nv, term, trunc, ones, gamma, lam, 1.0, 1.0)
    np.testing.assert_allclose(adv.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rho_bar,c_bar", [(1.0, 1.0), (2.0, 0.5), (0.7, 1.3)])
def test_puff_matches_loop(seed, rho_bar, c_bar):
    r, v, nv, term, trunc, ratios = random_rollout(seed)
    adv = compute_puff_advantage(
        r, v, nv, term, trunc, ratios, gamma=0.97, gae_lambda=0.9, rho_clip=rho_bar, c_clip=c_bar
    )
    ref = loop_reference(r, v, nv, term, trunc, ratios, 0.97, 0.9, rho_bar, c_bar)
    np.testing.assert_allclose(adv.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_vtrace_equals_gae_when_ratios_are_one(seed):
    r, v, nv, term, trunc, _ = random_rollout(seed)
    ones = torch.ones_like(r)
    gae = compute_gae(r, v, nv, term, trunc, gamma=0.95, gae_lambda=0.9)
    vs, pg_adv = compute_vtrace(r, v, nv, term, trunc, ones, gamma=0.95, gae_lambda=0.9)
    torch.testing.assert_close(vs - v, gae)
    puff = compute_puff_advantage(r, v, nv, term, trunc, ones, gamma=0.95, gae_lambda=0.9)
    torch.testing.assert_close(puff, gae)
    # With lambda = 1 the policy-gradient advantage is GAE(1) too.
    _, pg1 = compute_vtrace(r, v, nv, term, trunc, ones, gamma=0.95)
    torch.testing.assert_close(pg1, compute_gae(r, v, nv, term, trunc, gamma=0.95, gae_lambda=1.0))
    assert not torch.allclose(pg_adv, gae)  # with lambda < 1 they differ, as they should


def test_vtrace_by_hand_with_clipping():
    # Espeholt et al. eq. 1 on one 2-step segment, rho_bar = c_bar = 1, lambda = 1.
    r, v, nv = t([[1.0, 2.0]]), t([[0.5, 1.5]]), t([[1.5, 3.0]])
    no = t([[False, False]], torch.bool)
    ratios = t([[2.0, 0.5]])
    gamma = 0.9
    vs, pg = compute_vtrace(r, v, nv, no, no, ratios, gamma=gamma)
    d1 = 0.5 * (2.0 + gamma * 3.0 - 1.5)
    d0 = 1.0 * (1.0 + gamma * 1.5 - 0.5)
    vs1 = 1.5 + d1
    vs0 = 0.5 + d0 + gamma * 1.0 * d1
    assert vs.tolist()[0] == pytest.approx([vs0, vs1], rel=1e-6)
    assert pg.tolist()[0] == pytest.approx(
        [1.0 * (1.0 + gamma * vs1 - 0.5), 0.5 * (2.0 + gamma * 3.0 - 1.5)], rel=1e-6
    )


@pytest.mark.parametrize("rho_bar,c_bar", [(2.0, 0.5), (0.6, 1.4)])
def test_vtrace_with_unequal_clips_matches_loop(rho_bar, c_bar):
    """vs = V + the clipped puff advantage; pg_adv_t = min(rho_t, rho_bar) * (r_t + gamma * vs_{t+1}
    - V_t), with vs_{t+1} = next_values_t at segment ends and where the episode ended."""
    r, v, nv, term, trunc, ratios = random_rollout(5)
    gamma, lam = 0.95, 0.9
    vs, pg = compute_vtrace(
        r, v, nv, term, trunc, ratios, gamma=gamma, gae_lambda=lam, rho_clip=rho_bar, c_clip=c_bar
    )
    adv = loop_reference(r, v, nv, term, trunc, ratios, gamma, lam, rho_bar, c_bar)
    vs_ref = v.numpy() + adv
    np.testing.assert_allclose(vs.numpy(), vs_ref, rtol=1e-5, atol=1e-5)
    S, T = r.shape
    pg_ref = np.zeros((S, T))
    for s in range(S):
        for k in range(T):
            ended = bool(term[s, k]) or bool(trunc[s, k])
            nxt = float(nv[s, k]) if ended or k == T - 1 else vs_ref[s, k + 1]
            boot = 0.0 if term[s, k] else gamma * nxt
            rho = min(float(ratios[s, k]), rho_bar)
            pg_ref[s, k] = rho * (float(r[s, k]) + boot - float(v[s, k]))
    np.testing.assert_allclose(pg.numpy(), pg_ref, rtol=1e-5, atol=1e-5)


def test_one_step_segment_by_hand():
    """A horizon of one step: A = r + gamma * next_value - V (the recursion has no later step)."""
    no = t([[False], [False]], torch.bool)
    adv = compute_gae(
        t([[1.0], [2.0]]), t([[0.5], [0.0]]), t([[3.0], [4.0]]), no, no, gamma=0.5, gae_lambda=0.9
    )
    assert adv.flatten().tolist() == pytest.approx([1.0 + 1.5 - 0.5, 2.0 + 2.0])


def test_puff_advantage_clips_both_ratios_at_one_by_default():
    """Without ``rho_clip``/``c_clip`` both clips are 1: ratios of 3 count as 1 (GAE by hand)."""
    no = t([[False, False]], torch.bool)
    r, v, nv = t([[1.0, 2.0]]), t([[0.0, 1.0]]), t([[1.0, 3.0]])
    adv = compute_puff_advantage(r, v, nv, no, no, t([[3.0, 3.0]]), gamma=0.5, gae_lambda=0.8)
    d1 = 2.0 + 0.5 * 3.0 - 1.0
    d0 = 1.0 + 0.5 * 1.0 - 0.0
    assert adv.tolist()[0] == pytest.approx([d0 + 0.5 * 0.8 * d1, d1], rel=1e-6)


def test_float64_rollout_keeps_float64_precision():
    """In float64 the trace coefficient ``gamma * lambda`` is not rounded to float32: the result
    matches a float64 loop to 1e-12."""
    r, v, nv, term, trunc, ratios = (
        x if x.dtype == torch.bool else x.double() for x in random_rollout(6)
    )
    gamma, lam = 0.99, 0.95
    adv = compute_puff_advantage(
        r, v, nv, term, trunc, ratios, gamma=gamma, gae_lambda=lam, rho_clip=1.3, c_clip=0.9
    )
    assert adv.dtype == torch.float64
    ref = loop_reference(r, v, nv, term, trunc, ratios, gamma, lam, 1.3, 0.9)
    np.testing.assert_allclose(adv.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 5), (3, 1), (5, 2)])
def test_discounted_cumsum_runs_off_the_cpu(shape):
    """Off the CPU the recursion is a torch loop: on the ``meta`` device (shapes only, no values;
    the only other device here) it runs for any segments/horizon and keeps shape and device."""
    deltas = torch.empty(shape, device="meta")
    out = discounted_cumsum(deltas, torch.empty(shape, device="meta"))
    assert out.device.type == "meta" and out.shape == shape
