"""Which rollout segments each minibatch of an update trains on.

A minibatch is whole segments (one env row's ``horizon`` steps, see ``puffer.ppo.buffer``): every
epoch shuffles the segments into ``num_minibatches`` equal parts (CleanRL's ``b_inds`` over
segments), takes them all at once when there is one minibatch, or, with ``prio_alpha > 0``, draws
each minibatch by advantage magnitude with importance weights (``puffer.ppo.loss.
prioritized_segments``; ``beta`` anneals from ``prio_beta0`` to 1 over the run, as in PufferLib).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from puffer.ppo.config import PPOConfig
from puffer.ppo.loss import prioritized_segments

__all__ = ["minibatch_indices"]


def minibatch_indices(
    config: PPOConfig,
    advantages: torch.Tensor,
    progress: float,
    generator: torch.Generator,
    shuffle_generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Every epoch's minibatches as ``(segment indices (B,) int64 on the advantages' device, or
    None for all segments; importance weights (B, 1) or None)``.

    ``advantages`` ``(segments, horizon)``; ``progress`` in [0, 1] is the run's fraction done;
    ``generator`` (on the device) draws prioritized segments, ``shuffle_generator`` (CPU) shuffles.
    """
    c, segments = config, advantages.shape[0]
    size = segments // c.num_minibatches
    beta = c.prio_beta0 + (1 - c.prio_beta0) * min(progress, 1.0)
    for _ in range(c.update_epochs):
        if c.prio_alpha > 0:
            for _ in range(c.num_minibatches):
                yield prioritized_segments(advantages, size, c.prio_alpha, beta, generator)
        elif c.num_minibatches == 1:
            yield None, None
        else:
            order = torch.randperm(segments, generator=shuffle_generator).to(advantages.device)
            for m in range(c.num_minibatches):
                yield order[m * size : (m + 1) * size], None
