"""Hypothesis fuzzing of every public entry point with hostile arguments.

Entry points: global_norm, norms, grad_stats; clip_by_value_, clip_by_norm_,
clip_by_global_norm_, adaptive_clip_ and their functional forms (clip_by_value, ...);
matmul, dense_forward, dense_backward (with output buffers); rnn_forward + rnn_backward;
optim.SGD/Adam/AdamW (construction and step); gradcore.nn RNN/LSTM/GRU (construction,
forward, backward); set_num_threads.

Properties, for every call (docs/api.md, "Common rules"):

1. The process never crashes or hangs.
2. Every rejection is a ``TypeError`` or ``ValueError`` (``NonFiniteGradientError`` only
   where ``nonfinite="error"`` asks for it) whose message names the offending argument
   (``arrays[3]``, ``max_norm``, ``out``...), never pybind11's generic "incompatible
   function arguments" list; a shape error names the shapes involved.
3. A call that raises leaves every array it was given exactly as it was, byte for byte
   (NaN payloads included): no half-clipped list, no half-written output buffer.
4. A call that succeeds writes nothing outside its arrays (each array is a view into a
   larger buffer whose margins are checked) and gives a meaningful answer: the float64
   NumPy references of tests/reference*.py where the inputs allow a comparison, the same
   bits whatever the input's memory layout, NaN/inf where the contract says.

Inputs: arrays of float16/32/64, ints, bool, complex, object, strings, big-endian and
long double dtypes; C-ordered, transposed, strided, reversed (negative strides),
broadcast (zero strides), unaligned, structured-field (strides that are not a multiple of
the item size), masked and subclassed layouts; read-only flags; zero sizes; normal,
zero, subnormal, tiny, huge, NaN/inf and mixed values; and in place of arrays or
scalars: None, strings, bytes, scalars, dicts, lists of lists (ragged too), generators,
``array.array``, ``bytearray`` and ``memoryview`` objects, huge ints, NaN, bools.

Why a child process: gradcore is C++ working on raw pointers, strides and sizes taken
from these hostile inputs; a mistake there is a segfault or a hang, which in-process
would kill (or stall) the whole pytest run without saying which input did it. Here
Hypothesis draws a *recipe* (plain data) in the pytest process and a long-lived child
builds the objects, makes the call and checks the properties. When the child dies, the
example fails with the signal and the child's faulthandler traceback, Hypothesis shrinks
the recipe like any other failure (restarting the child as needed), and the other tests
go on. A case that takes longer than GRADCORE_FUZZ_TIMEOUT seconds (default 60) fails
as a hang. GRADCORE_FUZZ_INPROCESS=1 runs the cases in the pytest process instead
(for a debugger).

Where the contract leaves a choice to the library, either answer passes, but a
rejection must still be a proper one: a bare non-ndarray object as the whole list (one
array, or a sequence of them), a dict for the in-place functions, unaligned memory for
in-place use, NumPy integers as a thread count, huge ints where reals are expected (inf,
or a rejection naming the argument). A float32/float64 array in non-native byte order
given to a function that only reads it may be refused or converted, but if the call
succeeds its result is checked against the reference like any other.

Each case also picks the ISA target and the kernel thread count (1 to 3) it runs with.
test_reproducer holds one minimal case for each problem the fuzzing found.
Example counts scale with the Hypothesis profile: "ci" (default) keeps the file within
about a minute on 2 cores, HYPOTHESIS_PROFILE=dev runs 10x more.
"""

from __future__ import annotations

import array
import math
import numbers
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import gradcore
import gradcore.nn as gnn
from gradcore import optim
from reference import (
    RefNonFiniteError,
    _clip_factor,
    assert_close,
    ref_adaptive_clip,
    ref_clip_by_global_norm,
    ref_clip_by_norm,
    ref_clip_by_value,
    ref_grad_stats,
    ref_norm,
    ref_norms,
)
from reference_dense import (
    assert_gemm_close,
    matmul_scale,
    ref_dense_backward,
    ref_dense_backward_scales,
    ref_dense_backward_slack,
    ref_dense_forward,
    ref_dense_forward_scale,
    ref_matmul,
)
from reference_rnn import ref_rnn_backward, ref_rnn_forward

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
READ_DTYPES = (F16, F32, F64)
WRITE_DTYPES = (F32, F64)
CLIP_DTYPES = (F16, F32, F64)  # the clipping functions also write float16 in place
ISAS = list(gradcore.info()["isa_available"])
ACCEPTED = (TypeError, ValueError)
PYBIND_DISPATCH = "incompatible function arguments"
POLICIES = ("propagate", "error", "skip", "zero")
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}

#: examples per test: the profile's max_examples (ci 60, dev 600) times a factor
_PROFILE_EXAMPLES = settings.default.max_examples


def examples(factor=1.0):
    """Settings for one fuzz test: the profile's example count times `factor`, and no
    "explain" phase (it re-runs a failing example many times only to annotate it; with
    a child process per case that costs more than the shrinking itself)."""
    return settings(max_examples=max(5, int(_PROFILE_EXAMPLES * factor)),
                    phases=[ph for ph in Phase if ph != Phase.explain])


class CaseFailure(AssertionError):
    """A property of the contract does not hold for this case."""


def fail(msg):
    raise CaseFailure(msg)


# =========================================================================== recipes
# A recipe is plain, picklable data: tuples, strings, numbers. Arrays are built from it
# in the process that makes the call, so that flags, strides and alignment are exact.

FLOAT_FILLS = ("normal", "normal", "small", "zero", "denormal", "tiny", "huge", "special",
               "mixed")
LAYOUTS = ("c", "c", "T", "step", "neg", "bcast", "unaligned", "field", "masked", "sub")
OTHER_DTYPES = ("int32", "int64", "uint8", "bool", "complex64", "complex128", "object", "<U3",
                "datetime64[s]", ">f4", ">f8", "longdouble")


class SubArray(np.ndarray):
    """A trivial ndarray subclass (must behave as an ndarray)."""


class Built:
    """An object built from a recipe, with what is needed to check it afterwards.

    ``obj`` is what the call gets; ``buf`` the 1-D typed buffer it lives in (or None
    for objects that are not views into a buffer) and ``foot`` the indices of ``buf``
    that ``obj`` covers (the rest is a margin nobody may write)."""

    def __init__(self, obj, buf=None, foot=None, label=""):
        self.obj, self.buf, self.foot, self.label = obj, buf, foot, label

    def snapshot(self):
        if self.buf is not None:
            return self.buf.tobytes()
        if isinstance(self.obj, (array.array, bytearray)):
            return bytes(self.obj)
        return None

    def margins(self):
        if self.buf is None:
            return None
        mask = np.ones(self.buf.shape[0], dtype=bool)
        mask[np.asarray(self.foot, dtype=np.int64).ravel()] = False
        return self.buf[mask].tobytes()


def _values(dt, n, fill, rng):
    """n values of dtype dt for the fill kind."""
    if dt.kind == "f":
        fi = np.finfo(dt)
        kinds = {
            "normal": lambda k: rng.standard_normal(k),
            "small": lambda k: 0.3 * rng.standard_normal(k),
            "zero": lambda k: np.where(rng.random(k) < 0.5, 0.0, -0.0),
            "denormal": lambda k: float(fi.smallest_subnormal) * rng.integers(-20, 21, k),
            "tiny": lambda k: float(fi.tiny) * rng.uniform(-4.0, 4.0, k),
            "huge": lambda k: float(fi.max) * rng.uniform(-1.0, 1.0, k),
        }

        def special(k):
            v = rng.standard_normal(k)
            if k:
                idx = rng.integers(0, k, size=int(rng.integers(1, 4)))
                v[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf]), size=idx.size)
            return v

        kinds["special"] = special
        with np.errstate(all="ignore"):
            if fill == "mixed":
                names = list(kinds)
                parts = np.stack([kinds[k](n).astype(dt) for k in names]) if n else None
                if not n:
                    return np.zeros(0, dt)
                pick = rng.integers(0, len(names), n)
                return parts[pick, np.arange(n)]
            return kinds[fill](n).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 100, n).astype(dt)
    if dt.kind == "b":
        return rng.random(n) < 0.5
    if dt.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    if dt.kind == "O":
        out = np.empty(n, dtype=object)
        out[:] = [float(v) for v in rng.standard_normal(n)]
        return out
    if dt.kind == "U":
        return np.array(["abc"] * n, dtype=dt)
    if dt.kind == "M":
        return np.arange(n).astype(dt)
    raise AssertionError(dt)


def _derive(buf, layout, shape, pre, n):
    """The view of `buf` (1-D) that a layout describes."""
    if layout == "c":
        return buf[pre:pre + n].reshape(shape)
    if layout == "T":
        return buf[pre:pre + n].reshape(shape[::-1]).transpose()
    if layout == "step":
        return buf[pre:pre + 2 * n:2].reshape(shape)
    if layout == "neg":
        return buf[pre:pre + n][::-1].reshape(shape)
    if layout == "bcast":
        return np.broadcast_to(buf[pre:pre + 1].reshape(()), shape)
    raise AssertionError(layout)


def build_array(rec, label=""):
    """("arr", dtype, shape, layout, readonly, fill, seed, pre, post) -> Built."""
    _, dtype, shape, layout, readonly, fill, seed, pre, post = rec
    dt = np.dtype(dtype)
    shape = tuple(shape)
    n = int(np.prod(shape, dtype=np.int64))
    numeric = dt.kind in "fiucb"
    if layout in ("unaligned", "field") and not numeric:
        layout = "c"
    need = pre + (2 * n if layout == "step" else max(n, 1)) + post
    rng = np.random.default_rng(seed)
    vals = _values(dt, need, fill, rng)
    if layout == "unaligned":
        raw = np.zeros(need * dt.itemsize + 1, dtype=np.uint8)
        buf = raw[1:].view(dt)
    elif layout == "field":
        buf = np.zeros(need, dtype=[("v", dt), ("pad", "u1")])["v"]
    else:
        buf = np.empty(need, dtype=dt)
    buf[...] = vals
    base = layout if layout in ("c", "T", "step", "neg", "bcast") else "c"
    view = _derive(buf, base, shape, pre, n)
    foot = _derive(np.arange(need), base, shape, pre, n)
    assert view.shape == shape and (n == 0 or np.shares_memory(view, buf))
    if layout == "masked":
        view = np.ma.masked_array(view, mask=rng.random(shape) < 0.3)
    elif layout == "sub":
        view = view.view(SubArray)
    if readonly and view.flags.writeable:
        view.setflags(write=False)
    return Built(view, buf, foot, label)


def build(rec, label=""):
    """Any element recipe -> Built."""
    kind = rec[0]
    if kind == "arr":
        return build_array(rec, label)
    if kind == "py":                      # a Python value as it is
        return Built(rec[1], label=label)
    if kind == "tolist":                  # nested lists of Python scalars
        return Built(build_array(rec[1]).obj.tolist(), label=label)
    if kind == "arraymod":                # array.array (buffer protocol, writeable)
        _, code, n, seed = rec
        rng = np.random.default_rng(seed)
        vals = rng.standard_normal(n) if code in "fd" else rng.integers(0, 100, n)
        return Built(array.array(code, [v.item() for v in vals]), label=label)
    if kind == "bytearray":
        return Built(bytearray(rec[1]), label=label)
    if kind == "memoryview":              # a memoryview of an array (its buffer tracked)
        inner = build_array(rec[1])
        return Built(memoryview(inner.obj), inner.buf, inner.foot, label)
    raise AssertionError(rec)


# ----------------------------------------------------------------- oracle helpers

def is_real(v):
    return (not isinstance(v, (bool, np.bool_))
            and isinstance(v, (numbers.Real, np.integer, np.floating)))


def float_overflows(v):
    """A real that float() cannot represent (a huge int)."""
    if not is_real(v):
        return False
    try:
        float(v)
    except OverflowError:
        return True
    return False


def read_view(obj):
    """What "any array-like" means: NumPy's conversion (None if it fails)."""
    try:
        return np.asarray(obj)
    except Exception:  # noqa: BLE001 - ragged lists and the like
        return None


def read_ok(obj, dtypes=READ_DTYPES):
    a = read_view(obj)
    return a is not None and a.dtype in dtypes and a.dtype.isnative


def byteswapped(obj, dtypes=READ_DTYPES):
    """A supported float dtype in non-native byte order: a read-only use may refuse it
    or convert it, never misread it."""
    a = read_view(obj)
    return (a is not None and a.dtype.kind == "f" and not a.dtype.isnative
            and a.dtype.newbyteorder("=") in dtypes)


