"""Building blocks shared by encoders, cores and heads: activations, ``layer_init``, ``mlp``."""

from __future__ import annotations

import itertools
import math

from torch import nn

__all__ = ["ACTIVATIONS", "layer_init", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


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
