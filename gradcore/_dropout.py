"""Dropout with a mask regenerated from a counter-based generator (docs/api.md,
"Dropout")."""

from __future__ import annotations

from . import _core

__all__ = ["dropout"]


def dropout(x, p=0.5, *, seed, offset=0, out=None):
    """``torch.nn.functional.dropout(x, p, training=True)``: each element kept with
    probability ``1 - p`` and multiplied by ``1 / (1 - p)`` (rounded to x's dtype, as
    torch does), else 0; ``p = 1`` zeroes all.

    The mask is a pure function of ``(seed, offset, element index)`` (Philox4x32-10: the
    element's 32-bit word, its top 24 bits compared with ``p * 2**24``), never stored:
    the same call reproduces it on any thread count and instruction set, and the
    backward is this function applied to the output's gradient with the same ``seed``
    and ``offset``. ``seed`` and ``offset`` are ints in [0, 2**64); use a new ``offset``
    for each call of a run (the training step, say), as ``gradcore.nn.Dropout`` does.
    float32 or float64; ``out`` (C-contiguous, x's shape and dtype) may be ``x`` itself.
    """
    return _core.dropout(x, p, seed, offset, out)