def native(a):
    """`a` (an ndarray) in native byte order."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def write_view(obj):
    """The memory an in-place function may modify: an ndarray, or an object exposing
    its memory through the buffer protocol; None for anything a conversion would copy."""
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, (array.array, bytearray, memoryview)):
        return np.asarray(memoryview(obj))
    return None


def write_ok(obj, dtypes=WRITE_DTYPES):
    a = write_view(obj)
    return (a is not None and a.dtype in dtypes and a.dtype.isnative
            and a.flags.c_contiguous and a.flags.writeable)


def unaligned(obj):
    """Writeable, C-contiguous, supported, but not aligned to its item size: the contract
    neither requires nor forbids in-place use of such memory (the library may refuse it
    with a proper error)."""
    a = write_view(obj)
    return a is not None and write_ok(obj) and not a.flags.aligned


def f64_copy(a):
    return np.array(np.asarray(a), dtype=np.float64, copy=True)


class Expect:
    """What the contract says about one call: "accept", "reject" (and the names the
    message may name), or "either" (the contract leaves it to the library; a rejection
    must still be a proper one)."""

    def __init__(self):
        self.reasons = []      # (names, required substrings)
        self.maybe = []
        self.values = True     # a success can be checked against the reference

    def bad(self, *names, shapes=()):
        self.reasons.append((names, tuple(str(tuple(s)) for s in shapes)))

    def either(self, *names, values=False):
        """The library may accept or refuse; `values`: if it accepts, the result must
        still be right (e.g. a byte-swapped float64 array read as float64)."""
        self.maybe.extend(names)
        self.values = self.values and values

    @property
    def outcome(self):
        return "reject" if self.reasons else ("either" if self.maybe else "accept")

    @property
    def check_values(self):
        """A success must match the reference (nothing the library may interpret its
        own way went in)."""
        return not self.reasons and self.values

    @property
    def names(self):
        out = list(self.maybe)
        for names, _ in self.reasons:
            out.extend(names)
        return out

    def check_message(self, exc):
        msg = str(exc)
        if PYBIND_DISPATCH in msg:
            fail(f"{type(exc).__name__} from pybind11's argument dispatch, which does not "
                 f"single out the offending argument (expected one of {self.names}): {msg!r}")
        if not any(n in msg for n in self.names):
            fail(f"{type(exc).__name__} message names none of {self.names}: {msg!r}")
        if len(self.reasons) == 1 and not self.maybe:
            for s in self.reasons[0][1]:
                if s not in msg:
                    fail(f"shape error does not name the shape {s}: {msg!r}")


def call_checked(call, expect, tracked, extra_errors=(), inputs_readonly=False):
    """Runs call(); checks the rejection (type, message, nothing modified) or the
    margins of a success (and, with `inputs_readonly`, that nothing was modified at all).
    Returns ("ok", result) or ("raised", exc)."""
    tracked = [t for t in tracked if t is not None]
    before = [t.snapshot() for t in tracked]
    margins = [t.margins() for t in tracked]
    try:
        result = call()
    except extra_errors as exc:
        for t, b in zip(tracked, before):
            if t.snapshot() != b:
                fail(f"{t.label} was modified by a call that raised {type(exc).__name__}: {exc}")
        return "raised", exc
    except ACCEPTED as exc:
        if expect.outcome == "accept":
            fail(f"a valid call was rejected: {type(exc).__name__}: {exc}")
        expect.check_message(exc)
        for t, b in zip(tracked, before):
            if t.snapshot() != b:
                fail(f"{t.label} was modified by a call that raised {type(exc).__name__}: {exc}")
        return "raised", exc
    except BaseException as exc:  # noqa: BLE001 - any other type breaks the contract
        fail(f"raised {type(exc).__name__} (expected TypeError/ValueError naming one of "
             f"{expect.names or 'nothing: the call is valid'}): {exc}\n"
             + "".join(traceback.format_exception(exc)[-6:]))
    for t, m in zip(tracked, margins):
        if t.margins() != m:
            fail(f"memory next to {t.label} (outside the array) was written")
    if inputs_readonly:
        for t, b in zip(tracked, before):
            if t.snapshot() != b:
                fail(f"{t.label} was modified by a function that must not modify its inputs")
    if expect.outcome == "reject":
        fail(f"an invalid call was accepted (expected a rejection naming one of "
             f"{expect.names}); it returned {type(result).__name__}")
    return "ok", result


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def moderate(a, limit=1e3):
    """Finite values of at most `limit` in magnitude (float32 and float64 then agree)."""
    a = np.asarray(a, dtype=np.float64)
    return bool(np.isfinite(a).all()) and (a.size == 0 or float(np.abs(a).max()) <= limit)


def all_finite(*arrays):
    return all(a is None or bool(np.isfinite(np.asarray(a, dtype=np.float64)).all())
               for a in arrays)


# ---------------------------------------------------------- the `arrays` argument

def build_container(rec, name):
    """(container kind, [element recipes]) -> (the argument, [Built], expect-hook).

    Returns the object passed as the list argument, the built elements (labelled
    name[i]) and `single`: True when the elements are passed bare."""
    kind, elems = rec
    built = [build(e, f"{name}[{i}]") for i, e in enumerate(elems)]
    objs = [b.obj for b in built]
    if kind == "list":
        arg = objs
    elif kind == "tuple":
        arg = tuple(objs)
    elif kind == "gen":
        arg = (o for o in objs)
    elif kind == "single":
        arg = objs[0]
    elif kind == "dict":
        arg = {f"w{i}": o for i, o in enumerate(objs)}
    elif kind == "py":
        arg = elems[0][1]
    else:
        raise AssertionError(kind)
    return arg, built


def is_complex(obj):
    a = read_view(obj)
    return a is not None and a.dtype.kind == "c"


def expect_container(expect, rec, built, name, ok, functional=False, complex_ok=False):
    """Adds the contract's verdict on a list argument to `expect`; `ok(obj)` says whether
    one element is acceptable. Returns the list of element objects the call will see
    (None when the container itself is not a list of arrays). `functional`: the
    functional clipping forms, which also take a dict (and keep it). `complex_ok`: the
    norms and clip-by-norm, which take complex arrays too; their values are checked by
    tests/test_complex.py, so here such an element may be taken or refused."""
    kind, _ = rec
    if kind == "py":
        if functional and rec[1][0][1] is None:
            expect.either(name)  # an empty tree (tests/test_pytree.py has its semantics)
        else:
            expect.bad(name)
        return None
    if kind == "dict" and not functional:
        expect.either(name)
        return None
    if kind == "single":
        obj = built[0].obj
        if not isinstance(obj, np.ndarray):
            expect.either(name, f"{name}[")  # one array or a sequence: the library's call
            return None
        if not ok(obj):
            if complex_ok and is_complex(obj):
                expect.either(f"{name}[0]", name)
            else:
                expect.bad(f"{name}[0]", name)
        elif ok in (write_ok, clip_write_ok) and unaligned(obj):
            expect.either(f"{name}[0]", name)
        return [obj]
    for i, b in enumerate(built):
        label = f"{name}[" if kind == "dict" else f"{name}[{i}]"
        if b.obj is None or isinstance(b.obj, (list, tuple, dict)):
            # A subtree (None, nested containers, lists of numbers), which every list
            # argument takes: tests/test_pytree.py and tests/test_pytree_inplace.py check
            # what it gives against the reference.
            expect.either(label)
            continue
        if not ok(b.obj):
            if complex_ok and is_complex(b.obj):
                expect.either(label)
            elif ok in (read_ok, functional_ok) and byteswapped(b.obj):
                expect.either(label, values=True)
            else:
                expect.bad(label)
        elif ok in (write_ok, clip_write_ok) and unaligned(b.obj):
            expect.either(label)
    return [b.obj for b in built]


# =========================================================================== strategies

seeds = st.integers(0, 2**32 - 1)
margins = st.integers(0, 3)


def shapes(min_ndim=0, max_ndim=3, max_dim=5):
    return st.lists(st.integers(0, max_dim), min_size=min_ndim, max_size=max_ndim).map(tuple)


def arrays(dtypes=READ_DTYPES, shape=None, layouts=LAYOUTS, readonly=st.booleans(),
           fills=FLOAT_FILLS):
    return st.tuples(st.just("arr"), st.sampled_from([np.dtype(d).str for d in dtypes]),
                     shapes() if shape is None else shape, st.sampled_from(layouts),
                     readonly, st.sampled_from(fills), seeds, margins, margins)


#: fills for the valid half of the cases: mostly finite and moderate (values can then
#: be compared with the reference), now and then NaN/inf, huge or mixed
VALID_FILLS = ("normal", "normal", "normal", "small", "small", "zero", "denormal", "tiny") * 2 + (
    "special", "huge", "mixed")


def nice_arrays(dtypes=WRITE_DTYPES, shape=None, fills=FLOAT_FILLS):
    """Arrays every in-place function must accept: C-contiguous, aligned, writeable."""
    return arrays(dtypes, shape, layouts=("c", "c", "c", "masked", "sub"),
                  readonly=st.just(False), fills=fills)


PY_JUNK = [None, "abc", "", b"xy", 3, 2.5, -1.0, True, 1j, {}, {"a": 1.0}, (), [],
           [1.0, 2.0], [[1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]], [None], ["a", "b"],
           float("nan"), 10**400]

hostile_elements = st.one_of(
    arrays(),
    arrays(dtypes=OTHER_DTYPES),
    st.tuples(st.just("py"), st.sampled_from(PY_JUNK)),
    st.tuples(st.just("tolist"), arrays(dtypes=WRITE_DTYPES, layouts=("c",))),
    st.tuples(st.just("arraymod"), st.sampled_from("fdib"), st.integers(0, 6), seeds),
    st.tuples(st.just("bytearray"), st.integers(0, 16)),
    st.tuples(st.just("memoryview"), arrays(dtypes=(F16, F32, F64, "int32"),
                                            layouts=("c", "T", "step", "neg"))),
)

writable_elements = st.one_of(
    nice_arrays(), nice_arrays(),
    st.tuples(st.just("arraymod"), st.sampled_from("fd"), st.integers(0, 6), seeds),
    st.tuples(st.just("memoryview"), nice_arrays(dtypes=WRITE_DTYPES).map(
        lambda r: r[:3] + ("c",) + r[4:])),
)

readable_elements = st.one_of(
    arrays(dtypes=READ_DTYPES), arrays(dtypes=READ_DTYPES),
    st.tuples(st.just("py"), st.sampled_from([2.5, -1.0, 0.0, float("inf"), float("nan")])),
    st.tuples(st.just("tolist"), arrays(dtypes=WRITE_DTYPES, layouts=("c",))),
    st.tuples(st.just("arraymod"), st.sampled_from("fd"), st.integers(0, 6), seeds),
)


@st.composite
def containers(draw, valid_elements, max_n=6, valid=False):
    """A list argument: mostly lists/tuples/generators of elements (valid ones or a mix
    with hostile ones), sometimes a bare element, a dict or a Python value; with
    `valid`, a list, tuple or generator of valid elements."""
    mode = "valid" if valid else draw(st.sampled_from(["valid", "valid", "mixed", "container"]))
    if mode == "container":
        kind = draw(st.sampled_from(["single", "dict", "py", "py"]))
        if kind == "py":
            return "py", [("py", draw(st.sampled_from(
                [None, "abc", b"abc", 3.0, 7, True, 1j])))]
        elems = draw(st.lists(st.one_of(valid_elements, hostile_elements), min_size=1,
                              max_size=1 if kind == "single" else 3))
        return kind, elems
    elements = valid_elements if mode == "valid" else st.one_of(valid_elements, hostile_elements)
    kind = draw(st.sampled_from(["list", "list", "tuple", "gen"]))
    return kind, draw(st.lists(elements, min_size=0, max_size=max_n))


def configs():
    return st.fixed_dictionaries({"isa": st.sampled_from(ISAS), "threads": st.integers(1, 3)})


ORD_GOOD = [1, 2, math.inf, 0.5, 1.5, 3, 7.3, 16, np.float32(2.0), np.int64(1), "inf", " INF ",
            "+inf"]
ORD_BAD = [0, 0.0, -1, -math.inf, math.nan, "2", "", None, True, 1j, [2], "-inf"]
ORD_MAYBE = [10**400, np.array(2.0)]
ords = st.one_of(st.sampled_from(ORD_GOOD), st.sampled_from(ORD_GOOD + ORD_BAD + ORD_MAYBE))

REAL_GOOD = [0.0, 0.5, 1.0, 2, 10.0, 1e-30, 1e30, np.float32(0.25), np.int64(3), -0.0]
good_reals = st.sampled_from(REAL_GOOD)
REAL_HOSTILE = [None, "1.0", True, False, 1j, [1.0], {}, np.array([1.0, 2.0]), -1.0, -1e-300,
                math.nan, -math.inf, math.inf, 10**400, -(10**400), np.array(1.0)]
reals = st.one_of(st.sampled_from(REAL_GOOD), st.sampled_from(REAL_GOOD),
                  st.sampled_from(REAL_HOSTILE))


def expect_real(expect, v, name, *, minimum=None, finite=False, allow_nan=False,
                positive=False):
    """Adds the verdict on a real-number argument."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        expect.either(name)         # a 0-d array holding a number: library's call
        return
    if not is_real(v):
        expect.bad(name)
        return
    if float_overflows(v):
        expect.either(name)         # e.g. 10**400: inf, or a proper rejection
        return
    f = float(v)
    if math.isnan(f):
        if not allow_nan:
            expect.bad(name)
        return
    if minimum is not None and (f < minimum or (positive and f <= minimum)):
        expect.bad(name)
    elif finite and math.isinf(f):
        expect.bad(name)


def expect_ord(expect, ord):
    if isinstance(ord, str):
        if ord.strip().lower() not in ("inf", "+inf"):
            expect.bad("ord")
        return
    expect_real(expect, ord, "ord", minimum=0.0, positive=True)


def ord_value(ord):
    return math.inf if isinstance(ord, str) else float(ord)


def norm_rtol(p):
    return 0.0 if p == math.inf else (1e-12 if p in (1.0, 2.0) else 1e-10)


def value_rtol(dtype, p=2.0):
    if np.dtype(dtype) == F16:
        return 2e-3  # the result and the reference each rounded to float16
    return 3e-7 if np.dtype(dtype) == F32 else 4 * norm_rtol(p) + 4e-16


# =========================================================================== the cases
# Each case function runs in the process that makes the calls (the child).

def case_norms(c):
    fn = c["fn"]
    arg, built = build_container(c["arrays"], "arrays")
    expect = Expect()
    if fn != "grad_stats":
        expect_ord(expect, c["ord"])
    elems = expect_container(expect, c["arrays"], built, "arrays", read_ok,
                             complex_ok=fn != "grad_stats")
    inputs = None if elems is None else [native(np.array(read_view(e), copy=True)) for e in elems]

    def call():
        if fn == "grad_stats":
            return gradcore.grad_stats(arg)
        return getattr(gradcore, fn)(arg, c["ord"])

    status, result = call_checked(call, expect, built)
    if status != "ok":
        return
    if fn == "global_norm" and type(result) is not float:
        fail(f"global_norm returned {type(result).__name__}, not float")
    if not expect.check_values or inputs is None:
        return
    p = 2.0 if fn == "grad_stats" else ord_value(c["ord"])
    contiguous = [np.ascontiguousarray(a) for a in inputs]
    if fn == "global_norm":
        assert_close(result, ref_norm(inputs, p), norm_rtol(p), err_msg=f"global_norm ord={p}")
        again = gradcore.global_norm(contiguous, c["ord"])
        if np.float64(again).tobytes() != np.float64(result).tobytes():
            fail(f"global_norm depends on the memory layout: {result!r}, but {again!r} "
                 "from C-contiguous copies")
    elif fn == "norms":
        if not (isinstance(result, np.ndarray) and result.dtype == F64
                and result.shape == (len(inputs),)):
            fail(f"norms returned {type(result).__name__} {getattr(result, 'dtype', '')} "
                 f"{getattr(result, 'shape', '')}")
        assert_close(result, ref_norms(inputs, p), norm_rtol(p), err_msg=f"norms ord={p}")
        if not same_bits(gradcore.norms(contiguous, c["ord"]), result):
            fail("norms depend on the memory layout")
    elif fn == "grad_stats":
        l2, mx, nf = ref_grad_stats(inputs)
        assert_close(result.l2_norm, l2, 1e-12, err_msg="grad_stats l2")
        assert_close(result.max_abs, mx, 0.0, atol=0.0, err_msg="grad_stats max_abs")
        if not (result.nonfinite.dtype == np.int64 and np.array_equal(result.nonfinite, nf)):
            fail(f"grad_stats nonfinite {result.nonfinite!r} != {nf!r}")


