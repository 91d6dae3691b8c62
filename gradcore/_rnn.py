"""Recurrent layers (one layer, one direction): forward and backpropagation through
time (docs/api.md, "Recurrent layers"), in PyTorch's parameterisation so that
``torch.nn.RNN/LSTM/GRU`` weights can be passed in unchanged.

The C++ side follows oneDNN: one GEMM for the input projections of all steps, then per
step one recurrent GEMM and one fused cell kernel; backwards, the fused cell backward
and ``dh_{t-1} = dG_t W_hh`` per step, then merged GEMMs over all steps for ``grad_x``,
``grad_weight_ih`` and ``grad_weight_hh``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from . import _core
from ._args import real
from ._convert import as_array
from ._device import any_device_array

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


class RNNCache:
    """What ``rnn_backward`` needs from the forward pass (opaque to callers).

    Memory, per time step, in elements of the dtype (B batch, H hidden):
    ``B*H`` for the hidden states (all cells), plus ``B*H`` cell states and ``4*B*H``
    activated gates for LSTM (6 B H in all), or ``3*B*H`` gates and ``B*H`` of
    ``W_hn h + b_hn`` for GRU (5 B H). The cache also refers to (does not copy) the
    contiguous inputs x and the weights: modifying them before the backward changes it.
    ``nbytes`` is the memory the cache itself owns.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        self._data = data

    @property
    def cell(self) -> str:
        return self._data["cell"]

    @property
    def nbytes(self) -> int:
        return sum(self._data[k].nbytes for k in ("hs", "cs", "gates", "gh_n")
                   if self._data[k] is not None)

    def __repr__(self) -> str:
        x = self._data["x"]
        return (f"RNNCache(cell={self.cell!r}, steps={x.shape[0]}, batch={x.shape[1]}, "
                f"dtype={x.dtype}, nbytes={self.nbytes})")


class RNNForward(NamedTuple):
    y: np.ndarray                 #: (T, B, H) hidden state at every step
    h_n: np.ndarray               #: (B, H) last hidden state
    c_n: Optional[np.ndarray]     #: (B, H) last cell state (lstm), else None
    cache: RNNCache               #: for rnn_backward


class RNNGrads(NamedTuple):
    grad_x: np.ndarray
    grad_h0: np.ndarray
    grad_c0: Optional[np.ndarray]
    grad_weight_ih: np.ndarray
    grad_weight_hh: np.ndarray
    grad_bias_ih: Optional[np.ndarray]
    grad_bias_hh: Optional[np.ndarray]
    hidden_grad_norms: np.ndarray  #: float64 (T,): ||dL/dh_t|| before clipping


def _optional(a, name):
    return None if a is None else as_array(a, False, name)


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, cell="lstm",
                c0=None) -> RNNForward:
    """Run one recurrent layer over a sequence.

    x (T, B, I); h0 (B, H) or None (zeros); weight_ih (G*H, I); weight_hh (G*H, H);
    biases (G*H,) or None; G = 1 ("rnn_tanh", "rnn_relu"), 4 ("lstm": gates i, f, g, o)
    or 3 ("gru": r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). c0 (B, H)
    only for "lstm" (None: zeros). float32 or float64, one dtype throughout.

    CUDA device arrays (all on one device): runs on the GPU; y, h_n, c_n and the cache
    are device arrays of the caller's library (see ``gradcore.cuda``).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {cell!r}")
    if any_device_array((x, h0, weight_ih, weight_hh, bias_ih, bias_hh, c0)):
        from . import cuda
        return cuda._rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, cell, c0)
    out = _core.rnn_forward(as_array(x, False, "x"), _optional(h0, "h0"),
                            as_array(weight_ih, False, "weight_ih"),
                            as_array(weight_hh, False, "weight_hh"), _optional(bias_ih, "bias_ih"),
                            _optional(bias_hh, "bias_hh"), cell, _optional(c0, "c0"))
    return RNNForward(out["y"], out["h_n"], out["c_n"], RNNCache(out))


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
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward, got {type(cache).__name__}")
    clip = 0.0 if clip_hidden is None else real(clip_hidden, "clip_hidden")
    if clip_hidden is not None and not clip > 0.0:
        raise ValueError(f"clip_hidden must be > 0 (or None for no clipping), got {clip}")
    if not isinstance(cache._data["x"], np.ndarray):
        from . import cuda
        return cuda._rnn_backward(cache, grad_y, grad_h_n, grad_c_n, clip)
    if any_device_array((grad_y, grad_h_n, grad_c_n)):
        raise ValueError("the gradients are CUDA device arrays but the forward pass (cache) ran on "
                         "the CPU; pass all arrays on one device")
    return RNNGrads(*_core.rnn_backward(cache._data, as_array(grad_y, False, "grad_y"),
                                        _optional(grad_h_n, "grad_h_n"),
                                        _optional(grad_c_n, "grad_c_n"), clip))
