"""Trees of arrays in the functional forms (gradcore._pytree): the leaves come in JAX's
order, the caller's structure comes back (tuples, namedtuples, nested dicts in their key
order, None kept), None entries are skipped, results match the float64 reference over the
flat leaves, and bad trees raise errors naming the argument and the path."""

import math
import subprocess
import sys
from collections import OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gradcore
from gradcore import _pytree
from reference import (
    assert_close,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_norm,
    same_bits,
)
from trees import Pair, same_structure, trees, walk


def rtol(a):
    return 4 * float(np.finfo(a.dtype).eps)


def _same_leaves(got, expected):
    return len(got) == len(expected) and all(g is e for g, e in zip(got, expected))


@given(tree=trees())
def test_leaves_in_jax_order(tree):
    assert _same_leaves(_pytree.leaves(tree), walk(tree))


@given(tree=trees())
def test_leaves_agree_with_jax(tree):
    jax = pytest.importorskip("jax")
    assert _same_leaves(_pytree.leaves(tree), jax.tree_util.tree_leaves(tree))


@given(tree=trees(), max_norm=st.sampled_from([0.0, 0.5, 1e3]), ord=st.sampled_from([1, 2, math.inf]))
def test_clip_by_global_norm_keeps_the_tree(tree, max_norm, ord):
    flat = walk(tree)
    before = [a.tobytes() for a in flat]
    out, total = gradcore.clip_by_global_norm(tree, max_norm, ord)
    assert [a.tobytes() for a in flat] == before
    assert same_structure(out, tree)
    expected, expected_total = ref_clip_by_global_norm(flat, max_norm, ord)
    assert_close(total, expected_total, 1e-12)
    for got, ref in zip(walk(out), expected):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert_close(got, ref, rtol(ref))


@given(tree=trees(), max_norm=st.sampled_from([0.0, 0.5, 10.0]))
def test_clip_by_norm_and_value_keep_the_tree(tree, max_norm):
    flat = walk(tree)
    out, norms = gradcore.clip_by_norm(tree, max_norm)
    assert same_structure(out, tree)
    expected, expected_norms = ref_clip_by_norm(flat, max_norm)
    assert norms.shape == (len(flat),)
    assert_close(norms, expected_norms, 1e-12)
    for got, ref in zip(walk(out), expected):
        assert_close(got, ref, rtol(ref))
    clamped = gradcore.clip_by_value(tree, min=-max_norm, max=max_norm / 2)
    assert same_structure(clamped, tree)
    for got, ref in zip(walk(clamped), ref_clip_by_value(flat, min=-max_norm, max=max_norm / 2)):
        assert_close(got, ref, 0.0, atol=0.0)


@given(tree=trees(none=False), seed=st.integers(0, 2**32 - 1), drop=st.integers(0, 7))
def test_adaptive_clip_pairs_params_with_grads(tree, seed, drop):
    rng = np.random.default_rng(seed)
    flat = walk(tree)
    param_leaves = [(0.1 * rng.standard_normal(a.shape)).astype(a.dtype) for a in flat]
    params = _pytree.unflatten(_pytree.flatten(tree).structure, param_leaves)
    # A None gradient leaves its parameter unread, whatever it is.
    grads = _replace_nth_leaf(tree, drop % max(len(flat), 1), None) if flat else tree
    kept = [i for i, a in enumerate(flat) if any(a is b for b in walk(grads))]
    out = gradcore.adaptive_clip(grads, params, 0.05)
    assert same_structure(out, grads)
    expected = ref_adaptive_clip([flat[i] for i in kept], [param_leaves[i] for i in kept], 0.05)
    for got, ref in zip(walk(out), expected):
        assert_close(got, ref, rtol(ref))


def _replace_nth_leaf(tree, n, value):
    """The tree with its n-th array leaf (in any fixed order) replaced by value."""
    counter = iter(range(10**9))

    def go(t):
        if t is None:
            return None
        if isinstance(t, dict):
            return {k: go(v) for k, v in t.items()}
        if isinstance(t, Pair):
            return Pair(*map(go, t))
        if isinstance(t, (list, tuple)):
            return type(t)(map(go, t))
        return value if next(counter) == n else t

    return go(tree)


Grads = namedtuple("Grads", "w b")


def test_none_entries_are_skipped_and_kept():
    w, b = np.array([3.0, 4.0]), np.array([12.0], dtype=np.float32)
    tree = {"dense": {"w": w, "b": None}, "head": (None, b), "frozen": None}
    out, total = gradcore.clip_by_global_norm(tree, 1.0)
    assert total == 13.0
    assert out["dense"]["b"] is None and out["head"][0] is None and out["frozen"] is None
    assert list(out) == ["dense", "head", "frozen"] and isinstance(out["head"], tuple)
    np.testing.assert_allclose(out["dense"]["w"], w / 13, rtol=1e-6)
    assert out["head"][1].dtype == np.float32
    assert gradcore.clip_by_global_norm([None, None], 1.0) == ([None, None], 0.0)
    assert gradcore.clip_by_global_norm(None, 1.0) == (None, 0.0)
    out, norms = gradcore.clip_by_norm(Grads(w=w, b=None), 1.0)
    assert type(out) is Grads and out.b is None and norms.tolist() == [5.0]


