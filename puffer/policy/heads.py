"""Action heads: distribution parameters from features, sampling, log-probabilities, entropies.

Every head maps features ``(..., hidden)`` to parameters ``(..., P)`` (``forward``) and offers
``sample(params, generator) -> (action, log_prob)`` (one fused call: the log-probability comes from
the same intermediate values as the sample), ``mode(params)``, ``log_prob_entropy(params, action)``
(the training path), ``to_env(action) -> np.ndarray`` and the attributes ``action_shape`` (of one
row) and ``action_dtype`` (how actions are stored, e.g. in the rollout buffer).

| space | head | params | stored action |
|---|---|---|---|
| ``Discrete(n, start)`` | ``CategoricalHead`` | ``n`` logits | ``()`` int64 index |
| ``MultiDiscrete(nvec)`` | ``MultiCategoricalHead`` | ``sum(nvec)`` logits | ``(k,)`` int64 |
| integer ``Box`` (finite bounds) | ``MultiCategoricalHead`` | ``sum(high - low + 1)`` | ``(d,)`` int64 |
| ``MultiBinary(shape)`` | ``BernoulliHead`` | ``d`` logits | ``(d,)`` int64 0/1 |
| float ``Box`` | ``GaussianHead`` | ``d`` means (+ a learned log-std) | ``(d,)`` float32 |
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from puffer.policy.layers import layer_init
from puffer.spaces import Box, Discrete, MultiBinary, MultiDiscrete, Space

__all__ = [
    "MAX_CATEGORIES",
    "BernoulliHead",
    "CategoricalHead",
    "GaussianHead",
    "MultiCategoricalHead",
    "make_head",
]

MAX_CATEGORIES = 1024
"""The most values one element of an integer ``Box`` action may take (one logit each)."""

_PAD_LOGIT = -1e9  # pads ragged MultiDiscrete logits: exp() underflows to exactly 0


def _sample_index(logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of log-probabilities ``(..., n)``, as ``(..., 1)`` int64.

    The exponential race, Gumbel-max's form without logarithms: ``argmax_i p_i / E_i`` with
    ``E_i ~ Exp(1)`` i.i.d. picks ``i`` with probability ``p_i`` (``-log E_i`` is Gumbel). One
    random draw and four ops, on any batch shape; the index is always in range. (torch's CPU
    ``exponential_`` may return 0 with probability ~2^-53: that row's index is then an ``argmax``
    of ``inf``, still a valid draw unless its probability underflowed to exactly 0 as well.)
    """
    race = torch.empty_like(logp).exponential_(generator=generator)
    return logp.exp().div_(race).argmax(-1, keepdim=True)


