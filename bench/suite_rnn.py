"""Suite "rnn": recurrent layers, forward + backpropagation through time.

Targets are the project's speed goals for the recurrent layers; every ratio is
peer_time / gradcore_time (> 1: gradcore is faster), measured side by side in this
process.

Cases: one forward then one backward, timed together, float32, for every cell
("rnn_tanh", "rnn_relu", "lstm", "gru") at (T, B, I, H) = steps × batch × input ×
hidden =
  * 1a-1d  100×32×128×128   (``--quick``: 20×32×128×128)
  * 2a-2d  100×32×256×256   (``--quick``: 20×32×256×256)
  * 3a-3d  50×64×512×512    (``--quick``: 10×64×512×512)
(a rnn_tanh, b rnn_relu, c lstm, d gru).  Targets: >= 1.2x PyTorch for every cell
and size, >= 1.5x PyTorch for LSTM at 100×32×256×256 (2c).  They are set for
2 threads (``--threads 2``; the thread counts used are printed under the table).

  * gradcore: ``f = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, cell=cell, c0=c0);
    rnn_backward(f.cache, gy, ghn)``.
  * torch: the module ``torch.nn.RNN(I, H, nonlinearity=...)`` / ``LSTM`` / ``GRU``
    (one layer, seq-first) whose parameters gradcore receives as NumPy arrays (same
    weights); x = ``torch.from_numpy(x).requires_grad_()``; ``y, h_n = module(x,
    h0)`` (LSTM: ``y, (h_n, c_n) = module(x, (h0, c0))``); ``torch.autograd.grad((y,
    h_n), [x, *module.parameters()], (gy, ghn))`` (no accumulation).
  * numpy: the NumPy reference of this file, a plain float32 forward + BPTT as a user
    would write it: one Python loop over the steps with ``@`` products per step
    (input and recurrent projection), the weight gradients accumulated per step.
    Informative (no target).

Data: torch's default initialisation, uniform(-1/sqrt(H), 1/sqrt(H)), for weights
and biases (``torch.manual_seed``); x, grad_y, grad_h_n ~ N(0, 1); h0 (and c0) ~
N(0, 0.5²).  Every implementation allocates its outputs on every call.

Machine limit: the FMA peak for float32, the best of the FMA probes (the active
instruction set on the library's threads) taken before every round of the case and
after the last (see machine.py).  Only the GEMM flops are counted:
forward 2·T·B·G·H·(I+H) (input and recurrent projections, G = 1, 4, 3 gates),
backward twice that (data and weight gradients), 6·T·B·G·H·(I+H) in all.  "% of
limit" = gradcore GFLOP/s / peak GFLOP/s (no target).

Check (outside the timed region): gradcore vs torch (when importable, else vs the
NumPy reference of this file run in float64) for y, grad_x, grad_weight_ih and
grad_weight_hh: max |diff| / max |reference| <= 1e-3 each.  The float32 NumPy
reference is compared with torch in the same way (recorded in the json; a note
when it disagrees, which would make the numpy column meaningless).
"""

from __future__ import annotations

import gc as _pygc
import math

from .common import SuiteResult, float32_problems, max_rel_err, run_check, time_gemm_case

NAME = "rnn"
DESCRIPTION = ("rnn_forward + rnn_backward (rnn_tanh, rnn_relu, lstm, gru) vs PyTorch "
               "autograd and NumPy (GFLOP/s, fraction of the FMA peak)")
NEEDS = ("fma",)            # measured up front by the CLI (printed before the tables)

RTOL = 1e-3                 # max |diff| / max |reference|, float32 over the whole sequence
CHECKED = ("y", "grad_x", "grad_weight_ih", "grad_weight_hh")

# goals (peer_time / gradcore_time)
T_TORCH = 1.2
T_LSTM_MID_TORCH = 1.5

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
LETTER = {"rnn_tanh": "a", "rnn_relu": "b", "lstm": "c", "gru": "d"}

GC_CODE = ("f = gradcore.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, cell=cell, c0=c0); "
           "gradcore.rnn_backward(f.cache, gy, ghn)")
TORCH_CODE = ("y, h_n = module(x, h0); "
              "torch.autograd.grad((y, h_n), [x, *module.parameters()], (gy, ghn))")
TORCH_LSTM_CODE = ("y, (h_n, c_n) = module(x, (h0, c0)); "
                   "torch.autograd.grad((y, h_n), [x, *module.parameters()], (gy, ghn))")
NUMPY_CODE = ("suite_rnn._numpy_{cell}: per-step loop, g = x[t] @ W_ih.T + b_ih + h @ W_hh.T "
              "+ b_hh ...; backward: dW_ih += dg.T @ x[t], dW_hh += dg.T @ h, gx[t] = dg @ W_ih, "
              "dh = dg @ W_hh")


