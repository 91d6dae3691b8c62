"""Suite "amp": mixed precision on the GPT-2 small gradient list, in bfloat16 and float32.

Every ratio is peer_time / gradcore_time (> 1: gradcore is faster), measured side by side
in this process.

Data: the 148 parameter shapes of GPT-2 small (124.4M elements; ``--quick`` cuts the
token embedding to 5000 rows, 89.7M), as torch tensors holding N(0, 1) * 2**16 (the
gradients of a loss scaled by torch's initial scale), bfloat16 or float32. Each is the
``.grad`` of a parameter aliasing its memory (only ``.grad`` is touched), and the
parameters are one ``torch.optim.SGD``'s.

Cases
  * the global norm of the float32 and of the bfloat16 list (one read pass; the bfloat16
    list is half the bytes, so it must take about half the time):
    ``gradcore.torch.get_total_norm`` (the drop-in a torch user calls) against
    ``torch.nn.utils.get_total_norm``.
  * unscale + inf/NaN check + clip by global norm (max_norm 1.0, which clips):
    ``gradcore.torch.amp.GradScaler.unscale_(opt, max_norm=1.0)`` (one read pass: the
    norm and the non-finite flag; one in-place pass: g *= clip / scale) against torch's
    ``scaler.unscale_(opt); clip_grad_norm_(params, 1.0)`` (unscale pass, norm pass,
    scaling pass). The gradients are restored and each scaler's iteration ended
    (``update()``) before every timed call, outside the timer.

Limits (bytes = payload bytes of the list; bandwidths from probes taken around each
case, as in the norms suite): norm = bytes / read_bw; unscale + clip = bytes / read_bw +
bytes / update_bw (the two passes the fused form needs).
"""

from __future__ import annotations

import gc as _pygc
import math

from .common import SuiteResult, rel_err, run_check, time_probed_case
from .suite_norms import EPS, gpt2_small_shapes

NAME = "amp"
DESCRIPTION = "GradScaler unscale_ + clip and global_norm on GPT-2 small, bfloat16 and float32, vs torch"
NEEDS = ("memory",)

SCALE = 2.0 ** 16
MAX_NORM = 1.0
LIMIT_TARGET = 0.85
T_UNSCALE_CLIP_TORCH = 2.0
TORCH_CODE = ("scaler.unscale_(opt); torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)  "
              "(torch.amp.GradScaler('cpu'))")
GC_CODE = "scaler.unscale_(opt, max_norm=1.0)  (gradcore.torch.amp.GradScaler)"


class ScaledGrads:
    """The scaled gradient list as the .grad of one optimizer's parameters, a copy to
    restore it from, and its float64 reference norm."""

    def __init__(self, ctx, shapes, dtype, seed):
        torch = ctx.torch
        gen = torch.Generator().manual_seed(seed)
        self.grads = [(torch.randn(s, generator=gen) * SCALE).to(dtype) for s in shapes]
        self.backup = [g.clone() for g in self.grads]
        self.params = []
        for g in self.grads:
            p = torch.nn.Parameter(g.detach())  # aliases the gradient: no extra memory
            p.grad = g
            self.params.append(p)
        self.opt = torch.optim.SGD(self.params, lr=0.1)
        self.nbytes = sum(g.numel() * g.element_size() for g in self.grads)
        self.n = sum(g.numel() for g in self.grads)
        self.scaled_total = math.sqrt(math.fsum(float(g.double().square().sum()) for g in self.grads))

    def restore(self):
        for g, b in zip(self.grads, self.backup):
            g.copy_(b)

    def release(self):
        self.grads = self.backup = self.params = self.opt = None
        _pygc.collect()


class Iteration:
    """A scaler's unscale (+ clip) as one timed call; ``end()`` closes the iteration
    the call opened (``update()``, as a training step would), so that the next call is
    allowed."""

    def __init__(self, scaler, fn):
        self.scaler, self.fn, self.open = scaler, fn, False

    def __call__(self):
        self.open = True
        return self.fn()

    def end(self):
        if self.open:
            self.scaler.update()
            self.open = False


def _new_scaler(cls, torch):
    scaler = cls("cpu", init_scale=SCALE, growth_interval=1 << 30)  # the scale stays put
    scaler.scale(torch.ones(()))                                    # creates the scale tensor
    return scaler


