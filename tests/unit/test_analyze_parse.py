"""model-analyzer's metrics-model-inference.csv -> best config per model.

tests/unit/data/metrics-model-inference.csv is real output of
``python -m mnist_jobs.analyze`` (model-analyzer 1.58, bounded search, local
launch mode, pytriton tritonserver, 2-core machine)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from mnist_jobs import analyze

TEXT = (Path(__file__).parent / "data" / "metrics-model-inference.csv").read_text()
ROWS = list(csv.DictReader(io.StringIO(TEXT)))


def test_best_and_default_from_real_csv():
    parsed = analyze.parse_inference_csv(TEXT)
    assert set(parsed) == {r["Model"] for r in ROWS}
    entry = parsed["mnist_onnx"]
    top = max(ROWS, key=lambda r: float(r["Throughput (infer/sec)"]))
    assert entry["best"]["config"] == top["Model Config Path"]
    assert entry["best"]["throughput"] == float(top["Throughput (infer/sec)"])
    assert entry["best"]["p99Ms"] == float(top["p99 Latency (ms)"])
    assert entry["best"]["instances"] == top["Instance Group"]
    assert entry["best"]["concurrency"] == int(top["Concurrency"])
    defaults = [r for r in ROWS if r["Model Config Path"].endswith("_config_default")]
    assert entry["default"]["throughput"] == max(float(r["Throughput (infer/sec)"]) for r in defaults)
    assert len(entry["rows"]) == len(ROWS)


def test_summary_is_compact_strings():
    parsed = analyze.parse_inference_csv(TEXT)
    s = analyze.summarize(parsed)["mnist_onnx"]
    b, d = parsed["mnist_onnx"]["best"], parsed["mnist_onnx"]["default"]
    assert s["bestOverDefault"] == f"{b['throughput'] / d['throughput']:.2f}"
    assert s["throughput"] == f"{b['throughput']:.1f}" and s["p99Ms"] == f"{b['p99Ms']:.2f}"
    assert s["configsMeasured"] == len({r["Model Config Path"] for r in ROWS})
    assert all(not isinstance(v, float) for v in s.values())


def test_header_only_and_missing_columns():
    with pytest.raises(ValueError, match="no rows"):
        analyze.parse_inference_csv(TEXT.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="Throughput"):
        analyze.parse_inference_csv("Model,Batch\nmnist_onnx,1\n")


def test_no_default_row_means_no_ratio():
    text = "\n".join([TEXT.splitlines()[0]] + [l for l in TEXT.splitlines()[1:]
                                               if "_config_default" not in l])
    s = analyze.summarize(analyze.parse_inference_csv(text))["mnist_onnx"]
    assert "bestOverDefault" not in s and "defaultThroughput" not in s


def test_bounded_config(tmp_path):
    cfg = analyze.build_config(analyze.AnalyzeArgs(
        tmp_path, ("mnist_onnx",), tmp_path / "out", max_concurrency=16, max_batch_size=64,
        max_instances=3, search="bounded", concurrency=None, instance_kind="cpu",
        interval_ms=1000, launch_mode="local", http_endpoint=None, grpc_endpoint=None,
        bls_composing=()))
    assert cfg["run_config_search_disable"] is True
    spec = cfg["profile_models"]["mnist_onnx"]
    assert spec["parameters"]["concurrency"] == [1, 16]
    assert spec["model_config_parameters"]["instance_group"] == [[{"count": [1, 2, 3], "kind": "KIND_CPU"}]]
    assert spec["model_config_parameters"]["max_batch_size"] == [64]
    assert Path(cfg["triton_server_path"]).name == "tritonserver"
    assert (Path(cfg["triton_server_flags"]["backend_directory"]) / "python" / "triton_python_backend_stub").is_file()
    assert "PYTHONPATH" in cfg["triton_server_environment"]


def test_remote_and_brute_config(tmp_path):
    cfg = analyze.build_config(analyze.AnalyzeArgs(
        tmp_path, ("mnist_onnx", "mnist_bls"), tmp_path / "out", max_concurrency=64,
        max_batch_size=128, max_instances=2, search="brute", concurrency=None,
        instance_kind="auto", interval_ms=1000, launch_mode="remote",
        http_endpoint="triton:8000", grpc_endpoint="triton:8001", bls_composing=("mnist_onnx",)))
    assert cfg["triton_launch_mode"] == "remote" and "triton_server_path" not in cfg
    assert cfg["triton_grpc_endpoint"] == "triton:8001"
    assert cfg["run_config_search_max_concurrency"] == 64
    assert cfg["run_config_search_max_instance_count"] == 2
    assert cfg["profile_models"] == "mnist_onnx,mnist_bls"
    assert cfg["bls_composing_models"] == "mnist_onnx"


def test_the_slo_becomes_constraints_model_analyzer_itself_reads(tmp_path, monkeypatch):
    """model-analyzer 1.58's own config parser takes the keys and applies them per model."""
    import sys
    import yaml
    from model_analyzer.cli.cli import CLI
    from model_analyzer.config.input.config_command_profile import ConfigCommandProfile
    (tmp_path / "out").mkdir()
    cfg = analyze.build_config(analyze.AnalyzeArgs(
        tmp_path, ("mnist_onnx",), tmp_path / "out", max_concurrency=16, max_batch_size=64,
        max_instances=2, search="bounded", concurrency=None, instance_kind="cpu",
        interval_ms=1000, launch_mode="local", http_endpoint=None, grpc_endpoint=None,
        bls_composing=(), slo_p99_ms=10, slo_p95_ms=5))
    (tmp_path / "ma.yaml").write_text(yaml.safe_dump(cfg))
    cli = CLI()
    cli.add_subcommand(cmd="profile", help="", config=ConfigCommandProfile())
    monkeypatch.setattr(sys, "argv", ["model-analyzer", "profile", "-f", str(tmp_path / "ma.yaml")])
    _, parsed = cli.parse()
    want = {"perf_latency_p99": {"max": 10}, "perf_latency_p95": {"max": 5}}
    assert [m.constraints().to_dict() for m in parsed.profile_models] == [want]
    assert parsed.objectives == {"perf_throughput": 10}
    plain = analyze.build_config(analyze.AnalyzeArgs(
        tmp_path, ("mnist_onnx",), tmp_path / "out", max_concurrency=16, max_batch_size=64,
        max_instances=2, search="bounded", concurrency=None, instance_kind="cpu",
        interval_ms=1000, launch_mode="local", http_endpoint=None, grpc_endpoint=None,
        bls_composing=()))
    assert "constraints" not in plain and "objectives" not in plain


def test_a_row_model_analyzer_marks_as_breaking_the_slo_is_never_best():
    """This machine's real CSV of a run with --slo-p99-ms 2: every row "No"."""
    text = (Path(__file__).parent / "data" / "analyze-slo" / "metrics-model-inference.csv").read_text()
    parsed = analyze.parse_inference_csv(text)
    assert parsed["mnist_onnx"]["best"] is None
    entry = analyze.summarize(parsed)["mnist_onnx"]
    assert entry == {"meetsSlo": "none", "configsMeasured": 3,
                     "note": "no config meets the SLO; the lowest p99 was 10.80 ms "
                             "(mnist_onnx_config_0 at concurrency 1)"}
    # one row meeting it: that row is best, though others are faster
    meets = text.replace("mnist_onnx,1,1,mnist_onnx_config_1,2:CPU,64,No,",
                         "mnist_onnx,1,1,mnist_onnx_config_1,2:CPU,64,Yes,")
    best = analyze.parse_inference_csv(meets)["mnist_onnx"]["best"]
    assert (best["config"], best["concurrency"], best["throughput"]) == ("mnist_onnx_config_1", 1, 310.7)
