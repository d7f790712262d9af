"""Built-in environments and the registry that names them (``make``, ``names``, ``describe``).

Each built-in env is one module with a native ``VecEnv`` (numpy over all rows) and a one-agent
``PufferEnv`` form sharing its dynamics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from puffer.env import PufferEnv, VecEnv
from puffer.envs.bandit import Bandit, BanditVec
from puffer.envs.cartpole import CartPole, CartPoleVec
from puffer.envs.memory import Memory, MemoryVec
from puffer.envs.reach import ReachVec
from puffer.envs.squared import Squared, SquaredVec

__all__ = [
    "Bandit",
    "BanditVec",
    "CartPole",
    "CartPoleVec",
    "EnvSpec",
    "Memory",
    "MemoryVec",
    "ReachVec",
    "Squared",
    "SquaredVec",
    "describe",
    "make",
    "make_one",
    "names",
    "register",
    "spec",
]


@dataclass(frozen=True)
class EnvSpec:
    """A registered env: its native batched class, its one-agent factory (None for multi-agent
    envs) and a one-line summary."""

    name: str
    vec: Callable[..., VecEnv]
    one: Callable[..., PufferEnv] | None
    description: str

    def rows_per_env(self, **kw: Any) -> int:
        """Rows one copy of the env takes (its agents; 1 for one-agent envs)."""
        rows = getattr(self.vec, "rows_per_env", None)
        return int(rows(**kw)) if rows is not None else 1


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    name: str,
    vec: Callable[..., VecEnv],
    one: Callable[..., PufferEnv] | None,
    description: str,
) -> None:
    """Add an env under ``name`` (``vec(num_envs=..., seed=..., **kw)``, ``one(seed=..., **kw)``)."""
    _REGISTRY[name] = EnvSpec(name, vec, one, description)


def spec(name: str) -> EnvSpec:
    """The registered env called ``name``; unknown names raise ``KeyError`` listing the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(
            f"unknown env {name!r}.{hint} Built-in envs: {', '.join(sorted(_REGISTRY))}"
        ) from None


def make(name: str, num_envs: int = 1, **kw: Any) -> VecEnv:
    """The native ``VecEnv`` of ``name`` with ``num_envs`` rows; ``kw`` go to the env."""
    return spec(name).vec(num_envs=num_envs, **kw)


def make_one(name: str, **kw: Any) -> PufferEnv:
    """The one-agent ``PufferEnv`` form of ``name``; ``TypeError`` for a multi-agent env."""
    one = spec(name).one
    if one is None:
        raise TypeError(
            f"env {name!r} is multi-agent and has no one-agent form: use puffer.envs.make({name!r}, "
            "num_envs=...) (one row per agent)"
        )
    return one(**kw)


def names() -> dict[str, str]:
    """``{name: one-line description}`` of every registered env, sorted by name."""
    return {n: _REGISTRY[n].description for n in sorted(_REGISTRY)}


def describe(name: str) -> str:
    """One line: the env's name, spaces and description (what ``puffer list`` prints)."""
    env = make(name, num_envs=spec(name).rows_per_env())
    try:
        return (
            f"{name}: obs {env.single_observation_space!r}, action {env.single_action_space!r}"
            f" - {spec(name).description}"
        )
    finally:
        env.close()


register(
    "bandit",
    BanditVec,
    Bandit,
    "pull the one paying arm of a k-armed bandit (one-step episodes; info: success)",
)
register(
    "cartpole",
    CartPoleVec,
    CartPole,
    "balance a pole on a moving cart (gymnasium CartPole-v1 dynamics, 500-step episodes)",
)
register(
    "memory",
    MemoryVec,
    Memory,
    "recall a +-1 cue after `length` blank steps (needs an LSTM; info: success)",
)
register(
    "reach",
    ReachVec,
    None,
    "multi-agent: agents on a grid each walk to their own target (one row per agent; masks)",
)
register(
    "squared",
    SquaredVec,
    Squared,
    "walk from the centre of an N x N grid to a target cell (info: success)",
)
