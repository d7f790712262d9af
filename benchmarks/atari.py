"""Atari (Breakout) side by side: env stepping and PPO training throughput.

    python benchmarks/atari.py              # both parts (~5 minutes on 2 cores)
    python benchmarks/atari.py --quick      # a smoke run (~1 minute)
    python benchmarks/atari.py --part env   # env steps/s only (``train``: training only)

Env steps/s, 8 Breakout envs with the same preprocessing (puffer/emulation/atari.py: no-op reset,
frame skip 4 with max-pool, 84x84 grayscale, 4-frame stack), random actions:

- puffer ``Multiprocessing`` with 2 worker processes (4 envs each, shared memory);
- gymnasium ``AsyncVectorEnv`` (one process per env: how SB3's SubprocVecEnv and CleanRL's
  envpool-free scripts step Atari in parallel) and ``SyncVectorEnv`` (CleanRL's ppo_atari.py).

Training SPS (env steps per second of wall time, learning included), 8 envs, horizon 128,
4 minibatches, 4 epochs, the Nature-DQN CNN, one torch thread per process count as configured:

- puffer: ``puffer.ppo.train`` with ``policy=cnn`` (H3's CNN) on ``Multiprocessing(2)``;
- a CleanRL-style loop (``cleanrl_ppo`` below, written after CleanRL's ppo_atari.py structure:
  SyncVectorEnv, float32 observation buffer, per-step torch calls, GAE, shuffled minibatches).

Each case runs once, cases interleaved with ``--repeats``; prints a table and one JSON line.
Compare numbers from one run only: the CPUs are shared.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

import puffer.vector as V
from puffer.emulation.atari import make_atari, make_gym_atari

GAME = "Breakout"
NUM_ENVS = 8
HORIZON = 128
MINIBATCHES = 4
EPOCHS = 4


def _gym_env() -> gymnasium.Env:
    return make_gym_atari(GAME)


# --- env steps/s -----------------------------------------------------------------------------------


def _timed_steps(step: Callable[[Any], Any], pool: list[Any], steps: int) -> float:
    """Env steps per second of ``steps`` calls of ``step`` with the action batches of ``pool``
    in turn, after 10 untimed calls."""
    for i in range(10):
        step(pool[i % len(pool)])
    start = time.perf_counter()
    for i in range(steps):
        step(pool[i % len(pool)])
    return steps * NUM_ENVS / (time.perf_counter() - start)


def puffer_env_sps(steps: int) -> float:
    creator = functools.partial(make_atari, GAME)
    with V.make(creator, NUM_ENVS, "multiprocessing", num_workers=2, seed=0) as vec:
        rng = np.random.default_rng(0)
        vec.reset()
        pool = [vec.single_action_space.sample_batch(NUM_ENVS, rng) for _ in range(64)]
        return _timed_steps(vec.step, pool, steps)


def gym_env_sps(kind: type, steps: int) -> float:
    envs = kind([_gym_env for _ in range(NUM_ENVS)])
    try:
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        pool = [rng.integers(0, 4, NUM_ENVS) for _ in range(64)]
        return _timed_steps(envs.step, pool, steps)
    finally:
        envs.close()


# --- training SPS ------------------------------------------------------------------------------------


def puffer_train_sps(updates: int) -> float:
    """puffer's PPO with the CNN policy: SPS over ``updates`` after one warm-up update."""
    import puffer.policy as P
    from puffer.ppo import PPOConfig, train

    config = PPOConfig(
        total_timesteps=(updates + 1) * NUM_ENVS * HORIZON,
        learning_rate=2.5e-4,
        horizon=HORIZON,
        num_minibatches=MINIBATCHES,
        update_epochs=EPOCHS,
        clip_coef=0.1,
        ent_coef=0.01,
    )
    vec = V.make(
        functools.partial(make_atari, GAME), NUM_ENVS, "multiprocessing", num_workers=2, seed=0
    )
    marks: list[tuple[float, float]] = []

    def mark(metrics: dict[str, float]) -> None:
        marks.append((time.perf_counter(), metrics["global_step"]))

    try:
        policy = P.make(P.PolicyConfig(name="cnn"), vec, seed=0)
        train(config, vec, policy, device="cpu", seed=0, torch_threads=1, callback=mark)
    finally:
        vec.close()
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return (s1 - s0) / (t1 - t0)


