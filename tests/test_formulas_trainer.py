"""One PPO update of the real Trainer on a tiny deterministic setup, recomputed in the test.

After ``trainer.rollout()`` the test copies the policy and the rollout, then computes what one
update must do with its own code: GAE / V-trace written as plain per-step loops in numpy, the loss
term by term, gradient-norm clipping and Adam's step (Kingma & Ba 2015, as ``torch.optim.Adam``
with bias correction). The trainer's parameters after ``update()`` and its logged losses must
match. Each PPOConfig option of the update changes the expected result, so an option that is
ignored, or a coefficient with the wrong sign, fails here.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import puffer.policy as P
from puffer.envs.base import NativeVecEnv
from puffer.ppo.config import PPOConfig
from puffer.ppo.trainer import Trainer
from puffer.spaces import Box, Discrete

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Walk(NativeVecEnv):
    """Position 0..3 on a line: action 0 steps back, 1 stays, 2 steps on; reward 1 for stepping
    on, else -0.1 * position; terminated on reaching 3, truncated after 5 steps. Observation
    ``[position / 3, steps / 5]``: the final observation differs from the reset one."""

    def __init__(self, num_envs: int = 4, seed: int | None = None):
        super().__init__(Box.uniform([2], 0.0, 1.0), Discrete(3), num_envs, seed=seed)
        self.pos = np.zeros(self.num_envs, np.int64)
        self.steps = np.zeros(self.num_envs, np.int64)

    def _reset_rows(self, rows):
        self.pos[rows] = self.rng.integers(0, 2, len(rows))
        self.steps[rows] = 0
        self._observe()

    def _observe(self):
        self.observations[:, 0] = self.pos / 3
        self.observations[:, 1] = self.steps / 5

    def _simulate(self):
        a = self.actions
        self.rewards[:] = np.where(a == 2, 1.0, -0.1 * self.pos)
        self.pos = np.clip(self.pos + a - 1, 0, 3)
        self.steps += 1
        self._observe()
        np.greater_equal(self.pos, 3, out=self.terminals)
        np.greater_equal(self.steps, 5, out=self.truncations)
        self.truncations &= ~self.terminals


def np_advantages(
    rewards,
    values,
    next_values,
    terminals,
    truncations,
    gamma,
    lam,
    ratios=None,
    rho_clip=1.0,
    c_clip=1.0,
):
    """Per segment, backwards, one step at a time: the (V-trace-weighted) GAE advantages."""
    S, T = rewards.shape
    ratios = np.ones((S, T)) if ratios is None else ratios
    adv = np.zeros((S, T))
    for s in range(S):
        acc = 0.0
        for k in reversed(range(T)):
            boot = 0.0 if terminals[s, k] else gamma * next_values[s, k]
            delta = min(ratios[s, k], rho_clip) * (rewards[s, k] + boot - values[s, k])
            ended = terminals[s, k] or truncations[s, k]
            acc = delta + (0.0 if ended else gamma * lam * min(ratios[s, k], c_clip) * acc)
            adv[s, k] = acc
    return adv


def snapshot(trainer):
    """The rollout as float64 numpy arrays (and the observations/actions as tensors)."""
    b = trainer.buffer
    out = {
        k: getattr(b, k).double().numpy().copy()
        for k in ("log_probs", "values", "rewards", "next_values")
    }
    out["terminals"] = b.terminals.numpy().copy()
    out["truncations"] = b.truncations.numpy().copy()
    out["observations"] = b.observations.clone()
    out["actions"] = b.actions.clone()
    return out


def reward_scale(rewards, dones, gamma):
    """1 / std of every row's discounted running return (reset after an episode ends), as
    Gymnasium's NormalizeReward, from a fresh start: one rollout's worth."""
    S, T = rewards.shape
    g, returns = np.zeros(S), np.zeros((S, T))
    for k in range(T):
        g = gamma * g + rewards[:, k]
        returns[:, k] = g
        g = np.where(dones[:, k], 0.0, g)
    return 1.0 / math.sqrt(returns.var() + 1e-8)


def reference_update(policy, roll, c: PPOConfig, lr: float):
    """The update, recomputed: returns (updated policy copy, logged loss means, explained var)."""
    policy = copy.deepcopy(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    rewards = roll["rewards"]
    if c.normalize_rewards:
        rewards = rewards * reward_scale(rewards, roll["terminals"] | roll["truncations"], c.gamma)
    ends = (roll["terminals"], roll["truncations"])
    values, old_lp = roll["values"], roll["log_probs"]
    adv0 = np_advantages(rewards, values, roll["next_values"], *ends, c.gamma, c.gae_lambda)
    returns = adv0 + values
    explained = 1 - np.var(returns - values) / np.var(returns) if np.var(returns) > 0 else np.nan
    stats = []
    for step in range(1, c.update_epochs + 1):
        params_out, new_v = policy.forward_sequence(roll["observations"], None, None)
        logp_all = torch.log_softmax(params_out, -1)
        new_lp = logp_all.gather(-1, roll["actions"].unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        log_ratio = new_lp - torch.tensor(old_lp, dtype=torch.float32)
        ratio = log_ratio.exp()
        r = ratio.detach().double().numpy()
        adv = adv0
        if c.refresh_advantages:
            adv = np_advantages(
                rewards,
                values,
                roll["next_values"],
                *ends,
                c.gamma,
                c.gae_lambda,
                r,
                c.vtrace_rho_clip,
                c.vtrace_c_clip,
            )
        ret = adv + values
        if c.norm_adv:
            adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
        kl = float(np.mean((r - 1) - np.log(r)))
        if c.target_kl is not None and kl > c.target_kl:
            break
        a = torch.tensor(adv, dtype=torch.float32)
        pg = torch.max(-a * ratio, -a * ratio.clamp(1 - c.clip_coef, 1 + c.clip_coef)).mean()
        ret_t, old_v = (torch.tensor(x, dtype=torch.float32) for x in (ret, values))
        err = (new_v - ret_t) ** 2
        if c.clip_vloss:
            clipped = old_v + (new_v - old_v).clamp(-c.vf_clip_coef, c.vf_clip_coef)
            err = torch.max(err, (clipped - ret_t) ** 2)
        v_loss = 0.5 * err.mean()
        ent = entropy.mean()
        loss = pg - c.ent_coef * ent + c.vf_coef * v_loss
        grads = torch.autograd.grad(loss, params)
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        scale = min(1.0, c.max_grad_norm / (norm + 1e-6))
        b1, b2 = c.adam_beta1, c.adam_beta2
        with torch.no_grad():
            for p, g, mi, vi in zip(params, grads, m, v):
                g = g * scale
                mi.mul_(b1).add_((1 - b1) * g)
                vi.mul_(b2).add_((1 - b2) * g * g)
                denom = vi.sqrt() / math.sqrt(1 - b2**step) + c.adam_eps
                p.sub_(lr / (1 - b1**step) * mi / denom)
        clipfrac = float(np.mean(np.abs(r - 1) > c.clip_coef))
        stats.append([pg.item(), v_loss.item(), ent.item(), kl, clipfrac])
    means = np.mean(stats, 0) if stats else np.full(5, np.nan)
    keys = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
    return policy, dict(zip(keys, means)), explained


def setup(seed=0, **overrides):
    kw = dict(
        total_timesteps=4 * 8 * 4,
        horizon=8,
        num_minibatches=1,
        update_epochs=1,
        learning_rate=0.01,
        lr_schedule="constant",
    )
    env = Walk(num_envs=4, seed=seed)
    config = PPOConfig(**{**kw, **overrides})
    policy = P.make(P.PolicyConfig(hidden_sizes=[16]), env, seed=seed)
    return Trainer(config, env, policy, device="cpu", seed=seed), config


def flat(policy):
    return torch.cat([p.detach().flatten() for p in policy.parameters()]).double().numpy()


CASES = {
    "defaults": {},
    "coefficients": dict(vf_coef=2.0, ent_coef=0.2, clip_coef=0.1),
    "no_value_weight": dict(vf_coef=0.0, ent_coef=0.05),
    "unclipped_values": dict(clip_vloss=False, vf_coef=1.0),
    "tight_value_clip": dict(vf_clip_coef=0.01, update_epochs=3),
    "raw_advantages": dict(norm_adv=False, gamma=0.9, gae_lambda=0.5),
    "epochs_and_clip": dict(update_epochs=4, clip_coef=0.05, learning_rate=0.05),
    "grad_clip": dict(max_grad_norm=0.01, update_epochs=2),
    "adam_settings": dict(adam_beta1=0.5, adam_beta2=0.9, adam_eps=1e-3, update_epochs=3),
    "kl_early_stop": dict(update_epochs=4, target_kl=1e-6, learning_rate=0.05),
    "vtrace_refresh": dict(
        refresh_advantages=True,
        vtrace_rho_clip=1.5,
        vtrace_c_clip=0.5,
        update_epochs=3,
        learning_rate=0.05,
    ),
    "reward_norm": dict(normalize_rewards=True, update_epochs=2),
    "obs_norm": dict(normalize_observations=True, update_epochs=2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_update_matches_the_recomputation(case):
    trainer, config = setup(**CASES[case])
    trainer.rollout()
    roll, before = snapshot(trainer), copy.deepcopy(trainer.policy)
    metrics = trainer.update()
    expected, losses, explained = reference_update(before, roll, config, config.learning_rate)
    moved = np.abs(flat(trainer.policy) - flat(before)).max()
    assert moved > 1e-4  # the update did something
    np.testing.assert_allclose(
        flat(trainer.policy), flat(expected), rtol=0, atol=2e-5 * moved / 0.01
    )
    for key, value in losses.items():
        assert metrics[f"losses/{key}"] == pytest.approx(value, rel=2e-4, abs=1e-6), key
    assert metrics["losses/explained_variance"] == pytest.approx(explained, rel=1e-4, abs=1e-5)


def test_the_kl_early_stop_takes_exactly_one_step():
    """With a tiny target_kl the first epoch (ratio 1, KL 0) steps and the second stops."""
    one, _ = setup(update_epochs=1, learning_rate=0.05)
    four, _ = setup(update_epochs=4, learning_rate=0.05, target_kl=1e-6)
    free, _ = setup(update_epochs=4, learning_rate=0.05)
    for tr in (one, four, free):
        tr.rollout()
        tr.update()
    np.testing.assert_array_equal(flat(four.policy), flat(one.policy))
    assert np.abs(flat(free.policy) - flat(one.policy)).max() > 1e-4


def test_critic_is_untouched_when_vf_coef_is_zero():
    """The value head gets gradient only through ``vf_coef * value_loss``."""
    trainer, _ = setup(vf_coef=0.0)
    before = {k: v.detach().clone() for k, v in trainer.policy.named_parameters()}
    trainer.rollout()
    trainer.update()
    after = dict(trainer.policy.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any("critic" in k or "value" in k for k in changed), changed


@pytest.mark.parametrize(
    "schedule,fractions",
    [
        ("linear", [1.0, 0.75, 0.5, 0.25]),
        ("cosine", [1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5, 0.5 - 0.5 * math.sqrt(0.5)]),
        ("constant", [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_learning_rate_schedule_over_a_run(schedule, fractions):
    """4 updates: the rate used at update k is base * f(k / 4); the optimizer really uses it."""
    trainer, _ = setup(lr_schedule=schedule, learning_rate=0.02)
    used = []
    while not trainer.done:
        trainer.rollout()
        metrics = trainer.update()
        used.append(metrics["learning_rate"])
        lrs = {g["lr"] for opt in trainer.optimizers for g in opt.param_groups}
        assert lrs == {used[-1]}
    np.testing.assert_allclose(used, [0.02 * f for f in fractions], rtol=1e-12)


def test_entropy_bonus_raises_entropy_when_it_is_all_there_is():
    """Rewards 0 and a zeroed critic: advantages and value loss are 0, so the only gradient is the
    entropy bonus; one update must raise the policy's entropy on every observation (the bonus is
    maximized, not minimized), by the amount a recomputed step gives."""

    class Zero(Walk):
        def _simulate(self):
            super()._simulate()
            self.rewards[:] = 0.0

    env = Zero(num_envs=4, seed=0)
    policy = P.make(P.PolicyConfig(hidden_sizes=[16]), env, seed=0)
    critic = [p for n, p in policy.named_parameters() if "critic" in n or "value" in n]
    head_bias = [p for n, p in policy.named_parameters() if n.startswith("head") and "bias" in n]
    assert critic and len(head_bias) == 1
    with torch.no_grad():
        for p in critic:
            p.zero_()
        head_bias[0].copy_(torch.tensor([2.0, 0.0, -2.0]))  # far from uniform: room to rise
    config = PPOConfig(
        total_timesteps=64,
        horizon=8,
        num_minibatches=1,
        update_epochs=1,
        learning_rate=0.01,
        lr_schedule="constant",
        ent_coef=0.5,
    )
    trainer = Trainer(config, env, policy, device="cpu", seed=0)
    trainer.rollout()
    obs = trainer.buffer.observations.clone()

    def entropy(pol):
        with torch.no_grad():
            logits, _ = pol.forward_sequence(obs, None, None)
            logp = torch.log_softmax(logits, -1)
            return -(logp.exp() * logp).sum(-1)

    before = entropy(policy).clone()
    roll, copy_before = snapshot(trainer), copy.deepcopy(policy)
    trainer.update()
    assert (entropy(policy) > before).all()
    expected, _, _ = reference_update(copy_before, roll, config, 0.01)
    np.testing.assert_allclose(flat(policy), flat(expected), atol=1e-6)


def test_observation_normalization_statistics_follow_the_rollouts():
    """After each update the policy's obs_norm holds the mean and (population) variance of every
    observation of every rollout so far, and the policy standardizes with them."""
    trainer, _ = setup(normalize_observations=True)
    norm = trainer.policy.obs_norm
    assert norm.enabled
    seen = []
    for _ in range(3):
        trainer.rollout()
        seen.append(trainer.buffer.observations.double().reshape(-1, 2).numpy().copy())
        trainer.update()
        everything = np.concatenate(seen)
        np.testing.assert_allclose(norm.mean.numpy(), everything.mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(norm.var.numpy(), everything.var(0), rtol=1e-9, atol=1e-12)
    x = torch.tensor([[0.5, 0.2]])
    expected = (np.array([0.5, 0.2]) - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8)
    np.testing.assert_allclose(norm(x)[0].numpy(), np.clip(expected, -10, 10), rtol=1e-5)


def test_observation_normalization_off_leaves_statistics_alone():
    trainer, _ = setup()
    trainer.rollout()
    trainer.update()
    norm = trainer.policy.obs_norm
    assert not norm.enabled and float(norm.count) == 0.0


def test_reward_normalization_across_rollouts_and_episode_ends():
    """RewardNorm: G_t = gamma * G_{t-1} + r_t per row, reset after the step an episode ends, carried
    from one rollout to the next; rewards are scaled by 1 / sqrt(Var[all G so far] + 1e-8)."""
    from puffer.ppo.normalize import RewardNorm

    rng = np.random.default_rng(0)
    gamma, S, T = 0.9, 3, 5  # an odd number of steps per rollout
    norm = RewardNorm(S, gamma)
    g, history = np.zeros(S), []
    for _ in range(3):
        rewards = rng.normal(1.0, 2.0, (S, T))
        dones = rng.random((S, T)) < 0.25
        for k in range(T):
            g = gamma * g + rewards[:, k]
            history.append(g.copy())
            g = np.where(dones[:, k], 0.0, g)
        got = norm(torch.tensor(rewards, dtype=torch.float32), torch.tensor(dones))
        scale = 1.0 / np.sqrt(np.var(np.concatenate(history)) + 1e-8)
        np.testing.assert_allclose(got.numpy(), rewards * scale, rtol=1e-5)
    np.testing.assert_allclose(norm.returns.numpy(), g, rtol=1e-6)


def test_reward_normalization_statistics_in_float64():
    """The carried returns and the return statistics are float64: over many small float32 rewards
    they match a float64 numpy computation to 1e-12 (float32 sums drift by ~1e-7)."""
    from puffer.ppo.normalize import RewardNorm

    gamma, S, T = 0.99, 2, 64
    rewards = torch.full((S, T), 0.1) + torch.arange(T) * 1e-3  # float32
    dones = torch.zeros(S, T, dtype=torch.bool)
    norm = RewardNorm(S, gamma)
    norm(rewards, dones)
    r64, g, history = rewards.double().numpy(), np.zeros(S), []
    for k in range(T):
        g = gamma * g + r64[:, k]
        history.append(g.copy())
    state = norm.state_dict()
    assert state["returns"].dtype == torch.float64
    np.testing.assert_allclose(state["returns"].numpy(), g, rtol=1e-12)
    np.testing.assert_allclose(state["mean"].numpy(), [np.mean(history)], rtol=1e-12)
    np.testing.assert_allclose(state["var"].numpy(), [np.var(history)], rtol=1e-10)


def test_reward_normalization_state_lives_on_its_device():
    """``RewardNorm(device=...)`` keeps the carried returns and the statistics on that device
    (``meta``: the only device besides the CPU here)."""
    from puffer.ppo.normalize import RewardNorm

    norm = RewardNorm(3, 0.9, device="meta")
    tensors = [v for v in norm.state_dict().values() if isinstance(v, torch.Tensor)]
    assert len(tensors) >= 6 and {v.device.type for v in tensors} == {"meta"}
    assert norm.returns.shape == (3,)


def test_reward_normalization_state_round_trip():
    """A RewardNorm restored from ``state_dict`` continues exactly as the original."""
    from puffer.ppo.normalize import RewardNorm

    rng = np.random.default_rng(1)
    a = RewardNorm(2, 0.95)
    r = torch.tensor(rng.normal(0, 1, (2, 5)), dtype=torch.float32)
    d = torch.tensor([[False, True, False, False, False], [False] * 5])
    a(r, d)
    b = RewardNorm(2, 0.95)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.returns, a.returns) and b.returns.abs().sum() > 0
    torch.testing.assert_close(b(r, d), a(r, d), rtol=0, atol=0)


# -- the experience buffer ---------------------------------------------------------------------------


def experience_buffer(device="cpu"):
    """3 segments of 4 steps, uint8 observations (2,), float32 actions (2,), one float64 state."""
    from puffer.ppo.buffer import ExperienceBuffer

    state = (torch.zeros(1, 5, dtype=torch.float64),)
    return ExperienceBuffer(3, 4, (2,), np.uint8, (2,), torch.float32, state, device=device)


def buffer_tensors(buf):
    names = ("observations", "actions", "log_probs", "values", "rewards", "next_values")
    names += ("terminals", "truncations", "starts", "masks")
    return {name: getattr(buf, name) for name in names} | {"state": buf.initial_state[0]}


def test_experience_buffer_shapes_and_dtypes():
    """Defaults to the CPU; observations in the env's dtype, actions in the head's, with their
    shapes; the recurrent state in its template's dtype; every step counts until told otherwise."""
    from puffer.ppo.buffer import ExperienceBuffer

    buf = ExperienceBuffer(3, 4, (2,), np.uint8, (2,), torch.float32, None)
    assert buf.device == torch.device("cpu") and buf.initial_state == () and buf.size == 12
    got = {k: (v.dtype, tuple(v.shape)) for k, v in buffer_tensors(experience_buffer()).items()}
    f32, b = torch.float32, torch.bool
    assert got == {
        "observations": (torch.uint8, (3, 4, 2)),
        "actions": (f32, (3, 4, 2)),
        **{k: (f32, (3, 4)) for k in ("log_probs", "values", "rewards", "next_values")},
        **{k: (b, (3, 4)) for k in ("terminals", "truncations", "starts", "masks")},
        "state": (torch.float64, (3, 5)),
    }
    assert experience_buffer().masks.all() and experience_buffer().host_masks.all()


