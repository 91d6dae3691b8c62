"""Shared data model of the harness: run context and per-case results.

A suite module (``suite_<name>.py``) exposes ``NAME``, ``DESCRIPTION`` and
``run(ctx: Context) -> list[CaseResult]``.  Each :class:`CaseResult` holds the
gradcore timing, the timings of its peers (NumPy, PyTorch, ...), the project's goals
for the ratios peer/gradcore, and optionally the machine limit of the
case (memory bandwidth for norms, FMA peak for GEMM-bound work) with a target on
the fraction of that limit that gradcore reaches.

A limit is a measurement too: it comes with the spread of its probes, and a time
that beats it by more than that spread (at least :data:`NOISE_FLOOR`) means the
limit is wrong, which the case reports instead of a fraction above 100 %.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .timing import Timing, measure

__all__ = ["Context", "PeerResult", "CaseResult", "SuiteResult", "rel_err", "NOISE_FLOOR"]

#: relative noise of a best-of-N time of batches >= 20 ms on a quiet machine: the least
#: spread granted to a limit, and to a time in a comparison of two runs
NOISE_FLOOR = 0.01


@dataclass
class PeerResult:
    name: str                       # column name: "numpy", "torch", ...
    code: str                       # what was run, for the notes / json
    timing: Optional[Timing] = None  # None: skipped
    target: Optional[float] = None  # required peer_time / gradcore_time
    note: str = ""                  # e.g. why it was skipped

    @property
    def time(self) -> Optional[float]:
        return None if self.timing is None else self.timing.best


@dataclass
class CaseResult:
    suite: str
    key: str                        # short id, e.g. "2c"
    name: str                       # operation, e.g. "clip_by_global_norm_ (clip)"
    data: str                       # data description, e.g. "GPT-2 f32"
    gradcore: Optional[Timing]      # None: the gradcore call failed (see check)
    gradcore_code: str = ""
    peers: list = field(default_factory=list)   # list[PeerResult]
    limit_name: Optional[str] = None  # e.g. "read", "read+update"
    limit_time: Optional[float] = None  # seconds the machine limit allows
    limit_target: Optional[float] = None  # required fraction of the limit
    limit_spread: float = 0.0       # relative spread of the limit's probes
    limit_probes: Optional[dict] = None  # the probes measured around the case
    bytes: Optional[int] = None     # payload bytes of the arrays involved
    check: str = "ok"               # result validation, "ok" or a message
    notes: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    # -- derived -----------------------------------------------------------
    def ratio(self, peer: PeerResult) -> Optional[float]:
        if peer.time is None or self.gradcore is None or not self.gradcore.best:
            return None
        return peer.time / self.gradcore.best

    def passed(self, peer: PeerResult) -> Optional[bool]:
        r = self.ratio(peer)
        if peer.target is None or r is None:
            return None
        return r >= peer.target

    @property
    def limit_fraction(self) -> Optional[float]:
        if self.limit_time is None or self.gradcore is None or not self.gradcore.best:
            return None
        return self.limit_time / self.gradcore.best

    def beats_limit(self, t: Optional[float]) -> bool:
        """A time ``t`` faster than the limit allows, beyond the limit's spread."""
        if self.limit_time is None or not t:
            return False
        return self.limit_time / t > 1.0 + max(self.limit_spread, NOISE_FLOOR)

    @property
    def limit_beaten_by(self) -> list:
        """Names of the libraries (gradcore, peers) whose time beats the limit: then the
        limit, not the code, is wrong."""
        names = ["gradcore"] if self.gradcore and self.beats_limit(self.gradcore.best) else []
        return names + [p.name for p in self.peers if self.beats_limit(p.time)]

    @property
    def limit_passed(self) -> Optional[bool]:
        f = self.limit_fraction
        if self.limit_target is None or f is None or self.limit_beaten_by:
            return None
        return f >= self.limit_target

    def verdicts(self) -> list:
        """PASS/MISS of every target of the case (a failed gradcore call misses all)."""
        if self.gradcore is None:
            n = sum(p.target is not None for p in self.peers) + (self.limit_target is not None)
            return [False] * n
        out = [self.passed(p) for p in self.peers]
        out.append(self.limit_passed)
        return [v for v in out if v is not None]

    def peer(self, name: str) -> Optional[PeerResult]:
        for p in self.peers:
            if p.name == name:
                return p
        return None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "suite": self.suite,
            "key": self.key,
            "name": self.name,
            "data": self.data,
            "params": self.params,
            "gradcore": {"code": self.gradcore_code,
                         **({} if self.gradcore is None else self.gradcore.to_dict())},
            "peers": {},
            "check": self.check,
            "notes": list(self.notes),
        }
        for p in self.peers:
            d["peers"][p.name] = {
                "code": p.code,
                "skipped": p.timing is None,
                "note": p.note,
                "timing": None if p.timing is None else p.timing.to_dict(),
                "ratio": self.ratio(p),
                "target": p.target,
                "pass": self.passed(p),
            }
        if self.limit_time is not None:
            d["limit"] = {
                "name": self.limit_name,
                "bytes": self.bytes,
                "time_s": self.limit_time,
                "fraction": self.limit_fraction,
                "target": self.limit_target,
                "pass": self.limit_passed,
                "spread": self.limit_spread,
                "beaten_by": self.limit_beaten_by,
                "probes": self.limit_probes,
            }
        elif self.bytes is not None:
            d["bytes"] = self.bytes
        return d


