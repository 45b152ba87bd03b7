"""A sweep on a real node: a MnistServingSweep of two CPU points (serving.instances 1
and 2) runs every stage of both points in real pods of the stand-in images, one point
at a time, to Complete; then `mnist-serving report --cluster`, run as a user runs it
with the cluster's kubeconfig, writes a page whose ranking holds the figures of the
sweep's status; deleting the sweep removes both points and their volumes.

It shares the session's node (tests/node/conftest.py) and the chart release with
test_node_e2e.py: the release is installed here only when this file runs alone.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_operator.api import sweep as W
from mnist_operator.core import builders
from tests.harness.html_tables import Tables, as_dicts
from tests.harness.operator_process import MnistKit, wait_for
from tests.node.test_node_e2e import RELEASE, RELEASE_NS, STEP_IMAGE, helm_values

from tests.harness.node.node import REPO

pytestmark = [pytest.mark.node, pytest.mark.timeout(1500)]

NS, NAME = "node-sweep", "cpu-sweep"
COMPLETE_TIMEOUT = 1200
#: The CPU sample's pipeline made short: one epoch, ONNX alone, gRPC at concurrency 1
#: and 33, each measured twice (so each row has an interval), no model-analyzer.
SWEEP = {
    "template": {
        "training": {"epochs": 1, "batchSize": 64, "learningRate": "0.01", "momentum": "0.9",
                     "dataset": {"source": "offline"}, "gpus": 0},
        "tensorrt": {"enabled": False},
        "serving": {"models": ["onnx"], "cpuOnly": True, "gpus": 0, "maxBatchSize": 64,
                    "dynamicBatching": {"preferredBatchSizes": [32],
                                        "maxQueueDelayMicroseconds": 100}},
        "storage": {"size": "1Gi"},
        "benchmark": {"perfAnalyzer": {"protocols": ["grpc"],
                                       "concurrency": {"start": 1, "end": 33, "step": 32},
                                       "measurementMode": "time_windows",
                                       "measurementIntervalMs": 1000,
                                       "stabilityPercentage": 50, "repeats": 2},
                      "modelAnalyzer": {"enabled": False}},
    },
    "axes": [{"field": "serving.instances", "values": [1, 2]}],
    "maxParallel": 1,
}
#: the steps a point of this template runs in a pod, each in its stand-in image
POINT_STEPS = {s: STEP_IMAGE[s] for s in ("train", "export", "repo", "client", "bench-grpc")}


def _epoch(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _measured_since(status: dict) -> float:
    """When a point was measured and stopped serving (a sweep's points stop once measured)."""
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "StoppedAfterBenchmark"), ready
    return _epoch(ready["lastTransitionTime"])


@pytest.fixture(scope="module")
def release(node_cluster, tmp_path_factory):
    """The chart's release test_node_e2e.py installed, or the same install here."""
    plane = node_cluster.plane
    helm = [str(plane.binaries["helm"]), f"--kubeconfig={plane.kubeconfig}"]
    if subprocess.run([*helm, "status", RELEASE, "-n", RELEASE_NS],
                      capture_output=True, text=True, timeout=60).returncode == 0:
        return
    values = tmp_path_factory.mktemp("helm") / "values.json"
    values.write_text(json.dumps(helm_values(node_cluster.images)))
    p = subprocess.run([*helm, "install", RELEASE, str(REPO / "charts" / "mnist-serving"),
                        "-n", RELEASE_NS, "--create-namespace", "-f", str(values), "--wait",
                        "--timeout=5m"], capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, f"helm install failed:\n{p.stderr}{p.stdout}"


@pytest.fixture(scope="module")
def sweep(node_cluster, release):
    """The sweep applied into a fresh namespace and waited to Complete."""
    kubectl = node_cluster.kubectl
    kubectl("create", "namespace", NS)
    wait_for("the default ServiceAccount", lambda: kubectl.run(
        "get", "serviceaccount", "default", "-n", NS).returncode == 0, 30)
    doc = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
           "metadata": {"name": NAME, "namespace": NS}, "spec": SWEEP}
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    seen: list[tuple[float, str]] = []

    def complete():
        st = kubectl.json("get", W.PLURAL, NAME, "-n", NS).get("status") or {}
        line = f"{st.get('phase')} {st.get('readyPoints')}"
        if not seen or seen[-1][1] != line:
            seen.append((round(time.monotonic() - t0), line))
        if st.get("progress", {}).get("failed"):
            raise AssertionError(f"a point Failed: {json.dumps(st.get('points'))[:3000]}")
        return st if st.get("phase") == "Complete" else None
    try:
        status = wait_for(f"{NS}/{NAME} Complete", complete, COMPLETE_TIMEOUT, interval=2)
    except AssertionError as e:
        raise AssertionError(f"{e}\nseen: {seen}") from None
    took = time.monotonic() - t0
    print(f"\nsweep {NAME}: apply -> Complete {took:.0f} s ({seen})")
    return {"status": status, "seconds": took}


def points_of(kubectl) -> list[dict]:
    return kubectl.json("get", "mnistservings", "-n", NS,
                        "-l", f"mnist.serving.dev/sweep={NAME}").get("items", [])


