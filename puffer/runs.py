"""Run directories, the run table (``puffer runs``) and sweep summaries.

A run directory holds ``.hydra/`` (the composed config and the overrides), ``checkpoints/``,
``tb/``, ``wandb/``, ``metrics.jsonl`` and ``summary.json``. A sweep directory holds one run
directory per job (``0/``, ``1/``, ...) and, when the sweep ends, ``summary.csv``.

The run table reads only small files per run (``summary.json``, ``.hydra/overrides.yaml``, the
policy line of ``.hydra/config.yaml`` and the last line of ``metrics.jsonl`` while a run is live),
so it lists a thousand runs in well under a second (benchmarks/report_speed.py measures it).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from puffer.checkpoint import CheckpointDir, atomic_write

__all__ = [
    "RunRow",
    "SweepSummary",
    "add_runs_parser",
    "find_run",
    "find_run_dirs",
    "live_writer",
    "read_overrides",
    "read_run",
    "read_summary",
    "render_run_table",
    "run_status",
    "run_table",
    "runs_arguments",
    "runs_command",
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
    import yaml  # Hydra writes a plain YAML list of strings; OmegaConf.load is 20x slower

    with open(path, encoding="utf-8") as f:
        loaded = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return [str(o) for o in loaded or []]


def find_run(
    env: str, outputs: str | os.PathLike[str] = "outputs", asked: str | None = None
) -> Path:
    """The run directory under ``outputs/<env>`` that started last and has a checkpoint
    (``started`` in summary.json; a resumed old run is not the newest). ``env`` is the run
    directory's env part (``puffer.envs.config.env_label``); ``asked``, what the user typed
    (``ale_py:ALE/Pong-v5``), names it in the error."""
    base = Path(outputs) / env
    runs = sorted(
        (d for d in base.glob("*") if CheckpointDir(d / "checkpoints").latest() is not None),
        key=lambda d: ((read_summary(d) or {}).get("started") or "", d.name),
    )
    if not runs:
        asked = asked or env
        raise FileNotFoundError(
            f"no trained run of {asked!r} under {base}/ (train one: puffer train {asked}, "
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


# -- the run table (puffer runs) ---------------------------------------------------------------------

# A run whose summary still says "running" but whose process is gone crashed (SIGKILL, OOM, power):
# without a recorded pid, a run silent for this long (no summary or metrics write) counts as failed.
STALE_SECONDS = 600.0
_SKIP = {"checkpoints", "tb", "wandb", ".hydra", "report", "videos", "export", "__pycache__"}
LIVE = ("running", "starting")


@dataclass
class RunRow:
    """One row of the run table; times are Unix seconds, ``wall_time`` seconds."""

    run: str
    env: str
    policy: str
    overrides: str
    status: str
    steps: int | None
    objective: float | None
    sps: float | None
    wall_time: float | None
    start_time: float | None
    error: str = ""


def find_run_dirs(paths: list[str | os.PathLike[str]], max_depth: int = 6) -> list[Path]:
    """Every run directory under ``paths`` (a directory with ``.hydra/`` or ``summary.json``).

    Does not descend into a run directory (its checkpoints, tb/, wandb/ hold no runs).
    """
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        names = {e.name for e in entries}
        if ".hydra" in names or SUMMARY in names:
            found.append(d)
            return
        if depth < max_depth:
            for e in sorted(entries, key=lambda e: e.name):
                if e.is_dir(follow_symlinks=False) and e.name not in _SKIP:
                    walk(Path(e.path), depth + 1)

    for p in paths:
        walk(Path(p), 0)
    return found


def _last_jsonl_row(path: Path) -> dict[str, Any] | None:
    """The last complete line of a JSON-lines file, reading only its last 8 KiB."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return None


