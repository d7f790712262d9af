"""puffer.dist: launching ranks, failures, signals and the collectives that combine statistics.

The launch tests start real ranks (spawned processes, gloo on CPU) through ``puffer.launch.launch``;
the functions the ranks run are defined here, at module level, so the spawned ranks import them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as td
from torch import nn

from puffer import dist, launch

CPU = dist.DistConfig(timeout=60)


# -- pure helpers ----------------------------------------------------------------------------------


def test_merge_moments_equals_the_moments_of_the_union() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 3)) * [1.0, 1e3, 1e-3]
    parts = np.split(data, [0, 17, 500, 500, 999])  # includes empty parts and a single row
    counts = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    means = torch.tensor(np.stack([p.mean(0) if len(p) else np.zeros(3) for p in parts]))
    m2s = torch.tensor(
        np.stack([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(3) for p in parts])
    )
    n, mean, m2 = dist.merge_moments(counts, means, m2s)
    assert n.item() == 1000
    np.testing.assert_allclose(mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m2.numpy() / 1000, data.var(0), rtol=1e-10)


def test_all_moments_without_a_group_is_the_batch_moments() -> None:
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    n, mean, var = dist.all_moments(x)
    assert n.item() == 64
    torch.testing.assert_close(mean, x.double().mean(0))
    torch.testing.assert_close(var, x.double().var(0, unbiased=False))


def test_rank_seeds_are_distinct_and_rank0_keeps_the_seed() -> None:
    assert dist.rank_seed(7, 0) == 7
    seeds = {dist.rank_seed(s, r) for s in range(20) for r in range(1, 9)}
    assert len(seeds) == 20 * 8
    assert not seeds & set(range(1000))  # no rank replays a plain run's seed s + k
    assert dist.rank_seed(3, 2) == dist.rank_seed(3, 2)


def test_num_envs_must_divide_by_the_ranks() -> None:
    assert dist.local_rows(4096, 2) == 2048
    with pytest.raises(ValueError, match=r"vector\.num_envs=10 .*\(3\).* vector\.num_envs=9 or 12"):
        dist.local_rows(10, 3)
    with pytest.raises(ValueError, match=r"vector\.num_envs=7"):
        dist.DistConfig(nproc=2).validate(num_envs=7)


@pytest.mark.parametrize(
    ("config", "world_size", "match"),
    [
        (dist.DistConfig(nproc=0), None, "dist.nproc=0"),
        (dist.DistConfig(backend="mpi"), None, "dist.backend='mpi'"),
        (dist.DistConfig(timeout=0), None, "dist.timeout=0"),
        (dist.DistConfig(master_port=70000), None, "dist.master_port=70000"),
        (dist.DistConfig(nproc=2), 4, "torchrun already started 4"),
        (dist.DistConfig(backend="nccl"), None, r"dist\.backend=nccl needs CUDA, but device=cpu"),
    ],
)
def test_bad_dist_settings_name_the_key(config, world_size, match) -> None:
    with pytest.raises(ValueError, match=match):
        config.validate(num_envs=8, world_size=world_size)


def test_more_gpu_ranks_than_gpus_are_refused() -> None:
    ranks = torch.cuda.device_count() + 2
    with pytest.raises(ValueError, match=rf"{ranks} ranks on this node but {ranks - 2} CUDA"):
        dist.DistConfig(nproc=ranks).validate(num_envs=8 * ranks, device="cuda")
    with pytest.raises(ValueError, match="use device=cuda"):
        dist.DistConfig(nproc=2).validate(num_envs=8, device="cuda:1")


def test_torchrun_nproc_may_repeat_the_world_size() -> None:
    dist.DistConfig(nproc=4).validate(num_envs=8, world_size=4)


def test_world_from_launcher_variables(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert dist.World.from_env() is None
    assert dist.world() == dist.World()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert dist.World.from_env() == dist.World(3, 4, 1, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 WORLD_SIZE=4"):
        dist.World.from_env()
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="start the ranks with torchrun"):
        dist.World.from_env()


def test_backend_choice() -> None:
    assert dist.resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert dist.resolve_backend("gloo", torch.device("cpu")) == "gloo"
    with pytest.raises(ValueError, match=r"dist\.backend=nccl needs CUDA"):
        dist.resolve_backend("nccl", torch.device("cpu"))
    if torch.distributed.is_nccl_available():
        assert dist.resolve_backend("auto", torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"


def test_cuda_index_with_several_local_ranks_is_refused() -> None:
    with pytest.raises(ValueError, match="use device=cuda"):
        dist.rank_device("cuda:1", dist.World(0, 2, 0, 2))
    assert dist.rank_device("cpu", dist.World(1, 2, 1, 2)) == torch.device("cpu")


def test_collectives_without_a_group_are_local() -> None:
    assert dist.agree(None, 2) == (None, 2)
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.all_mean(torch.tensor(2.0)).item() == 2.0
    assert dist.gather_rank_states({"global_step": 5, "env": 1}) == [{"env": 1}]
    eps = dist.gather_episodes({"episode_return": [1, 2]})
    np.testing.assert_array_equal(eps["episode_return"], [1.0, 2.0])
    assert dist.rank0_only(lambda: "wrote")() == "wrote"


def test_resume_with_the_same_ranks_gives_each_rank_its_own_state() -> None:
    saved = {"policy": "w", "global_step": 10, "env": "e0", "env_layout": {"num_envs": 4}}
    ranks = [{"env": "e0"}, {"env": "e1"}]
    state = dist.rank_state(saved, ranks, dist.World(1, 2, 1, 2))
    assert state["env"] == "e1" and state["policy"] == "w"
    assert dist.rank_state(saved, None, dist.World()) == saved  # a one-process checkpoint


def test_resume_with_other_ranks_marks_the_layout_so_episodes_start_fresh() -> None:
    saved = {"policy": "w", "global_step": 10, "env": "e0", "env_layout": {"num_envs": 4}}
    state = dist.rank_state(saved, [{"env": "e0"}, {"env": "e1"}], dist.World(0, 4, 0, 4))
    assert state["global_step"] == 10 and state["policy"] == "w"
    assert state["env_layout"] == {"num_envs": "4 x 2 ranks"}  # fits no VecEnv: fresh episodes
    state = dist.rank_state(saved, None, dist.World(1, 2, 1, 2))
    assert state["env_layout"] == {"num_envs": "4 x 1 rank"}


# -- ranks -----------------------------------------------------------------------------------------


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


def collective_work(out: str) -> dict:
    """Every rank: different init seeds and data; rank 0's weights broadcast, gradients averaged
    over a few SGD steps; returns what the test compares across ranks."""
    with dist.process_group(CPU, "cpu"):
        me = dist.world()
        model = _model(seed=100 + me.rank)  # deliberately different: broadcast must fix it
        dist.broadcast_module(model)
        initial = dist.params_digest(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = torch.randn(32, 4, generator=torch.Generator().manual_seed(me.rank))
        for _ in range(5):
            opt.zero_grad()
            model(data).square().mean().backward()
            for p in model.parameters():
                td.all_reduce(p.grad)
                p.grad /= me.world_size
            opt.step()
        n, mean, var = dist.all_moments(data)
        episodes = dist.gather_episodes({"episode_return": [float(me.rank)] * (me.rank + 1)})
        states = dist.gather_rank_states({"env": 10 + me.rank, "policy": "shared"})
        kl = dist.all_mean(torch.tensor(float(me.rank)))

        @dist.rank0_only
        def write() -> str:
            Path(out, f"written_by_{me.rank}").touch()
            return "wrote"

        final = dist.params_digest(model)
        Path(out, f"digest{me.rank}").write_text(final)
        return {
            "rank": me.rank,
            "world": me,
            "initial": initial,
            "final": final,
            "moments": (n.item(), mean.tolist(), var.tolist()),
            "episodes": episodes["episode_return"].tolist(),
            "states": states,
            "kl": kl.item(),
            "write": write(),
            "agree": dist.agree(None if me.rank == 0 else 15, "solved" if me.rank == 0 else None),
            "object": dist.broadcast_object(f"from {me.rank}"),
        }


def test_two_ranks_start_identical_and_stay_identical(tmp_path: Path) -> None:
    result = launch.launch(collective_work, (str(tmp_path),), dist.DistConfig(nproc=2))
    # launch returns rank 0's result; rank 1's digests must be equal: compute them again here.
    assert result["rank"] == 0 and result["world"] == dist.World(0, 2, 0, 2)
    reference = _model(seed=100)
    assert result["initial"] == dist.params_digest(reference)  # rank 0's init went everywhere
    assert result["final"] != result["initial"]
    assert (tmp_path / "digest1").read_text() == result["final"]  # bitwise identical params
    both = np.concatenate(
        [torch.randn(32, 4, generator=torch.Generator().manual_seed(r)).numpy() for r in (0, 1)]
    ).astype(np.float64)
    n, mean, var = result["moments"]
    assert n == 64
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, both.var(0), rtol=1e-10)
    assert result["episodes"] == [0.0, 1.0, 1.0]
    assert result["states"] == [{"env": 10}, {"env": 11}]
    assert result["kl"] == 0.5
    assert result["write"] == "wrote"
    assert sorted(p.name for p in tmp_path.glob("written_by_*")) == ["written_by_0"]
    assert result["agree"] == (15, "solved")
    assert result["object"] == "from 0"


def failing_work(mode: str, out: str) -> None:
    """Rank 1 raises or kills itself at step 20; every rank records its pid."""
    with dist.process_group(CPU, "cpu"):
        me = dist.world()
        Path(out, f"pid{me.rank}").write_text(str(os.getpid()))
        t = torch.ones(8)
        for step in range(10_000):
            td.all_reduce(t)
            if step == 20 and me.rank == 1:
                if mode == "raise":
                    raise ValueError("rank 1 cannot go on")
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, just not reaped yet
        return f.read().split(")")[1].split()[0] != "Z"


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("raise", r"rank 1 \(pid \d+\) raised ValueError: rank 1 cannot go on\nTraceback"),
        ("kill", r"rank 1 \(pid \d+\) was killed by SIGKILL"),
    ],
)
def test_a_failed_rank_stops_every_rank_with_its_cause(tmp_path: Path, mode, cause) -> None:
    with pytest.raises(launch.RankError) as info:
        launch.launch(failing_work, (mode, str(tmp_path)), dist.DistConfig(nproc=2))
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "distributed run failed; every rank was stopped."
    assert re.match(cause, "\n".join(lines[1:])), message  # the cause comes first
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)]
    assert not [p for p in pids if _alive(p)], "a rank outlived the launch"


def signal_work(out: str) -> None:
    """Ranks loop until SIGTERM reaches any of them, agree to stop, and rank 0 'checkpoints'."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with dist.process_group(CPU, "cpu"):
        me = dist.world()
        Path(out, f"ready{me.rank}").touch()
        while dist.agree(stop[0] if stop else None) == (None,):
            time.sleep(0.01)
        if me.is_rank0:
            with open(Path(out, "checkpoints"), "a") as f:
                f.write("saved by rank 0\n")


