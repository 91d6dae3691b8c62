"""Suite "normalization": batch norm and layer norm, forward + backward, float32.

Every ratio is peer_time / gradcore_time (> 1: gradcore is faster), measured side by side
in this process.

Cases, (N, C) = (256, 1024) (cache-resident), (4096, 1024), (8192, 768):
  * 1a-1c batch norm in training mode (batch statistics, running statistics updated):
    ``y, cache = batch_norm_forward(x, g, b, rm, rv, training=True);
    batch_norm_backward(gy, cache)``;
  * 2a-2c layer norm over the C features of each row:
    ``y, cache = layer_norm_forward(x, C, g, b); layer_norm_backward(gy, cache)``.
Peers: torch CPU autograd (``F.batch_norm`` / ``F.layer_norm`` then
``torch.autograd.grad(y, (x, g, b), gy)``, no accumulation) and the NumPy composition a
user writes (mean, var, normalise; the textbook backward), both float32.

Goals: >= 3x torch on (256, 1024), where torch is overhead-bound; >= 1.2x torch and
>= 80% of the memory limit of the minimum passes on the two large ones.

Limit: the minimum passes over the (N, C) arrays, from bandwidth probes taken around
each case (read = one read pass, update = one read-modify-write pass, as in the norms
suite; writing a fresh output is counted as an update):
  batch norm: forward 1 read (statistics) + 1 update (y); backward 2 reads (dy and x for
  the sums) + 1 read + 1 update (dx from dy and x): 4 reads + 2 updates;
  layer norm: a row is in cache for its second pass: forward 1 update; backward 1 read
  (dy) + 1 update (x to dx): 1 read + 2 updates.
"""

from __future__ import annotations

import gc as _pygc

from .common import SuiteResult, max_rel_err, run_check, time_probed_case

NAME = "normalization"
DESCRIPTION = "batch_norm / layer_norm forward + backward vs torch autograd and NumPy (float32)"
NEEDS = ("memory",)

SHAPES = [("a", 256, 1024), ("b", 4096, 1024), ("c", 8192, 768)]
T_SMALL_TORCH = 3.0
T_BIG_TORCH = 1.2
LIMIT_TARGET = 0.80
EPS = 1e-5
PASSES = {"batch": (4, 2), "layer": (1, 2)}  # (read passes, update passes)
RTOL = 1e-4  # max |diff| / max |reference| against the NumPy float32 composition


def numpy_batch_norm(np, x, g, b, gy):
    mean = x.mean(0)
    xc = x - mean
    var = (xc * xc).mean(0)
    rstd = 1.0 / np.sqrt(var + EPS)
    xhat = xc * rstd
    y = xhat * g + b
    gg, gb = (gy * xhat).sum(0), gy.sum(0)
    gx = (g * rstd) * (gy - gb / len(x) - xhat * (gg / len(x)))
    return y, gx, gg, gb


def numpy_layer_norm(np, x, g, b, gy):
    mean = x.mean(1, keepdims=True)
    xc = x - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(1, keepdims=True) + EPS)
    xhat = xc * rstd
    y = xhat * g + b
    gxhat = gy * g
    gx = rstd * (gxhat - gxhat.mean(1, keepdims=True) - xhat * (gxhat * xhat).mean(1, keepdims=True))
    return y, gx, (gy * xhat).sum(0), gy.sum(0)


