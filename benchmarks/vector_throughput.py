"""Vectorization throughput: puffer's Serial and Multiprocessing against a native env and gymnasium.

    python benchmarks/vector_throughput.py            # full run (~1-2 minutes)
    python benchmarks/vector_throughput.py --quick    # a smoke run (~15 s)

Cases (env steps per second, the median of ``--repeats`` timed runs each):

- built-in cartpole at 4096 rows: the native env alone, Serial, Multiprocessing (2 workers)
  synchronous and asynchronous (batches of 2048 rows: one worker simulates while the caller
  handles the other's batch);
- ``Heavy``, a one-agent env doing about 50 us of numpy work per step, at 64 envs: Serial,
  Multiprocessing (2 workers), and gymnasium's AsyncVectorEnv (one process per env, as gymnasium
  does it) over the same dynamics written as a ``gymnasium.Env``.

Actions come from a pool of pre-drawn random batches so that the timing is the env's. The timed
runs of the cases of one env are interleaved, so a change in the machine's load affects them
alike. Prints a table, then one JSON line with every number. The CPUs are not reserved: the run
reports how many cores other processes used meanwhile; compare numbers from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import psutil

import puffer.envs
import puffer.vector as V
from puffer.env import PufferEnv, StepResult
from puffer.spaces import Box, Discrete

HEAVY_SIZE = 1024  # state length of Heavy
HEAVY_ROUNDS = 22  # numpy passes over the state per step: about 50 us on a 2-core cloud VM
HEAVY_EPISODE = 200


def heavy_dynamics(x: np.ndarray, action: int) -> np.ndarray:
    """The CPU-heavy part: ``HEAVY_ROUNDS`` elementwise passes over the state."""
    push = 0.01 * (int(action) - 1.5)
    for _ in range(HEAVY_ROUNDS):
        x = np.tanh(x * 1.01 + push)
    return x


class Heavy(PufferEnv):
    """One agent, ~50 us of numpy per step; observation: the first 16 state values."""

    observation_space = Box(-1.0, 1.0, (16,))
    action_space = Discrete(4)

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.x = np.tanh(self.rng.standard_normal(HEAVY_SIZE))
        self.t = 0
        return self.x[:16].astype(np.float32), {}

    def step(self, action: Any) -> StepResult:
        self.x = heavy_dynamics(self.x, action)
        self.t += 1
        obs = self.x[:16].astype(np.float32)
        return StepResult(obs, float(self.x[0]), False, self.t >= HEAVY_EPISODE, {})


class GymHeavy(gymnasium.Env):
    """``Heavy`` as a gymnasium env, for gymnasium's vector envs."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (16,), np.float32)
    action_space = gymnasium.spaces.Discrete(4)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = np.tanh(self.np_random.standard_normal(HEAVY_SIZE))
        self.t = 0
        return self.x[:16].astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x = heavy_dynamics(self.x, action)
        self.t += 1
        return self.x[:16].astype(np.float32), float(self.x[0]), False, self.t >= HEAVY_EPISODE, {}


def action_pool(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, k, n, dtype=np.int64) for _ in range(16)]


def time_steps(step: Callable[[np.ndarray], Any], pool: list[np.ndarray], steps: int) -> float:
    """Seconds for ``steps`` calls of ``step``."""
    start = time.perf_counter()
    for i in range(steps):
        step(pool[i & 15])
    return time.perf_counter() - start


def prepare(
    env: Any, rows: int, k: int, mode: str
) -> tuple[Callable[[np.ndarray], Any], int, list]:
    """``(step function, rows it steps, action pool)`` for ``env``; ``mode``: sync or async."""
    if mode == "async":
        env.async_reset(0)
        env.recv()

        def step(actions: np.ndarray) -> None:
            env.send(actions)
            env.recv()

        return step, env.batch_size, action_pool(env.batch_size, k)
    env.reset(seed=0)
    return env.step, rows, action_pool(rows, k)


