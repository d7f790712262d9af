"""Trainer: config validation, metrics, PPO invariants, determinism, bit-exact resume, checkpoints,
NaN guard, truncation bootstrap and asynchronous batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import puffer.envs
import puffer.policy as P
import puffer.vector
from puffer import checkpoint
from puffer.checkpoint import CheckpointError
from puffer.envs.base import NativeVecEnv
from puffer.ppo import PPOConfig, Trainer, compute_gae, train
from puffer.ppo.loss import NonFiniteLossError, prioritized_segments
from puffer.spaces import Box, Discrete

pytestmark = pytest.mark.usefixtures("one_torch_thread")


METRIC_KEYS = {
    "global_step",
    "update",
    "sps",
    "learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "time/env",
    "time/forward",
    "time/overhead",
    "time/learn",
}


def small_config(**kw) -> PPOConfig:
    base = dict(total_timesteps=100_000, horizon=8, num_minibatches=2, update_epochs=2)
    return PPOConfig(**{**base, **kw})


def make_trainer(policy="mlp", num_envs=8, seed=0, env="cartpole", env_kw=None, **kw) -> Trainer:
    vecenv = puffer.envs.make(env, num_envs=num_envs, seed=seed, **(env_kw or {}))
    net = P.make(
        P.PolicyConfig(name=policy, hidden_sizes=[16], lstm_hidden_size=8), vecenv, seed=seed
    )
    return Trainer(small_config(**kw), vecenv, net, device="cpu", seed=seed)


def run(trainer: Trainer, updates: int) -> list[dict[str, float]]:
    out = []
    for _ in range(updates):
        trainer.rollout()
        out.append(trainer.update())
    return out


def losses(metrics: list[dict[str, float]]) -> list[dict[str, float]]:
    return [
        {k: v for k, v in m.items() if k.startswith(("losses/", "env/")) or k == "global_step"}
        for m in metrics
    ]


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("num_minibatches", 3, r"ppo.num_minibatches=3: must divide num_envs=8 .*\[1, 2, 4, 8\]"),
        ("horizon", 0, r"ppo.horizon=0: must be a positive integer"),
        ("learning_rate", -1e-3, r"ppo.learning_rate=-0.001: must be >= 0"),
        ("ent_coef", -0.1, r"ppo.ent_coef=-0.1: must be >= 0"),
        ("gamma", 1.5, r"ppo.gamma=1.5: must be in \[0, 1\]"),
        (
            "optimizer",
            "sgd",
            r"ppo.optimizer='sgd': unknown optimizer: use one of \['adam', 'muon'\]",
        ),
        ("lr_schedule", "exp", r"ppo.lr_schedule='exp': unknown schedule"),
        ("target_kl", 0.0, r"ppo.target_kl=0.0: must be > 0, or null"),
    ],
)
def test_config_errors_before_any_rollout(field, value, message):
    vecenv = puffer.envs.make("cartpole", num_envs=8, seed=0)
    policy = P.make(P.PolicyConfig(), vecenv)
    with pytest.raises(ValueError, match=message):
        PPOConfig(**{field: value}).validate(8)
    with pytest.raises(ValueError, match=message):
        Trainer(small_config(**{field: value}), vecenv, policy, device="cpu")
    # The env was never reset or stepped: validation happens first.
    with pytest.raises(RuntimeError, match="before reset"):
        vecenv.recv()


def test_default_config_is_valid():
    PPOConfig().validate(num_envs=8)


_POSITIVE = "must be a positive integer"
_IN_01 = "must be in [0, 1]"


@pytest.mark.parametrize(
    "field,value,fix",
    [(name, 0, _POSITIVE) for name in ("total_timesteps", "horizon", "update_epochs")]
    + [("num_minibatches", 0, _POSITIVE)]
    + [
        (name, v, "must be >= 0")
        for name in ("learning_rate", "ent_coef", "vf_coef", "prio_alpha")
        for v in (-1e-9, math.nan)
    ]
    + [
        (name, v, "must be > 0")
        for name in ("clip_coef", "vf_clip_coef", "max_grad_norm", "adam_eps")
        for v in (0.0, -1.0)
    ]
    + [
        (name, 0.0, "must be > 0 (1.0 is standard V-trace)")
        for name in ("vtrace_rho_clip", "vtrace_c_clip")
    ]
    + [(name, v, _IN_01) for name in ("gamma", "gae_lambda", "prio_beta0") for v in (-0.01, 1.01)]
    + [
        (name, v, "must be in [0, 1)")
        for name in ("adam_beta1", "adam_beta2")
        for v in (-0.01, 1.0)
    ]
    + [("target_kl", v, "must be > 0, or null to disable the KL early stop") for v in (0.0, -1.0)]
    + [
        ("lr_schedule", "exp", "unknown schedule: use one of ['linear', 'cosine', 'constant']"),
        ("optimizer", "sgd", "unknown optimizer: use one of ['adam', 'muon']"),
    ],
)
def test_config_error_message_in_full(field, value, fix):
    """Every field's check, just past its bound: ``ppo.<field>=<value>: <fix>``, the whole message."""
    with pytest.raises(ValueError) as err:
        PPOConfig(**{field: value}).validate(8)
    assert str(err.value) == f"ppo.{field}={value!r}: {fix}"


