"""Checkpoint files: atomic writes, rotation with a ``latest`` pointer, clear errors."""

from __future__ import annotations

import pytest
import torch

from puffer import checkpoint
from puffer.checkpoint import CheckpointDir, CheckpointError


def _state(step: int, **extra) -> dict:
    """A checkpoint dict whose trainer entry holds ``step`` and ``extra``."""
    trainer = {"policy": {"w": torch.full((3,), float(step))}, "step": step, "rng": [1, 2, 3]}
    return checkpoint.make({**trainer, **extra}, {"global_step": step})


def test_save_load_roundtrip(tmp_path):
    path = checkpoint.save(_state(3, w=torch.arange(4), x=[1.5, "s"]), tmp_path / "c.pt")
    back = checkpoint.load(path)
    assert back["format"] == "puffer.checkpoint" and back["version"] == 1
    assert back["meta"] == {"global_step": 3}
    assert torch.equal(back["trainer"]["w"], torch.arange(4))
    assert back["trainer"]["x"] == [1.5, "s"]
    assert torch.equal(checkpoint.policy_state(back)["w"], torch.full((3,), 3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind


def test_numpy_arrays_and_scalars_load_safely(tmp_path):
    import numpy as np

    state = {
        "obs": np.arange(6, dtype=np.float32).reshape(2, 3),
        "done": np.array([True, False]),
        "steps": np.int64(7),
        "rng": np.random.default_rng(3).bit_generator.state,
    }
    back = checkpoint.load(checkpoint.save(_state(0, **state), tmp_path / "env.pt"))["trainer"]
    assert back["obs"].dtype == np.float32 and np.array_equal(back["obs"], state["obs"])
    assert back["done"].tolist() == [True, False] and back["steps"] == 7
    assert back["rng"] == state["rng"]


def test_arbitrary_objects_are_refused(tmp_path):
    import fractions

    path = tmp_path / "evil.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, path)  # any class outside the allowlist
    with pytest.raises(CheckpointError, match=str(path)):
        checkpoint.load(path)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = checkpoint.save(_state(1), tmp_path / "c.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save(_state(2, bad=Unpicklable()), path)
    assert checkpoint.load(path)["trainer"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_rotation_keeps_the_newest_and_points_latest_at_it(tmp_path):
    ckdir = CheckpointDir(tmp_path / "checkpoints", keep=2)
    for step in (100, 200, 300):
        ckdir.save(_state(step), step)
    assert [p.name for p in ckdir.all()] == ["model_000000000200.pt", "model_000000000300.pt"]
    assert ckdir.latest().name == "model_000000000300.pt"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "model_000000000300.pt"
    assert checkpoint.load(ckdir.latest())["trainer"]["step"] == 300


def test_latest_falls_back_to_the_highest_step_when_the_pointer_is_stale(tmp_path):
    ckdir = CheckpointDir(tmp_path, keep=5)
    ckdir.save(_state(1), 1)
    ckdir.save(_state(2), 2)
    (tmp_path / "latest").write_text("model_999.pt\n")
    assert ckdir.latest().name == "model_000000000002.pt"
    assert CheckpointDir(tmp_path / "empty").latest() is None


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep=0"):
        CheckpointDir(tmp_path, keep=0)


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "empty", "not_a_dict"])
def test_unreadable_checkpoints_name_the_file(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "truncated":
        checkpoint.save(_state(7), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_a_dict":
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


def test_save_refuses_a_dict_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"puffer\.checkpoint\.make"):
        checkpoint.save({"weights": torch.zeros(3)}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"weights": torch.zeros(3)}, "not a puffer checkpoint"),
        ({"format": "puffer.checkpoint", "version": 99, "trainer": {}}, "version 99"),
        ({"format": "puffer.checkpoint", "version": 1, "trainer": {}}, "no trainer/policy"),
    ],
)
def test_foreign_newer_or_incomplete_checkpoints_name_the_file(tmp_path, obj, match):
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


def test_checkpoints_of_the_format_before_version_1_are_upgraded(tmp_path):
    """The run loop's old ``{"trainer": ..., "config": ...}`` file, with the hand-written Adam's
    state, reads as version 1 with torch.optim.Adam's state dict."""
    old_trainer = {
        "format": "puffer.ppo.Trainer/1",
        "policy": {"w": torch.ones(2)},
        "optimizers": [
            {
                "param_groups": [{"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-5}],
                "steps": 4,
                "exp_avgs": [torch.full((2,), 0.5)],
                "exp_avg_sqs": [torch.full((2,), 0.25)],
            }
        ],
        "global_step": 512,
        "epoch": 4,
    }
    path = tmp_path / "model_000000000512.pt"
    torch.save({"trainer": old_trainer, "config": {"seed": 3}, "global_step": 512}, path)
    ckpt = checkpoint.load(path)
    assert ckpt["format"] == "puffer.checkpoint" and ckpt["meta"]["config"] == {"seed": 3}
    assert ckpt["trainer"]["update_count"] == 4 and ckpt["meta"]["global_step"] == 512
    param = torch.nn.Parameter(torch.zeros(2))
    adam = torch.optim.Adam([param], lr=0.1)
    adam.load_state_dict(ckpt["trainer"]["optimizers"][0])
    state = adam.state[param]
    assert float(state["step"]) == 4 and torch.equal(state["exp_avg_sq"], torch.full((2,), 0.25))
    assert adam.param_groups[0]["lr"] == 1e-3 and adam.param_groups[0]["eps"] == 1e-5


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_a_checkpoint_written_by_the_old_flat_policy_resumes_and_plays(name):
    """tests/data holds checkpoints puffer 89741cc wrote (write_old_checkpoints.py), when the MLP
    trunk was ``encoder.<i>`` and the LSTM cell ``cell``: they load under today's names with the
    same outputs, resume training, and give eval the policy's weights."""
    import json
    import warnings
    from pathlib import Path

    import puffer.envs
    import puffer.policy as P
    from puffer.ppo import PPOConfig, Trainer

    data = Path(__file__).parent / "data"
    expected = json.loads((data / "old_checkpoints.json").read_text())
    path = data / f"old_cartpole_{name}.pt"
    assert "encoder.0.weight" in torch.load(path, weights_only=False)["policy"]  # the old names
    obs = torch.tensor(expected["observations"])

    def policy() -> P.Policy:
        config = P.PolicyConfig(name=name, hidden_sizes=[8], lstm_hidden_size=8)
        return P.make(config, puffer.envs.make("cartpole", 2), seed=1)

    played = policy()  # eval's path: the policy's state from the checkpoint
    played.load_state_dict(checkpoint.policy_state(checkpoint.load(path)))
    config = PPOConfig(total_timesteps=64, horizon=8, num_minibatches=1, update_epochs=1)
    trainer = Trainer(config, puffer.envs.make("cartpole", 2), policy(), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same layout: no "not bit-exact" warning
        trainer.load(path)
    assert trainer.global_step == expected[name]["global_step"] and trainer.update_count == 1
    for net in (played, trainer.policy):
        with torch.no_grad():
            params, value, _ = net(obs, net.initial_state(len(obs), "cpu"), None)
        torch.testing.assert_close(params, torch.tensor(expected[name]["params"]))
        torch.testing.assert_close(value, torch.tensor(expected[name]["value"]))
    trainer.rollout()
    assert trainer.update()["update"] == 2.0  # Adam's state fit the renamed parameters
    trainer.close()
