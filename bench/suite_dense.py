"""Suite "dense": matrix multiply and the dense layer, forward + backward.

Targets are the project's speed goals for the dense layer; every ratio is peer_time /
gradcore_time (> 1: gradcore is faster), measured side by side in this process.

Cases (matmul sizes are M×K×N: an (M, K) matrix times a (K, N) matrix)
  * 1a/1b  ``gradcore.matmul(a, b)`` float32 / float64, 2048×2048×2048
    (``--quick``: 1024³): >= 0.85x NumPy ``a @ b``.
  * 2a/2b  the same at 256×256×256: >= 0.9x NumPy.
  * 3a     ``gradcore.matmul(a, bt, trans_b=True)`` float32, 2048³ (``--quick``:
    1024³) vs NumPy ``a @ bt.T`` (informative, no target).
  * 3b     small/skinny 32×256×256 float32 (informative, no target).
  * 4a-4c  one dense forward then one backward, timed together, float32,
    batch × in × out:
      4a  32×256×256 relu:     >= 1.5x NumPy, >= 2x PyTorch (autograd)
      4b  64×512×512 tanh:     >= 1.2x NumPy
      4c  1024×2048×2048 relu: >= 0.9x NumPy  (``--quick``: 512×1024×1024)
    gradcore: ``y = dense_forward(x, W, b, act); gx, gW, gb = dense_backward(gy,
    x, W, y, act)``.  NumPy, written plainly as a user would: ``z = x @ W.T + b;
    y = act(z); gz = gy * (y > 0)`` (relu) or ``gy * (1 - y*y)`` (tanh); ``gx =
    gz @ W; gW = gz.T @ x; gb = gz.sum(0)``.  PyTorch: x, W, b are
    ``torch.from_numpy`` views of the same arrays with ``requires_grad``; ``y =
    act(F.linear(x, W, b)); torch.autograd.grad(y, (x, W, b), gy)`` (no gradient
    accumulation, nothing to reset between calls).

  * 5a-5e  the activations whose derivative needs z, in the same forward + backward at
    64×512×512 float32 against gradcore's own relu layer (4b's size): elu, silu,
    gelu_tanh, prelu (one slope per feature) within 10% of relu's time (ratio relu /
    activation >= 0.91), gelu within 25% (>= 0.8). gradcore: ``y, s =
    dense_forward(x, W, b, act, return_saved=True); dense_backward(gy, x, W, None, act,
    saved=s)``; PyTorch: ``act(F.linear(x, W, b))`` with F.elu,
    F.silu, F.gelu (approximate="none"/"tanh"), F.prelu (informative).

Data: a, b, x, gy ~ N(0, 1); W ~ N(0, 1) / sqrt(in) (so z = x @ W.T + b is
about N(0, 1): relu keeps about half the elements, tanh is not saturated); b ~
N(0, 0.1²).  Every implementation allocates its outputs on every call.

Machine limit: the FMA peak for the dtype, the best of the FMA probes (the active
instruction set on the library's threads) taken before every round of the case and
after the last (see machine.py).  "% of limit" = (flops / peak) / gradcore time =
gradcore GFLOP/s / peak GFLOP/s, with flops = 2·M·K·N for a matmul and 3 GEMMs =
6·batch·in·out for a dense forward + backward (bias, activation and reductions are not
counted).  No goal is set on it (informative).

Checks (outside the timed region): gradcore vs the NumPy result, max |diff| /
max |reference| <= 1e-4 (float32) or 1e-10 (float64) per output.  The dense
backward is checked against the NumPy backward computed from gradcore's own y
(its input): computing the mask from NumPy's y instead could flip the relu
derivative of an element with z ~ 0, where the two GEMMs round differently.
"""

from __future__ import annotations

import gc as _pygc
import math

from .common import SuiteResult, float32_problems, max_rel_err, run_check, time_gemm_case

NAME = "dense"
DESCRIPTION = ("matmul / dense_forward + dense_backward vs NumPy and PyTorch "
               "(GFLOP/s, fraction of the FMA peak)")
NEEDS = ("fma",)            # measured up front by the CLI (printed before the tables)

RTOL = {"float32": 1e-4, "float64": 1e-10}   # max |diff| / max |reference|

# goals (peer_time / gradcore_time)
T_MATMUL_BIG_NUMPY = 0.85
T_MATMUL_SMALL_NUMPY = 0.9
T_DENSE_SMALL_NUMPY = 1.5
T_DENSE_SMALL_TORCH = 2.0
T_DENSE_MID_NUMPY = 1.2
T_DENSE_BIG_NUMPY = 0.9
# within 10% of relu's time (1 / 1.1 = 0.909, rounded up), gelu within 25%
T_ACTIVATION_VS_RELU = {"elu": 0.91, "silu": 0.91, "gelu_tanh": 0.91, "prelu": 0.91, "gelu": 0.8}

