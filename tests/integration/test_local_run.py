"""`mnist-serving run` end to end on a tiny spec: real train, export, engine
(skipped: no TensorRT here), repo, tritonserver, client, perf_analyzer; then
a rerun that reuses every step, and Ctrl-C in the middle of a forced rerun
leaving no process behind."""
from __future__ import annotations

import json
import platform
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.harness.stage_flags import undocumented

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "apiVersion": "mnist.serving.dev/v1alpha1",
    "kind": "MnistServing",
    "metadata": {"name": "tiny"},
    "spec": {
        "training": {"epochs": 1, "learningRate": "0.01", "momentum": "0.9",
                     "dataset": {"source": "offline"}, "gpus": 0},
        "serving": {"models": ["onnx", "bls"], "cpuOnly": True, "gpus": 0},
        "benchmark": {
            "perfAnalyzer": {"protocols": ["grpc"], "concurrency": {"start": 4, "end": 4, "step": 1},
                             "measurementIntervalMs": 500, "stabilityPercentage": 50},
            "modelAnalyzer": {"enabled": False},
        },
    },
}


def mnist_serving(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "run", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


@pytest.mark.integration
def test_run_status_rerun_reuse_and_interrupt(tmp_path):
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    work = tmp_path / "work"

    first = mnist_serving(str(spec_file), "--workdir", str(work))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    status = json.loads((work / "status.json").read_text())
    assert f"status: {work / 'status.json'}" in first.stdout
    assert status["phase"] == "Ready"
    stages = status["stages"]
    assert list(stages) == ["train", "export", "engine", "repo", "serve", "client", "bench-grpc",
                            "analyze"]
    assert {n: s["state"] for n, s in stages.items()} == {
        "train": "Succeeded", "export": "Succeeded", "engine": "Skipped", "repo": "Succeeded",
        "serve": "Succeeded", "client": "Succeeded", "bench-grpc": "Succeeded",
        "analyze": "Skipped"}
    assert stages["engine"]["reason"] == "TensorRTNotAvailable"
    assert stages["analyze"]["reason"] == "Disabled"
    assert all(s["run"] in ("ran", "disabled") for s in stages.values())
    model = status["model"]
    assert float(model["accuracy"]) > 0.8          # one epoch on 4,000 digits
    assert model["engine"].startswith("Skipped: TensorRT not available")
    client = status["clientAccuracy"]
    for name in ("mnist_onnx", "mnist_bls"):
        assert client[name]["grpc"] == client[name]["http"] == model["accuracy"]
    # the accuracy guard: Triton's models against PyTorch's held-out accuracy
    assert (client["pytorch"], client["tolerance"]) == (model["accuracy"], "0.01")
    assert "belowTolerance" not in client
    guard = next(c for c in status["conditions"] if c["type"] == "AccuracyWithinTolerance")
    assert (guard["status"], guard["reason"]) == ("True", "WithinTolerance")
    assert "accuracy guard: True (WithinTolerance)" in first.stdout
    perf = status["benchmark"]["perfAnalyzer"]
    for name in ("mnist_onnx", "mnist_bls"):
        point = perf[name]["grpc"]
        assert point["concurrencyAtBest"] == 4 and point["points"] == 1
        assert float(point["bestInferPerSec"]) > 0 and point["p99UsAtBest"] > 0
        # the local Triton's own metrics port reached the bench step: no GPU here, said in words
        assert point["telemetryAtBest"] == "no GPU" and "inferPerJouleAtBest" not in point
    assert "mnist_onnx best" in first.stdout and "infer/s at c=4 (no GPU)" in first.stdout
    # the environment fingerprint: this machine, the real tools' own versions
    bench_env = stages["bench-grpc"]["result"]["environment"]
    assert stages["bench-grpc"]["environment"] == {"node": platform.node()}
    assert set(bench_env["configs"]) == {"mnist_onnx", "mnist_bls"}
    assert bench_env["triton"] != "unknown" and bench_env["perfAnalyzer"] != "unknown"
    assert f"bench-grpc: Triton {bench_env['triton']}, perf_analyzer" in first.stdout
    for step in stages:
        recorded = json.loads((work / "results" / f"{step}.json").read_text())
        assert recorded["fingerprint"] == stages[step]["fingerprint"]
        assert undocumented(recorded) == set(), f"{step}: fields docs/CONTRACT.md does not name"
    assert processes_mentioning(str(work)) == []   # Triton stopped at the end

    second = mnist_serving(str(spec_file), "--workdir", str(work), timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "to run: none (all reused)" in second.stdout
    again = json.loads((work / "status.json").read_text())
    assert {s["run"] for s in again["stages"].values()} == {"reused"}
    assert again["benchmark"] == status["benchmark"]

    # Ctrl-C while perf_analyzer runs: exit 130, the step recorded as
    # interrupted, Triton and every stage process gone
    proc = subprocess.Popen([sys.executable, "-m", "mnist_operator.tools.cli", "run", str(spec_file),
                             "--workdir", str(work), "--force", "bench-grpc"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "-> bench-grpc" in line:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted: stopping Triton" in rest
    final = json.loads((work / "status.json").read_text())
    assert final["stages"]["bench-grpc"]["reason"] == "Interrupted"
    assert processes_mentioning(str(work)) == []


@pytest.mark.integration
def test_a_local_sweep_runs_its_points_for_real_and_ranks_them(tmp_path):
    """Two points (max batch 64 and 128) of the tiny spec, one after another, real
    stages and a real Triton each: the sweep's status ranks them, and a rerun reuses
    every step of both."""
    sweep = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServingSweep",
             "metadata": {"name": "tiny-sweep"},
             "spec": {"template": TINY["spec"],
                      "axes": [{"field": "serving.maxBatchSize", "values": [64, 128]}]}}
    sweep["spec"]["template"] = {**TINY["spec"], "serving": {
        **TINY["spec"]["serving"], "dynamicBatching": {"preferredBatchSizes": [32]}}}
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(sweep))
    work = tmp_path / "work"
    first = mnist_serving(str(spec_file), "--workdir", str(work), timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    status = json.loads((work / "status.json").read_text())
    assert status["phase"] == "Complete" and status["readyPoints"] == "2/2"
    for row in status["points"]:
        assert row["phase"] == "Measured" and float(row["inferPerSec"]) > 0 and row["p99Us"] > 0
        point = json.loads((work / row["name"] / "status.json").read_text())
        assert point["phase"] == "Measured" and "mnist_onnx" in point["model"]["served"]
    assert status["best"]["point"] in {r["name"] for r in status["points"]}
    (verdict,) = status["verdicts"]
    assert verdict["verdict"] == "no interval"          # one repeat: never a guess
    assert "sweep tiny-sweep: Complete" in first.stdout
    again = mnist_serving(str(spec_file), "--workdir", str(work))
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("none (all reused)") == 2
