"""Shared fixtures for the platform tests: real ``python -m puffer.*`` subprocesses and log readers.

Helpers are fixtures (not imports) so the tests do not depend on how pytest imports this folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

# A tiny, fast training run: 8 updates of 256 steps, nothing that needs a terminal or the network.
TINY = [
    "ppo.total_timesteps=2048",
    "vector.num_envs=8",
    "ppo.horizon=32",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "torch_threads=1",
    "dashboard=plain",
]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    env["WANDB_MODE"] = "offline"
    env["WANDB_SILENT"] = "true"
    return env


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` in ``cwd``, finished."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_module(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -m module args`` in ``cwd``, running."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def only_run(base: Path) -> Path:
    """The single run directory under ``base`` (``outputs/<env>/<date>_<time>``)."""
    runs = [p.parent for p in base.glob("outputs/*/*/.hydra")]
    assert len(runs) == 1, f"expected one run dir under {base}/outputs, found {runs}"
    return runs[0]


def read_tb(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in a TensorBoard log dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_data(run_dir: Path, needle: bytes, timeout: float = 10.0) -> bytes:
    """An offline W&B run's data bytes once they hold ``needle`` (its writer may lag finish())."""
    deadline = time.monotonic() + timeout
    while True:
        data = b"".join(p.read_bytes() for p in run_dir.glob("run-*.wandb"))
        if needle in data or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The helpers above: ``helpers.run_module(...)``, ``helpers.read_tb(...)``, ..."""
    return SimpleNamespace(
        TINY=TINY,
        clean_env=clean_env,
        run_module=run_module,
        start_module=start_module,
        only_run=only_run,
        read_tb=read_tb,
        wandb_data=wandb_data,
    )


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run("puffer.train", *args)`` in ``tmp_path``."""
    return lambda module, *args, timeout=120: run_module(
        module, *args, cwd=tmp_path, timeout=timeout
    )


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny nets: one thread is as fast, and does not spin against other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_leftover_workers() -> Iterator[None]:
    """The test must reap every process it started (the multiprocessing helpers excepted)."""
    import psutil

    def running(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def multiprocessing_helper(p: psutil.Process) -> bool:
        # The forkserver and the resource tracker: started once, shared by later tests.
        try:
            cmd = " ".join(p.cmdline())
            return p.ppid() == os.getpid() and ("forkserver" in cmd or "resource_tracker" in cmd)
        except psutil.Error:
            return False

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    left = [p for p in left if running(p) and not multiprocessing_helper(p)]
    assert not left, f"processes left running: {left}"
