"""``python -m puffer.train [overrides]``: train PPO on an env, one run directory per run.

    python -m puffer.train env=cartpole policy=lstm
    python -m puffer.train -m ppo.learning_rate=1e-3,3e-3 env=cartpole,bandit
    python -m puffer.train resume=outputs/cartpole/2026-01-01_12-00-00_000000

A Hydra app over ``conf/config.yaml``: Hydra parses the command line, expands sweeps and makes the
run and sweep directories. The ``Checks`` callback validates every job's config before any env,
worker or directory exists (exit 2, one paragraph). The task returns the objective (the final
mean episode return) for sweepers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from puffer import build, dist, pruning
from puffer import checkpoint as ckpt
from puffer.config import (
    CONF_DIR,
    ConfigError,
    TrainConfig,
    compose,
    env_label,
    explain,
    validate,
)
from puffer.evaluation import make_evaluator
from puffer.loggers import Loggers, StopRun
from puffer.runs import (
    SUMMARY,
    SweepSummary,
    final_metrics,
    hparams,
    read_summary,
    write_json,
    write_sweep_summary,
)

log = logging.getLogger("puffer")

EXIT_FAILED, EXIT_CONFIG = 1, 2
USAGE = "usage: python -m puffer.train [-m] [key=value ...] (--help lists every group and key)"
_FULL_ERROR = False  # the user asked for tracebacks (HYDRA_FULL_ERROR=1)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint; ``code`` is 130 or 143."""

    def __init__(self, signum: int):
        self.signum, self.code = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


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


def save_checkpoint(checkpoints: ckpt.CheckpointDir, trainer: Any, cfg: DictConfig) -> Path | None:
    """Checkpoint ``trainer`` (with ``cfg``) in ``checkpoints``; weights that are no longer finite
    raise ``FloatingPointError`` instead, so the last good checkpoint stays the latest. Every rank
    of a distributed run calls it; rank 0 writes (the others get None)."""
    import torch

    bad = [n for n, p in trainer.policy.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"the policy's weights are not finite after update {trainer.update_count} "
            f"({', '.join(bad)}); not checkpointed. Lower ppo.learning_rate or enable "
            "ppo.normalize_rewards/normalize_observations"
        )
    meta: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=False)}  # round-trips
    if dist.world().world_size > 1:  # every rank's env and rollout state, written by rank 0
        ranks = dist.gather_rank_states(trainer.state_dict())
        if ranks is None:
            return None
        meta["dist"] = {"world_size": len(ranks), "ranks": ranks}
    return checkpoints.commit(trainer.save(checkpoints.path(trainer.global_step), meta=meta))


def objective(trainer: Any) -> float | None:
    """The mean return of the last 100 episodes (None before any episode ended)."""
    returns = trainer.recent_episodes("episode_return") if trainer is not None else []
    return float(sum(returns) / len(returns)) if returns else None


def _latest(run_dir: Path) -> Path:
    latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    if latest is None:
        raise ConfigError(f"resume: no checkpoint in {run_dir / 'checkpoints'}")
    return latest


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Also write the root logger's lines (and progress) to ``path`` unless Hydra already does."""
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(path.absolute()) for h in root.handlers):
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    progress = logging.getLogger("puffer.progress")
    root.addHandler(handler)
    progress.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        progress.removeHandler(handler)
        handler.close()


