"""Trees of arrays in the in-place functions and the norms: the compiled list reader hands
dicts, None entries and nested containers to gradcore._pytree.leaves, so these functions
see the non-None leaves in JAX's order and clip the caller's own arrays.

(These need the list reader's side of the contract, in the compiled bindings.)"""

import math
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore
from reference import (
    assert_close,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_grad_stats,
    ref_norm,
    ref_norms,
)
from trees import trees, walk

# None as a whole argument is refused by these functions (tests/test_norms.py); inside a
# tree it is an empty subtree.
def inplace_trees():
    return trees().filter(lambda t: t is not None)

Layer = namedtuple("Layer", "kernel bias")


def rtol(a):
    return 4 * float(np.finfo(a.dtype).eps)


@given(tree=inplace_trees(), ord=st.sampled_from([1, 2, math.inf, 3]))
def test_norms_of_a_tree_are_the_norms_of_its_leaves(tree, ord):
    flat = walk(tree)
    assert_close(gradcore.global_norm(tree, ord), ref_norm(flat, ord), 1e-12 if ord != 3 else 1e-10)
    got = gradcore.norms(tree, ord)
    assert got.shape == (len(flat),)
    assert_close(got, ref_norms(flat, ord), 1e-12 if ord != 3 else 1e-10)
    stats, expected = gradcore.grad_stats(tree), ref_grad_stats(flat)
    assert_close(np.asarray(stats.l2_norm), np.asarray(expected[0]), 1e-12)


@given(tree=inplace_trees(), max_norm=st.sampled_from([0.0, 0.5, 1e3]))
def test_clip_by_global_norm_clips_the_leaves_in_place(tree, max_norm):
    flat = walk(tree)
    expected, expected_total = ref_clip_by_global_norm(flat, max_norm)
    total = gradcore.clip_by_global_norm_(tree, max_norm)
    assert_close(total, expected_total, 1e-12)
    for got, ref in zip(walk(tree), expected):  # the same objects, now clipped
        assert_close(got, ref, rtol(ref))


@given(tree=inplace_trees(), bound=st.sampled_from([0.0, 0.3, 2.0]))
def test_clip_by_norm_and_value_in_place(tree, bound):
    flat = walk(tree)
    expected, expected_norms = ref_clip_by_norm(flat, bound)
    assert_close(gradcore.clip_by_norm_(tree, bound), expected_norms, 1e-12)
    for got, ref in zip(flat, expected):
        assert_close(got, ref, rtol(ref))
    clamped = ref_clip_by_value(flat, bound / 2)
    gradcore.clip_by_value_(tree, bound / 2)
    for got, ref in zip(flat, clamped):
        assert_close(got, ref, 0.0, atol=0.0)


def test_none_entries_are_skipped():
    w, b = np.array([3.0, 4.0]), np.array([12.0], dtype=np.float32)
    tree = {"dense": Layer(kernel=w, bias=None), "head": [None, (b,)], "frozen": None}
    assert gradcore.global_norm(tree) == 13.0
    assert gradcore.norms(tree).tolist() == [5.0, 12.0]   # "dense" < "head"
    assert gradcore.clip_by_global_norm_(tree, 1.0) == 13.0
    np.testing.assert_allclose(w, [3 / 13, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(b, [12 / 13], rtol=1e-6)
    assert gradcore.global_norm([None, None]) == 0.0 and gradcore.global_norm({}) == 0.0


def test_dict_leaves_come_in_sorted_key_order():
    a, b = np.array([1.0]), np.array([2.0, 2.0])
    assert gradcore.norms({"w": a, "b": b}).tolist() == [math.sqrt(8.0), 1.0]
    assert gradcore.clip_by_norm_({"w": a, "b": b}, 10.0).tolist() == [math.sqrt(8.0), 1.0]


def test_adaptive_clip_on_nested_trees():
    rng = np.random.default_rng(2)
    grads = {"conv": Layer(rng.standard_normal((3, 4)), rng.standard_normal(4)),
             "out": [rng.standard_normal((2, 5)).astype(np.float32)]}
    params = {"conv": Layer(0.1 * rng.standard_normal((3, 4)), rng.standard_normal(4)),
              "out": [rng.standard_normal((2, 5)).astype(np.float32)]}
    expected = ref_adaptive_clip(walk(grads), walk(params), 0.05)
    gradcore.adaptive_clip_(grads, params, 0.05)
    for got, ref in zip(walk(grads), expected):
        assert_close(got, ref, rtol(ref))


def test_a_bad_leaf_deep_in_a_tree_modifies_nothing():
    w = np.array([3.0, 4.0])
    frozen = np.array([1.0, 1.0])
    frozen.setflags(write=False)
    with pytest.raises((TypeError, ValueError)):
        gradcore.clip_by_global_norm_({"a": w, "b": [None, frozen]}, 1.0)
    with pytest.raises(TypeError, match="arrays"):
        gradcore.global_norm({"a": w, "b": ["text"]})
    assert w.tolist() == [3.0, 4.0]
