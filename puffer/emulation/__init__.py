"""Envs of other libraries as puffer envs, and the env families the config names.

- ``GymnasiumEnv`` (``puffer.emulation.gymnasium``): any gymnasium env as a one-agent ``PufferEnv``.
- ``PettingZooEnv`` (``puffer.emulation.pettingzoo``): a PettingZoo Parallel (or AEC) env as a
  ``VecEnv`` with one row per agent and masks for absent agents.
- ``make_atari`` (``puffer.emulation.atari``): ale-py games with the standard preprocessing.

The config's ``env.name`` selects a family (``FAMILIES``); the front end calls ``check(cfg.env)``
while validating (before any run directory exists) and ``creator(cfg.env)`` to build the
``(env_creator, env_kwargs)`` pair for ``puffer.vector.make``:

| family | settings | env |
|---|---|---|
| ``gymnasium`` | ``id`` (``Id`` or ``module:Id``), ``kwargs`` (to ``gymnasium.make``), ``wrappers`` | ``GymnasiumEnv`` |
| ``atari`` | ``id`` (a game, ``Breakout``, or an ALE id), ``kwargs``, ``wrappers`` | ``make_atari`` |
| ``mujoco`` | ``id`` (``HalfCheetah-v5``), ``kwargs``, ``wrappers`` | ``GymnasiumEnv`` |
| ``pettingzoo`` | ``creator`` (``module:function`` returning a Parallel or AEC env), ``kwargs`` | ``PettingZooEnv`` |

``wrappers`` is a list of gymnasium wrappers, each ``{_target_: package.module.Class, **kwargs}``,
applied in order (first innermost) after ``gymnasium.make``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from puffer.emulation.atari import make_atari
from puffer.emulation.gymnasium import (
    EnvSettingError,
    GymnasiumEnv,
    check_id,
    check_wrappers,
    import_module,
    locate,
    make_env,
)
from puffer.emulation.pettingzoo import PettingZooEnv, make_pettingzoo

__all__ = [
    "FAMILIES",
    "EnvSettingError",
    "GymnasiumEnv",
    "PettingZooEnv",
    "check",
    "creator",
    "make_atari",
    "make_gymnasium",
    "num_agents",
]

FAMILIES = ("gymnasium", "atari", "mujoco", "pettingzoo")


def make_gymnasium(
    env_id: str, wrappers: list[Any] | tuple[Any, ...] = (), **make_kwargs: Any
) -> GymnasiumEnv:
    """``GymnasiumEnv`` of ``gymnasium.make(env_id, **make_kwargs)`` inside ``wrappers``."""
    if make_kwargs.get("render_mode") == "rgb_array":
        headless_gl()
    return GymnasiumEnv(make_env(env_id, make_kwargs, wrappers))


def headless_gl() -> None:
    """On a machine without a display, have MuJoCo render off-screen through EGL
    (``MUJOCO_GL=egl``) unless the user chose a backend: gymnasium's default tries GLFW first,
    which fails there ("an OpenGL platform library has not been loaded")."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("MUJOCO_GL", "egl")


def _plain(value: Any) -> Any:
    """A config node as plain Python containers (picklable for worker processes)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _settings(env: Any) -> tuple[str, str | None, str | None, dict[str, Any], list[Any]]:
    get = env.get if isinstance(env, dict) else lambda k, d=None: getattr(env, k, d)
    kwargs = _plain(get("kwargs")) or {}
    wrappers = _plain(get("wrappers")) or []
    return str(get("name")), get("id"), get("creator"), dict(kwargs), list(wrappers)


def check(env: Any) -> None:
    """Validate the env config of a family (``env.name`` in ``FAMILIES``) before any run starts.

    Raises ``EnvSettingError`` (a ``ValueError``) naming the key and the fix: a missing ``id`` or
    ``creator``, an id gymnasium does not know, a package that is not installed (with the pip
    command), a wrapper that cannot be imported or takes other arguments; for ``gymnasium`` it
    also builds the env once to refuse observation spaces that cannot be arrays (text).
    """
    name, env_id, env_creator, kwargs, wrappers = _settings(env)
    if name not in FAMILIES:
        raise EnvSettingError(f"env.name={name!r} is not an env family: use one of {FAMILIES}")
    if name == "pettingzoo":
        if not env_creator:
            raise EnvSettingError(
                "env=pettingzoo needs env.creator=<module>:<function> returning a PettingZoo "
                "Parallel or AEC env, e.g. env.creator=pettingzoo.classic.rps_v2:parallel_env"
            )
        import_module("pettingzoo", "env=pettingzoo")
        locate(env_creator, "env.creator")
        return
    example = {"gymnasium": "Acrobot-v1", "atari": "Breakout", "mujoco": "HalfCheetah-v5"}[name]
    if not env_id:
        raise EnvSettingError(f"env={name} needs env.id=<id>, e.g. env={name} env.id={example}")
    if name == "atari":
        from puffer.emulation.atari import ale_id

        import_module("ale_py", "env=atari")
        import_module("cv2", "env=atari")
        check_id(ale_id(env_id))
    else:
        if name == "mujoco":
            import_module("mujoco", "env=mujoco")
        check_id(env_id)
    check_wrappers(wrappers)
    if name == "gymnasium":  # any space may come: build one env and look (fast for most envs)
        _check_spaces(env_id, kwargs, wrappers)


def num_agents(env: Any) -> int:
    """The agents (rows) of the PettingZoo env the config ``env`` (``env=pettingzoo``) names,
    from building it once. Raises ``EnvSettingError`` naming ``env.creator`` when that fails."""
    _, _, env_creator, kwargs, _ = _settings(env)
    try:
        made = make_pettingzoo(env_creator, **kwargs)
    except EnvSettingError:
        raise
    except Exception as e:
        raise EnvSettingError(
            f"env.creator={env_creator} with env.kwargs={kwargs}: building the env failed: "
            f"{type(e).__name__}: {e}"
        ) from None
    try:
        return made.num_envs
    finally:
        made.close()


def _check_spaces(env_id: str, kwargs: dict[str, Any], wrappers: list[Any]) -> None:
    """Build the env once and refuse observation spaces that cannot be arrays (text)."""
    from puffer.emulation.gymnasium import refuse_unsupported

    try:
        env = make_env(env_id, kwargs, wrappers)
    except Exception as e:
        raise EnvSettingError(
            f"env.id={env_id}: gymnasium.make with env.kwargs={kwargs} and env.wrappers failed: "
            f"{type(e).__name__}: {e}"
        ) from None
    try:
        refuse_unsupported(env)
    finally:
        env.close()


def creator(env: Any, *, training: bool = True) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(env_creator, env_kwargs)`` for ``puffer.vector.make`` from a family's env config.

    ``training=False`` is for evaluation: Atari then keeps lives and raw rewards.
    """
    name, env_id, env_creator, kwargs, wrappers = _settings(env)
    if name == "pettingzoo":
        return functools.partial(make_pettingzoo, env_creator), kwargs
    if name == "atari":
        return functools.partial(make_atari, env_id, wrappers=wrappers, training=training), {
            "kwargs": kwargs
        }
    if name in ("gymnasium", "mujoco"):
        return functools.partial(make_gymnasium, env_id, wrappers), kwargs
    raise EnvSettingError(f"env.name={name!r} is not an env family: use one of {FAMILIES}")
