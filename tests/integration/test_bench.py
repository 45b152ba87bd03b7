"""bench against the session's real tritonserver with real perf_analyzer."""
from __future__ import annotations

import csv
import json
import re

import pytest

from conftest import last_json, run_cli

pytestmark = pytest.mark.integration


def _bench(triton, out, *extra, protocol="grpc", models="mnist_onnx,mnist_bls",
           concurrency="1:9:8"):
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    return run_cli("bench", "--url", url, "--protocol", protocol, "--models", models,
                   "--batch-size", "1", "--concurrency", concurrency,
                   "--measurement-mode", "time_windows", "--measurement-interval-ms", "500",
                   "--stability-percentage", "50", "--out", str(out), *extra, timeout=300)


def test_bench_grpc_rows_parse_and_obey_littles_law(triton, tmp_path):
    res = _bench(triton, tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()[-1].encode()) < 4096
    result = last_json(res.stdout)
    progress = [l for l in res.stderr.splitlines() if l.startswith("bench: ")]
    assert len(progress) == 4                        # one line per model and concurrency
    full = json.loads((tmp_path / "bench.json").read_text())
    for model in ("mnist_onnx", "mnist_bls"):
        rows = full["rows"][model]
        assert [r["concurrency"] for r in rows] == [1, 9]
        for r in rows:
            assert r["throughput"] > 0
            assert 0 < r["p50_us"] <= r["p90_us"] <= r["p95_us"] <= r["p99_us"]
            assert r["server_compute_us"] > 0
            assert r["little_ok"], r                  # closed loop: c = X * W
        summary = result["models"][model]
        assert [r["c"] for r in summary["rows"]] == [1, 9]
        assert summary["littleFailures"] == 0
        with open(tmp_path / f"{model}-grpc.csv") as f:
            assert [int(r["Concurrency"]) for r in csv.DictReader(f)] == [1, 9]
    assert result["models"]["mnist_bls"]["composing"] == ["mnist_onnx"]


def test_bench_http(triton, tmp_path):
    res = _bench(triton, tmp_path, protocol="http", models="mnist_onnx", concurrency="2")
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "bench.json").read_text())["rows"]["mnist_onnx"][0]
    assert row["concurrency"] == 2 and row["little_ok"]


@pytest.mark.parametrize("args, flag", [
    ({"concurrency": "9:1:1"}, "--concurrency"),
    ({"concurrency": "1:9:0"}, "--concurrency"),
    ({"protocol": "tcp"}, "--protocol"),
    ({"models": "mnist_trt"}, "--models"),
])
def test_bench_bad_input(triton, tmp_path, args, flag):
    res = _bench(triton, tmp_path, **args)
    assert res.returncode == 2
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"bench: error: {flag}:"), res.stderr
    assert last_json(res.stdout)["reason"] == "InvalidInput"


def test_bench_result_names_the_environment_it_measured(triton, tmp_path):
    """Triton's version, each model's served config hash (the same whichever
    protocol read it) and perf_analyzer's version."""
    envs = {}
    for protocol in ("grpc", "http"):
        res = _bench(triton, tmp_path / protocol, protocol=protocol, models="mnist_onnx",
                     concurrency="1")
        assert res.returncode == 0, res.stderr
        envs[protocol] = last_json(res.stdout)["environment"]
    assert envs["grpc"] == envs["http"]
    env = envs["grpc"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", env["triton"]), env
    assert re.fullmatch(r"[0-9a-f]{12}", env["configs"]["mnist_onnx"]), env
    assert re.fullmatch(r"\d+\.\d+\.\d+ \(commit [0-9a-f]+\)", env["perfAnalyzer"]), env
