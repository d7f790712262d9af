"""Vectorization: many envs as one ``VecEnv``, stepped in this process or in worker processes.

``make(env_creator, num_envs, backend=...)`` builds either backend. Both split the ``num_envs`` rows
into ``num_workers`` contiguous blocks of ``num_envs // num_workers`` rows; each block is one *block
env* (a ``VecEnv`` over those rows, writing straight into views of the vectorizer's buffers):

- a built-in env name: one native env with all the block's rows (numpy over rows: the fast path);
- a creator returning a native ``VecEnv`` of ``k`` rows: ``rows // k`` of them side by side;
- a creator returning a one-agent ``PufferEnv`` or a ``gymnasium.Env``: one env per row.

``Serial`` steps the blocks in turn in this process; ``Multiprocessing`` steps each block in its
own process over shared memory. With the same ``seed`` and ``num_workers`` both produce the same
trajectories. Seeds come from ``numpy.random.SeedSequence`` (``puffer.seeding``): a one-agent env
in row ``i`` is reset with ``row_seed(seed, i)``, and a native env over rows ``lo..hi`` draws from
one generator seeded ``row_seed(seed, lo)``; runs with seeds ``s`` and ``s + 1`` share no stream.
"""

from __future__ import annotations

import collections
import contextlib
import operator
import os
import pickle
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer import _worker
from puffer._blocks import Recipe, as_one_agent, check_vec, merge_infos, step_in_place
from puffer.checks import positive_int
from puffer.env import _CLOSED, _READY, Buffers, EnvClosedError, Infos, PufferEnv, VecEnv
from puffer.spaces import Space

__all__ = [
    "BACKENDS",
    "Multiprocessing",
    "Serial",
    "VectorConfig",
    "WorkerError",
    "check_worker_options",
    "layout",
    "make",
    "rows_per_env",
]

BACKENDS = ("serial", "multiprocessing")


class WorkerError(RuntimeError):
    """A worker process raised an exception or died.

    ``worker`` is the worker's index, ``exc_type`` the name of the exception it raised (None if it
    died), ``exitcode`` its exit code if it died (negative: killed by that signal) and
    ``worker_traceback`` the traceback text from the worker process.
    """

    def __init__(
        self,
        message: str,
        worker: int,
        exc_type: str | None = None,
        exitcode: int | None = None,
        worker_traceback: str = "",
    ):
        super().__init__(message)
        self.worker = worker
        self.exc_type = exc_type
        self.exitcode = exitcode
        self.worker_traceback = worker_traceback

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. back from a joblib sweep job
        return type(self), (
            self.args[0],
            self.worker,
            self.exc_type,
            self.exitcode,
            self.worker_traceback,
        )


class _Unsupported(NotImplementedError):
    """A worker's env does not support a called method (``state()`` of an env that cannot save
    its state): every worker answered and the env stays usable, as with ``Serial``."""


# --- planning: probe the creator, check the configuration -----------------------------------------


