"""Learning on the env families, through ``python -m puffer.train`` as users run it (slow, fixed seeds).

- the built-in multi-agent env ``reach`` (one row per agent, shared policy) is solved;
- MuJoCo InvertedPendulum-v5 with ``env=mujoco`` (normalization, CleanRL's continuous PPO
  values): mean return of the last 100 episodes >= 950 (1000 is the maximum);
- MiniGrid-Empty-5x5 trains through ``env.wrappers`` given on the command line.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def train(run, helpers, tmp_path, *args: str, timeout: float = 900) -> tuple[dict, list[dict]]:
    proc = run("puffer.train", "dashboard=off", "logger=none", "seed=0", *args, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = helpers.only_run(tmp_path)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "summary.json").read_text()), rows


def test_reach_multi_agent_is_solved_with_per_agent_statistics(run, helpers, tmp_path):
    summary, rows = train(run, helpers, tmp_path, "env=reach")
    assert summary["objective"] >= 0.95  # both agents reach their targets
    last = rows[-1]
    assert last["env/success"] >= 0.95
    assert last["env/agent_0/episode_return"] >= 0.9 and last["env/agent_1/episode_return"] >= 0.9
    assert last["env/episode_length"] <= 5  # near the shortest paths (random walk: ~9)


def test_mujoco_inverted_pendulum_is_solved(run, helpers, tmp_path):
    summary, _ = train(
        run,
        helpers,
        tmp_path,
        "env=mujoco",
        "env.id=InvertedPendulum-v5",
        "ppo.total_timesteps=150000",
    )
    assert summary["objective"] >= 950


def test_minigrid_empty_through_wrappers_is_solved(run, helpers, tmp_path):
    summary, _ = train(
        run,
        helpers,
        tmp_path,
        "env=gymnasium",
        "env.id=minigrid:MiniGrid-Empty-5x5-v0",
        "env.wrappers=[{_target_:minigrid.wrappers.ImgObsWrapper}]",
        "ppo.total_timesteps=100000",
        "vector.num_envs=16",
        "ppo.horizon=64",
        "ppo.learning_rate=1e-3",
        "policy.hidden_sizes=[64]",
    )
    assert summary["objective"] >= 0.9  # optimal ~0.96 (reward 1 - 0.9 * steps / 100)
