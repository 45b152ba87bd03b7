"""What a cluster administrator does to a running pipeline, on the real node (issue 27):
a ResourceQuota that is full for a while, the operator's leader pod killed mid-stage
with a standby replica running, and the model volume deleted under a serving Triton.
The same logic runs on KWOK in tests/cluster (test_quota_wait.py,
test_leader_election.py, test_volume_lost.py); here the pods, the kubelet's volume
mounts, the PVC protection controller and the provisioner are real.

One short CPU resource goes through the three in order (module-scoped fixtures, as in
test_node_e2e.py): it is applied into a namespace whose quota a blocker pod fills, waits
without spending an attempt, goes on once the quota is raised; its operator's leader is
SIGKILLed while a stage runs and the standby finishes the pipeline with no Job made
twice; then its claim is deleted and it runs again from train onto a new claim.

The chart runs with ``replicas: 2`` here. This module installs the release when none
exists (the node tier runs it before test_node_e2e.py, whose own ``helm install`` then
needs none) and uninstalls it again; an existing release is scaled to 2 and back.

The takeover and the recovery times go into the node tier's figures
(tests/harness/node/figures.py; test_node_e2e.py writes them with its own when
MNIST_SERVING_WRITE_BENCHMARKS=1, as `make bench-node` runs it, into docs/BENCHMARKS.md's
"Real node" section; run alone, this module only prints them).
"""
from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

from mnist_operator.api.spec import PLURAL
from mnist_operator.core import builders
from tests.cluster.test_leader_election import duplicated_events
from tests.harness.operator_process import MnistKit, wait_for
from tests.node.test_node_e2e import RELEASE, RELEASE_NS, condition, helm_values

from tests.harness.node.figures import ADMIN as FIGURES
from tests.harness.node.node import REPO

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

NS, SMALL_NS, NAME = "node-admin", "node-admin-small", "admin"
LEASE = f"{RELEASE}-leader"
OPERATOR = "app.kubernetes.io/name=mnist-serving"
#: The CPU sample made short: one epoch, ONNX alone, gRPC at concurrency 1, no
#: model-analyzer; every step it runs is still a real pod on the claim.
SPEC = {
    "training": {"epochs": 1, "batchSize": 64, "learningRate": "0.01", "momentum": "0.9",
                 "dataset": {"source": "offline"}, "gpus": 0},
    "tensorrt": {"enabled": False},
    "serving": {"models": ["onnx"], "cpuOnly": True, "gpus": 0, "maxBatchSize": 64,
                "dynamicBatching": {"preferredBatchSizes": [32], "maxQueueDelayMicroseconds": 100}},
    "storage": {"size": "1Gi"},
    "benchmark": {"perfAnalyzer": {"protocols": ["grpc"], "concurrency": {"start": 1, "end": 1, "step": 1},
                                   "measurementMode": "time_windows", "measurementIntervalMs": 1000,
                                   "stabilityPercentage": 50},
                  "modelAnalyzer": {"enabled": False}},
}
#: the steps of SPEC that run a Job (the engine is Skipped: no TensorRT)
JOB_STEPS = {"train", "export", "repo", "client", "bench-grpc"}
PIPELINE_TIMEOUT = 420


# --------------------------------------------------------------------------- helpers
def helm(plane, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(plane.binaries["helm"]), f"--kubeconfig={plane.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=timeout)


def operator_pods(kubectl) -> list[dict]:
    """The operator's pods that are not being deleted."""
    return [p for p in kubectl.json("get", "pods", "-n", RELEASE_NS, "-l", OPERATOR)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def lease_holder(kubectl) -> str:
    p = kubectl.run("get", "lease", LEASE, "-n", RELEASE_NS, "-o", "jsonpath={.spec.holderIdentity}")
    return p.stdout.strip() if p.returncode == 0 else ""


def resource(ns: str, name: str) -> dict:
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
            "metadata": {"name": name, "namespace": ns}, "spec": SPEC}


def quota(ns: str, name: str, cpu: str) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": ns},
            "spec": {"hard": {"requests.cpu": cpu}}}


def counted(kubectl, ns: str, name: str, cpu: str) -> None:
    """Until the quota controller has counted the namespace's use (before that the API
    server refuses every pod with "status unknown for quota")."""
    wait_for(f"quota {name} counted at {cpu}", lambda: (kubectl.json(
        "get", "resourcequota", name, "-n", ns).get("status") or {}).get("used", {}).get(
        "requests.cpu") == cpu, 60, interval=0.5)


