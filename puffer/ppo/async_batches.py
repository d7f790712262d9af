"""Rollouts from a VecEnv that returns batches of rows (``batch_size < num_envs``, EnvPool-style
``recv``/``send`` with ``env_ids``): the per-row bookkeeping the synchronous loop does not need.

Each row fills its own segment at its own pace (``ptr``: steps stored this rollout). A row acts
on every batch it appears in; its step is stored while it has fewer than ``horizon``, and the
env's answer to a stored step (reward, ends, the value of what follows) is written when the row
comes back. The rollout is complete when every row has ``horizon`` answered steps; a row that got
there early keeps acting meanwhile, without storing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from puffer.ppo.trainer import Trainer

__all__ = ["AsyncBatches"]


class AsyncBatches:
    """The asynchronous rollout of ``trainer`` (which owns the policy, buffer and env)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        n = trainer.num_envs
        self.horizon = trainer.config.horizon
        self.ptr = np.zeros(n, np.int64)
        self.stored = np.zeros(n, bool)  # the row's in-flight step is in the buffer
        self.fresh = np.ones(n, bool)  # not yet received since the env's reset
        self.bootstrap = torch.zeros(n, device=trainer.device)

    def reset(self, received: np.ndarray) -> None:
        """After the env's reset and the first batch (rows ``received``): nothing in flight, every
        other row starts an episode when it first arrives."""
        self.stored[:] = False
        self.fresh[:] = True
        self.fresh[received] = False

    def collect(self) -> torch.Tensor:
        """Fill the buffer; returns each row's bootstrap value (after its last stored step)."""
        tr = self.trainer
        self.ptr[:] = 0
        complete = np.zeros(tr.num_envs, bool)
        while True:
            if tr.pending is not None:  # received at the end of the last rollout
                (obs, env_ids, starts), results = tr.pending, None
                tr.pending = None
            else:
                obs, env_ids, starts, results = self._recv()
            rows = torch.from_numpy(env_ids).to(tr.device)
            state = None if tr.state is None else tuple(s[rows] for s in tr.state)
            t0 = time.perf_counter()
            params, value, next_state = tr.policy(obs, state, tr.to_device(starts))
            if results is not None:
                self._finish_steps(env_ids, results, value, state, complete)
            if complete.all():
                tr.pending = (obs, env_ids, starts)
                tr.times["forward"] += time.perf_counter() - t0
                return self.bootstrap
            action, log_prob = tr.policy.head.sample(params, tr.generator)
            self._store_steps(env_ids, state, obs, action, log_prob, value, starts)
            if next_state is not None:
                for dst, src in zip(tr.state, next_state):
                    dst[rows] = src
            actions = tr.policy.head.to_env(action)
            t1 = time.perf_counter()
            tr.vecenv.send(actions)
            tr.times["forward"] += t1 - t0
            tr.times["env"] += time.perf_counter() - t1
            tr.global_step += len(env_ids) * tr.world_size

    def _recv(self) -> tuple[torch.Tensor, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        """The next batch: observations, env ids, episode starts, and the rewards, terminals and
        truncations that answer these rows' in-flight steps."""
        tr = self.trainer
        t0 = time.perf_counter()
        obs, rewards, terminals, truncations, infos, env_ids = tr.vecenv.recv()
        tr.times["env"] += time.perf_counter() - t0
        if infos:
            tr.episodes.record(infos)
        env_ids = np.asarray(env_ids)
        starts = terminals | truncations | self.fresh[env_ids]
        self.fresh[env_ids] = False
        return tr.to_device(obs), env_ids, starts, (rewards, terminals, truncations)

    def _finish_steps(
        self,
        env_ids: np.ndarray,
        results: tuple[np.ndarray, ...],
        value: torch.Tensor,
        state: Any,
        complete: np.ndarray,
    ) -> None:
        """Record the rewards and ends that answer the rows' stored in-flight steps; the value of
        what follows a row's last step is its bootstrap, a truncated episode's final value is
        written to ``next_values``."""
        stored = self.stored[env_ids]
        if not stored.any():
            return
        tr, buf = self.trainer, self.trainer.buffer
        rewards, terminals, truncations = results
        ids, steps = env_ids[stored], self.ptr[env_ids[stored]] - 1
        buf.host_rewards[steps, ids] = rewards[stored]
        buf.host_terminals[steps, ids] = terminals[stored]
        buf.host_truncations[steps, ids] = truncations[stored]
        last = stored & (self.ptr[env_ids] == self.horizon)
        if last.any():
            self.bootstrap[torch.from_numpy(env_ids[last])] = value[torch.from_numpy(last)]
        truncated = truncations & stored
        if truncated.any():
            rows = env_ids[truncated]
            final_values = tr.final_values(rows, state, np.flatnonzero(truncated))
            buf.next_values[torch.from_numpy(rows), torch.from_numpy(self.ptr[rows] - 1)] = (
                final_values
            )
        self.stored[env_ids] = False
        complete[env_ids] |= last

    def _store_steps(
        self,
        env_ids: np.ndarray,
        state: Any,
        obs: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        value: torch.Tensor,
        starts: np.ndarray,
    ) -> None:
        """Store this step for the rows that still need steps."""
        tr, buf = self.trainer, self.trainer.buffer
        collect = self.ptr[env_ids] < self.horizon
        if collect.any():
            ids, steps = env_ids[collect], self.ptr[env_ids[collect]]
            pick = torch.from_numpy(collect).to(tr.device)
            rows = torch.from_numpy(ids).to(tr.device)
            first = steps == 0
            if state is not None and first.any():
                at = torch.from_numpy(collect & (self.ptr[env_ids] == 0)).to(tr.device)
                for dst, src in zip(buf.initial_state, state):
                    dst[rows[torch.from_numpy(first).to(tr.device)]] = src[at]
            at_steps = torch.from_numpy(steps).to(tr.device)
            buf.store_rows(rows, at_steps, obs[pick], action[pick], log_prob[pick], value[pick])
            buf.host_starts[steps, ids] = starts[collect]
            masks = tr.vecenv_masks()
            if masks is not None:
                buf.host_masks[steps, ids] = masks[ids]
        self.stored[env_ids] = collect
        self.ptr[env_ids] += collect

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "stored": torch.from_numpy(self.stored.copy()),
            "fresh": torch.from_numpy(self.fresh.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stored = state["stored"].cpu().numpy().copy()
        self.fresh = state["fresh"].cpu().numpy().copy()