def _config_policy(run_dir: Path) -> str:
    """``policy.name`` from ``.hydra/config.yaml`` by a line scan (no YAML parse: it is per run)."""
    path = run_dir / ".hydra" / "config.yaml"
    try:
        with open(path, encoding="utf-8") as f:
            in_policy = False
            for line in f:
                if not line.startswith(" "):
                    in_policy = line.startswith("policy:")
                elif in_policy and line.startswith("  name:"):
                    return line.split(":", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return ""


def _pid_alive(summary: dict[str, Any]) -> bool | None:
    """Whether the process the summary records (``pid`` on ``host``) still runs; None when that
    cannot be told here (no pid recorded, or another host). A reused pid (a process started after
    the run) does not count."""
    import socket

    import psutil

    pid, host = summary.get("pid"), summary.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    begun = _start_time({"started": summary.get("attempt_started")}) or _start_time(summary)
    return begun is None or started <= begun + 1.0  # a resume's process began at its attempt


def live_writer(run_dir: str | os.PathLike[str]) -> tuple[int, str] | None:
    """``(pid, host)`` of the process still training in ``run_dir``: its summary says
    ``running``/``starting`` and that pid lives on this host; else None (a finished or crashed
    run, or one whose process cannot be checked from here: no pid, another host)."""
    summary = read_summary(run_dir) or {}
    if summary.get("status") in LIVE and _pid_alive(summary):
        return int(summary["pid"]), str(summary["host"])
    return None


def _alive(run_dir: Path, summary: dict[str, Any], now: float) -> bool:
    """Whether the process writing ``run_dir`` still runs: its pid when the summary records one
    (on this host), else a write to summary.json or metrics.jsonl within ``STALE_SECONDS``."""
    alive = _pid_alive(summary)
    if alive is not None:
        return alive
    mtimes = []
    for name in (SUMMARY, METRICS):
        try:
            mtimes.append((run_dir / name).stat().st_mtime)
        except OSError:
            continue
    return bool(mtimes) and now - max(mtimes) < STALE_SECONDS


def run_status(run_dir: Path, summary: dict[str, Any] | None, now: float) -> tuple[str, str]:
    """``(status, error)``: the summary's final status, else ``running`` while the process lives
    and ``failed`` (crashed: no final summary) once it is gone."""
    summary = summary or {}
    status = str(summary.get("status") or "running")
    error = str(summary.get("error") or "")
    if status in LIVE:
        if _alive(run_dir, summary, now):
            return "running", ""
        return "failed", "crashed: the process ended without writing its final summary"
    return status, error.splitlines()[0] if error else ""


def read_run(run_dir: str | os.PathLike[str], now: float | None = None) -> RunRow:
    """The run table's row for one run directory (small files only)."""
    import time

    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    summary = read_summary(run_dir) or {}
    status, error = run_status(run_dir, summary, now)
    try:
        overrides = read_overrides(run_dir)
    except (FileNotFoundError, ValueError):
        overrides = []
    shown = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", "env="))]
    shown = _with_budget(shown, summary.get("total_timesteps"), (run_dir / "resumes").is_dir())
    steps = summary.get("global_step")
    if status == "running" or steps is None:
        last = _last_jsonl_row(run_dir / METRICS)
        steps = last.get("global_step") if last else steps
    start = _start_time(summary)
    if start is None:
        try:
            start = (run_dir / ".hydra" / "overrides.yaml").stat().st_mtime
        except OSError:
            start = None
    env = summary.get("env") or next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("env=")), ""
    )
    return RunRow(
        run=str(run_dir),
        env=str(env),
        policy=str(summary.get("policy") or _config_policy(run_dir)),
        overrides=" ".join(shown),
        status=status,
        steps=int(steps) if isinstance(steps, int | float) else None,
        objective=_finite(summary.get("objective")),
        sps=_finite(summary.get("sps")),
        wall_time=_finite(summary.get("wall_time")),
        start_time=float(start) if start is not None else None,
        error=error,
    )


def _with_budget(overrides: list[str], budget: Any, resumed: bool) -> list[str]:
    """``overrides`` with the step budget the run last trained with (a resume may have changed
    it: summary.json's ``total_timesteps``) in place of the one it started with."""
    key = "ppo.total_timesteps="
    if not isinstance(budget, int):
        return overrides
    if any(o.startswith(key) for o in overrides):
        return [f"{key}{budget}" if o.startswith(key) else o for o in overrides]
    return [*overrides, f"{key}{budget}"] if resumed else overrides


def _start_time(summary: dict[str, Any]) -> float | None:
    """Unix seconds the run started: the summary's ``started`` (ISO 8601) or ``start_time``."""
    from datetime import datetime

    started = summary.get("started")
    if isinstance(started, str):
        try:
            return datetime.fromisoformat(started).timestamp()
        except ValueError:
            pass
    value = summary.get("start_time")
    return float(value) if isinstance(value, int | float) else None


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


SORT_KEYS = ("start", "objective", "steps", "sps", "wall_time", "env", "status", "run")


def run_table(
    paths: list[str | os.PathLike[str]],
    *,
    env: str | None = None,
    status: str | None = None,
    sort: str = "start",
) -> list[RunRow]:
    """The rows of every run under ``paths``, filtered by env/status, sorted (numbers and start
    time descending: newest and best first; names ascending). Raises ``ValueError`` on a bad key."""
    import time

    if sort not in SORT_KEYS:
        raise ValueError(f"--sort {sort}: choose one of {', '.join(SORT_KEYS)}")
    now = time.time()
    rows = [read_run(d, now) for d in find_run_dirs(paths)]
    if env is not None:
        rows = [r for r in rows if r.env == env]
    if status is not None:
        rows = [r for r in rows if r.status == status]
    field = "start_time" if sort == "start" else sort
    if field in ("env", "status", "run"):
        return sorted(rows, key=lambda r: (getattr(r, field), r.run))
    missing = [r for r in rows if getattr(r, field) is None]
    present = [r for r in rows if getattr(r, field) is not None]
    return sorted(present, key=lambda r: (-getattr(r, field), r.run)) + missing


