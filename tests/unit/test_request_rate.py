"""benchmark.perfAnalyzer.load.mode requestRate: a real open-loop bench result
(tests/unit/data/bench-rate-poisson-grpc.json: perf_analyzer 2.45, poisson, 100/s
and 20000/s against the pytriton tritonserver on this 2-core machine, where
20000/s is out of reach) as the status, the local summary and compare show it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_jobs import bench
from mnist_jobs.lib.stage_cli import InputError
from mnist_jobs.lib.slo import Slo
from mnist_operator.tools import compare
from mnist_operator.core import summary
from mnist_operator.local import display

RESULT = json.loads((Path(__file__).parent / "data" / "bench-rate-poisson-grpc.json").read_text())


def summarized() -> dict:
    return summary.summarize({"bench-grpc": {"stage": "bench", "state": "Succeeded", **RESULT}})


def test_status_reports_requested_and_achieved_at_best_and_points_behind():
    onnx = summarized()["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    row = RESULT["models"]["mnist_onnx"]["rows"][-1]
    assert onnx["requestRateAtBest"] == 20000 == row["rate"]
    assert onnx["achievedAtBest"] == row["achieved"] and float(row["achieved"]) < 0.9 * 20000
    assert onnx["behind"] == 1 and onnx["points"] == 2 and onnx["distribution"] == "poisson"
    assert "concurrencyAtBest" not in onnx and "batchingGain" not in onnx
    assert row["keptUp"].startswith("BEHIND(0.0") and "% late" in row["keptUp"]


def test_local_summary_shows_rate_and_achieved():
    lines = display.perf_table(summarized())
    onnx = next(l for l in lines if "mnist_onnx" in l)
    assert "20000/s poisson" in onnx and f"achieved {RESULT['models']['mnist_onnx']['best']['achieved']}" \
        in onnx and "1/2      behind" in onnx
    # the progress line of the finished step names the rate, not a concurrency it has not
    step = display.headline("bench", {"state": "Succeeded", **RESULT})
    assert f"mnist_onnx best {RESULT['models']['mnist_onnx']['best']['inferPerSec']} infer/s at " \
        "20000/s" in step


def test_compare_shows_the_rate_and_a_sweep_labelled_by_rate():
    status = {"phase": "Ready", **summarized()}
    sweeps = compare.sweeps_of({"bench-grpc": RESULT})
    row = next(r for r in compare.rows_of("s", status, sweeps) if r.model == "mnist_onnx")
    best = RESULT["models"]["mnist_onnx"]["best"]
    assert row.request_rate_at_best == f"20000 ({best['achieved']})"
    assert row.concurrency_at_best == "-" and row.little_failures == "-"
    assert [p.label for p in row.sweep] == ["100/s", "20000/s"]


@pytest.mark.parametrize("kwargs, flag", [
    ({"load_mode": "open"}, "--load-mode"),
    ({"load_mode": "requestRate", "distribution": "bursty", "request_rate": "1:2:1"},
     "--request-distribution"),
    ({"load_mode": "requestRate"}, "--request-rate"),
    ({"load_mode": "requestRate", "request_rate": "900:100:1"}, "--request-rate"),
    ({"slo": Slo(p99_ms=-1)}, "--slo-p99-ms"),
    ({"slo": Slo(p95_ms=-5)}, "--slo-p95-ms"),
])
def test_bad_load_and_slo_input_is_refused_naming_the_flag(tmp_path, kwargs, flag):
    with pytest.raises(InputError) as err:
        bench.run_bench(bench.BenchConfig("h:1", "grpc", ["mnist_onnx"], 1, "1", "time_windows", 500, 50, 10,
                        tmp_path, **kwargs))
    assert err.value.field == flag and "\n" not in str(err.value)
