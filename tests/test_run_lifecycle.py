"""A run's lifecycle across commands, as real subprocesses: resuming a live, crashed, solved or
interrupted run; ``puffer eval`` finding what ``puffer train`` made; ``puffer report`` leaving out
the runs that did not finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from puffer import checkpoint
from puffer.runs import live_writer, read_summary


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run except the resume attempts' own records, by relative path."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "resumes" not in p.relative_to(run_dir).parts
    }


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``run_dir`` has a checkpoint and its summary says ``running``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()[1][-2000:]}")
        summary = read_summary(run_dir) or {}
        latest = checkpoint.CheckpointDir(run_dir / "checkpoints").latest()
        if summary.get("status") == "running" and latest is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} had no checkpoint after {timeout}s")


def _endless(helpers, run_dir: Path) -> list[str]:
    """A run that trains until stopped, checkpointing every 2 updates, in ``run_dir``."""
    return [
        *helpers.TINY,
        "ppo.total_timesteps=100000000",
        "checkpoint.interval=2",
        "checkpoint.keep=2",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]


def _runs_json(helpers, cwd: Path, *paths: Path) -> list[dict]:
    proc = helpers.run_module("puffer", "runs", *map(str, paths), "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _refused(helpers, run_dir: Path, proc: subprocess.Popen) -> None:
    """A resume of ``run_dir`` while ``proc`` trains it exits 2 naming the run, pid and host."""
    resumes = sorted((run_dir / "resumes").glob("*"))
    refused = helpers.run_module("puffer.train", f"resume={run_dir}", cwd=run_dir.parent)
    assert refused.returncode == 2, refused.stderr  # as for other config errors
    message = refused.stderr
    assert f"resume={run_dir}" in message and "still training" in message, message
    assert f"pid {proc.pid} on {socket.gethostname()}" in message, message
    assert "kill -INT" in message and "Traceback" not in message
    assert sorted((run_dir / "resumes").glob("*")) == resumes  # refused before Hydra's record
    assert live_writer(run_dir) == (proc.pid, socket.gethostname())


def _interrupt(proc: subprocess.Popen) -> None:
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err


def test_a_live_run_is_not_resumed_but_evaluated_and_resumed_once_stopped(helpers, tmp_path):
    run_dir = tmp_path / "live"
    proc = helpers.start_module("puffer.train", *_endless(helpers, run_dir), cwd=tmp_path)
    try:
        _wait_for_checkpoint(run_dir, proc)
        _refused(helpers, run_dir, proc)
        # Evaluating a live run only reads it.
        evaluated = helpers.run_module(
            "puffer.eval", f"run={run_dir}", "episodes=1", "env.kwargs.max_steps=50", cwd=tmp_path
        )
        assert evaluated.returncode == 0, evaluated.stderr
    finally:
        _interrupt(proc)
    assert live_writer(run_dir) is None

    # A resume training the run is as live as the run was (its pid started after the run did).
    proc = helpers.start_module("puffer.train", f"resume={run_dir}", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while (read_summary(run_dir) or {}).get("pid") != proc.pid:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        _wait_for_checkpoint(run_dir, proc)
        _refused(helpers, run_dir, proc)
        (row,) = _runs_json(helpers, tmp_path, tmp_path)
        assert row["status"] == "running"
    finally:
        _interrupt(proc)
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted" and live_writer(run_dir) is None
    stopped_at = summary["global_step"]

    # Resumed with a budget it has already spent: finished, and now recorded as such.
    before = {k: v for k, v in _snapshot(run_dir).items() if k != "summary.json"}
    done = helpers.run_module(
        "puffer.train", f"resume={run_dir}", "ppo.total_timesteps=256", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "already finished (completed at step" in done.stdout, done.stdout
    assert {k: v for k, v in _snapshot(run_dir).items() if k != "summary.json"} == before
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["global_step"] == stopped_at
    assert summary["total_timesteps"] == 256
    (row,) = _runs_json(helpers, tmp_path, tmp_path)
    assert row["status"] == "completed" and "ppo.total_timesteps=256" in row["overrides"]
    assert "100000000" not in row["overrides"]


def test_a_crashed_run_or_one_on_another_host_is_resumed(helpers, tmp_path):
    run_dir = tmp_path / "crashed"
    args = [*_endless(helpers, run_dir), "ppo.total_timesteps=40960"]  # the last value wins
    proc = helpers.start_module("puffer.train", *args, cwd=tmp_path)
    try:
        _wait_for_checkpoint(run_dir, proc)
        proc.send_signal(signal.SIGKILL)  # no final summary: it still says running
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert read_summary(run_dir)["status"] == "running"
    assert live_writer(run_dir) is None  # its pid is gone
    (row,) = _runs_json(helpers, tmp_path, tmp_path)
    assert row["status"] == "failed" and "crashed" in row["error"]

    # A live pid recorded on another host cannot be checked from here: not refused either.
    summary = read_summary(run_dir)
    summary.update(pid=os.getpid(), host="another-host.example")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert live_writer(run_dir) is None
    resumed = helpers.run_module("puffer.train", f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["global_step"] >= 40960
    assert summary["host"] == socket.gethostname()


def test_a_solved_run_is_finished_unless_its_budget_is_raised(run, helpers, tmp_path):
    # eval.stop_at=-1000: every eval "solves" it, at update 2 of 8.
    solved = run(
        "puffer.train",
        *helpers.TINY,
        "logger=none",
        "eval.every=2",
        "eval.episodes=1",
        "eval.stop_at=-1000",
        "env.kwargs.max_steps=50",
    )
    assert solved.returncode == 0, solved.stderr
    run_dir = helpers.only_run(tmp_path)
    summary = read_summary(run_dir)
    assert summary["status"] == "solved" and summary["global_step"] == 2 * 256
    before = _snapshot(run_dir)

    again = run("puffer.train", f"resume={run_dir}")
    assert again.returncode == 0, again.stderr
    assert "already finished (solved at step 512)" in again.stdout, again.stdout
    assert "above 2,048" in again.stdout
    assert _snapshot(run_dir) == before

    # A larger budget continues it, as for a completed run (and stop_at ends it at the next eval).
    more = run("puffer.train", f"resume={run_dir}", "ppo.total_timesteps=4096")
    assert more.returncode == 0, more.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "solved" and summary["global_step"] == 4 * 256
    assert summary["total_timesteps"] == 4096
    latest = checkpoint.CheckpointDir(run_dir / "checkpoints").latest()
    assert checkpoint.load(latest)["meta"]["global_step"] == 4 * 256


MYENVS = """
import gymnasium

