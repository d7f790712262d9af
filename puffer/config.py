"""Hydra config schemas, composition and validation for ``puffer.train`` / ``puffer.eval``.

The top-level schema ``TrainConfig`` is registered in Hydra's ConfigStore as ``schema/train`` and
sits first in ``conf/config.yaml``'s defaults, so every YAML value merged on top of it is checked
against these dataclasses (and ``PPOConfig``/``PolicyConfig``, the same classes the Trainer takes)
at compose time. ``compose`` and ``validate`` turn every failure into a ``ConfigError`` whose
message names the bad key or value and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from puffer import dist
from puffer.checkpoint import CheckpointDir
from puffer.dist import DistConfig
from puffer.evaluation import PeriodicEvalConfig
from puffer.policy import PolicyConfig
from puffer.ppo.config import PPOConfig
from puffer.pruning import SweepConfig

__all__ = [
    "CONF_DIR",
    "CheckpointConfig",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "LoggerConfig",
    "TrainConfig",
    "VectorConfig",
    "WandbConfig",
    "compose",
    "env_label",
    "explain",
    "group_options",
    "import_creator",
    "positive_int",
    "register",
    "validate",
]

BACKENDS = ("serial", "multiprocessing")
DASHBOARDS = ("auto", "rich", "plain", "off")
WANDB_MODES = ("online", "offline", "disabled")


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


@dataclass
class VectorConfig:
    """How env rows are stepped: ``num_envs`` rows, in this process or in worker processes."""

    backend: str = "serial"  # "serial" | "multiprocessing"
    num_envs: int = 8
    num_workers: int | None = None  # multiprocessing: worker processes (None = CPU cores)
    batch_size: int | None = None  # rows per asynchronous batch (None = all rows)
    # multiprocessing only:
    oversubscribe: bool = False  # allow more workers than CPU cores
    timeout: float = 60.0  # seconds a worker may take to answer before TimeoutError
    start_method: str | None = None  # fork | spawn | forkserver (None: fork on Linux)


@dataclass
class WandbConfig:
    """Weights & Biases: ``mode`` offline writes ``<run dir>/wandb/`` for a later ``wandb sync``."""

    enabled: bool = False
    mode: str = "offline"  # "online" | "offline" | "disabled"
    project: str = "puffer"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    """Metric sinks besides ``metrics.jsonl`` and the terminal, which always get every update."""

    tensorboard: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointConfig:
    """Checkpoints every ``interval`` updates and at the end; the newest ``keep`` are kept."""

    interval: int = 50
    keep: int = 3


@dataclass
class TrainConfig:
    """Everything one training run needs; ``conf/config.yaml`` fills it in."""

    env: EnvConfig = field(default_factory=EnvConfig)
    vector: VectorConfig = field(default_factory=VectorConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    # torch intra-op threads (null: torch's default). 1 is fastest for the small networks here and
    # avoids spin-waiting threads on busy cores; raise it for large networks on CPU.
    torch_threads: int | None = 1
    resume: str | None = None  # a run directory to continue
    dashboard: str = "auto"  # "auto" | "rich" | "plain" | "off"
    eval: PeriodicEvalConfig = field(default_factory=PeriodicEvalConfig)  # puffer.evaluation
    objective: str = "train"  # what a sweep optimizes: "train" (last 100 episodes) | "eval"


@dataclass
class EvalConfig(TrainConfig):
    """``python -m puffer.eval``: the run to evaluate and how; the rest overrides the run's config."""

    run: str | None = None  # the run directory (required)
    episodes: int = 10
    deterministic: bool = True
    render: bool = False
    video: bool = False  # also write each episode as <run>/videos/*.mp4 (puffer.video)
    # A file or a name in <run>/checkpoints (default: the latest); replaces the training group.
    checkpoint: Any = None


class ConfigError(ValueError):
    """A config that cannot run: the message names the bad key or value and how to fix it."""


EXIT_CONFIG = 2  # the exit code of a config error (before anything runs)


