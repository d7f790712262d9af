"""Checkpoints: the one puffer checkpoint format, atomic writes, clear errors, a rotating directory.

A checkpoint is a dict written with ``torch.save`` and read with ``weights_only=True``::

    {"format": "puffer.checkpoint", "version": 1,
     "trainer": Trainer.state_dict(),
     "meta": {"global_step", "update_count", "device", "env": {num_envs, num_workers, backend, ...},
              "policy_class", "puffer_version", "torch_version", optionally "config": {...}}}

``Trainer.save(path, meta=...)`` writes one, ``Trainer.load(path)`` resumes from one,
``load(path)`` reads one (and upgrades the two formats puffer wrote before version 1, and the
parameter names of the MLP/LSTM policies before the policy package), and
``policy_state(ckpt)`` gives the policy's ``state_dict`` for eval and export.

Only tensors, numpy arrays and scalars of numeric/bool dtypes and plain Python values are
unpickled, so a checkpoint cannot run code (store RNG states as lists/ints, not tuples).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointDir",
    "CheckpointError",
    "atomic_write",
    "load",
    "make",
    "policy_state",
    "save",
]

FORMAT = "puffer.checkpoint"
VERSION = 1
_LEGACY_TRAINER_FORMAT = "puffer.ppo.Trainer/1"  # before version 1: Trainer.save / run loop


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not a checkpoint, or does not fit the trainer."""


def make(trainer_state: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict for ``trainer_state`` (``Trainer.state_dict()``) and ``meta``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "trainer": trainer_state,
        "meta": dict(meta or {}),
    }


def policy_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The policy's ``state_dict`` in a checkpoint ``load`` returned."""
    return ckpt["trainer"]["policy"]


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, binary: bool = True
) -> Path:
    """Create or replace ``path`` atomically: ``write(f)`` fills a temp file in the same
    directory, which is fsynced and renamed over ``path``.

    A crash, signal or exception during the write leaves the previous file at ``path`` untouched
    and no temp file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the checkpoint ``ckpt`` (from ``make``) to ``path`` atomically (``atomic_write``):
    the previous file survives a failed write. Raises ``ValueError`` for a dict that is not one."""
    import torch

    if ckpt.get("format") != FORMAT or "trainer" not in ckpt:
        raise ValueError(
            f"save: not a {FORMAT} dict (format={ckpt.get('format')!r}): build it with "
            "puffer.checkpoint.make(trainer.state_dict(), meta) or use Trainer.save"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(ckpt, f))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _numpy_globals() -> list[Any]:
    """What unpickling numpy arrays and scalars needs: reconstructors and the numeric dtypes."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [
        type(np.dtype(t)) for t in (*np.sctypeDict.values(), bool) if np.dtype(t).kind in "biufc"
    ]
    return [
        core.multiarray._reconstruct,
        core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *set(dtypes),
    ]


_SAFE_GLOBALS = _numpy_globals()


def read(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """The object ``torch.save`` wrote to ``path``, unpickled safely (see the module docstring);
    raises ``CheckpointError`` naming the file when it is missing or unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        size = path.stat().st_size
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is unreadable: truncated, corrupted or not a puffer "
            f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint (tensors on ``map_location``); raises ``CheckpointError`` naming the
    file when it is missing, unreadable, not a puffer checkpoint, or of a newer version."""
    obj = read(path, map_location)
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict"
        )
    if obj.get("format") != FORMAT:
        obj = _upgrade(obj, path)
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise CheckpointError(
            f"checkpoint {path} is {FORMAT} version {obj.get('version')!r}; this puffer reads "
            f"versions <= {VERSION}: upgrade puffer"
        )
    trainer = obj.get("trainer")
    if not isinstance(trainer, dict) or not isinstance(trainer.get("policy"), dict):
        raise CheckpointError(f"checkpoint {path} has no trainer/policy entry")
    if trainer.get("policy_class") in ("MLP", "LSTM"):  # puffer's own: older names upgraded
        trainer["policy"] = _upgrade_policy_names(trainer["policy"])
    obj.setdefault("meta", {})
    return obj


def _upgrade(obj: dict[str, Any], path: Any) -> dict[str, Any]:
    """A version-1 checkpoint from the formats before it: the run loop's ``{"trainer": state,
    "config": ..., ...}`` and ``Trainer.save``'s bare state, both with the old trainer state."""
    if obj.get("format") == _LEGACY_TRAINER_FORMAT:
        obj = {"trainer": obj}
    trainer = obj.get("trainer")
    if not isinstance(trainer, dict) or trainer.get("format") != _LEGACY_TRAINER_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a puffer checkpoint (format={obj.get('format')!r})"
        )
    trainer = dict(trainer)
    del trainer["format"]
    trainer["update_count"] = trainer.pop("epoch")
    trainer["optimizers"] = [_upgrade_adam(s) for s in trainer["optimizers"]]
    meta = {"global_step": trainer["global_step"], "update_count": trainer["update_count"]}
    if isinstance(obj.get("config"), dict):
        meta["config"] = obj["config"]
    return make(trainer, meta)