def run(
    cfg: DictConfig,
    run_dir: str | os.PathLike[str],
    console: Any = None,
    sinks: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Train as ``cfg`` (already validated) says in ``run_dir``; returns the summary (also
    summary.json). ``sinks`` get every update's metrics too (one may raise ``StopRun``).

    With ``cfg.resume`` (== ``run_dir``) the run continues from its latest checkpoint and nothing
    in it changes until the trainer has loaded; a finished run is left as it is. Raises
    ``TrainingInterrupted`` after checkpointing on SIGINT/SIGTERM, and re-raises errors (a bad
    config, a NaN loss, an env failure) after recording them; the last good checkpoint stays.
    """
    run_dir = Path(run_dir)
    resuming = cfg.resume is not None
    writer = dist.world().is_rank0  # a distributed run's other ranks write nothing
    started = time.time()
    summary: dict[str, Any] = {"status": "starting", "env": _label(cfg), "run_dir": str(run_dir)}
    summary.update(pid=os.getpid(), host=socket.gethostname())  # puffer runs: alive or crashed
    if (
        not resuming and writer
    ):  # `started` says which run is newest (puffer eval <env>), resumed or not
        summary["started"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / SUMMARY, summary)
    stop = StopFlag()
    loggers = trainer = evaluator = None
    status, touched = "failed", not resuming and writer
    sps: deque[float] = deque(maxlen=10)  # the last updates' rates, for the summary
    with stop.installed(), ExitStack() as logs:
        try:
            if not resuming and writer:
                logs.enter_context(_run_log(run_dir / "train.log"))
            # Rank 0 reads the checkpoint and sends it (build): the others need not see run_dir.
            checkpoint = (_latest(run_dir) if writer else run_dir) if resuming else None
            trainer = build.make_trainer(cfg, checkpoint)
            if resuming and trainer.done:
                log.info(
                    "%s already finished at step %s; nothing changed (raise "
                    "ppo.total_timesteps to continue it)", run_dir, f"{trainer.global_step:,}"
                )  # fmt: skip
                return read_summary(run_dir) or summary
            touched = writer
            if resuming and writer:
                logs.enter_context(_run_log(run_dir / "train.log"))
            summary = {**(read_summary(run_dir) or {}), **summary, "status": "running"}
            if writer:
                write_json(run_dir / SUMMARY, summary)
            log.info(
                "puffer: %s %s, %s steps, run dir %s",
                "resuming" if resuming else "training",
                _label(cfg),
                f"{cfg.ppo.total_timesteps:,}",
                run_dir,
            )
            checkpoints = ckpt.CheckpointDir(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
            last_saved = int(trainer.global_step) if resuming else -1
            resume_step = trainer.global_step if resuming else None
            # eval.*: None unless evaluation is on; rank 0 alone evaluates (dist.agree shares a stop)
            evaluator = make_evaluator(cfg, run_dir) if writer else None
            if evaluator is not None:
                logs.callback(evaluator.close)
                sinks = (*sinks, *evaluator.stop_sinks())
            loggers = (
                build.make_loggers(cfg, run_dir, trainer, resume_step, console, sinks)
                if writer
                else Loggers()
            )
            if evaluator is not None:
                evaluator.sinks = loggers.sinks  # videos go to TensorBoard and W&B
            status = "completed"
            while not trainer.done:
                trainer.rollout()
                metrics = trainer.update()
                if evaluator is not None and evaluator.due(trainer.update_count, trainer.done):
                    metrics = {**metrics, **evaluator(trainer)}
                if metrics.get("sps") is not None:
                    sps.append(float(metrics["sps"]))
                ended = None
                try:
                    loggers.log(metrics, int(trainer.global_step))
                except StopRun as e:
                    ended = (e.status, e.message)
                # Ranks stop after the same update: on a signal any rank got, or rank 0's StopRun.
                stop.signum, ended = dist.agree(stop.signum, ended)
                if ended is not None:
                    status = ended[0]
                    log.info("puffer: %s: %s", *ended)
                    break
                if trainer.update_count % cfg.checkpoint.interval == 0 or trainer.done:
                    save_checkpoint(checkpoints, trainer, cfg)
                    last_saved = trainer.global_step
                if stop.signum is not None:
                    break
            if trainer.global_step != last_saved:
                save_checkpoint(checkpoints, trainer, cfg)
            if stop.signum is not None:
                status = "interrupted"
            else:
                score = objective(trainer)
                log.info(
                    "puffer: done: %s steps in %.1fs, mean return %s; run dir %s",
                    f"{trainer.global_step:,}",
                    time.time() - started,
                    "-" if score is None else f"{score:.4g}",
                    run_dir,
                )
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            summary["error"] = f"{type(e).__name__}: {e}"
            summary["traceback"] = traceback.format_exc()
            if stop.signum is not None and isinstance(e, Exception):
                # The signal reached the env workers too and broke this update: an interruption.
                status = "interrupted"
                log.warning("update interrupted by the signal (%s); keeping the last checkpoint", e)
            else:
                if isinstance(e, Exception):
                    log.error("puffer: %s", _failure_message(e, run_dir))
                raise
        finally:
            if stop.signum is not None:
                name = signal.Signals(stop.signum).name
                log.error("puffer: stopped by %s; checkpoint and logs saved in %s", name, run_dir)
            _finish(
                run_dir, summary, status, touched, trainer, loggers, sps, started, cfg, evaluator
            )
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum)
    return summary


def _finish(
    run_dir, summary, status, touched, trainer, loggers, sps, started, cfg, evaluator
) -> None:  # type: ignore[no-untyped-def]
    """Close the sinks and the env and write the summary (only if this attempt touched the run).

    Still under the signal handlers: a SIGTERM now must not kill the process before the logs are
    flushed, W&B is finished, the workers are reaped and the summary is out.
    """
    latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    score = objective(trainer)
    if evaluator is not None:  # eval.*: the last eval return, the objective with objective=eval
        summary["eval_return"] = evaluator.last
        score = evaluator.last if evaluator.is_objective else score
    summary.update(
        status=status,
        objective=score,
        global_step=int(trainer.global_step) if trainer is not None else 0,
        update=int(trainer.update_count) if trainer is not None else 0,
        sps=round(sum(sps) / len(sps), 1) if sps else None,
        wall_time=round(time.time() - started, 3),
        latest_checkpoint=str(latest) if latest else None,
    )
    try:
        if loggers is not None:
            try:
                if trainer is not None:  # TensorBoard's HParams dashboard, W&B's run summary
                    loggers.log_hparams(hparams(cfg), final_metrics(summary))
            finally:
                loggers.close()
    finally:
        if trainer is not None:
            trainer.close()
        if touched:
            write_json(run_dir / SUMMARY, summary)


def _label(cfg: DictConfig) -> str:
    return env_label(cfg.env.name, cfg.env.id, cfg.env.creator)


def effective_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` itself for a new run; for ``resume=<run>`` the run's own config with what this
    command line changed on top (``build.reload``)."""
    if cfg.resume is None:
        return cfg
    merged = build.reload(cfg.resume, cfg, skip=("resume",))
    merged.resume = cfg.resume
    return merged


# -- the Hydra app ---------------------------------------------------------------------------------


def _task(cfg: DictConfig) -> float:
    """The Hydra task: one run; returns the objective (NaN before any episode ended)."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(cfg.resume) if cfg.resume is not None else Path(hc.runtime.output_dir)
    console = None
    if multirun and cfg.dashboard == "auto":
        from rich.console import Console

        console = Console(force_terminal=False)  # sweep jobs print plain lines, even on a terminal
    try:
        summary = _run_job(effective_config(cfg), run_dir, console)
    except TrainingInterrupted as e:  # run() logged it
        raise SystemExit(e.code) from None
    except KeyboardInterrupt:
        log.error("puffer: aborted; logs in %s", run_dir)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as e:  # run() logged it
        if _FULL_ERROR or multirun:
            raise  # a sweeper records the job as failed; the summary table shows it
        raise SystemExit(EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_FAILED) from None
    score = summary.get("objective")
    return float("nan") if score is None else float(score)


# -- several processes (puffer.dist, docs/scaling.md) --------------------------------------------


def _run_job(cfg: DictConfig, run_dir: Path, console: Any) -> dict[str, Any]:
    """``run`` here; in the ``dist.nproc`` ranks it starts (rank 0's summary); or, under torchrun,
    as rank 0, after sending the config and run directory to the other ranks (``follow_rank0``)."""
    if dist.torchrun_world() is not None:
        with dist.process_group(cfg.dist, cfg.device):
            dist.broadcast_object((OmegaConf.to_container(cfg), str(run_dir)))
            return run(cfg, run_dir, console, pruning.sinks(cfg))
    if cfg.dist.nproc == 1:
        return run(cfg, run_dir, console, pruning.sinks(cfg))
    job = OmegaConf.to_container(cfg)
    try:
        summary = dist.launch(run_rank, (job, str(run_dir), console is not None), cfg.dist)
    except dist.LaunchInterrupted as e:
        raise TrainingInterrupted(e.signum) from None
    except dist.RankError as e:
        summary = {**(read_summary(run_dir) or {}), "status": "failed"}
        summary.update(error=str(e).splitlines()[1], traceback=str(e))
        write_json(run_dir / SUMMARY, summary)
        log.error("puffer: %s", e)
        raise
    if summary.get("interrupted") is not None:  # a signal reached a rank, not this process
        raise TrainingInterrupted(summary["interrupted"])
    return summary


def run_rank(job: dict[str, Any], run_dir: str, plain: bool = False) -> dict[str, Any]:
    """One rank of a ``dist.nproc`` run (``puffer.dist.launch`` spawns it): ``run`` with the
    run's config in the process group. Returns the summary, or ``{"interrupted": signum}``."""
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), job)
    _rank_logging()
    console = None
    if plain:
        from rich.console import Console

        console = Console(force_terminal=False)
    with dist.process_group(cfg.dist, cfg.device):
        sinks = pruning.sinks(cfg) if dist.world().is_rank0 else ()  # a sweep's trial reporter
        try:
            return run(cfg, run_dir, console, sinks)
        except TrainingInterrupted as e:
            return {"interrupted": e.signum}


