"""Suite "cuda": gradcore's CUDA backend against PyTorch CUDA, side by side in one process.

Runs only where ``gradcore.cuda.is_available()`` and torch with CUDA is importable;
otherwise the suite says why in one note and measures nothing (the run still succeeds).

Timing: CUDA events around the calls on torch's current stream (``torch.cuda.Event``;
``start.record(); fn() x inner; end.record(); end.synchronize()``), warmed up, best of
N batches that last at least ``--min-time``; the host's Python overhead counts whenever
it, not the GPU, is the bottleneck (the GPU then waits between kernels). Calls that
modify their arrays (clipping with factor < 1) restore them from a saved copy before
each timed call, outside the events (a single call per sample). Every ratio is
torch_time / gradcore_time (> 1: gradcore faster); no targets are set (informative).

Machine limit: device-to-device copy bandwidth, measured here as ``dst.copy_(src)`` of
a 1 GiB buffer (traffic = 2 x bytes / time). "% of limit" = (bytes moved at that
bandwidth) / gradcore time, with bytes = one read of the arrays for a norm, and a read
plus a read+write (3 x) for a clipping call that scales.

Cases
  * 0       the copy itself (the yardstick, gradcore column = torch copy_).
  * 1a/1b   global_norm on the GPT-2 small parameter list (148 tensors, 124.4M
            elements; --quick: wte cut to 5000 rows), float32 / bfloat16, vs
            ``torch.nn.utils.get_total_norm`` and ``torch._foreach_norm`` (the per-tensor
            norms that get_total_norm starts with).
  * 2a/2b   clip_by_global_norm_ (factor 0.5) on the same lists vs
            ``torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)``.
  * 2c/2d   the same without clipping (max_norm = 2 x total: factor 1, gradcore writes
            nothing; torch multiplies by 1.0).
  * 3a-3d   global_norm and clip_by_global_norm_ on 2000 tensors of 1000 elements
            (float32, bfloat16): per-tensor and per-call overhead.
  * 4a-4c   dense backward vs nn.Linear's backward (autograd), the dense suite's sizes
            batch x in x out = 32x256x256 relu, 64x512x512 tanh, 1024x2048x2048 relu,
            float32: ``dense_backward(gy, x, W, y, act)`` vs
            ``torch.autograd.grad(y, (x, W, b), gy, retain_graph=True)`` where
            y = act(F.linear(x, W, b)).
  * 5a-5d   LSTM and GRU forward + backward, (T, B, I, H) = (100, 32, 256, 256), float32,
            vs torch.nn.LSTM / GRU (cuDNN) with the same weights and torch.autograd.grad;
            5a/5c plain (gradcore always computes hidden_grad_norms), 5b/5d with
            clip_hidden=1.0.
"""

from __future__ import annotations

import gc as _pygc
import math
import statistics
import time

from .common import CaseResult, PeerResult, SuiteResult, max_rel_err, rel_err, run_check
from .suite_norms import gpt2_small_shapes
from .timing import Timing, gc_disabled

NAME = "cuda"
DESCRIPTION = ("gradcore's CUDA backend vs PyTorch CUDA (norms, clipping, dense backward, "
               "LSTM/GRU): CUDA-event times, fraction of the device copy bandwidth")
NEEDS = ()

EPS = 1e-6
NORM_RTOL = {"float32": 1e-5, "bfloat16": 1e-2}   # torch accumulates in the dtype / float32
DENSE_RTOL = 1e-3                                 # TF32 may be on in torch (a default)
RNN_RTOL = 1e-2


def _why_not(ctx) -> str:
    """Why the suite cannot run here ('' when it can)."""
    gc = ctx.gradcore
    try:
        import gradcore.cuda as gcc
    except Exception as exc:  # pragma: no cover
        return f"gradcore.cuda not importable ({type(exc).__name__}: {exc})"
    if not gcc.is_available():
        return (f"no usable CUDA device for gradcore (built with CUDA: {gcc.is_built()}, "
                f"devices: {gcc.device_count()}; gradcore {gc.__version__})")
    torch = ctx.torch
    if torch is None:
        return f"torch is needed for the peers and the CUDA events ({ctx.torch_note})"
    if not torch.cuda.is_available():
        return "torch has no CUDA here (the peers and the CUDA events need it)"
    return ""


