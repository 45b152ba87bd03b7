"""Pure object builders: names, labels, owner references, GPUs, volumes, scheduling."""
from __future__ import annotations

import re
from dataclasses import replace

import kubernetes_validate
import pytest

from mnist_operator.core import builders as B
from mnist_operator.core import pipeline as P
from mnist_operator.api.spec import SpecError, parse_spec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
K8S_VERSION = "1.36.0"


GPU = "nvidia.com/gpu"


def make_cr(spec: dict | None = None, name: str = "demo", uid: str | None = "uid-1") -> dict:
    md = {"name": name, "namespace": "ml"}
    if uid:
        md["uid"] = uid
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing", "metadata": md,
            "spec": spec or {}}


def objects(spec: dict | None = None, **kw) -> dict[str, dict]:
    """desired_objects keyed by kind/step (Job) or kind."""
    out = {}
    for o in B.desired_objects(make_cr(spec, **kw)):
        step = o["metadata"]["labels"].get(B.LABEL_STEP)
        out[f"Job/{step}" if o["kind"] == "Job" else o["kind"]] = o
    return out


def pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def main_container(job: dict) -> dict:
    return pod(job)["containers"][0]


# --------------------------------------------------------------------------- names
def test_child_names_are_dns_labels_even_for_long_or_dotted_cr_names():
    long = "a" * 200
    for cr_name in ("demo", long, "my.model.v2", "x" * 62):
        for part in ("model", "triton", "bench-http-abcdef-12"):
            name = B.child_name(cr_name, part)
            assert len(name) <= 63 and DNS_LABEL.match(name), name
            assert name.endswith(part)
    assert B.child_name("demo", "triton") == "demo-triton"
    # two long names that share a prefix still get different children
    assert B.child_name(long + "1", "model") != B.child_name(long + "2", "model")


def test_job_names_are_deterministic_and_change_with_the_spec_and_attempt():
    spec = parse_spec({})
    step = next(s for s in B.plan_for(make_cr(), spec) if s.name == "bench-grpc")
    name = B.job_name("demo", step, 0)
    assert name == f"demo-bench-grpc-{step.fingerprint[:6]}-0"
    assert B.job_name("demo", step, 0) == name             # a restart finds the same Job
    assert B.job_name("demo", step, 1) == name[:-1] + "1"  # a retry is a new Job
    changed = parse_spec({"benchmark": {"perfAnalyzer": {"concurrency": {"end": 129}}}})
    step2 = next(s for s in B.plan_for(make_cr(), changed) if s.name == "bench-grpc")
    assert B.job_name("demo", step2, 0) != name             # a spec change is a new Job
    train = [s for s in B.plan_for(make_cr(), spec) if s.name == "train"][0]
    train2 = [s for s in B.plan_for(make_cr(), changed) if s.name == "train"][0]
    assert B.job_name("demo", train, 0) == B.job_name("demo", train2, 0)  # untouched steps keep theirs
    assert len(B.job_name("z" * 253, step, 20)) <= 63


