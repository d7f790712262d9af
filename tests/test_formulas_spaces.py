"""Spaces: the exact error messages, seeding rules and equality that callers rely on, each
compared with a value written out in the test."""

from __future__ import annotations

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
    flat_dtype,
    flatdim,
    flatten,
    flatten_space,
    from_gymnasium,
    unflatten,
)


def message(fn, *args) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args)
    return str(info.value)


def test_discrete_and_multidiscrete_messages_name_where_and_what():
    assert message(Discrete(3).check, np.int64(5)) == (
        "action: value 5 out of range; expected a value of Discrete(3), got np.int64(5) (int64)"
    )
    assert message(Discrete(3).check, 5) == (  # a Python int takes a fast path
        "action: value 5 out of range; expected a value of Discrete(3), got 5 (int)"
    )
    md = MultiDiscrete([2, 3])
    assert message(md.check, np.array([1, 3])) == (
        "action: value 3 out of range at index (1,); expected a value of MultiDiscrete([2, 3]), "
        "got ndarray(shape=(2,), dtype=int64) [1 3]"
    )
    assert message(md.check_batch, np.array([[0, 0], [2, 0]]), 2).startswith(
        "actions: value 2 out of range in row 1 at index (0,); expected a value of "
        "MultiDiscrete([2, 3]), got ndarray(shape=(2, 2)"
    )


def test_box_out_of_range_suggests_clip_action_and_others_do_not():
    box = Box(-1.0, 1.0, shape=(2,))
    assert message(box.check, np.array([0.0, 2.0], np.float32)) == (
        "action: value 2.0 out of range at index (1,) (wrap the env in puffer.wrappers.ClipAction "
        "to clip actions instead); expected a value of Box(-1, 1, (2,), float32), got "
        "ndarray(shape=(2,), dtype=float32) [0. 2.]"
    )
    assert "ClipAction" not in message(Discrete(2).check, np.int64(2))
    assert "(0,); expected" in message(MultiDiscrete([2]).check, np.array([2]))


def test_dict_and_tuple_messages_name_the_path():
    d = Dict(a=Discrete(2), b=Box(0.0, 1.0, shape=(1,)))
    bad = {"a": np.int64(0), "b": np.array([3.0], np.float32)}
    assert message(d.check, bad).startswith("action['b']: value 3.0 out of range")
    assert message(d.check, {"a": 0}) == (
        "action: expected a dict with keys ['a', 'b']; expected a value of "
        "Dict(a: Discrete(2), b: Box(0, 1, (1,), float32)), got {'a': 0} (dict)"
    )
    batch = {"a": np.array([0, 2]), "b": np.zeros((2, 1), np.float32)}
    assert message(d.check_batch, batch, 2).startswith(
        "actions['a']: value 2 out of range in row 1;"
    )
    assert message(d.check_batch, [1, 2], 2).startswith(
        "actions: expected a dict with keys ['a', 'b']; expected a value of Dict("
    )
    assert message(d.check_batch, [1, 2], 2).endswith("got [1, 2] (list)")
    t = Tuple([Discrete(2), Discrete(3)])
    assert message(t.check, (0, 3)).startswith("action[1]: value 3 out of range")
    assert message(t.check, (0,)) == (
        "action: expected a tuple of 2 values; expected a value of Tuple(Discrete(2), "
        "Discrete(3)), got (0,) (tuple)"
    )
    assert message(t.check_batch, (np.array([0, 1]), np.array([0, 3])), 2).startswith(
        "actions[1]: value 3 out of range in row 1;"
    )
    assert message(t.check_batch, (np.array([0, 1]),), 2) == (
        "actions: expected a tuple of 2 batches; expected a value of Tuple(Discrete(2), "
        "Discrete(3)), got (array([0, 1]),) (tuple)"
    )
    with pytest.raises(ValueError, match=r"^Dict: needs at least one subspace$"):
        Dict({})


