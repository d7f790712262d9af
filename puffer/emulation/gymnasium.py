"""Any gymnasium env as a ``PufferEnv``: ``GymnasiumEnv(env_or_id, **make_kwargs)``.

Spaces are converted with ``puffer.spaces.from_gymnasium``. ``Box`` observations pass through
(cast to the space's dtype: uint8 images stay uint8, float64 becomes float32); any other
observation space (Dict, Tuple, Discrete, MultiDiscrete) is flattened to one ``Box`` vector, with
``original_observation_space`` kept so a model can ``puffer.spaces.unflatten`` it. Text spaces
(e.g. MiniGrid's ``mission``, a ``MissionSpace``) cannot become arrays: they are refused with a
message naming the key and a wrapper that drops it. Actions may be ``Discrete``,
``MultiDiscrete``, ``Box`` or ``MultiBinary``. Gymnasium's ``terminated``/``truncated`` pass
through unchanged, and ``reset(seed)`` calls ``env.reset(seed=seed)``.

``make_env(id, kwargs, wrappers)`` is what ``env=gymnasium`` runs: ``gymnasium.make`` (ids as
gymnasium accepts them, including ``"module:Id"``) then the configured gymnasium wrappers, in
order. ``check_id`` and ``check_wrappers`` validate those settings before any run starts.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterable
from typing import Any

import numpy as np

from puffer.env import PufferEnv, StepResult
from puffer.spaces import (
    Box,
    Discrete,
    MultiDiscrete,
    Space,
    flatten,
    flatten_space,
    from_gymnasium,
)

__all__ = [
    "EnvSettingError",
    "GymnasiumEnv",
    "apply_wrappers",
    "check_id",
    "check_wrappers",
    "import_module",
    "locate",
    "make_env",
]

# Top-level modules of the optional env packages -> the puffer extra that installs them.
EXTRAS = {
    "ale_py": "atari",
    "cv2": "atari",  # gymnasium's AtariPreprocessing resizes with OpenCV
    "mujoco": "mujoco",
    "imageio": "mujoco",
    "minigrid": "minigrid",
    "pettingzoo": "pettingzoo",
}


class EnvSettingError(ValueError):
    """An env setting that cannot run (unknown id, missing package, bad wrapper); the message
    names the setting and the fix."""


def pip_command(module: str) -> str:
    """The pip command that installs the top-level package of ``module``."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    return f"pip install 'puffer[{extra}]'" if extra else f"pip install {top.replace('_', '-')}"


def _missing(exc: BaseException) -> str | None:
    """The name of the module whose absence caused ``exc`` (or its cause), if any."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def import_module(module: str, what: str) -> Any:
    """Import ``module`` for setting ``what``; a missing package raises ``EnvSettingError``
    naming it and the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, gymnasium's DependencyNotInstalled, ...
        name = _missing(e)
        if name is None:
            raise EnvSettingError(
                f"{what}: importing {module} failed ({type(e).__name__}: {e})"
            ) from e
        raise EnvSettingError(
            f"{what}: the package {name.split('.')[0]!r} is not installed (needed by {module}); "
            f"install it with: {pip_command(name)}"
        ) from None


def locate(target: str, what: str) -> Any:
    """The object named ``"package.module.Name"`` (or ``"module:Name"``); ``EnvSettingError``
    naming ``what`` if it cannot be imported or found."""
    module, _, name = target.partition(":") if ":" in target else target.rpartition(".")
    if not module or not name:
        raise EnvSettingError(f"{what}={target!r}: write it as package.module.Name")
    obj = import_module(module, what)
    try:
        for part in name.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise EnvSettingError(f"{what}={target!r}: {module} has no {name!r}") from None
    return obj


def check_id(env_id: str, what: str = "env.id") -> None:
    """Raise ``EnvSettingError`` unless ``gymnasium.make(env_id)`` can find and import the env.

    Accepts what gymnasium accepts, ``"Id"`` or ``"module:Id"`` (the module registers the id). The
    env's entry point is imported, so a missing package (e.g. mujoco, imageio, ale-py) is named,
    with the pip command, before any run directory exists.
    """
    import gymnasium

    module, _, name = env_id.rpartition(":")
    if module:
        import_module(module, f"{what}={env_id}")
    try:
        spec = gymnasium.spec(name)
    except gymnasium.error.Error as e:
        raise EnvSettingError(f"{what}={env_id}: {e}{_id_hint(name)}") from None
    if isinstance(spec.entry_point, str):
        import_module(spec.entry_point.partition(":")[0], f"{what}={env_id}")


def _id_hint(name: str) -> str:
    import gymnasium

    if name.startswith("ALE/"):
        return f". Atari ids need ale-py: write ale_py:{name} ({pip_command('ale_py')})"
    if name.startswith("MiniGrid"):
        return f". MiniGrid ids need minigrid: write minigrid:{name} ({pip_command('minigrid')})"
    close = difflib.get_close_matches(name, list(gymnasium.registry), n=1)
    hint = f". Did you mean {close[0]!r}?" if close else ""
    return hint + " (ids of other packages: module:Id, e.g. ale_py:ALE/Pong-v5)"


