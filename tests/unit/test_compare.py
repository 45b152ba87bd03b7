"""mnist-serving compare: table rows, markdown/CSV, the PNG, and the cluster list path.

The CPU source is a local run directory rebuilt from the real stage results in
tests/unit/data/results-demo (status.json from results.summarize, results/*.json
as the runner leaves them). The GPU source is a cluster MnistServing whose
stages carry those results plus a succeeded engine step and a TensorRT model in
the sweep (its numbers are fixture inputs, not measurements); a third source
stopped before benchmarking.
"""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest

from mnist_operator.tools import compare
from mnist_operator.tools.compare import Point, Unusable
from mnist_operator.core.summary import summarize

DATA = Path(__file__).parent / "data" / "results-demo"
H100 = "NVIDIA H100 80GB HBM3"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def demo() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def local_status(results: dict[str, dict], phase: str = "Ready") -> dict:
    """What the local runner writes to status.json for these step results."""
    stages = {step: {"state": r["state"], "fingerprint": r["fingerprint"],
                     "completionTime": r.get("completionTime", "")}
              for step, r in results.items()}
    return {"name": "demo", "phase": phase, "stages": stages, **summarize(results)}


def write_run(root: Path, results: dict[str, dict], phase: str = "Ready") -> Path:
    (root / "results").mkdir(parents=True)
    for step, result in results.items():
        (root / "results" / f"{step}.json").write_text(json.dumps(result))
    (root / "status.json").write_text(json.dumps(local_status(results, phase)))
    return root


def gpu_results(demo: dict[str, dict]) -> dict[str, dict]:
    """The demo results as a GPU cluster would report them: engine built, mnist_trt benched."""
    out = copy.deepcopy(demo)
    out["engine"] = {"stage": "engine", "state": "Succeeded", "durationSeconds": 41,
                     "precision": "fp16", "gpu": H100, "computeCapability": "9.0",
                     "fingerprint": "e1"}
    out["train"]["device"] = "cuda"
    out["bench-grpc"]["concurrency"] = "1:49:24"
    out["bench-grpc"]["models"]["mnist_trt"] = {
        "batchingGain": "9.60", "best": {"c": 49, "inferPerSec": "24000.0", "p99Us": 5200},
        "littleFailures": 1,
        "rows": [{"c": 1, "inferPerSec": "2500.0", "p99Us": 610, "little": "ok"},
                 {"c": 25, "inferPerSec": "19000.0", "p99Us": 3100, "little": "FAIL(1.31)"},
                 {"c": 49, "inferPerSec": "24000.0", "p99Us": 5200, "little": "ok"}]}
    return out


def cr(name: str, namespace: str, results: dict[str, dict], phase: str = "Ready",
       gpu_product: str = "") -> dict:
    """A MnistServing as the API returns it: stage results under stages.<step>.result."""
    stages = {step: {"state": r["state"], "fingerprint": r["fingerprint"],
                     "completionTime": r.get("completionTime", ""),
                     "result": {k: v for k, v in r.items()
                                if k not in ("stage", "state", "reason", "message")}}
              for step, r in results.items()}
    spec = {"scheduling": {"gpuProduct": gpu_product}} if gpu_product else {}
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
            "status": {"phase": phase, "stages": stages, **summarize(results)}}


def by_key(rows):
    return {(r.source, r.model, r.protocol): r for r in rows}


# ------------------------------------------------------------------- rows of one status

def test_rows_of_a_local_cpu_run(tmp_path, demo):
    rows = compare.load_local(write_run(tmp_path / "demo", demo))
    got = by_key(rows)
    source = str(tmp_path / "demo")
    assert set(got) == {(source, m, p) for m in ("mnist_bls", "mnist_onnx")
                        for p in ("grpc", "http")}
    onnx = got[(source, "mnist_onnx", "grpc")]
    assert onnx.device == "cpu (train)"
    assert onnx.best_infer_per_sec == "8686.1"
    assert onnx.p99_ms_at_best == "15.50"
    assert onnx.concurrency_at_best == 49
    assert onnx.batching_gain == "5.12"
    assert onnx.little_failures == "0/2"
    assert (onnx.analyzer_config, onnx.analyzer_gain) == ("mnist_onnx_config_0", "1.00")
    assert onnx.measured == demo["bench-grpc"]["completionTime"] == "2026-11-25T09:12:17Z"
    # the whole sweep from results/bench-grpc.json, lowest concurrency first
    assert onnx.sweep == (Point(1, 1696.4, 1685), Point(49, 8686.1, 15497))
    bls = got[(source, "mnist_bls", "http")]
    assert (bls.best_infer_per_sec, bls.analyzer_config, bls.analyzer_gain) == ("5239.0", "-", "-")


