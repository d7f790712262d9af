"""puffer.vector: make, Serial and Multiprocessing give the same trajectories; async batches; state."""

from __future__ import annotations

import functools
import pickle
import random
import time
from typing import Any

import gymnasium
import numpy as np
import psutil
import pytest
import torch

import puffer.envs
import puffer.vector as V
from puffer.env import EnvClosedError, PufferEnv, ResetNeeded, StepResult
from puffer.envs.cartpole import CartPole, CartPoleVec
from puffer.seeding import rank_seed, row_seed
from puffer.spaces import Box, Dict, Discrete
from puffer.wrappers import EpisodeStats

pytestmark = pytest.mark.usefixtures("no_leftover_workers")


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DictObs(PufferEnv):
    """A one-agent env with Dict observations and an env-specific ``success`` info."""

    observation_space = Dict(pos=Box(-10.0, 10.0, (2,)), flag=Discrete(3))
    action_space = Discrete(3)

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def _obs(self) -> dict[str, Any]:
        return {"pos": self.pos.astype(np.float32), "flag": np.int64(self.flag)}

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos = self.rng.uniform(-1, 1, 2)
        self.flag = int(self.rng.integers(3))
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> StepResult:
        self.pos += self.rng.normal(0, 0.5, 2) + (int(action) - 1)
        self.pos = np.clip(self.pos, -10, 10)
        self.t += 1
        done = bool(np.abs(self.pos).max() > 5)
        info = {"success": done and self.flag == 1, "note": "ignored: not a number"}
        return StepResult(self._obs(), float(-np.abs(self.pos).sum()), done, self.t >= 20, info)


class ManyInfos(PufferEnv):
    """One-step episodes reporting 400 info keys: more than the shared infos area holds."""

    observation_space = Box(-1.0, 1.0, (1,))
    action_space = Discrete(2)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> StepResult:
        info = {f"key_{i:03d}": float(self.rng.random()) for i in range(400)}
        return StepResult(np.zeros(1, np.float32), 1.0, True, False, info)


class Jittery(CartPole):
    """CartPole whose steps take a random 0-2 ms (from the OS, not the env's seeded RNG)."""

    _timing = random.SystemRandom()

    def step(self, action: Any) -> StepResult:
        time.sleep(self._timing.random() * 0.002)
        return super().step(action)


def gym_cartpole() -> gymnasium.Env:
    return gymnasium.make("CartPole-v1")


def two_row_cartpole() -> CartPoleVec:
    return CartPoleVec(num_envs=2)


CREATORS = {
    "builtin": "cartpole",
    "builtin-squared": "squared",
    "one-agent": CartPole,
    "gymnasium": gym_cartpole,
    "native-vec": two_row_cartpole,
    "dict-obs": DictObs,
}


def rollout(env: Any, steps: int, seed: int | None = None, policy: str = "random") -> list[Any]:
    """Copies of everything ``env`` returns over ``steps`` steps, for exact comparison."""
    obs, infos = env.reset(seed)
    rng = np.random.default_rng(123)
    out: list[Any] = [obs.copy(), dict(infos)]
    for _ in range(steps):
        if policy == "random":
            actions = env.single_action_space.sample_batch(env.num_envs, rng)
        else:
            actions = (env.observations[:, 2] > 0).astype(np.int64)
        obs, rewards, terminals, truncations, infos = env.step(actions)
        done = terminals | truncations
        out += [obs.copy(), rewards.copy(), terminals.copy(), truncations.copy()]
        out += [env.final_observations[done].copy(), {k: v.copy() for k, v in infos.items()}]
    return out


def assert_same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        if isinstance(x, dict):
            assert x.keys() == y.keys(), f"item {i}: info keys {x.keys()} != {y.keys()}"
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"item {i}, info {k}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"item {i}")


def episodes(trace: list[Any]) -> int:
    return sum(len(x.get("episode_return", ())) for x in trace if isinstance(x, dict))


# --- the same trajectories on every backend --------------------------------------------------------


