"""``gradcore bench --plot PATH``: one figure of a run, drawn from its JSON payload.

One row per suite with cases: on the left the speed-up of gradcore over each peer
(peer time / gradcore time, log scale, > 1: gradcore faster) with the goals marked;
on the right the fraction of its machine limit gradcore reaches, with the limit's
spread as an error bar and "limit wrong" where a measured time beat the limit.
"""

from __future__ import annotations

import math

__all__ = ["plot_run", "MATPLOTLIB_HINT"]

MATPLOTLIB_HINT = ('matplotlib is not installed: pip install matplotlib (from a gradcore '
                   'checkout: pip install ".[plot]") adds it')


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and v > 0 and math.isfinite(v)


def _suites(payload: dict) -> list:
    return [s for s in payload.get("suites", []) if s.get("cases")]


def plot_run(payload: dict, path: str) -> str:
    """Writes the figure of ``payload`` (the --json of a run) to ``path``; returns a line
    for the user: "wrote PATH" or why no figure was written."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return f"No figure: {MATPLOTLIB_HINT}."
    suites = _suites(payload)
    if not suites:
        return "No figure: the run has no cases."
    fig = Figure(figsize=(13, 3.6 * len(suites)), layout="constrained")
    axes = fig.subplots(len(suites), 2, squeeze=False, width_ratios=(3, 2))
    for (ax_speed, ax_limit), suite in zip(axes, suites):
        _speedups(ax_speed, suite)
        _fractions(ax_limit, suite)
    env = payload.get("environment", {})
    g, cpu = env.get("gradcore", {}), env.get("cpu", {})
    fig.suptitle(f"gradcore {g.get('version', '?')} ({g.get('isa', '?')}, "
                 f"{g.get('threads', '?')} threads) on {cpu.get('model', '?')}, "
                 f"{payload.get('time', '')}")
    fig.savefig(path)
    return f"wrote {path}"


def _speedups(ax, suite: dict) -> None:
    cases = suite["cases"]
    peers = []                  # those with a ratio somewhere: a skipped peer takes no slot
    for c in cases:
        peers += [n for n, p in c.get("peers", {}).items()
                  if n not in peers and _positive(p.get("ratio"))]
    width = 0.8 / max(1, len(peers))
    for j, name in enumerate(peers):
        xs, ys, goals = [], [], []
        for i, c in enumerate(cases):
            p = c.get("peers", {}).get(name) or {}
            r = p.get("ratio")
            if _positive(r):
                xs.append(i + (j - (len(peers) - 1) / 2) * width)
                ys.append(r)
                if p.get("target") is not None:
                    goals.append((xs[-1], p["target"]))
        ax.bar(xs, ys, width, label=f"vs {name}")
        if goals:
            ax.scatter([x for x, _ in goals], [t for _, t in goals], marker="_", s=200,
                       color="black", zorder=3, label="goal" if j == 0 else None)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    # Minor ticks at 2 and 5 only: a range of decades stays legible.
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}×" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_xticks(range(len(cases)), [c["key"] for c in cases])
    ax.set_title(f"{suite['name']}: speed-up over peers")
    ax.set_ylabel("peer time / gradcore time")
    if peers:
        ax.legend(fontsize="small")


def _fractions(ax, suite: dict) -> None:
    cases = [c for c in suite["cases"] if isinstance((c.get("limit") or {}).get("fraction"), (int, float))]
    xs = list(range(len(cases)))
    ys = [100 * min(c["limit"]["fraction"], 1.0) for c in cases]
    # Against the best probe around a case (the bar) the fraction is lowest; against
    # the worst one, highest: the error bar spans the two.
    up = [y / max(1e-9, 1.0 - (c["limit"].get("spread") or 0.0)) - y for y, c in zip(ys, cases)]
    errs = [[0.0] * len(ys), up]
    wrong = [bool(c["limit"].get("beaten_by")) for c in cases]
    ax.bar(xs, ys, 0.6, yerr=errs, capsize=3, color=["tab:red" if w else "tab:green" for w in wrong])
    for x, w in zip(xs, wrong):
        if w:
            ax.text(x, 50, "limit wrong", rotation=90, ha="center", va="center", fontsize="small")
    targets = [(x, 100 * c["limit"]["target"]) for x, c in zip(xs, cases)
               if c["limit"].get("target") is not None]
    if targets:
        ax.scatter(*zip(*targets), marker="_", s=200, color="black", zorder=3, label="goal")
        ax.legend(fontsize="small")
    ax.axhline(100.0, color="gray", lw=0.8)
    ax.set_ylim(0, 110)
    ax.set_xticks(xs, [c["key"] for c in cases])
    ax.set_title(f"{suite['name']}: fraction of the limit")
    ax.set_ylabel("% of limit (gradcore)")
    names = sorted({c["limit"].get("name") or "" for c in cases})
    ax.set_xlabel("limit: " + ", ".join(n for n in names if n))
