"""The worker process of ``puffer.vector.Multiprocessing`` and the shared memory it writes into.

One shared block holds every ``Buffers`` array of all rows, a control row per worker (command,
status, size of the pickled infos, reset seed) and an infos area per worker. The main process
writes actions and a command, then posts the worker's ``go`` semaphore; the worker steps its
block env in place, writes its status and posts ``done`` (and ``any_done`` in async mode).
Anything larger or rarer (errors, state, render, infos that overflow their area) follows over the
worker's pipe, always *after* the ``done`` post, so a full pipe can never deadlock the two sides.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from puffer._blocks import step_in_place
from puffer.env import Buffers

# Columns of a worker's control row (int64; one 64-byte cache line per worker).
CMD, STATUS, INFO, SEED = 0, 1, 2, 3
# Commands.
STEP, RESET, CALL, CLOSE = 1, 2, 3, 4
# Statuses. UNSUPPORTED: a called method raised NotImplementedError (e.g. an env without state());
# the env is intact, the reply is the message.
BUSY, OK, ERROR, UNSUPPORTED = 0, 1, 2, 3

_ALIGN = 64
_IDLE_CHECK = 0.5  # seconds between checks that the parent is alive while idle
# Seconds to try-acquire a semaphore before blocking on it. Blocking lets an idle virtual CPU halt,
# and waking it costs ~20 us; a short spin catches quick answers (benchmarks/vector_signalling.py).
SPIN = 5e-6


def spin(sem: Any, seconds: float = SPIN) -> bool:
    """Try to acquire ``sem`` without blocking for up to ``seconds``; whether it was."""
    if sem.acquire(False):
        return True
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if sem.acquire(False):
            return True
    return False


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


@dataclass
class Shared:
    """A shared-memory block and where each array lives in it; picklable to spawned workers."""

    raw: Any  # a multiprocessing RawArray of bytes
    shift: int  # bytes from the block's start to the first 64-byte boundary
    layout: dict[str, tuple[int, tuple[int, ...], str]]  # name -> (offset, shape, dtype)

    @classmethod
    def allocate(
        cls,
        ctx: Any,
        specs: dict[str, tuple[tuple[int, ...], Any]],
        num_workers: int,
        rows_per_worker: int,
    ) -> Shared:
        """A zeroed block for the ``Buffers`` ``specs`` plus control rows and infos areas."""
        info_bytes = _aligned(4096 + 64 * rows_per_worker)
        entries = {
            **specs,
            "ctrl": ((num_workers, 8), np.dtype(np.int64)),
            "info": ((num_workers, info_bytes), np.dtype(np.uint8)),
        }
        layout, offset = {}, 0
        for name, (shape, dtype) in entries.items():
            dtype = np.dtype(dtype)
            layout[name] = (offset, tuple(shape), dtype.str)
            offset += _aligned(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        raw = ctx.RawArray(ctypes.c_uint8, offset + _ALIGN)
        return cls(raw, (-ctypes.addressof(raw)) % _ALIGN, layout)

    def array(self, name: str) -> np.ndarray:
        offset, shape, dtype = self.layout[name]
        dt = np.dtype(dtype)
        start = self.shift + offset
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        return np.frombuffer(self.raw, np.uint8)[start : start + size].view(dt).reshape(shape)

    def buffers(self) -> Buffers:
        """Views of the ``Buffers`` arrays of all rows."""
        return Buffers(**{f.name: self.array(f.name) for f in fields(Buffers)})

    def ctrl(self) -> np.ndarray:
        """Control rows, ``(num_workers, 8)`` int64: ``CMD``, ``STATUS``, ``INFO``, ``SEED``."""
        return self.array("ctrl")

    def info(self) -> np.ndarray:
        """``(num_workers, info_bytes)`` uint8: each worker's pickled ``Infos`` of its last step."""
        return self.array("info")


@dataclass
class WorkerArgs:
    """Everything a worker needs; passed as the process's only argument."""

    index: int
    lo: int
    hi: int
    seed: int
    recipe: Any  # puffer._blocks.Recipe
    shared: Shared
    go: Any  # semaphores
    done: Any
    any_done: Any | None
    conn: Any  # this worker's end of a duplex Pipe
    parent_pid: int | None  # the process that started us (None under forkserver)
    pdeathsig: bool  # ask Linux to kill us when the parent dies


def _die_with_parent() -> None:
    """Linux: receive SIGKILL when the parent process dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _error(e: BaseException) -> tuple[str, str, str]:
    return type(e).__name__, str(e), "".join(traceback.format_exception(e))


def main(a: WorkerArgs) -> None:
    """The worker loop: wait for a command, run it on the block env, report."""
    # Ctrl-C and a group-wide SIGTERM (`timeout`, systemd, SLURM) are the main process's to
    # handle: it checkpoints, then closes this worker. A worker whose parent dies gets SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.pdeathsig:
        _die_with_parent()
    ppid = os.getppid()
    if a.parent_pid is not None and ppid != a.parent_pid:
        return  # the parent died while we started
    # Under forkserver our parent is the server, which outlives the main process while we hold
    # its pipe: the main process's sentinel (EOF when it dies) tells instead.
    parent = multiprocessing.parent_process()
    ctrl = a.shared.ctrl()[a.index]
    info = memoryview(a.shared.info()[a.index])

    def post(status: int) -> None:
        ctrl[STATUS] = status
        a.done.release()
        if a.any_done is not None:
            a.any_done.release()

    env = None
    try:
        env = a.recipe.build(a.lo, a.hi, a.seed, a.shared.buffers()[a.lo : a.hi])
        ctrl[INFO] = 0
        post(OK)
    except BaseException as e:
        ctrl[INFO] = 0
        post(ERROR)
        a.conn.send(_error(e))
    try:
        while True:
            while not spin(a.go) and not a.go.acquire(timeout=_IDLE_CHECK):
                if os.getppid() != ppid or (parent is not None and not parent.is_alive()):
                    return  # orphaned: the main process died
            cmd = int(ctrl[CMD])
            if cmd == CLOSE:
                return
            reply: bytes | None = None
            blob = b""  # the pickled Infos, if any
            try:
                if env is None:
                    raise RuntimeError("the env failed to build")
                if cmd == STEP:
                    infos = step_in_place(env)
                elif cmd == RESET:
                    seed = int(ctrl[SEED])
                    infos = env.reset(None if seed < 0 else seed)[1]
                elif cmd == CALL:
                    method, args = a.conn.recv()
                    infos = {}
                    reply = pickle.dumps(getattr(env, method)(*args), protocol=5)
                else:
                    raise RuntimeError(f"unknown command {cmd}")
                if infos:
                    blob = pickle.dumps(infos, protocol=5)
                status = OK
            except NotImplementedError as e:
                if cmd != CALL:
                    status, reply, blob = ERROR, pickle.dumps(_error(e)), b""
                else:
                    status, reply, blob = UNSUPPORTED, pickle.dumps(str(e)), b""
            except BaseException as e:
                status, reply, blob = ERROR, pickle.dumps(_error(e)), b""
            overflow = len(blob) > len(info)
            if overflow:
                ctrl[INFO] = -1
            else:
                info[: len(blob)] = blob
                ctrl[INFO] = len(blob)
            post(status)
            if overflow:
                a.conn.send_bytes(blob)
            if reply is not None:
                a.conn.send_bytes(reply)
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
