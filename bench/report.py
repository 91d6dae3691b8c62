"""Output of the harness: tables (rich when importable, plain text otherwise), json.

One row per case: gradcore's best time, each peer's best time and the ratio
peer/gradcore (> 1: gradcore faster) with the project's goal and PASS/MISS,
then the machine limit of the case and the fraction of it gradcore reaches.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Optional

from .common import NOISE_FLOOR, SuiteResult
from .timing import format_seconds

__all__ = ["Reporter", "write_json"]


def _fmt_ratio(r: Optional[float]) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.3g}×" if r < 100 else f"{r:.0f}×"


def _fmt_target(t: float) -> str:
    return f"≥{t:g}"


def _verdict(v: Optional[bool]) -> str:
    return "" if v is None else ("PASS" if v else "MISS")


class Reporter:
    """Prints to ``stream`` (stdout); progress lines go to stderr."""

    def __init__(self, *, plain: bool = False, stream=None, verbose: bool = True):
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.console = None
        if not plain:
            try:
                from rich.console import Console
            except ImportError:
                Console = None
            if Console is not None:
                c = Console(file=self.stream, highlight=False)
                if not c.is_terminal:        # piped / redirected: do not squash to 80
                    c = Console(file=self.stream, highlight=False, width=max(c.width, 180))
                self.console = c

    # -- generic ---------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"  .. {msg}", file=sys.stderr, flush=True)

    def line(self, text: str = "", style: Optional[str] = None) -> None:
        if self.console is not None:
            self.console.print(text, style=style, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def rule(self, title: str) -> None:
        if self.console is not None:
            self.console.rule(title)
        else:
            print(f"\n== {title} " + "=" * max(0, 70 - len(title)), file=self.stream)

    def kv_block(self, title: str, rows: list) -> None:
        """rows: list of (key, value) strings."""
        if self.console is not None:
            from rich.table import Table
            t = Table(title=title, show_header=False, box=None, title_justify="left",
                      title_style="bold", pad_edge=False)
            t.add_column(style="cyan", no_wrap=True)
            t.add_column(overflow="fold")
            for k, v in rows:
                t.add_row(k, v)
            self.console.print(t)
        else:
            print(title, file=self.stream)
            w = max((len(k) for k, _ in rows), default=0)
            for k, v in rows:
                print(f"  {k.ljust(w)}  {v}", file=self.stream)
        self.line()

    # -- suite table -------------------------------------------------------------
    @staticmethod
    def _peer_names(cases: list) -> list:
        names = []
        for c in cases:
            for p in c.peers:
                if p.name not in names:
                    names.append(p.name)
        return names

    def _rows(self, suite: SuiteResult):
        """Yield rows as lists of (text, style) cells, plus the header."""
        peers = self._peer_names(suite.cases)
        header = ["#", "case", "data", "gradcore"]
        for n in peers:
            header += [n, f"×{n}"]
        header += ["limit", "% of limit", "check"]
        rows = []
        for c in suite.cases:
            row = [(c.key, None), (c.name, None), (c.data, None),
                   (format_seconds(c.gradcore.best) if c.gradcore else "FAILED",
                    None if c.gradcore else "bold red")]
            for n in peers:
                p = c.peer(n)
                if p is None:
                    row += [("", None), ("", None)]
                    continue
                if p.timing is None:
                    row += [("skipped", "dim"), ("-", "dim")]
                    continue
                ratio = c.ratio(p)
                txt = _fmt_ratio(ratio)
                style = None
                if p.target is not None:
                    v = c.passed(p)
                    txt += f" {_fmt_target(p.target)} {_verdict(v)}"
                    style = "green" if v else "bold red"
                row += [(format_seconds(p.time), None), (txt, style)]
            f = c.limit_fraction
            if f is None:
                row += [("", None), ("", None)]
            else:
                name = (c.limit_name or "") + (f" ±{c.limit_spread:.0%}" if c.limit_spread else "")
                # Within the limit's noise a time may come out a hair faster than the
                # limit: that is "at the limit", 100 %; beyond it the limit is wrong.
                txt, style = f"{100 * min(f, 1.0):.0f}%", None
                if c.limit_beaten_by:
                    txt, style = "limit wrong", "bold red"
                elif c.limit_target is not None:
                    v = c.limit_passed
                    txt += f" ≥{100 * c.limit_target:.0f}% {_verdict(v)}"
                    style = "green" if v else "bold red"
                row += [(name, None), (txt, style)]
            ok = c.check == "ok" or c.check.startswith("ok ")
            row.append(("ok" if ok else "FAIL", None if ok else "bold red"))
            rows.append(row)
        return header, rows

    def table(self, title: str, header: list, rows: list, left=()) -> None:
        """rows: lists of (text, style) cells; columns named in ``left`` are left-aligned."""
        if self.console is not None:
            from rich import box
            from rich.table import Table
            from rich.text import Text
            t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left",
                      title_style="bold")
            for h in header:
                t.add_column(h, justify="left" if h in left else "right",
                             no_wrap=(h not in ("case",)))
            for row in rows:
                t.add_row(*[Text(txt, style=style or "") for txt, style in row])
            self.console.print(t)
        else:
            print(title, file=self.stream)
            table = [header] + [[txt for txt, _ in r] for r in rows]
            widths = [max(len(r[i]) for r in table) for i in range(len(header))]
            for j, r in enumerate(table):
                cells = [(s.ljust(w) if header[i] in left else s.rjust(w))
                         for i, (s, w) in enumerate(zip(r, widths))]
                print("  " + "  ".join(cells).rstrip(), file=self.stream)
                if j == 0:
                    print("  " + "  ".join("-" * w for w in widths), file=self.stream)

    def suite_table(self, suite: SuiteResult) -> None:
        header, rows = self._rows(suite)
        self.table(f"suite {suite.name}: {suite.description}", header, rows,
                   left=("#", "case", "data", "limit", "check"))
        self.line()
        notes = list(suite.notes)
        for c in suite.cases:
            if not (c.check == "ok" or c.check.startswith("ok ")):
                notes.append(f"CHECK FAILED [{c.key}] {c.name} on {c.data}: {c.check}")
            for p in c.peers:
                if p.timing is None and p.note and not p.note.startswith(("gradcore failed",)):
                    if p.name == "torch" and "not importable" in p.note:
                        continue        # said once in the suite notes
                    notes.append(f"[{c.key}] {p.name} skipped: {p.note}")
            notes += [f"[{c.key}] {n}" for n in c.notes]
            notes += _limit_notes(c)
        if suite.error:
            notes.append(f"suite error: {suite.error}")
        for n in notes:
            style = "bold red" if n.startswith(("CHECK FAILED", "LIMIT WRONG", "suite error")) else "dim"
            self.line(f"  * {n}", style=style)
        self.line()

    def summary(self, suites: list) -> tuple:
        """Prints and returns (targets passed, missed, failed result checks, wrong limits)."""
        verdicts = [v for s in suites for c in s.cases for v in c.verdicts()]
        n_pass = sum(verdicts)
        n_miss = len(verdicts) - n_pass
        bad_checks = [c for s in suites for c in s.cases
                      if not (c.check == "ok" or c.check.startswith("ok "))]
        wrong = [c for s in suites for c in s.cases if c.limit_beaten_by]
        text = f"goals: {n_pass} PASS, {n_miss} MISS"
        if bad_checks:
            text += f"; {len(bad_checks)} result check(s) FAILED"
        if wrong:
            text += f"; {len(wrong)} case(s) beat their limit: the limit is WRONG"
        style = "bold green" if not (n_miss or bad_checks or wrong) else "bold red"
        self.line(text, style=style)
        return n_pass, n_miss, len(bad_checks), len(wrong)


def _limit_notes(c) -> list:
    """What the "% of limit" cell of a case cannot say: a limit beaten beyond its
    spread (wrong), or one reached within it."""
    f = c.limit_fraction
    if f is None:
        return []
    tol = max(c.limit_spread, NOISE_FLOOR)
    if c.limit_beaten_by:
        faster = max(c.limit_time / t for t in
                     [c.gradcore.best if c.gradcore else None] + [p.time for p in c.peers] if t)
        return [f"LIMIT WRONG [{c.key}]: {', '.join(c.limit_beaten_by)} ran up to "
                f"{faster - 1:.1%} faster than the limit ({c.limit_name}) allows, beyond its "
                f"spread of {tol:.1%}: the yardstick underestimates this machine"]
    if f > 1.0:
        return [f"[{c.key}] at the limit ({c.limit_name}), within its spread of {tol:.1%}"]
    return []


def write_json(path: str, payload: dict) -> None:
    def default(o):
        if hasattr(o, "to_dict"):
            return o.to_dict()
        if hasattr(o, "item"):            # numpy scalars
            return o.item()
        return str(o)

    def clean(o):
        # json has no inf/nan: write them as strings
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    text = json.dumps(clean(json.loads(json.dumps(payload, default=default))), indent=2)
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(path, "w") as f:
            f.write(text + "\n")
