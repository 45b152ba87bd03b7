"""Repeated measurements of one point: median and a 95 % confidence interval.

The interval is Student's t interval on the MEAN, ``mean ± t(0.975, n-1) · s / √n``
(s the sample standard deviation). Chosen over the distribution-free
order-statistics interval for the median because that one cannot reach 95 %
below n = 6 (the widest, [min, max], covers the median with probability
1 - 2 / 2^n: 50 % at n = 2, 94 % at n = 5), and repeats go from 2 to 10.
The t interval is exact at 95 % for every n >= 2 when the repeats are
roughly normal, which is what independent perf_analyzer windows give.
The headline value is the median (robust to one bad repeat); the interval
is the mean's. n = 1 has no interval.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MAX_REPEATS = 10

#: Two-sided 95 % quantiles of Student's t, t(0.975, df), df = 1..MAX_REPEATS-1.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
         8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Spread:
    median: float
    mean: float
    low: float | None      # None: one measurement, no interval
    high: float | None
    n: int


def spread(values: list[float]) -> Spread:
    """Median, mean and the 95 % t interval of the mean of 1..MAX_REPEATS values."""
    n = len(values)
    if not 1 <= n <= MAX_REPEATS:
        raise ValueError(f"need 1..{MAX_REPEATS} values, got {n}")
    mean = statistics.fmean(values)
    if n == 1:
        return Spread(values[0], mean, None, None, 1)
    half = T_975[n - 1] * statistics.stdev(values) / math.sqrt(n)
    return Spread(statistics.median(values), mean, mean - half, mean + half, n)
