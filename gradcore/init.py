"""Weight initialisers that keep gradients in range.

The same formulas as ``torch.nn.init``, returning new NumPy arrays::

    import numpy as np
    from gradcore import init

    rng = np.random.default_rng(0)
    w_ih = init.xavier_uniform((4 * 64, 32), rng=rng)                 # Glorot & Bengio (2010)
    w1 = init.kaiming_normal((256, 128), nonlinearity="relu", rng=rng)  # He et al. (2015)
    w_hh = init.orthogonal((64, 64), rng=rng)                          # Saxe et al. (2014)

=====================  ==============================================================
function               distribution
=====================  ==============================================================
``xavier_uniform``     U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))
``xavier_normal``      N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))
``kaiming_uniform``    U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)
``kaiming_normal``     N(0, std^2), std = gain / sqrt(fan)
``orthogonal``         gain * Q, Q from the QR decomposition of a standard normal matrix
=====================  ==============================================================

``fan_in`` and ``fan_out`` are computed like torch's ``_calculate_fan_in_and_fan_out``:
for a shape ``(out, in, *k)`` (a dense weight ``(out, in)``, a convolution kernel
``(out, in, kh, kw)``), ``fan_in = in * prod(k)`` and ``fan_out = out * prod(k)``; at
least 2 dimensions are required. ``kaiming_*``'s ``mode`` picks ``"fan_in"`` (preserves
the variance of the activations in the forward pass, torch's default) or ``"fan_out"``
(preserves it for the gradients in the backward pass).

Every initialiser takes ``rng``: a ``numpy.random.Generator``, an int seed (the same
seed gives the same array), or None for fresh OS entropy. The values are drawn in
float64 and returned as ``dtype`` (float32 by default). Shapes with a zero dimension
give an empty array.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "calculate_gain", "calculate_fan_in_and_fan_out",
    "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
]

Shape = Union[int, Sequence[int]]
RNG = Union[np.random.Generator, int, None]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_NONLINEARITIES = _LINEAR + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """The recommended gain for an activation, as ``torch.nn.init.calculate_gain``.

    ===================================  ====================================
    nonlinearity                         gain
    ===================================  ====================================
    linear, conv{1,2,3}d,                1
    conv_transpose{1,2,3}d, sigmoid
    tanh                                 5/3
    relu                                 sqrt(2)
    leaky_relu                           sqrt(2 / (1 + negative_slope^2)),
                                         ``param`` = negative_slope (default 0.01)
    selu                                 3/4
    ===================================  ====================================

    ``param`` is only used by ``leaky_relu``. Raises ValueError for any other name or a
    slope that is not a finite real number.
    """
    if not isinstance(nonlinearity, str):
        raise ValueError(f"nonlinearity must be a str, one of {', '.join(_NONLINEARITIES)}; "
                         f"got {nonlinearity!r}")
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif (isinstance(param, numbers.Real) and not isinstance(param, bool)
              and math.isfinite(float(param))):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1.0 + slope ** 2))
    if nonlinearity == "selu":
        # torch's choice: gives a good balance of activation magnitudes for SELU networks
        return 3.0 / 4.0
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}; expected one of "
                     f"{', '.join(_NONLINEARITIES)}")


def _shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"shape must be a sequence of ints, got {shape!r}")
        if d < 0:
            raise ValueError(f"shape dimensions must be >= 0, got {shape!r}")
    return tuple(int(d) for d in dims)


def _shape_2d(shape: Shape, what: str) -> Tuple[int, ...]:
    dims = _shape(shape)
    if len(dims) < 2:
        raise ValueError(f"{what} needs a shape with at least 2 dimensions (out, in, *kernel); "
                         f"got {dims}")
    return dims


def calculate_fan_in_and_fan_out(shape: Shape) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape, as torch computes them.

    For ``(out, in, *k)``: ``fan_in = in * prod(k)``, ``fan_out = out * prod(k)``
    (dimensions 2 and beyond are the receptive field). Raises ValueError for fewer than
    2 dimensions.
    """
    dims = _shape_2d(shape, "fan in and fan out")
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


def _generator(rng: RNG) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None; "
                    f"got {type(rng).__name__}")


def _float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {dt}")
    return dt


def _gain(gain) -> float:
    if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not math.isfinite(gain):
        raise ValueError(f"gain must be a finite real number, got {gain!r}")
    return float(gain)


def _uniform(dims, bound, rng, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=dims).astype(dtype, copy=False)


def _normal(dims, std, rng, dtype) -> np.ndarray:
    return rng.normal(0.0, std, size=dims).astype(dtype, copy=False)


