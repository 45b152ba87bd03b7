"""benchmark.objective: what the closed loop maximizes (throughput, throughput at the
SLO, inferences per joule), from model-analyzer's CSVs to the Improved condition.

The GPU CSV below has the columns model-analyzer 1.58 writes into
results/metrics-model-gpu.csv (its DEFAULT_GPU_OUTPUT_FIELDS, one row per GPU and
measurement); a CPU run writes no such rows."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mnist_jobs import analyze, bench
from mnist_jobs.lib import stats, telemetry
from mnist_operator.api.spec import SpecError, parse_spec
from mnist_operator.core import summary
from mnist_operator.local import display

from test_repeats import bench_result, closed_loop_world
from test_telemetry import GPU_END, GPU_START

INFERENCE_CSV = """Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,Throughput (infer/sec),p99 Latency (ms)
mnist_pt,1,512,mnist_pt_config_default,1:GPU,64,Yes,12715.0,40.1
mnist_pt,1,512,mnist_pt_config_1,2:GPU,64,Yes,21200.0,24.0
mnist_pt,1,512,mnist_pt_config_2,7:GPU,64,Yes,41929.8,22.4
mnist_pt,1,512,mnist_pt_config_3,8:GPU,64,No,43000.0,61.0
"""
GPU_CSV = """Model,GPU UUID,Batch,Concurrency,Model Config Path,Instance Group,Satisfies Constraints,GPU Memory Usage (MB),GPU Utilization (%),GPU Power Usage (W)
mnist_pt,GPU-a,1,512,mnist_pt_config_default,1:GPU,Yes,900,10.0,120.0
mnist_pt,GPU-a,1,512,mnist_pt_config_1,2:GPU,Yes,1100,20.0,60.0
mnist_pt,GPU-b,1,512,mnist_pt_config_1,2:GPU,Yes,1100,20.0,50.0
mnist_pt,GPU-a,1,512,mnist_pt_config_2,7:GPU,Yes,3000,78.0,400.0
mnist_pt,GPU-a,1,512,mnist_pt_config_3,8:GPU,No,3200,80.0,10.0
"""


def analyzed(gpu_csv: str | None = GPU_CSV) -> dict:
    parsed = analyze.parse_inference_csv(INFERENCE_CSV)
    analyze.add_power(parsed, analyze.parse_gpu_csv(gpu_csv) if gpu_csv else {})
    return analyze.summarize(parsed)


DATA = Path(__file__).parent / "data"


def test_real_h100_csvs_rank_by_energy_as_the_run_did():
    """metrics-model-{inference,gpu}-h100.csv: model-analyzer 1.58 in remote mode on a
    lent H100 (examples/gpu-energy.yaml; docs/measured/h100-energy/). Power barely
    moved (126 to 130 W), so the most inferences per joule is the fastest config."""
    parsed = analyze.parse_inference_csv((DATA / "metrics-model-inference-h100.csv").read_text())
    power = analyze.parse_gpu_csv((DATA / "metrics-model-gpu-h100.csv").read_text())
    assert len(power) == len(parsed["mnist_pt"]["rows"]) == 10
    analyze.add_power(parsed, power)
    m = analyze.summarize(parsed)["mnist_pt"]
    assert (m["perJoule"]["bestConfig"], m["perJoule"]["powerW"], m["perJoule"]["inferPerJoule"]) \
        == ("mnist_pt_config_3", "130.3", "212.35")
    status = json.loads((Path(__file__).parents[2] / "docs" / "measured" / "h100-energy"
                         / "by-energy.status.json").read_text())
    assert status["benchmark"]["modelAnalyzer"]["mnist_pt"]["perJoule"]["inferPerJoule"] == "212.35"
    rows = list(csv.DictReader(io.StringIO((DATA / "metrics-model-gpu-h100.csv").read_text())))
    watts = {(r["Model Config Path"], r["Concurrency"]): float(r["GPU Power Usage (W)"]) for r in rows}
    by_hand = max((float(r["Throughput (infer/sec)"]) / watts[(r["Model Config Path"], r["Concurrency"])],
                   r["Model Config Path"]) for r in csv.DictReader(io.StringIO(
                       (DATA / "metrics-model-inference-h100.csv").read_text())))
    assert by_hand[1] == m["perJoule"]["bestConfig"]


def test_power_is_summed_over_the_gpus_of_one_measurement():
    power = analyze.parse_gpu_csv(GPU_CSV)
    assert power[("mnist_pt", "mnist_pt_config_1", 1, 512)] == 110.0
    assert power[("mnist_pt", "mnist_pt_config_2", 1, 512)] == 400.0


def test_the_most_inferences_per_joule_can_be_another_config_than_the_fastest():
    m = analyzed()["mnist_pt"]
    # the fastest meeting the SLO: 7 instances; per joule: 21200/110 = 192.7 beats
    # 41929.8/400 = 104.8; the 8-instance config (430 per joule) fails the SLO
    assert m["bestConfig"] == "mnist_pt_config_2" and m["inferPerJoule"] == "104.82"
    per = m["perJoule"]
    assert (per["bestConfig"], per["powerW"], per["inferPerJoule"]) == \
        ("mnist_pt_config_1", "110.0", "192.73")
    assert per["apply"] == {"instances": 2, "instanceKind": "gpu", "maxBatchSize": 64}
    rows = list(csv.DictReader(io.StringIO(INFERENCE_CSV)))
    best = max((r for r in rows if r["Satisfies Constraints"] == "Yes"),
               key=lambda r: float(r["Throughput (infer/sec)"]) / {
                   "mnist_pt_config_default": 120, "mnist_pt_config_1": 110,
                   "mnist_pt_config_2": 400}[r["Model Config Path"]])
    assert best["Model Config Path"] == per["bestConfig"]


def test_the_local_summary_names_the_best_per_joule_beside_the_fastest():
    status = summary.summarize({"analyze": {"stage": "analyze", "state": "Succeeded",
                                            "models": analyzed()}})
    text = "\n".join(display.analyzer_table(status))
    assert "most inferences per joule: mnist_pt_config_1 192.73 infer/J (21200.0 infer/s at " \
           "110.0 W, concurrency 512)" in text


def test_a_cpu_run_has_no_best_by_energy_and_says_why():
    m = analyzed(None)["mnist_pt"]
    assert "perJoule" not in m and "powerW" not in m
    assert m["perJouleNote"].startswith("model-analyzer measured no GPU power")


def test_throughput_at_the_slo_needs_an_slo_and_empty_means_by_the_slo():
    with pytest.raises(SpecError, match=r"spec\.benchmark\.objective: throughputAtSlo needs "
                                        r"benchmark\.slo"):
        parse_spec({"benchmark": {"objective": "throughputAtSlo"}})
    with pytest.raises(SpecError, match=r"spec\.benchmark\.objective"):
        parse_spec({"benchmark": {"objective": "joules"}})
    assert parse_spec({}).benchmark.closed_loop_objective == "throughput"
    assert parse_spec({"benchmark": {"slo": {"p99Ms": 10}}}).benchmark.closed_loop_objective \
        == "throughputAtSlo"
    assert parse_spec({"benchmark": {"slo": {"p99Ms": 10}, "objective": "inferencesPerJoule"}}) \
        .benchmark.closed_loop_objective == "inferencesPerJoule"


def with_energy(result: dict, per_joule: str, low: str, high: str) -> dict:
    result["models"]["mnist_onnx"]["best"].update(
        inferPerJoule=per_joule, inferPerJouleLow=low, inferPerJouleHigh=high)
    return result


def energy_world(before: dict, after: dict, analysis: dict):
    return closed_loop_world(before, after, analysis=analysis, objective="inferencesPerJoule")


ENERGY_ANALYSIS = {"models": {"mnist_onnx": {
    "bestConfig": "mnist_onnx_config_2", "throughput": "9000.0",
    "apply": {"instances": 4, "instanceKind": "gpu", "maxBatchSize": 64},
    "perJoule": {"bestConfig": "mnist_onnx_config_1", "inferPerJoule": "192.73",
                 "apply": {"instances": 2, "instanceKind": "gpu", "maxBatchSize": 64}}}}}


def test_the_energy_objective_applies_the_best_per_joule_and_judges_on_it():
    # faster after (6000 > 5000, intervals apart) but no more inferences per joule:
    # judged on the objective, the verdict is NoChange, not Improved
    before = with_energy(bench_result("grpc", "5000.0", "4900.0", "5100.0"), "150.0", "140.0", "160.0")
    after = with_energy(bench_result("grpc", "6000.0", "5800.0", "6200.0"), "155.0", "145.0", "165.0")
    w = energy_world(before, after, ENERGY_ANALYSIS)
    loop = w.status["benchmark"]["closedLoop"]
    assert loop["applied"]["mnist_onnx"]["config"] == "mnist_onnx_config_1"
    assert loop["applied"]["mnist_onnx"]["instances"] == 2
    assert (loop["objective"], loop["basis"], loop["unit"]) == \
        ("inferencesPerJoule", "inferences per joule at the best point", "infer/J")
    assert loop["before"] == {"mnist_onnx/grpc": "150.0"} and loop["after"] == {"mnist_onnx/grpc": "155.0"}
    cond = w.cond("Improved")
    assert (cond["status"], cond["reason"]) == ("False", "NoChange")
    assert "mnist_onnx/grpc 150.0 -> 155.0 infer/J (NoChange, 95 % intervals 140.0..160.0 -> " \
           "145.0..165.0)" in cond["message"]
    text = "\n".join(display.closed_loop_table(w.status))
    assert "compared (inferencesPerJoule): inferences per joule at the best point" in text
    assert "before infer/J" in text and "NoChange (95 % 140.0..160.0 -> 145.0..165.0)" in text
    repo_args = " ".join(w.job("repo-tuned")["spec"]["template"]["spec"]["containers"][0]["command"])
    assert "--override mnist_onnx:instance_kind=gpu,instances=2,max_batch_size=64" in repo_args


def test_the_energy_objective_says_improved_when_its_interval_lies_above():
    before = with_energy(bench_result("grpc", "5000.0", "4900.0", "5100.0"), "150.0", "140.0", "160.0")
    after = with_energy(bench_result("grpc", "4000.0", "3900.0", "4100.0"), "200.0", "190.0", "210.0")
    w = energy_world(before, after, ENERGY_ANALYSIS)
    cond = w.cond("Improved")
    assert (cond["status"], cond["reason"]) == ("True", "Improved")
    assert cond["message"].startswith("inferences per joule at the best point: every tuned "
                                      "interval lies above the one before")


def test_without_gpu_power_the_energy_objective_applies_nothing_and_says_why():
    no_power = {"models": {"mnist_onnx": {
        "bestConfig": "mnist_onnx_config_1", "throughput": "7084.3",
        "apply": {"instances": 2}, "perJouleNote": analyze.NO_POWER}}}
    run = {"bench-grpc": {"stage": "bench", "state": "Succeeded",
                          **bench_result("grpc", "5000.0")},
           "analyze": {"stage": "analyze", "state": "Succeeded", **no_power}}
    loop = summary.summarize(run, apply_best=True, objective="inferencesPerJoule")[
        "benchmark"]["closedLoop"]
    assert loop["state"] == "NothingToApply"
    assert "mnist_onnx: model-analyzer measured no GPU power" in loop["message"]
    # the same analysis by throughput applies its fastest config
    loop = summary.summarize(run, apply_best=True)["benchmark"]
    assert "closedLoop" not in loop or loop["closedLoop"].get("state") != "NothingToApply"


def test_each_repeat_gets_its_own_energy_span_and_the_point_an_interval():
    pages = iter([GPU_START, GPU_END])
    clock = iter(range(100))
    sampler = telemetry.Sampler("http://x/metrics", "mnist_onnx", 10_000_000,
                                fetch=lambda url: next(pages), clock=lambda: float(next(clock)))
    sampler.scrape()
    sampler.mark()
    runs = sampler.per_run()
    assert len(runs) == 1 and runs[0]["inferPerJoule"] == \
        telemetry.summarize(sampler.scrapes[:2], "mnist_onnx")["inferPerJoule"]
    s = stats.spread([100.0, 110.0, 120.0])
    assert bench.per_joule_interval([{"inferPerJoule": v} for v in (100.0, 110.0, 120.0)]) == \
        {"inferPerJouleLow": f"{s.low:.1f}", "inferPerJouleHigh": f"{s.high:.1f}"}
    # a run without the figure (no GPU) gives no interval
    assert bench.per_joule_interval([{"inferPerJoule": 100.0}, {}]) == {}
    assert bench.per_joule_interval([{"inferPerJoule": 100.0}]) == {}


def test_a_sweep_by_energy_judges_its_best_on_inferences_per_joule():
    from mnist_operator.core import sweep as C
    done = {"phase": "Measured", "repeats": 3}
    best = {**done, "name": "a", "inferPerSec": "5000.0", "low": "4900.0", "high": "5100.0",
            "inferPerJoule": "200.0", "inferPerJouleLow": "190.0", "inferPerJouleHigh": "210.0"}
    other = {**done, "name": "b", "inferPerSec": "5050.0", "low": "4950.0", "high": "5150.0",
             "inferPerJoule": "150.0", "inferPerJouleLow": "145.0", "inferPerJouleHigh": "155.0"}
    unmeasured = {**done, "name": "c", "inferPerSec": "100.0"}   # no GPU: no figure to judge
    by_energy = C.verdict_rows(best, [best, other, unmeasured], "inferencesPerJoule")
    assert [(v["point"], v["verdict"]) for v in by_energy] == [("b", "better")]
    assert by_energy[0]["ratio"] == "1.33"
    # the same points by throughput: no difference (their intervals overlap)
    by_speed = C.verdict_rows(best, [best, other], "throughput")
    assert [(v["point"], v["verdict"]) for v in by_speed] == [("b", "no difference")]