def test_gpu_util_and_infer_per_joule_columns_from_the_best_points_telemetry(demo):
    gpu, cpu = gpu_results(demo), copy.deepcopy(demo)
    gpu["bench-grpc"]["models"]["mnist_trt"]["best"].update(gpuUtil="0.83", powerW="212.4",
                                                            inferPerJoule="113.0")
    cpu["bench-grpc"]["models"]["mnist_onnx"]["best"]["gpu"] = "none"
    cpu["bench-http"]["models"]["mnist_onnx"]["best"]["telemetry"] = "unreachable: refused"
    rows = compare.rows_from_list({"items": [cr("h100", "ns", gpu), cr("cpu", "ns", cpu)]})[0]
    got = {(r.source, r.model, r.protocol): r for r in rows}
    trt = got[("ns/h100", "mnist_trt", "grpc")]
    assert (trt.gpu_util_at_best, trt.infer_per_joule_at_best) == ("0.83", "113.0")
    onnx = got[("ns/cpu", "mnist_onnx", "grpc")]
    assert (onnx.gpu_util_at_best, onnx.infer_per_joule_at_best) == ("no GPU", "no GPU")
    assert got[("ns/cpu", "mnist_onnx", "http")].infer_per_joule_at_best == "unreachable"
    assert got[("ns/cpu", "mnist_bls", "grpc")].gpu_util_at_best == "-"   # run without telemetry
    table = compare.markdown(compare.ordered(rows))
    assert "| GPU util at best | infer/J at best |" in table.splitlines()[0]
    assert "| 1/3 | 0.83 | 113.0 |" in table


def test_a_status_without_benchmark_is_unusable(tmp_path, demo):
    early = {k: v for k, v in demo.items() if not k.startswith(("bench", "analyze"))}
    run = write_run(tmp_path / "early", early, phase="Benchmarking")
    with pytest.raises(Unusable, match=r"status\.benchmark\.perfAnalyzer \(phase Benchmarking\)"):
        compare.load_local(run)
    with pytest.raises(Unusable, match="no status.json"):
        compare.load_local(tmp_path)
    with pytest.raises(Unusable, match="not an MnistServing status"):
        compare.load_local(DATA / "train.json")


def test_device_prefers_engine_gpu_then_gpu_product_then_train_device(demo):
    gpu = summarize(gpu_results(demo))
    assert compare.device_of(gpu, gpu_product="NVIDIA-A100") == H100
    cpu = summarize(demo)
    assert compare.device_of(cpu, gpu_product="NVIDIA-A100") == "NVIDIA-A100"
    assert compare.device_of(cpu) == "cpu (train)"
    assert compare.device_of({}) == "-"


def test_shrunk_rows_still_give_a_sweep_but_failing_rows_only_do_not(demo):
    result = copy.deepcopy(demo["bench-grpc"])
    for entry in result["models"].values():
        entry["rows"] = [[r["c"], r["inferPerSec"], r["p99Us"], r["little"]] for r in entry["rows"]]
    result["rowFormat"] = ["c", "inferPerSec", "p99Us", "little"]
    sweeps = compare.sweeps_of({"bench-grpc": result})
    assert sweeps[("mnist_bls", "grpc")] == [Point(1, 879.8, 2824), Point(49, 7415.3, 16959)]
    result["rowsNote"] = "only rows failing Little's law are listed"
    assert compare.sweeps_of({"bench-grpc": result}) == {}