def test_a_two_point_cpu_sweep_runs_in_real_pods_one_point_at_a_time(sweep, node_cluster):
    st, kubectl = sweep["status"], node_cluster.kubectl
    kit, images = MnistKit(kubectl), node_cluster.images
    assert st["progress"] == {"total": 2, "ready": 2, "failed": 0, "running": 0, "waiting": 0}
    (complete,) = [c for c in st["conditions"] if c["type"] == "Complete"]
    assert complete["status"] == "True", complete
    children = {c["metadata"]["name"]: c for c in points_of(kubectl)}
    assert sorted(children) == sorted(r["name"] for r in st["points"])
    for row in st["points"]:
        child = children[row["name"]]
        assert child["status"]["phase"] == "Measured", child["status"].get("message")
        assert child["spec"]["serving"]["instances"] == row["values"]["serving.instances"]
        assert row["phase"] == "Measured" and float(row["inferPerSec"]) > 0 and row["p99Us"] > 0, row
        assert row["repeats"] == 2 and float(row["low"]) <= float(row["high"]), row
        # every stage of the point ran in a real container of its stand-in image, exit 0
        pods = {p["metadata"]["labels"][builders.LABEL_STEP]: p for p in kit.pods_for(NS, row["name"])
                if p["metadata"]["labels"].get(builders.LABEL_STEP)
                and p["metadata"]["labels"].get(builders.LABEL_COMPONENT) != "triton"}
        assert set(pods) == set(POINT_STEPS), (row["name"], sorted(pods))
        for step, pod in pods.items():
            main = pod["status"]["containerStatuses"][0]
            assert main["state"]["terminated"]["exitCode"] == 0, (row["name"], step, main)
            assert main["image"] == images[POINT_STEPS[step]].ref, (row["name"], step, main)
        # Triton served from its own image (the bench measured it), then scaled to 0 once
        # the point was measured: the next point got the node's cores
        (dep,) = kubectl.json("get", "deployments", "-n", NS, "-l",
                              f"app.kubernetes.io/instance={row['name']}")["items"]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == images["triton"].ref
        assert dep["spec"]["replicas"] == 0, row["name"]
    # maxParallel 1: the second point was created once the first was measured
    first, second = (children[r["name"]] for r in st["points"])
    assert _epoch(second["metadata"]["creationTimestamp"]) >= _measured_since(first["status"]) - 1
    best = st["best"]["point"]
    assert {v["point"] for v in st["verdicts"]} == {r["name"] for r in st["points"]} - {best}
    row = kubectl("get", "mnistsweep", NAME, "-n", NS, "--no-headers").split()
    assert row[:5] == [NAME, "Complete", "2/2", best, "throughput"], row


def test_report_from_the_cluster_renders_both_points_as_in_status(sweep, node_cluster, tmp_path):
    st = sweep["status"]
    out = tmp_path / "report.html"
    t0 = time.monotonic()
    p = subprocess.run([str(Path(sys.executable).parent / "mnist-serving"), "report", "--cluster",
                        "--kubeconfig", str(node_cluster.plane.kubeconfig), "-n", NS,
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    print(f"\nmnist-serving report --cluster: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr, p.stderr
    page = out.read_text()
    best = st["best"]
    answer = f"Best: {best['point']} (serving.instances={best['values']['serving.instances']}): "
    assert p.stdout.startswith(answer) and answer in page, (p.stdout, answer)
    tables = Tables(page).tables
    (ranking,) = [t for t in tables if t and "point" in t[0]]
    rows = {r["point"]: r for r in as_dicts(ranking)}
    assert set(rows) == {r["name"] for r in st["points"]}
    verdicts = {v["point"]: v for v in st["verdicts"]}
    for point in st["points"]:
        cells = rows[point["name"]]
        assert cells["serving.instances"] == str(point["values"]["serving.instances"])
        assert cells["phase"] == "Measured"
        assert cells["infer/s"] == point["inferPerSec"]
        assert cells["p99 ms"] == f"{point['p99Us'] / 1000:.2f}"
        assert cells["95 % interval"] == f"[{point['low']}, {point['high']}]"
        assert cells["environment"] == point["environment"]
        assert ("★ best" in cells["marks"]) == (point["name"] == best["point"])
        assert ("◆ Pareto" in cells["marks"]) == (point["name"] in st["pareto"])
        if point["name"] in verdicts:
            v = verdicts[point["name"]]
            assert cells["verdict"] == v["verdict"], (cells, v)
            assert cells["best / this"].startswith(f"{v['ratio']}×"), (cells, v)
        else:
            assert cells["best / this"] == "best", cells


def test_deleting_the_sweep_removes_both_points_and_their_volumes(sweep, node_cluster):
    kubectl = node_cluster.kubectl
    claims = [c["metadata"]["name"] for c in kubectl.json("get", "pvc", "-n", NS)["items"]]
    assert len(claims) == 2, claims
    kubectl("delete", W.PLURAL, NAME, "-n", NS, "--wait=false")
    wait_for("the sweep's points deleted", lambda: not points_of(kubectl), 180, interval=1)
    wait_for("their claims deleted", lambda: not kubectl.json("get", "pvc", "-n", NS)["items"],
             180, interval=1)