gymnasium.register(id="MyThing-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
"""


def test_eval_finds_the_run_train_made_for_a_module_env_id(helpers, tmp_path):
    (tmp_path / "myenvs.py").write_text(MYENVS)
    trained = helpers.run_module(
        "puffer", "train", "myenvs:MyThing-v0", "--timesteps", "512", *helpers.TINY[1:],
        "logger=none", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["MyThing-v0"]
    evaluated = helpers.run_module(
        "puffer", "eval", "myenvs:MyThing-v0", "--episodes", "1", cwd=tmp_path
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "MyThing-v0" in evaluated.stdout + evaluated.stderr

    # Nothing trained for this id: named as the user typed it, with the dir searched.
    other = helpers.run_module("puffer", "eval", "myenvs:Other-v0", cwd=tmp_path)
    assert other.returncode == 2
    assert "'myenvs:Other-v0' under outputs/Other-v0/" in other.stderr, other.stderr


@pytest.mark.parametrize(
    ("arg", "problem"),
    [("/nonexistent/dir", "does not exist"), ("./outputs", "is not a run directory")],
)
def test_eval_of_a_path_that_is_not_a_run_says_so(helpers, tmp_path, arg, problem):
    (tmp_path / "outputs").mkdir()
    proc = helpers.run_module("puffer", "eval", arg, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{arg} {problem}" in proc.stderr and "train one" not in proc.stderr, proc.stderr


def test_report_leaves_out_runs_that_did_not_finish(helpers, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m", "env=cartpole", "seed=0,1", *helpers.TINY, "ppo.total_timesteps=40960",
        "logger=none", "checkpoint.interval=1000", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = helpers.start_module("puffer.train", *args, cwd=tmp_path)
    try:
        metrics = sweep / "1" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C during job 1
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert read_summary(sweep / "0")["status"] == "completed"
    stopped = read_summary(sweep / "1")
    assert stopped["status"] == "interrupted"

    def report(*extra: str) -> subprocess.CompletedProcess[str]:
        return helpers.run_module(
            "puffer", "report", str(sweep), "--reps", "50", *extra, cwd=tmp_path, timeout=300
        )

    made = report()
    assert made.returncode == 0, made.stderr
    assert "over 1 runs" in made.stdout, made.stdout
    note = f"{sweep / '1'}: interrupted at {stopped['global_step']:,} of 40,960 steps"
    assert f"left out: {note}" in made.stdout and "--include-unfinished" in made.stdout
    stats = json.loads((sweep / "report" / "report.json").read_text())
    assert stats["num_runs"] == 1 and stats["left_out"][0].startswith(note)
    assert stats["final"]["all runs"]["runs"] == [str(sweep / "0")]
    assert note in (sweep / "report" / "report.html").read_text()

    both = report("--include-unfinished")
    assert both.returncode == 0 and "over 2 runs" in both.stdout, both.stdout + both.stderr

    # A group whose every run failed is no result, even when asked to include unfinished runs.
    for job in ("0", "1"):
        summary = read_summary(sweep / job)
        (sweep / job / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    failed = report("--include-unfinished")
    assert failed.returncode == 1, failed.stdout
    assert "every run failed (2 runs)" in failed.stderr, failed.stderr
    plain = report()
    assert plain.returncode == 1 and "no finished run under" in plain.stderr, plain.stderr
    assert "failed at" in plain.stderr