@pytest.mark.parametrize("name", list(CREATORS))
def test_serial_and_multiprocessing_give_identical_trajectories(name: str) -> None:
    creator = CREATORS[name]
    with V.make(creator, 8, "serial", num_workers=2, seed=7) as serial:
        a = rollout(serial, 120)
    with V.make(creator, 8, "multiprocessing", num_workers=2, seed=7) as multi:
        b = rollout(multi, 120)
    assert_same(a, b)
    assert episodes(a) > 0, "the comparison should cover ended episodes"
    c = rollout(V.make(creator, 8, "serial", num_workers=2, seed=8), 5)
    assert not np.array_equal(a[0], c[0]), "another seed should give other observations"


def test_serial_with_one_worker_is_the_native_env() -> None:
    with V.make("cartpole", 16, seed=3) as env:
        a = rollout(env, 200, policy="balance")
    native = puffer.envs.make("cartpole", num_envs=16)
    assert_same(a, rollout(native, 200, seed=row_seed(3, 0), policy="balance"))


def test_row_i_is_seeded_row_seed_of_seed_and_i() -> None:
    with V.make(CartPole, 4, seed=10) as env:
        obs, _ = env.reset()
        for i in range(4):
            np.testing.assert_array_equal(obs[i], CartPole().reset(row_seed(10, i))[0])
        obs, _ = env.reset(seed=20)
        np.testing.assert_array_equal(obs[3], CartPole().reset(row_seed(20, 3))[0])
    with V.make(CartPole, 4, num_workers=2, seed=10) as env:  # whatever the split
        np.testing.assert_array_equal(env.reset()[0][3], CartPole().reset(row_seed(10, 3))[0])
    with V.make("cartpole", 8, num_workers=2, seed=10) as env:  # a native block: its first row
        obs, _ = env.reset()
        native = puffer.envs.make("cartpole", 4).reset(row_seed(10, 4))[0]
        np.testing.assert_array_equal(obs[4:], native)


@pytest.mark.parametrize("creator", ["cartpole", CartPole, gym_cartpole, two_row_cartpole])
@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_adjacent_seeds_share_no_stream(creator: Any, backend: str) -> None:
    """Runs seeded s and s+1 (8 rows, 2 workers) start no row alike; the same seed repeats."""

    def first(seed: int) -> np.ndarray:
        with V.make(creator, 8, backend, num_workers=2, seed=seed) as env:
            return env.reset()[0].copy()

    a, b = first(0), first(1)
    shared = {tuple(row) for row in a} & {tuple(row) for row in b}
    assert not shared, f"{len(shared)} of 8 rows of seed=1 replay rows of seed=0"
    np.testing.assert_array_equal(a, first(0))


def test_row_and_rank_seeds_are_distinct_and_checked() -> None:
    seeds = {row_seed(s, i) for s in range(20) for i in range(64)}
    assert len(seeds) == 20 * 64 and all(0 <= x < 2**63 for x in seeds)
    assert rank_seed(5, 0) == 5 and rank_seed(5, 1) != rank_seed(5, 2) != 5
    assert rank_seed(5, 1) not in {row_seed(5, i) for i in range(64)}
    with pytest.raises(ValueError, match="seed=-1"):
        row_seed(-1, 0)
    with pytest.raises(ValueError, match=r"rank=1\.5"):
        rank_seed(0, 1.5)  # type: ignore[arg-type]


def test_first_reset_without_seed_is_deterministic_later_resets_continue() -> None:
    with V.make(CartPole, 3, seed=5) as a, V.make(CartPole, 3, seed=5) as b:
        first = a.reset()[0].copy()
        np.testing.assert_array_equal(first, b.reset()[0])
        second = a.reset()[0]
        assert not np.array_equal(first, second), "reset() without a seed continues the streams"


def test_step_returns_views_of_the_buffers_and_infos() -> None:
    with V.make("cartpole", 8, "multiprocessing", num_workers=2) as env:
        assert env.num_envs == 8 and env.batch_size == 8
        assert env.single_observation_space.shape == (4,)
        obs, infos = env.reset()
        assert obs.shape == (8, 4) and obs.dtype == np.float32 and infos == {}
        seen = 0
        for _ in range(60):
            o, r, t, tr, infos = env.step(np.ones(8, np.int64))
            assert np.shares_memory(o, env.observations) and np.shares_memory(r, env.rewards)
            assert r.dtype == np.float32 and t.dtype == np.bool_ and tr.dtype == np.bool_
            if infos:
                assert len(infos["episode_return"]) == (t | tr).sum()
                assert infos["episode_length"].dtype == np.int64
                seen += 1
        assert seen > 0


