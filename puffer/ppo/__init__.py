"""PPO: ``PPOConfig``, the ``Trainer`` (rollout + update), ``train`` in one call, the
``ExperienceBuffer`` and the advantage functions."""

from puffer.device import resolve_device
from puffer.ppo.advantage import compute_gae, compute_puff_advantage, compute_vtrace
from puffer.ppo.buffer import ExperienceBuffer
from puffer.ppo.config import PPOConfig
from puffer.ppo.loss import NonFiniteLossError
from puffer.ppo.trainer import Trainer, train

__all__ = [
    "ExperienceBuffer",
    "NonFiniteLossError",
    "PPOConfig",
    "Trainer",
    "compute_gae",
    "compute_puff_advantage",
    "compute_vtrace",
    "resolve_device",
    "train",
]
