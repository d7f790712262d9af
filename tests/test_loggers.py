"""Metric sinks: metrics.jsonl, TensorBoard (read back), W&B offline files, fan-out and close."""

from __future__ import annotations

import math

import pytest

from puffer.loggers import Loggers, MetricsJsonl, TensorBoard, Wandb, read_jsonl


def _metrics(step: int) -> dict:
    return {
        "global_step": step,
        "update": step // 100,
        "sps": 1000.0 + step,
        "losses/policy_loss": 0.5 / (1 + step),
        "env/episode_return": float(step) / 10,
    }


def test_jsonl_rows_and_resume_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = MetricsJsonl(path)
    for step in (100, 200, 300):
        sink.log(_metrics(step), step)
    sink.log({"losses/value_loss": float("nan"), "note": "text"}, 400)
    sink.close()
    rows = read_jsonl(path)
    assert [r["global_step"] for r in rows] == [100, 200, 300, 400]
    assert rows[1]["env/episode_return"] == 20.0 and rows[1]["update"] == 2
    assert rows[3]["losses/value_loss"] is None and "note" not in rows[3]
    # A resumed run from the step-200 checkpoint drops what came after it.
    sink = MetricsJsonl(path, resume_step=200)
    sink.log(_metrics(300), 300)
    sink.close()
    assert [r["global_step"] for r in read_jsonl(path)] == [100, 200, 300]


def test_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"global_step": 1}\n{"global_st')
    assert read_jsonl(path) == [{"global_step": 1}]


def test_tensorboard_scalars_read_back(tmp_path, helpers):
    sink = TensorBoard(tmp_path / "tb")
    for step in (128, 256):
        sink.log(_metrics(step), step)
    sink.close()
    scalars = helpers.read_tb(tmp_path / "tb")
    assert scalars["env/episode_return"] == [(128, pytest.approx(12.8)), (256, pytest.approx(25.6))]
    assert [s for s, _ in scalars["losses/policy_loss"]] == [128, 256]
    assert "global_step" not in scalars


def test_tensorboard_resume_hides_steps_after_the_checkpoint(tmp_path, helpers):
    first = TensorBoard(tmp_path)
    for step in (1, 2, 3):
        first.log({"x": float(step)}, step)
    first.close()
    resumed = TensorBoard(tmp_path, resume_step=2)
    resumed.log({"x": 30.0}, 3)
    resumed.close()
    assert helpers.read_tb(tmp_path)["x"] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_wandb_offline_writes_run_files_in_the_run_dir(tmp_path, helpers):
    sink = Wandb(tmp_path, {"ppo": {"learning_rate": 3e-4}}, mode="offline", name="test")
    sink.log(_metrics(100), 100)
    sink.log(_metrics(200), 200)
    sink.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = helpers.wandb_data(runs[0], b"env/episode_return")
    assert b"losses/policy_loss" in data
    run_id = (tmp_path / "wandb_id").read_text().strip()
    assert run_id in runs[0].name
    # A resumed run reuses the id (one W&B run across the resume).
    again = Wandb(tmp_path, {}, mode="offline")
    again.close()
    names = [p.name for p in (tmp_path / "wandb").glob("offline-run-*")]
    assert len(names) == 2 and all(run_id in n for n in names)


def test_wandb_disabled_writes_nothing(tmp_path):
    sink = Wandb(tmp_path, {}, mode="disabled")
    sink.log({"x": 1.0}, 1)
    sink.close()
    assert not list((tmp_path / "wandb").glob("offline-run-*"))


class Recorder:
    def __init__(self, fail_close: bool = False):
        self.rows: list[tuple[int, dict]] = []
        self.closed = False
        self.fail_close = fail_close

    def log(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def close(self):
        self.closed = True
        if self.fail_close:
            raise OSError("disk full")


def test_one_dict_feeds_every_sink_and_close_reaches_all():
    a, b, c = Recorder(), Recorder(fail_close=True), Recorder()
    loggers = Loggers([a, b, c])
    m = _metrics(64)
    loggers.log(m)
    assert a.rows == b.rows == c.rows == [(64, m)]
    with pytest.raises(OSError, match="disk full"):
        loggers.close()
    assert a.closed and b.closed and c.closed
    assert math.isclose(a.rows[0][1]["sps"], 1064.0)
