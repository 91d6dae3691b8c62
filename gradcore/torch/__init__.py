"""Drop-in replacements for PyTorch's gradient-clipping utilities (``torch.nn.utils``).

Import explicitly (``import gradcore`` never imports torch)::

    import gradcore.torch as gct

    loss.backward()
    total = gct.clip_grad_norm_(model.parameters(), max_norm=1.0)   # was torch.nn.utils.clip_grad_norm_
    optimizer.step()

The three functions have torch's signatures and return types:

- :func:`clip_grad_norm_` (``torch.nn.utils.clip_grad_norm_``),
- :func:`get_total_norm` (``torch.nn.utils.get_total_norm``),
- :func:`clip_grad_value_` (``torch.nn.utils.clip_grad_value_``).

**What gradcore does itself.** Dense, contiguous float16/bfloat16/float32/float64
tensors on the CPU (plain ``torch.Tensor``, not subclasses), with ``norm_type`` a real
p > 0 or inf; the
norms (``get_total_norm``, ``clip_grad_norm_``) also complex64/complex128, with
``|z|`` per element as ``torch.linalg.vector_norm`` (a real total: float64 for
complex128). The
gradients are modified in place, zero-copy (gradcore works directly on the tensors'
memory through DLPack; ``p.grad`` keeps its object and its ``data_ptr()``), and their
autograd version counters are bumped as torch's in-place ops would.

**CUDA tensors** go to gradcore's CUDA backend when this copy of gradcore was built with
it and a GPU is usable (``gradcore.cuda.is_available()``): dense, contiguous float16,
bfloat16, float32 or float64 tensors (plain ``torch.Tensor``), all on one device. The
work is enqueued on torch's current stream and the total is returned as a 0-dim tensor
on that device in torch's dtype (the promoted dtype of the gradients), without waiting
for the GPU, as torch's own functions do; ``error_if_nonfinite=True`` reads the total
on the host (a synchronisation), as torch does. Norms are accumulated in float64.

**What is handed to torch unchanged** (the call goes to the ``torch.nn.utils`` function
captured when this module was imported, so replacing ``torch.nn.utils.clip_grad_norm_``
with this one is safe): meta/other non-CPU tensors, CUDA tensors when gradcore has no
usable CUDA backend, and mixed devices; on the CPU, dtypes other than the four real
floats (float8, ...; complex ones in ``clip_grad_value_``, where torch raises);
conjugate and negative-bit views; sparse or other non-strided layouts;
non-contiguous gradients (gradcore modifies only C-contiguous memory in place); tensor
subclasses; ``norm_type`` 0 (torch counts non-zeros), negative, -inf, NaN or not a
number; ``max_norm`` negative or NaN and ``clip_value`` negative or NaN (gradcore rejects
those, torch computes something); the infinity norm of a list holding an empty tensor
(torch raises); the same gradient tensor given twice to an in-place function; and
``clip_grad_norm_`` / ``get_total_norm`` with no tensors at all. In all of these cases
the result, the warnings and the exceptions are exactly torch's.

**Where the results differ from torch's.**

- Rounding. gradcore accumulates float32 norms in float64 (and float64 norms with
  rescaling), so its total is the exactly rounded one; torch accumulates float32 in
  float32, so its total (and the clipped gradients, which are scaled by
  ``max_norm / (total + 1e-6)``) may differ in the last bits: relative differences of about
  1e-6 for float32 and 1e-15 for float64. The infinity norm and :func:`clip_grad_value_`
  are bit-for-bit identical.
- Overflow (the one intended difference). When torch's float32 norm overflows although
  every gradient is finite (e.g. float32 gradients of magnitude 1e20: their squares
  overflow), torch returns ``inf``, multiplies every gradient by 0 (or raises with
  ``error_if_nonfinite=True``). gradcore's total is finite and correct
  (``3.16e20`` for ten values of ``1e20``), so the gradients are clipped to ``max_norm``
  as intended, and ``error_if_nonfinite=True`` does not raise. Only if the exact total
  itself exceeds the float32 range (about 3.4e38) is the returned float32 total ``inf``;
  then ``error_if_nonfinite=True`` raises as torch does (gradients untouched), and with
  ``error_if_nonfinite=False`` the gradients are still scaled by the exact, finite total.
- float16 and bfloat16 on the CPU. torch computes each tensor's norm in the gradients'
  own 16-bit dtype and returns the total in it: a float16 total overflows to ``inf``
  above 65504 (and the gradients are then multiplied by 0), and every step of it is
  rounded to 8 (bfloat16) or 11 (float16) bits. gradcore accumulates in float64 and
  returns the total as a float32 tensor (float64 if any gradient is float64), so it
  stays finite and exact; the clipped gradients are the float64 products rounded once to
  nearest-even, and may differ from torch's by an ulp of the 16-bit dtype.
- ``foreach`` is accepted and ignored on gradcore's path (one fused C++ call handles the
  whole list; torch supports foreach on the CPU, so it would never raise there).

Gradients that hold NaN or inf behave as in torch: the total is NaN/inf, and with
``error_if_nonfinite=False`` the gradients are scaled by ``max_norm / (total + 1e-6)``
anyway (inf total: finite entries become 0 and infinite ones NaN; NaN total: all NaN).
"""

