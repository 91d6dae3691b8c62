"""gradcore's CUDA backend from Python: the device path of every operation's binding
(csrc/python/array_arg.cpp, *_bindings.cpp), gradcore/_device_memory.py, gradcore/cuda.py.

1. Always run (no GPU needed): fake device arrays (a class exposing
   ``__cuda_array_interface__`` / ``__dlpack_device__``, and DLPack capsules built with
   ctypes around a fake device pointer) check detection, every validation error (dtype,
   strides, device type, mixed CPU/GPU lists, mixed devices, read-only, byte offsets,
   bad capsules), the DLPack capsule protocol (renamed and deleted once, only when taken),
   the stream handed to producers, and that a valid call reaches the C++ API and fails
   there cleanly on a build without CUDA (or a CUDA build without a GPU). Nothing may
   dereference the fake pointer: a crash would fail the run. ``import gradcore`` must not
   import torch or CuPy.
2. On a GPU (``gradcore.cuda.is_available()``; torch with CUDA and/or CuPy): every
   function against the NumPy float64 references of tests/reference*.py and against
   the CPU path and torch, for every dtype it allows, long lists and huge arrays, NaN/inf
   under every policy, extreme float64 values, results on the device, the caller's
   stream, no synchronising torch call, mixed devices.
"""

import ctypes
import gc
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import gradcore
import gradcore.cuda
from gradcore import _core, _device_memory
from reference import (
    assert_close,
    build_array_list,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_grad_stats,
    ref_norm,
    ref_norms,
    RefNonFiniteError,
)

AVAILABLE = gradcore.cuda.is_available()
REASON = (f"no usable CUDA device for gradcore (built with CUDA: {gradcore.cuda.is_built()}, "
          f"devices: {gradcore.cuda.device_count()})")

#: a device address nobody owns: any host-side dereference crashes the test run
FAKE_PTR = 0xDEAD0000

# tests that let a valid fake array reach the C++ API (which, with a GPU, would run a
# kernel on the fake pointer) run only where no GPU is usable
reaches_api = pytest.mark.skipif(AVAILABLE, reason="a GPU is usable: fake pointers must not reach a kernel")
NO_CUDA = r"gradcore was built without CUDA|gradcore CUDA: "  # the C++ API's errors


# --------------------------------------------------------------------------- fakes


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]

# DLPack dtypes as (code, bits)
F16, BF16, F32, F64, I32, I64 = (2, 16), (4, 16), (2, 32), (2, 64), (0, 32), (0, 64)


class FakeTensor:
    """A DLPack tensor in ctypes memory around a fake device pointer; ``deleted`` counts
    the calls of its deleter."""

    def __init__(self, shape=(3, 4), dtype=F32, device=(2, 0), strides=None, data=FAKE_PTR,
                 byte_offset=0, versioned=False, readonly=False, version=(1, 0)):
        self.deleted = 0
        self._shape = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self._strides = None if strides is None else (ctypes.c_int64 * max(len(strides), 1))(*strides)
        self._deleter = DELETER(self._delete)
        self.versioned = versioned
        m = DLManagedTensorVersioned() if versioned else DLManagedTensor()
        if versioned:
            m.version = DLPackVersion(*version)
            m.flags = 1 if readonly else 0
        t = m.dl_tensor
        t.data = data
        t.device = DLDevice(*device)
        t.ndim = len(shape)
        t.dtype = DLDataType(dtype[0], dtype[1], 1)
        t.shape = ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64))
        if self._strides is not None:
            t.strides = ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64))
        t.byte_offset = byte_offset
        m.deleter = self._deleter
        self.managed = m

    def _delete(self, _ptr):
        self.deleted += 1

    def capsule(self):
        # The capsule points into this object's ctypes memory and calls its deleter: keep
        # the object alive for the rest of the session (tests build capsules of
        # temporaries, e.g. FakeTensor().capsule(), whose memory would otherwise be freed
        # before the binding reads it).
        _ALIVE.append(self)
        name = b"dltensor_versioned" if self.versioned else b"dltensor"
        return _capsule_new(ctypes.addressof(self.managed), name, None)


_ALIVE: list = []


def capsule_name(cap) -> str:
    return _capsule_name(cap).decode()


class FakeDLPack:
    """A device array exporting FakeTensor capsules through ``__dlpack__``; records the
    keyword arguments of each export."""

    def __init__(self, claimed_device=(2, 0), **kw):
        self.tensor = FakeTensor(**kw)
        self.claimed_device = claimed_device
        self.exports = []
        self.capsules = []

    def __dlpack_device__(self):
        return self.claimed_device

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        self.exports.append({"stream": stream, "max_version": max_version})
        cap = self.tensor.capsule()
        self.capsules.append(cap)
        return cap


class FakeCAI:
    """A device array exposing only ``__cuda_array_interface__`` (v3)."""

    def __init__(self, shape=(3, 4), typestr="<f4", ptr=FAKE_PTR, strides=None, readonly=False,
                 stream=None, mask=None, version=3):
        self.cai = {"shape": tuple(shape), "typestr": typestr, "data": (ptr, readonly),
                    "strides": strides, "version": version, "mask": mask}
        if stream is not None:
            self.cai["stream"] = stream

    @property
    def __cuda_array_interface__(self):
        return self.cai


class FakeCAIOnDevice(FakeCAI):
    """The same, also saying its device through ``__dlpack_device__``."""

    def __init__(self, device=0, **kw):
        super().__init__(**kw)
        self.device = device

    def __dlpack_device__(self):
        return (2, self.device)


_TYPESTRS = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "int64": "<i8", "int32": "<i4"}


def cai(shape=(3, 4), dtype="float32", device=0, strides=None, readonly=False, ptr=FAKE_PTR):
    """A device array exposing __cuda_array_interface__ (strides in bytes) on ``device``."""
    return FakeCAIOnDevice(device=device, shape=shape, typestr=_TYPESTRS[dtype], strides=strides,
                           readonly=readonly, ptr=ptr)


class FakeAllocation:
    """Stands in for the caller's array library where the bindings allocate results
    (gradcore._device_memory): distinct fake device arrays, recorded."""

    def __init__(self):
        self.made = []
        self._next = FAKE_PTR + (1 << 28)

    def empty(self, obj, shape, dtype, device, purpose, zeroed=False):
        a = cai(tuple(shape), dtype, device, ptr=self._next)
        self._next += 1 << 16
        self.made.append((purpose, tuple(shape), dtype, zeroed))
        return a

    def full(self, obj, value, device, purpose):
        return self.empty(obj, (), "float64", device, purpose)


@pytest.fixture
def fake_allocation(monkeypatch):
    if AVAILABLE:
        pytest.skip("a GPU is usable: fake pointers must not reach a kernel")
    fake = FakeAllocation()
    monkeypatch.setattr(_device_memory, "empty", fake.empty)
    monkeypatch.setattr(_device_memory, "full", fake.full)
    return fake


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def test_import_gradcore_does_not_import_torch_or_cupy():
    code = ("import sys, numpy as np, gradcore, gradcore.cuda\n"
            "gradcore.global_norm([np.ones(3, np.float32)])\n"
            "gradcore.clip_by_global_norm_([np.ones(3, np.float32)], 1.0)\n"
            "gradcore.dense_forward(np.ones((2, 3)), np.ones((4, 3)))\n"
            "bad = [m for m in ('torch', 'cupy') if m in sys.modules]\n"
            "assert not bad, bad\n")
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(__file__), env=env)


@reaches_api
def test_device_arrays_are_detected(fake_allocation):
    """CUDA (2) and CUDA managed (13) DLPack producers, __cuda_array_interface__ and bare
    DLPack capsules take the device path; a lone device array is a list of one."""
    for a in (FakeCAI(), FakeCAIOnDevice(), FakeDLPack(), FakeDLPack(claimed_device=(13, 0), device=(13, 0)),
              FakeTensor().capsule()):
        with pytest.raises(RuntimeError, match=NO_CUDA):
            gradcore.clip_by_value_(a, 1.0)
    # a producer that cannot say where it lives, or says the CPU, is read on the CPU
    class Raises(np.ndarray):
        def __dlpack_device__(self):
            raise RuntimeError("no")

    assert gradcore.global_norm(np.ones(4).view(Raises)) == 2.0
    if _importable("torch"):
        import torch
        assert gradcore.global_norm([torch.ones(4), torch.nn.Parameter(torch.ones(4))]) == math.sqrt(8)


