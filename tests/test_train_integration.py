"""``python -m puffer.train`` as a real subprocess: run dir, logs, checkpoints, resume, signals."""

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

from puffer import checkpoint
from puffer.loggers import read_jsonl

TRAINING_KEYS = {
    "global_step",
    "update",
    "sps",
    "learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "time/env",
    "time/forward",
    "time/learn",
}

CORRIDOR = '''
import numpy as np
from puffer import PufferEnv, StepResult
from puffer.spaces import Box, Discrete


class Corridor(PufferEnv):
    """Walk right to the end of a corridor; rewards turn NaN after ``nan_after`` steps."""

    def __init__(self, length=4, nan_after=None):
        self.length, self.nan_after, self.steps = length, nan_after, 0
        self.observation_space = Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = Discrete(2)

    def reset(self, seed=None):
        self.pos = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.steps += 1
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos >= self.length
        reward = 1.0 if done else -0.01
        if self.nan_after is not None and self.steps > self.nan_after:
            reward = float("nan")
        obs = np.array([self.pos / self.length], np.float32)
        return StepResult(obs, reward, done, self.steps % 50 == 0, {})
'''


def test_run_directory_holds_config_checkpoints_logs_and_summary(run, helpers, tmp_path):
    proc = run(
        "puffer.train",
        *helpers.TINY,
        "logger=[tensorboard,wandb]",
        "checkpoint.interval=3",
        "checkpoint.keep=2",
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = helpers.only_run(tmp_path)
    assert run_dir.parent.name == "cartpole" and run_dir.parent.parent.name == "outputs"

    # .hydra: the composed config and the overrides it came from.
    composed = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "total_timesteps: 2048" in composed and "name: cartpole" in composed
    assert "ppo.total_timesteps=2048" in (run_dir / ".hydra" / "overrides.yaml").read_text()

    # metrics.jsonl: one row per update with the documented keys.
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == 8  # 2048 steps / (8 envs * 32 steps)
    assert set(rows[0]) >= TRAINING_KEYS, TRAINING_KEYS - set(rows[0])
    steps = [r["global_step"] for r in rows]
    assert steps == sorted(steps) and steps[-1] >= 2048
    assert any("env/episode_return" in r for r in rows)

    # checkpoints: every 3 updates and at the end, the newest 2 kept, `latest` on the last.
    ckdir = checkpoint.CheckpointDir(run_dir / "checkpoints")
    assert [p.name for p in ckdir.all()] == [
        f"model_{steps[5]:012d}.pt",
        f"model_{steps[7]:012d}.pt",
    ]
    latest = checkpoint.load(ckdir.latest())
    assert latest["format"] == "puffer.checkpoint" and latest["meta"]["global_step"] == steps[-1]
    assert latest["meta"]["config"]["ppo"]["total_timesteps"] == 2048
    assert {"policy", "optimizers", "rng"} <= set(latest["trainer"])

    # TensorBoard: the same values on the same step axis.
    scalars = helpers.read_tb(run_dir / "tb")
    assert [s for s, _ in scalars["losses/value_loss"]] == steps
    assert scalars["losses/value_loss"][-1][1] == pytest.approx(rows[-1]["losses/value_loss"])

    # W&B: an offline run inside the run dir, with the metrics in its data file.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert b"losses/value_loss" in helpers.wandb_data(offline[0], b"losses/value_loss")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["global_step"] == steps[-1]
    assert isinstance(summary["objective"], float)
    assert summary["sps"] > 0 and summary["wall_time"] > 0
    assert summary["latest_checkpoint"] == str(ckdir.latest())

    # The terminal got plain lines (not a TTY) and the final report.
    assert "step 2,048/2,048" in proc.stdout and "puffer: done" in proc.stdout
    # train.log: every line the run printed (no dashboard redraws), with progress lines.
    log = (run_dir / "train.log").read_text()
    assert "puffer: training cartpole" in log and "puffer: done: 2,048 steps" in log
    assert "step 2,048/2,048 | update 8" in log and "\x1b" not in log


def _wait_for_run(base: Path, rows: int, proc: subprocess.Popen, timeout: float = 60) -> Path:
    """The run dir under ``base`` once its metrics.jsonl has ``rows`` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"training ended before the signal: {err[-2000:]}")
        for path in base.glob("outputs/*/*/metrics.jsonl"):
            if len(path.read_text().splitlines()) >= rows:
                return path.parent
        time.sleep(0.01)
    raise AssertionError(f"no run under {base} reached {rows} rows in {timeout}s")


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time") and k != "sps"} for r in rows]


def _long(helpers) -> list[str]:
    """A run long enough to be interrupted part-way (160 updates), still seconds of training."""
    return [
        *helpers.TINY,
        "ppo.total_timesteps=40960",
        "logger=tensorboard",
        "checkpoint.interval=1000",
    ]


def test_sigint_checkpoints_and_resume_matches_a_straight_run(helpers, tmp_path):
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    straight_dir.mkdir()
    split_dir.mkdir()
    args = _long(helpers)

    proc = helpers.start_module("puffer.train", *args, cwd=split_dir)
    try:
        run_dir = _wait_for_run(split_dir, 3, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback (most recent" not in err
    assert "stopped by SIGINT" in (run_dir / "train.log").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped_at = summary["global_step"]
    assert 0 < stopped_at < 40960
    latest = checkpoint.CheckpointDir(run_dir / "checkpoints").latest()
    assert checkpoint.load(latest)["meta"]["global_step"] == stopped_at

    hydra_record = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    resumed = helpers.run_module("puffer.train", f"resume={run_dir}", cwd=split_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list((split_dir / "outputs" / "cartpole").iterdir())) == 1  # the same run dir
    # The run's own Hydra record stays; the attempt's is in resumes/<time>/.
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra_record
    (attempt,) = (run_dir / "resumes").iterdir()
    assert f"resume={run_dir}" in (attempt / ".hydra" / "overrides.yaml").read_text()
    log = (run_dir / "train.log").read_text()
    assert log.index("stopped by SIGINT") < log.index("puffer: resuming cartpole")
    assert "puffer: done" in log

    straight = helpers.run_module("puffer.train", *args, cwd=straight_dir)
    assert straight.returncode == 0, straight.stderr
    other = helpers.only_run(straight_dir)

    a = checkpoint.load(checkpoint.CheckpointDir(run_dir / "checkpoints").latest())
    b = checkpoint.load(checkpoint.CheckpointDir(other / "checkpoints").latest())
    assert a["meta"]["global_step"] == b["meta"]["global_step"] >= 40960
    for name, tensor in b["trainer"]["policy"].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(a["trainer"]["policy"][name], tensor), name
    assert _comparable(read_jsonl(run_dir / "metrics.jsonl")) == _comparable(
        read_jsonl(other / "metrics.jsonl")
    )
    # TensorBoard continues one step axis, hiding the steps the interrupted process logged twice.
    tb_steps = [s for s, _ in helpers.read_tb(run_dir / "tb")["losses/value_loss"]]
    assert tb_steps == [s for s, _ in helpers.read_tb(other / "tb")["losses/value_loss"]]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_sigterm_with_worker_processes_exits_143_and_reaps_workers(helpers, tmp_path):
    args = [*_long(helpers), "vector=multiprocessing", "vector.num_workers=2"]
    proc = helpers.start_module("puffer.train", *args, cwd=tmp_path)
    try:
        run_dir = _wait_for_run(tmp_path, 2, proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers, "expected env worker processes"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert checkpoint.CheckpointDir(run_dir / "checkpoints").latest() is not None
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers left running: {alive}"


def test_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint(run, helpers, tmp_path):
    (tmp_path / "corridor.py").write_text(CORRIDOR)
    proc = run(
        "puffer.train",
        *helpers.TINY,
        "env=custom",
        "env.creator=corridor:Corridor",
        "+env.kwargs.nan_after=100",
        "checkpoint.interval=1",
        "logger=none",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "nan" in proc.stderr.lower() and "last good checkpoint" in proc.stderr
    assert "Traceback (most recent" not in proc.stderr
    run_dir = helpers.only_run(tmp_path)
    assert run_dir.parent.name == "Corridor"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "NonFinite" in summary["error"]
    state = checkpoint.load(checkpoint.CheckpointDir(run_dir / "checkpoints").latest())
    assert 0 < state["meta"]["global_step"] < 2048
    weights = [t for t in state["trainer"]["policy"].values() if isinstance(t, torch.Tensor)]
    assert all(torch.isfinite(t).all() for t in weights if t.is_floating_point())


def test_custom_env_trains_through_hydra(run, helpers, tmp_path):
    (tmp_path / "corridor.py").write_text(CORRIDOR)
    proc = run("puffer.train", *helpers.TINY, "env=custom", "env.creator=corridor:Corridor")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((helpers.only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env"] == "Corridor"


def test_unwritable_output_dir_fails_at_startup(run, helpers, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    proc = run("puffer.train", *helpers.TINY, f"hydra.run.dir={blocker}/run")
    assert proc.returncode == 2
    assert "cannot create the run directory" in proc.stderr and str(blocker) in proc.stderr
    assert "Traceback (most recent" not in proc.stderr


def test_explicit_run_dir_that_cannot_be_made_fails_cleanly(run, helpers):
    # /proc refuses new directories even to root, whom the writable probe lets through.
    proc = run("puffer.train", *helpers.TINY, "hydra.run.dir=/proc/puffer-test/run")
    assert proc.returncode == 2, proc.stderr
    assert "cannot create the run directory /proc/puffer-test/run" in proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr


SIGTERM_IN_CLEANUP = """
import os, signal, sys
from puffer import loggers, train

close = loggers.MetricsJsonl.close


def close_after_a_sigterm(self):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the run dir is being finished
    close(self)


loggers.MetricsJsonl.close = close_after_a_sigterm
sys.exit(train.main())
"""


def test_sigterm_during_cleanup_still_finishes_the_run_dir(helpers, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_CLEANUP, *helpers.TINY, "logger=none"],
        cwd=tmp_path,
        env=helpers.clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 143, proc.stderr  # not killed mid-cleanup (-15)
    summary = json.loads((helpers.only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] >= 2048
    assert summary["latest_checkpoint"] and summary["wall_time"] > 0


def test_resume_from_a_foreign_checkpoint_names_the_file(tmp_path):
    from puffer.build import make_trainer
    from puffer.config import compose

    foreign = tmp_path / "model_000000000001.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(checkpoint.CheckpointError, match="not a puffer checkpoint") as e:
        make_trainer(compose(["vector.num_envs=8"]), checkpoint=foreign)
    assert str(foreign) in str(e.value)


def test_non_finite_weights_are_not_checkpointed_over_the_last_good_one(tmp_path):
    from puffer.build import make_trainer
    from puffer.config import compose
    from puffer.run import save_checkpoint

    cfg = compose(["vector.num_envs=8"])
    trainer = make_trainer(cfg)
    try:
        ckdir = checkpoint.CheckpointDir(tmp_path)
        good = save_checkpoint(ckdir, trainer, cfg)
        with torch.no_grad():
            next(trainer.policy.parameters()).fill_(float("nan"))
        trainer.global_step += 256
        with pytest.raises(FloatingPointError, match="not finite"):
            save_checkpoint(ckdir, trainer, cfg)
        assert ckdir.all() == [good] and ckdir.latest() == good
    finally:
        trainer.close()


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run except the resume attempts' own records, by relative path."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "resumes" not in p.relative_to(run_dir).parts
    }


def test_failed_or_pointless_resume_changes_nothing(run, helpers, tmp_path):
    proc = run("puffer.train", *helpers.TINY, "logger=tensorboard")
    assert proc.returncode == 0, proc.stderr
    run_dir = helpers.only_run(tmp_path)
    before = _snapshot(run_dir)

    # The checkpoint does not fit another policy: refused, nothing in the run changes.
    bad = run("puffer.train", f"resume={run_dir}", "ppo.total_timesteps=4096", "policy=lstm")
    assert bad.returncode == 1 and str(run_dir) in bad.stderr, bad.stderr
    assert "does not fit" in bad.stderr and "Traceback" not in bad.stderr
    assert _snapshot(run_dir) == before

    # A finished run resumed with the same budget keeps its record.
    again = run("puffer.train", f"resume={run_dir}")
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout
    assert _snapshot(run_dir) == before


class _StopAfter:
    """A sink that ends the run after ``n`` updates, as a pruner or a solved check would."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def log(self, metrics, step):
        from puffer.loggers import StopRun

        self.seen += 1
        if self.seen == self.n:
            raise StopRun("solved", f"stopped after {self.n} updates")

    def close(self):
        pass


def test_a_sink_raising_stoprun_ends_the_run_with_its_status(tmp_path, caplog, helpers):
    from puffer.config import compose
    from puffer.run import run

    cfg = compose([*helpers.TINY, "logger=none", "dashboard=off", "checkpoint.interval=100"])
    sink = _StopAfter(3)
    with caplog.at_level("INFO", logger="puffer"):
        summary = run(cfg, tmp_path / "run", sinks=(sink,))
    assert summary["status"] == "solved" and summary["global_step"] == 3 * 256
    assert isinstance(summary["objective"], float)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "solved"
    latest = checkpoint.CheckpointDir(tmp_path / "run" / "checkpoints").latest()
    assert (
        checkpoint.load(latest)["meta"]["global_step"] == 3 * 256
    )  # checkpointed where it stopped
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 3
    assert "solved: stopped after 3 updates" in caplog.text


TAGENV = """
import numpy as np
from puffer import PufferEnv, StepResult
from puffer.spaces import Box, Discrete


class Tagged(PufferEnv):
    observation_space = Box(-1.0, 1.0, shape=(1,))
    action_space = Discrete(2)

    def __init__(self, tag="none"):
        with open(__file__.replace("tagenv.py", "seen.txt"), "a") as f:
            f.write(repr(tag) + "\\n")

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, a):
        self.t += 1
        return StepResult(np.zeros(1, np.float32), float(a), False, self.t >= 4, {})
"""


def test_config_strings_reach_the_env_unchanged_in_train_resume_and_eval(run, tmp_path):
    # From ../shared/cases/config-string-roundtrip.sh: , = : $ [ ] and an escaped interpolation
    # in an env kwarg; a run dir with a space, a comma, '=' and a quote.
    (tmp_path / "tagenv.py").write_text(TAGENV)
    base = ["env=custom", "env.creator=tagenv:Tagged", "vector.num_envs=2", "ppo.num_minibatches=1"]
    base += ["ppo.horizon=8", "logger=none", "dashboard=off", "device=cpu"]
    run_dir = tmp_path / "runs" / "it's a,b=c run"
    quoted = "'" + str(run_dir).replace("'", "\\'") + "'"
    tag = "'x,y=z:w $HOME \\${lit} [1]'"
    trained = run(
        "puffer.train", *base, "ppo.total_timesteps=64", f"+env.kwargs.tag={tag}",
        f"hydra.run.dir={quoted}",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    evaluated = run("puffer.eval", f"run={quoted}", "episodes=2")
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = run("puffer.train", f"resume={quoted}", "ppo.total_timesteps=128")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] >= 128
    seen = set((tmp_path / "seen.txt").read_text().splitlines())
    assert seen == {repr("x,y=z:w $HOME ${lit} [1]")}


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs 2 CPU cores to move between",
)
def test_resume_on_a_machine_with_fewer_cores(helpers, tmp_path):
    # From ../shared/cases/resume-other-cpu-count.sh: trained with one worker per core on 2
    # cores, resumed on 1 core (taskset): the default layout, fresh episodes, one warning.
    args = [
        "env=cartpole", "vector=multiprocessing", "vector.num_envs=16", "ppo.horizon=16",
        "ppo.num_minibatches=2", "ppo.total_timesteps=2048", "logger=none", "dashboard=off",
        "device=cpu",
    ]  # fmt: skip

    def train(cores: str, *more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["taskset", "-c", cores, sys.executable, "-m", "puffer.train", *more],
            cwd=tmp_path, env=helpers.clean_env(), capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    first = train("0,1", *args)
    assert first.returncode == 0, first.stderr
    run_dir = helpers.only_run(tmp_path)
    resumed = train("0", f"resume={run_dir}", "ppo.total_timesteps=4096")
    assert resumed.returncode == 0, resumed.stderr
    warnings = [ln for ln in resumed.stderr.splitlines() if "not bit-exact" in ln]
    assert len(warnings) == 1 and "global_step=2048" in warnings[0], resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] >= 4096
