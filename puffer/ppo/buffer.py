"""``ExperienceBuffer``: one rollout, preallocated, shaped ``[segments, horizon]``, and its indexing.

A segment is one env row's ``horizon`` consecutive steps. Training draws minibatches of whole
segments, so a recurrent policy replays each segment from the state it had at the segment's start
(``initial_state``), resetting where ``starts`` marks a new episode.

Writes happen once per step and in place: the policy's outputs go straight into the device tensors
(``store_step``); what the env returns (rewards, ends, masks, starts) goes into time-major host
arrays (``host_*``, ``(horizon, segments)`` numpy, pinned on CUDA), one contiguous row per step, and
reaches the device tensors in one copy per rollout (``upload``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

if TYPE_CHECKING:
    from puffer.env import VecEnv
    from puffer.policy import Policy, State

__all__ = ["ExperienceBuffer", "Minibatch"]


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype (e.g. ``float32 -> torch.float32``)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class Minibatch(NamedTuple):
    """Whole segments gathered from the buffer, each ``(B, horizon, ...)``; ``initial_state`` is a
    tuple of ``(B, ...)`` (empty for feed-forward policies); ``mask`` is None when every step
    counts. ``advantages``/``returns`` are the update's, gathered alike; ``traces`` holds
    ``(rewards, next_values, terminals, truncations)`` when V-trace needs them, else None."""

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    starts: torch.Tensor
    initial_state: tuple[torch.Tensor, ...]
    mask: torch.Tensor | None
    traces: tuple[torch.Tensor, ...] | None  # (rewards, next_values, terminals, truncations)


class ExperienceBuffer:
    """Tensors on ``device``, each ``(segments, horizon, ...)``:

    - ``observations`` ``(*, *obs_shape)`` in the env's dtype; ``actions`` ``(*, *action_shape)`` in
      the action head's dtype (int64 indices or unclipped float32);
    - float32: ``log_probs``, ``values`` (``V(o_t)``), ``rewards``, ``next_values`` (``V`` of the
      observation after step ``t``; see ``puffer.ppo.advantage``);
    - bool: ``terminals``, ``truncations`` (the episode ended at ``t``), ``starts`` (``o_t`` begins
      an episode: a recurrent state is zeroed before step ``t``), ``masks`` (the step counts: its
      row held a live agent; see ``VecEnv.masks``).

    ``initial_state`` is a tuple of ``(segments, ...)`` tensors: each segment's recurrent state
    before its first step (empty for feed-forward policies).
    """

    HOST_FIELDS = ("rewards", "terminals", "truncations", "starts", "masks")

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
        self.device = torch.device(device)
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
        self.masks = torch.ones(shape, dtype=torch.bool, device=device)
        self.initial_state: tuple[torch.Tensor, ...] = tuple(
            torch.zeros(segments, *s.shape[1:], dtype=s.dtype, device=device)
            for s in (state_template or ())
        )
        self._obs_steps = list(self.observations.unbind(1))  # views, one per step
        self._steps: list[tuple[torch.Tensor, ...]] = []
        pin = self.device.type == "cuda"
        self._host = {
            name: torch.zeros(
                (horizon, segments), dtype=getattr(self, name).dtype, pin_memory=pin
            ).fill_(name == "masks")
            for name in self.HOST_FIELDS
        }
        for name, tensor in self._host.items():
            setattr(self, f"host_{name}", tensor.numpy())  # the same memory, written per step

    @classmethod
    def for_rollout(
        cls, vecenv: VecEnv, policy: Policy, horizon: int, device: torch.device
    ) -> ExperienceBuffer:
        """The buffer of one rollout of ``policy`` on ``vecenv``: a segment per env row, the
        env's observation shape and dtype, the action head's, the policy's recurrent state."""
        space, head = vecenv.single_observation_space, policy.head
        return cls(
            vecenv.num_envs,
            horizon,
            space.shape,
            space.dtype,
            head.action_shape,
            head.action_dtype,
            policy.initial_state(1, device),
            device,
        )

    @property
    def size(self) -> int:
        """Steps held: ``segments * horizon``."""
        return self.segments * self.horizon

    def start_segments(self, starts: np.ndarray, state: State) -> None:
        """Begin a synchronous rollout: ``starts`` ``(segments,)`` bool marks the rows whose first
        observation begins an episode; ``state`` (the policy state of every row, or None) is each
        segment's ``initial_state``."""
        self.host_starts[0] = starts
        for initial, row_state in zip(self.initial_state, state or ()):
            initial.copy_(row_state)

    def store_step(
        self,
        t: int,
        obs: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        """Step ``t`` of every segment: the observation is copied (the env reuses its memory);
        the policy's outputs, fresh tensors, are kept and stacked into place by ``finish``."""
        self._obs_steps[t].copy_(obs)
        self._steps.append((action, log_prob, value))

    def store_results(
        self, t: int, rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray
    ) -> None:
        """What the env returned for step ``t`` of every segment (``(segments,)`` each); where an
        episode ended, the observation of step ``t + 1`` starts the next one."""
        self.host_rewards[t] = rewards
        self.host_terminals[t] = terminals
        self.host_truncations[t] = truncations
        if t + 1 < self.horizon:
            np.logical_or(terminals, truncations, out=self.host_starts[t + 1])

    def store_rows(
        self,
        rows: torch.Tensor,
        steps: torch.Tensor,
        obs: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        """Write step ``steps[i]`` of segment ``rows[i]`` (asynchronous batches)."""
        at = (rows, steps)
        self.observations[at] = obs
        self.actions[at] = action
        self.log_probs[at] = log_prob
        self.values[at] = value

    def upload(self) -> None:
        """Copy the host rows of this rollout into the ``(segments, horizon)`` device tensors."""
        for name, host in self._host.items():
            getattr(self, name).copy_(host.T)  # blocking: the host rows are rewritten next rollout

    def finish(self, bootstrap: torch.Tensor) -> None:
        """End the rollout: ``upload`` the host rows and fill ``next_values``.

        ``next_values[:, t]`` becomes the value of the observation that followed step ``t``:
        ``values[:, t + 1]``, or ``bootstrap`` ``(segments,)`` after a segment's last step. Where an
        episode was truncated the value already written there (``V`` of its final observation) is
        kept.
        """
        self.upload()
        if self._steps:  # stored by store_step: one stack per tensor
            for dst, parts in zip((self.actions, self.log_probs, self.values), zip(*self._steps)):
                torch.stack(parts, 1, out=dst)
            self._steps.clear()
        following = torch.cat([self.values[:, 1:], bootstrap.unsqueeze(1)], 1)
        self.next_values.copy_(torch.where(self.truncations, self.next_values, following))

    def pack(self, advantages: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """The update's float fields in one ``(S, T, 4)`` tensor (log_probs, values, advantages,
        returns), so that ``minibatch`` gathers them with one index op."""
        return torch.stack([self.log_probs, self.values, advantages, returns], -1)

    def minibatch(
        self,
        idx: torch.Tensor | None,
        packed: torch.Tensor,
        mask: torch.Tensor | None,
        rewards: torch.Tensor | None = None,
        *,
        recurrent: bool = True,
    ) -> Minibatch:
        """Segments ``idx`` (int64 ``(B,)`` on the device; None: all) as a ``Minibatch``, with
        the float fields from ``packed`` (``pack(advantages, returns)``); with ``rewards`` (the
        update's, possibly normalized) it carries what V-trace needs too. Without ``recurrent``,
        ``starts`` and ``initial_state`` are left empty (a feed-forward policy ignores them)."""

        def take(x: torch.Tensor) -> torch.Tensor:
            return x if idx is None else x[idx]

        log_probs, values, advantages, returns = take(packed).unbind(-1)
        traces = None
        if rewards is not None:
            traces = tuple(map(take, (rewards, self.next_values, self.terminals, self.truncations)))
        return Minibatch(
            take(self.observations),
            take(self.actions),
            log_probs,
            values,
            advantages,
            returns,
            take(self.starts) if recurrent else self.starts[:0],
            tuple(map(take, self.initial_state)) if recurrent else (),
            None if mask is None else take(mask),
            traces,
        )
