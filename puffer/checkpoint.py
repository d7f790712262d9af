"""Checkpoint files: atomic writes, clear errors on unreadable files, a rotating directory.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True``: tensors,
numpy arrays and scalars of numeric/bool dtypes, and plain Python values (store RNG states as
lists/ints, not tuples). Nothing else is unpickled, so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["CheckpointDir", "CheckpointError", "atomic_write", "load", "save"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not a checkpoint, or does not fit the model."""


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


def save(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` to ``path`` atomically (``atomic_write``): the previous file survives a
    failed write."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(obj, f))


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


def load(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save``; raises ``CheckpointError`` naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        size = path.stat().st_size
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is unreadable: truncated, corrupted or not a puffer "
            f"checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict"
        )
    if obj.get("format") != "puffer.checkpoint":  # the run loop's or Trainer.save's older files
        trainer = obj.get("trainer", obj)
        if isinstance(trainer, dict) and "policy" in trainer:
            obj = make(trainer, {"global_step": trainer.get("global_step", 0)})
    return obj


FORMAT, VERSION = "puffer.checkpoint", 1


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

    def save(self, obj: dict[str, Any], step: int) -> Path:
        """Write the checkpoint for ``step``, point ``latest`` at it, delete the oldest beyond ``keep``."""
        return self.commit(save(obj, self.path(step)))

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
