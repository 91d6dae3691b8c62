"""Trees of arrays ("pytrees"): the one place that decides what a container is and what a
leaf is, for every function that takes a collection of arrays.

Why a module of its own: JAX, flax and haiku keep parameters and gradients in nested
dicts, lists, tuples and namedtuples, with ``None`` for variables that have no gradient
(Keras and torch skip those too). The functional forms must give back exactly the
caller's structure, and the compiled list reader (the in-place functions and the norms)
calls :func:`leaves` when a list argument is a dict, holds a ``None`` or a nested
container, so both see the same leaves in the same order.

The rules, the same with or without JAX:

- Leaves are arrays in the sense of ``_core.is_one_array``, the compiled reader's rule
  (NumPy arrays, memoryviews, DLPack capsules, anything with ``__dlpack__``,
  ``__array__`` or ``__cuda_array_interface__``) and, below the top level, plain real
  numbers (NumPy reads them as 0-d arrays; JAX calls them leaves too), non-empty lists
  of numbers (nested too: one array, as NumPy reads it, where JAX would see a list of
  number leaves) and other buffer-protocol objects (``array.array``), as list elements
  have always been read.
- Containers are ``dict`` (leaves in sorted key order, as JAX orders them; a rebuilt dict
  keeps the caller's key order), ``collections.OrderedDict`` and ``defaultdict`` (as JAX),
  ``list``, ``tuple`` and namedtuples (in order). ``None`` is an empty subtree: it has no
  leaves and comes back as ``None``.
- When JAX has already been imported (it is never imported here, so ``import gradcore``
  stays free of it), any other object that ``jax.tree_util`` knows as a node (flax's
  ``FrozenDict``, ``flax.struct`` dataclasses, custom registered nodes) is flattened by
  JAX itself, in JAX's order.
- A top-level iterable that is none of these (a generator over ``model.parameters()``) is
  read as a list, as everywhere in gradcore. Anything else raises ``TypeError`` naming the
  argument and the path to the offending entry, e.g. ``grads['dense'][1]``.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ._core import is_one_array

__all__ = ["Flat", "flatten", "flatten_like", "leaf_list", "leaves", "unflatten"]

_LEAF, _NONE, _LIST, _TUPLE, _NAMEDTUPLE, _DICT, _JAX = range(7)


@dataclass(frozen=True)
class _Node:
    """One level of a tree's structure. Equality ignores the caller's dict key order (two
    dicts with the same keys have the same structure, whatever order they were built in)."""
    kind: int
    meta: object = None          # namedtuple type; (dict type, sorted keys, factory); JAX treedef
    children: tuple = ()
    order: tuple | None = field(default=None, compare=False)   # a dict's own key order


LEAF = _Node(_LEAF)
NONE = _Node(_NONE)


@dataclass(frozen=True)
class Flat:
    """A flattened tree: its non-None leaves (in :func:`leaves` order), a label per leaf
    for error messages (``arrays['w'][0]``), and the structure :func:`unflatten` rebuilds."""
    leaves: list
    labels: list
    structure: _Node


def _is_array_or_number(obj) -> bool:
    return is_one_array(obj) or (isinstance(obj, numbers.Real) and not isinstance(obj, bool))


def _is_number_list(obj) -> bool:
    """A non-empty list or tuple of real numbers, or of such lists: inside a container one
    array, as NumPy reads it and as gradcore has always read a list element
    (``norms([[3.0, 4.0], x])`` has two entries)."""
    t = type(obj)
    if (t is not list and t is not tuple) or not obj:
        return False
    return all((isinstance(x, numbers.Real) and not isinstance(x, bool)) or _is_number_list(x) for x in obj)


def _has_buffer(obj) -> bool:
    """The buffer protocol (array.array, bytearray): an array inside a container, as the
    compiled reader has always read list elements (at the top level such an object is an
    iterable, by gradcore's one-array rule)."""
    if isinstance(obj, (list, tuple, dict, str)):
        return False
    try:
        with memoryview(obj):
            return True
    except TypeError:
        return False


def _is_leaf(obj) -> bool:
    return _is_array_or_number(obj) or _is_number_list(obj) or _has_buffer(obj)


def _is_namedtuple(obj) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def _sorted_keys(d, label):
    try:
        return tuple(sorted(d))
    except TypeError:
        raise TypeError(f"the keys of {label} cannot be sorted (JAX's order for dict "
                        f"leaves): {list(d)!r}") from None


def _not_a_tree(obj, label):
    return TypeError(f"{label} must be an array or a container of arrays (dict, list, tuple, "
                     f"namedtuple, None), got {type(obj).__name__}")


def _is_none(x) -> bool:
    return x is None


def _jax_node(obj, label, out, labels):
    """A node JAX knows (only asked when JAX is already loaded), else None. ``None`` is
    flattened as a leaf here, so that it can be skipped in a second tree too."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(obj, is_leaf=_is_none)
    if jax.tree_util.treedef_is_leaf(treedef):
        return None
    paths = tuple(jax.tree_util.keystr(path) for path, _ in with_paths)
    for path, (_, x) in zip(paths, with_paths):
        if x is not None and not _is_leaf(x):
            raise _not_a_tree(x, label + path)
    out.extend(x for _, x in with_paths if x is not None)
    labels.extend(label + path for path, (_, x) in zip(paths, with_paths) if x is not None)
    present = tuple(x is not None for _, x in with_paths)
    return _Node(_JAX, (treedef, present, paths))


def _flatten(obj, label, out, labels, top=False):
    if obj is None:
        return NONE
    if _is_array_or_number(obj) or (not top and _is_number_list(obj)):
        out.append(obj)
        labels.append(label)
        return LEAF
    t = type(obj)
    if t is list or t is tuple:
        children = tuple(_flatten(x, f"{label}[{i}]", out, labels) for i, x in enumerate(obj))
        return _Node(_LIST if t is list else _TUPLE, None, children)
    if _is_namedtuple(obj):
        children = tuple(_flatten(x, f"{label}.{name}", out, labels)
                         for name, x in zip(t._fields, obj))
        return _Node(_NAMEDTUPLE, t, children)
    if t is dict or t is OrderedDict or t is defaultdict:
        keys = tuple(obj) if t is OrderedDict else _sorted_keys(obj, label)
        children = tuple(_flatten(obj[k], f"{label}[{k!r}]", out, labels) for k in keys)
        factory = obj.default_factory if t is defaultdict else None
        return _Node(_DICT, (t, keys, factory), children, tuple(obj))
    if _has_buffer(obj):
        out.append(obj)
        labels.append(label)
        return LEAF
    node = _jax_node(obj, label, out, labels)
    if node is None:
        raise _not_a_tree(obj, label)
    return node


def _top_level(tree, name):
    """The one-array and any-iterable rules of a whole argument (gradcore's list rule)."""
    if (tree is None or _is_array_or_number(tree)
            or type(tree) in (list, tuple, dict, OrderedDict, defaultdict)
            or _is_namedtuple(tree)):
        return tree
    if isinstance(tree, (str, bytes)) or not hasattr(tree, "__iter__"):
        if _jax_knows(tree):
            return tree
        raise _not_a_tree(tree, name)
    if iter(tree) is tree or not _jax_knows(tree):  # a generator is never a node
        return list(tree)
    return tree


def _jax_knows(obj) -> bool:
    """Whether JAX (when loaded) flattens obj as a node rather than holding it as a leaf."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    with warnings.catch_warnings():  # JAX warns that an unregistered iterable is a leaf
        warnings.simplefilter("ignore", DeprecationWarning)
        return not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(obj))


def flatten(tree, name: str = "arrays") -> Flat:
    """The non-None leaves of ``tree``, their labels and its structure. One array (not a
    number) is a tree of one leaf; a top-level iterable is read as a list."""
    tree = _top_level(tree, name)
    if isinstance(tree, numbers.Real) and not is_one_array(tree):
        raise _not_a_tree(tree, name)
    out, labels = [], []
    structure = _flatten(tree, name, out, labels, top=True)
    return Flat(out, labels, structure)


def leaves(tree, name: str = "arrays") -> list:
    """The non-None array leaves of ``tree``, in ``jax.tree_util.tree_leaves`` order.

    Called by the compiled list reader for dicts, ``None`` entries and nested containers,
    so a flat list or tuple of NumPy arrays is answered without walking a structure."""
    if (type(tree) is list or type(tree) is tuple) and all(type(x) is np.ndarray for x in tree):
        return list(tree)
    out = []
    try:
        if _collect(tree, out, top=True):
            return out
    except TypeError:  # (unsortable keys)
        pass
    return flatten(tree, name).leaves  # the slow walk: labels for the error, JAX's nodes


def leaf_list(tree, name: str = "arrays"):
    """A list argument as the compiled reader takes it, for the pure-Python functions
    that keep per-array state (gradcore.monitor, gradcore.distributed): a flat list or
    tuple of arrays as it is, one array as a list of one, a tree as its leaves."""
    if (type(tree) is list or type(tree) is tuple) and not any(
            x is None or isinstance(x, (list, tuple, dict)) for x in tree):
        return tree
    if is_one_array(tree):
        return [tree]
    return leaves(tree, name)


def _collect(obj, out, top=False) -> bool:
    """The leaves of a tree of standard containers, without labels or structure (False
    for anything else, which flatten then explains or hands to JAX)."""
    if obj is None:
        return True
    # (a number is a leaf inside a container only; flatten explains the top-level one)
    if is_one_array(obj) or (not top and (_is_array_or_number(obj) or _is_number_list(obj))):
        out.append(obj)
        return True
    t = type(obj)
    if t is list or t is tuple or _is_namedtuple(obj):
        return all(_collect(x, out) for x in obj)
    if t is dict or t is defaultdict:
        return all(_collect(obj[k], out) for k in sorted(obj))
    if t is OrderedDict:
        return all(_collect(x, out) for x in obj.values())
    if not top and _has_buffer(obj):
        out.append(obj)
        return True
    return False


def _build(node, it):
    kind = node.kind
    if kind == _LEAF:
        return next(it)
    if kind == _NONE:
        return None
    if kind == _LIST:
        return [_build(c, it) for c in node.children]
    if kind == _TUPLE:
        return tuple(_build(c, it) for c in node.children)
    if kind == _NAMEDTUPLE:
        return node.meta(*[_build(c, it) for c in node.children])
    if kind == _DICT:
        t, keys, factory = node.meta
        built = {k: _build(c, it) for k, c in zip(keys, node.children)}
        items = [(k, built[k]) for k in node.order]
        return defaultdict(factory, items) if t is defaultdict else t(items)
    treedef, present, _ = node.meta
    return sys.modules["jax"].tree_util.tree_unflatten(
        treedef, [next(it) if p else None for p in present])


def unflatten(structure: _Node, new_leaves):
    """The tree of ``structure`` with ``new_leaves`` (in :func:`leaves` order) in place of
    its leaves; ``None`` entries come back as ``None``, containers as their own types."""
    new_leaves = list(new_leaves)
    if len(new_leaves) != _count(structure):
        raise ValueError(f"{len(new_leaves)} leaves for a structure of {_count(structure)}")
    return _build(structure, iter(new_leaves))


def _count(node):
    if node.kind == _LEAF:
        return 1
    if node.kind == _JAX:
        return sum(node.meta[1])
    return sum(map(_count, node.children))


def _mismatch(label, what, names):
    """The error for a difference at ``label`` (e.g. ``params['w']``), naming the same
    place in the other tree (``grads['w']``)."""
    name, like_name = names
    return ValueError(f"{label} must have the same structure as {like_name}"
                      f"{label[len(name):]}: {what}")


def _flatten_like(obj, node, label, like, out, labels):
    kind = node.kind
    if kind == _NONE:
        return  # no gradient there: whatever the other tree holds is not used
    if kind == _LEAF:
        if obj is None or not _is_leaf(obj):
            raise _mismatch(label, f"an array was expected, got {type(obj).__name__}", like)
        out.append(obj)
        labels.append(label)
        return
    if kind in (_LIST, _TUPLE, _NAMEDTUPLE):
        # Sequences match by length whatever their kind: gradcore has always paired a
        # list of grads with a tuple or generator of params.
        if not isinstance(obj, (list, tuple)) or len(obj) != len(node.children):
            raise _mismatch(label, f"a sequence of {len(node.children)} was expected, got "
                            f"{_describe(obj)}", like)
        for i, (x, c) in enumerate(zip(obj, node.children)):
            _flatten_like(x, c, f"{label}[{i}]", like, out, labels)
        return
    if kind == _DICT:
        keys = node.meta[1]
        if not isinstance(obj, dict) or set(obj) != set(keys):
            raise _mismatch(label, f"a dict with the keys {sorted(map(repr, keys))} was "
                            f"expected, got {_describe(obj)}", like)
        for k, c in zip(keys, node.children):
            _flatten_like(obj[k], c, f"{label}[{k!r}]", like, out, labels)
        return
    treedef, present, paths = node.meta
    try:
        flat = treedef.flatten_up_to(obj)
    except (ValueError, TypeError) as error:
        raise _mismatch(label, str(error), like) from None
    for x, p, path in zip(flat, present, paths):
        if not p:
            continue  # no gradient there
        if x is None or not _is_leaf(x):
            raise _mismatch(label + path, f"an array was expected, got {type(x).__name__}", like)
        out.append(x)
        labels.append(label + path)


def _describe(obj):
    if isinstance(obj, dict):
        return f"a {type(obj).__name__} with the keys {sorted(map(repr, obj))}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def flatten_like(tree, like: Flat, name: str, like_name: str) -> Flat:
    """``tree`` flattened along the structure of ``like`` (e.g. params along grads): one
    leaf per leaf of ``like``, in the same order. Lists, tuples and namedtuples match any
    sequence of their length, dicts any dict with their keys; where ``like`` has ``None``,
    whatever ``tree`` holds is skipped; any other difference raises ``ValueError`` naming
    the path."""
    tree = _top_level(tree, name)
    out, labels = [], []
    _flatten_like(tree, like.structure, name, (name, like_name), out, labels)
    return Flat(out, labels, like.structure)
