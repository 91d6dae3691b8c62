"""gradcore's CUDA backend: build and device facts, and the device path of the top-level
functions.

A CUDA build imports and runs on machines without a GPU; ``is_available()`` is then False.

**Device arrays.** ``gradcore.global_norm``, ``norms``, ``grad_stats``, ``clip_by_value_``,
``clip_by_norm_``, ``clip_by_global_norm_``, ``adaptive_clip_``, ``dense_forward``,
``dense_backward``, ``rnn_forward`` and ``rnn_backward`` run on the GPU when their arrays
are CUDA device arrays: torch CUDA tensors, CuPy arrays, or anything exposing a CUDA
``__dlpack__``/``__dlpack_device__`` or ``__cuda_array_interface__``. All arrays of a call
must be on one device (a CPU array among them raises ``ValueError`` naming it). Norms and
clipping take float16, bfloat16, float32 and float64 (accumulated in float64); dense and
recurrent layers float32 and float64. In-place functions need C-contiguous, writeable
arrays; read-only torch/CuPy inputs that are not contiguous are copied on the device
first (as the CPU path copies), other producers' must be contiguous.

**No host synchronisation.** Work is enqueued on the caller's current stream (torch's
``torch.cuda.current_stream()``, CuPy's current stream, else the legacy default stream)
and the call returns: results stay on the device, as arrays of the caller's library
(torch tensors for torch input, CuPy arrays for CuPy input, CuPy, else torch, for other
producers). ``global_norm`` returns a 0-d float64 device array (as
``torch.nn.utils.get_total_norm`` returns a tensor), ``norms`` and ``clip_by_norm_`` a
(count,) float64 device array, ``grad_stats`` a ``GradStats`` of device arrays, and
``clip_by_global_norm_`` a :class:`DeviceClipResult` of device scalars. Reading one on the
host (``float(x)``, ``x.item()``, ``result.clipped``) waits for the stream. The one
exception is ``clip_by_global_norm_(..., nonfinite="error")``, which must read the total
to decide whether to raise ``NonFiniteGradientError``: it synchronises.

Argument checks are the CPU path's (same messages); scalars such as ``max_norm`` are
host numbers. ``clip_by_global_norm_(total_norm=...)`` also takes a device scalar (e.g.
a total computed earlier on the device), which is then not checked on the host.
"""

from __future__ import annotations

import math

from . import _core
from ._args import real
from ._device import DeviceArgs, DeviceList, host_float, is_device_array, library_of

__all__ = ["DeviceClipResult", "cublas_status", "device_count", "device_name", "is_available",
           "is_built", "self_test", "synchronize"]


def is_built() -> bool:
    """True when this copy of gradcore was compiled with ``GRADCORE_CUDA=ON``."""
    return bool(_core._cuda_built())


def device_count() -> int:
    """Number of CUDA devices the runtime sees (0 without a CUDA build or without a GPU)."""
    return int(_core._cuda_device_count())


def is_available() -> bool:
    """True when gradcore was built with CUDA and at least one GPU is usable."""
    return is_built() and device_count() > 0


def self_test() -> None:
    """Run a trivial kernel on the current device; raise ``RuntimeError`` if it fails."""
    if not is_available():
        raise RuntimeError("gradcore.cuda.self_test: no usable CUDA device "
                           f"(built with CUDA: {is_built()}, devices: {device_count()})")
    message = _core._cuda_self_test()
    if message:
        raise RuntimeError(f"gradcore.cuda.self_test failed: {message}")


def device_name(device: int = 0) -> str:
    """The name of CUDA device ``device`` (e.g. "NVIDIA H100 80GB HBM3"); ``RuntimeError``
    without a CUDA build or without that device."""
    from ._args import integer
    return str(_core.cuda_device_name(integer(device, "device", 0, 2**31 - 1)))


def _default_stream(device: int) -> int:
    """The stream gradcore would use now on ``device`` for a library already in use:
    torch's current stream, else CuPy's, else the legacy default stream."""
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.current_stream(device).cuda_stream)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