@pytest.mark.parametrize("make", [
    lambda **kw: FakeDLPack(dtype=I32, **kw),
    lambda **kw: FakeCAIOnDevice(typestr="<i4", **kw),
], ids=["dlpack", "cai"])
def test_dtype_is_checked_naming_the_argument(make):
    with pytest.raises(TypeError, match=r"arrays\[1\]: dtype int32 is not supported "
                                        r"\(expected float16, bfloat16, float32 or float64\)"):
        gradcore.clip_by_value_([FakeCAIOnDevice(), make()], 1.0)
    with pytest.raises(TypeError, match=r"arrays\[0\]: dtype int32"):
        gradcore.global_norm([make()])


def test_dtypes_of_the_dense_functions_are_float32_float64():
    for dt, name in ((F16, "float16"), (BF16, "bfloat16"), (I64, "int64")):
        cap = FakeTensor(shape=(2, 3), dtype=dt).capsule()
        with pytest.raises(TypeError, match=rf"x: dtype {name} is not supported \(expected float32 or float64\)"):
            gradcore.dense_forward(cap, cai((4, 3)), out=cai((2, 4)))
    with pytest.raises(TypeError, match=r"x and weight must have the same dtype, got float32 and float64"):
        gradcore.dense_forward(cai((2, 3)), cai((4, 3), "float64"), out=cai((2, 4)))


