"""``PPOConfig``: every PPO hyperparameter, with CleanRL/PufferLib names.

The same dataclass is the ``ppo`` Hydra schema (``puffer.config``) and the ``Trainer``'s config
when used without Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass


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
