"""The SLO search: the highest throughput whose latency meets a p99 (and p95) limit.

A fixed sweep only brackets the answer: the boundary lies somewhere between
the last load that meets the SLO and the next one, which does not. The
search bisects that bracket (``refine``), measuring the midpoint each time,
until the two are adjacent (concurrency) or within 5 % (request rate), or
MAX_REFINE extra points were measured. If even the lowest load of the sweep
fails, the bracket is (0, lowest). The answer is the highest throughput over
every measured point that meets the SLO (usually the last passing load; not
always, latency is not strictly monotone), reported with the bracket so the
failing neighbour can be read beside it.

A point meets a latency limit only when it holds with 95 % confidence: the
upper end of the distribution-free interval of its percentile, from every
request of its windows (the row's ``latency``, lib/latency.py), is at or under
the limit. It fails when the interval's lower end is over the limit, and is
undecided in between, or when there were too few requests for an interval;
an undecided point is measured further (latency only: its throughput stays
the first runs') until it is decided or ``decide_within_s`` is spent, and if
still undecided does not meet the SLO, and says why. A row without
request records (a distributed load's, or one written before) is judged on
perf_analyzer's single figure, as it always was.

A request-rate point whose client fell behind did not test the rate asked
for, so it never counts as meeting the SLO; the failing neighbour says why
it failed (``why``: a latency over its limit, the client falling behind, or
both), since a point that fell behind can have a p99 well under the limit.
Pure: the measuring is a function passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: Extra points the bisection may measure per model.
MAX_REFINE = 6


@dataclass(frozen=True)
class Slo:
    p99_ms: int = 0     # 0: no limit
    p95_ms: int = 0
    decide_within_s: int = 0   # how long an undecided point is measured further (0: not)

    @property
    def active(self) -> bool:
        return self.p99_ms > 0 or self.p95_ms > 0

    def describe(self) -> str:
        return ", ".join(f"{name} <= {ms} ms" for name, ms in (("p99", self.p99_ms),
                                                                ("p95", self.p95_ms)) if ms)

    def why_not(self, row: dict) -> list[str]:
        """Why a compact bench row (p99Us, p95Us, latency, keptUp in request-rate mode)
        does not meet the SLO, in words; empty when it does."""
        out = []
        for name, ms in (("p99", self.p99_ms), ("p95", self.p95_ms)):
            if ms:
                out += _limit_verdict(row, name, ms * 1000)
        if row.get("keptUp", "ok") != "ok":
            out.append(f"the client fell behind ({row['keptUp']})")
        return out

    def meets(self, row: dict) -> bool:
        """A compact bench row within the limits, its client keeping up."""
        return not self.why_not(row)

    def undecided(self, row: dict) -> bool:
        """More requests could decide the row: a limit is undecided, none is clearly
        over, and the client kept up (measuring longer cannot change those)."""
        states = [_limit_state(row, name, ms * 1000)[0]
                  for name, ms in (("p99", self.p99_ms), ("p95", self.p95_ms)) if ms]
        return (UNDECIDED in states and OVER not in states
                and row.get("keptUp", "ok") == "ok")


MEETS, OVER, UNDECIDED = "meets", "over", "undecided"


def _limit_state(row: dict, name: str, limit_us: int) -> tuple[str, str]:
    """One percentile against its limit: meets, over, or undecided (its interval
    straddles the limit, or too few requests for one), and why, in words."""
    found = row.get("latency") or {}
    if name not in found:   # no request records: perf_analyzer's single figure
        return (OVER, f"{name} over the limit") if row[f"{name}Us"] > limit_us else (MEETS, "")
    _, low, high = found[name]
    if low is None:
        return UNDECIDED, (f"{name} undecided: {found['requests']} requests are too few for "
                           "a 95 % interval")
    if low > limit_us:
        return OVER, f"{name} over the limit (95 % interval [{low}, {high}] us)"
    if high > limit_us:
        return UNDECIDED, (f"{name} undecided: its 95 % interval [{low}, {high}] us holds "
                           f"the limit ({limit_us} us)")
    return MEETS, ""


def _limit_verdict(row: dict, name: str, limit_us: int) -> list[str]:
    """Why one percentile does not meet its limit (empty when it does)."""
    state, why = _limit_state(row, name, limit_us)
    return [] if state == MEETS else [why]


def close_enough(low: int, high: int, load_key: str) -> bool:
    """Stop bisecting: adjacent concurrencies, or rates within 5 % (at least 1/s)."""
    return high - low <= (1 if load_key == "c" else max(1, low // 20))


def _brief(row: dict, load_key: str) -> dict:
    """A row's load, throughput (with its 95 % interval under repeats) and latencies."""
    return {k: row[k] for k in (load_key, "inferPerSec", "p99Us", "p95Us", "repeats", "low",
                                "high", "latency", "measuredFurther") if k in row}


def refine(sweep: list[dict], load_key: str, measure: Callable[[int], dict | None], slo: Slo,
           max_extra: int = MAX_REFINE) -> dict:
    """Bisect the SLO boundary of ``sweep`` (compact rows keyed by ``load_key``, "c" or
    "rate") with ``measure(load)`` (a new compact row, or None when it failed).

    Returns ``atSlo`` (the best point meeting the SLO) or ``none`` (a sentence),
    ``lastPassing``/``firstFailing`` (the bracket's rows, where there is one; the
    failing one with ``why`` it fails) and ``refined`` (the loads measured by the
    bisection)."""
    rows = sorted(sweep, key=lambda r: r[load_key])
    passing = [r for r in rows if slo.meets(r)]
    # the bracket at the highest load: a passing row whose next row fails
    low = next((r for r, nxt in reversed(list(zip(rows, rows[1:])))
                if slo.meets(r) and not slo.meets(nxt)), None)
    high = rows[rows.index(low) + 1] if low is not None else None
    if low is None and rows and not passing:
        high = rows[0]              # even the lowest load fails: bisect below it
    refined: list[int] = []
    while high is not None and len(refined) < max_extra:
        low_load = low[load_key] if low else 0
        if close_enough(low_load, high[load_key], load_key):
            break
        mid = (low_load + high[load_key]) // 2
        row = measure(mid)
        if row is None:
            break
        refined.append(mid)
        rows.append(row)
        if slo.meets(row):
            low, passing = row, passing + [row]
        else:
            high = row
    out: dict = {"slo": slo.describe(), "refined": refined}
    if low is not None:
        out["lastPassing"] = _brief(low, load_key)
    if high is not None and (low is not None or not passing):
        out["firstFailing"] = {**_brief(high, load_key), "why": "; ".join(slo.why_not(high))}
    if passing:
        out["atSlo"] = _brief(max(passing, key=lambda r: float(r["inferPerSec"])), load_key)
        if high is None:
            out["note"] = "every point meets the SLO: its boundary lies beyond the sweep"
    else:
        lowest = min(rows, key=lambda r: r[load_key])
        out["none"] = (f"no point meets {slo.describe()}: the lowest, {load_key}="
                       f"{lowest[load_key]}, has p99 {lowest['p99Us'] / 1000:.2f} ms"
                       + ("" if lowest.get("keptUp", "ok") == "ok" else
                          f" and fell behind ({lowest['keptUp']})"))
    return out
