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
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from puffer import checks, dist
from puffer.checkpoint import CheckpointDir
from puffer.device import check_device
from puffer.dist import DistConfig
from puffer.envs.config import EnvConfig, env_label, rows_per_env
from puffer.evaluation import PeriodicEvalConfig
from puffer.policy import PolicyConfig
from puffer.ppo.config import PPOConfig
from puffer.pruning import SweepConfig
from puffer.vector import VectorConfig

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
    "positive_int",
    "register",
    "validate",
]

DASHBOARDS = ("auto", "rich", "plain", "off")
WANDB_MODES = ("online", "offline", "disabled")


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


def job_config(config: DictConfig) -> DictConfig:
    """A Hydra callback's config without its ``hydra`` node: what the task will get."""
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def exit_code(e: SystemExit, failed: int = 1) -> int:
    """The exit code a ``SystemExit`` carries (``None``: 0; a message: ``failed``)."""
    return e.code if isinstance(e.code, int) else (0 if e.code is None else failed)


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
    ``OverrideParseException.override``, OmegaConf's ``full_key``/``value``), never their text; a
    ``ConfigError`` is already that paragraph.
    """
    if isinstance(exc, ConfigError):
        return str(exc)
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


# Config group options that packages of the sweep extra (pyproject.toml) provide, not conf/.
FROM_SWEEP_EXTRA = {
    "hydra/sweeper/puffer_optuna": "puffer's Optuna sweeper (hydra_plugins/puffer_optuna)",
    "hydra/launcher/joblib": "hydra-joblib-launcher (hydra/launcher=parallel)",
}


def _missing_option(missing: str, options: list[str]) -> str:
    group, _, option = missing.rpartition("/")
    if missing in FROM_SWEEP_EXTRA:
        return (
            f"{group}={option} comes from {FROM_SWEEP_EXTRA[missing]}, which is not installed: "
            "pip install -e '.[sweep]'."
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
    try:
        checks.positive_int(key, value, optional=optional)
    except ValueError as e:
        raise ConfigError(f"{e}.") from None


def validate(cfg: DictConfig) -> None:
    """Check values that types cannot: choices, ranges and consistency. Raises ``ConfigError``.

    Each group's own dataclass checks its settings (``EnvConfig.validate``, ``VectorConfig``,
    ``DistConfig``, ``PPOConfig``, ``PolicyConfig``, ``PeriodicEvalConfig``); this adds the
    front end's own keys and what spans groups.
    """
    _check_schema_keys(cfg, OmegaConf.structured(TrainConfig))
    _validate_dataclass(cfg.env, "env")
    try:
        rows = rows_per_env(cfg.env)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    torchrun, nproc = dist.torchrun_world(), cfg.dist.nproc
    world_size = torchrun.world_size if torchrun else None  # ranks torchrun started
    # The ranks that share the rows (dist's own check below refuses a bad nproc).
    ranks = world_size or (nproc if isinstance(nproc, int) and nproc > 0 else 1)
    _validate_dataclass(cfg.vector, "vector", rows_per_env=rows, ranks=ranks)
    try:
        check_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key, choices in (
        ("dashboard", DASHBOARDS),
        ("logger.wandb.mode", WANDB_MODES),
        ("objective", ("train", "eval")),
    ):
        value = OmegaConf.select(cfg, key)
        _require(value in choices, f"{key}={value!r}: use one of {', '.join(choices)}.")
    _require(
        0 <= cfg.seed < 2**63,
        f"seed={cfg.seed}: use an int from 0 to 2**63 - 1 (numpy's SeedSequence takes no "
        "negative seed, and torch seeds its generators with 64-bit values derived from it).",
    )
    for key in ("checkpoint.interval", "checkpoint.keep", "torch_threads"):
        positive_int(key, OmegaConf.select(cfg, key), optional=key == "torch_threads")
    num_envs = cfg.vector.num_envs
    _validate_dataclass(
        cfg.dist, "dist", num_envs=num_envs, world_size=world_size, device=cfg.device
    )
    _validate_dataclass(cfg.ppo, "ppo", num_envs=num_envs // ranks)
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
        _refuse_live(run)


def _refuse_live(run: Path) -> None:
    """A run still training in another process cannot be resumed: both would write its files."""
    from puffer.runs import live_writer

    live = live_writer(run)
    if live is not None:
        pid, host = live
        raise ConfigError(
            f"resume={run}: the run is still training (pid {pid} on {host}). Wait for it to "
            f"finish, or stop it (kill -INT {pid}: it checkpoints and exits), then resume it."
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
