"""Metric sinks: every update's metrics dict goes to each of them, unchanged.

A sink has ``log(metrics, step)`` and ``close()``. ``MetricsJsonl`` (always on), ``TensorBoard``
and ``Wandb`` write files in the run directory; the dashboard (``puffer.dashboard``) is a sink too.
``Loggers`` fans one dict out to all of them and closes every one even when another fails. A sink
may raise ``StopRun`` to end the run early (the run loop checkpoints and records its status).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import string
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from puffer.checkpoint import atomic_write

__all__ = [
    "LogProgress",
    "Loggers",
    "MetricsJsonl",
    "Sink",
    "StopRun",
    "TensorBoard",
    "Wandb",
    "below_level",
    "read_jsonl",
]


class StopRun(Exception):
    """Raised by a sink to end the run after this update: the run loop writes a checkpoint, records
    ``status`` (e.g. "pruned", "solved") in summary.json, logs ``message`` and exits normally."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def below_level(level: str | int) -> logging.Filter:
    """A logging filter passing records below ``level`` (stdout gets info, stderr the rest)."""
    limit = logging.getLevelName(level) if isinstance(level, str) else level
    f = logging.Filter()
    f.filter = lambda record: record.levelno < limit  # type: ignore[method-assign]
    return f


class LogProgress:
    """A progress line in the run's log (``puffer.progress``: train.log, not the terminal) at most
    every ``every`` seconds and for the last update; the terminal has the dashboard instead."""

    def __init__(self, total_timesteps: int, every: float = 5.0):
        self.total, self.every, self._last = int(total_timesteps), every, 0.0
        self._logger = logging.getLogger("puffer.progress")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every and step < self.total:
            return
        self._last = now
        m = _scalars(metrics)
        ret = m.get("env/episode_return")
        self._logger.info(
            "step %s/%s | update %d | %s sps | return %s",
            f"{step:,}",
            f"{self.total:,}",
            int(m.get("update", 0)),
            f"{m['sps']:,.0f}" if "sps" in m else "-",
            "-" if ret is None else f"{ret:.4g}",
        )

    def close(self) -> None:
        pass


class Sink(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite-or-not numeric entries of ``metrics`` as floats (bools and ints included)."""
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


class MetricsJsonl:
    """``metrics.jsonl``: one JSON object per update with ``global_step``, ``time`` and the metrics.

    With ``resume_step`` the file is first cut back to the lines with ``global_step <= resume_step``
    (updates logged after the checkpoint a run resumes from are replaced by the resumed run's).
    """

    def __init__(self, path: str | os.PathLike[str], resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            kept = [r for r in read_jsonl(self.path) if r.get("global_step", 0) <= resume_step]
            atomic_write(
                self.path, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept), binary=False
            )
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        row = {"global_step": int(step), "time": round(time.time(), 3)}
        for k, v in _scalars(metrics).items():
            if k != "global_step":
                row[k] = v if math.isfinite(v) else None
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class TensorBoard:
    """TensorBoard event files in ``log_dir`` (``tensorboard --logdir outputs``).

    ``resume_step``: events a previous process wrote after that step are hidden (``purge_step``),
    so a resumed run continues one step axis without duplicates.
    """

    def __init__(self, log_dir: str | os.PathLike[str], resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else int(resume_step) + 1
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=10)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in _scalars(metrics).items():
            if k != "global_step":
                self.writer.add_scalar(k, v, global_step=int(step))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """This run's entry in TensorBoard's HParams dashboard: ``hparams`` (flat key -> value) and
        final ``metrics`` (also written as scalars, which the dashboard reads)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        hp = {
            k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in hparams.items()
        }
        final = {k: v for k, v in _scalars(metrics).items() if math.isfinite(v)}
        for summary in hparams_summary(hp, final):  # experiment, session start, session end
            self.writer.file_writer.add_summary(summary)
        for k, v in final.items():
            self.writer.add_scalar(k, v)
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class Wandb:
    """A Weights & Biases run whose files live in ``<run_dir>/wandb/``.

    ``mode="offline"`` (the default) never touches the network; upload later with
    ``wandb sync <run_dir>/wandb/offline-run-*``. ``mode="online"`` falls back to offline with a
    warning when the service cannot be reached. The run id is kept in ``<run_dir>/wandb_id`` so a
    resumed training run continues the same W&B run.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        config: Mapping[str, Any],
        *,
        mode: str = "offline",
        project: str = "puffer",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
    ):
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else _new_run_id()
        id_file.write_text(run_id + "\n")  # first: nothing may fail between init and close
        kw: dict[str, Any] = dict(
            dir=str(run_dir),
            project=project,
            entity=entity,
            group=group,
            tags=list(tags or []),
            name=name,
            config=dict(config),
            id=run_id,
            resume="allow",
            settings=wandb.Settings(init_timeout=30, console="off", silent=True),
        )
        try:
            self.run = wandb.init(mode=mode, **kw)
        except Exception as e:
            if mode != "online":
                raise
            warnings.warn(f"wandb online init failed ({e}); logging offline instead", stacklevel=2)
            self.run = wandb.init(mode="offline", **kw)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(_scalars(metrics), step=int(step))

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The final metrics in the W&B run's summary (the config is the run's already)."""
        self.run.summary.update(_scalars(metrics))

    def close(self) -> None:
        self.run.finish()


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Loggers:
    """Fans each update's metrics out to every sink; ``close()`` closes all of them."""

    def __init__(self, sinks: list[Sink] | None = None):
        self.sinks: list[Sink] = list(sinks or [])

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send ``metrics`` to every sink; a ``StopRun`` is re-raised after all sinks had them."""
        step = int(metrics["global_step"]) if step is None else int(step)
        stop: StopRun | None = None
        for sink in self.sinks:
            try:
                sink.log(metrics, step)
            except StopRun as e:
                stop = stop or e
        if stop is not None:
            raise stop

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Hyperparameters and final metrics to the sinks that keep them (TensorBoard, W&B)."""
        for sink in self.sinks:
            if hasattr(sink, "log_hparams"):
                sink.log_hparams(hparams, metrics)

    def close(self) -> None:
        """Close every sink (newest first); re-raise the first failure after trying them all."""
        error: BaseException | None = None
        while self.sinks:
            sink = self.sinks.pop()
            try:
                sink.close()
            except Exception as e:
                error = error or e
        if error is not None:
            raise error

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