@dataclass
class _Plan:
    recipe: Recipe
    observation_space: Space
    action_space: Space
    original_observation_space: Space
    num_envs: int
    num_workers: int
    batch_size: int
    seed: int
    blocks: list[tuple[int, int]] = field(default_factory=list)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_worker_options(start_method: str | None, timeout: float) -> None:
    """Raise ``ValueError`` for a start method this platform lacks or a ``timeout`` not > 0 s."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(
            f"start_method={start_method!r}: use one of {', '.join(methods)} (or null/None for "
            "the platform's default)"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r}: must be a positive number of seconds")


@dataclass
class VectorConfig:
    """How env rows are stepped (the ``vector`` config group): ``num_envs`` rows, in this process
    or in worker processes. The fields are ``make``'s arguments."""

    backend: str = "serial"  # "serial" | "multiprocessing"
    num_envs: int = 8
    num_workers: int | None = None  # multiprocessing: worker processes (None = CPU cores)
    batch_size: int | None = None  # rows per asynchronous batch (None = all rows)
    # multiprocessing only:
    oversubscribe: bool = False  # allow more workers than CPU cores
    timeout: float = 60.0  # seconds a worker may take to answer before TimeoutError
    start_method: str | None = None  # fork | spawn | forkserver (None: fork on Linux)

    def validate(self, rows_per_env: int | None = 1, ranks: int = 1) -> None:
        """Raise ``ValueError`` naming ``vector.<key>`` and the fix, before any worker starts.

        Checks the backend, the split of rows into whole envs of ``rows_per_env`` rows (their
        agents), workers and batches (``layout``; skipped when ``rows_per_env`` is None: a custom
        creator may return several rows per call, which ``make`` learns by calling it) and, for
        multiprocessing, the worker options. Under torch.distributed each of the ``ranks`` steps
        ``num_envs / ranks`` rows with these workers and batches: that share is checked.
        """
        rows = self.num_envs // ranks if ranks > 1 and self.num_envs % ranks == 0 else self.num_envs
        try:
            if self.backend not in BACKENDS:
                raise ValueError(f"backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
            parallel = self.backend == "multiprocessing"
            if rows_per_env is not None:
                nums = (rows, self.num_workers, self.batch_size)
                layout(
                    *nums,
                    parallel=parallel,
                    oversubscribe=self.oversubscribe,
                    rows_per_env=rows_per_env,
                )
            if parallel:
                check_worker_options(self.start_method, self.timeout)
        except ValueError as e:
            share = f" (each of {ranks} ranks steps {rows} of the {self.num_envs} rows)"
            raise ValueError(f"vector.{e}{share if rows != self.num_envs else ''}.") from None


def _is_seed(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 0


def _probe(
    env_creator: Any, env_kwargs: dict[str, Any]
) -> tuple[Recipe, VecEnv | PufferEnv, Space]:
    """Build one env in this process: its recipe, the env (the caller closes it), original space."""
    if isinstance(env_creator, str):
        import puffer.envs

        try:
            puffer.envs.spec(env_creator)
        except KeyError as e:
            raise ValueError(
                f"{e.args[0]}. For a gymnasium env pass a callable, e.g. "
                f"make(lambda: gymnasium.make({env_creator!r}), ...)"
            ) from None
        rows = puffer.envs.spec(env_creator).rows_per_env(**env_kwargs)
        env = puffer.envs.make(env_creator, num_envs=rows, **env_kwargs)
        recipe = Recipe(env_creator, env_kwargs, "native", rows)
        return recipe, env, env.original_observation_space
    if not callable(env_creator):
        raise TypeError(
            f"env_creator={env_creator!r}: expected a built-in env name (one of "
            "puffer.envs.names()) or a callable returning a PufferEnv, gymnasium.Env or VecEnv"
        )
    obj = env_creator(**env_kwargs)
    try:
        if isinstance(obj, VecEnv):
            check_vec(obj, obj.num_envs)
            return (
                Recipe(env_creator, env_kwargs, "vec", obj.num_envs),
                obj,
                obj.original_observation_space,
            )
        env, original = as_one_agent(obj)
    except BaseException:
        if callable(getattr(obj, "close", None)):
            with contextlib.suppress(Exception):
                obj.close()
        raise
    return Recipe(env_creator, env_kwargs, "one", 1), env, original


def rows_per_env(env_creator: Any, env_kwargs: dict[str, Any] | None = None) -> int:
    """Rows one env of ``env_creator`` takes: its agents (1 for a one-agent env). A built-in env's
    registry answers; any other creator is called once and its env closed. Raises as ``make``."""
    env_kwargs = dict(env_kwargs or {})
    if isinstance(env_creator, str):
        import puffer.envs

        with contextlib.suppress(KeyError):  # an unknown name: _probe's error below
            return puffer.envs.spec(env_creator).rows_per_env(**env_kwargs)
    recipe, probe, _ = _probe(env_creator, env_kwargs)
    probe.close()
    return recipe.rows_per_env


def layout(
    num_envs: int,
    num_workers: int | None = None,
    batch_size: int | None = None,
    *,
    parallel: bool,
    oversubscribe: bool = False,
    rows_per_env: int = 1,
) -> tuple[int, int]:
    """``(num_workers, batch_size)`` for a split of ``num_envs`` rows, defaults filled in.

    ``rows_per_env`` is how many rows one ``env_creator()`` call gives. Raises ``ValueError``
    naming the values to change when the rows do not split into whole workers and batches, or when
    ``parallel`` workers would outnumber the CPU cores without ``oversubscribe``.
    """
    num_envs = positive_int("num_envs", num_envs)
    if num_workers is not None:
        num_workers = positive_int("num_workers", num_workers)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    k = rows_per_env
    if num_envs % k:
        up = k * (num_envs // k + 1)
        fits = f"{up - k} or {up}" if num_envs > k else str(up)
        raise ValueError(
            f"num_envs={num_envs} is not a multiple of the {k} rows each env_creator() call "
            f"returns (one row per agent): use num_envs={fits}"
        )
    units = num_envs // k  # creator calls (or rows of a built-in env)
    cores = _cores()
    if num_workers is None:
        limit = min(cores, units) if parallel else 1
        num_workers = max(w for w in range(1, limit + 1) if units % w == 0)
    if units % num_workers:
        choices = [w for w in range(1, units + 1) if units % w == 0][:12]
        what = f"num_envs={num_envs}" if k == 1 else f"num_envs={num_envs} ({units} envs of {k})"
        raise ValueError(
            f"{what} is not divisible by num_workers={num_workers}: change num_workers to one "
            f"of {choices} or num_envs to a multiple of {num_workers * k}"
        )
    if parallel and num_workers > cores and not oversubscribe:
        raise ValueError(
            f"num_workers={num_workers} is more than the {cores} CPU cores available: use "
            f"num_workers<={cores}, or allow more workers than cores with oversubscribe=True "
            "(vector.oversubscribe=true on the command line)"
        )
    rows = num_envs // num_workers
    if batch_size is None:
        batch_size = num_envs
    if batch_size % rows or num_envs % batch_size:
        fits = [b for b in range(rows, num_envs + 1, rows) if num_envs % b == 0]
        raise ValueError(
            f"batch_size={batch_size} does not fit: a batch is whole workers of "
            f"num_envs/num_workers={rows} rows and must divide num_envs={num_envs}; use "
            f"batch_size in {fits[:12]} (or None for all rows), or change num_workers"
        )
    return num_workers, batch_size


def _plan(
    env_creator: Any,
    num_envs: int,
    num_workers: int | None,
    batch_size: int | None,
    seed: int,
    env_kwargs: dict[str, Any] | None,
    *,
    parallel: bool,
    oversubscribe: bool = False,
) -> _Plan:
    """Check the configuration and probe the creator; raises before any worker starts."""
    num_envs = positive_int("num_envs", num_envs)
    if not _is_seed(seed):
        raise ValueError(f"seed={seed!r}: must be a non-negative integer")
    if env_kwargs is None:
        env_kwargs = {}
    if not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs={env_kwargs!r}: must be a dict of keyword arguments")

    recipe, probe, original = _probe(env_creator, dict(env_kwargs))
    try:
        if isinstance(probe, VecEnv):
            obs_space, act_space = probe.single_observation_space, probe.single_action_space
        else:
            obs_space, act_space = probe.observation_space, probe.action_space
        Buffers.specs(obs_space, act_space, 1)  # raises for spaces a buffer cannot hold
    finally:
        probe.close()

    num_workers, batch_size = layout(
        num_envs,
        num_workers,
        batch_size,
        parallel=parallel,
        oversubscribe=oversubscribe,
        rows_per_env=recipe.rows_per_env,
    )
    rows = num_envs // num_workers
    blocks = [(w * rows, (w + 1) * rows) for w in range(num_workers)]
    return _Plan(
        recipe, obs_space, act_space, original, num_envs, num_workers, batch_size, int(seed), blocks
    )


# --- the shared part of both backends -------------------------------------------------------------


class _Blocks(VecEnv):
    """Rows split into blocks (one per worker); batches are whole blocks."""

    def __init__(self, plan: _Plan, buffers: Buffers | None = None):
        super().__init__(plan.observation_space, plan.action_space, plan.num_envs, buffers)
        self.original_observation_space = plan.original_observation_space
        self.num_workers = plan.num_workers
        self.rows_per_worker = plan.num_envs // plan.num_workers
        self.batch_size = plan.batch_size
        self.batch_workers = plan.batch_size // self.rows_per_worker
        self.blocks = plan.blocks
        self.recipe = plan.recipe
        self.seed = plan.seed
        self._seeded = False  # the first reset without a seed uses make(seed=...)
        self._batch: list[int] | None = None  # workers of the last recv, awaiting send
        if self.batch_size < self.num_envs:
            self._staging = Buffers.allocate(
                self.single_observation_space, self.single_action_space, self.batch_size
            )

    def _reset_seed(self, seed: int | None) -> int | None:
        if seed is None and not self._seeded:
            seed = self.seed
        if seed is not None:
            if not _is_seed(seed):
                raise ValueError(f"reset(seed={seed!r}): seed must be a non-negative int or None")
            seed = int(seed)
        self._seeded = True
        return seed

    def send(self, actions: Any) -> None:
        """Act in the rows of the last ``recv()`` batch; bad actions raise before any is sent."""
        self._check_ready("send")
        if self._batch is None:
            raise RuntimeError(
                f"{type(self).__name__}.send() without a recv() before it: alternate recv() and "
                "send() (step() does both)"
            )
        batch = self._batch
        self._write_actions(batch, actions)  # raises before any worker steps: batch still waits
        self._batch = None
        for w in batch:
            self._start_step(w)

    def _start_step(self, w: int) -> None:
        """Step worker ``w``'s block on the actions written for it."""
        raise NotImplementedError

    def _write_actions(self, batch: list[int], actions: Any) -> None:
        actions = self.check_actions(actions, self.batch_size)
        if len(batch) == self.num_workers:
            if actions is not self.actions:
                self.actions[...] = actions
            return
        rows = self.rows_per_worker
        for j, w in enumerate(batch):
            lo = self.blocks[w][0]
            self.actions[lo : lo + rows] = actions[j * rows : (j + 1) * rows]

    def _result(
        self, batch: list[int], infos: Infos
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray]:
        self._batch = batch
        b = self.buffers
        if len(batch) == self.num_workers:
            return b.observations, b.rewards, b.terminals, b.truncations, infos, self.env_ids
        lo, hi = self.blocks[batch[0]][0], self.blocks[batch[-1]][1]
        if hi - lo == self.batch_size:  # contiguous workers: views
            r = slice(lo, hi)
            ids = self.env_ids[r]
            return b.observations[r], b.rewards[r], b.terminals[r], b.truncations[r], infos, ids
        env_ids = np.concatenate([self.env_ids[slice(*self.blocks[w])] for w in batch])
        s = self._staging
        for name in ("observations", "rewards", "terminals", "truncations"):
            np.take(getattr(b, name), env_ids, axis=0, out=getattr(s, name))
        return s.observations, s.rewards, s.terminals, s.truncations, infos, env_ids

    def _check_sync(self, method: str) -> None:
        self._check_not_closed(method)
        if self.batch_size != self.num_envs:  # NotImplementedError: callers may skip env state
            raise NotImplementedError(
                f"{type(self).__name__}.{method}() needs synchronous stepping (batch_size=None); "
                f"this env runs batches of {self.batch_size} of {self.num_envs} rows"
            )

    def _state_check(self, method: str) -> None:
        self._check_sync(method)
        if self._phase == _READY and self._batch is None:
            raise RuntimeError(
                f"{type(self).__name__}.{method}() between send() and recv(): call recv() first"
            )

    def _wrap_state(self, workers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "num_envs": self.num_envs, "workers": workers}

    def _unwrap_state(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        self._check_sync("load_state")
        got = (state.get("num_envs"), state.get("num_workers"))
        if got != (self.num_envs, self.num_workers):
            raise ValueError(
                f"load_state: the state is of num_envs={got[0]} with num_workers={got[1]}; this "
                f"env has num_envs={self.num_envs}, num_workers={self.num_workers}: make the env "
                "with the same values"
            )
        parts = state.get("workers")
        if not isinstance(parts, (list, tuple)) or len(parts) != self.num_workers:
            raise ValueError(
                f"load_state: the state's 'workers' should be a list of {self.num_workers} worker "
                f"states, got {type(parts).__name__} of length {len(parts or ())}"
            )
        return list(parts)

    def _render_row(self, row: int) -> tuple[int, int]:
        """``(worker, row in its block)`` to render env row ``row`` (negative: from the end)."""
        self._check_not_closed("render")
        row = operator.index(row)
        if not -self.num_envs <= row < self.num_envs:
            raise IndexError(
                f"{type(self).__name__}.render(row={row}): out of range for {self.num_envs} rows"
            )
        return divmod(row % self.num_envs, self.rows_per_worker)

    def _loaded(self) -> None:
        self._phase = _READY
        self._seeded = True
        self._batch = list(range(self.num_workers))

    def __repr__(self) -> str:
        batch = f", batch_size={self.batch_size}" if self.batch_size < self.num_envs else ""
        return (
            f"{type(self).__name__}(num_envs={self.num_envs}, num_workers={self.num_workers}"
            f"{batch}, obs={self.single_observation_space!r}, act={self.single_action_space!r})"
        )


# --- Serial ---------------------------------------------------------------------------------------


class Serial(_Blocks):
    """All blocks in this process, stepped in turn; see the module docstring.

    With ``batch_size < num_envs``, ``recv()`` hands out blocks in a fixed round-robin order
    (blocks ``0..b-1``, then the next ``b``, ...), stepping a block when its actions are sent.
    """

    def __init__(
        self,
        env_creator: str | Callable[..., Any],
        num_envs: int,
        num_workers: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
    ):
        plan = _plan(
            env_creator, num_envs, num_workers, batch_size, seed, env_kwargs, parallel=False
        )
        self.envs: list[VecEnv] = []
        super().__init__(plan)
        try:
            for lo, hi in plan.blocks:
                self.envs.append(plan.recipe.build(lo, hi, plan.seed, self.buffers[lo:hi]))
        except BaseException:
            self._close()
            raise
        self._queue: collections.deque[int] = collections.deque()
        self._infos: list[Infos] = [{} for _ in self.envs]

    def async_reset(self, seed: int | None = None) -> None:
        self._check_not_closed("reset")
        seed = self._reset_seed(seed)
        for w, env in enumerate(self.envs):
            self._infos[w] = env.reset(self.recipe.block_seed(seed, self.blocks[w][0]))[1]
        self._queue = collections.deque(range(self.num_workers))
        self._batch = None
        self._phase = _READY

    def _start_step(self, w: int) -> None:
        self._infos[w] = step_in_place(self.envs[w])
        self._queue.append(w)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray]:
        self._check_ready("recv")
        if self._batch is not None or len(self._queue) < self.batch_workers:
            raise RuntimeError(f"{type(self).__name__}.recv() called without send() or reset()")
        batch = sorted(self._queue.popleft() for _ in range(self.batch_workers))
        return self._result(batch, merge_infos([self._infos[w] for w in batch]))

    def state(self) -> dict[str, Any]:
        self._state_check("state")
        return self._wrap_state([env.state() for env in self.envs])

    def load_state(self, state: dict[str, Any]) -> None:
        for env, s in zip(self.envs, self._unwrap_state(state)):
            env.load_state(s)
        self._queue.clear()
        self._loaded()

    def render(self, row: int = 0) -> Any:
        w, r = self._render_row(row)
        return self.envs[w].render(r)

    def _close(self) -> None:
        for env in self.envs:
            env.close()


# --- Multiprocessing ------------------------------------------------------------------------------

_POLL = 0.1  # seconds between liveness checks while blocked on a worker
_GRACE = 1.0  # seconds a worker gets to close its envs before it is killed


def _close_at_exit(ref: weakref.ref[Multiprocessing]) -> None:
    env = ref()
    if env is not None:
        env.close()


class Multiprocessing(_Blocks):
    """Each block in its own worker process, all writing into one shared-memory block.

    A step writes the actions into shared memory and posts each worker's semaphore; the workers
    step their envs in place and post back. Nothing is pickled on this path but the ``Infos`` of
    steps where episodes ended (pickled into shared memory). Waiting tries the semaphore for a few
    microseconds, then blocks on it (measurements in docs/vector.md).

    With ``batch_size < num_envs`` it runs EnvPool-style: ``recv()`` waits for ``batch_size``
    rows' worth of workers, preferring those that finished first, and returns them with their
    ``env_ids``; ``send(actions)`` starts those workers again at once, so they simulate while the
    caller computes the next actions. Every ``num_envs // batch_size`` calls to ``recv()`` form a
    round in which each worker is returned exactly once.

    Failures never hang: an exception in a worker raises ``WorkerError`` (with the exception's
    type name, the worker index and its traceback); a worker that dies raises ``WorkerError`` with
    its exit code; one that does not answer within ``timeout`` seconds raises ``TimeoutError``.
    After any of these the env is closed. Workers exit by themselves if this process dies.
    """

    def __init__(
        self,
        env_creator: str | Callable[..., Any],
        num_envs: int,
        num_workers: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        env_kwargs: dict[str, Any] | None = None,
        *,
        start_method: str | None = None,
        timeout: float = 60.0,
        oversubscribe: bool = False,
    ):
        import multiprocessing
        import multiprocessing.util

        self._procs: list[Any] = []
        self._owner = os.getpid()  # only this process may stop the workers
        check_worker_options(start_method, timeout)
        plan = _plan(
            env_creator,
            num_envs,
            num_workers,
            batch_size,
            seed,
            env_kwargs,
            parallel=True,
            oversubscribe=oversubscribe,
        )
        if start_method is None and sys.platform.startswith("linux"):
            start_method = "fork"  # Python 3.14 made forkserver the default; fork starts fastest
        ctx = multiprocessing.get_context(start_method)
        self.start_method = ctx.get_start_method()
        if self.start_method != "fork":
            try:
                pickle.dumps(plan.recipe)
            except Exception as e:
                raise ValueError(
                    f"start_method={self.start_method!r} sends env_creator and env_kwargs to the "
                    f"workers by pickling, which failed ({type(e).__name__}: {e}); define the "
                    "creator at module level (not a lambda or closure), or use start_method='fork'"
                ) from e
        self.timeout = float(timeout)
        self._async = plan.batch_size < plan.num_envs
        specs = Buffers.specs(plan.observation_space, plan.action_space, plan.num_envs)
        rows = plan.num_envs // plan.num_workers
        self._shared = _worker.Shared.allocate(ctx, specs, plan.num_workers, rows)
        super().__init__(plan, self._shared.buffers())
        self.masks[:] = True  # one-agent rows always count; multi-agent block envs write theirs
        self._ctrl = self._shared.ctrl()
        self._info = self._shared.info()
        self._go = [ctx.Semaphore(0) for _ in plan.blocks]
        self._done = [ctx.Semaphore(0) for _ in plan.blocks]
        self._any = ctx.Semaphore(0)  # one post per finished command, in async mode
        self._debt = 0  # posts of _any taken while waiting, not yet matched to a finished worker
        self._busy = [False] * plan.num_workers  # sent a command, result not yet taken
        self._handed = [False] * plan.num_workers  # returned by recv in this round
        self._killed: set[int] = set()
        self._doing = [""] * plan.num_workers  # the command each worker runs, for messages
        self._failure: str | None = None
        self._conns = []
        pdeathsig = threading.current_thread() is threading.main_thread()
        # At exit, multiprocessing SIGTERMs daemon processes and joins them; the workers ignore
        # SIGTERM, so an env still open then must be closed first (finalizers of priority >= 0 run
        # before that join). A weak reference: the env may still be garbage-collected before.
        multiprocessing.util.Finalize(self, _close_at_exit, (weakref.ref(self),), exitpriority=10)
        try:
            for w, (lo, hi) in enumerate(plan.blocks):
                here, there = ctx.Pipe()
                self._conns.append(here)
                args = _worker.WorkerArgs(
                    index=w,
                    lo=lo,
                    hi=hi,
                    seed=plan.seed,
                    recipe=plan.recipe,
                    shared=self._shared,
                    go=self._go[w],
                    done=self._done[w],
                    any_done=self._any if self._async else None,
                    conn=there,
                    parent_pid=os.getpid() if self.start_method != "forkserver" else None,
                    pdeathsig=pdeathsig,
                )
                proc = ctx.Process(
                    target=_worker.main, args=(args,), name=f"puffer-worker-{w}", daemon=True
                )
                try:
                    proc.start()
                finally:
                    there.close()
                self._procs.append(proc)
                self._busy[w] = True
                self._doing[w] = "start (env_creator)"
            deadline = time.monotonic() + self.timeout
            for w in range(self.num_workers):
                self._finish(w, deadline)
        except BaseException:
            self._close()
            raise

    # -- the hot path ---------------------------------------------------------------------------

    def async_reset(self, seed: int | None = None) -> None:
        self._check_not_closed("reset")
        seed = self._reset_seed(seed)
        self._guarded(self._drain)
        for w in range(self.num_workers):
            block_seed = self.recipe.block_seed(seed, self.blocks[w][0])
            self._ctrl[w, _worker.SEED] = -1 if block_seed is None else block_seed
            self._command(w, _worker.RESET, "reset")
        self._handed = [False] * self.num_workers
        self._batch = None
        self._phase = _READY

    def _start_step(self, w: int) -> None:
        self._command(w, _worker.STEP, "step")

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray]:
        self._check_ready("recv")
        if self._batch is not None or sum(self._busy) < self.batch_workers:
            raise RuntimeError(f"{type(self).__name__}.recv() called without send() or reset()")
        return self._guarded(self._recv)

    def _recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray]:
        deadline = time.monotonic() + self.timeout
        if not self._async:
            infos = [self._finish(w, deadline) for w in range(self.num_workers)]
            return self._result(list(range(self.num_workers)), merge_infos(infos))
        batch = self._first_finished(deadline)
        infos = [self._finish(w, deadline, acquired=True) for w in batch]
        for w in batch:
            self._handed[w] = True
        if all(self._handed):
            self._handed = [False] * self.num_workers
        return self._result(batch, merge_infos(infos))

    def _first_finished(self, deadline: float) -> list[int]:
        """Wait for ``batch_workers`` of the workers not yet returned this round; lowest first."""
        eligible = [w for w in range(self.num_workers) if not self._handed[w]]
        taken: list[int] = []
        spin_until = time.perf_counter() + _worker.SPIN
        while True:
            for w in eligible:
                if w not in taken and self._done[w].acquire(False):
                    self._match_any(w, deadline)
                    taken.append(w)
                    if len(taken) == self.batch_workers:
                        return sorted(taken)
            if time.perf_counter() < spin_until:
                continue
            if self._any.acquire(timeout=_POLL):
                self._debt += 1  # some worker finished; the scan above finds which
            else:
                for w in eligible:
                    if w not in taken:
                        self._check_alive(w, deadline)

    def _match_any(self, w: int, deadline: float) -> None:
        """Account for the ``_any`` post of a finished worker whose ``_done`` was just taken."""
        if self._debt:
            self._debt -= 1
        elif not _worker.spin(self._any):
            while not self._any.acquire(timeout=_POLL):
                self._check_alive(w, deadline)

    def _command(self, w: int, cmd: int, what: str) -> None:
        self._doing[w] = what
        self._ctrl[w, _worker.STATUS] = _worker.BUSY
        self._ctrl[w, _worker.CMD] = cmd
        self._busy[w] = True
        self._go[w].release()

    def _finish(self, w: int, deadline: float, acquired: bool = False) -> Infos:
        """Wait for worker ``w``'s result; return its ``Infos`` or raise its failure."""
        if not acquired:
            if not _worker.spin(self._done[w]):
                while not self._done[w].acquire(timeout=_POLL):
                    self._check_alive(w, deadline)
            if self._async:
                self._match_any(w, deadline)
        self._busy[w] = False
        ctrl = self._ctrl[w]
        if ctrl[_worker.STATUS] == _worker.ERROR:
            exc_type, message, tb = self._receive(w, deadline)
            raise WorkerError(
                f"{self._name(w)} raised {exc_type} during {self._doing[w]}: {message}\n"
                f"--- worker {w} traceback ---\n{tb}",
                worker=w,
                exc_type=exc_type,
                worker_traceback=tb,
            )
        n = int(ctrl[_worker.INFO])
        if n == 0:
            return {}
        if n > 0:
            return pickle.loads(self._info[w, :n])
        return self._receive(w, deadline)  # too large for the infos area: sent by pipe

    def _receive(self, w: int, deadline: float) -> Any:
        """The next message from worker ``w``'s pipe (sent after it posted ``_done``)."""
        conn = self._conns[w]
        while not conn.poll(_POLL):
            self._check_alive(w, deadline)
        try:
            return conn.recv()
        except (EOFError, OSError):
            self._procs[w].join(1.0)
            self._check_alive(w, deadline)
            raise

    def _check_alive(self, w: int, deadline: float) -> None:
        code = self._procs[w].exitcode
        name = self._name(w)
        if code is not None:
            if code < 0:
                try:
                    sig = signal.Signals(-code).name
                except ValueError:  # e.g. a real-time signal
                    sig = f"signal {-code}"
                how = f"was killed by {sig} (exit code {code})"
                if -code == signal.SIGKILL:
                    how += "; the out-of-memory killer sends SIGKILL (see dmesg)"
            else:
                how = f"exited with exit code {code}"
            raise WorkerError(f"{name} {how} during {self._doing[w]}", worker=w, exitcode=code)
        if time.monotonic() > deadline:
            self._killed.add(w)
            raise TimeoutError(
                f"{name} did not finish {self._doing[w]} within timeout={self.timeout:g} s: it "
                "may be stuck (deadlock, endless loop). If steps are this slow on purpose, raise "
                "the timeout (make(..., timeout=...); vector.timeout=... on the command line)"
            )

    def _name(self, w: int) -> str:
        lo, hi = self.blocks[w]
        return f"{type(self).__name__} worker {w} (pid {self._procs[w].pid}, rows {lo}..{hi - 1})"

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; on any failure (or Ctrl-C) close the env so that it never hangs later."""
        try:
            return fn()
        except _Unsupported:
            raise
        except BaseException as e:
            self._failure = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.close()
            raise

    def _drain(self) -> None:
        """Wait for every busy worker and drop its result (before a reset)."""
        deadline = time.monotonic() + self.timeout
        for w in range(self.num_workers):
            if self._busy[w]:
                self._finish(w, deadline)

    # -- state, render: one request/reply per worker over its pipe --------------------------------

    def _call(
        self, method: str, args: list[tuple[Any, ...]], workers: list[int] | None = None
    ) -> list[Any]:
        """``method(*args[j])`` on the block env of each worker ``workers[j]``; their returns."""
        workers = list(range(self.num_workers)) if workers is None else workers
        for w, a in zip(workers, args, strict=True):
            self._command(w, _worker.CALL, f"{method}()")
            self._conns[w].send((method, a))
        deadline = time.monotonic() + self.timeout
        out, unsupported = [], None
        for w in workers:
            self._finish(w, deadline)
            out.append(self._receive(w, deadline))
            if self._ctrl[w, _worker.STATUS] == _worker.UNSUPPORTED:
                unsupported = out[-1]
        if unsupported is not None:  # every worker answered: the env stays usable
            raise _Unsupported(unsupported)
        return out

    def state(self) -> dict[str, Any]:
        self._state_check("state")
        return self._wrap_state(self._guarded(lambda: self._call("state", [()] * self.num_workers)))

    def load_state(self, state: dict[str, Any]) -> None:
        parts = self._unwrap_state(state)
        self._guarded(self._drain)
        self._guarded(lambda: self._call("load_state", [(s,) for s in parts]))
        self._handed = [False] * self.num_workers
        self._loaded()

    def render(self, row: int = 0) -> Any:
        w, r = self._render_row(row)
        if any(self._busy):
            raise RuntimeError(
                f"{type(self).__name__}.render() while workers are stepping (between send() and "
                "recv(), or in asynchronous mode): render from a synchronous env"
            )
        return self._guarded(lambda: self._call("render", [(r,)], workers=[w])[0])

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_not_closed(self, method: str) -> None:
        if self._phase == _CLOSED and self._failure:
            raise EnvClosedError(
                f"{type(self).__name__}.{method}(): the env was closed after a worker failure "
                f"({self._failure}); create a new env"
            )
        super()._check_not_closed(method)

    def _check_ready(self, method: str) -> None:
        self._check_not_closed(method)
        super()._check_ready(method)

    def _close(self) -> None:
        """Ask every worker to close its envs, kill those that do not exit in time, reap all."""
        procs = self.__dict__.get("_procs", [])
        if self.__dict__.get("_owner") != os.getpid():
            procs = []  # a copy in a forked child: the workers belong to the process that made us
        for w, proc in enumerate(procs):
            if w in self._killed or proc.exitcode is not None:
                proc.kill()
            else:
                self._ctrl[w, _worker.CMD] = _worker.CLOSE
                self._go[w].release()
        end = time.monotonic() + _GRACE
        for proc in procs:
            proc.join(max(0.0, end - time.monotonic()))
        for proc in procs:
            if proc.exitcode is None:
                proc.kill()
                proc.join(5.0)
        for conn in self.__dict__.get("_conns", []):
            conn.close()
        if procs:
            self._procs = []
        # Drop the semaphores: under spawn and forkserver each is a file in /dev/shm until freed.
        self._go, self._done, self._any = [], [], None


# --- make -----------------------------------------------------------------------------------------


def make(
    env_creator: str | Callable[..., Any],
    num_envs: int,
    backend: str | type[VecEnv] = "serial",
    num_workers: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> VecEnv:
    """A ``VecEnv`` of ``num_envs`` rows of ``env_creator``.

    Args:
        env_creator: a built-in env name (see ``puffer.envs.names()``), or a callable
            ``creator(**env_kwargs)`` returning a one-agent ``PufferEnv``, a ``gymnasium.Env``, or
            a native ``VecEnv`` of ``k`` rows (then called ``num_envs // k`` times). One-agent envs
            get ``EpisodeStats`` (``infos`` carry ``episode_return``/``episode_length``) and
            Dict/Tuple observations are flattened (``original_observation_space`` keeps the
            original space).
        num_envs: rows (env copies) stepped together.
        backend: ``"serial"`` (this process) or ``"multiprocessing"`` (worker processes).
        num_workers: blocks of rows; ``num_envs`` must divide evenly. Default: 1 for serial, the
            number of CPU cores (or the largest divisor of the envs below it) for multiprocessing.
        batch_size: rows per ``recv()`` for asynchronous stepping (whole workers; must divide
            ``num_envs``); default ``None``: all rows, synchronous ``step()``.
        seed: the run's seed, used at the first ``reset()`` without a seed: env row ``i`` is reset
            with ``puffer.seeding.row_seed(seed, i)`` (a native block over rows ``lo..hi`` with
            ``row_seed(seed, lo)``). A distributed rank passes ``puffer.seeding.rank_seed(seed,
            rank)``.
        env_kwargs: keyword arguments for every ``env_creator`` call.
        **kwargs: for ``"multiprocessing"``: ``start_method`` (``"fork"``, ``"spawn"``,
            ``"forkserver"``; default ``"fork"`` on Linux, else the platform's), ``timeout``
            (seconds a worker may take to answer, default 60), ``oversubscribe`` (allow more
            workers than cores).

    Raises ``ValueError`` naming the values to change, before any worker starts, for a bad
    configuration.
    """
    classes: dict[str, type[_Blocks]] = {"serial": Serial, "multiprocessing": Multiprocessing}
    if isinstance(backend, str):
        if backend.lower() not in classes:
            raise ValueError(f"backend={backend!r}: use one of {list(classes)}")
        cls = classes[backend.lower()]
    elif isinstance(backend, type) and issubclass(backend, _Blocks):
        cls = backend
    else:
        raise ValueError(f"backend={backend!r}: use one of {list(classes)}")
    if cls is Serial and kwargs:
        raise TypeError(
            f"make(backend='serial') got multiprocessing-only arguments {sorted(kwargs)}; "
            "use backend='multiprocessing' or drop them"
        )
    return cls(env_creator, num_envs, num_workers, batch_size, seed, env_kwargs, **kwargs)
