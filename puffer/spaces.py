"""Observation and action spaces: ``Discrete``, ``MultiDiscrete``, ``Box`` (and its ``MultiBinary``),
``Dict``, ``Tuple``.

Every space has a ``shape`` and ``dtype`` (those of one value), draws values with ``sample``
(``sample_batch`` for a leading batch axis), tests them with ``contains``, and validates actions
with ``check`` (one value) and ``check_batch`` (a leading batch axis), raising ``ValueError`` that
names the expected space and the received value. ``flatten``/``unflatten`` convert ``Dict``/``Tuple``
values to and from one flat vector (numpy or torch, leading batch axes kept): float32, or uint8
when the space holds uint8 images and only small integers besides (so images stay uint8);
``to_gymnasium``/``from_gymnasium`` convert spaces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Box",
    "Dict",
    "Discrete",
    "MultiBinary",
    "MultiDiscrete",
    "Space",
    "Tuple",
    "flat_dtype",
    "flatdim",
    "flatten",
    "flatten_space",
    "from_gymnasium",
    "unflatten",
]


def _is_torch(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "device")


def _as_array(x: Any) -> np.ndarray:
    """Array view of an action: numpy arrays and CPU tensors without a copy, scalars boxed."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):  # possibly on an accelerator
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _describe(x: Any) -> str:
    """Short description of a received value for error messages."""
    if isinstance(x, np.ndarray) or _is_torch(x):
        arr = _as_array(x)
        body = np.array2string(arr, threshold=8, edgeitems=2, max_line_width=80)
        return f"{type(x).__name__}(shape={tuple(arr.shape)}, dtype={arr.dtype}) {body}"
    return f"{x!r} ({type(x).__name__})"


class Space:
    """Base class: a set of values of one ``shape`` and ``dtype`` with its own RNG."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, seed: int | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._rng = np.random.default_rng(seed)

    def seed(self, seed: int | None = None) -> None:
        """Reseed the RNG that ``sample()`` uses when no generator is passed."""
        self._rng = np.random.default_rng(seed)

    def sample(self, rng: np.random.Generator | None = None) -> Any:
        """One random value of the space."""
        raise NotImplementedError

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> Any:
        """``n`` random values stacked on a leading axis."""
        raise NotImplementedError

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a value of this space (shape, dtype kind, bounds, no NaN)."""
        try:
            self.check(x)
        except ValueError:
            return False
        return True

    def __contains__(self, x: Any) -> bool:
        return self.contains(x)

    def check(self, x: Any, where: str = "action") -> Any:
        """Validate one value; return it as an array (or dict/tuple of arrays). Raises ``ValueError``."""
        raise NotImplementedError

    def check_batch(self, x: Any, n: int, where: str = "actions") -> Any:
        """Validate ``n`` values stacked on a leading axis. Raises ``ValueError``."""
        raise NotImplementedError

    def to_gymnasium(self) -> Any:
        """The equivalent ``gymnasium.spaces`` space."""
        raise NotImplementedError

    def _fail(self, where: str, x: Any, problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}; expected a value of {self!r}, got {_describe(x)}")


def _position(index: np.ndarray, batched: bool) -> str:
    idx = tuple(int(i) for i in index)
    if not batched:
        return f"at index {idx}" if idx else ""
    return f"in row {idx[0]}" + (f" at index {idx[1:]}" if len(idx) > 1 else "")


