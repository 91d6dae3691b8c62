"""``gradcore demo --deep``: gradients exploding through depth, and the cures, on a deep MLP.

A 40-layer perceptron (``gradcore.nn``) learns scikit-learn's digits (8x8 images of
handwritten digits, shipped with scikit-learn, loaded offline), trained from the same seed
on the same batches five ways, each adding one cure to the one before:

1. plain: tanh units, weights drawn from N(0, 1) whatever the fan-in; each layer
   multiplies the backward signal by about sqrt(width) and the first layers' gradients
   are many orders of magnitude larger than the last's;
2. He initialisation (``gradcore.init.kaiming_normal``) and ReLU units: the right scale at
   the start, but nothing keeps it there once training moves the weights;
3. + batch normalisation after every layer (``BatchNorm1d``): activations are rescaled,
   yet at this depth batch norm itself makes the gradient grow layer after layer towards
   the input;
4. + residual connections (``Residual``: each block's output is added to its input): the
   gradient reaches every layer through the skips;
5. + clipping (the optimiser's ``clip_norm``, fed the norm ``GradientMonitor`` already
   computed): the occasional spike no longer moves the weights by lr x |g|.

Each run reports its test accuracy, the events the monitor flagged, and the gradient norm
of every layer's weight through depth; the figure draws those norms at a few steps.
Nothing printed depends on timing, so a seed gives the same output every time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

import gradcore
import gradcore.nn as gnn
from gradcore._missing_core import is_checkout
from gradcore.demo import Printer, _codes, _fmt, _plot_hint, add_output_arguments, sparkline, write_outputs

__all__ = ["main"]

FIGURE = "gradcore-demo-deep.png"
#: (name, activation, init, batch norm, residual, clip): each adds one cure to the last
RUNS = (
    ("plain", "tanh", "naive", False, False, False),
    ("He + ReLU", "relu", "he", False, False, False),
    ("+ batch norm", "relu", "he", True, False, False),
    ("+ residual", "relu", "he", True, True, False),
    ("+ clipping", "relu", "he", True, True, True),
)


# --------------------------------------------------------------------------- data and model
def load_data(seed):
    """Standardised digits split 1437 / 360 (80 / 20) by a seeded permutation, or None
    without scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
    order = np.random.default_rng([seed, 3]).permutation(len(x))
    train, test = order[: len(x) * 4 // 5], order[len(x) * 4 // 5:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3  # some pixels are always 0
    x = ((x - mean) / std).astype(np.float32)
    return (x[train], y[train]), (x[test], y[test])


def _linear(fan_in, fan_out, activation, init, seed):
    layer = gnn.Linear(fan_in, fan_out, activation=activation, rng=seed)
    rng = np.random.default_rng(seed)
    if init == "naive":
        layer.weight[...] = rng.standard_normal(layer.weight.shape)
    else:
        layer.weight[...] = gradcore.init.kaiming_normal(layer.weight.shape, rng=rng)
    layer.bias[...] = 0
    return layer


def build(cfg, activation, init, batch_norm, residual):
    """Input layer, ``cfg.depth`` hidden layers of ``cfg.width`` units, a linear readout."""
    seed = [cfg.seed, 0]
    layers = [_linear(64, cfg.width, activation, init, seed + [0])]
    for k in range(1, cfg.depth + 1):
        hidden = _linear(cfg.width, cfg.width, activation, init, seed + [k])
        if batch_norm:
            hidden = gnn.Sequential(hidden, gnn.BatchNorm1d(cfg.width))
        layers.append(gnn.Residual(hidden) if residual else hidden)
    layers.append(_linear(cfg.width, 10, "identity", init, seed + [cfg.depth + 1]))
    return gnn.Sequential(*layers)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(-np.mean(np.log(np.maximum(p[rows, labels], 1e-300))))
    p[rows, labels] -= 1
    return loss, (p / len(labels)).astype(np.float32)


# --------------------------------------------------------------------------- training
@dataclass
class Run:
    name: str
    clip: bool
    losses: list = field(default_factory=list)
    norms: list = field(default_factory=list)
    events: list = field(default_factory=list)
    event_counts: dict = field(default_factory=dict)
    layer_norms: dict = field(default_factory=dict)   # step -> per-layer weight gradient norms
    accuracy: float = float("nan")
    stopped_at: int | None = None
    skipped: int = 0

    @property
    def max_norm(self):
        finite = [n for n in self.norms if math.isfinite(n)]
        return max(finite) if finite else float("nan")

    @property
    def final_loss(self):
        return self.losses[-1] if self.losses else float("nan")

    def first_last(self, step=0):
        norms = self.layer_norms.get(step)
        return (float(norms[0]), float(norms[-1])) if norms is not None else (math.nan, math.nan)


def snapshot_steps(steps):
    return sorted({0, min(10, steps - 1), min(100, steps - 1), steps - 1})


def train(cfg, data, name, activation, init, batch_norm, residual, clip):
    (x_train, y_train), (x_test, y_test) = data
    model = build(cfg, activation, init, batch_norm, residual)
    names = [n for n, _ in model.named_parameters()]
    layers = [i for i, (n, p) in enumerate(model.named_parameters()) if n.endswith("weight") and p.ndim == 2]
    params = model.parameters()
    opt = gradcore.optim.SGD(params, cfg.lr, momentum=cfg.momentum,
                             clip_norm=cfg.max_norm if clip else None, skip_nonfinite=clip)
    monitor = gradcore.GradientMonitor(names, window=50, warmup=3)
    batches = np.random.default_rng([cfg.seed, 1])     # the same batches in every run
    snapshots = snapshot_steps(cfg.steps)
    run = Run(name, clip)
    model.train()
    for step in range(cfg.steps):
        idx = batches.choice(len(x_train), cfg.batch, replace=False)
        loss, grad_logits = cross_entropy(model.forward(x_train[idx]), y_train[idx])
        grads = list(model.backward(grad_logits, need_input_grad=False).values())
        run.events.extend(monitor.step(grads, params, loss))
        run.losses.append(loss)
        run.norms.append(monitor.last_global_norm)
        if step in snapshots:
            run.layer_norms[step] = monitor.per_array_norms[-1, layers].copy()
        if not opt.step(grads, total_norm=monitor.last_global_norm):
            run.skipped += 1
        if not all(np.isfinite(p).all() for p in params):
            run.stopped_at = step
            break
    model.eval()
    run.accuracy = float(np.mean(model.forward(x_test).argmax(axis=1) == y_test))
    run.event_counts = monitor.event_counts
    return run


# --------------------------------------------------------------------------- output
def _depth_table(out, runs, cfg):
    rows = []
    for run in runs:
        norms = run.layer_norms[0]
        rows.append([run.name, _fmt(norms[0]), _fmt(norms[len(norms) // 2]), _fmt(norms[-1]),
                     sparkline(norms, out.ascii)])
    out.table("Weight gradient norm per layer at step 0",
              ["run", "input", "middle", "readout", f"layers 1..{cfg.depth + 2} (log scale)"], rows,
              right={1, 2, 3})


def _summary_table(out, runs):
    rows = [[run.name, f"{100 * run.accuracy:.1f}%", _fmt(run.final_loss), _fmt(run.max_norm),
             _codes(run.events), str(len(run.losses)) + ("" if run.stopped_at is None else " (NaN)")]
            for run in runs]
    out.table("Summary", ["run", "test accuracy", "final loss", "max gradient norm", "events", "steps run"],
              rows, right={1, 2, 3, 5})
    out.line("Events: S spike, G growth, N non-finite gradient, L non-finite loss, P non-finite "
             "weights, W weight growth, H a layer's norm stayed high (count after the letter).")
    out.line()


def _ratio(a, b):
    return _fmt(a / b) if b else ("inf" if a else "NaN")


def _verdict(out, runs, cfg):
    plain, he, bn, res, clipped = runs
    out.line("Verdict", style="bold")
    first, last = plain.first_last()
    out.line(f"- Plain: the input layer's gradient is {_ratio(first, last)}x the readout's at step 0 "
             f"(each tanh layer with N(0, 1) weights multiplies it by ~sqrt({cfg.width})); test "
             f"accuracy {100 * plain.accuracy:.1f}%, chance is 10%.")
    he_note = (f"its weights were NaN after step {he.stopped_at}" if he.stopped_at is not None
               else f"gradient norms up to {_fmt(he.max_norm)}")
    last_step = max(he.layer_norms)
    first, last = he.first_last(last_step)
    if first == 0 and last == 0:
        later = f"by step {last_step} every gradient is 0: its ReLU units died and the gradient vanished"
    else:
        later = f"at step {last_step} the input layer's gradient is {_ratio(first, last)}x the readout's"
    out.line(f"- He + ReLU starts at the right scale (first/last {_ratio(*he.first_last())}) but does "
             f"not keep it: {he_note}; {later}; {100 * he.accuracy:.1f}%.")
    first, last = bn.first_last()
    out.line(f"- Batch norm alone at depth {cfg.depth}: the input layer's gradient is {_ratio(first, last)}x "
             f"the readout's; {100 * bn.accuracy:.1f}%.")
    out.line(f"- Residual connections carry the gradient to every layer (first/last "
             f"{_ratio(*res.first_last())}): {100 * res.accuracy:.1f}%, with "
             f"gradient spikes up to {_fmt(res.max_norm)}.")
    out.line(f"- Clipping to {_fmt(cfg.max_norm)} takes the spikes out of the updates: "
             f"{100 * clipped.accuracy:.1f}% ({100 * res.accuracy:.1f}% without), final loss "
             f"{_fmt(clipped.final_loss)} ({_fmt(res.final_loss)} without), "
             f"{sum(clipped.event_counts.values())} event(s) ({sum(res.event_counts.values())} without).")
    best = max(runs, key=lambda r: r.accuracy)
    if clipped.accuracy >= 0.9 and plain.accuracy < 0.5:
        out.line(f"=> The cures together trained the {cfg.depth + 2}-layer network to "
                 f"{100 * clipped.accuracy:.1f}% test accuracy; the plain network stayed at "
                 f"{100 * plain.accuracy:.1f}%.", style="bold green")
    else:
        out.line(f"=> No clear contrast at this setting (best: {best.name}, {100 * best.accuracy:.1f}%); "
                 f"try another --seed or --lr.", style="bold yellow")


def _summary(runs):
    return {run.name: {"test_accuracy": run.accuracy, "final_loss": run.final_loss,
                       "max_grad_norm": run.max_norm, "event_counts": dict(run.event_counts),
                       "steps_run": len(run.losses), "stopped_at": run.stopped_at,
                       "skipped_steps": run.skipped,
                       "layer_grad_norms": {str(s): v.tolist() for s, v in run.layer_norms.items()}}
            for run in runs}


def _plot(path, runs, cfg, out):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        out.line(f"No figure: matplotlib is not installed. {_plot_hint()} adds it; then the "
                 f"demo writes {path}.")
        return
    fig = Figure(figsize=(14, 4), layout="constrained")
    axes = fig.subplots(1, len(runs), sharey=True)
    for ax, run in zip(axes, runs):
        for step, norms in sorted(run.layer_norms.items()):
            norms = np.where(np.isfinite(norms) & (norms > 0), norms, np.nan)
            ax.plot(np.arange(1, len(norms) + 1), norms, lw=1, label=f"step {step}")
        ax.set(yscale="log", xlabel="layer (1 = input)",
               title=f"{run.name}\n{100 * run.accuracy:.1f}% test accuracy")
        ax.legend(fontsize="small")
    axes[0].set(ylabel="weight gradient norm")
    fig.suptitle(f"Gradient norm through depth, {cfg.depth + 2}-layer MLP on digits")
    fig.savefig(path, dpi=110)
    out.line(f"figure written to {os.path.abspath(path)}")


# --------------------------------------------------------------------------- entry point
def _parser():
    p = argparse.ArgumentParser(
        prog="gradcore demo --deep",
        description="Exploding gradients through depth and their cures: a deep MLP on "
                    "scikit-learn's digits, trained five ways from the same seed (plain; He "
                    "init + ReLU; + batch norm; + residual connections; + clipping).")
    p.add_argument("--depth", type=int, default=40, help="hidden layers (default 40)")
    p.add_argument("--width", type=int, default=64, help="units per hidden layer (default 64)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=0.2, help="learning rate (default 0.2)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--max-norm", type=float, default=5.0, help="clip_norm of the last run (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, split and batches (default 0)")
    add_output_arguments(p, FIGURE)
    return p


def main(argv=None) -> int:
    parser = _parser()
    cfg = parser.parse_args(argv)
    for name in ("depth", "width", "steps", "batch"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not cfg.lr > 0 or not cfg.max_norm > 0 or not 0 <= cfg.momentum < 1:
        parser.error("--lr and --max-norm must be > 0, --momentum in [0, 1)")
    data = load_data(cfg.seed)
    if data is None:
        hint = 'pip install ".[demo]"' if is_checkout(os.curdir) else "pip install scikit-learn"
        print(f"gradcore demo --deep trains on scikit-learn's digits data set, and scikit-learn is "
              f"not installed: {hint} adds it.", file=sys.stderr)
        return 1
    if cfg.batch > len(data[0][0]):
        parser.error(f"--batch must be at most {len(data[0][0])} (the training images)")

    out = Printer(plain=cfg.plain, color=not cfg.no_color)
    out.line("gradcore demo --deep: exploding gradients through depth, and their cures", style="bold")
    out.line(f"A {cfg.depth + 2}-layer MLP ({cfg.depth} hidden layers of {cfg.width}) on scikit-learn's "
             f"digits ({len(data[0][0])} training / {len(data[1][0])} test images, 10 classes); SGD lr "
             f"{cfg.lr:g} momentum {cfg.momentum:g}, batch {cfg.batch}, {cfg.steps} steps, seed {cfg.seed}. "
             f"Five runs from the same seed, each adding one cure.")
    out.line()
    runs = []
    with np.errstate(all="ignore"):
        for spec in RUNS:
            runs.append(train(cfg, data, *spec))
    _depth_table(out, runs, cfg)
    _summary_table(out, runs)
    _verdict(out, runs, cfg)

    write_outputs(out, cfg, _summary(runs), FIGURE, lambda path: _plot(path, runs, cfg, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
