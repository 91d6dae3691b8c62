"""Matrix multiply and the dense (``torch.nn.Linear``) layer, forward and backward
(docs/api.md, "Dense layer"), on gradcore's own SIMD GEMM (no BLAS)."""

from __future__ import annotations

import numpy as np

from . import _core
from ._args import choice, real
from ._convert import as_array
from ._device import any_device_array

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")
_ACTIVATION_SET = frozenset(ACTIVATIONS)
_ndarray = np.ndarray


def _matrix(a, name):
    return as_array(a, False, name)


def _refuse_overlap(outputs, inputs):
    for oname, o in outputs:
        if not isinstance(o, np.ndarray):  # None, or something the core rejects by name
            continue
        for iname, i in inputs:
            if i is not None and np.may_share_memory(o, i):
                raise ValueError(f"{oname} overlaps {iname}; pass a separate output buffer")


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """``alpha * op(a) @ op(b) + beta * out``, op = transpose when ``trans_*``.

    float32 or float64 (both the same dtype), 2-D. Inputs may have any strides;
    transposes cost nothing (the GEMM packs its inputs). ``out`` (C-contiguous, the
    result's shape and dtype) is written in place and returned; ``beta != 0`` needs it.
    """
    a, b = _matrix(a, "a"), _matrix(b, "b")
    alpha, beta = real(alpha, "alpha"), real(beta, "beta")
    if out is not None and isinstance(out, np.ndarray) and (
            np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        # The GEMM reads a and b while writing out: compute into a copy of out (which the
        # core checks for shape and dtype as it would out), then copy back.
        if not (out.flags.writeable and out.flags.c_contiguous and out.flags.aligned):
            raise ValueError("out must be writeable, C-contiguous and aligned")
        out[...] = _core.matmul(a, b, bool(trans_a), bool(trans_b), alpha, beta, out.copy())
        return out
    return _core.matmul(a, b, bool(trans_a), bool(trans_b), alpha, beta, out)


def dense_forward(x, weight, bias=None, activation="identity", *, negative_slope=0.01, out=None):
    """``y = act(x @ weight.T + bias)`` with ``torch.nn.Linear``'s layout: x (batch, in),
    weight (out, in), bias (out,). The bias and activation are applied in the GEMM's
    write-back (no second pass over y). Activations: identity, relu, leaky_relu
    (``negative_slope``), tanh, sigmoid.

    CUDA device arrays (all of them on one device): runs on the GPU (cuBLAS GEMM, fused
    epilogue) and returns a device array of the caller's library; ``out=`` must then be
    one (see ``gradcore.cuda``)."""
    if (type(x) is _ndarray and type(weight) is _ndarray and (bias is None or type(bias) is _ndarray)
            and out is None and type(activation) is str and activation in _ACTIVATION_SET
            and type(negative_slope) is float):
        # The common call, NumPy arrays in and a new array out (a training loop's every
        # step): nothing to convert or check here, the core checks the rest.
        return _core.dense_forward(x, weight, bias, activation, negative_slope, None)
    if any_device_array((x, weight, bias, out)):
        from . import cuda
        return cuda._dense_forward(x, weight, bias, choice(activation, "activation", ACTIVATIONS),
                                   real(negative_slope, "negative_slope"), out)
    x, weight = _matrix(x, "x"), _matrix(weight, "weight")
    if bias is not None:
        bias = _matrix(bias, "bias")
    _refuse_overlap([("out", out)], [("x", x), ("weight", weight), ("bias", bias)])
    return _core.dense_forward(x, weight, bias, choice(activation, "activation", ACTIVATIONS),
                               real(negative_slope, "negative_slope"), out)


def dense_backward(grad_y, x, weight, y, activation="identity", *, negative_slope=0.01,
                   has_bias=True, need_grad_x=True, accumulate=False, grad_x=None,
                   grad_weight=None, grad_bias=None):
    """Gradients of ``dense_forward``: returns ``(grad_x, grad_weight, grad_bias)``.

    The activation's derivative is taken from ``y`` (the forward output). One fused pass
    computes ``grad_z = grad_y * act'(y)`` and the bias gradient (its column sums); then
    ``grad_x = grad_z @ weight`` and ``grad_weight = grad_z.T @ x``. ``grad_z`` is the
    only temporary (none for the identity).

    ``grad_bias`` is None when ``has_bias=False``; ``grad_x`` is None when
    ``need_grad_x=False`` (a first layer). Output buffers may be passed; with
    ``accumulate=True`` the gradients are added into them (they are then required).

    CUDA device arrays (all of them on one device): runs on the GPU and returns device
    arrays of the caller's library (see ``gradcore.cuda``).
    """
    if (type(grad_y) is _ndarray and type(x) is _ndarray and type(weight) is _ndarray
            and type(y) is _ndarray and grad_x is None and grad_weight is None and grad_bias is None
            and type(activation) is str and activation in _ACTIVATION_SET and type(negative_slope) is float
            and type(has_bias) is bool and type(need_grad_x) is bool and type(accumulate) is bool):
        # The common call (see dense_forward): new output arrays, nothing to convert.
        return _core.dense_backward(grad_y, x, weight, y, activation, negative_slope, has_bias,
                                    need_grad_x, accumulate, None, None, None)
    if any_device_array((grad_y, x, weight, y, grad_x, grad_weight, grad_bias)):
        from . import cuda
        return cuda._dense_backward(grad_y, x, weight, y, choice(activation, "activation", ACTIVATIONS),
                                    real(negative_slope, "negative_slope"), bool(has_bias),
                                    bool(need_grad_x), bool(accumulate), grad_x, grad_weight,
                                    grad_bias)
    grad_y, x, weight, y = (_matrix(grad_y, "grad_y"), _matrix(x, "x"),
                            _matrix(weight, "weight"), _matrix(y, "y"))
    _refuse_overlap([("grad_x", grad_x), ("grad_weight", grad_weight), ("grad_bias", grad_bias)],
                    [("grad_y", grad_y), ("x", x), ("weight", weight), ("y", y)])
    return _core.dense_backward(grad_y, x, weight, y, choice(activation, "activation", ACTIVATIONS),
                                real(negative_slope, "negative_slope"), bool(has_bias),
                                bool(need_grad_x), bool(accumulate), grad_x, grad_weight,
                                grad_bias)
