"""TensorBoard HParams: every job of a sweep logs its hyperparameters and final metrics (read back
from the event files); W&B runs of one sweep share a group and carry the config."""

from __future__ import annotations

import json

import pytest


def _hparams(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {}
    for k, v in start.session_start_info.hparams.items():
        kind = v.WhichOneof("kind")
        values[k] = getattr(v, kind)
    scalars = {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return values, scalars


def test_sweep_jobs_log_hparams_and_share_a_wandb_group(helpers, tmp_path):
    args = [
        "-m", "env=bandit", "ppo.learning_rate=0.01,0.03", *helpers.TINY,
        "logger=[tensorboard,wandb]", "hydra.sweep.dir=multirun_sweeps/hp",
    ]  # fmt: skip
    done = helpers.run_module("puffer.train", *args, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "multirun_sweeps" / "hp"
    rates = []
    for job in (sweep / "0", sweep / "1"):
        values, scalars = _hparams(job / "tb")
        summary = json.loads((job / "summary.json").read_text())
        rates.append(values["ppo.learning_rate"])
        assert values["env.name"] == "bandit" and values["seed"] == 0
        assert scalars["final/objective"] == [pytest.approx(summary["objective"])]
        assert scalars["final/global_step"] == [summary["global_step"]]
        run = next((job / "wandb").glob("offline-run-*"))
        data = helpers.wandb_data(run, b"multirun_sweeps/hp")
        assert b"multirun_sweeps/hp" in data  # the group: the sweep directory
        assert b"learning_rate" in data  # the config
    assert rates == pytest.approx([0.01, 0.03])
