"""CUDA device arrays on gradcore's GPU path: detection, the caller's stream, conversion to
what the bindings take (``gradcore._core.cuda_*``), and allocation of results in the
caller's array library.

Nothing here imports torch or CuPy unless the caller passed one of their objects (the
check is ``type(obj).__module__``), so ``import gradcore`` stays light.

What the bindings take, per array: a DLPack capsule, or a tuple
``(ptr, shape, strides, dtype, device, readonly)`` (strides in bytes, None for
C-contiguous; dtype a name such as "float32"; device the CUDA ordinal, -1 when unknown).
torch tensors and CuPy arrays are described by tuples read from their attributes (a
tenth of the cost of a DLPack export); other producers go through ``__dlpack__`` (or
``__cuda_array_interface__``). The bindings validate all of it before any kernel runs.

Streams. Work is enqueued on the caller's current stream: torch's
``torch.cuda.current_stream(device)`` for torch tensors, CuPy's current stream for CuPy
arrays, the legacy default stream otherwise. Other producers are told that stream
through ``__dlpack__(stream=...)`` (DLPack: 1 is the legacy default stream), so they
order their pending work before ours; ``__cuda_array_interface__`` v3 producers that
name their stream get an event wait (``_core.cuda_stream_wait``). Nothing waits on the
host.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _core

CUDA, CUDA_MANAGED = 2, 13          # DLPack device types
LEGACY_STREAM = 0                   # the legacy default stream, as the C++ API takes it

_CAI_DTYPES = {"<f2": "float16", "<f4": "float32", "<f8": "float64", "<i8": "int64",
               "=f2": "float16", "=f4": "float32", "=f8": "float64", "=i8": "int64"}
if sys.byteorder == "big":  # pragma: no cover
    _CAI_DTYPES = {">" + k[1:]: v for k, v in _CAI_DTYPES.items() if k[0] == "<"}


def _cai_dtype_name(typestr) -> str:
    """A ``__cuda_array_interface__`` typestr as a dtype name ("<f4" -> "float32"); what
    is not native-endian keeps its typestr, for the error message."""
    name = _CAI_DTYPES.get(typestr)
    if name is not None:
        return name
    try:
        dt = np.dtype(typestr)
    except TypeError:
        return str(typestr)
    return dt.name if dt.isnative else f"{typestr} (non-native byte order)"


# ---------------------------------------------------------------------------------------
# detection

def _torch_module(obj):
    """torch, if obj is a torch tensor (torch already imported, or it could not be one)."""
    mod = type(obj).__module__
    if isinstance(mod, str) and mod.startswith("torch"):
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            return torch
    return None


def _cupy_module(obj):
    """cupy, if obj is a CuPy array."""
    mod = type(obj).__module__
    if isinstance(mod, str) and (mod == "cupy" or mod.startswith("cupy.")):
        cupy = sys.modules.get("cupy")
        if cupy is not None and isinstance(obj, cupy.ndarray):
            return cupy
    return None


def dlpack_device(obj):
    """``obj.__dlpack_device__()`` as (type, id), or None when it has none (or it fails)."""
    f = getattr(obj, "__dlpack_device__", None)
    if f is None:
        return None
    try:
        kind, index = f()
        return int(kind), int(index)
    except Exception:
        return None


def _has_cai(obj) -> bool:
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except Exception:  # a property that raises something other than AttributeError
        return False


def leads_on_device(arrays) -> bool:
    """Whether a list goes to the GPU: its first array is a device array (a NumPy array
    costs one type check, so the CPU path pays nothing measurable)."""
    return bool(arrays) and any_device_array(arrays[:1])


def is_device_array(obj) -> bool:
    """True for CUDA device arrays: torch CUDA tensors (parameters too), CuPy arrays,
    anything whose ``__dlpack_device__()`` is CUDA (2) or CUDA managed (13), and anything
    with ``__cuda_array_interface__``. Imports neither torch nor CuPy."""
    if isinstance(obj, np.ndarray):
        return False
    torch = _torch_module(obj)
    if torch is not None:
        return bool(obj.is_cuda)
    if _cupy_module(obj) is not None:
        return True
    dev = dlpack_device(obj)
    if dev is not None:
        return dev[0] in (CUDA, CUDA_MANAGED)
    return _has_cai(obj)


def any_device_array(objs) -> bool:
    """True when one of ``objs`` (None entries allowed) is a device array; NumPy arrays
    cost one type check each."""
    ndarray = np.ndarray
    for a in objs:
        if a is None or type(a) is ndarray:
            continue
        if is_device_array(a):
            return True
    return False


def device_index(obj) -> int:
    """The CUDA ordinal of a device array, -1 when it does not say."""
    torch = _torch_module(obj)
    if torch is not None:
        return obj.get_device()
    if _cupy_module(obj) is not None:
        return int(obj.device.id)
    dev = dlpack_device(obj)
    return dev[1] if dev is not None and dev[0] in (CUDA, CUDA_MANAGED) else -1


def device_text(obj) -> str:
    """Where obj lives, for messages: "cuda:0", "cpu", ..."""
    torch = _torch_module(obj)
    if torch is not None:
        return str(obj.device)
    if _cupy_module(obj) is not None:
        return f"cuda:{obj.device.id}"
    dev = dlpack_device(obj)
    if dev is not None:
        names = {1: "cpu", CUDA: "cuda", 3: "cuda_host", 10: "rocm", CUDA_MANAGED: "cuda_managed"}
        return f"{names.get(dev[0], f'device type {dev[0]}')}:{dev[1]}" if dev[0] != 1 else "cpu"
    if _has_cai(obj):
        return "cuda"
    return "cpu"


def mixed_error(label, obj, lead_label, device) -> ValueError:
    """The error for a non-device argument in a call on the device."""
    if isinstance(obj, np.ndarray) or device_text(obj) == "cpu" and (
            hasattr(obj, "__array__") or hasattr(obj, "__dlpack__")):
        what = "a CPU array"
    else:
        what = f"not a CUDA device array (got {type(obj).__name__})"
    return ValueError(f"{label} is {what} but {lead_label} is on cuda:{device}; "
                      "pass all arrays on one device")


# ---------------------------------------------------------------------------------------
# the caller's library: stream, allocation, host reads

class _Torch:
    name = "torch"

    def __init__(self, torch):
        self.torch = torch
        self.dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                       "float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
        self.names = {v: k for k, v in self.dtypes.items()}
        self._devices = {}

    def dtype_name(self, dtype) -> str:
        name = self.names.get(dtype)
        return name if name is not None else str(dtype).replace("torch.", "")

    def device(self, index):
        d = self._devices.get(index)
        if d is None:
            d = self._devices[index] = self.torch.device("cuda", index)
        return d

    def stream(self, index) -> int:
        return int(self.torch.cuda.current_stream(index).cuda_stream)

    def empty(self, shape, dtype, index):
        return self.torch.empty(shape, dtype=self.dtypes[dtype], device=self.device(index))

    def full(self, value, dtype, index):
        return self.torch.full((), value, dtype=self.dtypes[dtype], device=self.device(index))

    def zero_(self, a):
        a.zero_()

    def copy_(self, dst, src):
        dst.copy_(src)

    def clone(self, a):
        return a.clone()

    def describe(self, t):
        """The binding's tuple for a tensor (strides None when contiguous)."""
        strides = None if t.is_contiguous() else tuple(s * t.element_size() for s in t.stride())
        return (t.data_ptr(), t.shape, strides, self.dtype_name(t.dtype), t.get_device(), False)

    def adopt(self, obj):
        """obj as a torch tensor (no copy): its own tensor, or torch.from_dlpack."""
        torch = self.torch
        if isinstance(obj, torch.Tensor):
            return obj.detach() if obj.requires_grad else obj
        if hasattr(obj, "__dlpack__"):
            return torch.from_dlpack(obj)
        return torch.as_tensor(obj, device="cuda")  # __cuda_array_interface__

    def contiguous(self, a):
        return a.contiguous()

    def dtype_of(self, a) -> str:
        return self.dtype_name(a.dtype)

    def device_of(self, a) -> int:
        return a.get_device()