def clip_write_ok(obj):
    """What the in-place clipping functions modify."""
    return write_ok(obj, CLIP_DTYPES)


def functional_ok(obj):
    """What the functional forms accept: anything that converts to float16/32/64."""
    return read_ok(obj, CLIP_DTYPES)


def _clip_setup(c, name="arrays", complex_ok=False):
    """(argument, built elements, Expect, element objects, float copies before the call).
    In place: the elements' memory; functional: their conversion."""
    functional = c.get("functional", False)
    arg, built = build_container(c[name], name)
    expect = Expect()
    ok = functional_ok if functional else clip_write_ok
    elems = expect_container(expect, c[name], built, name, ok, functional, complex_ok)
    before = None
    if elems is not None:
        view = read_view if functional else write_view
        # A byte-swapped input of a functional form is read by value.
        before = [native(np.array(view(e), copy=True)) if ok(e) or (functional and byteswapped(e)) else None
                  for e in elems]
    return arg, built, expect, elems, before


def _outputs(c, name, elems, before, returned):
    """The arrays to check after a successful call: in place, the elements' memory; for
    a functional form, the returned container, checked to be the caller's kind (list,
    tuple, dict with the same keys, single array) of fresh C-contiguous arrays of the
    inputs' shapes and dtypes."""
    if not c.get("functional", False):
        return [np.array(write_view(e)) for e in elems]
    kind = c[name][0]
    if kind == "dict":
        if not (isinstance(returned, dict) and list(returned) == [f"w{i}" for i in range(len(elems))]):
            fail(f"functional form returned {type(returned).__name__}, not the caller's dict")
        out = list(returned.values())
    elif kind == "single":
        if not isinstance(returned, np.ndarray):
            fail(f"functional form returned {type(returned).__name__} for a single array")
        out = [returned]
    else:
        container = tuple if kind == "tuple" else list  # (a generator gives a list)
        if not (isinstance(returned, container) and len(returned) == len(elems)):
            fail(f"functional form returned {type(returned).__name__}, not a "
                 f"{container.__name__} of {len(elems)} arrays")
        out = returned
    for i, (o, e, b) in enumerate(zip(out, elems, before)):
        if not (isinstance(o, np.ndarray) and o.shape == b.shape and o.dtype == b.dtype
                and o.flags.c_contiguous):
            fail(f"functional result [{i}] is {type(o).__name__} {getattr(o, 'shape', '')} "
                 f"{getattr(o, 'dtype', '')}, expected a C-contiguous {b.shape} {b.dtype}")
        if isinstance(e, np.ndarray) and np.shares_memory(o, e):
            fail(f"functional result [{i}] shares memory with its input")
    return out


def _check_values(got, before, expected, what, p=2.0, unchanged=None):
    """got[i] holds expected[i] (and, where unchanged[i], the bits it had before)."""
    for i, (now, b, x) in enumerate(zip(got, before, expected)):
        if unchanged is not None and unchanged[i]:
            if not same_bits(now, b):
                fail(f"{what}: [{i}] was scaled although its factor is 1")
            continue
        assert_close(np.array(now), x, value_rtol(b.dtype, p), err_msg=f"{what} [{i}]")


def _fn(c, name):
    return getattr(gradcore, name[:-1] if c.get("functional", False) else name)


def case_clip_by_value(c):
    arg, built, expect, elems, before = _clip_setup(c)
    cv, lo, hi = c["clip_value"], c["min"], c["max"]
    kwargs = {}
    if cv is not None:
        kwargs["clip_value"] = cv
    if lo is not None:
        kwargs["min"] = lo
    if hi is not None:
        kwargs["max"] = hi
    if cv is not None:
        if lo is not None or hi is not None:
            expect.bad("clip_value", "min", "max")
        else:
            expect_real(expect, cv, "clip_value", minimum=0.0)
    elif lo is None and hi is None:
        expect.bad("clip_value", "min", "max")
    else:
        n_before = len(expect.reasons)
        for v, name in ((lo, "min"), (hi, "max")):
            if v is not None:
                expect_real(expect, v, name)
        if (len(expect.reasons) == n_before and lo is not None and hi is not None
                and not float_overflows(lo) and not float_overflows(hi)
                and not (isinstance(lo, np.ndarray) or isinstance(hi, np.ndarray))
                and float(lo) > float(hi)):
            expect.bad("min", "max")
    fn = _fn(c, "clip_by_value_")
    status, result = call_checked(lambda: fn(arg, **kwargs), expect, built,
                                  inputs_readonly=c.get("functional", False))
    if status == "ok" and expect.check_values and elems is not None:
        got = _outputs(c, "arrays", elems, before, result)
        ref_kwargs = {k: float(v) for k, v in kwargs.items()}
        expected = [ref_clip_by_value([b], **ref_kwargs)[0] for b in before]
        for i, (g, x) in enumerate(zip(got, expected)):
            assert_close(g, x, 0.0, atol=0.0, err_msg=f"{fn.__name__} [{i}]")


def case_clip_by_norm(c):
    arg, built, expect, elems, before = _clip_setup(c, complex_ok=True)
    expect_real(expect, c["max_norm"], "max_norm", minimum=0.0)
    expect_ord(expect, c["ord"])
    expect_real(expect, c["eps"], "eps", minimum=0.0, finite=True)
    fn = _fn(c, "clip_by_norm_")
    status, result = call_checked(lambda: fn(arg, c["max_norm"], c["ord"], eps=c["eps"]),
                                  expect, built, inputs_readonly=c.get("functional", False))
    if status != "ok" or not expect.check_values or elems is None:
        return
    returned = None
    if c.get("functional", False):
        if not (isinstance(result, tuple) and len(result) == 2):
            fail(f"clip_by_norm returned {type(result).__name__}, not (copies, norms)")
        returned, result = result
    got = _outputs(c, "arrays", elems, before, returned)
    p = ord_value(c["ord"])
    expected, ns = ref_clip_by_norm(before, float(c["max_norm"]), p, eps=float(c["eps"]))
    if not (isinstance(result, np.ndarray) and result.dtype == F64 and result.shape == ns.shape):
        fail(f"{fn.__name__} returned norms {result!r}")
    assert_close(result, ns, norm_rtol(p), err_msg=f"{fn.__name__} norms")
    unchanged = [_clip_factor(float(c["max_norm"]), float(n), float(c["eps"])) == 1.0
                 for n in result]
    _check_values(got, before, expected, fn.__name__, p, unchanged)


def case_clip_by_global_norm(c):
    arg, built, expect, elems, before = _clip_setup(c, complex_ok=True)
    expect_real(expect, c["max_norm"], "max_norm", minimum=0.0)
    expect_ord(expect, c["ord"])
    expect_real(expect, c["eps"], "eps", minimum=0.0, finite=True)
    policy, total = c["nonfinite"], c["total_norm"]
    if not (isinstance(policy, str) and policy in POLICIES):
        expect.bad("nonfinite")
    if total is not None:
        expect_real(expect, total, "total_norm", minimum=0.0, allow_nan=True)
    want_error = False
    ref = None
    if expect.check_values and elems is not None:
        p = ord_value(c["ord"])
        try:
            ref = ref_clip_by_global_norm(before, float(c["max_norm"]), p, eps=float(c["eps"]),
                                          nonfinite=policy,
                                          total_norm=None if total is None else float(total))
        except RefNonFiniteError:
            want_error = True
    fn = _fn(c, "clip_by_global_norm_")
    status, result = call_checked(
        lambda: fn(arg, c["max_norm"], c["ord"], eps=c["eps"], nonfinite=policy, total_norm=total),
        expect, built, extra_errors=(gradcore.NonFiniteGradientError,),
        inputs_readonly=c.get("functional", False))
    if status == "raised" and isinstance(result, gradcore.NonFiniteGradientError):
        if not (policy == "error" and (want_error or not expect.check_values)):
            fail(f"NonFiniteGradientError without nonfinite='error' and a non-finite total: "
                 f"{result}")
        if math.isfinite(result.total_norm):
            fail(f"NonFiniteGradientError with a finite total_norm {result.total_norm}")
        return
    if want_error:
        fail(f"nonfinite='error' with a non-finite total did not raise (returned {result!r})")
    if status != "ok" or ref is None:
        return
    returned = None
    if c.get("functional", False):
        if not (isinstance(result, tuple) and len(result) == 2):
            fail(f"clip_by_global_norm returned {type(result).__name__}, not (copies, total)")
        returned, result = result
    got = _outputs(c, "arrays", elems, before, returned)
    expected, ref_total = ref
    p = ord_value(c["ord"])
    if type(result) is not float:
        fail(f"{fn.__name__} returned {type(result).__name__}")
    if total is not None:
        if np.float64(result).tobytes() != np.float64(float(total)).tobytes():
            fail(f"returned {result!r}, not the total_norm given ({total!r})")
    else:
        assert_close(result, ref_total, norm_rtol(p), err_msg=f"{fn.__name__} total")
    unchanged = None
    if math.isfinite(result) or policy in ("propagate", "skip"):
        keep = policy == "skip" and not math.isfinite(result)
        keep = keep or _clip_factor(float(c["max_norm"]), result, float(c["eps"])) == 1.0
        unchanged = [keep] * len(elems)
    _check_values(got, before, expected, f"{fn.__name__}({policy})", p, unchanged)


def case_adaptive_clip(c):
    functional = c.get("functional", False)
    garg, gbuilt = build_container(c["grads"], "grads")
    parg, pbuilt = build_container(c["params"], "params")
    expect = Expect()
    gok = functional_ok if functional else write_ok
    gel = expect_container(expect, c["grads"], gbuilt, "grads", gok, functional)
    # params are read along grads' structure: along grads=None (an empty tree, which the
    # functional form returns as it is) none of them is read, so none has to be valid.
    empty_grads = functional and c["grads"][0] == "py" and c["grads"][1][0][1] is None
    pexp = Expect() if empty_grads else expect
    pel = expect_container(pexp, c["params"], pbuilt, "params", read_ok, functional)
    if empty_grads and pexp.names:
        expect.either(*pexp.names)
    expect_real(expect, c["clipping"], "clipping", minimum=0.0, finite=True)
    expect_real(expect, c["eps"], "eps", minimum=0.0, finite=True)
    axis = c["unit_axis"]
    axis_ok = isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_))
    if not axis_ok:
        expect.bad("unit_axis")
    elif abs(int(axis)) > 2**31:
        expect.either("unit_axis")
    gview = read_view if functional else write_view
    if gel is not None and pel is not None:
        if len(gel) != len(pel):
            expect.bad("grads", "params")
        else:
            for i, (g, p) in enumerate(zip(gel, pel)):
                if not gok(g) or not (read_ok(p) or byteswapped(p)):
                    continue
                gv, pv = gview(g), read_view(p)
                if gv.shape != pv.shape:
                    expect.bad(f"grads[{i}]", f"params[{i}]", shapes=(gv.shape, pv.shape))
                elif axis_ok and abs(int(axis)) <= 2**31 and gv.ndim >= 2 and not (
                        -gv.ndim <= int(axis) < gv.ndim):
                    expect.bad("unit_axis")
    before = None if gel is None else [np.array(gview(g), copy=True) if gok(g) else None
                                       for g in gel]
    pin = None if pel is None else [native(np.array(read_view(p), copy=True))
                                    if read_ok(p) or byteswapped(p) else None for p in pel]
    fn = _fn(c, "adaptive_clip_")
    status, result = call_checked(
        lambda: fn(garg, parg, c["clipping"], eps=c["eps"], unit_axis=axis), expect,
        gbuilt + pbuilt, inputs_readonly=functional)
    if status != "ok" or not expect.check_values or gel is None:
        return
    got = _outputs(c, "grads", gel, before, result)
    expected = ref_adaptive_clip(before, pin, float(c["clipping"]), eps=float(c["eps"]),
                                 unit_axis=int(axis))
    _check_values(got, before, expected, fn.__name__)


# ------------------------------------------------------------------ dense / matmul

def _matrix_expect(expect, obj, name, dtypes=WRITE_DTYPES):
    """Verdict on a read-access array argument; returns it as a native-order array (or
    None if bad)."""
    a = read_view(obj)
    if a is not None and byteswapped(a, dtypes):
        expect.either(name, values=True)
        return native(a)
    if a is None or a.dtype not in dtypes:
        expect.bad(name)
        return None
    return a


def _out_expect(expect, out_obj, name, dtype, shape):
    """Verdict on a caller-provided output buffer."""
    if out_obj is None:
        return
    if not isinstance(out_obj, np.ndarray):
        if write_ok(out_obj):
            expect.either(name)
        else:
            expect.bad(name)
        return
    if dtype is not None and out_obj.dtype != dtype:
        expect.bad(name)
    elif shape is not None and out_obj.shape != tuple(shape):
        expect.bad(name, shapes=(out_obj.shape,))
    elif not (out_obj.flags.writeable and out_obj.flags.c_contiguous):
        expect.bad(name)
    elif not out_obj.flags.aligned:
        expect.either(name)


