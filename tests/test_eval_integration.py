"""``python -m puffer.eval`` on a trained run: its config, its checkpoints, overrides, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from puffer import checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny cartpole run (two checkpoints) shared by the tests here."""
    import os

    base = tmp_path_factory.mktemp("trained")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "puffer.train",
            "ppo.total_timesteps=2048",
            "vector.num_envs=8",
            "ppo.horizon=32",
            "ppo.num_minibatches=2",
            "torch_threads=1",
            "logger=none",
            "dashboard=off",
            "checkpoint.interval=4",
        ],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = [p.parent for p in base.glob("outputs/cartpole/*/.hydra")]
    return run


@pytest.fixture
def evaluate(trained, helpers):
    """``python -m puffer.eval args`` in a subprocess: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        proc = helpers.run_module("puffer.eval", *args, cwd=trained.parent)
        return proc.returncode, proc.stdout, proc.stderr

    return run


def _result(out: str) -> tuple[float, float, int, float]:
    m = re.search(r"mean return (\S+) \+/- (\S+) over (\d+) episodes .*mean length (\S+)\)", out)
    assert m, out
    return float(m[1]), float(m[2]), int(m[3]), float(m[4])


def test_eval_subprocess_loads_the_run_and_prints_mean_and_std(trained, helpers):
    proc = helpers.run_module("puffer.eval", f"run={trained}", "episodes=6", cwd=trained.parent)
    assert proc.returncode == 0, proc.stderr
    mean, std, episodes, length = _result(proc.stdout)
    assert episodes == 6 and mean > 0 and std >= 0
    assert mean == pytest.approx(length, abs=0.1)  # cartpole: reward 1 per step
    latest = checkpoint.CheckpointDir(trained / "checkpoints").latest()
    assert latest.name in proc.stdout and "deterministic actions" in proc.stdout


def test_overrides_apply_on_top_of_the_run_config(trained, evaluate):
    code, out, err = evaluate(f"run={trained}", "episodes=4", "env.kwargs.max_steps=7")
    assert code == 0, err
    mean, _, episodes, length = _result(out)
    assert episodes == 4 and length <= 7 and mean <= 7
    assert "+/- 0 over" in out  # equal episodes: no float noise like 3.331e-16


def test_another_env_with_the_same_spaces_keeps_the_run_policy(trained, evaluate):
    # gymnasium's CartPole-v1 has no tuned values (other default network): the run's policy stays.
    code, out, err = evaluate(f"run={trained}", "episodes=2", "env=gymnasium", "env.id=CartPole-v1")
    assert code == 0, err
    _, _, episodes, _ = _result(out)
    assert episodes == 2


def test_named_checkpoint_and_sampled_actions(trained, evaluate):
    first = checkpoint.CheckpointDir(trained / "checkpoints").all()[0]
    code, out, err = evaluate(
        f"run={trained}", "episodes=3", f"checkpoint={first.name}", "deterministic=false"
    )
    assert code == 0, err
    assert first.name in out and "sampled actions" in out


def test_a_file_written_by_trainer_save_evaluates(trained, evaluate, tmp_path):
    from omegaconf import OmegaConf

    from puffer.build import make_trainer
    from puffer.config import TrainConfig

    saved = OmegaConf.load(trained / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
    trainer = make_trainer(cfg)
    try:
        path = trainer.save(tmp_path / "plain.pt")
    finally:
        trainer.close()
    code, out, err = evaluate(f"run={trained}", "episodes=2", f"checkpoint={path}")
    assert code == 0, err
    assert "plain.pt (step 0)" in out


def test_render_draws_the_env(trained, evaluate):
    code, out, err = evaluate(
        f"run={trained}", "episodes=1", "render=true", "env.kwargs.max_steps=3"
    )
    assert code == 0, err
    assert "=====" in out  # cartpole's track


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_unreadable_checkpoint_names_the_file(trained, tmp_path, evaluate, kind):
    latest = checkpoint.CheckpointDir(trained / "checkpoints").latest()
    bad = tmp_path / f"{kind}.pt"
    data = latest.read_bytes()
    bad.write_bytes(data[: len(data) // 3] if kind == "truncated" else b"\x00garbage" * 64)
    code, _, err = evaluate(f"run={trained}", f"checkpoint={bad}")
    assert code == 1 and str(bad) in err and "unreadable" in err


@pytest.mark.parametrize("override", ["policy=lstm", "policy.hidden_sizes=[16]", "env=squared"])
def test_wrong_architecture_names_the_file_and_the_fix(trained, evaluate, override):
    code, _, err = evaluate(f"run={trained}", "episodes=1", override)
    latest = checkpoint.CheckpointDir(trained / "checkpoints").latest()
    assert code == 1 and str(latest) in err and "does not fit" in err, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["episodes=3"], "run=<run dir> is required"),
        (["run=/no/such/run"], "no such directory"),
        (["episodes=0"], "episodes=0"),
        (["deterministic=maybe"], "true or false"),
        (["checkpoint=model_9.pt"], "no such file"),
        (["ppo.learning_rat=1"], "Did you mean 'learning_rate'"),
        (["+env.kwargs.foo=1"], "cannot make the env"),  # was a traceback
        (["bogus"], "usage: python -m puffer.eval run=<run dir>"),  # its own usage
    ],
)
def test_bad_eval_arguments(trained, evaluate, args, expected):
    if not any(a.startswith("run=") for a in args):
        args = [f"run={trained}", *args] if args != ["episodes=3"] else args
    code, out, err = evaluate(*args)
    assert code in (1, 2)
    assert expected in err, out + err
    assert "Traceback" not in err


SLOW_ENV = '''
import pathlib, time
import numpy as np
from puffer import PufferEnv, StepResult
from puffer.spaces import Box, Discrete


class Slow(PufferEnv):
    """100-step episodes; with ``delay`` each step sleeps and the first one leaves a marker."""

    observation_space = Box(-1.0, 1.0, shape=(1,))
    action_space = Discrete(2)

    def __init__(self, delay=0.0):
        self.delay = delay

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        if self.delay:
            pathlib.Path("stepping").touch()
            time.sleep(self.delay)
        self.t += 1
        return StepResult(np.zeros(1, np.float32), 0.0, False, self.t >= 100, {})
'''


def test_ctrl_c_during_eval_exits_130_without_a_traceback(helpers, tmp_path):
    import signal
    import time

    (tmp_path / "slow_env.py").write_text(SLOW_ENV)
    args = ["env=custom", "env.creator=slow_env:Slow", *helpers.TINY, "ppo.total_timesteps=256"]
    trained = helpers.run_module("puffer.train", *args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    run_dir = helpers.only_run(tmp_path)
    # As from a terminal: SIGINT at its default (a pytest-xdist worker ignores it, and an ignored
    # signal stays ignored in a child, where Python then installs no KeyboardInterrupt handler).
    args = [f"run={run_dir}", "episodes=2", "+env.kwargs.delay=0.05"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "puffer.eval", *args],
        cwd=tmp_path,
        env=helpers.clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "stepping").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "eval never stepped the env"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "puffer.eval: interrupted" in err
