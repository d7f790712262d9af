"""The PPO loss and the small formulas around it, as pure functions of tensors.

Names and formulas follow the PPO paper (Schulman et al. 2017, "Proximal Policy Optimization
Algorithms") and CleanRL's ``ppo.py``: the clipped surrogate objective (paper eq. 7), the clipped
value loss (CleanRL's ``clip_vloss``), the entropy bonus, and the combined loss (paper eq. 9)
``loss = pg_loss - ent_coef * entropy + vf_coef * v_loss``. ``approx_kl`` is the low-variance
estimator ``E[(r - 1) - log r]`` (J. Schulman, "Approximating KL divergence", 2020) that CleanRL logs.

Every mean is taken over the rows whose ``mask`` is True (all rows when ``mask`` is None), so
steps of inactive agents (``VecEnv.masks``) count nowhere.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "LOSS_KEYS",
    "NonFiniteLossError",
    "PPOLoss",
    "check_finite",
    "clipped_surrogate",
    "explained_variance",
    "learning_rate",
    "masked_mean",
    "normalize_advantages",
    "ppo_loss",
    "prioritized_segments",
    "value_loss",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` (same shape, bool) is True; ``x.mean()`` when
    ``mask`` is None. NaN when no entry is selected."""
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum()


def normalize_advantages(
    advantages: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(A - mean) / (std + 1e-8)`` over the entries where ``mask`` (CleanRL's ``norm_adv``,
    per minibatch; ``std`` is the unbiased sample standard deviation as ``torch.std``)."""
    if mask is None:
        std, mean = torch.std_mean(advantages)
        return (advantages - mean) / (std + 1e-8)
    count = mask.sum()
    mean = (advantages * mask).sum() / count
    var = ((advantages - mean).square() * mask).sum() / (count - 1).clamp(min=1)
    return (advantages - mean) / (var.sqrt() + 1e-8)


def clipped_surrogate(
    advantages: torch.Tensor,
    ratio: torch.Tensor,
    clip_coef: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The policy loss ``-E[min(r A, clip(r, 1 - eps, 1 + eps) A)]`` (PPO paper eq. 7, negated
    for minimization; ``eps = clip_coef``)."""
    # max(-A r, -A clip(r)) = -min(A r, A clip(r)), exactly: one op fewer.
    surrogate1 = advantages * ratio
    surrogate2 = advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)
    return -masked_mean(torch.min(surrogate1, surrogate2), mask)


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    vf_clip_coef: float | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``0.5 * E[(V - R)^2]``; with ``vf_clip_coef`` the pessimistic maximum with the error of
    ``V_old + clip(V - V_old, -c, c)`` (CleanRL's ``clip_vloss``)."""
    v_loss_unclipped = (new_values - returns).square()
    if vf_clip_coef is None:
        return 0.5 * masked_mean(v_loss_unclipped, mask)
    v_clipped = old_values + (new_values - old_values).clamp(-vf_clip_coef, vf_clip_coef)
    v_loss_clipped = (v_clipped - returns).square()
    return 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask)


class PPOLoss(NamedTuple):
    """``ppo_loss``'s result: ``loss`` (to minimize, with gradient) and its parts (detached)."""

    loss: torch.Tensor
    pg_loss: torch.Tensor
    v_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")  # PPOLoss[1:]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the policy was not updated with it."""


def check_finite(out: PPOLoss, where: str) -> None:
    """Raise ``NonFiniteLossError`` naming ``where`` (e.g. the update and step), the loss terms and
    the usual fixes unless ``out.loss`` is finite. On CUDA this is a host sync."""
    loss = out.loss.item()
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"PPO loss is {loss} at {where}: policy_loss={out.pg_loss.item()}, value_loss="
            f"{out.v_loss.item()}, entropy={out.entropy.item()}. The policy was not updated "
            "with it; lower ppo.learning_rate, enable ppo.normalize_rewards/"
            "normalize_observations, or check the env for NaN/inf observations and rewards"
        )


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    entropy: torch.Tensor,
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    *,
    clip_coef: float,
    vf_clip_coef: float | None,
    ent_coef: float,
    vf_coef: float,
    mask: torch.Tensor | None = None,
) -> PPOLoss:
    """The PPO loss of one minibatch; every tensor has the minibatch's shape (e.g. ``(S, T)``).

    ``advantages`` are used as given (normalize and weight them first); ``vf_clip_coef=None``
    turns value clipping off. ``ratio = exp(new_log_prob - old_log_prob)``.
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    pg_loss = clipped_surrogate(advantages, ratio, clip_coef, mask)
    v_loss = value_loss(new_values, old_values, returns, vf_clip_coef, mask)
    entropy_loss = masked_mean(entropy, mask)
    loss = pg_loss.sub(entropy_loss, alpha=ent_coef).add(v_loss, alpha=vf_coef)
    with torch.no_grad():
        ratio_minus_1 = ratio - 1
        approx_kl = masked_mean(ratio_minus_1 - log_ratio, mask)
        clipfrac = masked_mean((ratio_minus_1.abs() > clip_coef).float(), mask)
    return PPOLoss(
        loss, pg_loss.detach(), v_loss.detach(), entropy_loss.detach(), approx_kl, clipfrac
    )


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """``1 - Var[R - V] / Var[R]`` over the masked entries; NaN when ``Var[R]`` is 0."""
    if mask is not None:
        values, returns = values[mask], returns[mask]
    var_y = returns.var()
    if not var_y > 0:
        return float("nan")
    return float(1 - (returns - values).var() / var_y)


def learning_rate(base: float, schedule: str, progress: float) -> float:
    """``base`` annealed at ``progress`` in [0, 1] of the run: ``"linear"`` to 0, ``"cosine"``
    (half a cosine) to 0, or ``"constant"``."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return base * (1.0 - progress)
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base


def prioritized_segments(
    advantages: torch.Tensor,
    count: int,
    alpha: float,
    beta: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` segments drawn without replacement with probability ``P(i) ~ |A_i|_1 ** alpha``
    (``advantages`` ``(S, T)``), and their importance weights ``(N P(i)) ** -beta / max`` as
    ``(count, 1)`` (prioritized replay, Schaul et al. 2016, as PufferLib applies it to segments)."""
    # The epsilon keeps every segment drawable (sampling is without replacement).
    prio = (advantages.abs().sum(1) + 1e-6).pow(alpha).nan_to_num_(0.0)
    probs = prio / prio.sum()
    idx = torch.multinomial(probs, count, generator=generator)
    weights = (len(probs) * probs[idx]).pow(-beta)
    return idx, (weights / weights.max()).unsqueeze(1)
