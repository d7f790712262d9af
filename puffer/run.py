"""The run lifecycle: one trainer in one run directory, from the first summary to the last.

``run(cfg, run_dir)`` builds the trainer (``puffer.build``; resumed from the run's latest checkpoint
with ``cfg.resume``), trains it while sending every update's metrics to the sinks, checkpoints
every ``checkpoint.interval`` updates and at the end, and records the outcome in ``summary.json``.
It knows nothing of the command line: ``puffer.train``'s Hydra task calls it (through
``puffer.launch``, which also calls it in every rank of a distributed run), and so can any script
with a composed config.

Stopping: SIGINT/SIGTERM stop training at the next update boundary after a checkpoint
(``TrainingInterrupted``), a sink raising ``puffer.loggers.StopRun`` ends the run with its status,
and an error is recorded (message and traceback in ``summary.json``) before it propagates; the last
good checkpoint stays the latest. A resume that fails before its trainer loaded changes nothing in
the run, and a run that already finished keeps its record.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from puffer import build, dist
from puffer import checkpoint as ckpt
from puffer.config import ConfigError
from puffer.envs.config import env_label
from puffer.evaluation import make_evaluator
from puffer.loggers import Loggers, StopRun
from puffer.runs import SUMMARY, final_metrics, hparams, read_summary, write_json

__all__ = ["StopFlag", "TrainingInterrupted", "objective", "run", "save_checkpoint"]

log = logging.getLogger("puffer")


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint; ``code`` is 130 or 143."""

    def __init__(self, signum: int):
        self.signum, self.code = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopFlag:
    """Records SIGINT/SIGTERM so training stops at the next update boundary (a second one aborts)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # why training stops: this process's signal or a rank's
        self.received = 0  # signals this process got: only its own second one aborts
        self.pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:
            # A process forked before the worker loop set its own handlers (a group-wide signal
            # can arrive in between): the main process stops it through the VecEnv's close().
            return
        self.received += 1
        if self.received > 1:
            raise KeyboardInterrupt
        # Another rank's signal may have set signum already (dist.agree); this rank's own copy
        # of the launcher's signal arriving after that is a first signal, not a second.
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
    attempt = _Attempt(cfg, Path(run_dir))
    with attempt.stop.installed(), ExitStack() as logs:
        try:
            if attempt.start(logs, console, sinks):
                attempt.train()
            else:
                return read_summary(attempt.run_dir) or attempt.summary
        except BaseException as e:
            if not attempt.absorb(e):
                raise
        finally:
            attempt.finish()
    if attempt.stop.signum is not None:
        raise TrainingInterrupted(attempt.stop.signum)
    return attempt.summary


class _Attempt:
    """One call of ``run``: the parts it built and what ``finish`` records. In a distributed run
    every rank makes one; only rank 0 (``writer``) writes to the run directory."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.resuming = cfg.resume is not None
        self.writer = dist.world().is_rank0
        self.started = time.time()
        self.summary: dict[str, Any] = {"status": "starting", "env": _label(cfg)}
        self.summary.update(run_dir=str(run_dir), pid=os.getpid(), host=socket.gethostname())
        # This process's start (a resume keeps the run's `started`): puffer.runs tells a live
        # process from a reused pid by it.
        self.summary["attempt_started"] = _now()
        self.summary["total_timesteps"] = int(cfg.ppo.total_timesteps)
        self.stop = StopFlag()
        self.trainer: Any = None
        self.loggers: Any = None
        self.evaluator: Any = None
        self.status = "failed"
        self.touched = not self.resuming and self.writer  # finish() writes the summary
        self.sps: deque[float] = deque(maxlen=10)  # the last updates' rates, for the summary
        if self.touched:  # `started` says which run is newest (puffer eval <env>), resumed or not
            self.summary["started"] = self.summary["attempt_started"]
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / SUMMARY, self.summary)

    def start(self, logs: ExitStack, console: Any, sinks: tuple[Any, ...]) -> bool:
        """Build the trainer, the evaluator and the sinks; False when a resumed run had finished."""
        cfg, run_dir, writer = self.cfg, self.run_dir, self.writer
        if not self.resuming and writer:
            logs.enter_context(_run_log(run_dir / "train.log"))
        # Rank 0 reads the checkpoint and sends it (build): the others need not see run_dir.
        checkpoint = (_latest(run_dir) if writer else run_dir) if self.resuming else None
        self.trainer = trainer = build.make_trainer(cfg, checkpoint)
        # Rank 0 reads the run's summary and decides for every rank.
        if self.resuming and dist.broadcast_object(self._finished() if writer else None):
            return False
        self.touched = writer
        if self.resuming and writer:
            logs.enter_context(_run_log(run_dir / "train.log"))
        self.summary = {**(read_summary(run_dir) or {}), **self.summary, "status": "running"}
        if writer:
            write_json(run_dir / SUMMARY, self.summary)
        what, steps = "resuming" if self.resuming else "training", f"{cfg.ppo.total_timesteps:,}"
        log.info("puffer: %s %s, %s steps, run dir %s", what, _label(cfg), steps, run_dir)
        # eval.*: None unless evaluation is on; rank 0 alone evaluates (dist.agree shares a stop)
        self.evaluator = make_evaluator(cfg, run_dir) if writer else None
        if self.evaluator is not None:
            logs.callback(self.evaluator.close)
            sinks = (*sinks, *self.evaluator.stop_sinks())
        resume_step = trainer.global_step if self.resuming else None
        self.loggers = (
            build.make_loggers(cfg, run_dir, trainer, resume_step, console, sinks)
            if writer
            else Loggers()
        )
        if self.evaluator is not None:
            self.evaluator.sinks = self.loggers.sinks  # videos go to TensorBoard and W&B
        return True

    def _finished(self) -> bool:
        """Whether the resumed run has nothing left to do: its step budget is spent, or it ended
        early as finished (``solved``, ``pruned``) and this budget is no larger than its own.
        A run that reached the budget without being recorded as finished (interrupted at its
        end, or resumed with a smaller budget) is recorded as ``completed`` now. Rank 0 only."""
        trainer, run_dir = self.trainer, self.run_dir
        saved = read_summary(run_dir) or {}
        status, budget = saved.get("status"), int(self.cfg.ppo.total_timesteps)
        step, limit = int(trainer.global_step), _run_budget(run_dir, saved)
        recorded = "nothing changed"
        if trainer.done:
            limit = step
            if status not in FINISHED:
                done = {"status": "completed", "global_step": step, "total_timesteps": budget}
                write_json(run_dir / SUMMARY, {**saved, **done})
                status, recorded = "completed", "recorded it as completed"
        elif status not in STOPPED_EARLY or budget > limit:
            return False
        log.info(
            "%s already finished (%s at step %s); %s (raise ppo.total_timesteps above %s to "
            "continue it)", run_dir, status, f"{step:,}", recorded, f"{limit:,}"
        )  # fmt: skip
        return True

    def train(self) -> None:
        """Update until done, a signal or a ``StopRun``; checkpoint on schedule and at the end."""
        cfg, trainer, evaluator, stop = self.cfg, self.trainer, self.evaluator, self.stop
        checkpoints = ckpt.CheckpointDir(self.run_dir / "checkpoints", keep=cfg.checkpoint.keep)
        last_saved = int(trainer.global_step) if self.resuming else -1
        self.status = "completed"
        while not trainer.done:
            trainer.rollout()
            metrics = trainer.update()
            if evaluator is not None and evaluator.due(trainer.update_count, trainer.done):
                metrics = {**metrics, **evaluator(trainer)}
            if metrics.get("sps") is not None:
                self.sps.append(float(metrics["sps"]))
            ended = None
            try:
                self.loggers.log(metrics, int(trainer.global_step))
            except StopRun as e:
                ended = (e.status, e.message)
            # Ranks stop after the same update: on a signal any rank got, or rank 0's StopRun.
            stop.signum, ended = dist.agree(stop.signum, ended)
            if ended is not None:
                self.status = ended[0]
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
            self.status = "interrupted"
            return
        score, took = objective(trainer), time.time() - self.started
        log.info(
            "puffer: done: %s steps in %.1fs, mean return %s; run dir %s",
            f"{trainer.global_step:,}", took, "-" if score is None else f"{score:.4g}", self.run_dir
        )  # fmt: skip

    def absorb(self, e: BaseException) -> bool:
        """Record ``e``; True when it is the signal's echo (an interruption, not a failure)."""
        self.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        self.summary["error"] = f"{type(e).__name__}: {e}"
        self.summary["traceback"] = traceback.format_exc()
        if self.stop.signum is not None and isinstance(e, Exception):
            # The signal reached the env workers too and broke this update: an interruption.
            self.status = "interrupted"
            log.warning("update interrupted by the signal (%s); keeping the last checkpoint", e)
            return True
        if isinstance(e, Exception):
            log.error("puffer: %s", _failure_message(e, self.run_dir))
        return False

    def finish(self) -> None:
        """Close the sinks and the env and write the summary (only if this attempt touched the run).

        Still under the signal handlers: a SIGTERM now must not kill the process before the logs
        are flushed, W&B is finished, the workers are reaped and the summary is out.
        """
        run_dir, trainer, summary = self.run_dir, self.trainer, self.summary
        if self.stop.signum is not None:
            name = signal.Signals(self.stop.signum).name
            log.error("puffer: stopped by %s; checkpoint and logs saved in %s", name, run_dir)
        latest = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
        score = objective(trainer)
        if self.evaluator is not None:  # eval.*: the last eval return; objective=eval uses it
            summary["eval_return"] = self.evaluator.last
            score = self.evaluator.last if self.evaluator.is_objective else score
        summary.update(
            status=self.status,
            objective=score,
            global_step=int(trainer.global_step) if trainer is not None else 0,
            update=int(trainer.update_count) if trainer is not None else 0,
            sps=round(sum(self.sps) / len(self.sps), 1) if self.sps else None,
            wall_time=round(time.time() - self.started, 3),
            latest_checkpoint=str(latest) if latest else None,
        )
        try:
            if self.loggers is not None:
                try:
                    if trainer is not None:  # TensorBoard's HParams dashboard, W&B's run summary
                        self.loggers.log_hparams(hparams(self.cfg), final_metrics(summary))
                finally:
                    self.loggers.close()
        finally:
            if trainer is not None:
                trainer.close()
            if self.touched:
                write_json(run_dir / SUMMARY, summary)


FINISHED = ("completed", "solved", "pruned")  # a run in one of these has nothing left to do
STOPPED_EARLY = ("solved", "pruned")  # ended by a sink (StopRun) before its step budget


def _run_budget(run_dir: Path, summary: dict[str, Any]) -> int:
    """The step budget the run last trained with: its summary's ``total_timesteps`` (older runs:
    the run's own ``.hydra/config.yaml``)."""
    budget = summary.get("total_timesteps")
    if isinstance(budget, int):
        return budget
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return int(OmegaConf.select(saved, "ppo.total_timesteps", default=0))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _label(cfg: DictConfig) -> str:
    return env_label(cfg.env.name, cfg.env.id, cfg.env.creator)


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
