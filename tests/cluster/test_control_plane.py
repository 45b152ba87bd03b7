"""Smoke tests: the cluster tier is a real control plane, and KWOK plays pods as the operator expects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.control_plane import K8S_VERSION, REPO, pid_alive

pytestmark = pytest.mark.cluster

RESULT_ANN = "mnist.serving.dev/simulated-result"
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.mnist.serving.dev
spec:
  group: test.mnist.serving.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
          status:
            type: object
            properties:
              phase: {type: string}
"""


def wait_for(what, predicate, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def job_manifest(name, *, annotations=None, labels=None, gpus=1, backoff_limit=0, tolerate=True,
                 node_selector=None):
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    spec = {
        "restartPolicy": "Never",
        "containers": [{"name": "stage", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                        "command": ["python", "-m", "mnist_jobs.train"], "resources": resources}],
    }
    if tolerate:
        spec["tolerations"] = TOLERATE_GPU
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {
            "metadata": {"annotations": annotations or {}, "labels": labels or {}}, "spec": spec}},
    }


def job_condition(kubectl, ns, name):
    job = kubectl.json("get", "job", name, "-n", ns)
    conds = {c["type"]: c for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"}
    for t in ("Complete", "Failed"):
        if t in conds:
            return conds[t]
    return None


def job_pods(kubectl, ns, name):
    return kubectl.json("get", "pods", "-n", ns, "-l", f"job-name={name}")["items"]


# --------------------------------------------------------------------------- API tier

def test_api_server_is_the_pinned_release(control_plane, kubectl):
    version = kubectl.json("version")
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION
    assert version["clientVersion"]["gitVersion"] == K8S_VERSION
    status, body = control_plane.api_get("/readyz?verbose")
    assert status == 200 and "readyz check passed" in body


def test_crd_install_printer_columns_and_schema(namespace, kubectl):
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.mnist.serving.dev", "--timeout=30s")
    kubectl("apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "test.mnist.serving.dev/v1", "kind": "Widget",
                              "metadata": {"name": "w1"}, "spec": {"size": 3}}))
    table = kubectl("get", "widgets", "-n", namespace)
    assert table.split("\n")[0].split() == ["NAME", "SIZE", "PHASE"]
    assert table.split("\n")[1].split()[:2] == ["w1", "3"]
    # the status subresource: a status written through the main resource is dropped ...
    kubectl("patch", "widget", "w1", "-n", namespace, "--type=merge", "-p", '{"status":{"phase":"Main"}}')
    assert "status" not in kubectl.json("get", "widget", "w1", "-n", namespace)
    # ... and only the /status endpoint sets it
    kubectl("patch", "widget", "w1", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", '{"status":{"phase":"Ready"}}')
    assert kubectl.json("get", "widget", "w1", "-n", namespace)["status"] == {"phase": "Ready"}
    # the structural schema is enforced by the server
    bad = kubectl.run("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "test.mnist.serving.dev/v1", "kind": "Widget", "metadata": {"name": "w2"},
         "spec": {"size": 42}}))
    assert bad.returncode != 0 and "spec.size" in bad.stderr and "less than or equal to 10" in bad.stderr


PROJECT_CRD = REPO / "manifests" / "crd" / "mnistservings.yaml"


def _project_crd_test(kubectl):
    kubectl("apply", "--server-side", "-f", str(PROJECT_CRD))
    name = json.loads(kubectl("create", "--dry-run=client", "-o", "json", "-f", str(PROJECT_CRD)))["metadata"]["name"]
    kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    plural = name.split(".", 1)[0]
    out = kubectl.run("get", plural, "-A")
    assert out.returncode == 0, out.stderr


if PROJECT_CRD.exists():  # the operator's CRD arrives from another change; test it as soon as it does
    def test_project_crd_installs(control_plane, kubectl):
        _project_crd_test(kubectl)


def test_duplicate_create_is_409(namespace, api_client):
    core = client.CoreV1Api(api_client)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="once"), data={"a": "1"})
    core.create_namespaced_config_map(namespace, body)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(namespace, body)
    assert err.value.status == 409
    assert json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_service_account_kubeconfig_is_limited_by_its_role(namespace, kubectl, sa_kubeconfig):
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list,watch", "--resource=configmaps")
    kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
            f"--serviceaccount={namespace}:reader")
    kubectl("create", "configmap", "visible", "-n", namespace, "--from-literal=k=v")
    kc = sa_kubeconfig(namespace, "reader")

    assert kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kc) == \
        f"system:serviceaccount:{namespace}:reader"
    assert "visible" in kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc)
    for args in (("get", "secrets", "-n", namespace),
                 ("create", "configmap", "nope", "-n", namespace),
                 ("get", "configmaps", "-n", "default"),
                 ("get", "nodes")):
        denied = kubectl.run(*args, kubeconfig=kc)
        assert denied.returncode != 0, args
        assert f'User "system:serviceaccount:{namespace}:reader" cannot' in denied.stderr, (args, denied.stderr)
    assert kubectl.run("auth", "can-i", "list", "configmaps", "-n", namespace, kubeconfig=kc).stdout.strip() == "yes"
    assert kubectl.run("auth", "can-i", "delete", "configmaps", "-n", namespace, kubeconfig=kc).stdout.strip() == "no"