def blocker(ns: str, image: str) -> dict:
    """Another workload of the namespace: a real running pod that holds 100m of its cpu quota."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "blocker", "namespace": ns},
            "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                     "containers": [{"name": "sleep", "image": image, "imagePullPolicy": "Never",
                                     "command": ["python3", "-c", "import time; time.sleep(86400)"],
                                     "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                                                   "limits": {"cpu": "100m", "memory": "64Mi"}}}]}}


def step_of(kit, ns: str, name: str, step: str) -> dict:
    return (kit.status(ns, name).get("stages") or {}).get(step) or {}


def wait_ready(kit, ns: str, name: str, timeout: float, what: str) -> dict:
    seen: list[str] = []

    def ready():
        st = kit.status(ns, name)
        line = f"{st.get('phase')}: {condition(st, 'Ready').get('reason')}"
        if not seen or seen[-1] != line:
            seen.append(line)
        if st.get("phase") == "Failed":
            raise AssertionError(f"{name} Failed: {st.get('message')}")
        return st if st.get("phase") == "Ready" else None
    try:
        return wait_for(what, ready, timeout, interval=1)
    except AssertionError as e:
        st = kit.status(ns, name)
        stages = {k: (v.get("state"), v.get("reason"), v.get("message")) for k, v in
                  (st.get("stages") or {}).items()}
        raise AssertionError(f"{e}\nseen: {seen}\nstages: {stages}") from None


def jobs_by_step(kit, ns: str, name: str) -> dict[str, list[tuple[str, str, str]]]:
    """step -> [(Job name, uid, attempt)] of the Jobs there now."""
    out: dict[str, list] = {}
    for j in kit.jobs_for(ns, name):
        labels = j["metadata"]["labels"]
        out.setdefault(labels[builders.LABEL_STEP], []).append(
            (j["metadata"]["name"], j["metadata"]["uid"], labels.get(builders.LABEL_ATTEMPT)))
    return out


def delete_namespace(kubectl, ns: str, wait: bool = True) -> None:
    """Its resources (their children go by owner references), then the namespace. With
    ``wait``, until it is gone: the namespace controller looks again only after the
    grace period of a pod still stopping (Triton's takes up to its 30 s)."""
    kubectl.run("delete", PLURAL, "--all", "-n", ns, "--ignore-not-found", "--wait=true", timeout=180)
    kubectl.run("delete", "namespace", ns, "--ignore-not-found", "--wait=false")
    if wait:
        wait_for(f"namespace {ns} gone", lambda: kubectl.run("get", "namespace", ns).returncode != 0,
                 180, interval=1)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def kit(node_cluster):
    return MnistKit(node_cluster.kubectl)


@pytest.fixture(scope="module")
def two_replicas(node_cluster, tmp_path_factory):
    """The chart's release with ``replicas: 2``; one of the two holds the leader Lease."""
    plane, kubectl = node_cluster.plane, node_cluster.kubectl
    values = tmp_path_factory.mktemp("helm") / "values.json"
    base = helm_values(node_cluster.images)
    values.write_text(json.dumps({**base, "replicas": 2}))
    existed = helm(plane, "status", RELEASE, "-n", RELEASE_NS, timeout=60).returncode == 0
    verb = ["upgrade", "--reuse-values"] if existed else ["install", "--create-namespace"]
    p = helm(plane, *verb, RELEASE, str(REPO / "charts" / "mnist-serving"), "-n", RELEASE_NS,
             "-f", str(values), "--wait", "--timeout=5m")
    assert p.returncode == 0, f"helm {verb[0]} (replicas 2) failed:\n{p.stderr}{p.stdout}"
    wait_for("two operator pods Ready", lambda: len([
        p for p in operator_pods(kubectl)
        if all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])]) == 2,
        120, interval=1)
    wait_for("a holder of the leader Lease", lambda: lease_holder(kubectl), 60, interval=0.5)
    yield
    if existed:   # as the other node tests left it: one replica
        values.write_text(json.dumps({**base, "replicas": 1}))
        p = helm(plane, "upgrade", "--reuse-values", RELEASE, str(REPO / "charts" / "mnist-serving"),
                 "-n", RELEASE_NS, "-f", str(values), "--wait", "--timeout=5m")
        assert p.returncode == 0, f"helm upgrade (replicas 1) failed:\n{p.stderr}{p.stdout}"
        wait_for("one operator pod left", lambda: len(kubectl.json(
            "get", "pods", "-n", RELEASE_NS, "-l", OPERATOR)["items"]) == 1, 120, interval=1)
        wait_for("a holder of the leader Lease", lambda: lease_holder(kubectl), 60, interval=0.5)
    else:         # gone, the kept CRDs aside: test_node_e2e.py installs its own
        p = helm(plane, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout=3m")
        assert p.returncode == 0, f"helm uninstall failed:\n{p.stderr}{p.stdout}"
        delete_namespace(kubectl, RELEASE_NS)   # its Lease too: the next install starts afresh


@pytest.fixture(scope="module")
def full_quota(node_cluster, two_replicas):
    """NS with a 1-cpu quota of which a running blocker pod holds 100m: a stage pod
    asking for 1 cpu is refused until an administrator raises the quota."""
    kubectl = node_cluster.kubectl
    kubectl("create", "namespace", NS)
    wait_for("the default ServiceAccount", lambda: kubectl.run(
        "get", "serviceaccount", "default", "-n", NS).returncode == 0, 30)
    kubectl("apply", "-f", "-", input=json.dumps(quota(NS, "compute", "1")))
    counted(kubectl, NS, "compute", "0")
    kubectl("apply", "-f", "-", input=json.dumps(blocker(NS, node_cluster.images["sdk"].ref)))
    wait_for("the blocker pod Running", lambda: kubectl.json("get", "pod", "blocker", "-n", NS)[
        "status"].get("phase") == "Running", 120, interval=1)
    counted(kubectl, NS, "compute", "100m")
    yield
    # nothing else uses it: no need to wait for Triton to stop (no finalizer is left to
    # the operator, which goes next)
    delete_namespace(kubectl, NS, wait=False)


# --------------------------------------------------------------------------- 1. two replicas
def test_two_replicas_one_holds_the_lease_the_other_stands_by(node_cluster, two_replicas):
    kubectl = node_cluster.kubectl
    pods = [p["metadata"]["name"] for p in operator_pods(kubectl)]
    holder = lease_holder(kubectl)
    assert len(pods) == 2 and holder in pods, (pods, holder)
    (standby,) = [p for p in pods if p != holder]
    wait_for(f"{standby} logging that it stands by", lambda: f"standing by: leader Lease "
             f"{RELEASE_NS}/{LEASE} is held by {holder}" in kubectl("logs", "-n", RELEASE_NS, standby),
             30, interval=1)
    wait_for(f"{holder} logging that it acts", lambda: f"acquired by {holder}" in kubectl(
        "logs", "-n", RELEASE_NS, holder), 30, interval=1)
    assert "acquired by" not in kubectl("logs", "-n", RELEASE_NS, standby)
    # what `kubectl get lease` shows a user: the one holder among the two pods
    rows = kubectl("get", "lease", "-n", RELEASE_NS, "--no-headers").split("\n")
    assert [r.split()[:2] for r in rows if r.startswith(LEASE + " ")] == [[LEASE, holder]], rows


# --------------------------------------------------------------------------- 2. quota
def test_a_request_beyond_the_quotas_hard_limit_fails_at_once(node_cluster, two_replicas, kit):
    kubectl = node_cluster.kubectl
    kubectl("create", "namespace", SMALL_NS)
    try:
        wait_for("the default ServiceAccount", lambda: kubectl.run(
            "get", "serviceaccount", "default", "-n", SMALL_NS).returncode == 0, 30)
        kubectl("apply", "-f", "-", input=json.dumps(quota(SMALL_NS, "small", "500m")))
        counted(kubectl, SMALL_NS, "small", "0")
        t0 = time.monotonic()
        kubectl("apply", "-f", "-", input=json.dumps(resource(SMALL_NS, "too-big")))
        st = kit.wait_phase(SMALL_NS, "too-big", "Failed", 90)
        FIGURES["apply beyond a quota's hard limit -> Failed (ExceedsQuota)"] = time.monotonic() - t0
        train = st["stages"]["train"]
        assert (train["state"], train["reason"], train["attempt"]) == ("Failed", "ExceedsQuota", 0), train
        assert "ResourceQuota small" in train["message"], train
        assert "requests.cpu=1 (the quota allows 500m)" in train["message"], train
        ready = condition(st, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "StageFailed"), ready
        assert "ResourceQuota small" in ready["message"], ready
        row = kubectl("get", PLURAL, "too-big", "-n", SMALL_NS, "--no-headers").split()
        assert row[:2] == ["too-big", "Failed"], row
        # the Job goes (the job controller would try for hours), and no attempt follows
        wait_for("the refused Job deleted", lambda: not [
            j for j in kit.jobs_for(SMALL_NS, "too-big") if not j["metadata"].get("deletionTimestamp")],
            60, interval=0.5)
        assert step_of(kit, SMALL_NS, "too-big", "train")["attempt"] == 0
        assert not kit.pods_for(SMALL_NS, "too-big")
    finally:
        delete_namespace(kubectl, SMALL_NS, wait=False)


def test_a_full_quota_waits_without_spending_an_attempt_and_goes_on_once_raised(
        node_cluster, full_quota, kit):
    kubectl = node_cluster.kubectl
    kubectl("apply", "-f", "-", input=json.dumps(resource(NS, NAME)))
    train = wait_for("train waiting for the quota", lambda: (
        lambda rec: rec if rec.get("reason") == "WaitingForQuota" else None)(
        step_of(kit, NS, NAME, "train")), 120, interval=0.5)
    assert train["state"] == "Running" and train["attempt"] == 0, train
    assert "exceeded quota: compute" in train["message"], train
    assert "requested: requests.cpu=1, used: requests.cpu=100m, limited: requests.cpu=1" \
        in train["message"], train
    job = train["job"]

    # the job controller keeps trying: three refused pods used to spend three attempts
    def refusals():
        n = sum(e.get("count") or 1 for e in kubectl.json("get", "events", "-n", NS, "--field-selector",
                f"involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate")["items"])
        return n if n >= 3 else None
    refused = wait_for("three pods of the train Job refused by the quota", refusals, 120, interval=1)
    train = step_of(kit, NS, NAME, "train")
    assert (train["state"], train["reason"], train["attempt"], train["job"]) == \
        ("Running", "WaitingForQuota", 0, job), (refused, train)
    assert kit.job_names(NS, NAME, "train") == [job]
    assert not [p for p in kit.pods_for(NS, NAME)], "a stage pod got past the quota"
    row = kubectl("get", PLURAL, NAME, "-n", NS, "--no-headers").split()
    assert row[:2] == [NAME, "Training"], row
    said = [e for e in kit.events_for(NS, NAME) if e["reason"] == "WaitingForQuota"]
    assert len(said) == 1 and said[0]["type"] == "Normal" and (said[0].get("count") or 1) == 1, said
    assert not [e for e in kit.events_for(NS, NAME) if e["type"] == "Warning"]

    # the administrator raises the quota: the job controller's next try makes the pod
    kubectl("patch", "resourcequota", "compute", "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": {"hard": {"requests.cpu": "8"}}}))
    t0 = time.monotonic()
    wait_for("the train pod created", lambda: [
        p for p in kit.pods_for(NS, NAME) if p["metadata"]["labels"].get(builders.LABEL_STEP) == "train"],
        180, interval=0.5)
    took = FIGURES["quota raised -> the waiting stage's pod created"] = time.monotonic() - t0
    print(f"\n{refused} pods refused by the quota; raised -> the train pod: {took:.1f} s")
    wait_for("train no longer waiting", lambda: step_of(kit, NS, NAME, "train").get("reason")
             != "WaitingForQuota", 60, interval=0.5)
    train = step_of(kit, NS, NAME, "train")
    assert train["job"] == job and train["attempt"] == 0, train
    assert kit.job_names(NS, NAME, "train") == [job]


