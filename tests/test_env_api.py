"""The two env contracts: PufferEnv (+ StepResult, guards) and VecEnv (+ Buffers, NativeVecEnv)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import puffer.envs as envs
from puffer.env import (
    Buffers,
    EnvClosedError,
    PufferEnv,
    ResetNeeded,
    StepResult,
    VecEnv,
    check_int,
)
from puffer.envs.cartpole import CartPoleVec
from puffer.spaces import Box, Dict, Discrete
from puffer.wrappers import Wrapper


class Coin(PufferEnv):
    """Guess a coin: a tiny user env written the simple way."""

    observation_space = Box.uniform([1], 0.0, 1.0)
    action_space = Discrete(2)

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)
        self.coin = int(self.rng.integers(2))
        self.closed = False
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = float(action == self.coin)
        return StepResult(np.ones(1, np.float32), reward, True, False, {"coin": self.coin})

    def close(self):
        self.closed = True


def test_step_result_unpacks_like_gymnasium_and_has_done():
    r = StepResult(np.zeros(1), 1.0, False, True, {"a": 1})
    _obs, reward, terminated, truncated, info = r
    assert (reward, terminated, truncated, info) == (1.0, False, True, {"a": 1})
    assert r.done and not StepResult(0, 0.0, False, False, {}).done
    assert StepResult(0, 0.0, True, False, {}).done


def test_user_env_lifecycle():
    env = Coin()
    with pytest.raises(ResetNeeded, match=r"Coin.step\(\) called before reset\(\)"):
        env.step(0)
    obs, info = env.reset(seed=3)
    assert obs.shape == (1,) and info == {}
    result = env.step(1)
    assert isinstance(result, StepResult) and result.done
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        env.step(1)
    env.reset()
    env.step(0)
    env.close()
    assert env.closed
    env.close()  # twice is fine
    with pytest.raises(EnvClosedError, match=r"Coin.reset\(\) called after close"):
        env.reset()
    with pytest.raises(EnvClosedError, match=r"Coin.step\(\) called after close"):
        env.step(0)
    with Coin() as env2:
        env2.reset()
    assert env2.closed


def test_close_runs_every_close_in_the_class_chain_once():
    """A subclass's close() calling super().close() used to find the env already marked closed,
    so the parent's close (and a Wrapper's closing of the env inside) never ran."""
    calls = []

    class Child(Coin):
        def close(self):
            calls.append("child")
            self.close()  # re-entrant: does not run again
            super().close()

    env = Child()
    env.reset()
    env.close()
    assert calls == ["child"] and env.closed
    env.close()
    assert calls == ["child"]  # a second close() runs nothing
    with pytest.raises(EnvClosedError):
        env.reset()

    class Logged(Wrapper):
        def close(self):
            calls.append("wrapper")
            super().close()

    inner = Coin()
    Logged(inner).close()
    assert calls[-1] == "wrapper" and inner.closed


def test_reset_seed_determinism_of_user_env():
    a, b = Coin(), Coin()
    a.reset(seed=11)
    b.reset(seed=11)
    assert a.coin == b.coin


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        (2, "value 2 out of range"),
        (-1, "value -1 out of range"),
        (1.0, "wrong dtype float64"),
        (np.array([0, 1]), r"wrong shape \(2,\)"),
        (np.float32(np.nan), "wrong dtype float32"),
        (True, "wrong dtype bool"),
    ],
)
def test_user_env_bad_actions_name_env_expected_and_received(action, problem):
    env = Coin()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=problem) as e:
        env.step(action)
    msg = str(e.value)
    assert msg.startswith("Coin.step:") and "expected a value of Discrete(2)" in msg
    assert repr(action).split("(")[0] in msg or str(action) in msg
    env.step(1)  # the refused action changed nothing: the episode goes on


@pytest.mark.parametrize(
    ("action", "problem", "batch_problem"),
    [
        (np.array([1.5], np.float32), "value 1.5 out of range", "value 1.5 out of range in row 1"),
        (np.array([np.nan], np.float32), "NaN", "NaN in row 1"),
        (np.array([0.1, 0.2], np.float32), r"wrong shape \(2,\)", r"wrong batch of shape \(3, 2\)"),
        (np.array([True]), "wrong dtype bool", "wrong dtype bool"),
        (torch.tensor([float("nan")]), "NaN", "NaN in row 1"),
    ],
)
def test_box_action_errors_on_one_agent_and_native_paths(action, problem, batch_problem):
    one = envs.make_one("cartpole", continuous=True)
    one.reset(seed=0)
    with pytest.raises(ValueError, match=problem) as e:
        one.step(action)
    assert "CartPole.step" in str(e.value) and "Box(-1, 1, (1,), float32)" in str(e.value)
    vec = envs.make("cartpole", num_envs=3, continuous=True, seed=0)
    vec.reset()
    batch = np.zeros((3, *np.shape(action)), np.asarray(action).dtype)
    batch[1] = np.asarray(action)
    with pytest.raises(ValueError, match=batch_problem) as e:
        vec.step(batch)
    assert "CartPoleVec.step" in str(e.value) and "Box(-1, 1, (1,), float32)" in str(e.value)


@pytest.mark.parametrize("name", sorted(envs.names()))
def test_native_bad_actions_raise_and_leave_the_env_untouched(name):
    env = envs.make(name, num_envs=4, seed=0)
    env.reset()
    before = env.state()
    n = env.single_action_space.n
    for bad, problem in [
        (np.array([0, 0, n, 0]), f"value {n} out of range in row 2"),
        (np.zeros(3, np.int64), r"wrong batch of shape \(3,\), expected \(4,\)"),
        (np.zeros(4, np.float32), "wrong dtype float32"),
        (np.array([0.0, np.nan, 0, 0]), "wrong dtype float64"),
    ]:
        with pytest.raises(ValueError, match=problem) as e:
            env.step(bad)
        msg = str(e.value)
        assert f"{type(env).__name__}.step" in msg and f"Discrete({n})" in msg  # env, expected
        assert f"got ndarray(shape={bad.shape}, dtype={bad.dtype})" in msg  # received
    after = env.state()
    for key in before:
        if key != "rng":
            np.testing.assert_array_equal(before[key], after[key])
    assert before["rng"] == after["rng"]
    env.step(np.zeros(4, np.int64))


def test_reset_must_accept_seed_checked_at_class_definition():
    with pytest.raises(TypeError, match=r"must accept a seed argument"):

        class NoSeed(PufferEnv):
            def reset(self):
                return 0, {}


def test_wrong_return_types_get_clear_errors():
    class ObsOnly(Coin):
        def reset(self, seed=None):
            super().reset(seed)
            return np.zeros(1, np.float32)

    with pytest.raises(TypeError, match=r"ObsOnly.reset\(\) returned ndarray; it must return"):
        ObsOnly().reset()

    class FourTuple(Coin):
        def step(self, action):
            return np.zeros(1, np.float32), 0.0, True, {}

    env = FourTuple()
    env.reset()
    with pytest.raises(TypeError, match="returned tuple of length 4; it must return StepResult"):
        env.step(0)

    class PlainTuple(Coin):
        def step(self, action):
            return np.zeros(1, np.float32), 0.0, True, False, {}

    env = PlainTuple()
    env.reset()
    assert isinstance(env.step(0), StepResult)  # a gymnasium-style 5-tuple is accepted


def test_gymnasium_spaces_on_a_puffer_env_are_refused_with_a_hint():
    class GymSpaces(Coin):
        observation_space = gymnasium.spaces.Box(0, 1, (1,))

    with pytest.raises(TypeError, match="from_gymnasium"):
        GymSpaces().reset()


def test_subclass_of_subclass_calls_super_through_guards():
    class Loud(Coin):
        def step(self, action):
            result = super().step(action)
            return result._replace(reward=result.reward * 10)

    env = Loud()
    env.reset(seed=1)
    assert env.step(env.coin).reward == 10.0
    with pytest.raises(ResetNeeded):
        env.step(0)


# --- VecEnv -------------------------------------------------------------------------------------


def test_vecenv_returns_views_of_buffers_written_in_place():
    env = CartPoleVec(8, seed=0)
    obs, infos = env.reset()
    assert obs is env.observations and infos == {}
    ids = [id(a) for a in (env.observations, env.rewards, env.terminals, env.truncations)]
    for _ in range(50):
        out = env.step(np.ones(8, np.int64))
        assert [id(a) for a in out[:4]] == ids
    assert env.observations.dtype == np.float32 and env.rewards.dtype == np.float32
    assert env.terminals.dtype == np.bool_ and env.truncations.dtype == np.bool_


def test_vecenv_auto_reset_keeps_final_observation():
    env = CartPoleVec(16, seed=0)
    env.reset()
    prev = env.observations.copy()
    seen = 0
    for _ in range(100):
        obs, _rewards, terms, truncs, infos = env.step(np.ones(16, np.int64))
        done = np.flatnonzero(terms | truncs)
        if len(done):
            seen += len(done)
            final = env.final_observations[done]
            assert (np.abs(final[:, 0]) > 2.4).any() or (np.abs(final[:, 2]) > 0.2094).all()
            assert (np.abs(obs[done]) <= 0.05).all()  # the rows already started again
            assert len(infos["episode_length"]) == len(done)
            # final_obs continues the trajectory: one step beyond the previous observation
            assert np.allclose(final[:, 0], prev[done, 0] + 0.02 * prev[done, 1], atol=1e-5)
        prev = obs.copy()
    assert seen > 16


def test_vecenv_lifecycle_errors():
    env = CartPoleVec(2, seed=0)
    with pytest.raises(ResetNeeded, match=r"CartPoleVec.send\(\) called before reset"):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(ResetNeeded):
        env.recv()
    env.reset()
    env.send(np.zeros(2, np.int64))
    with pytest.raises(RuntimeError, match="send\\(\\) called twice without recv"):
        env.send(np.zeros(2, np.int64))
    env.recv()
    with pytest.raises(RuntimeError, match="recv\\(\\) called without send"):
        env.recv()
    env.close()
    env.close()
    with pytest.raises(EnvClosedError, match="after close"):
        env.reset()
    with pytest.raises(EnvClosedError):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(EnvClosedError):
        env.load_state({})


def test_vecenv_accepts_torch_and_list_actions():
    env = CartPoleVec(3, seed=0)
    env.reset()
    env.step(torch.tensor([0, 1, 0]))
    env.step([1, 1, 0])
    env.step(np.array([[0], [1], [1]]))  # (n, 1) is accepted for Discrete


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None, float("inf"), float("nan")])
def test_vecenv_rejects_bad_num_envs(bad):
    with pytest.raises((ValueError, TypeError), match="num_envs"):
        CartPoleVec(bad)
    with pytest.raises(ValueError, match=rf"CartPoleVec: num_envs={bad!r} must be a positive int"):
        CartPoleVec(bad)  # None, inf and NaN raised errors that did not name num_envs


def test_check_int():
    assert check_int("E", "n", 3) == 3 and check_int("E", "n", 500.0) == 500
    assert type(check_int("E", "n", np.int64(2))) is int
    assert check_int("E", "n", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"E: n=1 must be an int >= 2"):
        check_int("E", "n", 1, minimum=2)


def test_buffers_allocate_slice_and_bind():
    obs_space, act_space = Box(-1, 1, (3,)), Discrete(2)
    specs = Buffers.specs(obs_space, act_space, 5)
    assert specs["observations"] == ((5, 3), np.dtype(np.float32))
    assert specs["actions"] == ((5,), np.dtype(np.int64))
    shared = Buffers.allocate(CartPoleVec(1).single_observation_space, Discrete(2), 6)
    assert len(shared) == 6
    a, b = CartPoleVec(2, seed=1, buffers=shared[0:2]), CartPoleVec(4, seed=2)
    b.bind_buffers(shared[2:6])
    a.reset()
    b.reset()
    assert np.shares_memory(a.observations, shared.observations)
    np.testing.assert_array_equal(shared.observations[2:6], b.observations)
    shared.actions[:] = 1
    b.step(shared.actions[2:6])  # zero copy: the env reads the same memory
    np.testing.assert_array_equal(shared.observations[2:6], b.observations)
    with pytest.raises(ValueError, match=r"buffer observations has shape \(2, 4\)"):
        CartPoleVec(3, buffers=shared[0:2])
    with pytest.raises(TypeError, match="cannot be stored in a VecEnv buffer"):
        Buffers.specs(Dict(a=Discrete(2)), act_space, 2)
    with pytest.raises(TypeError, match="from_gymnasium"):
        Buffers.specs(gymnasium.spaces.Discrete(2), act_space, 2)


def test_load_state_validates_keys_and_shapes():
    env = CartPoleVec(4, seed=0)
    env.reset()
    state = env.state()
    with pytest.raises(ValueError, match="do not match this env's"):
        env.load_state({k: v for k, v in state.items() if k != "steps"})
    with pytest.raises(ValueError, match=r"num_envs=2"):
        CartPoleVec(2, seed=0).load_state(state)


def test_state_survives_torch_weights_only_checkpoint(tmp_path):
    from puffer import checkpoint

    env = CartPoleVec(4, seed=0)
    env.reset()
    for _ in range(7):
        env.step(np.ones(4, np.int64))
    state = env.state()
    tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
    checkpoint.save(checkpoint.make({"policy": {}, "env": tensors}), tmp_path / "c.pt")
    loaded = checkpoint.load(tmp_path / "c.pt")["trainer"]["env"]
    other = CartPoleVec(4)
    other.load_state(loaded)
    a = env.step(np.zeros(4, np.int64))[0].copy()
    b = other.step(np.zeros(4, np.int64))[0].copy()
    np.testing.assert_array_equal(a, b)


def test_vecenv_repr_and_render():
    env = CartPoleVec(2)
    assert repr(env).startswith("CartPoleVec(num_envs=2, obs=Box(")
    assert VecEnv.render(env) is None
