"""The operator's Prometheus metrics (mnist_operator/cluster/metrics.py): the pure parts
called directly, the recording read back from its own registry."""
from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mnist_operator.cluster import kube, metrics
from mnist_operator.cluster import main as operator_main
from mnist_operator.core.status import PHASES


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def rec(state: str, start: str | None = "2026-01-01T00:00:00Z", end: str | None = "2026-01-01T00:00:42Z",
        **extra) -> dict:
    out = {"state": state, **extra}
    if start:
        out["startTime"] = start
    if end:
        out["completionTime"] = end
    return out


@pytest.fixture(autouse=True)
def no_resources():
    metrics._reset()
    yield
    metrics._reset()


# --------------------------------------------------------------------------- stage transitions
def test_a_step_that_finishes_counts_once_with_its_duration():
    old = {"stages": {"train": rec("Running", end=None), "export": rec("Pending", None, None)}}
    new = {"stages": {"train": rec("Succeeded"), "export": rec("Running", end=None)}}
    assert list(metrics.stage_transitions(old, new)) == [("train", "Succeeded", 42.0)]
    assert list(metrics.stage_transitions(new, new)) == []          # the next pass: nothing new


def test_first_sight_failed_skipped_and_a_rerun_count():
    new = {"stages": {"bench-grpc": rec("Failed", reason="StageFailed"),
                      "engine": rec("Skipped", start=None, end=None),
                      "client": rec("BackingOff", end=None)}}
    assert sorted(metrics.stage_transitions(None, new)) == [("bench-grpc", "Failed", 42.0),
                                                            ("engine", "Skipped", None)]
    again = {"stages": {"bench-grpc": rec("Succeeded", end="2026-01-01T00:01:00Z")}}
    assert list(metrics.stage_transitions(new, again)) == [("bench-grpc", "Succeeded", 60.0)]
    rerun = {"stages": {"bench-grpc": rec("Succeeded", start="2026-01-01T00:05:00Z",
                                          end="2026-01-01T00:05:07Z")}}
    assert list(metrics.stage_transitions(again, rerun)) == [("bench-grpc", "Succeeded", 7.0)]


def test_unparsable_or_backwards_times_count_without_a_duration():
    new = {"stages": {"train": rec("Succeeded", start="yesterday"),
                      "serve": rec("Succeeded", start="2026-01-01T00:01:00Z", end="2026-01-01T00:00:00Z")}}
    assert sorted(metrics.stage_transitions({}, new)) == [("serve", "Succeeded", None),
                                                          ("train", "Succeeded", None)]


def test_observe_status_counts_outcomes_and_durations():
    before = value("mnist_serving_stage_outcomes_total", stage="analyze", state="Succeeded")
    count = value("mnist_serving_stage_duration_seconds_count", stage="analyze", state="Succeeded")
    total = value("mnist_serving_stage_duration_seconds_sum", stage="analyze", state="Succeeded")
    new = {"phase": "Ready", "stages": {"analyze": rec("Succeeded")}}
    metrics.observe_status("ns", "a", {"stages": {"analyze": rec("Running", end=None)}}, new)
    metrics.observe_status("ns", "a", new, new)
    assert value("mnist_serving_stage_outcomes_total", stage="analyze", state="Succeeded") == before + 1
    assert value("mnist_serving_stage_duration_seconds_count", stage="analyze", state="Succeeded") == count + 1
    assert value("mnist_serving_stage_duration_seconds_sum", stage="analyze", state="Succeeded") == total + 42


# --------------------------------------------------------------------------- the phase gauge
def test_phase_counts_list_every_phase():
    counts = metrics.phase_counts({("a", "x"): "Ready", ("a", "y"): "Ready", ("b", "x"): "Training"})
    assert set(counts) == set(PHASES)
    assert counts["Ready"] == 2 and counts["Training"] == 1 and counts["Failed"] == 0


def test_phase_gauge_follows_each_resource_and_drops_it_when_gone():
    metrics.observe_status("ns", "a", {}, {"phase": "Training"})
    metrics.observe_status("ns", "b", {}, {"phase": "Training"})
    assert value("mnist_serving_resources", phase="Training") == 2
    metrics.observe_status("ns", "a", {"phase": "Training"}, {"phase": "Ready"})
    assert (value("mnist_serving_resources", phase="Training"),
            value("mnist_serving_resources", phase="Ready")) == (1, 1)
    # a pass that finds the resource gone (None) forgets it; so does its DELETED event
    assert metrics.reconcile_pass(lambda ns, name: None, "ns", "a") is None
    assert value("mnist_serving_resources", phase="Ready") == 0
    metrics.forget("ns", "b")
    metrics.forget("ns", "never-seen")
    assert value("mnist_serving_resources", phase="Training") == 0
    assert metrics.REGISTRY.get_sample_value("mnist_serving_resources", {"phase": "Failed"}) == 0


