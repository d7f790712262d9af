"""Sweeps: ``-m`` layout and summary, a failing job that does not stop the rest, Optuna, joblib.

The Optuna sweeper's own features (shared studies, pruning, submitit, ...): test_sweeps_optuna.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from puffer.runs import sweep_rows, write_json, write_sweep_summary


def _sweep_dir(base: Path) -> Path:
    (sweep,) = list((base / "multirun_sweeps").iterdir())
    return sweep


def _csv(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_multirun_layout_summary_and_a_failing_job(run, helpers, tmp_path):
    tiny = [a for a in helpers.TINY if not a.startswith("ppo.total_timesteps")]
    # bandit takes no max_steps keyword: its two jobs fail at start-up, the cartpole jobs run.
    proc = run(
        "puffer.train",
        "-m",
        "env=cartpole,bandit",
        "ppo.learning_rate=1e-3,3e-3",
        "++env.kwargs.max_steps=50",
        "ppo.total_timesteps=1024",
        "logger=none",
        *tiny,
    )
    assert proc.returncode == 1, proc.stderr  # some jobs failed
    assert "2 sweep job(s) did not complete; every job's status is in " in proc.stderr
    sweep = _sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for job in sweep.glob("[0-9]"):
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "summary.json").is_file()
    statuses = {
        json.loads((job / "summary.json").read_text())["status"] for job in sweep.glob("[0-9]")
    }
    assert statuses == {"completed", "failed"}

    rows = _csv(sweep)
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "failed"]
    objectives = [float(r["objective"]) for r in rows[:2]]
    assert objectives == sorted(objectives, reverse=True)  # best first
    assert all("env=cartpole" in r["overrides"] for r in rows[:2])
    assert all("max_steps" in r["error"] for r in rows[2:])
    assert "best first" in proc.stdout and "ppo.learning_rate=0.003" in proc.stdout


def test_sweep_rows_order_and_csv(tmp_path):
    for job, objective, status in [
        (0, 1.0, "completed"),
        (1, None, "failed"),
        (2, 3.0, "completed"),
        (3, 9.0, "failed"),  # a score from a run that then failed: not ranked
    ]:
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(
            f"- ppo.learning_rate={job}\n- seed=1\n"
        )
        write_json(tmp_path / str(job) / "summary.json", {"objective": objective, "status": status})
    assert [r["job"] for r in sweep_rows(tmp_path)] == [2, 0, 1, 3]
    import io

    from rich.console import Console

    out = io.StringIO()
    write_sweep_summary(tmp_path, Console(file=out, width=120))
    assert [r["job"] for r in _csv(tmp_path)] == ["2", "0", "1", "3"]
    table = out.getvalue()
    assert "ppo.learning_rate=2" in table
    assert table.count("seed=1") == 1 and "all jobs: seed=1" in table  # shared: the caption


def test_optuna_preset_searches_ppo_parameters(run, helpers, tmp_path):
    proc = run(
        "puffer.train",
        "-m",
        "hydra/sweeper=ppo_optuna",
        "hydra.sweeper.n_trials=3",
        "env=bandit",
        "ppo.total_timesteps=512",
        "logger=none",
        *[a for a in helpers.TINY if not a.startswith("ppo.total_timesteps")],
    )
    assert proc.returncode == 0, proc.stderr
    sweep = _sweep_dir(tmp_path)
    assert (sweep / "optimization_results.yaml").is_file()
    rows = _csv(sweep)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    assert all("ppo.learning_rate=" in r["overrides"] for r in rows)  # sampled by Optuna
    best = max(float(r["objective"]) for r in rows)
    assert float(rows[0]["objective"]) == best


def test_parallel_launcher_runs_jobs_in_processes(run, helpers, tmp_path):
    proc = run(
        "puffer.train",
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "env=bandit,squared",
        "logger=none",
        *helpers.TINY,
    )
    assert proc.returncode == 0, proc.stderr
    rows = _csv(_sweep_dir(tmp_path))
    assert sorted(r["status"] for r in rows) == ["completed", "completed"]
    assert {r["overrides"].split()[0] for r in rows} == {"env=bandit", "env=squared"}


def test_a_job_whose_combination_is_invalid_is_recorded_as_failed(run, helpers, tmp_path):
    # Each value is checked before the sweep starts, but not every combination: only the job
    # with 6 rows and 4 minibatches is invalid.
    tiny = [a for a in helpers.TINY if not a.startswith(("vector.num_envs", "ppo.num_minibatches"))]
    proc = run(
        "puffer.train",
        "-m",
        "vector.num_envs=8,6",
        "ppo.num_minibatches=1,4",
        "env=bandit",
        "logger=none",
        *tiny,
    )
    assert proc.returncode == 1, proc.stderr
    assert "1 sweep job(s) did not complete" in proc.stderr
    rows = _csv(_sweep_dir(tmp_path))
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed"]
    assert "vector.num_envs=6 ppo.num_minibatches=4" in rows[-1]["overrides"]
    assert "must divide num_envs=6" in rows[-1]["error"]


def test_a_failed_optuna_trial_does_not_stop_the_study(run, helpers, tmp_path):
    # The seeded random sampler draws num_minibatches 2, 3, 2: 3 does not divide 8 rows.
    proc = run(
        "puffer.train",
        "-m",
        "hydra/sweeper=ppo_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=0",
        "ppo.num_minibatches=int(interval(1, 3))",
        "env=bandit",
        "logger=none",
        "vector.num_envs=8",
        "ppo.horizon=32",
        "ppo.total_timesteps=512",
        "dashboard=plain",
    )
    assert proc.returncode == 1, proc.stderr  # some trials failed
    assert "Traceback" not in proc.stderr
    rows = _csv(_sweep_dir(tmp_path))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("ppo.num_minibatches=3" in r["overrides"] for r in failed)
    assert all("num_minibatches" in r["error"] for r in failed)
