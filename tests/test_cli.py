"""The command line: ``puffer`` (train/eval/list), ``--help``, config errors, the built wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def puffer_script() -> str:
    found = shutil.which("puffer", path=str(Path(sys.executable).parent))
    assert found, (
        f"the puffer console script is not installed next to {sys.executable}: pip install -e ."
    )
    return found


def test_train_help_shows_groups_and_options(run):
    proc = run("puffer.train", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert (
        "env: atari, bandit, cartpole, custom, gymnasium, memory, mujoco, pettingzoo, reach, squared"
        in out
    )
    assert "policy: cnn, cnn_lstm, custom, lstm, mlp" in out
    assert "vector: multiprocessing, serial" in out
    assert "logger: none, tensorboard, wandb" in out
    assert "total_timesteps" in out and "python -m puffer.train -m" in out


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ppo.learning_rat=1e-3", "Did you mean 'learning_rate'?"),
        ("env=cartpol", "Choices for env: atari, bandit, cartpole"),
        ("ppo.num_minibatches=3", "must divide num_envs=8"),
    ],
)
def test_config_errors_are_one_clean_paragraph(run, tmp_path, override, expected):
    proc = run("puffer.train", "vector.num_envs=8", override)
    assert proc.returncode == 2
    assert expected in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("puffer: config error:"), proc.stderr
    assert not (tmp_path / "outputs").exists()  # failed before any run dir, env or worker


def test_full_hydra_error_gives_the_traceback(helpers, tmp_path):
    env = {**helpers.clean_env(), "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "puffer.train", "ppo.learning_rat=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback (most recent" in proc.stderr and "learning_rat" in proc.stderr


def test_each_front_end_prints_its_own_usage(run, tmp_path, helpers):
    proc = run("puffer.train", "bogus")
    assert proc.returncode == 2 and "usage: python -m puffer.train" in proc.stderr
    bad = subprocess.run(
        [puffer_script(), "eval", "cartpole", "bogus"],
        cwd=tmp_path,
        env=helpers.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "usage: puffer eval" in bad.stderr, bad.stderr


def test_puffer_list_shows_envs_with_spaces(tmp_path, helpers):
    proc = subprocess.run(
        [puffer_script(), "list"],
        cwd=tmp_path,
        env=helpers.clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for env in ("bandit", "cartpole", "memory", "squared"):
        assert f"{env}: obs " in proc.stdout
    assert "gymnasium" in proc.stdout


def test_puffer_train_then_eval_the_newest_run(tmp_path, helpers):
    script = puffer_script()
    tiny = [a for a in helpers.TINY if not a.startswith("ppo.total_timesteps")]

    def puffer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args],
            cwd=tmp_path,
            env=helpers.clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    trained = puffer("train", "bandit", "--timesteps", "1024", *tiny, "logger=none")
    assert trained.returncode == 0, trained.stderr
    run_dir = helpers.only_run(tmp_path)
    assert run_dir.parent.name == "bandit"
    assert "ppo.total_timesteps=1024" in (run_dir / ".hydra" / "overrides.yaml").read_text()

    evaluated = puffer("eval", "bandit", "--episodes", "3")
    assert evaluated.returncode == 0, evaluated.stderr
    assert str(run_dir.relative_to(tmp_path)) in evaluated.stdout
    assert "over 3 episodes" in evaluated.stdout

    missing = puffer("eval", "cartpole")
    assert missing.returncode == 2 and "no trained run of 'cartpole'" in missing.stderr

    # A newer run, then the older one resumed (its files are now the most recently modified):
    # the newest run by start time is still the one evaluated.
    newer = puffer("train", "bandit", "--timesteps", "1024", *tiny, "logger=none")
    assert newer.returncode == 0, newer.stderr
    (newer_dir,) = [p for p in run_dir.parent.iterdir() if p != run_dir]
    resumed = puffer("train", "bandit", f"resume={run_dir}", "ppo.total_timesteps=2048")
    assert resumed.returncode == 0, resumed.stderr
    evaluated = puffer("eval", "bandit", "--episodes", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    assert newer_dir.name in evaluated.stdout


def test_cli_maps_a_gymnasium_id_to_the_gymnasium_env():
    from puffer.cli import _env_overrides

    assert _env_overrides("cartpole") == ["env=cartpole"]
    assert _env_overrides("Acrobot-v1") == ["env=gymnasium", "env.id=Acrobot-v1"]


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_from_an_installed_copy(tmp_path, helpers):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("puffer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for conf in sorted((REPO / "conf").rglob("*.yaml")):
        assert f"puffer/conf/{conf.relative_to(REPO / 'conf').as_posix()}" in names
    # The unpacked wheel ahead of the editable checkout on the path: an installed copy.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**helpers.clean_env(), "PYTHONPATH": str(site)}
    code = "import puffer, puffer.config as c; print(puffer.__file__); print(c.CONF_DIR)"
    where = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [
        str(site / "puffer" / "__init__.py"),
        str(site / "puffer" / "conf"),
    ]
    helped = subprocess.run(
        [sys.executable, "-m", "puffer.train", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0 and "env: atari, bandit, cartpole" in helped.stdout
    assert os.environ.get("PYTHONPATH") != str(site)
