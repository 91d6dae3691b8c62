"""Best-of-N wall-clock timer.

Rules (ratios measured side by side in one process):

* ``time.perf_counter`` around a batch of ``inner`` back-to-back calls; the batch
  is sized so that it lasts at least ``min_time`` (about 20 ms), which keeps timer
  resolution and scheduler noise well below 1 %.
* one untimed warm-up call first (page faults, lazy initialisation, thread-pool
  start-up), then a calibration batch, then ``repeat`` timed batches; the reported
  time is the best batch divided by ``inner`` (best-of-N: the least disturbed run).
* the garbage collector is disabled while timing (and restored afterwards).
* before each measurement the process sleeps ``settle`` seconds: thread pools of the
  library measured just before (OpenBLAS, OpenMP, gradcore's own) keep spinning for a
  while after their last call, and on a 2-core machine those spinning threads would take
  the cores of the library measured next. Each library is timed on a quiet machine.
* with ``setup``: ``setup()`` runs before every timed call, outside the timed
  region (used to restore arrays that the measured call modifies in place), so
  every timed batch is a single call; short calls get more samples instead.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

__all__ = ["Timing", "measure", "gc_disabled", "format_seconds"]

#: pause before each measurement, long enough for OpenBLAS/OpenMP spin-waits to end
SETTLE_SECONDS = 0.3

#: hard cap on the number of single-call samples taken in ``setup`` mode
MAX_SETUP_SAMPLES_FACTOR = 20


@dataclass
class Timing:
    """Result of :func:`measure`: seconds per call."""

    best: float
    median: float
    inner: int
    samples: list = field(default_factory=list)  # seconds per call, one per batch

    @property
    def repeat(self) -> int:
        return len(self.samples)

    def to_dict(self) -> dict:
        return {
            "best_s": self.best,
            "median_s": self.median,
            "inner": self.inner,
            "repeat": self.repeat,
            "samples_s": list(self.samples),
        }


@contextmanager
def gc_disabled() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_batch(fn: Callable[[], object], n: int) -> float:
    perf = time.perf_counter
    t0 = perf()
    for _ in range(n):
        fn()
    return perf() - t0


def measure(
    fn: Callable[[], object],
    *,
    repeat: int = 7,
    min_time: float = 0.02,
    warmup: int = 1,
    setup: Optional[Callable[[], object]] = None,
    settle: float = SETTLE_SECONDS,
) -> Timing:
    """Time ``fn()``; return best-of-``repeat`` seconds per call."""
    repeat = max(1, int(repeat))
    if settle > 0:
        time.sleep(settle)
    with gc_disabled():
        if setup is not None:
            return _measure_with_setup(fn, setup, repeat, min_time, warmup)

        for _ in range(max(0, warmup)):
            fn()
        # calibration (also a second warm-up): grow the batch until it lasts
        # at least min_time
        inner = 1
        while True:
            elapsed = _time_batch(fn, inner)
            if elapsed >= min_time:
                break
            if elapsed <= 0.0:
                inner *= 10
            else:
                # aim 20 % above min_time, at least double
                inner = max(inner * 2, int(math.ceil(inner * 1.2 * min_time / elapsed)))
        samples = [_time_batch(fn, inner) / inner for _ in range(repeat)]
    return Timing(best=min(samples), median=statistics.median(samples), inner=inner, samples=samples)


def _measure_with_setup(fn, setup, repeat, min_time, warmup) -> Timing:
    perf = time.perf_counter
    first = None
    for _ in range(max(1, warmup)):
        setup()
        t0 = perf()
        fn()
        first = perf() - t0
    # short calls: take more single-call samples so that the total timed work
    # is about repeat * min_time, as in the batched mode
    n = repeat
    if first is not None and first < min_time:
        n = int(math.ceil(repeat * min_time / max(first, 1e-7)))
        n = max(repeat, min(n, repeat * MAX_SETUP_SAMPLES_FACTOR))
    samples = []
    for _ in range(n):
        setup()
        t0 = perf()
        fn()
        samples.append(perf() - t0)
    return Timing(best=min(samples), median=statistics.median(samples), inner=1, samples=samples)


def format_seconds(t: Optional[float]) -> str:
    """Human-readable duration with 3 significant digits (ns/us/ms/s)."""
    if t is None or not math.isfinite(t):
        return "-"
    if t >= 1.0:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    if t >= 1e-6:
        return f"{t * 1e6:.3g} µs"
    return f"{t * 1e9:.3g} ns"
