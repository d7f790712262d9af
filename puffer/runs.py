"""Run directories and sweep summaries.

A run directory holds ``.hydra/`` (the composed config and the overrides), ``checkpoints/``,
``tb/``, ``wandb/``, ``metrics.jsonl`` and ``summary.json``. A sweep directory holds one run
directory per job (``0/``, ``1/``, ...) and, when the sweep ends, ``summary.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from puffer.checkpoint import CheckpointDir, atomic_write

__all__ = [
    "SweepSummary",
    "find_run",
    "read_overrides",
    "read_summary",
    "sweep_rows",
    "write_json",
    "write_sweep_summary",
]

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (``puffer.checkpoint.atomic_write``)."""
    return atomic_write(
        path, lambda f: f.write(json.dumps(obj, indent=2, default=str) + "\n"), binary=False
    )


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``summary.json``, or None if it has none (yet)."""
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def read_overrides(run_dir: str | os.PathLike[str]) -> list[str]:
    """The command-line overrides the run was started with (``.hydra/overrides.yaml``)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a puffer run directory: {path} is missing (a run directory is "
            "what python -m puffer.train creates, e.g. outputs/cartpole/<date>_<time>)"
        )
    return [str(o) for o in OmegaConf.load(path)]


def find_run(env: str, outputs: str | os.PathLike[str] = "outputs") -> Path:
    """The run directory of ``env`` under ``outputs`` that started last and has a checkpoint
    (``started`` in summary.json; a resumed old run is not the newest)."""
    base = Path(outputs) / env
    runs = sorted(
        (d for d in base.glob("*") if CheckpointDir(d / "checkpoints").latest() is not None),
        key=lambda d: ((read_summary(d) or {}).get("started") or "", d.name),
    )
    if not runs:
        raise FileNotFoundError(
            f"no trained run of {env!r} under {base}/ (train one: puffer train {env}, "
            "or name a run directory: python -m puffer.eval run=<run dir>)"
        )
    return runs[-1]


# -- sweeps -----------------------------------------------------------------------------------------


def sweep_rows(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per job of a sweep: job, overrides, objective, status, steps, sps; best first.

    Jobs that did not complete (failed, interrupted) come last, in job order.
    """
    rows = []
    for job in Path(sweep_dir).iterdir():
        if not (job.is_dir() and job.name.isdigit()):
            continue
        summary = read_summary(job) or {}
        try:
            overrides = read_overrides(job)
        except FileNotFoundError:
            overrides = []
        objective = summary.get("objective")
        rows.append(
            {
                "job": int(job.name),
                "overrides": " ".join(o for o in overrides if not o.startswith("hydra")),
                "objective": objective,
                "status": summary.get("status", "unknown"),
                "global_step": summary.get("global_step"),
                "sps": summary.get("sps"),
                "error": summary.get("error", ""),
            }
        )

    def key(r: dict[str, Any]) -> tuple[int, float, int]:
        obj = r["objective"]
        ranked = r["status"] == "completed" and isinstance(obj, int | float) and math.isfinite(obj)
        return (0, -obj, r["job"]) if ranked else (1, 0.0, r["job"])

    return sorted(rows, key=key)


def write_sweep_summary(sweep_dir: str | os.PathLike[str], console: Any = None) -> list[dict]:
    """Write ``summary.csv`` in the sweep dir and print the table; returns the rows, best first."""
    from rich.console import Console
    from rich.table import Table

    sweep_dir = Path(sweep_dir)
    rows = sweep_rows(sweep_dir)
    fields = ["job", "overrides", "objective", "status", "global_step", "sps", "error"]
    with open(sweep_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    # The table shows what varies between jobs; what all jobs share goes in the caption.
    tokens = [r["overrides"].split() for r in rows]
    common = set.intersection(*map(set, tokens)) if len(tokens) > 1 else set()
    table = Table(
        title=f"sweep {sweep_dir} (best first)",
        caption=f"all jobs: {' '.join(t for t in tokens[0] if t in common)}" if common else None,
    )
    for name in ("job", "overrides", "objective", "status"):
        table.add_column(name, justify="right" if name in ("job", "objective") else "left")
    for r, toks in zip(rows, tokens):
        obj = r["objective"]
        table.add_row(
            str(r["job"]),
            " ".join(t for t in toks if t not in common),
            f"{obj:.4g}" if isinstance(obj, (int, float)) else "-",
            r["status"] + (f": {r['error']}" if r["error"] else ""),
        )
    (console or Console(highlight=False)).print(table)
    return rows


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, tabulate every job (also as ``summary.csv``)."""

    failed_jobs = 0  # read by puffer.train after the sweep to choose its exit code

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_sweep_summary(sweep_dir)
        SweepSummary.failed_jobs = sum(r["status"] not in ("completed", "pruned") for r in rows)
