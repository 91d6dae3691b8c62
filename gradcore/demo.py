"""``gradcore demo``: exploding gradients and their cure, on the adding problem.

A ReLU RNN (``gradcore.rnn_forward`` / ``rnn_backward``, cell ``"rnn_relu"``) with a linear
readout (``gradcore.dense_forward`` / ``dense_backward``) learns the adding problem
(Hochreiter and Schmidhuber 1997; Pascanu et al. 2013; Le, Jaitly and Hinton 2015): each
input step is (value in [0, 1], marker in {0, 1}); two steps are marked and the target is
the sum of their values. Always answering 1.0 gets a mean squared error of 1/6 = 0.167, so
a network has learned something only below that.

The recurrent matrix starts as ``gain * I`` with gain 1.1: its largest singular value is
above 1, the condition under which gradients can explode (Pascanu, Mikolov and Bengio 2013,
for activations whose derivative is at most 1). The same initialisation and the same
batches are trained twice with SGD + momentum: once as is, once with
``gradcore.clip_by_global_norm_`` applied to the gradients before each update. A
``gradcore.GradientMonitor`` watches both runs; the clipped run reuses the norm the monitor
already computed (``total_norm=monitor.last_global_norm``), so clipping costs no second
pass over the gradients. Non-finite gradients are skipped in the clipped run
(``nonfinite="skip"``); the unclipped run applies whatever it gets and stops once its
weights are NaN.

Everything printed depends only on the arguments (no timings), so a seed gives the same
output every time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

import gradcore
from gradcore._missing_core import is_checkout

__all__ = ["main"]

BASELINE_MSE = 1.0 / 6.0   #: MSE of always answering 1.0 (the mean of the target)
FIGURE = "gradcore-demo.png"   #: the figure's file name, in --out DIR or the current directory
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_out", "bias_out")
_EVENT_CODES = {"nonfinite_loss": "L", "nonfinite_grad": "N", "nonfinite_param": "P",
                "spike": "S", "growth": "G", "weight_growth": "W", "layer_norm": "H"}


# --------------------------------------------------------------------------- task and model
def adding_batch(rng, seq_len, batch, dtype=np.float32):
    """x (T, B, 2): (value, marker) per step; y (B, 1): the sum of the two marked values,
    one marked in each half of the sequence."""
    values = rng.uniform(0.0, 1.0, (seq_len, batch))
    marks = np.zeros((seq_len, batch))
    cols = np.arange(batch)
    half = seq_len // 2
    marks[rng.integers(0, half, batch), cols] = 1.0
    marks[rng.integers(half, seq_len, batch), cols] = 1.0
    x = np.stack([values, marks], axis=-1).astype(dtype)
    y = (values * marks).sum(axis=0)[:, None].astype(dtype)
    return x, y


def init_params(seed, hidden, gain, dtype=np.float32):
    """IRNN initialisation (Le et al. 2015) with the recurrent matrix scaled by ``gain``;
    small random input and output weights, zero biases. Same seed, same arrays."""
    rng = np.random.default_rng([seed, 0])
    return [
        rng.normal(0.0, 0.001, (hidden, 2)).astype(dtype),      # weight_ih
        (gain * np.eye(hidden)).astype(dtype),                  # weight_hh
        np.zeros(hidden, dtype),                                # bias_ih
        np.zeros(hidden, dtype),                                # bias_hh
        rng.normal(0.0, 0.001, (1, hidden)).astype(dtype),      # weight_out
        np.zeros(1, dtype),                                     # bias_out
    ]


def forward(params, x):
    w_ih, w_hh, b_ih, b_hh, w_out, b_out = params
    f = gradcore.rnn_forward(x, None, w_ih, w_hh, b_ih, b_hh, cell="rnn_relu")
    pred = gradcore.dense_forward(f.h_n, w_out, b_out)
    return f, pred


def loss_and_grads(params, x, y, grad_y_zeros, clip_hidden=None):
    """Mean squared error, the gradient of every parameter (in ``NAMES`` order) and
    ``hidden_grad_norms`` (||dL/dh_t|| for t = 0..T-1)."""
    f, pred = forward(params, x)
    err = pred.astype(np.float64) - y
    loss = float(np.mean(err * err))
    grad_pred = (2.0 * err / err.shape[0]).astype(pred.dtype)
    grad_h_n, g_w_out, g_b_out = gradcore.dense_backward(grad_pred, f.h_n, params[4], pred)
    r = gradcore.rnn_backward(f.cache, grad_y_zeros, grad_h_n, clip_hidden=clip_hidden)
    grads = [r.grad_weight_ih, r.grad_weight_hh, r.grad_bias_ih, r.grad_bias_hh, g_w_out, g_b_out]
    return loss, grads, r.hidden_grad_norms


def evaluate(params, x, y):
    """Test MSE and the number of hidden units active anywhere on the test batch."""
    f, pred = forward(params, x)
    err = pred.astype(np.float64) - y
    mse = float(np.mean(err * err))
    active = int(np.count_nonzero((f.y > 0).any(axis=(0, 1))))
    return mse, active


# --------------------------------------------------------------------------- training
@dataclass
class Run:
    name: str
    clip: bool
    losses: list = field(default_factory=list)
    norms: list = field(default_factory=list)        # raw global norm per step (before clipping)
    checkpoints: list = field(default_factory=list)  # (step, test mse, active units)
    events: list = field(default_factory=list)
    event_counts: dict = field(default_factory=dict)
    hidden_first: np.ndarray | None = None           # hidden_grad_norms at step 0
    hidden_event: tuple | None = None                # (step, kind, hidden_grad_norms) at 1st explosion
    stopped_at: int | None = None                    # step after which the weights were NaN
    nonfinite_steps: int = 0
    skipped_steps: int = 0

    @property
    def final_mse(self):
        return self.checkpoints[-1][1]

    @property
    def best_mse(self):
        vals = [c[1] for c in self.checkpoints if math.isfinite(c[1])]
        return min(vals) if vals else math.nan

    @property
    def max_norm(self):
        vals = [n for n in self.norms if not math.isnan(n)]
        return max(vals) if vals else math.nan


def train(cfg, clip, test, progress=None):
    params = init_params(cfg.seed, cfg.hidden, cfg.gain)
    opt = gradcore.optim.SGD(params, cfg.lr, momentum=cfg.momentum)
    data = np.random.default_rng([cfg.seed, 1])         # the same batches in both runs
    monitor = gradcore.GradientMonitor(NAMES, window=50, warmup=3)
    run = Run("clipped" if clip else "unclipped", clip)
    grad_y = np.zeros((cfg.seq_len, cfg.batch, cfg.hidden), np.float32)
    every = max(1, cfg.steps // 10)
    run.checkpoints.append((0, *evaluate(params, *test)))
    for step in range(cfg.steps):
        x, y = adding_batch(data, cfg.seq_len, cfg.batch)
        loss, grads, hidden = loss_and_grads(params, x, y, grad_y,
                                             cfg.clip_hidden if clip else None)
        events = monitor.step(grads, params, loss)
        norm = monitor.last_global_norm
        run.losses.append(loss)
        run.norms.append(norm)
        run.events.extend(events)
        if step == 0:
            run.hidden_first = hidden
        if run.hidden_event is None:
            for e in events:
                if e.kind in ("spike", "nonfinite_grad", "nonfinite_loss"):
                    run.hidden_event = (step, e.kind, hidden)
                    break
        finite = math.isfinite(norm)
        run.nonfinite_steps += not (finite and math.isfinite(loss))
        if clip:
            gradcore.clip_by_global_norm_(grads, cfg.max_norm, total_norm=norm, nonfinite="skip")
        if finite or not clip:
            opt.step(grads)
        else:
            run.skipped_steps += 1
        if progress is not None:
            progress(1)
        last = step == cfg.steps - 1
        dead = not all(np.isfinite(p).all() for p in params)
        if (step + 1) % every == 0 or last or dead:
            run.checkpoints.append((step + 1, *evaluate(params, *test)))
        if dead:
            run.stopped_at = step
            if progress is not None:
                progress(cfg.steps - step - 1)
            break
    run.event_counts = monitor.event_counts
    return run


# --------------------------------------------------------------------------- output
def _fmt(x, digits=3):
    if x is None:
        return "-"
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _codes(events):
    counts = {}
    for e in events:
        c = _EVENT_CODES[e.kind]
        counts[c] = counts.get(c, 0) + 1
    return " ".join(f"{c}{n}" if n > 1 else c for c, n in sorted(counts.items())) or "-"


def sparkline(values, ascii_only=False):
    """log10-scaled sparkline of positive values (non-finite/zero shown as '?'/' ')."""
    chars = " .:-=+*#%@" if ascii_only else "▁▂▃▄▅▆▇█"
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return "?" * v.size
    lg = np.log10(np.where(ok, v, 1.0))
    lo, hi = lg[ok].min(), lg[ok].max()
    span = hi - lo if hi > lo else 1.0
    idx = np.clip(((lg - lo) / span * (len(chars) - 1)).round().astype(int), 0, len(chars) - 1)
    return "".join(chars[i] if good else ("?" if not np.isfinite(val) else " ")
                   for i, good, val in zip(idx, ok, v))


class Printer:
    """Tables with rich when it is importable (and not --plain), plain text otherwise."""

    def __init__(self, plain=False, color=True):
        self.rich = None
        if not plain:
            try:
                import rich.console  # noqa: F401
                import rich.table  # noqa: F401
                self.rich = sys.modules["rich"]
            except ImportError:
                pass
        self.console = None
        if self.rich is not None:
            from rich.console import Console
            self.console = Console(no_color=not color, highlight=False, soft_wrap=True,
                                   emoji=False, markup=False)
            if not self.console.is_terminal:
                self.console = Console(no_color=not color, highlight=False, soft_wrap=True,
                                       emoji=False, markup=False, width=100,
                                       color_system=None)
        enc = (getattr(sys.stdout, "encoding", None) or "utf-8").lower()  # StringIO: None
        self.ascii = not enc.replace("-", "").startswith("utf")

    def line(self, text="", style=None):
        if self.console is not None:
            self.console.print(text, style=style)
        else:
            print(text)

    def table(self, title, headers, rows, right=None):
        right = set(range(1, len(headers))) if right is None else set(right)
        if self.console is not None:
            from rich.table import Table
            t = Table(title=title, title_justify="left", header_style="bold")
            for i, h in enumerate(headers):
                t.add_column(h, justify="right" if i in right else "left", no_wrap=True)
            for r in rows:
                t.add_row(*r)
            self.console.print(t)
            return
        widths = [max(len(str(r[c])) for r in [headers] + rows) for c in range(len(headers))]
        fmt = lambda r: "  ".join(str(v).rjust(w) if i in right else str(v).ljust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(r, widths)))
        print(title)
        print(fmt(headers))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print(fmt(r))
        print()


def _per_step_table(out, runs, n):
    rows = []
    for s in range(n):
        row = [str(s)]
        for run in runs:
            if s < len(run.losses):
                ev = [e for e in run.events if e.step == s]
                row += [_fmt(run.losses[s]), _fmt(run.norms[s]), _codes(ev)]
            else:
                row += ["stopped", "", ""]
        rows.append(row)
    out.table(f"The first {n} steps, one by one (loss of the batch, global gradient norm before "
              "clipping, monitor events)",
              ["step", "unclipped loss", "|g|", "events", "clipped loss", "|g|", "events"],
              rows)


def _checkpoint_table(out, runs, cfg):
    steps = sorted({c[0] for run in runs for c in run.checkpoints})
    rows = []
    for s in steps:
        row = [str(s)]
        for run in runs:
            cp = {c[0]: c for c in run.checkpoints}
            prev = max([c[0] for c in run.checkpoints if c[0] < s], default=0)
            if s in cp:
                window = [n for n in run.norms[prev:s] if not math.isnan(n)]
                ev = [e for e in run.events if prev <= e.step < s]
                row += [_fmt(cp[s][1]), _fmt(max(window)) if window else "-", _codes(ev)]
            else:
                row += ["stopped", "", ""]
        rows.append(row)
    out.table("Training, side by side (test MSE on 1000 held-out sequences; largest gradient "
              "norm and monitor events since the previous row)",
              ["step", "unclipped MSE", "max |g|", "events", "clipped MSE", "max |g|", "events"],
              rows)
    out.line("events: S spike, G sustained growth, W weights growing, H layer norm persistently "
             "high, N non-finite gradient, L non-finite loss, P non-finite weights "
             "(S3 = three spikes)")
    out.line()


def _hidden_section(out, runs, cfg):
    out.line("dL/dh_t through time (hidden_grad_norms of rnn_backward), from the last step "
             f"t={cfg.seq_len - 1} back to t=0, log scale:")
    items = [("step 0, both runs", runs[0].hidden_first)]
    for run in runs:
        if run.hidden_event is not None:
            step, kind, h = run.hidden_event
            items.append((f"{run.name}, step {step} ({kind})", h))
    width = max(len(label) for label, _ in items)
    for label, h in items:
        if h is None:
            continue
        back = np.asarray(h)[::-1]
        end, start = back[0], back[-1]
        ratio = start / end if end > 0 and math.isfinite(end) and math.isfinite(start) else math.nan
        out.line(f"  {label.ljust(width)}  {sparkline(back, out.ascii)}  "
                 f"{_fmt(end)} -> {_fmt(start)} (x{_fmt(ratio)})")
    out.line()


def _summary(runs):
    return {run.name: {"final_mse": run.final_mse, "best_mse": run.best_mse,
                       "events": sum(run.event_counts.values()),
                       "event_counts": dict(run.event_counts),
                       "max_grad_norm": run.max_norm, "nonfinite_steps": run.nonfinite_steps,
                       "steps_run": len(run.losses), "stopped_at": run.stopped_at,
                       "active_units": run.checkpoints[-1][2]}
            for run in runs}


def _summary_table(out, runs, cfg):
    def counts(run):
        return ", ".join(f"{k} {v}" for k, v in run.event_counts.items()) or "none"

    rows = [
        ["final test MSE"] + [_fmt(r.final_mse) for r in runs],
        ["best test MSE"] + [_fmt(r.best_mse) for r in runs],
        ["events flagged"] + [counts(r) for r in runs],
        ["max gradient norm"] + [_fmt(r.max_norm) for r in runs],
        ["non-finite steps"] + [str(r.nonfinite_steps) for r in runs],
        ["steps run"] + [str(len(r.losses)) + ("" if r.stopped_at is None else " (NaN: stopped)")
                         for r in runs],
        ["active hidden units"] + [f"{r.checkpoints[-1][2]} of {cfg.hidden}" for r in runs],
    ]
    out.table("Summary", ["", "unclipped", f"clipped (max_norm={_fmt(cfg.max_norm)})"], rows,
              right={1, 2})


def _verdict(out, runs, cfg):
    plain, clipped = runs
    first = next((e for e in plain.events if e.kind in ("spike", "nonfinite_grad",
                                                        "nonfinite_loss")), None)
    out.line("Verdict", style="bold")
    exploded = first is not None or plain.stopped_at is not None or not math.isfinite(plain.final_mse)
    if first is not None:
        how = (f"{first.ratio:.3g}x its running median" if first.kind == "spike" and first.ratio
               else "non-finite")
        out.line(f"- Without clipping the gradient exploded: at step {first.step} its global norm "
                 f"was {_fmt(first.value)} ({how}); the monitor flagged "
                 f"{sum(plain.event_counts.values())} event(s).")
    elif exploded:
        out.line("- Without clipping the run diverged.")
    else:
        out.line("- Without clipping no explosion was flagged at this setting.")
    if plain.stopped_at is not None:
        out.line(f"- Its weights were NaN after step {plain.stopped_at}; every later step would "
                 "be NaN too, so the run stopped there.")
    elif plain.final_mse >= BASELINE_MSE * 0.95 or not math.isfinite(plain.final_mse):
        out.line(f"- One update of lr x |g| wrecked the weights ({plain.checkpoints[-1][2]} of "
                 f"{cfg.hidden} ReLU units still active): it ends at MSE {_fmt(plain.final_mse)}, "
                 f"no better than always answering 1.0 ({BASELINE_MSE:.3f}).")
    else:
        out.line(f"- It ends at test MSE {_fmt(plain.final_mse)}.")
    out.line(f"- With clip_by_global_norm_(grads, {_fmt(cfg.max_norm)}) no gradient handed to SGD "
             f"is longer than {_fmt(cfg.max_norm)}. The raw gradients still spiked (the monitor sees "
             f"them before clipping: max {_fmt(clipped.max_norm)}), but the weights survived: "
             f"test MSE {_fmt(clipped.checkpoints[0][1])} -> {_fmt(clipped.final_mse)}.")
    cured = (math.isfinite(clipped.final_mse) and clipped.final_mse < clipped.checkpoints[0][1]
             and (not math.isfinite(plain.final_mse) or clipped.final_mse < plain.final_mse))
    if cured and clipped.final_mse < BASELINE_MSE:
        out.line(f"=> Clipping cured it: {_fmt(clipped.final_mse)} is below the {BASELINE_MSE:.3f} "
                 "of the constant answer, so the clipped network learned to add.", style="bold green")
    elif cured:
        out.line(f"=> Clipping kept training alive ({_fmt(clipped.final_mse)} vs "
                 f"{_fmt(plain.final_mse)} unclipped); more --steps let it get below "
                 f"{BASELINE_MSE:.3f}.", style="bold green")
    else:
        out.line("=> No clear contrast at this setting (try another --seed or --gain).",
                 style="bold yellow")


def _plot_hint() -> str:
    """The one command that adds matplotlib: the project's ``plot`` extra from its checkout,
    plain matplotlib elsewhere."""
    return 'pip install ".[plot]"' if is_checkout(os.curdir) else "pip install matplotlib"


def _plot(path, runs, cfg, out):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        out.line(f"No figure: matplotlib is not installed. {_plot_hint()} adds it; then the "
                 f"demo writes {path}.")
        return
    fig = Figure(figsize=(10, 10), layout="constrained")
    ax_loss, ax_norm, ax_h = fig.subplots(3, 1)
    colors = {"unclipped": "tab:red", "clipped": "tab:blue"}
    for run in runs:
        steps = np.arange(len(run.losses))
        loss = np.asarray(run.losses, dtype=np.float64)
        norm = np.asarray(run.norms, dtype=np.float64)
        ax_loss.plot(steps, np.where(np.isfinite(loss) & (loss > 0), loss, np.nan), lw=0.6,
                     color=colors[run.name], label=run.name)
        ax_norm.plot(steps, np.where(np.isfinite(norm) & (norm > 0), norm, np.nan), lw=0.6,
                     color=colors[run.name], label=f"{run.name} (before clipping)")
        ev = [e.step for e in run.events if e.kind in ("spike", "nonfinite_grad")]
        if ev:
            y = np.where(np.isfinite(norm[ev]), norm[ev], np.nanmax(np.where(np.isfinite(norm), norm, np.nan)))
            ax_norm.scatter(ev, y, marker="^", s=18, color=colors[run.name])
    ax_loss.axhline(BASELINE_MSE, color="gray", ls="--", lw=1, label="always answer 1.0")
    ax_loss.set(yscale="log", xlabel="step", ylabel="training MSE", title="loss")
    ax_norm.axhline(cfg.max_norm, color="black", ls=":", lw=1, label="max_norm")
    ax_norm.set(yscale="log", xlabel="step", ylabel="global gradient norm",
                title="global gradient norm (triangles: monitor spikes)")
    t = np.arange(cfg.seq_len)
    ax_h.plot(t, runs[0].hidden_first, color="gray", label="step 0")
    for run in runs:
        if run.hidden_event is not None:
            step, kind, h = run.hidden_event
            ax_h.plot(t, np.where(np.asarray(h) > 0, h, np.nan), color=colors[run.name],
                      label=f"{run.name}, step {step} ({kind})")
    ax_h.set(yscale="log", xlabel="time step t", ylabel="||dL/dh_t||",
             title="hidden_grad_norms through time at the first explosion")
    for ax in (ax_loss, ax_norm, ax_h):
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    out.line(f"figure written to {os.path.abspath(path)}")


# --------------------------------------------------------------------------- entry point
def _parser():
    p = argparse.ArgumentParser(
        prog="gradcore demo",
        description="Exploding gradients and their cure: a ReLU RNN on the adding problem, "
                    "trained twice from the same initialisation, without and with "
                    "gradcore.clip_by_global_norm_, watched by gradcore.GradientMonitor.")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 5000; "
                   "1500 with --quick)")
    p.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    p.add_argument("--deep", action="store_true", help="the other demo: gradients exploding through "
                   "the depth of an MLP and the cures (gradcore demo --deep --help)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data (default 0)")
    p.add_argument("--seq-len", type=int, default=20, help="sequence length T (default 20)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--gain", type=float, default=1.1,
                   help="recurrent matrix = gain * I (largest singular value; default 1.1)")
    p.add_argument("--max-norm", type=float, default=1.0,
                   help="max_norm of clip_by_global_norm_ in the clipped run (default 1.0)")
    p.add_argument("--clip-hidden", type=float, default=None,
                   help="also clip dL/dh_t element-wise in rnn_backward in the clipped run")
    add_output_arguments(p, FIGURE)
    return p


def add_output_arguments(p, figure_name):
    """--out, --plot, --no-plot, --json, --plain, --no-color: what write_outputs and
    Printer read."""
    p.add_argument("--out", metavar="DIR", help=f"write the figure to DIR/{figure_name} (default: "
                   "the current directory; needs matplotlib) and the summary to "
                   "DIR/summary.json; DIR is created if needed")
    figure = p.add_mutually_exclusive_group()
    figure.add_argument("--plot", metavar="PATH", help="write the figure to PATH instead")
    figure.add_argument("--no-plot", action="store_true", help="no figure")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON to PATH")
    p.add_argument("--plain", action="store_true", help="plain-text tables even with rich")
    p.add_argument("--no-color", action="store_true", help="no colours")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--deep" in argv:
        from gradcore.demo_deep import main as deep_main

        return deep_main([a for a in argv if a != "--deep"])
    parser = _parser()
    cfg = parser.parse_args(argv)
    if cfg.steps is None:
        cfg.steps = 1500 if cfg.quick else 5000
    for name in ("steps", "seq_len", "hidden", "batch"):
        if getattr(cfg, name) < (2 if name == "seq_len" else 1):
            parser.error(f"--{name.replace('_', '-')} is too small")
    if not cfg.max_norm > 0 or not cfg.lr > 0:
        parser.error("--max-norm and --lr must be > 0")
    if cfg.clip_hidden is not None and not cfg.clip_hidden > 0:
        parser.error("--clip-hidden must be > 0")

    out = Printer(plain=cfg.plain, color=not cfg.no_color)
    sigma = float(np.linalg.norm(init_params(cfg.seed, cfg.hidden, cfg.gain)[1], 2))
    out.line("gradcore demo: exploding gradients on the adding problem", style="bold")
    out.line(f"ReLU RNN, T={cfg.seq_len}, H={cfg.hidden}, batch {cfg.batch}, SGD lr {cfg.lr} "
             f"momentum {cfg.momentum}, {cfg.steps} steps, seed {cfg.seed}.")
    out.line(f"Recurrent matrix {cfg.gain:g} x I: largest singular value {sigma:.3g} "
             f"{'>' if sigma > 1 else '<='} 1, so gradients can grow by up to {sigma:.3g}x per "
             f"step back through time ({sigma ** (cfg.seq_len - 1):.3g}x over the sequence).")
    out.line(f"Target: test MSE below {BASELINE_MSE:.3f}, what always answering 1.0 gets.")
    out.line()

    test = adding_batch(np.random.default_rng([cfg.seed, 2]), cfg.seq_len, 1000)
    runs = []
    with np.errstate(all="ignore"):
        for clip in (False, True):
            runs.append(_train_with_progress(out, cfg, clip, test))

    _per_step_table(out, runs, min(10, cfg.steps))
    _checkpoint_table(out, runs, cfg)
    first_events = [e for e in runs[0].events][:3]
    if first_events:
        out.line("First events flagged by the monitor in the unclipped run:")
        for e in first_events:
            out.line(f"  {e}")
        out.line()
    _hidden_section(out, runs, cfg)
    _summary_table(out, runs, cfg)
    _verdict(out, runs, cfg)

    write_outputs(out, cfg, _summary(runs), FIGURE, lambda path: _plot(path, runs, cfg, out))
    return 0


def write_outputs(out, cfg, summary, figure, plot):
    """The summary as JSON to --json and DIR/summary.json (--out DIR), and the figure
    (``plot(path)``) to --plot, or DIR/figure, or ./figure, unless --no-plot."""
    json_paths = [cfg.json] if cfg.json else []
    if cfg.out:
        os.makedirs(cfg.out, exist_ok=True)
        json_paths.append(os.path.join(cfg.out, "summary.json"))
    for path in json_paths:
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=2, default=float)
        out.line(f"summary written to {path}")
    if not cfg.no_plot:
        plot(cfg.plot or os.path.join(cfg.out or os.curdir, figure))


def _train_with_progress(out, cfg, clip, test):
    label = "with clipping   " if clip else "without clipping"
    if out.console is not None and out.console.is_terminal:
        from rich.progress import Progress
        with Progress(console=out.console, transient=True) as progress:
            task = progress.add_task(label, total=cfg.steps)
            return train(cfg, clip, test, lambda n: progress.advance(task, n))
    return train(cfg, clip, test)


if __name__ == "__main__":
    sys.exit(main())
