"""The PPO loss and the formulas around it (puffer.ppo.loss), each against a value computed in the
test: plain numpy, or a hand example written out.

References: PPO paper (Schulman et al. 2017) eq. 7 and 9, CleanRL's ``ppo.py`` (``norm_adv``,
``clip_vloss``, ``approx_kl``), prioritized replay (Schaul et al. 2016).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from puffer.ppo import loss as L

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def np_loss(new_lp, old_lp, ent, v, v_old, adv, ret, clip, vclip, ent_coef, vf_coef, mask=None):
    """The PPO loss written out in numpy, term by term: ``(loss, pg, v_loss, entropy, kl, clipfrac)``."""
    new_lp, old_lp, ent, v, v_old, adv, ret = map(
        np.asarray, (new_lp, old_lp, ent, v, v_old, adv, ret)
    )
    m = np.ones(adv.shape, bool) if mask is None else np.asarray(mask)
    r = np.exp(new_lp - old_lp)[m]
    a = adv[m]
    pg = np.mean(np.maximum(-a * r, -a * np.clip(r, 1 - clip, 1 + clip)))
    err = (v[m] - ret[m]) ** 2
    if vclip is not None:
        vc = v_old[m] + np.clip(v[m] - v_old[m], -vclip, vclip)
        err = np.maximum(err, (vc - ret[m]) ** 2)
    v_loss = 0.5 * np.mean(err)
    entropy = np.mean(ent[m])
    kl = np.mean((r - 1) - np.log(r))
    clipfrac = np.mean(np.abs(r - 1) > clip)
    return pg - ent_coef * entropy + vf_coef * v_loss, pg, v_loss, entropy, kl, clipfrac


def random_batch(seed, shape=(3, 5)):
    rng = np.random.default_rng(seed)
    old = rng.normal(-1.0, 0.3, shape)
    new = old + rng.normal(0, 0.3, shape)  # ratios from ~0.4 to ~2.5: some clipped either side
    return dict(
        new_lp=new,
        old_lp=old,
        ent=rng.uniform(0.1, 1.0, shape),
        v=rng.normal(0, 1, shape),
        v_old=rng.normal(0, 1, shape),
        adv=rng.normal(0, 1, shape),
        ret=rng.normal(0, 2, shape),
    )


def torch_args(batch):
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in batch.items()}


def call_ppo_loss(batch, clip, vclip, ent_coef, vf_coef, mask=None):
    b = torch_args(batch)
    return L.ppo_loss(
        b["new_lp"],
        b["old_lp"],
        b["ent"],
        b["v"],
        b["v_old"],
        b["adv"],
        b["ret"],
        clip_coef=clip,
        vf_clip_coef=vclip,
        ent_coef=ent_coef,
        vf_coef=vf_coef,
        mask=None if mask is None else torch.tensor(mask),
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "clip,vclip,ent_coef,vf_coef",
    [(0.2, 0.2, 0.01, 0.5), (0.1, None, 0.3, 2.0), (0.3, 0.05, 0.0, 1.0), (0.2, 1.0, 1.5, 0.0)],
)
def test_ppo_loss_matches_numpy(seed, clip, vclip, ent_coef, vf_coef):
    batch = random_batch(seed)
    out = call_ppo_loss(batch, clip, vclip, ent_coef, vf_coef)
    expected = np_loss(**batch, clip=clip, vclip=vclip, ent_coef=ent_coef, vf_coef=vf_coef)
    got = [out.loss, out.pg_loss, out.v_loss, out.entropy, out.approx_kl, out.clipfrac]
    np.testing.assert_allclose([g.item() for g in got], expected, rtol=1e-5, atol=1e-6)


def test_ppo_loss_with_a_mask_counts_only_masked_steps():
    batch = random_batch(7)
    mask = np.random.default_rng(1).random((3, 5)) < 0.6
    out = call_ppo_loss(batch, 0.2, 0.2, 0.05, 0.7, mask)
    expected = np_loss(**batch, clip=0.2, vclip=0.2, ent_coef=0.05, vf_coef=0.7, mask=mask)
    got = [out.loss, out.pg_loss, out.v_loss, out.entropy, out.approx_kl, out.clipfrac]
    np.testing.assert_allclose([g.item() for g in got], expected, rtol=1e-5, atol=1e-6)


def test_combined_loss_gradients_carry_each_coefficient_with_its_sign():
    """d loss / d entropy_i = -ent_coef / N (the bonus is maximized); d loss / d V_i =
    vf_coef * (V_i - R_i) / N (unclipped); d loss / d log pi_i = -A_i r_i / N inside the clip."""
    n = 4
    new_lp = t([-1.0, -0.5, -2.0, -0.1]).requires_grad_()
    old_lp = new_lp.detach().clone()  # ratio 1: inside the clip everywhere
    ent = t([0.5, 0.6, 0.7, 0.8]).requires_grad_()
    v = t([1.0, 2.0, 3.0, 4.0]).requires_grad_()
    ret = t([0.0, 2.5, 1.0, 4.0])
    adv = t([1.0, -2.0, 0.5, 3.0])
    out = L.ppo_loss(
        new_lp,
        old_lp,
        ent,
        v,
        v.detach(),
        adv,
        ret,
        clip_coef=0.2,
        vf_clip_coef=None,
        ent_coef=0.3,
        vf_coef=0.7,
    )
    out.loss.backward()
    np.testing.assert_allclose(ent.grad.numpy(), [-0.3 / n] * n, rtol=1e-6)
    np.testing.assert_allclose(v.grad.numpy(), 0.7 * (v - ret).detach().numpy() / n, rtol=1e-6)
    np.testing.assert_allclose(new_lp.grad.numpy(), -adv.numpy() / n, rtol=1e-6)
    # the parts are reported detached, the total is their weighted sum
    assert not out.pg_loss.requires_grad and not out.v_loss.requires_grad
    assert out.loss.item() == pytest.approx(
        out.pg_loss.item() - 0.3 * out.entropy.item() + 0.7 * out.v_loss.item(), rel=1e-6
    )


def test_clipped_surrogate_by_hand():
    # A > 0: the gain stops at 1 + eps; A < 0: the loss stops improving below 1 - eps, and a
    # ratio past the clip on the bad side is not clipped (the pessimistic min).
    adv = t([2.0, 2.0, -1.0, -1.0, 1.0])
    ratio = t([1.5, 0.5, 0.5, 1.5, 1.1])
    per_step = [-2.0 * 1.2, -2.0 * 0.5, 1.0 * 0.8, 1.0 * 1.5, -1.0 * 1.1]
    assert L.clipped_surrogate(adv, ratio, 0.2).item() == pytest.approx(np.mean(per_step))
    mask = t([True, False, True, False, False], torch.bool)
    assert L.clipped_surrogate(adv, ratio, 0.2, mask).item() == pytest.approx(
        (per_step[0] + per_step[2]) / 2
    )


def test_value_loss_by_hand():
    new, old, ret = t([1.0, 0.0, 2.0]), t([0.0, 0.0, 2.5]), t([3.0, -1.0, 2.0])
    # unclipped: 0.5 * mean((V - R)^2)
    assert L.value_loss(new, old, ret, None).item() == pytest.approx(0.5 * (4 + 1 + 0) / 3)
    # clipped at 0.2: V_clip = [0.2, 0.0, 2.3]; errors max((V-R)^2, (V_clip-R)^2)
    expected = 0.5 * (max(4, 2.8**2) + max(1, 1) + max(0, 0.3**2)) / 3
    assert L.value_loss(new, old, ret, 0.2).item() == pytest.approx(expected, rel=1e-6)
    # a clip wider than every step changes nothing; unequal clips give unequal losses
    assert L.value_loss(new, old, ret, 10.0).item() == pytest.approx(0.5 * 5 / 3)
    assert L.value_loss(new, old, ret, 0.5).item() == pytest.approx(
        0.5 * (2.5**2 + 1 + 0.0) / 3, rel=1e-6
    )


def test_masked_mean():
    x = t([1.0, 2.0, 3.0, 10.0])
    assert L.masked_mean(x, None).item() == 4.0
    assert L.masked_mean(x, t([True, True, True, False], torch.bool)).item() == 2.0
    assert math.isnan(L.masked_mean(x, t([False] * 4, torch.bool)).item())


def test_normalize_advantages_matches_numpy():
    a = np.random.default_rng(0).normal(3.0, 2.0, (4, 6))
    got = L.normalize_advantages(torch.tensor(a, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, (a - a.mean()) / (a.std(ddof=1) + 1e-8), rtol=1e-10)
    mask = np.random.default_rng(1).random((4, 6)) < 0.5
    got = L.normalize_advantages(torch.tensor(a), torch.tensor(mask)).numpy()
    sel = a[mask]
    np.testing.assert_allclose(got, (a - sel.mean()) / (sel.std(ddof=1) + 1e-8), rtol=1e-10)
    assert got[mask].mean() == pytest.approx(0.0, abs=1e-12)
    # the 1e-8: constant advantages become 0, not NaN
    assert L.normalize_advantages(torch.full((2, 3), 5.0)).abs().max().item() == 0.0
    two = L.normalize_advantages(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([True, True, False]))
    np.testing.assert_allclose(two[:2].numpy(), [-1 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-6)
    one = torch.tensor([[1.0, 9.0]])
    assert L.normalize_advantages(one, torch.tensor([[True, False]])).tolist() == [[0.0, 8e8]]


def test_explained_variance_matches_numpy():
    rng = np.random.default_rng(0)
    ret = rng.normal(0, 2, 50)
    val = ret + rng.normal(0, 1, 50)
    ev = L.explained_variance(torch.tensor(val), torch.tensor(ret))
    assert ev == pytest.approx(1 - np.var(ret - val) / np.var(ret), rel=1e-9)
    assert 0.5 < ev < 1.0
    # hand cases: perfect values 1; constant values 0; the negated returns -3
    r = torch.tensor([1.0, 2.0, 4.0])
    assert L.explained_variance(r, r) == 1.0
    assert L.explained_variance(torch.full((3,), 7.0), r) == pytest.approx(0.0, abs=1e-7)
    assert L.explained_variance(-r, r) == pytest.approx(-3.0)
    assert math.isnan(L.explained_variance(r, torch.ones(3)))
    mask = torch.tensor([True, True, False])
    assert L.explained_variance(torch.tensor([1.0, 2.0, 100.0]), r, mask) == 1.0


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("linear", [1.0, 0.75, 0.5, 0.25, 0.0]),
        ("cosine", [1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5, 0.5 - 0.5 * math.sqrt(0.5), 0.0]),
        ("constant", [1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_learning_rate_schedules_at_quarters(schedule, expected):
    got = [L.learning_rate(2e-3, schedule, p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    np.testing.assert_allclose(got, [2e-3 * e for e in expected], rtol=1e-12, atol=1e-18)
    # progress outside [0, 1] is clamped
    assert L.learning_rate(2e-3, schedule, 1.5) == pytest.approx(2e-3 * expected[-1], abs=1e-18)
    assert L.learning_rate(2e-3, schedule, -0.5) == 2e-3


def test_prioritized_weights_formula():
    adv = torch.tensor([[1.0, -1.0], [0.5, 0.0], [-3.0, 1.0], [0.0, 0.0]])
    alpha, beta = 0.7, 0.4
    prio = (np.abs(adv.numpy()).sum(1) + 1e-6) ** alpha
    probs = prio / prio.sum()
    g = torch.Generator().manual_seed(0)
    idx, w = L.prioritized_segments(adv, 3, alpha, beta, g)
    assert w.shape == (3, 1) and len(set(idx.tolist())) == 3  # without replacement
    raw = (4 * probs[idx.numpy()]) ** -beta
    np.testing.assert_allclose(w[:, 0].numpy(), raw / raw.max(), rtol=1e-5)
    # beta = 0: no correction; alpha = 0: uniform, every weight 1
    assert L.prioritized_segments(adv, 2, alpha, 0.0, g)[1].tolist() == [[1.0], [1.0]]
    assert L.prioritized_segments(adv, 4, 0.0, 1.0, g)[1].flatten().tolist() == [1.0] * 4


def test_prioritized_sampling_frequencies_follow_the_priorities():
    adv = torch.tensor([[4.0], [1.0], [-2.0], [0.0]])
    alpha = 0.5
    prio = (np.array([4.0, 1.0, 2.0, 0.0]) + 1e-6) ** alpha
    probs = prio / prio.sum()
    g = torch.Generator().manual_seed(1)
    draws = 4000
    counts = np.bincount(
        [L.prioritized_segments(adv, 1, alpha, 1.0, g)[0].item() for _ in range(draws)], minlength=4
    )
    sigma = np.sqrt(draws * probs * (1 - probs))
    assert (np.abs(counts - draws * probs) < 4 * sigma + 1).all(), (counts, draws * probs)


def test_prioritized_sampling_keeps_zero_advantage_segments_drawable_and_is_seeded():
    adv = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0], [0.5, 0.5]])
    idx, w = L.prioritized_segments(adv, 4, 0.7, 0.5, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == [0, 1, 2, 3]  # the 1e-6 floor: segment 1 can be drawn
    assert w[idx.tolist().index(1), 0].item() == 1.0  # the rarest draw has the largest weight
    big = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    first = L.prioritized_segments(big, 8, 0.6, 0.4, torch.Generator().manual_seed(7))[0]
    torch.manual_seed(456)  # the global RNG plays no part
    second = L.prioritized_segments(big, 8, 0.6, 0.4, torch.Generator().manual_seed(7))[0]
    assert first.tolist() == second.tolist()


def test_unclipped_value_loss_counts_only_masked_steps():
    new, old, ret = t([1.0, 0.0, 2.0]), t([0.0, 0.0, 2.5]), t([3.0, -1.0, 12.0])
    mask = t([True, True, False], torch.bool)  # the third step's error of 100 does not count
    assert L.value_loss(new, old, ret, None, mask).item() == pytest.approx(0.5 * (4 + 1) / 2)


def test_clipfrac_counts_ratios_strictly_outside_the_clip_range():
    """CleanRL: ``((ratio - 1).abs() > clip_coef).mean()``: with clip 0 an unchanged policy (ratio 1)
    is not clipped, one whose ratio moved is."""
    lp = t([0.0, 0.0, 0.0, 0.0])
    moved = t([0.0, 0.0, 0.1, -0.1])
    zeros, ones = torch.zeros(4), torch.ones(4)
    coefs = dict(clip_coef=0.0, vf_clip_coef=None, ent_coef=0.0, vf_coef=0.5)
    assert L.ppo_loss(lp, lp, zeros, zeros, zeros, ones, zeros, **coefs).clipfrac.item() == 0.0
    assert L.ppo_loss(moved, lp, zeros, zeros, zeros, ones, zeros, **coefs).clipfrac.item() == 0.5


def test_a_non_finite_loss_names_where_the_terms_and_the_fixes():
    nan = torch.tensor(float("nan"))
    out = L.PPOLoss(nan, t(1.5), nan, t(0.25), t(0.0), t(0.0))
    with pytest.raises(L.NonFiniteLossError) as e:
        L.check_finite(out, "update 3 (global_step 4096)")
    assert str(e.value) == (
        "PPO loss is nan at update 3 (global_step 4096): policy_loss=1.5, value_loss=nan, "
        "entropy=0.25. The policy was not updated with it; lower ppo.learning_rate, enable "
        "ppo.normalize_rewards/normalize_observations, or check the env for NaN/inf observations "
        "and rewards"
    )
    L.check_finite(L.PPOLoss(t(1.0), t(1.5), t(0.5), t(0.25), t(0.0), t(0.0)), "anywhere")


@pytest.mark.parametrize("progress,beta", [(0.0, 0.4), (0.5, 0.7), (2.0, 1.0)])
def test_minibatch_importance_weights_anneal_beta(progress, beta):
    """``minibatch_indices``: beta = prio_beta0 + (1 - prio_beta0) * min(progress, 1); with one
    minibatch every segment is drawn, so the weights (N P(i)) ** -beta / max are known in full."""
    from puffer.ppo.config import PPOConfig
    from puffer.ppo.sampling import minibatch_indices

    adv = torch.tensor([[1.0, -1.0], [0.5, 0.0], [-3.0, 1.0], [0.25, 0.25]])
    config = PPOConfig(num_minibatches=1, update_epochs=1, prio_alpha=0.7, prio_beta0=0.4)
    g, shuffle = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    [(idx, w)] = list(minibatch_indices(config, adv, progress, g, shuffle))
    prio = np.array([2.0, 0.5, 4.0, 0.5]) ** 0.7
    raw = (4 * prio / prio.sum()) ** -beta
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    np.testing.assert_allclose(w[:, 0].numpy(), (raw / raw.max())[idx.numpy()], rtol=1e-5)


def test_minibatch_prioritized_draws_come_from_the_given_generator():
    """Equal seeds give equal prioritized minibatches whatever the global RNG's state."""
    from puffer.ppo.config import PPOConfig
    from puffer.ppo.sampling import minibatch_indices

    adv = torch.randn(64, 3, generator=torch.Generator().manual_seed(2))
    config = PPOConfig(num_minibatches=8, update_epochs=2, prio_alpha=0.6)
    draws = []
    with torch.random.fork_rng():
        for global_seed in (123, 456):
            torch.manual_seed(global_seed)
            g, shuffle = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)
            draws.append([i.tolist() for i, _ in minibatch_indices(config, adv, 0.3, g, shuffle)])
    assert len(draws[0]) == 16 and draws[0] == draws[1]


def test_shuffled_minibatch_indices_live_on_the_advantages_device():
    """The CPU-drawn permutation is moved to the advantages' device (``meta`` here: the only
    device besides the CPU)."""
    from puffer.ppo.config import PPOConfig
    from puffer.ppo.sampling import minibatch_indices

    config = PPOConfig(num_minibatches=2, update_epochs=1)
    adv = torch.empty(6, 3, device="meta")
    g, shuffle = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batches = list(minibatch_indices(config, adv, 0.0, g, shuffle))
    assert [(i.device.type, i.shape, w) for i, w in batches] == [("meta", (3,), None)] * 2