LAUNCHER = """
import sys
sys.path.insert(0, {tests!r})
from puffer import dist, launch
from test_dist import signal_work
try:
    launch.launch(signal_work, ({out!r},), dist.DistConfig(nproc=2, shutdown_timeout=20))
except launch.LaunchInterrupted as e:
    print("interrupted", e.signum)
    sys.exit(128 + e.signum)
"""


def test_sigterm_to_the_launcher_stops_every_rank_after_one_checkpoint(tmp_path: Path) -> None:
    code = LAUNCHER.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{r}").exists() for r in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert out.strip() == "interrupted 15"
    assert (tmp_path / "checkpoints").read_text() == "saved by rank 0\n"


def test_each_rank_builds_its_share_with_its_own_seed() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "seed": 3,
            "vector": {"num_envs": 4096, "num_workers": 2, "batch_size": None},
            "ppo": {"total_timesteps": 1001},  # global: the Trainer counts every rank's steps
        }
    )
    local = dist.rank_config(cfg, dist.World(1, 2, 1, 2))
    assert local.vector.num_envs == 2048 and local.vector.num_workers == 1
    assert local.vector.batch_size is None
    assert local.ppo.total_timesteps == 1001
    assert local.seed == dist.rank_seed(3, 1) and cfg.seed == 3  # the run's config is unchanged
    assert dist.rank_config(cfg, dist.World(0, 2, 0, 2)).seed == 3
    cfg.vector.num_workers = 3
    with pytest.raises(ValueError, match=r"vector\.num_workers=3 must be divisible"):
        dist.rank_config(cfg, dist.World(0, 2, 0, 2))
