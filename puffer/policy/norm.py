"""``RunningNorm``: running mean/variance observation normalization, saved in the state_dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["RunningNorm"]


class RunningNorm(nn.Module):
    """Running mean/variance of ``(N, dim)`` batches; ``forward`` standardizes and clips to ``+-clip``.

    A policy's ``obs_norm`` is the identity until ``enabled`` (a trainer turns it on and calls
    ``update``). The statistics and the flag live in the ``state_dict``, so a loaded policy
    normalizes observations as it did in training. ``refuse`` is a message: when given, turning
    the norm on raises ``ValueError(refuse)`` (an encoder that scales its input itself, e.g. a CNN
    on uint8 images, sets it).
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8, refuse: str | None = None):
        super().__init__()
        self._enabled = False
        self.refuse = refuse
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_shift", torch.zeros(dim))
        self.register_buffer("_scale", torch.ones(dim))

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value and self.refuse:
            raise ValueError(self.refuse)
        self._enabled = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._enabled:
            return x
        return ((x - self._shift) * self._scale).clamp_(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``(N, dim)`` into the statistics (Chan et al.'s parallel update)."""
        from puffer import dist

        # Under torch.distributed: the moments of every rank's batch, so the ranks stay identical.
        n, mean, var = dist.all_moments(x.reshape(-1, self.mean.shape[0]))
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)
        self._shift.copy_(self.mean)
        self._scale.copy_((self.var + self.eps).rsqrt())

    def get_extra_state(self) -> dict[str, Any]:
        return {"enabled": self._enabled}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.enabled = bool(state["enabled"])
