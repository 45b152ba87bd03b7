"""Every bench point's p50/p95/p99 from all the requests of its windows (perf_analyzer's
profile export), each with a distribution-free 95 % interval and the request count;
perf_analyzer's own p99 stays beside them. perf_analyzer is replaced by its real CSV
and a profile export of known requests."""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from mnist_jobs import bench
from mnist_jobs.lib import aggregate, latency
from mnist_jobs.lib import slo as slo_search
from tests.harness.stage_flags import undocumented

#: perf_analyzer's real CSV, its first point only (one point per run, as the bench runs it)
CSV = "\n".join((Path(__file__).parent / "data" / "perf-mnist_onnx-grpc.csv")
                 .read_text().splitlines()[:2]) + "\n"
#: that point's p99, as perf_analyzer reported it
CSV_P99 = {int(CSV.splitlines()[1].split(",")[12])}
START, END = 10**12, 10**12 + 5 * 10**9   # the windows' edges, ns


def export(latencies_us: list[int], outside: int = 0) -> dict:
    """A profile export whose windows hold requests of these latencies (plus ``outside``
    requests completed after the last window edge, which must not count)."""
    requests, t = [], START
    for lat in latencies_us:
        requests.append({"timestamp": t, "response_timestamps": [t + lat * 1000]})
        t += 1000
    requests += [{"timestamp": END + 1, "response_timestamps": [END + 10**6]}] * outside
    return {"experiments": [{"experiment": {"mode": "concurrency", "value": 4},
                             "requests": requests, "window_boundaries": [START, END]}],
            "version": "2.45.0"}


@pytest.fixture
def fake(monkeypatch, bench_surroundings):
    def install(latencies_by_run: list[list[int]]) -> list[list[str]]:
        runs = iter(latencies_by_run)
        commands = []

        def run(cmd, capture_output, text, timeout):
            if cmd[1:] == ["--version"]:
                return subprocess.CompletedProcess(cmd, 0, "Perf Analyzer Version 2.45.0\n", "")
            commands.append(cmd)
            Path(cmd[cmd.index("-f") + 1]).write_text(CSV)
            path = Path(cmd[cmd.index("--profile-export-file") + 1])
            path.write_text(json.dumps(export(next(runs), outside=7)))
            return subprocess.CompletedProcess(cmd, 0, "ok\n", "")
        monkeypatch.setattr(bench.subprocess, "run", run)
        return commands
    return install


def run_bench(tmp_path: Path, repeats: int = 1) -> dict:
    return bench.run_bench(bench.BenchConfig("127.0.0.1:8001", "grpc", ["mnist_onnx"], 1,
                                             "4:4:1", "time_windows", 500, 50, 10,
                                             tmp_path / "bench", repeats=repeats))


