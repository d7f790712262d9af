"""Random streams from one integer seed: independent per env row, per worker and per rank.

A run's ``seed`` is the entropy of a ``numpy.random.SeedSequence``; every stream the envs use is a
child of it keyed by where it is used (``spawn_key``), as numpy's "parallel random number
generation" guide recommends. So one integer still reproduces a run exactly, while the streams of
runs with seeds ``s`` and ``s + 1`` share nothing (with ``seed + row`` they overlapped in all but
one row).

- ``row_seed(seed, row)``: the integer a one-agent env in ``row`` is reset with (gymnasium's
  ``reset(seed=...)`` takes an int), and the seed of a native env block whose first row is ``row``.
- ``rank_seed(seed, rank)``: the seed rank ``rank`` of a distributed run passes to its envs; rank 0
  keeps ``seed``, so a one-rank run equals a plain run.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_seed", "row_seed"]

_MASK63 = (1 << 63) - 1  # seeds fit a signed int64 (the worker's shared control row)


def _check(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}={value!r}: must be a non-negative integer")
    return int(value)


def _to_int(seq: np.random.SeedSequence) -> int:
    """A 63-bit integer drawn from ``seq`` (two 32-bit words of its state)."""
    hi, lo = (int(w) for w in seq.generate_state(2, np.uint32))
    return ((hi << 32) | lo) & _MASK63


def row_seed(seed: int, row: int) -> int:
    """The seed of env row ``row`` of a run seeded ``seed``: a 63-bit int from
    ``SeedSequence(seed, spawn_key=(row,))``. Raises ``ValueError`` for negative or non-int values.
    """
    seq = np.random.SeedSequence(_check("seed", seed), spawn_key=(_check("row", row),))
    return _to_int(seq)


def rank_seed(seed: int, rank: int) -> int:
    """The env seed of rank ``rank`` in a distributed run seeded ``seed`` (rank 0: ``seed``).

    Other ranks get a 63-bit int from ``SeedSequence([seed, rank])``: a pool distinct from every
    plain seed's, so no rank replays another rank's or another run's rows.
    """
    seed, rank = _check("seed", seed), _check("rank", rank)
    if rank == 0:
        return seed
    return _to_int(np.random.SeedSequence([seed, rank]))
