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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

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


# --------------------------------------------------------------------------- percentiles
# Distribution-free confidence intervals for a percentile, from order statistics.
#
# With n independent samples and ξ_q the true q quantile (q a fraction: 0.99 for p99),
# the number B of samples below ξ_q is Binomial(n, q), so for the order statistics
# X_(1) <= ... <= X_(n) (ranks 1-based)
#
#     P(X_(l) <= ξ_q <= X_(u)) >= P(l <= B <= u-1) = F(u-1) - F(l-1)
#
# (equality for continuous data; ties in the data only raise the coverage). The ranks
# are the pair reaching ``confidence`` with the fewest ranks between them (u - l) and,
# among those, the most nearly equal tail probabilities P(B < l) and P(B >= u): as
# close to symmetric as the discreteness allows, and not the equal-tailed pair, which
# needs more samples (p99 at 95 %: 368 instead of 299) and over-covers.
# The point estimate is the nearest-rank percentile X_(ceil(q·n)), the definition
# :func:`mnist_jobs.lib.aggregate.percentile` (and perf_analyzer) use.
# Only the Binomial's bulk is computed: its pmf by the recurrence p(k+1)/p(k) =
# (n-k)/(k+1) · q/(1-q) outward from the mode until it falls below 1e-20 of the
# mode's, about ±10 standard deviations, so O(√(n·q·(1-q))) work (n = 10^6 in ms).


class PercentileInterval(NamedTuple):
    estimate: float       # the nearest-rank percentile
    low: float | None     # None: too few samples for any pair of ranks (see min_samples)
    high: float | None
    n: int


def _check_q(q: float, confidence: float) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be a fraction in (0, 1), got {q}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _binomial_bulk(n: int, q: float) -> tuple[int, list[float]]:
    """(k0, cdf): cdf[i] = P(B <= k0 + i) for B ~ Binomial(n, q), over the window of k
    that holds all but ~1e-20 of the mass; below k0 the cdf is 0, past the end 1."""
    mode = min(n, int((n + 1) * q))
    ratio = q / (1.0 - q)
    up, down = [1.0], [1.0]                       # pmf / pmf(mode), outward
    k, p = mode, 1.0
    while k < n and p > 1e-20:
        p *= (n - k) / (k + 1) * ratio
        k += 1
        up.append(p)
    k, p = mode, 1.0
    while k > 0 and p > 1e-20:
        p *= k / ((n - k + 1) * ratio)
        k -= 1
        down.append(p)
    pmf = down[:0:-1] + up
    total = math.fsum(pmf)
    cdf, acc = [], 0.0
    for x in pmf:
        acc += x
        cdf.append(acc / total)
    return k, cdf


@lru_cache(maxsize=256)
def percentile_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """The 1-based ranks (l, u) of the ``confidence`` interval for the q quantile from n
    samples, or None when no pair reaches it (n < :func:`min_samples`). Cached: the
    ranks depend only on (n, q, confidence)."""
    _check_q(q, confidence)
    if n < 1:
        return None
    k0, cdf = _binomial_bulk(n, q)
    last = len(cdf) - 1

    def F(k: int) -> float:                      # P(B <= k)
        return 0.0 if k < k0 else 1.0 if k - k0 > last else cdf[k - k0]

    best = None                                   # (u - l, tail imbalance, l, u)
    u = 1
    for l in range(max(1, k0 - 1), min(n, k0 + last + 1) + 1):
        below = F(l - 1)                          # P(B < l)
        u = max(u, l + 1)
        while u <= n and F(u - 1) - below < confidence:
            u += 1
        if u > n:
            break                                 # larger l only loses coverage
        # mirror pairs (q = 0.5) tie exactly: round so float noise does not pick one
        key = (u - l, round(abs(below - (1.0 - F(u - 1))), 12), l, u)
        if best is None or key < best:
            best = key
    # l below the window: P(B < l) ~ 0, so l = max(1, k0 - 1) was already as good
    return None if best is None else (best[2], best[3])


@lru_cache(maxsize=256)
def upper_rank(n: int, q: float, confidence: float = 0.95) -> int | None:
    """The smallest 1-based rank u with P(X_(u) >= ξ_q) = P(B <= u-1) >= confidence,
    or None when even u = n falls short."""
    _check_q(q, confidence)
    if n < 1:
        return None
    k0, cdf = _binomial_bulk(n, q)
    for i, c in enumerate(cdf):
        if c >= confidence:
            u = k0 + i + 1
            return u if u <= n else None
    return None


def min_samples(q: float, confidence: float = 0.95, two_sided: bool = True) -> int:
    """The fewest samples for which any pair of ranks (two-sided: [X_(1), X_(n)] covers
    with 1 - q^n - (1-q)^n) or, one-sided, an upper rank (X_(n): 1 - q^n) reaches
    ``confidence``."""
    _check_q(q, confidence)
    n = max(1, math.ceil(math.log1p(-confidence) / math.log(max(q, 1.0 - q))) - 1)
    def cover(m: int) -> float:
        miss = q ** m + ((1.0 - q) ** m if two_sided else 0.0)
        return 1.0 - miss
    while cover(n) < confidence:
        n += 1
    while n > 1 and cover(n - 1) >= confidence:
        n -= 1
    return n


def _nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]


def percentile_interval(sorted_values: Sequence[float], q: float,
                        confidence: float = 0.95) -> PercentileInterval:
    """The nearest-rank q percentile of ascending ``sorted_values`` and its
    distribution-free ``confidence`` interval [X_(l), X_(u)]; low/high None when there
    are fewer than ``min_samples(q, confidence)`` values."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    ranks = percentile_ranks(n, q, confidence)
    estimate = _nearest_rank(sorted_values, q)
    if ranks is None:
        return PercentileInterval(estimate, None, None, n)
    return PercentileInterval(estimate, sorted_values[ranks[0] - 1], sorted_values[ranks[1] - 1], n)


def upper_bound(sorted_values: Sequence[float], q: float, confidence: float = 0.95) -> float | None:
    """A one-sided ``confidence`` upper bound on the q quantile, X_(u) with u from
    :func:`upper_rank`; None when there are too few values. An SLO on the q quantile
    is met when this bound is <= the limit."""
    u = upper_rank(len(sorted_values), q, confidence)
    return None if u is None else sorted_values[u - 1]