def _wrapper_entries(wrappers: Iterable[Any], what: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, entry in enumerate(wrappers or ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("_target_"), str):
            raise EnvSettingError(
                f"{what}[{i}]={entry!r}: each wrapper is a mapping with _target_ (the class) and "
                "its keyword arguments, e.g. {_target_: minigrid.wrappers.ImgObsWrapper}"
            )
        kwargs = {k: v for k, v in entry.items() if k != "_target_"}
        out.append((entry["_target_"], kwargs))
    return out


def check_wrappers(wrappers: Iterable[Any], what: str = "env.wrappers") -> None:
    """Raise ``EnvSettingError`` unless every entry names an importable callable whose signature
    takes the env plus the given keyword arguments."""
    for i, (target, kwargs) in enumerate(_wrapper_entries(wrappers, what)):
        cls = locate(target, f"{what}[{i}]._target_")
        if not callable(cls):
            raise EnvSettingError(f"{what}[{i}]._target_={target!r} is not callable")
        try:
            inspect.signature(cls).bind(None, **kwargs)
        except TypeError as e:
            raise EnvSettingError(f"{what}[{i}] ({target}): {e}") from None
        except ValueError:  # no introspectable signature: let the call itself tell
            pass


def apply_wrappers(env: Any, wrappers: Iterable[Any], what: str = "env.wrappers") -> Any:
    """``env`` inside each configured gymnasium wrapper, first entry innermost."""
    for i, (target, kwargs) in enumerate(_wrapper_entries(wrappers, what)):
        env = locate(target, f"{what}[{i}]._target_")(env, **kwargs)
    return env


def make_env(
    env_id: str, kwargs: dict[str, Any] | None = None, wrappers: Iterable[Any] = ()
) -> Any:
    """``gymnasium.make(env_id, **kwargs)`` inside ``wrappers`` (see ``apply_wrappers``)."""
    import gymnasium

    return apply_wrappers(gymnasium.make(env_id, **(kwargs or {})), wrappers)


def _unsupported_keys(space: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(path, space type)`` of spaces inside ``space`` that cannot be arrays (gymnasium
    ``Text``, MiniGrid's ``MissionSpace``, ...): ``[("mission", "MissionSpace")]``."""
    import gymnasium.spaces as gs

    if isinstance(space, gs.Dict):
        items: Iterable[tuple[Any, Any]] = space.spaces.items()
    elif isinstance(space, gs.Tuple):
        items = enumerate(space.spaces)
    elif isinstance(space, (gs.Box, gs.Discrete, gs.MultiDiscrete, gs.MultiBinary)):
        return []
    else:
        return [(prefix or "<observation>", type(space).__name__)]
    return [
        p for k, s in items for p in _unsupported_keys(s, f"{prefix}.{k}" if prefix else str(k))
    ]


def refuse_unsupported(env: Any) -> None:
    """Raise ``EnvSettingError`` naming observation keys that cannot be arrays and the wrapper
    that drops them."""
    bad = _unsupported_keys(env.observation_space)
    if not bad:
        return
    space = env.observation_space
    names = {k for k, _ in bad}
    keep = [k for k in getattr(space, "spaces", {}) if isinstance(k, str) and k not in names]
    fix = (
        f"{{_target_: gymnasium.wrappers.FilterObservation, filter_keys: [{', '.join(keep)}]}}"
        if keep
        else "{_target_: <a gymnasium ObservationWrapper that removes it>}"
    )
    what = ", ".join(f"{k!r} (a {t})" for k, t in bad)
    raise EnvSettingError(
        f"{env.spec.id if env.spec else type(env.unwrapped).__name__}: observation key {what} "
        "cannot be stored as an array. Drop it with a gymnasium wrapper in env.wrappers, e.g. "
        f"env.wrappers='[{fix}]' (for MiniGrid: env.wrappers='[{{_target_: "
        "minigrid.wrappers.ImgObsWrapper}]', image only)"
    )


def _float32(space: Space) -> Space:
    """A float64 ``Box`` as float32 (the policy's dtype, half the buffer memory); else ``space``."""
    if isinstance(space, Box) and space.dtype == np.float64:
        return Box(space.low, space.high, shape=space.shape, dtype=np.float32)
    return space


class GymnasiumEnv(PufferEnv):
    """A gymnasium env (an instance, or an id for ``gymnasium.make(id, **make_kwargs)``)."""

    def __init__(self, env_or_id: Any, **make_kwargs: Any):
        import gymnasium

        if isinstance(env_or_id, str):
            env = gymnasium.make(env_or_id, **make_kwargs)
        elif isinstance(env_or_id, gymnasium.Env):
            if make_kwargs:
                raise ValueError(
                    f"GymnasiumEnv: make_kwargs {sorted(make_kwargs)} only apply to an env id, "
                    f"not to the instance {env_or_id!r}"
                )
            env = env_or_id
        else:
            raise TypeError(
                f"GymnasiumEnv needs a gymnasium.Env or a registered id, got {env_or_id!r}"
            )
        self.env = env
        refuse_unsupported(env)
        self.original_observation_space: Space = _float32(from_gymnasium(env.observation_space))
        self._flatten = not isinstance(self.original_observation_space, Box)
        self.observation_space = (
            flatten_space(self.original_observation_space)
            if self._flatten
            else self.original_observation_space
        )
        self.action_space: Space = from_gymnasium(env.action_space)
        if not isinstance(self.action_space, (Box, Discrete, MultiDiscrete)):
            raise ValueError(
                f"GymnasiumEnv: action space {env.action_space} is not supported; use Discrete, "
                "MultiDiscrete, Box or MultiBinary actions"
            )
        self._gym_action_dtype = getattr(env.action_space, "dtype", None)

    def _observation(self, obs: Any) -> np.ndarray:
        if self._flatten:
            return flatten(self.original_observation_space, obs)
        return np.asarray(obs, dtype=self.observation_space.dtype)

    def _action(self, action: Any) -> Any:
        if isinstance(self.action_space, Discrete):
            return int(action)
        return np.asarray(action, dtype=self._gym_action_dtype)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        return self._observation(obs), dict(info)

    def step(self, action: Any) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(self._action(action))
        return StepResult(
            self._observation(obs), float(reward), bool(terminated), bool(truncated), dict(info)
        )

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"GymnasiumEnv({self.env})"