def test_multidiscrete_equality_compares_nvec():
    assert MultiDiscrete([2, 3]) == MultiDiscrete([2, 3])
    assert MultiDiscrete([2, 3]) != MultiDiscrete([2, 4])
    assert MultiDiscrete([2]) != Discrete(2)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_composite_seed_gives_subspace_i_seed_plus_i(kind):
    subs = [Discrete(1000), Discrete(1000), Discrete(1000)]
    space = Dict(a=subs[0], b=subs[1], c=subs[2]) if kind == "dict" else Tuple(subs)
    space.seed(7)
    draws = list(space.sample().values()) if kind == "dict" else list(space.sample())
    expected = [Discrete(1000, seed=7 + i).sample() for i in range(3)]
    assert draws == expected
    space.seed(None)  # unseeded: fresh entropy, and no error
    space.seed()


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_composite_sample_batch_uses_the_given_generator(kind):
    subs = [Discrete(1000), Box(0.0, 1.0, shape=(2,))]
    space = Dict(a=subs[0], b=subs[1]) if kind == "dict" else Tuple(subs)
    one = space.sample_batch(4, np.random.default_rng(3))
    two = space.sample_batch(4, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    expected = [subs[0].sample_batch(4, rng), subs[1].sample_batch(4, rng)]
    for got in (one, two):
        parts = list(got.values()) if kind == "dict" else list(got)
        for p, e in zip(parts, expected):
            np.testing.assert_array_equal(p, e)


def test_tuple_repr():
    assert (
        repr(Tuple([Discrete(2), MultiDiscrete([3])])) == "Tuple(Discrete(2), MultiDiscrete([3]))"
    )


def test_unbounded_box_samples_as_gymnasium():
    """Both sides unbounded: standard normal; only low finite: low + Exp(1); only high finite:
    high - Exp(1); finite: uniform on [low, high] (moments checked over 20000 draws)."""
    inf = np.inf
    box = Box(np.array([-inf, 2.0, -inf, 3.0]), np.array([inf, inf, -1.0, 4.0]), dtype=np.float64)
    assert not box.is_bounded()
    x = box.sample_batch(20000, np.random.default_rng(0))
    assert x.shape == (20000, 4) and x.dtype == np.float64
    mean, std = x.mean(0), x.std(0)
    np.testing.assert_allclose(mean, [0.0, 3.0, -2.0, 3.5], atol=0.03)
    np.testing.assert_allclose(std, [1.0, 1.0, 1.0, 1 / np.sqrt(12)], atol=0.03)
    assert x[:, 1].min() >= 2.0 and x[:, 2].max() <= -1.0
    assert box.sample(np.random.default_rng(1)).shape == (4,)
    # one sample draws each unbounded element on its own
    one = Box(-inf, inf, shape=(100,)).sample(np.random.default_rng(2))
    assert len(np.unique(one)) == 100 and abs(one.mean()) < 0.4 and 0.7 < one.std() < 1.3
    half = Box(np.zeros(100), np.full(100, inf)).sample(np.random.default_rng(3))
    assert len(np.unique(half)) == 100 and half.min() >= 0.0


def test_bounded_box_samples_cover_their_range_and_integer_ends():
    box = Box(np.array([2.0, -5.0], np.float32), np.array([3.0, -4.0], np.float32))
    x = box.sample_batch(5000, np.random.default_rng(0))
    assert x.dtype == np.float32 and box.is_bounded()
    np.testing.assert_allclose(x.mean(0), [2.5, -4.5], atol=0.02)
    ints = Box(-2, 1, shape=(3,), dtype=np.int64).sample_batch(4000, np.random.default_rng(0))
    assert set(np.unique(ints)) == {-2, -1, 0, 1}  # both ends included
    assert Box.uniform([2], 0, 9, dtype=np.int32).sample().dtype == np.int32


def test_box_repr_of_long_and_integer_bounds():
    low = np.arange(10, dtype=np.float32)
    assert repr(Box(low, low + 1)) == (
        "Box([0., 1., 2., ..., 7., 8., 9.], [ 1.,  2.,  3., ...,  8.,  9., 10.], (10,), float32)"
    )
    nine = np.arange(9, dtype=np.float32)  # more than 8 values: summarised
    assert repr(Box(nine, nine + 1)) == (
        "Box([0., 1., 2., ..., 6., 7., 8.], [1., 2., 3., ..., 7., 8., 9.], (9,), float32)"
    )
    assert repr(Box(0, 100000, (2,), np.int64)) == "Box(0, 100000, (2,), int64)"  # not 1e+05
    eight = np.arange(8, dtype=np.float32)
    assert repr(Box(eight, eight + 1)).startswith("Box([0, 1, 2, 3, 4, 5, 6, 7], [1, 2,")
    assert repr(Box(np.array([0, 1]), np.array([5, 6]), dtype=np.int64)) == (
        "Box([0, 1], [5, 6], (2,), int64)"
    )
    assert repr(Box(0.5, 1.25, shape=(2,))) == "Box(0.5, 1.25, (2,), float32)"
    assert repr(Dict(a=Discrete(2), b=Discrete(3))) == "Dict(a: Discrete(2), b: Discrete(3))"


def test_batched_box_of_one_element_accepts_a_flat_batch():
    box = Box(0.0, 1.0, shape=(1,))
    out = box.check_batch(np.array([0.5, 0.25], np.float32), 2)
    assert out.shape == (2, 1) and out[:, 0].tolist() == [0.5, 0.25]
    assert message(box.check_batch, np.array([0.5, 2.0], np.float32), 2) == (
        "actions: value 2.0 out of range in row 1 at index (0,) (wrap the env in puffer.wrappers.ClipAction to "
        "clip actions instead); expected a value of Box(0, 1, (1,), float32), got "
        "ndarray(shape=(2,), dtype=float32) [0.5 2. ]"
    )
    two = Box(0.0, 1.0, shape=(2,))
    with pytest.raises(ValueError, match=r"wrong batch of shape \(2,\), expected \(2, 2\)"):
        two.check_batch(np.array([0.5, 0.5], np.float32), 2)
    md = MultiDiscrete([3])
    assert message(md.check_batch, np.array([[0], [3]]), 2).startswith(
        "actions: value 3 out of range in row 1 at index (0,); expected a value of "
        "MultiDiscrete([3]), got ndarray(shape=(2, 1), dtype=int64)"
    )
    assert message(Discrete(2).check_batch, np.array([0, 5]), 2).startswith(
        "actions: value 5 out of range in row 1; expected"
    )


def test_space_constructors_validate_and_seed():
    assert MultiDiscrete([1, 1]).nvec.tolist() == [1, 1]  # one value each is allowed
    for bad in ([0, 2], [2.0, 3.0], [], [[2]]):
        with pytest.raises(ValueError, match="nvec must be a non-empty 1-D list of positive ints"):
            MultiDiscrete(bad)
    assert MultiDiscrete([5, 7], seed=3).sample().tolist() == (
        MultiDiscrete([5, 7], seed=3).sample().tolist()
    )
    md = MultiDiscrete([5, 7], seed=3)
    np.testing.assert_array_equal(md.low, [0, 0])
    with pytest.raises(ValueError, match=r"^Tuple: needs a non-empty sequence of Space, got \(\)$"):
        Tuple([])
    with pytest.raises(ValueError, match=r"got \(Discrete\(2\), 3\)"):
        Tuple([Discrete(2), 3])
    with pytest.raises(ValueError, match=r"^Dict: subspace 'a' is 3, not a puffer.spaces.Space$"):
        Dict(a=3)
    t = Tuple([Discrete(1000), Discrete(1000)], seed=5)
    assert list(t.sample()) == [Discrete(1000, seed=5).sample(), Discrete(1000, seed=6).sample()]
    d = Dict({"a": Discrete(1000)}, seed=5)
    assert d.sample()["a"] == Discrete(1000, seed=5).sample()
    assert d.dtype == np.dtype(object) and t.dtype == np.dtype(object) and d.shape == ()


def test_flatten_space_and_mixed_torch_flatten():
    space = Dict(a=Box(0, 3, shape=(2,), dtype=np.int64), b=Discrete(4))
    flat = flatten_space(space)
    assert flat == Box(np.zeros(3, np.float32), np.array([3, 3, 3], np.float32))
    assert flat.low.dtype == np.float32 and flat.dtype == np.float32
    value = {"a": torch.tensor([[1, 2]]), "b": np.array([3])}  # a torch leaf and a numpy leaf
    out = flatten(space, value)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match=r"does not fit Discrete\(4\) with batch shape \(1,\)"):
        flatten(space, {"a": np.array([[1, 2]]), "b": np.array([1, 2])})
    with pytest.raises(ValueError, match=r"^flatten: value of shape \(3,\) does not fit Box.*\)$"):
        flatten(space, {"a": np.array([1, 2, 3]), "b": 1})
    with pytest.raises(ValueError, match=r"^flatten: expected a dict with keys \['a', 'b'\], got"):
        flatten(space, [1, 2])
    tup = Tuple([Discrete(2), Tuple([Discrete(3)])])
    assert flatten(tup, (1, (2,))).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"^flatten: expected a tuple of 2 values, got \{\}"):
        flatten(tup, {})
    with pytest.raises(ValueError, match=r"^cannot flatten .*: not a puffer space$"):
        flatdim(_NotASpace())


