"""Micro-benchmark of the policy's hot paths, one torch thread (medians of repeats).

- act: ``policy.act`` (forward + sample + log-prob) per step, MLP and LSTM, 16 and 256 rows.
- sequence: LSTM ``forward_sequence`` + backward on one minibatch of 64 segments x 64 steps,
  at several episode-start rates (starts split segments into runs).
- train: end-to-end PPO SPS on cartpole (256 rows, horizon 64, 4 minibatches, 1 epoch), MLP and
  LSTM with 128 hidden units, as in the issues' measurements.

    .venv/bin/python benchmarks/policy_step.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

import puffer.envs
import puffer.policy as P
from puffer.ppo import PPOConfig, Trainer

HIDDEN = 128


def median_time(fn: Callable[[], object], repeats: int, number: int) -> float:
    """Median CPU seconds of this thread per call of ``fn`` over ``repeats`` runs of ``number``
    calls (CPU time, not wall time: steadier on a shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        times.append((time.thread_time() - t0) / number)
    return statistics.median(times)


def policy(name: str, vecenv) -> P.Policy:
    config = P.PolicyConfig(name=name, hidden_sizes=[HIDDEN], lstm_hidden_size=HIDDEN)
    return P.make(config, vecenv, seed=0)


def bench_act(quick: bool) -> None:
    for rows in (16, 256):
        env = puffer.envs.make("cartpole", num_envs=rows, seed=0)
        obs = torch.from_numpy(env.reset(0)[0])
        starts = torch.zeros(rows, dtype=torch.bool)
        for name in ("mlp", "lstm"):
            pol = policy(name, env)
            state = pol.initial_state(rows)
            gen = torch.Generator().manual_seed(0)
            with torch.inference_mode():
                call = partial(pol.act, obs, state, starts, generator=gen)
                sec = median_time(call, 5, 50 if quick else 500)
            print(f"act      {name:5s} rows={rows:4d}: {sec * 1e6:8.1f} us/step")
        env.close()


def fwd_bwd(pol: P.Policy, obs: torch.Tensor, state: P.State, starts: torch.Tensor) -> None:
    params, values = pol.forward_sequence(obs, state, starts)
    (params.sum() + values.sum()).backward()


def bench_sequence(quick: bool) -> None:
    env = puffer.envs.make("cartpole", num_envs=64, seed=0)
    pol = policy("lstm", env)
    segments, horizon = 64, 64
    obs = torch.randn(segments, horizon, 4)
    state = pol.initial_state(segments)
    for rate in (0.0, 1 / 200, 1 / 50, 1 / 20):
        starts = torch.rand(segments, horizon, generator=torch.Generator().manual_seed(0)) < rate

        sec = median_time(
            partial(fwd_bwd, pol, obs, state, starts), 3 if quick else 7, 1 if quick else 3
        )
        print(f"sequence lstm starts={rate:.3f}: {sec * 1e3:8.1f} ms fwd+bwd (64 x 64)")
    env.close()


def bench_train(quick: bool) -> None:
    for name in ("mlp", "lstm"):
        env = puffer.envs.make("cartpole", num_envs=256, seed=0)
        config = PPOConfig(horizon=64, num_minibatches=4, update_epochs=1, total_timesteps=10**9)
        trainer = Trainer(config, env, policy(name, env), device="cpu", seed=0, torch_threads=1)
        run = getattr(trainer, "rollout", None) or trainer.evaluate
        update = getattr(trainer, "update", None) or trainer.train
        run(), update()  # warm-up
        updates = 2 if quick else 8
        t0, step0 = time.process_time(), trainer.global_step
        for _ in range(updates):
            run(), update()
        sps = (trainer.global_step - step0) / (time.process_time() - t0)
        print(f"train    {name:5s} rows=256: {sps / 1e3:8.1f} k SPS (per CPU second)")
        trainer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--only", choices=("act", "sequence", "train"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for part, fn in (("act", bench_act), ("sequence", bench_sequence), ("train", bench_train)):
        if args.only in (None, part):
            fn(args.quick)


if __name__ == "__main__":
    main()