def test_config_num_minibatches_error_lists_the_first_twelve_divisors():
    """720 has 30 divisors; the message lists the first 12, in order."""
    with pytest.raises(ValueError) as err:
        PPOConfig(num_minibatches=7).validate(720)
    assert str(err.value) == (
        "ppo.num_minibatches=7: must divide num_envs=720 (minibatches hold whole segments, one per "
        "env row): use one of [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16] or change vector.num_envs"
    )
    with pytest.raises(ValueError) as err:
        PPOConfig(num_minibatches=2).validate(0)
    assert str(err.value) == "num_envs=0: must be a positive integer"


@pytest.mark.parametrize(
    "values",
    [
        {"learning_rate": 0.0, "ent_coef": 0.0, "vf_coef": 0.0, "prio_alpha": 0.0},
        {"clip_coef": 1e-9, "vf_clip_coef": 1e-9, "max_grad_norm": 1e-9, "adam_eps": 1e-12},
        {"vtrace_rho_clip": 1e-9, "vtrace_c_clip": 1e-9, "target_kl": 1e-9},
        {"gamma": 0.0, "gae_lambda": 0.0, "prio_beta0": 0.0, "adam_beta1": 0.0, "adam_beta2": 0.0},
        {
            "gamma": 1.0,
            "gae_lambda": 1.0,
            "prio_beta0": 1.0,
            "adam_beta1": 0.99,
            "adam_beta2": 0.9999,
        },
        {"lr_schedule": "cosine", "optimizer": "muon", "num_minibatches": 1, "horizon": 1},
        {"lr_schedule": "constant", "num_minibatches": 8, "update_epochs": 1, "total_timesteps": 1},
    ],
)
def test_config_bounds_are_valid(values):
    """Each bound that the checks allow (0 where ``>= 0``, 1 where ``<= 1``) passes."""
    PPOConfig(**values).validate(8)


# -- metrics and PPO invariants --------------------------------------------------------------------


def test_metrics_keys_and_episode_stats():
    trainer = make_trainer(num_envs=16, horizon=64)
    stats = trainer.rollout()
    assert stats["env/episode_length"] > 1 and stats["env/episode_return"] > 1
    metrics = trainer.update()
    assert set(metrics) >= METRIC_KEYS
    assert set(metrics) - METRIC_KEYS == {"env/episode_return", "env/episode_length"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["global_step"] == 16 * 64 == trainer.global_step
    assert metrics["update"] == 1 and metrics["learning_rate"] == pytest.approx(3e-4)
    assert all(math.isfinite(v) for v in metrics.values())
    # The time split covers the whole update: rollout (env + policy + the rest) and learning.
    parts = [metrics[f"time/{k}"] for k in ("env", "forward", "overhead", "learn")]
    assert all(p >= 0 for p in parts) and metrics["time/env"] > 0 and metrics["time/forward"] > 0
    assert sum(parts) == pytest.approx(16 * 64 / metrics["sps"], rel=1e-6)
    assert 0 < len(trainer.recent_episodes()) <= 100


def test_train_requires_a_rollout():
    trainer = make_trainer()
    with pytest.raises(RuntimeError, match="call rollout"):
        trainer.update()
    run(trainer, 1)
    with pytest.raises(RuntimeError, match="call rollout"):
        trainer.update()


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
@pytest.mark.parametrize("normalize", [False, True])
def test_first_minibatch_ratio_is_one(policy, normalize):
    """Training replays exactly what the rollout computed: approx_kl ~ 0 on the first minibatch,
    including an LSTM over its segments from their initial state, with normalized observations."""
    trainer = make_trainer(
        policy,
        num_minibatches=1,
        update_epochs=1,
        horizon=32,
        learning_rate=1e-2,
        normalize_observations=normalize,
        normalize_rewards=normalize,
    )
    for metrics in run(trainer, 3):
        assert abs(metrics["losses/approx_kl"]) < 1e-6
        assert metrics["losses/clipfrac"] == 0.0
    # A second minibatch sees the first's update: a real ratio.
    trainer.config.num_minibatches = 2
    trainer.config.update_epochs = 4
    assert run(trainer, 1)[0]["losses/approx_kl"] > 1e-6


def test_lr_schedules():
    for schedule, at_half in (("linear", 0.5), ("cosine", 0.5), ("constant", 1.0)):
        trainer = make_trainer(total_timesteps=8 * 8 * 4, lr_schedule=schedule, learning_rate=0.1)
        lrs = [m["learning_rate"] for m in run(trainer, 4)]
        assert lrs[0] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.1 * at_half)
        assert trainer.done


