"""``python -m puffer.train [overrides]``: train PPO on an env, one run directory per run.

    python -m puffer.train env=cartpole policy=lstm
    python -m puffer.train -m ppo.learning_rate=1e-3,3e-3 env=cartpole,bandit
    python -m puffer.train resume=outputs/cartpole/2026-01-01_12-00-00

The Hydra app composes ``conf/config.yaml``; ``main`` checks the overrides and values first (so a
mistake fails in a second with one clear paragraph, before any env or worker starts), then runs it.
The task function returns the objective (the final mean episode return) for sweepers.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import puffer
from puffer import checkpoint as ckpt
from puffer.config import (
    CONF_DIR,
    ConfigError,
    compose,
    import_creator,
    override_key,
    validate,
    writable_dir_problem,
)
from puffer.loggers import StopRun
from puffer.runs import METRICS, SUMMARY, SweepSummary, read_overrides, write_json

log = logging.getLogger("puffer")

EXIT_FAILED, EXIT_CONFIG = 1, 2
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint; ``code`` is 130 or 143."""

    def __init__(self, signum: int):
        self.signum = signum
        self.code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


# -- building the parts ------------------------------------------------------------------------------


def env_creator(cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
    """``(creator, env_kwargs)`` for ``puffer.vector.make``: a built-in name, gymnasium or custom."""
    kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    assert isinstance(kwargs, dict)
    if cfg.env.name == "gymnasium":
        from puffer.emulation import GymnasiumEnv

        return functools.partial(GymnasiumEnv, cfg.env.id), kwargs
    if cfg.env.name == "custom":
        return import_creator(cfg.env.creator), kwargs
    return cfg.env.name, kwargs


def make_vecenv(cfg: DictConfig, num_envs: int | None = None, backend: str | None = None) -> Any:
    """The ``VecEnv`` ``cfg.env`` and ``cfg.vector`` describe (``num_envs``/``backend`` override).

    Raises ``ConfigError`` when the env rejects its settings (bad vector values or env kwargs).
    """
    from puffer import vector

    creator, env_kwargs = env_creator(cfg)
    backend = backend or cfg.vector.backend
    vec = cfg.vector
    parallel = (
        {
            "timeout": vec.timeout,
            "start_method": vec.start_method,
            "oversubscribe": vec.oversubscribe,
        }
        if backend == "multiprocessing"
        else {}
    )
    try:
        return vector.make(
            creator,
            num_envs=num_envs or vec.num_envs,
            backend=backend,
            num_workers=vec.num_workers if backend == "multiprocessing" else None,
            batch_size=vec.batch_size,
            seed=cfg.seed,
            env_kwargs=env_kwargs or None,
            **parallel,
        )
    except (ValueError, TypeError) as e:  # bad vector settings or env kwargs
        raise ConfigError(f"cannot make the env: {e}") from e


def ppo_config(cfg: DictConfig) -> Any:
    """``cfg.ppo`` as the ``PPOConfig`` dataclass the Trainer takes."""
    return OmegaConf.to_object(cfg.ppo)


def policy_config(cfg: DictConfig) -> Any:
    """``cfg.policy`` as the ``PolicyConfig`` dataclass ``puffer.policy.make`` takes."""
    return OmegaConf.to_object(cfg.policy)


# -- signals ---------------------------------------------------------------------------------------


class StopFlag:
    """Records SIGINT/SIGTERM so training stops at the next update boundary (a second one aborts)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            # A process forked before the worker loop set its own handlers (a group-wide signal
            # can arrive in between): the main process stops it through the VecEnv's close().
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum  # no printing here: it would tear the live dashboard

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread (e.g. a threaded launcher): no handlers
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# -- the training run ------------------------------------------------------------------------------


def _resume_checkpoint(run_dir: Path) -> Path:
    latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    if latest is None:
        raise ConfigError(f"resume: no checkpoint in {run_dir / 'checkpoints'}")
    return latest


def save_checkpoint(checkpoints: ckpt.CheckpointDir, trainer: Any, cfg: DictConfig) -> Path:
    """Checkpoint ``trainer`` (with ``cfg``) in ``checkpoints``; weights that are no longer finite
    raise ``FloatingPointError`` instead, so the last good checkpoint stays the latest."""
    import torch

    bad = [n for n, p in trainer.policy.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"the policy's weights are not finite after update {trainer.epoch} ({', '.join(bad)}); "
            "not checkpointed. Lower ppo.learning_rate or enable "
            "ppo.normalize_rewards/normalize_observations"
        )
    state = {
        "trainer": trainer.state_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.epoch),
        "puffer_version": puffer.__version__,
    }
    return checkpoints.save(state, trainer.global_step)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint ``run`` wrote; ``CheckpointError`` naming the file if it is not one."""
    state = ckpt.load(path)
    trainer = state.get("trainer")
    if not isinstance(trainer, dict) or "policy" not in trainer:
        raise ckpt.CheckpointError(
            f"checkpoint {path} is not a puffer training checkpoint (no trainer/policy entry)"
        )
    return state


def objective(trainer: Any) -> float | None:
    """The mean return of the last 100 episodes (None before any episode ended)."""
    returns = trainer.recent_episodes("episode_return") if trainer is not None else []
    return float(sum(returns) / len(returns)) if returns else None


def make_trainer(cfg: DictConfig, resume: Path | None = None) -> Any:
    """The env, policy and ``Trainer`` ``cfg`` describes, restored from the checkpoint ``resume``."""
    from puffer import policy as policies
    from puffer.ppo.trainer import Trainer

    state = load_checkpoint(resume)["trainer"] if resume is not None else None
    vecenv = make_vecenv(cfg)
    try:
        policy = policies.make(policy_config(cfg), vecenv, seed=cfg.seed)
        trainer = Trainer(
            ppo_config(cfg),
            vecenv,
            policy,
            device=cfg.device,
            seed=cfg.seed,
            torch_threads=cfg.torch_threads,
        )
        if state is not None:
            try:
                trainer.load_state_dict(state)
            except (KeyError, RuntimeError, ValueError) as e:
                raise ckpt.CheckpointError(
                    f"checkpoint {resume} does not fit this config ({type(e).__name__}: "
                    f"{str(e).splitlines()[0]}); resume with the run's own config (drop "
                    "overrides that change the env, policy or vector)"
                ) from e
    except BaseException:
        vecenv.close()
        raise
    return trainer


def make_loggers(
    cfg: DictConfig, run_dir: Path, trainer: Any, resume_step: int | None, console: Any = None
) -> Any:
    """metrics.jsonl, the sinks ``cfg.logger`` enables and the dashboard, as one ``Loggers``."""
    from puffer import pruning
    from puffer.dashboard import RunInfo, make_dashboard
    from puffer.loggers import Loggers, MetricsJsonl, TensorBoard, Wandb

    loggers = Loggers()
    try:
        loggers.add(MetricsJsonl(run_dir / METRICS, resume_step=resume_step))
        if cfg.logger.tensorboard:
            loggers.add(TensorBoard(run_dir / "tb", resume_step=resume_step))
        w = cfg.logger.wandb
        if w.enabled and w.mode != "disabled":
            config = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(config, dict)
            loggers.add(
                Wandb(
                    run_dir,
                    config,
                    mode=w.mode,
                    project=w.project,
                    entity=w.entity,
                    group=w.group,
                    tags=list(w.tags),
                    name=f"{env_label(cfg)}/{run_dir.name}",
                )
            )
        info = RunInfo(
            env=env_label(cfg),
            total_timesteps=cfg.ppo.total_timesteps,
            params=sum(p.numel() for p in trainer.policy.parameters()),
            policy=cfg.policy.name,
            device=str(trainer.device),
            backend=cfg.vector.backend,
            num_envs=cfg.vector.num_envs,
            run_dir=str(run_dir),
            start_step=int(trainer.global_step),
        )
        for sink in pruning.sinks(cfg):
            loggers.add(sink)
        dashboard = make_dashboard(cfg.dashboard, info, console)
        if dashboard is not None:
            loggers.add(dashboard)
    except BaseException:
        loggers.close()
        raise
    return loggers


def env_label(cfg: DictConfig) -> str:
    """The env as runs are named: the gymnasium id, the custom creator's name, or the name."""
    from puffer.config import env_label as label

    return label(cfg.env.name, cfg.env.id, cfg.env.creator)


def run(cfg: DictConfig, run_dir: str | os.PathLike[str], console: Any = None) -> dict[str, Any]:
    """Train as ``cfg`` says, writing the run directory; returns the summary (also summary.json).

    Validates ``cfg`` first. Raises ``TrainingInterrupted`` after checkpointing when SIGINT/SIGTERM
    arrives (until the run directory is complete, cleanup included), and re-raises errors (a bad
    config, a NaN loss, an env failure) after recording them; the last good checkpoint stays.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary: dict[str, Any] = {"status": "starting", "env": env_label(cfg), "run_dir": str(run_dir)}
    write_json(run_dir / SUMMARY, summary)

    stop = StopFlag()
    loggers = trainer = None
    status, stopped = "failed", "completed"
    sps: deque[float] = deque(maxlen=10)  # the last updates' rates, for the summary
    with stop.installed():
        try:
            validate(cfg)
            checkpoints = ckpt.CheckpointDir(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
            resume = _resume_checkpoint(Path(cfg.resume)) if cfg.resume is not None else None
            if resume is not None:
                log.info("resuming from %s", resume)
            trainer = make_trainer(cfg, resume)
            last_saved = int(trainer.global_step) if resume is not None else -1
            loggers = make_loggers(
                cfg, run_dir, trainer, trainer.global_step if resume else None, console
            )
            summary["status"] = "running"
            write_json(run_dir / SUMMARY, summary)
            while not trainer.done and stop.signum is None:
                trainer.evaluate()
                metrics = trainer.train()
                try:
                    loggers.log(metrics, int(trainer.global_step))
                except StopRun as e:
                    log.info("%s", e.message)
                    stopped = e.status
                    break
                if metrics.get("sps") is not None:
                    sps.append(float(metrics["sps"]))
                if trainer.epoch % cfg.checkpoint.interval == 0 or trainer.done:
                    save_checkpoint(checkpoints, trainer, cfg)
                    last_saved = trainer.global_step
            if trainer.global_step != last_saved:
                save_checkpoint(checkpoints, trainer, cfg)
            status = "interrupted" if stop.signum is not None else stopped
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            summary["error"] = f"{type(e).__name__}: {e}"
            summary["traceback"] = traceback.format_exc()
            if stop.signum is not None and isinstance(e, Exception):
                # The signal reached the env workers too and broke this update: an interruption.
                status = "interrupted"
                log.warning("update interrupted by the signal (%s); keeping the last checkpoint", e)
            else:
                raise
        finally:
            # Still under the signal handlers: a SIGTERM now must not kill the process before
            # the logs are flushed, W&B is finished, the workers are reaped and the summary is out.
            latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
            summary.update(
                status=status,
                objective=objective(trainer),
                global_step=int(trainer.global_step) if trainer is not None else 0,
                epoch=int(trainer.epoch) if trainer is not None else 0,
                sps=round(sum(sps) / len(sps), 1) if sps else None,
                wall_time=round(time.time() - started, 3),
                latest_checkpoint=str(latest) if latest else None,
            )
            try:
                if loggers is not None:
                    loggers.close()
            finally:
                if trainer is not None:
                    trainer.close()
                write_json(run_dir / SUMMARY, summary)
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum)
    return summary


def _task(cfg: DictConfig) -> float:
    """The Hydra task: one run in Hydra's output dir; returns the objective (NaN if it failed)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    console = None
    if multirun and cfg.dashboard == "auto":
        from rich.console import Console

        console = Console(force_terminal=False)  # sweep jobs print plain lines, even on a terminal
    try:
        summary = run(cfg, run_dir, console)
    except TrainingInterrupted as e:
        print(f"puffer: {e}; checkpoint and logs saved in {run_dir}", file=sys.stderr)
        raise SystemExit(e.code) from None
    except KeyboardInterrupt:
        print(f"puffer: aborted; logs in {run_dir}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"puffer: {_failure_message(e, run_dir)}", file=sys.stderr)
        if not multirun:
            raise SystemExit(EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_FAILED) from None
        if hc.sweeper.get("_target_") == BASIC_SWEEPER:
            return float("nan")  # an exception would stop the basic sweeper's remaining jobs
        raise  # other sweepers mark the trial failed (the Optuna plugin crashes on a NaN)
    score = summary["objective"]
    print(
        f"puffer: done: {summary['global_step']:,} steps in {summary['wall_time']:.1f}s, "
        f"mean return {score if score is None else round(score, 4)}; run dir {run_dir}"
    )
    return float("nan") if score is None else float(score)


def _failure_message(e: BaseException, run_dir: Path) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, ConfigError | ckpt.CheckpointError):
        return first
    latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    kept = f"; last good checkpoint {latest}" if latest else "; no checkpoint was written"
    return (
        f"training failed: {type(e).__name__}: {first}{kept}. Traceback in {run_dir / SUMMARY} "
        "(or rerun with HYDRA_FULL_ERROR=1)."
    )


# -- the command line ------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A Hydra override value that keeps ``value`` verbatim (paths with spaces, colons, ...)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def resume_overrides(overrides: list[str]) -> list[str]:
    """For ``resume=<run dir>``: the run's own overrides, then these, then the run's directory."""
    resume = [o for o in overrides if override_key(o) == "resume"]
    if not resume:
        return overrides
    run_dir = resume[-1].split("=", 1)[1].strip("'\"")
    if not (Path(run_dir) / ".hydra").is_dir():
        raise ConfigError(
            f"resume={run_dir}: not a run directory (no .hydra/ inside); give the directory a "
            "training run created, e.g. resume=outputs/cartpole/<date>_<time>"
        )
    merged: dict[str, str] = {}
    for o in [*read_overrides(run_dir), *overrides]:
        merged.pop(override_key(o), None)  # later wins, in its own position
        merged[override_key(o)] = o
    merged["resume"] = f"resume={_quote(str(Path(run_dir)))}"
    merged["hydra.run.dir"] = f"hydra.run.dir={_quote(str(Path(run_dir)))}"
    return list(merged.values())


def _sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Override lists covering every value of every sweep (one at a time, others at their first)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices: list[list[str]] = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # interval sweeps (optuna) have no list of values
                values = []
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in values])
        else:
            choices.append([o.input_line])
    base = [c[0] for c in choices if c]
    combos = [base]
    for i, c in enumerate(choices):
        for v in c[1:]:
            combo = [*base]
            combo[sum(1 for x in choices[:i] if x)] = v
            combos.append(combo)
    return combos


