"""optax gradient transformations that clip with gradcore's exact kernels.

Import explicitly (``import gradcore`` never imports JAX or optax)::

    import optax
    import gradcore.optax as gco

    tx = optax.chain(gco.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)   # also inside jax.jit

- :func:`clip_by_global_norm` (``optax.clip_by_global_norm``),
- :func:`clip` (``optax.clip``),
- :func:`adaptive_grad_clip` (``optax.adaptive_grad_clip``).

Each returns an ``optax.GradientTransformation`` with optax's empty state, taking any
pytree of float32/float64 arrays (complex64/complex128 too for
:func:`clip_by_global_norm`; ``None`` entries stay ``None``) and returning the same
structure with the same dtypes and shapes.

**Where it runs, and what it costs.** Called on concrete arrays (outside ``jit``), the
update copies the leaves to host memory, clips them there with gradcore's functional
forms (one kernel call for the whole tree) and hands them back as JAX arrays. Inside
``jax.jit`` (or any trace) the same host function runs through ``jax.pure_callback``,
with the input's shapes and dtypes as the result's. Either way every step pays one
device -> host -> device copy of all the gradients, and XLA can neither fuse the clip
with its neighbours nor overlap it with other work on the device; on an accelerator
this is a synchronisation point of every step. On the CPU backend the copies are plain
memory copies, but the callback's own overhead remains: measured on a 2-core CPU, 12
float32 arrays of 768 x 768 (28 MB) took 28 ms per jitted step against 3 ms for optax's
fused clip (and 10 ms against 23 ms outside ``jit``). The reason to use these
transformations is exactness, not speed inside ``jit``. The host function is not
differentiable (no ``jax.grad`` through the update, e.g. for meta-gradients); under
``jax.vmap`` it runs once per batch element.

**Where the results differ from optax's.** The formulas are optax's (see each function),
but norms are computed by gradcore: float32 data are accumulated in float64, so norms are
correctly rounded (optax's float32 sums differ in the last bits, and the clipped values
by a few float32 ulps), and a float32 norm whose squares overflow (gradients around 1e20)
is finite and exact, where optax's is ``inf`` and its clip turns every update into 0.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _functional
from ._args import REAL_FLOATS, dtype_names

__all__ = ["adaptive_grad_clip", "clip", "clip_by_global_norm"]


def _concrete_real(value, name: str) -> float:
    """A Python or NumPy real, or a concrete 0-d array, as float; traced or array-valued
    hyper-parameters (schedules) are not supported here."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer) \
            and np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.floating):
        return float(value)
    raise TypeError(f"{name} must be a real number, got {type(value).__name__}")


def _nonnegative(value, name: str) -> float:
    v = _concrete_real(value, name)
    if not v >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _on_host(host_fn, leaf_lists):
    """host_fn(*lists of NumPy arrays) -> list of NumPy arrays shaped like the first list,
    run directly on concrete arrays and through ``jax.pure_callback`` under a trace."""
    first = leaf_lists[0]
    if not first:
        return []
    flat = [x for leaves in leaf_lists for x in leaves]
    if any(isinstance(x, jax.core.Tracer) for x in flat):
        shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in first]
        counts = [len(leaves) for leaves in leaf_lists]

        def callback(*arrays):
            lists, start = [], 0
            for n in counts:
                lists.append(list(arrays[start:start + n]))
                start += n
            return host_fn(*lists)

        return jax.pure_callback(callback, shapes, *flat, vmap_method="sequential")
    return [jnp.asarray(a) for a in host_fn(*[[np.asarray(x) for x in leaves]
                                              for leaves in leaf_lists])]


_DTYPES = REAL_FLOATS
# The global norm is defined for complex updates too (|z| per element, as optax's).
_NORM_DTYPES = _DTYPES + ("complex64", "complex128")


def _check_dtype(x, label, dtypes=_DTYPES):
    """Before any tracing, so that the error names the leaf rather than a callback."""
    dtype = getattr(x, "dtype", None)
    if dtype is None or np.dtype(dtype).name not in dtypes:
        what = f"dtype {dtype}" if dtype is not None else f"a {type(x).__name__}"
        raise TypeError(f"{label}: {what} is not supported (expected a {dtype_names(dtypes)} "
                        "array)")


