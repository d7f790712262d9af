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

from typing import Any

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
        new = starts.clone()
        new[:, 0] = True
        run = new.reshape(-1).cumsum(0) - 1  # the run of each step, row-major
        t = torch.arange(horizon, device=x.device).expand(segments, horizon)
        pos = (t - torch.where(new, t, 0).cummax(1).values).reshape(-1)  # step within its run
        lengths = torch.bincount(run)
        first = run.view(segments, horizon)[:, 0]  # the run that carries each segment's state
        h0 = x.new_zeros(len(lengths), self.hidden_size).index_copy(0, first, state[0])
        c0 = x.new_zeros(len(lengths), self.hidden_size).index_copy(0, first, state[1])
        flat = x.reshape(segments * horizon, -1)
        outputs, order = [], []
        for runs, length in _buckets(lengths):
            steps = torch.isin(run, runs).nonzero().squeeze(-1)
            index = (torch.searchsorted(runs, run[steps]), pos[steps])  # (run in bucket, step)
            padded = x.new_zeros(len(runs), length, flat.shape[-1])
            padded.index_put_(index, flat[steps])
            outputs.append(self._lstm_call(padded, h0[runs], c0[runs])[index])
            order.append(steps)
        order_ = torch.cat(order)
        inverse = torch.empty_like(order_)
        inverse[order_] = torch.arange(len(order_), device=x.device)
        return torch.cat(outputs)[inverse].view(segments, horizon, self.hidden_size)


def _buckets(lengths: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Runs grouped by length into powers of two: ``[(run ids, padded length)]``; padding is
    less than half of each batch."""
    bucket = torch.ceil(torch.log2(lengths.double())).long()
    out = []
    for b in torch.unique(bucket).tolist():
        runs = (bucket == b).nonzero().squeeze(-1)
        out.append((runs, int(lengths[runs].max())))
    return out
