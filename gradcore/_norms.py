"""Gradient norms and in-place clipping over whole lists of arrays
(docs/api.md, "Norms and clipping").

Each function is one call into the compiled core for the whole list: the binding reads
and checks every argument once, builds the table of arrays the kernels take, and runs the
CPU kernels or, for CUDA device arrays, the GPU ones. Arrays may be NumPy arrays, anything
exposing DLPack, ``__cuda_array_interface__`` or the buffer protocol, or anything NumPy
converts (read-only uses); one array stands for a list of one, and any iterable (e.g. a
generator over ``model.parameters()``) is read as a list.
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._types import DeviceClipResult, GradStats, NonFiniteGradientError

__all__ = ["DeviceClipResult", "GradStats", "NonFiniteGradientError", "adaptive_clip_",
           "clip_by_global_norm_", "clip_by_norm_", "clip_by_value_", "global_norm", "grad_stats",
           "norms", "scale_", "unit_norms"]


def global_norm(arrays, ord=2) -> float:
    """The ``ord``-norm of all arrays together, as if they were concatenated.

    ``ord`` is any real p > 0 or ``inf``. float16/32 data are accumulated in float64;
    float64 data are rescaled when needed, so every finite input has a finite, correct
    norm. NaN anywhere gives NaN; otherwise an inf gives inf. An empty list gives 0.0.

    Complex arrays (complex64, complex128; on the CPU) count ``|z| = hypot(re, im)`` per
    element, as NumPy and optax do, and may be mixed with real ones; complex128 is
    rescaled like float64 (``1e300+1e300j`` has a finite norm). A NaN real or imaginary
    part gives NaN, for every ``ord``.

    CUDA device arrays (torch, CuPy, ...): computed on the GPU, returned as a 0-d float64
    device array of the caller's library without waiting for it (see ``gradcore.cuda``).
    """
    return _core.global_norm(arrays, ord)


def norms(arrays, ord=2) -> np.ndarray:
    """The ``ord``-norm of each array: a float64 array with one entry per array (for CUDA
    device arrays a float64 device array, see ``gradcore.cuda``). Complex arrays are
    taken on the CPU, as by ``global_norm``."""
    return _core.norms(arrays, ord)


def grad_stats(arrays) -> GradStats:
    """L2 norm, max |x| and non-finite count of every array, in one fused pass (for CUDA
    device arrays the three fields are device arrays, see ``gradcore.cuda``)."""
    return _core.grad_stats(arrays)


def scale_(arrays, factor):
    """Multiply every element of every array by ``factor`` in place (``x *= factor``).

    ``factor`` is a real number, taken in double precision. float64 arrays get
    ``x * factor`` rounded once; float32 arrays get the float32 product
    ``x * float32(factor)`` (exactly ``x * factor`` for a power of two, such as a loss
    scaler's ``1 / scale``), except that a factor below float32's normal range is applied
    in normal pieces, so that it is not lost to underflow. Returns the list that was
    scaled; a factor of 1 writes nothing.
    """
    return _core.scale_(arrays, factor)


def clip_by_value_(arrays, clip_value=None, *, min=None, max=None):
    """Clamp every element in place to ``[-clip_value, clip_value]`` or to ``[min, max]``.

    Give either ``clip_value`` or one or both of ``min``/``max``. NaN stays NaN.
    Returns the list that was clipped.
    """
    return _core.clip_by_value_(arrays, clip_value, min, max)


def clip_by_norm_(arrays, max_norm, ord=2, *, eps=1e-6) -> np.ndarray:
    """Scale each array on its own so that its norm is at most ``max_norm`` (Keras
    ``clipnorm``), with PyTorch's factor ``min(1, max_norm / (norm + eps))``.

    Returns the float64 norms before clipping (a device array for CUDA device arrays).
    Arrays whose factor is 1 are not written. Complex arrays (on the CPU) are clipped by
    the norm of ``|z|`` (``global_norm``), both parts scaled by the factor.
    """
    return _core.clip_by_norm_(arrays, max_norm, ord, eps)


def clip_by_global_norm_(arrays, max_norm, ord=2, *, eps=1e-6, nonfinite="propagate",
                         total_norm=None) -> float:
    """Scale all arrays by ``min(1, max_norm / (total + eps))``, where ``total`` is the
    norm of all of them together (``torch.nn.utils.clip_grad_norm_``). Returns ``total``,
    the norm before clipping. Nothing is written when the factor is 1.

    ``total_norm``: a total computed earlier (or across processes); no norm pass is made
    (except under ``nonfinite="zero"`` with a non-finite ``total_norm``: the norm of what
    remains after zeroing is then computed over these arrays alone; across processes,
    use ``gradcore.distributed.clip_by_global_norm_``).

    ``nonfinite`` decides what happens when the total is NaN or inf:

    - ``"propagate"``: scale anyway, as PyTorch does (NaN spreads, inf zeroes everything);
    - ``"error"``: raise ``NonFiniteGradientError``; the arrays are untouched;
    - ``"skip"``: leave the arrays untouched and return the non-finite total, so the
      caller can skip the step;
    - ``"zero"``: set the non-finite elements to 0, then clip by the norm of the rest;
      the non-finite total (before zeroing) is returned. Complex arrays are zeroed
      component by component: a NaN or inf real or imaginary part becomes 0 and the
      other part stays, as ``np.nan_to_num(z, nan=0, posinf=0, neginf=0)`` does.

    Complex arrays (on the CPU) are taken as by ``global_norm`` and scaled in both parts.

    CUDA device arrays: runs on the GPU without waiting for it and returns a
    ``gradcore.cuda.DeviceClipResult`` (device scalars ``total_norm`` and ``factor``);
    ``total_norm=`` may then be a device scalar. ``nonfinite="error"`` is the one policy
    that synchronises there (it reads the total to decide whether to raise).
    """
    return _core.clip_by_global_norm_(arrays, max_norm, ord, eps, nonfinite, total_norm)


def adaptive_clip_(grads, params, clipping=0.01, *, eps=1e-3, unit_axis=0):
    """Adaptive gradient clipping (Brock et al. 2021, NFNets), in place on ``grads``.

    For every unit (slices along ``unit_axis`` for arrays with ndim >= 2, the whole array
    otherwise): ``limit = clipping * max(||param_unit||, eps)``; a grad unit whose L2 norm
    exceeds ``limit`` is scaled down to norm ``limit``. ``grads[i]`` and ``params[i]``
    must have the same shape. Returns ``grads``.
    """
    return _core.adaptive_clip_(grads, params, clipping, eps, unit_axis)


def unit_norms(grads, unit_axis=0) -> list:
    """The L2 norm of every unit of every array: the norms ``adaptive_clip_`` compares.

    Units are the slices along ``unit_axis`` of an array with ndim >= 2 (the output
    units of a torch-layout weight with the default 0; -1 for a flax/JAX kernel), and the
    whole array otherwise. Returns one float64 array per array (per leaf of a tree, in
    the order of ``norms``), of length ``shape[unit_axis]``, or 1 for ndim < 2. Runs on
    the CPU; norms are accumulated in float64 and exact over the float64 range.
    """
    return _core.unit_norms(grads, unit_axis)
