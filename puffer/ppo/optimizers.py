"""The optimizers of a PPO update and the gradient all-reduce of distributed training.

``torch.optim.Adam`` for everything, or with ``optimizer="muon"`` ``torch.optim.Muon`` for the 2-D
hidden weights (Muon orthogonalizes matrix updates; Jordan et al. 2024) and Adam for the rest.
Adam is ``fused=True`` (one kernel per step): on the CPU it steps a small MLP in about a third of
the time ``foreach=True`` takes (measured here: 128 vs 390 us).
"""

from __future__ import annotations

import torch
from torch import nn

from puffer.policy import Policy
from puffer.ppo.config import PPOConfig

__all__ = ["average_gradients", "gradient_step", "make_optimizers", "set_learning_rate"]


def make_optimizers(config: PPOConfig, policy: Policy) -> list[torch.optim.Optimizer]:
    """``[Adam]``, or for ``optimizer="muon"`` ``[Muon (2-D hidden weights), Adam (the rest)]``."""
    adam = dict(
        lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps
    )
    params = [p for p in policy.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return [torch.optim.Adam(params, **adam, fused=True)]
    # Muon orthogonalizes 2-D hidden weights; heads, biases and the log-std stay on Adam.
    heads = {id(p) for m in (policy.head, policy.critic) for p in m.parameters()}
    hidden = [p for p in params if p.ndim == 2 and id(p) not in heads]
    rest = [p for p in params if p.ndim != 2 or id(p) in heads]
    muon = torch.optim.Muon(
        hidden, lr=config.learning_rate, weight_decay=0.0, adjust_lr_fn="match_rms_adamw"
    )
    return [muon, torch.optim.Adam(rest, **adam, fused=True)]


def set_learning_rate(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    """Set every parameter group's learning rate (the schedule's value for this update)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def gradient_step(
    optimizers: list[torch.optim.Optimizer],
    params: list[nn.Parameter],
    loss: torch.Tensor,
    max_grad_norm: float,
) -> None:
    """One step on ``loss``: zero the gradients, backpropagate, average them across ranks
    (``average_gradients``), clip their global norm to ``max_grad_norm``, step every optimizer."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(params)
    nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    for opt in optimizers:
        opt.step()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average ``params``' gradients over the ranks of the default process group with one
    all-reduce of one flat buffer; does nothing when ``torch.distributed`` is not initialized."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, part in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p)
