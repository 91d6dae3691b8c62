"""Machine limits the kernels are measured against (DESIGN.md section 3).

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

Limits are measured lazily, once per run, by the first suite that needs them;
later suites (dense: FMA peak) add their own methods here.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, asdict
from typing import Callable, Optional

from .timing import measure

__all__ = ["MemoryLimits", "Machine", "cpu_description"]

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

    @property
    def measured(self) -> dict:
        out = {}
        if self._memory is not None:
            out["memory"] = self._memory.to_dict()
        return out

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
