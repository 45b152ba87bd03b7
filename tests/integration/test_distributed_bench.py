"""Distributed load against the session's real tritonserver: two bench clients
(the stage CLI, real perf_analyzer) started apart, held together by the barrier,
aggregated by client 0 from both clients' real profile exports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, last_json

from tests.harness.stage_flags import spec_flags

pytestmark = pytest.mark.integration


def _client(triton, out, index: int, result) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "jobs") + os.pathsep
           + os.environ.get("PYTHONPATH", ""), "JOB_COMPLETION_INDEX": str(index)}
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_jobs.bench", *spec_flags("bench"), "--url", triton.grpc_url,
         "--protocol", "grpc",
         "--models", "mnist_onnx", "--batch-size", "1", "--concurrency", "1:3:2",
         "--measurement-mode", "time_windows", "--measurement-interval-ms", "500",
         "--stability-percentage", "100", "--clients", "2", "--clients-run", "run1",
         "--barrier-timeout-s", "120", "--metrics-url", f"http://{triton.metrics_url}/metrics",
         "--out", str(out), "--result", str(result)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _records(path):
    """(first window edge, last window edge, [(sent, done)]) of a real profile export."""
    exp = json.loads(path.read_bytes().decode("utf-8", errors="replace"))["experiments"][-1]
    edges = exp["window_boundaries"]
    return edges[0], edges[-1], [(r["timestamp"], r["response_timestamps"][-1])
                                 for r in exp["requests"]]


def test_two_clients_meet_at_the_barrier_and_client_0_aggregates_every_request(triton, tmp_path):
    out = tmp_path / "bench"
    first = _client(triton, out, 0, tmp_path / "r0.json")
    time.sleep(3)   # client 1 comes late: client 0 must wait for it at the first point
    second = _client(triton, out, 1, tmp_path / "r1.json")
    try:
        outs = [p.communicate(timeout=240) for p in (first, second)]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    assert first.returncode == 0 and second.returncode == 0, (outs[0][1][-2000:], outs[1][1][-2000:])
    aggregated, small = last_json(outs[0][0]), last_json(outs[1][0])
    assert small["client"] == 1 and small["aggregatedBy"] == 0 and "models" not in small

    run = out / "clients" / "run1"
    # the barrier held: client 0 sent nothing before client 1 had arrived
    arrived = (run / "barrier" / "mnist_onnx-c1" / "1").stat().st_mtime_ns
    _, _, requests = _records(run / "0" / "mnist_onnx-c1.json")
    assert min(sent for sent, _ in requests) >= arrived
    # c=1: only client 0 measures (its share is 1, client 1's 0); c=3: 2 + 1
    assert not (run / "1" / "mnist_onnx-c1.json").exists()
    assert (run / "1" / "mnist_onnx-c3.json").exists()

    entry = aggregated["models"]["mnist_onnx"]
    assert aggregated["clients"] == 2
    row = next(r for r in entry["rows"] if r["c"] == 3)
    assert row["clients"] == 2
    # the aggregate is the records' own count over the window both clients measured
    windows = [_records(run / str(i) / "mnist_onnx-c3.json") for i in (0, 1)]
    start, end = max(w[0] for w in windows), min(w[1] for w in windows)
    done = [d - s for w in windows for s, d in w[2] if start <= d <= end]
    assert row["requests"] == len(done) > 0
    assert row["windowMs"] == int((end - start) / 1e6)
    assert float(row["inferPerSec"]) == pytest.approx(len(done) / ((end - start) / 1e9), abs=0.1)
    assert row["p99Us"] == sorted(done)[-(-99 * len(done) // 100) - 1] // 1000
    assert sum(float(x) for x in row["perClient"]) == pytest.approx(float(row["inferPerSec"]),
                                                                     abs=0.2)
    # client 0 sampled Triton's metrics over each point: this Triton has no GPU
    assert all(r["gpu"] == "none" for r in entry["rows"]) and entry["best"]["gpu"] == "none"
    # the scaling check: the best point again with one client
    sc = entry["scaling"]
    assert sc["clients"] == [1, 2] and sc["c"] == entry["best"]["c"]
    assert sc["limit"] in (("client", "server") if sc["c"] >= 2 else ("untested",))
    assert (run / "0" / f"mnist_onnx-half-c{sc['c']}.json").exists()
    words = "untested" if sc["limit"] == "untested" else f"the {sc['limit']} was the limit"
    assert aggregated["message"].startswith(f"2 clients; mnist_onnx: {words}")
    assert f"(1 client(s) {sc['inferPerSec'][0]}, " in aggregated["message"]
    assert len(json.dumps(aggregated)) < 4096