def follow_rank0() -> int:
    """A torchrun rank other than 0: no Hydra app and no directory of its own. It composes the
    command line's config (for the device and backend), joins the group, and runs the config and
    run directory rank 0's Hydra job sends."""
    overrides = [a for a in sys.argv[1:] if not a.startswith("-")]
    try:
        cfg = compose(overrides)
    except ConfigError:
        return EXIT_CONFIG  # rank 0 composes the same command line and reports the mistake
    _rank_logging()
    with dist.process_group(cfg.dist, cfg.device):
        job, run_dir = dist.broadcast_object(None)
        try:
            run(OmegaConf.merge(OmegaConf.structured(TrainConfig), job), run_dir)
        except TrainingInterrupted as e:
            return e.code
    return 0


def _rank_logging() -> None:
    """Logging in a rank (no Hydra app there): rank 0 prints as the Hydra job would (the run log
    file is added by ``run``); the other ranks print nothing, warnings included (rank 0 gives each
    once; a rank's failure reaches the user through the launcher's report or torchrun's)."""
    import logging.config
    import warnings

    if not dist.world().is_rank0:  # a failure reaches the user through the launcher
        logging.basicConfig(level=logging.CRITICAL)
        warnings.simplefilter("ignore")
        return
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "hydra/job_logging/puffer.yaml"))
    assert isinstance(config, dict)
    del config["handlers"]["file"]  # the file is the run's train.log: run() adds it
    config["root"]["handlers"].remove("file")
    config["loggers"]["puffer.progress"]["handlers"] = []
    logging.config.dictConfig(config)


