"""Time to solve CartPole: puffer vs stable-baselines3 vs a CleanRL-style PPO, side by side.

"Solved" is the same rule for all: the mean return of the last 100 finished training episodes is
>= 475. Each run is a fresh subprocess; its clock starts after imports (and after one throwaway
``torch.optim.Adam``, whose first construction costs ~1.3 s of lazy imports in any process), before
the env is made.
Reported per library: median wall seconds to solve, env steps to solve, steps per second, and how
many seeds solved; then the ratios to puffer, a Markdown table and one JSON line.

    python benchmarks/time_to_solve.py                 # 3 seeds each
    python benchmarks/time_to_solve.py --quick         # 1 seed each, runs capped at 60 s
    python benchmarks/time_to_solve.py --libs puffer,sb3 --seeds 5 --threads 2

puffer uses conf/tuned/cartpole.yaml. stable-baselines3 (``pip install stable-baselines3``, the
``bench`` extra) uses the rl-zoo CartPole-v1 hyperparameters. The CleanRL-style PPO follows
CleanRL's ppo.py defaults on a gymnasium SyncVectorEnv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLVED = 475.0
WINDOW = 100
LIBS = ("puffer", "sb3", "cleanrl")


def solved(returns: deque[float]) -> bool:
    return len(returns) == WINDOW and sum(returns) / WINDOW >= SOLVED


def result(lib: str, seed: int, ok: bool, steps: int, seconds: float) -> dict[str, object]:
    return {
        "lib": lib,
        "seed": seed,
        "solved": ok,
        "seconds": round(seconds, 3),
        "steps": int(steps),
        "sps": round(steps / seconds) if seconds > 0 else 0,
    }


# --- the three contenders (each runs in its own process) -----------------------------------------


def run_puffer(seed: int, threads: int, max_seconds: float) -> dict[str, object]:
    from omegaconf import OmegaConf

    import puffer.envs
    import puffer.policy as P
    from puffer.ppo import PPOConfig, Trainer

    tuned = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "tuned" / "cartpole.yaml"))
    start = time.perf_counter()
    vecenv = puffer.envs.make("cartpole", num_envs=tuned["vector"]["num_envs"], seed=seed)
    policy = P.make(P.PolicyConfig(**tuned["policy"]), vecenv, seed=seed)
    trainer = Trainer(
        PPOConfig(**tuned["ppo"]), vecenv, policy, device="cpu", seed=seed, torch_threads=threads
    )
    ok = False
    while not trainer.done and time.perf_counter() - start < max_seconds:
        trainer.rollout()
        if solved(deque(trainer.recent_episodes("episode_return"), maxlen=WINDOW)):
            ok = True
            break
        trainer.update()
    return result("puffer", seed, ok, trainer.global_step, time.perf_counter() - start)


def run_sb3(seed: int, threads: int, max_seconds: float) -> dict[str, object]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)

    def linear(value: float):
        return lambda progress_remaining: progress_remaining * value

    class StopWhenSolved(BaseCallback):
        ok = False

        def _on_step(self) -> bool:
            returns = deque((info["r"] for info in self.model.ep_info_buffer), maxlen=WINDOW)
            StopWhenSolved.ok = solved(returns)
            return not StopWhenSolved.ok and time.perf_counter() - start < max_seconds

    start = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(  # rl-zoo hyperparams/ppo.yml, CartPole-v1
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=100_000, callback=StopWhenSolved())
    return result("sb3", seed, StopWhenSolved.ok, model.num_timesteps, time.perf_counter() - start)


def run_cleanrl(seed: int, threads: int, max_seconds: float) -> dict[str, object]:
    """CleanRL ppo.py's algorithm and defaults: 4 envs x 128 steps, separate 64-64 tanh actor and
    critic, lr 2.5e-4 annealed, 4 epochs x 4 minibatches, GAE 0.99/0.95, clip 0.2, ent 0.01."""
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    num_envs, num_steps, total = 4, 128, 500_000
    lr, epochs, minibatches = 2.5e-4, 4, 4
    gamma, lam, clip, ent_coef, vf_coef, max_norm = 0.99, 0.95, 0.2, 0.01, 0.5, 0.5

    def layer(i: int, o: int, std: float = 2**0.5) -> nn.Linear:
        lin = nn.Linear(i, o)
        nn.init.orthogonal_(lin.weight, std)
        nn.init.constant_(lin.bias, 0.0)
        return lin

    start = time.perf_counter()
    torch.manual_seed(seed)
    np.random.seed(seed)  # the minibatch permutations, as CleanRL seeds them
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1") for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    critic = nn.Sequential(layer(4, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 1, 1.0))
    actor = nn.Sequential(layer(4, 64), nn.Tanh(), layer(64, 64), nn.Tanh(), layer(64, 2, 0.01))
    params = [*critic.parameters(), *actor.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, eps=1e-5)
    batch = num_envs * num_steps
    obs_buf = torch.zeros(num_steps, num_envs, 4)
    act_buf = torch.zeros(num_steps, num_envs, dtype=torch.long)
    logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(num_steps, num_envs) for _ in range(4))
    obs, _ = envs.reset(seed=seed)
    next_obs, next_done = torch.tensor(obs, dtype=torch.float32), torch.zeros(num_envs)
    episode = np.zeros(num_envs)
    returns: deque[float] = deque(maxlen=WINDOW)
    step, ok = 0, False
    for update in range(total // batch):
        optimizer.param_groups[0]["lr"] = lr * (1 - update / (total // batch))
        for t in range(num_steps):
            obs_buf[t], done_buf[t] = next_obs, next_done
            with torch.no_grad():
                dist = torch.distributions.Categorical(logits=actor(next_obs))
                action = dist.sample()
                logp_buf[t], val_buf[t] = dist.log_prob(action), critic(next_obs).flatten()
            act_buf[t] = action
            obs, reward, term, trunc, _ = envs.step(action.numpy())
            step += num_envs
            done = term | trunc
            episode += reward
            returns.extend(episode[done].tolist())
            episode[done] = 0
            rew_buf[t] = torch.tensor(reward, dtype=torch.float32)
            next_obs = torch.tensor(obs, dtype=torch.float32)
            next_done = torch.tensor(done, dtype=torch.float32)
            if solved(returns):
                ok = True
                break
        if ok or time.perf_counter() - start > max_seconds:
            break
        with torch.no_grad():
            next_value = critic(next_obs).flatten()
            adv = torch.zeros_like(rew_buf)
            last = 0
            for t in reversed(range(num_steps)):
                nonterminal = 1.0 - (next_done if t == num_steps - 1 else done_buf[t + 1])
                nv = next_value if t == num_steps - 1 else val_buf[t + 1]
                delta = rew_buf[t] + gamma * nv * nonterminal - val_buf[t]
                adv[t] = last = delta + gamma * lam * nonterminal * last
            ret = adv + val_buf
        b_obs, b_act, b_logp = obs_buf.reshape(-1, 4), act_buf.reshape(-1), logp_buf.reshape(-1)
        b_adv, b_ret, b_val = adv.reshape(-1), ret.reshape(-1), val_buf.reshape(-1)
        size = batch // minibatches
        for _ in range(epochs):
            perm = np.random.permutation(batch)
            for i in range(0, batch, size):
                mb = perm[i : i + size]
                dist = torch.distributions.Categorical(logits=actor(b_obs[mb]))
                ratio = (dist.log_prob(b_act[mb]) - b_logp[mb]).exp()
                a = b_adv[mb]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()
                v = critic(b_obs[mb]).flatten()
                v_clipped = b_val[mb] + (v - b_val[mb]).clamp(-clip, clip)
                v_loss = 0.5 * torch.max((v - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean()
                loss = pg - ent_coef * dist.entropy().mean() + vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, max_norm)
                optimizer.step()
    envs.close()
    return result("cleanrl", seed, ok, step, time.perf_counter() - start)


RUNNERS = {"puffer": run_puffer, "sb3": run_sb3, "cleanrl": run_cleanrl}


# --- driver ----------------------------------------------------------------------------------------


def spawn(lib: str, seed: int, threads: int, max_seconds: float) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--run", lib, "--seed", str(seed), "--threads", str(threads)]
    cmd += ["--max-seconds", str(max_seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"lib": lib, "seed": seed, "solved": False, "error": error}
    return json.loads(lines[-1])


def median(rows: list[dict[str, object]], key: str) -> float | None:
    """The median of ``key`` over the solved rows, rounded for people (4 significant digits: the
    mean of two middle values is no more precise than they are)."""
    values = [float(r[key]) for r in rows if r.get("solved")]  # type: ignore[arg-type]
    return float(f"{statistics.median(values):.4g}") if values else None


def summarize(runs: list[dict[str, object]], libs: list[str]) -> dict[str, dict[str, object]]:
    summary = {}
    for lib in libs:
        rows = [r for r in runs if r["lib"] == lib]
        summary[lib] = {
            "solved": f"{sum(bool(r.get('solved')) for r in rows)}/{len(rows)}",
            "seconds": median(rows, "seconds"),
            "steps": median(rows, "steps"),
            "sps": median(rows, "sps"),
            "errors": [r["error"] for r in rows if "error" in r],
        }
    return summary


def fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def warm_up_torch_optim() -> None:
    """Construct one ``torch.optim.Adam`` before the clock starts, in every library's process: the
    first construction in a process costs about 1.3 s here (torch.optim's lazy imports), once per
    process, which all three libraries would otherwise pay inside their timed run."""
    import torch

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--libs", default=",".join(LIBS), help="comma-separated: puffer,sb3,cleanrl"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per library (0..n-1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for all")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="cap per run")
    parser.add_argument("--quick", action="store_true", help="1 seed, runs capped at 60 s")
    parser.add_argument("--run", choices=LIBS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run:  # one run, in this (fresh) process
        warm_up_torch_optim()
        print(json.dumps(RUNNERS[args.run](args.seed, args.threads, args.max_seconds)), flush=True)
        return

    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    unknown = sorted(set(libs) - set(LIBS))
    if unknown:
        parser.error(f"unknown --libs {unknown}: choose from {', '.join(LIBS)}")
    seeds = 1 if args.quick else args.seeds
    cap = min(args.max_seconds, 60.0) if args.quick else args.max_seconds
    runs = []
    for seed in range(seeds):  # interleaved, so that load changes hit every library alike
        for lib in libs:
            run = spawn(lib, seed, args.threads, cap)
            runs.append(run)
            print(f"# {json.dumps(run)}", file=sys.stderr, flush=True)
    summary = summarize(runs, libs)

    print(f"CartPole-v1 time to solve (mean of last {WINDOW} episodes >= {SOLVED:.0f}), ")
    print(f"{seeds} seed(s), {args.threads} torch thread(s), medians over solved runs:\n")
    print("| library | solved | wall seconds | env steps | steps/s | seconds vs puffer |")
    print("|---|---|---|---|---|---|")
    base = summary.get("puffer", {}).get("seconds")
    for lib in libs:
        s = summary[lib]
        ratio = s["seconds"] / base if base and s["seconds"] else None  # type: ignore[operator]
        print(
            f"| {lib} | {s['solved']} | {fmt(s['seconds'])} | {fmt(s['steps'])} | "
            f"{fmt(s['sps'])} | {fmt(ratio, 1) + 'x' if ratio else '-'} |"
        )
        for error in s["errors"]:
            print(f"\n{lib} failed: {error}")
    print()
    print(
        json.dumps(
            {
                "benchmark": "time_to_solve",
                "threads": args.threads,
                "summary": summary,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
