"""Gradient norms and in-place clipping over whole lists of arrays
(docs/api.md, "Norms and clipping").

Each function is one C++ call for the whole list: the binding builds a table of
(pointer, size) once and the kernels split the work into chunks across arrays and threads.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _core
from ._args import array_list, integer, nonnegative, norm_order, real
from ._device import leads_on_device

_POLICIES = ("propagate", "error", "skip", "zero")


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``clip_by_global_norm_(..., nonfinite="error")`` when the total norm is
    NaN or inf. The arrays are left untouched. ``total_norm`` holds the offending norm."""

    def __init__(self, total_norm: float):
        self.total_norm = total_norm
        super().__init__(f"the total gradient norm is {total_norm}; the arrays were not modified")


class GradStats(NamedTuple):
    """Per-array statistics from one pass over the data (see ``grad_stats``)."""

    l2_norm: np.ndarray   #: float64, the L2 norm of each array
    max_abs: np.ndarray   #: float64, max |x| of each array (NaN if the array holds NaN)
    nonfinite: np.ndarray  #: int64, the count of NaN/inf elements of each array


def global_norm(arrays, ord=2) -> float:
    """The ``ord``-norm of all arrays together, as if they were concatenated.

    ``ord`` is any real p > 0 or ``inf``. float16/32 data are accumulated in float64;
    float64 data are rescaled when needed, so every finite input has a finite, correct
    norm. NaN anywhere gives NaN; otherwise an inf gives inf. An empty list gives 0.0.

    CUDA device arrays (torch, CuPy, ...): computed on the GPU, returned as a 0-d float64
    device array of the caller's library without waiting for it (see ``gradcore.cuda``).
    """
    arrays = array_list(arrays)
    if leads_on_device(arrays):
        from . import cuda
        return cuda._global_norm(arrays, norm_order(ord))
    return float(_core.global_norm(arrays, norm_order(ord)))


def norms(arrays, ord=2) -> np.ndarray:
    """The ``ord``-norm of each array: a float64 array with one entry per array (for CUDA
    device arrays a float64 device array, see ``gradcore.cuda``)."""
    arrays = array_list(arrays)
    if leads_on_device(arrays):
        from . import cuda
        return cuda._norms(arrays, norm_order(ord))
    return _core.norms(arrays, norm_order(ord))


def grad_stats(arrays) -> GradStats:
    """L2 norm, max |x| and non-finite count of every array, in one fused pass (for CUDA
    device arrays the three fields are device arrays, see ``gradcore.cuda``)."""
    arrays = array_list(arrays)
    if leads_on_device(arrays):
        from . import cuda
        return cuda._grad_stats(arrays)
    return GradStats(*_core.grad_stats(arrays))


def clip_by_value_(arrays, clip_value=None, *, min=None, max=None):
    """Clamp every element in place to ``[-clip_value, clip_value]`` or to ``[min, max]``.

    Give either ``clip_value`` or one or both of ``min``/``max``. NaN stays NaN.
    Returns the list that was clipped.
    """
    arrays = array_list(arrays)
    on_device = leads_on_device(arrays)
    if clip_value is not None:
        if min is not None or max is not None:
            raise TypeError("clip_by_value_: give either clip_value or min/max, not both")
        bound = nonnegative(clip_value, "clip_value")
        lo, hi = -bound, bound
    else:
        if min is None and max is None:
            raise TypeError("clip_by_value_: give clip_value, or min and/or max")
        lo = -math.inf if min is None else real(min, "min")
        hi = math.inf if max is None else real(max, "max")
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"min and max must not be NaN, got min={lo}, max={hi}")
        if lo > hi:
            raise ValueError(f"min must be <= max, got min={lo}, max={hi}")
    if on_device:
        from . import cuda
        return cuda._clip_by_value_(arrays, lo, hi)
    _core.clip_by_value_(arrays, lo, hi)
    return arrays


def clip_by_norm_(arrays, max_norm, ord=2, *, eps=1e-6) -> np.ndarray:
    """Scale each array on its own so that its norm is at most ``max_norm`` (Keras
    ``clipnorm``), with PyTorch's factor ``min(1, max_norm / (norm + eps))``.

    Returns the float64 norms before clipping (a device array for CUDA device arrays).
    Arrays whose factor is 1 are not written.
    """
    arrays = array_list(arrays)
    if leads_on_device(arrays):
        from . import cuda
        return cuda._clip_by_norm_(arrays, nonnegative(max_norm, "max_norm"), norm_order(ord),
                                   nonnegative(eps, "eps"))
    return _core.clip_by_norm_(arrays, nonnegative(max_norm, "max_norm"),
                               norm_order(ord), nonnegative(eps, "eps"))


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
      the non-finite total (before zeroing) is returned.

    CUDA device arrays: runs on the GPU without waiting for it and returns a
    ``gradcore.cuda.DeviceClipResult`` (device scalars ``total_norm`` and ``factor``);
    ``total_norm=`` may then be a device scalar. ``nonfinite="error"`` is the one policy
    that synchronises there (it reads the total to decide whether to raise).
    """
    if nonfinite not in _POLICIES:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, _POLICIES))}; "
                         f"got {nonfinite!r}")
    arrays = array_list(arrays)
    if leads_on_device(arrays):
        from . import cuda
        return cuda._clip_by_global_norm_(arrays, nonnegative(max_norm, "max_norm"),
                                          norm_order(ord), nonnegative(eps, "eps"), nonfinite,
                                          total_norm)
    if total_norm is not None:
        total_norm = real(total_norm, "total_norm")
        if total_norm < 0:
            raise ValueError(f"total_norm must be >= 0, got {total_norm}")
    total, _factor, _clipped, is_nonfinite = _core.clip_by_global_norm_(
        arrays, nonnegative(max_norm, "max_norm"), norm_order(ord),
        nonnegative(eps, "eps"), nonfinite, total_norm)
    if is_nonfinite and nonfinite == "error":
        raise NonFiniteGradientError(total)
    return float(total)


def adaptive_clip_(grads, params, clipping=0.01, *, eps=1e-3, unit_axis=0):
    """Adaptive gradient clipping (Brock et al. 2021, NFNets), in place on ``grads``.

    For every unit (slices along ``unit_axis`` for arrays with ndim >= 2, the whole array
    otherwise): ``limit = clipping * max(||param_unit||, eps)``; a grad unit whose L2 norm
    exceeds ``limit`` is scaled down to norm ``limit``. ``grads[i]`` and ``params[i]``
    must have the same shape. Returns ``grads``.
    """
    grads = array_list(grads, "grads")
    params = array_list(params, "params")
    unit_axis = integer(unit_axis, "unit_axis", -64, 63)  # NumPy arrays have at most 64 axes
    if leads_on_device(grads):
        from . import cuda
        return cuda._adaptive_clip_(grads, params, nonnegative(clipping, "clipping"),
                                    nonnegative(eps, "eps"), int(unit_axis))
    if leads_on_device(params):
        from ._device import device_text
        raise ValueError(f"params[0] is on {device_text(params[0])} but grads[0] is a CPU array; "
                         "pass all arrays on one device")
    _core.adaptive_clip_(grads, params, nonnegative(clipping, "clipping"),
                         nonnegative(eps, "eps"), int(unit_axis))
    return grads
