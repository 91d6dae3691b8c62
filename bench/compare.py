"""``gradcore bench compare OLD.json NEW.json``: two runs of the harness, case by case.

Cases are matched by suite and key; a case whose data differs between the runs (a
``--quick`` run against a full one) is listed but not compared. For every matched
case: the ratio NEW/OLD of gradcore's best time (< 1: faster now) and of each peer's.
The peers are the same code in both runs, so their ratios show how the machine moved
(another machine, another load, another clock); "vs peers" divides gradcore's ratio by
the geometric mean of its peers' ratios: the change of gradcore alone.

A change is flagged when it is beyond the measured spread: each run's times of a case
span best .. median of its samples (at least ``NOISE_FLOOR`` wide), and a case is
"slower" when NEW's best is above OLD's span, "faster" when NEW's span lies below OLD's
best. pyperf compares runs with a t-test, but on its own files of many worker processes'
values and through private functions; a run here holds a few best-of batch samples per
case, for which the overlap of the two spans says what a user needs in a few lines.
The machine limits (FMA peak, memory bandwidth) of the two runs are compared the same
way, since a limit that moved explains a case that moved with it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Optional

from .common import NOISE_FLOOR

__all__ = ["Change", "compare", "compare_limits", "load", "main"]


@dataclass
class Change:
    suite: str
    key: str
    name: str
    data: str
    old: Optional[float] = None     # gradcore's best time, seconds
    new: Optional[float] = None
    ratio: Optional[float] = None   # new / old
    flag: str = ""                  # "faster", "slower", "" (within the spread) or why not compared
    peers: dict = field(default_factory=dict)   # peer name -> new / old of its best time
    vs_peers: Optional[float] = None  # ratio / geometric mean of the peers' ratios

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def load(path: str) -> dict:
    with open(path) as f:
        payload = json.load(f)
    if not str(payload.get("schema", "")).startswith("gradcore-bench/"):
        raise ValueError(f"{path}: not a gradcore bench --json file")
    return payload


def _span(timing: Optional[dict]) -> Optional[tuple]:
    """(best, top of the spread) of a timing of the JSON, or None (skipped, failed)."""
    if not timing or not isinstance(timing.get("best_s"), (int, float)):
        return None
    best = float(timing["best_s"])
    median = float(timing.get("median_s") or best)
    return best, max(median, best * (1.0 + NOISE_FLOOR))


def change(old: Optional[dict], new: Optional[dict]) -> tuple:
    """(new best / old best, "faster" | "slower" | "") of two timings; (None, "") when
    either is missing."""
    a, b = _span(old), _span(new)
    if a is None or b is None or a[0] <= 0:
        return None, ""
    flag = "slower" if b[0] > a[1] else "faster" if b[1] < a[0] else ""
    return b[0] / a[0], flag


def _cases(payload: dict) -> dict:
    return {(s.get("name"), c.get("key")): c
            for s in payload.get("suites", []) for c in s.get("cases", [])}


def compare(old: dict, new: dict) -> list:
    """One :class:`Change` per case of either run, in NEW's order, then OLD's leftovers."""
    a, b = _cases(old), _cases(new)
    out = []
    for k in list(b) + [k for k in a if k not in b]:
        ca, cb = a.get(k), b.get(k)
        c = cb or ca
        ch = Change(suite=k[0], key=k[1], name=c.get("name", ""), data=c.get("data", ""))
        if ca is None or cb is None:
            ch.flag = "only in " + ("NEW" if ca is None else "OLD")
            out.append(ch)
            continue
        if (ca.get("name"), ca.get("data")) != (cb.get("name"), cb.get("data")):
            ch.flag = f"not compared: OLD is {ca.get('name')} on {ca.get('data')}"
            out.append(ch)
            continue
        ch.old = (_span(ca.get("gradcore")) or (None,))[0]
        ch.new = (_span(cb.get("gradcore")) or (None,))[0]
        ch.ratio, ch.flag = change(ca.get("gradcore"), cb.get("gradcore"))
        for name, pb in cb.get("peers", {}).items():
            pa = ca.get("peers", {}).get(name)
            r, _ = change(pa and pa.get("timing"), pb.get("timing"))
            if r is not None:
                ch.peers[name] = r
        if ch.ratio is not None and ch.peers:
            drift = math.exp(sum(math.log(r) for r in ch.peers.values()) / len(ch.peers))
            ch.vs_peers = ch.ratio / drift
        out.append(ch)
    return out


def _limits(payload: dict) -> dict:
    """{name: (best rate, samples)} of the machine limits of a run."""
    m = payload.get("machine", {})
    out = {}
    fma = m.get("fma") or {}
    for p in fma.get("probes", []):
        if p.get("isa") == fma.get("isa"):
            out[f"FMA {p['isa']} {p['dtype']} GFLOP/s"] = (p["GFLOPs"], p.get("samples_GFLOPs"))
    mem = m.get("memory") or {}
    for kind in ("read", "update"):
        if f"{kind}_GBps" in mem:
            out[f"memory {kind} GB/s"] = (mem[f"{kind}_GBps"], None)
    return out


def compare_limits(old: dict, new: dict) -> list:
    """(name, old, new, new / old, flag) for each machine limit of both runs. A rate that
    rose is "higher"; flagged when NEW's worst probe beats OLD's best or the reverse."""
    a, b = _limits(old), _limits(new)
    out = []
    for name in [n for n in b if n in a]:
        (va, sa), (vb, sb) = a[name], b[name]
        flag = ""
        if sa and sb:
            flag = "higher" if min(sb) > max(sa) else "lower" if max(sb) < min(sa) else ""
        out.append((name, va, vb, vb / va if va else None, flag))
    return out


def _fmt_ratio(r: Optional[float]) -> str:
    return "-" if r is None else f"{r:.3f}"


def _fmt_time(t: Optional[float]) -> str:
    from .timing import format_seconds
    return format_seconds(t)


def _describe(payload: dict) -> str:
    env = payload.get("environment", {})
    g = env.get("gradcore", {})
    cpu = env.get("cpu", {})
    opts = payload.get("options", {})
    return (f"{payload.get('time', '?')}, gradcore {g.get('version', '?')} {g.get('isa', '?')} "
            f"{g.get('threads', '?')} threads, {cpu.get('model', '?')}"
            + (", --quick" if opts.get("quick") else ""))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradcore bench compare",
        description="Compare two 'gradcore bench --json' runs (two builds, or two machines): "
                    "per case the ratio NEW/OLD of gradcore's best time and of its peers' "
                    "(the machine's drift), flagging changes beyond the measured spread.")
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    p.add_argument("--json", metavar="PATH", help="also write the comparison to PATH ('-': stdout)")
    p.add_argument("--plain", action="store_true", help="plain-text tables even if rich is installed")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a case of gradcore is slower beyond the spread")
    return p


def main(argv: Optional[list] = None) -> int:
    from .report import Reporter, write_json

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        old, new = load(args.old), load(args.new)
    except (OSError, ValueError) as exc:
        print(f"gradcore bench compare: {exc}", file=sys.stderr)
        return 2
    changes = compare(old, new)
    limits = compare_limits(old, new)
    rep = Reporter(plain=args.plain, verbose=False)
    rep.rule("gradcore bench compare")
    rep.kv_block("runs", [("OLD", f"{args.old}: {_describe(old)}"),
                          ("NEW", f"{args.new}: {_describe(new)}")])
    if limits:
        rep.table("machine limits (NEW/OLD > 1: higher now)", ["limit", "OLD", "NEW", "NEW/OLD", "flag"],
                  [[(n, None), (f"{a:.1f}", None), (f"{b:.1f}", None), (_fmt_ratio(r), None),
                    (f, "bold" if f else None)] for n, a, b, r, f in limits],
                  left=("limit", "flag"))
        rep.line()
    peers = []
    for c in changes:
        peers += [n for n in c.peers if n not in peers]
    header = ["suite", "#", "case", "data", "OLD", "NEW", "NEW/OLD"] + \
             [f"{n} NEW/OLD" for n in peers] + ["vs peers", "flag"]
    rows = []
    for c in changes:
        style = {"slower": "bold red", "faster": "green"}.get(c.flag)
        rows.append([(c.suite, None), (c.key, None), (c.name, None), (c.data, None),
                     (_fmt_time(c.old), None), (_fmt_time(c.new), None),
                     (_fmt_ratio(c.ratio), style)]
                    + [(_fmt_ratio(c.peers.get(n)), "dim") for n in peers]
                    + [(_fmt_ratio(c.vs_peers), None), (c.flag, style)])
    rep.table("gradcore's best time per case (NEW/OLD < 1: faster now)", header, rows,
              left=("suite", "#", "case", "data", "flag"))
    rep.line()
    slower = [c for c in changes if c.flag == "slower"]
    faster = [c for c in changes if c.flag == "faster"]
    drift = [r for c in changes for r in c.peers.values()]
    text = f"{len(slower)} slower, {len(faster)} faster beyond the spread, of " \
           f"{sum(c.ratio is not None for c in changes)} compared"
    if drift:
        drift.sort()
        text += f"; peers' median NEW/OLD {drift[len(drift) // 2]:.3f} (the machine's drift)"
    rep.line(text, style="bold red" if slower else "bold green")
    rep.line("flag: the two runs' spans (best .. median of the samples, at least "
             f"{NOISE_FLOOR:.0%} wide) do not overlap; vs peers = NEW/OLD / geometric mean of "
             "the peers' NEW/OLD.", style="dim")
    if args.json:
        write_json(args.json, {"schema": "gradcore-bench-compare/1", "old": args.old,
                               "new": args.new, "cases": [c.to_dict() for c in changes],
                               "limits": [dict(zip(("name", "old", "new", "ratio", "flag"), l))
                                          for l in limits]})
    return 1 if args.check and slower else 0