def test_in_operator_and_hashes_of_equal_spaces():
    assert np.int64(1) in Discrete(2) and 2 not in Discrete(2)
    assert np.array([1, 2]) in MultiDiscrete([2, 3]) and np.array([2, 0]) not in MultiDiscrete(
        [2, 3]
    )
    pairs = [
        (Discrete(3, start=1), Discrete(3, start=1)),
        (MultiDiscrete([2, 3]), MultiDiscrete(np.array([2, 3]))),
        (MultiBinary((2, 3)), MultiBinary([2, 3])),
        (Dict(a=Discrete(2), b=Discrete(3)), Dict({"a": Discrete(2), "b": Discrete(3)})),
        (Tuple([Discrete(2)]), Tuple((Discrete(2),))),
    ]
    for a, b in pairs:
        assert a == b and hash(a) == hash(b)
    assert len({a for pair in pairs for a in pair}) == len(pairs)  # usable as set members


def test_multibinary_is_seeded_zero_one_and_keeps_its_shape_in_gymnasium():
    assert [MultiBinary(16, seed=4).sample().tolist() for _ in range(2)] == [
        MultiBinary(16, seed=4).sample().tolist()
    ] * 2
    draws = MultiBinary(5).sample_batch(400, np.random.default_rng(0))
    assert set(np.unique(draws)) == {0, 1}  # both values drawn, nothing else
    assert np.array([0, 2, 1], np.int8) not in MultiBinary(3)
    assert MultiBinary((2, 3)).to_gymnasium().shape == (2, 3)
    assert MultiBinary(4).to_gymnasium().n == 4
    # A Box of the same set is not a MultiBinary (it maps to another policy head).
    assert MultiBinary(3) != Box(0, 1, shape=(3,), dtype=np.int8)


