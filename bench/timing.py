"""Timing helpers shared by the benchmarks: milliseconds per call under a time cap, and p99."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable


def timed(calls: Iterable[Callable[[], object]], label: str, cap_seconds: float) -> list[float]:
    """Milliseconds per call; stops early (and says so) past the time cap."""
    times, started = [], time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - started > cap_seconds:
            print(f"  ({label}: stopped at the {cap_seconds} s cap after {len(times)} calls)")
            break
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