class _ArraySpace(Space):
    """Shared checks for spaces whose values are one array: shape, dtype kind, bounds, NaN."""

    low: Any
    high: Any  # inclusive
    _kinds: str  # accepted dtype kinds of received values

    def _check_array(self, arr: np.ndarray, shape: tuple[int, ...], where: str, x: Any) -> None:
        batched = len(shape) > len(self.shape)
        if arr.shape != shape:
            what = "batch of shape" if batched else "shape"
            raise self._fail(where, x, f"wrong {what} {arr.shape}, expected {shape}")
        if arr.dtype.kind not in self._kinds:
            hint = " (cast with .astype(np.int64))" if self._kinds == "iu" else ""
            raise self._fail(where, x, f"wrong dtype {arr.dtype}, expected {self.dtype}{hint}")
        if not self._in_bounds(arr):
            bad = np.argwhere(~((arr >= self.low) & (arr <= self.high)))[0]
            value = arr[tuple(bad)]
            nan = value != value
            problem = " ".join(
                p
                for p in ("NaN" if nan else f"value {value} out of range", _position(bad, batched))
                if p
            )
            raise self._fail(where, x, problem + ("" if nan else self._range_hint()))

    def _in_bounds(self, arr: np.ndarray) -> bool:
        # NaN fails every comparison (and propagates through min/max), so it is caught here too.
        lo, hi = self._uniform_bounds
        if lo is None:
            return bool(((arr >= self.low) & (arr <= self.high)).all())
        if arr.ndim == 0:
            return bool(lo <= arr <= hi)
        return arr.size == 0 or bool(arr.min() >= lo and arr.max() <= hi)  # min() of 0 values fails

    def _set_bounds(self, low: Any, high: Any) -> None:
        self.low, self.high = low, high
        lo, hi = np.asarray(low), np.asarray(high)
        uniform = lo.size and (lo == lo.flat[0]).all() and (hi == hi.flat[0]).all()
        self._uniform_bounds = (lo.flat[0], hi.flat[0]) if uniform else (None, None)

    def _range_hint(self) -> str:
        return ""


class Discrete(_ArraySpace):
    """Integers ``start, ..., start + n - 1``. A value is an int64 scalar, shape ``()``."""

    _kinds = "iu"

    def __init__(self, n: int, start: int = 0, seed: int | None = None):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Discrete(n={n!r}): n must be a positive integer")
        super().__init__((), np.int64, seed)
        self.n = int(n)
        self.start = int(start)
        self._set_bounds(np.int64(self.start), np.int64(self.start + self.n - 1))

    def sample(self, rng: np.random.Generator | None = None) -> np.int64:
        rng = rng or self._rng
        return np.int64(self.start + rng.integers(self.n))

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self._rng
        return self.start + rng.integers(self.n, size=n, dtype=np.int64)

    def check(self, x: Any, where: str = "action") -> np.int64:
        if type(x) is int:  # fast path for the common Python int (bool is a subclass: excluded)
            if not self.start <= x < self.start + self.n:
                raise self._fail(where, x, f"value {x} out of range")
            return np.int64(x)
        arr = _as_array(x)
        if arr.shape == (1,):  # tolerate a one-element array, as a policy might output
            arr = arr.reshape(())
        self._check_array(arr, (), where, x)
        return np.int64(arr)

    def check_batch(self, x: Any, n: int, where: str = "actions") -> np.ndarray:
        arr = _as_array(x)
        if arr.shape == (n, 1):
            arr = arr.reshape(n)
        self._check_array(arr, (n,), where, x)
        return arr

    def to_gymnasium(self) -> Any:
        import gymnasium

        return gymnasium.spaces.Discrete(self.n, start=self.start)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discrete) and (self.n, self.start) == (other.n, other.start)

    def __hash__(self) -> int:
        return hash(("Discrete", self.n, self.start))

    def __repr__(self) -> str:
        return (
            f"Discrete({self.n})" if self.start == 0 else f"Discrete({self.n}, start={self.start})"
        )


