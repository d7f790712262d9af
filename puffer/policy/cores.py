"""Recurrent cores: ``LSTMCore``, one ``nn.LSTM`` layer used for single steps and whole segments.

The state is ``(h, c)``, each ``(B, hidden_size)``. A row where ``starts`` is true begins a new
episode: its state is zeroed before that step, in rollouts (``step``) and training (``sequence``)
alike.

``sequence`` runs the fused ``nn.LSTM`` kernel (oneDNN on CPU, cuDNN on CUDA) instead of a Python
loop over time. Episode starts inside a segment cut it into runs; every run becomes its own
sequence with a zero initial state (the first run of a segment keeps the carried state), runs are
grouped by length into a few padded batches, and the outputs are scattered back. Padding sits at
the end of a run, so it never reaches a valid output (an LSTM is causal).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

__all__ = ["LSTMCore"]

State = tuple[torch.Tensor, ...]


class LSTMCore(nn.Module):
    """An LSTM of ``hidden_size`` units over features of ``input_size``; orthogonal weights
    (gain 1) and zero biases. The parameters live in ``cell`` (an ``nn.LSTMCell``: the cheapest
    call for one step); ``sequence`` runs them through ``nn.LSTM`` with ``torch.func.functional_call``.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.cell = nn.LSTMCell(self.input_size, self.hidden_size)
        for name, param in self.cell.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)
        # Not a submodule: its own parameters are never used (nor saved, nor trained).
        self.__dict__["_lstm"] = nn.LSTM(self.input_size, self.hidden_size, batch_first=True)

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return (zeros, zeros.clone())

    def step(
        self, x: torch.Tensor, state: State, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One step of ``B`` rows: ``x`` ``(B, F)`` -> ``(h (B, H), (h, c))``."""
        h, c = state
        if starts is not None:
            reset = starts.unsqueeze(-1)
            h, c = h.masked_fill(reset, 0.0), c.masked_fill(reset, 0.0)
        h, c = self.cell.forward(x, (h, c))
        return h, (h, c)

    def _lstm_call(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        """``nn.LSTM`` with ``cell``'s parameters over ``x`` ``(N, L, F)`` from ``(h0, c0)``."""
        cell = self.cell
        params = {
            "weight_ih_l0": cell.weight_ih,
            "weight_hh_l0": cell.weight_hh,
            "bias_ih_l0": cell.bias_ih,
            "bias_hh_l0": cell.bias_hh,
        }
        out, _ = functional_call(self._lstm, params, (x, (h0.unsqueeze(0), c0.unsqueeze(0))))
        return out

    def sequence(
        self, x: torch.Tensor, state: State, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``S`` segments of ``T`` steps: ``x`` ``(S, T, F)``, ``starts`` ``(S, T)`` bool ->
        outputs ``(S, T, H)``."""
        h, c = state
        if starts is not None:
            reset = starts[:, :1]
            h, c = h.masked_fill(reset, 0.0), c.masked_fill(reset, 0.0)
            if starts[:, 1:].any():
                return self._runs(x, (h, c), starts)
        return self._lstm_call(x, h, c)

    def _runs(self, x: torch.Tensor, state: State, starts: torch.Tensor) -> torch.Tensor:
        """``sequence`` where episodes start inside segments (see the module docstring)."""
        segments, horizon = starts.shape
        plan = _plan(starts.cpu().numpy())
        device = x.device
        flat = x.reshape(segments * horizon, -1)
        h0, c0 = (x.new_zeros(plan.runs, self.hidden_size) for _ in range(2))
        first = torch.from_numpy(plan.first).to(device)
        h0, c0 = h0.index_copy(0, first, state[0]), c0.index_copy(0, first, state[1])
        outputs = []
        for runs, length, src, dst in plan.calls:
            runs_, src_, dst_ = (torch.from_numpy(a).to(device) for a in (runs, src, dst))
            padded = x.new_zeros(len(runs) * length, flat.shape[-1]).index_copy(
                0, dst_, flat.index_select(0, src_)
            )
            out = self._lstm_call(padded.view(len(runs), length, -1), h0[runs_], c0[runs_])
            outputs.append(out.reshape(-1, self.hidden_size).index_select(0, dst_))
        order = torch.from_numpy(plan.inverse).to(device)
        return torch.cat(outputs).index_select(0, order).view(segments, horizon, -1)


class _Plan(NamedTuple):
    """How ``_runs`` lays out runs: ``runs`` in all; ``first`` ``(S,)`` the run that carries each
    segment's state; per LSTM call ``(run ids, padded length, src, dst)`` where ``src`` indexes
    the flat ``(S * T)`` steps and ``dst`` the flat ``(len(run ids) * length)`` padded steps;
    ``inverse`` puts the calls' concatenated outputs back in step order."""

    runs: int
    first: np.ndarray
    calls: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]]
    inverse: np.ndarray


# The cost of one nn.LSTM call (forward + backward) on N sequences of L steps, in units of one
# sequence-step: CALL_COST + L * (STEP_COST + N). Fitted on one CPU thread (oneDNN, hidden 128):
# about 0.5 ms per call and 20 us per step on top of 15 us per sequence-step.
CALL_COST, STEP_COST = 30.0, 1.0


def _plan(starts: np.ndarray) -> _Plan:
    """The runs between episode starts of ``starts`` ``(S, T)`` bool and their LSTM calls: runs
    are classed by length (powers of two), and neighbouring classes share a call where that is
    cheaper by the cost model above than a call each (``_merge``)."""
    segments, horizon = starts.shape
    new = starts.reshape(-1).copy()
    new[::horizon] = True
    run = np.cumsum(new) - 1  # the run of each step, row-major
    begins = np.flatnonzero(new)
    lengths = np.diff(begins, append=segments * horizon)
    pos = np.arange(segments * horizon) - begins[run]  # step within its run
    klass = np.ceil(np.log2(lengths)).astype(np.int64)
    group_of_class = np.zeros(klass.max() + 1, np.int64)
    for group, classes in enumerate(_merge(klass, lengths)):
        group_of_class[classes] = group
    group = group_of_class[klass]  # per run
    slot = np.zeros(len(lengths), np.int64)  # the run's row in its call
    calls, order = [], []
    for g in range(group.max() + 1):
        runs = np.flatnonzero(group == g)
        if len(runs) == 0:
            continue
        slot[runs] = np.arange(len(runs))
        length = int(lengths[runs].max())
        src = np.flatnonzero(group[run] == g)
        calls.append((runs, length, src, slot[run[src]] * length + pos[src]))
        order.append(src)
    inverse = np.empty(segments * horizon, np.int64)
    inverse[np.concatenate(order)] = np.arange(segments * horizon)
    return _Plan(len(lengths), run[::horizon], calls, inverse)


def _merge(klass: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Length classes grouped into calls: contiguous groups of the classes present, chosen by
    dynamic programming to minimize the summed cost model (``CALL_COST``, ``STEP_COST``)."""
    present = np.unique(klass).tolist()
    count = [int((klass == k).sum()) for k in present]
    longest = [int(lengths[klass == k].max()) for k in present]
    best, cut = [0.0], []  # best[j]: cost of the first j classes; cut[j - 1]: its last group start
    for j in range(1, len(present) + 1):
        options = [
            (best[i] + CALL_COST + longest[j - 1] * (STEP_COST + sum(count[i:j])), i)
            for i in range(j)
        ]
        cost, i = min(options)
        best.append(cost)
        cut.append(i)
    groups, j = [], len(present)
    while j:
        i = cut[j - 1]
        groups.append(present[i:j])
        j = i
    return groups[::-1]
