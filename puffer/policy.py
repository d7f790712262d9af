"""Policies: ``MLP`` and ``LSTM`` actor-critics with Discrete, MultiDiscrete and Box action heads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyConfig:
    """Network shape; the ``policy`` Hydra schema."""

    name: str = "mlp"  # "mlp" | "lstm"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # "tanh" | "relu" | "gelu"
    lstm_hidden_size: int = 64  # LSTM only: the recurrent state's size
