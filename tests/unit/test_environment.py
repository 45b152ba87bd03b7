"""The environment fingerprint: where a step's numbers were measured, from its
pod (node, image digest) and Triton's pods as it finished, beside the versions
the stage itself read; compare groups rows by it."""
from __future__ import annotations

import copy

from mnist_jobs.lib import provenance
from mnist_operator.tools import compare

from test_reconcile import World

SDK = "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64
TRITON = "nvcr.io/nvidia/tritonserver@sha256:" + "b" * 64


def triton_pod(node: str, image: str) -> dict:
    return {"metadata": {"name": f"demo-triton-{node}", "labels": {
                "app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "triton"}},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "triton", "ready": True, "imageID": image}]}}


H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81559", "kubernetes.io/os": "linux"}


def test_a_finished_bench_step_records_where_it_and_triton_ran():
    w = World()
    w.nodes = {"gpu-node-1": {k: v for k, v in H100.items() if k.startswith("nvidia.com/")},
               "cpu-node-7": {}}
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve")
    w.pods.append(triton_pod("gpu-node-1", TRITON))
    w.finish("client")
    w.pods[-1]["spec"] = {"nodeName": "cpu-node-7"}
    w.pods[-1]["status"]["containerStatuses"][0]["imageID"] = SDK
    w.step(1)
    assert w.stage("client")["environment"] == {
        "node": "cpu-node-7", "images": {"stage": SDK},
        "server": {"node": "gpu-node-1", "gpu": "NVIDIA-H100-80GB-HBM3 x8 (81559 MiB)",
                   "images": {"triton": TRITON}}}
    # a step that talks to no Triton records only its own pod
    assert "server" not in (w.stage("train").get("environment") or {})


def test_served_config_hash_ignores_how_the_protocol_spells_it():
    grpc = {"config": {"name": "m", "backend": "python", "max_batch_size": 128,
                       "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
                       "dynamic_batching": {"preferred_batch_size": [32, 64],
                                            "max_queue_delay_microseconds": "100"}}}
    http = {"name": "m", "backend": "python", "max_batch_size": 128, "platform": "",
            "instance_group": [{"count": 1, "kind": "KIND_CPU", "gpus": []}],
            "dynamic_batching": {"preferred_batch_size": [32, 64],
                                 "max_queue_delay_microseconds": 100}, "parameters": {}}
    assert provenance.config_hash(grpc) == provenance.config_hash(http)
    two = copy.deepcopy(http)
    two["instance_group"][0]["count"] = 2
    assert provenance.config_hash(two) != provenance.config_hash(http)


def status_with(triton_image: str, triton_version: str = "2.61.0") -> dict:
    bench = {"state": "Succeeded", "completionTime": "2026-12-01T10:00:00Z",
             "environment": {"node": "cpu-node-7", "images": {"stage": SDK},
                             "server": {"node": "gpu-node-1", "images": {"triton": triton_image}}},
             "result": {"environment": {"triton": triton_version,
                                        "configs": {"mnist_onnx": "0123456789ab"},
                                        "perfAnalyzer": "2.61.0 (commit 1234567)"}}}
    return {"phase": "Ready", "stages": {"bench-grpc": bench},
            "benchmark": {"perfAnalyzer": {"mnist_onnx": {"grpc": {
                "bestInferPerSec": "100.0", "concurrencyAtBest": 1, "p99UsAtBest": 900}}}}}


def test_compare_never_puts_two_environments_under_one_fingerprint():
    a = compare.rows_of("a", status_with(TRITON))[0]
    same = compare.rows_of("b", status_with(TRITON))[0]
    other_image = compare.rows_of("c", status_with(TRITON.replace("b", "c")))[0]
    other_triton = compare.rows_of("d", status_with(TRITON, "2.62.0"))[0]
    assert a.environment == same.environment
    assert len({a.environment, other_image.environment, other_triton.environment}) == 3
    details = dict(a.environment_details)
    assert (details["triton"], details["modelConfig"], details["tritonNode"]) == (
        "2.61.0", "0123456789ab", "gpu-node-1")
    assert details["tritonImages"] == f"triton={TRITON}"
    # like beside like: the rows of one environment sit together
    rows = compare.ordered([other_image, a, other_triton, same])
    ids = [r.environment for r in rows]
    assert ids == sorted(ids) and [r.source for r in rows if r.environment == a.environment] \
        == ["a", "b"]
    legend = compare.environments(rows)
    assert legend.count("\n") == 2 + 3 and "gpu-node-1" in legend
    csv = compare.csv_text(rows)
    assert csv.splitlines()[0].endswith(",environment,device,triton,modelConfig,perfAnalyzer,"
                                        "tritonNode,tritonGpu,tritonImages,clientNode,clientImages")


def test_a_node_is_asked_about_once_and_a_forbidden_read_means_no_labels(monkeypatch):
    from mnist_operator.cluster import kube
    from mnist_operator.cluster.cache import ClusterCache
    asked = []

    def request(api, method, path, *a, **k):
        asked.append((method, path))
        if api == "namespaced":
            raise kube.KubeError(403, method, path, '{"reason": "Forbidden"}')
        return 200, {"metadata": {"name": path.rsplit("/", 1)[1], "labels": H100}}
    monkeypatch.setattr(kube, "_request", request)
    pods = [{"spec": {"nodeName": "gpu-node-1"}}, {"spec": {"nodeName": "gpu-node-1"}}, {}]
    known = ClusterCache()
    gpu_labels = {k: v for k, v in H100.items() if k.startswith("nvidia.com/")}
    assert kube.node_gpus("cluster", pods, known) == {"gpu-node-1": gpu_labels}
    assert kube.node_gpus("cluster", pods, known) == {"gpu-node-1": gpu_labels}
    assert asked == [("GET", "/api/v1/nodes/gpu-node-1")]       # once, and only GPU labels kept
    assert kube.node_gpus("namespaced", pods, ClusterCache()) == {"gpu-node-1": {}}


def test_model_analyzers_version_is_read_without_starting_it(monkeypatch):
    """This interpreter's own model-analyzer: its package says the version (its
    --version imports all of model-analyzer, seconds on this machine)."""
    import importlib.metadata
    import sysconfig
    from pathlib import Path

    def no_subprocess(*a, **k):
        raise AssertionError("model-analyzer was started")
    monkeypatch.setattr(provenance.subprocess, "run", no_subprocess)
    script = str(Path(sysconfig.get_path("scripts")) / "model-analyzer")
    assert provenance.model_analyzer_version(script) == \
        importlib.metadata.version("triton-model-analyzer")
