"""The result and exception types of gradcore's functions. A leaf module: it imports
nothing of gradcore, so every other module (and the compiled bindings, which build these
objects) can import it at the top level."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import numpy as np


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


def host_float(a) -> float:
    """A device scalar read on the host (this synchronises with its stream)."""
    item = getattr(a, "item", None)
    return float(item() if item is not None else a)


class DeviceClipResult:
    """What ``gradcore.clip_by_global_norm_`` returns for device arrays: device scalars,
    so that the training loop never waits for the GPU.

    - ``total_norm``: 0-d float64 device array (the caller's library): the norm of all
      arrays together before clipping (the given ``total_norm`` when one was passed).
    - ``factor``: 0-d float64 device array: the factor the arrays were multiplied by
      (1.0 when nothing was written; NaN or 0 when a non-finite total was propagated).

    ``clipped``, ``nonfinite`` and ``float(result)`` (the total as a Python float) read
    those scalars on the host, which waits for the stream: use them in logs or tests,
    not on every step of a fast loop.
    """

    __slots__ = ("total_norm", "factor")

    def __init__(self, total_norm, factor):
        self.total_norm = total_norm
        self.factor = factor

    @property
    def clipped(self) -> bool:
        """Whether the arrays were written (factor != 1). Synchronises."""
        return not host_float(self.factor) == 1.0

    @property
    def nonfinite(self) -> bool:
        """Whether the total norm is NaN or inf. Synchronises."""
        return not math.isfinite(host_float(self.total_norm))

    def __float__(self) -> float:
        return host_float(self.total_norm)

    def __repr__(self) -> str:
        return f"DeviceClipResult(total_norm={self.total_norm!r}, factor={self.factor!r})"


class RNNForward(NamedTuple):
    y: Any                 #: (T, B, H) hidden state at every step
    h_n: Any               #: (B, H) last hidden state
    c_n: Optional[Any]     #: (B, H) last cell state (lstm), else None
    cache: Any             #: gradcore.RNNCache, for rnn_backward


class RNNGrads(NamedTuple):
    grad_x: Any
    grad_h0: Any
    grad_c0: Optional[Any]
    grad_weight_ih: Any
    grad_weight_hh: Any
    grad_bias_ih: Optional[Any]
    grad_bias_hh: Optional[Any]
    hidden_grad_norms: Any  #: float64 (T,): ||dL/dh_t|| before clipping