def test_helm_renders_for_the_pinned_kubernetes_and_the_server_accepts_it(control_plane, namespace, kubectl,
                                                                         tmp_path):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    helm = control_plane.binaries["helm"]
    rendered = subprocess.run([str(helm), "template", "demo", str(chart)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr  # the chart's kubeVersion: >=1.30 holds by default
    assert 'kubeVersion: "v1.36.0"' in rendered.stdout
    out = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout)
    assert "configmap/demo-probe created (server dry run)" in out
    assert kubectl.run("get", "configmap", "demo-probe", "-n", namespace).returncode != 0


def test_component_processes_die_with_their_parent(control_plane, tmp_path):
    """PR_SET_PDEATHSIG: even a SIGKILLed test process leaves no etcd behind."""
    script = textwrap.dedent(f"""
        import sys, time, urllib.request
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.harness.control_plane import Component, free_port, find_binaries
        etcd = find_binaries(["etcd"])["etcd"]
        port, peer = free_port(), free_port()
        c = Component("etcd", [str(etcd), "--data-dir={tmp_path / 'etcd'}",
                               f"--listen-client-urls=http://127.0.0.1:{{port}}",
                               f"--advertise-client-urls=http://127.0.0.1:{{port}}",
                               f"--listen-peer-urls=http://127.0.0.1:{{peer}}",
                               f"--initial-advertise-peer-urls=http://127.0.0.1:{{peer}}",
                               f"--initial-cluster=default=http://127.0.0.1:{{peer}}"],
                      __import__("pathlib").Path({str(tmp_path / 'etcd.log')!r}))
        c.start()
        print(c.proc.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    parent.kill()
    parent.wait()

    wait_for(f"etcd pid {child} to die with its parent", lambda: not pid_alive(child), timeout=10)


# --------------------------------------------------------------------------- pods tier

def test_fake_gpu_nodes_look_like_gpu_operator_nodes(gpu_nodes, kubectl):
    (name,) = gpu_nodes(1, gpus=4, product="NVIDIA-A100-SXM4-80GB")
    node = kubectl.json("get", "node", name)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/gpu.count"] == "4" and labels["nvidia.com/gpu.present"] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    # kwok renews the node Lease, which is what the node lifecycle controller watches
    lease = kubectl.json("get", "lease", name, "-n", "kube-node-lease")
    assert lease["spec"]["leaseDurationSeconds"] == 40 and lease["spec"]["renewTime"]
    assert lease["metadata"]["ownerReferences"][0]["name"] == name


def test_job_succeeds_on_a_gpu_node_with_its_result_as_termination_message(pod_namespace, gpu_nodes, kubectl):
    (node,) = gpu_nodes(1, gpus=2)
    result = {"stage": "train", "state": "Succeeded", "durationSeconds": 41, "accuracy": "0.9712"}
    job = job_manifest("train", annotations={RESULT_ANN: json.dumps(result),
                                             "mnist.serving.dev/simulated-duration": "2s"},
                       node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(job))
    started = time.monotonic()
    cond = wait_for("the Job to finish", lambda: job_condition(kubectl, pod_namespace, "train"), timeout=60)
    assert cond["type"] == "Complete"
    assert time.monotonic() - started >= 2  # the per-pod duration annotation held it Running
    (pod,) = job_pods(kubectl, pod_namespace, "train")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] == node
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == result


def test_failing_job_reports_exit_code_and_message(pod_namespace, gpu_nodes, kubectl):
    gpu_nodes(1)
    result = {"stage": "export", "state": "Failed", "reason": "OutputMismatch", "message": "max |diff| 0.3"}
    job = job_manifest("export", labels={"mnist.serving.dev/simulate": "fail"},
                       annotations={RESULT_ANN: json.dumps(result),
                                    "mnist.serving.dev/simulated-exit-code": "3",
                                    "mnist.serving.dev/simulated-duration": "200ms"})
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(job))
    cond = wait_for("the Job to finish", lambda: job_condition(kubectl, pod_namespace, "export"), timeout=60)
    assert cond["type"] == "Failed" and cond["reason"] == "BackoffLimitExceeded"
    (pod,) = job_pods(kubectl, pod_namespace, "export")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert json.loads(terminated["message"]) == result


def test_gpu_pods_need_the_toleration_and_free_gpus(pod_namespace, gpu_nodes, kubectl):
    gpu_nodes(1, gpus=2)
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(
        job_manifest("untolerated", tolerate=False, labels={"mnist.serving.dev/simulate": "hang"})))
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(
        job_manifest("too-big", gpus=64, labels={"mnist.serving.dev/simulate": "hang"})))

    def unschedulable(job):
        pods = job_pods(kubectl, pod_namespace, job)
        conds = pods[0]["status"].get("conditions", []) if pods else []
        return next((c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"), None)

    assert "untolerated taint" in wait_for("FailedScheduling", lambda: unschedulable("untolerated"))["message"]
    assert "Insufficient nvidia.com/gpu" in wait_for("FailedScheduling", lambda: unschedulable("too-big"))["message"]
    for job in ("untolerated", "too-big"):
        assert job_pods(kubectl, pod_namespace, job)[0]["status"]["phase"] == "Pending"


def test_deployment_becomes_available_and_follows_pod_readiness(pod_namespace, gpu_nodes, kubectl):
    gpu_nodes(2, gpus=1)
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "triton"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "triton"}},
                 "template": {"metadata": {"labels": {"app": "triton"}}, "spec": {
                     "tolerations": TOLERATE_GPU,
                     "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}},
    }
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(deploy))
    kubectl("wait", "-n", pod_namespace, "--for=condition=Available", "deployment/triton", "--timeout=60s")
    pods = kubectl.json("get", "pods", "-n", pod_namespace, "-l", "app=triton")["items"]
    assert len(pods) == 2 and len({p["spec"]["nodeName"] for p in pods}) == 2  # one GPU each
    time.sleep(1.5)  # still Running: no stage completes Deployment pods
    assert kubectl.json("get", "deployment", "triton", "-n", pod_namespace)["status"]["readyReplicas"] == 2

    victim = pods[0]["metadata"]["name"]
    kubectl("label", "pod", victim, "-n", pod_namespace, "mnist.serving.dev/simulate=unready")
    wait_for("readyReplicas 1", lambda: kubectl.json("get", "deployment", "triton", "-n", pod_namespace)
             ["status"].get("readyReplicas") == 1, timeout=30)
    kubectl("label", "pod", victim, "-n", pod_namespace, "mnist.serving.dev/simulate-")
    wait_for("readyReplicas 2", lambda: kubectl.json("get", "deployment", "triton", "-n", pod_namespace)
             ["status"].get("readyReplicas") == 2, timeout=30)


def test_garbage_collector_removes_owned_objects(pod_namespace, gpu_nodes, kubectl):
    gpu_nodes(1)
    owner = json.loads(kubectl("create", "configmap", "owner", "-n", pod_namespace, "-o", "json"))
    child = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "child", "ownerReferences": [
                 {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
                  "controller": True, "blockOwnerDeletion": True}]}}
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(child))
    kubectl("apply", "-n", pod_namespace, "-f", "-", input=json.dumps(
        job_manifest("longrun", labels={"mnist.serving.dev/simulate": "hang"})))
    wait_for("the Job's pod to run", lambda: [p for p in job_pods(kubectl, pod_namespace, "longrun")
                                              if p["status"]["phase"] == "Running"])

    kubectl("delete", "configmap", "owner", "-n", pod_namespace, "--wait=true")
    wait_for("the child ConfigMap to be collected", lambda: kubectl.run(
        "get", "configmap", "child", "-n", pod_namespace).returncode != 0, timeout=30)
    kubectl("delete", "job", "longrun", "-n", pod_namespace, "--cascade=background")
    wait_for("the Job's pods to be collected", lambda: not job_pods(kubectl, pod_namespace, "longrun"), timeout=30)


def test_namespace_deletion_finishes(cluster, kubectl, gpu_nodes):
    gpu_nodes(1)
    kubectl("create", "namespace", "t-doomed")
    wait_for("default SA", lambda: kubectl.run("get", "sa", "default", "-n", "t-doomed").returncode == 0)
    kubectl("apply", "-n", "t-doomed", "-f", "-", input=json.dumps(
        job_manifest("stuck", labels={"mnist.serving.dev/simulate": "hang"})))
    wait_for("the pod to run", lambda: [p for p in job_pods(kubectl, "t-doomed", "stuck")
                                        if p["status"]["phase"] == "Running"])
    kubectl("delete", "namespace", "t-doomed", "--timeout=60s")
    assert kubectl.run("get", "namespace", "t-doomed").returncode != 0


def test_api_server_restart_keeps_state_and_watches_resume(cluster, pod_namespace, kubectl, api_client):
    """The fault the reliability tests inject: kube-apiserver goes away under a watcher and comes back."""
    import threading

    core = client.CoreV1Api(api_client)
    kubectl("create", "configmap", "before", "-n", pod_namespace)
    seen: list[str] = []

    def watch():  # a client-side watch loop as an operator runs it: re-list and re-watch on errors
        from kubernetes import watch as kwatch
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "after" not in seen:
            try:
                for ev in kwatch.Watch().stream(core.list_namespaced_config_map, pod_namespace, timeout_seconds=5):
                    seen.append(ev["object"].metadata.name)
                    if "after" in seen:
                        return
            except Exception:  # noqa: BLE001 - connection refused while the server is down
                time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_for("the watch to see the first object", lambda: "before" in seen, timeout=15)
    started = time.monotonic()
    cluster.restart("kube-apiserver", down_for=1.0)
    restart_s = time.monotonic() - started
    kubectl("create", "configmap", "after", "-n", pod_namespace)
    t.join(30)
    assert "after" in seen, seen
    assert kubectl.run("get", "configmap", "before", "-n", pod_namespace).returncode == 0  # etcd kept it
    assert restart_s < 60
    cluster.check_alive()  # controller-manager, scheduler and kwok rode it out