@dataclass
class SuiteResult:
    name: str
    description: str
    cases: list = field(default_factory=list)   # list[CaseResult]
    notes: list = field(default_factory=list)   # printed under the table
    error: str = ""                             # the suite itself crashed

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "cases": [c.to_dict() for c in self.cases], "notes": list(self.notes),
                "error": self.error}


class Context:
    """Everything a suite needs: modules, options, timer, machine limits."""

    def __init__(self, *, gradcore, np, torch, torch_note: str, quick: bool,
                 repeat: int, min_time: float, machine, log: Callable[[str], None],
                 rounds: int = 1):
        self.gradcore = gradcore
        self.np = np
        self.torch = torch          # None when not importable
        self.torch_note = torch_note
        self.quick = quick
        self.repeat = repeat
        self.rounds = rounds        # time_case: gradcore then its peers, this many times
        self.min_time = min_time
        self.machine = machine
        self.log = log

    def time(self, fn, *, setup=None) -> Timing:
        return measure(fn, repeat=self.repeat, min_time=self.min_time, setup=setup)

    def time_peer(self, name: str, code: str, fn, *, target=None, setup=None,
                  needs_torch: bool = False) -> PeerResult:
        """Time a peer; a peer that is unavailable or raises is skipped with a note."""
        if needs_torch and self.torch is None:
            return PeerResult(name, code, None, target, note=self.torch_note)
        try:
            t = self.time(fn, setup=setup)
        except Exception as exc:  # a peer failing must not kill the benchmark
            return PeerResult(name, code, None, target, note=f"failed: {type(exc).__name__}: {exc}")
        return PeerResult(name, code, t, target)


def rel_err(got: float, ref: float) -> float:
    if math.isnan(got) or math.isnan(ref):
        return 0.0 if (math.isnan(got) and math.isnan(ref)) else math.inf
    if got == ref:
        return 0.0
    return abs(got - ref) / max(abs(ref), sys.float_info.min)


