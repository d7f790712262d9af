"""Policies: actor-critics composed of an encoder (MLP, Nature CNN, multi-input for Dict
observations), an optional recurrent core (LSTM) and an action head per action space
(categorical, multi-categorical, Bernoulli, Gaussian); or a custom network.

    policy = puffer.policy.make(PolicyConfig(name="cnn_lstm"), vecenv, seed=0)
    out = policy.act(obs, state, starts)          # ActOutput(action, log_prob, value, state)
    params, values = policy.forward_sequence(obs_segments, state, starts)   # training

Observations reach the policy in their space's dtype: uint8 images stay uint8 until the CNN
scales them. Every policy carries a ``RunningNorm`` as ``obs_norm`` (off unless a trainer enables
it; vector observations only) whose statistics are saved in its ``state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from puffer.policy.base import LSTM, MLP, ActOutput, Policy, State
from puffer.policy.config import PRESETS, PolicyConfig
from puffer.policy.cores import LSTMCore
from puffer.policy.custom import CustomPolicy, build_custom
from puffer.policy.encoders import MLPEncoder, MultiInputEncoder, NatureCNN, is_image
from puffer.policy.heads import (
    BernoulliHead,
    CategoricalHead,
    GaussianHead,
    MultiCategoricalHead,
    make_head,
)
from puffer.policy.layers import ACTIVATIONS, layer_init, mlp
from puffer.policy.norm import RunningNorm
from puffer.spaces import Box, Dict, Space, Tuple

__all__ = [
    "ACTIVATIONS",
    "LSTM",
    "MLP",
    "PRESETS",
    "ActOutput",
    "BernoulliHead",
    "CategoricalHead",
    "CustomPolicy",
    "GaussianHead",
    "LSTMCore",
    "MLPEncoder",
    "MultiCategoricalHead",
    "MultiInputEncoder",
    "NatureCNN",
    "Policy",
    "PolicyConfig",
    "RunningNorm",
    "State",
    "build",
    "layer_init",
    "make",
    "make_encoder",
    "make_head",
    "mlp",
]


def make_encoder(
    config: PolicyConfig, observation_space: Space, original_observation_space: Space | None = None
) -> MLPEncoder | NatureCNN | MultiInputEncoder:
    """The encoder ``config.parts()`` names for these observations. Raises ``ValueError`` when a
    CNN is asked for observations that hold no image."""
    encoder, _ = config.parts()
    if encoder == "mlp":
        dim = math.prod(observation_space.shape)
        return MLPEncoder(dim, config.hidden_sizes, config.activation)
    cnn = dict(
        channels=config.cnn_channels,
        kernels=config.cnn_kernels,
        strides=config.cnn_strides,
        hidden_size=config.cnn_hidden_size,
    )
    original = original_observation_space or observation_space
    if isinstance(original, (Dict, Tuple)):
        return MultiInputEncoder(original, config.hidden_sizes, config.activation, cnn)
    if isinstance(observation_space, Box) and len(observation_space.shape) in (2, 3):
        return NatureCNN(observation_space.shape, scale=is_image(observation_space), **cnn)
    raise ValueError(
        f"policy encoder 'cnn' needs image observations (a Box of 2 or 3 axes, e.g. (84, 84, 3) "
        f"or (4, 84, 84), uint8 to be scaled by 1/255); got {observation_space!r}: use policy=mlp"
    )


def build(
    config: PolicyConfig,
    observation_space: Space,
    action_space: Space,
    *,
    original_observation_space: Space | None = None,
    seed: int | None = None,
) -> Policy:
    """The policy ``config`` describes for these spaces (``original_observation_space``: the
    Dict/Tuple space a flat observation space came from). ``seed`` makes the initial weights
    reproducible without touching the global torch RNG. Raises ``ValueError`` naming the setting
    or space that cannot be built (an action space no head can train, a CNN without images...)."""
    config.validate()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if config.name == "custom":
            return build_custom(
                str(config._target_),
                dict(config.kwargs),
                observation_space,
                action_space,
                original_observation_space,
                config.init_log_std,
            )
        encoder = make_encoder(config, observation_space, original_observation_space)
        recurrent = config.parts()[1] == "lstm"
        if isinstance(encoder, MLPEncoder):  # the classes checkpoints name
            if recurrent:
                return LSTM(
                    observation_space,
                    action_space,
                    encoder=encoder,
                    lstm_hidden_size=config.lstm_hidden_size,
                    init_log_std=config.init_log_std,
                )
            return MLP(
                observation_space, action_space, encoder=encoder, init_log_std=config.init_log_std
            )
        core = LSTMCore(encoder.output_size, config.lstm_hidden_size) if recurrent else None
        return Policy(
            observation_space, action_space, encoder, core, init_log_std=config.init_log_std
        )


def make(config: PolicyConfig, vecenv: Any, *, seed: int | None = None) -> Policy:
    """The policy ``config`` names for ``vecenv``'s single observation and action spaces (and its
    ``original_observation_space``, when the env flattened Dict/Tuple observations). See
    ``build``."""
    return build(
        config,
        vecenv.single_observation_space,
        vecenv.single_action_space,
        original_observation_space=getattr(vecenv, "original_observation_space", None),
        seed=seed,
    )
