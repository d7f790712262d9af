"""``ExperienceBuffer``: one rollout, preallocated, shaped ``[segments, horizon]``.

A segment is one env row's ``horizon`` consecutive steps. Training draws minibatches of whole
segments, so a recurrent policy replays each segment from the state it had at the segment's start
(``initial_state``), resetting where ``starts`` marks a new episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ExperienceBuffer"]


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype (e.g. ``float32 -> torch.float32``)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class ExperienceBuffer:
    """Tensors on ``device``, each ``(segments, horizon, ...)``:

    - ``observations`` ``(*, *obs_shape)`` in the env's dtype; ``actions`` ``(*, *action_shape)`` in
      the action head's dtype (int64 indices or unclipped float32);
    - float32: ``log_probs``, ``values`` (``V(o_t)``), ``rewards``, ``next_values`` (``V`` of the
      observation after step ``t``; see ``puffer.ppo.advantage``);
    - bool: ``terminals``, ``truncations`` (the episode ended at ``t``), ``starts`` (``o_t`` begins
      an episode: a recurrent state is zeroed before step ``t``).

    ``initial_state`` is a tuple of ``(segments, ...)`` tensors: each segment's recurrent state
    before its first step (empty for feed-forward policies).
    """

    def __init__(
        self,
        segments: int,
        horizon: int,
        obs_shape: tuple[int, ...],
        obs_dtype: Any,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        state_template: tuple[torch.Tensor, ...] | None,
        device: torch.device | str = "cpu",
    ):
        self.segments, self.horizon = segments, horizon
        shape = (segments, horizon)

        def zeros(*extra: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(*shape, *extra, dtype=dtype, device=device)

        self.observations = zeros(*obs_shape, dtype=torch_dtype(obs_dtype))
        self.actions = zeros(*action_shape, dtype=action_dtype)
        self.log_probs = zeros()
        self.values = zeros()
        self.rewards = zeros()
        self.next_values = zeros()
        self.terminals = zeros(dtype=torch.bool)
        self.truncations = zeros(dtype=torch.bool)
        self.starts = zeros(dtype=torch.bool)
        self.initial_state: tuple[torch.Tensor, ...] = tuple(
            torch.zeros(segments, *s.shape[1:], dtype=s.dtype, device=device)
            for s in (state_template or ())
        )

    @property
    def size(self) -> int:
        """Steps held: ``segments * horizon``."""
        return self.segments * self.horizon
