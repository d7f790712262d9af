"""How fast ``puffer runs`` lists runs and ``puffer report`` aggregates them.

    python benchmarks/report_speed.py            # 1000 run dirs for the table; a 10-run report
    python benchmarks/report_speed.py --quick    # 200 run dirs; the same 10-run report

The run dirs are synthetic but hold what a run writes (``.hydra/overrides.yaml``,
``.hydra/config.yaml``, ``summary.json``, a ``metrics.jsonl`` of 200 updates). The report runs
in a fresh process, imports included (rliable pulls in arch, pandas and scipy), as the command
does. Targets (issue 14): the table fast on a thousand runs; the 10-run report under 10 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from puffer import runs


def make_runs(sweep: Path, n: int, updates: int = 200, seeds: int = 5) -> None:
    """``n`` sweep jobs: ``n // seeds`` settings x ``seeds`` seeds with learning curves."""
    rng = np.random.default_rng(0)
    for i in range(n):
        job = sweep / str(i)
        (job / ".hydra").mkdir(parents=True)
        lr, seed = 1e-3 * (1 + i // seeds), i % seeds
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- env=cartpole\n- seed={seed}\n- ppo.learning_rate={lr}\n"
        )
        (job / ".hydra" / "config.yaml").write_text(
            f"env:\n  name: cartpole\npolicy:\n  name: mlp\nppo:\n  learning_rate: {lr}\n"
            f"seed: {seed}\n"
        )
        steps = np.arange(1, updates + 1) * 2048
        curve = 500 * (1 - np.exp(-steps / (2e5 / (1 + i // seeds)))) + rng.normal(0, 20, updates)
        with open(job / "metrics.jsonl", "w") as f:
            for s, r in zip(steps, curve):
                f.write(json.dumps({"global_step": int(s), "env/episode_return": float(r)}) + "\n")
        summary = {"status": "completed", "env": "cartpole", "objective": float(curve[-10:].mean())}
        summary.update(global_step=int(steps[-1]), sps=1e5, wall_time=4.0, start_time=1.8e9 + i)
        (job / "summary.json").write_text(json.dumps(summary))


def time_table(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        make_runs(Path(tmp) / "sweep", n, updates=5)
        t0 = time.perf_counter()
        rows = runs.run_table([tmp])
        elapsed = time.perf_counter() - t0
        assert len(rows) == n
    return elapsed


def time_report(n: int = 10) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        make_runs(Path(tmp) / "sweep", n)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "puffer", "report", str(Path(tmp) / "sweep")],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 run dirs instead of 1000")
    args = p.parse_args()
    n = 200 if args.quick else 1000
    table = time_table(n)
    print(f"puffer runs, {n} run dirs: {table:.3f} s ({1e3 * table / n:.2f} ms per run)")
    report = time_report(10)
    print(
        f"puffer report, 10 runs (2 settings x 5 seeds, 200 updates each), whole command: {report:.2f} s"
    )


if __name__ == "__main__":
    main()