def _conf_dir() -> Path:
    packaged = Path(__file__).parent / "conf"
    return (
        packaged if (packaged / "config.yaml").is_file() else Path(__file__).parent.parent / "conf"
    )


CONF_DIR = _conf_dir()


def env_label(name: str, env_id: str | None = None, creator: str | None = None) -> str:
    """The run directory's env part: the gymnasium id (without a ``module:`` prefix, ``/`` as
    ``-``: ``ale_py:ALE/Pong-v5`` -> ``ALE-Pong-v5``), the custom creator's name, or the name."""
    if env_id:
        return str(env_id).rpartition(":")[2].replace("/", "-")
    if creator:
        return str(creator).replace(":", ".").rsplit(".", 1)[-1]
    return str(name)


def import_creator(spec: str) -> Any:
    """The callable ``"package.module:attribute"`` names; ``ConfigError`` with the fix if not."""
    import importlib

    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"env.creator={spec!r}: use 'module:callable', e.g. env.creator=my_envs:Corridor"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does: modules next to where you run it
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"env.creator={spec}: cannot import {module_name!r} ({e}); make it importable "
            "(run from its directory or add it to PYTHONPATH)"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ConfigError(
            f"env.creator={spec}: {module_name} has no {attr!r}.{_did_you_mean(attr, names)}"
        ) from None


def register() -> None:
    """Store the schema in Hydra's ConfigStore and add the ``puffer_env_label`` resolver."""
    # The schema is a group so that conf/eval.yaml can swap in EvalConfig under conf/config.yaml.
    ConfigStore.instance().store(group="schema", name="train", node=TrainConfig, package="_global_")
    ConfigStore.instance().store(group="schema", name="eval", node=EvalConfig, package="_global_")
    if not OmegaConf.has_resolver("puffer_env_label"):
        OmegaConf.register_new_resolver("puffer_env_label", env_label)
    if not OmegaConf.has_resolver("puffer_run_dir"):
        OmegaConf.register_new_resolver("puffer_run_dir", run_dir)


def run_dir(resume: str | None, fresh: str) -> str:
    """``hydra.run.dir``: ``fresh`` for a new run; for ``resume=<run>`` the attempt's own directory
    ``<run>/resumes/<time>`` (Hydra's record of it), so the run's own ``.hydra/`` stays as it was."""
    return fresh if resume is None else str(Path(resume) / "resumes" / Path(fresh).name)


register()


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (``env``, ``policy``, ...), sorted."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


# -- composition and error messages ----------------------------------------------------------------


