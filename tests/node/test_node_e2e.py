"""The whole product on a real node: the chart installs the operator into a real
pod, the CPU sample (manifests/samples/mnistserving-cpu.yaml) runs every stage in
a real container of the stand-in images, and a pod reaches Triton through
kube-proxy and CoreDNS. Then the faults a user meets on a real cluster.

The tests share one release and one resource, in order (module-scoped fixtures);
each asserts what a user would check with kubectl.

`make bench-node` (MNIST_SERVING_WRITE_BENCHMARKS=1) also rewrites the "Real node"
section of docs/BENCHMARKS.md with the figures measured here.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_operator.core import builders
from mnist_operator.api.spec import PLURAL
from tests.harness.operator_process import MnistKit, wait_for
from tests.harness.namespaces import compute_quota, restrict

from tests.harness.node import readme
from tests.harness.node.node import NODE_NAME, REPO

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

RELEASE, RELEASE_NS = "mnist-serving", "mnist-serving-system"
SAMPLE = REPO / "manifests" / "samples" / "mnistserving-cpu.yaml"
PROBE = Path(__file__).resolve().parent / "probe.py"
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- real-node:begin -->", "<!-- real-node:end -->"
READY_TIMEOUT = 1500
PROBE_SAMPLES = 256
#: step -> the stand-in its stage container must have run in
STEP_IMAGE = {"train": "pytorch", "export": "pytorch", "repo": "pytorch", "client": "sdk",
              "bench-grpc": "sdk", "bench-http": "sdk", "analyze": "sdk"}
FIGURES: dict = {}


def _epoch(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def helm_values(images: dict) -> dict:
    repository, tag = images["operator"].ref.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "stageDefaults": {
            "images": {"pytorch": images["pytorch"].ref, "triton": images["triton"].ref,
                       "sdk": images["sdk"].ref, "pullPolicy": "Never"},
            "gpus": {"training": 0, "serving": 0},  # engine: the sample builds no engine
        },
    }


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def kit(node_cluster):
    return MnistKit(node_cluster.kubectl)


@pytest.fixture(scope="module")
def release(node_cluster, tmp_path_factory):
    """`helm install` of the chart with the operator image built from our Dockerfile."""
    plane = node_cluster.plane
    values = tmp_path_factory.mktemp("helm") / "values.json"
    values.write_text(json.dumps(helm_values(node_cluster.images)))
    t0 = time.monotonic()
    p = subprocess.run([str(plane.binaries["helm"]), f"--kubeconfig={plane.kubeconfig}", "install", RELEASE,
                        str(REPO / "charts" / "mnist-serving"), "-n", RELEASE_NS, "--create-namespace",
                        "-f", str(values), "--wait", "--timeout=5m"], capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, f"helm install failed:\n{p.stderr}{p.stdout}"
    FIGURES["helm install -> operator Deployment available"] = time.monotonic() - t0
    return {"values": values}


@pytest.fixture(scope="module")
def demo(node_cluster, release, kit):
    """The CPU sample applied into a fresh namespace and waited to Ready."""
    kubectl = node_cluster.kubectl
    ns = "node-e2e"
    kubectl("create", "namespace", ns)
    # the rules a cluster administrator sets: restricted pods, a quota on compute
    restrict(kubectl, ns)
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(compute_quota()))
    wait_for("the default ServiceAccount", lambda: kubectl.run(
        "get", "serviceaccount", "default", "-n", ns).returncode == 0, 30)
    doc = yaml.safe_load(SAMPLE.read_text())
    name = doc["metadata"]["name"]
    doc["metadata"]["namespace"] = ns
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(doc))
    phases: list[tuple[float, str]] = []

    usage = ContainerUsage(kubectl, ns)

    def ready():
        usage.sample()
        st = kit.status(ns, name)
        phase = st.get("phase", "")
        if not phases or phases[-1][1] != phase:
            phases.append((time.monotonic() - t0, phase))
        if phase == "Failed":
            raise AssertionError(f"{name} Failed: {st.get('message')}")
        return st if phase == "Ready" else None
    try:
        status = wait_for(f"{ns}/{name} Ready", ready, READY_TIMEOUT, interval=1)
    except AssertionError as e:
        st = kit.status(ns, name)
        raise AssertionError(f"{e}\nphases seen: {phases}\nstages: "
                             f"{json.dumps(st.get('stages'), indent=1)[:4000]}") from None
    FIGURES["apply -> Ready"] = time.monotonic() - t0
    FIGURES["container usage"] = usage.peaks
    FIGURES["phases"] = phases
    return {"ns": ns, "name": name, "status": status}


class ContainerUsage:
    """Peak memory (working set) and cpu of each stage's containers, sampled from
    the kubelet's summary API while the pipeline runs: the figures the built-in
    requests and limits (spec.RESOURCE_DEFAULTS) are chosen from."""

    def __init__(self, kubectl, namespace: str, every: float = 2.0):
        self.kubectl, self.namespace, self.every = kubectl, namespace, every
        self.peaks: dict[str, dict[str, float]] = {}
        self._components: dict[str, str] = {}
        self._last = 0.0

    def sample(self) -> None:
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        node = self.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
        p = self.kubectl.run("get", "--raw", f"/api/v1/nodes/{node}/proxy/stats/summary")
        if p.returncode != 0:
            return  # the kubelet answers once it has stats; a missed sample is fine
        for pod in json.loads(p.stdout).get("pods", []):
            ref = pod.get("podRef", {})
            if ref.get("namespace") != self.namespace:
                continue
            for c in pod.get("containers", []):
                key = self._key(ref["name"], c["name"])
                peak = self.peaks.setdefault(key, {"memoryMiB": 0.0, "cpuMillicores": 0.0})
                mem = (c.get("memory") or {}).get("workingSetBytes") or 0
                cpu = (c.get("cpu") or {}).get("usageNanoCores") or 0
                peak["memoryMiB"] = max(peak["memoryMiB"], mem / 2**20)
                peak["cpuMillicores"] = max(peak["cpuMillicores"], cpu / 1e6)

    def _key(self, pod: str, container: str) -> str:
        if pod not in self._components:   # the step (or triton) the pod belongs to
            meta = self.kubectl.json("get", "pod", pod, "-n", self.namespace).get("metadata", {})
            self._components[pod] = (meta.get("labels") or {}).get(builders.LABEL_COMPONENT, pod)
        return f"{self._components[pod]}/{container}"


def stage_pods(kit, ns: str, name: str) -> dict[str, dict]:
    """step -> its (only) Job pod."""
    out: dict[str, dict] = {}
    for pod in kit.pods_for(ns, name):
        step = pod["metadata"]["labels"].get(builders.LABEL_STEP)
        if step and pod["metadata"]["labels"].get(builders.LABEL_COMPONENT) != "triton":
            assert step not in out, f"two pods for step {step}"
            out[step] = pod
    return out


def job_uids(kit, ns: str, name: str) -> dict[str, str]:
    return {j["metadata"]["name"]: j["metadata"]["uid"] for j in kit.jobs_for(ns, name)}


def triton_pods(kit, ns: str, name: str) -> list[dict]:
    return [p for p in kit.pods_for(ns, name)
            if p["metadata"]["labels"].get(builders.LABEL_COMPONENT) == "triton"
            and not p["metadata"].get("deletionTimestamp")]


# --------------------------------------------------------------------------- 1. the chart
def test_chart_runs_the_operator_in_a_real_pod(node_cluster, release):
    kubectl = node_cluster.kubectl
    pods = kubectl.json("get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=mnist-serving")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and "running" in status["state"], status
    assert status["image"] == node_cluster.images["operator"].ref
    assert status["restartCount"] == 0, status
    # the chart's security context is in force: uid 65532, read-only root
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    log = kubectl("logs", "-n", RELEASE_NS, pod["metadata"]["name"])
    assert "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------- 2. the walkthrough
def test_cpu_sample_reaches_ready_with_real_results(demo):
    st = demo["status"]
    name, ns = demo["name"], demo["ns"]
    assert condition(st, "Ready")["status"] == "True", condition(st, "Ready")
    assert float(st["model"]["accuracy"]) >= 0.9, st["model"]
    assert st["endpoints"]["grpc"] == f"{name}-triton.{ns}.svc:8001"
    assert st["endpoints"]["http"] == f"http://{name}-triton.{ns}.svc:8000"
    perf = st["benchmark"]["perfAnalyzer"]
    assert set(perf) == {"mnist_onnx", "mnist_bls"}, perf
    for model, by_protocol in perf.items():
        assert set(by_protocol) == {"grpc", "http"}, (model, by_protocol)
        for protocol, row in by_protocol.items():
            assert float(row["bestInferPerSec"]) > 0 and row["points"] == 2, (model, protocol, row)
    analyzer = st["benchmark"]["modelAnalyzer"]["mnist_onnx"]
    assert analyzer["bestConfig"].startswith("mnist_onnx"), analyzer
    for key, value in st["clientAccuracy"]["mnist_onnx"].items():
        assert float(value) >= 0.9, (key, value)
    assert st["stages"]["engine"]["state"] == "Skipped"


def test_every_stage_ran_in_a_real_container_of_its_image(demo, kit, node_cluster):
    images = node_cluster.images
    pods = stage_pods(kit, demo["ns"], demo["name"])
    assert set(pods) == set(STEP_IMAGE), sorted(pods)
    durations = {}
    for step, pod in pods.items():
        assert pod["status"]["phase"] == "Succeeded", (step, pod["status"])
        (init,) = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == "stages"]
        assert init["image"] == images["operator"].ref and init["state"]["terminated"]["exitCode"] == 0
        main = pod["status"]["containerStatuses"][0]
        done = main["state"]["terminated"]
        assert done["exitCode"] == 0 and done["reason"] == "Completed", (step, done)
        assert main["image"] == images[STEP_IMAGE[step]].ref, (step, main["image"])
        assert main["imageID"].startswith("sha256:") or "@sha256:" in main["imageID"], main
        durations[step] = _epoch(done["finishedAt"]) - _epoch(done["startedAt"])
    FIGURES["stage durations"] = durations
    triton = triton_pods(kit, demo["ns"], demo["name"])
    assert len(triton) == 1 and triton[0]["status"]["containerStatuses"][0]["image"] == images["triton"].ref
    # the environment fingerprint in status is what the kubelet says ran, where
    for protocol in ("grpc", "http"):
        env = demo["status"]["stages"][f"bench-{protocol}"]["environment"]
        assert env["node"] == NODE_NAME, env
        assert env["images"]["bench"] == pods[f"bench-{protocol}"]["status"][
            "containerStatuses"][0]["imageID"], env
        assert env["server"] == {"node": NODE_NAME, "images": {
            c["name"]: c["imageID"] for c in triton[0]["status"]["containerStatuses"]}}, env


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from mnist_jobs.lib import data
    images, labels = data.load_test_arrays("offline", None)
    return images[:PROBE_SAMPLES].astype(np.float32), labels[:PROBE_SAMPLES].astype(np.int64)


def _npy(array: np.ndarray) -> str:
    import base64
    import io
    buf = io.BytesIO()
    np.save(buf, array)
    return base64.b64encode(buf.getvalue()).decode()


def test_a_pod_reaches_triton_by_its_service_dns_name(demo, node_cluster):
    kubectl, images = node_cluster.kubectl, node_cluster.images
    ns = demo["ns"]
    host = demo["status"]["endpoints"]["grpc"].rsplit(":", 1)[0]
    digits, labels = _digits()
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": ns},
              "data": {"probe.py": PROBE.read_text()},
              "binaryData": {"digits.npy": _npy(digits), "labels.npy": _npy(labels)}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "probe", "image": images["sdk"].ref, "imagePullPolicy": "Never",
                        "command": ["python3", "/probe/probe.py", host, "mnist_onnx,mnist_bls"],
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "probe", "mountPath": "/probe"},
                                         {"name": "tmp", "mountPath": "/tmp"}]}],
                    "volumes": [{"name": "probe", "configMap": {"name": "probe"}},
                                {"name": "tmp", "emptyDir": {}}]}}
    # create, not apply: apply's last-applied annotation would hold the digits twice (over 256 KiB)
    kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [config, pod]}))

    def finished():
        phase = kubectl.json("get", "pod", "probe", "-n", ns)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None
    phase = wait_for("the probe pod to finish", finished, 300, interval=1)
    log = kubectl("logs", "probe", "-n", ns)
    assert phase == "Succeeded", log[-3000:]
    report = json.loads(log.strip().splitlines()[-1])
    assert report["samples"] == PROBE_SAMPLES
    for key, acc in report["accuracy"].items():
        assert acc >= 0.9, (key, acc, report)
    assert {(r["model"], r["concurrency"]) for r in report["perf"]} == \
        {(m, c) for m in ("mnist_onnx", "mnist_bls") for c in (1, 8)}
    assert all(r["inferPerSec"] > 0 for r in report["perf"]), report["perf"]
    FIGURES["probe"] = report


def test_events_and_printer_columns_look_as_the_readme_shows(demo, kit, node_cluster):
    ns, name = demo["ns"], demo["name"]
    header, row = node_cluster.kubectl("get", PLURAL, name, "-n", ns).splitlines()
    assert header.split() == ["NAME", "PHASE", "ACCURACY", "THROUGHPUT", "READY", "AGE"]
    cells = row.split()
    assert cells[:2] == [name, "Ready"] and cells[4] == "True", row
    assert cells[2] == demo["status"]["model"]["accuracy"], row
    assert float(cells[3]) > 0, row
    events = [(e["type"], e["reason"], e["message"]) for e in kit.events_for(ns, name)]
    reasons = [r for _, r, _ in events]
    assert not [e for e in events if e[0] == "Warning"], events
    for step in STEP_IMAGE:
        assert any(r == "StageStarted" and m.startswith(f"{step}: Job ") for _, r, m in events), (step, events)
        assert any(r == "StageSucceeded" and m.startswith(f"{step}: ") for _, r, m in events), (step, events)
    # Event times have a one-second resolution: the order within a second is not kept
    assert reasons.count("Ready") == 1, events


# --------------------------------------------------------------------------- 2b. the pages' commands
def test_readme_client_pod_runs_as_written_in_the_restricted_namespace(demo, kit, node_cluster, tmp_path):
    """The pages' client block (between its client-command markers), with only
    readme.for_this_node's substitutions, in the pipeline's own namespace: restricted
    Pod Security and a quota on compute, so the pod must be fit for any namespace."""
    ns, name = demo["ns"], demo["name"]
    shell = readme.Shell(node_cluster.plane, ns, tmp_path)
    # the resource-dependent flags come from its client Job, through the pages' own pointer to it
    (pointer,) = [c for c in readme.commands() if "mnist.serving.dev/step=client -o yaml" in c]
    shown = shell(readme.for_this_node(pointer, name=name))
    assert shown.rc == 0, shown.err
    (job,) = yaml.safe_load(shown.out)["items"]
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    job_args = dict(zip(cmd[3::2], cmd[4::2]))
    assert job_args["--data-source"] == "offline" and "mnist_trt" not in job_args["--models"], job_args
    script = readme.for_this_node(readme.block("client-command"), name=name,
                                  sdk_image=node_cluster.images["sdk"].ref,
                                  job_args={k: job_args[k] for k in ("--models", "--data-source")})
    # no substitution for the data: the pod reads the Job's own directory on the model volume
    assert f"--data-dir, {job_args['--data-dir']}]" in script, job_args
    try:
        r = shell(script, timeout=300)
        why = ""
        if r.rc != 0:
            why = (node_cluster.kubectl.run("describe", "pod", "mnist-client", "-n", ns).stdout[-3000:]
                   + node_cluster.kubectl.run("logs", "mnist-client", "-n", ns, "--all-containers").stdout[-2000:])
        assert r.rc == 0, f"rc {r.rc}\n{r.err[-2000:]}\n{r.out[-2000:]}\n{why}"
    finally:
        node_cluster.kubectl.run("delete", "pod", "mnist-client", "-n", ns, "--ignore-not-found", "--wait=false")
    lines = r.out.strip().splitlines()
    # what the user sees: created, Succeeded (the wait), the log, deleted
    assert lines[0] == "pod/mnist-client created", lines[:3]
    waited = lines.index("pod/mnist-client condition met")
    assert lines[-1].startswith('pod "mnist-client" deleted'), lines[-2:]
    log = lines[waited + 1:-1]
    # the result is the one JSON line (stdout) near the end; the runtime reads stdout and
    # stderr apart, so a last progress line on stderr may land after it (a real run had one)
    (at,) = [i for i, line in enumerate(log) if line.startswith("{")]
    assert all(line.startswith("client: ") for line in log[at + 1:]), log[at:]
    result = json.loads(log[at])
    assert result["stage"] == "client" and result["state"] == "Succeeded", result
    models = job_args["--models"].split(",")
    assert set(result["accuracy"]) == set(models), result
    for model, by_protocol in result["accuracy"].items():
        assert set(by_protocol) == {"grpc", "http"}, (model, by_protocol)
        for protocol, acc in by_protocol.items():
            assert float(acc) >= 0.9, (model, protocol, acc, result)
    assert node_cluster.kubectl.run("get", "pod", "mnist-client", "-n", ns).returncode != 0, "pod left behind"


def test_readme_kubectl_commands_show_what_the_readme_says(demo, kit, node_cluster, tmp_path):
    """Every read-only kubectl command in the pages (readme.PAGES: README.md and
    the docs/ pages, and the cluster-wide compare) run as written but for
    readme.for_this_node's substitutions: each is checked here or named in
    readme.NOT_HERE with the reason."""
    ns, name, st = demo["ns"], demo["name"], demo["status"]
    shell = readme.Shell(node_cluster.plane, ns, tmp_path)
    columns = ["NAME", "PHASE", "ACCURACY", "THROUGHPUT", "READY", "AGE"]

    def printer_columns(out: str) -> None:
        header, *rows = out.strip().splitlines()
        assert header.split() == columns, header
        (cells,) = [r.split() for r in rows if r.split()[0] == name]
        assert cells[1:3] == ["Ready", st["model"]["accuracy"]] and cells[4] == "True", cells
        assert float(cells[3]) > 0, cells

    def the_yaml(out: str) -> None:
        doc = yaml.safe_load(out)
        # "status: stages, conditions, model, endpoints, benchmark"
        assert {"stages", "conditions", "model", "endpoints", "benchmark"} <= set(doc["status"]), doc["status"]
        assert doc["status"]["phase"] == "Ready"

    def described(out: str) -> None:
        assert re.search(rf"^Name:\s+{name}$", out, re.M) and "Events:" in out, out[-2000:]
        assert re.search(r"Normal\s+Ready\s+\S+\s+\S+\s+every stage done", out), out[-2000:]

    def jobs_and_pods(out: str) -> None:
        for job in kit.job_names(ns, name):
            assert f"job.batch/{job} " in out, (job, out)
        assert re.search(rf"pod/{name}-triton-\S+\s+1/1\s+Running", out), out

    def compared(out: str) -> None:
        for model in ("mnist_onnx", "mnist_bls"):
            assert re.search(rf"{ns}/{name}\b.*\b{model}\b", out), (model, out)

    def explained(*words: str):
        def check(out: str) -> None:
            assert "MnistServing" in out and all(w in out for w in words), out[:1500]
        return check

    def waited(out: str) -> None:
        assert out.strip() == f"mnistserving.mnist.serving.dev/{name} condition met", out

    def client_job(out: str) -> None:
        (job,) = yaml.safe_load(out)["items"]
        assert job["spec"]["template"]["spec"]["containers"][0]["command"][:3] == \
            ["python3", "-m", "mnist_jobs.client"]

    def job_log(out: str) -> None:
        # the one JSON line; stderr's progress lines may land before or after it
        (result,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert result["state"] == "Succeeded" and set(result["accuracy"]) == {"mnist_onnx", "mnist_bls"}

    operator_pods = [p["metadata"]["name"] for p in node_cluster.kubectl.json(
        "get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/component=operator")["items"]
        if p["status"].get("phase") == "Running"]

    def lease_holder(out: str) -> None:
        # one replica holds the chart's leader Lease: the running operator pod
        rows = [line.split() for line in out.strip().splitlines()[1:]]
        assert [r[:2] for r in rows if r[0].endswith("-leader")] == \
            [[f"{RELEASE}-leader", operator_pods[0]]], (out, operator_pods)

    def lease_columns(out: str) -> None:
        header, *rows = out.strip().splitlines()
        assert header.split() == ["NAME", "HOLDER", "RENEWED", "TRANSITIONS"], out
        (row,) = [r.split() for r in rows if r.split()[0] == f"{RELEASE}-leader"]
        assert row[1] in operator_pods and row[2].endswith("Z"), row

    def operator_up(out: str) -> None:
        assert re.search(r"deployment\.apps/\S+\s+1/1", out), out
        assert re.search(r"pod/\S+\s+1/1\s+Running", out), out

    def generations(out: str) -> None:
        generation, observed = out.split()
        assert generation == observed and int(generation) >= 1, out

    def children(out: str) -> None:
        jobs_and_pods(out)
        assert f"deployment.apps/{name}-triton " in out, out

    def gpu_column(out: str) -> None:
        header, *rows = out.strip().splitlines()
        assert header.split() == ["NAME", "GPU"] and len(rows) == 1, out
        assert rows[0].split()[1] == "<none>", out  # no GPU on this node

    checks = {
        "kubectl get mnist -w": printer_columns,
        "kubectl get mnist": printer_columns,
        f"kubectl --context {readme.KIND_CONTEXT} get mnist demo": printer_columns,
        "kubectl get mnist demo -o yaml": the_yaml,
        "kubectl describe mnist demo": described,
        "kubectl describe mnist NAME": described,
        "kubectl describe mnist": described,
        "kubectl get jobs,pods -l app.kubernetes.io/instance=demo": jobs_and_pods,
        "kubectl wait --for=condition=Ready mnist/demo": waited,
        "kubectl get jobs -l app.kubernetes.io/instance=demo,mnist.serving.dev/step=client -o yaml": client_job,
        "kubectl explain mnistserving.spec": explained("training", "serving", "benchmark"),
        "kubectl explain mnistserving.spec --recursive": explained("dataset", "maxBatchSize", "applyBest"),
        "kubectl logs job/<status.stages.<step>.job>": job_log,
        "kubectl get nodes -o custom-columns="
        "'NAME:.metadata.name,GPU:.status.allocatable.nvidia\\.com/gpu'": gpu_column,
        "mnist-serving compare --cluster -A": compared,
        "kubectl -n OPERATOR_NAMESPACE get lease": lease_holder,
        "kubectl -n OPERATOR_NAMESPACE get lease -o custom-columns=NAME:.metadata.name,"
        "HOLDER:.spec.holderIdentity,RENEWED:.spec.renewTime,TRANSITIONS:.spec.leaseTransitions":
            lease_columns,
        "kubectl -n OPERATOR_NAMESPACE get deploy,pods -l app.kubernetes.io/component=operator":
            operator_up,
        "kubectl get mnist NAME -o jsonpath='{.metadata.generation} "
        "{.status.observedGeneration}{\"\\n\"}'": generations,
        "kubectl -n NAMESPACE get jobs,pods,deploy -l app.kubernetes.io/instance=NAME": children,
    }
    found = [c for c in readme.commands() if not readme.changes_the_cluster(c)]
    unplaced = [c for c in found if c not in checks and c not in readme.NOT_HERE]
    assert not unplaced, f"commands of the pages neither checked on the node nor in readme.NOT_HERE: {unplaced}"
    assert not [c for c in checks if c not in found], "a checked command is gone from the pages"
    failures = []
    for command in checks:
        line = readme.for_this_node(command, name=name)
        # the troubleshooting placeholder: the Job a step recorded, here the client's
        line = line.replace("<status.stages.<step>.job>", st["stages"]["client"]["job"])
        # troubleshooting's placeholders: the chart's namespace, the resource's own
        line = line.replace("OPERATOR_NAMESPACE", RELEASE_NS).replace("-n NAMESPACE", f"-n {ns}")
        line = line.replace("instance=NAME", f"instance={name}")
        watch = " -w" in f"{line} "
        # `exec`: a watch never ends on its own; its first rows are what the pages show
        r = shell(f"exec {line}", timeout=5 if watch else 120)
        if not (r.rc == 0 or (watch and r.rc is None)):
            failures.append(f"{line}: rc {r.rc}: {r.err[-500:]}")
            continue
        try:
            checks[command](r.out)
        except AssertionError as e:
            failures.append(f"{line}: {e}"[:2500])
    assert not failures, "\n\n".join(failures)

# --------------------------------------------------------------------------- 3. faults on real pods
def test_deleting_the_triton_pod_turns_ready_false_and_back_with_nothing_rerun(demo, kit, node_cluster):
    ns, name = demo["ns"], demo["name"]
    jobs_before = job_uids(kit, ns, name)
    (pod,) = triton_pods(kit, ns, name)
    seen: list[str] = []

    def ready_is(want: str):
        st = kit.status(ns, name)
        now = condition(st, "Ready").get("status")
        if not seen or seen[-1] != now:
            seen.append(now)
        return st if now == want else None
    t0 = time.monotonic()
    node_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    st = wait_for("Ready=False after the Triton pod went", lambda: ready_is("False"), 60, interval=0.2)
    assert condition(st, "Ready")["reason"] == "TritonUnavailable", condition(st, "Ready")
    st = wait_for("Ready=True again", lambda: ready_is("True"), 180, interval=0.5)
    FIGURES["Triton pod deleted -> Ready again"] = time.monotonic() - t0
    assert st["phase"] == "Ready"
    assert job_uids(kit, ns, name) == jobs_before, "a stage was rerun"
    (new,) = triton_pods(kit, ns, name)
    assert new["metadata"]["uid"] != pod["metadata"]["uid"]


def test_killing_the_operator_pod_mid_stage_duplicates_no_job(demo, kit, node_cluster):
    ns, name = demo["ns"], demo["name"]
    kubectl = node_cluster.kubectl
    before = job_uids(kit, ns, name)
    before_steps = {j["metadata"]["name"]: j["metadata"]["labels"][builders.LABEL_STEP]
                    for j in kit.jobs_for(ns, name)}
    generation = kit.patch_spec(ns, name, {"benchmark": {"perfAnalyzer": {
        "concurrency": {"start": 2, "end": 34, "step": 32}}}})["metadata"]["generation"]

    def bench_running():
        new = [j for j in kit.jobs_for(ns, name, "bench-grpc") if j["metadata"]["name"] not in before]
        return new and not new[0].get("status", {}).get("completionTime") and new
    new_jobs = wait_for("the new bench-grpc Job", bench_running, 120, interval=0.5)
    (operator_pod,) = kubectl.json("get", "pods", "-n", RELEASE_NS, "-l",
                                   "app.kubernetes.io/name=mnist-serving")["items"]
    kubectl("delete", "pod", operator_pod["metadata"]["name"], "-n", RELEASE_NS,
            "--grace-period=0", "--force")

    def ready_at_generation():
        st = kit.status(ns, name)
        return st if st.get("phase") == "Ready" and st.get("observedGeneration") == generation else None
    st = wait_for("Ready at the new generation after the operator restarted", ready_at_generation, 600, interval=1)
    after = job_uids(kit, ns, name)
    added = sorted(set(after) - set(before))
    labels = [j["metadata"]["labels"] for j in kit.jobs_for(ns, name) if j["metadata"]["name"] in added]
    keys = [(lab[builders.LABEL_STEP], lab[builders.LABEL_ATTEMPT]) for lab in labels]
    assert len(keys) == len(set(keys)), f"a step got two Jobs for one attempt: {added}"
    steps = {step for step, _ in keys}
    assert {"bench-grpc", "bench-http"} <= steps, added
    assert new_jobs[0]["metadata"]["name"] in added
    # a later attempt is a retry (perf_analyzer can fail to stabilise on 2 busy cores),
    # never a second Job the restarted operator made: it follows a StageFailed warning
    failed = [e["message"] for e in kit.events_for(ns, name) if e["reason"] == "StageFailed"]
    for step, attempt in keys:
        if attempt != "0":
            assert any(m.startswith(f"{step} (") for m in failed), (step, attempt, failed)
    # the superseded bench Jobs are cleaned up; every other finished Job is the same object
    gone = {before_steps[j] for j in before if j not in after}
    assert gone <= {"bench-grpc", "bench-http"}, gone
    assert all(after[j] == before[j] for j in before if j in after), "a finished Job was replaced"
    new_operator = kubectl.json("get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=mnist-serving")
    assert [p["metadata"]["uid"] for p in new_operator["items"]] != [operator_pod["metadata"]["uid"]]
    recorded = st["stages"]["bench-grpc"]
    assert recorded["job"] in added and recorded["fingerprint"] == \
        new_jobs[0]["metadata"]["labels"][builders.LABEL_FINGERPRINT]


def test_deleting_the_resource_removes_every_child_and_releases_the_volume(demo, kit, node_cluster):
    ns, name = demo["ns"], demo["name"]
    kubectl = node_cluster.kubectl
    claim = builders.child_name(name, "model")
    pv = kubectl.json("get", "pvc", claim, "-n", ns)["spec"]["volumeName"]
    path = Path(kubectl.json("get", "pv", pv)["spec"]["hostPath"]["path"])
    assert path.is_dir() and any(path.iterdir()), path
    kit.delete_cr(ns, name)

    def all_gone():
        left = {k: v for k, v in kit.children(ns, name).items() if v}
        return not left or None
    wait_for("every child gone", all_gone, 180, interval=1)
    wait_for(f"PV {pv} deleted", lambda: kubectl.run("get", "pv", pv).returncode != 0, 120, interval=1)
    wait_for(f"{path} removed by the provisioner", lambda: not path.exists(), 60, interval=1)


# --------------------------------------------------------------------------- figures
def test_write_real_node_figures(node_cluster):
    """Prints the figures (and with MNIST_SERVING_WRITE_BENCHMARKS=1 rewrites the
    "Real node" section of docs/BENCHMARKS.md). Runs last in this module."""
    # test_node_admin.py's figures (it runs before this module): tests/harness/node/figures.py
    from tests.harness.node import figures
    section = real_node_section(node_cluster.timings, FIGURES, figures.ADMIN)
    print(section)
    (node_cluster.plane.log_dir / "real-node.md").write_text(section)
    if os.environ.get("MNIST_SERVING_WRITE_BENCHMARKS") == "1":
        text = BENCHMARKS.read_text()
        block = f"{BEGIN}\n{section}\n{END}"
        if BEGIN in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Real node\n\n" + block + "\n"
        BENCHMARKS.write_text(text)


def real_node_section(bringup: dict, figures: dict, admin: dict | None = None) -> str:
    lines = ["Measured by `make bench-node` (tests/node, one real kubelet + containerd node on this "
             "2-core VM, no GPU, stand-in images for NGC's; "
             f"{time.strftime('%Y-%m-%d')}).", "",
             "| bring-up | seconds (cumulative) |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in bringup.items()]
    lines += ["", "| the walkthrough | seconds |", "|---|---|"]
    for key in ("helm install -> operator Deployment available", "apply -> Ready",
                "Triton pod deleted -> Ready again"):
        if key in figures:
            lines.append(f"| {key} | {figures[key]:.1f} |")
    if admin:
        lines += ["", "What an administrator does to a running pipeline (tests/node/test_node_admin.py: "
                  "the chart with `replicas: 2`, a short CPU resource; the takeover from a SIGKILL "
                  "waits out the Lease's 15 s on the standby's clock, so 10 to 17 s):", "",
                  "| admin scenario | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in admin.items()]
    if figures.get("stage durations"):
        lines += ["", "| stage (its container, start to exit) | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in figures["stage durations"].items()]
    usage = figures.get("container usage")
    if usage:
        lines += ["", "Peak use per container (kubelet summary API, sampled every 2 s; "
                  "what the built-in requests in spec.RESOURCE_DEFAULTS are set from):", "",
                  "| step/container | memory MiB | cpu millicores |", "|---|---|---|"]
        lines += [f"| {k} | {v['memoryMiB']:.0f} | {v['cpuMillicores']:.0f} |"
                  for k, v in sorted(usage.items())]
    probe = figures.get("probe")
    if probe:
        lines += ["", f"Through the Service's DNS name from a pod ({probe['samples']} held-out digits, "
                  "perf_analyzer gRPC, 2 s windows):", "",
                  "| model | accuracy gRPC / HTTP | c=1 infer/s | c=1 p99 ms | c=8 infer/s | c=8 p99 ms |",
                  "|---|---|---|---|---|---|"]
        for model in ("mnist_onnx", "mnist_bls"):
            rows = {r["concurrency"]: r for r in probe["perf"] if r["model"] == model}
            acc = probe["accuracy"]
            lines.append(f"| {model} | {acc[f'{model}/grpc']:.4f} / {acc[f'{model}/http']:.4f} | "
                         f"{rows[1]['inferPerSec']:.0f} | {rows[1]['p99Ms']:.1f} | "
                         f"{rows[8]['inferPerSec']:.0f} | {rows[8]['p99Ms']:.1f} |")
    return "\n".join(lines)
