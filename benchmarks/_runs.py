"""What the benchmarks that time real ``python -m puffer.train`` runs share: running one, and
reading its steady training rate back from ``metrics.jsonl``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train(
    overrides: list[str], timeout: float = 1800
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m puffer.train overrides`` from the repository root; the process and its wall
    seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "puffer.train", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.perf_counter() - t0


def steady_sps(run_dir: Path, skip: int = 1) -> float | None:
    """Env steps per second from the end of update ``skip`` to the last one, from the run's
    ``metrics.jsonl`` (``global_step`` and ``time`` per update; start-up excluded). None when
    the run logged too few updates to time."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    if len(rows) < skip + 2:
        return None
    first, last = rows[skip - 1], rows[-1]
    return (last["global_step"] - first["global_step"]) / max(last["time"] - first["time"], 1e-9)
