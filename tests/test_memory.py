"""No memory growth over many calls of every entry point, including calls that raise.

Each entry point is called WARMUP times (filling caches, thread-local packing buffers,
the pool's threads, NumPy's and Python's free lists), then twice CALLS times; after each
stretch the process is measured:

- RSS, from /proc/self/statm (resource's peak RSS where /proc is missing);
- the C heap in use (glibc ``mallinfo2``: bytes handed out by malloc, arenas of all
  threads and mmapped blocks), which sees C++ allocations byte for byte;
- ``sys.getallocatedblocks()`` (Python objects: a leaked reference is a block a call);
- then, in a third stretch of CALLS calls, tracemalloc's traced memory (Python objects
  and NumPy array data).

Growth is the smaller of the two stretches' growths (a real leak grows in both; a
one-off allocator step, e.g. a new malloc arena, in one), and must stay within a small
allowance plus a per-call budget far below what a leak of 1 KB a call gives:

    RSS   1 MiB   + 128 bytes/call        heap   256 KiB + 64 bytes/call
    blocks 200    + 0.02 blocks/call      traced 128 KiB + 32 bytes/call

With the default CALLS (2000) the whole file takes about 20 s; a leak of 1 KB a call
shows as 2 MB (or 2000 blocks) per stretch, and test_a_leak_of_1kb_per_call_is_caught
checks that such leaks (Python data, C heap, Python objects) do fail the check.

GRADCORE_MEMORY_CALLS=100000 runs 100 000 calls per entry point (opt-in:
about a quarter of an hour on 2 cores); test_long_run_interleaved (every entry point
in turn, 10 000 rounds a stretch) runs only then.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import gc
import mmap
import os
import sys
import tracemalloc

import numpy as np
import pytest

import gradcore
import gradcore.nn as gnn
from gradcore import optim

DEFAULT_CALLS = 2000
LONG_RUN_CALLS = 100_000
CALLS = int(os.environ.get("GRADCORE_MEMORY_CALLS", DEFAULT_CALLS))
WARMUP = 200

LIMITS = {            # (allowance, per call)
    "rss": (1 << 20, 128),
    "heap": (256 << 10, 64),
    "blocks": (200, 0.02),
    "traced": (128 << 10, 32),
}


# --------------------------------------------------------------------------- measuring

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _load_mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


_mallinfo2 = _load_mallinfo2()


def heap_bytes():
    """Bytes malloc has handed out and not got back (None without glibc's mallinfo2)."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return info.uordblks + info.hblkhd


def snapshot():
    gc.collect()
    return {"rss": rss_bytes(), "heap": heap_bytes(), "blocks": sys.getallocatedblocks()}


def check_no_growth(step, calls, what, calls_per_step=1):
    """Runs step() WARMUP + 3 * calls times and fails if memory grows with the calls."""
    for _ in range(max(WARMUP // calls_per_step, 10)):
        step()
    m0 = snapshot()
    for _ in range(calls):
        step()
    m1 = snapshot()
    for _ in range(calls):
        step()
    m2 = snapshot()
    growth = {k: min(m1[k] - m0[k], m2[k] - m1[k]) for k in m0 if m0[k] is not None}
    tracemalloc.start()
    try:
        for _ in range(10):
            step()
        gc.collect()
        t0 = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            step()
        gc.collect()
        growth["traced"] = tracemalloc.get_traced_memory()[0] - t0
    finally:
        tracemalloc.stop()
    n = calls * calls_per_step
    report = []
    for key, value in growth.items():
        allowance, per_call = LIMITS[key]
        limit = allowance + per_call * n
        if value > limit:
            report.append(f"{key} grew by {value} over {n} calls ({value / n:.1f} per call; "
                          f"limit {limit:.0f})")
    assert not report, f"{what}: " + "; ".join(report)


# --------------------------------------------------------------------------- entry points


def _raises(fn, exc_type):
    """A step that must raise exc_type (and nothing else)."""

    def step():
        try:
            fn()
        except exc_type:
            return
        raise AssertionError(f"{fn} did not raise {exc_type.__name__}")

    return step


def _entry_points():
    rng = np.random.default_rng(0)
    f32, f64 = np.float32, np.float64
    grads = [rng.standard_normal(s).astype(d) for s, d in
             (((2000,), f32), ((33, 17), f64), ((5,), np.float16), ((0,), f32), ((4, 3, 2), f64))]
    # big enough for the kernels to split the work over the pool
    big = [rng.standard_normal(70_000).astype(f32), rng.standard_normal((300, 100))]
    inplace = [a.astype(f32) if a.dtype == np.float16 else a.copy() for a in grads]
    params = [rng.standard_normal(a.shape).astype(a.dtype) for a in inplace]
    strided = rng.standard_normal((300, 200))[::3, ::-2]
    nan_list = [np.ones(1000, f32), np.ones(10, f64)]
    readonly = np.ones(10, f32)
    readonly.flags.writeable = False

    a = rng.standard_normal((40, 50)).astype(f32)
    b = rng.standard_normal((50, 30)).astype(f32)
    c = np.zeros((30, 40), f32)
    sq = rng.standard_normal((48, 48))
    x = rng.standard_normal((32, 40)).astype(f32)
    w = rng.standard_normal((24, 40)).astype(f32) * 0.1
    bias = rng.standard_normal(24).astype(f32)
    y = gradcore.dense_forward(x, w, bias, "tanh")
    gy = rng.standard_normal(y.shape).astype(f32)
    gbufs = dict(grad_x=np.zeros_like(x), grad_weight=np.zeros_like(w), grad_bias=np.zeros_like(bias))

    def rnn_case(cell, g, dtype=f32):
        xs = rng.standard_normal((12, 4, 10)).astype(dtype)
        h0 = rng.standard_normal((4, 16)).astype(dtype)
        wih = rng.uniform(-0.2, 0.2, (g * 16, 10)).astype(dtype)
        whh = rng.uniform(-0.2, 0.2, (g * 16, 16)).astype(dtype)
        bih = rng.uniform(-0.2, 0.2, g * 16).astype(dtype)
        c0 = h0.copy() if cell == "lstm" else None

        def step():
            fwd = gradcore.rnn_forward(xs, h0, wih, whh, bih, bih, cell=cell, c0=c0)
            gradcore.rnn_backward(fwd.cache, np.ones_like(fwd.y), fwd.h_n,
                                  fwd.c_n if cell == "lstm" else None, clip_hidden=1.0)
        return step, (xs, h0, wih, whh)

    lstm_step, (xs, h0, wih, whh) = rnn_case("lstm", 4)
    gru_step, _ = rnn_case("gru", 3, f64)
    cache = gradcore.rnn_forward(xs, h0, wih, whh, cell="lstm").cache

    def optimizer(cls, **kw):
        ps = [rng.standard_normal(s).astype(f32) for s in ((2000,), (30, 20))]
        gs = [rng.standard_normal(p.shape).astype(f32) * 1e-3 for p in ps]
        opt = cls(ps, **kw)
        return lambda: opt.step(gs)

    lstm = gnn.LSTM(6, 8, bidirectional=True, rng=0)
    gru = gnn.GRU(6, 8, batch_first=True, rng=0)
    xl = rng.standard_normal((6, 2, 6)).astype(f32)

    def nn_lstm():
        out, _ = lstm.forward(xl)
        lstm.backward(np.ones_like(out))

    def nn_gru():
        out, h = gru.forward(xl.transpose(1, 0, 2), np.zeros((1, 2, 8), f32))
        gru.backward(np.ones_like(out), np.ones_like(h), clip_hidden=0.1)

    def tbptt():
        gnn.truncated_bptt(gru, xl.transpose(1, 0, 2), 3, lambda s, out, h: np.ones_like(out))

    monitor = gradcore.GradientMonitor(["a", "b", "c", "d", "e"], window=20, warmup=5, history=64)
    loss = [0.0]

    def monitor_step():
        loss[0] += 1.0
        monitor.step(grads, params, loss[0])

    def nonfinite_zero():
        nan_list[0][3] = np.nan
        nan_list[1][0] = np.inf
        gradcore.clip_by_global_norm_(nan_list, 1.0, nonfinite="zero")

    def threads_and_info():
        gradcore.set_num_threads(gradcore.get_num_threads())
        gradcore.info()

    def overlapping_out():
        m = sq.copy()
        gradcore.matmul(m, sq, out=m)

    points = {
        "global_norm": lambda: gradcore.global_norm(grads),
        "global_norm-on-the-pool": lambda: gradcore.global_norm(big),
        "clip_by_global_norm_-on-the-pool": lambda: gradcore.clip_by_global_norm_(big, 1e4),
        "norms-p3": lambda: gradcore.norms(grads[1:], 3),
        "grad_stats": lambda: gradcore.grad_stats(grads),
        "global_norm-converted-inputs": lambda: gradcore.global_norm(
            [strided, [1.0, 2.0, 3.0], array.array("d", [1.0, 2.0]), 4.0, strided.T]),
        "clip_by_value_": lambda: gradcore.clip_by_value_(inplace, 2.0),
        "clip_by_norm_": lambda: gradcore.clip_by_norm_(inplace[1:], 50.0, ord=1.5),
        "clip_by_global_norm_": lambda: gradcore.clip_by_global_norm_(inplace, 1e3),
        "clip_by_global_norm_-total_norm": lambda: gradcore.clip_by_global_norm_(
            inplace, 1e3, total_norm=10.0),
        "clip_by_global_norm_-nonfinite-zero": nonfinite_zero,
        "adaptive_clip_": lambda: gradcore.adaptive_clip_(inplace, params, 0.5),
        "clip_by_value": lambda: gradcore.clip_by_value(grads[:2], 1.0),
        "clip_by_norm": lambda: gradcore.clip_by_norm(tuple(inplace), 1.0),
        "clip_by_global_norm": lambda: gradcore.clip_by_global_norm(
            {"w": inplace[0], "b": strided}, 1.0),
        "adaptive_clip": lambda: gradcore.adaptive_clip(inplace, params, 0.01),
        "matmul": lambda: gradcore.matmul(a, b),
        "matmul-trans-out-beta": lambda: gradcore.matmul(b, a, trans_a=True, trans_b=True,
                                                          beta=0.5, out=c),
        "matmul-strided": lambda: gradcore.matmul(strided, strided, trans_b=True),
        "matmul-overlapping-out": overlapping_out,
        "dense_forward": lambda: gradcore.dense_forward(x, w, bias, "sigmoid"),
        "dense_backward": lambda: gradcore.dense_backward(gy, x, w, y, "tanh"),
        "dense_backward-accumulate": lambda: gradcore.dense_backward(
            gy, x, w, y, "relu", accumulate=True, **gbufs),
        "rnn-lstm-forward-backward": lstm_step,
        "rnn-gru-float64-forward-backward": gru_step,
        "SGD": optimizer(optim.SGD, lr=0.01, momentum=0.9, clip_norm=1.0),
        "Adam": optimizer(optim.Adam, lr=1e-4, clip_value=1.0, skip_nonfinite=True),
        "AdamW": optimizer(optim.AdamW, lr=optim.CosineLR(1e-3, 100)),
        "nn.LSTM-forward-backward": nn_lstm,
        "nn.GRU-forward-backward": nn_gru,
        "nn.truncated_bptt": tbptt,
        "GradientMonitor.step": monitor_step,
        "set_num_threads-info": threads_and_info,
        # calls that raise
        "error-global_norm-object-dtype": _raises(
            lambda: gradcore.global_norm([grads[0], np.array([None, 1])]), TypeError),
        "error-clip_by_value_-read-only-element": _raises(
            lambda: gradcore.clip_by_value_([inplace[0], inplace[1], readonly], 1.0), ValueError),
        "error-clip_by_norm_-non-contiguous": _raises(
            lambda: gradcore.clip_by_norm_([inplace[0], strided], 1.0), ValueError),
        "error-in-place-list-element": _raises(
            lambda: gradcore.clip_by_global_norm_([inplace[0], [1.0, 2.0]], 1.0), TypeError),
        "error-clip_by_global_norm_-nonfinite-error": _raises(
            lambda: gradcore.clip_by_global_norm_([np.array([np.nan, 1.0])], 1.0,
                                                  nonfinite="error"),
            gradcore.NonFiniteGradientError),
        "error-adaptive_clip_-shape": _raises(
            lambda: gradcore.adaptive_clip_(inplace, params[::-1]), ValueError),
        "error-clip_by_norm-int16": _raises(
            lambda: gradcore.clip_by_norm([grads[0], np.ones(3, np.int16)], 1.0), TypeError),
        "error-matmul-shapes": _raises(lambda: gradcore.matmul(a, a), ValueError),
        "error-dense_forward-activation": _raises(
            lambda: gradcore.dense_forward(x, w, bias, "swish"), ValueError),
        "error-dense_backward-accumulate-without-buffers": _raises(
            lambda: gradcore.dense_backward(gy, x, w, y, accumulate=True), ValueError),
        "error-rnn_forward-h0-shape": _raises(
            lambda: gradcore.rnn_forward(xs, h0[:2], wih, whh, cell="lstm"), ValueError),
        "error-rnn_backward-grad_y-dtype": _raises(
            lambda: gradcore.rnn_backward(cache, np.ones((12, 4, 16))), TypeError),
        "error-optimizer-step-shapes": _raises(
            lambda: optim.SGD([np.ones(3, f32)], 0.1).step([np.ones(4, f32)]), ValueError),
        "error-nn-forward-dtype": _raises(lambda: lstm.forward(xl.astype(f64)), TypeError),
        "error-set_num_threads-0": _raises(lambda: gradcore.set_num_threads(0), ValueError),
    }
    try:
        import torch
        import gradcore.torch as gct
    except ImportError:
        return points
    tparams = [torch.nn.Parameter(torch.randn(s, dtype=dt)) for s, dt in
               (((300, 200), torch.float32), ((50,), torch.float64))]
    for p in tparams:
        p.grad = torch.randn_like(p) * 1e-3
    points.update({
        "torch.clip_grad_norm_": lambda: gct.clip_grad_norm_(tparams, 1e3),
        "torch.clip_grad_value_": lambda: gct.clip_grad_value_(tparams, 1.0),
        "torch.get_total_norm": lambda: gct.get_total_norm([p.grad for p in tparams]),
    })
    return points


_POINTS = None


def entry_points():
    global _POINTS
    if _POINTS is None:
        _POINTS = _entry_points()
    return _POINTS


NAMES = list(entry_points())


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module", autouse=True)
def frozen_gc():
    """Moves every object that exists now (NumPy, torch, pytest...) out of the garbage
    collector's sight, so that the gc.collect() before each measurement only looks at
    what the calls made: 100x faster, and the measurements are the same."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()



def test_measurements_work():
    """The meters see an allocation that is kept (so a leak would be seen)."""
    m0 = snapshot()
    # 32 MB of fresh pages for RSS: a fresh mapping, since NumPy's allocations may reuse
    # pages an earlier test freed (resident already, so RSS would not move).
    fresh = mmap.mmap(-1, 32 << 20)
    fresh.write(b"\1" * (32 << 20))
    objects = [object() for _ in range(10_000)]           # Python blocks
    raw = ctypes.create_string_buffer(40 << 20)           # 40 MB through malloc
    m1 = snapshot()
    assert m1["rss"] - m0["rss"] > 16 << 20
    assert m1["blocks"] - m0["blocks"] >= 10_000
    if m0["heap"] is not None:
        assert m1["heap"] - m0["heap"] > 32 << 20
    fresh.close()
    del objects, raw


_LEAKED = []


@pytest.mark.parametrize("kind", ["python-data", "c-malloc", "python-objects"])
def test_a_leak_of_1kb_per_call_is_caught(kind):
    """The thresholds are tight enough: a step that leaks 1 KB of Python data, 1 KB of
    C heap, or one small Python object per call fails the check at the default CALLS."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def leak():
        if kind == "python-data":
            _LEAKED.append(np.ones(128))             # 1 KB of NumPy data
        elif kind == "c-malloc":
            libc.memset(libc.malloc(1024), 1, 1024)   # 1 KB malloc'd, touched, never freed
        else:
            _LEAKED.append(object())                  # one leaked reference

    try:
        with pytest.raises(AssertionError, match="grew by"):
            check_no_growth(leak, DEFAULT_CALLS, f"leak {kind}")
    finally:
        _LEAKED.clear()


@pytest.mark.parametrize("name", NAMES)
def test_no_growth(name):
    """CALLS calls (twice, then once more under tracemalloc) of one entry point after a
    warm-up: no growth of RSS, heap, Python blocks or traced memory."""
    check_no_growth(entry_points()[name], CALLS, name)


def test_no_growth_interleaved():
    """All entry points, one after the other, CALLS // 40 times: no growth either when
    different kernels (and their thread-local buffers) alternate."""
    points = list(entry_points().values())

    def step():
        for p in points:
            p()

    check_no_growth(step, max(CALLS // 40, 20), "interleaved", calls_per_step=len(points))


@pytest.mark.skipif(CALLS < LONG_RUN_CALLS,
                    reason=f"opt-in: GRADCORE_MEMORY_CALLS={LONG_RUN_CALLS} runs "
                           f"{LONG_RUN_CALLS} calls per entry point (default {DEFAULT_CALLS})")
def test_long_run_interleaved():
    """The long run's scale, interleaved: all entry points one after the other, CALLS // 10
    times in each stretch."""
    points = list(entry_points().values())

    def step():
        for p in points:
            p()

    check_no_growth(step, CALLS // 10, "interleaved at the long run's scale",
                    calls_per_step=len(points))
