"""Multiprocessing failures, injected for real: each is reported quickly and nothing is left running."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import psutil
import pytest

import puffer.vector as V
from puffer.env import EnvClosedError, PufferEnv, StepResult
from puffer.seeding import row_seed
from puffer.spaces import Box, Discrete

pytestmark = pytest.mark.usefixtures("no_leftover_workers")

# Generous bounds on the time to report a failure (the issue asks for well under a second; the
# measured times are milliseconds). Loaded CI machines make tighter bounds flaky.
REPORT_BOUND = 5.0


class Faulty(PufferEnv):
    """Misbehaves in row ``target`` of a run reset with seed 0 (the env reset with
    ``row_seed(0, target)``): raises, sleeps or exits."""

    observation_space = Box(-1.0, 1.0, (2,))
    action_space = Discrete(2)

    def __init__(self, target: int = -1, when: str = "step", how: str = "raise", after: int = 3):
        self.target, self.when, self.how, self.after = target, when, how, after
        self.me = None

    def _misbehave(self, when: str) -> None:
        if self.target < 0 or self.me != row_seed(0, self.target) or self.when != when:
            return
        if self.how == "raise":
            raise ZeroDivisionError(f"injected failure in {when}")
        if self.how == "sleep":
            time.sleep(60)
        if self.how == "exit":
            os._exit(3)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        if self.me is None:
            self.me = seed
        self.t = 0
        self._misbehave("reset")
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> StepResult:
        self.t += 1
        if self.t >= self.after:
            self._misbehave("step")
        return StepResult(np.zeros(2, np.float32), 1.0, False, self.t >= 50, {})


def fails_in_workers() -> Faulty:
    """A creator that works in the main process (the probe) and raises in every worker."""
    if multiprocessing.parent_process() is not None:
        raise KeyError("no such asset in the worker")
    return Faulty()


def worker_pids(env: V.Multiprocessing) -> list[int]:
    return [p.pid for p in env._procs]


def assert_reaped(pids: list[int]) -> None:
    for pid in pids:
        assert not alive(pid), f"worker pid {pid} is still running"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make(num_envs: int = 4, **kw: Any) -> V.Multiprocessing:
    env_kwargs = kw.pop("env_kwargs", {})
    env = V.make(Faulty, num_envs, "multiprocessing", num_workers=2, env_kwargs=env_kwargs, **kw)
    assert isinstance(env, V.Multiprocessing)
    return env


def step_until_error(env: V.Multiprocessing, steps: int = 10) -> tuple[BaseException, float]:
    actions = np.zeros(env.num_envs, np.int64)
    start = time.monotonic()
    with pytest.raises((V.WorkerError, TimeoutError)) as info:
        for _ in range(steps):
            start = time.monotonic()
            env.step(actions)
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("when", ["step", "reset"])
def test_exception_in_a_worker_names_type_worker_and_traceback(when: str) -> None:
    env = make(env_kwargs={"target": 3, "when": when})  # row 3 is in worker 1
    pids = worker_pids(env)
    start = time.monotonic()
    with pytest.raises(V.WorkerError) as info:
        env.reset(seed=0)
        for _ in range(10):
            start = time.monotonic()
            env.step(np.zeros(4, np.int64))
    elapsed = time.monotonic() - start
    err = info.value
    assert err.worker == 1 and err.exc_type == "ZeroDivisionError"
    assert "worker 1" in str(err) and "rows 2..3" in str(err) and f"during {when}" in str(err)
    assert "injected failure" in str(err)
    assert "in _misbehave" in err.worker_traceback and "ZeroDivisionError" in err.worker_traceback
    assert elapsed < REPORT_BOUND
    assert_reaped(pids)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.worker, copy.exc_type, copy.worker_traceback) == (
        1,
        err.exc_type,
        err.worker_traceback,
    )
    with pytest.raises(EnvClosedError, match=r"closed after a worker failure.*ZeroDivisionError"):
        env.step(np.zeros(4, np.int64))
    env.close()
    env.close()


def test_exception_in_the_creator_in_a_worker() -> None:
    start = time.monotonic()
    with pytest.raises(V.WorkerError) as info:
        V.make(fails_in_workers, 4, "multiprocessing", num_workers=2)
    assert time.monotonic() - start < REPORT_BOUND
    assert info.value.exc_type == "KeyError" and "no such asset" in str(info.value)
    assert "start (env_creator)" in str(info.value) and "fails_in_workers" in str(info.value)


def test_exception_with_spawn() -> None:
    env = make(env_kwargs={"target": 2}, start_method="spawn")
    env.reset(seed=0)
    err, elapsed = step_until_error(env)
    assert (
        isinstance(err, V.WorkerError) and err.worker == 1 and err.exc_type == "ZeroDivisionError"
    )
    assert elapsed < REPORT_BOUND


def test_serial_raises_the_original_exception() -> None:
    env = V.make(Faulty, 4, num_workers=2, env_kwargs={"target": 3})
    env.reset(seed=0)
    with pytest.raises(ZeroDivisionError, match="injected failure"):
        for _ in range(10):
            env.step(np.zeros(4, np.int64))
    env.close()


def test_sigkill_while_idle() -> None:
    env = make()
    env.reset(seed=0)
    pids = worker_pids(env)
    os.kill(pids[1], signal.SIGKILL)
    err, elapsed = step_until_error(env)
    assert isinstance(err, V.WorkerError) and err.worker == 1 and err.exitcode == -9
    assert "SIGKILL" in str(err) and "exit code -9" in str(err)
    assert elapsed < REPORT_BOUND
    assert_reaped(pids)
    with pytest.raises(EnvClosedError, match="WorkerError"):
        env.reset()


def test_sigkill_while_stepping() -> None:
    env = make(env_kwargs={"target": 0, "how": "sleep"})
    env.reset(seed=0)
    pids = worker_pids(env)
    for _ in range(2):
        env.step(np.zeros(4, np.int64))
    env.send(np.zeros(4, np.int64))  # worker 0 now sleeps in step
    time.sleep(0.2)
    os.kill(pids[0], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(V.WorkerError, match=r"worker 0 .*SIGKILL") as info:
        env.recv()
    assert time.monotonic() - start < REPORT_BOUND and info.value.exitcode == -9
    assert_reaped(pids)


def test_worker_killed_by_a_signal_without_a_name() -> None:
    env = make()
    env.reset(seed=0)
    pids = worker_pids(env)
    os.kill(pids[0], signal.SIGRTMIN + 6)  # terminates; signal.Signals has no name for it
    err, elapsed = step_until_error(env)
    rt = int(signal.SIGRTMIN) + 6
    assert isinstance(err, V.WorkerError) and err.worker == 0 and err.exitcode == -rt
    assert f"killed by signal {rt} (exit code {-rt})" in str(err)
    assert elapsed < REPORT_BOUND
    assert_reaped(pids)


def test_sigkill_while_waiting_for_an_async_batch() -> None:
    env = make(env_kwargs={"target": 0, "how": "sleep"}, batch_size=2)
    env.async_reset(seed=0)
    pids = worker_pids(env)
    for _ in range(3):  # three rounds: each worker is sent three steps; worker 0 sleeps in its 3rd
        for _ in range(2):
            env.recv()
            env.send(np.zeros(2, np.int64))
    time.sleep(0.2)
    os.kill(pids[0], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(V.WorkerError, match=r"worker 0 .*SIGKILL") as info:
        for _ in range(2):  # worker 1's batch comes back; the round then waits for worker 0
            assert list(env.recv()[5]) == [2, 3]
            env.send(np.zeros(2, np.int64))
    assert time.monotonic() - start < REPORT_BOUND and info.value.exitcode == -9
    assert_reaped(pids)


def test_closing_a_copy_in_a_forked_child_leaves_the_workers_alone() -> None:
    env = make()
    env.reset(seed=0)
    pid = os.fork()
    if pid == 0:  # the child: drop its copy of the env as a forked process might, then leave
        try:
            env.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert all(alive(p) for p in worker_pids(env))
    for _ in range(3):
        env.step(np.zeros(4, np.int64))  # the workers still answer this process
    env.close()


def test_worker_exiting_by_itself() -> None:
    env = make(env_kwargs={"target": 1, "how": "exit"})
    env.reset(seed=0)
    err, _elapsed = step_until_error(env)
    assert isinstance(err, V.WorkerError) and err.worker == 0 and err.exitcode == 3
    assert "exited with exit code 3" in str(err)


def test_stuck_worker_times_out() -> None:
    env = make(env_kwargs={"target": 2, "how": "sleep"}, timeout=0.5)
    env.reset(seed=0)
    pids = worker_pids(env)
    err, elapsed = step_until_error(env)
    assert isinstance(err, TimeoutError)
    assert "worker 1" in str(err) and "timeout=0.5 s" in str(err)
    assert "vector.timeout=... on the command line" in str(err)  # the fix, for both APIs
    assert 0.5 <= elapsed < 0.5 + REPORT_BOUND
    assert_reaped(pids)
    with pytest.raises(EnvClosedError, match="TimeoutError"):
        env.step(np.zeros(4, np.int64))


def test_stuck_worker_in_async_mode() -> None:
    env = make(env_kwargs={"target": 0, "how": "sleep"}, batch_size=2, timeout=0.5)
    env.async_reset(seed=0)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="worker 0"):
        for _ in range(20):
            _, _, _, _, _, _ids = env.recv()
            env.send(np.zeros(2, np.int64))
    # worker 1 keeps finishing, but a round needs worker 0 too: the timeout still fires
    assert time.monotonic() - start < 0.5 * 20 + REPORT_BOUND
    env.close()


def test_close_reaps_every_worker_and_is_idempotent() -> None:
    env = make(num_envs=4)
    pids = worker_pids(env)
    env.reset()
    env.send(np.zeros(4, np.int64))  # close while a step is in flight
    env.close()
    assert_reaped(pids)
    env.close()
    with pytest.raises(EnvClosedError):
        env.reset()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_close_frees_the_semaphores_and_pipes(method: str) -> None:
    env = make(batch_size=2, start_method=method)
    env.async_reset(seed=0)
    names = [s._semlock.name for s in [*env._go, *env._done, env._any]]
    names = [f"/dev/shm/sem.{n.lstrip('/')}" for n in names if n is not None]
    assert all(os.path.exists(n) for n in names) and (names or method == "fork")
    env.close()
    assert not [n for n in names if os.path.exists(n)], "semaphores left after close()"
    assert all(c.closed for c in env._conns)


def test_dropping_the_env_reaps_its_workers() -> None:
    env = make()
    pids = worker_pids(env)
    env.reset()
    del env
    assert_reaped(pids)


_PARENT = """
import json, os, signal, sys, threading, numpy as np
import puffer.vector as V