def xavier_uniform(shape: Shape, gain: float = 1.0, *, rng: RNG = None,
                   dtype=np.float32) -> np.ndarray:
    """Glorot/Xavier uniform: U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``
    (Glorot & Bengio 2010), as ``torch.nn.init.xavier_uniform_``."""
    dims = _shape_2d(shape, "xavier_uniform")
    gain, gen, dt = _gain(gain), _generator(rng), _float_dtype(dtype)
    if 0 in dims:
        return np.empty(dims, dt)
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _uniform(dims, math.sqrt(3.0) * std, gen, dt)


def xavier_normal(shape: Shape, gain: float = 1.0, *, rng: RNG = None,
                  dtype=np.float32) -> np.ndarray:
    """Glorot/Xavier normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``,
    as ``torch.nn.init.xavier_normal_``."""
    dims = _shape_2d(shape, "xavier_normal")
    gain, gen, dt = _gain(gain), _generator(rng), _float_dtype(dtype)
    if 0 in dims:
        return np.empty(dims, dt)
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    return _normal(dims, gain * math.sqrt(2.0 / (fan_in + fan_out)), gen, dt)


def _kaiming_std(dims, a, mode, nonlinearity) -> float:
    if not isinstance(mode, str) or mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(dims)
    fan = fan_in if mode.lower() == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform(shape: Shape, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *, rng: RNG = None,
                    dtype=np.float32) -> np.ndarray:
    """He/Kaiming uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)`` (He et al. 2015), as
    ``torch.nn.init.kaiming_uniform_``.

    ``gain = calculate_gain(nonlinearity, a)``; ``a`` is the negative slope of a leaky
    ReLU (ignored by other nonlinearities; the default leaky_relu with a=0 gives
    sqrt(2), the ReLU gain). ``mode`` is ``"fan_in"`` or ``"fan_out"``.
    """
    dims = _shape_2d(shape, "kaiming_uniform")
    gen, dt = _generator(rng), _float_dtype(dtype)
    if 0 in dims:
        calculate_gain(nonlinearity, a)  # still reject bad arguments
        return np.empty(dims, dt)
    std = _kaiming_std(dims, a, mode, nonlinearity)
    return _uniform(dims, math.sqrt(3.0) * std, gen, dt)


def kaiming_normal(shape: Shape, a: float = 0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu", *, rng: RNG = None,
                   dtype=np.float32) -> np.ndarray:
    """He/Kaiming normal: N(0, std^2) with ``std = gain / sqrt(fan)``, as
    ``torch.nn.init.kaiming_normal_`` (arguments as ``kaiming_uniform``)."""
    dims = _shape_2d(shape, "kaiming_normal")
    gen, dt = _generator(rng), _float_dtype(dtype)
    if 0 in dims:
        calculate_gain(nonlinearity, a)
        return np.empty(dims, dt)
    return _normal(dims, _kaiming_std(dims, a, mode, nonlinearity), gen, dt)


def orthogonal(shape: Shape, gain: float = 1.0, *, rng: RNG = None,
               dtype=np.float32) -> np.ndarray:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe, McClelland & Ganguli 2014), as
    ``torch.nn.init.orthogonal_``.

    The trailing dimensions are flattened: the result ``W`` viewed as ``(rows, cols)``
    with ``rows = shape[0]`` has orthonormal rows (``W W^T = gain^2 I``) when
    ``rows <= cols`` and orthonormal columns (``W^T W = gain^2 I``) otherwise. Algorithm
    (torch's): QR decomposition of a standard normal ``(max, min)`` matrix, ``Q`` times
    the signs of ``diag(R)`` (which makes ``Q`` Haar-distributed), transposed back when
    ``rows < cols``. A zero on the diagonal of R (probability zero) counts as positive,
    where torch's ``sign`` would zero that column. The QR runs in LAPACK through NumPy.

    For a recurrent matrix ``weight_hh`` of shape ``(G*H, H)``, each gate's ``H x H``
    block of the result is not itself orthogonal; to make every block orthogonal, build
    them one at a time and stack them.
    """
    dims = _shape_2d(shape, "orthogonal")
    gain, gen, dt = _gain(gain), _generator(rng), _float_dtype(dtype)
    if 0 in dims:
        return np.empty(dims, dt)
    rows = dims[0]
    cols = math.prod(dims[1:])
    flat = gen.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)                      # reduced: q (max, min), r (min, min)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)    # scale each column by sign(R[j, j])
    if rows < cols:
        q = q.T
    return (gain * q).reshape(dims).astype(dt, copy=False)