@pytest.mark.parametrize("make", [
    lambda: FakeDLPack(shape=(3, 4), strides=(1, 3)),
    lambda: FakeCAIOnDevice(shape=(3, 4), strides=(4, 12)),
], ids=["dlpack", "cai"])
def test_non_contiguous_arrays_are_refused(make):
    with pytest.raises(ValueError, match=r"arrays\[1\] must be C-contiguous"):
        gradcore.clip_by_value_([FakeCAIOnDevice(), make()], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[0\] must be C-contiguous"):
        gradcore.global_norm([make()])


@reaches_api
def test_strides_of_size_one_dimensions_are_ignored():
    ok = [FakeDLPack(shape=(3, 1), strides=(1, 99)), FakeDLPack(shape=(1, 4), strides=(7, 1)),
          FakeCAIOnDevice(shape=(3, 1), strides=(4, 1000)), FakeDLPack(shape=(0, 5), strides=(3, 3))]
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.clip_by_value_(ok, 1.0)


def test_arrays_on_other_devices_are_refused():
    # a producer that says CUDA in __dlpack_device__ but exports a CPU tensor
    liar = FakeDLPack(claimed_device=(2, 0), device=(1, 0))
    with pytest.raises(ValueError, match=r"arrays\[1\]: on cpu, expected a CUDA device array"):
        gradcore.clip_by_value_([FakeCAIOnDevice(), liar], 1.0)
    assert capsule_name(liar.capsules[0]) == "dltensor"  # refused: not taken
    for dev, name in ((10, "rocm"), (8, "metal")):
        with pytest.raises(ValueError, match=rf"arrays\[0\]: on {name}, expected host memory or a CUDA device array"):
            gradcore.global_norm([FakeTensor(device=(dev, 0)).capsule()])


def test_mixed_cpu_and_device_lists_name_the_argument():
    cpu = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"arrays\[2\] is a CPU array but arrays\[0\] is on cuda:0"):
        gradcore.clip_by_value_([FakeCAIOnDevice(), FakeCAIOnDevice(), cpu], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[1\] is on cuda:0 but arrays\[0\] is a CPU array"):
        gradcore.global_norm([cpu, FakeDLPack()])
    with pytest.raises(ValueError, match=r"arrays\[1\] is on cuda:0 but arrays\[0\] is a CPU array"):
        gradcore.clip_by_global_norm_([cpu, FakeCAIOnDevice()], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[1\] is not a CUDA device array \(got str\) but "
                                         r"arrays\[0\] is on cuda:0"):
        gradcore.norms([FakeCAIOnDevice(), "x"])
    with pytest.raises(ValueError, match=r"params\[0\] is a CPU array but grads\[0\] is on cuda:0"):
        gradcore.adaptive_clip_([FakeCAIOnDevice()], [cpu])
    with pytest.raises(ValueError, match=r"params\[0\] is on cuda:0 but grads\[0\] is a CPU array"):
        gradcore.adaptive_clip_([cpu], [FakeCAIOnDevice()])
    with pytest.raises(ValueError, match=r"weight is a CPU array but x is on cuda:0"):
        gradcore.dense_forward(FakeCAIOnDevice(shape=(2, 3)), np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"x is a CPU array but grad_y is on cuda:0"):
        gradcore.dense_backward(FakeCAIOnDevice(), np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"h0 is a CPU array but x is on cuda:0"):
        gradcore.rnn_forward(FakeCAIOnDevice(shape=(2, 1, 3)), np.zeros((1, 4)),
                             FakeCAIOnDevice(), FakeCAIOnDevice())
    if _importable("torch"):
        import torch
        with pytest.raises(ValueError, match=r"arrays\[1\] is a CPU array but arrays\[0\] is on cuda:0"):
            gradcore.global_norm([FakeCAIOnDevice(), torch.ones(3)])


def test_device_arrays_in_cpu_only_functions_are_refused():
    with pytest.raises(TypeError, match=r"arrays\[0\] is a CUDA device array \(on cuda:0\).*runs on the CPU"):
        gradcore.clip_by_global_norm([FakeCAIOnDevice()], 1.0)
    with pytest.raises(TypeError, match=r"a is a CUDA device array"):
        gradcore.matmul(FakeDLPack(), np.ones((4, 2), np.float32))


def test_mixed_devices_name_both():
    with pytest.raises(ValueError, match=r"arrays\[1\] is on cuda:1 but arrays\[0\] is on cuda:0"):
        gradcore.clip_by_value_([FakeDLPack(device=(2, 0)), FakeDLPack(device=(2, 1), claimed_device=(2, 1))], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[2\] is on cuda:3 but arrays\[0\] is on cuda:0"):
        gradcore.global_norm([FakeCAIOnDevice(0), FakeCAI(), FakeCAIOnDevice(3)])
    with pytest.raises(ValueError, match=r"params\[0\] is on cuda:1 but grads\[0\] is on cuda:0"):
        gradcore.adaptive_clip_([FakeCAIOnDevice(0)], [FakeCAIOnDevice(1)])
    with pytest.raises(ValueError, match=r"grads and params must have the same length, got 1 and 0"):
        gradcore.adaptive_clip_([FakeCAIOnDevice(0)], [])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(3, 4\) but params\[0\] has shape \(4, 3\)"):
        gradcore.adaptive_clip_([FakeCAIOnDevice(0)], [FakeCAIOnDevice(0, shape=(4, 3))])
    with pytest.raises(ValueError, match=r"unit_axis 5 is out of range for grads\[0\] with 2 dimensions"):
        gradcore.adaptive_clip_([FakeCAIOnDevice(0)], [FakeCAIOnDevice(0)], unit_axis=5)
    with pytest.raises(ValueError, match=r"weight is on cuda:1 but x is on cuda:0"):
        gradcore.dense_forward(FakeCAIOnDevice(0, shape=(2, 3)), FakeCAIOnDevice(1, shape=(4, 3)))
    with pytest.raises(ValueError, match=r"out is on cuda:1 but x is on cuda:0"):
        gradcore.dense_forward(cai((2, 3)), cai((4, 3)), out=cai((2, 4), device=1))


def test_read_only_arrays_are_refused_for_in_place_use():
    ro = FakeDLPack(versioned=True, readonly=True)
    with pytest.raises(ValueError, match=r"arrays\[1\] is read-only; in-place operations need writeable arrays"):
        gradcore.clip_by_value_([FakeCAIOnDevice(), ro], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[0\] is read-only"):
        gradcore.clip_by_global_norm_([FakeCAIOnDevice(readonly=True)], 1.0)
    with pytest.raises(ValueError, match=r"grads\[0\] is read-only"):
        gradcore.adaptive_clip_([FakeCAIOnDevice(readonly=True)], [FakeCAIOnDevice()])
    with pytest.raises(ValueError, match=r"out is read-only"):
        gradcore.dense_forward(cai((2, 3)), cai((4, 3)), out=cai((2, 4), readonly=True))
    assert ro.tensor.deleted == 0 and capsule_name(ro.capsules[0]) == "dltensor_versioned"


@reaches_api
def test_read_only_arrays_are_fine_to_read(fake_allocation):
    # params of adaptive clipping are only read
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.adaptive_clip_([FakeCAIOnDevice()], [FakeDLPack(versioned=True, readonly=True)])
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.global_norm([FakeTensor(versioned=True, readonly=True).capsule()])


def test_byte_offset_is_added_and_alignment_checked():
    with pytest.raises(ValueError, match=r"arrays\[0\]: data pointer is not aligned to its item size \(4 bytes\)"):
        gradcore.clip_by_value_([FakeTensor(byte_offset=2).capsule()], 1.0)
    with pytest.raises(ValueError, match=r"not aligned"):
        gradcore.clip_by_value_([cai(ptr=FAKE_PTR + 6, dtype="float64")], 1.0)
    with pytest.raises(ValueError, match=r"arrays\[0\]: null data pointer"):
        gradcore.clip_by_value_([FakeTensor(data=None).capsule()], 1.0)
    with pytest.raises(ValueError, match=r"null data pointer"):
        # a null pointer plus an offset is still not memory
        gradcore.clip_by_value_([FakeTensor(data=None, byte_offset=8).capsule()], 1.0)


@reaches_api
def test_byte_offset_and_empty_arrays_reach_the_api():
    caps = [FakeTensor(byte_offset=4).capsule(), FakeTensor(shape=(0,), data=None).capsule(),
            FakeTensor(shape=(), dtype=F64).capsule(), FakeTensor(dtype=F16).capsule(),
            FakeTensor(dtype=BF16).capsule()]
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.clip_by_value_(caps, 1.0)


def test_bad_capsules_and_items(fake_allocation):
    with pytest.raises(ValueError, match=r"arrays\[0\]: DLPack ABI version 2.0 is not supported"):
        gradcore.clip_by_value_([FakeTensor(versioned=True, version=(2, 0)).capsule()], 1.0)
    other = _capsule_new(FAKE_PTR, b"something_else", None)
    with pytest.raises(TypeError, match=r"arrays\[0\]: PyCapsule 'something_else' is not a DLPack tensor"):
        gradcore.clip_by_value_([other], 1.0)
    with pytest.raises(TypeError, match=r"arrays must be an array or a sequence of arrays, got int"):
        gradcore.clip_by_value_(5, 1.0)
    with pytest.raises(ValueError, match=r"negative extent"):
        gradcore.clip_by_value_([cai(shape=(3, -1))], 1.0)
    with pytest.raises(ValueError, match=r"too large"):
        gradcore.clip_by_value_([cai(shape=(2**40, 2**40))], 1.0)
    with pytest.raises(ValueError, match=r"2 strides for shape \(3,\)"):
        gradcore.clip_by_value_([cai(shape=(3,), strides=(4, 4))], 1.0)
    with pytest.raises(ValueError, match=r"ord must be"):
        gradcore.global_norm([cai()], 0.0)
    with pytest.raises(ValueError, match=r"total_norm has 2 elements, expected 1"):
        gradcore.clip_by_global_norm_([cai()], 1.0, total_norm=cai((2,), "float64"))
    with pytest.raises(TypeError, match=r"total_norm: dtype float32 is not supported \(expected float64\)"):
        gradcore.clip_by_global_norm_([cai()], 1.0, total_norm=cai((), "float32"))
    with pytest.raises(ValueError, match=r"nonfinite must be one of"):
        gradcore.clip_by_global_norm_([cai()], 1.0, nonfinite="ignore")


def test_capsules_are_taken_only_when_every_argument_passed():
    good, bad = FakeTensor(), FakeTensor(dtype=I32)
    c1, c2 = good.capsule(), bad.capsule()
    with pytest.raises(TypeError):
        gradcore.clip_by_value_([c1, c2], 1.0)
    assert (capsule_name(c1), capsule_name(c2)) == ("dltensor", "dltensor")
    assert good.deleted == bad.deleted == 0


@reaches_api
def test_taken_capsules_are_renamed_and_deleted_once_after_the_call():
    a, b = FakeTensor(), FakeTensor(versioned=True)
    ca, cb = a.capsule(), b.capsule()
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.clip_by_value_([ca, cb, ca], 1.0)  # ca twice: taken once
    assert capsule_name(ca) == "used_dltensor" and capsule_name(cb) == "used_dltensor_versioned"
    assert a.deleted == 1 and b.deleted == 1
    with pytest.raises(ValueError, match=r"arrays\[0\]: this DLPack capsule was already consumed"):
        gradcore.clip_by_value_([ca], 1.0)
    d = FakeDLPack()
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.clip_by_value_([d], 1.0)
    gc.collect()
    assert d.tensor.deleted == 1 and capsule_name(d.capsules[0]) == "used_dltensor"


def test_producers_are_told_the_legacy_default_stream():
    d = FakeDLPack(dtype=I32)
    with pytest.raises(TypeError):
        gradcore.global_norm([d])
    # DLPack: stream 1 is the legacy default stream; a versioned capsule is asked for
    assert d.exports == [{"stream": 1, "max_version": (1, 1)}]


def test_cuda_array_interface_stream_waits_after_validation():
    # validation comes first: the wait on the producer's stream is never enqueued
    with pytest.raises(TypeError, match=r"arrays\[1\]: dtype int32"):
        gradcore.global_norm([FakeCAIOnDevice(stream=7), FakeCAIOnDevice(typestr="<i4")])
    with pytest.raises(ValueError, match=r"masked arrays"):
        gradcore.global_norm([FakeCAIOnDevice(mask=FakeCAI())])
    with pytest.raises(TypeError, match=r"dtype >f4 \(non-native byte order\) is not supported"):
        gradcore.global_norm([FakeCAIOnDevice(typestr=">f4")])


@reaches_api
def test_cuda_array_interface_stream_wait_reaches_the_api():
    with pytest.raises(RuntimeError, match=NO_CUDA):
        gradcore.clip_by_value_([FakeCAIOnDevice(stream=7)], 1.0)


def _p(k):
    return FAKE_PTR + (k << 12)  # distinct fake pointers


@reaches_api
@pytest.mark.parametrize("call", [
    lambda: gradcore.clip_by_value_([FakeCAIOnDevice(), FakeDLPack(dtype=F16), FakeCAI()], 1.0),
    lambda: gradcore.clip_by_value_(FakeDLPack(), min=-1.0),
    lambda: gradcore.adaptive_clip_([FakeCAIOnDevice(shape=(4, 5))], [FakeDLPack(shape=(4, 5))], unit_axis=1),
    lambda: gradcore.global_norm([FakeTensor().capsule()]),
    lambda: gradcore.norms([cai(), cai()], 3.0),
    lambda: gradcore.grad_stats([cai()]),
    lambda: gradcore._core.zero_nonfinite_([cai()]),
    lambda: gradcore.clip_by_norm_([cai()], 1.0),
    lambda: gradcore.clip_by_global_norm_([cai()], 1.0, nonfinite="zero", total_norm=cai((), "float64", ptr=_p(9))),
    lambda: gradcore.clip_by_global_norm_([cai()], 1.0, total_norm=2.0),
    lambda: gradcore.dense_forward(cai((2, 3)), cai((4, 3), ptr=_p(1)), cai((4,), ptr=_p(2)), "tanh"),
    lambda: gradcore.dense_backward(cai((2, 4)), cai((2, 3), ptr=_p(1)), cai((4, 3), ptr=_p(2)),
                                    cai((2, 4), ptr=_p(3)), "relu", has_bias=False, need_grad_x=False),
    lambda: gradcore.rnn_forward(cai((3, 2, 5)), None, cai((16, 5), ptr=_p(1)), cai((16, 4), ptr=_p(2)),
                                 cai((16,), ptr=_p(3))),
], ids=["clip_by_value_", "one array", "adaptive_clip_", "global_norm", "norms", "grad_stats",
        "zero_nonfinite_", "clip_by_norm_", "clip_by_global_norm_", "total on the host", "dense_forward",
        "dense_backward", "rnn_forward"])
def test_valid_calls_reach_the_api_and_fail_cleanly_without_cuda(call, fake_allocation):
    with pytest.raises(RuntimeError, match=NO_CUDA):
        call()


def test_results_are_allocated_in_the_callers_library(fake_allocation):
    """What each function asks the caller's library for, before the C++ API refuses."""
    for call in (lambda: gradcore.global_norm([cai()]), lambda: gradcore.norms([cai(), cai()]),
                 lambda: gradcore.grad_stats([cai()]), lambda: gradcore._core.zero_nonfinite_([cai()]),
                 lambda: gradcore.clip_by_global_norm_([cai()], 1.0, total_norm=2.0)):
        with pytest.raises(RuntimeError, match=NO_CUDA):
            call()
    assert fake_allocation.made == [
        ("global_norm", (), "float64", False), ("norms", (2,), "float64", False),
        ("grad_stats", (1,), "float64", False), ("grad_stats", (1,), "float64", False),
        ("grad_stats", (1,), "int64", False), ("zero_nonfinite_", (), "int64", True),
        ("clip_by_global_norm_", (), "float64", False),  # the given total, filled on the device
        ("clip_by_global_norm_", (), "float64", False), ("clip_by_global_norm_", (), "float64", False)]


def test_rnn_checks_shapes_and_dtypes(fake_allocation):
    x, wih, whh = cai((3, 2, 5)), cai((16, 5), ptr=_p(1)), cai((16, 4), ptr=_p(2))
    with pytest.raises(ValueError, match=r"weight_ih has shape \(16, 6\), expected \(16, 5\)"):
        gradcore.rnn_forward(x, None, cai((16, 6), ptr=_p(1)), whh)
    with pytest.raises(TypeError, match=r"x: dtype float16 is not supported"):
        gradcore.rnn_forward(cai((3, 2, 5), "float16"), None, wih, whh)
    with pytest.raises(TypeError, match=r"weight_hh has dtype float64 but x has float32"):
        gradcore.rnn_forward(x, None, wih, cai((16, 4), "float64", ptr=_p(2)))
    with pytest.raises(ValueError, match=r"cell must be one of"):
        gradcore.rnn_forward(x, None, wih, whh, cell="lstm2")
    with pytest.raises(ValueError, match=r"c0 is only for cell='lstm'"):
        gradcore.rnn_forward(x, None, cai((4, 5), ptr=_p(1)), cai((4, 4), ptr=_p(2)), cell="rnn_tanh",
                             c0=cai((2, 4), ptr=_p(3)))


def test_dense_refuses_overlapping_outputs():
    with pytest.raises(ValueError, match=r"out overlaps x"):
        gradcore.dense_forward(cai((2, 3)), cai((4, 3), ptr=FAKE_PTR + 4096), out=cai((2, 4)))
    with pytest.raises(ValueError, match=r"grad_weight overlaps weight"):
        gradcore.dense_backward(cai((2, 4)), cai((2, 3), ptr=_p(1)), cai((4, 3), ptr=_p(2)), cai((2, 4), ptr=_p(3)),
                                has_bias=False, need_grad_x=False, grad_weight=cai((4, 3), ptr=_p(2)))
    with pytest.raises(ValueError, match=r"bias has shape \(5,\), expected \(4,\)"):
        gradcore.dense_forward(cai((2, 3)), cai((4, 3), ptr=_p(1)), cai((5,), ptr=_p(2)), out=cai((2, 4), ptr=_p(3)))


def test_public_scalar_arguments_are_checked_as_on_the_cpu():
    a = [FakeCAIOnDevice()]
    with pytest.raises(ValueError, match=r"ord must be a real number p > 0 or inf"):
        gradcore.global_norm(a, 0)
    with pytest.raises(ValueError, match=r"max_norm must be >= 0"):
        gradcore.clip_by_global_norm_(a, -1.0)
    with pytest.raises(ValueError, match=r"nonfinite must be one of"):
        gradcore.clip_by_global_norm_(a, 1.0, nonfinite="maybe")
    with pytest.raises(ValueError, match=r"min must be <= max"):
        gradcore.clip_by_value_(a, min=1.0, max=0.0)
    with pytest.raises(TypeError, match=r"give either clip_value or min/max"):
        gradcore.clip_by_value_(a, 1.0, min=0.0)
    with pytest.raises(ValueError, match=r"activation must be one of"):
        gradcore.dense_forward(FakeCAIOnDevice(shape=(2, 3)), FakeCAIOnDevice(shape=(4, 3)), activation="swish")
    with pytest.raises(ValueError, match=r"activation 'gelu' runs on the CPU only"):
        gradcore.dense_forward(FakeCAIOnDevice(shape=(2, 3)), FakeCAIOnDevice(shape=(4, 3)), activation="gelu")
    with pytest.raises(ValueError, match=r"cell must be one of"):
        gradcore.rnn_forward(FakeCAIOnDevice(shape=(2, 1, 3)), None, FakeCAIOnDevice(), FakeCAIOnDevice(), cell="x")


def test_results_need_a_device_library():
    """Results are allocated with the caller's library (torch/CuPy); other producers' get
    CuPy, else torch with CUDA, else a TypeError saying so (after the arrays were checked)."""
    if _importable("cupy") or AVAILABLE:
        pytest.skip("CuPy or a GPU is available: results can be allocated")
    with pytest.raises(TypeError, match=r"global_norm needs device memory for its results.*cupy"):
        gradcore.global_norm([FakeCAIOnDevice()])
    with pytest.raises(TypeError, match=r"dense_forward needs device memory"):
        gradcore.dense_forward(FakeCAIOnDevice(shape=(2, 3)), FakeCAIOnDevice(shape=(4, 3)))


def test_device_clip_result_reads_its_scalars():
    r = gradcore.cuda.DeviceClipResult(np.array(3.0), np.array(0.5))
    assert r.clipped and not r.nonfinite and float(r) == 3.0
    assert "DeviceClipResult(" in repr(r)
    r = gradcore.cuda.DeviceClipResult(np.array(math.nan), np.array(1.0))
    assert not r.clipped and r.nonfinite


def test_module_facts_without_a_gpu():
    assert isinstance(gradcore.cuda.cublas_status(), str)
    if not gradcore.cuda.is_built():
        assert "without CUDA" in gradcore.cuda.cublas_status()
        with pytest.raises(RuntimeError, match="without CUDA"):
            gradcore.cuda.device_name(0)
        with pytest.raises(RuntimeError, match="without CUDA"):
            gradcore.cuda.synchronize(0, 0)
    with pytest.raises(TypeError, match="stream must be"):
        gradcore.cuda.synchronize(0, "default")
    with pytest.raises(ValueError, match=r"device must be in"):
        gradcore.cuda.device_name(-1)


# --------------------------------------------------------------------------- 1b. torch glue, stand-ins
# torch CPU tensors dressed as CUDA tensors (is_cuda True, device 0, exported through
# DLPack as CUDA memory), with torch's stream and allocation replaced by CPU stand-ins:
# this runs gradcore's torch path (stream, allocation, device copies, the drop-ins) up to
# the C++ API without a GPU. Their pointers are host memory, so these tests never run
# where a GPU is usable.


@pytest.fixture
def standin_torch(monkeypatch):
    if AVAILABLE:
        pytest.skip("a GPU is usable: host pointers must not reach a kernel")
    torch = pytest.importorskip("torch")
    codes = {torch.float16: F16, torch.bfloat16: BF16, torch.float32: F32, torch.float64: F64,
             torch.int64: I64}

    class StandIn(torch.Tensor):
        @property
        def is_cuda(self):
            return True

        @property
        def is_cpu(self):
            return False

        def get_device(self):
            return 0

        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
            if self.requires_grad:
                raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
            t = FakeTensor(shape=tuple(self.shape), dtype=codes[self.dtype], device=(2, 0),
                           strides=tuple(self.stride()), data=self.data_ptr(), versioned=True)
            return t.capsule()

    StandIn.__module__ = "torch.standin"  # what gradcore's torch detection looks at

    def make(*shape, dtype=torch.float32):
        return torch.randn(shape).to(dtype).as_subclass(StandIn)

    fake = FakeAllocation()
    monkeypatch.setattr(_device_memory, "stream", lambda obj, index: 0)
    monkeypatch.setattr(_device_memory, "empty", lambda obj, shape, dtype, device, purpose, zeroed=False:
                        torch.zeros(tuple(shape), dtype=getattr(torch, dtype)).as_subclass(StandIn))
    monkeypatch.setattr(_device_memory, "full", lambda obj, value, device, purpose:
                        torch.full((), value, dtype=torch.float64).as_subclass(StandIn))
    make.StandIn = StandIn
    make.torch = torch
    make.fake = fake
    return make


def test_standin_torch_tensors_take_the_device_path(standin_torch):
    make, torch = standin_torch, standin_torch.torch
    a, b = make(3, 4), make(5, dtype=torch.bfloat16)
    p = torch.nn.Parameter(make(2, 2))
    for call in (lambda: gradcore.global_norm([a, b, p]), lambda: gradcore.norms([a, b]),
                 lambda: gradcore.grad_stats([a]), lambda: gradcore.clip_by_value_([a, b], 0.5),
                 lambda: gradcore.clip_by_norm_([a], 1.0),
                 lambda: gradcore.clip_by_global_norm_([a, b], 1.0, total_norm=2.0),
                 lambda: gradcore.clip_by_global_norm_([a, b], 1.0, total_norm=make(dtype=torch.float32)),
                 lambda: gradcore.adaptive_clip_([make(4, 3)], [make(4, 3)], unit_axis=1),
                 lambda: gradcore.global_norm([a.t()]),  # read-only use: made contiguous first
                 lambda: gradcore.dense_forward(make(2, 3), make(4, 3), make(4), "tanh"),
                 lambda: gradcore.dense_backward(make(2, 4), make(2, 3), make(4, 3), make(2, 4), "relu"),
                 lambda: gradcore.rnn_forward(make(5, 2, 3), make(2, 4), make(16, 3), make(16, 4), cell="lstm")):
        with pytest.raises(RuntimeError, match=NO_CUDA):
            call()


def test_standin_torch_tensors_are_validated(standin_torch):
    make, torch = standin_torch, standin_torch.torch
    a = make(3, 4)
    with pytest.raises(ValueError, match=r"arrays\[1\] is a CPU array but arrays\[0\] is on cuda:0"):
        gradcore.global_norm([a, torch.ones(3)])
    with pytest.raises(TypeError, match=r"arrays\[1\]: dtype int64 is not supported"):
        gradcore.global_norm([a, torch.ones(3, dtype=torch.int64).as_subclass(standin_torch.StandIn)])
    with pytest.raises(ValueError, match=r"arrays\[0\] must be C-contiguous \(shape \(4, 3\), strides \(1, 4\) elements\)"):
        gradcore.clip_by_value_([a.t()], 1.0)
    with pytest.raises(ValueError, match=r"negative bit"):
        gradcore.global_norm([torch._neg_view(a)])
    with pytest.raises(TypeError, match=r"x: dtype float16 is not supported"):
        gradcore.dense_forward(make(2, 3, dtype=torch.float16), make(4, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\) but weight has shape \(4, 5\)"):
        gradcore.dense_forward(make(2, 3), make(4, 5))
    with pytest.raises(ValueError, match=r"weight_hh has shape \(16, 4\), expected \(12, 4\) for cell 'gru'"):
        gradcore.rnn_forward(make(5, 2, 3), None, make(12, 3), make(16, 4), cell="gru")
    with pytest.raises(ValueError, match=r"c0 is only for cell='lstm'"):
        gradcore.rnn_forward(make(5, 2, 3), None, make(12, 3), make(12, 4), cell="gru", c0=make(2, 4))
    with pytest.raises(ValueError, match=r"h0 has shape \(3, 4\), expected \(2, 4\)"):
        gradcore.rnn_forward(make(5, 2, 3), make(3, 4), make(12, 3), make(12, 4), cell="gru")


def test_standin_torch_dropins_route_to_the_device(standin_torch, monkeypatch):
    import gradcore.torch as gt
    make, torch = standin_torch, standin_torch.torch
    monkeypatch.setattr(gt, "_PLAIN_TYPES", gt._PLAIN_TYPES + (standin_torch.StandIn,))
    monkeypatch.setattr(gt, "_cuda_usable", True)
    grads = [make(3, 4), make(5, dtype=torch.bfloat16)]
    assert gt._supported_cuda(grads, 2.0, in_place=True) == torch.float32
    assert gt._supported_cuda([grads[0], grads[0]], 2.0, in_place=True) is None  # the same memory twice
    assert gt._supported_cuda(grads + [torch.ones(3)], 2.0) is None              # mixed devices
    assert gt._supported_cuda([make(0)], math.inf) is None                       # torch raises there
    ps = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype))
        p.grad = g
        ps.append(p)
    for call in (lambda: gt.clip_grad_norm_(ps, 1.0), lambda: gt.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True),
                 lambda: gt.get_total_norm(grads), lambda: gt.clip_grad_value_(ps, 0.1)):
        with pytest.raises(RuntimeError, match=NO_CUDA):
            call()


# --------------------------------------------------------------------------- 2. on a GPU

gpu = pytest.mark.skipif(not AVAILABLE, reason=REASON)


def _torch_cuda():
    if not AVAILABLE or not _importable("torch"):
        return None
    import torch
    return torch if torch.cuda.is_available() else None


TORCH = _torch_cuda()
needs_torch = pytest.mark.skipif(TORCH is None, reason=REASON if not AVAILABLE else "torch with CUDA not importable")
CUPY = None
if AVAILABLE and _importable("cupy"):
    import cupy as CUPY  # noqa: N812
needs_cupy = pytest.mark.skipif(CUPY is None, reason=REASON if not AVAILABLE else "cupy not importable")

NORM_DTYPES = ["float16", "bfloat16", "float32", "float64"]
ORDS = [1, 2, math.inf, 3.0]


def to_torch(a, dtype=None, device="cuda"):
    """A NumPy array on the GPU as a torch tensor (bfloat16 through float32, exact when the
    values are bfloat16 already)."""
    t = TORCH.from_numpy(np.array(a, order="C", copy=True))
    if dtype == "bfloat16":
        t = t.to(TORCH.float32).to(TORCH.bfloat16)
    elif dtype is not None:
        t = t.to(getattr(TORCH, dtype))
    return t.to(device)


def host(t):
    """A device array's values on the host, float64 (exact for every dtype used here)."""
    if TORCH is not None and isinstance(t, TORCH.Tensor):
        return t.detach().to(TORCH.float64).cpu().numpy()
    return np.asarray(CUPY.asnumpy(t), dtype=np.float64)


def device_list(seed, n, dtype, scale_mode="unit", **kw):
    """(torch tensors of dtype, their exact float64 values on the host)."""
    base = build_array_list(seed, n, dtypes=(np.float64,), scale_mode=scale_mode, **kw)
    ts = [to_torch(a, dtype) for a in base]
    return ts, [host(t) for t in ts]


def _rtol(dtype):
    return {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-23, "float64": 2**-52}[dtype]


def _atol(dtype):
    """Rounding to float16 near zero lands among its subnormals (spacing 2**-24)."""
    return 2.0**-24 if dtype == "float16" else None


@pytest.fixture
def no_tf32():
    """torch's float32 GEMMs and cuDNN RNNs in full float32 (TF32 is on by default for
    cuDNN), so that they can serve as a 1e-4-ish reference."""
    if TORCH is None:
        yield
        return
    saved = TORCH.backends.cuda.matmul.allow_tf32, TORCH.backends.cudnn.allow_tf32
    TORCH.backends.cuda.matmul.allow_tf32 = TORCH.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        TORCH.backends.cuda.matmul.allow_tf32, TORCH.backends.cudnn.allow_tf32 = saved


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("ord", ORDS)
def test_norms_match_the_reference(dtype, ord):
    ts, ref = device_list(1, 300, dtype, big_size=100_003, n_special=0)
    total = gradcore.global_norm(ts, ord)
    assert isinstance(total, TORCH.Tensor) and total.dim() == 0 and total.dtype == TORCH.float64
    assert total.device == ts[0].device
    assert_close(host(total), ref_norm(ref, ord), 1e-10)
    ns = gradcore.norms(ts, ord)
    assert ns.shape == (len(ts),) and ns.dtype == TORCH.float64 and ns.is_cuda
    assert_close(host(ns), ref_norms(ref, ord), 1e-10)


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
def test_grad_stats_matches_the_reference(dtype):
    ts, ref = device_list(2, 200, dtype, n_special=0)
    base = build_array_list(3, 20, dtypes=(np.float64,), n_special=8)
    ts2 = [to_torch(a, dtype) for a in base]
    for arrays, values in ((ts, ref), (ts2, [host(t) for t in ts2])):
        l2, amax, bad = gradcore.grad_stats(arrays)
        assert l2.is_cuda and bad.dtype == TORCH.int64
        r_l2, r_max, r_bad = ref_grad_stats(values)
        assert_close(host(l2), r_l2, 1e-10)
        assert_close(host(amax), r_max, 0.0)
        assert np.array_equal(bad.cpu().numpy(), r_bad)


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
def test_thousands_of_small_tensors_and_a_few_huge_ones(dtype):
    base = build_array_list(4, 5000, dtypes=(np.float64,), max_ndim=2, max_dim=40)
    rng = np.random.default_rng(5)
    base += [rng.standard_normal(n) for n in (2**24 + 3, 3 * 2**20 + 1)]
    ts = [to_torch(a, dtype) for a in base]
    ref = [host(t) for t in ts]
    assert_close(host(gradcore.global_norm(ts)), ref_norm(ref), 1e-10)
    max_norm = 0.5 * ref_norm(ref)
    res = gradcore.clip_by_global_norm_(ts, max_norm)
    want, total = ref_clip_by_global_norm(ref, max_norm)
    assert_close(host(res.total_norm), total, 1e-10)
    assert res.clipped
    for t, w in zip(ts[::97] + ts[-2:], want[::97] + want[-2:]):
        assert_close(host(t), w, 2 * _rtol(dtype), atol=_atol(dtype))


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("policy", ["propagate", "error", "skip", "zero"])
@pytest.mark.parametrize("specials", [0, 3])
def test_clip_by_global_norm_every_policy(dtype, policy, specials):
    ts, ref = device_list(6, 40, dtype, n_special=specials)
    max_norm = 0.3 * ref_norm([np.where(np.isfinite(r), r, 0) for r in ref]) + 1e-3
    try:
        want, total = ref_clip_by_global_norm(ref, max_norm, nonfinite=policy)
    except RefNonFiniteError:
        with pytest.raises(gradcore.NonFiniteGradientError):
            gradcore.clip_by_global_norm_(ts, max_norm, nonfinite=policy)
        assert all(np.array_equal(host(t), r, equal_nan=True) for t, r in zip(ts, ref))  # untouched
        return
    res = gradcore.clip_by_global_norm_(ts, max_norm, nonfinite=policy)
    assert isinstance(res, gradcore.cuda.DeviceClipResult)
    assert res.total_norm.is_cuda and res.factor.is_cuda
    assert_close(host(res.total_norm), total, 1e-10)
    assert res.nonfinite == (not math.isfinite(total))
    for t, w in zip(ts, want):
        assert_close(host(t), w, 2 * _rtol(dtype), atol=_atol(dtype))


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
def test_clip_by_value_and_by_norm(dtype):
    ts, ref = device_list(7, 50, dtype, n_special=3)
    assert gradcore.clip_by_value_(ts, 0.5) is ts
    for t, w in zip(ts, ref_clip_by_value(ref, 0.5)):
        assert_close(host(t), w, _rtol(dtype))
    ts, ref = device_list(8, 50, dtype)
    gradcore.clip_by_value_(ts, min=-0.25)
    for t, w in zip(ts, ref_clip_by_value(ref, min=-0.25)):
        assert_close(host(t), w, _rtol(dtype))
    ts, ref = device_list(9, 50, dtype, n_special=2)
    ns = gradcore.clip_by_norm_(ts, 0.7, 2)
    want, rn = ref_clip_by_norm(ref, 0.7, 2)
    assert ns.is_cuda
    assert_close(host(ns), rn, 1e-10)
    for t, w in zip(ts, want):
        assert_close(host(t), w, 2 * _rtol(dtype), atol=_atol(dtype))


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", NORM_DTYPES)
@pytest.mark.parametrize("unit_axis", [0, 1, -1])
def test_adaptive_clip_matches_the_reference(dtype, unit_axis):
    rng = np.random.default_rng(10)
    shapes = [(16, 8), (5, 3, 4), (7,), (), (0, 3), (64, 32)]
    gs = [to_torch(rng.standard_normal(s), dtype) for s in shapes]
    ps = [to_torch(rng.standard_normal(s) * 0.1, dtype) for s in shapes]
    g_ref, p_ref = [host(g) for g in gs], [host(p) for p in ps]
    assert gradcore.adaptive_clip_(gs, ps, 0.05, unit_axis=unit_axis) is gs
    for g, w in zip(gs, ref_adaptive_clip(g_ref, p_ref, 0.05, unit_axis=unit_axis)):
        assert_close(host(g), w, 2 * _rtol(dtype), atol=_atol(dtype))


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("value", [1e300, 1e-300, 1e-310])
def test_extreme_float64_values(value):
    ts = [to_torch(np.full(1000, value)), to_torch(np.full((3, 7), -value))]
    ref = [host(t) for t in ts]
    total = host(gradcore.global_norm(ts))
    assert math.isfinite(total) and total > 0
    assert_close(total, ref_norm(ref), 1e-12)
    assert_close(host(gradcore.norms(ts, 3.0)), ref_norms(ref, 3.0), 1e-12)
    res = gradcore.clip_by_global_norm_(ts, 1.0)
    want, t_ref = ref_clip_by_global_norm(ref, 1.0)
    assert_close(host(res.total_norm), t_ref, 1e-12)
    for t, w in zip(ts, want):
        assert_close(host(t), w, 1e-14)


@gpu
@needs_torch
@pytest.mark.cuda
def test_float32_norm_does_not_overflow():
    ts = [to_torch(np.full(10, 1e20, np.float32))]
    assert_close(host(gradcore.global_norm(ts)), math.sqrt(10) * float(np.float32(1e20)), 1e-12)


@gpu
@needs_torch
@pytest.mark.cuda
def test_the_callers_stream_is_used():
    """On a non-default stream, after a long sleep there, x is doubled and then measured:
    a kernel on another stream would see x before the doubling."""
    if not hasattr(TORCH.cuda, "_sleep"):
        pytest.skip("torch.cuda._sleep not available")
    x = TORCH.ones(1 << 20, device="cuda")
    TORCH.cuda.synchronize()
    s = TORCH.cuda.Stream()
    with TORCH.cuda.stream(s):
        TORCH.cuda._sleep(200_000_000)
        x.mul_(2.0)
        total = gradcore.global_norm([x])
        res = gradcore.clip_by_global_norm_([x], 1.0)
    assert not s.query()  # still sleeping: nothing waited on the host
    s.synchronize()
    assert host(total) == pytest.approx(2.0 * 1024)
    assert host(res.total_norm) == pytest.approx(2.0 * 1024)
    assert float(x.norm().cpu()) == pytest.approx(1.0, rel=1e-5)


@gpu
@needs_torch
@pytest.mark.cuda
def test_clip_by_global_norm_makes_no_synchronising_torch_call():
    import gradcore.torch as gt
    params = [TORCH.nn.Parameter(TORCH.randn(64, 64, device="cuda")) for _ in range(10)]
    for p in params:
        p.grad = TORCH.randn_like(p)
    grads = [p.grad for p in params]
    TORCH.cuda.synchronize()
    TORCH.cuda.set_sync_debug_mode("error")
    try:
        res = gradcore.clip_by_global_norm_(grads, 1.0)
        gradcore.clip_by_global_norm_(grads, 1.0, total_norm=res.total_norm)
        gradcore.global_norm(grads)
        gradcore.clip_by_value_(grads, 0.1)
        total = gt.clip_grad_norm_(params, 1.0)
    finally:
        TORCH.cuda.set_sync_debug_mode("default")
    assert total.is_cuda and total.dtype == TORCH.float32


@gpu
@needs_torch
@pytest.mark.cuda
def test_results_follow_the_callers_library_and_device():
    ts = [TORCH.randn(10, device="cuda") for _ in range(3)]
    for r in (gradcore.global_norm(ts), gradcore.norms(ts), *gradcore.grad_stats(ts),
              gradcore.clip_by_norm_(ts, 1.0), gradcore.clip_by_global_norm_(ts, 1.0).total_norm):
        assert isinstance(r, TORCH.Tensor) and r.device == ts[0].device


@gpu
@needs_torch
@pytest.mark.cuda
def test_parameters_and_non_contiguous_inputs():
    p = TORCH.nn.Parameter(TORCH.randn(8, 6, device="cuda"))
    assert host(gradcore.global_norm([p])) == pytest.approx(float(p.detach().double().norm()))
    t = TORCH.randn(8, 6, device="cuda").T  # read-only use: copied on the device
    assert host(gradcore.global_norm([t])) == pytest.approx(float(t.double().norm()))
    with pytest.raises(ValueError, match=r"arrays\[0\] must be C-contiguous"):
        gradcore.clip_by_value_([t], 0.1)
    with pytest.raises(TypeError, match=r"arrays\[0\]: dtype int64 is not supported"):
        gradcore.global_norm([TORCH.ones(3, dtype=TORCH.int64, device="cuda")])
    with pytest.raises(ValueError, match=r"arrays\[1\] is a CPU array but arrays\[0\] is on cuda:0"):
        gradcore.global_norm([TORCH.ones(3, device="cuda"), TORCH.ones(3)])


@gpu
@needs_torch
@pytest.mark.cuda
def test_total_norm_given_on_the_device_or_host():
    ts, ref = device_list(11, 20, "float32")
    total = gradcore.global_norm(ts)
    res = gradcore.clip_by_global_norm_(ts, 0.1, total_norm=total)
    want, _ = ref_clip_by_global_norm(ref, 0.1, total_norm=float(total.cpu()))
    assert float(res) == pytest.approx(float(total.cpu()))
    for t, w in zip(ts, want):
        assert_close(host(t), w, 2 * _rtol("float32"))
    res = gradcore.clip_by_global_norm_(ts, 1.0, total_norm=12.5)
    assert float(res) == 12.5
    with pytest.raises(ValueError, match="total_norm must be >= 0"):
        gradcore.clip_by_global_norm_(ts, 1.0, total_norm=-1.0)


@gpu
@needs_torch
@pytest.mark.cuda
def test_mixed_devices_on_a_machine_with_two_gpus():
    if TORCH.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    a, b = TORCH.ones(3, device="cuda:0"), TORCH.ones(3, device="cuda:1")
    with pytest.raises(ValueError, match=r"arrays\[1\] is on cuda:1 but arrays\[0\] is on cuda:0"):
        gradcore.global_norm([a, b])
    r = gradcore.global_norm([b, b])
    assert r.device == b.device and host(r) == pytest.approx(math.sqrt(6))


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu", "tanh", "sigmoid"])
def test_dense_against_the_cpu_path_and_torch(dtype, activation, no_tf32):
    rng = np.random.default_rng(12)
    batch, n_in, n_out = 33, 70, 45
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) / math.sqrt(n_in)).astype(dtype)
    b = (0.1 * rng.standard_normal(n_out)).astype(dtype)
    gy = rng.standard_normal((batch, n_out)).astype(dtype)
    tol = 1e-4 if dtype == "float32" else 1e-10
    y_cpu = gradcore.dense_forward(x, w, b, activation)
    xd, wd, bd, gyd = (to_torch(a) for a in (x, w, b, gy))
    y = gradcore.dense_forward(xd, wd, bd, activation)
    assert isinstance(y, TORCH.Tensor) and y.is_cuda and y.dtype == xd.dtype and y.shape == (batch, n_out)
    assert_close(host(y), y_cpu, tol, atol=tol * np.abs(y_cpu).max())
    grads = gradcore.dense_backward(gyd, xd, wd, y, activation)
    want = gradcore.dense_backward(gy, x, w, y.cpu().numpy(), activation)
    for g, c in zip(grads, want):
        assert g.is_cuda
        assert_close(host(g), c, tol, atol=tol * np.abs(c).max())
    # torch autograd (nn.Linear's computation)
    xt, wt, bt = (to_torch(a).requires_grad_() for a in (x, w, b))
    acts = {"identity": lambda z: z, "relu": TORCH.relu, "tanh": TORCH.tanh, "sigmoid": TORCH.sigmoid,
            "leaky_relu": lambda z: TORCH.nn.functional.leaky_relu(z, 0.01)}
    yt = acts[activation](TORCH.nn.functional.linear(xt, wt, bt))
    tg = TORCH.autograd.grad(yt, (xt, wt, bt), gyd)
    for g, t in zip(grads, tg):
        ref = host(t)
        assert_close(host(g), ref, tol * 10, atol=tol * 10 * np.abs(ref).max())


