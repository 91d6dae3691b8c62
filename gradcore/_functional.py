"""Functional forms of the in-place clipping functions, for immutable array libraries
(JAX) and for code that must not touch its inputs.

Each takes a tree of arrays (``gradcore._pytree``: nested dicts, lists, tuples and
namedtuples, ``None`` entries, flax/JAX nodes when JAX is loaded; one array; any iterable)
whose leaves are any array-like (NumPy, torch, JAX, objects with ``__dlpack__``,
``__array__`` or the buffer protocol; read-only inputs are fine), clips fresh C-contiguous
NumPy copies of the non-None leaves with one call of the same kernel over all of them,
and returns them in the caller's structure: the result is bit-identical to the in-place
function applied to copies. A tuple stays a tuple, a namedtuple keeps its type, a dict
its key order, ``None`` stays ``None``; a top-level iterable gives a list.
"""

from __future__ import annotations

import numpy as np

from . import _core, _norms, _pytree
from ._args import REAL_FLOATS, dtype_names

_CLIP_DTYPES = REAL_FLOATS
# Clipping by a norm is defined for complex arrays too (|z| per element).
_NORM_CLIP_DTYPES = _CLIP_DTYPES + ("complex64", "complex128")


def _copies(flat, dtypes=_CLIP_DTYPES):
    """Fresh writeable C-contiguous copies of a flattened tree's leaves."""
    views = [_core.host_array(v, label, False) for v, label in zip(flat.leaves, flat.labels)]
    for a, label in zip(views, flat.labels):
        # Checked here so that the message names the leaf's path in the caller's tree,
        # not its index in the flat list the kernel sees.
        if a.dtype.name not in dtypes or not a.dtype.isnative:
            raise TypeError(f"{label}: dtype {a.dtype} is not supported (expected "
                            f"{dtype_names(dtypes)})")
    return [np.array(a, order="C", copy=True) for a in views]


def clip_by_global_norm(arrays, max_norm, ord=2, *, eps=1e-6, nonfinite="propagate",
                        total_norm=None):
    """``clip_by_global_norm_`` without modifying ``arrays``: returns
    ``(clipped_copies, total_norm_before_clipping)``. With ``nonfinite="error"`` a non-finite
    total raises ``NonFiniteGradientError``; with ``"skip"`` the copies are returned unscaled.
    Complex leaves are taken and keep their dtype (see ``clip_by_global_norm_``)."""
    flat = _pytree.flatten(arrays, "arrays")
    out = _copies(flat, _NORM_CLIP_DTYPES)
    total = _norms.clip_by_global_norm_(out, max_norm, ord, eps=eps, nonfinite=nonfinite,
                                        total_norm=total_norm)
    return _pytree.unflatten(flat.structure, out), total


def clip_by_norm(arrays, max_norm, ord=2, *, eps=1e-6):
    """``clip_by_norm_`` (each array on its own) without modifying ``arrays``: returns
    ``(clipped_copies, norms_before_clipping)``, the norms a float64 array with one entry
    per non-None leaf, in ``jax.tree_util.tree_leaves`` order (dict keys sorted). Complex
    leaves are taken and keep their dtype."""
    flat = _pytree.flatten(arrays, "arrays")
    out = _copies(flat, _NORM_CLIP_DTYPES)
    norms = _norms.clip_by_norm_(out, max_norm, ord, eps=eps)
    return _pytree.unflatten(flat.structure, out), norms


def clip_by_value(arrays, clip_value=None, *, min=None, max=None):
    """``clip_by_value_`` without modifying ``arrays``: returns the clamped copies."""
    flat = _pytree.flatten(arrays, "arrays")
    out = _copies(flat)
    _norms.clip_by_value_(out, clip_value, min=min, max=max)
    return _pytree.unflatten(flat.structure, out)


def adaptive_clip(grads, params, clipping=0.01, *, eps=1e-3, unit_axis=0):
    """``adaptive_clip_`` without modifying ``grads``: returns the clipped copies of the
    gradients (``params`` are only read). ``params`` must have the structure of ``grads``
    (``ValueError`` naming the first difference otherwise; dicts match by key, whatever
    their order); where a gradient is ``None`` its parameter is not read."""
    flat = _pytree.flatten(grads, "grads")
    matched = _pytree.flatten_like(params, flat, "params", "grads")
    out = _copies(flat)
    _norms.adaptive_clip_(out, matched.leaves, clipping, eps=eps, unit_axis=unit_axis)
    return _pytree.unflatten(flat.structure, out)
