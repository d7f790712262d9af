"""Training throughput (env steps per second, rollout + update) of puffer and its peers at equal
settings, side by side.

Settings, the same for every library: CartPole; a rollout of 64 steps per env row; 4 minibatches
(fewer where the row count is smaller: puffer's minibatches hold whole rows); 1 epoch; one hidden
layer of 128 units (tanh); an LSTM of 128 units for the recurrent policies; torch on the CPU.

- puffer: its native CartPole, ``Trainer.rollout()`` + ``Trainer.update()``, MLP and LSTM, at
  1, 8, 16, 64, 256, 1024 and 4096 env rows, with 1 and 2 torch threads.
- stable-baselines3 ``PPO`` (MLP, ``net_arch=[128]``: SB3 keeps separate policy and value trunks)
  and sb3-contrib ``RecurrentPPO`` (``lstm_hidden_size=128``, one LSTM shared by actor and critic,
  ``net_arch=[]``) on gymnasium's CartPole-v1 in a ``DummyVecEnv``, at 16 and 256 rows, 1 thread.
  Install them with ``pip install -e '.[bench]'``.

Each measurement runs in a fresh subprocess: it builds everything, runs one update as warm-up,
then times whole updates until ``--seconds`` have passed; the reported SPS is the median over
``--repeats`` such processes.

    python benchmarks/training_throughput.py                   # everything (~10 min)
    python benchmarks/training_throughput.py --quick           # 1 repeat, 1 s each, fewer configs
    python benchmarks/training_throughput.py --rows 16,256 --threads 1 --libs puffer
    python benchmarks/training_throughput.py --puffer-path /other/checkout --json old.json
    python benchmarks/training_throughput.py --quick --baseline /old/checkout  # before/after

``--baseline DIR`` adds puffer from another checkout as lib ``baseline``, each measurement right
after the same one of this checkout (a loaded machine then slows both alike). ``--puffer-path DIR``
imports puffer from another checkout (e.g. an older commit, to compare
before/after on the same machine); it works with the trainer API before the rename
(``evaluate``/``train``) as well as after (``rollout``/``update``). Importing torch.optim (for
``torch.optim.Adam``) costs about 0.7 s once per process on a small CPU; it falls outside the timed
window here, as does every import.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = (1, 8, 16, 64, 256, 1024, 4096)
PEER_ROWS = (16, 256)
HORIZON, MINIBATCHES, EPOCHS, HIDDEN = 64, 4, 1, 128


def minibatches(rows: int) -> int:
    """4, or the largest divisor of ``rows`` below it (puffer's minibatches are whole rows)."""
    return math.gcd(MINIBATCHES, rows)


# --- one measurement (runs in its own process) ----------------------------------------------------


def time_updates(update: object, steps_per_update: int, seconds: float) -> float:
    """SPS of calling ``update()`` (one rollout + one update) until ``seconds`` have passed."""
    update()  # warm-up: first-call allocations, lazy imports
    done, start = 0, time.perf_counter()
    while True:
        update()
        done += steps_per_update
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 2 * steps_per_update:
            return done / elapsed


def measure_puffer(policy: str, rows: int, seconds: float) -> float:
    import puffer.envs
    import puffer.policy as P
    from puffer.ppo import PPOConfig, Trainer

    vecenv = puffer.envs.make("cartpole", num_envs=rows, seed=0)
    config = P.PolicyConfig(name=policy, hidden_sizes=[HIDDEN], lstm_hidden_size=HIDDEN)
    net = P.make(config, vecenv, seed=0)
    ppo = PPOConfig(
        total_timesteps=10**12,
        horizon=HORIZON,
        num_minibatches=minibatches(rows),
        update_epochs=EPOCHS,
    )
    trainer = Trainer(ppo, vecenv, net, device="cpu", seed=0)
    collect = getattr(trainer, "rollout", None) or trainer.evaluate  # before the rename
    learn = getattr(trainer, "update", None) or trainer.train

    def update() -> None:
        collect()
        learn()

    try:
        return time_updates(update, rows * HORIZON, seconds)
    finally:
        trainer.close()


def measure_sb3(policy: str, rows: int, seconds: float) -> float:
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=rows, seed=0)
    common = dict(
        n_steps=HORIZON,
        batch_size=rows * HORIZON // MINIBATCHES,
        n_epochs=EPOCHS,
        device="cpu",
        seed=0,
        verbose=0,
    )
    if policy == "mlp":
        from stable_baselines3 import PPO

        kwargs = dict(net_arch=[HIDDEN], activation_fn=torch.nn.Tanh)
        model = PPO("MlpPolicy", env, policy_kwargs=kwargs, **common)
    else:
        from sb3_contrib import RecurrentPPO

        kwargs = dict(
            lstm_hidden_size=HIDDEN,
            n_lstm_layers=1,
            shared_lstm=True,
            enable_critic_lstm=False,
            net_arch=[],
        )
        model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=kwargs, **common)
    steps = rows * HORIZON
    model.learn(steps)  # warm-up
    done, start = 0, time.perf_counter()
    while True:
        model.learn(steps, reset_num_timesteps=False)
        done += steps
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 2 * steps:
            return done / elapsed