class OtherLoad:
    """CPU cores used by processes outside this benchmark's process tree, on average."""

    def __enter__(self) -> OtherLoad:
        self.start = (time.perf_counter(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, ours = self.start
        wall = time.perf_counter() - wall
        self.cores = max(0.0, (self._busy() - busy) - (self._ours() - ours)) / wall

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)

    @staticmethod
    def _ours() -> float:
        me = psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                c = p.cpu_times()
                total += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
        return total


def measure(cases: list[tuple[Any, ...]], repeats: int) -> dict[str, dict[str, float]]:
    """Median env steps/s per case. The repeats are interleaved across cases (every case runs
    once per pass) so that a change in the machine's load affects all cases alike."""
    envs, runs = [], []
    try:
        for name, make, rows, k, steps, mode in cases:
            envs.append(make())
            step, n, pool = prepare(envs[-1], rows, k, mode)
            time_steps(step, pool, max(10, steps // 10))  # warm up
            runs.append((name, step, n, pool, steps))
        rates: dict[str, list[float]] = {name: [] for name, *_ in runs}
        for _ in range(repeats):
            for name, step, n, pool, steps in runs:
                rates[name].append(n * steps / time_steps(step, pool, steps))
    finally:
        for env in envs:
            env.close()
    return {
        name: {"sps": statistics.median(r), "min": min(r), "max": max(r)}
        for name, r in rates.items()
    }


def heavy_step_us(repeats: int) -> float:
    env = Heavy()
    env.reset(seed=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(2000):
            if env.step(i & 3).truncated:
                env.reset()
        times.append((time.perf_counter() - start) / 2000 * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, ~15 s")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (5)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    cart_steps = 200 if args.quick else 2000
    heavy_steps = 20 if args.quick else 200
    load_before = os.getloadavg()

    def cart(backend: str, **kw: Any) -> Callable[[], Any]:
        return lambda: V.make("cartpole", 4096, backend, **kw)

    def heavy(backend: str, **kw: Any) -> Callable[[], Any]:
        return lambda: V.make(Heavy, 64, backend, **kw)

    def gym_async() -> Any:
        return gymnasium.vector.AsyncVectorEnv([GymHeavy] * 64)

    cart_cases = [
        ("native env", lambda: puffer.envs.make("cartpole", 4096), "sync"),
        ("Serial", cart("serial"), "sync"),
        ("Multiprocessing(2) sync", cart("multiprocessing", num_workers=2), "sync"),
        ("Multiprocessing(2) async", cart("multiprocessing", num_workers=2, batch_size=2048), "async"),
    ]  # fmt: skip
    heavy_cases = [
        ("Serial", heavy("serial"), "sync"),
        ("Multiprocessing(2) sync", heavy("multiprocessing", num_workers=2), "sync"),
        ("Multiprocessing(2) async", heavy("multiprocessing", num_workers=2, batch_size=32), "async"),
        ("gymnasium AsyncVectorEnv", gym_async, "sync"),
    ]  # fmt: skip
    with OtherLoad() as others:
        results = measure(
            [(f"cartpole x4096 | {b}", m, 4096, 2, cart_steps, mode) for b, m, mode in cart_cases],
            repeats,
        )
        results |= measure(
            [(f"heavy x64 | {b}", m, 64, 4, heavy_steps, mode) for b, m, mode in heavy_cases],
            repeats,
        )
    step_us = heavy_step_us(repeats)
    load_after = os.getloadavg()

    def ratio(a: str, b: str) -> float:
        return results[a]["sps"] / results[b]["sps"]

    ratios = {
        "heavy mp/serial": ratio("heavy x64 | Multiprocessing(2) sync", "heavy x64 | Serial"),
        "heavy mp/gymnasium async": ratio(
            "heavy x64 | Multiprocessing(2) sync", "heavy x64 | gymnasium AsyncVectorEnv"
        ),
        "cartpole mp/native": ratio(
            "cartpole x4096 | Multiprocessing(2) sync", "cartpole x4096 | native env"
        ),
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nvector throughput: {cores} cores, python {platform.python_version()}, numpy "
        f"{np.__version__}, gymnasium {gymnasium.__version__}; Heavy.step alone {step_us:.0f} us; "
        f"median of {repeats}.\nOther processes used {others.cores:.2f} of the {cores} cores during "
        f"the run (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after): the "
        "multiprocessing ratios need idle cores to mean anything."
    )
    print("\n| env | backend | steps/s (median) | min | max |\n|---|---|---:|---:|---:|")
    for key, r in results.items():
        env_name, backend = key.split(" | ")
        print(f"| {env_name} | {backend} | {r['sps']:,.0f} | {r['min']:,.0f} | {r['max']:,.0f} |")
    print("\n" + "  ".join(f"{k}: {v:.2f}x" for k, v in ratios.items()) + "\n")
    print(
        json.dumps(
            {
                "benchmark": "vector_throughput",
                "quick": args.quick,
                "repeats": repeats,
                "cores": cores,
                "heavy_step_us": round(step_us, 1),
                "other_processes_cores": round(others.cores, 2),
                "load_before": round(load_before[0], 2),
                "load_after": round(load_after[0], 2),
                "sps": {k: round(v["sps"]) for k, v in results.items()},
                "ratios": {k: round(v, 3) for k, v in ratios.items()},
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
