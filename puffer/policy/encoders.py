"""Encoders: observations ``(N, *obs_shape)`` in the space's own dtype -> features ``(N, F)``.

- ``MLPEncoder``: flattens and casts to float32, then ``Linear -> activation`` layers.
- ``NatureCNN``: the DQN CNN of Mnih et al. (2015) as CleanRL's ``ppo_atari.py`` uses it for PPO:
  32 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1 (ReLU), then a 512-unit linear layer (ReLU);
  uint8 images are scaled by 1/255 inside the encoder, so they stay uint8 up to here.
- ``MultiInputEncoder``: for ``Dict``/``Tuple`` observations (which arrive flattened, see
  ``puffer.spaces.flatten``): a CNN per image leaf and one MLP over the other leaves, outputs
  concatenated. Leaves are read as views of the flat tensor.

Every encoder has ``output_size`` (``F``) and ``normalizable`` (whether the policy's running
observation normalization may be applied in front of it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from puffer.policy.layers import layer_init, mlp
from puffer.spaces import Box, Dict, Space, Tuple

__all__ = ["MLPEncoder", "MultiInputEncoder", "NatureCNN", "image_layout", "is_image", "leaves"]


def is_image(space: Space) -> bool:
    """A uint8 ``Box`` of 2 (H, W) or 3 axes (C, H, W or H, W, C)."""
    return isinstance(space, Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


def image_layout(shape: Sequence[int]) -> tuple[int, int, int, bool]:
    """``(channels, height, width, channels_last)`` of an image shape: ``(H, W)`` is one channel;
    ``(H, W, C)`` when the last axis has at most 4 entries and the first more, else ``(C, H, W)``."""
    if len(shape) == 2:
        return 1, shape[0], shape[1], False
    if shape[-1] <= 4 < shape[0]:
        return shape[2], shape[0], shape[1], True
    return shape[0], shape[1], shape[2], False


class MLPEncoder(nn.Module):
    """Flat float32 observations through ``Linear -> activation`` layers of ``hidden_sizes``."""

    normalizable = True

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int], activation: str = "tanh"):
        super().__init__()
        sizes = [int(h) for h in hidden_sizes]
        self.obs_dim, self.output_size = obs_dim, sizes[-1]
        self.net = mlp([obs_dim, *sizes], activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(obs.shape[0], self.obs_dim)
        x = x if x.dtype == torch.float32 else x.float()
        for layer in self.net:  # .forward, not __call__: module-call overhead on the hot path
            x = layer.forward(x)
        return x


class NatureCNN(nn.Module):
    """Conv layers (``channels``, ``kernels``, ``strides``; ReLU), flatten, ``Linear(hidden_size)``
    and ReLU, on images of ``shape`` (see ``image_layout``). With ``scale`` (uint8 images) the
    input is multiplied by 1/255 on its way to float32; the caller's tensor is never modified.
    Raises ``ValueError`` when the image is too small for the kernels and strides."""

    normalizable = False

    def __init__(
        self,
        shape: Sequence[int],
        *,
        scale: bool = True,
        channels: Sequence[int] = (32, 64, 64),
        kernels: Sequence[int] = (8, 4, 3),
        strides: Sequence[int] = (4, 2, 1),
        hidden_size: int = 512,
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        c, h, w, self.channels_last = image_layout(self.shape)
        self.scale = scale
        layers: list[nn.Module] = []
        for out, k, s in zip(channels, kernels, strides, strict=True):
            if h < k or w < k:
                raise ValueError(
                    f"image observations of shape {self.shape} are too small for the CNN "
                    f"(kernels {list(kernels)}, strides {list(strides)}): use smaller kernels, e.g. "
                    "policy.cnn_kernels=[3,3] policy.cnn_strides=[1,1] policy.cnn_channels=[16,32]"
                )
            layers += [layer_init(nn.Conv2d(c, int(out), int(k), int(s))), nn.ReLU()]
            c, h, w = int(out), (h - k) // s + 1, (w - k) // s + 1
        layers += [nn.Flatten(), layer_init(nn.Linear(c * h * w, hidden_size)), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.output_size = int(hidden_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(obs.shape[0], *self.shape)
        if self.scale:
            x = x.to(torch.float32).mul_(1 / 255) if x.dtype != torch.float32 else x / 255
        elif x.dtype != torch.float32:
            x = x.float()
        if len(self.shape) == 2:
            x = x.unsqueeze(1)
        elif self.channels_last:
            x = x.permute(0, 3, 1, 2)  # NHWC memory: a channels_last tensor, no copy
        return self.net(x)


def leaves(space: Space, offset: int = 0, path: str = "") -> Iterator[tuple[str, Space, int]]:
    """``(path, leaf space, offset in the flat vector)`` of each leaf, in ``flatten``'s order."""
    if isinstance(space, Dict):
        for key, sub in space.spaces.items():
            yield from leaves(sub, offset, f"{path}.{key}" if path else str(key))
            offset += _size(sub)
    elif isinstance(space, Tuple):
        for i, sub in enumerate(space.spaces):
            yield from leaves(sub, offset, f"{path}[{i}]")
            offset += _size(sub)
    else:
        yield path, space, offset


def _size(space: Space) -> int:
    return sum(math.prod(leaf.shape) for _, leaf, _ in leaves(space))


class MultiInputEncoder(nn.Module):
    """``Dict``/``Tuple`` observations from their flat form ``(N, D)``: a ``NatureCNN`` (built
    with ``cnn``'s keyword arguments) per uint8 image leaf and an MLP of ``hidden_sizes`` over
    the other leaves (cast to float32 and concatenated); the outputs are concatenated.
    Raises ``ValueError`` when the space holds no image."""

    normalizable = False

    def __init__(
        self,
        space: Dict | Tuple,
        hidden_sizes: Sequence[int],
        activation: str,
        cnn: dict[str, Any],
    ):
        super().__init__()
        parts = list(leaves(space))
        images = [(p, s, o) for p, s, o in parts if is_image(s)]
        if not images:
            raise ValueError(
                f"policy encoder 'cnn' needs image observations (uint8 Box of 2 or 3 axes); "
                f"{space!r} has none: use policy=mlp (or lstm)"
            )
        self.image_slices = [(o, math.prod(s.shape)) for _, s, o in images]
        self.cnns = nn.ModuleList(NatureCNN(s.shape, **cnn) for _, s, _ in images)
        self.image_keys = [p for p, _, _ in images]
        self.vector_slices = [(o, math.prod(s.shape)) for _, s, o in parts if not is_image(s)]
        vector_dim = sum(size for _, size in self.vector_slices)
        sizes = [int(h) for h in hidden_sizes]
        self.mlp = mlp([vector_dim, *sizes], activation) if vector_dim else None
        self.output_size = sum(c.output_size for c in self.cnns) + (sizes[-1] if vector_dim else 0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        flat = obs.reshape(obs.shape[0], -1)
        out = [cnn(flat[:, o : o + n]) for cnn, (o, n) in zip(self.cnns, self.image_slices)]
        if self.mlp is not None:
            vec = torch.cat([flat[:, o : o + n] for o, n in self.vector_slices], -1)
            out.append(self.mlp(vec.float()))
        return out[0] if len(out) == 1 else torch.cat(out, -1)