def test_experience_buffer_lives_on_its_device():
    """Every device tensor, the recurrent state included, is on the buffer's device (``meta``: the
    only device besides the CPU here); the host rows stay on the CPU."""
    buf = experience_buffer("meta")
    assert {k: v.device.type for k, v in buffer_tensors(buf).items()} == dict.fromkeys(
        buffer_tensors(buf), "meta"
    )
    assert buf.host_rewards.shape == (4, 3)  # numpy, time-major


def test_experience_buffer_minibatch_gathers_recurrent_fields_only_when_asked():
    """``minibatch`` gathers ``starts`` and the initial state of the chosen segments by default;
    with ``recurrent=False`` they are empty."""
    buf = experience_buffer()
    starts = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]], bool)
    buf.starts.copy_(torch.from_numpy(starts))
    buf.initial_state[0].copy_(torch.arange(15.0).reshape(3, 5))
    packed = buf.pack(torch.zeros(3, 4), torch.zeros(3, 4))
    idx = torch.tensor([2, 0])
    mb = buf.minibatch(idx, packed, None)
    assert mb.starts.tolist() == starts[[2, 0]].tolist()
    assert mb.initial_state[0].tolist() == [list(range(10, 15)), list(range(5))]
    ff = buf.minibatch(idx, packed, None, recurrent=False)
    assert ff.starts.shape == (0, 4) and ff.initial_state == ()