class MultiDiscrete(_ArraySpace):
    """A vector of independent integers, component ``i`` in ``[0, nvec[i])``; int64, shape ``(k,)``."""

    _kinds = "iu"

    def __init__(self, nvec: Sequence[int] | np.ndarray, seed: int | None = None):
        nvec_arr = np.asarray(nvec)
        if (
            nvec_arr.ndim != 1
            or nvec_arr.size == 0
            or nvec_arr.dtype.kind not in "iu"
            or (nvec_arr < 1).any()
        ):
            raise ValueError(
                f"MultiDiscrete(nvec={nvec!r}): nvec must be a non-empty 1-D list of positive ints"
            )
        nvec_arr = nvec_arr.astype(np.int64)
        super().__init__(nvec_arr.shape, np.int64, seed)
        self.nvec = nvec_arr
        self._set_bounds(np.zeros_like(nvec_arr), nvec_arr - 1)

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self._rng
        return rng.integers(self.nvec, dtype=np.int64)

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self._rng
        return rng.integers(self.nvec, size=(n, *self.shape), dtype=np.int64)

    def check(self, x: Any, where: str = "action") -> np.ndarray:
        arr = _as_array(x)
        self._check_array(arr, self.shape, where, x)
        return arr

    def check_batch(self, x: Any, n: int, where: str = "actions") -> np.ndarray:
        arr = _as_array(x)
        self._check_array(arr, (n, *self.shape), where, x)
        return arr

    def to_gymnasium(self) -> Any:
        import gymnasium

        return gymnasium.spaces.MultiDiscrete(self.nvec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiDiscrete) and np.array_equal(self.nvec, other.nvec)

    def __hash__(self) -> int:
        return hash(("MultiDiscrete", tuple(self.nvec.tolist())))

    def __repr__(self) -> str:
        return f"MultiDiscrete({self.nvec.tolist()})"


class Box(_ArraySpace):
    """Arrays of ``shape`` and ``dtype`` with elementwise bounds ``low <= x <= high`` (may be inf).

    A float Box accepts float or integer input; an integer Box only integers.
    """

    def __init__(
        self,
        low: float | np.ndarray,
        high: float | np.ndarray,
        shape: Sequence[int] | None = None,
        dtype: Any = np.float32,
        seed: int | None = None,
    ):
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiu":
            raise ValueError(f"Box(dtype={dtype}): dtype must be a float or integer type")
        try:
            if shape is None:
                shape = np.broadcast_shapes(np.shape(low), np.shape(high))
            shape = tuple(int(s) for s in shape)
            low_arr = np.broadcast_to(np.asarray(low, dtype=np.float64), shape)
            high_arr = np.broadcast_to(np.asarray(high, dtype=np.float64), shape)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"Box: bounds of shape {np.shape(low)} and {np.shape(high)} do not fit "
                f"shape={shape}; give scalars or arrays of that shape ({e})"
            ) from None
        if np.isnan(low_arr).any() or np.isnan(high_arr).any() or (low_arr > high_arr).any():
            raise ValueError(f"Box: needs low <= high everywhere, got low={low!r}, high={high!r}")
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not (np.isfinite(low_arr).all() and np.isfinite(high_arr).all()):
                raise ValueError(
                    f"Box(dtype={dtype}): integer bounds must be finite "
                    f"(use np.iinfo({dtype}).min/.max for 'unbounded')"
                )
            fits = bool(
                (np.floor(low_arr) == low_arr).all()
                and (np.floor(high_arr) == high_arr).all()
                and (low_arr >= info.min).all()
                and (high_arr <= info.max).all()
            )
            if fits:
                try:  # cast the given values: the float64 copies round bounds beyond 2**53
                    self.low = np.asarray(low, dtype=dtype)
                    self.high = np.asarray(high, dtype=dtype)
                except OverflowError:  # a Python int just beyond the range, rounded into it
                    fits = False
            if not fits:
                raise ValueError(
                    f"Box(dtype={dtype}): integer bounds must be whole numbers in "
                    f"[{info.min}, {info.max}], got low={low!r}, high={high!r}"
                )
        else:
            self.low, self.high = low_arr.astype(dtype), high_arr.astype(dtype)
        super().__init__(shape, dtype, seed)
        self._set_bounds(
            np.broadcast_to(self.low, shape).copy(), np.broadcast_to(self.high, shape).copy()
        )
        self._kinds = "iu" if dtype.kind in "iu" else "fiu"
        self._bounded = bool(np.isfinite(self.low).all() and np.isfinite(self.high).all())

    @classmethod
    def uniform(cls, shape: Sequence[int], low: float, high: float, dtype: Any = np.float32) -> Box:
        """A Box of ``shape`` with the same bounds on every element (the seed's ``Box::uniform``)."""
        return cls(low, high, shape=shape, dtype=dtype)

    def is_bounded(self) -> bool:
        """Whether every bound is finite."""
        return self._bounded

    def _sample(self, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if self.dtype.kind in "iu":
            return rng.integers(self.low, self.high, size=size, dtype=self.dtype, endpoint=True)
        low, high = self.low.astype(np.float64), self.high.astype(np.float64)
        lo_fin, hi_fin = np.isfinite(low), np.isfinite(high)
        x = rng.uniform(np.where(lo_fin, low, 0), np.where(hi_fin, high, 0), size=size)
        if not self._bounded:  # unbounded sides as in gymnasium: normal, or shifted exponential
            normal = rng.normal(size=size)
            expo = rng.exponential(size=size)
            x = np.where(~lo_fin & ~hi_fin, normal, x)
            x = np.where(lo_fin & ~hi_fin, low + expo, x)
            x = np.where(~lo_fin & hi_fin, high - expo, x)
        return np.clip(x.astype(self.dtype), self.low, self.high)

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        return self._sample(self.shape, rng or self._rng)

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return self._sample((n, *self.shape), rng or self._rng)

    def _range_hint(self) -> str:
        return " (wrap the env in puffer.wrappers.ClipAction to clip actions instead)"

    def check(self, x: Any, where: str = "action") -> np.ndarray:
        arr = _as_array(x)
        if arr.shape == () and self.shape == (1,):
            arr = arr.reshape(1)
        self._check_array(arr, self.shape, where, x)
        return arr

    def check_batch(self, x: Any, n: int, where: str = "actions") -> np.ndarray:
        arr = _as_array(x)
        if arr.shape == (n,) and self.shape == (1,):
            arr = arr.reshape(n, 1)
        self._check_array(arr, (n, *self.shape), where, x)
        return arr

    def to_gymnasium(self) -> Any:
        import gymnasium

        return gymnasium.spaces.Box(self.low, self.high, shape=self.shape, dtype=self.dtype)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Box)
            and self.shape == other.shape
            and self.dtype == other.dtype
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
        )

    def __hash__(self) -> int:
        return hash(("Box", self.shape, self.dtype.str))

    def __repr__(self) -> str:
        def bound(b: np.ndarray) -> str:
            def fmt(v: Any) -> str:
                return f"{v:.4g}" if b.dtype.kind == "f" else str(int(v))

            if b.size and (b == b.flat[0]).all():
                return fmt(b.flat[0])
            if b.size > 8:
                return np.array2string(b.ravel(), threshold=6, edgeitems=3, separator=", ")
            return "[" + ", ".join(fmt(v) for v in b.flat) + "]"

        return f"Box({bound(self.low)}, {bound(self.high)}, {self.shape}, {self.dtype})"


