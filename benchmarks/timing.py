"""Timing primitives of the latency harness: warm-up, repetitions under a time budget,
percentiles. Clock: ``time.perf_counter_ns``. The garbage collector is paused while a
measurement's repetitions run (as ``timeit`` does) and collected before it starts.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

__all__ = ["Budget", "Stats", "measure"]


@dataclass(frozen=True)
class Budget:
    """How long one measurement may run: ``warmup`` untimed calls, then timed calls until
    ``min_reps`` are done and ``seconds`` have passed, or ``max_reps`` are done."""

    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 500
    seconds: float = 2.0

    def scaled(self, factor: float) -> "Budget":
        return Budget(self.warmup, self.min_reps, self.max_reps, self.seconds * factor)


FULL = Budget(warmup=3, min_reps=15, max_reps=400, seconds=2.5)
THROUGHPUT = Budget(warmup=1, min_reps=5, max_reps=200, seconds=1.5)
E2E_THROUGHPUT = Budget(warmup=1, min_reps=3, max_reps=100, seconds=1.0)
QUICK = Budget(warmup=1, min_reps=2, max_reps=20, seconds=0.1)


@dataclass
class Stats:
    """Milliseconds over ``n`` timed repetitions."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_ns(cls, samples_ns: list[int]) -> "Stats":
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(n=len(ms), mean_ms=float(ms.mean()), p50_ms=float(p50), p90_ms=float(p90),
                   p99_ms=float(p99), min_ms=float(ms.min()), max_ms=float(ms.max()),
                   std_ms=float(ms.std()))

    def as_dict(self) -> dict:
        return asdict(self)

    def valid(self) -> bool:
        return self.n > 0 and all(math.isfinite(v) and v > 0 for v in
                                  (self.mean_ms, self.p50_ms, self.p90_ms, self.p99_ms, self.min_ms))


def measure(fn: Callable[[], object], budget: Budget = FULL) -> Stats:
    """Time ``fn()``: ``budget.warmup`` untimed calls, then repetitions under the budget."""
    for _ in range(budget.warmup):
        fn()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(budget.seconds * 1e9)
    try:
        while len(samples) < budget.max_reps and (len(samples) < budget.min_reps or clock() < deadline):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
    finally:
        if enabled:
            gc.enable()
    return Stats.from_ns(samples)
