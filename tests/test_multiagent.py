"""Multi-agent runs end to end: PettingZoo envs (no env state) checkpoint and resume with both
backends, eval/videos/export size their envs in whole multi-agent envs and count agent episodes,
and bad row counts or turn-based AEC envs fail at the config check, before any run dir exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import puffer.vector
from puffer import emulation
from puffer.evaluation import eval_rows, play
from puffer.loggers import read_jsonl

RPS = "env.creator=pettingzoo.classic.rps_v2:parallel_env"
TINY = [
    "ppo.total_timesteps=1024",
    "ppo.horizon=32",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "torch_threads=1",
    "logger=none",
    "dashboard=off",
]
FRESH = "fresh episodes (the env cannot save its state)"


def _rps_vec(backend: str) -> puffer.vector.VecEnv:
    creator, kwargs = emulation.creator({"name": "pettingzoo", "creator": RPS.split("=")[1]})
    workers = {"num_workers": 2} if backend == "multiprocessing" else {}
    return puffer.vector.make(
        creator, num_envs=4, backend=backend, seed=0, env_kwargs=kwargs, **workers
    )


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_an_env_without_state_says_so_and_stays_usable(backend, no_leftover_workers):
    with _rps_vec(backend) as vec:
        vec.reset(0)
        with pytest.raises(NotImplementedError, match="PettingZooEnv does not support state"):
            vec.state()
        w = vec.num_workers
        state = {"num_envs": 4, "num_workers": w, "workers": [{"subs": [{}] * (2 // w)}] * w}
        with pytest.raises(NotImplementedError, match="does not support load_state"):
            vec.load_state(state)
        obs = vec.step(np.zeros(4, np.int64))[0]  # not closed: still steps
        assert obs.shape[0] == 4 and vec.masks.all()


def test_pettingzoo_with_workers_checkpoints_and_resumes_on_both_backends(run, tmp_path):
    mp = ["vector=multiprocessing", "vector.num_workers=2"]
    args = ["env=pettingzoo", RPS, "vector.num_envs=8", *TINY[1:]]
    first = run("puffer.train", *args, *mp, "ppo.total_timesteps=512", "hydra.run.dir=r")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "r/checkpoints").glob("*.pt")) == [
        "model_000000000512.pt"
    ]
    for backend, steps in (("serial", 1024), ("multiprocessing", 1536)):
        more = run(
            "puffer.train", "resume=r", f"vector.backend={backend}", f"ppo.total_timesteps={steps}"
        )
        assert more.returncode == 0, more.stderr
        assert FRESH in more.stderr  # the warning: the env's episodes start over
        assert (tmp_path / f"r/checkpoints/model_{steps:012d}.pt").is_file()


def test_eval_rows_are_whole_envs_covering_the_episodes():
    assert eval_rows(3, 2, 64) == 4  # 2 envs of 2 agents
    assert eval_rows(1, 4, 64) == 4  # one whole env even for one episode
    assert eval_rows(10, 3, 64) == 12
    assert eval_rows(100, 3, 64) == 63  # capped at whole envs within 64 rows
    assert eval_rows(5, 100, 64) == 100  # an env larger than the cap: one env
    assert eval_rows(10, 1, 64) == 10  # one-agent envs as before


def test_play_counts_agent_episodes_all_started_at_the_reset():
    from puffer import envs, policy

    vec = envs.make("reach", num_envs=eval_rows(3, 2, 64), seed=0)
    net = policy.make(policy.PolicyConfig(), vec, seed=0)
    returns, lengths = play(net, vec, 3, seed=1)
    assert len(returns) == len(lengths) == 3
    assert all(1 <= n <= 2 * 5 for n in lengths)  # one first episode each (size 5: <= 10 steps)


def test_eval_video_and_export_of_a_three_agent_run(run, tmp_path):
    three = ["env=reach", "env.kwargs.num_agents=3", "vector.num_envs=6"]
    trained = run("puffer.train", *three, *TINY, "hydra.run.dir=r")
    assert trained.returncode == 0, trained.stderr
    default = run("puffer.eval", "run=r")  # 10 episodes: not a multiple of 3 agents
    assert default.returncode == 0, default.stderr
    assert "over 10 episodes" in default.stdout
    video = run("puffer.eval", "run=r", "episodes=1", "video=true")
    assert video.returncode == 0, video.stderr
    assert "over 1 episodes" in video.stdout
    assert [p.name for p in (tmp_path / "r/videos").glob("*.mp4")] == ["step000001152-ep0.mp4"]
    from puffer.export import load_policy

    policy, path, _ = load_policy(tmp_path / "r")
    assert path.name == "model_000000001152.pt" and not policy.training


def test_periodic_eval_and_videos_of_a_multi_agent_run(run, tmp_path):
    every = ["eval.every=2", "eval.episodes=3", "eval.video=true"]
    proc = run("puffer.train", "env=reach", "vector.num_envs=8", *TINY, *every, "hydra.run.dir=r")
    assert proc.returncode == 0, proc.stderr
    evaluated = [r for r in read_jsonl(tmp_path / "r/metrics.jsonl") if "eval/episode_return" in r]
    assert [r["global_step"] for r in evaluated] == [512, 1024]
    assert len(list((tmp_path / "r/videos").glob("*.mp4"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["env=pettingzoo", RPS, "vector.num_envs=5"],
            "vector.num_envs=5 is not a multiple of the 2 rows each env_creator() call returns "
            "(one row per agent): use num_envs=4 or 6",
        ),
        (["env=reach", "env.kwargs.num_agents=3", "vector.num_envs=8"], "use num_envs=6 or 9"),
        (
            ["env=pettingzoo", "env.creator=pettingzoo.classic.tictactoe_v3:env"],
            "tictactoe_v3 is a turn-based AEC env, which cannot be converted to a Parallel env",
        ),
    ],
)
def test_bad_multi_agent_settings_fail_before_the_run_dir(run, tmp_path, args, message):
    proc = run("puffer.train", *args, *TINY)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not Path(tmp_path / "outputs").exists()
