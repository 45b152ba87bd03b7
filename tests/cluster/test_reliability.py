"""Reliability of the real operator on the real control plane: kill -9 at the
worst moments, stage failures and retries, Triton going down after Ready, API
server restarts, name conflicts, deletion mid-stage.

Every test runs `mnist-serving operator` as a subprocess (tests/harness/operator_process.py)
against kube-apiserver + controller-manager + scheduler + KWOK, and asserts on
what a user sees: the resource's status and Events, and the Jobs, Pods and
other children in the namespace. Failures are injected through KWOK by
resource name (see kwok/stages.yaml): ``slow-<step>-...`` makes a step take
20 s, ``fail-<step>-...`` fails it on every attempt.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from kubernetes import client, watch

from mnist_operator.core import builders
from mnist_operator.core.reconcile import RETRY_ANNOTATION

from tests.harness.operator_process import wait_for

pytestmark = pytest.mark.cluster

STEP = builders.LABEL_STEP
ATTEMPT = builders.LABEL_ATTEMPT


# --------------------------------------------------------------------------- reading helpers
def jobs_per_step(kit, ns: str, name: str) -> Counter:
    return Counter(j["metadata"]["labels"][STEP] for j in kit.jobs_for(ns, name))


def job_uids(kit, ns: str, name: str) -> dict[str, str]:
    return {j["metadata"]["name"]: j["metadata"]["uid"] for j in kit.jobs_for(ns, name)}


def assert_one_job_per_step(kit, ns: str, name: str) -> None:
    jobs = kit.jobs_for(ns, name)
    per_step = Counter(j["metadata"]["labels"][STEP] for j in jobs)
    assert per_step and all(n == 1 for n in per_step.values()), \
        f"duplicated Jobs: {sorted(j['metadata']['name'] for j in jobs)}"
    assert all(j["metadata"]["labels"][ATTEMPT] == "0" for j in jobs), \
        f"a step was retried: {sorted(j['metadata']['name'] for j in jobs)}"


def step_state(kit, ns: str, name: str, step: str) -> dict:
    return (kit.status(ns, name).get("stages") or {}).get(step) or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def reasons(kit, ns: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in kit.events_for(ns, name)]


def running_job(kit, ns: str, name: str, step: str) -> dict | bool:
    """The step's Job once its pod runs (KWOK has started it)."""
    pods = [p for p in kit.pods_for(ns, name)
            if p["metadata"]["labels"].get(STEP) == step and p.get("status", {}).get("phase") == "Running"]
    return bool(pods) and kit.jobs_for(ns, name, step)[0]


def owned_leftovers(kubectl, ns: str) -> dict[str, list[str]]:
    """Every object of a kind the operator makes that is still in the namespace."""
    out = {}
    for kind in ("mnistservings", "jobs", "pods", "deployments", "replicasets", "services",
                 "persistentvolumeclaims"):
        names = [o["metadata"]["name"] for o in kubectl.json("get", kind, "-n", ns).get("items", [])]
        if names:
            out[kind] = names
    return out


class KillOnJobAdded:
    """Watches Jobs and SIGKILLs the operator the moment a Job of a chosen step
    is ADDED: the operator created it and has (very likely) not yet written
    status. Records whether status already knew the Job at that instant."""

    def __init__(self, api_client, operator, ns: str, steps: set[str]):
        self.batch = client.BatchV1Api(api_client)
        self.operator, self.ns, self.steps = operator, ns, set(steps)
        self.killed: list[str] = []
        self.done = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for ev in self._watch.stream(self.batch.list_namespaced_job, self.ns, timeout_seconds=120):
            labels = ev["object"].metadata.labels or {}
            step = labels.get(STEP)
            if ev["type"] == "ADDED" and step in self.steps:
                self.operator.kill()
                self.killed.append(step)
                self.steps.discard(step)
                self.done.set()
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._watch.stop()
        self._thread.join(5)


# --------------------------------------------------------------------------- a. kill -9
def test_kill_9_while_a_stage_job_runs_resumes_without_duplicates(operator, pipeline_ns, kit):
    ns, name = pipeline_ns, "slow-train-a"
    kit.apply_cr(ns, name)
    job = wait_for("the train Job running", lambda: running_job(kit, ns, name, "train"), 60)
    operator.kill()
    time.sleep(2)  # the Job keeps running with nobody watching
    operator.start()
    st = kit.wait_ready(ns, name, timeout=150)
    assert_one_job_per_step(kit, ns, name)
    assert job_uids(kit, ns, name)[job["metadata"]["name"]] == job["metadata"]["uid"]
    assert st["stages"]["train"]["job"] == job["metadata"]["name"]
    assert st["stages"]["train"]["state"] == "Succeeded"
    assert condition(st, "Ready")["status"] == "True"