class _Runner:
    def __init__(self, ctx, suite):
        self.ctx, self.suite = ctx, suite
        self.np, self.gc, self.torch = ctx.np, ctx.gradcore, ctx.torch

    def case(self, kind, key, n, c):
        np, gc, torch = self.np, self.gc, self.torch
        rng = np.random.default_rng([n, c, 0 if kind == "batch" else 1])  # the same data every run
        f32 = np.float32
        x = (rng.standard_normal((n, c)) * 2 + 3).astype(f32)
        gy = rng.standard_normal((n, c)).astype(f32)
        g = (1 + 0.1 * rng.standard_normal(c)).astype(f32)
        b = (0.1 * rng.standard_normal(c)).astype(f32)
        rm, rv = np.zeros(c, f32), np.ones(c, f32)
        if kind == "batch":
            def ours():
                _, cache = gc.batch_norm_forward(x, g, b, rm, rv, training=True)
                return gc.batch_norm_backward(gy, cache)
            gc_code = "y, c = batch_norm_forward(x, g, b, rm, rv, training=True); batch_norm_backward(gy, c)"
            numpy_fn = numpy_batch_norm
            name = "batch_norm fwd+bwd"
        else:
            def ours():
                _, cache = gc.layer_norm_forward(x, c, g, b)
                return gc.layer_norm_backward(gy, cache)
            gc_code = "y, c = layer_norm_forward(x, C, g, b); layer_norm_backward(gy, c)"
            numpy_fn = numpy_layer_norm
            name = "layer_norm fwd+bwd"
        peers = [("numpy", f"the NumPy float32 composition ({numpy_fn.__name__})",
                  lambda: numpy_fn(np, x, g, b, gy), None, False)]
        if torch is not None:
            tx = torch.from_numpy(x).requires_grad_()
            tg, tb = torch.from_numpy(g).requires_grad_(), torch.from_numpy(b).requires_grad_()
            tgy = torch.from_numpy(gy)
            trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            F = torch.nn.functional
            if kind == "batch":
                def theirs():
                    y = F.batch_norm(tx, trm, trv, tg, tb, training=True)
                    return torch.autograd.grad(y, (tx, tg, tb), tgy)
                torch_code = "F.batch_norm(x, rm, rv, g, b, training=True); autograd.grad(y, (x, g, b), gy)"
            else:
                def theirs():
                    y = F.layer_norm(tx, (c,), tg, tb)
                    return torch.autograd.grad(y, (tx, tg, tb), tgy)
                torch_code = "F.layer_norm(x, (C,), g, b); autograd.grad(y, (x, g, b), gy)"
            target = T_SMALL_TORCH if n * c <= 256 * 1024 else T_BIG_TORCH
            peers.append(("torch", torch_code, theirs, target, True))
        else:
            peers.append(("torch", "", None, None, True))

        def check():
            got = ours()
            want = numpy_fn(np, x.astype(np.float64), g.astype(np.float64), b.astype(np.float64),
                            gy.astype(np.float64))[1:]
            for label, a, w in zip(("grad_x", "grad_gamma", "grad_beta"), got, want):
                err = max_rel_err(np, a, w)
                if err > RTOL:
                    return f"{label}: max |diff| / max |ref| = {err:.2g}"
            return "ok"

        nbytes = x.nbytes
        reads, updates = PASSES[kind]
        probes = self.ctx.machine.probes(("read", "update"))
        large = n * c > 256 * 1024
        return time_probed_case(
            self.ctx, self.suite, probes, f"{reads} read + {updates} update",
            lambda p: reads * nbytes / p.best("read") + updates * nbytes / p.best("update"),
            key, name, f"({n}, {c}) f32", gc_code, ours, peers, bytes=nbytes,
            limit_target=LIMIT_TARGET if large else None, check=run_check(check),
            params={"N": n, "C": c, "kind": kind, "read_passes": reads, "update_passes": updates})


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    r = _Runner(ctx, suite)
    for kind, prefix in (("batch", "1"), ("layer", "2")):
        for suffix, n, c in SHAPES:
            try:
                r.case(kind, prefix + suffix, n, c)
            except Exception as exc:  # keep what was measured, report the crash
                import traceback
                suite.notes.append(f"case {prefix}{suffix} aborted: {type(exc).__name__}: {exc}")
                ctx.log(traceback.format_exc())
            _pygc.collect()
    suite.notes += [
        "ratio = peer time / gradcore time (> 1: gradcore faster); '% of limit' = the minimum "
        "passes' time at the probed bandwidths / gradcore time (batch norm 4 reads + 2 updates, "
        "layer norm 1 read + 2 updates of the (N, C) float32 array); goal >= 80% on the two large "
        "shapes.",
        "data: x ~ 3 + 2 N(0, 1), gy ~ N(0, 1), gamma ~ 1 + 0.1 N(0, 1), beta ~ 0.1 N(0, 1); "
        "every implementation allocates its outputs on every call.",
    ]
    if ctx.torch is None:
        suite.notes.append(f"torch peers skipped: {ctx.torch_note}")
    return suite
