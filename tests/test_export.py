"""Export: ONNX (run by onnxruntime) and TorchScript files of real trained runs give the policy's
own actions and values on the same observations; MLP, LSTM (state as explicit inputs/outputs)
and a Box action space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from puffer import export

_RUNS: dict[str, Path] = {}
SETTINGS = {
    "mlp": ["env=cartpole", "policy=mlp"],
    "lstm": ["env=cartpole", "policy=lstm"],
    "box": ["env=gymnasium", "env.id=Pendulum-v1", "policy=mlp"],
}


@pytest.fixture
def trained(tmp_path_factory, helpers):
    """``trained(kind)``: a real tiny training run of that kind (made once per module)."""

    def get(kind: str) -> Path:
        if kind not in _RUNS:
            base = tmp_path_factory.mktemp(kind)
            args = [*SETTINGS[kind], *helpers.TINY, "logger=none"]
            done = helpers.run_module("puffer.train", *args, cwd=base)
            assert done.returncode == 0, done.stderr
            _RUNS[kind] = next(p.parent for p in base.glob("outputs/*/*/.hydra"))
        return _RUNS[kind]

    return get


def _play(run_dir: Path, policy, fmt: str, path: Path, steps: int = 40) -> int:
    """Play the run's env with the policy; at every step the exported file, fed the same
    observations (and state), gives the same actions and values. Returns the steps compared."""
    from puffer import build

    _, _, cfg = export.load_policy(run_dir)
    vecenv = build.make_vecenv(cfg, num_envs=4, backend="serial")
    inputs, _ = export.io_names(policy.is_recurrent)
    exported = export.load_exported(path, fmt, inputs)
    try:
        obs, _ = vecenv.reset(7)
        state = policy.initial_state(4, torch.device("cpu"))
        for _ in range(steps):
            with torch.no_grad():
                _, value, _ = policy(torch.as_tensor(obs), state)
            actions, next_state = policy.predict(obs, state, deterministic=True)
            feed = (obs, *(s.numpy() for s in state)) if state is not None else (obs,)
            got = exported(feed)
            if actions.dtype.kind == "f":  # Box: the clipped Gaussian mean
                np.testing.assert_allclose(got[0], actions, atol=1e-5)
            else:
                np.testing.assert_array_equal(got[0], actions)
            np.testing.assert_allclose(got[1], value.numpy(), atol=1e-5)
            if state is not None:
                np.testing.assert_allclose(got[2], next_state[0].numpy(), atol=1e-5)
                np.testing.assert_allclose(got[3], next_state[1].numpy(), atol=1e-5)
            obs, _, term, trunc, _ = vecenv.step(actions)
            state = policy.reset_state(next_state, term | trunc)
    finally:
        vecenv.close()
    return steps


@pytest.mark.parametrize("kind", ["mlp", "lstm", "box"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_policy_matches_the_policy(trained, tmp_path, helpers, kind, fmt):
    run_dir = trained(kind)
    out = tmp_path / f"policy.{fmt}"
    proc = helpers.run_module(
        "puffer.export", f"run={run_dir}", f"format={fmt}", f"out={out}", cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(export.descriptor(out).read_text())
    assert export.descriptor(out).name == out.name + ".json"
    assert info["recurrent"] is (kind == "lstm")
    assert info["inputs"] == (["obs", "h", "c"] if kind == "lstm" else ["obs"])
    policy, _, _ = export.load_policy(run_dir)
    assert _play(run_dir, policy, fmt, out) == 40


def test_puffer_export_cli_writes_into_the_run_dir(trained, helpers, tmp_path):
    run_dir = trained("mlp")
    proc = helpers.run_module(
        "puffer", "export", str(run_dir), "--format", "onnx", cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "export" / "policy.onnx").is_file()
    assert "checked against the policy" in proc.stdout
    again = helpers.run_module(
        "puffer", "export", str(run_dir), "--format", "torchscript", cwd=tmp_path, timeout=300
    )
    assert again.returncode == 0, again.stderr
    for name in ("policy.onnx", "policy.pt"):  # each export keeps its own descriptor
        info = json.loads((run_dir / "export" / f"{name}.json").read_text())
        assert info["file"] == name, info


def test_bad_format_and_run_are_named(trained, helpers):
    run_dir = trained("mlp")
    bad = helpers.run_module("puffer.export", f"run={run_dir}", "format=tflite", cwd=run_dir)
    assert bad.returncode == 2 and "format=tflite" in bad.stderr and "onnx" in bad.stderr
    missing = helpers.run_module("puffer.export", "run=no/such/run", "format=onnx", cwd=run_dir)
    assert missing.returncode == 2 and "no/such/run" in missing.stderr