class MultiBinary(Box):
    """Arrays of 0/1 of ``shape`` (an int ``n`` means ``(n,)``): an int8 ``Box(0, 1)`` that
    converts to ``gymnasium.spaces.MultiBinary`` and gets a Bernoulli policy head."""

    def __init__(self, n: int | Sequence[int], seed: int | None = None):
        shape = (int(n),) if np.ndim(n) == 0 else tuple(int(s) for s in n)  # type: ignore[arg-type]
        super().__init__(0, 1, shape=shape, dtype=np.int8, seed=seed)

    def to_gymnasium(self) -> Any:
        import gymnasium

        n = self.shape[0] if len(self.shape) == 1 else list(self.shape)
        return gymnasium.spaces.MultiBinary(n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiBinary) and self.shape == other.shape

    def __hash__(self) -> int:
        return hash(("MultiBinary", self.shape))

    def __repr__(self) -> str:
        return f"MultiBinary({self.shape})"


class Dict(Space):
    """A mapping of names to spaces; a value is a dict with the same keys (insertion order kept).

    The key order is the order of ``flatten``'s layout.
    """

    def __init__(self, spaces: Mapping[str, Space] | None = None, seed: int | None = None, **kw):
        spaces = dict(spaces or {}, **kw)
        if not spaces:
            raise ValueError("Dict: needs at least one subspace")
        for key, sub in spaces.items():
            if not isinstance(sub, Space):
                raise ValueError(f"Dict: subspace {key!r} is {sub!r}, not a puffer.spaces.Space")
        super().__init__((), object, seed)
        self.spaces: dict[str, Space] = spaces
        if seed is not None:
            self.seed(seed)

    def seed(self, seed: int | None = None) -> None:
        """Reseed this space and every subspace (subspace ``i`` with ``seed + i``)."""
        super().seed(seed)
        for i, sub in enumerate(self.spaces.values()):
            sub.seed(None if seed is None else seed + i)

    def __getitem__(self, key: str) -> Space:
        return self.spaces[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    def keys(self) -> Any:
        return self.spaces.keys()

    def items(self) -> Any:
        return self.spaces.items()

    def sample(self, rng: np.random.Generator | None = None) -> dict[str, Any]:
        return {k: s.sample(rng) for k, s in self.spaces.items()}

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        return {k: s.sample_batch(n, rng) for k, s in self.spaces.items()}

    def check(self, x: Any, where: str = "action") -> dict[str, Any]:
        if not isinstance(x, Mapping) or set(x) != set(self.spaces):
            raise self._fail(where, x, f"expected a dict with keys {list(self.spaces)}")
        return {k: s.check(x[k], f"{where}[{k!r}]") for k, s in self.spaces.items()}

    def check_batch(self, x: Any, n: int, where: str = "actions") -> dict[str, Any]:
        if not isinstance(x, Mapping) or set(x) != set(self.spaces):
            raise self._fail(where, x, f"expected a dict with keys {list(self.spaces)}")
        return {k: s.check_batch(x[k], n, f"{where}[{k!r}]") for k, s in self.spaces.items()}

    def to_gymnasium(self) -> Any:
        import gymnasium

        # An OrderedDict keeps our key order (gymnasium sorts the keys of a plain dict).
        return gymnasium.spaces.Dict(
            OrderedDict((k, s.to_gymnasium()) for k, s in self.spaces.items())
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dict) and list(self.spaces.items()) == list(other.spaces.items())

    def __hash__(self) -> int:
        return hash(("Dict", tuple(self.spaces)))

    def __repr__(self) -> str:
        return "Dict(" + ", ".join(f"{k}: {s!r}" for k, s in self.spaces.items()) + ")"


class Tuple(Space):
    """A fixed sequence of spaces; a value is a tuple of their values."""

    def __init__(self, spaces: Sequence[Space], seed: int | None = None):
        spaces = tuple(spaces)
        if not spaces or not all(isinstance(s, Space) for s in spaces):
            raise ValueError(f"Tuple: needs a non-empty sequence of Space, got {spaces!r}")
        super().__init__((), object, seed)
        self.spaces: tuple[Space, ...] = spaces
        if seed is not None:
            self.seed(seed)

    def seed(self, seed: int | None = None) -> None:
        """Reseed this space and every subspace (subspace ``i`` with ``seed + i``)."""
        super().seed(seed)
        for i, sub in enumerate(self.spaces):
            sub.seed(None if seed is None else seed + i)

    def __getitem__(self, i: int) -> Space:
        return self.spaces[i]

    def __len__(self) -> int:
        return len(self.spaces)

    def __iter__(self) -> Iterator[Space]:
        return iter(self.spaces)

    def sample(self, rng: np.random.Generator | None = None) -> tuple[Any, ...]:
        return tuple(s.sample(rng) for s in self.spaces)

    def sample_batch(self, n: int, rng: np.random.Generator | None = None) -> tuple[Any, ...]:
        return tuple(s.sample_batch(n, rng) for s in self.spaces)

    def check(self, x: Any, where: str = "action") -> tuple[Any, ...]:
        if not isinstance(x, (tuple, list)) or len(x) != len(self.spaces):
            raise self._fail(where, x, f"expected a tuple of {len(self.spaces)} values")
        return tuple(s.check(v, f"{where}[{i}]") for i, (s, v) in enumerate(zip(self.spaces, x)))

    def check_batch(self, x: Any, n: int, where: str = "actions") -> tuple[Any, ...]:
        if not isinstance(x, (tuple, list)) or len(x) != len(self.spaces):
            raise self._fail(where, x, f"expected a tuple of {len(self.spaces)} batches")
        return tuple(
            s.check_batch(v, n, f"{where}[{i}]") for i, (s, v) in enumerate(zip(self.spaces, x))
        )

    def to_gymnasium(self) -> Any:
        import gymnasium

        return gymnasium.spaces.Tuple([s.to_gymnasium() for s in self.spaces])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tuple) and self.spaces == other.spaces

    def __hash__(self) -> int:
        return hash(("Tuple", len(self.spaces)))

    def __repr__(self) -> str:
        return "Tuple(" + ", ".join(repr(s) for s in self.spaces) + ")"