def check(overrides: list[str], multirun: bool = False) -> DictConfig:
    """Compose and validate as the app would, and check the output directory can be written.

    Raises ``ConfigError``; returns the (first) composed config.
    """
    combos = _sweep_combinations(overrides) if multirun else [overrides]
    first = None
    for combo in combos:
        cfg = compose(combo, return_hydra_config=True)
        if first is None:
            out = cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir
            problem = writable_dir_problem(out)
            if problem:
                raise _run_dir_error(out, problem)
            first = cfg
        body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        validate(body)
    assert first is not None
    return first


def _run_dir_error(out: str, problem: object) -> ConfigError:
    return ConfigError(
        f"cannot create the run directory {out}: {problem}. Run from a writable directory or "
        "choose another with hydra.run.dir=<dir> (hydra.sweep.dir=<dir> with -m)."
    )


def claim_dir(path: str | os.PathLike[str]) -> str:
    """Create ``path`` (or ``path-1``, ``path-2``, ... if taken) and return it.

    Two runs started within the same second would otherwise share one timestamped directory.
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise ConfigError(f"cannot find a free run directory next to {base}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m puffer.train`` and ``puffer train``; returns the exit code."""
    import hydra
    from hydra._internal.utils import get_args_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = get_args_parser().parse_known_args(argv)
    informational = args.help or args.hydra_help or args.info or args.cfg or args.shell_completion
    overrides = [o for o in argv if not o.startswith("-") and "=" in o]
    flags = [a for a in argv if a not in overrides]
    try:
        if args.multirun and any(override_key(o) == "resume" for o in overrides):
            raise ConfigError("resume= continues one run: drop -m (or resume each job's directory)")
        overrides = resume_overrides(overrides)
        if not informational and args.config_name is None and args.config_dir is None:
            cfg = check(overrides, multirun=args.multirun)
            key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
            out = cfg.hydra.sweep.dir if args.multirun else cfg.hydra.run.dir
            try:  # created here, so that Hydra's own attempt cannot fail with a traceback
                if any(override_key(o) == key for o in overrides):
                    Path(out).mkdir(parents=True, exist_ok=True)
                else:
                    overrides.append(f"{key}={_quote(claim_dir(out))}")
            except OSError as e:
                raise _run_dir_error(out, e) from e
    except (ConfigError, FileNotFoundError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"puffer: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG

    app: Callable[[], Any] = hydra.main(
        version_base="1.3", config_path=str(CONF_DIR), config_name="config"
    )(_task)
    SweepSummary.failed_jobs = 0
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "puffer.train", *flags, *overrides]
    try:
        app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
    finally:
        sys.argv = saved_argv
    if args.multirun and SweepSummary.failed_jobs:
        print(f"puffer: {SweepSummary.failed_jobs} sweep job(s) did not complete", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
