"""``python -m puffer.export run=<dir> format=onnx|torchscript [checkpoint=...] [out=...]``.

Writes a trained run's policy as a deployable file that needs neither puffer nor the env:

- inputs: ``obs`` ``(B, *obs_shape)`` in the observation space's dtype (uint8 images stay uint8),
  and for a recurrent policy its state ``h``, ``c`` ``(B, hidden)`` float32 (zeros at an episode's
  start: feed each step's ``h_out``/``c_out`` back, and zero the rows whose episode ended);
- outputs: ``action`` ``(B, *action_shape)`` in the env's form (Discrete offsets added, Box actions
  clipped to the bounds), the greedy (deterministic) action; ``value`` ``(B,)``; and ``h_out``,
  ``c_out`` for a recurrent policy.

ONNX uses torch's ``torch.export``-based exporter (needs ``onnxscript``) and is checked with
onnxruntime right after writing; TorchScript is ``torch.jit.trace`` of the same module. Next to the
file, ``<file>.json`` (e.g. ``policy.onnx.json``) describes the inputs and outputs. The batch dimension is dynamic.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "add_export_parser",
    "deployable",
    "export_arguments",
    "export_command",
    "export_policy",
    "export_run",
    "main",
]

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
USAGE = """usage: python -m puffer.export run=<run dir> format=onnx|torchscript [checkpoint=<file or name>]
                            [out=<file>]

Writes the run's policy (its latest checkpoint, or the one named) as a deployable file, by default
<run dir>/export/policy.onnx (or policy.pt), and <file>.json describing its inputs and outputs.
"""


def deployable(policy: nn.Module) -> nn.Module:
    """``policy`` as a pure function: ``(obs[, h, c]) -> (action, value[, h_out, c_out])``.

    The action is the head's most likely action (``head.mode``) mapped to the env's form in torch,
    so it equals ``policy.predict(obs, state, deterministic=True)``.
    """
    return _deployable_classes()[bool(policy.is_recurrent)](policy).eval()


@functools.cache
def _deployable_classes() -> tuple[type, type]:
    # Defined on first use: the ``puffer`` CLI imports this module without paying for torch.
    # Two classes with fixed signatures: torch.export maps named inputs, not ``*args``.
    from torch import nn

    class Deployable(nn.Module):
        def __init__(self, policy: nn.Module):
            super().__init__()
            self.policy = policy.eval()

        def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            params, value, _ = self.policy(obs, None)
            return env_action(self.policy.head, self.policy.head.mode(params)), value

    class RecurrentDeployable(Deployable):
        def forward(  # type: ignore[override]
            self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            params, value, (h_out, c_out) = self.policy(obs, (h, c))
            action = env_action(self.policy.head, self.policy.head.mode(params))
            return action, value, h_out, c_out

    return Deployable, RecurrentDeployable


def env_action(head: nn.Module, action: torch.Tensor) -> torch.Tensor:
    """``head.to_env`` in torch (traceable): offsets added, Box actions clipped and reshaped."""
    import torch

    start = getattr(head, "start", 0)
    if start:  # Discrete(n, start)
        action = action + int(start)
    low, high = getattr(head, "low", None), getattr(head, "high", None)
    shape = getattr(head, "shape", None)
    if action.is_floating_point() and low is not None and high is not None:  # Gaussian (Box)
        action = action.reshape(-1, *shape)
        lo = torch.as_tensor(np.asarray(low, dtype=np.float32), device=action.device)
        hi = torch.as_tensor(np.asarray(high, dtype=np.float32), device=action.device)
        return torch.maximum(torch.minimum(action, hi), lo)
    if low is not None and shape is not None:  # MultiDiscrete-like Box of integers
        offset = torch.as_tensor(np.asarray(low, dtype=np.int64), device=action.device)
        return (action + offset).reshape(-1, *shape)
    return action


def _example(policy: nn.Module, batch: int = 2) -> tuple[torch.Tensor, ...]:
    import torch

    space = policy.observation_space
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(batch)]))
    state = policy.initial_state(batch, torch.device("cpu")) if policy.is_recurrent else None
    return (obs, *(state or ()))


def io_names(recurrent: bool) -> tuple[list[str], list[str]]:
    """The exported module's input and output names."""
    if recurrent:
        return ["obs", "h", "c"], ["action", "value", "h_out", "c_out"]
    return ["obs"], ["action", "value"]