def test_a_sweep_from_another_run_falls_back_to_the_best_point(demo):
    status = local_status(demo)
    stale = copy.deepcopy(demo["bench-grpc"])
    stale["models"]["mnist_onnx"]["rows"][1]["inferPerSec"] = "9999.0"
    rows = by_key(compare.rows_of("s", status, compare.sweeps_of({"bench-grpc": stale})))
    assert rows[("s", "mnist_onnx", "grpc")].sweep == (Point(49, 8686.1, 15497),)
    assert len(rows[("s", "mnist_bls", "grpc")].sweep) == 2  # its rows are still this run's


def test_local_rows_note_reads_the_full_sweep_from_bench_json(tmp_path, demo):
    run = write_run(tmp_path / "demo", demo)
    shrunk = json.loads((run / "results" / "bench-grpc.json").read_text())
    for entry in shrunk["models"].values():
        entry["rows"] = []
    shrunk["rowsNote"] = "only rows failing Little's law are listed; all rows in bench.json"
    (run / "results" / "bench-grpc.json").write_text(json.dumps(shrunk))
    (run / "bench" / "grpc").mkdir(parents=True)
    full = {"rows": {"mnist_onnx": [
        {"concurrency": 1, "throughput": 1696.42, "p99_us": 1685},
        {"concurrency": 25, "throughput": 7000.5, "p99_us": 8000},
        {"concurrency": 49, "throughput": 8686.06, "p99_us": 15497}]}}
    (run / "bench" / "grpc" / "bench.json").write_text(json.dumps(full))
    rows = by_key(compare.load_local(run))
    assert [p.load for p in rows[(str(run), "mnist_onnx", "grpc")].sweep] == [1, 25, 49]
    assert len(rows[(str(run), "mnist_bls", "grpc")].sweep) == 1  # not in bench.json: best only


def test_batching_gain_names_the_baseline_when_it_is_not_concurrency_1(demo):
    status = local_status(demo)
    status["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]["lowestConcurrency"] = 4
    rows = by_key(compare.rows_of("s", status))
    assert rows[("s", "mnist_onnx", "grpc")].batching_gain == "5.12 (vs c=4)"
    assert rows[("s", "mnist_onnx", "http")].batching_gain == "4.77"


# --------------------------------------------------------------------------- cluster

def test_rows_from_a_cluster_list(demo):
    body = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServingList", "items": [
        cr("h100", "team-a", gpu_results(demo), gpu_product="NVIDIA-H100-80GB-HBM3"),
        cr("pinned", "team-b", demo, gpu_product="NVIDIA-L4"),
        cr("young", "team-a", {k: demo[k] for k in ("train", "export")}, phase="Exporting"),
    ]}
    rows, warnings = compare.rows_from_list(body, context="gpu-west")
    got = by_key(rows)
    trt = got[("gpu-west:team-a/h100", "mnist_trt", "grpc")]
    assert trt.device == H100
    assert (trt.best_infer_per_sec, trt.p99_ms_at_best, trt.concurrency_at_best) == \
        ("24000.0", "5.20", 49)
    assert (trt.batching_gain, trt.little_failures) == ("9.60", "1/3")
    assert [p.load for p in trt.sweep] == [1, 25, 49]  # from stages.bench-grpc.result
    assert trt.measured == demo["bench-grpc"]["completionTime"]
    assert got[("gpu-west:team-b/pinned", "mnist_onnx", "http")].measured == \
        demo["bench-http"]["completionTime"]
    assert got[("gpu-west:team-b/pinned", "mnist_onnx", "http")].device == "NVIDIA-L4"
    assert got[("gpu-west:team-b/pinned", "mnist_onnx", "http")].analyzer_config == \
        "mnist_onnx_config_0"
    assert not any(r.source.endswith("/young") for r in rows)
    assert warnings == ["gpu-west:team-a/young: no benchmark results in "
                        "status.benchmark.perfAnalyzer (phase Exporting); skipped"]


def test_stage_results_only_of_succeeded_steps():
    status = {"stages": {"bench-grpc": {"state": "Failed", "result": {"models": {}}},
                         "bench-http": {"state": "Succeeded", "result": {"protocol": "http"}},
                         "train": {"state": "Running"}}}
    assert compare.stage_results(status) == {"bench-http": {"protocol": "http"}}


# -------------------------------------------------------------------------- outputs