def _gemm_checkable(dtype, *arrays):
    """Values are compared with the float64 reference only when every input is finite
    and small enough that no product overflows in `dtype`."""
    limit = 1e15 if np.dtype(dtype) == F32 else 1e150
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float64)
        if a.size and (not np.isfinite(a).all() or np.abs(a).max() > limit):
            return False
    return True


def _resolve_out(c, built_inputs):
    """The out= object: None, a fresh recipe, or an alias of an input."""
    spec = c.get("out")
    if spec is None:
        return None, None
    if spec[0] == "alias":
        src = built_inputs[spec[1]]
        obj = src.obj
        if spec[2] == "T" and isinstance(obj, np.ndarray) and obj.ndim == 2:
            obj = obj.T
        elif spec[2] == "rows" and isinstance(obj, np.ndarray) and obj.ndim == 2:
            obj = obj[: max(1, obj.shape[0] // 2)]
        return obj, Built(obj, src.buf, src.foot, "out")
    b = build(spec, "out")
    return b.obj, b


def case_matmul(c):
    a_b, b_b = build(c["a"], "a"), build(c["b"], "b")
    out_obj, out_b = _resolve_out(c, {"a": a_b, "b": b_b})
    ta, tb, alpha, beta = c["trans_a"], c["trans_b"], c["alpha"], c["beta"]
    expect = Expect()
    a = _matrix_expect(expect, a_b.obj, "a")
    b = _matrix_expect(expect, b_b.obj, "b")
    expect_real(expect, alpha, "alpha", allow_nan=True)
    expect_real(expect, beta, "beta", allow_nan=True)
    shape = None
    if a is not None and b is not None:
        if a.dtype != b.dtype:
            expect.bad("a", "b")
        elif a.ndim != 2:
            expect.bad("a", shapes=(a.shape,))
        elif b.ndim != 2:
            expect.bad("b", shapes=(b.shape,))
        else:
            m, k = a.shape[::-1] if ta else a.shape
            kb, n = b.shape[::-1] if tb else b.shape
            if k != kb:
                expect.bad("a", "b", shapes=(a.shape, b.shape))
            shape = (m, n)
    if is_real(beta) and not float_overflows(beta) and float(beta) != 0 and out_obj is None:
        expect.bad("beta", "out")
    _out_expect(expect, out_obj, "out", None if a is None else a.dtype, shape)
    ins = [None if x is None else np.array(x, copy=True) for x in (a, b)]
    out_before = None if not isinstance(out_obj, np.ndarray) else np.array(out_obj, copy=True)
    kwargs = dict(trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    if out_obj is not None:
        kwargs["out"] = out_obj
    status, result = call_checked(lambda: gradcore.matmul(a_b.obj, b_b.obj, **kwargs), expect,
                                  [a_b, b_b, out_b])
    if status != "ok" or not expect.check_values:
        return
    if not (isinstance(result, np.ndarray) and result.shape == shape
            and native(result).dtype == a.dtype):
        fail(f"matmul returned {type(result).__name__} {getattr(result, 'shape', '')} "
             f"{getattr(result, 'dtype', '')}, expected {shape} {a.dtype}")
    if out_obj is not None and result is not out_obj:
        fail("matmul(out=...) did not return out")
    al, be = float(alpha), float(beta)
    if _gemm_checkable(a.dtype, *ins, out_before) and math.isfinite(al) and math.isfinite(be):
        k = ins[0].shape[0 if ta else 1]
        exp = ref_matmul(ins[0], ins[1], trans_a=ta, trans_b=tb, alpha=al, beta=be, out=out_before)
        scale = matmul_scale(ins[0], ins[1], trans_a=ta, trans_b=tb, alpha=al, beta=be,
                             out=out_before)
        assert_gemm_close(result, exp, scale, a.dtype, k, what="matmul")
    elif al != 0 and math.isfinite(al) and ins[0].size and ins[1].size:
        # a NaN in a row of op(a) makes that row of the product NaN, and likewise columns
        opa = ins[0].T if ta else ins[0]
        opb = ins[1].T if tb else ins[1]
        rows = np.isnan(opa).any(axis=1)
        cols = np.isnan(opb).any(axis=0)
        got = np.asarray(result)
        if not np.isnan(got[rows]).all() or not np.isnan(got[:, cols]).all():
            fail("matmul: a NaN in an input row/column did not give a NaN output row/column")


def case_dense_forward(c):
    xb, wb = build(c["x"], "x"), build(c["weight"], "weight")
    bb = None if c["bias"] is None else build(c["bias"], "bias")
    out_obj, out_b = _resolve_out(c, {"x": xb, "weight": wb})
    act, slope = c["activation"], c["negative_slope"]
    expect = Expect()
    x = _matrix_expect(expect, xb.obj, "x")
    w = _matrix_expect(expect, wb.obj, "weight")
    bias = None if bb is None else _matrix_expect(expect, bb.obj, "bias")
    if not (isinstance(act, str) and act in ACTIVATIONS):
        expect.bad("activation")
    expect_real(expect, slope, "negative_slope", allow_nan=True)
    shape = None
    if x is not None and w is not None:
        if w.dtype != x.dtype:
            expect.bad("x", "weight")
        elif x.ndim != 2:
            expect.bad("x", shapes=(x.shape,))
        elif w.ndim != 2:
            expect.bad("weight", shapes=(w.shape,))
        elif x.shape[1] != w.shape[1]:
            expect.bad("x", "weight", shapes=(x.shape, w.shape))
        else:
            shape = (x.shape[0], w.shape[0])
            if bias is not None:
                if bias.dtype != x.dtype:
                    expect.bad("bias")
                elif bias.shape != (w.shape[0],):
                    expect.bad("bias", shapes=(bias.shape,))
    _out_expect(expect, out_obj, "out", None if x is None else x.dtype, shape)
    if (c.get("out") is not None and c["out"][0] == "alias" and isinstance(out_obj, np.ndarray)
            and any(v is not None and np.may_share_memory(out_obj, v) for v in (x, w, bias))):
        expect.bad("out")      # an output overlapping an input is refused
    ins = [None if v is None else np.array(v, copy=True) for v in (x, w, bias)]
    args = (xb.obj, wb.obj, None if bb is None else bb.obj, act)
    kwargs = dict(negative_slope=slope)
    if out_obj is not None:
        kwargs["out"] = out_obj
    status, result = call_checked(lambda: gradcore.dense_forward(*args, **kwargs), expect,
                                  [xb, wb, bb, out_b])
    if status != "ok" or not expect.check_values:
        return
    if not (isinstance(result, np.ndarray) and result.shape == shape
            and native(result).dtype == x.dtype):
        fail(f"dense_forward returned {getattr(result, 'shape', result)!r}")
    if out_obj is not None and result is not out_obj:
        fail("dense_forward(out=...) did not return out")
    if _gemm_checkable(x.dtype, *ins) and abs(float(slope)) <= 1e3:
        exp = ref_dense_forward(ins[0], ins[1], ins[2], act, float(slope))
        scale = ref_dense_forward_scale(ins[0], ins[1], ins[2]) * max(1.0, abs(float(slope)))
        assert_gemm_close(result, exp, scale, x.dtype, max(1, ins[0].shape[1]),
                          what=f"dense_forward {act}")


def case_dense_backward(c):
    names = ("grad_y", "x", "weight", "y")
    b_in = {n: build(c[n], n) for n in names}
    act, slope = c["activation"], c["negative_slope"]
    has_bias, need_gx, acc = c["has_bias"], c["need_grad_x"], c["accumulate"]
    expect = Expect()
    arrs = {n: _matrix_expect(expect, b_in[n].obj, n) for n in names}
    if not (isinstance(act, str) and act in ACTIVATIONS):
        expect.bad("activation")
    expect_real(expect, slope, "negative_slope", allow_nan=True)
    dims = None
    valid = [n for n in names if arrs[n] is not None]
    if len({arrs[n].dtype for n in valid}) > 1:
        expect.bad(*valid)
    elif len(valid) < len(names):
        expect.either(*valid)        # checked in an order of the library's choosing
    else:
        x = arrs["x"]
        if any(arrs[n].ndim != 2 for n in names):
            expect.bad(*[n for n in names if arrs[n].ndim != 2])
        else:
            batch, n_in, n_out = x.shape[0], x.shape[1], arrs["weight"].shape[0]
            if arrs["weight"].shape[1] != n_in:
                expect.bad("x", "weight", shapes=(x.shape, arrs["weight"].shape))
            else:
                for n in ("grad_y", "y"):
                    if arrs[n].shape != (batch, n_out):
                        expect.bad(n, shapes=(arrs[n].shape,))
            dims = (batch, n_in, n_out)
    outs = {}
    out_b = []
    for n, used in (("grad_x", need_gx), ("grad_weight", True), ("grad_bias", has_bias)):
        spec = c["outs"].get(n)
        if spec is None:
            if acc and used:
                expect.bad(n, "accumulate")
            continue
        b = build(spec, n)
        outs[n] = b.obj
        out_b.append(b)
        want = None
        if dims is not None:
            batch, n_in, n_out = dims
            want = {"grad_x": (batch, n_in), "grad_weight": (n_out, n_in),
                    "grad_bias": (n_out,)}[n]
        sub = Expect()
        _out_expect(sub, b.obj, n, None if arrs["x"] is None else arrs["x"].dtype, want)
        if sub.outcome != "accept":
            if used:
                expect.reasons.extend(sub.reasons)
                expect.maybe.extend(sub.maybe)
            else:
                expect.either(n)   # a buffer for an output not asked for
    ins = {n: None if v is None else np.array(v, copy=True) for n, v in arrs.items()}
    out_before = {n: np.array(o, copy=True) for n, o in outs.items() if isinstance(o, np.ndarray)}
    status, result = call_checked(
        lambda: gradcore.dense_backward(*[b_in[n].obj for n in names], act, negative_slope=slope,
                                        has_bias=has_bias, need_grad_x=need_gx, accumulate=acc,
                                        **outs),
        expect, list(b_in.values()) + out_b)
    if status != "ok" or not expect.check_values:
        return
    gx, gw, gb = result
    batch, n_in, n_out = dims
    dt = arrs["x"].dtype
    for n, v, want, on in (("grad_x", gx, (batch, n_in), need_gx),
                           ("grad_weight", gw, (n_out, n_in), True),
                           ("grad_bias", gb, (n_out,), has_bias)):
        if not on:
            if v is not None:
                fail(f"dense_backward: {n} should be None")
            continue
        if not (isinstance(v, np.ndarray) and v.shape == want and native(v).dtype == dt):
            fail(f"dense_backward: {n} is {getattr(v, 'shape', v)!r}, expected {want} {dt}")
        if n in outs and v is not outs[n]:
            fail(f"dense_backward: {n}= buffer given but not returned")
    if not (_gemm_checkable(dt, *ins.values()) and abs(float(slope)) <= 1e3):
        return
    exp = ref_dense_backward(ins["grad_y"], ins["x"], ins["weight"], ins["y"], act, float(slope),
                             has_bias=has_bias, need_grad_x=need_gx)
    scales = ref_dense_backward_scales(ins["grad_y"], ins["x"], ins["weight"], ins["y"], act,
                                       float(slope))
    slack = ref_dense_backward_slack(ins["grad_y"], ins["x"], ins["weight"], dt)
    for n, got, e, s, sl, k in (("grad_x", gx, exp[0], scales[0], slack[0], n_out),
                                ("grad_weight", gw, exp[1], scales[1], slack[1], batch),
                                ("grad_bias", gb, exp[2], scales[2], slack[2], batch)):
        if e is None:
            continue
        if acc and n in out_before:
            e = e + out_before[n]
            s = s + np.abs(out_before[n])
        assert_gemm_close(got, e, s, dt, max(1, k), extra=sl, what=f"dense_backward {n}")


# ------------------------------------------------------------------ recurrent

def case_rnn(c):
    names = ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "c0")
    bl = {n: None if c[n] is None else build(c[n], n) for n in names}
    obj = {n: None if bl[n] is None else bl[n].obj for n in names}
    cell = c["cell"]
    expect = Expect()
    valid_cell = isinstance(cell, str) and cell in GATES
    if not valid_cell:
        expect.bad("cell")
    arr = {}
    for n in names:
        if obj[n] is not None or n in ("x", "weight_ih", "weight_hh"):   # required ones
            arr[n] = _matrix_expect(expect, obj[n], n)
    x = arr.get("x")
    dims = None
    if x is not None and x.ndim != 3:
        expect.bad("x", shapes=(x.shape,))
    elif x is not None and valid_cell:
        G = GATES[cell]
        whh = arr.get("weight_hh")
        if whh is not None and whh.ndim != 2:
            expect.bad("weight_hh", shapes=(whh.shape,))
        elif whh is not None:
            T, B, I = x.shape
            H = whh.shape[1]
            dims = (T, B, I, H, G)
            want = {"weight_ih": (G * H, I), "weight_hh": (G * H, H), "bias_ih": (G * H,),
                    "bias_hh": (G * H,), "h0": (B, H), "c0": (B, H)}
            for n, shape in want.items():
                a = arr.get(n)
                if a is None:
                    continue
                if a.dtype != x.dtype:
                    expect.bad(n)
                elif a.shape != shape:
                    expect.bad(n, shapes=(a.shape,))
        if obj["c0"] is not None and cell != "lstm":
            expect.bad("c0")
    if dims is None:
        # x, weight_hh or cell is bad: the others are checked in the library's order
        expect.either(*[n for n in names if n in arr])
    ins = {n: None if arr.get(n) is None else np.array(arr[n], copy=True) for n in names}
    status, fwd = call_checked(
        lambda: gradcore.rnn_forward(obj["x"], obj["h0"], obj["weight_ih"], obj["weight_hh"],
                                     obj["bias_ih"], obj["bias_hh"], cell=cell, c0=obj["c0"]),
        expect, list(bl.values()))
    if status != "ok" or not expect.check_values:
        return
    T, B, I, H, G = dims
    dt = x.dtype
    if not (fwd.y.shape == (T, B, H) and fwd.h_n.shape == (B, H) and native(fwd.y).dtype == dt
            and native(fwd.h_n).dtype == dt):
        fail(f"rnn_forward shapes y {fwd.y.shape} h_n {fwd.h_n.shape}, expected T,B,H={T, B, H}")
    if (fwd.c_n is None) != (cell != "lstm"):
        fail(f"rnn_forward c_n is {type(fwd.c_n).__name__} for cell {cell}")
    checkable = all(v is None or moderate(v) for v in ins.values())
    if checkable:
        ref = ref_rnn_forward(ins["x"], ins["h0"], ins["weight_ih"], ins["weight_hh"],
                              ins["bias_ih"], ins["bias_hh"], cell=cell, c0=ins["c0"])
        rtol = 1e-4 if dt == F32 else 1e-10
        for f in ("y", "h_n", "c_n"):
            if getattr(ref, f) is not None:
                _scaled_close(getattr(fwd, f), getattr(ref, f), rtol, f"rnn_forward {f}")

    # the same bits from C-contiguous copies of the inputs
    cont = {n: None if ins[n] is None else np.ascontiguousarray(ins[n]) for n in names}
    fwd2 = gradcore.rnn_forward(cont["x"], cont["h0"], cont["weight_ih"], cont["weight_hh"],
                                cont["bias_ih"], cont["bias_hh"], cell=cell, c0=cont["c0"])
    for f in ("y", "h_n", "c_n"):
        a, b = getattr(fwd, f), getattr(fwd2, f)
        if a is not None and not same_bits(a, b):
            fail(f"rnn_forward {f} depends on the inputs' memory layout")

    # ---------------------------------------------------------------- backward
    bw = c["backward"]
    bnames = ("grad_y", "grad_h_n", "grad_c_n")
    bbl = {n: None if bw[n] is None else build(bw[n], n) for n in bnames}
    bobj = {n: None if bbl[n] is None else bbl[n].obj for n in bnames}
    cache = {"cache": fwd.cache, "tuple": fwd, "dict": {}, "none": None}[bw["cache"]]
    clip = bw["clip_hidden"]
    bexp = Expect()
    if bw["cache"] != "cache":
        bexp.bad("cache")
    if clip is not None:
        expect_real(bexp, clip, "clip_hidden", minimum=0.0, positive=True)
    barr = {}
    for n in bnames:
        if bobj[n] is None and n != "grad_y":     # grad_y is required
            continue
        barr[n] = _matrix_expect(bexp, bobj[n], n)
        want = (T, B, H) if n == "grad_y" else (B, H)
        if barr[n] is not None:
            if barr[n].dtype != dt:
                bexp.bad(n)
            elif barr[n].shape != want:
                bexp.bad(n, shapes=(barr[n].shape,))
    if bobj["grad_c_n"] is not None and cell != "lstm":
        bexp.bad("grad_c_n")
    bins = {n: None if barr.get(n) is None else np.array(barr[n], copy=True) for n in bnames}
    status, grads = call_checked(
        lambda: gradcore.rnn_backward(cache, bobj["grad_y"], bobj["grad_h_n"], bobj["grad_c_n"],
                                      clip_hidden=clip),
        bexp, list(bbl.values()))
    if status != "ok" or not bexp.check_values:
        return
    want = dict(grad_x=(T, B, I), grad_h0=(B, H), grad_c0=(B, H) if cell == "lstm" else None,
                grad_weight_ih=(G * H, I), grad_weight_hh=(G * H, H),
                grad_bias_ih=(G * H,) if ins["bias_ih"] is not None else None,
                grad_bias_hh=(G * H,) if ins["bias_hh"] is not None else None)
    for f, shape in want.items():
        v = getattr(grads, f)
        if shape is None:
            if v is not None:
                fail(f"rnn_backward {f} should be None")
        elif not (isinstance(v, np.ndarray) and v.shape == shape and native(v).dtype == dt):
            fail(f"rnn_backward {f}: {getattr(v, 'shape', v)!r}, expected {shape} {dt}")
    hn = grads.hidden_grad_norms
    if not (isinstance(hn, np.ndarray) and hn.dtype == F64 and hn.shape == (T,)):
        fail(f"hidden_grad_norms {getattr(hn, 'shape', hn)!r}")
    if (hn[~np.isnan(hn)] < 0).any():
        fail(f"negative hidden_grad_norms {hn}")
    # the cache is not consumed: a second backward gives the same bits
    again = gradcore.rnn_backward(fwd.cache, bins["grad_y"], bins["grad_h_n"], bins["grad_c_n"],
                                  clip_hidden=clip)
    for f in grads._fields:
        a, b = getattr(grads, f), getattr(again, f)
        if (a is None) != (b is None) or (a is not None and not same_bits(a, b)):
            fail(f"rnn_backward {f} differs between two calls on the same cache "
                 "(or between memory layouts of grad_*)")
    if (checkable and all(v is None or moderate(v) for v in bins.values())
            and _rnn_well_conditioned(ref, cell, dt)):
        ref_g = ref_rnn_backward(ref.cache, bins["grad_y"], bins["grad_h_n"], bins["grad_c_n"],
                                 clip_hidden=None if clip is None else float(clip))
        rtol = 1e-4 if dt == F32 else 1e-10
        for f in grads._fields:
            e = getattr(ref_g, f)
            if e is not None:
                _scaled_close(getattr(grads, f), e, rtol, f"rnn_backward {f}")


def _rnn_well_conditioned(ref, cell, dt):
    """tests/test_rnn.py's rule: the backward is compared only away from relu's kink
    (a pre-activation within rounding of 0 may take the other side in float32, and the
    derivative, 0 or 1, then legitimately differs) and from fully saturated tanh steps."""
    steps = ref.cache["steps"]
    f32 = dt == F32
    if cell == "rnn_relu":
        margin = min((float(np.min(np.abs(s["a"]))) for s in steps if s["a"].size), default=math.inf)
        return margin > (3e-5 if f32 else 1e-9)
    if cell == "rnn_tanh":
        least = min((float(np.max(1.0 - s["h"] * s["h"])) for s in steps if s["h"].size), default=1.0)
        return least > (1e-2 if f32 else 1e-10)
    return True


def _scaled_close(got, expected, rtol, what):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        fail(f"{what}: shape {got.shape} != {expected.shape}")
    if expected.size == 0:
        return
    scale = float(np.max(np.abs(expected)))
    err = np.abs(got - expected)
    if not (err <= rtol * max(scale, 1e-30)).all():
        fail(f"{what}: max error {float(np.nanmax(err)):.3g} > {rtol} * scale {scale:.3g}")


# ------------------------------------------------------------------ optimisers

OPT_KW = {
    "SGD": ("momentum", "dampening", "weight_decay", "nesterov"),
    "Adam": ("betas", "eps", "weight_decay"),
    "AdamW": ("betas", "eps", "weight_decay"),
}


def _ref_first_step(cls, p, g, lr, kw, clip_norm, clip_value):
    """One step from fresh state, float64 (torch.optim's formulas)."""
    p = [f64_copy(x) for x in p]
    g = [f64_copy(x) for x in g]
    if clip_value is not None:
        g = [np.clip(x, -clip_value, clip_value) for x in g]
    if clip_norm is not None:
        total = math.sqrt(sum(float(np.sum(x * x)) for x in g))
        s = min(1.0, clip_norm / (total + 1e-6)) if total > 0 else 1.0
        g = [x * s for x in g]
    wd = float(kw.get("weight_decay", 0.01 if cls == "AdamW" else 0.0))
    if cls == "SGD":
        m = float(kw.get("momentum", 0.0))
        out = []
        for q, x in zip(p, g):
            x = x + wd * q
            if m and kw.get("nesterov"):
                x = x + m * x
            out.append(q - lr * x)
        return out
    b1, b2 = (float(b) for b in kw.get("betas", (0.9, 0.999)))
    eps = float(kw.get("eps", 1e-8))
    out = []
    for q, x in zip(p, g):
        if cls == "AdamW":
            q = q * (1 - lr * wd)
        else:
            x = x + wd * q
        mhat = (1 - b1) * x / (1 - b1)
        vhat = (1 - b2) * x * x / (1 - b2)
        out.append(q - lr * mhat / (np.sqrt(vhat) + eps))
    return out


def case_optim(c):
    cls_name = c["cls"]
    pbuilt = [build(r, f"params[{i}]") for i, r in enumerate(c["params"])]
    params = [b.obj for b in pbuilt]
    kw = dict(c["kwargs"])
    lr = c["lr"]
    cexp = Expect()
    expect_real(cexp, lr, "lr", minimum=0.0)
    for k in ("momentum", "weight_decay", "eps", "clip_norm", "clip_value"):
        if k in kw and (kw[k] is not None or k not in ("clip_norm", "clip_value")):
            expect_real(cexp, kw[k], k, minimum=0.0)
    if "dampening" in kw:
        expect_real(cexp, kw["dampening"], "dampening", allow_nan=True)
    if "betas" in kw:
        betas = kw["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            cexp.bad("betas")
        else:
            for i, b in enumerate(betas):
                expect_real(cexp, b, "betas", allow_nan=False)
                if is_real(b) and not float_overflows(b) and not (0 <= float(b) < 1):
                    cexp.bad("betas")
    if kw.get("nesterov") and cexp.outcome == "accept":
        if not (float(kw.get("momentum", 0)) > 0 and float(kw.get("dampening", 0)) == 0):
            cexp.bad("nesterov", "momentum", "dampening")
    for i, p in enumerate(params):
        if not write_ok(p) or unaligned(p):
            # refused by the constructor or by the first step: the library's choice
            cexp.either("params", f"params[{i}]")
    cls = getattr(optim, cls_name)
    status, opt = call_checked(lambda: cls(params, lr, **kw), cexp, pbuilt)
    if status != "ok":
        return
    # ----------------------------------------------------------------- step
    gbuilt = [build(r, f"grads[{i}]") for i, r in enumerate(c["grads"])]
    grads = [b.obj for b in gbuilt]
    sexp = Expect()
    clip_value = kw.get("clip_value")
    grad_ok = write_ok if clip_value is not None else read_ok
    for i, p in enumerate(params):
        if not write_ok(p):
            sexp.bad(f"params[{i}]")
        elif unaligned(p):
            sexp.either(f"params[{i}]")
    for i, g in enumerate(grads):
        if not grad_ok(g):
            sexp.bad(f"grads[{i}]")
        elif grad_ok is write_ok and unaligned(g):
            sexp.either(f"grads[{i}]")
        elif write_view(g) is None:
            sexp.either(f"grads[{i}]")    # a list or scalar: converted, or refused
    if len(grads) != len(params):
        sexp.bad("grads", "params")
    else:
        for i, (p, g) in enumerate(zip(params, grads)):
            pv, gv = write_view(p), read_view(g)
            if pv is None or gv is None or not write_ok(p) or not grad_ok(g):
                continue
            if pv.shape != gv.shape or pv.dtype != gv.dtype:
                sexp.bad(f"grads[{i}]", f"params[{i}]")
    total = c["total_norm"]
    if total is not None and (kw.get("clip_norm") is not None or kw.get("skip_nonfinite")):
        expect_real(sexp, total, "total_norm", allow_nan=True)
    elif total is not None and not is_real(total):
        sexp.either("total_norm")
    if kw.get("skip_nonfinite") and sexp.reasons:
        # a step skipped for a non-finite gradient norm touches nothing, so the library
        # may skip it before (or without) looking at the rest of its arguments
        gnorm = total
        if gnorm is None and all(read_ok(g) for g in grads):
            gnorm = ref_norm([np.asarray(read_view(g)) for g in grads])
        if is_real(gnorm) and not float_overflows(gnorm) and not math.isfinite(float(gnorm)):
            for names, _ in sexp.reasons:
                sexp.either(*names)
            sexp.reasons = []
    state = []
    for attr in ("buffers", "exp_avg", "exp_avg_sq"):
        for i, s in enumerate(getattr(opt, attr, None) or []):
            state.append(Built(s, s.reshape(-1) if s.flags.c_contiguous else None,
                               np.arange(s.size), f"{attr}[{i}]"))
    pbefore = [np.array(write_view(p), copy=True) if write_ok(p) else None for p in params]
    gbefore = [np.array(read_view(g), copy=True) if read_ok(g) else None for g in grads]
    count = opt.step_count
    status, applied = call_checked(lambda: opt.step(grads, total_norm=total), sexp,
                                   pbuilt + gbuilt + state)
    if status == "raised":
        if opt.step_count != count:
            fail("a step that raised still counted as a step")
        return
    if sexp.outcome != "accept" or not isinstance(lr, (int, float)) or total is not None:
        return
    if applied is not True and not kw.get("skip_nonfinite"):
        fail(f"step returned {applied!r}")
    if applied is not True:
        return
    if not all_finite(*pbefore, *gbefore) or not all(
            is_real(v) and math.isfinite(float(v)) for k, v in kw.items()
            if k not in ("betas", "nesterov", "skip_nonfinite") and v is not None):
        return
    if any(float(np.max(np.abs(x), initial=0.0)) > 1e10 for x in pbefore + gbefore):
        return
    if any(b.dtype == F16 for b in gbefore):
        return
    expected = _ref_first_step(cls_name, pbefore, gbefore, float(lr), kw,
                               kw.get("clip_norm"), kw.get("clip_value"))
    for i, (p, e) in enumerate(zip(params, expected)):
        got = np.asarray(write_view(p), dtype=np.float64)
        tol = dict(rtol=1e-5, atol=1e-6) if write_view(p).dtype == F32 else dict(rtol=1e-9,
                                                                                 atol=1e-12)
        tol["atol"] *= max(1.0, float(lr)) * 10
        if not np.allclose(got, e, equal_nan=True, **tol):
            fail(f"{cls_name} first step: params[{i}] = {got.ravel()[:4]} expected "
                 f"{e.ravel()[:4]}")


# ------------------------------------------------------------------ gradcore.nn

def case_nn(c):
    cls = getattr(gnn, c["cls"])
    ctor = dict(c["ctor"])
    cexp = Expect()
    for k in ("input_size", "hidden_size", "num_layers"):
        v = ctor[k]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
            cexp.bad(k)
        elif v < 1:
            cexp.bad(k)
    dt = ctor.get("dtype", np.float32)
    try:
        dtv = np.dtype(dt)
    except TypeError:
        dtv = None
    if dt is None:
        cexp.either("dtype")
    elif dtv is None or not any(dtv == d for d in (F32, F64)):   # np.dtype == None is True
        cexp.bad("dtype")
    if c["cls"] == "RNN" and ctor.get("nonlinearity", "tanh") not in ("tanh", "relu"):
        cexp.bad("nonlinearity")
    status, layer = call_checked(lambda: cls(**ctor), cexp, [])
    if status != "ok":
        return
    params_before = [p.copy() for p in layer.parameters()]
    fw = c["forward"]
    xb = build(fw["x"], "x")
    x = read_view(xb.obj)
    fexp = Expect()
    if x is None or x.dtype != layer.dtype:
        fexp.bad("x")
    elif x.ndim not in (2, 3) or x.shape[-1] != layer.input_size:
        fexp.bad("x", shapes=(x.shape,))
    batched = x is not None and x.ndim == 3
    batch = None
    if batched and fexp.outcome == "accept":
        batch = x.shape[0] if layer.batch_first else x.shape[1]
    LD = layer.num_layers * layer.num_directions
    state_shape = None
    if x is not None and fexp.outcome == "accept":
        state_shape = (LD, batch, layer.hidden_size) if batched else (LD, layer.hidden_size)
    is_lstm = c["cls"] == "LSTM"
    h0_spec = fw["h0"]
    h0_built = []

    def state_arg(spec, label):
        if spec is None:
            return None
        if spec == "junk":
            return 3
        if spec[0] == "pair":
            parts = []
            for j, s in enumerate(spec[1:]):
                if s is None:
                    parts.append(None)
                else:
                    b = build(s, f"{label}[{j}]")
                    h0_built.append(b)
                    parts.append(b.obj)
            return tuple(parts)
        b = build(spec, label)
        h0_built.append(b)
        return b.obj

    h0 = state_arg(h0_spec, "h0")

    def expect_state(exp, value, label, names):
        if value is None:
            return
        if is_lstm:
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                exp.bad(label)
                return
            parts = value
        else:
            if isinstance(value, (tuple, list)):
                exp.bad(label)
                return
            parts = (value,)
        for v, name in zip(parts, names):
            if v is None:
                continue
            a = read_view(v)
            if a is None or a.dtype != layer.dtype:
                exp.bad(label, name)
            elif state_shape is not None and a.shape != state_shape:
                exp.bad(label, name, shapes=(a.shape,))

    expect_state(fexp, h0, "h0", ("h0", "c0") if is_lstm else ("h0",))
    status, out = call_checked(lambda: layer.forward(xb.obj, h0), fexp, [xb] + h0_built)
    for i, (p, b) in enumerate(zip(layer.parameters(), params_before)):
        if not same_bits(p, b):
            fail(f"forward modified parameter {i}")
    if status != "ok" or fexp.outcome != "accept":
        return
    output, hn = out
    D, H = layer.num_directions, layer.hidden_size
    if batched:
        T = x.shape[1] if layer.batch_first else x.shape[0]
        want = (batch, T, D * H) if layer.batch_first else (T, batch, D * H)
    else:
        T = x.shape[0]
        want = (T, D * H)
    if not (isinstance(output, np.ndarray) and output.shape == want and output.dtype == layer.dtype):
        fail(f"{c['cls']}.forward output {getattr(output, 'shape', output)!r}, expected {want}")
    h_n = hn[0] if is_lstm else hn
    if h_n.shape != state_shape:
        fail(f"h_n shape {h_n.shape}, expected {state_shape}")
    # the same bits from a C-contiguous x (and states)
    xc = np.ascontiguousarray(np.array(x, copy=True))

    def contiguous_state(value):
        if value is None:
            return None
        if is_lstm:
            return tuple(None if v is None else np.ascontiguousarray(read_view(v)) for v in value)
        return np.ascontiguousarray(read_view(value))

    out_c, hn_c = layer.forward(xc, contiguous_state(h0))
    if not same_bits(out_c, output):
        fail(f"{c['cls']}.forward output depends on x's memory layout")
    # ----------------------------------------------------------------- backward
    bw = c["backward"]
    gb = None
    gbuilt = []
    if bw["grad_output"] == "shape":
        gb = build(("arr", layer.dtype.str, want, bw["layout"], True, "normal", bw["seed"], 1, 1),
                   "grad_output")
    elif bw["grad_output"] is not None:
        gb = build(bw["grad_output"], "grad_output")
    if gb is not None:
        gbuilt.append(gb)
    grad_output = None if gb is None else gb.obj
    bexp = Expect()
    if grad_output is not None:
        g = read_view(grad_output)
        if g is None or g.dtype != layer.dtype:
            bexp.bad("grad_output")
        elif g.shape != want:
            bexp.bad("grad_output", shapes=(g.shape,))
    h0_built = []
    ghn = state_arg(bw["grad_h_n"], "grad_h_n")
    gbuilt += h0_built
    expect_state(bexp, ghn, "grad_h_n", ("grad_h_n", "grad_c_n") if is_lstm else ("grad_h_n",))
    clip = bw["clip_hidden"]
    if clip is not None:
        expect_real(bexp, clip, "clip_hidden", minimum=0.0, positive=True)
    status, grads = call_checked(
        lambda: layer.backward(grad_output, ghn, clip_hidden=clip, retain_cache=True), bexp, gbuilt)
    if status != "ok" or bexp.outcome != "accept":
        return
    if list(grads.keys()) != list(layer.state_dict().keys()):
        fail(f"backward keys {list(grads.keys())}")
    for (name, p) in layer.named_parameters():
        if grads[name].shape != p.shape or grads[name].dtype != p.dtype:
            fail(f"gradient {name} has shape {grads[name].shape}, parameter {p.shape}")
    if grads.input.shape != x.shape:
        fail(f"input gradient shape {grads.input.shape} != x {x.shape}")
    # the same bits again (cache retained), from C-contiguous gradients
    g2 = layer.backward(None if grad_output is None else np.ascontiguousarray(read_view(grad_output)),
                        contiguous_state(ghn), clip_hidden=clip)
    for name in grads:
        if not same_bits(grads[name], g2[name]):
            fail(f"backward {name} differs between two calls / memory layouts")
    if not same_bits(grads.input, g2.input):
        fail("backward input gradient differs between two calls / memory layouts")


# ------------------------------------------------------------------ set_num_threads

def case_set_num_threads(c):
    n = c["n"]
    expect = Expect()
    if isinstance(n, np.integer):
        expect.either("n")
        if n < 1:
            expect.bad("n")
    elif isinstance(n, bool) or not isinstance(n, int):
        expect.bad("n")
    elif n < 1:
        expect.bad("n")
    elif n > 64:
        expect.either("n")      # accepted (capped or not) or refused: both fine
    big = np.random.default_rng(0).standard_normal(300_001).astype(np.float32)
    before = gradcore.global_norm([big])
    a = np.random.default_rng(1).standard_normal((67, 45))
    mm_before = gradcore.matmul(a, a, trans_b=True)
    status, _ = call_checked(lambda: gradcore.set_num_threads(n), expect, [])
    if status != "ok":
        return
    got = gradcore.get_num_threads()
    if expect.outcome == "accept" and got != int(n):
        fail(f"get_num_threads() = {got} after set_num_threads({n})")
    if not (isinstance(got, int) and got >= 1):
        fail(f"get_num_threads() = {got!r}")
    # the kernels still work with that many threads, and give the same answers
    try:
        after = gradcore.global_norm([big])
        mm_after = gradcore.matmul(a, a, trans_b=True)
        x = np.ones((3, 2, 4))
        r = gradcore.rnn_forward(x, None, np.full((9, 4), 0.1), np.full((9, 3), 0.1), cell="gru")
        gradcore.rnn_backward(r.cache, np.ones((3, 2, 3)))
        gradcore.dense_backward(*(np.ones(s) for s in ((70, 80), (70, 90), (80, 90), (70, 80))))
    except BaseException as exc:  # noqa: BLE001
        fail(f"after set_num_threads({n}) accepted, a kernel raised {type(exc).__name__}: {exc}")
    if np.float64(after).tobytes() != np.float64(before).tobytes():
        fail(f"global_norm changed with {n} threads: {before!r} -> {after!r}")
    assert_gemm_close(mm_after, mm_before, np.abs(a) @ np.abs(a).T, F64, 45, what="matmul")


# ------------------------------------------------------------------ dispatch

CASES = {
    "global_norm": case_norms, "norms": case_norms, "grad_stats": case_norms,
    "clip_by_value_": case_clip_by_value, "clip_by_norm_": case_clip_by_norm,
    "clip_by_global_norm_": case_clip_by_global_norm, "adaptive_clip_": case_adaptive_clip,
    "matmul": case_matmul, "dense_forward": case_dense_forward,
    "dense_backward": case_dense_backward, "rnn": case_rnn, "optim": case_optim, "nn": case_nn,
    "set_num_threads": case_set_num_threads,
}


def run_case(case):
    """Runs one case in this process; raises CaseFailure (or anything) on a violation."""
    if case["fn"] == "_selftest_crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if case["fn"] == "_selftest_hang":
        import time
        time.sleep(3600)
    previous_isa, previous_threads = gradcore.info()["isa"], gradcore.get_num_threads()
    gradcore._core._set_isa(case.get("isa", previous_isa))
    gradcore.set_num_threads(case.get("threads", previous_threads))
    try:
        with np.errstate(all="ignore"):
            CASES[case["fn"]](case)
    finally:
        gradcore._core._set_isa(previous_isa)
        gradcore._core.set_num_threads(previous_threads)


# =========================================================================== the child

_FRAME = struct.Struct("<Q")


def _write_frame(fd, payload):
    data = _FRAME.pack(len(payload)) + payload
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd, n, deadline=None):
    import time
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _serve(in_fd, out_fd):
    """The child's loop: read a case, run it, answer ("ok", "") or ("fail", report)."""
    while True:
        try:
            (size,) = _FRAME.unpack(_read_exact(in_fd, _FRAME.size))
        except EOFError:
            return
        case = pickle.loads(_read_exact(in_fd, size))
        try:
            run_case(case)
            reply = ("ok", "")
        except BaseException as exc:  # noqa: BLE001 - everything goes back to pytest
            reply = ("fail", "".join(traceback.format_exception(exc)))
        _write_frame(out_fd, pickle.dumps(reply))


_CHILD_BOOT = """
import faulthandler, os, sys
faulthandler.enable()
sys.path.insert(0, {tests!r})
proto = os.dup(1)
os.dup2(2, 1)
import importlib.util
spec = importlib.util.spec_from_file_location("_gradcore_fuzz_child", {path!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod._serve(0, proto)
"""


class ChildRunner:
    """A long-lived child process that runs cases; restarted after a crash or hang."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.timeout = float(os.environ.get("GRADCORE_FUZZ_TIMEOUT", "60"))
        self.proc = None
        self.stderr_path = os.path.join(workdir, "child-stderr.txt")

    def start(self):
        here = os.path.dirname(os.path.abspath(__file__))
        checkout = os.path.dirname(here)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.abspath(p) != checkout)
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_BOOT.format(tests=here, path=os.path.abspath(__file__))],
            cwd=self.workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=env)

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()
            self.proc = None

    def _stderr_tail(self):
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def __call__(self, case):
        import time
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            _write_frame(self.proc.stdin.fileno(), pickle.dumps(case))
            deadline = time.monotonic() + self.timeout
            fd = self.proc.stdout.fileno()
            (size,) = _FRAME.unpack(_read_exact(fd, _FRAME.size, deadline))
            status, report = pickle.loads(_read_exact(fd, size, deadline))
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
            tail = self._stderr_tail()
            self.stderr.close()
            self.proc = None
            raise AssertionError(f"the case did not finish within {self.timeout:.0f} s "
                                 f"(a hang or deadlock); child stderr:\n{tail}") from None
        except (EOFError, BrokenPipeError):
            rc = self.proc.wait()
            tail = self._stderr_tail()
            self.stderr.close()
            self.proc = None
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            raise AssertionError(f"the process running the case died ({how}); child "
                                 f"stderr:\n{tail}") from None
        if status != "ok":
            raise AssertionError("in the child process:\n" + report)


@pytest.fixture(scope="module")
def runner():
    if os.environ.get("GRADCORE_FUZZ_INPROCESS") == "1":
        yield run_case
        return
    with tempfile.TemporaryDirectory(prefix="gradcore-fuzz-") as workdir:
        r = ChildRunner(workdir)
        try:
            yield r
        finally:
            r.stop()


# =========================================================================== the tests

def test_harness_reports_a_crash_and_a_hang(runner, monkeypatch):
    """The child harness turns a segfault and a hang into failures (and recovers)."""
    if not isinstance(runner, ChildRunner):
        pytest.skip("GRADCORE_FUZZ_INPROCESS=1: no child process")
    with pytest.raises(AssertionError, match="SIGSEGV"):
        runner({"fn": "_selftest_crash"})
    monkeypatch.setattr(runner, "timeout", 2.0)
    with pytest.raises(AssertionError, match="did not finish"):
        runner({"fn": "_selftest_hang"})
    monkeypatch.undo()
    runner({"fn": "global_norm", "arrays": ("list", []), "ord": 2})   # back to work


@examples(1.5)
@given(fn=st.sampled_from(["global_norm", "norms", "grad_stats"]), valid=st.booleans(),
       data=st.data(), cfg=configs())
def test_fuzz_norms(runner, fn, valid, data, cfg):
    arrays_ = data.draw(containers(readable_elements, valid=valid), label="arrays")
    ord_ = data.draw(st.sampled_from(ORD_GOOD) if valid else ords, label="ord")
    runner(dict(cfg, fn=fn, arrays=arrays_, ord=ord_))


@st.composite
def clip_cases(draw, fn):
    """Arguments of one clipping call: half of the cases all valid (extreme values and
    any container kind included), half with anything anywhere."""
    valid = draw(st.booleans())
    case = dict(fn=fn, functional=draw(st.booleans()),
                arrays=draw(containers(writable_elements, valid=valid)))
    real = good_reals if valid else reals
    if fn == "clip_by_value_":
        if valid:
            kind = draw(st.sampled_from(["value", "min", "max", "both"]))
            lo, hi = sorted(draw(st.lists(st.sampled_from([-math.inf, -2.0, -0.5, 0.0, 0.5, 3.0,
                                                            math.inf]), min_size=2, max_size=2)))
            case.update(clip_value=draw(st.sampled_from([0.0, 0.5, 1.0, 1e30, math.inf]))
                        if kind == "value" else None,
                        min=lo if kind in ("min", "both") else None,
                        max=hi if kind in ("max", "both") else None)
        else:
            case.update(draw(st.one_of(
                st.fixed_dictionaries({"clip_value": reals, "min": st.none(), "max": st.none()}),
                st.fixed_dictionaries({"clip_value": st.none(), "min": st.none() | reals,
                                       "max": st.none() | reals}),
                st.fixed_dictionaries({"clip_value": reals, "min": reals,
                                       "max": st.none() | reals}))))
        return case
    case.update(max_norm=draw(real), ord=draw(st.sampled_from(ORD_GOOD) if valid else ords),
                eps=draw(st.sampled_from([1e-6, 0.0, 1e-30]) if valid else st.just(1e-6) | reals))
    if fn == "clip_by_global_norm_":
        case["nonfinite"] = draw(st.sampled_from(POLICIES) if valid else st.one_of(
            st.sampled_from(POLICIES), st.sampled_from(["Error", "", None, 1, ["skip"],
                                                        "propagate "])))
        case["total_norm"] = draw(st.none() | st.none() | (
            st.sampled_from([0.0, 0.5, 3.0, 1e30, math.inf, math.nan]) if valid else reals))
    return case


@examples(1.0)
@given(case=clip_cases("clip_by_value_"), cfg=configs())
def test_fuzz_clip_by_value(runner, case, cfg):
    runner(dict(cfg, **case))


@examples(1.0)
@given(case=clip_cases("clip_by_norm_"), cfg=configs())
def test_fuzz_clip_by_norm(runner, case, cfg):
    runner(dict(cfg, **case))


@examples(1.5)
@given(case=clip_cases("clip_by_global_norm_"), cfg=configs())
def test_fuzz_clip_by_global_norm(runner, case, cfg):
    runner(dict(cfg, **case))


@st.composite
def agc_cases(draw):
    """Matching grads/params lists: half of the cases valid throughout, half with
    hostile elements, lengths, shapes and arguments."""
    valid = draw(st.booleans())
    n = draw(st.integers(0, 4))
    grads, params = [], []
    for _ in range(n):
        shape = draw(shapes(max_ndim=4, max_dim=4))
        if valid:
            grads.append(draw(nice_arrays(shape=st.just(shape), fills=VALID_FILLS)))
            params.append(draw(arrays(shape=st.just(shape), fills=VALID_FILLS)))
            continue
        grads.append(draw(st.one_of(nice_arrays(shape=st.just(shape)),
                                    nice_arrays(shape=st.just(shape)),
                                    hostile_elements)))
        pshape = shape if draw(st.integers(0, 5)) else draw(shapes(max_ndim=4, max_dim=4))
        params.append(draw(st.one_of(arrays(shape=st.just(pshape)), hostile_elements)))
    gk = draw(st.sampled_from(["list", "list", "tuple", "gen"]))
    pk = draw(st.sampled_from(["list", "list", "tuple", "gen"]))
    case = dict(fn="adaptive_clip_", functional=draw(st.booleans()))
    if valid:
        case.update(clipping=draw(st.sampled_from([0.01, 0.1, 1.0, 0.0, 1e-30])),
                    eps=draw(st.sampled_from([1e-3, 1e-6, 0.0])),
                    unit_axis=draw(st.integers(-1, 1)))
    else:
        if draw(st.integers(0, 7)) == 0:
            params = params[:-1] if params else [draw(arrays())]
        if draw(st.integers(0, 9)) == 0:
            gk, grads = "py", [("py", draw(st.sampled_from([None, "g", 1.0])))]
        case.update(clipping=draw(st.just(0.01) | reals), eps=draw(st.just(1e-3) | reals),
                    unit_axis=draw(st.one_of(st.integers(-4, 4), st.sampled_from(
                        [2**40, -(2**40), 1.0, None, True, "0", np.int64(1)]))))
    case.update(grads=(gk, grads), params=(pk, params))
    return case


@examples(1.0)
@given(case=agc_cases(), cfg=configs())
def test_fuzz_adaptive_clip(runner, case, cfg):
    runner(dict(cfg, **case))


def matrix_args(rows, cols, dtypes=WRITE_DTYPES, valid=False):
    """Well-formed matrices of the given dims (any layout, read-only or not); unless
    `valid`, sometimes anything at all."""
    good = arrays(dtypes=dtypes, shape=st.tuples(st.just(rows), st.just(cols)),
                  fills=VALID_FILLS if valid else FLOAT_FILLS)
    if valid:
        return good
    return st.one_of(good, good, good, good, arrays(), hostile_elements)


@st.composite
def matmul_cases(draw):
    valid = draw(st.booleans())
    m, k, n = (draw(st.integers(0, 9)) for _ in range(3))
    if draw(st.integers(0, 4)) == 0:
        m, k, n = draw(st.integers(1, 70)), draw(st.integers(1, 300)), draw(st.integers(1, 40))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    dt = draw(st.sampled_from(WRITE_DTYPES)).str
    a = draw(matrix_args(*((k, m) if ta else (m, k)), dtypes=(dt,), valid=valid))
    b = draw(matrix_args(*((n, k) if tb else (k, n)), dtypes=(dt,), valid=valid))
    kinds = ["none", "fresh"] if valid else ["none", "none", "fresh", "fresh", "alias", "junk"]
    out_kind = draw(st.sampled_from(kinds))
    out = None
    if out_kind == "fresh":
        fresh = nice_arrays(dtypes=(dt,), shape=st.just((m, n)), fills=VALID_FILLS)
        out = draw(fresh if valid else st.one_of(fresh, arrays(dtypes=(dt,), shape=st.just((m, n))),
                                                 arrays()))
    elif out_kind == "alias":
        out = ("alias", draw(st.sampled_from(["a", "b"])), draw(st.sampled_from(["same", "T", "rows"])))
    elif out_kind == "junk":
        out = draw(hostile_elements)
    if valid:
        beta = draw(st.sampled_from([0.0, 0.0, 1.0, -0.5, 2.0])) if out is not None else 0.0
        alpha = draw(st.sampled_from([1.0, -0.5, 0.0, 3.0, np.float32(2.0), 1e-30]))
    else:
        beta = draw(st.one_of(st.just(0.0), st.just(0.0), reals)) if out is not None else \
            draw(st.one_of(st.just(0.0), st.just(0.0), st.just(0.0), reals))
        alpha = draw(st.one_of(st.just(1.0), st.just(-0.5), reals))
    return dict(a=a, b=b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, out=out)


@examples(1.5)
@given(case=matmul_cases(), cfg=configs())
def test_fuzz_matmul(runner, case, cfg):
    runner(dict(cfg, fn="matmul", **case))


@st.composite
def dense_forward_cases(draw):
    valid = draw(st.booleans())
    batch, n_in, n_out = (draw(st.integers(0, 8)) for _ in range(3))
    if draw(st.integers(0, 4)) == 0:
        batch, n_in, n_out = (draw(st.integers(1, 80)) for _ in range(3))
    dt = draw(st.sampled_from(WRITE_DTYPES)).str
    x = draw(matrix_args(batch, n_in, (dt,), valid))
    w = draw(matrix_args(n_out, n_in, (dt,), valid))
    good_bias = arrays(dtypes=(dt,), shape=st.just((n_out,)),
                       fills=VALID_FILLS if valid else FLOAT_FILLS)
    if valid:
        bias = draw(st.none() | good_bias)
        act = draw(st.sampled_from(ACTIVATIONS))
        slope = draw(st.sampled_from([0.01, 0.0, 0.2, 1.0, -0.5]))
        out_kind = draw(st.sampled_from(["none", "none", "fresh"]))
    else:
        bias = draw(st.one_of(st.none(), good_bias, good_bias, arrays(), hostile_elements))
        act = draw(st.one_of(st.sampled_from(ACTIVATIONS),
                             st.sampled_from(["Tanh", "swish", "", None, 3, ["relu"]])))
        slope = draw(st.one_of(st.just(0.01), reals))
        out_kind = draw(st.sampled_from(["none", "none", "none", "fresh", "alias"]))
    out = None
    if out_kind == "fresh":
        fresh = nice_arrays(dtypes=(dt,), shape=st.just((batch, n_out)))
        out = draw(fresh if valid else st.one_of(fresh, arrays(), hostile_elements))
    elif out_kind == "alias":
        out = ("alias", draw(st.sampled_from(["x", "weight"])), "same")
    return dict(x=x, weight=w, bias=bias, activation=act, negative_slope=slope, out=out)


@examples(1.0)
@given(case=dense_forward_cases(), cfg=configs())
def test_fuzz_dense_forward(runner, case, cfg):
    runner(dict(cfg, fn="dense_forward", **case))


@st.composite
def dense_backward_cases(draw):
    valid = draw(st.booleans())
    batch, n_in, n_out = (draw(st.integers(0, 7)) for _ in range(3))
    if draw(st.integers(0, 4)) == 0:
        batch, n_in, n_out = (draw(st.integers(1, 60)) for _ in range(3))
    dt = draw(st.sampled_from(WRITE_DTYPES)).str
    case = dict(grad_y=draw(matrix_args(batch, n_out, (dt,), valid)),
                x=draw(matrix_args(batch, n_in, (dt,), valid)),
                weight=draw(matrix_args(n_out, n_in, (dt,), valid)),
                y=draw(matrix_args(batch, n_out, (dt,), valid)))
    if valid:
        case["activation"] = draw(st.sampled_from(ACTIVATIONS))
        case["negative_slope"] = draw(st.sampled_from([0.01, 0.0, 0.2, 1.0]))
    else:
        case["activation"] = draw(st.one_of(st.sampled_from(ACTIVATIONS),
                                            st.sampled_from(["x", None])))
        case["negative_slope"] = draw(st.one_of(st.just(0.01), reals))
    case["has_bias"], case["need_grad_x"] = draw(st.booleans()), draw(st.booleans())
    case["accumulate"] = draw(st.booleans())
    outs = {}
    for name, shape in (("grad_x", (batch, n_in)), ("grad_weight", (n_out, n_in)),
                        ("grad_bias", (n_out,))):
        if draw(st.booleans()) or case["accumulate"] and (valid or draw(st.booleans())):
            fresh = nice_arrays(dtypes=(dt,), shape=st.just(shape), fills=("normal", "zero"))
            outs[name] = draw(fresh if valid else st.one_of(
                fresh, fresh, arrays(dtypes=(dt,), shape=st.just(shape)), arrays(),
                hostile_elements))
    case["outs"] = outs
    return case


@examples(1.0)
@given(case=dense_backward_cases(), cfg=configs())
def test_fuzz_dense_backward(runner, case, cfg):
    runner(dict(cfg, fn="dense_backward", **case))


@st.composite
def rnn_cases(draw):
    valid = draw(st.booleans())
    cell = draw(st.sampled_from(list(GATES)) if valid else st.one_of(
        st.sampled_from(list(GATES)), st.sampled_from(["LSTM", "gru ", "", None, 4, ["lstm"]])))
    G = GATES.get(cell, 4) if isinstance(cell, str) else 4
    T, B, I, H = (draw(st.integers(0, 4)) for _ in range(4))
    dt = draw(st.sampled_from(WRITE_DTYPES)).str
    fills = ("small",) * (12 if valid else 3) + ("zero", "denormal", "special", "huge", "mixed")

    def arg(shape, optional=False):
        good = arrays(dtypes=(dt,), shape=st.just(shape), fills=fills)
        options = [good] * 5 + ([] if valid else [arrays(fills=fills), hostile_elements])
        if optional:
            options += [st.none(), st.none(), st.none()]
        return draw(st.one_of(*options))

    lstm = cell == "lstm"
    extra = not valid and draw(st.integers(0, 5)) == 0     # c0 / grad_c_n for other cells
    case = dict(cell=cell, x=arg((T, B, I)), h0=arg((B, H), True),
                weight_ih=arg((G * H, I)), weight_hh=arg((G * H, H)),
                bias_ih=arg((G * H,), True), bias_hh=arg((G * H,), True),
                c0=arg((B, H), True) if lstm or extra else None)
    clip = st.sampled_from([None, None, 0.5, 1e-3, 10.0, math.inf]) if valid else st.one_of(
        st.none(), st.none(), st.just(0.5), reals)
    bw = dict(grad_y=arg((T, B, H)), grad_h_n=arg((B, H), True),
              grad_c_n=arg((B, H), True) if lstm or extra else None,
              clip_hidden=draw(clip),
              cache="cache" if valid else draw(st.sampled_from(["cache"] * 8 + ["tuple", "dict",
                                                                                "none"])))
    case["backward"] = bw
    return case


@examples(1.5)
@given(case=rnn_cases(), cfg=configs())
def test_fuzz_rnn(runner, case, cfg):
    runner(dict(cfg, fn="rnn", **case))


@st.composite
def optim_cases(draw):
    cls = draw(st.sampled_from(list(OPT_KW)))
    n = draw(st.integers(0, 4))
    pshapes = [draw(shapes(max_ndim=3, max_dim=5)) for _ in range(n)]
    pdt = [draw(st.sampled_from(WRITE_DTYPES)).str for _ in range(n)]
    fills = ("normal", "normal", "small", "zero", "special", "huge", "denormal")
    params = [draw(st.one_of(nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                             nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                             nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                             arrays(shape=st.just(s)), hostile_elements))
              for s, d in zip(pshapes, pdt)]
    grads = [draw(st.one_of(nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                            nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                            nice_arrays(dtypes=(d,), shape=st.just(s), fills=fills),
                            arrays(dtypes=(d,), shape=st.just(s)), arrays(), hostile_elements))
             for s, d in zip(pshapes, pdt)]
    if draw(st.integers(0, 7)) == 0:
        grads = grads[:-1] if grads else [draw(arrays())]
    kw = {}
    for k in OPT_KW[cls]:
        if draw(st.integers(0, 2)) == 0:
            continue
        if k == "betas":
            kw[k] = draw(st.one_of(st.just((0.9, 0.999)), st.just((0.5, 0.9)),
                                   st.sampled_from([(1.0, 0.9), (0.9,), None, "ab", (0.9, -0.1),
                                                    (0.9, math.nan), [0.8, 0.99]])))
        elif k == "nesterov":
            kw[k] = draw(st.booleans())
        elif k == "momentum":
            kw[k] = draw(st.one_of(st.just(0.9), st.just(0.0), reals))
        elif k == "dampening":
            kw[k] = draw(st.one_of(st.just(0.0), reals))
        else:
            kw[k] = draw(st.one_of(st.just(1e-8 if k == "eps" else 0.01), reals))
    for k in ("clip_norm", "clip_value"):
        if draw(st.integers(0, 2)) == 0:
            kw[k] = draw(st.one_of(st.just(1.0), st.just(0.1), reals))
    if draw(st.booleans()):
        kw["skip_nonfinite"] = True
    lr = draw(st.one_of(st.just(0.1), st.just(1e-3), reals))
    total = draw(st.one_of(st.none(), st.none(), st.none(), reals))
    return dict(cls=cls, params=params, grads=grads, kwargs=kw, lr=lr, total_norm=total)


@examples(1.5)
@given(case=optim_cases(), cfg=configs())
def test_fuzz_optimizers(runner, case, cfg):
    runner(dict(cfg, fn="optim", **case))


@st.composite
def nn_cases(draw):
    valid = draw(st.booleans())
    cls = draw(st.sampled_from(["RNN", "LSTM", "GRU"]))
    sizes = st.integers(1, 4) if valid else st.one_of(
        st.integers(1, 4), st.integers(1, 4),
        st.sampled_from([0, -1, 2.0, True, "3", None, np.int64(2)]))
    ctor = dict(input_size=draw(sizes), hidden_size=draw(sizes),
                num_layers=draw(st.one_of(st.integers(1, 2), st.integers(1, 2), sizes)),
                bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()),
                bias=draw(st.booleans()), rng=draw(st.integers(0, 100)))
    if not valid and draw(st.integers(0, 3)) == 0:
        ctor["dtype"] = draw(st.sampled_from([np.float64, "float32", np.float16, "int32", None,
                                              "nonsense", complex]))
    else:
        ctor["dtype"] = draw(st.sampled_from(["float32", "float64"]))
    if cls == "RNN" and draw(st.booleans()):
        ctor["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"] if valid else
                                                    ["tanh", "relu", "relu", "sigmoid", None]))
    I = ctor["input_size"] if isinstance(ctor["input_size"], int) and ctor["input_size"] > 0 else 2
    H = ctor["hidden_size"] if isinstance(ctor["hidden_size"], int) and ctor["hidden_size"] > 0 else 2
    L = ctor["num_layers"] if isinstance(ctor["num_layers"], int) and ctor["num_layers"] > 0 else 1
    D = 2 if ctor["bidirectional"] else 1
    dt = np.dtype(ctor["dtype"]).str if ctor["dtype"] in ("float32", "float64", np.float64) else "<f4"
    T, B = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    batched = draw(st.integers(0, 3)) > 0
    xshape = ((B, T, I) if ctor["batch_first"] else (T, B, I)) if batched else (T, I)
    fills = ("small",) * (8 if valid else 3) + ("zero", "special", "huge")
    good = arrays(dtypes=(dt,), shape=st.just(xshape), fills=fills)
    x = draw(good if valid else st.one_of(good, good, good, arrays(fills=fills),
                                           hostile_elements))
    sshape = (L * D, B, H) if batched else (L * D, H)
    sgood = arrays(dtypes=(dt,), shape=st.just(sshape), fills=fills)
    pair = st.tuples(st.just("pair"), st.none() | sgood, st.none() | sgood)
    if valid:
        state = st.none() | (pair if cls == "LSTM" else sgood)
    else:
        state = st.one_of(st.none(), st.none(), sgood, st.just("junk"), pair, arrays(),
                          hostile_elements)
    clip = st.sampled_from([None, None, 0.5, 10.0]) if valid else st.one_of(
        st.none(), st.none(), st.just(0.5), reals)
    bw = dict(grad_output=draw(st.sampled_from(["shape", "shape", None]) if valid else st.one_of(
                  st.just("shape"), st.just("shape"), st.none(), arrays(), hostile_elements)),
              layout=draw(st.sampled_from(["c", "T", "neg", "step", "bcast"])),
              seed=draw(seeds), grad_h_n=draw(state), clip_hidden=draw(clip))
    return dict(cls=cls, ctor=ctor, forward=dict(x=x, h0=draw(state)), backward=bw)


@examples(1.5)
@given(case=nn_cases(), cfg=configs())
def test_fuzz_nn_layers(runner, case, cfg):
    runner(dict(cfg, fn="nn", **case))


@examples(0.5)
@given(n=st.one_of(st.integers(-3, 40), st.integers(41, 300),
                   st.sampled_from([True, False, 2.0, "2", None, np.int64(2), [2], 1j])),
       cfg=configs())
def test_fuzz_set_num_threads(runner, n, cfg):
    runner(dict(cfg, fn="set_num_threads", n=n))


@pytest.mark.parametrize("n", [1, 4096, 100_000, 2**31 - 1, 2**31, 2**63, 10**30],
                         ids=lambda n: f"n={n}")
def test_set_num_threads_large(runner, n, monkeypatch):
    """Huge thread counts: refused properly, or accepted and the kernels still work
    (within 30 s: starting 100 000 threads takes ~5 s here)."""
    if isinstance(runner, ChildRunner):
        monkeypatch.setattr(runner, "timeout", min(runner.timeout, 30.0))
    runner({"fn": "set_num_threads", "n": n, "isa": ISAS[-1], "threads": 1})


# =========================================================================== reproducers
# Minimal inputs, one per property, that the fuzzing above found or that probe a known
# weak spot: each is a plain case run through the same checks, so that a failure here
# names the exact call.

def _arr(dtype="<f8", shape=(3,), layout="c", readonly=False, fill="normal", seed=0):
    return ("arr", dtype, shape, layout, readonly, fill, seed, 0, 0)


_CFG = {"isa": ISAS[-1], "threads": 1}
REPRODUCERS = {
    # in-place functions: a ragged nested list is rejected, naming the element
    "clip_by_value_-ragged-list-element": dict(
        fn="clip_by_value_", arrays=("list", [_arr(), ("py", [[1.0], [2.0, 3.0]])]),
        clip_value=1.0, min=None, max=None),
    # a bare 2-D memoryview as `arrays`: one array, or a proper rejection
    "global_norm-bare-2d-memoryview": dict(
        fn="global_norm", arrays=("single", [("memoryview", _arr(shape=(2, 2)))]), ord=2),
    "clip_by_value-functional-bare-2d-memoryview": dict(
        fn="clip_by_value_", functional=True,
        arrays=("single", [("memoryview", _arr(shape=(2, 2)))]),
        clip_value=1.0, min=None, max=None),
    "clip_by_global_norm-functional-bare-0d-memoryview": dict(
        fn="clip_by_global_norm_", functional=True,
        arrays=("single", [("memoryview", _arr(shape=()))]), max_norm=1.0, ord=2, eps=1e-6,
        nonfinite="propagate", total_norm=None),
    # huge ints as real arguments: inf, or TypeError/ValueError naming them
    "norms-ord-huge-int": dict(fn="norms", arrays=("list", [_arr()]), ord=10**400),
    "clip_by_global_norm_-max_norm-huge-int": dict(
        fn="clip_by_global_norm_", arrays=("list", [_arr()]), max_norm=10**400, ord=2,
        eps=1e-6, nonfinite="propagate", total_norm=None),
    "clip_by_value_-clip_value-huge-int": dict(
        fn="clip_by_value_", arrays=("list", [_arr()]), clip_value=10**400, min=None, max=None),
    "matmul-alpha-huge-int": dict(
        fn="matmul", a=_arr(shape=(2, 2)), b=_arr(shape=(2, 2)), trans_a=False, trans_b=False,
        alpha=10**400, beta=0.0, out=None),
    "SGD-lr-huge-int": dict(
        fn="optim", cls="SGD", params=[_arr()], grads=[_arr()], kwargs={}, lr=10**400,
        total_norm=None),
    # arguments that pybind11 cannot convert: named, not "incompatible function arguments"
    "adaptive_clip_-unit_axis-2**40": dict(
        fn="adaptive_clip_", grads=("list", [_arr(shape=(2, 2))]),
        params=("list", [_arr(shape=(2, 2), seed=1)]), clipping=0.01, eps=1e-3,
        unit_axis=2**40),
    "dense_forward-activation-None": dict(
        fn="dense_forward", x=_arr(shape=(2, 2)), weight=_arr(shape=(2, 2), seed=1), bias=None,
        activation=None, negative_slope=0.01, out=None),
    "dense_backward-activation-None": dict(
        fn="dense_backward", grad_y=_arr(shape=(2, 2)), x=_arr(shape=(2, 2), seed=1),
        weight=_arr(shape=(2, 2), seed=2), y=_arr(shape=(2, 2), seed=3), activation=None,
        negative_slope=0.01, has_bias=True, need_grad_x=True, accumulate=False, outs={}),
    # byte-swapped float64 inputs: refused, or read correctly -- never misread
    "matmul-big-endian-inputs": dict(
        fn="matmul", a=_arr(">f8", (2, 2)), b=_arr(">f8", (2, 2), seed=1), trans_a=False,
        trans_b=False, alpha=1.0, beta=0.0, out=None),
    "dense_forward-big-endian-weight": dict(
        fn="dense_forward", x=_arr(shape=(2, 2)), weight=_arr(">f8", (2, 2), seed=1), bias=None,
        activation="identity", negative_slope=0.01, out=None),
    "dense_backward-big-endian-x": dict(
        fn="dense_backward", grad_y=_arr(shape=(2, 2)), x=_arr(">f8", (2, 2), seed=1),
        weight=_arr(shape=(2, 2), seed=2), y=_arr(shape=(2, 2), seed=3), activation="identity",
        negative_slope=0.01, has_bias=True, need_grad_x=True, accumulate=False, outs={}),
    "rnn_forward-big-endian-x": dict(
        fn="rnn", cell="lstm", x=_arr(">f8", (2, 1, 2), fill="small"), h0=None,
        weight_ih=_arr(shape=(4, 2), fill="small", seed=1),
        weight_hh=_arr(shape=(4, 1), fill="small", seed=2), bias_ih=None, bias_hh=None, c0=None,
        backward=dict(grad_y=_arr(shape=(2, 1, 1)), grad_h_n=None, grad_c_n=None,
                      clip_hidden=None, cache="cache")),
    # matmul(out=...) overlapping an input: out is still checked (shape, flags, dtype)
    "matmul-out-overlapping-a-wrong-shape": dict(
        fn="matmul", a=_arr(shape=(3, 3)), b=_arr(shape=(3, 1), seed=1), trans_a=False,
        trans_b=False, alpha=1.0, beta=0.0, out=("alias", "a", "same")),
    "matmul-out-overlapping-a-read-only": dict(
        fn="matmul", a=_arr(shape=(3, 3), readonly=True), b=_arr(shape=(3, 3), seed=1),
        trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=("alias", "a", "same")),
    "matmul-out-overlapping-a-not-contiguous": dict(
        fn="matmul", a=_arr(shape=(3, 3)), b=_arr(shape=(3, 3), seed=1), trans_a=False,
        trans_b=False, alpha=1.0, beta=0.0, out=("alias", "a", "T")),
    # optimisers: a step that raises leaves the gradients as they were
    "SGD-clip_value-then-shape-error": dict(
        fn="optim", cls="SGD", params=[_arr("<f4")], grads=[_arr("<f4", (4,), fill="huge")],
        kwargs={"clip_value": 1.0}, lr=0.1, total_norm=None),
    # optimisers: errors name the optimiser's arguments (grads[i]), not arrays[i]
    "SGD-clip_norm-grads-None-message": dict(
        fn="optim", cls="SGD", params=[_arr()], grads=[("py", None)],
        kwargs={"clip_norm": 1.0}, lr=0.1, total_norm=None),
    "Adam-betas-None": dict(
        fn="optim", cls="Adam", params=[_arr()], grads=[_arr()], kwargs={"betas": None},
        lr=0.1, total_norm=None),
    "Adam-betas-one-value": dict(
        fn="optim", cls="Adam", params=[_arr()], grads=[_arr()], kwargs={"betas": (0.9,)},
        lr=0.1, total_norm=None),
    # optimisers: an empty parameter list is valid
    "SGD-momentum-empty-params": dict(
        fn="optim", cls="SGD", params=[], grads=[], kwargs={"momentum": 0.9}, lr=0.1,
        total_norm=None),
    # optimisers: a ragged nested list as a parameter: the error names params
    "SGD-momentum-ragged-params-message": dict(
        fn="optim", cls="SGD", params=[("py", [[1.0], [2.0, 3.0]])], grads=[_arr()],
        kwargs={"momentum": 0.9}, lr=0.1, total_norm=None),
    # AGC with a NaN in a parameter unit: the contract's max(||p||, eps) is NaN, and (like
    # torch's clamp, NumPy's maximum and tests/reference.py) the unit is left as it is
    "adaptive_clip_-nan-in-param-unit": dict(
        fn="adaptive_clip_", grads=("list", [_arr(shape=(4,))]),
        params=("list", [_arr(shape=(4,), fill="special", seed=3)]), clipping=0.01, eps=1e-3,
        unit_axis=0),
}


@pytest.mark.parametrize("name", list(REPRODUCERS))
def test_reproducer(runner, name):
    runner(dict(_CFG, **REPRODUCERS[name]))
