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

import sys

from . import _core
from ._types import DeviceClipResult

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
    return str(_core.cuda_device_name(device))


def _default_stream(device: int) -> int:
    """The stream gradcore would use now on ``device`` for a library already in use:
    torch's current stream, else CuPy's, else the legacy default stream."""
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