def export_policy(policy: nn.Module, path: str | Path, fmt: str) -> Path:
    """Write ``policy`` (on CPU) as ``fmt`` (``onnx`` or ``torchscript``) to ``path``, check that
    the written file reproduces the policy's actions and values, and write ``<path>.json``.

    Raises ``ValueError`` for an unknown format and ``RuntimeError`` if the check fails.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = deployable(policy.cpu())
    example = _example(policy)
    inputs, outputs = io_names(bool(policy.is_recurrent))
    tmp = path.with_name(path.name + ".tmp")
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _to_onnx(module, example, tmp, inputs, outputs)
            else:
                torch.jit.trace(module, example).save(str(tmp))
            check_export(module, tmp, fmt, inputs)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # only a checked file takes the final name
    _describe(path, policy, fmt, inputs, outputs)
    return path


def _to_onnx(module: nn.Module, example: tuple, path: Path, inputs: list, outputs: list) -> None:
    import contextlib
    import io
    import logging

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in example)
    # The exporter prints its progress: keep it off the command's own output.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            module,
            example,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


def load_exported(
    path: Path, fmt: str, inputs: list[str]
) -> Callable[[tuple[np.ndarray, ...]], list[np.ndarray]]:
    """A function from numpy inputs (in ``inputs`` order) to the numpy outputs of the exported
    file: an onnxruntime session for ONNX, a ``torch.jit`` module otherwise, loaded once."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda args: session.run(None, dict(zip(inputs, args)))
    import torch

    loaded = torch.jit.load(str(path))

    def run(args: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in loaded(*(torch.as_tensor(a) for a in args))]

    return run


def check_export(module: nn.Module, path: Path, fmt: str, inputs: list[str]) -> None:
    """Raise ``RuntimeError`` unless the file at ``path`` gives ``module``'s outputs on a batch
    of sampled observations (actions equal; values and states within 1e-4)."""
    import torch

    args = tuple(a.numpy() for a in _example(module.policy, batch=5))
    with torch.no_grad():
        want = [o.numpy() for o in module(*(torch.as_tensor(a) for a in args))]
    got = load_exported(path, fmt, inputs)(args)
    for name, g, w in zip(io_names(len(inputs) > 1)[1], got, want):
        same = np.array_equal(g, w) if w.dtype.kind in "iub" else np.allclose(g, w, atol=1e-4)
        if g.shape != w.shape or not same:
            raise RuntimeError(
                f"the exported {fmt} model does not reproduce the policy's {name} "
                f"(shape {g.shape} vs {w.shape}); nothing was written"
            )


def _describe(path: Path, policy: nn.Module, fmt: str, inputs: list, outputs: list) -> None:
    space = policy.observation_space
    info = {
        "format": fmt,
        "file": path.name,
        "inputs": inputs,
        "outputs": outputs,
        "obs_shape": [int(s) for s in space.shape],
        "obs_dtype": str(np.dtype(space.dtype)),
        "recurrent": bool(policy.is_recurrent),
        "state_size": int(policy.hidden_size) if policy.is_recurrent else None,
        "action_space": repr(policy.action_space),
        "action": "greedy (deterministic) action in the env's form",
    }
    descriptor(path).write_text(json.dumps(info, indent=1) + "\n")


def descriptor(path: Path) -> Path:
    """The JSON file that describes the exported ``path``: ``<file>.json`` beside it (one per
    exported file, so an ONNX and a TorchScript export of one run keep their own)."""
    return path.with_name(path.name + ".json")


