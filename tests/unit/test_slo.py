"""benchmark.slo: the bisection around the SLO boundary, with a fake measure
function standing in for perf_analyzer (a server whose p99 grows with load)."""
from __future__ import annotations

from mnist_jobs.lib.slo import MAX_REFINE, Slo, refine


def server(p99_ms_per_load: float = 1.0, saturation: int = 1_000_000, key: str = "c"):
    """Compact rows of a server whose p99 is ``p99_ms_per_load`` x load and whose
    throughput grows with load; ``measured`` lists what the search asked for."""
    measured: list[int] = []

    def row(load: int) -> dict:
        return {key: load, "inferPerSec": f"{min(load, saturation) * 100.0:.1f}",
                "p99Us": int(load * p99_ms_per_load * 1000), "p95Us": int(load * 500)}

    def measure(load: int) -> dict:
        measured.append(load)
        return row(load)
    return row, measure, measured


def test_bisects_to_adjacent_concurrencies_around_the_boundary():
    row, measure, measured = server()            # p99 = c ms: the boundary is c = 20
    sweep = [row(c) for c in (1, 17, 33, 49)]
    out = refine(sweep, "c", measure, Slo(p99_ms=20))
    assert measured == [25, 21, 19, 20]          # 17 | 33 -> 25 fails, 21 fails, 19, 20 pass
    assert out["atSlo"] == {"c": 20, "inferPerSec": "2000.0", "p99Us": 20000, "p95Us": 10000}
    assert out["lastPassing"]["c"] == 20 and out["firstFailing"]["c"] == 21
    assert out["firstFailing"]["p99Us"] > 20000 >= out["lastPassing"]["p99Us"]
    assert out["refined"] == measured and out["slo"] == "p99 <= 20 ms"


def test_the_answer_is_the_best_throughput_meeting_it_not_only_the_boundary():
    row, measure, _ = server(saturation=10)      # throughput flat from c = 10 on
    out = refine([row(c) for c in (1, 9, 33)], "c", measure, Slo(p99_ms=20))
    assert float(out["atSlo"]["inferPerSec"]) == 1000.0
    assert out["lastPassing"]["c"] == 20


def test_none_meets_it_even_after_bisecting_below_the_lowest_load():
    row, measure, measured = server(p99_ms_per_load=10.0)   # c = 1 already 10 ms
    out = refine([row(c) for c in (4, 8)], "c", measure, Slo(p99_ms=5))
    assert measured == [2, 1]
    assert "atSlo" not in out and out["firstFailing"]["c"] == 1
    assert out["none"] == "no point meets p99 <= 5 ms: the lowest, c=1, has p99 10.00 ms"


def test_the_lowest_load_failing_can_still_find_a_passing_one_below():
    row, measure, measured = server()
    out = refine([row(c) for c in (16, 32)], "c", measure, Slo(p99_ms=5))
    assert out["atSlo"]["c"] == 5 and out["firstFailing"]["c"] == 6


def test_every_point_meeting_it_says_the_boundary_is_beyond_the_sweep():
    row, measure, measured = server()
    out = refine([row(c) for c in (1, 2, 3)], "c", measure, Slo(p99_ms=100))
    assert measured == [] and out["atSlo"]["c"] == 3 and "firstFailing" not in out
    assert "beyond the sweep" in out["note"]


def test_bisection_is_bounded_and_rates_stop_within_five_percent():
    row, measure, measured = server(p99_ms_per_load=0.001, key="rate")   # 1 ms per 1000/s
    out = refine([row(r) for r in (1000, 100000)], "rate", measure, Slo(p99_ms=37))
    assert len(measured) <= MAX_REFINE
    low, high = out["lastPassing"]["rate"], out["firstFailing"]["rate"]
    assert low <= 37000 < high
    row2, measure2, measured2 = server(p99_ms_per_load=0.001, key="rate")
    out2 = refine([row2(r) for r in (30000, 40000)], "rate", measure2, Slo(p99_ms=37))
    hi, lo = out2["firstFailing"]["rate"], out2["lastPassing"]["rate"]
    assert hi - lo <= lo // 20 and lo <= 37000 < hi


def test_p95_limit_and_a_point_behind_count_against_it():
    slo = Slo(p99_ms=50, p95_ms=5)
    assert slo.describe() == "p99 <= 50 ms, p95 <= 5 ms"
    assert slo.meets({"p99Us": 40000, "p95Us": 5000})
    assert not slo.meets({"p99Us": 40000, "p95Us": 5001})
    assert not Slo(p99_ms=50).meets({"p99Us": 1000, "p95Us": 1, "keptUp": "BEHIND(0.05)"})
    assert not Slo().active and Slo(p95_ms=1).active


