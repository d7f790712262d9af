"""Env steps per second: every built-in env (one-agent loop; native VecEnv at 1/64/1024/4096 rows)
and gymnasium's CartPole-v1 (single loop; SyncVectorEnv(64)), measured side by side in one run.

    python benchmarks/env_throughput.py              # 5 repeats of 1 s each (about 2 minutes)
    python benchmarks/env_throughput.py --quick      # 3 repeats of 0.2 s (about 20 s)

Each repeat measures every configuration once, in turn, so machine load affects them alike; the
table shows the median over repeats. Actions are random (drawn before timing). Prints a Markdown
table, then one JSON line with every median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

import puffer.envs as envs

ROWS = (1, 64, 1024, 4096)
ACTION_BATCHES = 64  # at most this many pre-drawn action batches, cycled


def timed(chunk: Callable[[], int]) -> Callable[[float], float]:
    """A measurement: call ``chunk`` (it returns how many steps it took) until ``duration`` seconds
    have passed; steps per second."""

    def run(duration: float) -> float:
        steps, start = 0, time.perf_counter()
        while True:
            steps += chunk()
            elapsed = time.perf_counter() - start
            if elapsed >= duration:
                return steps / elapsed

    return run


def one_agent_loop(name: str) -> Callable[[float], float]:
    env = envs.make_one(name, seed=0)
    rng = np.random.default_rng(0)
    space = env.action_space
    actions = [space.sample(rng) for _ in range(256)]
    if space.shape == ():
        actions = [int(a) for a in actions]  # what a user loop would pass
    env.reset(seed=0)

    def chunk() -> int:
        for a in actions:
            if env.step(a).done:
                env.reset()
        return len(actions)

    return timed(chunk)


def vec_loop(name: str, rows: int) -> Callable[[float], float]:
    env = envs.make(name, num_envs=rows, seed=0)
    rng = np.random.default_rng(0)
    count = max(1, min(ACTION_BATCHES, 200_000 // rows))  # a chunk of about 200k steps at most
    batches = [env.single_action_space.sample_batch(rows, rng) for _ in range(count)]
    env.reset()

    def chunk() -> int:
        for a in batches:
            env.step(a)
        return len(batches) * rows

    return timed(chunk)


def gymnasium_single() -> Callable[[float], float]:
    import gymnasium

    env = gymnasium.make("CartPole-v1")
    actions = np.random.default_rng(0).integers(2, size=256).tolist()
    env.reset(seed=0)

    def chunk() -> int:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return len(actions)

    return timed(chunk)


def gymnasium_sync(rows: int = 64) -> Callable[[float], float]:
    import gymnasium

    env = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("CartPole-v1")] * rows)
    batches = np.random.default_rng(0).integers(2, size=(16, rows))
    env.reset(seed=0)

    def chunk() -> int:
        for a in batches:
            env.step(a)
        return len(batches) * rows

    return timed(chunk)


def fmt(x: float | None) -> str:
    if x is None:
        return ""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measurements per configuration")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 0.2 s")
    parser.add_argument(
        "--envs", nargs="*", default=sorted(envs.names()), help="built-in env names"
    )
    parser.add_argument("--rows", nargs="*", type=int, default=list(ROWS), help="VecEnv row counts")
    parser.add_argument("--no-gymnasium", action="store_true", help="skip the gymnasium reference")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.duration = 3, 0.2

    runs: dict[tuple[str, str], Callable[[float], float]] = {}
    for name in args.envs:
        runs[(name, "one-agent")] = one_agent_loop(name)
        for rows in args.rows:
            runs[(name, f"vec {rows}")] = vec_loop(name, rows)
    if not args.no_gymnasium:
        runs[("gymnasium CartPole-v1", "one-agent")] = gymnasium_single()
        runs[("gymnasium CartPole-v1", "vec 64")] = gymnasium_sync(64)

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for run in runs.values():  # warm up
        run(min(0.05, args.duration))
    for _ in range(args.repeats):
        for key, run in runs.items():
            samples[key].append(run(args.duration))
    medians = {key: statistics.median(v) for key, v in samples.items()}

    columns = ["one-agent", *(f"vec {r}" for r in args.rows)]
    names = list(dict.fromkeys(name for name, _ in runs))
    print(f"steps/s, median of {args.repeats} x {args.duration:g} s, one process")
    print()
    print("| env | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in names:
        print(f"| {name} | " + " | ".join(fmt(medians.get((name, c))) for c in columns) + " |")
    if not args.no_gymnasium:
        print("\n(gymnasium: `gymnasium.make` single loop; `vec 64` is SyncVectorEnv of 64)")
    print()
    print(
        json.dumps(
            {
                "benchmark": "env_throughput",
                "repeats": args.repeats,
                "duration": args.duration,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "steps_per_second": {f"{n}/{c}": round(v) for (n, c), v in medians.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
