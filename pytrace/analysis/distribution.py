"""Summary statistics of durations, with one documented percentile definition.

Every analysis that reports latencies (GC pauses, user tasks and regions)
uses ``Distribution.of`` so the numbers mean the same thing everywhere.

Percentiles use the **nearest-rank** definition: the p-th percentile of n
sorted values is the value at 1-based rank ``ceil(p * n / 100)``.  It is
always one of the observed durations (a real pause, not an interpolation
between two), and it is easy to check by hand: of the pauses
``[10, 20, 30, 40]`` the p50 is 20 (rank 2), the p90 and p99 are 40 (rank 4).
"""

from __future__ import annotations

from dataclasses import dataclass


def percentile(sorted_values, p: int) -> int:
    """Nearest-rank percentile ``p`` (0 < p <= 100) of an ascending, non-empty sequence."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    rank = -(-p * len(sorted_values) // 100)  # ceil without floats
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class Distribution:
    """Count, total and shape of a set of durations (nanoseconds)."""

    count: int
    total: int
    mean: float
    min: int
    p50: int
    p90: int
    p99: int
    max: int

    @classmethod
    def of(cls, durations) -> "Distribution":
        values = sorted(durations)
        if not values:
            return cls(0, 0, 0.0, 0, 0, 0, 0, 0)
        total = sum(values)
        return cls(len(values), total, total / len(values), values[0],
                   percentile(values, 50), percentile(values, 90), percentile(values, 99),
                   values[-1])