def test_a_failed_measurement_stops_the_search():
    row, _, _ = server()
    out = refine([row(c) for c in (1, 33)], "c", lambda load: None, Slo(p99_ms=20))
    assert out["refined"] == [] and out["lastPassing"]["c"] == 1 and out["firstFailing"]["c"] == 33


def test_the_failing_neighbour_says_why_it_fails():
    slo = Slo(p99_ms=5, p95_ms=2)
    assert slo.why_not({"p99Us": 4000, "p95Us": 1000}) == []
    assert slo.why_not({"p99Us": 6000, "p95Us": 3000, "keptUp": "BEHIND(0.50)"}) == [
        "p99 over the limit", "p95 over the limit", "the client fell behind (BEHIND(0.50))"]
    # a rate whose client fell behind fails with its p99 well under the limit (issue 27)
    def row(rate: int) -> dict:
        return {"rate": rate, "inferPerSec": f"{min(rate, 950):.1f}", "p99Us": 3400,
                "p95Us": 1000, "keptUp": "ok" if rate < 950 else "BEHIND(0.95)"}
    out = refine([row(r) for r in (100, 2000)], "rate", row, Slo(p99_ms=5))
    failing = out["firstFailing"]
    assert failing["p99Us"] < 5000 and failing["why"] == "the client fell behind (BEHIND(0.95))"
    high = refine([{"c": c, "inferPerSec": "1.0", "p99Us": c * 1000, "p95Us": 0} for c in (1, 9)],
                  "c", lambda c: None, Slo(p99_ms=5))
    assert high["firstFailing"]["why"] == "p99 over the limit"


# --------------------------------------------------------------------------- verdicts that hold
def with_p99(c: int, infer: float, p99_us: int, interval: tuple | None, requests: int = 5000) -> dict:
    """A compact row whose request records give p99 ``interval`` (low, high); None: none."""
    row = {"c": c, "inferPerSec": f"{infer:.1f}", "p99Us": p99_us, "p95Us": p99_us // 2}
    if interval is not None:
        low, high = interval
        row["latency"] = {"requests": requests, "p99": [p99_us, low, high],
                          "p95": [p99_us // 2, p99_us // 2 - 10, p99_us // 2 + 10]}
    return row


def test_a_point_meets_a_limit_only_when_its_interval_is_under_it():
    slo = Slo(p99_ms=5)
    assert slo.meets(with_p99(1, 100, 4000, (3800, 5000)))          # upper end at the limit
    assert slo.why_not(with_p99(1, 100, 5500, (5100, 5900))) == [
        "p99 over the limit (95 % interval [5100, 5900] us)"]
    # perf_analyzer's own figure under the limit is not enough when the interval holds it
    assert slo.why_not(with_p99(1, 100, 4900, (4700, 5200))) == [
        "p99 undecided: its 95 % interval [4700, 5200] us holds the limit (5000 us)"]
    too_few = with_p99(1, 100, 3000, (None, None), requests=120)
    assert slo.why_not(too_few) == ["p99 undecided: 120 requests are too few for a 95 % interval"]
    assert slo.meets(with_p99(1, 100, 4900, None))                  # no records: the single figure


def test_the_answer_comes_only_from_points_that_meet_it_with_confidence():
    rows = [with_p99(1, 1000, 1000, (900, 1100)), with_p99(9, 4000, 4200, (4000, 4400)),
            with_p99(17, 6000, 4900, (4600, 5300)), with_p99(25, 7000, 9000, (8500, 9500))]
    found = refine(rows, "c", lambda load: None, Slo(p99_ms=5))
    assert found["atSlo"]["c"] == 9 and found["atSlo"]["latency"]["requests"] == 5000
    assert found["firstFailing"]["c"] == 17
    assert found["firstFailing"]["why"].startswith("p99 undecided")


def test_status_and_the_local_summary_say_with_what_confidence_the_slo_is_met():
    from mnist_operator.core.summary import slo_part
    from mnist_operator.local import display
    rows = [with_p99(1, 1000, 1000, (900, 1100)), with_p99(9, 4000, 4200, (4000, 4400)),
            with_p99(17, 6000, 5900, (5600, 6300))]
    part = slo_part(refine(rows, "c", lambda load: None, Slo(p99_ms=5)), "c")
    assert (part["inferPerSecAtSlo"], part["requestsAtSlo"], part["p99UsHighAtSlo"]) == \
        ("4000.0", 5000, 4400)
    point = {"slo": part["slo"], **part}
    assert display.slo_line(point).startswith(
        "SLO p99 <= 5 ms: 4000.0 infer/s at c=9 (p99 4.20 ms, at most 4.40 ms with 95 % "
        "confidence over 5,000 requests)")
