"""A ResourceQuota on the real API server refuses a stage pod: while the quota is
full the step waits (WaitingForQuota) without spending attempts, and the job
controller's own retries bring the pod once the quota is raised; a pod that asks
for more than the quota's hard limit fails the step at once. Issue 27: a briefly
full quota used to spend an attempt per refused pod and fail the resource."""
from __future__ import annotations

import json
import time

import pytest

from tests.harness.operator_process import wait_for
from .test_hardening import warnings
from .test_operator_e2e import wait_ready_at

pytestmark = pytest.mark.cluster

TRAIN_DEADLINE = 6 * 3600   # api/stage_table.py


def cpu_quota(ns: str, name: str, cpu: str) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": ns},
            "spec": {"hard": {"requests.cpu": cpu}}}


def counted(kubectl, ns: str, name: str, cpu: str) -> None:
    """Wait until the quota controller has counted the namespace's use (before that the
    API server refuses every pod with "status unknown for quota")."""
    wait_for(f"quota {name} counted at {cpu}", lambda: (kubectl.json(
        "get", "resourcequota", name, "-n", ns).get("status") or {}).get("used", {}).get(
        "requests.cpu") == cpu, 30)


def holder(ns: str) -> dict:
    """A pod that holds 1 cpu of the quota: it fits no node (a selector nothing has),
    and a Pending pod counts against a quota as a running one does."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": ns},
            "spec": {"nodeSelector": {"mnist-test/nowhere": "true"},
                     "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "1"}}}]}}


def train_of(kit, ns: str, name: str) -> dict:
    return (kit.status(ns, name).get("stages") or {}).get("train") or {}


def test_a_full_quota_waits_spends_no_attempt_and_goes_on_once_raised(
        pipeline_ns, operator, kit, kubectl):
    ns, name = pipeline_ns, "quota-full"
    kubectl("apply", "-f", "-", input=json.dumps(cpu_quota(ns, "compute", "1")))
    counted(kubectl, ns, "compute", "0")
    kubectl("apply", "-f", "-", input=json.dumps(holder(ns)))
    counted(kubectl, ns, "compute", "1")
    cr = kit.apply_cr(ns, name, {"retries": {"limit": 1, "backoffSeconds": 1}})
    train = wait_for("train waiting for the quota", lambda: (
        lambda rec: rec if rec.get("reason") == "WaitingForQuota" else None)(
        train_of(kit, ns, name)), 60)
    assert train["state"] == "Running" and train["attempt"] == 0, train
    assert "exceeded quota: compute" in train["message"], train
    assert "requested: requests.cpu=1, used: requests.cpu=1, limited: requests.cpu=1" \
        in train["message"], train
    job = train["job"]
    # well past what used to fail it (three refused attempts): still waiting, same Job
    time.sleep(40)
    train = train_of(kit, ns, name)
    assert (train["state"], train["reason"], train["attempt"], train["job"]) == \
        ("Running", "WaitingForQuota", 0, job), train
    assert kit.job_names(ns, name, "train") == [job]
    assert kit.status(ns, name)["phase"] == "Training"
    said = [e for e in kit.events_for(ns, name) if e["reason"] == "WaitingForQuota"]
    assert len(said) == 1 and said[0]["type"] == "Normal", said
    assert not warnings(kit, ns, name, "StageFailed")
    # the administrator raises the quota: the job controller's next try makes the pod
    kubectl("patch", "resourcequota", "compute", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"hard": {"requests.cpu": "64"}}}))
    wait_for("export started", lambda: (kit.status(ns, name).get("stages") or {}).get(
        "export", {}).get("state") in ("Running", "Succeeded"), 120)
    train = train_of(kit, ns, name)
    assert (train["state"], train["attempt"], train["job"]) == ("Succeeded", 0, job), train
    # the stage kept its own deadline after the wait: moved out by the time waited
    deadline = kubectl.json("get", "job", job, "-n", ns)["spec"]["activeDeadlineSeconds"]
    assert TRAIN_DEADLINE + 40 < deadline < TRAIN_DEADLINE + 600, deadline
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"])
    assert all(rec.get("attempt", 0) == 0 for rec in st["stages"].values()), st["stages"]


def test_a_request_beyond_the_quotas_hard_limit_fails_at_once_naming_both(
        pipeline_ns, operator, kit, kubectl):
    ns, name = pipeline_ns, "quota-small"
    kubectl("apply", "-f", "-", input=json.dumps(cpu_quota(ns, "small", "500m")))
    counted(kubectl, ns, "small", "0")
    kit.apply_cr(ns, name, {"retries": {"limit": 3, "backoffSeconds": 1}})
    st = kit.wait_phase(ns, name, "Failed", 60)
    train = st["stages"]["train"]
    assert (train["state"], train["reason"], train["attempt"]) == ("Failed", "ExceedsQuota", 0), train
    assert "ResourceQuota small" in train["message"], train
    assert "requests.cpu=1 (the quota allows 500m)" in train["message"], train
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert "ResourceQuota small" in ready["message"]
    # the Job goes (the job controller would try for hours), and no attempt follows
    wait_for("the refused Job deleted", lambda: not [
        j for j in kit.jobs_for(ns, name) if not j["metadata"].get("deletionTimestamp")], 30)
    assert train_of(kit, ns, name)["attempt"] == 0
