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
bytes over the memory bus; that traffic figure is printed too).  NumPy's
single-threaded ``np.sum`` and, when importable, ``torch.sum`` over the same
array are printed for reference only.

FMA peak, the yardstick for GEMM-bound work (matmul, dense layers), in flop/s
per dtype (:meth:`Machine.fma`):

* ``theoretical`` -- physical cores (among the usable CPUs) x FMA units per core
  (2 when the CPU has FMA, else 1: one mul + one add port; 1 for AVX-512 on AMD
  Zen 4, whose two 256-bit FMA units together run one 512-bit FMA) x SIMD lanes of the
  widest vector ISA of the CPU flags (AVX-512 / AVX / SSE2 / NEON) x 2 flops per
  FMA x clock, the clock being the highest ``cpu MHz`` of ``/proc/cpuinfo``
  (else the "@ x.xxGHz" of the model name);
* ``yardstick`` -- the practical peak: NumPy's BLAS (OpenBLAS in the wheels)
  ``a @ b`` on an n x n x n square (2048, 1024 with ``--quick``), sgemm and
  dgemm, best-of-N with a preallocated output.  ``torch.matmul`` (MKL) on the
  same arrays is printed for reference.

The limit of a case is the theoretical peak when the clock could be read and no
measured GEMM exceeds it (a clock below the turbo clock underestimates the
peak); otherwise the NumPy BLAS yardstick.  Which one is used is reported.

Limits are measured lazily, once per run, by the first suite that needs them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, asdict
from typing import Callable, Optional

from .timing import measure

__all__ = ["MemoryLimits", "FmaLimits", "Machine", "cpu_description"]

MB = 1 << 20


@dataclass
class MemoryLimits:
    probe_bytes: int
    threads: int
    read_bw: float                  # bytes/s, multi-threaded read pass
    update_bw: float                # array bytes/s, in-place read+write pass
    source: str                     # "gradcore._core._memory_probe" or fallback
    numpy_sum_bw: Optional[float] = None
    torch_sum_bw: Optional[float] = None
    torch_threads: Optional[int] = None
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["read_GBps"] = self.read_bw / 1e9
        d["update_GBps"] = self.update_bw / 1e9
        d["update_traffic_GBps"] = 2 * self.update_bw / 1e9
        return d


@dataclass
class FmaLimits:
    size: int                       # n of the n x n x n probe GEMMs
    blas: str                       # NumPy's BLAS, e.g. "scipy-openblas 0.3.27"
    numpy_sgemm: float              # flop/s of NumPy a @ b, float32 (best of N)
    numpy_dgemm: float              # flop/s, float64
    torch_sgemm: Optional[float] = None
    torch_dgemm: Optional[float] = None
    torch_threads: Optional[int] = None
    cores: int = 1                  # physical cores among the usable CPUs
    ghz: Optional[float] = None     # clock read from /proc/cpuinfo (None: unknown)
    clock_source: str = ""
    isa: str = ""                   # widest vector ISA of the CPU flags
    vector_bits: int = 128
    fma_units: int = 2              # per core and cycle
    theory_f32: Optional[float] = None   # flop/s
    theory_f64: Optional[float] = None
    source: str = ""                # "theoretical" or "yardstick": what peak() returns
    note: str = ""

    def peak(self, dtype) -> float:
        """flop/s that a case of this dtype ("float32"/"float64") is measured against."""
        f64 = str(dtype) in ("float64", "f64", "double")
        if self.source == "theoretical":
            return self.theory_f64 if f64 else self.theory_f32
        return self.numpy_dgemm if f64 else self.numpy_sgemm

    def label(self, dtype) -> str:
        """Short name of the limit for the table's "limit" column."""
        f64 = str(dtype) in ("float64", "f64", "double")
        if self.source == "theoretical":
            return f"FMA peak {'f64' if f64 else 'f32'}"
        return "BLAS dgemm" if f64 else "BLAS sgemm"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("numpy_sgemm", "numpy_dgemm", "torch_sgemm", "torch_dgemm",
                  "theory_f32", "theory_f64"):
            v = getattr(self, k)
            d[k + "_GFLOPs"] = None if v is None else v / 1e9
        d["peak_f32_GFLOPs"] = self.peak("float32") / 1e9
        d["peak_f64_GFLOPs"] = self.peak("float64") / 1e9
        return d


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


