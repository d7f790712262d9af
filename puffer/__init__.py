"""puffer: fast, config-driven reinforcement learning.

The env API at the top level: ``puffer.PufferEnv``, ``puffer.StepResult``, ``puffer.VecEnv``,
``puffer.spaces``, ``puffer.check_env``, ``puffer.GymnasiumEnv``; built-in envs in ``puffer.envs``.
"""

__version__ = "0.1.0"

from puffer import spaces
from puffer.checker import EnvCheckError, check_env
from puffer.emulation import GymnasiumEnv
from puffer.env import PufferEnv, StepResult, VecEnv

__all__ = [
    "EnvCheckError",
    "GymnasiumEnv",
    "PufferEnv",
    "StepResult",
    "VecEnv",
    "__version__",
    "check_env",
    "spaces",
]