def test_one_agent_envs_get_episode_stats_and_flat_observations() -> None:
    with V.make(DictObs, 4, seed=1) as env:
        assert isinstance(env.original_observation_space, Dict)
        assert isinstance(env.single_observation_space, Box)
        assert env.single_observation_space.shape == (3,)
        trace = rollout(env, 100)
        infos = [x for x in trace if isinstance(x, dict) and x]
        assert infos and all(
            {"episode_return", "episode_length", "success"} == set(i) for i in infos
        )
        assert not isinstance(env.envs[0].envs[0].env, EpisodeStats), "wrapped once"


def test_infos_too_large_for_shared_memory_go_through_the_pipe() -> None:
    with V.make(ManyInfos, 2, "serial", num_workers=2, seed=0) as serial:
        a = rollout(serial, 3)
    with V.make(ManyInfos, 2, "multiprocessing", num_workers=2, seed=0) as multi:
        b = rollout(multi, 3)
    assert_same(a, b)
    assert len(a[-1]) == 402


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_start_methods(method: str) -> None:
    with V.make("cartpole", 4, seed=2, num_workers=2) as serial:
        a = rollout(serial, 30)
    creator = functools.partial(puffer.envs.make_one, "cartpole")
    kw = {"start_method": method, "num_workers": 2, "seed": 2}
    with V.make("cartpole", 4, "multiprocessing", **kw) as multi:
        assert multi.start_method == method
        assert_same(a, rollout(multi, 30))
    with V.make(creator, 4, "multiprocessing", **kw) as multi:
        b = rollout(multi, 30)
    with V.make(creator, 4, seed=2) as serial:
        assert_same(b, rollout(serial, 30))


def test_unpicklable_creator_with_spawn_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="lambda or closure"):
        V.make(lambda: CartPole(), 2, "multiprocessing", start_method="spawn")


# --- asynchronous batches --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_async_rounds_return_every_env_exactly_once(backend: str) -> None:
    kw = {"oversubscribe": True} if backend == "multiprocessing" else {}
    with V.make("cartpole", 12, backend, num_workers=6, batch_size=4, **kw) as env:
        env.async_reset(seed=0)
        for _ in range(40):
            seen = []
            for _ in range(3):
                obs, rewards, terminals, _truncations, _infos, ids = env.recv()
                assert len(ids) == 4 and list(ids) == sorted(ids)
                assert obs.shape == (4, 4) and rewards.shape == (4,)
                np.testing.assert_array_equal(obs, env.observations[ids])
                np.testing.assert_array_equal(terminals, env.terminals[ids])
                seen += list(ids)
                env.send((obs[:, 2] > 0).astype(np.int64))
            assert sorted(seen) == list(range(12))
        if backend == "multiprocessing":  # one "any finished" post per result, none left over
            env.recv()
            assert 0 <= env._any.get_value() + env._debt <= env.num_workers


@pytest.mark.parametrize("creator", ["cartpole", CartPole])
def test_async_rows_follow_the_same_trajectories_as_sync(creator: Any) -> None:
    """With actions a function of each row's observation, batching cannot change a row's path."""
    rounds = 60
    with V.make(creator, 8, num_workers=4, seed=4) as env:
        obs, _ = env.reset()
        sync = [obs.copy()]
        for _ in range(rounds):
            sync.append(env.step((obs[:, 2] > 0).astype(np.int64))[0].copy())
    with V.make(creator, 8, "multiprocessing", num_workers=4, batch_size=4, seed=4,
                oversubscribe=True) as env:  # fmt: skip
        env.async_reset()
        rows: list[list[np.ndarray]] = [[] for _ in range(8)]
        for _ in range(2 * (rounds + 1)):
            obs, _, _, _, _, ids = env.recv()
            for j, i in enumerate(ids):
                rows[i].append(obs[j].copy())
            env.send((obs[:, 2] > 0).astype(np.int64))
    for i in range(8):
        np.testing.assert_array_equal(np.stack(rows[i]), np.stack([s[i] for s in sync]))