def _log_prob_entropy(logp: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``index`` ``(..., 1)`` under ``logp`` ``(..., n)`` and the entropy."""
    return logp.gather(-1, index).squeeze(-1), -(logp.exp() * logp).sum(-1)


class CategoricalHead(nn.Module):
    """``Discrete(n, start)``: logits ``(B, n)``; actions are int64 indices ``0..n-1`` (the env gets
    ``start + index``)."""

    def __init__(self, hidden_size: int, space: Discrete):
        super().__init__()
        self.n, self.start = space.n, space.start
        self.linear = layer_init(nn.Linear(hidden_size, self.n), std=0.01)
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.linear.weight, self.linear.bias)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(action (B,) int64, log_prob (B,))``."""
        logp = torch.log_softmax(logits, -1)
        index = _sample_index(logp, generator)
        return index.squeeze(-1), logp.gather(-1, index).squeeze(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def log_prob_entropy(
        self, logits: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``action`` and the entropy, each of the batch shape."""
        return _log_prob_entropy(torch.log_softmax(logits, -1), action.unsqueeze(-1))

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        out = action.cpu().numpy()
        return out + self.start if self.start else out


class MultiCategoricalHead(nn.Module):
    """Independent categoricals with ``nvec[i]`` values each: logits ``(B, sum(nvec))``, actions
    ``(B, k)`` int64, log-probs and entropies summed over the ``k`` components. All components are
    computed in one batched op (ragged ``nvec`` are padded with logits of -1e9).

    ``MultiDiscrete(nvec)``, or an integer ``Box`` with finite bounds: then ``nvec = high - low + 1``
    per element and the env gets ``low + index`` in the Box's shape and dtype.
    """

    def __init__(self, hidden_size: int, space: MultiDiscrete | Box):
        super().__init__()
        if isinstance(space, Box):
            self.low = np.broadcast_to(space.low, space.shape).astype(np.int64).ravel()
            nvec = np.broadcast_to(space.high, space.shape).astype(np.int64).ravel() - self.low + 1
            self.shape, self.dtype = space.shape, space.dtype
        else:
            nvec, self.low, self.shape, self.dtype = np.asarray(space.nvec), None, None, None
        self.nvec = [int(n) for n in nvec]
        self.k, self.nmax = len(self.nvec), max(self.nvec)
        self.uniform = all(n == self.nmax for n in self.nvec)
        index = [i * self.nmax + j for i, n in enumerate(self.nvec) for j in range(n)]
        self.register_buffer("_pad_index", torch.tensor(index), persistent=False)
        self.linear = layer_init(nn.Linear(hidden_size, sum(self.nvec)), std=0.01)
        self.action_shape = (self.k,)
        self.action_dtype = torch.int64

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.linear.weight, self.linear.bias)

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-component log-probabilities ``(..., k, nmax)``."""
        lead = logits.shape[:-1]
        if not self.uniform:
            padded = logits.new_full((*lead, self.k * self.nmax), _PAD_LOGIT)
            logits = padded.index_copy(-1, self._pad_index, logits)
        return torch.log_softmax(logits.view(*lead, self.k, self.nmax), -1)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self._log_probs(logits)
        index = _sample_index(logp, generator).squeeze(-1)  # padding has p = 0: never drawn
        return index, logp.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return self._log_probs(logits).argmax(-1)

    def log_prob_entropy(
        self, logits: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp, entropy = _log_prob_entropy(self._log_probs(logits), action.unsqueeze(-1))
        return logp.sum(-1), entropy.sum(-1)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        out = action.cpu().numpy()
        if self.low is None:
            return out
        return (out + self.low).reshape(-1, *self.shape).astype(self.dtype, copy=False)


class BernoulliHead(nn.Module):
    """``MultiBinary(shape)``: one independent Bernoulli per element. Logits ``(B, d)``
    (``d = prod(shape)``); actions ``(B, d)`` int64 0/1; the env gets int8 ``(B, *shape)``.

    With ``p = sigmoid(l)``: ``log p = -softplus(-l)``, ``log(1 - p) = -softplus(l)``.
    """

    def __init__(self, hidden_size: int, space: MultiBinary):
        super().__init__()
        self.shape, self.dtype = space.shape, space.dtype
        dim = int(np.prod(space.shape, dtype=np.int64))
        self.linear = layer_init(nn.Linear(hidden_size, dim), std=0.01)
        self.action_shape = (dim,)
        self.action_dtype = torch.int64

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.linear.weight, self.linear.bias)

    @staticmethod
    def _log_prob(logits: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        return -F.softplus(torch.where(on, -logits, logits)).sum(-1)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
        on = u < torch.sigmoid(logits)
        return on.long(), self._log_prob(logits, on)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits > 0).long()

    def log_prob_entropy(
        self, logits: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.sigmoid(logits)
        entropy = (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum(-1)
        return self._log_prob(logits, action.bool()), entropy

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return action.cpu().numpy().astype(self.dtype).reshape(-1, *self.shape)


def _normal_log_prob(z: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian at standardized ``z`` ``(..., d)``, summed over ``d``."""
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class GaussianHead(nn.Module):
    """Float ``Box``: a diagonal Gaussian with a learned, state-independent log-std. Parameters are
    the means ``(B, d)`` (``d = prod(shape)``); actions are unclipped float32 ``(B, d)``; the env
    gets them clipped to the Box's bounds, reshaped to ``(B, *shape)`` in the Box's dtype."""

    def __init__(self, hidden_size: int, space: Box, init_log_std: float = 0.0):
        super().__init__()
        if space.dtype.kind != "f":
            raise ValueError(
                f"GaussianHead: action space {space!r} has dtype {space.dtype}; a Gaussian policy "
                "needs a float Box (integer Box actions get a categorical head from make_head)"
            )
        self.shape = space.shape
        dim = int(np.prod(space.shape, dtype=np.int64))
        self.linear = layer_init(nn.Linear(hidden_size, dim), std=0.01)
        self.log_std = nn.Parameter(torch.full((dim,), float(init_log_std)))
        self.low = np.broadcast_to(space.low, space.shape).astype(space.dtype)
        self.high = np.broadcast_to(space.high, space.shape).astype(space.dtype)
        self.dtype = space.dtype
        self.action_shape = (dim,)
        self.action_dtype = torch.float32

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.linear.weight, self.linear.bias)

    def sample(
        self, mean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.addcmul(mean, self.log_std.exp(), noise), _normal_log_prob(noise, self.log_std)

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def log_prob_entropy(
        self, mean: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = _normal_log_prob((action - mean) * torch.exp(-self.log_std), self.log_std)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(mean.shape[:-1])
        return logp, entropy

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        out = action.detach().cpu().numpy().reshape(-1, *self.shape)
        return np.clip(out, self.low, self.high).astype(self.dtype, copy=False)


Head = CategoricalHead | MultiCategoricalHead | BernoulliHead | GaussianHead


def make_head(space: Space, hidden_size: int, init_log_std: float = 0.0) -> Head:
    """The action head for ``space``. Raises ``ValueError`` naming a space no head can train."""
    if isinstance(space, Box | MultiDiscrete | MultiBinary) and math.prod(space.shape) == 0:
        raise ValueError(
            f"action space {space!r} has no elements: there is no action to learn; give it at "
            "least one element (shape with no zero)"
        )
    if isinstance(space, Discrete):
        return CategoricalHead(hidden_size, space)
    if isinstance(space, MultiDiscrete):
        return MultiCategoricalHead(hidden_size, space)
    if isinstance(space, MultiBinary):
        return BernoulliHead(hidden_size, space)
    if isinstance(space, Box) and space.dtype.kind == "f":
        return GaussianHead(hidden_size, space, init_log_std)
    if isinstance(space, Box):
        values = np.asarray(space.high, np.float64) - np.asarray(space.low, np.float64) + 1
        if values.max(initial=0) > MAX_CATEGORIES:
            raise ValueError(
                f"action space {space!r}: an integer Box action becomes one categorical per "
                f"element, with at most {MAX_CATEGORIES} values each (this one has up to "
                f"{int(values.max())}); use a float Box (Gaussian head), Discrete or MultiDiscrete"
            )
        return MultiCategoricalHead(hidden_size, space)
    raise ValueError(
        f"action space {space!r} cannot be trained: policies support Discrete, MultiDiscrete, "
        "MultiBinary and Box actions (flatten Dict/Tuple actions into one of them in a wrapper)"
    )
