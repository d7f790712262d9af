"""One place that turns a composed config into the parts of a run: env, policy, trainer, loggers.

Used by ``puffer.train`` (new runs and ``resume=``) and ``puffer.eval``. A run is reloaded from its
own ``.hydra/config.yaml`` (Hydra's record of the composed config) with the values this command
line sets taken from this command line's composed config (``reload``), never from override text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf

from puffer import checkpoint as ckpt
from puffer import dist
from puffer.config import ConfigError, TrainConfig
from puffer.envs.config import creator, env_label

__all__ = [
    "make_loggers",
    "make_policy",
    "make_trainer",
    "make_vecenv",
    "reload",
    "rows_per_env",
]

GROUPS = ("env", "vector", "policy", "ppo", "logger", "checkpoint")


def reload(
    run_dir: str | os.PathLike[str], new: DictConfig, skip: tuple[str, ...] = ()
) -> DictConfig:
    """The config of the run in ``run_dir`` with what this command line changed on top.

    ``new`` is this command line's composed config (Hydra's ``overrides.task`` tell which keys it
    set); a group choice (``env=bandit``) replaces the whole group, a key (``env.kwargs.x=1``) one
    value. Values are copied unresolved, so escaped interpolations stay escaped. Keys in ``skip``
    (and ``hydra.*``) are not the run's. Raises ``ConfigError`` if ``run_dir`` is not a run.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = Path(run_dir) / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{run_dir} is not a run directory (no {saved}); give a directory python -m "
            "puffer.train created, e.g. outputs/cartpole/<date>_<time>"
        )
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(saved))
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or key.split(".")[0] in skip:
            continue
        value = OmegaConf.select(new, key)
        if not isinstance(value, Container):  # a leaf: its unresolved value, escapes and all
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(new, parent) if parent else new
            value = OmegaConf.to_container(node, resolve=False)[leaf]  # type: ignore[index]
        OmegaConf.update(cfg, key, value, merge=False, force_add=key.startswith("env.kwargs."))
    return cfg  # type: ignore[return-value]


def make_vecenv(
    cfg: DictConfig,
    num_envs: int | None = None,
    backend: str | None = None,
    training: bool = True,
    **layout: Any,
) -> Any:
    """The ``VecEnv`` ``cfg.env``/``cfg.vector`` describe (``num_envs``, ``backend``, ``num_workers``
    override; ``training=False`` for evaluation, e.g. Atari keeps lives). Raises ``ConfigError``
    when the env rejects its settings."""
    from puffer import vector

    env_creator, env_kwargs = creator(cfg.env, training)
    vec = cfg.vector
    backend = backend or vec.backend
    parallel = backend == "multiprocessing"
    options = (
        dict(timeout=vec.timeout, start_method=vec.start_method, oversubscribe=vec.oversubscribe)
        if parallel
        else {}
    )
    try:
        return vector.make(
            env_creator,
            num_envs=num_envs or vec.num_envs,
            backend=backend,
            num_workers=layout.get("num_workers", vec.num_workers) if parallel else None,
            batch_size=vec.batch_size,
            seed=cfg.seed,
            env_kwargs=env_kwargs or None,
            **options,
        )
    except (ValueError, TypeError) as e:  # bad vector settings or env kwargs
        raise ConfigError(f"cannot make the env: {e}") from e


def rows_per_env(cfg: DictConfig) -> int:
    """Rows one env of ``cfg.env`` takes: its agents (1 for a one-agent env); a PettingZoo or
    custom env is built once to tell. Raises ``ConfigError`` when the env rejects its settings."""
    from puffer import vector

    try:
        return vector.rows_per_env(*creator(cfg.env, training=False))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"cannot make the env: {e}") from e


def make_policy(cfg: DictConfig, vecenv: Any) -> Any:
    """The policy ``cfg.policy`` describes, for ``vecenv``'s spaces."""
    from puffer import policy as policies

    return policies.make(OmegaConf.to_object(cfg.policy), vecenv, seed=cfg.seed)