def max_rel_err(np, got, ref) -> float:
    """max |got - ref| / max |ref| (computed in float64)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        raise ValueError(f"shape {got.shape}, expected {ref.shape}")
    if ref.size == 0:
        return 0.0
    r = ref.astype(np.float64, copy=False)
    d = float(np.max(np.abs(got.astype(np.float64) - r)))
    s = float(np.max(np.abs(r)))
    return d / s if s > 0 else d


def float32_problems(np, got, ref, keys, tol, errs) -> list:
    """What is wrong with the float32 results ``got[k]`` against ``ref[k]`` for each k in
    ``keys``: missing, another dtype, or max |diff| / max |ref| above ``tol`` (the errors
    are recorded in ``errs``). Empty when all is well."""
    bad = []
    for k in keys:
        if got[k] is None:
            bad.append(f"{k} is None")
            continue
        if np.asarray(got[k]).dtype != np.float32:
            bad.append(f"{k} dtype {np.asarray(got[k]).dtype}")
            continue
        errs[k] = e = max_rel_err(np, got[k], ref[k])
        if not e <= tol:
            bad.append(f"{k} max |diff| / max |ref| = {e:.2e}")
    return bad


def merge_timings(a, b):
    """Best of two measurements of the same call (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    samples = list(a.samples) + list(b.samples)
    return Timing(best=min(a.best, b.best), median=statistics.median(samples),
                  inner=a.inner if a.best <= b.best else b.inner, samples=samples)


def time_case(ctx, suite, key, name, data, gc_code, gc_fn, peers, *, setup=None, check="ok",
              params=None, notes=(), between=None, **limits) -> CaseResult:
    """Time gradcore's call, then each peer (name, code, fn, target, needs_torch), in
    ``ctx.rounds`` rounds (the best of all rounds is kept), and append the case to
    ``suite``. ``between()``, when given, runs before every round and after the last
    (the case's yardsticks). ``limits``: the CaseResult fields of the machine limit
    (limit_name, limit_time, limit_target, limit_spread, bytes). A gradcore failure
    becomes the check message and its peers are not timed; a peer without a callable is
    "not available"."""
    ctx.log(f"{suite.name}: [{key}] {name} on {data}")
    t_gc = None
    timings = [None] * len(peers)
    peer_notes = [""] * len(peers)
    for _ in range(max(1, ctx.rounds)):
        if between is not None:
            between()
        try:
            t_gc = merge_timings(t_gc, ctx.time(gc_fn, setup=setup))
        except Exception as exc:
            t_gc = None
            check = f"gradcore raised {type(exc).__name__}: {exc}"
            break
        for i, (pname, code, fn, target, needs_torch) in enumerate(peers):
            if fn is None and not needs_torch:
                peer_notes[i] = "not available"
                continue
            p = ctx.time_peer(pname, code, fn, target=target, setup=setup, needs_torch=needs_torch)
            timings[i] = merge_timings(timings[i], p.timing)
            peer_notes[i] = "" if timings[i] is not None else p.note
    if between is not None:
        between()
    res = CaseResult(suite=suite.name, key=key, name=name, data=data, gradcore=t_gc,
                     gradcore_code=gc_code, check=check, params=dict(params or {}),
                     notes=list(notes), **limits)
    for i, (pname, code, fn, target, needs_torch) in enumerate(peers):
        if t_gc is None:
            res.peers.append(PeerResult(pname, code, None, target, note="gradcore failed"))
        else:
            res.peers.append(PeerResult(pname, code, timings[i], target, note=peer_notes[i]))
    suite.cases.append(res)
    return res


def run_check(fn) -> str:
    """fn() -> "ok" or a message; an exception becomes the message."""
    try:
        return fn()
    except Exception as exc:
        return f"check raised {type(exc).__name__}: {exc}"


def add_gflops(res, flops, peak, label) -> None:
    """Record GFLOP/s of gradcore, each peer and the FMA peak (flop/s) on a CaseResult."""
    res.params["flops"] = flops
    if res.gradcore is None:
        return
    gf = {"gradcore": flops / res.gradcore.best / 1e9}
    for p in res.peers:
        gf[p.name] = None if p.time is None else flops / p.time / 1e9
    gf["peak"] = peak / 1e9
    res.params["GFLOPs"] = gf
    res.notes.append("GFLOP/s: " + ", ".join(
        f"{k} {v:.1f}" for k, v in gf.items() if v is not None) + f" ({label})")
    # What a missed ratio asks of the machine: a target that needs more than the
    # peak cannot be met here by any implementation doing the same flops.
    for p in res.peers:
        if p.target is None or p.time is None or res.passed(p):
            continue
        need = flops * p.target / p.time / 1e9
        res.notes.append(f"to reach ≥{p.target:g}× {p.name}, gradcore would need {need:.1f} GFLOP/s "
                         f"= {need / gf['peak']:.0%} of the peak ({label})")


def time_probed_case(ctx, suite, probes, limit_name, limit_time, *args, **kw) -> CaseResult:
    """:func:`time_case` (``*args``: from key on) with ``probes`` (machine.Probes) taken
    before every round and after the last; the case is held to ``limit_time(probes)``
    seconds and to the spread of those probes."""
    res = time_case(ctx, suite, *args, between=probes.take, **kw)
    res.limit_name = limit_name
    res.limit_time = limit_time(probes)
    res.limit_spread = probes.spread
    res.limit_probes = probes.to_dict()
    return res


def time_gemm_case(ctx, suite, fma, key, name, data, gc_code, gc_fn, peers, *, dtype, flops,
                   **kw) -> CaseResult:
    """:func:`time_case` against the FMA peak of ``dtype`` for ``flops`` flops, measured
    around the case."""
    res = time_probed_case(ctx, suite, ctx.machine.probes((dtype,)), fma.label(dtype),
                           lambda probes: flops / probes.best(dtype),
                           key, name, data, gc_code, gc_fn, peers, **kw)
    add_gflops(res, flops, flops / res.limit_time, fma.label(dtype))
    return res