def main():
    env = V.make("cartpole", 4, "multiprocessing", num_workers=2, start_method=sys.argv[1])
    env.reset()
    env.step(np.zeros(4, np.int64))
    print(json.dumps([p.pid for p in env._procs]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    if sys.argv[2] == "thread":  # no PR_SET_PDEATHSIG: the workers notice by polling
        t = threading.Thread(target=main)
        t.start()
        t.join()
    else:
        main()
"""


_LEFT_OPEN = """
import json, sys, numpy as np
import puffer.vector as V

if __name__ == "__main__":  # never closed: still open when the interpreter exits
    env = V.make("cartpole", 4, "multiprocessing", num_workers=2, start_method=sys.argv[1])
    env.reset()
    if sys.argv[2] == "busy":
        env.send(np.zeros(4, np.int64))
    print(json.dumps([p.pid for p in env._procs]), flush=True)
"""


@pytest.mark.parametrize(
    ("method", "state"), [("fork", "idle"), ("fork", "busy"), ("spawn", "idle")]
)
def test_an_env_left_open_at_exit_is_closed_without_a_hang(
    tmp_path, method: str, state: str
) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "left_open.py"
    script.write_text(textwrap.dedent(_LEFT_OPEN))
    proc = subprocess.run(
        [sys.executable, str(script), method, state], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert_reaped(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("method", "where"),
    [("fork", "main"), ("fork", "thread"), ("spawn", "main"), ("forkserver", "main")],
)
def test_workers_exit_when_the_parent_dies(tmp_path, method: str, where: str) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    proc = subprocess.run(
        [sys.executable, str(script), method, where], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = json.loads(proc.stdout.splitlines()[-1])
    deadline = time.monotonic() + REPORT_BOUND
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for pid in left:  # do not leave them behind even if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"
