"""Bad input: every invalid MnistServing is refused by the real API server
with a message naming the field, and `mnist-serving render` refuses the same
file (exit 2, one line naming the same field), so client and server agree.

Each case is one fault on top of a small valid resource. The server side goes
through `kubectl create` (strict field validation, as a user applies a file), from
the same YAML text render reads: a plain `1e3` is a number to kubectl, so it must
be one to render too. Where a person needs to be told what to write, both answers
carry the same words (WORDS), never a regular expression.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.harness.operator_process import deep_merge
from tests.harness.control_plane import REPO

pytestmark = pytest.mark.cluster

CRD = REPO / "manifests" / "crd" / "mnistservings.yaml"
CLI = Path(sys.executable).with_name("mnist-serving")

VALID = {
    "apiVersion": "mnist.serving.dev/v1alpha1",
    "kind": "MnistServing",
    "metadata": {"name": "bad"},
    "spec": {"serving": {"models": ["onnx", "tensorrt", "bls"]}},
}


def with_fault(patch: dict) -> dict:
    """VALID with ``patch`` deep-merged into it (a None value deletes the key)."""
    return deep_merge(VALID, patch)


def spec(**sections) -> dict:
    return {"spec": sections}


def document(patch: dict | str) -> str:
    """The resource as YAML text: VALID with the fault. A fault given as text is the
    spec's own YAML, to write what a dict cannot say (an unquoted 1e3)."""
    if isinstance(patch, str):
        return yaml.safe_dump({k: v for k, v in VALID.items() if k != "spec"}) + patch
    return yaml.safe_dump(with_fault(patch))


