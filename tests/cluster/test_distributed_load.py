"""Distributed load on a real control plane: the real operator turns
``benchmark.perfAnalyzer.clients: 2`` into an Indexed Job of two pods (KWOK
plays them: index 0 writes the aggregate, index 1 the small result naming its
aggregator), and the status shows the aggregate and the scaling check."""
from __future__ import annotations

import json

import pytest

from tests.cluster.test_operator_e2e import wait_ready_at

pytestmark = pytest.mark.cluster

INDEX = "batch.kubernetes.io/job-completion-index"


def test_two_clients_run_as_one_indexed_job_and_status_shows_index_0s_aggregate(
        pipeline_ns, operator, kit):
    ns = pipeline_ns
    cr = kit.apply_cr(ns, "spread", {"benchmark": {
        "perfAnalyzer": {"clients": 2, "protocols": ["grpc"],
                         "concurrency": {"start": 1, "end": 65, "step": 64}},
        "modelAnalyzer": {"enabled": False}}})
    st = wait_ready_at(kit, ns, "spread", cr["metadata"]["generation"])

    [job] = kit.jobs_for(ns, "spread", "bench-grpc")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert job["status"]["succeeded"] == 2
    pods = [p for p in kit.pods_for(ns, "spread")
            if p["metadata"]["labels"].get("mnist.serving.dev/step") == "bench-grpc"]
    said = {p["metadata"]["annotations"][INDEX]: json.loads(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]) for p in pods}
    assert sorted(said) == ["0", "1"]
    assert said["1"]["aggregatedBy"] == 0 and "models" not in said["1"]
    # both pods ask for spreading over nodes
    anti = pods[0]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
        "topologyKey"] == "kubernetes.io/hostname"
    # the Job's uid names the clients' run, one value for both pods
    env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["MNIST_CLIENTS_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"

    stage = st["stages"]["bench-grpc"]
    assert stage["state"] == "Succeeded" and stage["result"]["clients"] == 2
    assert "aggregatedBy" not in stage["result"]
    point = st["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert point["clients"] == 2 and point["bestInferPerSec"] == said["0"]["models"][
        "mnist_onnx"]["best"]["inferPerSec"]
    assert point["scaling"]["clients"] == [1, 2] and point["scaling"]["limit"] == "client"
    assert point["scaling"]["concurrency"] == point["concurrencyAtBest"] == 65
