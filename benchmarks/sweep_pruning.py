"""A cartpole hyperparameter search with and without pruning, side by side.

Each search is one ``python -m puffer.train -m hydra/sweeper=optuna`` process over the PPO space
of conf/hydra/sweeper/optuna.yaml, with the same sampler seed (so the first, random trials are the
same in both), one trial at a time. Reported per search: wall seconds, the best objective (mean
return of a trial's last 100 episodes), trials completed / pruned / failed and the env steps all
trials took; then the ratios (pruned search / full search) as a Markdown table and a JSON line.

    python benchmarks/sweep_pruning.py                 # 20 trials of 100k steps each
    python benchmarks/sweep_pruning.py --quick         # 6 trials of 20k steps
    python benchmarks/sweep_pruning.py --pruners none,median,hyperband --trials 30

The median pruner waits for ``--startup`` completed trials and judges a trial only after a fifth
of its budget (``n_warmup_steps``); hyperband uses Optuna's defaults.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def search(pruner: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one search in ``work``; its numbers as a dict."""
    pruner_args = []
    if pruner == "median":
        pruner_args = [
            f"+hydra.sweeper.pruner_args.n_startup_trials={args.startup}",
            f"+hydra.sweeper.pruner_args.n_warmup_steps={args.steps // 5}",
        ]
    command = [
        sys.executable, "-m", "puffer.train", "-m", "hydra/sweeper=optuna", "env=cartpole",
        f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.seed={args.seed}",
        f"hydra.sweeper.pruner={pruner}", *pruner_args,
        f"hydra.sweeper.storage=sqlite:///{work / 'study.db'}", f"hydra.sweeper.study_name={pruner}",
        f"hydra.sweep.dir={work / pruner}", f"ppo.total_timesteps={args.steps}",
        "logger=none", "dashboard=off", "torch_threads=1",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: some trials failed, which the table shows
        raise SystemExit(f"the {pruner} search failed:\n{proc.stderr[-3000:]}")
    return {"pruner": pruner, "seconds": round(seconds, 1), **_study_numbers(work, pruner)}


def _study_numbers(work: Path, pruner: str) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=pruner, storage=f"sqlite:///{work / 'study.db'}")
    states = [t.state.name.lower() for t in study.trials]
    steps = 0
    for job in (work / pruner).glob("[0-9]*"):
        summary = json.loads((job / "summary.json").read_text())
        steps += int(summary.get("global_step") or 0)
    complete = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    return {
        "best": round(max(complete), 1) if complete else None,
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "failed": states.count("fail"),
        "env_steps": steps,
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| pruner | wall s | best objective | complete | pruned | failed | env steps | time vs "
        f"{base['pruner']} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["seconds"] / base["seconds"] if base["seconds"] else float("nan")
        lines.append(
            f"| {r['pruner']} | {r['seconds']} | {r['best']} | {r['complete']} | {r['pruned']} "
            f"| {r['failed']} | {r['env_steps']:,} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 trials of 20k steps")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per trial")
    parser.add_argument("--startup", type=int, default=5, help="median: trials before pruning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pruners", default="none,median", help="comma-separated, first = base")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.steps, args.startup = 6, 20_000, 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep_pruning_") as tmp:
        for pruner in args.pruners.split(","):
            work = Path(tmp)
            print(f"searching with pruner={pruner}: {args.trials} trials x {args.steps:,} steps")
            rows.append(search(pruner, args, work))
            print(f"  {rows[-1]}")
    print(table(rows))
    print(json.dumps({"trials": args.trials, "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