def synchronize(device: int = 0, stream=None) -> None:
    """Block the host until the work enqueued on ``stream`` of ``device`` has finished.

    ``stream``: a ``cudaStream_t`` as an int, a ``torch.cuda.Stream`` or a
    ``cupy.cuda.Stream``; by default the stream gradcore uses for new work on that device
    (torch's current stream when torch is in use, else CuPy's, else the legacy default
    stream). For tests and benchmarks: training loops should not need it.
    """
    from ._args import integer
    device = integer(device, "device", 0, 2**31 - 1)
    if stream is None:
        handle = _default_stream(device)
    elif isinstance(stream, int) and not isinstance(stream, bool):
        handle = stream
    elif hasattr(stream, "cuda_stream"):
        handle = int(stream.cuda_stream)
    elif hasattr(stream, "ptr"):
        handle = int(stream.ptr)
    else:
        raise TypeError(f"stream must be an int handle, a torch.cuda.Stream or a cupy.cuda.Stream, "
                        f"got {type(stream).__name__}")
    _core.cuda_synchronize(device, handle)


def cublas_status() -> str:
    """Where libcublas was loaded from, or why it could not be (the dense and recurrent
    layers need it; the norms and clipping do not). cuBLAS is opened on first use."""
    return str(_core.cuda_cublas_status())


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


# ---------------------------------------------------------------------------------------
# The device path of the top-level functions: gradcore._norms, _dense and _rnn call these
# once they have seen a device array (scalar arguments already checked as on the CPU).

def _global_norm(arrays, ord):
    lst = DeviceList(arrays, "arrays", False)
    lib = lst.allocator("global_norm")
    out = lib.empty((), "float64", lst.device)
    _core.cuda_global_norm(lst.table, ord, lib.describe(out), lst.stream)
    return out


def _norms(arrays, ord):
    lst = DeviceList(arrays, "arrays", False)
    lib = lst.allocator("norms")
    out = lib.empty((len(arrays),), "float64", lst.device)
    _core.cuda_norms(lst.table, ord, lib.describe(out), lst.stream)
    return out


def _grad_stats(arrays):
    from ._norms import GradStats
    lst = DeviceList(arrays, "arrays", False)
    lib = lst.allocator("grad_stats")
    n = len(arrays)
    l2, amax = lib.empty((n,), "float64", lst.device), lib.empty((n,), "float64", lst.device)
    bad = lib.empty((n,), "int64", lst.device)
    _core.cuda_grad_stats(lst.table, lib.describe(l2), lib.describe(amax), lib.describe(bad), lst.stream)
    return GradStats(l2, amax, bad)


def _clip_by_value_(arrays, lo, hi):
    lst = DeviceList(arrays, "arrays", True)
    _core.cuda_clip_by_value_(lst.table, lo, hi, lst.stream)
    return arrays


def _clip_by_norm_(arrays, max_norm, ord, eps):
    lst = DeviceList(arrays, "arrays", True)
    lib = lst.allocator("clip_by_norm_")
    out = lib.empty((len(arrays),), "float64", lst.device)
    _core.cuda_clip_by_norm_(lst.table, max_norm, ord, eps, lib.describe(out), lst.stream)
    return out


def _device_total(total_norm, lst, lib):
    """``total_norm=`` as a float64 device scalar on the call's device: a host number is
    written there (a fill kernel, no wait); a device scalar is used as it is (converted
    to float64 on the device if needed)."""
    if is_device_array(total_norm):
        own = library_of(total_norm) or lib
        t = own.adopt(total_norm)
        if own.device_of(t) != lst.device:
            raise ValueError(f"total_norm is on cuda:{own.device_of(t)} but arrays[0] is on "
                             f"cuda:{lst.device}")
        if own.dtype_of(t) != "float64":
            t = t.to(own.dtypes["float64"]) if own.name == "torch" else t.astype("float64")
        return own, t
    value = real(total_norm, "total_norm")
    if value < 0:
        raise ValueError(f"total_norm must be >= 0, got {value}")
    return lib, lib.full(value, "float64", lst.device)


