"""Starting the ranks of one run and running a training job in them (``puffer.dist`` has the rest).

Two ways to start the ranks, both through torch's own launcher machinery:

- ``python -m puffer.train dist.nproc=N``: the Hydra job (one process, one run directory) starts N
  ranks on this machine with ``torch.distributed.launcher.api.elastic_launch`` (``launch``) and
  waits for them; each rank runs ``run_rank``: ``puffer.run.run`` with the composed config and the
  run directory.
- ``torchrun --nnodes=M --nproc-per-node=N -m puffer.train ...``: rank 0 is the Hydra job and sends
  its config and run directory to the others, which run ``follow_rank0`` (no Hydra app there).

``run_job`` picks one of the three (one process, ``dist.nproc`` ranks, torchrun's rank 0).

Failures: ``launch`` sets a short monitor interval and no restarts, so a rank that raises or dies
makes the agent stop every other rank; ``launch`` then raises ``RankError`` naming the rank and its
traceback or signal, and a rank dies with its parent (no orphans). SIGINT/SIGTERM reach every rank
once (each rank runs in its own process group, as under torchrun); ranks agree (``dist.agree``) to
stop after the same update.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf

from puffer import dist, pruning
from puffer.config import CONF_DIR, EXIT_CONFIG, ConfigError, TrainConfig, compose
from puffer.run import TrainingInterrupted, run
from puffer.runs import SUMMARY, read_summary, write_json

__all__ = ["LaunchInterrupted", "RankError", "follow_rank0", "launch", "run_job", "run_rank"]

log = logging.getLogger("puffer")
_R = TypeVar("_R")
_TORCH_LAUNCH_LOGGERS = (
    "torch.distributed.elastic",
    "torch.distributed.launcher",
    "torch.multiprocessing",
)


# -- a training job over its ranks -----------------------------------------------------------------


def run_job(cfg: DictConfig, run_dir: Path, console: Any = None) -> dict[str, Any]:
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
        summary = launch(run_rank, (job, str(run_dir), console is not None), cfg.dist)
    except LaunchInterrupted as e:
        raise TrainingInterrupted(e.signum) from None
    except RankError as e:
        summary = {**(read_summary(run_dir) or {}), "status": "failed"}
        summary.update(error=str(e).splitlines()[1], traceback=str(e))
        write_json(run_dir / SUMMARY, summary)
        log.error("puffer: %s", e)
        raise
    if summary.get("interrupted") is not None:  # a signal reached a rank, not this process
        raise TrainingInterrupted(summary["interrupted"])
    return summary


def run_rank(job: dict[str, Any], run_dir: str, plain: bool = False) -> dict[str, Any]:
    """One rank of a ``dist.nproc`` run (``launch`` spawns it): ``run`` with the run's config in
    the process group. Returns the summary, or ``{"interrupted": signum}``."""
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
    run directory rank 0's Hydra job sends. Returns the exit code."""
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


# -- launching ranks from the Hydra job ------------------------------------------------------------


class RankError(RuntimeError):
    """A rank raised or died; the message names the rank and its traceback or signal."""


class LaunchInterrupted(Exception):
    """SIGINT/SIGTERM stopped a ``launch``; the ranks were asked to stop (rank 0 checkpoints)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")


def launch(fn: Callable[..., _R], args: tuple[Any, ...], config: dist.DistConfig) -> _R:
    """Run ``fn(*args)`` in ``config.nproc`` ranks on this machine; returns rank 0's result.

    ``fn`` must be importable by name (the ranks are spawned) and join the group itself
    (``process_group``). Raises ``RankError`` when a rank fails (every rank is stopped first).

    SIGINT/SIGTERM to this process are forwarded once to every rank, which should stop cleanly
    (e.g. agree with ``agree`` to stop after the same update, checkpoint and return); then
    ``LaunchInterrupted`` is raised. A signal before every rank started, or a second one, stops
    the ranks at once (SIGTERM, SIGKILL after ``config.shutdown_timeout`` seconds).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    scratch = Path(tempfile.mkdtemp(prefix="puffer-dist-"))
    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=config.nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{config.master_port}",  # port 0: the store picks a free one
        max_restarts=0,
        monitor_interval=0.1,  # a failed rank is noticed within 0.1 s
        start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=str(scratch / "logs")),
        shutdown_timeout=max(1, round(config.shutdown_timeout)),
        # SIGINT/SIGTERM are ours (_Forward): the agent would stop the ranks before they finish.
        signals_to_handle="SIGHUP,SIGQUIT",
    )
    forward = _Forward(scratch, config.nproc)
    try:
        with _quiet(_TORCH_LAUNCH_LOGGERS), forward.installed():
            results = elastic_launch(launch_config, _rank_entry)(fn, args, str(scratch))
    except ChildFailedError as e:
        raise RankError(_failure_message(e, scratch)) from None
    except SignalException as e:
        raise LaunchInterrupted(e.sigval) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if forward.signum is not None:
        raise LaunchInterrupted(forward.signum)
    return results[0]