# --------------------------------------------------------------------------- 3. leader killed
def test_killing_the_leader_mid_stage_the_standby_leads_and_no_job_is_duplicated(
        node_cluster, full_quota, kit):
    kubectl, node = node_cluster.kubectl, node_cluster.node

    def running_stage():
        for pod in kit.pods_for(NS, NAME):
            labels = pod["metadata"]["labels"]
            if labels.get(builders.LABEL_COMPONENT) != "triton" and labels.get(builders.LABEL_STEP) \
                    and pod["status"].get("phase") == "Running":
                return labels[builders.LABEL_STEP], labels["job-name"]
        return None
    step, stage_job = wait_for("a stage pod Running", running_stage, 180, interval=0.2)
    (job_uid,) = [uid for name, uid, _ in jobs_by_step(kit, NS, NAME)[step] if name == stage_job]
    leader = lease_holder(kubectl)
    pods = {p["metadata"]["name"]: p for p in operator_pods(kubectl)}
    assert len(pods) == 2 and leader in pods, (list(pods), leader)
    (standby,) = [p for p in pods if p != leader]
    container = pods[leader]["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]

    # SIGKILL: nothing releases the Lease. The pod object goes at once too, as a lost
    # node's pod does, so that no process of the leader's identity comes back
    node.ctr("task", "kill", "--signal", "SIGKILL", container)
    killed = time.monotonic()
    kubectl("delete", "pod", leader, "-n", RELEASE_NS, "--grace-period=0", "--force")
    holders: list[str] = [leader]

    def standby_holds():
        who = lease_holder(kubectl)
        if who != holders[-1]:
            holders.append(who)
        return who == standby
    wait_for(f"{standby} holding the Lease", standby_holds, 60, interval=0.1)
    takeover = time.monotonic() - killed
    FIGURES["leader pod SIGKILLed -> standby holds the Lease"] = takeover
    print(f"\nleader {leader} SIGKILLed during {step}: {standby} holds the Lease {takeover:.1f} s later")
    # never released (a kill) and never anyone else's: killed leader, then the standby
    assert holders == [leader, standby], holders
    # it expires on the standby's own clock: the Lease's 15 s from the last renewal it saw
    assert 5 < takeover < 20, takeover
    wait_for(f"{standby} logging that it acts", lambda: f"acquired by {standby}" in kubectl(
        "logs", "-n", RELEASE_NS, standby), 30, interval=0.5)
    step_at_kill = step

    st = wait_ready(kit, NS, NAME, PIPELINE_TIMEOUT, f"{NS}/{NAME} Ready after the takeover")
    jobs = jobs_by_step(kit, NS, NAME)
    assert set(jobs) == JOB_STEPS, sorted(jobs)
    assert {s: len(v) for s, v in jobs.items() if len(v) != 1} == {}, jobs
    assert {a for v in jobs.values() for _, _, a in v} == {"0"}, jobs
    # the Job that ran when the leader died is the one its step recorded: the same object
    assert [uid for name, uid, _ in jobs[step_at_kill]] == [job_uid], (step_at_kill, jobs)
    assert st["stages"][step_at_kill]["job"] == stage_job
    assert all(rec.get("attempt", 0) == 0 for rec in st["stages"].values()), st["stages"]
    assert condition(st, "Ready")["status"] == "True"
    # no Event posted twice with two replicas (and a takeover); one Ready
    assert not duplicated_events(kit, NS, NAME), duplicated_events(kit, NS, NAME)
    events = kit.events_for(NS, NAME)
    assert [e["reason"] for e in events].count("Ready") == 1, [(e["reason"], e["message"]) for e in events]
    assert not [e for e in events if e["type"] == "Warning"], events
    # the Deployment made a third replica: it stands by behind the new leader
    pods = operator_pods(kubectl)
    (third,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] not in (leader, standby)]
    wait_for(f"{third} standing by", lambda: f"is held by {standby}" in kubectl(
        "logs", "-n", RELEASE_NS, third), 60, interval=1)
    assert lease_holder(kubectl) == standby
    # a standby stops at once when its pod is deleted (SIGTERM), as the leader does: it
    # used to ignore the signal (PID 1 without a handler) and sit out the 30 s grace period
    t0 = time.monotonic()
    kubectl("delete", "pod", third, "-n", RELEASE_NS, "--wait=true", timeout=90)
    stopped = FIGURES["standby pod deleted (SIGTERM) -> gone"] = time.monotonic() - t0
    print(f"\nstandby {third} deleted in {stopped:.1f} s")
    assert stopped < 15, f"the standby took {stopped:.1f} s to stop on SIGTERM"
    assert lease_holder(kubectl) == standby


