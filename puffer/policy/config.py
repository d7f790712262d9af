"""``PolicyConfig``: the ``policy`` Hydra schema, validated once here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from puffer.policy.layers import ACTIVATIONS

__all__ = ["CORES", "ENCODERS", "PRESETS", "PolicyConfig"]

PRESETS: dict[str, tuple[str | None, str | None]] = {
    "mlp": ("mlp", "none"),
    "lstm": ("mlp", "lstm"),
    "cnn": ("cnn", "none"),
    "cnn_lstm": ("cnn", "lstm"),
    "custom": (None, None),
}
"""``policy.name`` -> its (encoder, core); ``policy.encoder``/``policy.core`` override either."""
ENCODERS = ("mlp", "cnn")
CORES = ("none", "lstm")


def _positive_ints(name: str, values: Any, example: str) -> list[int]:
    sizes = list(values)
    if not sizes or any(int(v) != v or v < 1 for v in sizes):
        raise ValueError(f"policy.{name}={sizes!r}: give one or more positive ints, e.g. {example}")
    return [int(v) for v in sizes]


@dataclass
class PolicyConfig:
    """Network shape; the ``policy`` Hydra schema.

    ``name`` picks a preset (``mlp``, ``lstm``, ``cnn`` (Nature-DQN CNN), ``cnn_lstm``, ``custom``);
    ``encoder`` (``mlp`` | ``cnn``) and ``core`` (``none`` | ``lstm``) override its parts. The
    ``cnn`` encoder on Dict/Tuple observations is the multi-input encoder (a CNN per uint8 image,
    an MLP of ``hidden_sizes`` over the rest). ``custom`` builds ``_target_`` (a dotted class path)
    with ``kwargs``, see docs/custom_policy.md.
    """

    name: str = "mlp"
    encoder: str | None = None  # None: the preset's
    core: str | None = None  # None: the preset's
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # MLP layers
    activation: str = "tanh"  # MLP activation: "tanh" | "relu" | "gelu"
    lstm_hidden_size: int = 64  # LSTM core: the recurrent state's size
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    cnn_kernels: list[int] = field(default_factory=lambda: [8, 4, 3])
    cnn_strides: list[int] = field(default_factory=lambda: [4, 2, 1])
    cnn_hidden_size: int = 512  # the linear layer after the convolutions
    init_log_std: float = 0.0  # float Box actions: the Gaussian's initial log standard deviation
    _target_: str | None = None  # custom: "my_pkg.nets.MyNet", see docs/custom_policy.md
    kwargs: dict[str, Any] = field(default_factory=dict)  # custom: constructor keyword arguments

    def parts(self) -> tuple[str, str]:
        """The ``(encoder, core)`` this config builds (``name``'s preset, overridden)."""
        encoder, core = PRESETS[self.name]
        return self.encoder or encoder or "mlp", self.core or core or "none"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix for an inconsistent value."""
        if self.name not in PRESETS:
            raise ValueError(f"policy.name={self.name!r} is unknown: use one of {sorted(PRESETS)}")
        if self.encoder is not None and self.encoder not in ENCODERS:
            raise ValueError(f"policy.encoder={self.encoder!r} is unknown: use one of {ENCODERS}")
        if self.core is not None and self.core not in CORES:
            raise ValueError(f"policy.core={self.core!r} is unknown: use one of {CORES}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"policy.activation={self.activation!r} is unknown: use one of {sorted(ACTIVATIONS)}"
            )
        _positive_ints("hidden_sizes", self.hidden_sizes, "[64, 64]")
        for name in ("lstm_hidden_size", "cnn_hidden_size"):
            _positive_ints(name, [getattr(self, name)], "128")
        cnn = [
            _positive_ints(n, getattr(self, n), e)
            for n, e in (
                ("cnn_channels", "[32,64,64]"),
                ("cnn_kernels", "[8,4,3]"),
                ("cnn_strides", "[4,2,1]"),
            )
        ]
        if len({len(c) for c in cnn}) != 1:
            raise ValueError(
                f"policy.cnn_channels={cnn[0]}, cnn_kernels={cnn[1]}, cnn_strides={cnn[2]}: give "
                "one entry per conv layer in each"
            )
        if self.name == "custom" and not self._target_:
            raise ValueError(
                "policy=custom needs policy._target_, the dotted path of your network class, "
                "e.g. policy._target_=my_pkg.nets.MyPolicy"
            )
        if self._target_ and self.name != "custom":
            raise ValueError(
                f"policy._target_={self._target_!r} is set but policy.name={self.name!r}: "
                "use policy=custom to build it"
            )