# --------------------------------------------------------------------------- passes and errors
def test_reconcile_pass_counts_results_time_and_errors_by_reason():
    ok, gone = value("mnist_serving_reconcile_passes_total", result="ok"), \
        value("mnist_serving_reconcile_passes_total", result="gone")
    err = value("mnist_serving_reconcile_passes_total", result="error")
    timed = value("mnist_serving_reconcile_duration_seconds_count")
    conflicts = value("mnist_serving_reconcile_errors_total", reason="http_409")
    assert metrics.reconcile_pass(lambda ns, name: f"{ns}/{name}", "ns", "a") == "ns/a"
    metrics.reconcile_pass(lambda ns, name: None, "ns", "a")

    def conflict(ns, name):
        raise kube.KubeError(409, "PATCH", "/apis/x", '{"message": "conflict"}')
    with pytest.raises(kube.KubeError):
        metrics.reconcile_pass(conflict, "ns", "a")
    with pytest.raises(ValueError):
        metrics.reconcile_pass(lambda ns, name: int("x"), "ns", "a")
    assert value("mnist_serving_reconcile_passes_total", result="ok") == ok + 1
    assert value("mnist_serving_reconcile_passes_total", result="gone") == gone + 1
    assert value("mnist_serving_reconcile_passes_total", result="error") == err + 2
    assert value("mnist_serving_reconcile_duration_seconds_count") == timed + 4
    assert value("mnist_serving_reconcile_errors_total", reason="http_409") == conflicts + 1
    assert value("mnist_serving_reconcile_errors_total", reason="ValueError") >= 1


def test_error_reason_is_a_bounded_name():
    assert metrics.error_reason(kube.KubeError(503, "GET", "/api/v1", "")) == "http_503"
    assert metrics.error_reason(ConnectionResetError()) == "ConnectionResetError"


# --------------------------------------------------------------------------- API requests
@pytest.mark.parametrize("path, resource", [
    (kube.collection_path("batch/v1", "Job", "ns"), "jobs"),
    (kube.collection_path("v1", "Pod", "ns") + "?labelSelector=a%3Db", "pods"),
    (kube.collection_path("apps/v1", "Deployment", "ns") + "/demo-triton", "deployments"),
    (kube.collection_path("mnist.serving.dev/v1alpha1", "MnistServing", "ns") + "/demo/status",
     "mnistservings/status"),
    ("/api/v1/namespaces", "namespaces"),
    ("/api/v1/namespaces/ns", "namespaces"),
    ("/version", "other"),
    ("/apis/batch/v1/namespaces/ns/jobs/a/b/c", "other"),
])
def test_resource_of_an_api_path(path, resource):
    assert metrics.resource_of(path) == resource


class FakeApi:
    """What kube._request calls on the official ApiClient."""

    class Response:
        def __init__(self, status: int, body: bytes):
            self.status, self._body = status, body

        def read(self):
            return self._body

    def __init__(self, status: int, body: bytes = b"{}"):
        self.status, self.body = status, body

    def param_serialize(self, method, path, **_):
        return method, path

    def call_api(self, method, path):
        return self.Response(self.status, self.body)


def test_every_api_response_is_counted_by_verb_resource_and_code():
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}
    created = value("mnist_serving_api_requests_total", verb="POST", resource="jobs", code="201")
    exists = value("mnist_serving_api_requests_total", verb="POST", resource="jobs", code="409")
    assert kube.create(FakeApi(201), job) == job
    assert kube.create(FakeApi(409, b'{"message": "exists"}'), job) is None
    assert value("mnist_serving_api_requests_total", verb="POST", resource="jobs", code="201") == created + 1
    assert value("mnist_serving_api_requests_total", verb="POST", resource="jobs", code="409") == exists + 1
    before = value("mnist_serving_api_requests_total", verb="PATCH", resource="mnistservings/status",
                   code="200")
    kube.patch_status(FakeApi(200), "ns", "demo", {"phase": "Ready"})
    assert value("mnist_serving_api_requests_total", verb="PATCH", resource="mnistservings/status",
                 code="200") == before + 1


# --------------------------------------------------------------------------- serving
def test_metrics_port_flag():
    assert operator_main.parser().parse_args([]).metrics_port == metrics.DEFAULT_PORT == 8081
    assert operator_main.parser().parse_args(["--metrics-port=0"]).metrics_port == 0
    assert metrics.serve(0) is False                    # 0: nothing served


def test_served_text_parses_as_prometheus_exposition():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.observe_status("ns", "a", {}, {"phase": "Ready"})
    assert metrics.serve(port, addr="127.0.0.1") is True
    assert metrics.serve(port, addr="127.0.0.1") is False   # once per process
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"mnist_serving_reconcile_passes", "mnist_serving_reconcile_duration_seconds",
            "mnist_serving_reconcile_errors", "mnist_serving_resources", "mnist_serving_stage_outcomes",
            "mnist_serving_stage_duration_seconds", "mnist_serving_api_requests"} <= set(families)
    assert "python_gc_objects_collected_total" not in text  # a registry of its own
    ready = [s for s in families["mnist_serving_resources"].samples if s.labels == {"phase": "Ready"}]
    assert [s.value for s in ready] == [1.0]