@gpu
@needs_torch
@pytest.mark.cuda
def test_dense_output_buffers_and_flags():
    rng = np.random.default_rng(13)
    x, w = to_torch(rng.standard_normal((8, 5))), to_torch(rng.standard_normal((3, 5)))
    out = TORCH.empty(8, 3, dtype=TORCH.float64, device="cuda")
    assert gradcore.dense_forward(x, w, out=out) is out
    gy = to_torch(rng.standard_normal((8, 3)))
    gx, gw, gb = gradcore.dense_backward(gy, x, w, out, need_grad_x=False, has_bias=False)
    assert gx is None and gb is None
    gw2 = gw.clone()
    gradcore.dense_backward(gy, x, w, out, has_bias=False, need_grad_x=False, accumulate=True, grad_weight=gw2)
    assert_close(host(gw2), 2 * host(gw), 1e-12)
    with pytest.raises(ValueError, match="accumulate=True needs grad_x="):
        gradcore.dense_backward(gy, x, w, out, accumulate=True)
    with pytest.raises(ValueError, match="out overlaps x"):
        gradcore.dense_forward(x, w, out=x.view(-1)[:24].view(8, 3))


def _torch_module(cell, I, H, dtype):
    torch = TORCH
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell)
    if mod is None:
        m = torch.nn.RNN(I, H, nonlinearity=cell[4:])
    else:
        m = mod(I, H)
    return m.to(getattr(torch, dtype)).cuda()


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_against_the_cpu_path_and_torch(cell, dtype, no_tf32):
    torch = TORCH
    torch.manual_seed(14)
    T, B, I, H = 9, 5, 7, 6
    m = _torch_module(cell, I, H, dtype)
    P = {k: v.detach() for k, v in m.named_parameters()}
    x = torch.randn(T, B, I, dtype=m.weight_hh_l0.dtype, device="cuda")
    h0 = 0.5 * torch.randn(B, H, dtype=x.dtype, device="cuda")
    c0 = 0.5 * torch.randn(B, H, dtype=x.dtype, device="cuda") if cell == "lstm" else None
    gy, ghn = torch.randn(T, B, H, dtype=x.dtype, device="cuda"), torch.randn(B, H, dtype=x.dtype, device="cuda")
    tol = 1e-4 if dtype == "float32" else 1e-10

    f = gradcore.rnn_forward(x, h0, P["weight_ih_l0"], P["weight_hh_l0"], P["bias_ih_l0"], P["bias_hh_l0"],
                             cell=cell, c0=c0)
    assert f.y.is_cuda and f.y.shape == (T, B, H) and f.h_n.shape == (B, H)
    g = gradcore.rnn_backward(f.cache, gy, ghn)
    assert g.hidden_grad_norms.is_cuda and g.hidden_grad_norms.dtype == torch.float64

    # the CPU path on the same values
    n = lambda t: None if t is None else t.cpu().numpy()  # noqa: E731
    fc = gradcore.rnn_forward(n(x), n(h0), n(P["weight_ih_l0"]), n(P["weight_hh_l0"]), n(P["bias_ih_l0"]),
                              n(P["bias_hh_l0"]), cell=cell, c0=n(c0))
    gcpu = gradcore.rnn_backward(fc.cache, n(gy), n(ghn))
    for a, b in ((f.y, fc.y), (f.h_n, fc.h_n)) + (((f.c_n, fc.c_n),) if cell == "lstm" else ()):
        assert_close(host(a), b, tol, atol=tol * np.abs(b).max())
    for name in gcpu._fields:
        a, b = getattr(g, name), getattr(gcpu, name)
        if b is None:
            assert a is None, name
            continue
        assert_close(host(a), b, tol, atol=tol * np.abs(b).max(), err_msg=name)

    # torch (cuDNN or its native kernels) with the same weights
    xt = x.clone().requires_grad_()
    h0t = h0.clone().requires_grad_()
    if cell == "lstm":
        yt, (hnt, cnt) = m(xt, (h0t[None], c0[None]))
    else:
        yt, hnt = m(xt, h0t[None])
    tg = torch.autograd.grad((yt, hnt), [xt, h0t, m.weight_ih_l0, m.weight_hh_l0], (gy, ghn[None]))
    for a, b in zip((g.grad_x, g.grad_h0, g.grad_weight_ih, g.grad_weight_hh), tg):
        ref = host(b)
        assert_close(host(a), ref, tol * 10, atol=tol * 10 * np.abs(ref).max())


