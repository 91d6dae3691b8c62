"""Random trees of arrays for the pytree and optax tests (hypothesis strategies), and a
structure comparison that does not go through gradcore's own flattener."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from hypothesis import strategies as st

Pair = namedtuple("Pair", "left right")


def _array(spec):
    shape, dtype, seed, scale = spec
    rng = np.random.default_rng(seed)
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)  # (0-d: an array too)


def arrays(dtypes=(np.float32, np.float64), max_ndim=3, scales=(1e-3, 1.0, 1e3)):
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=max_ndim).map(tuple)
    return st.tuples(shapes, st.sampled_from(dtypes), st.integers(0, 2**32 - 1),
                     st.sampled_from(scales)).map(_array)


def trees(leaves=None, none=True, max_leaves=8):
    """Nested dicts (short string keys), lists, tuples and namedtuples, with ``None``
    entries when ``none``."""
    base = leaves if leaves is not None else arrays()
    if none:
        base = st.one_of(base, base, base, st.none())
    keys = st.text("abcdxyz_", min_size=1, max_size=3)
    return st.recursive(base, lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(keys, kids, max_size=3),
        st.tuples(kids, kids).map(lambda p: Pair(*p)),
    ), max_leaves=max_leaves)


def same_structure(a, b) -> bool:
    """Same container types (and key order), None where None, arrays where arrays."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_structure(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same_structure, a, b))
    return False


def walk(tree):
    """The non-None leaves in JAX's order, written from JAX's documented rules (dict keys
    sorted; sequences and namedtuples in order), independently of gradcore."""
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in walk(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for item in tree for x in walk(item)]
    return [tree]