def test_composites_iterate_in_order_and_check_batch_wants_a_dict():
    assert list(Dict(b=Discrete(2), a=Discrete(3))) == ["b", "a"]
    subs = [Discrete(2), Discrete(3)]
    assert list(Tuple(subs)) == subs
    d = Dict(a=Discrete(2), b=Discrete(3))
    assert message(d.check_batch, ["a", "b"], 2).startswith(
        "actions: expected a dict with keys ['a', 'b']; expected a value of Dict("
    )
    assert message(d.check_batch, {"a": np.array([0, 1])}, 2).startswith(
        "actions: expected a dict with keys ['a', 'b']"
    )


def test_unflatten_rounds_integer_leaves_to_the_nearest_value():
    space = Tuple([Discrete(5), Box(-3, 3, shape=(2,), dtype=np.int64), Box(0.0, 1.0, shape=())])
    out = unflatten(space, np.array([2.9999, -1.6, 1.4, 0.75], np.float32))
    assert out[0] == 3 and out[0].dtype == np.int64
    assert out[1].tolist() == [-2, 1] and out[1].dtype == np.int64
    assert out[2] == np.float32(0.75)


def test_flat_dtype_is_uint8_only_for_uint8_images_with_small_integers():
    gray, rgb = Box(0, 255, shape=(4, 4), dtype=np.uint8), Box(0, 255, (2, 2, 3), np.uint8)
    assert flat_dtype(Dict(image=gray, d=Discrete(4))) == np.uint8  # 2 axes: an image
    assert flat_dtype(Tuple([rgb, MultiDiscrete([256])])) == np.uint8
    assert flat_dtype(Dict(image=gray, d=Discrete(257))) == np.float32  # 256 does not fit
    assert flat_dtype(Dict(image=gray, v=Box(0.0, 1.0, shape=(2,)))) == np.float32  # a float leaf
    assert flat_dtype(Dict(image=gray, v=Box(-1, 1, shape=(2,), dtype=np.int8))) == np.float32
    assert flat_dtype(Box(0, 255, shape=(3,), dtype=np.uint8)) == np.float32  # a vector, no image
    assert flat_dtype(Box(0, 255, shape=(4, 4), dtype=np.int64)) == np.float32  # not uint8