def test_kill_9_right_after_job_creation_adopts_instead_of_duplicating(operator, pipeline_ns, kit,
                                                                       api_client):
    """Kill on the Job's ADDED watch event, for three steps in a row; each time
    the restarted operator must adopt the Job it created, not make a second."""
    ns, name = pipeline_ns, "kill-on-add"
    unknown_at_kill = []
    kit.apply_cr(ns, name)
    for step in ("export", "repo", "bench-grpc"):
        with KillOnJobAdded(api_client, operator, ns, {step}) as killer:
            assert killer.done.wait(120), f"no {step} Job was created\n{operator.tail()}"
        # what status knew when the operator died (it cannot change now: no operator runs)
        rec = step_state(kit, ns, name, step)
        unknown_at_kill.append(rec.get("job") is None)
        assert not operator.alive
        operator.start()
    st = kit.wait_ready(ns, name, timeout=150)
    assert_one_job_per_step(kit, ns, name)
    for step in ("export", "repo", "bench-grpc"):
        assert st["stages"][step]["state"] == "Succeeded", st["stages"][step]
    # The window this test is about: at least one kill landed before status recorded the Job.
    assert any(unknown_at_kill), f"every kill came after status recorded the Job: {unknown_at_kill}"
    print(f"kills before status recorded the Job: {sum(unknown_at_kill)}/3")


# --------------------------------------------------------------------------- b. stage failure
def test_stage_failure_retries_with_backoff_then_fails_and_retry_annotation_resumes(operator,
                                                                                    pipeline_ns, kit):
    ns, name = pipeline_ns, "fail-export-b"
    kit.apply_cr(ns, name, {"retries": {"limit": 2, "backoffSeconds": 2}})
    st = kit.wait_phase(ns, name, "Failed", timeout=120)
    rec = st["stages"]["export"]
    assert rec["state"] == "Failed" and rec["reason"] == "SimulatedFailure", rec
    assert rec["attempt"] == 2 and "failed after 3 attempt(s)" in rec["message"], rec
    assert "export failed" in rec["message"]
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert ready["message"].startswith("export:")
    assert condition(st, "Exported")["status"] == "False"
    # every attempt a Job of its own, spaced by the doubling backoff (2 s, then 4 s)
    jobs = sorted(kit.jobs_for(ns, name, "export"), key=lambda j: int(j["metadata"]["labels"][ATTEMPT]))
    assert [j["metadata"]["labels"][ATTEMPT] for j in jobs] == ["0", "1", "2"]
    pods = {p["metadata"]["labels"][ATTEMPT]: p for p in kit.pods_for(ns, name)
            if p["metadata"]["labels"].get(STEP) == "export"}

    def finished(attempt: str) -> float:
        term = pods[attempt]["status"]["containerStatuses"][0]["state"]["terminated"]
        return _epoch(term["finishedAt"])
    for attempt, delay in (("1", 2), ("2", 4)):
        created = _epoch(next(j for j in jobs if j["metadata"]["labels"][ATTEMPT] == attempt)
                         ["metadata"]["creationTimestamp"])
        prev = str(int(attempt) - 1)
        # second precision on both timestamps: allow one second
        assert created - finished(prev) >= delay - 1, (attempt, created - finished(prev))
    warnings = [e for e in kit.events_for(ns, name) if e["type"] == "Warning"]
    assert sum(e["reason"] == "StageFailed" for e in warnings) >= 3, [e["reason"] for e in warnings]
    assert any(e["reason"] == "Failed" for e in warnings)
    assert all("\n" not in e["message"] for e in warnings)

    # the retry annotation resumes from export: train is not rerun, export restarts at attempt 0
    train_before = job_uids(kit, ns, name)
    train_job = next(n for n in train_before if "-train-" in n)
    export_0 = jobs[0]["metadata"]["uid"]
    kit.annotate(ns, name, RETRY_ANNOTATION, "1")
    wait_for("export attempt 0 recreated", lambda: any(
        j["metadata"]["labels"][ATTEMPT] == "0" and j["metadata"]["uid"] != export_0
        for j in kit.jobs_for(ns, name, "export")), 60)
    assert ("Normal", "Resumed") in reasons(kit, ns, name)
    st = kit.wait_phase(ns, name, "Failed", timeout=120)  # the step still fails every time
    assert st["retryToken"] == "1"
    assert job_uids(kit, ns, name)[train_job] == train_before[train_job]
    assert jobs_per_step(kit, ns, name)["train"] == 1
    assert st["stages"]["train"]["state"] == "Succeeded"