# --- flattening -------------------------------------------------------------------------------


def _leaves(space: Space) -> list[_ArraySpace]:
    if isinstance(space, Dict):
        return [leaf for sub in space.spaces.values() for leaf in _leaves(sub)]
    if isinstance(space, Tuple):
        return [leaf for sub in space.spaces for leaf in _leaves(sub)]
    if not isinstance(space, _ArraySpace):
        raise ValueError(f"cannot flatten {space!r}: not a puffer space")
    return [space]


def _leaf_values(space: Space, x: Any) -> list[Any]:
    if isinstance(space, Dict):
        if not isinstance(x, Mapping) or set(x) != set(space.spaces):
            raise ValueError(f"flatten: expected a dict with keys {list(space.spaces)}, got {x!r}")
        return [v for k, sub in space.spaces.items() for v in _leaf_values(sub, x[k])]
    if isinstance(space, Tuple):
        if not isinstance(x, (tuple, list)) or len(x) != len(space.spaces):
            raise ValueError(f"flatten: expected a tuple of {len(space.spaces)} values, got {x!r}")
        return [v for sub, xi in zip(space.spaces, x) for v in _leaf_values(sub, xi)]
    return [x]


def flatdim(space: Space) -> int:
    """Length of the flat vector for one value of ``space``."""
    return sum(int(np.prod(leaf.shape, dtype=np.int64)) for leaf in _leaves(space))