def adam_steps(trainer: Trainer) -> int:
    """How many steps the trainer's Adam took (torch.optim.Adam counts per parameter)."""
    return int(next(iter(trainer.optimizers[-1].state.values()))["step"])


def test_kl_early_stop_skips_updates():
    trainer = make_trainer(num_minibatches=4, update_epochs=4, target_kl=1e-9, learning_rate=1e-2)
    run(trainer, 1)
    assert 1 <= adam_steps(trainer) < 16  # stopped before the 16 steps of a full update
    full = make_trainer(num_minibatches=4, update_epochs=4)
    run(full, 1)
    assert adam_steps(full) == 16


@pytest.mark.parametrize(
    "options",
    [
        dict(optimizer="muon"),
        dict(prio_alpha=0.8, prio_beta0=0.5),
        dict(refresh_advantages=True, vtrace_rho_clip=1.0, vtrace_c_clip=1.0),
        dict(target_kl=0.5, clip_vloss=False, norm_adv=False),
    ],
)
def test_options_train(options):
    trainer = make_trainer(**options)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics = run(trainer, 2)[-1]
    assert all(math.isfinite(metrics[k]) for k in METRIC_KEYS)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    if options.get("optimizer") == "muon":
        assert [type(o).__name__ for o in trainer.optimizers] == ["Muon", "Adam"]


def test_prioritized_sampling():
    advantages = torch.zeros(8, 8)
    idx, weights = prioritized_segments(
        advantages, 8, alpha=1.0, beta=0.5
    )  # all zero: still drawable
    assert sorted(idx.tolist()) == list(range(8)) and torch.allclose(weights, torch.ones(8, 1))
    advantages[3] = 100.0  # one segment dominates: drawn first, weighted least
    counts = torch.zeros(8)
    for _ in range(50):
        idx, weights = prioritized_segments(advantages, 2, alpha=1.0, beta=1.0)
        counts[idx] += 1
        assert weights[idx.tolist().index(3)].item() == pytest.approx(weights.min().item())
    assert counts[3] == 50