class _Forward:
    """While ``launch`` runs: the first SIGINT/SIGTERM goes on to every rank (each registered its
    pid in ``scratch``); before all have, or on a second signal, ``LaunchInterrupted`` is raised
    in the agent's loop, which then stops the ranks itself."""

    def __init__(self, scratch: Path, nproc: int):
        self.scratch, self.nproc = scratch, nproc
        self.signum: int | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        pids = [int(p.read_text()) for p in self.scratch.glob("pid*") if p.read_text()]
        if self.signum is not None or len(pids) < self.nproc:
            raise LaunchInterrupted(signum)
        self.signum = signum
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        sigs = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._handler) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Silence torch's launcher logs (its own failure report, restarts, rendezvous) while
    ``launch`` runs: ``RankError`` says what failed, once."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _rank_entry(fn: Callable[..., _R], args: tuple[Any, ...], scratch: str) -> _R:
    """A spawned rank: its own process group (a terminal's Ctrl-C reaches the launcher, which
    forwards it once to every rank, as torchrun does), death with the launcher, and an error
    record the launcher reads if ``fn`` raises."""
    from puffer._worker import _die_with_parent

    os.setpgid(0, 0)
    _die_with_parent()
    rank = os.environ.get("RANK", "0")
    pid_file = Path(scratch, f"pid{rank}")  # written whole, then renamed: the launcher reads it
    Path(scratch, f".pid{rank}").write_text(str(os.getpid()))
    Path(scratch, f".pid{rank}").replace(pid_file)
    try:
        return fn(*args)
    except BaseException as e:
        _write_error(Path(scratch), e)
        raise


def _write_error(scratch: Path, e: BaseException) -> None:
    rank = int(os.environ.get("RANK", 0))
    record = {
        "rank": rank,
        "pid": os.getpid(),
        "error": f"{type(e).__name__}: {e}",
        "traceback": "".join(traceback.format_exception(e)),
        "secondary": _in_collective(e),
    }
    tmp = scratch / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(scratch / f"rank{rank}.json")


def _in_collective(e: BaseException) -> bool:
    """True when ``e`` came out of a ``torch.distributed`` call: the echo of another rank's
    failure (a closed connection, a timeout), not a cause."""
    if isinstance(e, torch.distributed.DistError):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return str(module).startswith("torch.distributed")


def _failure_message(e: Any, scratch: Path) -> str:
    """One paragraph per failed rank, causes first: a rank's own exception or the signal that
    killed it, before ranks whose collectives failed because of it.

    The agent reports the ranks it saw fail; the error records (``_write_error``) add the ranks
    that raised while the agent was stopping the others.
    """
    found: dict[int, tuple[bool, str]] = {}
    for path in scratch.glob("rank*.json"):
        r = json.loads(path.read_text())
        head = f"rank {r['rank']} (pid {r['pid']})"
        if r["secondary"]:  # one line: the traceback only shows the collective that failed
            text = f"{head} stopped when a collective failed: {r['error'].splitlines()[0]}"
        else:
            text = f"{head} raised {r['error']}\n{r['traceback'].rstrip()}"
        found[r["rank"]] = (r["secondary"], text)
    for rank, failure in e.failures.items():
        if rank in found:
            continue
        if failure.exitcode < 0:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        else:
            how = f"exited with code {failure.exitcode}"
        found[rank] = (False, f"rank {rank} (pid {failure.pid}) {how}")
    order = sorted(found, key=lambda rank: (found[rank][0], rank))
    body = "\n".join(found[rank][1] for rank in order)
    return f"distributed run failed; every rank was stopped.\n{body}"