# (id, patch, field path both sides must name)
CASES = [
    # types
    ("epochs-string", spec(training={"epochs": "two"}), "spec.training.epochs"),
    ("enabled-not-bool", spec(tensorrt={"enabled": "yes"}), "spec.tensorrt.enabled"),
    ("models-not-list", spec(serving={"models": "onnx"}), "spec.serving.models"),
    ("learning-rate-number", spec(training={"learningRate": 0.01}), "spec.training.learningRate"),
    # YAML 1.1 reads an unquoted 1e3 as a number (kubectl does): not a quantity string
    ("storage-size-yaml-number", "spec:\n  storage:\n    size: 1e3\n", "spec.storage.size"),
    ("cpu-bare-number", spec(resources={"train": {"requests": {"cpu": 2}}}),
     "spec.resources.train.requests.cpu"),
    ("unknown-field", spec(training={"epoch": 2}), "spec.training.epoch"),
    # ranges
    ("epochs-zero", spec(training={"epochs": 0}), "spec.training.epochs"),
    ("opset-too-old", spec(export={"opset": 6}), "spec.export.opset"),
    ("max-batch-too-big", spec(serving={"maxBatchSize": 5000}), "spec.serving.maxBatchSize"),
    ("retries-negative", spec(retries={"limit": -1}), "spec.retries.limit"),
    ("training-gpus-9", spec(training={"gpus": 9}), "spec.training.gpus"),
    ("engine-gpus-0", spec(tensorrt={"gpus": 0}), "spec.tensorrt.gpus"),
    ("serving-gpus-negative", spec(serving={"gpus": -1}), "spec.serving.gpus"),
    ("duplicate-model", spec(serving={"models": ["onnx", "bls", "onnx"]}), "spec.serving.models"),
    # enums
    ("precision-int8", spec(tensorrt={"precision": "int8"}), "spec.tensorrt.precision"),
    ("pull-policy", spec(images={"pullPolicy": "Sometimes"}), "spec.images.pullPolicy"),
    ("unknown-model-name", spec(serving={"models": ["onnx", "resnet"]}), "spec.serving.models[1]"),
    ("protocol", spec(benchmark={"perfAnalyzer": {"protocols": ["udp"]}}),
     "spec.benchmark.perfAnalyzer.protocols[0]"),
    ("rwop-access-mode", spec(storage={"accessMode": "ReadWriteOncePod"}), "spec.storage.accessMode"),
    # patterns
    ("image-with-space", spec(images={"pytorch": "nvcr.io/nvidia/pytorch:24.12 py3"}),
     "spec.images.pytorch"),
    ("image-uppercase-registry", spec(images={"triton": "NVCR.IO/nvidia/tritonserver:24.12-py3"}),
     "spec.images.triton"),
    ("image-bad-digest", spec(images={"sdk": "nvcr.io/nvidia/tritonserver@sha256:1234"}),
     "spec.images.sdk"),
    ("image-uppercase-path", spec(images={"pytorch": "UPPER/Case:tag"}), "spec.images.pytorch"),
    ("accuracy-tolerance-text", spec(serving={"accuracyTolerance": "abc"}),
     "spec.serving.accuracyTolerance"),
    ("learning-rate-text", spec(training={"learningRate": "fast"}), "spec.training.learningRate"),
    ("storage-size", spec(storage={"size": "two gigs"}), "spec.storage.size"),
    ("run-id", spec(benchmark={"runId": "-nope-"}), "spec.benchmark.runId"),
    # cross-field CEL rules
    ("learning-rate-zero", spec(training={"learningRate": "0"}), "spec.training.learningRate"),
    ("momentum-one", spec(training={"momentum": "1.0"}), "spec.training.momentum"),
    ("opt-above-max", spec(tensorrt={"optBatch": 256, "maxBatch": 128}), "spec.tensorrt.optBatch"),
    ("opt-below-min", spec(tensorrt={"minBatch": 32, "optBatch": 16}), "spec.tensorrt.optBatch"),
    ("concurrency-end-before-start",
     spec(benchmark={"perfAnalyzer": {"concurrency": {"start": 64, "end": 8}}}),
     "spec.benchmark.perfAnalyzer.concurrency.end"),
    ("concurrency-step-zero",
     spec(benchmark={"perfAnalyzer": {"concurrency": {"step": 0}}}),
     "spec.benchmark.perfAnalyzer.concurrency.step"),
    ("bls-alone", spec(serving={"models": ["bls"]}), "spec.serving.models"),
    ("perf-model-not-served",
     spec(serving={"models": ["onnx"]}, benchmark={"perfAnalyzer": {"models": ["tensorrt"]}}),
     "spec.benchmark.perfAnalyzer.models"),
    ("analyzer-model-not-served",
     spec(serving={"models": ["onnx", "bls"]}, benchmark={"modelAnalyzer": {"models": ["tensorrt"]}}),
     "spec.benchmark.modelAnalyzer.models"),
    ("tensorrt-served-but-disabled", spec(tensorrt={"enabled": False}), "spec.serving.models"),
    ("serving-batch-above-engine", spec(serving={"maxBatchSize": 256}), "spec.serving.models"),
    ("preferred-batch-above-max",
     spec(serving={"maxBatchSize": 16, "dynamicBatching": {"preferredBatchSizes": [8, 32]}},
          tensorrt={"optBatch": 16}),
     "spec.serving.dynamicBatching.preferredBatchSizes"),
    ("client-batch-above-max", spec(benchmark={"perfAnalyzer": {"batchSize": 256}}),
     "spec.benchmark.perfAnalyzer.batchSize"),
    ("clients-65", spec(benchmark={"perfAnalyzer": {"clients": 65}}),
     "spec.benchmark.perfAnalyzer.clients"),
    ("clients-with-request-rate",
     spec(benchmark={"perfAnalyzer": {"clients": 2, "load": {"mode": "requestRate"}}}),
     "spec.benchmark.perfAnalyzer.clients"),
    ("clients-with-repeats", spec(benchmark={"perfAnalyzer": {"clients": 2, "repeats": 2}}),
     "spec.benchmark.perfAnalyzer.clients"),
    ("clients-with-slo", spec(benchmark={"perfAnalyzer": {"clients": 2}, "slo": {"p99Ms": 5}}),
     "spec.benchmark.perfAnalyzer.clients"),
    ("existing-claim-with-size", spec(storage={"existingClaim": "models", "size": "5Gi"}),
     "spec.storage.existingClaim"),
    ("existing-claim-with-class", spec(storage={"existingClaim": "models", "storageClassName": "fast"}),
     "spec.storage.existingClaim"),
    ("cpu-only-with-gpus", spec(serving={"models": ["onnx", "bls"], "cpuOnly": True, "gpus": 1}),
     "spec.serving.gpus"),
    ("cpu-only-with-tensorrt", spec(serving={"cpuOnly": True, "gpus": 0}), "spec.serving.models"),
    ("replicas-on-rwo", spec(serving={"replicas": 2}), "spec.serving.replicas"),
    ("objective-unknown", spec(benchmark={"objective": "joules"}), "spec.benchmark.objective"),
    ("objective-at-slo-without-slo", spec(benchmark={"objective": "throughputAtSlo"}),
     "spec.benchmark.objective"),
]
IDS = [c[0] for c in CASES]

#: What both sides say, word for word, where a pattern or a type is refused.
WORDS = {
    "accuracy-tolerance-text": 'must be a decimal number between 0 and 1 written as a string, '
                               'for example "0.02"',
    "image-uppercase-path": "must be an image reference [registry[:port]/]path[:tag]"
                            "[@sha256:digest] with a lowercase registry and path, for example "
                            '"nvcr.io/nvidia/tritonserver:26.04-py3"',
    "image-with-space": "must be an image reference",
    "learning-rate-text": 'must be a decimal number above 0 written as a string, for example '
                          '"0.0025"',
    "storage-size": 'must be a Kubernetes quantity written as a string, for example "5Gi"',
    "run-id": 'beginning and ending with a letter or digit, for example "run-2"',
    "storage-size-yaml-number": "string",
    "cpu-bare-number": "string",
}