NUMPY_DENSE_CODE = {
    "relu": ("z = x @ W.T + b; y = np.maximum(z, 0); gz = gy * (y > 0); "
             "gx = gz @ W; gW = gz.T @ x; gb = gz.sum(0)"),
    "tanh": ("z = x @ W.T + b; y = np.tanh(z); gz = gy * (1 - y*y); "
             "gx = gz @ W; gW = gz.T @ x; gb = gz.sum(0)"),
}
GC_DENSE_CODE = ("y = gradcore.dense_forward(x, W, b, act); "
                 "gx, gW, gb = gradcore.dense_backward(gy, x, W, y, act)")
TORCH_DENSE_CODE = "y = act(F.linear(x, W, b)); torch.autograd.grad(y, (x, W, b), gy)"


# ---------------------------------------------------------------------------
# NumPy peers (plain compositions, as a user would write them)

def _numpy_dense_relu(np, x, W, b, gy):
    z = x @ W.T + b
    y = np.maximum(z, 0)
    gz = gy * (y > 0)
    gx = gz @ W
    gW = gz.T @ x
    gb = gz.sum(0)
    return gx, gW, gb


def _numpy_dense_tanh(np, x, W, b, gy):
    z = x @ W.T + b
    y = np.tanh(z)
    gz = gy * (1 - y * y)
    gx = gz @ W
    gW = gz.T @ x
    gb = gz.sum(0)
    return gx, gW, gb


_NUMPY_DENSE = {"relu": _numpy_dense_relu, "tanh": _numpy_dense_tanh}


def _numpy_act(np, act, z):
    return np.maximum(z, 0) if act == "relu" else np.tanh(z)


def _numpy_dact(np, act, gy, y):
    return gy * (y > 0) if act == "relu" else gy * (1 - y * y)


def _dims(*n) -> str:
    return f"{n[0]}³" if len(set(n)) == 1 else "×".join(str(v) for v in n)


_SHORT = {"float32": "f32", "float64": "f64"}


# ---------------------------------------------------------------------------
# cases