def test_torch_flatten_keeps_uint8_device_and_unbatched_values():
    image = Dict(image=Box(0, 255, shape=(2, 2), dtype=np.uint8), d=Discrete(4))
    out = flatten(image, {"image": torch.full((2, 2), 200, dtype=torch.uint8), "d": 3})
    assert out.dtype == torch.uint8 and out.tolist() == [200, 200, 200, 200, 3]
    tup = Tuple([Discrete(2), Discrete(3)])
    out = flatten(tup, (torch.tensor(1), 2))  # a torch leaf and a Python int, no batch axis
    assert out.shape == (2,) and out.tolist() == [1.0, 2.0]
    meta = flatten(tup, (torch.zeros(3, dtype=torch.int64, device="meta"), np.array([0, 1, 2])))
    assert meta.device.type == "meta" and meta.shape == (
        3,
        2,
    )  # numpy leaves join the tensor's device
    with pytest.raises(ValueError, match=r"^flatten: expected a tuple of 2 values, got \(1,\)$"):
        flatten(tup, (1,))
    with pytest.raises(ValueError, match=r"^flatten: expected a dict with keys \['image', 'd'\]"):
        flatten(image, {"image": np.zeros((2, 2), np.uint8)})


def test_from_gymnasium_errors_name_the_space_and_the_supported_ones():
    import gymnasium

    assert message(from_gymnasium, gymnasium.spaces.Text(5)) == (
        "from_gymnasium: Text is not supported "
        "(use Discrete, MultiDiscrete, MultiBinary, Box, Dict or Tuple)"
    )
    grid = gymnasium.spaces.MultiDiscrete([[2, 3], [4, 5]])
    assert message(from_gymnasium, grid).startswith(
        "from_gymnasium: only 1-D MultiDiscrete is supported, got MultiDiscrete([[2 3]"
    )


def test_dtype_nan_and_tensor_messages():
    assert message(Discrete(3).check, np.float32(1.0)) == (
        "action: wrong dtype float32, expected int64 (cast with .astype(np.int64)); expected a "
        "value of Discrete(3), got np.float32(1.0) (float32)"
    )
    box = Box(0.0, 1.0, shape=(2,))
    assert message(Box(0, 3, (1,), np.int64).check, np.array([1.0])).startswith(
        "action: wrong dtype float64, expected int64 (cast with .astype(np.int64)); expected"
    )
    assert message(box.check, np.array(["a", "b"])) == (  # no cast hint for a float Box
        "action: wrong dtype <U1, expected float32; expected a value of Box(0, 1, (2,), float32), "
        "got ndarray(shape=(2,), dtype=<U1) ['a' 'b']"
    )
    assert message(box.check, np.array([0.5, np.nan], np.float32)) == (  # NaN: no ClipAction hint
        "action: NaN at index (1,); expected a value of Box(0, 1, (2,), float32), got "
        "ndarray(shape=(2,), dtype=float32) [0.5 nan]"
    )
    grad = torch.tensor([0.5, 2.0], requires_grad=True)  # a tensor is detached, not refused
    assert message(box.check, grad).endswith("got Tensor(shape=(2,), dtype=float32) [0.5 2. ]")
    assert message(MultiDiscrete([2] * 9).check, np.arange(9)).endswith(
        "got ndarray(shape=(9,), dtype=int64) [0 1 ... 7 8]"  # 9 values: 2 at each end
    )


def test_constructors_broadcast_keep_dtypes_and_allow_one_value():
    assert Discrete(1).sample() == 0 and 0 in Discrete(1)
    assert Box(0.0, np.ones(3)).shape == (3,)  # the shape of the larger bound
    assert Box(0, 255, (2,), np.uint8).low.dtype == np.uint8
    md = MultiDiscrete([2, 3])
    assert md.low.shape == (2,) and md.low.dtype == np.int64 and md.high.tolist() == [1, 2]
    assert message(Box, np.zeros(2), np.ones(3)).startswith(
        "Box: bounds of shape (2,) and (3,) do not fit shape=None; give scalars or arrays of that "
        "shape ("
    )


class _NotASpace(Dict):
    """A Dict whose one leaf is a bare ``Space`` (not flattenable)."""

    def __init__(self):
        from puffer.spaces import Space

        super().__init__(x=Space((), np.float32))