def flat_dtype(space: Space) -> np.dtype:
    """The dtype of ``space``'s flat vectors: uint8 when it holds a uint8 image (a ``Box`` of 2 or
    more axes) and every leaf fits in uint8 exactly (so images are not copied to float32), else
    float32."""
    leaves = _leaves(space)
    image = any(leaf.dtype == np.uint8 and len(leaf.shape) >= 2 for leaf in leaves)
    fits = all(
        leaf.dtype.kind in "iu" and np.min(leaf.low) >= 0 and np.max(leaf.high) <= 255
        for leaf in leaves
    )
    return np.dtype(np.uint8 if image and fits else np.float32)


def flatten_space(space: Space) -> Box:
    """The ``Box`` of flat vectors (dtype ``flat_dtype(space)``); bounds are the leaves' bounds,
    concatenated.

    Discrete and MultiDiscrete leaves are flattened as their integer values (not one-hot).
    """
    dtype = flat_dtype(space)
    lows, highs = [], []
    for leaf in _leaves(space):
        lows.append(np.broadcast_to(np.asarray(leaf.low, dtype=np.float32), leaf.shape).ravel())
        highs.append(np.broadcast_to(np.asarray(leaf.high, dtype=np.float32), leaf.shape).ravel())
    return Box(np.concatenate(lows), np.concatenate(highs), dtype=dtype)