@gpu
@needs_torch
@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_rnn_hidden_grad_norms_and_clip_hidden(cell):
    torch = TORCH
    torch.manual_seed(15)
    T, B, I, H = 20, 4, 5, 8
    m = _torch_module(cell, I, H, "float64")
    P = {k: v.detach() for k, v in m.named_parameters()}
    x = torch.randn(T, B, I, dtype=torch.float64, device="cuda")
    gy = 3.0 * torch.randn(T, B, H, dtype=torch.float64, device="cuda")
    n = lambda t: t.cpu().numpy()  # noqa: E731
    f = gradcore.rnn_forward(x, None, P["weight_ih_l0"], P["weight_hh_l0"], cell=cell)
    fc = gradcore.rnn_forward(n(x), None, n(P["weight_ih_l0"]), n(P["weight_hh_l0"]), cell=cell)
    for clip in (None, 0.5):
        g = gradcore.rnn_backward(f.cache, gy, clip_hidden=clip)
        gc_ = gradcore.rnn_backward(fc.cache, n(gy), clip_hidden=clip)
        assert_close(host(g.hidden_grad_norms), gc_.hidden_grad_norms, 1e-10)
        for name in ("grad_x", "grad_weight_ih", "grad_weight_hh", "grad_h0"):
            b = getattr(gc_, name)
            assert_close(host(getattr(g, name)), b, 1e-10, atol=1e-10 * np.abs(b).max(), err_msg=name)


