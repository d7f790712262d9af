"""``Trainer``: PPO on a ``VecEnv``: ``rollout()`` collects experience, ``update()`` learns from it.

    trainer = Trainer(PPOConfig(total_timesteps=100_000), vecenv, policy)
    while not trainer.done:
        trainer.rollout()
        metrics = trainer.update()

``train(config, vecenv, policy)`` runs that loop in one call. The shape follows CleanRL's
``ppo.py``: the rollout loop, the advantage call, then epochs of minibatches through the pure
loss in ``puffer.ppo.loss``. A VecEnv that returns batches of rows (``batch_size < num_envs``)
is collected by ``puffer.ppo.async_batches`` instead of the synchronous loop here.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from puffer import dist
from puffer.device import HostToDevice, resolve_device, set_torch_threads
from puffer.env import VecEnv
from puffer.policy import Policy, State
from puffer.ppo import loss as L
from puffer.ppo import resume
from puffer.ppo.advantage import compute_puff_advantage
from puffer.ppo.async_batches import AsyncBatches
from puffer.ppo.buffer import ExperienceBuffer, Minibatch
from puffer.ppo.config import PPOConfig
from puffer.ppo.episodes import EpisodeStats
from puffer.ppo.loss import LOSS_KEYS
from puffer.ppo.metrics import PHASES, update_metrics
from puffer.ppo.normalize import RewardNorm
from puffer.ppo.optimizers import gradient_step, make_optimizers, set_learning_rate
from puffer.ppo.sampling import minibatch_indices

__all__ = ["Trainer", "train"]


class Trainer:
    """PPO for ``policy`` on ``vecenv`` with ``config``.

    ``rollout()`` collects ``config.horizon`` steps per env row and returns episode stats;
    ``update()`` runs one PPO update on them and returns the metrics dict (docs/architecture.md).
    ``global_step`` counts env steps, ``update_count`` updates (``num_updates`` planned); ``done``
    is true once ``global_step >= config.total_timesteps``.

    ``device="auto"`` picks CUDA when available; ``seed`` seeds the env reset, action sampling and
    minibatch order (same seed on CPU: identical run); ``torch_threads`` sets torch's intra-op
    threads for the process. Checkpoints: ``save``/``load``/``state_dict`` (``puffer.ppo.resume``).
    Rows whose ``vecenv.masks`` is False count in no loss, advantage statistic or episode stat.
    """

    def __init__(
        self,
        config: PPOConfig,
        vecenv: VecEnv,
        policy: Policy,
        *,
        device: str | torch.device = "auto",
        seed: int = 0,
        torch_threads: int | None = None,
    ):
        config.validate(vecenv.num_envs)
        set_torch_threads(torch_threads)
        self.config, self.vecenv, self.seed = config, vecenv, int(seed)
        self.device = resolve_device(device)
        self.to_device = HostToDevice(self.device)
        self.policy = policy.to(self.device)
        self.policy.obs_norm.enabled = config.normalize_observations
        self.optimizers = make_optimizers(config, self.policy)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.num_envs = vecenv.num_envs
        # Under torch.distributed, steps and the batch count every rank's rows (puffer.dist).
        self.world_size = dist.world().world_size
        self.batch_size = self.num_envs * config.horizon * self.world_size
        self.num_updates = max(1, math.ceil(config.total_timesteps / self.batch_size))
        if config.total_timesteps < self.batch_size:
            warnings.warn(
                f"ppo.total_timesteps={config.total_timesteps:,} is less than one rollout "
                f"({self.batch_size:,} env steps: ppo.horizon x env rows): the run trains one "
                "rollout of that size",
                stacklevel=2,
            )
        self._build(config, vecenv)
        self.start_episodes(self.seed)

    def _build(self, config: PPOConfig, vecenv: VecEnv) -> None:
        """The buffer, the loss settings, the random streams and the rollout's carried state."""
        self.buffer = ExperienceBuffer.for_rollout(vecenv, self.policy, config.horizon, self.device)
        self.advantage = partial(compute_puff_advantage, **config.advantage_coefs())
        self.loss_coefs = config.loss_coefs()
        self.reward_norm = None
        if config.normalize_rewards:
            self.reward_norm = RewardNorm(self.num_envs, config.gamma, self.device)
        self.generator = torch.Generator(self.device).manual_seed(self.seed)
        self.shuffle_generator = torch.Generator().manual_seed(self.seed + 1)
        self.global_step = self.update_count = 0
        self.async_batches = None
        if getattr(vecenv, "batch_size", self.num_envs) < self.num_envs:
            self.async_batches = AsyncBatches(self)
        # Between rollouts the trainer holds the batch awaiting actions: observations, env ids and
        # episode starts (numpy bool), plus the policy state of every row.
        self.pending: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None
        self.state: State = None
        self.episodes = EpisodeStats(window=100)
        self._collected = False
        self.times = dict.fromkeys(PHASES, 0.0)  # seconds of this update's phases

    @property
    def done(self) -> bool:
        """The step budget is spent: ``global_step >= config.total_timesteps``."""
        return self.global_step >= self.config.total_timesteps

    @property
    def learning_rate(self) -> float:
        """The scheduled learning rate for the next update."""
        c = self.config
        return L.learning_rate(c.learning_rate, c.lr_schedule, self.update_count / self.num_updates)

    def recent_episodes(self, key: str = "episode_return") -> list[float]:
        """``key``'s values for the last 100 episodes that ended (oldest first)."""
        return list(self.episodes.recent.get(key, ()))

    # -- rollout -----------------------------------------------------------------------------------

    def rollout(self) -> dict[str, float]:
        """Collect ``horizon`` steps from every env row into ``buffer``.

        Returns ``{"env/<key>": mean}`` over the episodes that ended during the rollout.
        """
        self.episodes.new_rollout()
        self.times = dict.fromkeys(PHASES, 0.0)
        start = time.perf_counter()
        with torch.inference_mode():
            if self.async_batches is None:
                bootstrap = self._collect()
            else:
                bootstrap = self.async_batches.collect()
            self.buffer.finish(bootstrap)
        self.episodes.end_rollout(dist.gather_episodes)
        self.times["rollout"] = time.perf_counter() - start
        self._collected = True
        return self.episodes.means()

    def start_episodes(self, seed: int) -> None:
        """Reset every row and receive the first batch (all of it starts episodes)."""
        self.vecenv.async_reset(seed)
        self.state = self.policy.initial_state(self.num_envs, self.device)
        obs, _, _, _, _, env_ids = self.vecenv.recv()
        env_ids = np.asarray(env_ids)
        self.pending = (self.to_device(obs), env_ids, np.ones(len(env_ids), bool))
        if self.async_batches is not None:
            self.async_batches.reset(received=env_ids)

    def _collect(self) -> torch.Tensor:
        """The synchronous rollout: every row acts at every step. Returns the bootstrap values."""
        buf, policy, head, masks = self.buffer, self.policy, self.policy.head, self.vecenv_masks()
        obs, _, starts = self.pending
        self.pending = None
        buf.start_segments(starts, self.state)
        act, send, recv, times = policy.act, self.vecenv.send, self.vecenv.recv, self.times
        for t in range(self.config.horizon):
            if masks is not None:
                buf.host_masks[t] = masks
            starts = None  # a recurrent policy resets rows only at steps where some row starts
            if policy.is_recurrent and buf.host_starts[t].any():
                starts = self.to_device(buf.host_starts[t])
            t0 = time.perf_counter()
            action, log_prob, value, self.state = act(
                obs, self.state, starts, generator=self.generator
            )
            t1 = time.perf_counter()
            buf.store_step(t, obs, action, log_prob, value)
            actions = head.to_env(action)
            t2 = time.perf_counter()
            send(actions)
            next_obs, rewards, terminals, truncations, infos, _ = recv()
            t3 = time.perf_counter()
            buf.store_results(t, rewards, terminals, truncations)
            if infos:
                self.episodes.record(infos)
            if truncations.any():
                rows = np.flatnonzero(truncations)
                buf.next_values[rows, t] = self.final_values(rows, self.state, rows)
            obs = self.to_device.reused(next_obs)
            times["forward"] += t1 - t0
            times["env"] += t3 - t2
        self.global_step += self.num_envs * self.world_size * self.config.horizon
        starts = np.logical_or(terminals, truncations)
        self.pending = (obs, np.arange(self.num_envs), starts)
        _, bootstrap, _ = policy(obs, self.state, self.to_device(starts))
        return bootstrap

    def final_values(self, rows: np.ndarray, state: Any, at: np.ndarray) -> torch.Tensor:
        """``V`` ``(len(rows),)`` of the true final observations of the env ``rows`` whose
        episodes were truncated this step, from rows ``at`` of the policy ``state`` after the
        step (None for a feed-forward policy): a truncated episode's bootstrap."""
        final_obs = self.to_device(self.vecenv.final_observations[rows])
        if state is not None:
            index = torch.from_numpy(at).to(self.device)
            state = tuple(s[index] for s in state)
        return self.policy(final_obs, state, None)[1]

    def vecenv_masks(self) -> np.ndarray | None:
        """The VecEnv's per-row live-agent mask, or None (all rows count) when it has none."""
        return getattr(self.vecenv, "masks", None)

    # -- update ------------------------------------------------------------------------------------

    def update(self) -> dict[str, float]:
        """One PPO update on the collected rollout; returns the metrics dict."""
        if not self._collected:
            raise RuntimeError(
                "Trainer.update() called without a new rollout: call rollout() first"
            )
        self._collected = False
        start = time.perf_counter()
        lr = self.learning_rate
        set_learning_rate(self.optimizers, lr)
        buf = self.buffer
        mask = None if bool(buf.masks.all()) else buf.masks
        rewards, advantages = self._advantages()
        returns = advantages + buf.values
        losses = self._epochs(advantages, returns, rewards, mask)
        explained = L.explained_variance(buf.values, returns, mask)
        if self.policy.obs_norm.enabled:
            observations = buf.observations if mask is None else buf.observations[mask]
            self.policy.obs_norm.update(observations.reshape(-1, self.policy.obs_dim))
        self.update_count += 1
        self.times["learn"] = time.perf_counter() - start
        return update_metrics(
            global_step=self.global_step,
            update=self.update_count,
            steps=buf.size * self.world_size,
            learning_rate=lr,
            losses={**losses, "explained_variance": explained},
            times=self.times,
            episodes=self.episodes.means(),
        )

    def _advantages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rollout's rewards (normalized if configured) and GAE advantages ``(S, T)``."""
        buf = self.buffer
        rewards = buf.rewards
        if self.reward_norm is not None:
            rewards = self.reward_norm(rewards, buf.terminals | buf.truncations)
        ends = (buf.terminals, buf.truncations)
        return rewards, self.advantage(rewards, buf.values, buf.next_values, *ends)

    def _epochs(
        self,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        rewards: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> dict[str, float]:
        """``update_epochs`` passes of minibatches (until the KL early stop); mean loss stats."""
        totals, count = torch.zeros(len(LOSS_KEYS), device=self.device), 0
        traces = rewards if self.config.refresh_advantages else None
        packed, recurrent = self.buffer.pack(advantages, returns), self.policy.is_recurrent
        progress = self.update_count / self.num_updates
        batches = minibatch_indices(
            self.config, advantages, progress, self.generator, self.shuffle_generator
        )
        for idx, weights in batches:
            mb = self.buffer.minibatch(idx, packed, mask, traces, recurrent=recurrent)
            stats = self._train_minibatch(mb, weights)
            if stats is None:
                break
            totals += stats
            count += 1
        means = dist.all_mean(totals / count).tolist() if count else [math.nan] * len(LOSS_KEYS)
        return dict(zip(LOSS_KEYS, means))

    def _train_minibatch(self, mb: Minibatch, weights: torch.Tensor | None) -> torch.Tensor | None:
        """One gradient step; the loss stats (``LOSS_KEYS`` order), or None when the KL early stop
        fires (then no step is taken)."""
        out = self._loss(mb, weights)
        target_kl = self.config.target_kl
        if target_kl is not None and dist.all_mean(out.approx_kl).item() > target_kl:
            return None
        L.check_finite(out, f"update {self.update_count + 1} (global_step {self.global_step})")
        gradient_step(self.optimizers, self.params, out.loss, self.config.max_grad_norm)
        return torch.stack(out[1:])

    def _loss(self, mb: Minibatch, weights: torch.Tensor | None) -> L.PPOLoss:
        """The PPO loss of the current policy on minibatch ``mb``."""
        policy = self.policy
        starts = mb.starts if policy.is_recurrent else None
        state = mb.initial_state or None
        params, new_values = policy.forward_sequence(mb.observations, state, starts)
        log_prob, entropy = policy.head.log_prob_entropy(params, mb.actions)
        advantages, returns = mb.advantages, mb.returns
        if mb.traces is not None:  # V-trace: advantages with the current importance ratios
            ratio = (log_prob.detach() - mb.log_probs).exp()
            rewards, next_values, terminals, truncations = mb.traces
            advantages = self.advantage(
                rewards, mb.values, next_values, terminals, truncations, ratio
            )
            returns = advantages + mb.values
        if self.config.norm_adv:
            advantages = L.normalize_advantages(advantages, mb.mask)
        if weights is not None:
            advantages = advantages * weights
        return L.ppo_loss(
            log_prob,
            mb.log_probs,
            entropy,
            new_values,
            mb.values,
            advantages,
            returns,
            mask=mb.mask,
            **self.loss_coefs,
        )

    # -- checkpoints: state_dict() / load_state_dict(state) / save(path, meta=) / load(path) ------
    # (see puffer.ppo.resume: bit-exact on the same machine; another device or env layout warns)

    state_dict = resume.state_dict
    load_state_dict = resume.load_state_dict
    save = resume.save
    load = resume.load

    def close(self) -> None:
        """Close the VecEnv."""
        self.vecenv.close()


def train(
    config: PPOConfig,
    vecenv: VecEnv,
    policy: Policy,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    torch_threads: int | None = None,
    callback: Callable[[dict[str, float]], Any] | None = None,
) -> Trainer:
    """Train until ``config.total_timesteps``; ``callback(metrics)`` after each update (a truthy
    return stops early). Returns the trainer (its env still open)."""
    trainer = Trainer(config, vecenv, policy, device=device, seed=seed, torch_threads=torch_threads)
    while not trainer.done:
        trainer.rollout()
        metrics = trainer.update()
        if callback is not None and callback(metrics):
            break
    return trainer