# ---------------------------------------------------------------------------
# NumPy reference (plain forward + BPTT, as a user would write it).  dtype-generic:
# float32 inputs give the timed numpy peer, float64 inputs the check's fallback
# reference when torch is not importable.  Returns (y, h_n, grad_x, grad_h0,
# grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh).

def _sigmoid(np, a):
    return 1 / (1 + np.exp(-a))


def _numpy_rnn(np, x, h0, c0, W_ih, W_hh, b_ih, b_hh, gy, ghn, relu):
    T = x.shape[0]
    hs = [h0]
    h = h0
    for t in range(T):
        a = x[t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
        h = np.maximum(a, 0) if relu else np.tanh(a)
        hs.append(h)
    y = np.stack(hs[1:])

    gx = np.empty_like(x)
    gW_ih, gW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
    gb = np.zeros_like(b_ih)
    dh = ghn
    for t in range(T - 1, -1, -1):
        dh = dh + gy[t]
        h = hs[t + 1]
        da = dh * (h > 0) if relu else dh * (1 - h * h)
        gW_ih += da.T @ x[t]
        gW_hh += da.T @ hs[t]
        gb += da.sum(0)
        gx[t] = da @ W_ih
        dh = da @ W_hh
    return y, hs[-1], gx, dh, gW_ih, gW_hh, gb, gb.copy()


def _numpy_rnn_tanh(np, *args):
    return _numpy_rnn(np, *args, relu=False)


def _numpy_rnn_relu(np, *args):
    return _numpy_rnn(np, *args, relu=True)


def _numpy_lstm(np, x, h0, c0, W_ih, W_hh, b_ih, b_hh, gy, ghn):
    T = x.shape[0]
    H = h0.shape[1]
    h, c = h0, c0
    hs, cs, saved = [h0], [c0], []
    for t in range(T):
        g = x[t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
        i = _sigmoid(np, g[:, :H])
        f = _sigmoid(np, g[:, H:2 * H])
        gg = np.tanh(g[:, 2 * H:3 * H])
        o = _sigmoid(np, g[:, 3 * H:])
        c = f * c + i * gg
        tc = np.tanh(c)
        h = o * tc
        hs.append(h)
        cs.append(c)
        saved.append((i, f, gg, o, tc))
    y = np.stack(hs[1:])

    gx = np.empty_like(x)
    gW_ih, gW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
    gb = np.zeros_like(b_ih)
    dh = ghn
    dc = np.zeros_like(c0)
    for t in range(T - 1, -1, -1):
        i, f, gg, o, tc = saved[t]
        dh = dh + gy[t]
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di = dc * gg
        dgg = dc * i
        df = dc * cs[t]
        dc = dc * f
        dg = np.concatenate([di * i * (1 - i), df * f * (1 - f), dgg * (1 - gg * gg),
                             do * o * (1 - o)], axis=1)
        gW_ih += dg.T @ x[t]
        gW_hh += dg.T @ hs[t]
        gb += dg.sum(0)
        gx[t] = dg @ W_ih
        dh = dg @ W_hh
    return y, hs[-1], gx, dh, gW_ih, gW_hh, gb, gb.copy()


def _numpy_gru(np, x, h0, c0, W_ih, W_hh, b_ih, b_hh, gy, ghn):
    T = x.shape[0]
    H = h0.shape[1]
    h = h0
    hs, saved = [h0], []
    for t in range(T):
        gi = x[t] @ W_ih.T + b_ih
        gh = h @ W_hh.T + b_hh
        r = _sigmoid(np, gi[:, :H] + gh[:, :H])
        z = _sigmoid(np, gi[:, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]
        n = np.tanh(gi[:, 2 * H:] + r * hn)
        h = (1 - z) * n + z * h
        hs.append(h)
        saved.append((r, z, n, hn))
    y = np.stack(hs[1:])

    gx = np.empty_like(x)
    gW_ih, gW_hh = np.zeros_like(W_ih), np.zeros_like(W_hh)
    gb_ih, gb_hh = np.zeros_like(b_ih), np.zeros_like(b_hh)
    dh = ghn
    for t in range(T - 1, -1, -1):
        r, z, n, hn = saved[t]
        h_prev = hs[t]
        dh = dh + gy[t]
        dan = dh * (1 - z) * (1 - n * n)
        daz = dh * (h_prev - n) * z * (1 - z)
        dar = dan * hn * r * (1 - r)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)
        gW_ih += dgi.T @ x[t]
        gW_hh += dgh.T @ h_prev
        gb_ih += dgi.sum(0)
        gb_hh += dgh.sum(0)
        gx[t] = dgi @ W_ih
        dh = dh * z + dgh @ W_hh
    return y, hs[-1], gx, dh, gW_ih, gW_hh, gb_ih, gb_hh


_NUMPY = {"rnn_tanh": _numpy_rnn_tanh, "rnn_relu": _numpy_rnn_relu, "lstm": _numpy_lstm,
          "gru": _numpy_gru}


def _dims(*n) -> str:
    return "×".join(str(v) for v in n)


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

    # -- one cell at one size ----------------------------------------------------
    def rnn(self, key, cell, T, B, I, H, t_torch, *, seed=0):
        np, gc, torch = self.np, self.gc, self.torch
        f32 = np.float32
        G = GATES[cell]
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((T, B, I), dtype=f32)
        h0 = rng.standard_normal((B, H), dtype=f32)
        h0 *= f32(0.5)
        c0 = None
        if cell == "lstm":
            c0 = rng.standard_normal((B, H), dtype=f32)
            c0 *= f32(0.5)
        gy = rng.standard_normal((T, B, H), dtype=f32)
        ghn = rng.standard_normal((B, H), dtype=f32)

        # weights: torch's module and its initialisation when torch is importable,
        # else the same distribution drawn with NumPy
        module = None
        if torch is not None:
            torch.manual_seed(seed)
            if cell in ("rnn_tanh", "rnn_relu"):
                module = torch.nn.RNN(I, H, nonlinearity=cell[len("rnn_"):])
            elif cell == "lstm":
                module = torch.nn.LSTM(I, H)
            else:
                module = torch.nn.GRU(I, H)
            W_ih, W_hh, b_ih, b_hh = (
                getattr(module, n).detach().numpy().copy()
                for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
        else:
            k = 1.0 / math.sqrt(H)
            W_ih, W_hh, b_ih, b_hh = (
                rng.uniform(-k, k, shape).astype(f32)
                for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,)))

        def gc_step():
            f = gc.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, cell=cell, c0=c0)
            return gc.rnn_backward(f.cache, gy, ghn)

        np_ref = _NUMPY[cell]
        c0_np = np.zeros_like(h0) if c0 is None else c0

        def np_step():
            return np_ref(np, x, h0, c0_np, W_ih, W_hh, b_ih, b_hh, gy, ghn)

        t_step = None
        if module is not None:
            tx = torch.from_numpy(x).requires_grad_(True)
            th0 = torch.from_numpy(h0)[None]
            tgy = torch.from_numpy(gy)
            tghn = torch.from_numpy(ghn)[None]
            inputs = [tx, *module.parameters()]
            if cell == "lstm":
                tc0 = torch.from_numpy(c0)[None]

                def t_step():
                    y, (h_n, c_n) = module(tx, (th0, tc0))
                    return torch.autograd.grad((y, h_n), inputs, (tgy, tghn))
            else:
                def t_step():
                    y, h_n = module(tx, th0)
                    return torch.autograd.grad((y, h_n), inputs, (tgy, tghn))

        errs, np_errs = {}, {}
        notes = []

        def check():
            f = gc.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, cell=cell, c0=c0)
            g = gc.rnn_backward(f.cache, gy, ghn)
            got = {"y": f.y, "grad_x": g.grad_x, "grad_weight_ih": g.grad_weight_ih,
                   "grad_weight_hh": g.grad_weight_hh}
            if t_step is not None:
                against = "torch"
                if cell == "lstm":
                    ty, (th_n, _) = module(tx, (th0, tc0))
                else:
                    ty, th_n = module(tx, th0)
                gx, gwih, gwhh = torch.autograd.grad(
                    (ty, th_n), [tx, module.weight_ih_l0, module.weight_hh_l0], (tgy, tghn))
                ref = {"y": ty.detach().numpy(), "grad_x": gx.numpy(),
                       "grad_weight_ih": gwih.numpy(), "grad_weight_hh": gwhh.numpy()}
                # the timed NumPy reference must compute the same thing
                r32 = np_step()
                mine = dict(zip(("y", "grad_x", "grad_weight_ih", "grad_weight_hh"),
                                (r32[0], r32[2], r32[4], r32[5])))
                for k in CHECKED:
                    np_errs[k] = max_rel_err(np, mine[k], ref[k])
                bad_np = [k for k in CHECKED if not np_errs[k] <= RTOL]
                if bad_np:
                    notes.append("the NumPy reference disagrees with torch on "
                                 + ", ".join(f"{k} ({np_errs[k]:.1e})" for k in bad_np))
            else:
                against = "the float64 NumPy reference"
                d = np.float64
                r64 = np_ref(np, x.astype(d), h0.astype(d), c0_np.astype(d), W_ih.astype(d),
                             W_hh.astype(d), b_ih.astype(d), b_hh.astype(d), gy.astype(d),
                             ghn.astype(d))
                ref = dict(zip(("y", "grad_x", "grad_weight_ih", "grad_weight_hh"),
                               (r64[0], r64[2], r64[4], r64[5])))
            bad = float32_problems(np, got, ref, CHECKED, RTOL, errs)
            return "ok" if not bad else "; ".join(bad) + f" vs {against} (tol {RTOL:g})"

        chk = run_check(check)
        tcode = (TORCH_LSTM_CODE if cell == "lstm" else TORCH_CODE)
        tmod = {"rnn_tanh": "torch.nn.RNN(I, H, nonlinearity='tanh')",
                "rnn_relu": "torch.nn.RNN(I, H, nonlinearity='relu')",
                "lstm": "torch.nn.LSTM(I, H)", "gru": "torch.nn.GRU(I, H)"}[cell]
        peers = [("numpy", NUMPY_CODE.format(cell=cell), np_step, None, False),
                 ("torch", f"module = {tmod}; {tcode}", t_step, t_torch, True)]
        self.case(key, f"{cell} fwd+bwd", f"{_dims(T, B, I, H)} f32", GC_CODE, gc_step,
                  peers, check=chk, dtype="float32",
                  flops=6.0 * T * B * G * H * (I + H),
                  params={"cell": cell, "T": T, "B": B, "I": I, "H": H, "gates": G,
                          "dtype": "float32", "max_rel_err": errs,
                          "numpy_reference_max_rel_err_vs_torch": np_errs},
                  notes=notes)