@gpu
@needs_torch
@pytest.mark.cuda
def test_torch_dropins_on_cuda_parameters():
    import gradcore.torch as gt
    torch = TORCH
    torch.manual_seed(16)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        params = [torch.nn.Parameter(torch.randn(s, dtype=dtype, device="cuda")) for s in ((30, 20), (20,), (5, 5, 5))]
        for p in params:
            p.grad = torch.randn_like(p)
        twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p, q in zip(params, twins):
            q.grad = p.grad.clone()
        ours = gt.clip_grad_norm_(params, 0.5)
        theirs = torch.nn.utils.clip_grad_norm_(twins, 0.5)
        assert ours.is_cuda and ours.dtype == theirs.dtype and ours.shape == ()
        rt = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
        assert float(ours) == pytest.approx(float(theirs), rel=rt)
        for p, q in zip(params, twins):
            assert torch.allclose(p.grad.double(), q.grad.double(), rtol=rt * 4, atol=rt)
        total = gt.get_total_norm([p.grad for p in params])
        assert total.is_cuda and total.dtype == dtype
        for p, q in zip(params, twins):
            q.grad = p.grad.clone()
        assert gt.clip_grad_value_(params, 0.01) is None
        torch.nn.utils.clip_grad_value_(twins, 0.01)
        for p, q in zip(params, twins):
            assert torch.equal(p.grad, q.grad)
    bad = torch.nn.Parameter(torch.ones(3, device="cuda"))
    bad.grad = torch.full((3,), math.inf, device="cuda")
    with pytest.raises(RuntimeError, match="non-finite"):
        gt.clip_grad_norm_([bad], 1.0, error_if_nonfinite=True)
    assert torch.isinf(bad.grad).all()