_STATUS_STYLE = {
    "completed": "green",
    "solved": "green",
    "running": "cyan",
    "interrupted": "yellow",
    "pruned": "magenta",
    "failed": "red",
}


def render_run_table(rows: list[RunRow], console: Any = None, title: str = "runs") -> None:
    """Print ``rows`` as a rich table (``console`` defaults to stdout)."""
    import time

    from rich.console import Console
    from rich.table import Table

    from puffer.dashboard import format_duration

    tokens = [r.overrides.split() for r in rows]
    common = set.intersection(*map(set, tokens)) if len(tokens) > 1 else set()
    table = Table(
        title=f"{title} ({len(rows)} runs)",
        title_justify="left",
        caption=f"all runs: {' '.join(t for t in tokens[0] if t in common)}" if common else None,
        caption_justify="left",
    )
    for name in ("run", "env", "policy", "overrides", "status", "steps", "objective", "SPS"):
        table.add_column(name, justify="right" if name in ("steps", "objective", "SPS") else "left")
    table.add_column("wall", justify="right")
    table.add_column("started", no_wrap=True)
    for r, toks in zip(rows, tokens):
        status = f"[{_STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]"
        table.add_row(
            r.run,
            r.env,
            r.policy,
            " ".join(t for t in toks if t not in common),
            status + (f" ({r.error[:60]})" if r.error and r.status == "failed" else ""),
            f"{r.steps:,}" if r.steps is not None else "-",
            f"{r.objective:.4g}" if r.objective is not None else "-",
            f"{r.sps:,.0f}" if r.sps is not None else "-",
            format_duration(r.wall_time) if r.wall_time is not None else "-",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.start_time)) if r.start_time else "-",
        )
    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: no terminal width to fit, keep rows whole
            console = Console(width=240)
    console.print(table)


def runs_arguments(p: Any) -> None:
    """The ``puffer runs`` arguments, on the argparse parser ``p``."""
    p.add_argument("paths", nargs="*", metavar="PATH", help="directories to search for runs")
    p.add_argument("--env", help="only runs of this env")
    p.add_argument("--status", help="only runs with this status (completed, failed, ...)")
    p.add_argument("--sort", default="start", choices=SORT_KEYS, help="sort key (default start)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def add_runs_parser(sub: Any) -> None:
    """``puffer runs``: register the subcommand on the CLI's subparsers."""
    p = sub.add_parser("runs", help="a table of runs (outputs/ and multirun_sweeps/, or PATH)")
    runs_arguments(p)
    p.set_defaults(func=runs_command)


def runs_command(args: Any, extra: list[str] | None = None) -> int:
    """Run ``puffer runs`` with parsed ``args``; returns the exit code."""
    extra = getattr(args, "overrides", None) or extra
    import sys
    from dataclasses import asdict

    if extra:
        print(f"puffer runs: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    paths = args.paths or ["outputs", "multirun_sweeps"]
    missing = [p for p in paths if not Path(p).is_dir()]
    if args.paths and missing:
        print(f"puffer runs: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = run_table(paths, env=args.env, status=args.status, sort=args.sort)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        render_run_table(rows, title=" ".join(str(p) for p in paths))
    return 0


# -- hyperparameters and final metrics (TensorBoard HParams, W&B summary) ---------------------------


def hparams(config: Any) -> dict[str, Any]:
    """A run's composed config (DictConfig or dict) as flat ``{"ppo.learning_rate": 0.001, ...}``
    without ``hydra``; lists and None become strings (what the HParams dashboard takes)."""
    from omegaconf import OmegaConf

    if not isinstance(config, dict):
        config = OmegaConf.to_container(config, resolve=True)

    def flat(d: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d if isinstance(d, bool | int | float | str) else str(d)}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out

    return flat({k: v for k, v in config.items() if k != "hydra"}, "")


FINAL_KEYS = ("objective", "global_step", "sps", "wall_time", "eval_return")


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """``final/<key>`` for the summary's finite numbers among ``FINAL_KEYS``."""
    return {
        f"final/{k}": float(v) for k in FINAL_KEYS if (v := _finite(summary.get(k))) is not None
    }