def test_async_batches_under_random_timing_keep_every_row_on_its_path() -> None:
    with V.make(CartPole, 12, num_workers=6, seed=9) as env:
        obs, _ = env.reset()
        sync = [obs.copy()]
        for _ in range(30):
            sync.append(env.step((obs[:, 2] > 0).astype(np.int64))[0].copy())
    rows: list[list[np.ndarray]] = [[] for _ in range(12)]
    orders = set()
    with V.make(Jittery, 12, "multiprocessing", num_workers=6, batch_size=4, seed=9,
                oversubscribe=True) as env:  # fmt: skip
        env.async_reset()
        for _ in range(31):
            seen = []
            for _ in range(3):
                obs, _, _, _, _, ids = env.recv()
                seen.append(tuple(ids))
                for j, i in enumerate(ids):
                    rows[i].append(obs[j].copy())
                env.send((obs[:, 2] > 0).astype(np.int64))
            assert sorted(sum(seen, ())) == list(range(12))
            orders.add(tuple(seen))
    for i in range(12):
        np.testing.assert_array_equal(np.stack(rows[i]), np.stack([s[i] for s in sync]))
    assert len(orders) > 1, "random step times should vary the order of batches"


def test_async_recv_send_must_alternate() -> None:
    with V.make("cartpole", 4, "multiprocessing", num_workers=2, batch_size=2) as env:
        env.async_reset()
        with pytest.raises(RuntimeError, match="without a recv"):
            env.send(np.zeros(2, np.int64))
        env.recv()
        with pytest.raises(RuntimeError, match="without send"):
            env.recv()
        with pytest.raises(RuntimeError, match="send\\(\\)/recv\\(\\)"):
            env.step(np.zeros(4, np.int64))
        with pytest.raises(ValueError, match="shape"):
            env.send(np.zeros(4, np.int64))
        env.send(np.zeros(2, np.int64))  # the batch still awaits its actions after a bad send
        assert len(env.recv()[5]) == 2


# --- state and checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("creator", ["cartpole", CartPole, gym_cartpole, two_row_cartpole])
def test_state_resumes_bit_exactly_across_backends(creator: Any) -> None:
    serial = V.make(creator, 4, num_workers=2, seed=1)
    multi = V.make(creator, 4, "multiprocessing", num_workers=2, seed=99)
    with serial, multi:
        rollout(serial, 37)
        state = pickle.loads(pickle.dumps(serial.state()))
        after = rollout_from_here(serial, 50)
        multi.reset()
        rollout_from_here(multi, 11)
        multi.load_state(state)
        assert_same(after, rollout_from_here(multi, 50))
        serial.load_state(multi.state())
        np.testing.assert_array_equal(serial.observations, multi.observations)
        assert_same(rollout_from_here(serial, 20), rollout_from_here(multi, 20))


def rollout_from_here(env: Any, steps: int) -> list[Any]:
    out = []
    for t in range(steps):
        o, r, term, trunc, infos = env.step(
            (env.observations[:, 2] > 0).astype(np.int64) ^ (t % 7 == 0)
        )
        out += [
            o.copy(),
            r.copy(),
            term.copy(),
            trunc.copy(),
            {k: v.copy() for k, v in infos.items()},
        ]
    return out


