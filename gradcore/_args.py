"""Argument checks of the pure-Python parts of the API (the optimisers' hyper-parameters,
the containers of the functional forms); the compiled core checks its own arguments."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core


# One array rather than a collection of them: a NumPy array, a buffer (iterating a
# memoryview would split it up), a DLPack capsule, or anything with ``__dlpack__``,
# ``__array__`` or ``__cuda_array_interface__``. The compiled list reader's own rule.
is_one_array = _core.is_one_array


def array_list(arrays, name: str = "arrays"):
    """A list or tuple of arrays as is; one array becomes a list of one; any other
    iterable (e.g. a generator over ``model.parameters()``) is materialised."""
    if isinstance(arrays, (list, tuple)):
        return arrays
    if is_one_array(arrays):
        return [arrays]
    if isinstance(arrays, (str, bytes)) or not hasattr(arrays, "__iter__"):
        raise TypeError(f"{name} must be an array or a sequence of arrays, "
                        f"got {type(arrays).__name__}")
    return list(arrays)


def real(value, name: str) -> float:
    """A real number (not bool) as float, else TypeError naming the argument."""
    if type(value) is float:  # the common case, without the ABC checks below
        return value
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} is out of the float64 range: {value}") from None


def nonnegative(value, name: str) -> float:
    """A real number >= 0 (inf allowed, NaN not)."""
    v = real(value, name)
    if not v >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def integer(value, name: str, lo: int, hi: int) -> int:
    """An int (not bool) in [lo, hi], else TypeError / ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)
