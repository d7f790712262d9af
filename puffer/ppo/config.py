"""``PPOConfig``: every PPO hyperparameter, with CleanRL/PufferLib names.

The same dataclass is the ``ppo`` Hydra schema (``puffer.config``) and the ``Trainer``'s config
when used without Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass

from puffer.checks import positive_int


@dataclass
class PPOConfig:
    """PPO hyperparameters. A batch is ``num_envs * horizon`` steps (``num_envs`` from the VecEnv)."""

    total_timesteps: int = 1_000_000
    learning_rate: float = 3e-4
    lr_schedule: str = "linear"  # "linear" | "cosine" | "constant": annealed to 0 over the run
    horizon: int = 32  # steps per segment (rollout length per env row; LSTM BPTT length)
    num_minibatches: int = 4  # minibatches per epoch, of whole segments; must divide num_envs
    update_epochs: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    vf_clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    target_kl: float | None = None  # early-stop the update's epochs when approx_kl exceeds this
    vtrace_rho_clip: float = 1.0
    vtrace_c_clip: float = 1.0
    refresh_advantages: bool = False  # recompute V-trace advantages per minibatch
    prio_alpha: float = 0.0  # prioritized segment sampling exponent; 0 = uniform
    prio_beta0: float = 1.0  # importance-weight exponent, annealed to 1
    optimizer: str = "adam"  # "adam" | "muon"
    adam_eps: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    normalize_observations: bool = False
    normalize_rewards: bool = False

    def validate(self, num_envs: int) -> None:
        """Raise ``ValueError`` naming the field and the fix for any inconsistent value.

        ``num_envs`` is the VecEnv's row count (the number of segments per rollout). Call it before
        starting env workers; ``Trainer`` calls it on construction.
        """
        _validate(self, num_envs)

    def advantage_coefs(self) -> dict[str, float]:
        """The keyword arguments of ``puffer.ppo.advantage.compute_puff_advantage``."""
        return dict(
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            rho_clip=self.vtrace_rho_clip,
            c_clip=self.vtrace_c_clip,
        )

    def loss_coefs(self) -> dict[str, float | None]:
        """The coefficients of ``puffer.ppo.loss.ppo_loss`` (``vf_clip_coef`` is None, no value
        clipping, when ``clip_vloss`` is off)."""
        return dict(
            clip_coef=self.clip_coef,
            vf_clip_coef=self.vf_clip_coef if self.clip_vloss else None,
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
        )


_SCHEDULES = ("linear", "cosine", "constant")
_OPTIMIZERS = ("adam", "muon")


def _validate(c: PPOConfig, num_envs: int) -> None:
    def fail(field: str, value: object, fix: str) -> ValueError:
        return ValueError(f"ppo.{field}={value!r}: {fix}")

    for name in ("total_timesteps", "horizon", "num_minibatches", "update_epochs"):
        positive_int(f"ppo.{name}", getattr(c, name))
    positive_int("num_envs", num_envs)
    if num_envs % c.num_minibatches:
        divisors = [d for d in range(1, num_envs + 1) if num_envs % d == 0]
        raise fail(
            "num_minibatches",
            c.num_minibatches,
            f"must divide num_envs={num_envs} (minibatches hold whole segments, one per env "
            f"row): use one of {divisors[:12]} or change vector.num_envs",
        )
    for name in ("learning_rate", "ent_coef", "vf_coef", "prio_alpha"):
        v = getattr(c, name)
        if not v >= 0:
            raise fail(name, v, "must be >= 0")
    for name in ("clip_coef", "vf_clip_coef", "max_grad_norm", "adam_eps"):
        v = getattr(c, name)
        if not v > 0:
            raise fail(name, v, "must be > 0")
    for name in ("vtrace_rho_clip", "vtrace_c_clip"):
        v = getattr(c, name)
        if not v > 0:
            raise fail(name, v, "must be > 0 (1.0 is standard V-trace)")
    for name in ("gamma", "gae_lambda", "prio_beta0"):
        v = getattr(c, name)
        if not 0 <= v <= 1:
            raise fail(name, v, "must be in [0, 1]")
    for name in ("adam_beta1", "adam_beta2"):
        v = getattr(c, name)
        if not 0 <= v < 1:
            raise fail(name, v, "must be in [0, 1)")
    if c.target_kl is not None and not c.target_kl > 0:
        raise fail("target_kl", c.target_kl, "must be > 0, or null to disable the KL early stop")
    if c.lr_schedule not in _SCHEDULES:
        raise fail("lr_schedule", c.lr_schedule, f"unknown schedule: use one of {list(_SCHEDULES)}")
    if c.optimizer not in _OPTIMIZERS:
        raise fail("optimizer", c.optimizer, f"unknown optimizer: use one of {list(_OPTIMIZERS)}")