def _epoch(ts: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- c. Triton down
def test_triton_unready_after_ready_flips_ready_condition_and_back_without_rerunning(operator,
                                                                                    pipeline_ns,
                                                                                    kit, kubectl):
    ns, name = pipeline_ns, "triton-down"
    kit.apply_cr(ns, name)
    kit.wait_ready(ns, name, timeout=150)
    jobs_before = job_uids(kit, ns, name)
    triton = [p["metadata"]["name"] for p in kit.pods_for(ns, name)
              if p["metadata"]["labels"].get(builders.LABEL_COMPONENT) == "triton"]
    assert len(triton) == 1, triton
    kubectl("label", "pod", triton[0], "-n", ns, "mnist.serving.dev/simulate=unready")

    def ready_is(status_):
        st = kit.status(ns, name)
        return condition(st, "Ready").get("status") == status_ and st

    st = wait_for("Ready=False", lambda: ready_is("False"), 60)
    ready = condition(st, "Ready")
    assert ready["reason"] == "TritonUnavailable", ready
    assert "0/1" in ready["message"]
    assert condition(st, "Serving")["status"] == "False"
    assert ("Warning", "TritonUnavailable") in reasons(kit, ns, name)

    kubectl("label", "pod", triton[0], "-n", ns, "mnist.serving.dev/simulate-")
    st = wait_for("Ready=True again", lambda: ready_is("True"), 60)
    assert st["phase"] == "Ready"
    assert job_uids(kit, ns, name) == jobs_before, "a stage was rerun"
    assert [p["metadata"]["name"] for p in kit.pods_for(ns, name)
            if p["metadata"]["labels"].get(builders.LABEL_COMPONENT) == "triton"] == triton


# --------------------------------------------------------------------------- d. API hiccups
def test_apiserver_restart_mid_pipeline_converges(operator, pipeline_ns, kit, cluster):
    ns, name = pipeline_ns, "slow-export-d"
    kit.apply_cr(ns, name)
    wait_for("the export Job running", lambda: running_job(kit, ns, name, "export"), 60)
    cluster.restart("kube-apiserver", down_for=2)
    st = kit.wait_ready(ns, name, timeout=180)
    assert operator.alive, operator.tail()
    assert_one_job_per_step(kit, ns, name)
    assert all(r["state"] in ("Succeeded", "Skipped") for r in st["stages"].values()), st["stages"]


def test_foreign_object_with_a_childs_name_does_not_wedge_the_operator(operator, pipeline_ns, kit,
                                                                        kubectl):
    """A user's Service already holds the name the Triton Service would get
    (create answers 409). The operator must neither crash nor touch it, and the
    resource still reaches Ready (the Deployment does not need the Service)."""
    ns, name = pipeline_ns, "conflict"
    foreign = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": builders.child_name(name, "triton"), "namespace": ns,
                            "labels": {"owner": "someone-else"}},
               "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}}
    kubectl("apply", "-f", "-", input=json.dumps(foreign))
    before = kubectl.json("get", "service", foreign["metadata"]["name"], "-n", ns)
    kit.apply_cr(ns, name)
    kit.wait_ready(ns, name, timeout=150)
    after = kubectl.json("get", "service", foreign["metadata"]["name"], "-n", ns)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["selector"] == {"app": "other"}
    assert not after["metadata"].get("ownerReferences")
    # ... and the user is told why the Service is not the operator's
    conflicts = [e for e in kit.events_for(ns, name) if e.get("reason") == "NameConflict"]
    assert conflicts and conflicts[0]["type"] == "Warning", kit.events_for(ns, name)
    assert f"Service {foreign['metadata']['name']} already exists" in conflicts[0]["message"]
    assert operator.alive and "Traceback" not in operator.log_text()
    assert_one_job_per_step(kit, ns, name)


# --------------------------------------------------------------------------- e. deletion
def test_deletion_mid_stage_removes_every_owned_child(operator, pipeline_ns, kit, kubectl):
    ns, name = pipeline_ns, "slow-export-e"
    kit.apply_cr(ns, name)
    wait_for("the export Job running", lambda: running_job(kit, ns, name, "export"), 60)
    made = kit.children(ns, name)
    assert made["jobs"] and made["pods"] and made["persistentvolumeclaims"], made
    kit.delete_cr(ns, name, wait=True)
    wait_for("every child gone", lambda: not owned_leftovers(kubectl, ns), 60)
    assert operator.alive


@pytest.mark.slow
def test_fifty_create_delete_cycles_leave_nothing_behind(operator, pipeline_ns, kit, kubectl):
    ns = pipeline_ns
    t0 = time.monotonic()
    for i in range(50):
        name = f"cycle-{i}"
        kit.apply_cr(ns, name)
        wait_for(f"{name}'s first Job", lambda: kit.jobs_for(ns, name), 30, interval=0.1)
        kit.delete_cr(ns, name, wait=False)
    wait_for("every child of 50 resources gone", lambda: not owned_leftovers(kubectl, ns), 120)
    assert operator.alive and "Traceback" not in operator.log_text(), operator.tail()
    print(f"50 create/delete cycles: {time.monotonic() - t0:.1f}s")