def test_namedtuples_and_dict_kinds_are_kept():
    a, b = np.array([1.0, -2.0]), np.array([0.5])
    out = gradcore.clip_by_value(Grads(w=[a, b], b=(b,)), 1.0)
    assert type(out) is Grads and type(out.w) is list and type(out.b) is tuple
    assert out.w[0].tolist() == [1.0, -1.0]
    ordered = gradcore.clip_by_value(OrderedDict([("z", a), ("a", b)]), 1.0)
    assert type(ordered) is OrderedDict and list(ordered) == ["z", "a"]
    dd = defaultdict(list, {"y": a, "x": b})
    got = gradcore.clip_by_value(dd, 1.0)
    assert type(got) is defaultdict and got.default_factory is list and list(got) == ["y", "x"]


def test_dict_leaves_are_sorted_but_keys_keep_their_order():
    a, b = np.array([3.0]), np.array([4.0])
    out, norms = gradcore.clip_by_norm({"w": a, "b": b}, 10.0)
    assert list(out) == ["w", "b"] and norms.tolist() == [4.0, 3.0]   # "b" < "w"
    assert _same_leaves(_pytree.leaves(OrderedDict([("w", a), ("b", b)])), [a, b])  # as JAX


def test_buffers_are_leaves_inside_containers():
    import array
    out, total = gradcore.clip_by_global_norm({"a": array.array("d", [3.0, 4.0])}, 1.0)
    assert total == 5.0 and out["a"].dtype == np.float64 and out["a"].shape == (2,)


def test_numbers_are_leaves_inside_containers():
    out, total = gradcore.clip_by_global_norm({"a": 3.0, "b": [4.0]}, 1.0)
    assert total == 5.0 and isinstance(out["a"], np.ndarray) and out["a"].shape == ()
    assert out["b"].shape == (1,)  # a list of numbers is one array, as NumPy reads it
    with pytest.raises(TypeError, match=r"arrays\['b'\]: dtype int64"):
        gradcore.clip_by_global_norm({"a": 3.0, "b": [4]}, 1.0)


def test_lists_of_numbers_are_one_array_below_the_top_level():
    nested = [[3.0, 4.0], [0.0, 1.0]]
    assert gradcore._pytree.leaves([np.ones(2), nested, None])[1] is nested
    assert gradcore.norms([nested, None, np.array([12.0])]).tolist() == [math.sqrt(26.0), 12.0]
    assert len(gradcore._pytree.leaves([3.0, 4.0])) == 2  # the top level is the list itself


def test_results_match_the_flat_in_place_call_bit_for_bit():
    rng = np.random.default_rng(7)
    tree = {"enc": [rng.standard_normal((5, 3)).astype(np.float32), None],
            "dec": Pair(rng.standard_normal(4), rng.standard_normal((2, 2)))}
    out, total = gradcore.clip_by_global_norm(tree, 0.3)
    copies = [a.copy() for a in walk(tree)]
    assert total == gradcore.clip_by_global_norm_(copies, 0.3)
    assert all(same_bits(x, y) for x, y in zip(walk(out), copies))
    assert math.isclose(total, ref_norm(walk(tree)), rel_tol=1e-14)


def test_bad_trees_name_the_argument_and_the_path():
    a = np.ones(2)
    with pytest.raises(TypeError, match=r"arrays\['w'\]\[1\] must be an array or a container"):
        gradcore.clip_by_global_norm({"w": [a, "x"]}, 1.0)
    with pytest.raises(TypeError, match=r"grads\['w'\]\[1\] must be an array or a container"):
        _pytree.leaves({"w": [a, "x"]}, "grads")
    with pytest.raises(TypeError, match="keys of arrays cannot be sorted"):
        _pytree.leaves({1: a, "b": a})
    with pytest.raises(TypeError, match=r"arrays\[0\]\.b must be an array"):
        gradcore.clip_by_value([Grads(w=a, b=object())], 1.0)
    with pytest.raises(TypeError, match=r"arrays\['x'\]: dtype"):
        gradcore.clip_by_norm({"x": np.arange(3)}, 1.0)
    with pytest.raises(TypeError, match="keys of arrays cannot be sorted"):
        gradcore.clip_by_value({1: a, "b": a}, 1.0)
    with pytest.raises(TypeError, match="grads"):
        gradcore.adaptive_clip(3.0, a)
    assert a.tolist() == [1.0, 1.0]