def compose(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_name: str = "config",
    return_hydra_config: bool = False,
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides; ``ConfigError`` on any mistake.

    Works inside a running Hydra app too (its global state is saved and restored).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    running = GlobalHydra.instance().is_initialized()
    saved = Singleton.get_state() if running else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(
                config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
            )
    except Exception as e:
        raise ConfigError(explain(e)) from e
    finally:
        if saved is not None:
            Singleton.set_state(saved)


def _keys_at(path: str) -> list[str]:
    """The keys the schema (or, for ``env.kwargs``, the default env) allows under ``path``."""
    node: Any = OmegaConf.structured(TrainConfig)
    if path == "env.kwargs":
        with contextlib.suppress(ConfigError):
            node = compose()
    node = OmegaConf.select(node, path) if path else node
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def _unknown_key(full_key: str, allowed: list[str], extra: str = "") -> str:
    """The message for ``full_key``, which is not one of ``allowed`` (its parent's keys)."""
    parent, _, leaf = full_key.rpartition(".")
    where = f"{parent!r}" if parent else "the top level"
    hint = _did_you_mean(leaf, allowed)
    listing = ""
    if allowed and not hint:
        listing = f" Keys of {parent or 'the config'}: {', '.join(allowed)}."
    if parent == "env.kwargs":
        hint += f" To pass a new keyword to the env, use +{full_key}=VALUE."
    return f"unknown config key {full_key!r} (no key {leaf!r} in {where}).{hint}{listing}{extra}"


def _expected_type(full_key: str) -> Any:
    """The type the schema declares for ``full_key`` (``policy.hidden_sizes[1]``: the item type)."""
    path, _, index = full_key.partition("[")
    parent, _, leaf = path.rpartition(".")
    node = OmegaConf.select(OmegaConf.structured(EvalConfig), parent) if parent else None
    owner = OmegaConf.get_type(node) if node is not None else EvalConfig
    hint = typing.get_type_hints(owner).get(leaf) if is_dataclass(owner) else None
    if index and typing.get_args(hint):
        hint = typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def explain(exc: BaseException) -> str:
    """One paragraph for a Hydra/OmegaConf composition error, with the fix.

    Reads the exception types and their fields only (Hydra's ``MissingConfigException.options``,
    ``OverrideParseException.override``, OmegaConf's ``full_key``/``value``), never their text.
    """
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, MissingConfigException) and e.missing_cfg_file:
            return _missing_option(e.missing_cfg_file, list(e.options or []))
        if isinstance(e, OverrideParseException):
            return (
                f"cannot parse {e.override!r}. Overrides look like key=value "
                "(ppo.learning_rate=1e-3), group=option (env=bandit) or, with -m, key=a,b for a "
                "sweep; quote values with spaces, commas or quotes: key=\"'it\\'s a,b'\"."
            )
        if isinstance(e, ConfigKeyError | ConfigAttributeError) and e.full_key:
            parent = str(e.full_key).rpartition(".")[0]
            return _unknown_key(str(e.full_key), _keys_at(parent))
        if isinstance(e, ValidationError) and e.full_key:
            key, value = str(e.full_key), e.value
            expected = _expected_type(key)
            wanted = {int: "an integer", float: "a number", bool: "true or false"}
            what = wanted.get(expected, getattr(expected, "__name__", str(expected)))
            return f"{key}={value}: expected {what}, got {value!r}. Fix the value."
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def _missing_option(missing: str, options: list[str]) -> str:
    group, _, option = missing.rpartition("/")
    if group.startswith("hydra/") and option in ("optuna", "joblib"):
        return (
            f"{group}={option} comes from a Hydra plugin that is not installed: "
            "pip install -e '.[sweep]' (hydra-optuna-sweeper, hydra-joblib-launcher)."
        )
    choices = options or group_options(group)
    listed = (
        f" Choices for {group}: {', '.join(choices)} (e.g. {group}={choices[0]})."
        if choices
        else ""
    )
    return f"unknown {group} {option!r}.{_did_you_mean(option, choices)}{listed}"


# -- semantic checks, run before any env or worker starts -------------------------------------------


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def positive_int(key: str, value: Any, *, optional: bool = False) -> None:
    """``ConfigError`` unless ``value`` is an integer >= 1 (or None when ``optional``)."""
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    _require(ok, f"{key}={value!r}: must be a positive integer{' (or null)' if optional else ''}.")


