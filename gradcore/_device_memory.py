"""Device memory for the CUDA path of the bindings: the caller's current stream, and new
device arrays allocated by the caller's array library (torch or CuPy), so that results
come back as the caller's own arrays. The bindings (``csrc/python/call.cpp``) call
these functions only for CUDA device arrays; everything else about an array (reading it,
checking it, where it lives) happens in C++.

Nothing here imports torch or CuPy unless the caller passed one of their objects (the
check is ``type(obj).__module__``), so ``import gradcore`` stays light.
"""

from __future__ import annotations

import sys


def _library(obj):
    """"torch" or "cupy" when obj is one of their arrays (already imported), else None."""
    mod = type(obj).__module__
    if not isinstance(mod, str):
        return None
    if mod.startswith("torch"):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            return torch
    elif mod == "cupy" or mod.startswith("cupy."):
        cupy = sys.modules.get("cupy")
        if cupy is not None and isinstance(obj, cupy.ndarray):
            return cupy
    return None


def _allocator(obj, purpose: str):
    """The library results are allocated with: the caller's, else CuPy, else torch with
    CUDA; TypeError when none is importable."""
    lib = _library(obj)
    if lib is not None:
        return lib
    try:
        import cupy
        return cupy
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return torch
    except ImportError:
        pass
    raise TypeError(
        f"gradcore: {purpose} needs device memory for its results, allocated with the caller's "
        "array library (torch or CuPy); these arrays are neither, and neither CuPy nor torch "
        "with CUDA is importable. Install cupy (pip install cupy-cuda12x) or pass torch "
        "tensors / CuPy arrays")


def stream(obj, device: int) -> int:
    """The caller's current stream on ``device`` as a ``cudaStream_t`` integer: torch's
    for torch tensors, CuPy's for CuPy arrays, the legacy default stream (0) otherwise."""
    lib = _library(obj)
    if lib is None:
        return 0
    if lib.__name__ == "torch":
        return int(lib.cuda.current_stream(device).cuda_stream)
    with lib.cuda.Device(device):
        return int(lib.cuda.get_current_stream().ptr)


def empty(obj, shape, dtype: str, device: int, purpose: str, zeroed: bool = False):
    """A new C-contiguous device array in obj's library (or the fallback's)."""
    lib = _allocator(obj, purpose)
    if lib.__name__ == "torch":
        make = lib.zeros if zeroed else lib.empty
        return make(shape, dtype=getattr(lib, dtype), device=lib.device("cuda", device))
    with lib.cuda.Device(device):
        return (lib.zeros if zeroed else lib.empty)(shape, dtype=dtype)


def full(obj, value: float, device: int, purpose: str):
    """A float64 device scalar holding ``value`` (a fill kernel: the host does not wait)."""
    lib = _allocator(obj, purpose)
    if lib.__name__ == "torch":
        return lib.full((), value, dtype=lib.float64, device=lib.device("cuda", device))
    with lib.cuda.Device(device):
        return lib.full((), value, dtype="float64")


def contiguous(obj):
    """A C-contiguous device copy of a torch tensor or CuPy array; None for other
    producers (the binding then refuses the strided input)."""
    lib = _library(obj)
    if lib is None:
        return None
    if lib.__name__ == "torch":
        return obj.detach().contiguous()
    with lib.cuda.Device(obj.device.id):
        return lib.ascontiguousarray(obj)


def float64(obj):
    """obj as float64 on its device (itself when it already is, or when it is neither a
    torch tensor nor a CuPy array: the binding then checks its dtype)."""
    lib = _library(obj)
    if lib is None:
        return obj
    if lib.__name__ == "torch":
        return obj if obj.dtype == lib.float64 else obj.detach().to(lib.float64)
    return obj if obj.dtype == "float64" else obj.astype("float64")
