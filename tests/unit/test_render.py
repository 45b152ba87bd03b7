"""`mnist-serving render FILE [-n NS]`: every object as YAML, or one line per error."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from mnist_operator.tools import render as R

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "mnistserving.yaml"
K8S_VERSION = "1.36.0"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "render", *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_render_the_sample_prints_every_object_as_valid_kubernetes_yaml():
    res = cli(str(SAMPLE), "-n", "ml")
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds[0] == ("PersistentVolumeClaim", "demo-model")
    assert kinds[-2:] == [("Deployment", "demo-triton"), ("Service", "demo-triton")]
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert [j["metadata"]["labels"]["mnist.serving.dev/step"] for j in jobs] == [
        "train", "export", "engine", "repo", "client", "bench-grpc", "bench-http", "analyze"]
    assert all(j["metadata"]["name"].endswith("-0") for j in jobs)
    for d in docs:
        assert d["metadata"]["namespace"] == "ml"
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    # the sample's fp16 engine reaches the engine stage's command line
    engine = next(j for j in jobs if j["metadata"]["labels"]["mnist.serving.dev/step"] == "engine")
    cmd = engine["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--precision") + 1] == "fp16"


def test_render_is_deterministic_and_uses_the_resource_namespace_by_default():
    text = SAMPLE.read_text()
    assert R.to_yaml(R.render(text)) == R.to_yaml(R.render(text))
    assert {o["metadata"]["namespace"] for o in R.render(text)} == {"default"}
    own = text.replace("name: demo\n", "name: demo\n  namespace: team-a\n")
    assert {o["metadata"]["namespace"] for o in R.render(own)} == {"team-a"}
    assert {o["metadata"]["namespace"] for o in R.render(own, "other")} == {"other"}


def test_bad_spec_exits_2_with_one_line_per_error_naming_the_field():
    bad = yaml.safe_load(SAMPLE.read_text())
    bad["spec"]["training"]["epochs"] = -1
    bad["spec"]["tensorrt"]["optBatch"] = 512
    bad["spec"]["serving"]["models"] = ["onnx", "resnet"]
    res = cli("-", stdin=yaml.safe_dump(bad))
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "mnist-serving render: error: spec.training.epochs: must be >= 1 (got -1)",
        "mnist-serving render: error: spec.serving.models[1]: unknown value 'resnet'; "
        "must be one of onnx, tensorrt, pytorch, bls",
    ]
    # cross-field rules run once the single fields are valid
    bad["spec"]["training"]["epochs"] = 1
    bad["spec"]["serving"]["models"] = ["onnx", "tensorrt"]
    res = cli("-", stdin=yaml.safe_dump(bad))
    assert res.returncode == 2
    assert res.stderr.strip() == ("mnist-serving render: error: spec.tensorrt.optBatch: "
                                  "must be <= maxBatch (128)")


def test_bad_documents_name_what_is_wrong():
    res = cli("-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n")
    assert res.returncode == 2
    errors = res.stderr.strip().splitlines()
    assert any("apiVersion: must be mnist.serving.dev/v1alpha1" in e for e in errors)
    assert any("kind: must be MnistServing" in e for e in errors)
    assert any("metadata.name: 'Bad_Name' is not a DNS-1123 subdomain" in e for e in errors)
    missing = cli(str(ROOT / "no-such-file.yaml"))
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("no-such-file.yaml: No such file or directory")
    assert cli("-", stdin="a: [\n").returncode == 2
    assert "no MnistServing" in cli("-", stdin="").stderr


def test_several_resources_in_one_file():
    one = yaml.safe_load(SAMPLE.read_text())
    two = {**one, "metadata": {"name": "second"},
           "spec": {"serving": {"models": ["onnx"]}, "tensorrt": {"enabled": False}}}
    objs = R.render(yaml.safe_dump_all([one, two]))
    instances = {o["metadata"]["labels"]["app.kubernetes.io/instance"] for o in objs}
    assert instances == {"demo", "second"}
    bad = {**two, "spec": {"training": {"epochs": 0}}}
    res = cli("-", stdin=yaml.safe_dump_all([one, bad]))
    assert res.returncode == 2
    assert res.stderr.strip() == ("mnist-serving render: error: document 2: spec.training.epochs: "
                                  "must be >= 1 (got 0)")


def test_render_with_model_analyzer_adds_a_valid_analyze_job_with_its_triton_sidecar():
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"]["benchmark"]["modelAnalyzer"]["enabled"] = True
    res = cli("-", "-n", "ml", stdin=yaml.safe_dump(doc))
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    analyze = [d for d in docs if d["kind"] == "Job"
               and d["metadata"]["labels"]["mnist.serving.dev/step"] == "analyze"]
    assert len(analyze) == 1
    kubernetes_validate.validate(analyze[0], K8S_VERSION, strict=True)
    pod = analyze[0]["spec"]["template"]["spec"]
    sidecar = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    assert sidecar and "--model-control-mode=explicit" in " ".join(sidecar[0].get("command", []) + sidecar[0].get("args", []))


def test_render_with_the_operators_defaults_prints_what_the_operator_creates(tmp_path):
    """With the operator's MNIST_SERVING_DEFAULT_* variables (the chart's stageDefaults),
    render prints the objects the operator's pass creates for the same resource: the
    first passes' claim, service account and train Job are compared whole (but
    ownerReferences, which render leaves out)."""
    from datetime import datetime, timezone

    from mnist_operator.api import site_defaults
    from mnist_operator.core.reconcile import reconcile

    env = {"MNIST_SERVING_DEFAULT_IMAGE_PYTORCH": "registry.local/pytorch:1",
           "MNIST_SERVING_DEFAULT_GPUS_TRAINING": "2",
           "MNIST_SERVING_DEFAULT_NODE_SELECTOR": '{"pool": "gpu"}',
           "MNIST_SERVING_DEFAULT_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]'}
    env_file = tmp_path / "operator.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    res = cli(str(SAMPLE), "-n", "ml", "--defaults-env", str(env_file))
    assert res.returncode == 0, res.stderr
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(res.stdout) if d}

    cr = {**yaml.safe_load(SAMPLE.read_text()), "metadata": {
        "name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1}}
    observed = {"jobs": [], "pods": [], "deployment": None, "service": None, "pvc": None,
                "account": None, "nodes": {}}
    created: dict = {}
    for _ in range(2):   # the claim first, the train Job once the claim exists
        decision = reconcile(site_defaults.with_defaults(cr, site_defaults.from_env(env)),
                             observed, datetime(2026, 12, 1, tzinfo=timezone.utc))
        for obj in decision.create:
            created[(obj["kind"], obj["metadata"]["name"])] = obj
            if obj["kind"] == "PersistentVolumeClaim":
                observed["pvc"] = {**obj, "status": {"phase": "Bound"}}
    train = next(k for k, o in created.items()
                 if o["metadata"].get("labels", {}).get("mnist.serving.dev/step") == "train")
    assert {"PersistentVolumeClaim", "ServiceAccount", "Job"} == {k for k, _ in created}
    for key, obj in created.items():
        obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}}
        assert rendered[key] == obj, key
    pod = rendered[train]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/pytorch:1"
    assert pod["nodeSelector"] == {"pool": "gpu"}


def test_render_refuses_a_bad_operator_default_naming_the_variable(tmp_path):
    env_file = tmp_path / "operator.env"
    env_file.write_text("MNIST_SERVING_DEFAULT_GPUS_SERVING=lots\n")
    res = cli(str(SAMPLE), "--defaults-env", str(env_file))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("mnist-serving render: error: operator defaults: "
                          "MNIST_SERVING_DEFAULT_GPUS_SERVING: must be an integer (got 'lots')\n")