# --------------------------------------------------------------------------- 4. volume lost
def _served(kubectl, ns: str, name: str, digits: int = 64) -> float:
    """Real held-out digits through the Triton Service (the API server's service proxy
    to its http port): the accuracy mnist_onnx answers with."""
    from mnist_jobs.lib import data
    images, labels = data.load_test_arrays("offline", None)
    images, labels = images[:digits].astype(np.float32), labels[:digits]
    base = f"/api/v1/namespaces/{ns}/services/{builders.child_name(name, 'triton')}:http/proxy"
    ready = kubectl.run("get", "--raw", f"{base}/v2/models/mnist_onnx/ready")
    assert ready.returncode == 0, ready.stderr
    body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}],
            "outputs": [{"name": "output"}]}
    out = kubectl("create", "--raw", f"{base}/v2/models/mnist_onnx/infer", "-f", "-",
                  input=json.dumps(body))
    (output,) = json.loads(out)["outputs"]
    scores = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    return float((scores.argmax(axis=1) == labels).mean())


def test_deleting_the_claim_says_volume_lost_and_runs_every_step_again_to_ready(
        node_cluster, full_quota, kit):
    kubectl = node_cluster.kubectl
    st = kit.status(NS, NAME)
    assert st.get("phase") == "Ready", st.get("phase")
    claim = builders.child_name(NAME, "model")
    old = kubectl.json("get", "pvc", claim, "-n", NS)
    old_uid, old_pv = old["metadata"]["uid"], old["spec"]["volumeName"]
    assert st["storage"] == {"claim": claim, "claimUid": old_uid}, st.get("storage")
    before = {s: v[0][1] for s, v in jobs_by_step(kit, NS, NAME).items()}
    first_train = st["stages"]["train"]["startTime"]
    assert _served(kubectl, NS, NAME) >= 0.8

    t0 = time.monotonic()
    kubectl("delete", "pvc", claim, "-n", NS, "--wait=false")

    def lost():
        s = kit.status(NS, NAME)
        return s if condition(s, "Ready").get("reason") == "VolumeLost" else None
    lost_st = wait_for("Ready VolumeLost", lost, 30, interval=0.2)
    # Triton's pod still mounts it: the claim is Terminating, and status says so
    pvc = kubectl.json("get", "pvc", claim, "-n", NS)["metadata"]
    assert pvc["uid"] == old_uid and pvc.get("deletionTimestamp"), pvc
    ready = condition(lost_st, "Ready")
    assert ready["status"] == "False" and claim in ready["message"], ready
    assert "is being deleted" in ready["message"], ready
    assert lost_st["storage"]["lostClaimUid"] == old_uid, lost_st["storage"]
    row = kubectl("get", "pvc", claim, "-n", NS, "--no-headers").split()
    assert row[:2] == [claim, "Terminating"], row
    wait_for("the VolumeLost Warning", lambda: [e for e in kit.events_for(NS, NAME)
                                                if e["reason"] == "VolumeLost"], 30, interval=0.5)

    # the operator lets go of it (Triton and the Jobs go), a new claim is provisioned
    # and every step runs again from train
    st = wait_ready(kit, NS, NAME, PIPELINE_TIMEOUT, f"{NS}/{NAME} Ready again on a new claim")
    took = FIGURES["model PVC deleted -> Ready again (every step re-run)"] = time.monotonic() - t0
    print(f"\nclaim {claim} deleted -> Ready again on a new claim: {took:.1f} s")
    new = kubectl.json("get", "pvc", claim, "-n", NS)
    new_uid = new["metadata"]["uid"]
    assert new_uid != old_uid and new["spec"]["volumeName"] != old_pv, (old_uid, new_uid)
    assert st["storage"] == {"claim": claim, "claimUid": new_uid}, st["storage"]
    after = jobs_by_step(kit, NS, NAME)
    assert set(after) == set(before) == JOB_STEPS, (sorted(before), sorted(after))
    for step, v in after.items():
        assert len(v) == 1 and v[0][2] == "0", (step, v)
        assert v[0][1] != before[step], f"{step}: the Job from before the loss was kept"
    for step, rec in st["stages"].items():
        if rec.get("job"):
            assert rec["state"] == "Succeeded" and rec["attempt"] == 0, (step, rec)
            assert rec["startTime"] >= first_train, (step, rec)
    assert st["stages"]["train"]["startTime"] > first_train
    assert condition(st, "Ready")["status"] == "True"
    warned = [e for e in kit.events_for(NS, NAME) if e["type"] == "Warning"]
    assert [(e["reason"], e.get("count") or 1) for e in warned] == [("VolumeLost", 1)], warned
    assert "running every step again from train" in warned[0]["message"], warned
    # Triton serves again, from the new claim
    (triton,) = [p for p in kit.pods_for(NS, NAME)
                 if p["metadata"]["labels"].get(builders.LABEL_COMPONENT) == "triton"
                 and not p["metadata"].get("deletionTimestamp")]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in triton["spec"]["volumes"]
              if v.get("persistentVolumeClaim")]
    assert claims == [claim], claims
    assert _served(kubectl, NS, NAME) >= 0.8
