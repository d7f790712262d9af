"""Spaces: sample/contains/check/check_batch/seed/eq/repr/flatten/unflatten/gymnasium."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from puffer.spaces import (
    Box,
    Dict,
    Discrete,
    MultiBinary,
    MultiDiscrete,
    Tuple,
    flatdim,
    flatten,
    flatten_space,
    from_gymnasium,
    unflatten,
)

NESTED = Dict(
    {
        "pos": Box(-1.0, 1.0, shape=(2,)),
        "kind": Discrete(3, start=1),
        "grid": Box(0, 255, shape=(2, 2), dtype=np.uint8),
        "pair": Tuple([MultiDiscrete([2, 5]), Box(-np.inf, np.inf, shape=())]),
    }
)
ALL = [
    Discrete(4),
    Discrete(3, start=-1),
    MultiDiscrete([2, 3, 4]),
    Box(-1.0, 1.0, shape=(3,)),
    Box(np.array([0.0, -5.0]), np.array([1.0, 5.0])),
    Box(0, 255, shape=(4, 4), dtype=np.uint8),
    Box(-np.inf, np.inf, shape=(2,), dtype=np.float64),
    Box(np.array([0.0, -np.inf]), np.array([np.inf, 0.0])),
    NESTED,
    Tuple([Discrete(2), Box(0.0, 1.0, shape=(1,))]),
]


@pytest.mark.parametrize("space", ALL, ids=repr)
def test_samples_are_contained_and_seeding_repeats(space):
    values = [space.sample() for _ in range(50)]
    assert all(space.contains(v) for v in values)
    space.seed(7)
    a = [space.sample() for _ in range(5)]
    space.seed(7)
    b = [space.sample() for _ in range(5)]
    assert all(flatten(space, x).tolist() == flatten(space, y).tolist() for x, y in zip(a, b))
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert (
        flatten(space, space.sample(rng1)).tolist() == flatten(space, space.sample(rng2)).tolist()
    )


@pytest.mark.parametrize("space", ALL, ids=repr)
def test_sample_batch_has_leading_axis_and_passes_check_batch(space):
    batch = space.sample_batch(6, np.random.default_rng(0))
    space.check_batch(batch, 6)
    assert flatten(space, batch).shape == (6, flatdim(space))


def test_seed_argument_in_constructor_repeats_samples():
    assert Discrete(100, seed=1).sample() == Discrete(100, seed=1).sample()
    a, b = Dict({"x": Discrete(100)}, seed=4), Dict({"x": Discrete(100)}, seed=4)
    assert a.sample() == b.sample()


def test_discrete():
    d = Discrete(3, start=2)
    assert d.shape == () and d.dtype == np.int64
    assert {int(d.sample()) for _ in range(200)} == {2, 3, 4}
    assert d.contains(2) and d.contains(np.int64(4)) and d.contains(np.array(3, np.int32))
    assert not d.contains(1) and not d.contains(5)
    assert not d.contains(3.0)  # floats are not actions of a Discrete space
    assert not d.contains(True)
    assert not d.contains(np.array([2, 3]))
    assert d.check(np.array([3])) == 3  # a one-element array is accepted
    assert d.check(torch.tensor(4)) == 4
    assert d.check_batch(np.array([[2], [4]]), 2).tolist() == [2, 4]
    with pytest.raises(ValueError, match="positive integer"):
        Discrete(0)
    with pytest.raises(ValueError, match="positive integer"):
        Discrete(2.5)


def test_multidiscrete():
    m = MultiDiscrete([2, 3])
    assert m.shape == (2,) and m.dtype == np.int64
    assert m.contains(np.array([1, 2])) and not m.contains(np.array([2, 0]))
    assert not m.contains(np.array([1, -1])) and not m.contains(np.array([1.0, 0.0]))
    assert not m.contains(np.array([1, 2, 0]))
    samples = m.sample_batch(500, np.random.default_rng(0))
    assert samples.min(0).tolist() == [0, 0] and samples.max(0).tolist() == [1, 2]
    for bad in ([], [[2, 3]], [0, 2], [1.5, 2]):
        with pytest.raises(ValueError, match="MultiDiscrete"):
            MultiDiscrete(bad)


def test_box_bounds_dtypes_and_infinite_sides():
    b = Box(-1.0, 1.0, shape=(2,))
    assert b.shape == (2,) and b.dtype == np.float32 and b.is_bounded()
    assert b.contains(np.array([0.5, -1.0])) and b.contains(
        np.array([1, 0])
    )  # ints fit a float Box
    assert not b.contains(np.array([1.5, 0.0])) and not b.contains(np.array([np.nan, 0.0]))
    assert not b.contains(np.array([0.0])) and not b.contains(np.array([True, False]))
    u8 = Box(0, 255, shape=(3,), dtype=np.uint8)
    assert u8.contains(np.array([0, 255, 7], np.uint8))
    assert not u8.contains(np.array([0.5, 0.0, 0.0]))  # floats are not values of an integer Box
    s = u8.sample_batch(2000, np.random.default_rng(0))
    assert s.dtype == np.uint8 and s.min() == 0 and s.max() == 255
    full = Box(np.iinfo(np.int64).min, np.iinfo(np.int64).max, shape=(2,), dtype=np.int64)
    assert full.contains(full.sample())
    half = Box(np.array([0.0, -np.inf]), np.array([np.inf, 0.0]))
    s = half.sample_batch(1000, np.random.default_rng(0))
    assert (s[:, 0] >= 0).all() and (s[:, 1] <= 0).all() and not half.is_bounded()
    assert Box(0.0, 1.0, shape=(1,)).check(0.5).shape == (1,)  # a scalar for a (1,) Box
    assert Box.uniform([2, 3], 0.0, 1.0) == Box(0.0, 1.0, shape=(2, 3))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1.0, 0.0), {}, "low <= high"),
        ((np.zeros(2), np.ones(3)), {}, "do not fit"),
        ((np.zeros(2), 1.0), {"shape": (3,)}, "do not fit"),
        ((0, 1), {"dtype": np.bool_}, "dtype"),
        ((-np.inf, 1), {"shape": (1,), "dtype": np.int64}, "finite"),
        ((np.nan, 1.0), {"shape": (1,)}, "low <= high"),
        # integer bounds outside the dtype once wrapped around ([-1, 0] became [255, 0])
        ((np.array([-1.0, 0.0]), 1.0), {"dtype": np.uint8}, r"whole numbers in \[0, 255\]"),
        ((-1, 1), {"shape": (2,), "dtype": np.uint8}, "whole numbers"),
        ((0, 2**64), {"shape": (1,), "dtype": np.uint64}, "whole numbers"),
        ((0.5, 3.0), {"shape": (1,), "dtype": np.int64}, "whole numbers"),  # was silently 0
    ],
)
def test_box_rejects_bad_construction(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Box(*args, **kwargs)


def test_check_errors_name_the_problem_the_space_and_the_value():
    with pytest.raises(ValueError) as e:
        Discrete(2).check_batch(np.array([0, 1, 2, 0]), 4, where="CartPoleVec.step")
    msg = str(e.value)
    assert "CartPoleVec.step" in msg and "value 2 out of range in row 2" in msg
    assert "Discrete(2)" in msg and "[0 1 2 0]" in msg
    with pytest.raises(ValueError, match=r"NaN in row 1 .*Box\(-1, 1, \(2,\), float32\)"):
        Box(-1, 1, shape=(2,)).check_batch(np.array([[0, 0], [0, np.nan]]), 2)
    with pytest.raises(ValueError, match=r"wrong batch of shape \(3,\), expected \(4,\)"):
        Discrete(2).check_batch(np.zeros(3, np.int64), 4)
    with pytest.raises(ValueError, match="wrong dtype float32, expected int64"):
        Discrete(2).check_batch(np.zeros(4, np.float32), 4)
    with pytest.raises(ValueError, match="ClipAction"):  # out of range Box: suggests the wrapper
        Box(-1, 1, shape=(1,)).check(np.array([2.0]))
    with pytest.raises(ValueError, match=r"action\['kind'\]: value 9"):
        NESTED.check({**NESTED.sample(), "kind": 9})
    with pytest.raises(ValueError, match="expected a dict with keys"):
        NESTED.check({"pos": np.zeros(2)})


def test_integer_box_keeps_whole_bounds_at_the_dtype_limits():
    assert Box(0.0, 255.0, shape=(2,), dtype=np.uint8) == Box(0, 255, shape=(2,), dtype=np.uint8)
    top = Box(0, np.iinfo(np.uint64).max, shape=(1,), dtype=np.uint64)
    assert top.high[0] == np.iinfo(np.uint64).max  # exact, not rounded through float64


@pytest.mark.parametrize("space", ALL, ids=repr)
def test_an_empty_batch_is_valid(space):
    empty = space.sample_batch(0, np.random.default_rng(0))
    space.check_batch(empty, 0)  # min() of zero values used to raise for uniform bounds


def test_check_batch_accepts_torch_tensors_without_copy():
    t = torch.tensor([0, 1, 1])
    out = Discrete(2).check_batch(t, 3)
    assert out.tolist() == [0, 1, 1] and np.shares_memory(out, t.numpy())


def test_equality_hash_and_repr():
    assert Discrete(3) == Discrete(3) and Discrete(3) != Discrete(3, start=1)
    assert Discrete(3) != MultiDiscrete([3])
    assert Box(0, 1, (2,)) == Box(np.zeros(2), np.ones(2)) != Box(0, 1, (2,), np.float64)
    assert hash(Box(0, 1, (2,))) == hash(Box(np.zeros(2), np.ones(2)))
    assert Dict(dict(NESTED.items())) == NESTED and Dict(pos=Box(-1.0, 1.0, shape=(2,))) != NESTED
    assert Tuple([Discrete(2)]) == Tuple([Discrete(2)]) != Tuple([Discrete(3)])
    assert (
        repr(Discrete(3)) == "Discrete(3)" and repr(Discrete(3, start=1)) == "Discrete(3, start=1)"
    )
    assert repr(MultiDiscrete([2, 3])) == "MultiDiscrete([2, 3])"
    assert repr(Box(-1.0, 1.0, shape=(2,))) == "Box(-1, 1, (2,), float32)"
    assert repr(Box(0, 255, (2,), np.uint8)) == "Box(0, 255, (2,), uint8)"
    assert "..." in repr(Box(np.zeros(100), np.arange(100) + 1.0))  # long bounds are summarised
    assert repr(Tuple([Discrete(2)])) == "Tuple(Discrete(2))"
    assert repr(Dict(a=Discrete(2))) == "Dict(a: Discrete(2))"


def test_flatten_unflatten_roundtrip_numpy_single_and_batched():
    value = NESTED.sample()
    flat = flatten(NESTED, value)
    assert flat.dtype == np.float32 and flat.shape == (flatdim(NESTED),) == (2 + 1 + 4 + 2 + 1,)
    back = unflatten(NESTED, flat)
    assert back["kind"] == value["kind"] and back["kind"].dtype == np.int64
    np.testing.assert_array_equal(back["grid"], value["grid"])
    assert back["grid"].dtype == np.uint8 and back["pair"][0].dtype == np.int64
    np.testing.assert_allclose(back["pos"], value["pos"])
    batch = NESTED.sample_batch(5)
    flat = flatten(NESTED, batch)
    assert flat.shape == (5, flatdim(NESTED))
    back = unflatten(NESTED, flat)
    np.testing.assert_array_equal(back["pair"][0], batch["pair"][0])
    np.testing.assert_array_equal(back["grid"], batch["grid"])
    assert flatten_space(NESTED).contains(flatten(NESTED, NESTED.sample()))
    deeper = flat.reshape(1, 5, -1)  # any number of leading axes
    assert unflatten(NESTED, deeper)["grid"].shape == (1, 5, 2, 2)


def test_flatten_unflatten_torch():
    batch = NESTED.sample_batch(4)
    tensors = {
        "pos": torch.as_tensor(batch["pos"]),
        "kind": torch.as_tensor(batch["kind"]),
        "grid": torch.as_tensor(batch["grid"]),
        "pair": (torch.as_tensor(batch["pair"][0]), torch.as_tensor(batch["pair"][1])),
    }
    flat_t = flatten(NESTED, tensors)
    assert isinstance(flat_t, torch.Tensor) and flat_t.dtype == torch.float32
    np.testing.assert_allclose(flat_t.numpy(), flatten(NESTED, batch))
    parts = unflatten(NESTED, flat_t)
    assert isinstance(parts["grid"], torch.Tensor) and parts["grid"].shape == (4, 2, 2)
    assert (
        parts["grid"].data_ptr() - flat_t.data_ptr() == 3 * 4
    )  # a view: pos(2) + kind(1) floats in
    np.testing.assert_array_equal(parts["grid"].numpy(), batch["grid"].astype(np.float32))


def test_flatten_space_bounds_and_errors():
    fs = flatten_space(NESTED)
    assert fs.shape == (10,) and fs.dtype == np.float32
    assert fs.low[:3].tolist() == [-1, -1, 1] and fs.high[:3].tolist() == [1, 1, 3]
    assert fs.high[3:7].tolist() == [255] * 4 and fs.high[7:9].tolist() == [1, 4]
    assert fs.low[9] == -np.inf
    with pytest.raises(ValueError, match="needs a last axis of 10"):
        unflatten(NESTED, np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        flatten(NESTED, {**NESTED.sample(), "pos": np.zeros(3)})
    with pytest.raises(ValueError, match="does not fit"):  # inconsistent batch shapes
        flatten(Tuple([Discrete(2), Discrete(2)]), (np.zeros(3, int), np.zeros(4, int)))


GYM = gymnasium.spaces


@pytest.mark.parametrize("space", ALL, ids=repr)
def test_gymnasium_round_trip(space):
    g = space.to_gymnasium()
    assert isinstance(g, GYM.Space)
    assert from_gymnasium(g) == space
    assert g.contains(g.sample())
    assert space.contains(_from_gym_value(space.to_gymnasium().sample()))


def _from_gym_value(v):
    if isinstance(v, dict):
        return {k: _from_gym_value(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return tuple(_from_gym_value(x) for x in v)
    return v


def test_from_gymnasium_specials():
    binary = from_gymnasium(GYM.MultiBinary(3))
    assert binary == MultiBinary(3) and isinstance(binary, Box) and binary.dtype == np.int8
    assert binary.to_gymnasium() == GYM.MultiBinary(3)
    assert binary.sample_batch(5).dtype == np.int8 and MultiBinary((2, 2)).shape == (2, 2)
    assert from_gymnasium(Discrete(2)) == Discrete(2)  # puffer spaces pass through
    d = GYM.Dict({"b": GYM.Discrete(2), "a": GYM.Discrete(3)})  # gymnasium sorts plain dicts
    assert list(from_gymnasium(d).keys()) == ["a", "b"]
    assert list(Dict(b=Discrete(2), a=Discrete(3)).to_gymnasium().spaces) == ["b", "a"]
    with pytest.raises(ValueError, match="Text is not supported"):
        from_gymnasium(GYM.Text(5))
    with pytest.raises(ValueError, match="start != 0"):
        from_gymnasium(GYM.MultiDiscrete([2, 3], start=[1, 0]))


def test_image_dicts_flatten_to_uint8_views():
    """A Dict of uint8 images and small integers flattens to uint8 (images are never copied to
    float32); anything else still flattens to float32."""
    space = Dict(image=Box(0, 255, shape=(4, 4, 3), dtype=np.uint8), direction=Discrete(4))
    flat_space = flatten_space(space)
    assert flat_space.dtype == np.uint8 and flat_space.shape == (49,)
    value = space.sample()
    flat = flatten(space, value)
    assert flat.dtype == np.uint8 and flat_space.contains(flat)
    batch = torch.from_numpy(np.stack([flat, flat]))
    parts = unflatten(space, batch)
    assert parts["image"].dtype == torch.uint8 and parts["image"].shape == (2, 4, 4, 3)
    assert parts["image"].untyped_storage().data_ptr() == batch.untyped_storage().data_ptr()
    np.testing.assert_array_equal(parts["image"][0].numpy(), value["image"])
    assert unflatten(space, flat)["direction"] == value["direction"]
    mixed = Dict(image=Box(0, 255, shape=(4, 4), dtype=np.uint8), speed=Box.uniform([2], -1, 1))
    assert flatten_space(mixed).dtype == np.float32
    assert flatten_space(Dict(a=Discrete(3), b=Discrete(2))).dtype == np.float32  # no image