def run(ctx) -> SuiteResult:
    suite = SuiteResult(NAME, DESCRIPTION)
    r = _Runner(ctx, suite)
    if ctx.quick:
        sizes = [(20, 32, 128, 128), (20, 32, 256, 256), (10, 64, 512, 512)]
    else:
        sizes = [(100, 32, 128, 128), (100, 32, 256, 256), (50, 64, 512, 512)]
    order = []
    for i, (T, B, I, H) in enumerate(sizes, 1):
        for j, cell in enumerate(CELLS):
            key = f"{i}{LETTER[cell]}"
            order.append(key)
            target = T_LSTM_MID_TORCH if (cell == "lstm" and i == 2) else T_TORCH
            try:
                r.rnn(key, cell, T, B, I, H, target, seed=10 * i + j)
            except Exception as exc:  # keep what was measured, report the crash
                import traceback
                suite.notes.append(f"case {key} aborted: {type(exc).__name__}: {exc}")
                ctx.log(traceback.format_exc())
            _pygc.collect()
    suite.cases.sort(key=lambda c: order.index(c.key) if c.key in order else len(order))

    fma = ctx.machine.fma()
    try:
        gc_threads = int(ctx.gradcore.get_num_threads())
    except Exception:
        gc_threads = "?"
    threads_txt = f"threads: gradcore {gc_threads}"
    if ctx.torch is not None:
        threads_txt += f", torch {ctx.torch.get_num_threads()}"
    threads_txt += " (the goals are set for 2 threads: --threads 2)"
    suite.notes += [
        "ratio = peer time / gradcore time (> 1: gradcore faster); '% of limit' = gradcore "
        "GFLOP/s / peak GFLOP/s (no target), flops = 6·T·B·G·H·(I+H) per forward+backward "
        "(GEMMs only: forward 2·T·B·G·H·(I+H), backward twice that; G = 1 rnn, 4 lstm, 3 gru).",
        f"peak: {fma.describe('float32')}.",
        "rnn: one forward then one backward timed together, T×B×I×H (steps × batch × input × "
        f"hidden), float32, h0 (and c0) given, grad_y and grad_h_n random. gradcore: {GC_CODE}. "
        "numpy: the plain per-step float32 forward + BPTT of suite_rnn.py (informative).",
        f"goals: ≥{T_TORCH:g}× torch for every cell and size, ≥{T_LSTM_MID_TORCH:g}× for lstm "
        f"at {_dims(*sizes[1])} (2c). {threads_txt}.",
        "check: gradcore vs torch (else vs the NumPy reference in float64), max |diff| / "
        f"max |ref| <= {RTOL:g} for y, grad_x, grad_weight_ih, grad_weight_hh.",
    ]
    if ctx.quick:
        suite.notes.append(
            "--quick: T = 20 (sizes 1, 2) and T = 10 (size 3) instead of 100 / 100 / 50.")
    if ctx.torch is None:
        suite.notes.append(f"torch peers skipped: {ctx.torch_note}")
    else:
        suite.notes.append(
            "torch: module = torch.nn.RNN(I, H, nonlinearity=...) / LSTM(I, H) / GRU(I, H) "
            "(torch's default init, its parameters copied to NumPy for gradcore), x = "
            "torch.from_numpy(x).requires_grad_(); " + TORCH_CODE
            + " (LSTM: module(x, (h0, c0)); no accumulation).")
    return suite