def _clip_by_global_norm_(arrays, max_norm, ord, eps, nonfinite, total_norm):
    from ._norms import NonFiniteGradientError
    lst = DeviceList(arrays, "arrays", True)
    lib = lst.allocator("clip_by_global_norm_")
    given = None
    if total_norm is not None:
        own, t = _device_total(total_norm, lst, lib)
        given = own.describe(t)
    total = lib.empty((), "float64", lst.device)
    factor = lib.empty((), "float64", lst.device)
    _core.cuda_clip_by_global_norm_(lst.table, max_norm, ord, eps, nonfinite, given,
                                    lib.describe(total), lib.describe(factor), lst.stream)
    if nonfinite == "error":
        value = host_float(total)  # the one policy that reads the total on the host
        if not math.isfinite(value):
            raise NonFiniteGradientError(value)
    return DeviceClipResult(total, factor)


def _adaptive_clip_(grads, params, clipping, eps, unit_axis):
    g = DeviceList(grads, "grads", True)
    p = DeviceList(params, "params", False, like=g)
    _core.cuda_adaptive_clip_(g.table, p.table, clipping, eps, unit_axis, g.stream)
    return grads


# ---- dense layer ------------------------------------------------------------------------

def _float_dtype(args, a, name):
    dtype = args.lib.dtype_of(a)
    if dtype not in ("float32", "float64"):
        raise TypeError(f"{name}: dtype {dtype} is not supported (expected float32 or float64)")
    return dtype


def _same_dtype(args, a, an, b, bn):
    da, db = _float_dtype(args, a, an), _float_dtype(args, b, bn)
    if da != db:
        raise TypeError(f"{an} and {bn} must have the same dtype, got {da} and {db}")


def _shape(a):
    return tuple(int(d) for d in a.shape)


def _require_ndim(a, name, ndim):
    if len(a.shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {_shape(a)}")


def _dense_forward(x, weight, bias, activation, negative_slope, out):
    args = DeviceArgs([("x", x), ("weight", weight), ("bias", bias), ("out", out)], "dense_forward")
    x, weight, bias = args.get(x, "x"), args.get(weight, "weight"), args.get(bias, "bias")
    out = args.get(out, "out", contiguous=False)
    _same_dtype(args, x, "x", weight, "weight")
    _require_ndim(x, "x", 2)
    _require_ndim(weight, "weight", 2)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has shape {_shape(x)} but weight has shape {_shape(weight)} "
                         f"(expected (out_features, {x.shape[1]}))")
    batch, n_out = int(x.shape[0]), int(weight.shape[0])
    if bias is not None:
        _same_dtype(args, x, "x", bias, "bias")
        if _shape(bias) != (n_out,):
            raise ValueError(f"bias has shape {_shape(bias)}, expected ({n_out},)")
    if out is None:
        out = args.lib.empty((batch, n_out), args.lib.dtype_of(x), args.device)
    d = args.describe
    _core.cuda_dense_forward(d(x), d(weight), d(bias), d(out), activation, negative_slope, args.stream)
    return out