def test_losses_follow_the_ppo_formulas():
    """The update's losses against CleanRL's formulas computed here: the clipped surrogate on
    advantages normalized per minibatch, the clipped value loss, entropy, approx_kl, clipfrac.
    The weights are moved off the rollout's (so ratios and values differ) and lr=0 keeps them
    fixed, so that every minibatch is scored by the same network."""
    trainer = make_trainer(
        num_envs=8,
        horizon=16,
        num_minibatches=2,
        update_epochs=1,
        learning_rate=0.0,
        clip_coef=0.1,
        vf_clip_coef=0.05,
        gamma=0.9,
        gae_lambda=0.8,
    )
    trainer.rollout()
    buf, policy, c = trainer.buffer, trainer.policy, trainer.config
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
        params, new_values = policy.forward_sequence(buf.observations)
        log_prob, entropy = policy.head.log_prob_entropy(params, buf.actions)
    adv = compute_gae(
        buf.rewards,
        buf.values,
        buf.next_values,
        buf.terminals,
        buf.truncations,
        gamma=c.gamma,
        gae_lambda=c.gae_lambda,
    )
    ret = adv + buf.values
    shuffle = torch.Generator()
    shuffle.set_state(trainer.shuffle_generator.get_state())
    order = torch.randperm(8, generator=shuffle)
    expected = {k: 0.0 for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")}
    clipped_values = 0
    for mb in (order[:4], order[4:]):
        a = adv[mb]
        a = (a - a.mean()) / (a.std() + 1e-8)
        log_ratio = log_prob[mb] - buf.log_probs[mb]
        ratio = log_ratio.exp()
        pg = torch.max(-a * ratio, -a * ratio.clamp(0.9, 1.1)).mean()
        v, old, r = new_values[mb], buf.values[mb], ret[mb]
        v_clip = old + (v - old).clamp(-0.05, 0.05)
        unclipped, clipped = (v - r).square(), (v_clip - r).square()
        clipped_values += int((clipped > unclipped).sum())
        expected["policy_loss"] += pg.item() / 2
        expected["value_loss"] += 0.5 * torch.max(unclipped, clipped).mean().item() / 2
        expected["entropy"] += entropy[mb].mean().item() / 2
        expected["approx_kl"] += ((ratio - 1) - log_ratio).mean().item() / 2
        expected["clipfrac"] += ((ratio - 1).abs() > 0.1).float().mean().item() / 2
    metrics = trainer.update()
    for key, value in expected.items():
        assert metrics[f"losses/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # The clipped branches were exercised: some ratios and some values were clipped.
    assert 0 < expected["clipfrac"] < 1 and clipped_values > 0


def test_box_actions_train():
    trainer = make_trainer(env_kw={"continuous": True})
    metrics = run(trainer, 2)[-1]
    assert math.isfinite(metrics["losses/policy_loss"])
    assert trainer.buffer.actions.dtype == torch.float32
    assert trainer.buffer.actions.abs().max() > 1.0  # unclipped in the buffer; the env gets [-1, 1]


# -- determinism and resume ------------------------------------------------------------------------


def test_same_seed_same_run():
    a, b = make_trainer("lstm", seed=3), make_trainer("lstm", seed=3)
    assert losses(run(a, 3)) == losses(run(b, 3))
    c = make_trainer("lstm", seed=4)
    assert losses(run(c, 3)) != losses(run(a, 3))


@pytest.mark.filterwarnings("error")  # same machine, same config: no "not bit-exact" warning
@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_resume_is_bit_exact(policy, tmp_path):
    options = dict(normalize_observations=True, normalize_rewards=True, learning_rate=1e-2)
    straight = make_trainer(policy, seed=1, **options)
    full = run(straight, 5)

    first = make_trainer(policy, seed=1, **options)
    head = run(first, 2)
    path = first.save(tmp_path / "ckpt.pt")
    first.close()
    resumed = make_trainer(policy, seed=99, **options)  # a different seed: the checkpoint rules
    resumed.load(path)
    assert resumed.global_step == first.global_step and resumed.update_count == 2
    tail = run(resumed, 3)
    assert losses(head + tail) == losses(full)
    for x, y in zip(straight.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(x, y)
    assert torch.equal(straight.policy.obs_norm.mean, resumed.policy.obs_norm.mean)
    assert straight.recent_episodes() == resumed.recent_episodes()


@pytest.mark.parametrize("backend", ["native", "serial"])
def test_resume_before_the_first_rollout(backend, tmp_path):
    """A checkpoint taken right after construction (e.g. a run stopped before its first update)
    saves the env's state and resumes bit-exactly; it used to leave the env mid-reset, so the
    resumed trainer failed ("recv() called without send()", or state() refused to run)."""

    def make(seed: int) -> Trainer:
        if backend == "native":
            vecenv = puffer.envs.make("cartpole", num_envs=8, seed=seed)
        else:
            vecenv = puffer.vector.make("cartpole", num_envs=8, num_workers=2, seed=seed)
        config = P.PolicyConfig(name="lstm", hidden_sizes=[16], lstm_hidden_size=8)
        net = P.make(config, vecenv, seed=seed)
        return Trainer(small_config(), vecenv, net, device="cpu", seed=seed)

    straight = make(1)
    full = run(straight, 2)
    first = make(1)
    path = first.save(tmp_path / "start.pt")
    assert checkpoint.load(path)["trainer"]["env"] is not None
    first.close()
    resumed = make(99)
    resumed.load(path)
    assert losses(run(resumed, 2)) == losses(full)
    for trainer in (straight, resumed):
        trainer.close()


def _serial_trainer(num_workers: int, seed: int = 1) -> Trainer:
    vecenv = puffer.vector.make("cartpole", num_envs=8, num_workers=num_workers, seed=seed)
    net = P.make(P.PolicyConfig(name="lstm", hidden_sizes=[16], lstm_hidden_size=8), vecenv, seed=1)
    return Trainer(small_config(), vecenv, net, device="cpu", seed=seed)


def test_resume_on_another_worker_layout_starts_fresh_episodes_with_one_warning(tmp_path):
    """A run moved to a machine with another CPU count gets another num_workers: the env state
    cannot be restored, so the learned state is and the episodes start afresh, with one warning."""
    first = _serial_trainer(num_workers=2)
    run(first, 2)
    path = first.save(tmp_path / "two_workers.pt")
    weights = [p.detach().clone() for p in first.policy.parameters()]
    first.close()
    moved = _serial_trainer(num_workers=1, seed=5)
    with pytest.warns(UserWarning) as record:
        moved.load(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "num_workers 2 -> 1" in message and "not bit-exact" in message
    assert moved.global_step == 2 * 8 * 8 and moved.update_count == 2
    assert all(torch.equal(a, b) for a, b in zip(weights, moved.policy.parameters()))
    metrics = run(moved, 1)[0]
    assert metrics["update"] == 3 and math.isfinite(metrics["losses/policy_loss"])
    moved.close()


def test_resume_from_a_cuda_checkpoint_on_the_cpu(tmp_path):
    """As ../shared/cases/resume-cuda-checkpoint-on-cpu.py: a CUDA generator state (16 bytes: seed
    and offset) cannot go into a CPU generator. The run resumes with the sampling stream reseeded
    and one warning; weights, optimizer and counters are restored."""
    first = make_trainer("lstm", seed=1)
    run(first, 2)
    path = first.save(tmp_path / "cuda.pt")
    ckpt = checkpoint.load(path)
    cuda_state = np.array([0, 16384], np.uint64).view(np.uint8).copy()
    ckpt["trainer"]["rng"]["generator"] = torch.from_numpy(cuda_state)
    ckpt["trainer"]["device"] = ckpt["meta"]["device"] = "cuda"
    checkpoint.save(ckpt, path)
    resumed = make_trainer("lstm", seed=1)
    with pytest.warns(UserWarning) as record:
        resumed.load(path)
    assert len(record) == 1
    assert "device cuda -> cpu" in str(record[0].message)
    assert "not bit-exact" in str(record[0].message)
    assert resumed.update_count == 2 and resumed.global_step == first.global_step
    for a, b in zip(first.optimizers[0].state.values(), resumed.optimizers[0].state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert math.isfinite(run(resumed, 1)[0]["losses/value_loss"])


def test_a_checkpoint_that_does_not_fit_raises_checkpoint_error_naming_the_file(tmp_path):
    path = make_trainer("mlp").save(tmp_path / "broken.pt")
    ckpt = checkpoint.load(path)
    del ckpt["trainer"]["rng"]
    checkpoint.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"broken\.pt does not fit.*'rng'"):
        make_trainer("mlp").load(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = make_trainer("mlp").save(tmp_path / "mlp.pt")
    with pytest.raises(CheckpointError, match=r"mlp\.pt.*LSTM|mlp\.pt.*MLP"):
        make_trainer("lstm").load(path)
    wider = puffer.envs.make("cartpole", num_envs=8, seed=0)
    net = P.make(P.PolicyConfig(hidden_sizes=[32]), wider)
    trainer = Trainer(small_config(), wider, net, device="cpu")
    with pytest.raises(CheckpointError, match=r"mlp\.pt does not fit.*size mismatch"):
        trainer.load(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        trainer.load(tmp_path / "junk.pt")


# -- failures --------------------------------------------------------------------------------------


class NaNReward(NativeVecEnv):
    """Rewards turn NaN after ``bad_after`` steps."""

    def __init__(self, num_envs: int = 1, seed: int | None = None, bad_after: int = 0):
        super().__init__(Box.uniform([2], -1.0, 1.0), Discrete(2), num_envs, seed=seed)
        self.bad_after, self.t = bad_after, 0

    def _reset_rows(self, rows):
        self.observations[rows] = self.rng.uniform(-1, 1, size=(len(rows), 2))

    def _simulate(self):
        self.t += 1
        self.observations[:] = self.rng.uniform(-1, 1, size=self.observations.shape)
        self.rewards[:] = np.nan if self.t > self.bad_after else 1.0
        self.terminals[:] = False
        self.truncations[:] = False


def test_nan_loss_raises_and_keeps_weights():
    env = NaNReward(num_envs=8, seed=0, bad_after=8)
    policy = P.MLP(env.single_observation_space, env.single_action_space, [8])
    trainer = Trainer(small_config(), env, policy, device="cpu")
    run(trainer, 1)  # 8 clean steps
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.rollout()
    with pytest.raises(NonFiniteLossError, match=r"PPO loss is nan at update 2 .*learning_rate"):
        trainer.update()
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


# -- rollout bookkeeping ---------------------------------------------------------------------------


class Counter(NativeVecEnv):
    """Observation ``[t, k]``: the row's step count ``t`` and the step ``k`` within its episode.
    Episodes are truncated after ``limit`` steps; the reward is the new ``t``."""

    def __init__(self, num_envs: int = 1, seed: int | None = None, limit: int = 5):
        super().__init__(Box.uniform([2], 0.0, 1e6), Discrete(2), num_envs, seed=seed)
        self.limit = limit
        self.t = np.zeros(self.num_envs, np.float32)

    def _reset_rows(self, rows):
        self.observations[rows, 0] = self.t[rows]
        self.observations[rows, 1] = 0

    def _simulate(self):
        self.t += 1
        self.observations[:, 0] = self.t
        self.observations[:, 1] += 1
        self.rewards[:] = self.t
        self.terminals[:] = False
        np.greater_equal(self.observations[:, 1], self.limit, out=self.truncations)


class Groups:
    """Asynchronous batches over two ``Counter`` halves, returned in the order ``schedule``
    (cycled): the EnvPool-style ``recv``/``send`` contract with ``env_ids``."""

    def __init__(self, half: int, schedule: list[int]):
        self.envs = [Counter(half), Counter(half)]
        self.half, self.num_envs, self.batch_size = half, 2 * half, half
        self.single_observation_space = self.envs[0].single_observation_space
        self.single_action_space = self.envs[0].single_action_space
        self.schedule, self.i, self.current = schedule, 0, None

    @property
    def final_observations(self):
        return np.concatenate([e.final_observations for e in self.envs])

    def async_reset(self, seed=None):
        for e in self.envs:
            e.async_reset(seed)

    def recv(self):
        g = self.schedule[self.i % len(self.schedule)]
        self.i += 1
        self.current = g
        obs, rew, term, trunc, infos, ids = self.envs[g].recv()
        return obs, rew, term, trunc, infos, ids + g * self.half

    def send(self, actions):
        self.envs[self.current].send(actions)

    def state(self):
        raise NotImplementedError

    def close(self):
        pass


@pytest.mark.parametrize("schedule", [[0, 1], [0, 0, 1]])
def test_async_batches_fill_consistent_segments(schedule):
    env = Groups(half=4, schedule=schedule)
    policy = P.MLP(env.single_observation_space, env.single_action_space, [8])
    trainer = Trainer(small_config(horizon=6, num_minibatches=1), env, policy, device="cpu")
    for _ in range(3):
        trainer.rollout()
        buf = trainer.buffer
        obs = buf.observations
        # Each segment holds consecutive steps of one row.
        assert torch.equal(obs[:, 1:, 0] - obs[:, :-1, 0], torch.ones(8, 5))
        assert torch.equal(buf.rewards, obs[:, :, 0] + 1)
        assert torch.equal(buf.truncations, obs[:, :, 1] + 1 == 5)
        assert torch.equal(buf.starts, obs[:, :, 1] == 0)
        # next_values: V of the next observation, the true final one where truncated.
        after = torch.stack([obs[:, :, 0] + 1, obs[:, :, 1] + 1], -1)
        with torch.no_grad():
            _, expected, _ = policy(after.reshape(-1, 2))
        torch.testing.assert_close(buf.next_values, expected.reshape(8, 6))
        with torch.no_grad():
            _, values, _ = policy(obs.reshape(-1, 2))
        torch.testing.assert_close(buf.values, values.reshape(8, 6))
        trainer.update()
    assert trainer.global_step >= 3 * 8 * 6


@pytest.mark.parametrize("schedule", [[0, 1], [1, 0, 0]])
def test_async_batches_carry_lstm_state_per_row(schedule):
    """An LSTM on asynchronous batches: each row's state follows its env_ids, is zeroed where an
    episode starts, training replays the rollout exactly from the segments' initial states, and a
    truncated step bootstraps from V(final observation) continuing that episode's state."""
    env = Groups(half=4, schedule=schedule)
    policy = P.LSTM(env.single_observation_space, env.single_action_space, [8], lstm_hidden_size=8)
    trainer = Trainer(small_config(horizon=6, num_minibatches=1), env, policy, device="cpu")
    for rollout in range(3):
        trainer.rollout()
        buf = trainer.buffer
        assert buf.starts.any() and buf.truncations.any()
        if rollout:
            assert buf.initial_state[0].abs().sum() > 0  # carried over, not a fresh zero state
        with torch.no_grad():
            params, values = policy.forward_sequence(
                buf.observations, buf.initial_state, buf.starts
            )
            log_probs, _ = policy.head.log_prob_entropy(params, buf.actions)
            torch.testing.assert_close(values, buf.values)
            torch.testing.assert_close(log_probs, buf.log_probs)
            _, fresh, _ = policy(buf.observations[buf.starts])  # from a zero state
            torch.testing.assert_close(buf.values[buf.starts], fresh)
            state, after = buf.initial_state, []
            for t in range(6):
                _, _, state = policy(buf.observations[:, t], state, buf.starts[:, t])
                after.append(state)
            for s, t in buf.truncations.nonzero().tolist():
                final = buf.observations[s, t] + 1  # Counter: [t + 1, k + 1]
                _, value, _ = policy(final[None], tuple(x[s : s + 1] for x in after[t]))
                torch.testing.assert_close(buf.next_values[s, t], value[0])
        trainer.update()


# -- masks -----------------------------------------------------------------------------------------


class HalfDead(NativeVecEnv):
    """Rows ``0..n/2-1`` are live agents (``masks`` True); the other half are inactive rows whose
    observations and rewards are garbage (``scale`` times random), as a multi-agent env's empty
    slots may hold. Episodes of every row are truncated after 8 steps."""

    def __init__(self, num_envs: int = 8, seed: int | None = None, scale: float = 0.0):
        super().__init__(Box.uniform([3], -1e6, 1e6), Discrete(3), num_envs, seed=seed)
        if getattr(self, "masks", None) is None:  # before the env side gains Buffers.masks
            self.masks = np.ones(num_envs, bool)
        self.masks[num_envs // 2 :] = False
        self.scale, self.live = scale, self.masks.copy()
        self.live_rng = np.random.default_rng(seed)  # the live rows' stream, same for any scale

    def _reset_rows(self, rows):
        self.observations[rows] = 0.0
        self.t = getattr(self, "t", np.zeros(self.num_envs))
        self.t[rows] = 0

    def _simulate(self):
        self.t += 1
        live, dead = self.live, ~self.live
        self.observations[live] = self.live_rng.normal(size=(live.sum(), 3))
        self.rewards[live] = (self.actions[live] == 1) + self.observations[live, 0]
        self.observations[dead] = self.scale * self.rng.normal(size=(dead.sum(), 3))
        self.rewards[dead] = self.scale * self.rng.normal(size=dead.sum())
        self.terminals[:] = False
        np.greater_equal(self.t, 8, out=self.truncations)


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_masked_rows_count_in_no_loss_and_no_advantage_statistic(policy):
    """Two runs whose inactive rows differ (zeros vs. values of 1e4) learn exactly alike: the
    masked rows are excluded from the losses, the advantage normalization and the explained
    variance (with masks ignored, the 1e4 rewards would swamp every loss)."""

    def trained(scale: float) -> tuple[list[dict[str, float]], Trainer]:
        env = HalfDead(num_envs=8, seed=3, scale=scale)
        config = P.PolicyConfig(name=policy, hidden_sizes=[16], lstm_hidden_size=8)
        net = P.make(config, env, seed=3)
        trainer = Trainer(small_config(horizon=16), env, net, device="cpu", seed=3)
        return run(trainer, 3), trainer

    quiet, a = trained(0.0)
    loud, b = trained(1e4)
    assert torch.equal(
        a.buffer.masks, torch.tensor([True] * 4 + [False] * 4)[:, None].expand(8, 16)
    )
    keys = [f"losses/{k}" for k in ("policy_loss", "value_loss", "entropy", "approx_kl")]
    for m, n in zip(quiet, loud):
        for key in [*keys, "losses/explained_variance"]:
            assert m[key] == pytest.approx(n[key], rel=1e-5, abs=1e-7), key
        assert abs(m["losses/value_loss"]) < 100  # the 1e4 rewards would give ~1e8
    for x, y in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_masked_mean_and_advantage_normalization_use_only_masked_entries():
    from puffer.ppo.loss import masked_mean, normalize_advantages

    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert masked_mean(x, mask) == pytest.approx(2.5)
    live = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (live - live.mean()) / (live.std() + 1e-8)
    torch.testing.assert_close(normalize_advantages(x, mask)[mask], expected)


# -- distributed ---------------------------------------------------------------------------------


def _distributed_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One rank of a 2-process gloo group: its own env seed (different data), the same initial
    weights; 3 updates; its parameters saved to ``out_dir/rank<rank>.pt``."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    try:
        vecenv = puffer.envs.make("cartpole", num_envs=8, seed=100 + rank)
        net = P.make(P.PolicyConfig(hidden_sizes=[16]), vecenv, seed=0)
        trainer = Trainer(small_config(), vecenv, net, device="cpu", seed=100 + rank)
        run(trainer, 3)
        torch.save([p.detach() for p in net.parameters()], f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_keep_bitwise_identical_parameters(tmp_path):
    """With torch.distributed initialized the trainer averages gradients across ranks (one
    all-reduce of one flat buffer per minibatch): ranks that see different data stay identical."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    # Without the all-reduce, rank 1 alone would have moved elsewhere.
    vecenv = puffer.envs.make("cartpole", num_envs=8, seed=101)
    alone = P.make(P.PolicyConfig(hidden_sizes=[16]), vecenv, seed=0)
    run(Trainer(small_config(), vecenv, alone, device="cpu", seed=101), 3)
    assert any(not torch.equal(a, b) for a, b in zip(rank1, alone.parameters()))


# -- one call --------------------------------------------------------------------------------------


def test_train_one_call_with_callback():
    vecenv = puffer.envs.make("cartpole", num_envs=8, seed=0)
    policy = P.make(P.PolicyConfig(hidden_sizes=[16]), vecenv)
    seen = []
    trainer = train(
        small_config(total_timesteps=8 * 8 * 3), vecenv, policy, device="cpu", callback=seen.append
    )
    assert trainer.done and len(seen) == 3 and seen[-1]["update"] == 3
    stopped = train(
        small_config(), vecenv, policy, device="cpu", callback=lambda m: m["update"] >= 2
    )
    assert stopped.update_count == 2 and not stopped.done
    stopped.close()


def test_minibatch_indices_cover_every_segment_once_per_epoch():
    from puffer.ppo.sampling import minibatch_indices

    config = PPOConfig(num_minibatches=4, update_epochs=3)
    advantages = torch.randn(8, 5)
    g, shuffle = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batches = list(minibatch_indices(config, advantages, 0.0, g, shuffle))
    assert len(batches) == 12 and all(w is None and len(i) == 2 for i, w in batches)
    for epoch in range(3):
        seen = torch.cat([i for i, _ in batches[epoch * 4 : epoch * 4 + 4]])
        assert sorted(seen.tolist()) == list(range(8))
    one = PPOConfig(num_minibatches=1, update_epochs=2)
    assert list(minibatch_indices(one, advantages, 0.0, g, shuffle)) == [(None, None)] * 2
    prio = PPOConfig(num_minibatches=2, update_epochs=1, prio_alpha=1.0, prio_beta0=0.0)
    (idx, w), _ = minibatch_indices(prio, advantages, 1.0, g, shuffle)
    assert idx.shape == (4,) and w.shape == (4, 1) and w.max().item() == 1.0
