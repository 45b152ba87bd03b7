"""The confirm stage for real: the repo stage writes a candidate repository, confirm
serves it from its own tritonserver (explicit model control, as the cluster's
sidecar), measures the candidate with real perf_analyzer and judges it by the bench
stage's SLO rule. Then the whole closed loop with an SLO in a local run: real
model-analyzer's candidate confirmed before it is served."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_jobs.lib import stats
from tests.harness.stage_flags import undocumented
from tests.integration.conftest import ROOT, last_json, run_cli

#: Beside the operator's flags for a resource with every default: a looser stability bound.
MEASURE = ("--stability-percentage", "50")


@pytest.fixture(scope="module")
def candidates(trained_model, tmp_path_factory) -> Path:
    """A candidate repository as repo-candidates writes it: mnist_onnx with two instances."""
    repo = tmp_path_factory.mktemp("confirm") / "model_repo_candidates"
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(repo),
                  "--models", "onnx,bls", "--cpu-only", "--override", "mnist_onnx:instances=2")
    assert res.returncode == 0, res.stderr[-2000:]
    return repo


def confirm(repo: Path, out: Path, *args: str) -> tuple[dict, str]:
    res = run_cli("confirm", "--model-repo", str(repo), "--out", str(out), *MEASURE, *args,
                  timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    return last_json(res.stdout), res.stderr


@pytest.mark.slow
def test_a_candidate_within_the_slo_is_confirmed_from_every_request(candidates, tmp_path):
    result, log = confirm(candidates, tmp_path / "out", "--candidates", "mnist_onnx:4",
                          "--measurement-interval-ms", "1000", "--slo-p99-ms", "1000",
                          "--slo-decide-within-s", "60")
    assert not undocumented(result)
    entry = result["models"]["mnist_onnx"]
    assert result["confirmed"] == ["mnist_onnx"] and entry["verdict"] == "meets"
    assert entry["meetsSlo"] is True and entry["c"] == 4 and "why" not in entry
    # the verdict comes from the interval over every request, not perf_analyzer's one p99
    low, high = entry["latency"]["p99"][1:]
    assert entry["latency"]["requests"] >= stats.min_samples(0.99) and high <= 1_000_000
    # what it measured is the candidate as the tuned Triton would serve it
    assert entry["instances"] == 2
    assert "loading mnist_bls" in log and "starting tritonserver" in log
    saved = json.loads((tmp_path / "out" / "confirm.json").read_text())
    assert saved["models"]["mnist_onnx"]["latency"] == entry["latency"]


@pytest.mark.slow
def test_too_few_requests_leave_a_candidate_undecided_and_unapplied(candidates, tmp_path):
    """The cluster's shape: a Triton started in explicit mode beside the stage (remote
    mode). 10 ms windows give too few requests for a p99 interval: undecided, and the
    closed loop applies nothing; measured further, the same candidate is decided."""
    from mnist_jobs.lib.triton import TritonServer, free_ports
    h, g, m = free_ports(3)
    with TritonServer(candidates, h, g, m, log_path=tmp_path / "triton.log",
                      extra_args=["--model-control-mode=explicit"]) as server:
        server.wait_ready(120)
        remote = ("--triton-launch-mode", "remote", "--triton-http-endpoint", server.http_url,
                  "--triton-grpc-endpoint", server.grpc_url,
                  "--triton-metrics-url", f"http://{server.metrics_url}/metrics",
                  "--candidates", "mnist_onnx:1", "--measurement-interval-ms", "10",
                  "--slo-p99-ms", "1000")
        once, _ = confirm(candidates, tmp_path / "once", *remote, "--slo-decide-within-s", "0")
        further, log = confirm(candidates, tmp_path / "further", *remote,
                               "--slo-decide-within-s", "120")
    entry = once["models"]["mnist_onnx"]
    assert once["confirmed"] == [] and entry["verdict"] == "undecided"
    assert entry["meetsSlo"] is False and "too few for a 95 % interval" in entry["why"]
    assert entry["latency"]["requests"] < stats.min_samples(0.99)
    decided = further["models"]["mnist_onnx"]
    assert further["confirmed"] == ["mnist_onnx"] and decided["measuredFurther"]["decided"]
    assert decided["latency"]["requests"] >= stats.min_samples(0.99)
    assert "mnist_onnx grpc c=1: measured further" in log


def test_confirm_refuses_a_repository_that_is_not_there(tmp_path):
    res = run_cli("confirm", "--model-repo", str(tmp_path / "none"), "--out", str(tmp_path),
                  "--candidates", "mnist_onnx:1", "--measurement-interval-ms", "100",
                  "--slo-p99-ms", "10", "--slo-decide-within-s", "0", *MEASURE)
    assert res.returncode == 2
    assert last_json(res.stdout)["message"].startswith("--model-repo: ")


#: The closed loop with an SLO on one machine. The served config waits up to 200 ms
#: for a batch of 32 that a concurrency of 8 never fills, so model-analyzer's configs
#: (100 µs) are far faster whatever the machine: its best is a real candidate.
SLOW_SERVED = {
    "apiVersion": "mnist.serving.dev/v1alpha1",
    "kind": "MnistServing",
    "metadata": {"name": "confirm"},
    "spec": {
        "training": {"epochs": 1, "learningRate": "0.01", "momentum": "0.9",
                     "dataset": {"source": "offline"}, "gpus": 0},
        "tensorrt": {"enabled": False},
        "serving": {"models": ["onnx"], "cpuOnly": True, "gpus": 0,
                    "dynamicBatching": {"preferredBatchSizes": [32],
                                        "maxQueueDelayMicroseconds": 200000}},
        "benchmark": {
            "slo": {"p99Ms": 1000, "decideWithinSeconds": 60},
            "perfAnalyzer": {"protocols": ["grpc"], "concurrency": {"start": 8, "end": 8, "step": 1},
                             "measurementIntervalMs": 1000, "stabilityPercentage": 50},
            "modelAnalyzer": {"enabled": True, "applyBest": True, "models": ["onnx"],
                              "search": "bounded", "maxConcurrency": 8, "maxInstances": 2},
        },
    },
}


@pytest.mark.slow
def test_a_local_closed_loop_confirms_its_candidate_before_serving_it(tmp_path):
    spec = tmp_path / "confirm.yaml"
    spec.write_text(yaml.safe_dump(copy.deepcopy(SLOW_SERVED)))
    work = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "run", str(spec),
                          "--workdir", str(work)], capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    status = json.loads((work / "status.json").read_text())
    names = list(status["stages"])
    assert names[names.index("analyze"):] == ["analyze", "repo-candidates", "confirm-candidates",
                                              "repo-tuned", "serve-tuned", "bench-tuned-grpc"]
    analyzed = status["stages"]["analyze"]["result"]["models"]["mnist_onnx"]
    checked = status["stages"]["confirm-candidates"]["result"]
    entry = checked["models"]["mnist_onnx"]
    # the candidate measured is model-analyzer's best, at the concurrency it chose
    assert analyzed["bestConfig"] != "mnist_onnx_config_default"
    assert entry["c"] == analyzed["concurrency"] and entry["verdict"] == "meets"
    assert entry["latency"]["p99"][2] <= 1_000_000
    loop = status["benchmark"]["closedLoop"]
    assert list(loop["applied"]) == ["mnist_onnx"]
    assert loop["confirmation"]["mnist_onnx"].startswith(f"meets at c={entry['c']}: ")
    # what the confirm stage measured is exactly what the tuned Triton then served
    served = status["stages"]["bench-tuned-grpc"]["result"]["environment"]["configs"]
    assert checked["environment"]["configs"]["mnist_onnx"] == served["mnist_onnx"]
    # the served config's 200 ms wait is gone from the tuned one
    tuned = (work / "model_repo_tuned" / "mnist_onnx" / "config.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 100" in tuned
    assert "confirmed mnist_onnx" in res.stdout and "meets at c=" in res.stdout
