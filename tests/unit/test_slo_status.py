"""benchmark.slo as a user sees it: a real bench result with an SLO search
(tests/unit/data/bench-slo-grpc.json: perf_analyzer 2.45, mnist_onnx over gRPC,
concurrency 1:33:16 then bisection, p99 <= 8 ms, on this 2-core machine) in the
status, the printer column, the local summary and compare (table, CSV, plot)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mnist_operator.tools import compare
from mnist_operator.core import summary
from mnist_operator.local import display

RESULT = json.loads((Path(__file__).parent / "data" / "bench-slo-grpc.json").read_text())
FOUND = RESULT["models"]["mnist_onnx"]["slo"]


def summarized(result: dict = RESULT) -> dict:
    return summary.summarize({"bench-grpc": {"stage": "bench", "state": "Succeeded", **result}})


def test_the_real_search_met_the_slo_with_its_failing_neighbour():
    best, failing = FOUND["atSlo"], FOUND["firstFailing"]
    assert best["p99Us"] <= 8000 < failing["p99Us"]
    assert failing["c"] == best["c"] + 1                 # bisected down to adjacent concurrencies
    assert FOUND["refined"] and all(1 < c < 33 for c in FOUND["refined"])
    rows = {r["c"] for r in RESULT["models"]["mnist_onnx"]["rows"]}
    assert {1, 17, 33} | set(FOUND["refined"]) == rows


def test_status_and_printer_column_use_the_throughput_at_the_slo():
    bench = summarized()["benchmark"]
    point = bench["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert point["inferPerSecAtSlo"] == FOUND["atSlo"]["inferPerSec"]
    assert point["concurrencyAtSlo"] == FOUND["atSlo"]["c"]
    assert point["firstFailingAt"] == FOUND["firstFailing"]["c"]
    assert point["refinedPoints"] == len(FOUND["refined"])
    assert point["points"] == len(RESULT["models"]["mnist_onnx"]["rows"])   # sweep + bisection
    assert bench["throughputAtSlo"] == FOUND["atSlo"]["inferPerSec"]
    assert bench["throughput"] == f"{FOUND['atSlo']['inferPerSec']}@p99<=8ms"
    assert bench["bestThroughput"] == RESULT["models"]["mnist_onnx"]["best"]["inferPerSec"]


def test_without_an_slo_the_column_shows_the_best():
    plain = dict(RESULT, models={"mnist_onnx": {k: v for k, v in RESULT["models"]["mnist_onnx"]
                                                .items() if k != "slo"}})
    bench = summarized(plain)["benchmark"]
    assert bench["throughput"] == bench["bestThroughput"] and "throughputAtSlo" not in bench


def test_none_meeting_it_says_so_everywhere():
    none = json.loads(json.dumps(RESULT))
    none["models"]["mnist_onnx"]["slo"] = {
        "slo": "p99 <= 1 ms", "refined": [], "firstFailing": {"c": 1, "p99Us": 4008},
        "none": "no point meets p99 <= 1 ms: the lowest, c=1, has p99 4.01 ms"}
    bench = summarized(none)["benchmark"]
    assert bench["throughput"] == "none@p99<=1ms"
    assert bench["perfAnalyzer"]["mnist_onnx"]["grpc"]["inferPerSecAtSlo"] == "none"
    text = "\n".join(display.perf_table(summarized(none)))
    assert "SLO p99 <= 1 ms: no point meets p99 <= 1 ms: the lowest, c=1, has p99 4.01 ms\n" \
        in text + "\n"
    row = compare.rows_of("s", {"phase": "Ready", **summarized(none)})[0]
    assert row.infer_per_sec_at_slo == "none meets it; c=1 fails" and row.at_slo is None


def test_local_summary_shows_the_slo_line():
    text = "\n".join(display.perf_table(summarized()))
    best, failing = FOUND["atSlo"], FOUND["firstFailing"]
    assert (f"SLO p99 <= 8 ms: {best['inferPerSec']} infer/s at c={best['c']} "
            f"(p99 {best['p99Us'] / 1000:.2f} ms); c={failing['c']} fails") in text
    assert f"{len(FOUND['refined'])} points added by bisection" in text


def test_compare_table_csv_and_plot_carry_the_slo(tmp_path):
    status = {"phase": "Ready", **summarized()}
    rows = compare.rows_of("run", status, compare.sweeps_of({"bench-grpc": RESULT}))
    row = rows[0]
    best, failing = FOUND["atSlo"], FOUND["firstFailing"]
    assert row.slo == "p99 <= 8 ms"
    assert row.infer_per_sec_at_slo == f"{best['inferPerSec']} (c={best['c']}; c={failing['c']} fails)"
    assert row.at_slo in row.sweep and len(row.sweep) == 3 + len(FOUND["refined"])
    assert "| p99 <= 8 ms |" in compare.markdown(rows)
    parsed = next(csv.DictReader(io.StringIO(compare.csv_text(rows))))
    assert parsed["infer_per_sec_at_slo"] == row.infer_per_sec_at_slo
    labels = compare.figure(rows).axes[0].get_legend_handles_labels()[1]
    assert "SLO p99 <= 8 ms" in labels
    assert f"run · grpc: at the SLO, c={best['c']}" in labels
    compare.plot(rows, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert compare.slo_p99_ms("p99 <= 8 ms, p95 <= 5 ms") == 8.0
    assert compare.slo_p99_ms("p95 <= 5 ms") is None


def test_a_long_sweep_with_repeats_and_an_slo_still_fits_the_termination_message():
    from mnist_jobs.bench import shrink
    row = {"c": 12345, "inferPerSec": "12345.6", "p50Us": 123456, "p95Us": 123456,
           "p99Us": 123456, "queueUs": 12345, "computeUs": 12345, "little": "FAIL(1.23)",
           "repeats": 10, "low": "12345.6", "high": "12345.6"}
    brief = {"c": 12345, "inferPerSec": "12345.6", "p99Us": 123456, "p95Us": 123456}
    found = {"slo": "p99 <= 100000 ms, p95 <= 100000 ms", "refined": [12345] * 6,
             "lastPassing": brief, "atSlo": brief,
             "firstFailing": {**brief, "why": "p99 over the limit; p95 over the limit"}}
    result = {"protocol": "grpc", "batchSize": 1, "concurrency": "1:100000:1", "repeats": 10,
              "littleTolerance": "0.20", "slo": found["slo"], "out": "/work/bench_tuned/grpc",
              "stage": "bench", "state": "Succeeded", "durationSeconds": 12345,
              "models": {m: {"rows": [dict(row) for _ in range(70)], "slo": found,
                             "best": {k: row[k] for k in ("c", "inferPerSec", "p99Us", "repeats",
                                                          "low", "high")},
                             "batchingGain": "12.34", "littleFailures": 70}
                         for m in ("mnist_onnx", "mnist_trt", "mnist_bls")}}
    small = shrink(result)
    assert len(json.dumps(small).encode()) < 4096
    assert all(e["slo"] == found and e["best"]["low"] for e in small["models"].values())


def rate_result_behind() -> dict:
    """A request-rate bench with an SLO (p99 <= 5 ms) whose first failing rate kept
    its p99 at 3.4 ms but fell behind (issue 27: 962/s on an H100)."""
    from mnist_jobs.lib.slo import Slo, refine

    def row(rate: int) -> dict:
        return {"rate": rate, "inferPerSec": f"{min(rate, 955):.1f}", "achieved": f"{rate:.1f}",
                "p99Us": 3400 if rate > 900 else 2100, "p95Us": 1500,
                "keptUp": "ok" if rate < 962 else "BEHIND(0.99, 4.1% late)"}
    rows = [row(r) for r in (100, 1100, 2100)]
    found = refine(rows, "rate", row, Slo(p99_ms=5))
    assert 962 <= found["firstFailing"]["rate"] < 1100     # bisected down towards it
    return {"protocol": "grpc", "loadMode": "requestRate", "requestRate": "100:2100:1000",
            "distribution": "poisson", "slo": found["slo"],
            "models": {"mnist_onnx": {"rows": rows, "best": rows[1], "behind": 2, "slo": found}}}


def test_a_failing_rate_under_the_p99_limit_says_the_client_fell_behind():
    point = summarized(rate_result_behind())["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    at = point["firstFailingAt"]
    assert at >= 962 and point["p99UsFirstFailing"] == 3400          # under the 5 ms limit
    assert point["firstFailingReason"] == "the client fell behind (BEHIND(0.99, 4.1% late))"
    assert f"{at}/s fails (p99 3.40 ms: the client fell behind" in display.slo_line(point)
    # over the limit on the real concurrency search
    real = summarized()["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert real["firstFailingReason"] == "p99 over the limit"


def test_a_result_from_before_the_reason_still_gets_one():
    old = rate_result_behind()
    del old["models"]["mnist_onnx"]["slo"]["firstFailing"]["why"]
    point = summarized(old)["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert point["firstFailingReason"] == "the client fell behind"
    assert summary.failing_reason("p99 <= 5 ms, p95 <= 1 ms", {"p99Us": 3400, "p95Us": 1500}) \
        == "p95 over the limit"
