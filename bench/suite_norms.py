"""Suite "norms": gradient norms and in-place clipping of whole parameter lists.

Targets are the project's speed goals for norms and clipping; every ratio is
peer_time / gradcore_time (> 1: gradcore is faster), measured side by side in this
process.

Data sets
  * GPT-2 small gradient list: the 148 parameter shapes of GPT-2 small (124.4M
    float32 elements, 498 MB).  ``--quick`` keeps the 148 shapes but cuts the
    token embedding wte from 50257 to 5000 rows (89.7M elements).
  * 2000 arrays x 1000 float32 elements (8 MB: cache-resident on most machines,
    so it measures per-array overhead, not memory bandwidth; no limit shown).
Values are N(0, 1) (no denormals, no overflow: speed does not depend on them).

Peers share memory with the gradcore arrays (``torch.from_numpy``), so every
implementation reads and writes exactly the same bytes.  For the torch clipping
functions each array is wrapped as ``p = nn.Parameter(from_numpy(a))`` with
``p.grad = from_numpy(a)`` (the parameter aliases its own gradient: no extra
memory; only ``.grad`` is touched by the clipping functions).

What the clipping cases measure
  * "no clip": max_norm = 2 x the true total norm, so the factor is exactly 1.
    gradcore must not write at all (one read pass); torch's clip_grad_norm_
    still multiplies every gradient by the clamped coefficient 1.0.
  * "clip": max_norm = 0.5 x the true total norm, so every call scales by ~0.5.
    Because clipping shrinks the arrays in place (after one call the norm is
    already max_norm and later calls would see factor ~1), the arrays are
    restored from a saved copy before every timed call, outside the timed
    region; each timed sample is therefore a single call on the original data.
  * clip_by_value_: clip_value = 1.0 (about 32 % of N(0, 1) elements are
    clipped), restored from the saved copy before every timed call in the same
    way, so that every call really clips.
Machine limits (bytes = payload bytes of the list; read_bw and update_bw are the best of
the memory probes taken before every round of the case and after the last, so that the
bandwidth of a shared machine, which moves within a minute, is measured when the case
runs; their spread is reported):
  * norm (one read pass): bytes / read_bw
  * clip, factor < 1: bytes / read_bw + bytes / update_bw (norm pass + in-place
    scaling pass: read, then read+write, i.e. three passes of traffic)
  * clip_by_value_: bytes / update_bw
"""

from __future__ import annotations

import gc as _pygc
import math

from .common import SuiteResult, rel_err, run_check, time_case, time_probed_case

NAME = "norms"
DESCRIPTION = "global_norm / norms / clip_by_global_norm_ / clip_by_value_ vs NumPy and PyTorch"
NEEDS = ("memory",)         # measured up front by the CLI (printed before the tables)

EPS = 1e-6               # default eps of gradcore.clip_by_global_norm_ and torch
LIMIT_TARGET = 0.85      # fraction of the memory limit the norms and clipping aim at
CLIP_VALUE = 1.0
NORM_RTOL = 1e-8         # float64 accumulation: expected error ~1e-12
CLIP_RTOL = 1e-6         # float32 results of the scaling

# goals (peer_time / gradcore_time)
T_GPT2_NORM_NUMPY = 1.3
T_SMALL_NORM_NUMPY = 5.0
T_SMALL_NORM_TORCH = 20.0
T_SMALL_CLIP_TORCH = 20.0
T_GPT2_NOCLIP_TORCH = 2.5
T_GPT2_CLIP_TORCH = 1.0
T_VALUE_TORCH = 1.0


# ---------------------------------------------------------------------------
# data

def gpt2_small_shapes(vocab: int = 50257, n_ctx: int = 1024, d: int = 768,
                      n_layer: int = 12) -> list:
    """Parameter shapes of GPT-2 small in HF order (Conv1D weights are in x out)."""
    shapes = [(vocab, d), (n_ctx, d)]                       # wte, wpe
    for _ in range(n_layer):
        shapes += [
            (d,), (d,),                                     # ln_1 w, b
            (d, 3 * d), (3 * d,),                           # attn.c_attn w, b
            (d, d), (d,),                                   # attn.c_proj w, b
            (d,), (d,),                                     # ln_2 w, b
            (d, 4 * d), (4 * d,),                           # mlp.c_fc w, b
            (4 * d, d), (d,),                               # mlp.c_proj w, b
        ]
    shapes += [(d,), (d,)]                                  # ln_f w, b
    return shapes


