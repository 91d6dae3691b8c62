"""Matrix multiply and the dense (``torch.nn.Linear``) layer, forward and backward
(docs/api.md, "Dense layer"), on gradcore's own SIMD GEMM (no BLAS)."""

from __future__ import annotations

from . import _core

__all__ = ["dense_backward", "dense_forward", "matmul"]

ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid", "elu", "silu", "gelu", "gelu_tanh", "prelu")
#: the activations whose derivative needs their input z: the forward saves what the
#: backward reads (``return_saved=True``, then ``dense_backward(..., saved=saved)``)
NEEDS_SAVED = ("elu", "silu", "gelu", "gelu_tanh", "prelu")


def matmul(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """``alpha * op(a) @ op(b) + beta * out``, op = transpose when ``trans_*``.

    float32 or float64 (both the same dtype), 2-D, on the CPU. Inputs may have any
    strides; transposes cost nothing (the GEMM packs its inputs). ``out`` (C-contiguous,
    the result's shape and dtype) is written in place and returned; ``beta != 0`` needs
    it. An ``out`` that shares memory with ``a`` or ``b`` is computed in a copy first.
    """
    return _core.matmul(a, b, trans_a, trans_b, alpha, beta, out)


def dense_forward(x, weight, bias=None, activation="identity", *, negative_slope=0.01, alpha=1.0,
                  prelu_weight=None, return_saved=False, dropout=0.0, seed=None, offset=0, out=None):
    """``y = act(x @ weight.T + bias)`` with ``torch.nn.Linear``'s layout: x (batch, in),
    weight (out, in), bias (out,). ``out`` (C-contiguous, not overlapping the inputs)
    receives y when given.

    Activations, with torch's definitions:

    - identity, relu, leaky_relu (``negative_slope``), tanh, sigmoid: applied in the
      GEMM's write-back (no second pass); their backward takes the derivative from y;
    - elu (``alpha`` >= 0), silu, gelu (exact, ``z * Phi(z)``), gelu_tanh (torch's
      ``approximate="tanh"``), prelu (``prelu_weight``: one slope per output feature or
      one shared, torch's ``nn.PReLU`` weight): their derivative needs z = x W^T + b, so
      the GEMM writes z into y and one pass turns it into y. With ``return_saved=True``
      that pass also computes, from the same exp / sigmoid / Phi, what the backward reads,
      and the call returns ``(y, saved)``: ``saved`` is act'(z) (z itself for prelu, whose
      slopes' gradient needs it); pass it to ``dense_backward(..., saved=saved)``, which
      then only multiplies. It costs one write of (batch, out) values, as torch's autograd
      keeps z for them.

    ``dropout`` (in [0, 1)): y = ``gradcore.dropout(act(z), dropout, seed=seed,
    offset=offset)`` in the same call (element (r, j) is element r * out + j of y's C
    order; ``seed`` required). The backward given the same three regenerates the mask
    instead of reading a stored one. tanh and sigmoid then save their derivative too
    (``return_saved=True``): y no longer holds act(z) where kept.

    CUDA device arrays (all of them on one device): runs on the GPU (cuBLAS GEMM, fused
    epilogue) and returns a device array of the caller's library; ``out=`` must then be
    one (see ``gradcore.cuda``)."""
    return _core.dense_forward(x, weight, bias, activation, negative_slope, alpha, prelu_weight,
                               return_saved, dropout, seed, offset, out)


def dense_backward(grad_y, x, weight, y, activation="identity", *, negative_slope=0.01, alpha=1.0,
                   prelu_weight=None, saved=None, has_bias=True, need_grad_x=True,
                   accumulate=False, accumulate_grad_x=False, grad_x=None, grad_weight=None,
                   grad_bias=None, grad_prelu_weight=None, dropout=0.0, seed=None, offset=0):
    """Gradients of ``dense_forward``: returns ``(grad_x, grad_weight, grad_bias)``, and
    for prelu ``(grad_x, grad_weight, grad_bias, grad_prelu_weight)``.

    The activation's derivative is taken from ``y`` (the forward output), or for elu,
    silu, gelu, gelu_tanh and prelu from ``saved`` (what ``dense_forward(...,
    return_saved=True)`` returned; ``y`` may then be None). One fused pass computes ``grad_z = grad_y * act'`` and the bias
    gradient (its column sums; for prelu also the slopes' gradient, torch's
    ``sum grad_y * z`` over z <= 0); then ``grad_x = grad_z @ weight`` and ``grad_weight
    = grad_z.T @ x``. ``grad_z`` is the only temporary (none for the identity without
    dropout). ``dropout``, ``seed``, ``offset``: the forward's, its mask regenerated.

    ``grad_bias`` is None when ``has_bias=False``; ``grad_x`` is None when
    ``need_grad_x=False`` (a first layer). Output buffers may be passed; with
    ``accumulate=True`` the gradients are added into them (they are then required);
    ``accumulate_grad_x=True`` adds into ``grad_x`` only (the skip's gradient of a residual
    connection: the GEMM's write-back adds it, no separate pass).

    CUDA device arrays (all of them on one device): runs on the GPU and returns device
    arrays of the caller's library (see ``gradcore.cuda``).
    """
    return _core.dense_backward(grad_y, x, weight, y, activation, negative_slope, alpha, prelu_weight,
                                saved, has_bias, need_grad_x, accumulate, accumulate_grad_x,
                                grad_x, grad_weight, grad_bias, grad_prelu_weight, dropout, seed, offset)
