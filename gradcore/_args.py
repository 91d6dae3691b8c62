"""Argument checks of the pure-Python parts of the API (the optimisers' hyper-parameters,
the monitor's thresholds, the NumPy models' sizes); the compiled core checks its own
arguments, and gradcore._pytree the containers."""

from __future__ import annotations

import numbers

import numpy as np


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


def positive_finite(value, name: str) -> float:
    """A finite real number > 0 (a factor)."""
    v = real(value, name)
    if not (v > 0.0 and v != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return v


def integer(value, name: str, lo: int, hi: int) -> int:
    """An int (not bool) in [lo, hi], else TypeError / ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def count(value, name: str, minimum: int = 1) -> int:
    """An integer (not bool) >= minimum: a size, a window, a number of steps."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


#: the real floating-point dtypes the kernels read and write in place, by name (bfloat16
#: is ml_dtypes' NumPy dtype, which gradcore does not import)
REAL_FLOATS = ("float16", "bfloat16", "float32", "float64")


def real_float_name(dtype) -> str | None:
    """The name in REAL_FLOATS of a NumPy dtype, or None. bfloat16 is ml_dtypes' dtype, or,
    where ml_dtypes is not installed, the tagged uint16 through which gradcore views
    bfloat16 memory it was handed (a torch tensor)."""
    if dtype.name in REAL_FLOATS:
        return dtype.name
    return "bfloat16" if (dtype.metadata or {}).get("gradcore") == "bfloat16" else None


def float32_copy(a: np.ndarray) -> np.ndarray:
    """A float32 copy of a real float array (exact for the 16-bit formats)."""
    if a.dtype.name != "bfloat16" and real_float_name(a.dtype) == "bfloat16":
        # a bfloat16 is the high half of a float32
        return np.left_shift(a.view(np.uint16).astype(np.uint32), 16).view(np.float32)
    return a.astype(np.float32)


def dtype_names(dtypes) -> str:
    """"float32, float64 or complex64": the dtypes (or dtype names) a message lists as
    expected."""
    names = [d if isinstance(d, str) else np.dtype(d).name for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
