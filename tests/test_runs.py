"""``puffer runs``: the run table over real run directories (completed, failed, interrupted,
running, crashed), its filters, sorting and JSON output."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from puffer import runs

BOOM = """
def boom(**kwargs):
    raise RuntimeError("boom: this env cannot be built")
"""


def _wait_for_new_run(parent: Path, seen: set[Path], proc: subprocess.Popen) -> Path:
    """The run dir under ``parent`` not in ``seen`` once its metrics.jsonl has two updates."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for d in set(parent.glob("*")) - seen:
            m = d / "metrics.jsonl"
            if m.is_file() and len(m.read_text().splitlines()) >= 2:
                return d
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no new run under {parent} wrote metrics in 60 s")


_MADE: dict[str, Path] = {}


@pytest.fixture
def run_dirs(tmp_path_factory, helpers) -> dict[str, Path]:
    """Real runs of every kind under one outputs/ (made once per module): completed, failed,
    interrupted, crashed; and which run the table listed as running while it ran."""
    if not _MADE:
        _MADE.update(_make_runs(tmp_path_factory.mktemp("runs"), helpers))
    return _MADE


def _make_runs(base: Path, helpers) -> dict[str, Path]:
    TINY, run_module, start_module = helpers.TINY, helpers.run_module, helpers.start_module
    (base / "boom.py").write_text(BOOM)
    dirs: dict[str, Path] = {}
    done = run_module("puffer.train", "env=bandit", *TINY, "seed=3", cwd=base)
    assert done.returncode == 0, done.stderr
    dirs["completed"] = next(base.glob("outputs/bandit/*"))

    failed = run_module("puffer.train", "env=custom", "env.creator=boom:boom", *TINY, cwd=base)
    assert failed.returncode == 1, failed.stderr
    dirs["failed"] = next(base.glob("outputs/boom/*"))

    long = ["env=cartpole", *TINY, "ppo.total_timesteps=10000000", "logger=none"]
    cartpole = base / "outputs" / "cartpole"
    proc = start_module("puffer.train", *long, cwd=base)
    try:
        dirs["interrupted"] = _wait_for_new_run(cartpole, set(), proc)
        listed = runs.run_table([base / "outputs"], status="running")
        dirs["listed_while_running"] = Path(listed[0].run) if len(listed) == 1 else base
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()

    proc = start_module("puffer.train", *long, "seed=9", cwd=base)
    try:
        dirs["crashed"] = _wait_for_new_run(cartpole, {dirs["interrupted"]}, proc)
        proc.kill()  # SIGKILL: no final summary, as after an OOM kill or a power cut
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    dirs["base"] = base
    return dirs


def test_statuses_of_real_runs(run_dirs):
    base = run_dirs["base"]
    assert run_dirs["listed_while_running"] == run_dirs["interrupted"]
    later = time.time() + runs.STALE_SECONDS + 1  # the killed run's silence is then long enough
    got = {
        Path(r.run): r for r in (runs.read_run(d, now=later) for d in runs.find_run_dirs([base]))
    }
    assert len(got) == 4
    completed = got[run_dirs["completed"]]
    assert (completed.status, completed.env, completed.policy) == ("completed", "bandit", "mlp")
    assert completed.steps == 2048 and completed.objective is not None and completed.sps > 0
    assert "seed=3" in completed.overrides and "env=" not in completed.overrides
    assert completed.wall_time > 0 and abs(completed.start_time - time.time()) < 3600
    failed = got[run_dirs["failed"]]
    assert failed.status == "failed" and "boom" in failed.error
    interrupted = got[run_dirs["interrupted"]]
    assert interrupted.status == "interrupted" and 0 < interrupted.steps < 10_000_000
    crashed = got[run_dirs["crashed"]]
    assert crashed.status == "failed" and "crashed" in crashed.error
    # summary.json records the pid: the crash shows at once, without waiting for silence.
    assert runs.read_run(run_dirs["crashed"]).status == "failed"
    assert crashed.steps is not None and crashed.steps > 0  # from metrics.jsonl's last line


def test_cli_json_filters_and_sorts(run_dirs, helpers):
    base = run_dirs["base"]
    out = helpers.run_module("puffer", "runs", "--json", cwd=base)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)  # outputs/ and multirun_sweeps/ by default
    assert len(rows) == 4
    starts = [r["start_time"] for r in rows]
    assert starts == sorted(starts, reverse=True)  # newest first
    out = helpers.run_module("puffer", "runs", "outputs", "--env", "bandit", "--json", cwd=base)
    assert [r["status"] for r in json.loads(out.stdout)] == ["completed"]
    out = helpers.run_module("puffer", "runs", "--status", "interrupted", "--json", cwd=base)
    assert [(base / r["run"]).resolve() for r in json.loads(out.stdout)] == [
        run_dirs["interrupted"].resolve()
    ]
    out = helpers.run_module("puffer", "runs", "--sort", "steps", "--json", cwd=base)
    steps = [r["steps"] for r in json.loads(out.stdout) if r["steps"] is not None]
    assert steps == sorted(steps, reverse=True) and len(steps) >= 3


def test_cli_table_shows_every_run(run_dirs, helpers):
    out = helpers.run_module("puffer", "runs", "outputs", cwd=run_dirs["base"])
    assert out.returncode == 0, out.stderr
    for word in ("completed", "failed", "interrupted", "bandit", "cartpole", "boom", "seed=3"):
        assert word in out.stdout, out.stdout
    bad = helpers.run_module("puffer", "runs", "no/such/dir", cwd=run_dirs["base"])
    assert bad.returncode == 2 and "no/such/dir" in bad.stderr


def test_a_thousand_runs_are_found_and_read(tmp_path):
    """Synthetic run dirs (the files a run writes) in a sweep layout: all found, none misread."""
    make_fake_runs(tmp_path / "multirun_sweeps" / "2026-01-01_00-00-00", 1000)
    rows = runs.run_table([tmp_path / "multirun_sweeps"], sort="objective")
    assert len(rows) == 1000
    assert [r.objective for r in rows[:3]] == [999.0, 998.0, 997.0]
    assert {r.status for r in rows} == {"completed", "failed"}
    assert rows[0].policy == "lstm" and rows[0].overrides == "seed=999 ppo.learning_rate=0.001"


def make_fake_runs(sweep: Path, n: int) -> None:
    """``n`` sweep jobs with a summary, overrides, config and metrics (benchmarks use it too)."""
    for i in range(n):
        job = sweep / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- env=cartpole\n- seed={i}\n- ppo.learning_rate=0.001\n"
        )
        (job / ".hydra" / "config.yaml").write_text(
            "env:\n  name: cartpole\npolicy:\n  name: lstm\n  hidden_size: 64\nseed: 0\n"
        )
        summary = {"status": "failed" if i % 10 == 0 else "completed", "env": "cartpole"}
        summary.update(objective=float(i), global_step=1000 * i, sps=5000.0, wall_time=2.5)
        (job / "summary.json").write_text(json.dumps(summary))
        (job / "metrics.jsonl").write_text(
            "".join(json.dumps({"global_step": s, "env/episode_return": s}) + "\n" for s in (1, 2))
        )
