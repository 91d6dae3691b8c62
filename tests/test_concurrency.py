"""gradcore under concurrency: many Python threads at once, the kernel thread
count changing underneath them, nesting inside thread pools, and fork.

docs/architecture.md, the rules of the house: the GIL is released around every kernel call and kernels are
re-entrant; results do not depend on the thread count beyond reassociation, and norms
are deterministic for a given count. So every concurrent call must give *exactly* (bit
for bit) the answer the same call gives alone in one thread: the norms by design (the
work is split by array sizes only), matmul/dense/rnn because each call is deterministic
(and, as it happens, independent of the thread count: the changing-thread-count test
compares against the answer of every count it uses).

Every wait has a timeout, so that a deadlock fails a test instead of hanging the run:
workers are daemon threads joined with a timeout; the test that nests gradcore inside
``concurrent.futures.ThreadPoolExecutor`` and the fork tests run in child processes that
are killed when they overrun.

Free-threaded CPython (``Py_GIL_DISABLED``) is not claimed by gradcore; its test is
skipped on a regular build and, on a free-threaded one, checks that the GIL stays off
and that the same concurrent calls still give the single-threaded answers.

GRADCORE_CONCURRENCY_ROUNDS (default 4) sets how many calls each thread makes per test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time

import numpy as np
import pytest

import gradcore
import gradcore.nn as gnn
from gradcore import optim

N_THREADS = 8
ROUNDS = int(os.environ.get("GRADCORE_CONCURRENCY_ROUNDS", "4"))
TIMEOUT = 120.0          # seconds for any one wait; generous for a loaded 2-core machine
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(TESTS_DIR)


# --------------------------------------------------------------------------- workloads
# Each workload is a function of no arguments that builds its own (fresh, seeded) inputs,
# runs gradcore and returns everything it computed as a tuple of NumPy arrays / floats.
# Inputs are large enough that the kernels split their work over the pool.


def _rng(seed):
    return np.random.default_rng(seed)


_CACHE = {}


def _grad_list(seed=0):
    """Mixed float16/32/64 list, ~480k elements: many parallel chunks. Built once and
    cached read-only (the read-only functions must not need writeable memory)."""
    if seed not in _CACHE:
        rng = _rng(seed)
        shapes = [(384, 512), (150_001,), (7,), (33, 17, 5), (0, 3), (65_536,), (129, 257)]
        dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32, np.float16,
                  np.float64]
        arrays = [(rng.standard_normal(s) * 3).astype(d) for s, d in zip(shapes, dtypes)]
        for a in arrays:
            a.flags.writeable = False
        _CACHE[seed] = arrays
    return _CACHE[seed]


def _inplace_list(seed=0):
    """Fresh writeable float32/float64 copies of _grad_list(seed)."""
    return [a.astype(np.float32) if a.dtype == np.float16 else a.copy() for a in _grad_list(seed)]


def w_norms():
    arrays = _grad_list()
    return (gradcore.global_norm(arrays), gradcore.global_norm(arrays, 1),
            gradcore.global_norm(arrays, float("inf")), gradcore.global_norm(arrays, 3.5),
            gradcore.norms(arrays), *gradcore.grad_stats(arrays))


def w_clip():
    a, b, c, d = (_inplace_list() for _ in range(4))
    total = gradcore.clip_by_global_norm_(a, 10.0)
    norms = gradcore.clip_by_norm_(b, 5.0, ord=2)
    gradcore.clip_by_value_(c, 0.5)
    params = _inplace_list(seed=1)
    gradcore.adaptive_clip_(d, params, 0.01)
    copies, total2 = gradcore.clip_by_global_norm(_inplace_list(seed=2), 3.0)
    return (total, norms, *a, *b, *c, *d, total2, *copies)


def w_matmul():
    rng = _rng(2)
    a = rng.standard_normal((301, 203)).astype(np.float32)
    b = rng.standard_normal((203, 157)).astype(np.float32)
    a64 = rng.standard_normal((97, 250))
    out = rng.standard_normal((250, 250))
    r1 = gradcore.matmul(a, b)
    r2 = gradcore.matmul(b, a, trans_a=True, trans_b=True)
    r3 = gradcore.matmul(a64, a64, trans_a=True, alpha=0.5, beta=2.0, out=out)
    r4 = gradcore.matmul(a[::2, ::-1], b[::-1, :])          # strided and reversed inputs
    return r1, r2, r3, r4


def w_dense():
    rng = _rng(3)
    x = rng.standard_normal((128, 300)).astype(np.float32)
    w = rng.standard_normal((200, 300)).astype(np.float32) * 0.05
    bias = rng.standard_normal(200).astype(np.float32)
    y = gradcore.dense_forward(x, w, bias, "tanh")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = gradcore.dense_backward(gy, x, w, y, "tanh")
    y2 = gradcore.dense_forward(x.astype(np.float64), w.astype(np.float64), None, "leaky_relu",
                                negative_slope=0.1)
    return y, gx, gw, gb, y2


def w_rnn():
    rng = _rng(4)
    out = []
    for cell, g in (("lstm", 4), ("gru", 3), ("rnn_tanh", 1)):
        x = rng.standard_normal((24, 16, 32)).astype(np.float32)
        h0 = rng.standard_normal((16, 48)).astype(np.float32) * 0.5
        wih = rng.uniform(-0.15, 0.15, (g * 48, 32)).astype(np.float32)
        whh = rng.uniform(-0.15, 0.15, (g * 48, 48)).astype(np.float32)
        bih = rng.uniform(-0.15, 0.15, g * 48).astype(np.float32)
        fwd = gradcore.rnn_forward(x, h0, wih, whh, bih, None, cell=cell)
        grads = gradcore.rnn_backward(fwd.cache, np.ones_like(fwd.y), clip_hidden=0.5)
        out += [fwd.y, fwd.h_n] + [v for v in grads if v is not None]
    return tuple(out)


def w_optim():
    rng = _rng(5)
    out = []
    for cls, kw in ((optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, clip_norm=1.0)),
                    (optim.Adam, dict(lr=1e-3, weight_decay=0.01, clip_value=0.5)),
                    (optim.AdamW, dict(lr=1e-3))):
        params = [rng.standard_normal(s).astype(np.float32) for s in ((300, 300), (301,), (5, 7))]
        opt = cls(params, **kw)
        for _ in range(3):
            opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
        out += params
    return tuple(out)


def w_nn():
    layer = gnn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True, rng=0)
    x = _rng(6).standard_normal((8, 20, 16)).astype(np.float32)
    y, (h, c) = layer.forward(x)
    g = layer.backward(np.ones_like(y), clip_hidden=1.0)
    return (y, h, c, g.input, *g.values())


WORKLOADS = {"norms": w_norms, "clip": w_clip, "matmul": w_matmul, "dense": w_dense,
             "rnn": w_rnn, "optim": w_optim, "nn": w_nn}


# --------------------------------------------------------------------------- helpers


def _bits(result):
    """A hashable, bit-exact summary of a workload's result."""
    return tuple(np.asarray(v).dtype.str + ":" + repr(np.asarray(v).shape) + ":" +
                 np.asarray(v).tobytes().hex() for v in result)


