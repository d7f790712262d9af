"""How should Multiprocessing wait? Blocking on semaphores vs spinning first, measured.

    python benchmarks/vector_signalling.py [--quick]

Two worker processes and the main process exchange semaphore posts as ``Multiprocessing`` does
(main posts each worker's ``go``, each worker steps ``rows`` cartpole rows and posts ``done``).
Both sides either block at once or first spin (try-acquire in a loop) for a time budget. Prints
the median microseconds per step for each budget and work size, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np

from puffer._worker import spin

SPINS_US = (0, 5, 20, 100)


def wait(sem: Any, spin_s: float) -> None:
    """Acquire ``sem`` as ``Multiprocessing`` does: try for ``spin_s`` seconds, then block."""
    if not spin(sem, spin_s):
        sem.acquire()


def worker(go: Any, done: Any, stop: Any, rows: int, spin_s: float) -> None:
    import puffer.envs

    env = puffer.envs.make("cartpole", num_envs=max(rows, 1), seed=0)
    env.reset()
    actions = np.zeros(env.num_envs, np.int64)
    while True:
        wait(go, spin_s)
        if stop.value:
            return
        if rows:
            env.step(actions)
        done.release()


def measure(rows: int, spin_us: float, steps: int, repeats: int) -> float:
    ctx = mp.get_context("fork")
    gos, dones = [ctx.Semaphore(0) for _ in range(2)], [ctx.Semaphore(0) for _ in range(2)]
    stop = ctx.RawValue("i", 0)
    spin_s = spin_us * 1e-6
    procs = [
        ctx.Process(target=worker, args=(gos[w], dones[w], stop, rows, spin_s), daemon=True)
        for w in range(2)
    ]
    for p in procs:
        p.start()

    def step() -> None:
        for go in gos:
            go.release()
        for done in dones:
            wait(done, spin_s)

    try:
        for _ in range(100):
            step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - start) / steps * 1e6)
    finally:
        stop.value = 1
        for go in gos:
            go.release()
        for p in procs:
            p.join(5)
            if p.exitcode is None:
                p.kill()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, repeats = (300, 3) if args.quick else (2000, 5)
    load = os.getloadavg()[0]
    results: dict[str, dict[str, float]] = {}
    for rows in (0, 32, 2048):
        results[f"rows/worker={rows}"] = {
            f"spin {us} us": measure(rows, us, steps, repeats) for us in SPINS_US
        }
    print(f"\nus per 2-worker step (median of {repeats}); load average {load:.2f} at start\n")
    print("| work | " + " | ".join(f"spin {us} us" for us in SPINS_US) + " |")
    print("|---|" + "---:|" * len(SPINS_US))
    for work, row in results.items():
        print(f"| {work} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |")
    print()
    us = {work: {k: round(v, 1) for k, v in row.items()} for work, row in results.items()}
    print(json.dumps({"benchmark": "vector_signalling", "load": round(load, 2), "us": us}))


if __name__ == "__main__":
    main()