class GradList:
    """A list of arrays plus everything the peers need, sharing its memory."""

    def __init__(self, ctx, shapes, dtype, seed: int, label: str):
        np = ctx.np
        self.ctx = ctx
        self.label = label
        rng = np.random.default_rng(seed)
        self.arrs = [rng.standard_normal(s, dtype=dtype) for s in shapes]
        self.flats = [a.reshape(-1) for a in self.arrs]           # views
        self.n = sum(a.size for a in self.arrs)
        self.nbytes = sum(a.nbytes for a in self.arrs)
        self.dtype = np.dtype(dtype).name
        self.backup = None
        # float64 reference: per-array sums of squares, chunked to bound temporaries
        self.ref_sq = [self._sumsq(f) for f in self.flats]
        self.ref_total = math.sqrt(math.fsum(self.ref_sq))
        self.ts = self.params = None
        torch = ctx.torch
        if torch is not None:
            self.ts = [torch.from_numpy(a) for a in self.arrs]
            self.params = []
            for a in self.arrs:
                g = torch.from_numpy(a)
                p = torch.nn.Parameter(torch.from_numpy(a))   # aliases a: no copy
                p.grad = g
                self.params.append(p)

    def _sumsq(self, f, chunk: int = 1 << 22) -> float:
        np = self.ctx.np
        if f.dtype == np.float64:
            return float(np.dot(f, f))
        s = 0.0
        for i in range(0, f.size, chunk):
            c = f[i:i + chunk].astype(np.float64)
            s += float(np.dot(c, c))
        return s

    def save(self):
        if self.backup is None:
            self.backup = [a.copy() for a in self.arrs]

    def restore(self):
        copyto = self.ctx.np.copyto
        for a, b in zip(self.arrs, self.backup):
            copyto(a, b)

    def release(self):
        self.arrs = self.flats = self.backup = self.ts = self.params = None
        _pygc.collect()


# ---------------------------------------------------------------------------
# peers

def _torch_total_norm(torch):
    f = getattr(torch.nn.utils, "get_total_norm", None)
    if f is not None:
        return f, "torch.nn.utils.get_total_norm(ts)"

    def composed(ts):
        return torch.norm(torch.stack([torch.norm(t) for t in ts]))
    return composed, "torch.norm(torch.stack([torch.norm(t) for t in ts]))"


def _torch_clip_norm(torch):
    f = torch.nn.utils.clip_grad_norm_
    try:
        import inspect
        has_foreach = "foreach" in inspect.signature(f).parameters
    except (TypeError, ValueError):
        has_foreach = True
    if has_foreach:
        return (lambda ps, m: f(ps, m, foreach=True)), "torch.nn.utils.clip_grad_norm_(ps, max_norm, foreach=True)"
    return (lambda ps, m: f(ps, m)), "torch.nn.utils.clip_grad_norm_(ps, max_norm)"


def _torch_clip_value(torch):
    f = torch.nn.utils.clip_grad_value_
    try:
        import inspect
        has_foreach = "foreach" in inspect.signature(f).parameters
    except (TypeError, ValueError):
        has_foreach = True
    if has_foreach:
        return (lambda ps, v: f(ps, v, foreach=True)), "torch.nn.utils.clip_grad_value_(ps, v, foreach=True)"
    return (lambda ps, v: f(ps, v)), "torch.nn.utils.clip_grad_value_(ps, v)"


NUMPY_NORM_CODE = "math.sqrt(sum(float(np.vdot(a, a)) for a in flats))"
NUMPY_CLIP_CODE = ("total = <numpy norm loop>; f = max_norm / (total + 1e-6); "
                   "if f < 1: a *= f for each a")


def _numpy_global_norm(np, flats):
    vdot = np.vdot
    return math.sqrt(sum(float(vdot(a, a)) for a in flats))