def _upgrade_adam(state: dict[str, Any]) -> dict[str, Any]:
    """``torch.optim.Adam``'s state dict from the hand-written Adam's (puffer < version 1)."""
    if "exp_avgs" not in state:
        return state  # Muon's: already torch's
    import torch

    group = dict(state["param_groups"][0])
    group.update(
        betas=tuple(group["betas"]),
        weight_decay=0.0,
        amsgrad=False,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=True,  # as puffer.ppo.optimizers builds it
        decoupled_weight_decay=False,
        params=list(range(len(state["exp_avgs"]))),
    )
    step = torch.tensor(float(state["steps"]))
    per_param = {
        i: {"step": step.clone(), "exp_avg": m, "exp_avg_sq": v}
        for i, (m, v) in enumerate(zip(state["exp_avgs"], state["exp_avg_sqs"]))
    }
    return {"state": per_param if state["steps"] else {}, "param_groups": [group]}


# Before the policy package (encoders, cores, heads), puffer's MLP and LSTM policies held the MLP
# trunk as an nn.Sequential named ``encoder`` and the LSTM cell as ``cell``; since then they are
# ``encoder.net`` and ``core.cell``. Shapes, parameter order (so Adam's state) and formulas are
# unchanged (tests/test_checkpoint.py plays a checkpoint the old code wrote).
_POLICY_RENAMES = (
    (re.compile(r"^encoder\.(\d+)\."), r"encoder.net.\1."),
    (re.compile(r"^cell\."), "core.cell."),
)


def _upgrade_policy_names(state: dict[str, Any]) -> dict[str, Any]:
    """An old MLP/LSTM policy ``state_dict`` under today's parameter names (order kept)."""
    renamed = {}
    for key, value in state.items():
        for old, new in _POLICY_RENAMES:
            key = old.sub(new, key)
        renamed[key] = value
    return renamed


class CheckpointDir:
    """A directory of ``model_<step>.pt`` files keeping the newest ``keep`` and a ``latest`` pointer.

    ``latest`` is a small text file naming the newest complete checkpoint, replaced atomically after
    that checkpoint is on disk, so it never points at a partial file.
    """

    PATTERN = re.compile(r"^model_(\d+)\.pt$")

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep}: must keep at least one checkpoint")
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        """Where the checkpoint for env step ``step`` goes: ``<directory>/model_<step>.pt``."""
        return self.directory / f"model_{step:012d}.pt"

    def save(self, ckpt: dict[str, Any], step: int) -> Path:
        """Write ``ckpt`` (``make``'s dict) for ``step`` and ``commit`` it; returns its path.
        (``commit(trainer.save(ckpdir.path(step), meta=...))`` does the same from a trainer.)"""
        return self.commit(save(ckpt, self.path(step)))

    def commit(self, path: Path) -> Path:
        """Point ``latest`` at the complete checkpoint ``path``; delete the oldest beyond ``keep``."""
        atomic_write(self.directory / "latest", lambda f: f.write(path.name + "\n"), binary=False)
        for old in self.all()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def all(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if self.PATTERN.match(p.name)]
        return sorted(found, key=lambda p: int(self.PATTERN.match(p.name)[1]))  # type: ignore[index]

    def latest(self) -> Path | None:
        """The newest checkpoint: the one ``latest`` names, else the highest step; None if none."""
        pointer = self.directory / "latest"
        if pointer.is_file():
            named = self.directory / pointer.read_text().strip()
            if named.is_file():
                return named
        files = self.all()
        return files[-1] if files else None