class _Runner:
    def __init__(self, ctx, suite):
        self.ctx, self.suite = ctx, suite
        self.bandwidths = {}

    def probed(self, key, name, data, gc_code, gc_fn, peers, *, limit, nbytes, **kw):
        probes = self.ctx.machine.probes(limit)
        res = time_probed_case(self.ctx, self.suite, probes, "+".join(limit),
                               lambda p: sum(nbytes / p.best(k) for k in limit),
                               key, name, data, gc_code, gc_fn, peers, bytes=nbytes,
                               limit_target=LIMIT_TARGET, **kw)
        for kind, got in probes.samples.items():
            self.bandwidths.setdefault(kind, []).extend(got)
        return res

    def check_unscale_clip(self, sg: ScaledGrads, scaler, rtol) -> str:
        torch = self.ctx.torch
        sg.restore()
        total = float(scaler.unscale_(sg.opt, max_norm=MAX_NORM))
        scaler.update()
        want_total = sg.scaled_total / SCALE
        if rel_err(total, want_total) > rtol:  # the total comes back in the gradients' dtype
            return f"returned total {total!r} vs reference {want_total!r}"
        factor = min(1.0, MAX_NORM / (want_total + EPS)) / SCALE
        for i in sorted({0, 1, len(sg.grads) // 2, len(sg.grads) - 1}):
            want = sg.backup[i].double() * factor
            if not torch.allclose(sg.grads[i].double(), want, rtol=rtol, atol=0):
                return f"gradient {i} wrong after the fused unscale + clip (factor {factor:.6g})"
        sg.restore()
        return "ok"

    def run_dtype(self, dtype_name, seed):
        ctx, torch, gc = self.ctx, self.ctx.torch, self.ctx.gradcore
        import gradcore.torch as gct
        import gradcore.torch.amp as gct_amp

        vocab = 5000 if ctx.quick else 50257
        dtype = getattr(torch, dtype_name)
        ctx.log(f"{NAME}: building the GPT-2 small gradient list ({dtype_name})")
        sg = ScaledGrads(ctx, gpt2_small_shapes(vocab=vocab), dtype, seed)
        short = {"float32": "f32", "bfloat16": "bf16"}[dtype_name]
        data = f"GPT-2 {sg.n / 1e6:.0f}M {short}"
        params = {"arrays": len(sg.grads), "elements": sg.n, "bytes": sg.nbytes, "dtype": dtype_name,
                  "wte_rows": vocab}
        grads = sg.grads

        key = {"float32": "1", "bfloat16": "2"}[dtype_name]
        got = float(gc.global_norm(grads))
        err = rel_err(got, sg.scaled_total)
        chk = "ok" if err <= 1e-8 else f"global_norm={got!r} vs reference {sg.scaled_total!r}"
        norm = self.probed(key, f"global_norm ({dtype_name})", data,
                           "gradcore.torch.get_total_norm(grads)",
                           lambda: gct.get_total_norm(grads),
                           [("torch", "torch.nn.utils.get_total_norm(grads)",
                             lambda: torch.nn.utils.get_total_norm(grads), None, True)],
                           limit=("read",), nbytes=sg.nbytes, check=chk,
                           params={**params, "rel_err": err})

        our_scaler = _new_scaler(gct_amp.GradScaler, torch)
        torch_scaler = _new_scaler(torch.amp.GradScaler, torch)

        def torch_unscale_clip():
            torch_scaler.unscale_(sg.opt)
            return torch.nn.utils.clip_grad_norm_(sg.params, MAX_NORM, foreach=True)
        ours = Iteration(our_scaler, lambda: our_scaler.unscale_(sg.opt, max_norm=MAX_NORM))
        theirs = Iteration(torch_scaler, torch_unscale_clip)

        def setup():
            ours.end()
            theirs.end()
            sg.restore()

        rtol = 1e-6 if dtype_name == "float32" else 2.0 ** -8
        chk = run_check(lambda: self.check_unscale_clip(sg, our_scaler, rtol))
        key = {"float32": "3", "bfloat16": "4"}[dtype_name]
        self.probed(key, f"unscale_ + clip ({dtype_name})", data, GC_CODE, ours,
                    [("torch", TORCH_CODE, theirs, T_UNSCALE_CLIP_TORCH, True)],
                    limit=("read", "update"), nbytes=sg.nbytes, setup=setup, check=chk,
                    params={**params, "scale": SCALE, "max_norm": MAX_NORM})
        setup()
        del grads
        sg.release()
        return norm

    def run(self):
        norms = {}
        for dtype_name, seed in (("float32", 1), ("bfloat16", 2)):
            try:
                norms[dtype_name] = self.run_dtype(dtype_name, seed)
            except Exception as exc:  # keep what was measured, report the crash
                import traceback
                self.suite.notes.append(f"{dtype_name} aborted: {type(exc).__name__}: {exc}")
                self.ctx.log(traceback.format_exc())
            _pygc.collect()
        f32, bf16 = norms.get("float32"), norms.get("bfloat16")
        if f32 is not None and bf16 is not None and f32.gradcore and bf16.gradcore:
            self.suite.notes.append(
                f"global_norm: bfloat16 takes {bf16.gradcore.best / f32.gradcore.best:.2f}x the time of "
                "float32 on the same shapes (half the bytes: 0.5 at the read limit).")


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    if ctx.torch is None:
        suite.notes.append(f"suite skipped: it measures torch.amp's GradScaler and torch tensors "
                           f"({ctx.torch_note})")
        return suite
    runner = _Runner(ctx, suite)
    runner.run()
    seen = "; ".join(f"{k} {min(v) / 1e9:.1f}-{max(v) / 1e9:.1f} GB/s over {len(v)} probes"
                     for k, v in runner.bandwidths.items())
    suite.notes += [
        "ratio = peer time / gradcore time (> 1: gradcore faster); '% of limit' = (bytes / "
        "bandwidth) / gradcore time, bandwidths from the memory probes taken around each case; "
        "read+update = the fused form's two passes. " + (f"Probes of this suite: {seen}." if seen else ""),
        f"gradients N(0, 1) x {SCALE:g}; max_norm {MAX_NORM} clips; restored and each scaler's "
        "iteration ended (update()) before every timed call, outside the timer.",
    ]
    return suite
