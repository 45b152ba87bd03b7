"""summary.summarize on the step results of a real local run
(tests/unit/data/results-demo/*.json: `mnist-serving run examples/local.yaml`
on this 2-core machine, pytriton tritonserver, perf_analyzer 2.45,
model-analyzer 1.58)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mnist_operator.local import display
from mnist_operator.core.summary import summarize

DATA = Path(__file__).parent / "data" / "results-demo"


@pytest.fixture
def demo() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def scalars_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and scalars_only(v) for k, v in value.items())
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def test_model_part(demo):
    model = summarize(demo)["model"]
    assert model["accuracy"] == demo["train"]["accuracy"]
    assert float(model["accuracy"]) >= 0.93
    assert model["onnxMaxAbsDiff"] == demo["export"]["maxAbsDiff"]
    assert model["engine"].startswith("Skipped: TensorRT not available")
    assert model["served"] == "mnist_onnx,mnist_bls"
    assert model["blsDownstream"] == "mnist_onnx"


def test_perf_part_per_model_and_protocol(demo):
    perf = summarize(demo)["benchmark"]["perfAnalyzer"]
    assert set(perf) == {"mnist_onnx", "mnist_bls"}
    for model in perf:
        assert set(perf[model]) == {"grpc", "http"}
        for protocol, point in perf[model].items():
            rows = demo[f"bench-{protocol}"]["models"][model]["rows"]
            best = max(rows, key=lambda r: float(r["inferPerSec"]))
            lowest = min(rows, key=lambda r: r["c"])
            assert point["bestInferPerSec"] == best["inferPerSec"]
            assert point["p99UsAtBest"] == best["p99Us"]
            assert point["concurrencyAtBest"] == best["c"]
            gain = float(best["inferPerSec"]) / float(lowest["inferPerSec"])
            assert float(point["batchingGain"]) == pytest.approx(gain, abs=0.01)
            assert point["littleFailures"] == sum(r["little"] != "ok" for r in rows)
            assert point["points"] == len(rows)


def test_analyzer_and_client_parts(demo):
    out = summarize(demo)
    ma = out["benchmark"]["modelAnalyzer"]["mnist_onnx"]
    real = demo["analyze"]["models"]["mnist_onnx"]
    assert ma["bestConfig"] == real["bestConfig"]
    assert ma["throughput"] == real["throughput"]
    assert ma["bestOverDefault"] == real["bestOverDefault"]
    client = out["clientAccuracy"]
    assert client["mnist_bls"]["grpc"] == demo["client"]["accuracy"]["mnist_bls"]["grpc"]
    assert client["samples"] == 1000 and client["disagreements"] == 0


def test_only_ints_and_strings(demo):
    assert scalars_only(summarize(demo))


def test_shrunk_bench_result_keeps_verdicts(demo):
    # a long sweep's result lists rows as [c, inferPerSec, p99Us, little] and
    # may keep only the failing rows; the summary must still be right
    bench = copy.deepcopy(demo["bench-grpc"])
    entry = bench["models"]["mnist_onnx"]
    entry["rows"] = [[r["c"], r["inferPerSec"], r["p99Us"], "FAIL(1.31)"] for r in entry["rows"]]
    entry["littleFailures"] = len(entry["rows"])
    bench["rowFormat"] = ["c", "inferPerSec", "p99Us", "little"]
    bench["rowsNote"] = "only rows failing Little's law are listed"
    point = summarize({"bench-grpc": bench})["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert point["littleFailures"] == len(entry["rows"])
    assert point["bestInferPerSec"] == entry["best"]["inferPerSec"]
    assert bench["concurrency"] == "1:49:48"
    assert point["points"] == 2   # 1 and 49: counted from the range, not the kept rows


def test_failed_and_missing_steps_contribute_nothing(demo):
    failed = dict(demo)
    failed["bench-http"] = {"stage": "bench", "state": "Failed", "reason": "PerfAnalyzerFailed",
                            "message": "perf_analyzer failed at 1 point(s)"}
    failed["analyze"] = {"stage": "analyze", "state": "Skipped", "reason": "Disabled",
                         "message": "analyze is disabled in the spec"}
    del failed["client"]
    out = summarize(failed)
    assert set(out["benchmark"]["perfAnalyzer"]["mnist_onnx"]) == {"grpc"}
    assert out["benchmark"]["modelAnalyzer"] == {"state": "Skipped: analyze is disabled in the spec"}
    assert "clientAccuracy" not in out
    assert summarize({}) == {"model": {}, "benchmark": {}}


def test_the_gpu_that_trained_is_named():
    from mnist_operator.core import summary
    train = {"stage": "train", "state": "Succeeded", "accuracy": "0.9560", "device": "cuda",
             "gpu": "NVIDIA H200", "epochs": 6}
    assert summary.summarize({"train": train})["model"]["trainGpu"] == "NVIDIA H200"


def test_best_throughput_is_the_highest_point_over_models_and_protocols():
    import json
    from pathlib import Path
    from mnist_operator.core import summary
    data = Path(__file__).parent / "data" / "results-demo"
    recs = {p.stem: json.loads(p.read_text()) for p in data.glob("*.json")}
    bench = summary.summarize(recs)["benchmark"]
    points = [float(pt["bestInferPerSec"]) for per in bench["perfAnalyzer"].values() for pt in per.values()]
    assert float(bench["bestThroughput"]) == max(points) and isinstance(bench["bestThroughput"], str)
    assert "bestThroughput" not in summary.summarize({})["benchmark"]


def test_best_points_telemetry_reaches_the_status(demo):
    """GPU utilization, mean power and infer/J of the best point (strings, as
    every decimal in the status); "no GPU" in words where Triton had none; a
    bench run without telemetry adds nothing."""
    gpu, cpu = copy.deepcopy(demo["bench-grpc"]), copy.deepcopy(demo["bench-http"])
    gpu["models"]["mnist_onnx"]["best"].update(gpuUtil="0.35", powerW="180.0", inferPerJoule="10.0")
    cpu["models"]["mnist_onnx"]["best"]["gpu"] = "none"
    cpu["telemetry"] = "1 point(s) without telemetry; first: mnist_bls 1: unreachable: refused"
    perf = summarize({"bench-grpc": gpu, "bench-http": cpu})["benchmark"]["perfAnalyzer"]
    at = perf["mnist_onnx"]["grpc"]
    assert (at["gpuUtilAtBest"], at["powerWAtBest"], at["inferPerJouleAtBest"]) == \
        ("0.35", "180.0", "10.0")
    assert "telemetryAtBest" not in at
    assert perf["mnist_onnx"]["http"]["telemetryAtBest"] == "no GPU"
    assert "inferPerJouleAtBest" not in perf["mnist_onnx"]["http"]
    assert perf["mnist_bls"]["http"]["telemetryWarning"].endswith("unreachable: refused")
    plain = summarize(demo)["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert not {"gpuUtilAtBest", "powerWAtBest", "inferPerJouleAtBest", "telemetryAtBest",
                "telemetryWarning"} & set(plain)


def test_the_local_summary_says_the_telemetry_of_the_best_point(demo):
    gpu, cpu = copy.deepcopy(demo["bench-grpc"]), copy.deepcopy(demo["bench-http"])
    gpu["models"]["mnist_onnx"]["best"].update(gpuUtil="0.35", powerW="180.0", inferPerJoule="10.0")
    cpu["models"]["mnist_onnx"]["best"]["gpu"] = "none"
    line = display.headline("bench", gpu)
    assert line.endswith(f"; mnist_onnx best {gpu['models']['mnist_onnx']['best']['inferPerSec']} "
                         "infer/s at c=49 (GPU util 0.35, 180.0 W, 10.0 infer/J)")
    assert "mnist_onnx best" in display.headline("bench", cpu) and "(no GPU)" in \
        display.headline("bench", cpu)
    table = display.perf_table(summarize({"bench-grpc": gpu, "bench-http": cpu}))
    onnx = [l for l in table if l.split()[:1] == ["mnist_onnx"]]
    assert onnx[0].endswith("(GPU util 0.35, 180.0 W, 10.0 infer/J)") and onnx[1].endswith("(no GPU)")


# model-analyzer with an SLO (p99 <= 5 ms): the default config meets it at c=1 only,
# and is fastest at c=16 where it does not (metrics-model-inference.csv columns)
SLO_CSV = """Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,\
Satisfies Constraints,Throughput (infer/sec),p99 Latency (ms)
mnist_onnx,1,1,mnist_onnx_config_default,1:CPU,64,Yes,4000.0,1.0
mnist_onnx,1,16,mnist_onnx_config_default,1:CPU,64,No,11428.6,9.0
mnist_onnx,1,1,mnist_onnx_config_0,2:CPU,64,Yes,3000.0,1.2
mnist_onnx,1,16,mnist_onnx_config_0,2:CPU,64,No,12000.0,12.0
"""


def analyzed(csv_text: str) -> dict:
    from mnist_jobs import analyze
    models = analyze.summarize(analyze.parse_inference_csv(csv_text))
    return summarize({"analyze": {"stage": "analyze", "state": "Succeeded", "models": models}}
                     )["benchmark"]["modelAnalyzer"]["mnist_onnx"]


def test_the_best_config_is_never_below_the_default_with_an_slo():
    # issue 27: bestConfig mnist_onnx_config_default with bestOverDefault 0.35, because
    # the analyze result's default figure is the default's fastest point, SLO or not
    ma = analyzed(SLO_CSV)
    assert ma["bestConfig"] == "mnist_onnx_config_default" and ma["throughput"] == "4000.0"
    assert ma["bestOverDefault"] == "1.00" and ma["defaultThroughput"] == "4000.0"
    # another config best within the SLO: the default's figure is its best within it too
    faster = SLO_CSV.replace("mnist_onnx,1,1,mnist_onnx_config_0,2:CPU,64,Yes,3000.0",
                             "mnist_onnx,1,1,mnist_onnx_config_0,2:CPU,64,Yes,5000.0")
    ma = analyzed(faster)
    assert ma["bestConfig"] == "mnist_onnx_config_0"
    assert ma["bestOverDefault"] == "1.25" and ma["defaultThroughput"] == "4000.0"
    # an analyze result written before that (its default from a point outside the SLO)
    from mnist_jobs import analyze
    old = analyze.summarize(analyze.parse_inference_csv(faster))
    old["mnist_onnx"].update(defaultThroughput="11428.6", bestOverDefault="0.44")
    ma = summarize({"analyze": {"stage": "analyze", "state": "Succeeded", "models": old}}
                   )["benchmark"]["modelAnalyzer"]["mnist_onnx"]
    assert "bestOverDefault" not in ma and "defaultThroughput" not in ma
    assert ma["defaultNote"] == ("the default config's 11428.6 infer/s was at a point that does "
                                 "not meet the SLO; mnist_onnx_config_0 is the fastest point "
                                 "that does")
    text = "\n".join(display.analyzer_table({"benchmark": {"modelAnalyzer": {"mnist_onnx": ma}}}))
    assert "does not meet the SLO" in text
    # without an SLO nothing changes
    plain = SLO_CSV.replace(",No,", ",,").replace(",Yes,", ",,")
    ma = analyzed(plain)
    assert ma["bestConfig"] == "mnist_onnx_config_0" and ma["bestOverDefault"] == "1.05"