def test_markdown_and_csv_hold_every_row_in_model_protocol_order(tmp_path, demo):
    rows = compare.load_local(write_run(tmp_path / "cpu", demo))
    rows += compare.rows_from_list({"items": [cr("h100", "ns", gpu_results(demo))]}, "ctx")[0]
    rows = compare.ordered(rows)
    assert [(r.model, r.protocol) for r in rows] == sorted((r.model, r.protocol) for r in rows)
    md = compare.markdown(rows).splitlines()
    assert md[0].startswith("| source | model | protocol | GPU / device | best infer/s |")
    assert set(md[1]) <= set("|-") and md[1].count("---") == len(compare.COLUMNS)
    assert len(md) == 2 + len(rows)
    assert f"| ctx:ns/h100 | mnist_trt | grpc | {H100} | 24000.0 | 5.20 | - | 49 | - | 9.60 | 1/3 |" \
        in "\n".join(md)
    parsed = list(csv.DictReader(io.StringIO(compare.csv_text(rows))))
    assert len(parsed) == len(rows)
    onnx = next(r for r in parsed if r["source"] == str(tmp_path / "cpu")
                and r["model"] == "mnist_onnx" and r["protocol"] == "http")
    assert onnx["best_infer_per_sec"] == "8411.2" and onnx["p99_ms_at_best"] == "18.82"
    assert onnx["device"] == "cpu (train)" and onnx["analyzer_gain"] == "1.00"
    assert onnx["measured"] == demo["bench-http"]["completionTime"]


def test_plot_writes_a_png(tmp_path, demo):
    rows = compare.load_local(write_run(tmp_path / "cpu", demo))
    rows += compare.rows_from_list({"items": [cr("h100", "ns", gpu_results(demo))]}, "ctx")[0]
    out = tmp_path / "plots" / "compare.png"
    compare.plot(compare.ordered(rows), out)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_replace_section_keeps_other_sections():
    text = "# Benchmarks\n\n## Serving\n\nnumbers\n\n## Comparison\n\nold\n\n## Later\n\nkept\n"
    new = compare.replace_section(text, "## Comparison\n\nnew table\n")
    assert new == "# Benchmarks\n\n## Serving\n\nnumbers\n\n## Comparison\n\nnew table\n\n" \
                  "## Later\n\nkept\n"
    assert compare.replace_section("# Benchmarks\n", "## Comparison\n\nx\n") == \
        "# Benchmarks\n\n## Comparison\n\nx\n"


# ---------------------------------------------------------------------------- main()

def test_main_compares_good_sources_and_warns_about_bad_ones(tmp_path, demo, capsys):
    cpu = write_run(tmp_path / "runs" / "cpu", demo)
    gpu = write_run(tmp_path / "runs" / "gpu", gpu_results(demo))
    early = write_run(tmp_path / "runs" / "early", {k: demo[k] for k in ("train",)},
                      phase="Exporting")
    missing = tmp_path / "runs" / "nothing"
    missing.mkdir()
    out, docs = tmp_path / "out", tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Serving\n\nkeep me\n")
    code = compare.main([str(cpu), str(gpu / "status.json"), str(early), str(missing),
                         "--out", str(out), "--docs", str(docs)])
    stdout, stderr = capsys.readouterr()
    assert code == 0
    table, legend = stdout.split("\n\n")
    assert table.count("\n") + 1 == 2 + 4 + 5  # header, separator, 4 CPU rows, 5 GPU rows
    # the environment legend: one line per fingerprint, the two machines apart
    assert legend.count("\n") == 2 + 2 and "| cpu (train) |" in legend and f"| {H100} |" in legend
    assert f"| {gpu} | mnist_trt | grpc | {H100} |" in stdout
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"mnist-serving compare: warning: {early}: no benchmark results in "
        "status.benchmark.perfAnalyzer (phase Exporting); skipped",
        f"mnist-serving compare: warning: {missing}: no status.json here; skipped"]
    assert len(list(csv.reader((out / "compare.csv").open()))) == 1 + 9
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    text = docs.read_text()
    assert "## Serving\n\nkeep me" in text and "## Comparison" in text
    assert f"| {gpu} | mnist_trt | grpc |" in text and "mnist-serving compare " in text