def worker(args: argparse.Namespace) -> None:
    """Run one measurement and print it as a JSON line."""
    import torch

    if args.puffer_path:
        sys.path.insert(0, str(Path(args.puffer_path).resolve()))
    torch.set_num_threads(args.threads[0])
    lib, policy, rows = args.worker.split(",")
    measure = measure_sb3 if lib == "sb3" else measure_puffer
    sps = measure(policy, int(rows), args.seconds)
    print(json.dumps({"lib": lib, "policy": policy, "rows": int(rows), "sps": sps}))


# --- the driver ------------------------------------------------------------------------------------


def configs(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """``(lib, policy, rows, threads)`` to measure, in order."""
    out = []
    for threads in args.threads:
        for policy in args.policies:
            for rows in args.rows:
                if "puffer" in args.libs:
                    out.append(("puffer", policy, rows, threads))
                    if args.baseline:
                        out.append(("baseline", policy, rows, threads))
                if "sb3" in args.libs and rows in PEER_ROWS and threads == 1:
                    out.append(("sb3", policy, rows, threads))
    return out


def run_one(args: argparse.Namespace, lib: str, policy: str, rows: int, threads: int) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        f"{lib},{policy},{rows}",
        "--threads",
        str(threads),
        "--seconds",
        str(args.seconds),
    ]
    path = args.baseline if lib == "baseline" else args.puffer_path
    if path:
        cmd += ["--puffer-path", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {lib} {policy} rows={rows}: failed ({tail})", file=sys.stderr)
        return float("nan")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["sps"])


def table(results: list[dict[str, object]]) -> str:
    lines = [
        "| lib | policy | env rows | torch threads | SPS (median) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['lib']} | {r['policy']} | {r['rows']} | {r['threads']} | {r['sps']:,.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repeat of 1 s at 16 and 256 rows")
    p.add_argument("--rows", type=ints, default=list(ROWS))
    p.add_argument("--threads", type=ints, default=[1, 2])
    p.add_argument("--policies", type=lambda s: s.split(","), default=["mlp", "lstm"])
    p.add_argument("--libs", type=lambda s: s.split(","), default=["puffer", "sb3"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--puffer-path", help="import puffer from this checkout instead")
    p.add_argument(
        "--baseline",
        help="also measure puffer from this checkout (lib 'baseline'), interleaved with puffer",
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds = 1, 1.0
        if args.rows == list(ROWS):
            args.rows = list(PEER_ROWS)
        if args.threads == [1, 2]:
            args.threads = [1]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    results = []
    for lib, policy, rows, threads in configs(args):
        runs = [run_one(args, lib, policy, rows, threads) for _ in range(args.repeats)]
        sps = statistics.median(runs)
        rounded = dict(sps=round(sps), runs=[round(r) for r in runs])  # steps/s, for people
        results.append(dict(lib=lib, policy=policy, rows=rows, threads=threads, **rounded))
        print(
            f"{lib:7s} {policy:5s} rows={rows:5d} threads={threads}: {sps:10,.0f} SPS", flush=True
        )
    print()
    print(table(results))
    settings = dict(horizon=HORIZON, minibatches=MINIBATCHES, epochs=EPOCHS, hidden=HIDDEN)
    payload = {
        "settings": settings,
        "puffer_path": args.puffer_path,
        "baseline": args.baseline,
        "results": results,
    }
    print(json.dumps(payload))
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