# --------------------------------------------------------------------------- labels and owners
def test_every_object_and_pod_template_is_labelled_and_owned():
    objs = B.desired_objects(make_cr())
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "ServiceAccount"] + ["Job"] * 8 + \
        ["Deployment", "Service"]
    for o in objs:
        lab = o["metadata"]["labels"]
        assert lab[B.LABEL_NAME] == "mnist-serving" and lab[B.LABEL_INSTANCE] == "demo"
        assert lab[B.LABEL_MANAGED_BY] == "mnist-serving-operator"
        assert o["metadata"]["namespace"] == "ml"
        assert o["metadata"]["ownerReferences"] == [{
            "apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing", "name": "demo",
            "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
        if "template" in o.get("spec", {}):
            assert o["spec"]["template"]["metadata"]["labels"][B.LABEL_INSTANCE] == "demo"
    components = {o["metadata"]["labels"][B.LABEL_COMPONENT] for o in objs}
    assert components == {"model-volume", "runner", "train", "export", "engine", "repo", "client",
                          "bench-grpc", "bench-http", "analyze", "triton"}
    for o in objs:
        if o["kind"] == "Job":
            lab = o["metadata"]["labels"]
            tmpl = o["spec"]["template"]["metadata"]["labels"]
            assert lab[B.LABEL_STEP] == tmpl[B.LABEL_STEP] == lab[B.LABEL_COMPONENT]
            assert len(lab[B.LABEL_FINGERPRINT]) == 12
            assert tmpl[B.LABEL_FINGERPRINT] == lab[B.LABEL_FINGERPRINT]
            assert lab[B.LABEL_FINGERPRINT][:6] in o["metadata"]["name"]


def test_long_cr_names_give_valid_label_values():
    objs = B.desired_objects(make_cr(name="n" * 120))
    for o in objs:
        assert len(o["metadata"]["labels"][B.LABEL_INSTANCE]) <= 63
        assert len(o["metadata"]["name"]) <= 63


def test_no_owner_reference_without_a_uid_or_with_keep_on_delete():
    assert all("ownerReferences" not in o["metadata"] for o in B.desired_objects(make_cr(uid=None)))
    kept = objects({"storage": {"keepOnDelete": True}})
    assert "ownerReferences" not in kept["PersistentVolumeClaim"]["metadata"]
    assert "ownerReferences" in kept["Deployment"]["metadata"]


# --------------------------------------------------------------------------- volume
def test_pvc_and_existing_claim():
    pvc = objects({"storage": {"size": "5Gi", "storageClassName": "fast",
                               "accessMode": "ReadWriteMany"}})["PersistentVolumeClaim"]
    assert pvc["metadata"]["name"] == "demo-model"
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "fast",
                           "resources": {"requests": {"storage": "5Gi"}}}
    assert objects()["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    shared = objects({"storage": {"existingClaim": "team-models"}})
    assert "PersistentVolumeClaim" not in shared
    for o in shared.values():
        if "template" in o.get("spec", {}):
            vols = {v["name"]: v for v in pod(o)["volumes"]}
            assert vols["work"]["persistentVolumeClaim"]["claimName"] == "team-models"


def test_every_pod_mounts_the_volume_at_work_and_rwo_pods_share_a_node():
    objs = objects()
    for key, o in objs.items():
        if "template" not in o.get("spec", {}):
            continue
        p = pod(o)
        mounts = {m["name"]: m["mountPath"] for m in p["containers"][0]["volumeMounts"]}
        assert mounts["work"] == "/work", key
        term = p["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {B.LABEL_NAME: "mnist-serving",
                                                        B.LABEL_INSTANCE: "demo"}
        # the pod matches its own term (the scheduler's rule for the first pod)
        labels = o["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in term["labelSelector"]["matchLabels"].items())
    rwx = objects({"storage": {"accessMode": "ReadWriteMany"}, "serving": {"replicas": 3}})
    assert all("affinity" not in pod(o) for o in rwx.values() if "template" in o.get("spec", {}))
    assert rwx["Deployment"]["spec"]["replicas"] == 3


def test_replicas_with_read_write_once_are_refused():
    with pytest.raises(SpecError) as exc:
        B.desired_objects(make_cr({"serving": {"replicas": 2}}))
    assert "spec.serving.replicas" in str(exc.value) and "ReadWriteMany" in str(exc.value)


# --------------------------------------------------------------------------- step Jobs
def test_step_job_runs_the_stage_cli_in_the_stock_image_with_the_package_from_init():
    objs = objects()
    spec = parse_spec({})
    step = next(s for s in B.plan_for(make_cr(), spec) if s.name == "train")
    job = objs["Job/train"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    p = pod(job)
    assert p["restartPolicy"] == "Never"
    c = main_container(job)
    assert c["image"] == spec.images.pytorch
    assert c["command"] == ["python3", "-m", "mnist_jobs.train", *step.args,
                            "--result", "/dev/termination-log"]
    assert "--device" in c["command"] and c["command"][c["command"].index("--device") + 1] == "cuda"
    assert c["command"][c["command"].index("--out") + 1] == "/work/artifacts"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    init = p["initContainers"][0]
    assert init["image"] == spec.images.stages
    assert init["command"] == ["cp", "-R", "/opt/mnist-serving/jobs/.", "/mnt/stages/"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["PYTHONPATH"] == "/mnt/stages"
    stages_vol = {v["name"]: v for v in p["volumes"]}["stages"]
    assert stages_vol == {"name": "stages", "emptyDir": {}}
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["stages"] == "/mnt/stages"
    assert objs["Job/bench-grpc"]["spec"]["template"]["spec"]["containers"][0]["image"] == spec.images.sdk
    bench = main_container(objs["Job/bench-grpc"])["command"]
    assert bench[bench.index("--url") + 1] == "demo-triton.ml.svc:8001"
    # Triton's metrics, sampled during each point, through the Service's metrics port
    assert bench[bench.index("--metrics-url") + 1] == "http://demo-triton.ml.svc:8002/metrics"
    service_ports = {p["name"]: p["port"] for p in objs["Service"]["spec"]["ports"]}
    assert service_ports["metrics"] == 8002


def test_gpu_requests_follow_the_step():
    objs = objects({"training": {"gpus": 2}, "tensorrt": {"gpus": 1}})
    res = main_container(objs["Job/train"])["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == "2"
    assert main_container(objs["Job/engine"])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    rwx = objects({"storage": {"accessMode": "ReadWriteMany"}})
    for cpu_step in ("repo", "client", "bench-grpc"):
        assert GPU not in main_container(objs[f"Job/{cpu_step}"])["resources"]["limits"]
        # ReadWriteOnce (default): they share Triton's GPU node, so they tolerate its taint
        assert gpu_taint in pod(objs[f"Job/{cpu_step}"])["tolerations"]
        # ReadWriteMany: GPU-less pods stay off GPU nodes
        assert "tolerations" not in pod(rwx[f"Job/{cpu_step}"])
    assert gpu_taint in pod(objs["Job/train"])["tolerations"]
    assert gpu_taint in pod(rwx["Job/train"])["tolerations"]
    cpu = objects({"training": {"gpus": 0}})
    assert GPU not in main_container(cpu["Job/train"])["resources"]["limits"]
    cmd = main_container(cpu["Job/train"])["command"]
    assert cmd[cmd.index("--device") + 1] == "cpu"


def test_engine_is_pinned_to_the_gpu_product_and_scheduling_applies_everywhere():
    objs = objects({"scheduling": {
        "gpuProduct": "NVIDIA-L4", "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]}})
    assert pod(objs["Job/engine"])["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert pod(objs["Deployment"])["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert pod(objs["Job/train"])["nodeSelector"] == {"pool": "gpu"}   # any GPU trains
    for key, o in objs.items():
        if "template" in o.get("spec", {}):
            assert {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"} in \
                pod(o)["tolerations"], key
    assert "nodeSelector" not in pod(objects()["Job/engine"])


def test_disabled_steps_get_no_job():
    objs = objects({"tensorrt": {"enabled": False}, "serving": {"models": ["onnx", "bls"]},
                    "benchmark": {"modelAnalyzer": {"enabled": False},
                                  "perfAnalyzer": {"protocols": ["grpc"]}}})
    assert "Job/engine" not in objs and "Job/analyze" not in objs and "Job/bench-http" not in objs
    assert "Job/serve" not in objs and "Deployment" in objs


def test_analyze_pod_has_a_triton_sidecar_and_model_analyzer_in_remote_mode():
    job = objects({"scheduling": {"gpuProduct": "NVIDIA-L4"}})["Job/analyze"]
    p = pod(job)
    sidecar = [c for c in p["initContainers"] if c["name"] == "triton"][0]
    assert sidecar["restartPolicy"] == "Always"     # native sidecar: ends with the pod
    assert p["initContainers"][0]["name"] == "stages"
    assert "--model-control-mode=explicit" in sidecar["command"]
    assert "--model-repository=/work/model_repo" in sidecar["command"]
    assert sidecar["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    c = main_container(job)
    assert GPU not in c["resources"]["limits"]      # the GPU is the sidecar's
    cmd = c["command"]
    assert cmd[:3] == ["python3", "-m", "mnist_jobs.analyze"]
    pairs = dict(zip(cmd[3::1], cmd[4::1]))
    assert pairs["--triton-launch-mode"] == "remote"
    assert pairs["--triton-http-endpoint"] == "localhost:8000"
    assert pairs["--triton-grpc-endpoint"] == "localhost:8001"
    assert pairs["--triton-metrics-url"] == "http://localhost:8002/metrics"
    assert cmd[-2:] == ["--result", "/dev/termination-log"]
    assert p["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-L4"


@pytest.mark.parametrize("step", ["train", "export", "engine", "repo", "client", "bench-grpc",
                                  "bench-http", "analyze"])
def test_every_job_command_parses_with_its_stage_cli(step, monkeypatch):
    # The real stage parser reads the Job's command line (a flag it does not know
    # raises InputError); run_stage is replaced so nothing runs.
    import importlib
    cmd = main_container(objects()[f"Job/{step}"])["command"]
    module = importlib.import_module(cmd[2])
    parsed = {}

    def parse_only(name, parser, fn, argv):
        parsed["args"] = parser.parse_args(argv)
        return 0
    monkeypatch.setattr(module, "run_stage", parse_only)
    assert module.main(cmd[3:]) == 0
    a = parsed["args"]
    assert str(a.result) == "/dev/termination-log"
    if step == "analyze":
        assert a.triton_launch_mode == "remote" and a.models == "mnist_onnx,mnist_trt,mnist_pt,mnist_bls"
        assert a.triton_metrics_url == "http://localhost:8002/metrics"


def test_build_step_job_refuses_the_serve_step():
    cr, spec = make_cr(), parse_spec({})
    serve = next(s for s in B.plan_for(cr, spec) if s.long_running)
    with pytest.raises(ValueError, match="serve"):
        B.build_step_job(cr, spec, serve, 0)


# --------------------------------------------------------------------------- Triton
def test_triton_deployment_and_service():
    cr, spec = make_cr({"serving": {"gpus": 2}}), parse_spec({"serving": {"gpus": 2}})
    serve = next(s for s in B.plan_for(cr, spec) if s.long_running)
    dep = B.build_triton_deployment(cr, spec, serve)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:2] == ["tritonserver", "--model-repository=/work/model_repo"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001,
                                                                     "metrics": 8002}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations[B.ANNOTATION_FINGERPRINT] == serve.fingerprint
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    svc = B.build_triton_service(cr, spec)
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"] == sel
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    ep = B.endpoints(cr)
    assert ep.host == "demo-triton.ml.svc"
    assert ep.as_status()["grpc"] == "demo-triton.ml.svc:8001"


def test_a_new_model_repository_rolls_the_pods_and_a_bench_change_does_not():
    def annotation(spec):
        return objects(spec)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            B.ANNOTATION_FINGERPRINT]
    base = annotation({})
    assert annotation({"serving": {"instances": 2}}) != base
    assert annotation({"training": {"epochs": 3}}) != base
    assert annotation({"benchmark": {"perfAnalyzer": {"batchSize": 4}}}) == base


def test_every_built_object_is_a_valid_kubernetes_object():
    for spec in ({}, {"storage": {"existingClaim": "x", "accessMode": "ReadWriteMany"},
                      "serving": {"replicas": 2, "models": ["onnx"], "cpuOnly": True, "gpus": 0},
                      "tensorrt": {"enabled": False},
                      "scheduling": {"tolerations": [{"key": "a", "operator": "Equal", "value": "b",
                                                      "effect": "NoExecute",
                                                      "tolerationSeconds": 30}]}}):
        for o in B.desired_objects(make_cr(spec)):
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_triton_serves_the_repository_of_its_serve_step():
    from pathlib import PurePosixPath
    spec = parse_spec({})
    serve = next(s for s in P.plan(spec, P.Layout(PurePosixPath("/work"))) if s.name == "serve")
    base = B.build_triton_deployment(make_cr(), spec, serve)
    assert "--model-repository=/work/model_repo" in main_container(base)["command"]
    tuned = B.build_triton_deployment(make_cr(), spec, replace(
        serve, name="serve-tuned", params=replace(serve.params, model_repo="/work/model_repo_tuned"),
        fingerprint="f" * 12, needs=("repo-tuned",)))
    assert "--model-repository=/work/model_repo_tuned" in main_container(tuned)["command"]