def _first_difference(result, expected):
    for i, (a, b) in enumerate(zip(result, expected)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            with np.errstate(all="ignore"):
                diff = float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))) \
                    if a.shape == b.shape and a.size else float("nan")
            return f"output {i}: shape {a.shape}/{b.shape}, dtype {a.dtype}/{b.dtype}, max |diff| {diff:.3g}"
    return "lengths differ" if len(result) != len(expected) else "no difference"


def run_threads(target, n, timeout=TIMEOUT):
    """Runs target(i) on n daemon threads started together; returns their results.
    Raises the first exception; fails the test if any thread has not finished within
    `timeout` seconds (a deadlock must not hang the run)."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, [None] * n

    def body(i):
        try:
            barrier.wait(timeout)
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[i] = exc

    threads = [threading.Thread(target=body, args=(i,), daemon=True, name=f"gradcore-test-{i}")
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        pytest.fail(f"{len(stuck)} of {n} threads still running after {timeout:.0f} s "
                    f"(deadlock?): {stuck}")
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def run_script(code, tmp_path, timeout=TIMEOUT, env=None):
    """Runs Python code in a fresh interpreter outside the checkout (so the installed
    gradcore is imported); returns its stdout. Fails on a non-zero exit or a timeout
    (the child is killed)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in full_env.get("PYTHONPATH", "").split(os.pathsep)
        if p and os.path.abspath(p) != CHECKOUT)
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child process did not finish within {timeout:.0f} s (deadlock?); "
                    f"stdout: {exc.stdout!r}; stderr: {exc.stderr!r}")
    if proc.returncode != 0:
        how = (f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        pytest.fail(f"the child process failed ({how}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture
def two_threads():
    previous = gradcore.get_num_threads()
    gradcore.set_num_threads(2)
    yield 2
    gradcore.set_num_threads(previous)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_many_threads_same_function_bit_identical(isa, threads, name):
    """8 Python threads running the same kernels at once get the single-threaded
    answer, bit for bit, on every ISA target and with 1 or 2 kernel threads."""
    fn = WORKLOADS[name]
    expected = fn()
    assert _bits(fn()) == _bits(expected), f"{name} is not deterministic even serially"

    def work(i):
        return [fn() for _ in range(ROUNDS)]

    for t, outputs in enumerate(run_threads(work, N_THREADS)):
        for r, result in enumerate(outputs):
            assert _bits(result) == _bits(expected), (
                f"{name}: thread {t}, call {r} differs from the single-threaded answer: "
                f"{_first_difference(result, expected)}")


def test_mixed_functions_concurrently(threads):
    """Every thread cycles through all the workloads from a different starting point, so
    different kernels (norms, clipping, GEMM, RNN, optimisers, nn layers) overlap."""
    names = list(WORKLOADS)
    expected = {n: _bits(WORKLOADS[n]()) for n in names}

    def work(i):
        out = []
        for r in range(ROUNDS * 2):
            name = names[(i + r) % len(names)]
            out.append((name, WORKLOADS[name]()))
        return out

    for t, outputs in enumerate(run_threads(work, N_THREADS)):
        for name, result in outputs:
            assert _bits(result) == expected[name], (
                f"{name} in thread {t} (mixed with other kernels) differs from the "
                f"single-threaded answer")


def test_changing_thread_count_while_kernels_run():
    """One thread keeps calling set_num_threads (1..4) while 6 threads run kernels: no
    crash, no deadlock, and every result equals the answer of one of those counts (all
    of them the same for the norms, which must not depend on the count at all)."""
    previous = gradcore.get_num_threads()
    counts = (1, 2, 3, 4)
    names = ["norms", "clip", "matmul", "dense", "rnn", "optim"]
    answers = {}
    try:
        for n in counts:
            gradcore.set_num_threads(n)
            for name in names:
                answers.setdefault(name, set()).add(_bits(WORKLOADS[name]()))
        assert len(answers["norms"]) == 1, "norms differ between thread counts"
        assert len(answers["clip"]) == 1, "clipping differs between thread counts"
        stop = threading.Event()
        changes = [0]

        def work(i):
            if i == 0:
                rng = np.random.default_rng(0)
                while not stop.is_set():
                    gradcore.set_num_threads(int(rng.choice(counts)))
                    changes[0] += 1
                    time.sleep(0.0005)
                return None
            try:
                out = []
                for r in range(ROUNDS * 2):
                    name = names[(i + r) % len(names)]
                    out.append((name, _bits(WORKLOADS[name]())))
                return out
            finally:
                if i == 1:
                    stop.set()

        results = run_threads(work, 7)
    finally:
        gradcore.set_num_threads(previous)
    assert changes[0] > 1, "the thread count never changed during the test"
    for t, outputs in enumerate(results[1:], start=1):
        for name, bits in outputs:
            assert bits in answers[name], (
                f"{name} in thread {t}, with the thread count changing, matches the answer "
                f"of none of the counts {counts}")
    assert gradcore.get_num_threads() == previous


def test_same_rnn_cache_backward_from_many_threads():
    """One forward cache, backpropagated by 8 threads at once: the backward only reads
    its cache, so every thread gets the single-threaded gradients."""
    rng = _rng(7)
    x = rng.standard_normal((30, 8, 24))
    wih, whh = rng.uniform(-0.2, 0.2, (4 * 40, 24)), rng.uniform(-0.2, 0.2, (4 * 40, 40))
    fwd = gradcore.rnn_forward(x, None, wih, whh, cell="lstm")
    gy = rng.standard_normal(fwd.y.shape)
    expected = _bits(gradcore.rnn_backward(fwd.cache, gy))

    def work(i):
        return [_bits(gradcore.rnn_backward(fwd.cache, gy)) for _ in range(ROUNDS)]

    for t, outputs in enumerate(run_threads(work, N_THREADS)):
        assert all(b == expected for b in outputs), f"thread {t}: backward differs"


def test_shared_read_only_inputs(two_threads):
    """All threads read the very same (read-only, strided) input arrays at once."""
    rng = _rng(8)
    base = rng.standard_normal((600, 500))
    a = base[::2, ::-1]
    a.flags.writeable = False
    arrays = [base, a, base.T]
    expected = (_bits([gradcore.global_norm(arrays), *gradcore.norms(arrays, 3)]),
                _bits([gradcore.matmul(a, a, trans_b=True)]))

    def work(i):
        return [(_bits([gradcore.global_norm(arrays), *gradcore.norms(arrays, 3)]),
                 _bits([gradcore.matmul(a, a, trans_b=True)])) for _ in range(ROUNDS)]

    for outputs in run_threads(work, N_THREADS):
        assert all(o == expected for o in outputs)


def test_nested_in_thread_pool_executor(tmp_path):
    """gradcore called from ThreadPoolExecutor workers, with gradcore's own pool at 2
    threads: tasks that themselves submit gradcore work to a second executor and wait for
    it, all with future.result(timeout=...). Runs in a child process so that a deadlock
    is killed rather than left blocking the interpreter's exit."""
    out = run_script(f"""
        import concurrent.futures as cf, os, sys
        sys.path.insert(0, {TESTS_DIR!r})
        import numpy as np, gradcore
        from test_concurrency import WORKLOADS, _bits
        gradcore.set_num_threads(2)
        names = list(WORKLOADS)
        expected = {{n: _bits(WORKLOADS[n]()) for n in names}}
        inner = cf.ThreadPoolExecutor(4)

        def task(i):
            name = names[i % len(names)]
            # work handed to another pool and awaited from inside this pool's thread
            sub = [inner.submit(WORKLOADS[names[(i + k) % len(names)]]) for k in (1, 2)]
            mine = _bits(WORKLOADS[name]())
            assert mine == expected[name], ("outer", name)
            for k, f in zip((1, 2), sub):
                n = names[(i + k) % len(names)]
                assert _bits(f.result(timeout=60)) == expected[n], ("inner", n)
            return i

        outer = cf.ThreadPoolExecutor(8)
        futures = [outer.submit(task, i) for i in range(24)]
        done = sorted(f.result(timeout=90) for f in futures)
        assert done == list(range(24)), done
        print("ok", gradcore.get_num_threads())
        sys.stdout.flush()
        os._exit(0)   # never wait for pool threads at exit
    """, tmp_path, timeout=180)
    assert out.split() == ["ok", "2"]


def test_gradcore_inside_argument_conversion():
    """Re-entrancy from Python: an element of the list is an object whose __array__
    itself calls gradcore while the outer call is converting its arguments."""

    class Lazy:
        def __init__(self, data):
            self.data = data
            self.inner = None

        def __array__(self, dtype=None, copy=None):
            self.inner = gradcore.global_norm([self.data, self.data.T])
            return self.data

    data = _rng(9).standard_normal((300, 400))
    plain = gradcore.global_norm([data, data])
    lazy = Lazy(data)

    def work(i):
        return [gradcore.global_norm([data, lazy]) for _ in range(ROUNDS)]

    for outputs in run_threads(work, 4):
        assert all(np.float64(v).tobytes() == np.float64(plain).tobytes() for v in outputs)
    assert lazy.inner == gradcore.global_norm([data, data])


def _wait_child(pid, timeout):
    """Exit status of a forked child, killing it (and failing) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not finish within {timeout:.0f} s "
                        "(deadlock after fork?)")
        time.sleep(0.01)


def _child_checks(expected):
    """In a forked child: the kernels on the pool give the parent's answers."""
    try:
        gradcore.set_num_threads(2)
        for name in ("norms", "matmul", "rnn", "clip"):
            if _bits(WORKLOADS[name]()) != expected[name]:
                os.write(2, f"child: {name} differs\n".encode())
                return 3
        gradcore.set_num_threads(3)                   # the pool can be resized there too
        if _bits(WORKLOADS["matmul"]()) != expected["matmul"]:
            return 4
        return 0
    except BaseException as exc:  # noqa: BLE001
        os.write(2, f"child: {type(exc).__name__}: {exc}\n".encode())
        return 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_the_pool_was_used(two_threads):
    """The pool's workers do not survive fork(); the child must start its own and get
    the same answers (pthread_atfork resets the pool), and so must the parent after."""
    expected = {n: _bits(WORKLOADS[n]()) for n in ("norms", "matmul", "rnn", "clip")}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(_child_checks(expected))
    assert _wait_child(pid, TIMEOUT) == 0, "the forked child's kernels failed"
    assert _bits(WORKLOADS["matmul"]()) == expected["matmul"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_other_threads_are_inside_kernels(two_threads):
    """fork() while other threads are inside kernels (holding the pool, its workers
    mid-task): the child must not inherit a held lock or wait for workers that no longer
    exist."""
    expected = {n: _bits(WORKLOADS[n]()) for n in ("norms", "matmul", "rnn", "clip")}
    stop = threading.Event()
    errors = []

    def busy():
        try:
            while not stop.is_set():
                WORKLOADS["matmul"]()
                WORKLOADS["norms"]()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        statuses = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os._exit(_child_checks(expected))
            statuses.append(_wait_child(pid, TIMEOUT))
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
    assert not errors, errors
    assert statuses == [0, 0, 0], f"forked children exited with {statuses}"


def _mp_task(i):
    gradcore.set_num_threads(2)
    name = ("norms", "matmul", "rnn", "dense")[i % 4]
    return name, _bits(WORKLOADS[name]())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_multiprocessing_fork_pool_after_use(two_threads):
    """A multiprocessing Pool with the "fork" start method, created after the pool was
    used in the parent: the workers compute the parent's answers."""
    import multiprocessing

    expected = {n: _bits(WORKLOADS[n]()) for n in ("norms", "matmul", "rnn", "dense")}
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(2)
    try:
        results = pool.map_async(_mp_task, range(8)).get(timeout=TIMEOUT)
    except multiprocessing.TimeoutError:
        pool.terminate()
        pytest.fail(f"the fork-started pool did not finish within {TIMEOUT:.0f} s")
    else:
        pool.close()
    finally:
        pool.join()
    for name, bits in results:
        assert bits == expected[name], f"{name} differs in a fork-started worker"


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(not FREE_THREADED,
                    reason="this CPython is not a free-threaded build (Py_GIL_DISABLED unset); "
                           "gradcore does not claim free-threaded support")
def test_free_threaded_python():
    """On a free-threaded CPython: importing gradcore leaves the GIL disabled, and truly
    parallel Python threads still get the single-threaded answers."""
    assert not sys._is_gil_enabled(), (
        "importing gradcore re-enabled the GIL (the extension does not declare free-threading "
        "support)")
    names = list(WORKLOADS)
    expected = {n: _bits(WORKLOADS[n]()) for n in names}

    def work(i):
        return [(names[(i + r) % len(names)], _bits(WORKLOADS[names[(i + r) % len(names)]]()))
                for r in range(ROUNDS * 2)]

    for outputs in run_threads(work, N_THREADS):
        for name, bits in outputs:
            assert bits == expected[name], name