def _failure_message(e: BaseException, run_dir: Path) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, ConfigError | ckpt.CheckpointError):
        return first
    latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    kept = f"; last good checkpoint {latest}" if latest else "; no checkpoint was written"
    return (
        f"training failed: {type(e).__name__}: {first}{kept}. The full trace is in {run_dir / SUMMARY} "
        "(or rerun with HYDRA_FULL_ERROR=1)."
    )


def _config_error(message: str) -> SystemExit:
    print(f"puffer: config error: {message}", file=sys.stderr)
    return SystemExit(EXIT_CONFIG)


def _job(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def _check_dir(out: str) -> None:
    """Create the run/sweep directory now, so that a bad one fails as a config error."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        problem = e.strerror or type(e).__name__
        raise ConfigError(
            f"cannot create the run directory {out}: {problem}. Run from a writable directory or "
            "choose another with hydra.run.dir=<dir> (hydra.sweep.dir=<dir> with -m)."
        ) from None


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Override lists covering every value of every sweep: each value once, the others at their
    first (Hydra's parser expands them; interval sweeps for Optuna have no list and are skipped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    options: list[list[str]] = []
    for o in OverridesParser.create().parse_overrides(overrides):
        values = [o.input_line]
        if o.is_sweep_override():
            try:
                values = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            except Exception:
                continue
        options.append(values)
    base = [v[0] for v in options]
    return [base] + [[*base[:i], v, *base[i + 1 :]] for i, vs in enumerate(options) for v in vs[1:]]


class Checks(Callback):
    """Validates before Hydra makes any directory: the run (``on_run_start``) or every value of
    every sweep (``on_multirun_start``). A mistake exits 2 with one paragraph on stderr."""

    sweep_dir: str | None = None  # set when a sweep starts (main() tabulates a failed one)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_error():
            validate(effective_config(_job(config)))
            if config.resume is None:
                _check_dir(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _exit_on_error():
            if config.resume is not None:
                raise ConfigError("resume= continues one run: drop -m (or resume each job's dir)")
            for job in _sweep_jobs(list(config.hydra.overrides.task)):
                validate(compose(job))
            _check_dir(config.hydra.sweep.dir)
        Checks.sweep_dir = str(config.hydra.sweep.dir)


@contextmanager
def _exit_on_error() -> Iterator[None]:
    """Turn an error into exit 2 with one paragraph: Hydra would only warn about a callback's
    exception, but lets ``SystemExit`` through."""
    try:
        yield
    except Exception as e:
        if _FULL_ERROR:
            traceback.print_exc()
        raise _config_error(str(e) if isinstance(e, ConfigError) else explain(e)) from None


_app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(_task)


def main() -> int:
    """Entry point of ``python -m puffer.train`` (argv is Hydra's); returns the exit code."""
    global _FULL_ERROR
    _FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises composition errors to us, not prints them
    SweepSummary.failed_jobs = 0
    here = dist.torchrun_world()
    if here is not None and not here.is_rank0:
        return follow_rank0()
    try:
        _app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
    except Exception as e:
        if _FULL_ERROR:
            raise
        if Checks.sweep_dir is None:  # Hydra could not compose the config
            message = explain(e)
            usage = f"\n{USAGE}" if message.startswith("cannot parse") else ""
            print(f"puffer: config error: {message}{usage}", file=sys.stderr)
            return EXIT_CONFIG
        # The basic sweeper raises a failed job's error after its batch, another sweeper its own
        # (e.g. a study's storage out of reach): tabulate the sweep, say why it stopped.
        rows = write_sweep_summary(Checks.sweep_dir)
        done = sum(r["status"] in ("completed", "pruned") for r in rows)
        SweepSummary.failed_jobs = max(1, len(rows) - done)
        print(f"puffer: the sweep stopped: {type(e).__name__}: {e}", file=sys.stderr)
    if SweepSummary.failed_jobs:
        print(f"puffer: {SweepSummary.failed_jobs} sweep job(s) did not complete", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":  # run the imported module's main: the callbacks' globals are there
    from puffer.train import main as module_main

    sys.exit(module_main())
