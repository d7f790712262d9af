"""``Trainer``: PPO on a ``VecEnv``: ``evaluate()`` collects a rollout, ``train()`` updates the policy.

    trainer = Trainer(PPOConfig(total_timesteps=100_000), vecenv, policy)
    while not trainer.done:
        trainer.evaluate()
        metrics = trainer.train()

``train(config, vecenv, policy)`` runs that loop in one call.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from puffer import checkpoint
from puffer.env import VecEnv
from puffer.policy import Policy, State
from puffer.ppo.advantage import compute_puff_advantage
from puffer.ppo.buffer import ExperienceBuffer
from puffer.ppo.config import PPOConfig
from puffer.ppo.normalize import RewardNorm
from puffer.ppo.optim import Adam

__all__ = ["NonFiniteLossError", "Trainer", "resolve_device", "train"]

FORMAT = "puffer.ppo.Trainer/1"
RECENT_EPISODES = 100


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the policy was not updated with it."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _make_optimizers(config: PPOConfig, policy: Policy) -> list[Any]:
    """``[Adam]``, or for ``optimizer="muon"`` ``[Muon (2-D hidden weights), Adam (the rest)]``."""
    adam = dict(
        lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps
    )
    params = [p for p in policy.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return [Adam(params, **adam)]
    if not hasattr(torch.optim, "Muon"):
        raise ValueError(
            f"ppo.optimizer='muon' needs torch.optim.Muon (torch >= 2.9); this is torch "
            f"{torch.__version__}: use optimizer=adam"
        )
    # Muon orthogonalizes 2-D hidden weights; heads, biases and the log-std stay on Adam.
    heads = {id(p) for m in (policy.head, policy.critic) for p in m.parameters()}
    hidden = [p for p in params if p.ndim == 2 and id(p) not in heads]
    rest = [p for p in params if p.ndim != 2 or id(p) in heads]
    muon = torch.optim.Muon(
        hidden, lr=config.learning_rate, weight_decay=0.0, adjust_lr_fn="match_rms_adamw"
    )
    return [muon, Adam(rest, **adam)]


def _numpy_rng_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]


def _set_numpy_rng_state(state: list[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))


class Trainer:
    """PPO for ``policy`` on ``vecenv`` with ``config``.

    ``evaluate()`` collects one rollout of ``config.horizon`` steps per env row and returns episode
    stats; ``train()`` runs one PPO update on it and returns the metrics dict (see
    docs/architecture.md). ``global_step`` counts env steps, ``epoch`` updates; ``done`` is true
    once ``global_step >= config.total_timesteps``.

    ``device="auto"`` picks CUDA when available; ``seed`` seeds the env reset, action sampling and
    minibatch order (same seed on CPU: identical run); ``torch_threads`` sets torch's intra-op
    threads for the process. ``state_dict()`` holds everything needed to continue bit-exactly.
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
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError(f"torch_threads={torch_threads!r} must be a positive int or None")
            torch.set_num_threads(int(torch_threads))
        self.config = config
        self.vecenv = vecenv
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.policy = policy.to(self.device)
        self.policy.obs_norm.enabled = config.normalize_observations
        self.optimizers = _make_optimizers(config, self.policy)
        self.num_envs = vecenv.num_envs
        self.batch_size = self.num_envs * config.horizon
        self.num_updates = max(1, math.ceil(config.total_timesteps / self.batch_size))
        head = self.policy.head
        self.buffer = ExperienceBuffer(
            self.num_envs,
            config.horizon,
            vecenv.single_observation_space.shape,
            vecenv.single_observation_space.dtype,
            head.action_shape,
            head.action_dtype,
            self.policy.initial_state(1, self.device),
            self.device,
        )
        self.reward_norm = (
            RewardNorm(self.num_envs, config.gamma, self.device)
            if config.normalize_rewards
            else None
        )
        self.generator = torch.Generator(self.device).manual_seed(self.seed)
        self.shuffle_generator = torch.Generator().manual_seed(self.seed + 1)
        self.global_step = 0
        self.epoch = 0
        # Rollout state carried across rollouts (and checkpoints).
        self._state: State = None
        self._pending: tuple[torch.Tensor, np.ndarray, torch.Tensor] | None = None
        self._stored = np.zeros(self.num_envs, bool)  # the row's in-flight step is in the buffer
        self._ptr = np.zeros(self.num_envs, np.int64)
        self._row_ids = np.arange(self.num_envs)
        self._fresh = np.ones(self.num_envs, bool)  # not yet received since the env's reset
        self._recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RECENT_EPISODES))
        self._episodes: dict[str, list[np.ndarray]] = defaultdict(list)
        self._collected = False
        self._times = {"env": 0.0, "forward": 0.0}
        self._start_episodes(self.seed)

    # -- properties --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The step budget is spent: ``global_step >= config.total_timesteps``."""
        return self.global_step >= self.config.total_timesteps

    @property
    def learning_rate(self) -> float:
        """The scheduled learning rate for the next update."""
        c = self.config
        progress = min(self.epoch / self.num_updates, 1.0)
        if c.lr_schedule == "linear":
            return c.learning_rate * (1.0 - progress)
        if c.lr_schedule == "cosine":
            return c.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))
        return c.learning_rate

    def recent_episodes(self, key: str = "episode_return") -> list[float]:
        """``key``'s values for the last 100 episodes that ended (oldest first)."""
        return list(self._recent.get(key, ()))

    # -- rollout -----------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Collect ``horizon`` steps from every env row into ``buffer``.

        Returns ``{"env/<key>": mean}`` over the episodes that ended during the rollout.
        """
        self._ptr[:] = 0
        self._episodes.clear()
        self._times = {"env": 0.0, "forward": 0.0}
        complete = np.zeros(self.num_envs, bool)
        with torch.inference_mode():
            while not self._rollout_step(complete):
                pass
        self._collected = True
        return self._episode_means()

    def _start_episodes(self, seed: int) -> None:
        """Reset every row and receive the first batch. Between rollouts the trainer always holds
        the batch awaiting actions (``_pending``): the env is never mid-step when ``state_dict``
        saves it, even before the first rollout."""
        self.vecenv.async_reset(seed)
        self._state = self.policy.initial_state(self.num_envs, self.device)
        self._stored[:] = False
        self._fresh[:] = True
        obs, env_ids, starts, _ = self._recv()
        self._pending = (obs, env_ids, starts)

    def _recv(self) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, tuple[torch.Tensor, ...]]:
        """The next batch: observations, env ids, episode starts, and the rewards, terminals and
        truncations that answer these rows' in-flight steps."""
        t0 = time.perf_counter()
        obs, rewards, terminals, truncations, infos, env_ids = self.vecenv.recv()
        self._times["env"] += time.perf_counter() - t0
        for key, values in infos.items():
            self._episodes[key].append(np.asarray(values, np.float64).copy())
            self._recent[key].extend(np.asarray(values, np.float64).tolist())
        device = self.device
        obs_t = torch.from_numpy(obs).to(device, non_blocking=True)
        terminals_t = torch.from_numpy(terminals).to(device, non_blocking=True)
        truncations_t = torch.from_numpy(truncations).to(device, non_blocking=True)
        rewards_t = torch.from_numpy(rewards).to(device, non_blocking=True)
        starts = terminals_t | truncations_t
        if self._fresh.any():  # the first observations after a reset start episodes too
            starts |= torch.from_numpy(self._fresh[env_ids]).to(device)
            self._fresh[env_ids] = False
        return obs_t, env_ids, starts, (rewards_t, terminals_t, truncations_t)

    def _rollout_step(self, complete: np.ndarray) -> bool:
        """Process one batch; True when every row has ``horizon`` steps and a bootstrap value."""
        if self._pending is not None:  # received at the end of the last rollout, not yet acted on
            (obs, env_ids, starts), results = self._pending, None
        else:
            obs, env_ids, starts, results = self._recv()
        all_rows = len(env_ids) == self.num_envs and (env_ids == self._row_ids).all()
        rows = slice(None) if all_rows else torch.from_numpy(np.asarray(env_ids)).to(self.device)
        state = self._rows_state(rows)

        t0 = time.perf_counter()
        params, value, next_state = self.policy(obs, state, starts)
        if results is not None:
            self._finish_steps(env_ids, all_rows, results, value, state, complete)
        if complete.all():
            self._pending = (obs, env_ids, starts)
            self._times["forward"] += time.perf_counter() - t0
            return True
        self._pending = None
        action, log_prob = self.policy.head.sample(params, self.generator)
        self._store_steps(env_ids, all_rows, state, obs, action, log_prob, value, starts)
        self._set_rows_state(rows, next_state)
        env_actions = self.policy.head.to_env(action)
        self._times["forward"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        self.vecenv.send(env_actions)
        self._times["env"] += time.perf_counter() - t0
        self.global_step += len(env_ids)
        return False

    def _finish_steps(
        self,
        env_ids: np.ndarray,
        all_rows: bool,
        results: tuple[torch.Tensor, ...],
        value: torch.Tensor,
        state: State,
        complete: np.ndarray,
    ) -> None:
        """Record the rewards and ends that answer the rows' in-flight stored steps, and the value
        of what comes next (the new observation's, or the final one's where truncated)."""
        stored = self._stored[env_ids]
        if not stored.any():
            return
        buf = self.buffer
        rewards, terminals, truncations = results
        at, pick = self._locate(env_ids, stored, -1, all_rows), self._picker(stored)
        buf.rewards[at] = pick(rewards)
        buf.terminals[at] = pick(terminals)
        buf.truncations[at] = pick(truncations)
        buf.next_values[at] = pick(value)
        if truncations.any():
            truncated = truncations.cpu().numpy() & stored
            if truncated.any():
                self._bootstrap_truncated(env_ids, truncated, state)
        self._stored[env_ids] = False
        complete[env_ids] |= stored & (self._ptr[env_ids] == self.config.horizon)

    def _store_steps(
        self,
        env_ids: np.ndarray,
        all_rows: bool,
        state: State,
        obs: torch.Tensor,
        action: torch.Tensor,
        log_prob: torch.Tensor,
        value: torch.Tensor,
        starts: torch.Tensor,
    ) -> None:
        """Write this step for the rows that still need steps (a row with ``horizon`` steps keeps
        acting until the others catch up; those steps are not stored)."""
        collect = self._ptr[env_ids] < self.config.horizon
        if collect.any():
            buf = self.buffer
            at, pick = self._locate(env_ids, collect, 0, all_rows), self._picker(collect)
            first = collect & (self._ptr[env_ids] == 0)
            if state is not None and first.any():
                segments = torch.from_numpy(np.asarray(env_ids)[first]).to(self.device)
                rows = torch.from_numpy(first).to(self.device)
                for dst, src in zip(buf.initial_state, state):
                    dst[segments] = src[rows]
            buf.observations[at] = pick(obs)
            buf.actions[at] = pick(action)
            buf.log_probs[at] = pick(log_prob)
            buf.values[at] = pick(value)
            buf.starts[at] = pick(starts)
        self._stored[env_ids] = collect
        self._ptr[env_ids] += collect

    def _picker(self, mask: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
        """Selects a batch tensor's rows where ``mask``."""
        if mask.all():
            return lambda x: x
        rows = torch.from_numpy(mask).to(self.device)
        return lambda x: x[rows]

    def _locate(self, env_ids: np.ndarray, mask: np.ndarray, offset: int, all_rows: bool) -> Any:
        """Buffer index of step ``ptr + offset`` for the rows ``env_ids[mask]``."""
        if all_rows and mask.all() and (self._ptr == self._ptr[0]).all():
            return (slice(None), int(self._ptr[0]) + offset)  # synchronous: one column
        steps = self._ptr[env_ids][mask] + offset
        rows = torch.from_numpy(np.asarray(env_ids)[mask]).to(self.device)
        return (rows, torch.from_numpy(steps).to(self.device))

    def _bootstrap_truncated(self, env_ids: np.ndarray, trunc: np.ndarray, state: State) -> None:
        """``next_values`` of truncated steps: the value of the episode's true final observation."""
        ids = np.asarray(env_ids)[trunc]
        final_obs = torch.from_numpy(self.vecenv.final_observations[ids]).to(self.device)
        sel = torch.from_numpy(trunc).to(self.device)
        final_state = None if state is None else tuple(s[sel] for s in state)
        _, final_value, _ = self.policy(final_obs, final_state, None)
        rows = torch.from_numpy(ids).to(self.device)
        self.buffer.next_values[rows, torch.from_numpy(self._ptr[ids] - 1).to(self.device)] = (
            final_value
        )

    def _rows_state(self, rows: Any) -> State:
        if self._state is None:
            return None
        return self._state if isinstance(rows, slice) else tuple(s[rows] for s in self._state)

    def _set_rows_state(self, rows: Any, state: State) -> None:
        if state is None or self._state is None:
            return
        if isinstance(rows, slice):
            self._state = state
        else:
            for dst, src in zip(self._state, state):
                dst[rows] = src

    def _episode_means(self) -> dict[str, float]:
        return {
            f"env/{key}": float(np.concatenate(parts).mean())
            for key, parts in self._episodes.items()
            if parts and sum(len(p) for p in parts)
        }

    # -- update ------------------------------------------------------------------------------------

    def train(self) -> dict[str, float]:
        """One PPO update on the collected rollout; returns the metrics dict."""
        if not self._collected:
            raise RuntimeError(
                "Trainer.train() called without a new rollout: call evaluate() first"
            )
        self._collected = False
        c, buf, policy = self.config, self.buffer, self.policy
        t0 = time.perf_counter()
        lr = self.learning_rate
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

        rewards = buf.rewards
        if self.reward_norm is not None:
            rewards = self.reward_norm(rewards, buf.terminals | buf.truncations)
        advantages = compute_puff_advantage(
            rewards,
            buf.values,
            buf.next_values,
            buf.terminals,
            buf.truncations,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
        )
        returns = advantages + buf.values

        segments = buf.segments // c.num_minibatches
        prioritized = c.prio_alpha > 0
        beta = c.prio_beta0 + (1 - c.prio_beta0) * min(self.epoch / self.num_updates, 1.0)
        totals: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        count = 0
        stop = False
        for _ in range(c.update_epochs):
            if c.num_minibatches > 1 and not prioritized:
                order = torch.randperm(buf.segments, generator=self.shuffle_generator)
            for m in range(c.num_minibatches):
                weights = None
                if prioritized:
                    idx, weights = self._prioritized(advantages, segments, beta)
                elif c.num_minibatches == 1:
                    idx = None  # the whole rollout: no gather needed
                else:
                    idx = order[m * segments : (m + 1) * segments].to(self.device)
                stats = self._minibatch(idx, advantages, returns, rewards, weights)
                if stats is None:
                    stop = True
                    break
                for key, value in stats.items():
                    totals[key] += value
                count += 1
            if stop:
                break

        values, ret = buf.values.flatten(), returns.flatten()
        var_y = ret.var()
        explained = float("nan") if var_y == 0 else float(1 - (ret - values).var() / var_y)
        if policy.obs_norm.enabled:
            policy.obs_norm.update(buf.observations.reshape(buf.size, -1))
        self.epoch += 1
        learn = time.perf_counter() - t0
        elapsed = self._times["env"] + self._times["forward"] + learn
        metrics = {
            "global_step": float(self.global_step),
            "epoch": float(self.epoch),
            "sps": buf.size / elapsed if elapsed > 0 else float("nan"),
            "learning_rate": lr,
            **{f"losses/{k}": float(v) / max(count, 1) for k, v in totals.items()},
            "losses/explained_variance": explained,
            "time/env": self._times["env"],
            "time/forward": self._times["forward"],
            "time/learn": learn,
            **self._episode_means(),
        }
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
            metrics.setdefault(f"losses/{key}", float("nan"))
        return metrics

    def _prioritized(
        self, advantages: torch.Tensor, segments: int, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segments drawn with probability ``|A|_1 ** alpha`` and their importance weights."""
        # The epsilon keeps every segment drawable (sampling is without replacement).
        prio = (advantages.abs().sum(1) + 1e-6).pow(self.config.prio_alpha).nan_to_num_(0.0)
        probs = prio / prio.sum()
        idx = torch.multinomial(probs, segments, generator=self.generator)
        weights = (len(probs) * probs[idx]).pow(-beta)
        return idx, (weights / weights.max()).unsqueeze(1)

    def _minibatch(
        self,
        idx: torch.Tensor | None,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        rewards: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> dict[str, torch.Tensor] | None:
        """One gradient step on segments ``idx`` (None: all); None when the KL early stop fires."""
        c, policy, buf = self.config, self.policy, self.buffer
        take = (lambda x: x) if idx is None else (lambda x: x[idx])
        state = tuple(take(x) for x in buf.initial_state) or None
        starts = take(buf.starts) if policy.is_recurrent else None
        params, new_values = policy.forward_sequence(take(buf.observations), state, starts)
        actions, old_log_probs, old_values = (
            take(buf.actions),
            take(buf.log_probs),
            take(buf.values),
        )
        log_prob, entropy = policy.head.log_prob_entropy(params, actions)
        log_ratio = log_prob - old_log_probs
        ratio = log_ratio.exp()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clipfrac = ((ratio - 1).abs() > c.clip_coef).float().mean()
        if c.target_kl is not None and approx_kl.item() > c.target_kl:
            return None

        adv, ret = take(advantages), take(returns)
        if c.refresh_advantages:  # V-trace/puff advantages with the current importance ratios
            with torch.no_grad():
                adv = compute_puff_advantage(
                    take(rewards),
                    old_values,
                    take(buf.next_values),
                    take(buf.terminals),
                    take(buf.truncations),
                    ratio,
                    gamma=c.gamma,
                    gae_lambda=c.gae_lambda,
                    rho_clip=c.vtrace_rho_clip,
                    c_clip=c.vtrace_c_clip,
                )
                ret = adv + old_values
        if c.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if weights is not None:
            adv = adv * weights

        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - c.clip_coef, 1 + c.clip_coef))
        pg_loss = pg_loss.mean()
        if c.clip_vloss:
            clipped = old_values + (new_values - old_values).clamp(-c.vf_clip_coef, c.vf_clip_coef)
            v_loss = 0.5 * torch.max((new_values - ret).square(), (clipped - ret).square()).mean()
        else:
            v_loss = 0.5 * (new_values - ret).square().mean()
        entropy_mean = entropy.mean()
        loss = pg_loss - c.ent_coef * entropy_mean + c.vf_coef * v_loss
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"PPO loss is {loss.item()} at update {self.epoch + 1} (global_step "
                f"{self.global_step}): policy_loss={pg_loss.item()}, value_loss={v_loss.item()}, "
                f"entropy={entropy_mean.item()}. The policy was not updated with it; lower "
                "ppo.learning_rate, enable ppo.normalize_rewards/normalize_observations, or "
                "check the env for NaN/inf observations and rewards"
            )
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), c.max_grad_norm, foreach=True)
        for opt in self.optimizers:
            opt.step()
        return {
            "policy_loss": pg_loss.detach(),
            "value_loss": v_loss.detach(),
            "entropy": entropy_mean.detach(),
            "approx_kl": approx_kl,
            "clipfrac": clipfrac,
        }

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything for a bit-exact resume, as plain tensors, lists and numbers."""
        env_state = None
        if callable(getattr(self.vecenv, "state", None)):
            with contextlib.suppress(NotImplementedError):
                env_state = self.vecenv.state()
        pending = None
        if self._pending is not None:
            obs, env_ids, starts = self._pending
            pending = {
                "observations": obs.detach().cpu().clone(),
                "env_ids": torch.tensor(env_ids, dtype=torch.int64),  # a copy, as the others
                "starts": starts.cpu().clone(),
            }
        return {
            "format": FORMAT,
            "policy_class": type(self.policy).__name__,
            "policy": self.policy.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "global_step": self.global_step,
            "epoch": self.epoch,
            "reward_norm": None if self.reward_norm is None else self.reward_norm.state_dict(),
            "rng": {
                "generator": self.generator.get_state(),
                "shuffle_generator": self.shuffle_generator.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": _numpy_rng_state(),
            },
            "env": env_state,
            "rollout": {
                "state": None if self._state is None else [s.cpu().clone() for s in self._state],
                "pending": pending,
                "stored": torch.from_numpy(self._stored.copy()),
                "fresh": torch.from_numpy(self._fresh.copy()),
                "recent": {k: list(v) for k, v in self._recent.items()},
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output; raises ``ValueError`` naming what does not fit."""
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} state (format={state.get('format')!r})")
        if state["policy_class"] != type(self.policy).__name__:
            raise ValueError(
                f"the checkpoint holds a {state['policy_class']} policy, this trainer has a "
                f"{type(self.policy).__name__}: set policy.name to match"
            )
        try:
            self.policy.load_state_dict(state["policy"])
        except RuntimeError as e:
            detail = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip())
            raise ValueError(
                f"the policy's weights do not fit ({detail or e}): build the policy with the "
                "checkpoint's policy config and env"
            ) from None
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"the checkpoint has {len(state['optimizers'])} optimizer(s), this trainer "
                f"{len(self.optimizers)}: set ppo.optimizer as in the checkpoint's run"
            )
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        if self.reward_norm is not None and state["reward_norm"] is not None:
            self.reward_norm.load_state_dict(state["reward_norm"])
        rng = state["rng"]
        self.generator.set_state(rng["generator"].cpu())  # generator states live on the CPU
        self.shuffle_generator.set_state(rng["shuffle_generator"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        _set_numpy_rng_state(rng["numpy"])
        rollout = state["rollout"]
        self._recent.clear()
        for key, values in rollout["recent"].items():
            self._recent[key].extend(values)
        restored = False
        if state["env"] is not None:
            try:
                self.vecenv.load_state(state["env"])
                restored = True
            except NotImplementedError:
                pass
        self._collected = False
        if restored:
            saved = rollout["state"]
            self._state = None if saved is None else tuple(s.to(self.device) for s in saved)
            pending = rollout["pending"]
            self._pending = None
            if pending is not None:
                self._pending = (
                    pending["observations"].to(self.device),
                    pending["env_ids"].cpu().numpy(),
                    pending["starts"].to(self.device),
                )
            self._stored = rollout["stored"].cpu().numpy().copy()
            self._fresh = rollout["fresh"].cpu().numpy().copy()
        else:  # the env cannot be restored: start fresh episodes, keep the learned state
            self._start_episodes(self.seed + self.epoch)

    def save(self, path: str | Any, meta: dict[str, Any] | None = None) -> Any:
        """Write ``checkpoint.make(state_dict(), meta)`` to ``path`` atomically; returns the path."""
        env = {
            "num_envs": self.vecenv.num_envs,
            "num_workers": getattr(self.vecenv, "num_workers", None),
        }
        run = {"global_step": self.global_step, "update_count": self.epoch, "env": env}
        return checkpoint.save(checkpoint.make(self.state_dict(), {**run, **(meta or {})}), path)

    def load(self, path: str | Any) -> dict[str, Any]:
        """Restore any puffer checkpoint; ``CheckpointError`` naming the file if it does not fit.
        An env state from another worker layout is dropped (fresh episodes, one warning)."""
        import warnings

        ckpt = checkpoint.load(path)
        if ckpt.get("format") != "puffer.checkpoint":
            raise checkpoint.CheckpointError(f"checkpoint {path} is not a puffer checkpoint")
        state = dict(ckpt["trainer"])
        saved = state.get("env") or {}
        ours = getattr(self.vecenv, "num_workers", None)
        if isinstance(saved, dict) and saved.get("num_workers") not in (None, ours):
            warnings.warn(
                f"resumed at global_step={state['global_step']} with num_workers "
                f"{saved['num_workers']} -> {ours} (fresh episodes): the continuation is not "
                "bit-exact",
                stacklevel=2,
            )
            state["env"] = None
        try:
            self.load_state_dict(state)
        except (KeyError, ValueError) as e:
            detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise checkpoint.CheckpointError(
                f"checkpoint {path} does not fit this trainer: {detail}"
            ) from None
        return ckpt

    # The contract's names (CONTRACTS.md) until the trainer branch lands: the front end uses these.
    def rollout(self) -> dict[str, float]:
        return self.evaluate()

    def update(self) -> dict[str, float]:
        return self.train()

    @property
    def update_count(self) -> int:
        return self.epoch

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
        trainer.evaluate()
        metrics = trainer.train()
        if callback is not None and callback(metrics):
            break
    return trainer
