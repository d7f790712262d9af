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
- ``bare`` (``--libs puffer,bare``): a bare CleanRL-style eager-torch PPO on the same native
  CartPole, MLP only, without puffer's checks, statistics and options: what a straightforward
  eager-torch loop costs at these settings, i.e. how much of puffer's step is puffer's own.

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


def measure_bare(policy: str, rows: int, seconds: float) -> float:
    """A bare CleanRL-style eager-torch PPO on puffer's native cartpole (MLP only): the same env,
    network sizes, horizon and minibatches, with none of puffer's checks, statistics, options or
    truncation bootstrap: what a straightforward eager-torch PPO costs at these settings."""
    import numpy as np
    import torch
    from torch import nn

    import puffer.envs

    if policy != "mlp":
        raise SystemExit("bare: only the MLP")
    env = puffer.envs.make("cartpole", num_envs=rows, seed=0)
    env.reset(seed=0)
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, HIDDEN), nn.Tanh())
    actor, critic = nn.Linear(HIDDEN, 2), nn.Linear(HIDDEN, 1)
    params = [*trunk.parameters(), *actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5, fused=True)
    obs = torch.from_numpy(env.observations)  # the env writes its observations in place
    b_obs, b_logp = torch.zeros(HORIZON, rows, 4), torch.zeros(HORIZON, rows)
    b_act = torch.zeros(HORIZON, rows, dtype=torch.int64)
    b_values = torch.zeros(HORIZON + 1, rows)
    rewards, dones = np.zeros((HORIZON, rows), np.float32), np.zeros((HORIZON, rows), np.float32)
    minibatch_size = rows * HORIZON // minibatches(rows)
    gamma, gae_lambda, clip_coef = 0.99, 0.95, 0.2

    def update() -> None:
        with torch.no_grad():
            for t in range(HORIZON):
                b_obs[t] = obs
                hidden = trunk(obs)
                logp = torch.log_softmax(actor(hidden), -1)
                action = torch.multinomial(logp.exp(), 1)
                b_values[t], b_act[t] = critic(hidden).squeeze(-1), action.squeeze(-1)
                b_logp[t] = logp.gather(-1, action).squeeze(-1)
                _, rewards[t], term, trunc, _ = env.step(b_act[t].numpy())
                dones[t] = term | trunc
            b_values[HORIZON] = critic(trunk(obs)).squeeze(-1)
        values, advantages, last = b_values.numpy(), np.zeros_like(rewards), 0.0
        for t in reversed(range(HORIZON)):  # GAE (Schulman et al. 2016)
            nonterminal = 1.0 - dones[t]
            delta = rewards[t] + gamma * values[t + 1] * nonterminal - values[t]
            advantages[t] = last = delta + gamma * gae_lambda * nonterminal * last
        adv = torch.from_numpy(advantages).view(-1)
        returns = adv + b_values[:HORIZON].reshape(-1)
        flat_obs, flat_act, flat_logp = b_obs.view(-1, 4), b_act.view(-1), b_logp.view(-1)
        for idx in torch.randperm(rows * HORIZON).split(minibatch_size):
            hidden = trunk(flat_obs[idx])
            logp = torch.log_softmax(actor(hidden), -1)
            ratio = (logp.gather(-1, flat_act[idx, None]).squeeze(-1) - flat_logp[idx]).exp()
            mb_adv = (adv[idx] - adv[idx].mean()) / (adv[idx].std() + 1e-8)
            clipped = ratio.clamp(1 - clip_coef, 1 + clip_coef)
            pg_loss = torch.max(-mb_adv * ratio, -mb_adv * clipped).mean()
            v_loss = 0.5 * (critic(hidden).squeeze(-1) - returns[idx]).square().mean()
            entropy = -(logp.exp() * logp).sum(-1).mean()
            loss = pg_loss + 0.5 * v_loss - 0.01 * entropy
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
            optimizer.step()

    return time_updates(update, rows * HORIZON, seconds)


def worker(args: argparse.Namespace) -> None:
    """Run one measurement and print it as a JSON line."""
    import torch

    if args.puffer_path:
        sys.path.insert(0, str(Path(args.puffer_path).resolve()))
    torch.set_num_threads(args.threads[0])
    lib, policy, rows = args.worker.split(",")
    measure = {"sb3": measure_sb3, "bare": measure_bare}.get(lib, measure_puffer)
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
                if "bare" in args.libs and policy == "mlp":
                    out.append(("bare", policy, rows, threads))
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
