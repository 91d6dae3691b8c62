"""Turning array-likes into NumPy arrays for the C++ bindings.

The bindings take NumPy arrays directly; anything else comes here first. For in-place
functions the result must share memory with the caller's object (a copy would silently
drop the update), so conversions that copy are refused there.
"""

from __future__ import annotations

import re

import numpy as np


def _refuse_device_array(obj, label: str) -> None:
    """A CUDA device array reached the CPU path: a list whose first array is on the CPU
    (ValueError naming both), or a function that runs on the CPU only (TypeError)."""
    from ._device import device_text, is_device_array
    if not is_device_array(obj):
        return
    where = device_text(obj)
    match = re.fullmatch(r"(.*)\[([0-9]+)\]", label)
    if match and match.group(2) != "0":
        raise ValueError(f"{label} is on {where} but {match.group(1)}[0] is a CPU array; "
                         "pass all arrays on one device")
    raise TypeError(f"{label} is a CUDA device array (on {where}), which this function does not "
                    "take: it runs on the CPU (see gradcore.cuda for the functions that run on "
                    "the GPU)")


def as_array(obj, writeable: bool, label: str) -> np.ndarray:
    """Return a NumPy view of ``obj`` (or, for read-only use, a converted copy).

    ``label`` names the argument in error messages, e.g. ``"arrays[3]"``.
    """
    if isinstance(obj, np.ndarray):
        return obj
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        # A torch parameter: its data (same memory) without the autograd wrapper, which
        # refuses DLPack export and __array__.
        obj = obj.detach()
    if hasattr(obj, "__dlpack__"):
        try:
            return np.from_dlpack(obj)
        except (TypeError, ValueError, BufferError, RuntimeError) as exc:
            _refuse_device_array(obj, label)
            if writeable:
                raise TypeError(
                    f"{label}: cannot view {type(obj).__name__} memory through DLPack "
                    f"for in-place use ({exc})") from exc
            # Read-only use may fall back to __array__ / the buffer protocol below
            # (e.g. a tensor that requires grad, or one on another device).
    elif hasattr(obj, "__cuda_array_interface__"):
        _refuse_device_array(obj, label)
    # NumPy raises ValueError for ragged nested lists and NotImplementedError for some
    # multi-dimensional memoryviews: all of them become a TypeError naming the argument.
    failures = (TypeError, ValueError, NotImplementedError)
    if writeable:
        try:
            view = np.asarray(memoryview(obj))
        except failures:
            view = None
        if view is None:
            try:
                view = np.asarray(obj)
            except failures as exc:
                raise TypeError(f"{label}: cannot convert {type(obj).__name__} to an array ({exc})") from exc
            if view.flags.owndata:
                raise TypeError(
                    f"{label}: {type(obj).__name__} cannot be modified in place (converting it "
                    "to an array would copy); pass a NumPy array or an object exposing its "
                    "memory through DLPack or the buffer protocol")
        return view
    try:
        return np.asarray(obj)
    except failures as exc:
        raise TypeError(f"{label}: cannot convert {type(obj).__name__} to an array ({exc})") from exc