class _Cupy:
    name = "cupy"

    def __init__(self, cupy):
        self.cupy = cupy

    def stream(self, index) -> int:
        with self.cupy.cuda.Device(index):
            return int(self.cupy.cuda.get_current_stream().ptr)

    def empty(self, shape, dtype, index):
        with self.cupy.cuda.Device(index):
            return self.cupy.empty(shape, dtype=dtype)

    def full(self, value, dtype, index):
        with self.cupy.cuda.Device(index):
            return self.cupy.full((), value, dtype=dtype)

    def zero_(self, a):
        a.fill(0)

    def copy_(self, dst, src):
        with self.cupy.cuda.Device(dst.device.id):
            self.cupy.copyto(dst, src)

    def clone(self, a):
        with self.cupy.cuda.Device(a.device.id):
            return a.copy()

    def describe(self, a):
        strides = None if a.flags.c_contiguous else tuple(a.strides)
        return (int(a.data.ptr), a.shape, strides, a.dtype.name, int(a.device.id), False)

    def adopt(self, obj):
        cupy = self.cupy
        if isinstance(obj, cupy.ndarray):
            return obj
        if hasattr(obj, "__dlpack__"):
            return cupy.from_dlpack(obj)
        return cupy.asarray(obj)  # __cuda_array_interface__, zero-copy

    def contiguous(self, a):
        with self.cupy.cuda.Device(a.device.id):
            return self.cupy.ascontiguousarray(a)

    def dtype_of(self, a) -> str:
        return a.dtype.name

    def device_of(self, a) -> int:
        return int(a.device.id)


