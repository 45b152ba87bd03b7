"""End to end: the real operator (`mnist-serving operator`) on a real control plane.

kube-apiserver + etcd + controller-manager + scheduler, stage pods played by KWOK
on a fake 8-GPU node (kwok/stages.yaml writes each step's result JSON as its
termination message). Each test gets a fresh namespace and asserts on what a user
sees: `kubectl get`, the resource's status, Events, and the Jobs it made.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.harness.operator_process import CRD_NAME, REPO, wait_for

pytestmark = pytest.mark.cluster

JOB_STEPS = ("train", "export", "engine", "repo", "client", "bench-grpc", "bench-http", "analyze")
STAGE_CONDITIONS = ("Trained", "Exported", "EngineBuilt", "RepositoryReady", "Serving", "Verified",
                    "Benchmarked", "Analyzed")


def wait_ready_at(kit, ns: str, name: str, generation: int, timeout: float = 120) -> dict:
    """Ready for this generation (a spec change is not Ready until the operator saw it)."""
    seen: dict = {}

    def ready():
        st = (kit.get_cr(ns, name) or {}).get("status") or {}
        seen["status"] = st
        if st.get("phase") == "Failed":
            raise AssertionError(f"{name} failed: {st.get('message')}")
        return st if st.get("observedGeneration") == generation and st.get("phase") == "Ready" else None
    try:
        return wait_for(f"{ns}/{name} Ready at generation {generation}", ready, timeout)
    except AssertionError as e:
        st = seen.get("status") or {}
        stages = {k: (v.get("state"), v.get("reason"), v.get("message")) for k, v in (st.get("stages") or {}).items()}
        raise AssertionError(f"{e}\nphase {st.get('phase')}: {st.get('message')}\nstages: {stages}\n"
                             f"pods: {[(p['metadata']['name'], p['status'].get('phase')) for p in kit.pods_for(ns, name)]}") from None


def jobs_by_step(kit, ns: str, name: str) -> dict[str, dict[str, str]]:
    """step -> {job name: uid}"""
    out: dict[str, dict[str, str]] = {}
    for job in kit.jobs_for(ns, name):
        step = job["metadata"]["labels"]["mnist.serving.dev/step"]
        out.setdefault(step, {})[job["metadata"]["name"]] = job["metadata"]["uid"]
    return out


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


# --------------------------------------------------------------------------- 1. CRD and kubectl get
def test_crd_installs_and_kubectl_get_shows_the_printer_columns(mnist_crd, namespace, kubectl, kit):
    crd = kubectl.json("get", "crd", CRD_NAME)
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    assert "mnist" in crd["spec"]["names"]["shortNames"]

    kit.apply_cr(namespace, "printed", volume=False)
    kubectl("patch", "mnist", "printed", "-n", namespace, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"phase": "Ready", "model": {"accuracy": "0.9712"},
                                   "benchmark": {"bestThroughput": "9512.3",
                                                 "throughput": "9512.3"},
                                   "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                                   "message": "ok", "observedGeneration": 1,
                                                   "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}))
    header, row = kubectl("get", "mnist", "-n", namespace).splitlines()
    assert header.split() == ["NAME", "PHASE", "ACCURACY", "THROUGHPUT", "READY", "AGE"]
    assert row.split()[:5] == ["printed", "Ready", "0.9712", "9512.3", "True"]
    assert re.fullmatch(r"\d+s", row.split()[5])


# --------------------------------------------------------------------------- 2. the whole walk
def test_resource_walks_every_step_to_ready(pipeline_ns, operator, kit, kubectl, control_plane, tmp_path):
    ns = pipeline_ns
    cr = kit.apply_cr(ns, "demo")
    gen = cr["metadata"]["generation"]
    st = wait_ready_at(kit, ns, "demo", gen)

    # conditions per API conventions, every stage done
    assert st["observedGeneration"] == gen
    for c in st["conditions"]:
        assert set(c) >= {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}, c
        assert c["observedGeneration"] == gen and re.fullmatch(r"[A-Z][A-Za-z0-9]*", c["reason"]), c
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    assert "mnist_onnx" in ready["message"]
    for type_ in STAGE_CONDITIONS:
        assert condition(st, type_)["status"] == "True", condition(st, type_)

    # stages with job names, results in model / endpoints / benchmark
    jobs = jobs_by_step(kit, ns, "demo")
    for step in JOB_STEPS:
        rec = st["stages"][step]
        assert rec["state"] == "Succeeded", (step, rec)
        assert list(jobs[step]) == [rec["job"]], (step, rec, jobs.get(step))
        assert rec["startTime"] and rec["completionTime"]
    assert st["stages"]["serve"]["deployment"] == "demo-triton"
    assert st["model"]["accuracy"] == "0.9712" and st["model"]["epochs"] == 1
    assert st["model"]["served"] == "mnist_onnx,mnist_trt,mnist_pt,mnist_bls"
    assert st["endpoints"]["grpc"] == f"demo-triton.{ns}.svc:8001"
    assert st["endpoints"]["http"] == f"http://demo-triton.{ns}.svc:8000"
    perf = st["benchmark"]["perfAnalyzer"]
    assert set(perf) == {"mnist_onnx", "mnist_trt", "mnist_pt", "mnist_bls"}
    assert perf["mnist_onnx"]["grpc"]["bestInferPerSec"] == "1120.0"
    # Triton's metrics, read by the bench Job through the Service; KWOK's result carries
    # telemetry as a GPU node's Triton would serve it (c=1: 31 % util, 103 W, 1120 / 103)
    bench_job = next(j for j in kit.jobs_for(ns, "demo")
                     if j["metadata"]["labels"]["mnist.serving.dev/step"] == "bench-grpc")
    command = bench_job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--metrics-url") + 1] == f"http://demo-triton.{ns}.svc:8002/metrics"
    at_best = perf["mnist_onnx"]["grpc"]
    assert (at_best["gpuUtilAtBest"], at_best["powerWAtBest"], at_best["inferPerJouleAtBest"]) == \
        ("0.31", "103.0", "10.8"), at_best
    assert perf["mnist_onnx"]["http"]["points"] == 1
    assert st["benchmark"]["modelAnalyzer"]["mnist_onnx"]["bestConfig"] == "mnist_onnx_config_1"
    assert st["clientAccuracy"]["mnist_onnx"]["grpc"] == "0.9712"

    # what `kubectl get` prints
    row = kubectl("get", "mnist", "demo", "-n", ns, "--no-headers").split()
    assert row[:5] == ["demo", "Ready", "0.9712", "1120.0", "True"], row

    # the comparison a user draws from the cluster: table, CSV and plot
    out = tmp_path / "cmp"
    cmp = subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "compare", "--cluster",
                          "--kubeconfig", str(control_plane.kubeconfig), "-n", ns, "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert cmp.returncode == 0, cmp.stderr
    assert f"{ns}/demo" in cmp.stdout and "| mnist_onnx | grpc |" in cmp.stdout, cmp.stdout
    assert "1120.0" in (out / "compare.csv").read_text()
    assert "| 0/1 | 0.31 | 10.8 |" in cmp.stdout, cmp.stdout   # GPU util and infer/J at best
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # where the sweep ran: Triton's node and its GPUs as GPU feature discovery labels them
    server = st["stages"]["bench-grpc"]["environment"]["server"]
    labels = kubectl.json("get", "node", server["node"])["metadata"]["labels"]
    gpu = (f"{labels['nvidia.com/gpu.product']} x{labels['nvidia.com/gpu.count']} "
           f"({labels['nvidia.com/gpu.memory']} MiB)")
    assert server["gpu"] == gpu, server
    assert st["stages"]["bench-grpc"]["environment"]["node"], st["stages"]["bench-grpc"]
    assert gpu in cmp.stdout   # compare's environments table

    # the serving objects
    dep = kubectl.json("get", "deployment", "demo-triton", "-n", ns)
    assert dep["status"]["availableReplicas"] == 1
    assert dep["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    kubectl("get", "service", "demo-triton", "-n", ns)

    # Events for the transitions
    events = kit.events_for(ns, "demo")
    reasons = [(e["type"], e["reason"]) for e in events]
    assert ("Normal", "Ready") in reasons
    started = [e["message"].split(":")[0] for e in events if e["reason"] == "StageStarted"]
    succeeded = [e["message"].split(":")[0] for e in events if e["reason"] == "StageSucceeded"]
    for step in JOB_STEPS:
        assert started.count(step) == 1, (step, started)
        assert step in succeeded, (step, succeeded)
    assert not [e for e in events if e["type"] == "Warning"], events

    # kopf's e2e idempotency check: a few more passes create nothing new
    time.sleep(3)
    assert jobs_by_step(kit, ns, "demo") == jobs
    assert all(len(names) == 1 for names in jobs.values())
    after = kit.status(ns, "demo")
    assert after["phase"] == "Ready" and condition(after, "Ready")["lastTransitionTime"] == ready["lastTransitionTime"]
    assert [e for e in kit.events_for(ns, "demo") if e["type"] == "Normal"] == \
        [e for e in events if e["type"] == "Normal"]  # no new Events either


# --------------------------------------------------------------------------- 3. failure, then a fix
def test_failed_stage_is_reported_and_a_spec_fix_retries_it(pipeline_ns, operator, kit):
    ns = pipeline_ns
    broken = {"training": {"dataset": {"source": "idx", "path": "/simulate/missing/mnist"}},
              "retries": {"limit": 0}}
    kit.apply_cr(ns, "broken", broken)
    st = kit.wait_phase(ns, "broken", "Failed", timeout=60)

    train = st["stages"]["train"]
    assert (train["state"], train["reason"]) == ("Failed", "InvalidInput")
    assert "--data-dir: /simulate/missing/mnist does not exist" in train["message"]
    ready, trained = condition(st, "Ready"), condition(st, "Trained")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert ready["message"].startswith("train:") and "/simulate/missing/mnist" in ready["message"]
    assert (trained["status"], trained["reason"]) == ("False", "InvalidInput")
    assert st["stages"]["export"]["state"] == "Pending"
    assert kit.job_names(ns, "broken", "export") == []
    warnings = [e for e in kit.events_for(ns, "broken") if e["type"] == "Warning"]
    assert {"StageFailed", "Failed"} <= {e["reason"] for e in warnings}, warnings
    assert any("/simulate/missing/mnist" in e["message"] for e in warnings)
    (failed_job,) = kit.job_names(ns, "broken", "train")

    # the user fixes the data path: train runs again (new inputs, new Job) and the rest follows
    fixed = kit.patch_spec(ns, "broken", {"training": {"dataset": {"source": "offline", "path": ""}}})
    st = wait_ready_at(kit, ns, "broken", fixed["metadata"]["generation"])
    assert st["stages"]["train"]["state"] == "Succeeded" and st["stages"]["train"]["job"] != failed_job
    assert st["model"]["dataSource"] == "offline"
    wait_for("the failed Job to be deleted", lambda: failed_job not in kit.job_names(ns, "broken", "train"), 30)


def test_a_flaky_stage_is_retried_after_backoff(pipeline_ns, operator, kit):
    ns = pipeline_ns
    cr = kit.apply_cr(ns, "flaky-export-a", {"retries": {"limit": 1, "backoffSeconds": 1}})
    st = wait_ready_at(kit, ns, "flaky-export-a", cr["metadata"]["generation"])
    export = st["stages"]["export"]
    assert export["attempt"] == 1 and export["job"].endswith("-1")
    names = kit.job_names(ns, "flaky-export-a", "export")
    assert len(names) == 2 and {n[-2:] for n in names} == {"-0", "-1"}
    warnings = [e for e in kit.events_for(ns, "flaky-export-a") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["StageFailed"]
    assert "export (SimulatedFailure): attempt 0 failed" in warnings[0]["message"]


# --------------------------------------------------------------------------- 4. only what changed
def test_spec_change_reruns_only_the_affected_steps(pipeline_ns, operator, kit):
    ns = pipeline_ns
    cr = kit.apply_cr(ns, "delta")
    wait_ready_at(kit, ns, "delta", cr["metadata"]["generation"])
    before = jobs_by_step(kit, ns, "delta")
    deployment_uid = kit.kubectl.json("get", "deployment", "delta-triton", "-n", ns)["metadata"]["uid"]

    # a new concurrency range: only the two bench Jobs are new
    cr = kit.patch_spec(ns, "delta", {"benchmark": {"perfAnalyzer": {"concurrency": {"start": 1, "end": 5, "step": 4}}}})
    st = wait_ready_at(kit, ns, "delta", cr["metadata"]["generation"])
    after = wait_for("the old bench Jobs to go", lambda: (lambda j: j if all(len(v) == 1 for v in j.values())
                                                           else None)(jobs_by_step(kit, ns, "delta")), 30)
    changed = {s for s in JOB_STEPS if after[s] != before[s]}
    assert changed == {"bench-grpc", "bench-http"}
    assert st["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]["points"] == 2
    assert st["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]["concurrencyAtBest"] == 5
    assert kit.kubectl.json("get", "deployment", "delta-triton", "-n", ns)["metadata"]["uid"] == deployment_uid

    # a new learning rate: every step runs again
    cr = kit.patch_spec(ns, "delta", {"training": {"learningRate": "0.01"}})
    wait_ready_at(kit, ns, "delta", cr["metadata"]["generation"])
    final = wait_for("the stale Jobs to go", lambda: (lambda j: j if all(len(v) == 1 for v in j.values())
                                                         else None)(jobs_by_step(kit, ns, "delta")), 30)
    assert {s for s in JOB_STEPS if final[s] != after[s]} == set(JOB_STEPS)
    spec_changed = [e for e in kit.events_for(ns, "delta") if e["reason"] == "SpecChanged"]
    assert any(e["message"].startswith("train:") for e in spec_changed)


# --------------------------------------------------------------------------- 5. deletion
def test_deleting_the_resource_collects_every_child_but_a_kept_volume(pipeline_ns, operator, kit, kubectl):
    ns = pipeline_ns
    gone = kit.apply_cr(ns, "gone")
    kept = kit.apply_cr(ns, "kept", {"storage": {"keepOnDelete": True}})
    kinds = ("jobs", "pods", "deployments", "replicasets", "services", "persistentvolumeclaims")
    for name in ("gone", "kept"):  # deleted mid-pipeline, once Triton is up and benchmarks run
        made = wait_for(f"{name} to have every kind of child",
                        lambda: (lambda c: c if all(c[k] for k in kinds) else None)(kit.children(ns, name)), 90)
        assert gone["metadata"]["uid"] != kept["metadata"]["uid"] and made
    for name in ("gone", "kept"):  # the operator's finalizer (kopf's, for its timer) goes at once
        started = time.monotonic()
        kit.delete_cr(ns, name)
        assert time.monotonic() - started < 15, f"deleting {name} took {time.monotonic() - started:.0f}s"

    empty = {k: [] for k in kinds}
    wait_for("every child of gone to be collected", lambda: kit.children(ns, "gone") == empty, 60)
    wait_for("every child of kept but its volume to be collected",
             lambda: kit.children(ns, "kept") == {**empty, "persistentvolumeclaims": ["kept-model"]}, 60)
    pvc = kubectl.json("get", "pvc", "kept-model", "-n", ns)
    assert not pvc["metadata"].get("ownerReferences") and pvc["status"]["phase"] == "Bound"


# --------------------------------------------------------------------------- 5b. one GPU
def test_one_gpu_node_serves_then_lends_its_gpu_to_model_analyzer(pipeline_ns, operator, kit,
                                                                  kubectl, gpu_nodes):
    """kind on a workstation: one node with one GPU. Triton holds it once
    serving; the analyze pod (model-analyzer + its own Triton) needs it too,
    so the operator scales Triton to 0 while analyze runs, then back."""
    ns, name = pipeline_ns, "slow-analyze-onegpu"   # analyze takes 20 s (kwok/stages.yaml)
    product = "NVIDIA-ONE-GPU-TEST"
    (node,) = gpu_nodes(1, gpus=1, product=product)
    kit.apply_cr(ns, name, {"scheduling": {"gpuProduct": product}})

    def paused():
        st = kit.status(ns, name)
        return st if condition(st, "Serving").get("reason") == "PausedForAnalysis" else None
    st = wait_for("Triton paused for analyze", paused, 120)
    assert st["phase"] == "Analyzing"
    assert (condition(st, "Ready")["status"], condition(st, "Ready")["reason"]) == \
        ("False", "Progressing")
    dep = kubectl.json("get", "deployment", f"{name}-triton", "-n", ns)
    assert dep["spec"]["replicas"] == 0

    def analyze_pod_on_the_node():
        pods = [p for p in kit.pods_for(ns, name)
                if p["metadata"]["labels"].get("mnist.serving.dev/step") == "analyze"]
        return pods if pods and all(p["spec"].get("nodeName") == node for p in pods) else None
    wait_for("the analyze pod to take the node's one GPU", analyze_pod_on_the_node, 60)

    st = kit.wait_ready(ns, name, timeout=120)
    assert st["stages"]["analyze"]["state"] == "Succeeded"
    assert st["stages"]["serve"]["reason"] == "Available"
    assert condition(st, "Serving")["status"] == "True"
    triton = [p for p in kit.pods_for(ns, name)
              if p["metadata"]["labels"].get("app.kubernetes.io/component") == "triton"
              and not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["nodeName"] for p in triton] == [node]
    events = [(e["type"], e["reason"]) for e in kit.events_for(ns, name)]
    assert ("Normal", "ServingPaused") in events
    assert not [e for e in events if e[0] == "Warning"], events


# --------------------------------------------------------------------------- 6. least privilege
@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_operator_under_its_own_service_account_reaches_ready(pipeline_ns, operator_factory, kit, kubectl,
                                                              sa_kubeconfig, scope):
    ns = pipeline_ns
    rbac = REPO / "manifests" / "rbac" / ("namespaced" if scope == "namespaced" else "")
    rendered = kubectl("kustomize", str(rbac)).replace("namespace: mnist-serving-system", f"namespace: {ns}")
    binding = f"mnist-serving-operator-{ns}"
    # the ClusterRoleBinding is cluster-scoped: one per test namespace, removed afterwards
    rendered = re.sub(r"(kind: ClusterRoleBinding\nmetadata:\n(?:  .*\n)*?)  name: mnist-serving-operator\n",
                      rf"\1  name: {binding}\n", rendered)
    kubectl("apply", "-f", "-", input=rendered)
    try:
        kc = sa_kubeconfig(ns, "mnist-serving-operator")
        assert kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kc) == \
            f"system:serviceaccount:{ns}:mnist-serving-operator"
        assert kubectl.run("auth", "can-i", "create", "jobs", "-n", ns, kubeconfig=kc).stdout.strip() == "yes"
        assert kubectl.run("auth", "can-i", "delete", "nodes", kubeconfig=kc).stdout.strip() == "no"
        assert kubectl.run("auth", "can-i", "get", "secrets", "-n", ns, kubeconfig=kc).stdout.strip() == "no"
        # as manifests/manager runs it: cluster-wide with the ClusterRole, one namespace with the Role
        if scope == "cluster":
            operator_factory(all_namespaces=True, kubeconfig=kc)
        else:
            operator_factory([ns], kubeconfig=kc)
        cr = kit.apply_cr(ns, "rbac")
        st = wait_ready_at(kit, ns, "rbac", cr["metadata"]["generation"])
        assert st["stages"]["analyze"]["state"] == "Succeeded"
        assert any(e["reason"] == "Ready" for e in kit.events_for(ns, "rbac"))
    finally:
        if scope == "cluster":
            kubectl.run("delete", "clusterrolebinding", binding, "--ignore-not-found")


# --------------------------------------------------------------------------- 7. the YAML bundle
def test_kustomize_bundle_passes_a_server_side_dry_run(mnist_crd, kubectl):
    # A server-side dry run creates nothing, so the bundle's own Namespace does not exist yet
    # for the objects inside it: on a fresh cluster, `kubectl create namespace` it first.
    created = kubectl.run("create", "namespace", "mnist-serving-system").returncode == 0
    try:
        out = kubectl("apply", "-k", str(REPO / "manifests"), "--dry-run=server")
    finally:
        if created:
            kubectl.run("delete", "namespace", "mnist-serving-system", "--wait=false")
    for kind_name in ("customresourcedefinition.apiextensions.k8s.io/mnistservings.mnist.serving.dev",
                      "serviceaccount/mnist-serving-operator", "clusterrole.rbac.authorization.k8s.io/mnist-serving-operator",
                      "clusterrolebinding.rbac.authorization.k8s.io/mnist-serving-operator",
                      "deployment.apps/mnist-serving-operator"):
        assert kind_name in out, out
    assert "(server dry run)" in out
    assert kubectl.run("get", "deployment", "mnist-serving-operator", "-n", "mnist-serving-system").returncode != 0