def _flat(tree, name, dtypes=_DTYPES):
    """(leaves, treedef, labels such as ``updates['dense']['w']``) of a JAX tree."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    labels = [name + jax.tree_util.keystr(path) for path, _ in with_paths]
    for (_, x), label in zip(with_paths, labels):
        _check_dtype(x, label, dtypes)
    return [x for _, x in with_paths], treedef, labels


def clip_by_global_norm(max_norm) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm``: when the L2 norm of all updates together exceeds
    ``max_norm``, every update is scaled by ``max_norm / norm`` (no epsilon, as optax);
    otherwise the updates pass unchanged.

    Differences from optax: the norm is gradcore's (exact, accumulated in float64, finite
    for float32 gradients whose squares overflow, where optax's ``inf`` zeroes every
    update); at ``norm == max_norm`` the updates pass unchanged, where optax multiplies by
    ``max_norm / norm`` (1 up to rounding); all-zero updates with ``max_norm=0`` stay 0
    (optax computes 0/0: NaN). A NaN or inf norm propagates as in optax (NaN everywhere;
    finite entries 0 and infinite ones NaN).
    Complex updates (complex64/complex128) are clipped as by optax, with the norm of
    ``|z|`` (``hypot(re, im)``) and both parts scaled; they keep their dtype.
    ``max_norm`` must be a concrete real >= 0.
    """
    bound = _nonnegative(max_norm, "max_norm")

    def host(leaves):
        out, _ = _functional.clip_by_global_norm(leaves, bound, eps=0.0)
        return out

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, _ = _flat(updates, "updates", _NORM_DTYPES)
        return jax.tree_util.tree_unflatten(treedef, _on_host(host, [leaves])), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip(max_delta) -> optax.GradientTransformation:
    """``optax.clip``: every element clamped to ``[-max_delta, max_delta]``; NaN stays NaN.
    The result is optax's bit for bit. ``max_delta`` must be a concrete real >= 0 (optax
    also takes negative bounds and traced values)."""
    bound = _nonnegative(max_delta, "max_delta")

    def host(leaves):
        return _functional.clip_by_value(leaves, bound)

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef, _ = _flat(updates, "updates")
        return jax.tree_util.tree_unflatten(treedef, _on_host(host, [leaves])), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _reduced_axes(shape, axis, label):
    """optax's unitwise_norm layout: the axes a unit's norm is taken over."""
    ndim = len(shape)
    if axis is not None:
        axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
        if not all(isinstance(a, numbers.Integral) for a in axes):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"axis {a} is out of range for {label} of shape {tuple(shape)}")
        return tuple(sorted({int(a) % ndim for a in axes}))
    if sum(d != 1 for d in shape) <= 1:  # scalars and vectors, once squeezed: the whole array
        return tuple(range(ndim))
    if ndim in (2, 3):  # linear layers (in, out) and multi-head linear layers
        return (0,)
    if ndim in (4, 5):  # convolution kernels HWIO and DHWIO
        return tuple(range(ndim - 1))
    raise ValueError(f"{label} has shape {tuple(shape)}: adaptive_grad_clip's default units "
                     "cover ndim 1 to 5; pass axis= for other shapes")


class _Units:
    """One leaf's units as the columns of a matrix (R, K): the reduced axes moved first
    and merged, the kept ones merged, so gradcore's ``unit_axis=1`` takes them."""

    def __init__(self, shape, reduced):
        kept = [a for a in range(len(shape)) if a not in reduced]
        self.order = list(reduced) + kept
        self.moved_shape = tuple(shape[a] for a in self.order)
        self.matrix_shape = (math.prod(shape[a] for a in reduced),
                             math.prod(shape[a] for a in kept))

    def matrix(self, x):
        return np.transpose(x, self.order).reshape(self.matrix_shape)

    def back(self, m):
        inverse = sorted(range(len(self.order)), key=self.order.__getitem__)
        # (np.ascontiguousarray would make a 0-d array 1-d)
        return np.array(np.transpose(m.reshape(self.moved_shape), inverse), order="C")


def adaptive_grad_clip(clipping, eps=1e-3, axis=None) -> optax.GradientTransformation:
    """``optax.adaptive_grad_clip`` (AGC, Brock et al. 2021): per unit,
    ``max_norm = clipping * max(||param_unit||, eps)``; a gradient unit whose norm is at
    least ``max_norm`` is scaled to it. Units are optax's: with ``axis=None`` the whole
    array for (squeezed) vectors and scalars, the norm over axis 0 for ndim 2 and 3, over
    all axes but the last for ndim 4 and 5 (other ndims need ``axis``); ``axis`` (an int
    or a tuple) names the axes a unit's norm is taken over. ``params`` is required and
    must have the updates' structure.

    Differences from optax: unit norms are gradcore's (accumulated in float64, exact);
    optax divides by ``max(grad_norm, 1e-6)``, so where ``max_norm`` is below 1e-6
    (``clipping * eps < 1e-6``) and the gradient unit is tiny too, optax's result exceeds
    ``max_norm`` and gradcore's does not. ``clipping`` and ``eps`` must be concrete reals
    >= 0.
    """
    factor = _nonnegative(clipping, "clipping")
    floor = _nonnegative(eps, "eps")

    def host(grads, params):
        units = [_Units(g.shape, _reduced_axes(g.shape, axis, "")) for g in grads]
        out = _functional.adaptive_clip([u.matrix(g) for u, g in zip(units, grads)],
                                        [u.matrix(p) for u, p in zip(units, params)],
                                        factor, eps=floor, unit_axis=1)
        return [u.back(m) for u, m in zip(units, out)]

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("adaptive_grad_clip needs params: call update(updates, state, "
                             "params)")
        leaves, treedef, labels = _flat(updates, "updates")
        try:
            param_leaves = treedef.flatten_up_to(params)
        except (ValueError, TypeError) as error:
            raise ValueError(f"params must have the structure of updates: {error}") from None
        # Every check before tracing: inside jit a callback's error is an opaque runtime one.
        for g, p, label in zip(leaves, param_leaves, labels):
            where = "params" + label[len("updates"):]
            _check_dtype(p, where)
            if tuple(p.shape) != tuple(g.shape):
                raise ValueError(f"{where} has shape {tuple(p.shape)}, {label} "
                                 f"{tuple(g.shape)}")
            _reduced_axes(g.shape, axis, label)
        return (jax.tree_util.tree_unflatten(treedef, _on_host(host, [leaves, param_leaves])),
                state)

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
