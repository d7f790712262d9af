"""Data-parallel PPO: training steps per second with 1 and 2 ranks, side by side.

    python benchmarks/distributed.py            # 3 interleaved repeats (~3-5 minutes)
    python benchmarks/distributed.py --quick    # one short repeat (~1 minute)

A learn-heavy config, where the update dominates (the case data-parallel PPO is for): cartpole,
an MLP 256 wide (two hidden layers), 4096 env rows, horizon 16, 4 minibatches, 4 epochs. Each case
is a real ``python -m puffer.train`` run (logger=none, dashboard=off); the number is the median
env steps over wall time from the end of its second update to its last one (start-up excluded),
read from ``metrics.jsonl`` (``global_step`` and ``time`` of each update; with 2 ranks rank 0
logs the global step).

Cases: one process with 1 torch thread, one process with 2 threads (the other way to use a second
core), and ``dist.nproc=2`` (gloo, 1 thread per rank). The repeats of the cases are interleaved so
that a change in the machine's load affects them alike; the run reports the load average. Prints
a table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from _runs import steady_sps, train

CONFIG = [
    "env=cartpole",
    "policy.hidden_sizes=[256,256]",
    "vector.num_envs=4096",
    "ppo.horizon=16",
    "ppo.num_minibatches=4",
    "ppo.update_epochs=4",
    "logger=none",
    "dashboard=off",
    "device=cpu",
    "checkpoint.interval=1000000",
]
CASES = {
    "1 process, 1 thread": ["torch_threads=1"],
    "1 process, 2 threads": ["torch_threads=2"],
    "2 ranks (dist.nproc=2), 1 thread each": ["torch_threads=1", "dist.nproc=2"],
}


def run_case(overrides: list[str], steps: int, out: Path) -> dict[str, float]:
    """One training run; its update SPS from the end of update 2 on, and wall seconds."""
    args = [*CONFIG, *overrides, f"ppo.total_timesteps={steps}", f"hydra.run.dir={out}"]
    proc, wall = train(args)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(overrides)}):\n{proc.stderr[-3000:]}")
    sps = steady_sps(out, skip=2)
    if sps is None:
        raise SystemExit(f"too few updates to time in {out}: raise the step budget")
    return {
        "sps": sps,
        "wall": wall,
        "updates": len((out / "metrics.jsonl").read_text().splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    steps = 4096 * 16 * (8 if args.quick else 24)  # updates of 65,536 steps
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for i, (name, overrides) in enumerate(CASES.items()):
                results[name].append(run_case(overrides, steps, Path(tmp, f"{r}-{i}")))
                print(f"  repeat {r + 1}/{repeats}: {name}: {results[name][-1]['sps']:,.0f} SPS")
    load_after = os.getloadavg()
    base = statistics.median(x["sps"] for x in results[next(iter(CASES))])
    print("\nlearn-heavy cartpole: MLP 256x2, 4096 env rows, horizon 16, 4x4 minibatches")
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        f"(the machine has {os.cpu_count()} cores)\n"
    )
    print("| case | SPS (median) | vs 1 process, 1 thread |")
    print("|---|---:|---:|")
    table = {}
    for name, runs in results.items():
        sps = statistics.median(x["sps"] for x in runs)
        table[name] = {"sps": sps, "speedup": sps / base, "runs": runs}
        print(f"| {name} | {sps:,.0f} | {sps / base:.2f}x |")
    print(
        json.dumps(
            {"steps": steps, "repeats": repeats, "load": [load_before, load_after], "cases": table}
        )
    )


if __name__ == "__main__":
    main()