# ---------------------------------------------------------------------------
# timing

def cuda_time(torch, fn, *, repeat: int, min_time: float, setup=None, warmup: int = 2) -> Timing:
    """Seconds per call of fn() measured with CUDA events on the current stream."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def batch(n):
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    with gc_disabled():
        for _ in range(max(1, warmup)):
            if setup is not None:
                setup()
            fn()
        torch.cuda.synchronize()
        if setup is not None:
            samples = []
            for _ in range(max(repeat, 10)):
                setup()
                samples.append(batch(1))
            inner = 1
        else:
            inner = 1
            while True:
                t = batch(inner)
                if t >= min_time or inner >= 1 << 16:
                    break
                inner = max(inner * 2, int(math.ceil(inner * 1.2 * min_time / max(t, 1e-7))))
            samples = [batch(inner) / inner for _ in range(repeat)]
    return Timing(best=min(samples), median=statistics.median(samples), inner=inner,
                  samples=samples)


class _Runner:
    def __init__(self, ctx, suite):
        self.ctx = ctx
        self.suite = suite
        self.gc = ctx.gradcore
        self.torch = ctx.torch
        self.copy_bw = None   # bytes/s of traffic (read + write)

    def time(self, fn, setup=None):
        return cuda_time(self.torch, fn, repeat=self.ctx.repeat, min_time=self.ctx.min_time,
                         setup=setup)

    def case(self, key, name, data, gc_code, gc_fn, peers, *, setup=None, check="ok",
             traffic=None, params=None, notes=()):
        """peers: (name, code, fn). traffic: bytes the operation must move at least
        (the limit is traffic / copy bandwidth)."""
        self.ctx.log(f"{NAME}: [{key}] {name} on {data}")
        try:
            t_gc = self.time(gc_fn, setup)
        except Exception as exc:
            t_gc, check = None, f"gradcore raised {type(exc).__name__}: {exc}"
        limit = {}
        if traffic is not None and self.copy_bw:
            limit = dict(limit_name="copy bw", limit_time=traffic / self.copy_bw, bytes=traffic)
        res = CaseResult(suite=NAME, key=key, name=name, data=data, gradcore=t_gc,
                         gradcore_code=gc_code, check=check, params=dict(params or {}),
                         notes=list(notes), **limit)
        for pname, code, fn in peers:
            if t_gc is None:
                res.peers.append(PeerResult(pname, code, None, None, note="gradcore failed"))
                continue
            try:
                res.peers.append(PeerResult(pname, code, self.time(fn, setup), None))
            except Exception as exc:
                res.peers.append(PeerResult(pname, code, None, None,
                                            note=f"failed: {type(exc).__name__}: {exc}"))
        self.suite.cases.append(res)
        return res

    # -- the yardstick ----------------------------------------------------------------
    def copy(self):
        torch = self.torch
        n = (1 << 28) if not self.ctx.quick else (1 << 26)  # float32 elements: 1 GiB / 256 MiB
        src = torch.empty(n, dtype=torch.float32, device="cuda").normal_()
        dst = torch.empty_like(src)
        t = self.time(lambda: dst.copy_(src))
        nbytes = src.numel() * src.element_size()
        self.copy_bw = 2.0 * nbytes / t.best
        res = CaseResult(suite=NAME, key="0", name="device copy (yardstick)",
                         data=f"{nbytes >> 20} MiB f32", gradcore=t,
                         gradcore_code="dst.copy_(src) (torch; the limit, not gradcore)",
                         limit_name="copy bw", limit_time=t.best, bytes=2 * nbytes,
                         params={"bytes": nbytes, "traffic_GBps": self.copy_bw / 1e9})
        self.suite.cases.append(res)

    # -- norms and clipping -------------------------------------------------------------
    def grad_list(self, shapes, dtype, seed):
        torch = self.torch
        g = torch.Generator(device="cuda").manual_seed(seed)
        tdt = getattr(torch, dtype)
        ts = [torch.randn(s, generator=g, device="cuda", dtype=torch.float32).to(tdt) for s in shapes]
        params = []
        for t in ts:
            p = torch.nn.Parameter(t)  # aliases t; .grad = t too: no extra memory
            p.grad = t
            params.append(p)
        backup = [t.clone() for t in ts]
        ref = math.sqrt(math.fsum(float(t.double().pow(2).sum()) for t in ts))
        return ts, params, backup, ref

    def norms_and_clip(self, keys, label, shapes, dtype, seed, *, noclip_keys=None):
        gc, torch = self.gc, self.torch
        ts, params, backup, ref = self.grad_list(shapes, dtype, seed)
        n = sum(t.numel() for t in ts)
        nbytes = sum(t.numel() * t.element_size() for t in ts)
        short = {"float32": "f32", "bfloat16": "bf16"}[dtype]
        data = f"{label} {n / 1e6:.3g}M {short}" if len(ts) < 1000 else f"{len(ts)}×{ts[0].numel()} {short}"
        params_d = {"tensors": len(ts), "elements": n, "bytes": nbytes, "dtype": dtype}
        tol = NORM_RTOL[dtype]

        def restore():
            torch._foreach_copy_(ts, backup)

        def check_norm():
            got = float(gc.global_norm(ts))
            theirs = float(torch.nn.utils.get_total_norm(ts))
            e = rel_err(got, ref)
            if e > 1e-10:
                return f"global_norm {got!r} vs float64 reference {ref!r} (rel err {e:.1e})"
            if rel_err(theirs, ref) > tol:
                return f"ok (torch's total {theirs!r} is off by {rel_err(theirs, ref):.1e})"
            return "ok"

        self.case(keys[0], "global_norm", data, "gradcore.global_norm(ts)",
                  lambda: gc.global_norm(ts),
                  [("get_total_norm", "torch.nn.utils.get_total_norm(ts)",
                    lambda: torch.nn.utils.get_total_norm(ts)),
                   ("_foreach_norm", "torch._foreach_norm(ts) (per-tensor norms only)",
                    lambda: torch._foreach_norm(ts))],
                  check=run_check(check_norm), traffic=nbytes, params=params_d)

        m_clip = 0.5 * ref

        def check_clip():
            restore()
            res = gc.clip_by_global_norm_(ts, m_clip)
            total = float(res.total_norm)
            if rel_err(total, ref) > 1e-10:
                return f"total {total!r} vs {ref!r}"
            got = float(gc.global_norm(ts))
            want = m_clip * ref / (ref + EPS)
            e = rel_err(got, want)
            restore()
            return "ok" if e <= tol else f"norm after clipping {got!r}, expected {want!r} (rel err {e:.1e})"

        clip_torch = torch.nn.utils.clip_grad_norm_
        self.case(keys[1], "clip_by_global_norm_ (clip)", data,
                  "gradcore.clip_by_global_norm_(ts, total/2)",
                  lambda: gc.clip_by_global_norm_(ts, m_clip),
                  [("clip_grad_norm_", "torch.nn.utils.clip_grad_norm_(ps, total/2, foreach=True)",
                    lambda: clip_torch(params, m_clip, foreach=True))],
                  setup=restore, check=run_check(check_clip), traffic=3 * nbytes,
                  params={**params_d, "max_norm": m_clip})
        if noclip_keys:
            m_no = 2.0 * ref
            self.case(noclip_keys, "clip_by_global_norm_ (no clip)", data,
                      "gradcore.clip_by_global_norm_(ts, 2*total)",
                      lambda: gc.clip_by_global_norm_(ts, m_no),
                      [("clip_grad_norm_", "torch.nn.utils.clip_grad_norm_(ps, 2*total, foreach=True)",
                        lambda: clip_torch(params, m_no, foreach=True))],
                      traffic=nbytes, params={**params_d, "max_norm": m_no})

    # -- dense backward -----------------------------------------------------------------
    def dense(self, key, batch, n_in, n_out, act, seed):
        gc, torch = self.gc, self.torch
        F = torch.nn.functional
        g = torch.Generator(device="cuda").manual_seed(seed)
        dev = "cuda"
        x = torch.randn(batch, n_in, generator=g, device=dev)
        W = torch.randn(n_out, n_in, generator=g, device=dev) / math.sqrt(n_in)
        b = 0.1 * torch.randn(n_out, generator=g, device=dev)
        gy = torch.randn(batch, n_out, generator=g, device=dev)
        y = gc.dense_forward(x, W, b, act)
        xt, Wt, bt = (t.clone().requires_grad_() for t in (x, W, b))
        tact = torch.relu if act == "relu" else torch.tanh
        yt = tact(F.linear(xt, Wt, bt))

        def check():
            got = gc.dense_backward(gy, x, W, y, act)
            want = torch.autograd.grad(yt, (xt, Wt, bt), gy, retain_graph=True)
            errs = [max_rel_err(_np(), _host(a), _host(w)) for a, w in zip(got, want)]
            worst = max(errs)
            return "ok" if worst <= DENSE_RTOL else \
                f"max |diff| / max |torch| = {worst:.2e} (grad_x, grad_W, grad_b: {errs})"

        flops = 4.0 * batch * n_in * n_out
        res = self.case(key, f"dense backward {act}", f"{batch}×{n_in}×{n_out} f32",
                        "gradcore.dense_backward(gy, x, W, y, act)",
                        lambda: gc.dense_backward(gy, x, W, y, act),
                        [("torch", "torch.autograd.grad(y, (x, W, b), gy, retain_graph=True), "
                                   "y = act(F.linear(x, W, b))",
                          lambda: torch.autograd.grad(yt, (xt, Wt, bt), gy, retain_graph=True))],
                        check=run_check(check),
                        params={"batch": batch, "in": n_in, "out": n_out, "activation": act,
                                "flops": flops})
        if res.gradcore is not None:
            gf = {"gradcore": flops / res.gradcore.best / 1e9}
            for p in res.peers:
                if p.time:
                    gf[p.name] = flops / p.time / 1e9
            res.params["GFLOPs"] = gf
            res.notes.append("GFLOP/s (2 GEMMs): " + ", ".join(f"{k} {v:.0f}" for k, v in gf.items()))

    # -- recurrent layers -------------------------------------------------------------
    def rnn(self, keys, cell, T, B, I, H, seed):
        gc, torch = self.gc, self.torch
        torch.manual_seed(seed)
        mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H).cuda()
        P = {k: v.detach() for k, v in mod.named_parameters()}
        x = torch.randn(T, B, I, device="cuda")
        h0 = 0.5 * torch.randn(B, H, device="cuda")
        c0 = 0.5 * torch.randn(B, H, device="cuda") if cell == "lstm" else None
        gy, ghn = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
        weights = list(mod.parameters())

        def gc_step(clip=None):
            f = gc.rnn_forward(x, h0, P["weight_ih_l0"], P["weight_hh_l0"], P["bias_ih_l0"],
                               P["bias_hh_l0"], cell=cell, c0=c0)
            return f, gc.rnn_backward(f.cache, gy, ghn, clip_hidden=clip)

        xt = x.clone().requires_grad_()

        def torch_step():
            if cell == "lstm":
                y, (hn, _cn) = mod(xt, (h0[None], c0[None]))
            else:
                y, hn = mod(xt, h0[None])
            return y, torch.autograd.grad((y, hn), [xt, *weights], (gy, ghn[None]))

        def check():
            f, g = gc_step()
            y, tg = torch_step()
            errs = {"y": max_rel_err(_np(), _host(f.y), _host(y)),
                    "grad_x": max_rel_err(_np(), _host(g.grad_x), _host(tg[0])),
                    "grad_weight_ih": max_rel_err(_np(), _host(g.grad_weight_ih), _host(tg[1])),
                    "grad_weight_hh": max_rel_err(_np(), _host(g.grad_weight_hh), _host(tg[2]))}
            bad = {k: v for k, v in errs.items() if not v <= RNN_RTOL}
            return "ok" if not bad else f"vs torch: {bad} (tol {RNN_RTOL:g})"

        G = 4 if cell == "lstm" else 3
        flops = 6.0 * T * B * G * H * (I + H)
        data = f"{T}×{B}×{I}×{H} f32"
        chk = run_check(check)
        for key, clip in zip(keys, (None, 1.0)):
            code = ("f = gradcore.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, cell=cell[, c0]); "
                    f"gradcore.rnn_backward(f.cache, gy, ghn{', clip_hidden=1.0' if clip else ''})")
            res = self.case(key, f"{cell} fwd+bwd" + (" clip_hidden" if clip else ""), data, code,
                            lambda clip=clip: gc_step(clip),
                            [("cuDNN", f"torch.nn.{cell.upper()} forward + torch.autograd.grad",
                              torch_step)],
                            check=chk, params={"T": T, "B": B, "I": I, "H": H, "cell": cell,
                                               "clip_hidden": clip, "flops": flops})
            if res.gradcore is not None:
                gf = {"gradcore": flops / res.gradcore.best / 1e9}
                for p in res.peers:
                    if p.time:
                        gf[p.name] = flops / p.time / 1e9
                res.params["GFLOPs"] = gf
                res.notes.append("GFLOP/s (GEMM flops): " + ", ".join(f"{k} {v:.0f}" for k, v in gf.items()))


def _np():
    import numpy
    return numpy


def _host(t):
    return t.detach().float().cpu().numpy()


_ORDER = ["0", "1a", "1b", "2a", "2b", "2c", "2d", "3a", "3b", "3c", "3d", "4a", "4b", "4c",
          "5a", "5b", "5c", "5d"]


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    why = _why_not(ctx)
    if why:
        suite.notes.append(f"skipped: {why}")
        ctx.log(f"{NAME}: skipped: {why}")
        return suite
    import gradcore.cuda as gcc
    torch = ctx.torch
    r = _Runner(ctx, suite)
    vocab = 5000 if ctx.quick else 50257
    gpt2 = gpt2_small_shapes(vocab=vocab)
    small = [(1000,)] * 2000
    T = 20 if ctx.quick else 100
    dbig = (512, 1024, 1024) if ctx.quick else (1024, 2048, 2048)
    groups = [
        ("0", r.copy),
        ("1a", lambda: r.norms_and_clip(("1a", "2a"), "GPT-2", gpt2, "float32", 1, noclip_keys="2c")),
        ("1b", lambda: r.norms_and_clip(("1b", "2b"), "GPT-2", gpt2, "bfloat16", 2, noclip_keys="2d")),
        ("3a", lambda: r.norms_and_clip(("3a", "3b"), "small", small, "float32", 3)),
        ("3c", lambda: r.norms_and_clip(("3c", "3d"), "small", small, "bfloat16", 4)),
        ("4a", lambda: r.dense("4a", 32, 256, 256, "relu", 5)),
        ("4b", lambda: r.dense("4b", 64, 512, 512, "tanh", 6)),
        ("4c", lambda: r.dense("4c", *dbig, "relu", 7)),
        ("5a", lambda: r.rnn(("5a", "5b"), "lstm", T, 32, 256, 256, 8)),
        ("5c", lambda: r.rnn(("5c", "5d"), "gru", T, 32, 256, 256, 9)),
    ]
    for key, group in groups:
        try:
            group()
        except Exception as exc:  # keep what was measured, report the crash
            import traceback
            suite.notes.append(f"case {key} aborted: {type(exc).__name__}: {exc}")
            ctx.log(traceback.format_exc())
        _pygc.collect()
        torch.cuda.empty_cache()  # the group's tensors are gone with its frame
    suite.cases.sort(key=lambda c: _ORDER.index(c.key) if c.key in _ORDER else len(_ORDER))

    name = torch.cuda.get_device_name()
    suite.notes += [
        f"GPU: {name} (gradcore.cuda.device_name: {gcc.device_name(torch.cuda.current_device())}); "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"cuBLAS: {gcc.cublas_status()}.",
        "ratio = torch time / gradcore time (> 1: gradcore faster), CUDA events on torch's current "
        "stream, best of N warmed-up batches; no targets (informative).",
        (f"limit: device copy bandwidth {r.copy_bw / 1e9:.0f} GB/s of traffic (case 0); '% of limit' = "
         "(bytes / copy bandwidth) / gradcore time, bytes = 1x the arrays for a norm or a clip that "
         "does not scale, 3x for a clip that scales (norm read + read/write)." if r.copy_bw else
         "limit: the copy measurement failed; no '% of limit'."),
        "clip: max_norm = total/2, the arrays restored (torch._foreach_copy_) before every timed call "
        "outside the events; no clip: max_norm = 2 x total (gradcore writes nothing).",
        "torch float32 peers run with torch's defaults (cuDNN may use TF32: allow_tf32="
        f"{torch.backends.cudnn.allow_tf32}; matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}).",
    ]
    if ctx.quick:
        suite.notes.append(f"--quick: GPT-2 wte cut to {vocab} rows, dense {dbig[0]}×{dbig[1]}×{dbig[2]} "
                           f"for 4c, RNN T = {T}, a 256 MiB copy.")
    return suite
