"""The ``device`` setting: which values it takes, and the torch device a value means."""

from __future__ import annotations

import re

import torch

__all__ = ["check_device", "resolve_device"]


def check_device(device: str) -> None:
    """Raise ``ValueError`` naming the fix unless ``device`` is auto, cpu, cuda or cuda:N and, for
    CUDA, this machine has it."""
    if device not in ("auto", "cpu", "cuda") and re.fullmatch(r"cuda:\d+", str(device)) is None:
        raise ValueError(f"device={device!r}: use auto, cpu, cuda or cuda:N.")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device}: CUDA is not available on this machine; use device=auto or cpu."
        )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