def validate(cfg: DictConfig) -> None:
    """Check values that types cannot: choices, ranges and consistency. Raises ``ConfigError``."""
    from puffer import emulation, envs

    _check_schema_keys(cfg, OmegaConf.structured(TrainConfig))
    env = cfg.env
    if env.name == "custom":
        _require(
            bool(env.creator),
            "env=custom needs env.creator='module:callable' (a PufferEnv, gymnasium Env or VecEnv "
            "factory), e.g. env=custom env.creator=my_envs:Corridor",
        )
        import_creator(env.creator)
    elif env.name in emulation.FAMILIES:  # gymnasium, atari, mujoco, pettingzoo
        try:
            emulation.check(env)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        known = list(envs.names())
        _require(
            env.name in known,
            f"env.name={env.name!r} is not a built-in env.{_did_you_mean(env.name, known)} "
            f"Built-in envs: {', '.join(known)}; or env=gymnasium env.id=<gymnasium id>, or "
            "env=custom env.creator=<module:callable>.",
        )
    _require(
        cfg.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg.device) is not None,
        f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N.",
    )
    if str(cfg.device).startswith("cuda"):
        import torch

        _require(
            torch.cuda.is_available(),
            f"device={cfg.device}: CUDA is not available on this machine; use device=auto or cpu.",
        )
    for key, choices in (
        ("dashboard", DASHBOARDS),
        ("vector.backend", BACKENDS),
        ("logger.wandb.mode", WANDB_MODES),
        ("objective", ("train", "eval")),
    ):
        value = OmegaConf.select(cfg, key)
        _require(value in choices, f"{key}={value!r}: use one of {', '.join(choices)}.")
    for key in ("checkpoint.interval", "checkpoint.keep", "torch_threads"):
        positive_int(key, OmegaConf.select(cfg, key), optional=key == "torch_threads")
    vec = cfg.vector
    if env.name != "custom":  # a custom creator may return several rows per call: make() checks
        from puffer.vector import layout

        try:
            layout(
                vec.num_envs,
                vec.num_workers,
                vec.batch_size,
                parallel=vec.backend == "multiprocessing",
                oversubscribe=vec.oversubscribe,
            )
        except ValueError as e:  # its message starts with the setting: num_envs=0: ...
            raise ConfigError(f"vector.{e}.") from None
    if vec.backend == "multiprocessing":
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        _require(
            vec.start_method is None or vec.start_method in methods,
            f"vector.start_method={vec.start_method!r}: use one of {', '.join(methods)} "
            "(or null for the platform's default).",
        )
        _require(
            vec.timeout > 0,
            f"vector.timeout={vec.timeout}: must be a positive number of seconds.",
        )
    torchrun = dist.torchrun_world()
    ranks = torchrun.world_size if torchrun else None
    _validate_dataclass(
        cfg.dist, "dist", num_envs=vec.num_envs, world_size=ranks, device=cfg.device
    )
    _validate_dataclass(cfg.ppo, "ppo", num_envs=vec.num_envs // (ranks or cfg.dist.nproc))
    _validate_dataclass(cfg.policy, "policy")
    _validate_dataclass(cfg.eval, "eval")
    _require(
        cfg.objective != "eval" or bool(cfg.eval.every or cfg.eval.stop_at is not None),
        "objective=eval needs evaluation during training: add eval.every=<updates>.",
    )
    if cfg.resume is not None:
        run = Path(cfg.resume)
        _require(run.is_dir(), f"resume={cfg.resume}: no such run directory.")
        _require(
            CheckpointDir(run / "checkpoints").latest() is not None,
            f"resume={cfg.resume}: the run has no checkpoints in {run / 'checkpoints'}.",
        )


def _check_schema_keys(node: DictConfig, schema: DictConfig, prefix: str = "") -> None:
    """Refuse keys the schema does not have (a ``+key=value`` override adds them unchecked);
    dict-typed nodes such as ``env.kwargs`` take any key."""
    for key in node:
        if not prefix and key == "hydra":
            continue
        if key not in schema:
            raise ConfigError(
                _unknown_key(
                    f"{prefix}{key}",
                    [str(k) for k in schema],
                    " A '+' override adds new keys only under env.kwargs (+env.kwargs.NAME=VALUE).",
                )
            )
        child, expected = node._get_node(key), schema._get_node(key)
        if (
            isinstance(child, DictConfig)
            and isinstance(expected, DictConfig)
            and is_dataclass(OmegaConf.get_type(expected))
        ):
            _check_schema_keys(child, expected, f"{prefix}{key}.")


def _validate_dataclass(node: DictConfig, prefix: str, **kw: Any) -> None:
    """Call the schema's own ``validate`` if it has one, prefixing its message with the group."""
    obj = OmegaConf.to_object(node)
    check = getattr(obj, "validate", None)
    if check is None:
        return
    try:
        check(**kw)
    except (ValueError, TypeError) as e:
        message = str(e)
        raise ConfigError(message if message.startswith(prefix) else f"{prefix}: {message}") from e