def _numpy_clip_global(np, flats, max_norm):
    total = _numpy_global_norm(np, flats)
    f = max_norm / (total + EPS)
    if f < 1.0:
        for a in flats:
            a *= f
    return total


# ---------------------------------------------------------------------------
# cases

class _Runner:
    def __init__(self, ctx, suite: SuiteResult):
        self.ctx = ctx
        self.suite = suite
        self.gc = ctx.gradcore
        self.np = ctx.np
        self.torch = ctx.torch
        self.bandwidths = {}        # every probe of the suite, per kind

    def case(self, key, name, data, gc_code, gc_fn, peers, *, limit=(), nbytes=None, **kw):
        """Time gradcore and each peer (name, code, fn, target, needs_torch), when
        ``limit`` names memory passes ("read", "update") over ``nbytes``, against them,
        measured around the case: probe, round, probe, ..."""
        args = (key, name, data, gc_code, gc_fn, peers)
        if not limit:
            return time_case(self.ctx, self.suite, *args, bytes=nbytes, **kw)
        probes = self.ctx.machine.probes(limit)
        res = time_probed_case(self.ctx, self.suite, probes, "+".join(limit),
                               lambda p: sum(nbytes / p.best(k) for k in limit),
                               *args, bytes=nbytes, **kw)
        for kind, got in probes.samples.items():
            self.bandwidths.setdefault(kind, []).extend(got)
        return res

    # -- checks --------------------------------------------------------------
    def check_global_norm(self, gl: GradList) -> tuple:
        got = float(self.gc.global_norm(gl.arrs))
        err = rel_err(got, gl.ref_total)
        msg = "ok" if err <= NORM_RTOL else f"global_norm={got!r} vs ref {gl.ref_total!r} (rel err {err:.1e})"
        return msg, err

    def check_norms(self, gl: GradList) -> tuple:
        got = self.np.asarray(self.gc.norms(gl.arrs), dtype=float)
        ref = [math.sqrt(s) for s in gl.ref_sq]
        if got.shape != (len(ref),):
            return f"norms() returned shape {got.shape}, expected ({len(ref)},)", math.inf
        errs = [rel_err(float(g), r) for g, r in zip(got, ref)]
        worst = max(errs) if errs else 0.0
        if worst <= NORM_RTOL:
            return "ok", worst
        i = errs.index(worst)
        return f"norms()[{i}]={float(got[i])!r} vs ref {ref[i]!r} (rel err {worst:.1e})", worst

    def _sample_idx(self, gl):
        n = len(gl.arrs)
        return sorted({0, 1, n // 2, n - 1})

    def check_clip_global(self, gl: GradList, max_norm: float, clips: bool) -> str:
        np = self.np
        gl.restore()
        total = float(self.gc.clip_by_global_norm_(gl.arrs, max_norm))
        err = rel_err(total, gl.ref_total)
        if err > NORM_RTOL:
            return f"returned total {total!r} vs ref {gl.ref_total!r} (rel err {err:.1e})"
        factor = min(1.0, max_norm / (gl.ref_total + EPS))
        if clips != (factor < 1.0):
            return f"internal: factor {factor} unexpected"
        for i in self._sample_idx(gl):
            want = gl.backup[i] * factor if clips else gl.backup[i]
            ok = (np.allclose(gl.arrs[i], want, rtol=CLIP_RTOL, atol=0) if clips
                  else np.array_equal(gl.arrs[i], want))
            if not ok:
                d = float(np.max(np.abs(gl.arrs[i].astype(np.float64) - want)))
                return f"array {i} wrong after clip (factor {factor:.6g}, max abs diff {d:.3g})"
        gl.restore()
        return "ok"

    def check_clip_value(self, gl: GradList, v: float) -> str:
        np = self.np
        gl.restore()
        ret = self.gc.clip_by_value_(gl.arrs, v)
        for i in self._sample_idx(gl):
            want = np.clip(gl.backup[i], -v, v)
            if not np.array_equal(gl.arrs[i], want):
                n = int(np.count_nonzero(gl.arrs[i] != want))
                return f"array {i}: {n} elements differ from np.clip"
        gl.restore()
        return "ok" if ret is None else f"ok (returned {type(ret).__name__}, contract says None)"

    # -- case groups ---------------------------------------------------------
    def gpt2_f32(self):
        np, gc, torch = self.np, self.gc, self.torch
        quick = self.ctx.quick
        vocab = 5000 if quick else 50257
        self.ctx.log(f"{NAME}: building the GPT-2 small gradient list (float32)")
        gl = GradList(self.ctx, gpt2_small_shapes(vocab=vocab), np.float32, 1, "gpt2")
        data = f"GPT-2 {gl.n / 1e6:.0f}M f32"
        params = {"arrays": len(gl.arrs), "elements": gl.n, "bytes": gl.nbytes,
                  "dtype": "float32", "wte_rows": vocab}
        if quick:
            self.suite.notes.append(
                f"--quick: GPT-2 list with wte cut from 50257 to {vocab} rows "
                f"({gl.n / 1e6:.1f}M elements instead of 124.4M), 128 MB probe array.")
        arrs, flats, ts, ps = gl.arrs, gl.flats, gl.ts, gl.params
        tnorm, tnorm_code = _torch_total_norm(torch) if torch else (None, "torch get_total_norm")
        tclip, tclip_code = _torch_clip_norm(torch) if torch else (None, "torch clip_grad_norm_")
        tval, tval_code = _torch_clip_value(torch) if torch else (None, "torch clip_grad_value_")

        # 1. global_norm
        chk, err = self._check_pair(lambda: self.check_global_norm(gl))
        self.case("1", "global_norm", data, "gradcore.global_norm(arrs)",
                  lambda: gc.global_norm(arrs),
                  [("numpy", NUMPY_NORM_CODE, lambda: _numpy_global_norm(np, flats),
                    T_GPT2_NORM_NUMPY, False),
                   ("torch", tnorm_code, lambda: tnorm(ts), None, True)],
                  check=chk, limit=("read",), limit_target=LIMIT_TARGET, nbytes=gl.nbytes,
                  params={**params, "rel_err": err})

        # 3a. clip_by_global_norm_, no clipping needed (factor == 1)
        m_noclip = 2.0 * gl.ref_total
        gl.save()
        chk = run_check(lambda: self.check_clip_global(gl, m_noclip, False))
        self.case("3a", "clip_by_global_norm_ (no clip)", data,
                  "gradcore.clip_by_global_norm_(arrs, 2*total)",
                  lambda: gc.clip_by_global_norm_(arrs, m_noclip),
                  [("numpy", NUMPY_CLIP_CODE, lambda: _numpy_clip_global(np, flats, m_noclip),
                    None, False),
                   ("torch", tclip_code, lambda: tclip(ps, m_noclip), T_GPT2_NOCLIP_TORCH, True)],
                  check=chk, limit=("read",), nbytes=gl.nbytes,
                  params={**params, "max_norm": m_noclip, "factor": 1.0})

        # 3b. clip_by_global_norm_, clipping (factor ~0.5), restored before every call
        m_clip = 0.5 * gl.ref_total
        chk = run_check(lambda: self.check_clip_global(gl, m_clip, True))
        self.case("3b", "clip_by_global_norm_ (clip)", data,
                  "gradcore.clip_by_global_norm_(arrs, total/2)",
                  lambda: gc.clip_by_global_norm_(arrs, m_clip),
                  [("numpy", NUMPY_CLIP_CODE, lambda: _numpy_clip_global(np, flats, m_clip),
                    None, False),
                   ("torch", tclip_code, lambda: tclip(ps, m_clip), T_GPT2_CLIP_TORCH, True)],
                  setup=gl.restore, check=chk, limit=("read", "update"),
                  limit_target=LIMIT_TARGET, nbytes=gl.nbytes,
                  params={**params, "max_norm": m_clip,
                          "factor": m_clip / (gl.ref_total + EPS)})

        # 4. clip_by_value_, restored before every call
        v = CLIP_VALUE
        chk = run_check(lambda: self.check_clip_value(gl, v))
        self.case("4", "clip_by_value_", data, f"gradcore.clip_by_value_(arrs, {v})",
                  lambda: gc.clip_by_value_(arrs, v),
                  [("numpy", f"for a in arrs: np.clip(a, -{v}, {v}, out=a)",
                    lambda: [np.clip(a, -v, v, out=a) for a in arrs], None, False),
                   ("torch", tval_code, lambda: tval(ps, v), T_VALUE_TORCH, True)],
                  setup=gl.restore, check=chk, limit=("update",), nbytes=gl.nbytes,
                  params={**params, "clip_value": v})
        gl.restore()                # the last timed calls clipped the arrays
        gl.backup = None            # only one ~500 MB list alive from here on
        _pygc.collect()

        # 5a. norms(), one norm per array (informative)
        chk, err = self._check_pair(lambda: self.check_norms(gl))
        self.case("5a", "norms (per array)", data, "gradcore.norms(arrs)",
                  lambda: gc.norms(arrs),
                  [("numpy", "np.array([np.linalg.norm(a) for a in arrs])",
                    lambda: np.array([np.linalg.norm(a) for a in arrs]), None, False),
                   ("torch", "torch.stack([torch.linalg.vector_norm(t) for t in ts])",
                    lambda: torch.stack([torch.linalg.vector_norm(t) for t in ts]), None, True)],
                  check=chk, limit=("read",), nbytes=gl.nbytes,
                  params={**params, "max_rel_err": err})
        del arrs, flats, ts, ps
        gl.release()

    def _check_pair(self, fn) -> tuple:
        try:
            return fn()
        except Exception as exc:
            return f"check raised {type(exc).__name__}: {exc}", None

    def gpt2_f64(self):
        np, gc, torch = self.np, self.gc, self.torch
        vocab = 5000 if self.ctx.quick else 50257
        self.ctx.log(f"{NAME}: building the GPT-2 small gradient list (float64)")
        gl = GradList(self.ctx, gpt2_small_shapes(vocab=vocab), np.float64, 2, "gpt2-f64")
        data = f"GPT-2 {gl.n / 1e6:.0f}M f64"
        arrs, flats, ts = gl.arrs, gl.flats, gl.ts
        tnorm, tnorm_code = _torch_total_norm(torch) if torch else (None, "torch get_total_norm")
        chk, err = self._check_pair(lambda: self.check_global_norm(gl))
        self.case("5b", "global_norm (float64)", data, "gradcore.global_norm(arrs)",
                  lambda: gc.global_norm(arrs),
                  [("numpy", NUMPY_NORM_CODE, lambda: _numpy_global_norm(np, flats), None, False),
                   ("torch", tnorm_code, lambda: tnorm(ts), None, True)],
                  check=chk, limit=("read",), nbytes=gl.nbytes,
                  params={"arrays": len(arrs), "elements": gl.n, "bytes": gl.nbytes,
                          "dtype": "float64", "wte_rows": vocab, "rel_err": err})
        del arrs, flats, ts
        gl.release()

    def small(self):
        np, gc, torch = self.np, self.gc, self.torch
        self.ctx.log(f"{NAME}: building 2000 arrays x 1000 float32")
        gl = GradList(self.ctx, [(1000,)] * 2000, np.float32, 3, "small")
        data = "2000×1000 f32"
        params = {"arrays": 2000, "elements": gl.n, "bytes": gl.nbytes, "dtype": "float32"}
        arrs, flats, ts, ps = gl.arrs, gl.flats, gl.ts, gl.params
        tnorm, tnorm_code = _torch_total_norm(torch) if torch else (None, "torch get_total_norm")
        tclip, tclip_code = _torch_clip_norm(torch) if torch else (None, "torch clip_grad_norm_")

        chk, err = self._check_pair(lambda: self.check_global_norm(gl))
        self.case("2a", "global_norm", data, "gradcore.global_norm(arrs)",
                  lambda: gc.global_norm(arrs),
                  [("numpy", NUMPY_NORM_CODE, lambda: _numpy_global_norm(np, flats),
                    T_SMALL_NORM_NUMPY, False),
                   ("torch", tnorm_code, lambda: tnorm(ts), T_SMALL_NORM_TORCH, True)],
                  check=chk, nbytes=gl.nbytes, params={**params, "rel_err": err})

        gl.save()
        m_noclip = 2.0 * gl.ref_total
        chk = run_check(lambda: self.check_clip_global(gl, m_noclip, False))
        self.case("2b", "clip_by_global_norm_ (no clip)", data,
                  "gradcore.clip_by_global_norm_(arrs, 2*total)",
                  lambda: gc.clip_by_global_norm_(arrs, m_noclip),
                  [("numpy", NUMPY_CLIP_CODE, lambda: _numpy_clip_global(np, flats, m_noclip),
                    None, False),
                   ("torch", tclip_code, lambda: tclip(ps, m_noclip), T_SMALL_CLIP_TORCH, True)],
                  check=chk, nbytes=gl.nbytes, params={**params, "max_norm": m_noclip})

        m_clip = 0.5 * gl.ref_total
        chk = run_check(lambda: self.check_clip_global(gl, m_clip, True))
        self.case("2c", "clip_by_global_norm_ (clip)", data,
                  "gradcore.clip_by_global_norm_(arrs, total/2)",
                  lambda: gc.clip_by_global_norm_(arrs, m_clip),
                  [("numpy", NUMPY_CLIP_CODE, lambda: _numpy_clip_global(np, flats, m_clip),
                    None, False),
                   ("torch", tclip_code, lambda: tclip(ps, m_clip), T_SMALL_CLIP_TORCH, True)],
                  setup=gl.restore, check=chk, nbytes=gl.nbytes,
                  params={**params, "max_norm": m_clip})
        del arrs, flats, ts, ps
        gl.release()


_ORDER = ["1", "2a", "2b", "2c", "3a", "3b", "4", "5a", "5b"]


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    r = _Runner(ctx, suite)
    # GPT-2 float32 first (one ~500 MB list alive), then the small list, then
    # the float64 GPT-2 list (~1 GB) once the float32 one is gone
    for group in (r.gpt2_f32, r.small, r.gpt2_f64):
        try:
            group()
        except Exception as exc:  # keep what was measured, report the crash
            import traceback
            suite.notes.append(f"{group.__name__} aborted: {type(exc).__name__}: {exc}")
            ctx.log(traceback.format_exc())
        _pygc.collect()
    suite.cases.sort(key=lambda c: _ORDER.index(c.key) if c.key in _ORDER else len(_ORDER))

    seen = "; ".join(f"{k} {min(v) / 1e9:.1f}-{max(v) / 1e9:.1f} GB/s over {len(v)} probes"
                     for k, v in r.bandwidths.items())
    suite.notes += [
        "ratio = peer time / gradcore time (> 1: gradcore faster); "
        "'% of limit' = (bytes / bandwidth) / gradcore time, the bandwidth being the best of "
        "the memory probes taken before every round of the case and after the last (array "
        "bytes/s; an update pass moves twice that); read+update = norm pass + in-place "
        "scaling pass; ± = the spread of those probes. "
        + (f"Probes of this suite: {seen}." if seen else ""),
        "no clip: max_norm = 2x total (factor 1, gradcore must not write; torch still "
        "multiplies by 1.0). clip: max_norm = total/2, and clip_by_value_ (v = 1.0): the "
        "arrays are restored from a copy before every timed call (outside the timer).",
        "2000×1000 (8 MB) is cache-resident: it measures per-array overhead, no limit shown.",
        f"numpy: norm = {NUMPY_NORM_CODE} (float32 BLAS dot); clip = {NUMPY_CLIP_CODE}.",
    ]
    if ctx.torch is None:
        suite.notes.append(f"torch peers skipped: {ctx.torch_note}")
    else:
        suite.notes.append(
            "torch: " + _torch_total_norm(ctx.torch)[1] + "; " + _torch_clip_norm(ctx.torch)[1]
            + "; " + _torch_clip_value(ctx.torch)[1]
            + "; tensors via torch.from_numpy (same memory), params p.grad = from_numpy(a).")
    return suite