class _Runner:
    def __init__(self, ctx, suite: SuiteResult):
        self.ctx = ctx
        self.suite = suite
        self.gc = ctx.gradcore
        self.np = ctx.np
        self.torch = ctx.torch
        self.fma = ctx.machine.fma()

    def case(self, key, name, data, gc_code, gc_fn, peers, *, flops, dtype="float32",
             **kw):
        """Time gradcore and each peer (name, code, fn, target, needs_torch) against the
        FMA peak of ``dtype``."""
        return time_gemm_case(self.ctx, self.suite, self.fma, key, name, data, gc_code, gc_fn,
                              peers, dtype=dtype, flops=flops, **kw)

    # -- matmul --------------------------------------------------------------
    def matmul(self, key, m, k, n, dtype, target, *, trans_b=False, seed=0):
        np, gc, torch = self.np, self.gc, self.torch
        dt = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((m, k), dtype=dt)
        b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=dt)
        ta = tb = None
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        if trans_b:
            name = "matmul trans_b=True"
            data = f"{_dims(m, k, n)} {_SHORT[dt.name]} (b is N×K)"
            gc_code, gc_fn = "gradcore.matmul(a, b, trans_b=True)", \
                (lambda: gc.matmul(a, b, trans_b=True))
            np_code, np_fn = "a @ b.T", (lambda: a @ b.T)
            t_code, t_fn = "ta @ tb.T", (lambda: ta @ tb.T)
        else:
            name = "matmul"
            data = f"{_dims(m, k, n)} {_SHORT[dt.name]}"
            gc_code, gc_fn = "gradcore.matmul(a, b)", (lambda: gc.matmul(a, b))
            np_code, np_fn = "a @ b", (lambda: a @ b)
            t_code, t_fn = "ta @ tb", (lambda: ta @ tb)

        err = None

        def check():
            nonlocal err
            got = gc_fn()
            if got.dtype != dt:
                return f"result dtype {got.dtype}, expected {dt}"
            err = max_rel_err(np, got, np_fn())
            tol = RTOL[dt.name]
            return "ok" if err <= tol else \
                f"max |diff| / max |ref| = {err:.2e} > {tol:g} vs NumPy {np_code}"

        chk = run_check(check)
        self.case(key, name, data, gc_code, gc_fn,
                  [("numpy", np_code, np_fn, target, False),
                   ("torch", t_code + " (torch.from_numpy views)", t_fn, None, True)],
                  check=chk, dtype=dt.name, flops=2.0 * m * k * n,
                  params={"M": m, "K": k, "N": n, "dtype": dt.name, "trans_b": trans_b,
                          "max_rel_err": err})

    # -- dense forward + backward ------------------------------------------------
    def dense(self, key, batch, n_in, n_out, act, t_numpy, t_torch=None, *, seed=0):
        np, gc, torch = self.np, self.gc, self.torch
        f32 = np.float32
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, n_in), dtype=f32)
        W = rng.standard_normal((n_out, n_in), dtype=f32)
        W *= f32(1.0 / math.sqrt(n_in))
        b = rng.standard_normal(n_out, dtype=f32)
        b *= f32(0.1)
        gy = rng.standard_normal((batch, n_out), dtype=f32)

        def gc_step():
            y = gc.dense_forward(x, W, b, act)
            return gc.dense_backward(gy, x, W, y, act)

        np_dense = _NUMPY_DENSE[act]

        def np_step():
            return np_dense(np, x, W, b, gy)

        t_step = None
        if torch is not None:
            F = torch.nn.functional
            tact = torch.relu if act == "relu" else torch.tanh
            tx = torch.from_numpy(x).requires_grad_(True)
            tW = torch.from_numpy(W).requires_grad_(True)
            tb = torch.from_numpy(b).requires_grad_(True)
            tgy = torch.from_numpy(gy)

            def t_step():
                y = tact(F.linear(tx, tW, tb))
                return torch.autograd.grad(y, (tx, tW, tb), tgy)

        errs = {}

        def check():
            tol = RTOL["float32"]
            y = gc.dense_forward(x, W, b, act)
            y_ref = _numpy_act(np, act, x @ W.T + b)
            got = {"y": y}
            ref = {"y": y_ref}
            gx, gW, gb = gc.dense_backward(gy, x, W, y, act)
            # reference backward from gradcore's own y (the input of dense_backward)
            gz = _numpy_dact(np, act, gy, y)
            got.update(gx=gx, gW=gW, gb=gb)
            ref.update(gx=gz @ W, gW=gz.T @ x, gb=gz.sum(0))
            bad = float32_problems(np, got, ref, ("y", "gx", "gW", "gb"), tol, errs)
            return "ok" if not bad else "; ".join(bad) + f" (tol {tol:g})"

        chk = run_check(check)
        peers = [("numpy", NUMPY_DENSE_CODE[act], np_step, t_numpy, False),
                 ("torch", TORCH_DENSE_CODE.replace("act", f"torch.{act}"), t_step,
                  t_torch, True)]
        self.case(key, f"dense fwd+bwd {act}", f"{batch}×{n_in}×{n_out} f32", GC_DENSE_CODE,
                  gc_step, peers, check=chk, dtype="float32",
                  flops=6.0 * batch * n_in * n_out,
                  params={"batch": batch, "in": n_in, "out": n_out, "activation": act,
                          "dtype": "float32", "max_rel_err": errs})


    # -- the activations whose backward reads what the forward saved, against relu ---
    def activation(self, key, act, *, batch=64, n_in=512, n_out=512, seed=10):
        np, gc, torch = self.np, self.gc, self.torch
        f32 = np.float32
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, n_in), dtype=f32)
        W = rng.standard_normal((n_out, n_in), dtype=f32) * f32(1.0 / math.sqrt(n_in))
        b = rng.standard_normal(n_out, dtype=f32) * f32(0.1)
        gy = rng.standard_normal((batch, n_out), dtype=f32)
        kw = {"prelu_weight": np.linspace(0.05, 0.3, n_out, dtype=f32)} if act == "prelu" else {}

        def gc_step():
            y, s = gc.dense_forward(x, W, b, act, return_saved=True, **kw)
            return gc.dense_backward(gy, x, W, None, act, saved=s, **kw)

        def relu_step():
            y = gc.dense_forward(x, W, b, "relu")
            return gc.dense_backward(gy, x, W, y, "relu")

        t_step = None
        if torch is not None:
            F = torch.nn.functional
            tx, tW, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, W, b))
            ta = torch.from_numpy(kw["prelu_weight"]).requires_grad_(True) if act == "prelu" else None
            tact = {"elu": F.elu, "silu": F.silu, "gelu": F.gelu,
                    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
                    "prelu": lambda z: F.prelu(z, ta)}[act]
            inputs = (tx, tW, tb) + ((ta,) if ta is not None else ())
            tgy = torch.from_numpy(gy)

            def t_step():
                return torch.autograd.grad(tact(F.linear(tx, tW, tb)), inputs, tgy)

        def check():
            if torch is None:
                return "ok"
            got = dict(zip(("gx", "gW", "gb", "ga"), gc_step()))
            ref = dict(zip(("gx", "gW", "gb", "ga"), (g.numpy() for g in t_step())))
            bad = float32_problems(np, got, ref, tuple(ref), RTOL["float32"], {})
            return "ok" if not bad else "; ".join(bad) + " vs torch"

        chk = run_check(check)
        gc_code = (f"y, s = gradcore.dense_forward(x, W, b, {act!r}, return_saved=True); "
                   f"gradcore.dense_backward(gy, x, W, None, {act!r}, saved=s)")
        peers = [("gradcore relu", GC_DENSE_CODE.replace("act", "'relu'"), relu_step,
                  T_ACTIVATION_VS_RELU[act], False),
                 ("torch", f"F.{act} after F.linear, torch.autograd.grad", t_step, None, True)]
        self.case(key, f"dense fwd+bwd {act}", f"{batch}×{n_in}×{n_out} f32", gc_code, gc_step, peers,
                  check=chk, dtype="float32", flops=6.0 * batch * n_in * n_out,
                  params={"batch": batch, "in": n_in, "out": n_out, "activation": act, "dtype": "float32"})