def _saved_layout(cfg: DictConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's worker count when ``cfg`` leaves it open and it still fits this machine;
    else ``{}`` (the default layout: the trainer then starts fresh episodes and says so)."""
    from puffer.vector import layout

    workers = (meta.get("env") or {}).get("num_workers")
    vec = cfg.vector
    if workers is None or vec.backend != "multiprocessing" or vec.num_workers is not None:
        return {}
    try:
        layout(
            vec.num_envs, workers, vec.batch_size, parallel=True, oversubscribe=vec.oversubscribe
        )
    except ValueError:
        return {}
    return {"num_workers": workers}


def _resume(trainer: Any, saved: dict[str, Any], path: Any, here: dist.World) -> None:
    """Load ``saved`` (the checkpoint at ``path``) into ``trainer``: a distributed checkpoint gives
    each rank its own env and rollout state (``dist.rank_state``)."""
    ranks = saved["meta"].get("dist", {}).get("ranks")
    if ranks is None and here.world_size == 1:
        trainer.load(path)
        return
    try:
        trainer.load_state_dict(dist.rank_state(saved["trainer"], ranks, here))
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise ckpt.CheckpointError(
            f"checkpoint {path} does not fit this trainer: {detail}"
        ) from None


def make_trainer(cfg: DictConfig, checkpoint: str | os.PathLike[str] | None = None) -> Any:
    """The env, policy and ``Trainer`` ``cfg`` describes, resumed from ``checkpoint`` if given.

    Raises ``CheckpointError`` naming the file when it cannot be read or used with ``cfg``.
    """
    from puffer.ppo.trainer import Trainer

    here = dist.world()
    if here.world_size > 1:  # this rank's env rows and seed (puffer.dist)
        cfg = dist.rank_config(cfg, here)
    # Rank 0 reads the checkpoint and sends it: the other ranks need not see the file.
    saved = (
        dist.broadcast_object(ckpt.load(checkpoint) if here.is_rank0 else None)
        if checkpoint
        else None
    )
    vecenv = make_vecenv(cfg, **_saved_layout(cfg, saved["meta"] if saved else {}))
    try:
        trainer = Trainer(
            OmegaConf.to_object(cfg.ppo),
            vecenv,
            make_policy(cfg, vecenv),
            device=cfg.device,
            seed=cfg.seed,
            torch_threads=cfg.torch_threads,
        )
        dist.broadcast_module(trainer.policy)  # every rank starts from rank 0's weights
        if saved is not None:
            _resume(trainer, saved, checkpoint, here)
    except BaseException:
        vecenv.close()
        raise
    return trainer


def _sweep_dir() -> str | None:
    """The sweep directory of this Hydra multirun job (its W&B group), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().sweep.dir)
    return None


def make_loggers(
    cfg: DictConfig,
    run_dir: Path,
    trainer: Any,
    resume_step: int | None,
    console: Any = None,
    sinks: tuple[Any, ...] = (),
) -> Any:
    """metrics.jsonl, the run log's progress lines, the sinks ``cfg.logger`` enables, ``sinks``
    and the dashboard, as one ``Loggers``."""
    from puffer.loggers import Loggers, LogProgress, MetricsJsonl, TensorBoard, Wandb

    label = env_label(cfg.env.name, cfg.env.id, cfg.env.creator)
    loggers = Loggers()
    try:
        loggers.add(MetricsJsonl(run_dir / "metrics.jsonl", resume_step=resume_step))
        loggers.add(LogProgress(cfg.ppo.total_timesteps))
        if cfg.logger.tensorboard:
            loggers.add(TensorBoard(run_dir / "tb", resume_step=resume_step))
        w = cfg.logger.wandb
        if w.enabled and w.mode != "disabled":
            config = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(config, dict)
            loggers.add(
                Wandb(run_dir, config, mode=w.mode, project=w.project, entity=w.entity,
                      group=w.group or _sweep_dir(), tags=list(w.tags),
                      name=f"{label}/{run_dir.name}")
            )  # fmt: skip
        for sink in sinks:
            loggers.add(sink)
        dashboard = _dashboard(cfg, run_dir, trainer, console)
        if dashboard is not None:
            loggers.add(dashboard)
    except BaseException:
        loggers.close()
        raise
    return loggers


def _dashboard(cfg: DictConfig, run_dir: Path, trainer: Any, console: Any) -> Any:
    """The live terminal dashboard ``cfg.dashboard`` asks for (None when off)."""
    from puffer.dashboard import RunInfo, make_dashboard

    info = RunInfo(
        env=env_label(cfg.env.name, cfg.env.id, cfg.env.creator),
        total_timesteps=cfg.ppo.total_timesteps,
        params=sum(p.numel() for p in trainer.policy.parameters()),
        policy=cfg.policy.name,
        device=str(trainer.device),
        backend=cfg.vector.backend,
        num_envs=cfg.vector.num_envs,
        run_dir=str(run_dir),
        start_step=int(trainer.global_step),
    )
    return make_dashboard(cfg.dashboard, info, console)