def as_tensors(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        return {k: as_tensors(v) for k, v in x.items()}
    if isinstance(x, list):
        return [as_tensors(v) for v in x]
    return x


@pytest.mark.parametrize("creator", ["cartpole", CartPole])
def test_state_survives_a_weights_only_checkpoint_as_tensors(creator: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with V.make(creator, 4, "multiprocessing", num_workers=2) as env:
        env.reset(seed=5)
        rollout_from_here(env, 9)
        torch.save({"env": as_tensors(env.state())}, tmp_path / "ckpt.pt")
        after = rollout_from_here(env, 20)
        env.load_state(torch.load(tmp_path / "ckpt.pt", weights_only=True)["env"])
        assert_same(after, rollout_from_here(env, 20))


def test_load_state_checks_the_shape() -> None:
    with V.make("cartpole", 4, num_workers=2) as a, V.make("cartpole", 4, num_workers=1) as b:
        a.reset()
        with pytest.raises(ValueError, match=r"num_workers=2.*num_workers=1"):
            b.load_state(a.state())


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_load_state_checks_every_worker_has_a_part(backend: str) -> None:
    kw = {"timeout": 5.0} if backend == "multiprocessing" else {}  # fail fast if it waits instead
    with V.make("cartpole", 4, backend, num_workers=2, **kw) as env:
        env.reset(seed=0)
        state = env.state()
        state["workers"] = state["workers"][:1]
        with pytest.raises(ValueError, match="list of 2 worker states, got list of length 1"):
            env.load_state(state)
        env.step(np.zeros(4, np.int64))  # still usable


def test_state_is_refused_in_async_mode_and_mid_step() -> None:
    with V.make("cartpole", 4, "multiprocessing", num_workers=2) as env:
        env.reset()
        env.send(np.zeros(4, np.int64))
        with pytest.raises(RuntimeError, match="recv"):
            env.state()
        env.recv()
        env.state()
    with V.make("cartpole", 4, num_workers=2, batch_size=2) as env:
        env.async_reset()
        with pytest.raises(NotImplementedError, match="batch_size=None"):
            env.state()
        with pytest.raises(NotImplementedError, match="batch_size=None"):
            env.load_state({"num_envs": 4, "num_workers": 2, "workers": []})


# --- configuration and input errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("cartpole", 10), {"num_workers": 3}, r"num_envs=10 is not divisible by num_workers=3"),
        (
            ("cartpole", 8),
            {"num_workers": 2, "batch_size": 3},
            r"batch_size=3 does not fit.*\[4, 8\]",
        ),
        (("cartpole", 12), {"num_workers": 2, "batch_size": 4}, r"batch_size in \[6, 12\]"),
        (
            ("cartpole", 12),
            {"num_workers": 4, "batch_size": 9, "oversubscribe": True},
            r"batch_size in \[3, 6, 12\]",
        ),
        (("cartpole", 0), {}, r"num_envs=0: must be a positive integer"),
        (("cartpole", 4), {"seed": -1}, r"seed=-1"),
        (("cartpole", 4), {"backend": "threads"}, r"backend='threads': use one of"),
        ((two_row_cartpole, 5), {}, r"num_envs=5 is not a multiple of the 2 rows"),
        ((two_row_cartpole, 6), {"num_workers": 2}, r"\(3 envs of 2\) is not divisible"),
        (("CartPole-v1", 4), {}, r"pass a callable"),
        (("cartpol", 4), {}, r"Did you mean 'cartpole'"),
        (("cartpole", 4), {"env_kwargs": {"max_step": 3}}, r"max_step"),
    ],
)
def test_bad_configuration_is_refused_before_any_worker(args, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    before = len(psutil.Process().children(recursive=True))
    with pytest.raises((ValueError, TypeError), match=match):
        V.make(*args, **{"backend": "multiprocessing", **kwargs})
    assert len(psutil.Process().children(recursive=True)) == before


def async_cartpole() -> Any:
    return V.make("cartpole", 2, "multiprocessing", num_workers=2, batch_size=1, oversubscribe=True)


def test_a_refused_env_from_the_creator_is_closed() -> None:
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(ValueError, match="asynchronous VecEnv") as info:
        V.make(async_cartpole, 4)
    assert not [p for p in psutil.Process().children() if p.pid not in before and _running(p)]
    del info


def test_more_workers_than_cores_needs_an_opt_in() -> None:
    cores = V._cores()
    n = 2 * (cores + 1)
    with pytest.raises(
        ValueError,
        match=f"num_workers={cores + 1} is more than the {cores} CPU.*"
        r"oversubscribe=True \(vector.oversubscribe=true on the command line\)",
    ):
        V.make("cartpole", n, "multiprocessing", num_workers=cores + 1)
    with V.make("cartpole", n, "multiprocessing", num_workers=cores + 1, oversubscribe=True) as env:
        assert env.reset()[0].shape == (n, 4)
    with V.make("cartpole", n, num_workers=cores + 1) as env:  # serial: no processes
        assert env.num_workers == cores + 1


def test_default_workers() -> None:
    with V.make("cartpole", 6) as env:
        assert env.num_workers == 1
    with V.make("cartpole", 6, "multiprocessing") as env:
        assert env.num_workers == max(w for w in range(1, min(V._cores(), 6) + 1) if 6 % w == 0)
    with V.make("cartpole", 1, "multiprocessing") as env:
        assert env.num_workers == 1


def test_multiprocessing_arguments_on_serial_are_refused() -> None:
    with pytest.raises(TypeError, match="multiprocessing-only arguments \\['timeout'\\]"):
        V.make("cartpole", 4, timeout=3)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_bad_actions_are_caught_before_anything_is_sent(backend: str) -> None:
    with V.make("cartpole", 4, backend, num_workers=2, env_kwargs={"continuous": True}) as env:
        env.reset(seed=0)
        before = env.observations.copy()
        for bad, match in [
            (np.zeros((3, 1), np.float32), "shape"),
            (np.full((4, 1), 2.0, np.float32), "out of"),
            (np.full((4, 1), np.nan, np.float32), "NaN"),
        ]:
            with pytest.raises(ValueError, match=match):
                env.step(bad)
            np.testing.assert_array_equal(env.observations, before)
        obs = env.step(np.zeros((4, 1), np.float32))[0]  # still usable
        assert not np.array_equal(obs, before)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_lifecycle_errors(backend: str) -> None:
    env = V.make("cartpole", 4, backend, num_workers=2)
    with pytest.raises(ResetNeeded):
        env.step(np.zeros(4, np.int64))
    env.reset()
    with pytest.raises(RuntimeError, match="without send"):
        env.recv()
    env.close()
    env.close()
    with pytest.raises(EnvClosedError):
        env.reset()


class WrongShape(PufferEnv):
    observation_space = Box(-1.0, 1.0, (2,))
    action_space = Discrete(2)

    def reset(self, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> StepResult:
        return StepResult(np.zeros(3), 0.0, False, False, {})


def test_an_observation_that_does_not_fit_names_the_env() -> None:
    with V.make(WrongShape, 2) as env:
        env.reset()
        with pytest.raises(
            ValueError, match=r"WrongShape returned an observation that does not fit"
        ):
            env.step(np.zeros(2, np.int64))


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_render_a_row(backend: str) -> None:
    with V.make("cartpole", 4, backend, num_workers=2) as env:
        env.reset()
        text = env.render(3)
        assert isinstance(text, str) and "theta" in text


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_render_a_row_out_of_range_is_refused_and_the_env_stays_usable(backend: str) -> None:
    with V.make("cartpole", 4, backend, num_workers=2) as env:
        env.reset(seed=0)
        assert env.render(-1) == env.render(3)
        for row in (4, -5):
            with pytest.raises(IndexError, match=f"row={row}.*4 rows"):
                env.render(row)
        with pytest.raises(TypeError):
            env.render(1.5)
        env.step(np.zeros(4, np.int64))
        assert "theta" in env.render(2)


@pytest.mark.bench
def test_the_throughput_benchmark_runs_and_reports_json() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "vector_throughput.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["benchmark"] == "vector_throughput" and len(report["sps"]) == 8
    assert all(v > 0 for v in report["sps"].values())


# --- masks: multi-agent rows ------------------------------------------------------------------------


def test_masks_are_all_true_for_one_agent_envs_on_both_backends() -> None:
    for backend in ("serial", "multiprocessing"):
        with V.make(CartPole, 4, backend, num_workers=2, seed=0) as env:
            env.reset()
            env.step(np.zeros(4, np.int64))
            assert env.masks.dtype == np.bool_ and env.masks.all()
            assert np.shares_memory(env.masks, env.buffers.masks)


def test_multi_agent_masks_cross_shared_memory_and_blocks_keep_whole_games() -> None:
    def trace(backend: str) -> list[np.ndarray]:
        with V.make(
            "reach", 12, backend, num_workers=2, seed=3, env_kwargs={"num_agents": 3}
        ) as env:
            env.reset()
            rng = np.random.default_rng(0)
            out = []
            for _ in range(40):
                env.step(env.single_action_space.sample_batch(12, rng))
                out += [env.masks.copy(), env.observations.copy(), env.rewards.copy()]
            return out

    a, b = trace("serial"), trace("multiprocessing")
    assert_same(a, b)
    masks = np.stack(a[0::3])
    assert not masks.all() and masks.any(), "some agents finished before their game ended"
    with pytest.raises(ValueError, match=r"num_envs=8 \(2 envs of 3\)|multiple of the 3 rows"):
        V.make("reach", 8, num_workers=2, env_kwargs={"num_agents": 3})