_LIBS = {}


def _lib(module):
    lib = _LIBS.get(module.__name__)
    if lib is None:
        lib = _LIBS[module.__name__] = (_Torch if module.__name__ == "torch" else _Cupy)(module)
    return lib


def library_of(obj):
    """The library object of a torch tensor or CuPy array, else None."""
    mod = _torch_module(obj) or _cupy_module(obj)
    return None if mod is None else _lib(mod)


def fallback_library(purpose: str):
    """The library results are allocated with when the caller's arrays are neither torch
    tensors nor CuPy arrays: CuPy, else torch (with CUDA); TypeError if neither imports."""
    try:
        import cupy
        return _lib(cupy)
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return _lib(torch)
    except ImportError:
        pass
    raise TypeError(
        f"gradcore: {purpose} needs device memory for its results, allocated with the caller's "
        "array library (torch or CuPy); these arrays are neither, and neither CuPy nor torch "
        "with CUDA is importable. Install cupy (pip install cupy-cuda12x) or pass torch "
        "tensors / CuPy arrays")


# ---------------------------------------------------------------------------------------
# lists of device arrays (norms and clipping)

def dlpack_stream(stream: int) -> int:
    """The ``stream=`` argument of ``__dlpack__`` for our stream (DLPack: 1 is the legacy
    default stream, 0 is not allowed)."""
    return 1 if stream == LEGACY_STREAM else stream


def _export(obj, label, stream):
    """obj.__dlpack__(stream=...), as a versioned (1.x) capsule where the producer can."""
    if getattr(obj, "requires_grad", False) and hasattr(obj, "detach"):
        obj = obj.detach()
    s = dlpack_stream(stream)
    try:
        try:
            return obj.__dlpack__(stream=s, max_version=(1, 1))
        except TypeError:
            return obj.__dlpack__(stream=s)  # a producer from before DLPack 1.0
    except Exception as exc:
        raise TypeError(f"{label}: cannot export {type(obj).__name__} through DLPack ({exc})") from exc


def _cai_item(obj, label, waits):
    """The binding's tuple for an object exposing ``__cuda_array_interface__``."""
    try:
        d = obj.__cuda_array_interface__
        shape = tuple(d["shape"])
        ptr, readonly = d["data"]
        typestr = d["typestr"]
    except Exception as exc:
        raise TypeError(f"{label}: unreadable __cuda_array_interface__ ({exc})") from exc
    if d.get("mask") is not None:
        raise ValueError(f"{label}: masked arrays (__cuda_array_interface__ 'mask') are not supported")
    strides = d.get("strides")
    dev = dlpack_device(obj)
    device = dev[1] if dev is not None and dev[0] in (CUDA, CUDA_MANAGED) else -1
    if d.get("version", 0) >= 3 and d.get("stream") is not None:
        waits.append(int(d["stream"]))
    return (int(ptr or 0), shape, None if strides is None else tuple(strides),
            _cai_dtype_name(typestr), device, bool(readonly))