def _dense_backward(grad_y, x, weight, y, activation, negative_slope, has_bias, need_grad_x,
                    accumulate, grad_x, grad_weight, grad_bias):
    args = DeviceArgs([("grad_y", grad_y), ("x", x), ("weight", weight), ("y", y),
                       ("grad_x", grad_x), ("grad_weight", grad_weight), ("grad_bias", grad_bias)],
                      "dense_backward")
    grad_y, x, weight, y = (args.get(grad_y, "grad_y"), args.get(x, "x"), args.get(weight, "weight"),
                            args.get(y, "y"))
    _same_dtype(args, x, "x", weight, "weight")
    _same_dtype(args, x, "x", grad_y, "grad_y")
    _same_dtype(args, x, "x", y, "y")
    for a, name in ((grad_y, "grad_y"), (x, "x"), (weight, "weight"), (y, "y")):
        _require_ndim(a, name, 2)
    batch, n_in, n_out = int(x.shape[0]), int(x.shape[1]), int(weight.shape[0])
    if weight.shape[1] != n_in:
        raise ValueError(f"x has shape {_shape(x)} but weight has shape {_shape(weight)} "
                         f"(expected (out_features, {n_in}))")
    for a, name in ((grad_y, "grad_y"), (y, "y")):
        if _shape(a) != (batch, n_out):
            raise ValueError(f"{name} has shape {_shape(a)}, expected ({batch}, {n_out})")
    dtype = args.lib.dtype_of(x)

    def output(given, name, shape):
        if given is not None:
            return args.get(given, name, contiguous=False)
        if accumulate:
            raise ValueError(f"accumulate=True needs {name}= to add into")
        return args.lib.empty(shape, dtype, args.device)

    gx = output(grad_x, "grad_x", (batch, n_in)) if need_grad_x else None
    gw = output(grad_weight, "grad_weight", (n_out, n_in))
    gb = output(grad_bias, "grad_bias", (n_out,)) if has_bias else None
    d = args.describe
    _core.cuda_dense_backward(d(grad_y), d(x), d(weight), d(y), activation, negative_slope,
                              bool(accumulate), d(gx), d(gw), d(gb), args.stream)
    return gx, gw, gb


# ---- recurrent layers -------------------------------------------------------------------

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _checked(args, a, name, like, shape):
    """The CPU binding's check: a float dtype, x's dtype, the shape."""
    dtype = args.lib.dtype_of(a)
    if dtype not in ("float32", "float64"):
        raise TypeError(f"{name}: dtype {dtype} is not supported (expected float32 or float64)")
    if dtype != args.lib.dtype_of(like):
        raise TypeError(f"{name} has dtype {dtype} but x has {args.lib.dtype_of(like)}")
    if _shape(a) != tuple(shape):
        raise ValueError(f"{name} has shape {_shape(a)}, expected {tuple(shape)}")
    return a


def _rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, cell, c0):
    from ._rnn import RNNCache, RNNForward
    named = [("x", x), ("h0", h0), ("weight_ih", weight_ih), ("weight_hh", weight_hh),
             ("bias_ih", bias_ih), ("bias_hh", bias_hh), ("c0", c0)]
    args = DeviceArgs(named, "rnn_forward")
    lib = args.lib
    x, weight_ih, weight_hh = args.get(x, "x"), args.get(weight_ih, "weight_ih"), args.get(weight_hh, "weight_hh")
    bias_ih, bias_hh = args.get(bias_ih, "bias_ih"), args.get(bias_hh, "bias_hh")
    h0, c0 = args.get(h0, "h0", contiguous=False), args.get(c0, "c0", contiguous=False)
    G = _GATES[cell]
    dtype = lib.dtype_of(x)
    if dtype not in ("float32", "float64"):
        raise TypeError(f"x: dtype {dtype} is not supported (expected float32 or float64)")
    if len(x.shape) != 3:
        raise ValueError(f"x must be 3-D (T, B, input_size), got shape {_shape(x)}")
    if len(weight_hh.shape) != 2:
        raise ValueError(f"weight_hh must be 2-D, got shape {_shape(weight_hh)}")
    T, B, I = _shape(x)
    H = int(weight_hh.shape[1])
    if weight_hh.shape[0] != G * H:
        raise ValueError(f"weight_hh has shape {_shape(weight_hh)}, expected {(G * H, H)} for cell "
                         f"'{cell}' ({G} gates)")
    _checked(args, weight_ih, "weight_ih", x, (G * H, I))
    _checked(args, weight_hh, "weight_hh", x, (G * H, H))
    if bias_ih is not None:
        _checked(args, bias_ih, "bias_ih", x, (G * H,))
    if bias_hh is not None:
        _checked(args, bias_hh, "bias_hh", x, (G * H,))
    if c0 is not None and cell != "lstm":
        raise ValueError("c0 is only for cell='lstm'")
    dev = args.device
    hs = lib.empty((T + 1, B, H), dtype, dev)
    cs = lib.empty((T + 1, B, H), dtype, dev) if cell == "lstm" else None
    gates = lib.empty((T, B, G * H), dtype, dev) if cell in ("lstm", "gru") else None
    gh_n = lib.empty((T, B, H), dtype, dev) if cell == "gru" else None
    for state, given, name in ((hs, h0, "h0"), (cs, c0, "c0")):
        if state is None:
            continue
        if given is None:
            lib.zero_(state[0])
        else:
            lib.copy_(state[0], _checked(args, given, name, x, (B, H)))
    d = args.describe
    _core.cuda_rnn_forward((cell, d(x), d(weight_ih), d(weight_hh), d(bias_ih), d(bias_hh), d(hs),
                            d(cs), d(gates), d(gh_n)), args.stream)
    data = {"y": lib.clone(hs[1:]), "h_n": lib.clone(hs[T]),
            "c_n": None if cs is None else lib.clone(cs[T]), "cell": cell, "x": x,
            "weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh,
            "hs": hs, "cs": cs, "gates": gates, "gh_n": gh_n}
    return RNNForward(data["y"], data["h_n"], data["c_n"], RNNCache(data))


