"""A sweep end to end: the real operator on a real control plane, KWOK nodes of two
GPU products playing every stage pod. What a user sees: `kubectl get mnistsweep`,
the sweep's status (progress, rows, best point, verdicts), its child MnistServings,
and nothing left once it is deleted."""
from __future__ import annotations

import copy
import json
import time

import pytest

from mnist_operator.api import sweep as W
from tests.harness.operator_process import FAST_SPEC, wait_for

pytestmark = pytest.mark.cluster

H100, A100 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"
SWEEP = {"template": FAST_SPEC,
         "axes": [{"field": "scheduling.gpuProduct", "values": [H100, A100]},
                  {"field": "serving.instances", "values": [1, 2]}],
         "maxParallel": 2, "costs": {H100: "4.00", A100: "2.00"}}


def apply_sweep(kubectl, kit, ns: str, name: str, spec: dict) -> dict:
    """The sweep, and a volume ready for each of its points' claims."""
    for point in W.points(W.parse_sweep(spec)):
        kit.ensure_volume(ns, point.child_name(name))
    doc = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
           "metadata": {"name": name, "namespace": ns}, "spec": spec}
    return json.loads(kubectl("apply", "-f", "-", "-o", "json", input=json.dumps(doc)))


def sweep_status(kubectl, ns: str, name: str) -> dict:
    return kubectl.json("get", W.PLURAL, name, "-n", ns).get("status") or {}


def points_of(kubectl, ns: str, name: str) -> list[dict]:
    return kubectl.json("get", "mnistservings", "-n", ns,
                        "-l", f"mnist.serving.dev/sweep={name}").get("items", [])


def test_a_sweep_of_two_gpu_products_runs_two_at_a_time_and_ranks_them(
        pipeline_ns, operator, gpu_nodes, kit, kubectl):
    ns = pipeline_ns
    gpu_nodes(1, product=A100)                     # pipeline_ns brought an H100 node
    apply_sweep(kubectl, kit, ns, "which-gpu", SWEEP)
    most_running = 0

    def complete():
        nonlocal most_running
        running = [p for p in points_of(kubectl, ns, "which-gpu")
                   if (p.get("status") or {}).get("phase") not in ("Ready", "Measured", "Failed")]
        most_running = max(most_running, len(running))
        st = sweep_status(kubectl, ns, "which-gpu")
        return st if st.get("phase") == "Complete" else None
    st = wait_for("sweep which-gpu Complete", complete, timeout=300, interval=0.5)

    assert most_running <= 2
    assert st["progress"] == {"total": 4, "ready": 4, "failed": 0, "running": 0, "waiting": 0}
    children = points_of(kubectl, ns, "which-gpu")
    assert sorted(c["metadata"]["name"] for c in children) == sorted(r["name"] for r in st["points"])
    # every point measured, then stopped serving: its GPU went to the next point
    assert all(c["status"]["phase"] == "Measured" for c in children)
    for child in children:
        (dep,) = kubectl.json("get", "deployments", "-n", ns, "-l",
                              f"app.kubernetes.io/instance={child['metadata']['name']}")["items"]
        assert dep["spec"]["replicas"] == 0
    for child in children:                          # each point pinned its own GPU product
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == (W.KIND, "which-gpu")
        job = next(j for j in kit.jobs_for(ns, child["metadata"]["name"])
                   if j["metadata"]["labels"]["mnist.serving.dev/step"] == "engine")
        selector = job["spec"]["template"]["spec"]["nodeSelector"]
        assert selector["nvidia.com/gpu.product"] == child["spec"]["scheduling"]["gpuProduct"]
    rows = {r["name"]: r for r in st["points"]}
    assert all(float(r["inferPerSec"]) > 0 and r["p99Us"] > 0 and r["costPerMillion"]
               for r in rows.values())
    best = st["best"]
    assert best["point"] in rows and st["objective"] == "throughput"
    assert {v["point"] for v in st["verdicts"]} == set(rows) - {best["point"]}
    assert st["pareto"] and set(st["pareto"]) <= set(rows)
    complete_condition = next(c for c in st["conditions"] if c["type"] == "Complete")
    assert complete_condition["status"] == "True"

    row = kubectl("get", "mnistsweep", "which-gpu", "-n", ns, "--no-headers").split()
    assert row[:5] == ["which-gpu", "Complete", "4/4", best["point"], "throughput"], row
    reasons = [e["reason"] for e in kubectl.json("get", "events", "-n", ns, "--field-selector",
                                                 "involvedObject.name=which-gpu")["items"]]
    assert reasons.count("PointCreated") == 4 and reasons.count("SweepComplete") == 1

    # deleting the sweep removes every point it made
    kubectl("delete", W.PLURAL, "which-gpu", "-n", ns, "--wait=false")
    wait_for("the sweep's points deleted", lambda: not points_of(kubectl, ns, "which-gpu"),
             timeout=90)


def test_a_sweep_the_operator_refuses_says_why_in_status_and_one_event(
        pipeline_ns, operator, kubectl):
    ns = pipeline_ns
    bad = copy.deepcopy(SWEEP)
    bad["axes"][1] = {"field": "serving.instances", "values": [1, 99]}   # over the field's maximum
    doc = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
           "metadata": {"name": "bad-sweep", "namespace": ns}, "spec": bad}
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    st = wait_for("bad-sweep Failed",
                  lambda: (lambda s: s if s.get("phase") == "Failed" else None)(
                      sweep_status(kubectl, ns, "bad-sweep")), timeout=60)
    assert st["message"] == ("spec.axes[1].values[1]: 99 for serving.instances: "
                             "must be <= 16 (got 99)")
    time.sleep(2)   # a few more passes (resyncs, our own status write) post nothing new
    events = kubectl.json("get", "events", "-n", ns, "--field-selector",
                          "involvedObject.name=bad-sweep")["items"]
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "InvalidSpec")]
    assert not points_of(kubectl, ns, "bad-sweep")


def test_the_api_server_refuses_a_field_swept_twice_and_an_unknown_objective(
        mnist_crd, namespace, kubectl):
    def refusal(spec: dict) -> str:
        doc = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
               "metadata": {"name": "refused", "namespace": namespace}, "spec": spec}
        out = kubectl.run("apply", "-f", "-", input=json.dumps(doc))
        assert out.returncode != 0, out.stdout
        return out.stderr
    axes = [{"field": "serving.instances", "values": [1]}]
    assert "spec.axes: Invalid value: each field is swept by one axis only" in refusal(
        {"axes": axes + [{"field": "serving.instances", "values": [2]}]})
    assert 'spec.objective: Unsupported value: "fastest"' in refusal(
        {"axes": axes, "objective": "fastest"})
