"""The ``device`` setting: which values it takes, the torch device a value means, how numpy
batches reach it (``HostToDevice``), and the ``torch_threads`` setting (``set_torch_threads``)."""

from __future__ import annotations

import re

import numpy as np
import torch

from puffer.checks import positive_int

__all__ = ["HostToDevice", "check_device", "resolve_device", "set_torch_threads"]


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


def set_torch_threads(torch_threads: int | None) -> None:
    """Set torch's intra-op threads for this process; None leaves torch's default. Raises
    ``ValueError`` unless ``torch_threads`` is a positive integer or None."""
    if positive_int("torch_threads", torch_threads, optional=True) is not None:
        torch.set_num_threads(int(torch_threads))


class HostToDevice:
    """Numpy batches as tensors on ``device``: zero-copy views on the CPU, ``non_blocking`` copies
    elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self._array: np.ndarray | None = None  # see reused
        self._view: torch.Tensor | None = None

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the device (on the CPU it shares ``array``'s memory)."""
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def reused(self, array: np.ndarray) -> torch.Tensor:
        """``self(array)`` for an array its producer rewrites in place and hands out again (a
        VecEnv's observations): on the CPU the view is made once and returned while the same
        array comes back."""
        if self.device.type != "cpu":
            return self(array)
        if array is not self._array:
            self._array, self._view = array, torch.from_numpy(array)
        return self._view