@gpu
@needs_cupy
@pytest.mark.cuda
def test_cupy_arrays():
    rng = np.random.default_rng(17)
    base = [rng.standard_normal(s) for s in ((100,), (7, 9), ())]
    for dtype in ("float16", "float32", "float64"):
        xs = [CUPY.asarray(a.astype(dtype)) for a in base]
        ref = [CUPY.asnumpy(x).astype(np.float64) for x in xs]
        total = gradcore.global_norm(xs)
        assert isinstance(total, CUPY.ndarray) and total.shape == () and total.dtype == np.float64
        assert_close(float(total), ref_norm(ref), 1e-10)
        res = gradcore.clip_by_global_norm_(xs, 1.0)
        want, t = ref_clip_by_global_norm(ref, 1.0)
        assert isinstance(res.total_norm, CUPY.ndarray)
        for x, w in zip(xs, want):
            assert_close(CUPY.asnumpy(x).astype(np.float64), w, 2 * _rtol(dtype))
    x = CUPY.asarray(rng.standard_normal((6, 4)))
    w = CUPY.asarray(rng.standard_normal((3, 4)))
    y = gradcore.dense_forward(x, w, None, "tanh")
    assert isinstance(y, CUPY.ndarray)
    assert_close(CUPY.asnumpy(y), gradcore.dense_forward(CUPY.asnumpy(x), CUPY.asnumpy(w), None, "tanh"), 1e-10)
    s = CUPY.cuda.Stream(non_blocking=True)
    with s:
        z = CUPY.ones(1000)
        r = gradcore.global_norm([z])
    s.synchronize()
    assert float(r) == pytest.approx(math.sqrt(1000))


@gpu
@pytest.mark.cuda
def test_device_facts():
    assert gradcore.cuda.device_count() >= 1
    assert isinstance(gradcore.cuda.device_name(0), str) and gradcore.cuda.device_name(0)
    gradcore.cuda.self_test()
    gradcore.cuda.synchronize(0)
    assert isinstance(gradcore.cuda.cublas_status(), str)