def cleanrl_ppo(updates: int) -> float:
    """A CleanRL-style PPO loop (ppo_atari.py's structure) on SyncVectorEnv: SPS after warm-up."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    envs = gymnasium.vector.SyncVectorEnv([_gym_env for _ in range(NUM_ENVS)])

    def init(layer: nn.Module, std: float = np.sqrt(2)) -> nn.Module:
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, 0.0)
        return layer

    trunk = nn.Sequential(
        init(nn.Conv2d(4, 32, 8, stride=4)),
        nn.ReLU(),
        init(nn.Conv2d(32, 64, 4, stride=2)),
        nn.ReLU(),
        init(nn.Conv2d(64, 64, 3, stride=1)),
        nn.ReLU(),
        nn.Flatten(),
        init(nn.Linear(64 * 7 * 7, 512)),
        nn.ReLU(),
    )
    actor, critic = init(nn.Linear(512, 4), 0.01), init(nn.Linear(512, 1), 1.0)
    params = [*trunk.parameters(), *actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=2.5e-4, eps=1e-5)

    def act(x: torch.Tensor, action: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        hidden = trunk(x / 255.0)
        dist = torch.distributions.Categorical(logits=actor(hidden))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), critic(hidden).squeeze(-1)

    shape = (HORIZON, NUM_ENVS)
    obs = torch.zeros((*shape, 4, 84, 84))
    actions, logprobs, rewards, dones, values = (torch.zeros(shape) for _ in range(5))
    next_obs = torch.Tensor(envs.reset(seed=0)[0])
    next_done = torch.zeros(NUM_ENVS)
    batch = HORIZON * NUM_ENVS
    mb = batch // MINIBATCHES
    marks = []
    for _ in range(updates + 1):
        for step in range(HORIZON):
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = act(next_obs)
            values[step], actions[step], logprobs[step] = value, action, logprob
            o, r, term, trunc, _ = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(np.sign(r), dtype=torch.float32)
            next_obs, next_done = torch.Tensor(o), torch.Tensor(np.logical_or(term, trunc))
        with torch.no_grad():  # GAE (gamma 0.99, lambda 0.95)
            next_value = act(next_obs)[3]
            advantages, last = torch.zeros(shape), 0.0
            for t in reversed(range(HORIZON)):
                nonterminal = 1.0 - (next_done if t == HORIZON - 1 else dones[t + 1])
                nv = next_value if t == HORIZON - 1 else values[t + 1]
                delta = rewards[t] + 0.99 * nv * nonterminal - values[t]
                advantages[t] = last = delta + 0.99 * 0.95 * nonterminal * last
            returns = advantages + values
        b_obs, b_act, b_logp = (
            obs.reshape(batch, 4, 84, 84),
            actions.reshape(-1),
            logprobs.reshape(-1),
        )
        b_adv, b_ret = advantages.reshape(-1), returns.reshape(-1)
        for _ in range(EPOCHS):
            order = np.random.permutation(batch)
            for start in range(0, batch, mb):
                idx = order[start : start + mb]
                _, newlogp, entropy, newv = act(b_obs[idx], b_act[idx].long())
                ratio = (newlogp - b_logp[idx]).exp()
                adv = (b_adv[idx] - b_adv[idx].mean()) / (b_adv[idx].std() + 1e-8)
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.9, 1.1)).mean()
                v_loss = 0.5 * ((newv - b_ret[idx]) ** 2).mean()
                loss = pg - 0.01 * entropy.mean() + 0.5 * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 0.5)
                optimizer.step()
        marks.append(time.perf_counter())
    envs.close()
    return updates * batch / (marks[-1] - marks[0])


# --- main ------------------------------------------------------------------------------------------


def compare(title: str, cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median rate of each case, the cases' repeats interleaved so that load changes hit them alike;
    prints a table and the first case's ratio to the second."""
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            rates[name].append(fn())
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{title} (median of {repeats}):")
    for name, rate in medians.items():
        print(f"  {name:28s} {rate:10,.0f}")
    first, second = list(medians)[:2]
    print(f"  {first} / {second}: {medians[first] / medians[second]:.2f}x")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and updates")
    parser.add_argument("--part", choices=["env", "train", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    steps, updates = (200, 2) if args.quick else (1000, 6)
    results: dict[str, Any] = {"game": GAME, "num_envs": NUM_ENVS, "machine": platform.node()}
    if args.part in ("env", "all"):
        cases = {
            "puffer Multiprocessing(2)": lambda: puffer_env_sps(steps),
            "gymnasium AsyncVectorEnv": lambda: gym_env_sps(gymnasium.vector.AsyncVectorEnv, steps),
            "gymnasium SyncVectorEnv": lambda: gym_env_sps(gymnasium.vector.SyncVectorEnv, steps),
        }
        title = f"env steps/s, {NUM_ENVS} {GAME} envs"
        results["env_steps_per_s"] = compare(title, cases, repeats)
    if args.part in ("train", "all"):
        cases = {
            "puffer PPO (policy=cnn)": lambda: puffer_train_sps(updates),
            "CleanRL-style PPO": lambda: cleanrl_ppo(updates),
        }
        title = f"training SPS, horizon {HORIZON}, {MINIBATCHES} minibatches, {EPOCHS} epochs"
        results["training_sps"] = compare(title, cases, repeats)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