def test_main_exits_1_when_nothing_is_usable(tmp_path, capsys):
    code = compare.main([str(tmp_path / "absent"), str(DATA / "bench-grpc.json"),
                         "--out", str(tmp_path / "out")])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and stdout == ""
    lines = stderr.splitlines()
    assert lines[0].endswith(f"{tmp_path / 'absent'}: no status.json here; skipped")
    assert lines[1].endswith(f"{DATA / 'bench-grpc.json'}: not an MnistServing status "
                             "(no phase, stages or benchmark); skipped")
    assert lines[2] == ("mnist-serving compare: error: nothing to compare "
                        "(no source had benchmark results)")
    assert not (tmp_path / "out").exists()


def test_cluster_flags_need_cluster(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["-A"])
    assert exc.value.code == 2
    assert "need --cluster" in capsys.readouterr().err


def test_an_unreachable_cluster_is_one_warning_line(tmp_path, demo, capsys):
    cpu = write_run(tmp_path / "cpu", demo)
    code = compare.main([str(cpu), "--cluster", "--kubeconfig", str(tmp_path / "no-such-config"),
                         "--out", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 0
    cluster_lines = [line for line in stderr.splitlines() if "--cluster" in line]
    assert len(cluster_lines) == 1 and cluster_lines[0].endswith("; skipped")
    assert "no-such-config" in cluster_lines[0]


def test_device_prefers_the_engine_gpu_then_the_pinned_product_then_the_training_gpu():
    from mnist_operator.tools.compare import device_of
    assert device_of({"model": {"engineGpu": "NVIDIA H100", "trainGpu": "NVIDIA A10"}}) == "NVIDIA H100"
    assert device_of({"model": {"trainGpu": "NVIDIA H200"}}, "NVIDIA-L4") == "NVIDIA-L4"
    assert device_of({"model": {"trainGpu": "NVIDIA H200", "trainDevice": "cuda"}}) == "NVIDIA H200 (train)"
    assert device_of({"model": {"trainDevice": "cpu"}}) == "cpu (train)"


# ------------------------------------------------------------------------ --baseline

def with_repeats(status: dict, model: str, protocol: str, infer: str, repeats: int = 3,
                 low: str | None = None, high: str | None = None) -> dict:
    """``status`` with one best point replaced: its throughput and, with repeats >= 2,
    the 95 % interval of its mean, as summarize writes them."""
    point = status["benchmark"]["perfAnalyzer"][model][protocol]
    point["bestInferPerSec"] = infer
    for key in ("repeats", "lowAtBest", "highAtBest"):
        point.pop(key, None)
    if low is not None:
        point.update(repeats=repeats, lowAtBest=low, highAtBest=high)
    return status


def base_and_new(demo) -> tuple[dict, dict]:
    """Two hand-made statuses of the demo: the baseline with 3 repeats everywhere, the
    new run faster (onnx/grpc), the same (onnx/http), slower (bls/http) with 3 repeats,
    and measured once (bls/grpc)."""
    base, new = local_status(demo), local_status(demo)
    for model, protocol, infer, low, high in (
            ("mnist_onnx", "grpc", "8686.1", "8600.0", "8800.0"),
            ("mnist_onnx", "http", "8411.2", "8300.0", "8500.0"),
            ("mnist_bls", "grpc", "7415.3", "7300.0", "7500.0"),
            ("mnist_bls", "http", "5239.0", "5100.0", "5300.0")):
        with_repeats(base, model, protocol, infer, 3, low, high)
    with_repeats(new, "mnist_onnx", "grpc", "9500.0", 3, "9400.0", "9600.0")
    with_repeats(new, "mnist_onnx", "http", "8400.0", 3, "8000.0", "8800.0")
    with_repeats(new, "mnist_bls", "http", "4000.0", 3, "3900.0", "4100.0")
    with_repeats(new, "mnist_bls", "grpc", "7000.0")          # repeats 1: no interval
    return base, new


def test_rows_carry_the_best_points_repeats_and_interval(demo):
    base, new = base_and_new(demo)
    rows = by_key(compare.rows_of("b", base) + compare.rows_of("n", new))
    onnx = rows[("b", "mnist_onnx", "grpc")]
    assert (onnx.repeats, onnx.low_at_best, onnx.high_at_best) == ("3", "8600.0", "8800.0")
    once = rows[("n", "mnist_bls", "grpc")]
    assert (once.repeats, once.low_at_best, once.high_at_best) == ("-", "-", "-")


def test_baseline_ratio_interval_and_verdict_per_model_and_protocol(demo):
    base, new = base_and_new(demo)
    rows = compare.rows_of("runs/base", base) + compare.rows_of("runs/new", new)
    got = {k: (r.vs_baseline, r.verdict)
           for k, r in by_key(compare.with_baseline(rows, "runs/base")).items()}
    assert got[("runs/new", "mnist_onnx", "grpc")] == ("1.09 [1.08, 1.10]", "better")
    assert got[("runs/new", "mnist_onnx", "http")] == ("1.00 [0.96, 1.04]", "no difference")
    assert got[("runs/new", "mnist_bls", "http")] == ("0.77 [0.75, 0.79]", "worse")
    # repeats 1 against repeats 3: the ratio of the values, no interval, no verdict
    assert got[("runs/new", "mnist_bls", "grpc")] == ("0.94", "no interval")
    assert {got[("runs/base", m, p)] for m in ("mnist_onnx", "mnist_bls")
            for p in ("grpc", "http")} == {("1.00", "baseline")}
    # the other way round: the new run as the baseline
    flipped = by_key(compare.with_baseline(rows, "runs/new"))
    assert (flipped[("runs/base", "mnist_bls", "http")].vs_baseline,
            flipped[("runs/base", "mnist_bls", "http")].verdict) == ("1.30 [1.27, 1.33]", "better")


def test_baseline_unbounded_when_its_interval_reaches_zero(demo):
    base, new = local_status(demo), local_status(demo)
    with_repeats(base, "mnist_onnx", "grpc", "500.0", 2, "-100.0", "1300.0")
    with_repeats(new, "mnist_onnx", "grpc", "4000.0", 2, "3900.0", "4100.0")
    rows = by_key(compare.with_baseline(compare.rows_of("b", base) + compare.rows_of("n", new),
                                        "b"))
    assert (rows[("n", "mnist_onnx", "grpc")].vs_baseline,
            rows[("n", "mnist_onnx", "grpc")].verdict) == ("6.67", "unbounded")


def test_a_model_the_baseline_lacks_gets_no_ratio(demo):
    body = {"items": [cr("cpu", "team-a", demo), cr("h100", "team-b", gpu_results(demo))]}
    rows, _ = compare.rows_from_list(body, context="west")
    baseline = compare.baseline_source("team-a/cpu", (r.source for r in rows))
    assert baseline == "west:team-a/cpu"
    got = by_key(compare.with_baseline(rows, baseline))
    trt = got[("west:team-b/h100", "mnist_trt", "grpc")]
    assert (trt.vs_baseline, trt.verdict) == ("-", "-")
    onnx = got[("west:team-b/h100", "mnist_onnx", "grpc")]   # the same numbers, measured once
    assert (onnx.vs_baseline, onnx.verdict) == ("1.00", "no interval")


def test_baseline_source_names_a_run_directory_or_a_resource():
    sources = ["runs/a", "runs/b", "ctx:team-a/h100"]
    assert compare.baseline_source("runs/b", sources) == "runs/b"
    assert compare.baseline_source("runs/b/", sources) == "runs/b"
    assert compare.baseline_source("runs/b/status.json", sources) == "runs/b"
    assert compare.baseline_source("team-a/h100", sources) == "ctx:team-a/h100"
    assert compare.baseline_source("ctx:team-a/h100", sources) == "ctx:team-a/h100"
    with pytest.raises(Unusable) as exc:
        compare.baseline_source("runs/c", sources)
    assert str(exc.value) == ("--baseline runs/c is none of the sources compared; "
                              "available: runs/a, runs/b, ctx:team-a/h100")
    with pytest.raises(Unusable, match=r"^--baseline team-a/h100 names several sources "
                                       r"\(a:team-a/h100, b:team-a/h100\); give one of: "):
        compare.baseline_source("team-a/h100", ["a:team-a/h100", "b:team-a/h100"])


def test_baseline_columns_follow_best_throughput_and_are_absent_without_it(demo):
    base, new = base_and_new(demo)
    rows = compare.ordered(compare.with_baseline(
        compare.rows_of("runs/base", base) + compare.rows_of("runs/new", new), "runs/base"))
    assert "vs baseline" not in compare.markdown(rows) and "vs_baseline" not in \
        compare.csv_text(rows)
    md = compare.markdown(rows, baseline=True).splitlines()
    assert md[0].startswith("| source | model | protocol | GPU / device | best infer/s | "
                            "vs baseline | verdict | p99 ms at best |")
    assert md[1].count("---") == len(compare.COLUMNS) + 2
    assert "| runs/new | mnist_onnx | grpc | cpu (train) | 9500.0 | 1.09 [1.08, 1.10] | better |" \
        in "\n".join(md)
    parsed = list(csv.DictReader(io.StringIO(compare.csv_text(rows, baseline=True))))
    worse = next(r for r in parsed if (r["source"], r["model"], r["protocol"])
                 == ("runs/new", "mnist_bls", "http"))
    assert (worse["vs_baseline"], worse["verdict"]) == ("0.77 [0.75, 0.79]", "worse")
    assert list(parsed[0])[:7] == ["source", "model", "protocol", "device", "best_infer_per_sec",
                                   "vs_baseline", "verdict"]


def test_main_with_baseline_on_two_local_runs(tmp_path, demo, capsys):
    base, new = base_and_new(demo)
    runs = {}
    for name, status in (("base", base), ("new", new)):
        runs[name] = write_run(tmp_path / "runs" / name, demo)
        (runs[name] / "status.json").write_text(json.dumps(status))
    out = tmp_path / "out"
    code = compare.main([str(runs["base"]), str(runs["new"]), "--baseline",
                         str(runs["base"] / "status.json"), "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    table, note, legend = stdout.split("\n\n")
    assert table.count("\n") + 1 == 2 + 8
    assert f"| {runs['new']} | mnist_onnx | grpc | cpu (train) | 9500.0 | 1.09 [1.08, 1.10] " \
           "| better |" in table
    assert f"| {runs['base']} | mnist_bls | http | cpu (train) | 5239.0 | 1.00 | baseline |" \
        in table
    assert note == (f"vs baseline: ratio of mean throughputs to {runs['base']}, 95 % interval "
                    "(Fieller, Welch df), from each point's repeats; no interval with one repeat.")
    assert legend.startswith("| environment |")
    parsed = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["verdict"] for r in parsed if r["source"] == str(runs["new"])] == \
        ["no interval", "worse", "better", "no difference"]   # bls grpc/http, onnx grpc/http


def test_main_refuses_a_baseline_that_is_no_source(tmp_path, demo, capsys):
    run = write_run(tmp_path / "runs" / "demo", demo)
    out = tmp_path / "out"
    code = compare.main([str(run), "--baseline", "runs/other", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.splitlines() == [
        f"mnist-serving compare: error: --baseline runs/other is none of the sources "
        f"compared; available: {run}"]
    assert not out.exists()


def test_rows_carry_the_best_points_p99_from_every_request_with_its_interval(demo):
    demo["bench-grpc"]["models"]["mnist_onnx"]["best"]["latency"] = {
        "requests": 52340, "p50": [9800, 9790, 9811], "p95": [14020, 13990, 14050],
        "p99": [15512, 15470, 15561]}
    demo["bench-grpc"]["models"]["mnist_bls"]["best"]["latency"] = {
        "requests": 120, "p50": [9800, 9700, 9900], "p95": [14020, None, None],
        "p99": [15512, None, None]}
    rows = by_key(compare.rows_of("s", local_status(demo)))
    assert rows[("s", "mnist_onnx", "grpc")].p99_interval_at_best == "15.51 [15.47, 15.56] (52,340)"
    assert rows[("s", "mnist_bls", "grpc")].p99_interval_at_best == \
        "15.51 [too few requests] (120)"
    assert rows[("s", "mnist_onnx", "http")].p99_interval_at_best == "-"   # no request records
    header = dict(compare.COLUMNS)["p99_interval_at_best"]
    assert header == "p99 ms from every request [95 % interval] (requests)"