def flatten(space: Space, x: Any) -> Any:
    """One vector (dtype ``flat_dtype(space)``) of ``x``'s leaves in order; leading batch axes kept.

    For ``space`` with flat size ``D`` and a value batched over ``B...``, returns shape
    ``(*B, D)``: a numpy array, or a torch tensor if the leaves are tensors. Integers above 2**24
    lose precision in float32.
    """
    values = _leaf_values(space, x)
    dtype = flat_dtype(space)
    torch_out = any(_is_torch(v) for v in values)
    parts = []
    lead: tuple[int, ...] | None = None
    for leaf, value in zip(_leaves(space), values):
        arr = value if torch_out and _is_torch(value) else np.asarray(value)
        nd = len(leaf.shape)
        shape = tuple(arr.shape)
        this_lead = shape[: len(shape) - nd]
        if (
            len(shape) < nd
            or shape[len(shape) - nd :] != leaf.shape
            or lead not in (None, this_lead)
        ):
            raise ValueError(
                f"flatten: value of shape {shape} does not fit {leaf!r}"
                + (f" with batch shape {lead}" if lead else "")
            )
        lead = this_lead
        parts.append(arr.reshape((*this_lead, -1)))
    if torch_out:
        import torch

        device = next(p.device for p in parts if _is_torch(p))
        to = torch.uint8 if dtype == np.uint8 else torch.float32
        return torch.cat([torch.as_tensor(p, device=device).to(to) for p in parts], dim=-1)
    return np.concatenate([p.astype(dtype, copy=False) for p in parts], axis=-1)


def unflatten(space: Space, flat: Any) -> Any:
    """Inverse of ``flatten`` for numpy arrays or torch tensors of shape ``(*B, D)``.

    Numpy leaves are cast back to their space's dtype; torch leaves keep ``flat``'s dtype (views of
    ``flat``, no copy) for models.
    """
    is_numpy = not _is_torch(flat)
    if is_numpy:
        flat = np.asarray(flat)
    if len(flat.shape) == 0 or flat.shape[-1] != flatdim(space):
        raise ValueError(
            f"unflatten: got shape {tuple(flat.shape)}, {space!r} needs a last axis of "
            f"{flatdim(space)}"
        )
    lead = tuple(flat.shape[:-1])
    offset = 0

    def build(sp: Space) -> Any:
        nonlocal offset
        if isinstance(sp, Dict):
            return {k: build(sub) for k, sub in sp.spaces.items()}
        if isinstance(sp, Tuple):
            return tuple(build(sub) for sub in sp.spaces)
        size = int(np.prod(sp.shape, dtype=np.int64))
        part = flat[..., offset : offset + size].reshape((*lead, *sp.shape))
        offset += size
        if not is_numpy:
            return part
        if sp.dtype.kind in "iu":
            part = np.rint(part)
        return part.astype(sp.dtype)

    return build(space)


# --- gymnasium ---------------------------------------------------------------------------------


def from_gymnasium(space: Any) -> Space:
    """Convert a ``gymnasium.spaces`` space (Discrete, MultiDiscrete, MultiBinary, Box, Dict, Tuple).

    A puffer ``Space`` is returned as it is. ``MultiBinary`` becomes puffer's ``MultiBinary`` (an
    int8 ``Box(0, 1)``).
    """
    if isinstance(space, Space):
        return space
    import gymnasium.spaces as gs

    if isinstance(space, gs.Discrete):
        return Discrete(int(space.n), start=int(space.start))
    if isinstance(space, gs.MultiDiscrete):
        if np.asarray(space.nvec).ndim != 1:
            raise ValueError(f"from_gymnasium: only 1-D MultiDiscrete is supported, got {space}")
        if np.any(np.asarray(getattr(space, "start", 0)) != 0):
            raise ValueError(f"from_gymnasium: MultiDiscrete with start != 0 unsupported: {space}")
        return MultiDiscrete(space.nvec)
    if isinstance(space, gs.MultiBinary):
        return MultiBinary(space.shape)
    if isinstance(space, gs.Box):
        return Box(space.low, space.high, shape=space.shape, dtype=space.dtype)
    if isinstance(space, gs.Dict):
        return Dict({k: from_gymnasium(s) for k, s in space.spaces.items()})
    if isinstance(space, gs.Tuple):
        return Tuple([from_gymnasium(s) for s in space.spaces])
    raise ValueError(
        f"from_gymnasium: {type(space).__name__} is not supported "
        "(use Discrete, MultiDiscrete, MultiBinary, Box, Dict or Tuple)"
    )