def test_adaptive_clip_structure_mismatch_names_params():
    g = {"w": np.ones((2, 2)), "b": np.ones(2)}
    with pytest.raises(ValueError, match=r"params must have the same structure as grads: .*'b'"):
        gradcore.adaptive_clip(g, {"w": np.ones((2, 2)), "c": np.ones(2)})
    with pytest.raises(ValueError, match=r"params\['b'\] must have the same structure as grads\['b'\]"):
        gradcore.adaptive_clip(g, {"w": np.ones((2, 2)), "b": None})
    with pytest.raises(ValueError, match=r"params\[0\] must .* as grads\[0\]: a sequence of 2 was expected, got a list of 1"):
        gradcore.adaptive_clip([(np.ones(2), np.ones(2))], [[np.ones(2)]])
    # sequences pair by length whatever their kind (a list of grads, a tuple of params)
    out = gradcore.adaptive_clip([(np.ones(2), np.ones(2))], ([np.ones(2), np.ones(2)],), 0.1)
    assert isinstance(out, list) and isinstance(out[0], tuple)
    with pytest.raises(ValueError, match="shape"):
        gradcore.adaptive_clip([np.ones(2)], [np.ones(3)])


def test_a_generator_is_read_as_a_list():
    out, total = gradcore.clip_by_global_norm((x for x in [np.array([3.0]), None, np.array([4.0])]), 1.0)
    assert isinstance(out, list) and out[1] is None and total == 5.0


def test_unflatten_needs_one_leaf_per_leaf():
    flat = _pytree.flatten({"a": [np.ones(1), None], "b": np.ones(2)})
    assert _pytree.unflatten(flat.structure, ["x", "y"]) == {"a": ["x", None], "b": "y"}
    for wrong in (["x"], ["x", "y", "z"]):
        with pytest.raises(ValueError, match="leaves for a structure of 2"):
            _pytree.unflatten(flat.structure, wrong)


def test_flat_lists_take_the_fast_path():
    arrays = [np.ones(2), np.zeros(3)]
    got = _pytree.leaves(arrays)
    assert _same_leaves(got, arrays) and got is not arrays and _pytree.leaves(np.ones(1))[0].shape == (1,)


def test_gradcore_does_not_import_jax_and_reads_trees_without_it(tmp_path):
    # (from tmp_path: the checkout's root would put the source tree first on sys.path)
    code = ("import sys; sys.modules['jax'] = None\n"   # an import attempt would fail
            "import numpy as np, gradcore\n"
            "out, t = gradcore.clip_by_global_norm({'a': (np.ones(4), None)}, 1.0)\n"
            "assert t == 2.0 and isinstance(out['a'], tuple) and out['a'][1] is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path)
    plain = subprocess.run([sys.executable, "-c", "import gradcore, sys; print('jax' in sys.modules, "
                            "'optax' in sys.modules)"], capture_output=True, text=True, check=True,
                           timeout=120, cwd=tmp_path)
    assert plain.stdout.split() == ["False", "False"]


def test_custom_jax_nodes_are_flattened_by_jax():
    jax = pytest.importorskip("jax")

    @jax.tree_util.register_pytree_node_class
    class Frozen:  # a stand-in for flax's FrozenDict: a node only JAX knows
        def __init__(self, items):
            self.items = dict(items)

        def tree_flatten(self):
            keys = sorted(self.items)
            return [self.items[k] for k in keys], keys

        @classmethod
        def tree_unflatten(cls, keys, children):
            return cls(zip(keys, children))

    tree = {"params": Frozen({"w": np.array([3.0]), "b": None, "v": np.array([4.0])})}
    out, total = gradcore.clip_by_global_norm(tree, 1.0)
    assert total == 5.0 and isinstance(out["params"], Frozen)
    assert out["params"].items["b"] is None
    np.testing.assert_allclose(out["params"].items["w"], [0.6], rtol=1e-6)
    assert _same_leaves(_pytree.leaves(tree), jax.tree_util.tree_leaves(tree))
    params = {"params": Frozen({"w": np.array([1.0]), "b": np.array([1.0]), "v": np.array([1.0])})}
    clipped = gradcore.adaptive_clip(tree, params, 0.1)
    np.testing.assert_allclose(clipped["params"].items["w"], [0.1], rtol=1e-6)
    with pytest.raises(TypeError, match=r"arrays\['params'\].*must be an array"):
        gradcore.clip_by_value({"params": Frozen({"w": "text"})}, 1.0)


@pytest.mark.parametrize("bad", [3.0, 7, "text", b"raw"])
def test_a_number_or_a_string_is_not_a_list_argument(bad):
    """As a whole argument a number or a string is refused before anything runs (the
    distributed functions rely on it: no collective is called)."""
    for fn in (_pytree.leaves, _pytree.leaf_list, _pytree.flatten):
        with pytest.raises(TypeError, match="arrays"):
            fn(bad, "arrays")
    with pytest.raises(TypeError, match="arrays"):
        gradcore.global_norm(bad)