def test_a_point_carries_its_percentiles_with_intervals_from_every_request(tmp_path, fake):
    rng = random.Random(3)
    lat = [int(rng.lognormvariate(7, 0.4)) for _ in range(5000)]
    commands = fake([lat])
    result = run_bench(tmp_path)
    (cmd,) = commands
    assert "--profile-export-file" in cmd
    assert undocumented(result, "bench") == set(), "fields docs/CONTRACT.md does not name"
    best = result["models"]["mnist_onnx"]["best"]
    found = best["latency"]
    assert found["requests"] == 5000                    # the 7 after the window left out
    ordered = sorted(lat)
    for q, key in latency.QUANTILES:
        estimate, low, high = found[key]
        assert estimate == ordered[int(-(-q * 5000 // 1)) - 1]   # nearest rank
        # the interval's ranks, from scipy's binomial: P(l <= B < u) >= 95 %
        l_rank, u_rank = ordered.index(low) + 1, len(ordered) - ordered[::-1].index(high)
        cover = scipy_stats.binom.cdf(u_rank - 1, 5000, q) - scipy_stats.binom.cdf(l_rank - 1, 5000, q)
        assert low <= estimate <= high and cover >= 0.95, (key, cover)
    assert best["p99Us"] in CSV_P99 and best["p99Us"] != found["p99"][0]   # perf_analyzer's, beside
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["points"]["mnist_onnx"][0]["latency"] == found   # whole, whatever the result keeps


def test_repeats_pool_their_requests_and_too_few_give_no_interval(tmp_path, fake):
    fake([[100 + i for i in range(100)], [300 + i for i in range(100)]])
    found = run_bench(tmp_path, repeats=2)["models"]["mnist_onnx"]["best"]["latency"]
    assert found["requests"] == 200
    assert found["p99"][0] == 397 and found["p99"][1:] == [None, None]   # p99 needs 299
    assert found["p50"][1] is not None and found["p50"][1] <= found["p50"][0] <= found["p50"][2]
    assert latency.describe(found) == "p99 397 us no interval (fewer than 299 requests) over 200 requests"


def test_no_export_leaves_the_row_as_perf_analyzer_reports_it(tmp_path, monkeypatch,
                                                                   bench_surroundings):
    def run(cmd, capture_output, text, timeout):
        if cmd[1:] == ["--version"]:
            return subprocess.CompletedProcess(cmd, 0, "Perf Analyzer Version 2.45.0\n", "")
        Path(cmd[cmd.index("-f") + 1]).write_text(CSV)
        return subprocess.CompletedProcess(cmd, 0, "ok\n", "")
    monkeypatch.setattr(bench.subprocess, "run", run)
    best = run_bench(tmp_path)["models"]["mnist_onnx"]["best"]
    assert "latency" not in best and best["p99Us"] in CSV_P99


def test_the_status_and_the_local_summary_carry_the_best_points_p99_interval(tmp_path, fake):
    from mnist_operator.core.summary import summarize
    from mnist_operator.local import display
    rng = random.Random(5)
    fake([[int(rng.expovariate(1 / 900)) + 200 for _ in range(4000)]])
    result = run_bench(tmp_path)
    found = result["models"]["mnist_onnx"]["best"]["latency"]
    status = summarize({"bench-grpc": {"stage": "bench", "state": "Succeeded", **result}})
    point = status["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert (point["requestsAtBest"], point["p99UsFromRequestsAtBest"], point["p99UsLowAtBest"],
            point["p99UsHighAtBest"]) == (4000, *found["p99"])
    line = display.latency_line(point)
    assert line == (f"p99 from 4,000 requests: {found['p99'][0] / 1000:.2f} ms "
                    f"[{found['p99'][1] / 1000:.2f}, {found['p99'][2] / 1000:.2f}] (95 %)")
    assert line in "\n".join(display.perf_table({"phase": "Ready", **status}))


#: 600 requests whose p99's 95 % interval holds a 5 ms limit: most at 1 ms, a tail to 8 ms
STRADDLING = [1000] * 590 + [4000 + 400 * i for i in range(10)]
#: 3,000 more at 1 ms: with them the p99 interval is far under 5 ms
QUICK = [1000] * 3000


def sweep_of(tmp_path: Path, decide_within_s: int) -> bench.ModelSweep:
    cfg = bench.BenchConfig("127.0.0.1:8001", "grpc", ["mnist_onnx"], 1, "4:4:1", "time_windows",
                            500, 50, 10, tmp_path / "bench",
                            slo=slo_search.Slo(p99_ms=5, decide_within_s=decide_within_s))
    cfg.out.mkdir(parents=True)
    return bench.ModelSweep(cfg, "perf_analyzer", "mnist_onnx", None, bench.RunNotes())


def test_an_undecided_point_is_measured_further_until_the_slo_decides_it(tmp_path, fake):
    _, low, high = latency.summary(STRADDLING)["p99"]
    assert low <= 5000 < high                       # the first run alone cannot decide
    fake([STRADDLING, QUICK])
    sweep = sweep_of(tmp_path, decide_within_s=60)
    point = sweep.measure_point(4)
    assert point["measuredFurther"]["runs"] == 1 and point["measuredFurther"]["decided"]
    assert point["latency"]["requests"] == 3600
    assert point["latency"]["p99"][2] <= 5000 and sweep.cfg.slo.meets(point)


def test_without_time_to_decide_the_point_stays_undecided_and_does_not_meet(tmp_path, fake):
    fake([STRADDLING])
    sweep = sweep_of(tmp_path, decide_within_s=0)
    point = sweep.measure_point(4)
    assert "measuredFurther" not in point and not sweep.cfg.slo.meets(point)
    assert sweep.cfg.slo.why_not(point)[0].startswith("p99 undecided: its 95 % interval")


def test_measuring_further_stops_at_the_bound_and_says_still_undecided(tmp_path, fake,
                                                                       monkeypatch):
    fake([STRADDLING] * 4)
    clock = iter(range(0, 1000, 25))              # each look at the clock: 25 s later
    monkeypatch.setattr(bench.time, "monotonic", lambda: next(clock))
    point = sweep_of(tmp_path, decide_within_s=60).measure_point(4)
    # started at 0; runs begun at 25 and 50 s; at 75 s the bound is spent; the note,
    # written at the next reading, says 100 s
    assert point["measuredFurther"] == {"runs": 2, "seconds": 100, "decided": False}
    assert point["latency"]["requests"] == 3 * 600


def test_latency_counts_from_when_a_constant_rate_had_the_request_due():
    """1,000 requests/s, each served in 1 ms: the first 100 sent on time, the rest every
    2 ms (the client fell behind). Counted from the send every latency is 1 ms; from
    when due, the n-th late request waited (n * 1 ms) more."""
    start, step = 10**12, 10**6
    sends = [start + i * step for i in range(100)] + \
            [start + 100 * step + i * 2 * step for i in range(100)]
    records = aggregate.ClientRecords(start, sends[-1] + 2 * step,
                                      tuple((s, s + 10**6) for s in sends))
    assert set(latency.latencies_us(records)) == {1000}
    found, late = latency.from_due_us(records, 1000)
    assert found == [1000] * 100 + [1000 + i * 1000 for i in range(100)]
    assert late == 99 * 1000


def test_the_schedule_starts_as_late_as_lets_no_request_be_early():
    """The export begins at the first window, 5 ms after the schedule's own start: the
    schedule is placed where no request is early, so on-time requests count 1 ms and
    the one sent 0.5 ms late counts 1.5 ms."""
    start, step = 10**12 + 5 * 10**6, 10**6
    sends = [start + i * step + (500_000 if i == 10 else 0) for i in range(50)]
    records = aggregate.ClientRecords(start, start + 60 * step,
                                      tuple((s, s + 10**6) for s in sends))
    found, late = latency.from_due_us(records, 1000)
    assert late == 500 and found == [1500 if i == 10 else 1000 for i in range(50)]


def test_the_status_says_what_a_request_rate_points_latency_counts_from():
    from mnist_operator.core import summary
    due = summary.latency_part({"latency": {"requests": 900, "p99": [250000, 240000, 260000],
                                            "from": "due", "sentLateUs": 1121468}})
    assert due["latencyFromAtBest"] == ("when due (constant rate): requests were sent up to "
                                        "1121.5 ms late")
    sent = summary.latency_part({"latency": {"requests": 900, "p99": [1500, 1400, 1600],
                                             "from": "sent", "lowerBound": True}})
    assert sent["latencyFromAtBest"].startswith("when sent, a lower bound")
    kept_up = summary.latency_part({"latency": {"requests": 900, "p99": [1500, 1400, 1600],
                                                "from": "sent"}})
    assert "latencyFromAtBest" not in kept_up
