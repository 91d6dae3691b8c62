"""Recurrent layers (one layer, one direction): forward and backpropagation through
time (docs/api.md, "Recurrent layers"), in PyTorch's parameterisation so that
``torch.nn.RNN/LSTM/GRU`` weights can be passed in unchanged.

The C++ side follows oneDNN: one GEMM for the input projections of all steps, then per
step one recurrent GEMM and one fused cell kernel; backwards, the fused cell backward
and ``dh_{t-1} = dG_t W_hh`` per step, then merged GEMMs over all steps for ``grad_x``,
``grad_weight_ih`` and ``grad_weight_hh``.
"""

from __future__ import annotations

from . import _core
from ._types import RNNForward, RNNGrads

RNNCache = _core.RNNCache
__all__ = ["RNNCache", "RNNForward", "RNNGrads", "rnn_backward", "rnn_forward"]

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, cell="lstm",
                c0=None) -> RNNForward:
    """Run one recurrent layer over a sequence.

    x (T, B, I); h0 (B, H) or None (zeros); weight_ih (G*H, I); weight_hh (G*H, H);
    biases (G*H,) or None; G = 1 ("rnn_tanh", "rnn_relu"), 4 ("lstm": gates i, f, g, o)
    or 3 ("gru": r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). c0 (B, H)
    only for "lstm" (None: zeros). float32 or float64, one dtype throughout.

    Returns ``(y, h_n, c_n, cache)``: ``c_n`` is None except for "lstm", and ``cache``
    (an ``RNNCache``) is what ``rnn_backward`` reads.

    CUDA device arrays (all on one device): runs on the GPU; y, h_n, c_n and the cache
    are device arrays of the caller's library (see ``gradcore.cuda``).
    """
    return _core.rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, cell, c0)


def rnn_backward(cache: RNNCache, grad_y, grad_h_n=None, grad_c_n=None, *,
                 clip_hidden=None) -> RNNGrads:
    """Backpropagation through time for the forward pass that produced ``cache``.

    grad_y (T, B, H): dL/dy; grad_h_n / grad_c_n (B, H): gradient into the final state
    (None: zeros; grad_c_n only for lstm). ``clip_hidden``: when given, dL/dh_t is clipped
    element-wise to [-clip_hidden, clip_hidden] at every step of the loop (Graves).
    ``hidden_grad_norms[t]`` is the L2 norm of dL/dh_t over the batch, taken before that
    clipping: the picture of gradients exploding or vanishing through time.

    A cache from a forward pass on the GPU runs the backward there: the gradients must be
    device arrays on its device, and the results (``hidden_grad_norms`` included) are
    device arrays of the caller's library.
    """
    return _core.rnn_backward(cache, grad_y, grad_h_n, grad_c_n, clip_hidden)
