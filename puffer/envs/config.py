"""The ``env`` config group: which env a run trains on, its checks, and its creator.

``env.name`` is a built-in env (``puffer.envs.names()``), an env family of ``puffer.emulation``
(gymnasium, atari, mujoco, pettingzoo: they check and build their own settings) or ``custom`` with
``env.creator`` (``"module:callable"``). ``EnvConfig.validate`` runs before any run directory
exists; ``creator`` gives ``puffer.vector.make`` its ``(env_creator, env_kwargs)``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EnvConfig", "creator", "env_label", "import_creator", "rows_per_env"]

CUSTOM_HINT = "env=custom env.creator=<module:callable>"


@dataclass
class EnvConfig:
    """The env: a built-in name (``puffer list``), ``gymnasium`` with a gymnasium ``id``, or
    ``custom`` with a ``creator`` (``"module:callable"`` returning a PufferEnv, gymnasium Env or
    VecEnv)."""

    name: str = "cartpole"
    id: str | None = None  # gymnasium only, e.g. "Acrobot-v1"
    creator: str | None = None  # custom only, e.g. "my_envs:Corridor"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the env's constructor
    # gymnasium/atari/mujoco: gymnasium wrappers [{_target_: pkg.Class, **kwargs}], first innermost
    wrappers: list[Any] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the setting and the fix: an unknown built-in name, a custom
        creator that cannot be imported, or a family's own check (``puffer.emulation.check``)."""
        from puffer import emulation, envs

        if self.name == "custom":
            if not self.creator:
                raise ValueError(
                    "env=custom needs env.creator='module:callable' (a PufferEnv, gymnasium Env or "
                    "VecEnv factory), e.g. env=custom env.creator=my_envs:Corridor"
                )
            import_creator(self.creator)
        elif self.name in emulation.FAMILIES:  # gymnasium, atari, mujoco, pettingzoo
            emulation.check(self)
        elif self.name not in envs.names():
            known = list(envs.names())
            raise ValueError(
                f"env.name={self.name!r} is not a built-in env.{_did_you_mean(self.name, known)} "
                f"Built-in envs: {', '.join(known)}; or env=gymnasium env.id=<gymnasium id>, or "
                f"{CUSTOM_HINT}."
            )


# PettingZoo's own entry points: every game module has them, so the module names the game.
PETTINGZOO_ENTRY_POINTS = ("env", "parallel_env", "raw_env")


def env_label(name: str, env_id: str | None = None, creator: str | None = None) -> str:
    """The run directory's env part: the gymnasium id (without a ``module:`` prefix, ``/`` as
    ``-``: ``ale_py:ALE/Pong-v5`` -> ``ALE-Pong-v5``), the creator's name (for a PettingZoo
    entry point its game module: ``pettingzoo.classic.rps_v2:parallel_env`` -> ``rps_v2``), or
    the name."""
    if env_id:
        return str(env_id).rpartition(":")[2].replace("/", "-")
    if creator:
        module, _, attr = str(creator).replace(":", ".").rpartition(".")
        if name == "pettingzoo" and attr in PETTINGZOO_ENTRY_POINTS and module:
            return module.rpartition(".")[2]
        return attr
    return str(name)


def import_creator(spec: str) -> Any:
    """The callable ``"package.module:attribute"`` names; ``ValueError`` with the fix if not."""
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ValueError(
            f"env.creator={spec!r}: use 'module:callable', e.g. env.creator=my_envs:Corridor"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does: modules next to where you run it
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"env.creator={spec}: cannot import {module_name!r} ({e}); make it importable "
            "(run from its directory or add it to PYTHONPATH)"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ValueError(
            f"env.creator={spec}: {module_name} has no {attr!r}.{_did_you_mean(attr, names)}"
        ) from None


def creator(env: Any, training: bool = True) -> tuple[Any, dict[str, Any]]:
    """``(env_creator, env_kwargs)`` for ``puffer.vector.make`` from an env config (``EnvConfig``
    or its ``DictConfig``): a built-in name, a family's creator (``training=False`` for
    evaluation: e.g. Atari keeps lives) or the custom creator."""
    from omegaconf import OmegaConf

    from puffer import emulation

    if env.name in emulation.FAMILIES:
        return emulation.creator(env, training=training)
    kwargs = env.kwargs
    kwargs = dict(
        OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) else kwargs
    )
    if env.name == "custom":
        return import_creator(env.creator), kwargs
    return env.name, kwargs


def rows_per_env(env: Any) -> int | None:
    """Rows one copy of the env takes (its agents; 1 for a one-agent env), for the check of
    ``vector.num_envs`` before any run directory exists; None for ``custom`` (``make`` learns it by
    calling the creator). A PettingZoo env is built once: ``EnvSettingError`` (a ``ValueError``)
    naming ``env.creator`` when that fails, e.g. for a turn-based AEC env."""
    from omegaconf import OmegaConf

    from puffer import emulation, envs

    if env.name == "custom":
        return None
    if env.name == "pettingzoo":
        return emulation.num_agents(env)
    if env.name in emulation.FAMILIES:
        return 1
    kwargs = OmegaConf.to_container(env.kwargs) if OmegaConf.is_config(env.kwargs) else env.kwargs
    return envs.spec(env.name).rows_per_env(**dict(kwargs or {}))


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
