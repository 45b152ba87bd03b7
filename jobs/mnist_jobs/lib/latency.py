"""Latency percentiles from every request a point measured, each with a
distribution-free 95 % interval.

perf_analyzer's own p50/p95/p99 are single figures from the windows it kept.
Its profile export holds every request of those windows (aggregate.py reads
it); the requests completed inside the windows, pooled over a point's repeats,
give the same nearest-rank percentiles and, from order statistics
(stats.percentile_interval: ranks from Binomial(n, q), no normality assumed),
an interval for each, with the number of requests it rests on. Too few
requests for an interval (p99 needs 299 at 95 %) leave it out, said as such.

In request-rate mode a request sent late waited before it was sent, and a
latency from its send time hides that wait (coordinated omission). With a
constant rate the schedule is known: the i-th request was due ``i / rate``
after the schedule's start, which is placed as late as lets no request be
early (the export starts at the first window, not at the schedule's own
start), so each latency counts from when it was due (``from_due_us``). A
Poisson schedule's due times are random and not in the export: its latencies
count from the send time, and where the client fell behind the row says they
are a lower bound.
"""
from __future__ import annotations

from mnist_jobs.lib import stats
from mnist_jobs.lib.aggregate import ClientRecords

#: The percentiles reported, as fractions, and their row keys.
QUANTILES = ((0.50, "p50"), (0.95, "p95"), (0.99, "p99"))


def latencies_us(records: ClientRecords) -> list[int]:
    """Each request completed inside the measurement windows: its latency in µs."""
    return [(done - sent) // 1000 for sent, done in records.requests
            if records.start_ns <= done <= records.end_ns]


def from_due_us(records: ClientRecords, rate_per_s: float) -> tuple[list[int], int]:
    """Each request completed inside the windows: its latency in µs counted from when a
    constant ``rate_per_s`` schedule had it due; and the most any request was sent late."""
    sends = sorted(records.requests)
    if not sends:
        return [], 0
    step_ns = 1e9 / rate_per_s
    start = min(sent - i * step_ns for i, (sent, _) in enumerate(sends))
    out, late = [], 0.0
    for i, (sent, done) in enumerate(sends):
        due = start + i * step_ns
        late = max(late, sent - due)
        if records.start_ns <= done <= records.end_ns:
            out.append(int((done - due) // 1000))
    return out, int(late // 1000)


def summary(latencies: list[int], confidence: float = 0.95) -> dict:
    """``{"requests": n, "p50": [estimate, low, high], ...}`` in µs; low and high are
    null where n is below the fewest samples that can state that percentile."""
    ordered = sorted(latencies)
    out: dict = {"requests": len(ordered)}
    if not ordered:
        return out
    for q, key in QUANTILES:
        found = stats.percentile_interval(ordered, q, confidence)
        out[key] = [int(found.estimate), None if found.low is None else int(found.low),
                    None if found.high is None else int(found.high)]
    return out


def describe(found: dict) -> str:
    """One line for the stage's log: ``p99 1234 us [1200, 1300] over 5,000 requests``."""
    if not found.get("requests"):
        return "no request completed inside the windows"
    est, low, high = found["p99"]
    interval = f"[{low}, {high}]" if low is not None else \
        f"no interval (fewer than {stats.min_samples(0.99)} requests)"
    return f"p99 {est} us {interval} over {found['requests']:,} requests"


__all__ = ["QUANTILES", "latencies_us", "from_due_us", "summary", "describe"]