class DeviceList:
    """A list of device arrays converted and validated for the bindings.

    ``table`` is what the ``_core.cuda_*`` functions take (validated once, by
    ``_core.cuda_arrays``), ``device`` the CUDA ordinal of the call, ``stream`` the
    caller's stream; ``lib`` the caller's library (None for other producers).
    """

    __slots__ = ("name", "lead_label", "lib", "device", "stream", "table", "_keep")

    def __init__(self, arrays, name, write, dtypes="float", like=None):
        self.name = name
        if like is None:
            first = arrays[0]
            self.lead_label = f"{name}[0]"
            self.lib = library_of(first)
            if self.lib is not None:
                self.device = self.lib.device_of(first)
                self.stream = self.lib.stream(self.device)
            else:
                dev = dlpack_device(first)
                self.device = dev[1] if dev is not None and dev[0] in (CUDA, CUDA_MANAGED) else -1
                self.stream = LEGACY_STREAM
        else:
            self.lead_label, self.lib = like.lead_label, like.lib
            self.device, self.stream = like.device, like.stream
        keep, waits = [], []
        if self.lib is not None and self.lib.name == "torch":
            items = self._torch_items(arrays, write, keep, waits)
        else:
            items = [self._item(a, f"{name}[{i}]", write, keep, waits) for i, a in enumerate(arrays)]
        self.table, device = _core.cuda_arrays(items, name, write, dtypes)
        if self.device < 0:
            self.device = device if device >= 0 else 0
        for producer in waits:
            _core.cuda_stream_wait(self.device, self.stream, producer)
        self._keep = keep

    def _torch_items(self, arrays, write, keep, waits):
        lib = self.lib
        torch = lib.torch
        tensor, strided, names = torch.Tensor, torch.strided, lib.names
        items = []
        append = items.append
        for i, t in enumerate(arrays):
            if not (isinstance(t, tensor) and t.is_cuda):
                append(self._item(t, f"{self.name}[{i}]", write, keep, waits))
                continue
            if t.requires_grad:
                t = t.detach()
            if t.layout is not strided:
                raise TypeError(f"{self.name}[{i}]: layout {t.layout} is not supported "
                                "(expected a dense, strided tensor)")
            if t.is_neg():
                raise ValueError(f"{self.name}[{i}] has its negative bit set; call .resolve_neg() first")
            strides = None
            if not t.is_contiguous():
                if write:
                    strides = tuple(s * t.element_size() for s in t.stride())
                else:  # read-only use: a contiguous copy, as the CPU path copies
                    t = t.contiguous()
                    keep.append(t)
            dtype = names.get(t.dtype)
            append((t.data_ptr(), t.shape, strides,
                    dtype if dtype is not None else lib.dtype_name(t.dtype), t.get_device(), False))
        return items

    def _item(self, obj, label, write, keep, waits):
        lib = library_of(obj)
        if lib is not None and lib is self.lib and lib.name == "cupy":  # in a CuPy-led list
            if not write and not obj.flags.c_contiguous:
                obj = lib.contiguous(obj)
                keep.append(obj)
            return lib.describe(obj)
        if not is_device_array(obj):
            raise mixed_error(label, obj, self.lead_label, max(self.device, 0))
        dev = dlpack_device(obj)
        if hasattr(obj, "__dlpack__") and dev is not None and dev[0] in (CUDA, CUDA_MANAGED):
            return _export(obj, label, self.stream)
        if _has_cai(obj):
            return _cai_item(obj, label, waits)
        raise TypeError(f"{label}: {type(obj).__name__} is a device array without a usable "
                        "__dlpack__ or __cuda_array_interface__")

    def allocator(self, purpose):
        return self.lib if self.lib is not None else fallback_library(purpose)


# ---------------------------------------------------------------------------------------
# separate arguments (dense, rnn): all viewed through one library

class DeviceArgs:
    """The array arguments of one dense/rnn call, as arrays of the caller's library on
    one device. ``named``: (name, obj) pairs, obj None for absent arguments."""

    def __init__(self, named, purpose):
        present = [(n, a) for n, a in named if a is not None]
        lead_name, lead = next((n, a) for n, a in present if is_device_array(a))
        lead_device = device_index(lead)
        # Where every argument is, checked before anything is converted or allocated.
        for n, a in present:
            if not is_device_array(a):
                raise mixed_error(n, a, lead_name, max(lead_device, 0))
            dev = device_index(a)
            if dev >= 0 and lead_device >= 0 and dev != lead_device:
                raise ValueError(f"{n} is on cuda:{dev} but {lead_name} is on cuda:{lead_device}")
        self.lead_label = lead_name
        lib = library_of(lead)
        self.lib = lib if lib is not None else fallback_library(purpose)
        lead = self.lib.adopt(lead)
        self.device = self.lib.device_of(lead)
        self.stream = self.lib.stream(self.device)

    def get(self, obj, name, contiguous=True):
        """obj as an array of the library on the call's device (None stays None); inputs
        are made C-contiguous (a device copy when they are not), as the CPU path copies."""
        if obj is None:
            return None
        if not is_device_array(obj):
            raise mixed_error(name, obj, self.lead_label, self.device)
        a = self.lib.adopt(obj)
        dev = self.lib.device_of(a)
        if dev != self.device:
            raise ValueError(f"{name} is on cuda:{dev} but {self.lead_label} is on cuda:{self.device}")
        return self.lib.contiguous(a) if contiguous else a

    def describe(self, a):
        return None if a is None else self.lib.describe(a)


def host_float(a) -> float:
    """A device scalar read on the host (this synchronises with its stream)."""
    item = getattr(a, "item", None)
    return float(item() if item is not None else a)