def _rnn_backward(cache, grad_y, grad_h_n, grad_c_n, clip):
    from ._rnn import RNNGrads
    data = cache._data
    x = data["x"]
    args = DeviceArgs([("cache", x), ("grad_y", grad_y), ("grad_h_n", grad_h_n), ("grad_c_n", grad_c_n)],
                      "rnn_backward")
    lib = args.lib
    cell = data["cell"]
    T, B, I = _shape(x)
    H = int(data["weight_hh"].shape[1])
    G = _GATES[cell]
    grad_y = _checked(args, args.get(grad_y, "grad_y"), "grad_y", x, (T, B, H))
    grad_h_n = args.get(grad_h_n, "grad_h_n")
    if grad_h_n is not None:
        _checked(args, grad_h_n, "grad_h_n", x, (B, H))
    if grad_c_n is not None and cell != "lstm":
        raise ValueError("grad_c_n is only for cell='lstm'")
    grad_c_n = args.get(grad_c_n, "grad_c_n")
    if grad_c_n is not None:
        _checked(args, grad_c_n, "grad_c_n", x, (B, H))
    dtype, dev = lib.dtype_of(x), args.device
    gx, gh0 = lib.empty((T, B, I), dtype, dev), lib.empty((B, H), dtype, dev)
    gc0 = lib.empty((B, H), dtype, dev) if cell == "lstm" else None
    gwih, gwhh = lib.empty((G * H, I), dtype, dev), lib.empty((G * H, H), dtype, dev)
    gbih = lib.empty((G * H,), dtype, dev) if data["bias_ih"] is not None else None
    gbhh = lib.empty((G * H,), dtype, dev) if data["bias_hh"] is not None else None
    norms = lib.empty((T,), "float64", dev)
    d = args.describe
    state = (cell, d(x), d(data["weight_ih"]), d(data["weight_hh"]), d(data["bias_ih"]),
             d(data["bias_hh"]), d(data["hs"]), d(data["cs"]), d(data["gates"]), d(data["gh_n"]))
    _core.cuda_rnn_backward(state, d(grad_y), d(grad_h_n), d(grad_c_n), clip,
                            (d(gx), d(gh0), d(gc0), d(gwih), d(gwhh), d(gbih), d(gbhh), d(norms)),
                            args.stream)
    return RNNGrads(gx, gh0, gc0, gwih, gwhh, gbih, gbhh, norms)