from __future__ import annotations

import math
import types
import warnings

import torch
import torch.autograd.graph
import torch.nn.utils
from torch.utils.dlpack import to_dlpack as _to_dlpack

import gradcore as _gc

from . import _unscale_record

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]

# torch's own implementations, captured now: the fallbacks must reach them even after a
# user has patched torch.nn.utils.clip_grad_norm_ = gradcore.torch.clip_grad_norm_.
_torch_clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
_torch_get_total_norm = torch.nn.utils.get_total_norm
_torch_clip_grad_value_ = torch.nn.utils.clip_grad_value_

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The norms and clipping by a norm take complex gradients too (|z| per element, as
# torch.linalg.vector_norm); clamping them has no meaning.
_NORM_DTYPES = _DTYPES + (torch.complex64, torch.complex128)
_DOUBLE_DTYPES = (torch.float64, torch.complex128)
_CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_cuda_usable = None


def _norm_order(norm_type):
    """norm_type as a float p > 0 or inf, or None where torch must decide (0, negative,
    -inf, NaN, not a number)."""
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        return None
    return p if p > 0.0 else None


def _nonnegative(value):
    """float(value) if it is >= 0 (inf allowed), else None (negative, NaN, not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v >= 0.0 else None


def _supported(tensors, p=None, in_place=False, dtypes=_DTYPES):
    """The result dtype (float64 if any tensor is float64 or complex128, else float32, as
    torch's norms give) when gradcore can handle all of ``tensors`` itself, else None."""
    if not tensors:
        return None
    any_double = False
    for t in tensors:
        if (type(t) not in _PLAIN_TYPES or not t.is_cpu or t.layout is not torch.strided
                or t.dtype not in dtypes or not t.is_contiguous() or t.is_neg() or t.is_conj()):
            return None
        if p == math.inf and t.numel() == 0:
            return None  # torch raises: the infinity norm of an empty tensor has no identity
        any_double = any_double or t.dtype in _DOUBLE_DTYPES
    if in_place and len({t.data_ptr() for t in tensors}) != len(tensors):
        return None  # the same memory twice: let torch scale it (twice) as it always has
    return torch.float64 if any_double else torch.float32


def _gradcore_cuda() -> bool:
    """Whether gradcore's CUDA backend is built and has a GPU (asked once)."""
    global _cuda_usable
    if _cuda_usable is None:
        import gradcore.cuda
        _cuda_usable = gradcore.cuda.is_available()
    return _cuda_usable


def _supported_cuda(tensors, p=None, in_place=False):
    """Torch's result dtype (the promoted dtype of ``tensors``) when gradcore's CUDA backend
    can handle all of ``tensors`` itself, else None."""
    if not tensors:
        return None
    first = tensors[0]
    if type(first) not in _PLAIN_TYPES or not first.is_cuda or not _gradcore_cuda():
        return None
    device = first.get_device()
    dtype = None
    for t in tensors:
        if (type(t) not in _PLAIN_TYPES or not t.is_cuda or t.get_device() != device
                or t.layout is not torch.strided or t.dtype not in _CUDA_DTYPES
                or not t.is_contiguous() or t.is_neg()):
            return None
        if p == math.inf and t.numel() == 0:
            return None  # torch raises: the infinity norm of an empty tensor has no identity
        dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    if in_place and len({t.data_ptr() for t in tensors}) != len(tensors):
        return None
    return dtype


def _total_tensor(total, dtype):
    """The 0-dim CPU tensor torch would return (the grads' dtype)."""
    return torch.tensor(total, dtype=dtype)


def _nonfinite_error(norm_type):
    return RuntimeError(
        f"The total norm of order {norm_type} for gradients from "
        "`parameters` is non-finite, so it cannot be clipped. To disable "
        "this error and scale the gradients by the non-finite norm anyway, "
        "set `error_if_nonfinite=False`")


def _host_views(tensors):
    """DLPack capsules of CPU tensors that gradcore serves, to hand to its calls. Torch's
    ``__dlpack_device__`` and ``__dlpack__`` are Python methods (about 6 us per tensor
    together), a capsule from ``to_dlpack`` about 0.5 us: on GPT-2's 148 gradients that is
    0.85 ms against 0.1 ms per call."""
    return [_to_dlpack(t) for t in tensors]


def _mark_modified(tensors):
    """Tell autograd the tensors were modified in place (as torch's mul_/clamp_ would)."""
    torch.autograd.graph.increment_version(tensors)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    r"""Norm of all ``tensors`` together, as if they were concatenated into one vector
    (``torch.nn.utils.get_total_norm``).

    Args:
        tensors (Iterable[Tensor] or Tensor): the tensors (not parameters).
        norm_type (float or str): p > 0, or ``inf`` / ``'inf'`` for the max norm.
            0, negative p and -inf are computed by torch.
        error_if_nonfinite (bool): raise ``RuntimeError`` (torch's message) when the
            total is NaN or inf.
        foreach (bool, optional): ignored on gradcore's path; passed on to torch.

    Returns:
        Tensor: 0-dim, on the CPU, float64 if any tensor is float64 or complex128 else
        float32 (as torch, but for 16-bit tensors, where torch returns their dtype); for CUDA tensors on their device, in their promoted dtype. Without
        tensors: ``torch.tensor(0.0)``.

    CPU float16/bfloat16/float32/float64/complex64/complex128 contiguous tensors are read
    in place by gradcore; they are
    accumulated in float64, so the total may differ from torch's in the last bits, and is
    finite where torch's float32 norm overflows (see the module docstring). Anything else
    goes to ``torch.nn.utils.get_total_norm``.
    """
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    else:
        tensors = list(tensors)
    p = _norm_order(norm_type)
    dtype = None if p is None else _supported(tensors, p, dtypes=_NORM_DTYPES)
    if dtype is None:
        dtype = None if p is None else _supported_cuda(tensors, p)
        if dtype is None:
            return _torch_get_total_norm(tensors, norm_type, error_if_nonfinite, foreach)
        result = _gc.global_norm(tensors, p).to(dtype)  # on the device, no wait
        if error_if_nonfinite and not bool(torch.isfinite(result).item()):
            raise _nonfinite_error(p)
        return result
    result = _total_tensor(_gc.global_norm(_host_views(tensors), p), dtype)
    if error_if_nonfinite and not math.isfinite(result.item()):
        raise _nonfinite_error(p)
    return result


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    r"""Clip the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``).

    The total is the ``norm_type``-norm of all ``.grad`` tensors together; every gradient
    is multiplied by ``min(1, max_norm / (total + 1e-6))`` (nothing is written when that
    is 1). Parameters whose ``.grad`` is None are skipped.

    Args:
        parameters (Iterable[Tensor] or Tensor): the parameters (a generator is fine; an
            empty generator warns, as in torch).
        max_norm (float): the largest total norm allowed.
        norm_type (float or str): p > 0, or ``inf`` / ``'inf'``. 0, negative p and -inf
            are handled by torch.
        error_if_nonfinite (bool): raise ``RuntimeError`` (torch's message) when the total
            is NaN or inf; the gradients are then left untouched.
        foreach (bool, optional): ignored on gradcore's path; passed on to torch.

    Returns:
        Tensor: the total norm before clipping, 0-dim, on the CPU, float64 if any gradient
        is float64 or complex128 else float32 (as torch, but for 16-bit gradients, where
        torch returns their dtype); for CUDA gradients on their device, in their
        promoted dtype, computed and applied without waiting for the GPU.

    CPU float16/bfloat16/float32/float64/complex64/complex128 contiguous gradients are
    clipped by gradcore in their own memory
    (no copy; ``p.grad`` keeps its storage). Differences from torch: last-bit rounding of
    float32 totals, and finite, correct totals (and properly clipped gradients) where
    torch's float32 (or float16) norm overflows, e.g. gradients of 1e20; see the module docstring.
    Anything gradcore cannot handle goes to ``torch.nn.utils.clip_grad_norm_`` unchanged.

    Called right after ``gradcore.torch.amp.GradScaler.unscale_`` (the same gradient
    tensors, none modified since, ``norm_type`` 2), the L2 norm that ``unscale_`` measured
    is used and the gradients are not read again.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                          stacklevel=2)
    grads = [p.grad for p in parameters if p.grad is not None]
    p = _norm_order(norm_type)
    bound = _nonnegative(max_norm)
    dtype = None if p is None or bound is None else _supported(grads, p, in_place=True,
                                                                dtypes=_NORM_DTYPES)
    if dtype is None:
        dtype = None if p is None or bound is None else _supported_cuda(grads, p, in_place=True)
        if dtype is None:
            return _torch_clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite,
                                          foreach)
        return _clip_grad_norm_cuda(grads, bound, p, error_if_nonfinite, dtype)
    # Right after GradScaler.unscale_ the L2 norm of these very gradients is known.
    known = _unscale_record.recorded_total(grads) if p == 2.0 else None
    if error_if_nonfinite:
        # Check the total that will be returned (the grads' dtype) before touching them.
        total = _gc.global_norm(_host_views(grads), p) if known is None else known
        result = _total_tensor(total, dtype)
        if not math.isfinite(result.item()):
            raise _nonfinite_error(p)
        _gc.clip_by_global_norm_(_host_views(grads), bound, p, eps=1e-6, total_norm=total)
    else:
        total = _gc.clip_by_global_norm_(_host_views(grads), bound, p, eps=1e-6,
                                         nonfinite="propagate", total_norm=known)
        result = _total_tensor(total, dtype)
    _mark_modified(grads)
    return result


def _clip_grad_norm_cuda(grads, bound, p, error_if_nonfinite, dtype):
    """clip_grad_norm_ on gradcore's CUDA backend (torch's current stream, no host wait
    unless error_if_nonfinite, where torch waits too)."""
    if error_if_nonfinite:
        total = _gc.global_norm(grads, p)  # float64 device scalar
        result = total.to(dtype)
        if not bool(torch.isfinite(result).item()):
            raise _nonfinite_error(p)
        _gc.clip_by_global_norm_(grads, bound, p, eps=1e-6, total_norm=total)
    else:
        result = _gc.clip_by_global_norm_(grads, bound, p, eps=1e-6,
                                          nonfinite="propagate").total_norm.to(dtype)
    _mark_modified(grads)
    return result


def clip_grad_value_(parameters, clip_value, foreach=None):
    r"""Clamp the gradients of ``parameters`` in place to ``[-clip_value, clip_value]``
    (``torch.nn.utils.clip_grad_value_``). NaN stays NaN. Returns None.

    Parameters whose ``.grad`` is None are skipped. CPU float16/bfloat16/float32/float64
    contiguous gradients are clamped by gradcore in their own memory (bit-for-bit torch's
    result);
    anything else, and a negative or NaN ``clip_value``, goes to
    ``torch.nn.utils.clip_grad_value_``. ``foreach`` is ignored on gradcore's path.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    bound = _nonnegative(clip_value)
    if bound is None:
        return _torch_clip_grad_value_(parameters, clip_value, foreach)
    if _supported(grads, in_place=True) is not None:
        _gc.clip_by_value_(_host_views(grads), bound)
    elif _supported_cuda(grads, in_place=True) is not None:
        _gc.clip_by_value_(grads, bound)
    else:
        return _torch_clip_grad_value_(parameters, clip_value, foreach)
    _mark_modified(grads)
    return None
