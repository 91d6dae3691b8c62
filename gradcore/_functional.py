"""Functional forms of the in-place clipping functions, for immutable array libraries
(JAX) and for code that must not touch its inputs.

Each takes what the in-place function takes (any array-like: NumPy, torch, JAX, objects
with ``__dlpack__``, ``__array__`` or the buffer protocol; read-only inputs are fine),
clips fresh C-contiguous NumPy copies with the same kernel, and returns them: the result
is bit-identical to the in-place function applied to copies. The container is kept: a
list or tuple (or any iterable) gives a list, a dict gives a dict with the same keys, a
single array gives a single array.
"""

from __future__ import annotations

import numpy as np

from . import _core, _norms
from ._args import array_list, is_one_array


def _copies(arrays, name):
    """(fresh writeable copies as a list, a function rebuilding the caller's container)."""
    if isinstance(arrays, dict):
        keys = list(arrays)
        values = [arrays[k] for k in keys]
        labels = [f"{name}[{k!r}]" for k in keys]
        rebuild = lambda out: dict(zip(keys, out))  # noqa: E731
    elif is_one_array(arrays):
        values, labels = [arrays], [name]
        rebuild = lambda out: out[0]  # noqa: E731
    else:
        values = list(array_list(arrays, name))  # (TypeError for what is not a sequence)
        labels = [f"{name}[{i}]" for i in range(len(values))]
        rebuild = list
    out = [np.array(_core.host_array(v, label, False), order="C", copy=True)
           for v, label in zip(values, labels)]
    return out, rebuild


def clip_by_global_norm(arrays, max_norm, ord=2, *, eps=1e-6, nonfinite="propagate",
                        total_norm=None):
    """``clip_by_global_norm_`` without modifying ``arrays``: returns
    ``(clipped_copies, total_norm_before_clipping)``. With ``nonfinite="error"`` a non-finite
    total raises ``NonFiniteGradientError``; with ``"skip"`` the copies are returned unscaled."""
    out, rebuild = _copies(arrays, "arrays")
    total = _norms.clip_by_global_norm_(out, max_norm, ord, eps=eps, nonfinite=nonfinite,
                                        total_norm=total_norm)
    return rebuild(out), total


def clip_by_norm(arrays, max_norm, ord=2, *, eps=1e-6):
    """``clip_by_norm_`` (each array on its own) without modifying ``arrays``: returns
    ``(clipped_copies, norms_before_clipping)``, the norms a float64 array."""
    out, rebuild = _copies(arrays, "arrays")
    norms = _norms.clip_by_norm_(out, max_norm, ord, eps=eps)
    return rebuild(out), norms


def clip_by_value(arrays, clip_value=None, *, min=None, max=None):
    """``clip_by_value_`` without modifying ``arrays``: returns the clamped copies."""
    out, rebuild = _copies(arrays, "arrays")
    _norms.clip_by_value_(out, clip_value, min=min, max=max)
    return rebuild(out)


def adaptive_clip(grads, params, clipping=0.01, *, eps=1e-3, unit_axis=0):
    """``adaptive_clip_`` without modifying ``grads``: returns the clipped copies of the
    gradients (``params`` are only read)."""
    if isinstance(params, dict):
        if not isinstance(grads, dict) or set(grads) != set(params):
            raise ValueError("params is a dict: grads must be a dict with the same keys")
        params = [params[k] for k in grads]
    out, rebuild = _copies(grads, "grads")
    _norms.adaptive_clip_(out, params, clipping, eps=eps, unit_axis=unit_axis)
    return rebuild(out)