_ORDER = ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "5a", "5b", "5c", "5d", "5e"]


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    r = _Runner(ctx, suite)
    big = 1024 if ctx.quick else 2048
    dbig = (512, 1024, 1024) if ctx.quick else (1024, 2048, 2048)
    groups = [
        ("1a", lambda: r.matmul("1a", big, big, big, "float32", T_MATMUL_BIG_NUMPY, seed=1)),
        ("1b", lambda: r.matmul("1b", big, big, big, "float64", T_MATMUL_BIG_NUMPY, seed=2)),
        ("2a", lambda: r.matmul("2a", 256, 256, 256, "float32", T_MATMUL_SMALL_NUMPY, seed=3)),
        ("2b", lambda: r.matmul("2b", 256, 256, 256, "float64", T_MATMUL_SMALL_NUMPY, seed=4)),
        ("3a", lambda: r.matmul("3a", big, big, big, "float32", None, trans_b=True, seed=5)),
        ("3b", lambda: r.matmul("3b", 32, 256, 256, "float32", None, seed=6)),
        ("4a", lambda: r.dense("4a", 32, 256, 256, "relu", T_DENSE_SMALL_NUMPY,
                               T_DENSE_SMALL_TORCH, seed=7)),
        ("4b", lambda: r.dense("4b", 64, 512, 512, "tanh", T_DENSE_MID_NUMPY, seed=8)),
        ("4c", lambda: r.dense("4c", *dbig, "relu", T_DENSE_BIG_NUMPY, seed=9)),
        ("5a", lambda: r.activation("5a", "elu")),
        ("5b", lambda: r.activation("5b", "silu")),
        ("5c", lambda: r.activation("5c", "gelu")),
        ("5d", lambda: r.activation("5d", "gelu_tanh")),
        ("5e", lambda: r.activation("5e", "prelu")),
    ]
    for key, group in groups:
        try:
            group()
        except Exception as exc:  # keep what was measured, report the crash
            import traceback
            suite.notes.append(f"case {key} aborted: {type(exc).__name__}: {exc}")
            ctx.log(traceback.format_exc())
        _pygc.collect()
    suite.cases.sort(key=lambda c: _ORDER.index(c.key) if c.key in _ORDER else len(_ORDER))

    fma = ctx.machine.fma()
    suite.notes += [
        "ratio = peer time / gradcore time (> 1: gradcore faster); '% of limit' = gradcore "
        "GFLOP/s / peak GFLOP/s (no target), flops = 2·M·K·N per matmul (M×K×N = (M×K) @ "
        "(K×N)), 6·batch·in·out per dense forward+backward (3 GEMMs).",
        f"peak f32: {fma.describe('float32')}.",
        f"peak f64: {fma.describe('float64')}.",
        "dense: one forward then one backward timed together, batch×in×out, float32. "
        f"gradcore: {GC_DENSE_CODE}. numpy: {NUMPY_DENSE_CODE['relu']} (tanh: y = np.tanh(z), "
        "gz = gy * (1 - y*y)).",
        "check: gradcore vs NumPy, max |diff| / max |ref| <= 1e-4 (f32) / 1e-10 (f64) per "
        "output; the backward reference uses gradcore's y (the input of dense_backward).",
    ]
    if ctx.quick:
        suite.notes.append(
            f"--quick: matmul {big}³ instead of 2048³ (1a, 1b, 3a), dense {_dims(*dbig)} "
            f"instead of 1024×2048×2048 (4c).")
    if ctx.torch is None:
        suite.notes.append(f"torch peers skipped: {ctx.torch_note}")
    else:
        suite.notes.append(
            "torch: matmul ta @ tb on torch.from_numpy views; dense: x, W, b = "
            "torch.from_numpy(...).requires_grad_(), " + TORCH_DENSE_CODE
            + " (no accumulation), F = torch.nn.functional.")
    return suite
