"""Evaluation during training: eval/* metrics in every sink, separate env rows (training is
bit-identical with and without it), the best checkpoint, eval.stop_at, objective=eval, videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from puffer import checkpoint
from puffer.loggers import read_jsonl

EVAL = ["eval.every=2", "eval.episodes=6"]


def _train(helpers, cwd: Path, *args: str) -> Path:
    cwd.mkdir(parents=True, exist_ok=True)
    done = helpers.run_module("puffer.train", *helpers.TINY, *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return helpers.only_run(cwd)


def _comparable(rows: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not k.startswith(("eval/", "time", "sps"))} for r in rows
    ]


def test_eval_metrics_reach_every_sink_on_separate_rows(helpers, tmp_path):
    with_eval = _train(helpers, tmp_path / "a", "env=cartpole", "logger=tensorboard", *EVAL)
    without = _train(helpers, tmp_path / "b", "env=cartpole", "logger=none")
    rows = read_jsonl(with_eval / "metrics.jsonl")
    evaluated = [r for r in rows if "eval/episode_return" in r]
    # every 2 updates of 256 steps (and after the last)
    assert [r["global_step"] for r in evaluated] == [512, 1024, 1536, 2048]
    assert all(r["eval/episode_length"] >= 8 for r in evaluated)  # cartpole episodes are >= 8 steps
    # The eval rows are not the training rows: training is bit-identical without evaluation.
    assert _comparable(rows) == _comparable(read_jsonl(without / "metrics.jsonl"))
    tb = helpers.read_tb(with_eval / "tb")
    assert [v for _, v in tb["eval/episode_return"]] == pytest.approx(
        [r["eval/episode_return"] for r in evaluated]
    )
    assert "eval/episode_length" in tb
    best = checkpoint.load(with_eval / "checkpoints" / "best.pt")
    assert best["meta"]["eval_return"] == pytest.approx(
        max(r["eval/episode_return"] for r in evaluated)
    )
    assert [r["eval/best_return"] for r in evaluated][-1] == pytest.approx(
        best["meta"]["eval_return"]
    )


def test_the_best_checkpoint_evaluates(helpers, tmp_path):
    run_dir = _train(helpers, tmp_path, "env=cartpole", "logger=none", *EVAL)
    proc = helpers.run_module(
        "puffer.eval", f"run={run_dir}", "checkpoint=best", "episodes=6", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "best.pt" in proc.stdout


def test_stop_at_ends_the_run_when_solved(helpers, tmp_path):
    run_dir = _train(
        helpers, tmp_path, "env=bandit", "logger=none", "ppo.total_timesteps=10000000",
        "eval.every=1", "eval.episodes=8", "eval.stop_at=0.9",
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "solved"
    assert 0 < summary["global_step"] < 10_000_000
    last = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/episode_return" in r][-1]
    assert last["eval/episode_return"] >= 0.9 and last["global_step"] == summary["global_step"]
    assert checkpoint.CheckpointDir(run_dir / "checkpoints").latest() is not None


def test_objective_eval_is_the_last_eval_return(helpers, tmp_path):
    run_dir = _train(helpers, tmp_path, "env=cartpole", "logger=none", *EVAL, "objective=eval")
    summary = json.loads((run_dir / "summary.json").read_text())
    last = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/episode_return" in r][-1]
    assert summary["objective"] == pytest.approx(last["eval/episode_return"])
    assert summary["eval_return"] == pytest.approx(last["eval/episode_return"])


def test_eval_video_during_training(helpers, tmp_path):
    run_dir = _train(
        helpers, tmp_path, "env=cartpole", "logger=tensorboard", "eval.every=4", "eval.episodes=2",
        "eval.video=true",
    )  # fmt: skip
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 2  # updates 4 and 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("eval/video")) == 2


def test_eval_settings_are_checked(run, helpers):
    proc = run("puffer.train", *helpers.TINY, "eval.episodes=0")
    assert proc.returncode == 2 and "eval.episodes=0" in proc.stderr


@pytest.mark.slow
def test_cartpole_stops_when_solved(helpers, tmp_path):
    done = helpers.run_module(
        "puffer.train", "env=cartpole", "eval.stop_at=475", "dashboard=plain", "logger=none",
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((helpers.only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "solved" and summary["global_step"] < 400_000
