"""Hydra sweep overrides as an Optuna search space, and sampled values back as overrides.

    choice(a, b, c) | a,b,c      -> CategoricalDistribution
    range(1, 8) (integers)       -> IntDistribution(1, 7, step=1); a float range -> categorical
    interval(1e-4, 1e-2)         -> FloatDistribution; tag(log, interval(..)) -> log=True
    int(interval(1, 3))          -> IntDistribution(1, 3)
Overrides that are not sweeps are passed to every job unchanged.
"""

# No ``from __future__ import annotations``: see config.py.
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    Transformer,
)

PRIMITIVES = (str, int, float, bool, type(None))


@dataclass
class SearchSpace:
    """``distributions`` (Optuna's, by override key) and ``fixed`` overrides for every job."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    # Categorical choices' override strings, by key then by the choice's value.
    _strings: dict[str, dict[Any, str]] = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The job's overrides for one trial's ``params`` (fixed ones first)."""
        sampled = []
        for key, value in params.items():
            text = self._strings.get(key, {}).get(value)
            sampled.append(f"{key}={text if text is not None else _number(value)}")
        return [*self.fixed, *sampled]


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def parse(
    params: Mapping[str, str], arguments: Sequence[str], config_loader: Any = None
) -> SearchSpace:
    """The space of ``params`` (``key: sweep``) and the command line's ``arguments``.

    A command-line sweep for a key replaces the config's; a command-line value fixes the key.
    Raises ``ValueError`` naming an override that cannot be a search dimension.
    """
    parser = OverridesParser.create(config_loader=config_loader)
    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(lines):
        by_key.pop(override.get_key_element(), None)  # later wins, in its own position
        by_key[override.get_key_element()] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if not override.is_sweep_override():
            space.fixed.append(str(override.input_line))
        elif override.is_interval_sweep():
            space.distributions[key] = _interval(override)
        elif override.is_range_sweep() and _int_range(override):
            space.distributions[key] = _range(override)
        else:
            space.distributions[key], space._strings[key] = _categorical(override)
    return space


def _interval(override: Override) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    sweep = override.value()
    assert isinstance(sweep, IntervalSweep)
    log = "log" in sweep.tags
    if isinstance(sweep.start, int) and isinstance(sweep.end, int):
        return IntDistribution(sweep.start, sweep.end, log=log)
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log)  # type: ignore[arg-type]


def _int_range(override: Override) -> bool:
    sweep = override.value()
    assert isinstance(sweep, RangeSweep)
    return all(isinstance(x, int) for x in (sweep.start, sweep.stop, sweep.step))


def _range(override: Override) -> Any:
    from optuna.distributions import IntDistribution

    sweep = override.value()
    assert isinstance(sweep, RangeSweep)
    values = list(sweep.range())
    if not values or sweep.step < 0:  # type: ignore[operator]
        raise ValueError(
            f"{override.input_line}: an empty or decreasing range cannot be searched; "
            "write range(low, high) with low < high"
        )
    return IntDistribution(values[0], values[-1], step=int(sweep.step))  # type: ignore[arg-type]


def _categorical(override: Override) -> tuple[Any, dict[Any, str]]:
    from optuna.distributions import CategoricalDistribution

    values, strings = [], {}
    for raw in override.sweep_iterator():
        value = raw.text if isinstance(raw, QuotedString) else raw
        if not isinstance(value, PRIMITIVES):
            raise ValueError(
                f"{override.input_line}: Optuna chooses among numbers, strings, booleans and "
                f"null, not {type(value).__name__} values like {value!r}"
            )
        values.append(value)
        strings[value] = Transformer.str(raw)
    return CategoricalDistribution(values), strings
