"""A ``Trainer``'s state and checkpoints: what ``Trainer.state_dict``/``load_state_dict``/``save``/
``load`` do.

On the same machine and config a resume is bit-exact: weights, optimizer moments, counters, reward
and observation statistics, every random stream, the env's state and the in-flight rollout (the
batch awaiting actions and the policy state of every row) are restored.

A run may also move: a checkpoint from another device (CUDA <-> CPU) loads with its tensors mapped
to this one and the sampling generator reseeded (a CUDA generator's state does not fit a CPU one);
an env state that does not fit this VecEnv (another num_workers, row count or batch size, e.g. on
a machine with another CPU count) is dropped and the rollout starts fresh episodes. Either way one
warning says what changed and that the continuation is not bit-exact.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from puffer import checkpoint

if TYPE_CHECKING:
    from puffer.ppo.trainer import Trainer

__all__ = ["env_layout", "load", "load_state_dict", "run_meta", "save", "state_dict"]

LAYOUT_KEYS = ("num_envs", "num_workers", "batch_size")  # an env state fits only the same ones


def env_layout(trainer: Trainer) -> dict[str, Any]:
    """The VecEnv's layout as a checkpoint records it."""
    env = trainer.vecenv
    return {
        "backend": type(env).__name__,
        "num_envs": trainer.num_envs,
        "num_workers": getattr(env, "num_workers", None),
        "batch_size": getattr(env, "batch_size", trainer.num_envs),
        "cpu_count": os.cpu_count(),
    }


def run_meta(trainer: Trainer) -> dict[str, Any]:
    """What a checkpoint says about the run besides its state: counters, device, env layout."""
    import puffer

    return {
        "global_step": trainer.global_step,
        "update_count": trainer.update_count,
        "device": trainer.device.type,
        "env": env_layout(trainer),
        "policy_class": type(trainer.policy).__name__,
        "puffer_version": puffer.__version__,
        "torch_version": str(torch.__version__),
    }


def save(
    trainer: Trainer, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``trainer``'s checkpoint (``puffer.checkpoint``'s format) atomically to ``path``;
    ``meta`` entries (such as ``{"config": ...}``) are added to ``run_meta``'s. Returns the path."""
    ckpt = checkpoint.make(state_dict(trainer), {**run_meta(trainer), **(meta or {})})
    return checkpoint.save(ckpt, path)