@pytest.fixture(scope="module")
def crd(control_plane, kubectl):
    """The generated CRD, installed and Established (shared, never deleted: other tests use it)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/mnistservings.mnist.serving.dev", "--timeout=60s")
    # Established can come a moment before the CEL rules and the REST endpoint serve.
    deadline = time.monotonic() + 30
    while kubectl.run("get", "mnistservings", "-A").returncode != 0:
        assert time.monotonic() < deadline, "mnistservings never became listable"
        time.sleep(0.2)
    return CRD


def render(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "render", "-"], input=text,
                          capture_output=True, text=True, timeout=60)


def test_the_base_resource_is_valid_on_both_sides(crd, namespace, kubectl):
    out = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(VALID))
    assert "created (server dry run)" in out
    assert render(yaml.safe_dump(VALID)).returncode == 0


#: YAML spellings kubectl turns into the right JSON type: both sides accept them.
SPELLINGS = """spec:
  training:
    epochs: 2.0          # a number with no fraction: JSON writes 2, an integer
  tensorrt:
    enabled: yes         # YAML 1.1's true
  storage:
    size: "1e3"          # quoted: the quantity 1000 as a string
  resources:
    train:
      requests: {cpu: "2", memory: 1Gi}
"""


def test_yaml_spellings_kubectl_accepts_render_accepts_too(crd, namespace, kubectl):
    text = document(SPELLINGS)
    out = kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=text)
    assert "created (server dry run)" in out
    p = render(text)
    assert p.returncode == 0, p.stderr
    pvc = next(o for o in yaml.safe_load_all(p.stdout) if o and o["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1e3"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_api_server_refuses_naming_the_field(crd, namespace, kubectl, case):
    name, patch, field = case
    p = kubectl.run("create", "-n", namespace, "-f", "-", input=document(patch))
    assert p.returncode != 0, f"the API server accepted it:\n{p.stdout}"
    error = p.stderr.strip()
    assert field in error, error
    assert WORDS.get(name, "") in error and "should match" not in error, error
    # nothing was stored
    assert kubectl.json("get", "mnistservings", "-n", namespace)["items"] == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_render_refuses_with_one_line_naming_the_field(case):
    name, patch, field = case
    p = render(document(patch))
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("mnist-serving render: error: "), lines[0]
    assert f"{field}:" in lines[0] or f"{field}[" in lines[0], lines[0]
    assert WORDS.get(name, "") in lines[0] and "^" not in lines[0], lines[0]
    assert p.stdout == ""


# --------------------------------------------------------------------------- only runtime can tell
def test_gpu_product_no_node_has_waits_without_harming_the_operator_or_a_neighbour(
        operator, pipeline_ns, kit, kubectl):
    """scheduling.gpuProduct is valid input, but no node offers that GPU: the
    engine Job (pinned to the product) cannot schedule. The resource stays at
    that stage (not Failed, nothing past it created), the operator keeps
    running, and a neighbour in the same namespace reaches Ready untouched."""
    from tests.harness.operator_process import wait_for

    ns = pipeline_ns
    kit.apply_cr(ns, "neighbour")
    kit.apply_cr(ns, "b200", {"scheduling": {"gpuProduct": "NVIDIA-B200"}})
    kit.wait_ready(ns, "neighbour", timeout=150)
    neighbour_jobs = {j["metadata"]["uid"] for j in kit.jobs_for(ns, "neighbour")}

    def engine_unschedulable():
        pods = [p for p in kit.pods_for(ns, "b200")
                if p["metadata"]["labels"].get("mnist.serving.dev/step") == "engine"]
        conds = [c for p in pods for c in p.get("status", {}).get("conditions", [])
                 if c["type"] == "PodScheduled" and c["status"] == "False"]
        return conds and conds[0]
    cond = wait_for("the engine pod unschedulable", engine_unschedulable, 90)
    assert cond["reason"] == "Unschedulable"
    time.sleep(3)  # a few reconcile passes (1 s timer) with the pod stuck
    st = kit.status(ns, "b200")
    assert st["phase"] == "BuildingEngine", st.get("phase")
    assert st["stages"]["engine"]["state"] == "Running", st["stages"]["engine"]
    assert st["stages"]["export"]["state"] == "Succeeded"
    assert kit.children(ns, "b200")["deployments"] == []
    assert operator.alive and "Traceback" not in operator.log_text()
    assert {j["metadata"]["uid"] for j in kit.jobs_for(ns, "neighbour")} == neighbour_jobs
    assert kit.status(ns, "neighbour")["phase"] == "Ready"
