"""One training run over 2 ranks (gloo on CPU): ``python -m puffer.train dist.nproc=2`` and torchrun.

Real runs in subprocesses: one run directory written by rank 0, global step counts, weights that
stay bitwise identical on every rank, resume with the same and another number of ranks, a killed
rank, SIGTERM, and torchrun. The learning test (cartpole solved with 2 ranks) and the tests that need several runs (resume,
SIGTERM, torchrun) are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from puffer import checkpoint as ckpt
from puffer import dist, launch

SMALL = [
    "env=cartpole",
    "vector.num_envs=16",
    "ppo.horizon=16",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "logger=none",
    "dashboard=plain",
    "device=cpu",
    "torch_threads=1",
]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}


def train(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "puffer.train", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def latest(run_dir: Path) -> dict:
    path = ckpt.CheckpointDir(run_dir / "checkpoints").latest()
    assert path is not None, f"no checkpoint in {run_dir}"
    return ckpt.load(path)


def test_two_ranks_make_one_run_with_global_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = train(*SMALL, "dist.nproc=2", "ppo.total_timesteps=4096", f"hydra.run.dir={run_dir}",
              cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else was created
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 16 rows x 16 steps per update over both ranks: 8 rows each, the steps counted globally.
    assert [row["global_step"] for row in rows] == [256 * (i + 1) for i in range(16)]
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["global_step"] == 4096
    saved = latest(run_dir)
    assert saved["meta"]["dist"]["world_size"] == 2
    ranks = saved["meta"]["dist"]["ranks"]
    first_obs = [r["rollout"]["pending"]["observations"] for r in ranks]
    assert first_obs[0].shape == (8, 4) and not torch.equal(first_obs[0], first_obs[1])
    assert r.stdout.count("puffer: done") == 1  # rank 0 alone reports


def rank_digests(cfg_overrides: list[str], out: str) -> None:
    """A rank: build the run's trainer, train a few updates with observation and reward
    normalization, write the digest of the policy's parameters and buffers."""
    from puffer import build
    from puffer.config import compose

    cfg = compose(cfg_overrides)
    with dist.process_group(cfg.dist, cfg.device):
        trainer = build.make_trainer(cfg)
        me = dist.world()
        Path(out, f"initial{me.rank}").write_text(dist.params_digest(trainer.policy))
        for _ in range(4):
            trainer.rollout()
            trainer.update()
        Path(out, f"final{me.rank}").write_text(dist.params_digest(trainer.policy))
        trainer.close()


def test_parameters_stay_bitwise_identical_on_every_rank(tmp_path: Path) -> None:
    overrides = [
        *SMALL,
        "dist.nproc=2",
        "ppo.normalize_observations=true",
        "ppo.normalize_rewards=true",
        "ppo.total_timesteps=100000",
    ]
    launch.launch(rank_digests, (overrides, str(tmp_path)), dist.DistConfig(nproc=2))
    digests = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert digests["initial0"] == digests["initial1"]
    assert digests["final0"] == digests["final1"]
    assert digests["final0"] != digests["initial0"]


@pytest.mark.slow  # three (or two) 2-rank runs: ~15 s on an idle 2-core machine
def test_resume_with_the_same_and_another_number_of_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = [*SMALL, f"hydra.run.dir={run_dir}"]
    assert train(*base, "dist.nproc=2", "ppo.total_timesteps=2048", cwd=tmp_path).returncode == 0
    r = train(f"resume={run_dir}", "ppo.total_timesteps=4096", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "not bit-exact" not in r.stdout + r.stderr  # same ranks: an exact continuation
    assert summary(run_dir)["global_step"] == 4096
    r = train(f"resume={run_dir}", "dist.nproc=1", "ppo.total_timesteps=6144", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert out.count("not bit-exact") == 1 and "8 x 2 ranks" in out  # one warning, what changed
    assert summary(run_dir)["global_step"] == 6144
    assert "dist" not in latest(run_dir)["meta"]  # a one-process checkpoint again


def _ranks(launcher: psutil.Process) -> dict[int, psutil.Process]:
    """The spawned ranks of a ``dist.nproc=2`` run: rank 0 is the one writing metrics.jsonl."""
    ranks = {}
    for child in launcher.children():
        if "spawn_main" in " ".join(child.cmdline()):
            writes = any(f.path.endswith("metrics.jsonl") for f in child.open_files())
            ranks[0 if writes else 1] = child
    return ranks


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, dict, list]:
    run_dir = tmp_path / "run"
    args = [*SMALL, "dist.nproc=2", "ppo.total_timesteps=100000000", "checkpoint.interval=5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "puffer.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 180
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    launcher = psutil.Process(proc.pid)
    ranks = _ranks(launcher)
    assert sorted(ranks) == [0, 1]
    return proc, run_dir, ranks, launcher.children(recursive=True)


def _gone(processes: list[psutil.Process], timeout: float = 10) -> list[int]:
    """The pids still running (not zombies) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in processes:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_a_killed_rank_ends_the_run_with_an_error_naming_it(tmp_path: Path) -> None:
    proc, run_dir, ranks, children = _start_long_run(tmp_path)
    ranks[1].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert f"rank 1 (pid {ranks[1].pid}) was killed by SIGKILL" in err
    assert summary(run_dir)["status"] == "failed"
    assert summary(run_dir)["error"] == f"rank 1 (pid {ranks[1].pid}) was killed by SIGKILL"
    assert not _gone(children), "processes of the run outlived it"


@pytest.mark.slow  # three (or two) 2-rank runs: ~15 s on an idle 2-core machine
def test_sigterm_checkpoints_once_and_exits_143(tmp_path: Path) -> None:
    proc, run_dir, _, children = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert (out + err).count("stopped by SIGTERM") == 1  # rank 0 says it, once
    s = summary(run_dir)
    assert s["status"] == "interrupted"
    saved = latest(run_dir)
    assert saved["meta"]["global_step"] == s["global_step"]  # the final step is checkpointed
    assert saved["meta"]["dist"]["world_size"] == 2
    assert not _gone(children)


@pytest.mark.slow  # three (or two) 2-rank runs: ~15 s on an idle 2-core machine
def test_torchrun_ranks_share_one_run_directory(tmp_path: Path) -> None:
    r = subprocess.run(  # python -m torch.distributed.run is torchrun
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "puffer.train", *SMALL,
         "ppo.total_timesteps=2048"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # one run directory, not one per rank
    assert summary(runs[0])["global_step"] == 2048
    assert latest(runs[0])["meta"]["dist"]["world_size"] == 2


@pytest.mark.slow
def test_cartpole_is_solved_with_two_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = train("env=cartpole", "dist.nproc=2", "logger=none", "dashboard=off", "seed=1",
              f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert summary(run_dir)["objective"] >= 475  # solved: mean return of the last 100 episodes


def test_a_rank_s_own_signal_after_the_ranks_agreed_to_stop_is_not_a_second_one() -> None:
    # Rank 0 got the launcher's SIGTERM first and the ranks agreed to stop (dist.agree set
    # signum here); this rank's own forwarded copy then arrives: it must not abort the rank in
    # the middle of a collective (which hung the other rank until the collective timeout).
    from puffer.run import StopFlag

    stop = StopFlag()
    with stop.installed():
        stop.signum = signal.SIGTERM  # what dist.agree hands every rank
        os.kill(os.getpid(), signal.SIGTERM)  # this rank's own copy: recorded, no abort
        time.sleep(0.01)
        assert stop.received == 1 and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal to this rank does abort
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