def load(trainer: Trainer, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Resume ``trainer`` from any puffer checkpoint at ``path`` and return it; raises
    ``puffer.checkpoint.CheckpointError`` naming the file when it cannot be read or does not fit."""
    ckpt = checkpoint.load(path)
    try:
        load_state_dict(trainer, ckpt["trainer"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise checkpoint.CheckpointError(
            f"checkpoint {path} does not fit this trainer: {detail}"
        ) from None
    return ckpt


def state_dict(trainer: Trainer) -> dict[str, Any]:
    """Everything for a bit-exact resume, as plain tensors, lists and numbers."""
    env_state = None
    if callable(getattr(trainer.vecenv, "state", None)):
        with contextlib.suppress(NotImplementedError):
            env_state = trainer.vecenv.state()
    obs, env_ids, starts = trainer.pending
    rollout = {
        "state": None if trainer.state is None else [s.cpu().clone() for s in trainer.state],
        "pending": {
            "observations": obs.detach().cpu().clone(),
            "env_ids": torch.tensor(env_ids, dtype=torch.int64),
            "starts": torch.from_numpy(starts.copy()),
        },
        "recent": trainer.episodes.state_dict(),
        "async": None if trainer.async_batches is None else trainer.async_batches.state_dict(),
    }
    return {
        "policy_class": type(trainer.policy).__name__,
        "policy": trainer.policy.state_dict(),
        "optimizers": [opt.state_dict() for opt in trainer.optimizers],
        "global_step": trainer.global_step,
        "update_count": trainer.update_count,
        "device": trainer.device.type,
        "reward_norm": None if trainer.reward_norm is None else trainer.reward_norm.state_dict(),
        "rng": {
            "generator": trainer.generator.get_state(),
            "shuffle_generator": trainer.shuffle_generator.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": _numpy_rng_state(),
        },
        "env": env_state,
        "env_layout": env_layout(trainer),
        "rollout": rollout,
    }


def load_state_dict(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore ``state_dict``'s output (see the module docstring); ``ValueError`` naming what
    does not fit (the policy class or its shapes, the optimizer count)."""
    _load_learned(trainer, state)
    changed = _load_rng(trainer, state["rng"], state.get("device", "cpu"))
    trainer.episodes.load_state_dict(state["rollout"]["recent"])
    trainer._collected = False
    env_change = _load_env(trainer, state.get("env"), state.get("env_layout"))
    if env_change is None:
        _load_rollout(trainer, state["rollout"])
    else:
        changed.append(env_change)
        trainer.start_episodes(trainer.seed + trainer.update_count)
    if changed:
        warnings.warn(
            f"resumed at global_step={trainer.global_step} with {'; '.join(changed)}: the "
            "continuation is not bit-exact",
            stacklevel=3,
        )


def _load_learned(trainer: Trainer, state: dict[str, Any]) -> None:
    """Weights, optimizer states, counters and reward-norm statistics."""
    policy = trainer.policy
    if state["policy_class"] != type(policy).__name__:
        raise ValueError(
            f"the checkpoint holds a {state['policy_class']} policy, this trainer has a "
            f"{type(policy).__name__}: set policy.name to match"
        )
    try:
        policy.load_state_dict(state["policy"])
    except RuntimeError as e:
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
        raise ValueError(
            f"the policy's weights do not fit ({detail or e}): build the policy with the "
            "checkpoint's policy config and env"
        ) from None
    if len(state["optimizers"]) != len(trainer.optimizers):
        raise ValueError(
            f"the checkpoint has {len(state['optimizers'])} optimizer(s), this trainer "
            f"{len(trainer.optimizers)}: set ppo.optimizer as in the checkpoint's run"
        )
    for opt, opt_state in zip(trainer.optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)  # moves the moments to the parameters' device
    trainer.global_step = int(state["global_step"])
    trainer.update_count = int(state["update_count"])
    if trainer.reward_norm is not None and state["reward_norm"] is not None:
        trainer.reward_norm.load_state_dict(state["reward_norm"])


def _load_rng(trainer: Trainer, rng: dict[str, Any], device_type: str) -> list[str]:
    """Restore the random streams; the sampling generator, saved on another device type, is
    reseeded instead. Returns what changed, for the warning."""
    changed = []
    try:
        trainer.generator.set_state(rng["generator"].cpu())  # generator states live on the CPU
        if device_type != trainer.device.type:
            raise RuntimeError("another device's stream")
    except RuntimeError:  # a CUDA generator's state is 16 bytes, a CPU one's 5056
        trainer.generator.manual_seed(trainer.seed + trainer.update_count)
        changed.append(f"device {device_type} -> {trainer.device.type} (sampling reseeded)")
    trainer.shuffle_generator.set_state(rng["shuffle_generator"].cpu())
    torch.set_rng_state(rng["torch"].cpu())
    _set_numpy_rng_state(rng["numpy"])
    return changed


def _load_env(trainer: Trainer, env_state: Any, layout: dict[str, Any] | None) -> str | None:
    """Restore the VecEnv's state; None when it was, else why not (for the warning)."""
    if env_state is None:  # e.g. a PettingZoo env: its state() raises NotImplementedError
        return "fresh episodes (the env cannot save its state)"
    here = env_layout(trainer)
    diff = [f"{k} {layout[k]} -> {here[k]}" for k in LAYOUT_KEYS if layout and layout[k] != here[k]]
    if not diff:
        try:
            trainer.vecenv.load_state(env_state)
            return None
        except (NotImplementedError, ValueError) as e:
            diff = [str(e).splitlines()[0]]
    return f"fresh episodes (env layout changed: {', '.join(diff)})"


def _load_rollout(trainer: Trainer, rollout: dict[str, Any]) -> None:
    """The in-flight rollout saved with an env state that was restored."""
    device = trainer.device
    saved = rollout["state"]
    trainer.state = None if saved is None else tuple(s.to(device) for s in saved)
    pending = rollout["pending"]
    trainer.pending = (
        pending["observations"].to(device),
        pending["env_ids"].cpu().numpy(),
        pending["starts"].cpu().numpy().copy(),
    )
    if trainer.async_batches is not None and rollout.get("async") is not None:
        trainer.async_batches.load_state_dict(rollout["async"])


def _numpy_rng_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]


def _set_numpy_rng_state(state: list[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
