"""Building blocks shared by encoders, cores and heads: activations, ``layer_init``, ``mlp``."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Tanh", "layer_init", "mlp"]

# From this many elements on, Tanh computes through a sigmoid (below it the extra ops cost more).
SIGMOID_TANH_MIN = 8192


class _SigmoidTanh(torch.autograd.Function):
    """``tanh(x) = 2 sigmoid(2x) - 1``; the gradient is tanh's own, ``1 - y^2``."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        y = torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Tanh):
    """``nn.Tanh``, computed on large float32 CPU inputs as ``2 * sigmoid(2x) - 1`` (equal to
    ``torch.tanh`` within 2.4e-7; torch's CPU ``tanh`` costs 3-4 sigmoids here: 1024 x 128
    elements in 407 vs 130 us, one thread, measured). Small inputs, other devices and dtypes,
    tracing and export use ``torch.tanh``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.numel() < SIGMOID_TANH_MIN
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or torch.jit.is_tracing()
            or torch.compiler.is_compiling()
        ):
            return torch.tanh(x)
        return _SigmoidTanh.apply(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std`` and constant bias (the PPO implementation detail,
    Engstrom et al. 2020; CleanRL's ``layer_init``). Works for ``nn.Linear`` and ``nn.Conv2d``."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """``Linear -> activation`` layers through ``sizes`` (orthogonal init, gain sqrt 2)."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [layer_init(nn.Linear(fan_in, fan_out)), act()]
    return nn.Sequential(*layers)
