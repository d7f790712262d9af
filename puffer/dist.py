"""One run over N processes (data-parallel PPO) with ``torch.distributed``: the config, the world
this process is in, the process group, and the collectives that keep ranks identical.

Ranks are started by ``puffer.launch`` (``python -m puffer.train dist.nproc=N``) or by torchrun
(``torchrun --nnodes=M --nproc-per-node=N -m puffer.train ...``), which sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` and the rendezvous (``MASTER_ADDR``/``MASTER_PORT``); ``World.from_env`` reads them.

Each rank steps ``vector.num_envs / world_size`` env rows with its own seed streams (``rank_seed``),
starts from rank 0's weights (``broadcast_module``), and averages gradients with the others (the
Trainer's all-reduce seam). Rank 0 alone writes the run directory (``rank0_only``); statistics that
every rank needs are combined with ``merge_moments``/``all_moments`` (observation and reward
normalization), ``gather_episodes`` (episode statistics) and ``all_mean`` (losses, KL);
checkpoints hold every rank's own state (``gather_rank_states``, ``rank_state``). Collectives time
out after ``DistConfig.timeout`` seconds, so nothing hangs; ``agree`` lets ranks stop at the same
update.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from puffer.checks import positive_int
from puffer.seeding import rank_seed  # rank 0 keeps the seed; others: SeedSequence([seed, rank])

__all__ = [
    "BACKENDS",
    "DistConfig",
    "World",
    "agree",
    "all_mean",
    "all_moments",
    "broadcast_module",
    "broadcast_object",
    "gather_episodes",
    "gather_rank_states",
    "local_rows",
    "merge_moments",
    "params_digest",
    "process_group",
    "rank0_only",
    "rank_config",
    "rank_seed",
    "rank_state",
    "resolve_backend",
    "torchrun_world",
    "world",
]

BACKENDS = ("auto", "gloo", "nccl")
_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
_R = TypeVar("_R")


@dataclass
class DistConfig:
    """How one run spreads over processes (``conf/dist/default.yaml``).

    ``nproc`` ranks on this machine started from the Hydra job (1: one process, no
    ``torch.distributed``; under torchrun leave it at 1, torchrun sets the world size). ``backend``:
    ``auto`` is gloo on CPU and NCCL for CUDA tensors (gloo still carries the small CPU messages),
    ``gloo`` forces gloo, ``nccl`` requires CUDA. ``timeout``: seconds a collective waits for the
    other ranks before the run fails. ``master_port``: the rendezvous port of ``dist.nproc`` runs
    (0: a free port; torchrun's own ``--master-port``/``--rdzv-endpoint`` otherwise).
    ``shutdown_timeout``: seconds the ranks get to stop (rank 0 checkpoints) after SIGINT/SIGTERM or
    another rank's failure before they are killed.
    """

    nproc: int = 1
    backend: str = "auto"
    timeout: float = 300.0
    master_port: int = 0
    shutdown_timeout: float = 30.0

    def validate(self, num_envs: int, world_size: int | None = None, device: str = "cpu") -> None:
        """Raise ``ValueError`` naming the bad value and the fix.

        ``num_envs`` is the global ``vector.num_envs``; ``world_size`` the ranks torchrun started
        (None when not under torchrun); ``device`` the run's ``device`` setting.
        """
        positive_int("dist.nproc", self.nproc)  # 1: no ranks
        if self.backend not in BACKENDS:
            raise ValueError(f"dist.backend={self.backend!r} must be one of {', '.join(BACKENDS)}")
        for key in ("timeout", "shutdown_timeout"):
            if not getattr(self, key) > 0:
                raise ValueError(f"dist.{key}={getattr(self, key)!r} must be > 0 seconds")
        if not 0 <= self.master_port < 65536:
            raise ValueError(f"dist.master_port={self.master_port!r} must be in 0..65535 (0: free)")
        if world_size is not None and self.nproc not in (1, world_size):
            raise ValueError(
                f"dist.nproc={self.nproc} asks puffer to start ranks, but torchrun already started "
                f"{world_size}: drop dist.nproc (torchrun's --nproc-per-node sets the ranks)"
            )
        ranks = world_size or self.nproc
        local_rows(num_envs, ranks)
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if self.backend == "nccl" and not cuda:
            raise ValueError(
                f"dist.backend=nccl needs CUDA, but device={device} trains on the CPU: use "
                "dist.backend=gloo (or auto)"
            )
        if cuda and world_size is None:  # under torchrun the ranks check their node at start
            _check_gpus(device, self.nproc)


@dataclass(frozen=True)
class World:
    """This process's place in the run: global ``rank`` of ``world_size``, ``local_rank`` of
    ``local_world_size`` on this node (one process: ``World()``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World | None:
        """The world torch's launcher (torchrun, ``launch``) describes in ``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; None when ``WORLD_SIZE`` is unset.

        Raises ``ValueError`` when the variables are partial or inconsistent.
        """
        if "WORLD_SIZE" not in os.environ:
            return None
        try:
            size = int(os.environ["WORLD_SIZE"])
            rank = int(os.environ["RANK"])
            local = int(os.environ.get("LOCAL_RANK", rank))
            local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        except (KeyError, ValueError) as e:
            found = {k: os.environ.get(k) for k in _ENV_KEYS}
            raise ValueError(
                f"WORLD_SIZE is set but the rank variables are not usable ({found}): start the "
                "ranks with torchrun, or unset WORLD_SIZE for one process"
            ) from e
        if not (0 <= rank < size and 0 <= local < local_size <= size):
            raise ValueError(
                f"inconsistent ranks: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local} "
                f"LOCAL_WORLD_SIZE={local_size}"
            )
        return cls(rank, size, local, local_size)


def world() -> World:
    """The current world: from the process group when initialized, else the launcher's variables,
    else one process."""
    env = World.from_env()
    if dist.is_available() and dist.is_initialized():
        local = env or World()
        return World(
            dist.get_rank(), dist.get_world_size(), local.local_rank, local.local_world_size
        )
    return env or World()


# -- set-up ----------------------------------------------------------------------------------------


def local_rows(num_envs: int, world_size: int) -> int:
    """Env rows each rank steps: ``num_envs / world_size``; ``ValueError`` if it does not divide."""
    if num_envs % world_size:
        lower = num_envs - num_envs % world_size
        raise ValueError(
            f"vector.num_envs={num_envs} must be divisible by the number of ranks ({world_size}): "
            f"each rank steps an equal share. Use vector.num_envs={lower or world_size} or "
            f"{lower + world_size}"
        )
    return num_envs // world_size


def rank_config(cfg: Any, here: World) -> Any:
    """The config rank ``here.rank`` builds its env and trainer from (an OmegaConf copy of the
    run's ``cfg``): its share of ``vector.num_envs`` (and of ``num_workers``/``batch_size`` when
    set) and its own ``seed`` (``rank_seed``). ``ppo.total_timesteps`` stays global: the Trainer
    counts every rank's steps.

    Raises ``ValueError`` when a global count does not divide by the ranks.
    """
    local = cfg.copy()
    n = here.world_size
    local.vector.num_envs = local_rows(cfg.vector.num_envs, n)
    for key in ("num_workers", "batch_size"):
        value = cfg.vector.get(key)
        if value is not None:
            if value % n:
                raise ValueError(
                    f"vector.{key}={value} must be divisible by the number of ranks ({n}): it is "
                    "global, like vector.num_envs; each rank takes an equal share"
                )
            local.vector[key] = value // n
    local.seed = rank_seed(cfg.seed, here.rank)
    return local


def torchrun_world() -> World | None:
    """The world when torchrun (or another launcher that sets ``WORLD_SIZE``) started this process
    as one of several ranks; None for one process."""
    here = World.from_env()
    return here if here is not None and here.world_size > 1 else None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The ``init_process_group`` backend string for ``dist.backend`` on ``device``.

    ``auto``/``nccl`` on CUDA: ``"cpu:gloo,cuda:nccl"`` (NCCL for the gradients, gloo for the small
    CPU messages such as episode statistics); CPU: ``"gloo"``. Raises ``ValueError`` for NCCL
    without CUDA.
    """
    cuda = device.type == "cuda"
    if backend == "gloo" or (backend == "auto" and not cuda):
        return "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"dist.backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if not cuda:
        raise ValueError(
            f"dist.backend=nccl needs CUDA, but the device is {device}: use dist.backend=gloo "
            "(or auto) on CPU"
        )
    if not dist.is_nccl_available():
        raise ValueError("dist.backend=nccl: this torch build has no NCCL; use dist.backend=gloo")
    return "cpu:gloo,cuda:nccl"


def rank_device(device: str, local: World) -> torch.device:
    """The device of this rank: on CUDA, one GPU per local rank (``cuda:<local_rank>``).

    Raises ``ValueError`` when a CUDA index pins several ranks to one GPU or the node has fewer
    GPUs than local ranks.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    _check_gpus(device, local.local_world_size)
    dev = torch.device("cuda", local.local_rank if dev.index is None else dev.index)
    torch.cuda.set_device(dev)
    return dev


def _check_gpus(device: str, local_ranks: int) -> None:
    """``ValueError`` unless each of ``local_ranks`` ranks of a node can have a GPU of its own."""
    if local_ranks == 1:
        return
    if ":" in device:
        raise ValueError(
            f"device={device} would put all {local_ranks} ranks of this node on one GPU: use "
            "device=cuda (rank i uses cuda:<local rank i>)"
        )
    count = torch.cuda.device_count()
    if local_ranks > count:
        raise ValueError(
            f"{local_ranks} ranks on this node but {count} CUDA device(s): start at most one rank "
            "per GPU (dist.nproc / torchrun --nproc-per-node)"
        )


@contextlib.contextmanager
def process_group(config: DistConfig, device: str) -> Iterator[torch.device]:
    """Join the process group the launcher's variables describe; yields this rank's device.

    The backend follows ``resolve_backend``; every collective times out after
    ``config.timeout`` seconds (then raises ``torch.distributed.DistError``). The group is
    destroyed on exit.
    """
    here = World.from_env()
    if here is None:
        raise RuntimeError("process_group() outside a launcher: WORLD_SIZE/RANK are not set")
    dev = rank_device(device, here)
    dist.init_process_group(
        resolve_backend(config.backend, dev),
        timeout=timedelta(seconds=config.timeout),
        device_id=dev if dev.type == "cuda" else None,
    )
    try:
        yield dev
    finally:
        dist.destroy_process_group()


# -- collectives -----------------------------------------------------------------------------------


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank0_only(fn: Callable[..., _R]) -> Callable[..., _R | None]:
    """Decorate a function that writes (files, logs): it runs on rank 0 only, other ranks get
    None. Calls outside a process group always run."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> _R | None:
        return fn(*args, **kwargs) if world().is_rank0 else None

    return guarded


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (any picklable object; identity without a group)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``module``'s parameters and buffers from rank ``src`` to every rank, in place."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if isinstance(tensor, torch.Tensor):
                dist.broadcast(tensor, src=src)


def params_digest(module: nn.Module) -> str:
    """SHA-256 of ``module``'s parameters and buffers, byte for byte (equal digests: identical)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            h.update(name.encode())
            h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def agree(*values: Any) -> tuple[Any, ...]:
    """Per position, the first value that is not None in rank order, on every rank: how the ranks
    agree to stop after the same update (a signal one rank got, a stop rank 0's loggers asked
    for). One small all-gather; without a group: ``values``."""
    if not _active():
        return values
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return tuple(next((p[i] for p in parts if p[i] is not None), None) for i in range(len(values)))


def merge_moments(
    counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine per-part statistics into those of the union (Chan, Golub & LeVeque 1979,
    "Updating formulae and a pairwise algorithm for computing sample variances").

    ``counts`` ``(P,)``, ``means`` and ``m2s`` ``(P, d)`` (``m2``: sum of squared deviations from
    the part's mean); returns ``(count, mean (d,), m2 (d,))``, float64. Parts are folded in order,
    so every rank that merges the same gathered parts gets identical bits.
    """
    counts, means, m2s = counts.double(), means.double(), m2s.double()
    n, mean, m2 = counts[0], means[0].clone(), m2s[0].clone()
    for k in range(1, counts.shape[0]):
        nk = counts[k]
        total = n + nk
        if nk == 0:
            continue
        delta = means[k] - mean
        mean = mean + delta * (nk / total)
        m2 = m2 + m2s[k] + delta.square() * (n * nk / total)
        n = total
    return n, mean, m2


def all_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count (0-dim), mean and population variance ``(d,)`` over the rows of ``x`` ``(N, d)`` of
    every rank together, float64, identical on every rank (``merge_moments`` over an all-gather).

    Without a group: ``x.mean(0)`` and ``x.var(0, unbiased=False)`` themselves.
    """
    x = x.reshape(x.shape[0], -1).double()
    n = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
    if not _active():
        empty = x.shape[0] == 0
        zeros = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        return n, zeros if empty else x.mean(0), zeros if empty else x.var(0, unbiased=False)
    mean = x.sum(0) / n.clamp(min=1)
    part = torch.cat([n.reshape(1), mean, (x - mean).square().sum(0)])
    parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, part)
    stacked, d = torch.stack(parts), x.shape[1]
    count, mean, m2 = merge_moments(stacked[:, 0], stacked[:, 1 : 1 + d], stacked[:, 1 + d :])
    return count, mean, m2 / count.clamp(min=1)


def gather_episodes(episodes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every rank's episode values per key, concatenated in rank order (on every rank).

    ``episodes`` maps a key (``episode_return``, ...) to this rank's values (any 1-D sequence).
    """
    local = {k: np.asarray(v, np.float64).reshape(-1) for k, v in episodes.items()}
    if not _active():
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    keys = sorted({k for p in parts for k in p})
    return {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}


def all_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of tensor ``x`` over ranks (a new tensor; ``x`` itself without a group)."""
    if not _active():
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


# -- checkpoints -----------------------------------------------------------------------------------

#: Entries of ``Trainer.state_dict()`` that differ between ranks: each rank's env rows, rollout,
#: random streams and per-row reward-norm returns. The rest (weights, optimizer, counters) is
#: identical on every rank and saved once.
RANK_KEYS = ("reward_norm", "rng", "env", "env_layout", "rollout")


def gather_rank_states(state: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Rank 0: the ``RANK_KEYS`` part of every rank's trainer ``state`` (index = rank); other
    ranks: None. Without a group: ``[part]``."""
    part = {k: state[k] for k in RANK_KEYS if k in state}
    if not _active():
        return [part]
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(part, parts, dst=0)
    return parts


def rank_state(
    trainer_state: Mapping[str, Any], ranks: list[dict[str, Any]] | None, here: World
) -> dict[str, Any]:
    """The trainer state rank ``here.rank`` resumes from.

    ``trainer_state`` is rank 0's saved state, ``ranks`` the saved ``gather_rank_states`` (None
    for a one-process checkpoint). Same number of ranks: each rank gets its own part back (a
    bit-exact continuation). Another number: the weights, optimizer and counters carry over; the
    saved env layout is marked with its rank count, so that it fits no rank and the Trainer starts
    fresh episodes with its one warning ("env layout changed: num_envs 64 x 2 ranks -> 32").
    """
    saved = len(ranks) if ranks else 1
    if saved == here.world_size:
        return {**trainer_state, **(ranks[here.rank] if ranks else {})}
    layout = dict(trainer_state.get("env_layout") or {})
    layout["num_envs"] = f"{layout.get('num_envs')} x {saved} rank{'s' * (saved > 1)}"
    return {**trainer_state, "env_layout": layout}