def cpu_peak_params() -> dict:
    """Physical cores, clock and vector ISA for the theoretical FMA peak."""
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
    flags = set()
    for r in mine[:1]:
        flags = set((r.get("flags") or r.get("Features") or "").split())
    if "avx512f" in flags:
        isa, bits = "avx512", 512
    elif "avx" in flags:
        isa, bits = ("avx2+fma" if "fma" in flags else "avx"), 256
    elif "asimd" in flags:
        isa, bits = "neon", 128
    else:
        isa, bits = "sse2", 128
    fma_units = 2 if ("fma" in flags or isa == "neon") else 1
    first = mine[0] if mine else {}
    if (isa == "avx512" and first.get("vendor_id") == "AuthenticAMD"
            and first.get("cpu family") == "25"):
        # Zen 4 runs a 512-bit FMA on both of its 256-bit FMA units at once.
        fma_units = 1
    return {"cores": n_cores, "ghz": ghz, "clock_source": clock_source, "isa": isa,
            "vector_bits": bits, "fma_units": fma_units}


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
        self._quick = quick
        self._repeat = repeat
        self._min_time = min_time
        self._log = log
        self._memory: Optional[MemoryLimits] = None
        self._fma: Optional[FmaLimits] = None

    @property
    def measured(self) -> dict:
        out = {}
        if self._memory is not None:
            out["memory"] = self._memory.to_dict()
        if self._fma is not None:
            out["fma"] = self._fma.to_dict()
        return out

    def fma(self) -> FmaLimits:
        if self._fma is None:
            self._fma = self._measure_fma()
        return self._fma

    def _measure_fma(self) -> FmaLimits:
        np = self._np
        n = 1024 if self._quick else 2048
        flops = 2.0 * n * n * n
        self._log(f"machine: GEMM peak, NumPy/torch sgemm and dgemm on {n}x{n}x{n}")
        rep = max(self._repeat, 3)

        def t(fn):
            return measure(fn, repeat=rep, min_time=self._min_time).best

        try:
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            blas = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
        except Exception:
            blas = "NumPy BLAS"
        rng = np.random.default_rng(12345)
        got = {}
        torch_threads = None
        for dt in (np.float32, np.float64):
            a = rng.standard_normal((n, n)).astype(dt)
            b = rng.standard_normal((n, n)).astype(dt)
            c = np.empty((n, n), dt)
            name = np.dtype(dt).name
            got[("numpy", name)] = flops / t(lambda: np.matmul(a, b, out=c))
            if self._torch is not None:
                try:
                    ta, tb = self._torch.from_numpy(a), self._torch.from_numpy(b)
                    tc = self._torch.from_numpy(c)
                    got[("torch", name)] = flops / t(lambda: self._torch.matmul(ta, tb, out=tc))
                    torch_threads = self._torch.get_num_threads()
                except Exception as exc:
                    self._log(f"machine: torch GEMM failed: {type(exc).__name__}: {exc}")
            del a, b, c
        p = cpu_peak_params()
        lanes32, lanes64 = p["vector_bits"] // 32, p["vector_bits"] // 64
        theory_f32 = theory_f64 = None
        note = ""
        if p["ghz"]:
            per_cycle = p["cores"] * p["fma_units"] * 2 * 1e9 * p["ghz"]
            theory_f32, theory_f64 = per_cycle * lanes32, per_cycle * lanes64
            best32 = max(v for (_, d), v in got.items() if d == "float32")
            best64 = max(v for (_, d), v in got.items() if d == "float64")
            if best32 > 1.02 * theory_f32 or best64 > 1.02 * theory_f64:
                source = "yardstick"
                note = (f"a measured GEMM exceeds the theoretical peak computed with "
                        f"{p['ghz']:.3g} GHz (clock below the turbo clock?): cases are measured "
                        f"against the NumPy BLAS yardstick instead")
            else:
                source = "theoretical"
        else:
            source = "yardstick"
            note = ("clock not readable from /proc/cpuinfo: cases are measured against the "
                    "NumPy BLAS yardstick (the practical peak), not the theoretical FMA peak")
        return FmaLimits(size=n, blas=blas, numpy_sgemm=got[("numpy", "float32")],
                         numpy_dgemm=got[("numpy", "float64")],
                         torch_sgemm=got.get(("torch", "float32")),
                         torch_dgemm=got.get(("torch", "float64")),
                         torch_threads=torch_threads, cores=p["cores"], ghz=p["ghz"],
                         clock_source=p["clock_source"], isa=p["isa"],
                         vector_bits=p["vector_bits"], fma_units=p["fma_units"],
                         theory_f32=theory_f32, theory_f64=theory_f64, source=source,
                         note=note)

    def memory(self) -> MemoryLimits:
        if self._memory is None:
            self._memory = self._measure_memory()
        return self._memory

    def _measure_memory(self) -> MemoryLimits:
        np = self._np
        nbytes = (128 if self._quick else 512) * MB
        self._log(f"machine: memory bandwidth on a {nbytes // MB} MB float32 array")
        a = np.ones(nbytes // 4, dtype=np.float32)   # written once: pages are resident
        rep = max(self._repeat, 3)

        def t(fn):
            return measure(fn, repeat=rep, min_time=self._min_time).best

        try:
            threads = int(self._gc.get_num_threads())
        except Exception:
            threads = os.cpu_count() or 1
        probe = getattr(getattr(self._gc, "_core", None), "_memory_probe", None)
        note = ""
        numpy_bw = nbytes / t(lambda: np.sum(a))
        torch_bw = torch_threads = None
        ta = None
        if self._torch is not None:
            ta = self._torch.from_numpy(a)
            torch_bw = nbytes / t(lambda: ta.sum())
            torch_threads = self._torch.get_num_threads()
        if probe is not None:
            source = "gradcore._core._memory_probe"
            read_bw = nbytes / t(lambda: probe(a, "read"))
            update_bw = nbytes / t(lambda: probe(a, "update"))
        else:
            # no probe in this build: fall back to the best multi-threaded peer
            # (torch) or NumPy; flagged, since the limit may be underestimated
            source = "fallback (torch/NumPy)"
            note = ("gradcore._core._memory_probe is missing: limits measured with "
                    "torch.sum / t.mul_(1) or NumPy, fractions of the limit are unreliable")
            read_bw = max(numpy_bw, torch_bw or 0.0)
            if ta is not None:
                update_bw = nbytes / t(lambda: ta.mul_(1.0))
            else:
                update_bw = nbytes / t(lambda: np.multiply(a, 1.0, out=a))
        del ta, a
        return MemoryLimits(probe_bytes=nbytes, threads=threads, read_bw=read_bw,
                            update_bw=update_bw, source=source, numpy_sum_bw=numpy_bw,
                            torch_sum_bw=torch_bw, torch_threads=torch_threads, note=note)
