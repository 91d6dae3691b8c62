"""Machine limits the kernels are measured against.

Memory bandwidth, the yardstick for norms and clipping, is measured with
gradcore's own multi-threaded probe over a large float32 array (512 MB, 128 MB
with ``--quick``), far larger than any cache:

* ``read``   -- ``gradcore._core._memory_probe(a, "read")``: a plain read pass
  over the array on all threads (the limit of a norm: one read pass);
* ``update`` -- ``gradcore._core._memory_probe(a, "update")``: an in-place
  read-modify-write pass (the limit of in-place scaling/clipping).

Both are reported as *array bytes processed per second*, so the time limit of a
pass over B bytes is ``B / bandwidth`` in both cases (an update pass moves 2 B
bytes over the memory bus; that traffic figure is printed too).  The bandwidth of a
shared machine moves by tens of percent within a minute, so a memory-bound case is
measured against probes taken around it (probe, round of the case, probe, ...:
:meth:`Machine.probes`): its limit is the best bandwidth of those probes, and their
spread is reported with it.  The measurement up front (:meth:`Machine.memory`)
is printed before the tables with NumPy's single-threaded ``np.sum`` and, when
importable, ``torch.sum`` over the same array for reference.

FMA peak, the yardstick for GEMM-bound work (matmul, dense and recurrent layers), in
flop/s per dtype (:meth:`Machine.fma`): ``gradcore._core._fma_probe(dtype, n)``, a
register-resident loop of independent FMA chains of the active instruction set run
on every thread the library uses, best of N calls.  No code doing FMAs on those
threads can run faster, whatever the clock boosts to; the clock it implies (flop/s /
(cores x FMA units x lanes x 2)) is printed with it, and the probes of the other
instruction sets of the build, for reference.  Other processes take cores from the
probe as they do from the cases, so a GEMM-bound case too is held to probes taken
around it, the up-front measurement being the one printed.  The theoretical peak at the clock of
``/proc/cpuinfo`` is printed beside it, for reference only: a boosting CPU beats it.

No measured time (gradcore's or a peer's) may beat its limit by more than the
limit's spread (at least ``common.NOISE_FLOOR``); the tables say "limit wrong" for
one that does, instead of a fraction above 100 %.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, asdict, field
from typing import Callable, Optional

from .timing import SETTLE_SECONDS, measure

__all__ = ["MemoryLimits", "Probes", "FmaLimits", "Machine", "cpu_description"]

MB = 1 << 20

#: vector width of each instruction-set target of gradcore (bits; scalar: no vectors)
ISA_BITS = {"avx512": 512, "avx2": 256, "neon": 128}


def spread(values) -> float:
    """(best - worst) / best of rates (higher is better); 0 for fewer than two."""
    values = [v for v in values if v]
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / max(values)


@dataclass
class MemoryLimits:
    probe_bytes: int
    threads: int
    read_bw: float                  # bytes/s, multi-threaded read pass
    update_bw: float                # array bytes/s, in-place read+write pass
    numpy_sum_bw: Optional[float] = None
    torch_sum_bw: Optional[float] = None
    torch_threads: Optional[int] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["read_GBps"] = self.read_bw / 1e9
        d["update_GBps"] = self.update_bw / 1e9
        d["update_traffic_GBps"] = 2 * self.update_bw / 1e9
        return d


class Probes:
    """The yardsticks of one case: :meth:`take` measures each kind once ("read" and/or
    "update" bandwidth in bytes/s, or a dtype's FMA rate in flop/s), and is called before
    every round of the case and after the last. The limit is the best rate seen around
    the case: what the machine gave while the case ran."""

    def __init__(self, measure_rate: Callable[[str], float], kinds, unit: str):
        self._measure = measure_rate
        self.unit = unit            # "GB/s" or "GFLOP/s": of the values in to_dict()
        self.samples = {k: [] for k in kinds}

    def take(self) -> None:
        for kind, got in self.samples.items():
            got.append(self._measure(kind))

    def best(self, kind: str) -> float:
        return max(self.samples[kind])

    @property
    def spread(self) -> float:
        return max((spread(v) for v in self.samples.values()), default=0.0)

    def to_dict(self) -> dict:
        return {k: {"unit": self.unit, "values": [v / 1e9 for v in vals],
                    "best": max(vals) / 1e9, "spread": spread(vals)}
                for k, vals in self.samples.items()}


@dataclass
class FmaProbe:
    """The FMA probe of one instruction set and dtype: flop/s of each timed call."""
    isa: str
    dtype: str
    samples: list
    lanes: Optional[int]            # per vector (None: scalar, whatever the compiler made of it)
    fma_units: int                  # per core and cycle
    cores: int                      # cores the threads run on

    @property
    def best(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        return spread(self.samples)

    @property
    def ghz(self) -> Optional[float]:
        """The clock the best call implies: flop/s / (cores x FMA units x lanes x 2)."""
        if not self.lanes:
            return None
        return self.best / (self.cores * self.fma_units * self.lanes * 2) / 1e9

    def to_dict(self) -> dict:
        return {"isa": self.isa, "dtype": self.dtype, "GFLOPs": self.best / 1e9,
                "samples_GFLOPs": [v / 1e9 for v in self.samples], "spread": self.spread,
                "lanes": self.lanes, "fma_units": self.fma_units, "cores": self.cores,
                "implied_GHz": self.ghz}


@dataclass
class FmaLimits:
    isa: str                        # the active instruction set: its probes are the limits
    threads: int
    probes: list = field(default_factory=list)   # FmaProbe of every isa and dtype
    ghz: Optional[float] = None     # clock read from /proc/cpuinfo (None: unknown)
    clock_source: str = ""

    def probe(self, dtype) -> FmaProbe:
        """The up-front probe of the active instruction set for ``dtype``."""
        dtype = _dtype_name(dtype)
        return next(p for p in self.probes if p.isa == self.isa and p.dtype == dtype)

    def theory(self, dtype) -> Optional[float]:
        """The theoretical peak at the /proc/cpuinfo clock (reference only)."""
        p = self.probe(dtype)
        if not p.lanes or not self.ghz:
            return None
        return p.cores * p.fma_units * p.lanes * 2 * self.ghz * 1e9

    def label(self, dtype) -> str:
        """Short name of the limit for the table's "limit" column."""
        return f"FMA {_SHORT.get(_dtype_name(dtype), dtype)}"

    def describe(self, dtype) -> str:
        """One line for a suite's notes: the limit of ``dtype``, its clock and spread."""
        p = self.probe(dtype)
        txt = (f"the FMA probe of {self.isa} on {self.threads} thread(s), taken around every "
               f"case; up front {_dtype_name(dtype)} {p.best / 1e9:.1f} GFLOP/s (best of "
               f"{len(p.samples)}, spread {p.spread:.1%})")
        if p.ghz:
            txt += (f", {p.ghz:.2f} GHz implied ({p.cores} cores × {p.fma_units} FMA/cycle × "
                    f"{p.lanes} lanes × 2 flops)")
        t = self.theory(dtype)
        if t:
            txt += (f"; theoretical at the {self.ghz:.3g} GHz of {self.clock_source}: "
                    f"{t / 1e9:.1f} GFLOP/s (reference)")
        return txt

    def to_dict(self) -> dict:
        d = {"isa": self.isa, "threads": self.threads, "cpuinfo_GHz": self.ghz,
             "clock_source": self.clock_source,
             "probes": [p.to_dict() for p in self.probes]}
        for dt in ("float32", "float64"):
            p, theory = self.probe(dt), self.theory(dt)
            d[f"peak_{_SHORT[dt]}_GFLOPs"] = p.best / 1e9
            d[f"spread_{_SHORT[dt]}"] = p.spread
            d[f"theory_{_SHORT[dt]}_GFLOPs"] = None if theory is None else theory / 1e9
        return d


_SHORT = {"float32": "f32", "float64": "f64"}


def _dtype_name(dtype) -> str:
    return "float64" if str(dtype) in ("float64", "f64", "double") else "float32"


def _cpuinfo_records() -> list:
    """/proc/cpuinfo as one dict per logical CPU ([] when unreadable)."""
    recs, cur = [], {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if cur:
                        recs.append(cur)
                    cur = {}
                    continue
                k, sep, v = line.partition(":")
                if sep:
                    cur[k.strip()] = v.strip()
    except OSError:
        return []
    if cur:
        recs.append(cur)
    return recs


def _usable_cpus() -> set:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def cpu_fma_params() -> dict:
    """Physical cores, the /proc/cpuinfo clock and FMA units per core and cycle of each
    instruction set: what turns a flop rate into a clock and a clock into a peak."""
    import re

    recs = _cpuinfo_records()
    usable = _usable_cpus()
    mine = [r for r in recs if r.get("processor", "").isdigit()
            and int(r["processor"]) in usable] or recs
    cores = {(r.get("physical id"), r.get("core id")) for r in mine
             if "core id" in r}
    n_cores = len(cores) if cores else len(usable)
    ghz, clock_source = None, ""
    mhz = []
    for r in mine:
        try:
            mhz.append(float(r["cpu MHz"]))
        except (KeyError, ValueError):
            pass
    if mhz and max(mhz) > 0:
        ghz, clock_source = max(mhz) / 1e3, "/proc/cpuinfo cpu MHz (highest)"
    else:
        for r in mine:
            m = re.search(r"@\s*([0-9.]+)\s*GHz", r.get("model name", ""))
            if m:
                ghz, clock_source = float(m.group(1)), "/proc/cpuinfo model name"
                break
    first = mine[0] if mine else {}
    # Two FMA pipes per core, except that Zen 4 runs a 512-bit FMA on both of its
    # 256-bit pipes at once.
    zen4 = first.get("vendor_id") == "AuthenticAMD" and first.get("cpu family") == "25"
    units = {"avx512": 1 if zen4 else 2, "avx2": 2, "neon": 2, "scalar": 2}
    return {"cores": n_cores, "ghz": ghz, "clock_source": clock_source, "fma_units": units}


def cpu_description() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model, "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "system": platform.platform()}


class Machine:
    def __init__(self, *, gradcore, np, torch, quick: bool, repeat: int,
                 min_time: float, log: Callable[[str], None]):
        self._gc = gradcore
        self._np = np
        self._torch = torch
        self._repeat = max(repeat, 3)
        self._min_time = min_time
        self._log = log
        self._memory: Optional[MemoryLimits] = None
        self._fma: Optional[FmaLimits] = None
        self._probe_bytes = (128 if quick else 512) * MB
        self._array = None          # the memory probes' array, allocated once

    @property
    def measured(self) -> dict:
        out = {}
        if self._memory is not None:
            out["memory"] = self._memory.to_dict()
        if self._fma is not None:
            out["fma"] = self._fma.to_dict()
        return out

    def _threads(self) -> int:
        try:
            return int(self._gc.get_num_threads())
        except Exception:
            return os.cpu_count() or 1

    def _best(self, fn) -> float:
        return measure(fn, repeat=self._repeat, min_time=self._min_time).best

    # -- FMA peak --------------------------------------------------------------
    def fma(self) -> FmaLimits:
        if self._fma is None:
            self._fma = self._measure_fma()
        return self._fma

    def _fma_samples(self, dtype: str) -> list:
        """flop/s of ``repeat`` calls of the active target's FMA probe, each sized to last
        at least ``min_time``."""
        probe = self._gc._core._fma_probe
        n = 1000
        while True:
            t0 = time.perf_counter()
            probe(dtype, n)
            elapsed = time.perf_counter() - t0
            if elapsed >= self._min_time:
                break
            n = max(2 * n, int(n * 1.2 * self._min_time / max(elapsed, 1e-7)))
        return [probe(dtype, n) for _ in range(self._repeat)]

    def _fma_rate(self, dtype: str) -> float:
        """flop/s of the active target's FMA probe now, best of N."""
        time.sleep(SETTLE_SECONDS)   # let the thread pools of the peers go quiet
        return max(self._fma_samples(dtype))

    def _measure_fma(self) -> FmaLimits:
        core = self._gc._core
        p = cpu_fma_params()
        threads = self._threads()
        active = core._isa_active()
        lim = FmaLimits(isa=active, threads=threads, ghz=p["ghz"], clock_source=p["clock_source"])
        isas = [active] + [i for i in core._isa_available() if i != active]
        self._log(f"machine: FMA probe on {threads} thread(s), {', '.join(isas)}")
        cores = min(threads, p["cores"])
        time.sleep(SETTLE_SECONDS)   # let the thread pools of earlier calls go quiet
        try:
            for isa in isas:
                core._set_isa(isa)
                for dt in ("float32", "float64"):
                    bits = ISA_BITS.get(isa)
                    lanes = bits // (32 if dt == "float32" else 64) if bits else None
                    lim.probes.append(FmaProbe(isa, dt, self._fma_samples(dt), lanes,
                                               p["fma_units"].get(isa, 2), cores))
        finally:
            core._set_isa(active)
        return lim

    # -- memory bandwidth ------------------------------------------------------
    def _bandwidth(self, kind: str) -> float:
        """Array bytes/s of one probe pass of ``kind`` ("read" or "update"), best of N."""
        if self._array is None:     # written once: its pages are resident
            self._array = self._np.ones(self._probe_bytes // 4, dtype=self._np.float32)
        a, probe = self._array, self._gc._core._memory_probe
        return a.nbytes / self._best(lambda: probe(a, kind))

    def probes(self, kinds) -> Probes:
        """Fresh yardsticks for one case, to ``take()`` around each of its rounds: memory
        bandwidth for the kinds "read" and "update", the FMA probe for "float32" and
        "float64"."""
        if all(k in ("read", "update") for k in kinds):
            return Probes(self._bandwidth, kinds, "GB/s")
        return Probes(self._fma_rate, kinds, "GFLOP/s")

    def memory(self) -> MemoryLimits:
        if self._memory is None:
            self._memory = self._measure_memory()
        return self._memory

    def _measure_memory(self) -> MemoryLimits:
        nbytes = self._probe_bytes
        self._log(f"machine: memory bandwidth on a {nbytes // MB} MB float32 array")
        read_bw, update_bw = self._bandwidth("read"), self._bandwidth("update")
        a, np = self._array, self._np
        numpy_bw = nbytes / self._best(lambda: np.sum(a))
        torch_bw = torch_threads = None
        if self._torch is not None:
            ta = self._torch.from_numpy(a)
            torch_bw = nbytes / self._best(lambda: ta.sum())
            torch_threads = self._torch.get_num_threads()
        return MemoryLimits(probe_bytes=nbytes, threads=self._threads(), read_bw=read_bw,
                            update_bw=update_bw, numpy_sum_bw=numpy_bw, torch_sum_bw=torch_bw,
                            torch_threads=torch_threads)