# -- from a run directory ---------------------------------------------------------------------------


def load_policy(
    run_dir: str | Path, checkpoint: str | None = None, cfg: Any = None
) -> tuple[Any, Path, Any]:
    """``(policy, checkpoint path, config)``: the run's policy (built from ``cfg``, by default the
    run's own ``.hydra/config.yaml``) with the weights of ``checkpoint`` (a file or a name in
    ``<run>/checkpoints``; default the latest), on CPU, in eval mode.

    Raises ``ConfigError`` if ``run_dir`` is not a run, ``CheckpointError`` naming the file if the
    checkpoint is missing or does not fit the policy.
    """
    from omegaconf import OmegaConf

    from puffer import build
    from puffer import checkpoint as ckpt
    from puffer.eval import _checkpoint_path, _load_policy

    run_dir = Path(run_dir)
    if cfg is None:
        cfg = build.reload(run_dir, OmegaConf.create())  # the run's own config, nothing on top
    path = _checkpoint_path(run_dir, checkpoint)
    saved = ckpt.load(path)
    vecenv = build.make_vecenv(cfg, num_envs=build.rows_per_env(cfg), backend="serial")  # one env
    try:
        policy = build.make_policy(cfg, vecenv)
    finally:
        vecenv.close()
    _load_policy(policy, saved, path)
    return policy.cpu().eval(), path, cfg


def export_run(
    run_dir: str | Path,
    fmt: str,
    *,
    checkpoint: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Export a run's policy; the file goes to ``out`` or ``<run>/export/policy.<ext>``."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    policy, _, _ = load_policy(run_dir, checkpoint)
    target = Path(out) if out else Path(run_dir) / "export" / f"policy{FORMATS[fmt]}"
    return export_policy(policy, target, fmt)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m puffer.export``; returns the exit code."""
    from puffer import checkpoint as ckpt
    from puffer.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    options = {}
    for a in argv:
        key = a.split("=", 1)[0]
        if "=" not in a or key not in ("run", "format", "checkpoint", "out"):
            print(f"puffer.export: error: {a!r}: expected key=value with key run, format, "
                  f"checkpoint or out\n\n{USAGE}", file=sys.stderr)  # fmt: skip
            return 2
        options[key] = a.split("=", 1)[1]
    if "run" not in options:
        print(f"puffer.export: error: run=<run dir> is required\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        path = export_run(
            options["run"],
            options.get("format", "onnx"),
            checkpoint=options.get("checkpoint"),
            out=options.get("out"),
        )
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"puffer.export: error: {e}", file=sys.stderr)
        return 2
    except (ckpt.CheckpointError, RuntimeError) as e:
        print(f"puffer.export: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} (and {descriptor(path).name}); checked against the policy")
    return 0


def export_arguments(p: Any) -> None:
    """The ``puffer export`` arguments, on the argparse parser ``p``."""
    p.add_argument("run", help="a run directory")
    p.add_argument("--format", default="onnx", choices=list(FORMATS), help="default onnx")
    p.add_argument("--checkpoint", help="a checkpoint file or name (default: the latest)")
    p.add_argument("--out", help="output file (default RUN/export/policy.onnx or .pt)")


def add_export_parser(sub: Any) -> None:
    """``puffer export RUN --format onnx``: register the subcommand on the CLI's subparsers."""
    p = sub.add_parser("export", help="write a run's policy as ONNX or TorchScript")
    export_arguments(p)
    p.set_defaults(func=export_command)


def export_command(args: Any, extra: list[str] | None = None) -> int:
    """Run ``puffer export`` with parsed ``args``; returns the exit code."""
    extra = getattr(args, "overrides", None) or extra
    argv = [f"run={args.run}", f"format={args.format}"]
    if args.checkpoint:
        argv.append(f"checkpoint={args.checkpoint}")
    if args.out:
        argv.append(f"out={args.out}")
    if extra:
        print(f"puffer export: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
