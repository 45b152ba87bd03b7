"""The model volume of a Ready resource is deleted, on the real API server with the
PV controller and the PVC protection controller: the claim sits Terminating while
Triton's pod mounts it, the operator says so at once (Ready VolumeLost, one
Warning), lets go of it, makes a new claim and runs every step again from train.
Issue 27: it used to say nothing, make an empty claim and never re-run a step.
(Triton really mounting the claim: the real-node tier's part, not this one.)"""
from __future__ import annotations

import json
import time

import pytest

from tests.harness.operator_process import claim_name, wait_for
from .test_hardening import warnings
from .test_operator_e2e import wait_ready_at

pytestmark = pytest.mark.cluster

HOLD = "mnist-test/hold"


def ready_reason(kit, ns: str, name: str) -> str | None:
    return next((c.get("reason") for c in kit.status(ns, name).get("conditions") or []
                 if c["type"] == "Ready"), None)


def test_a_deleted_claim_is_said_at_once_and_the_pipeline_runs_again_from_train(
        pipeline_ns, operator, kit, kubectl):
    ns, name = pipeline_ns, "lost"
    cr = kit.apply_cr(ns, name)
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"])
    claim = claim_name(name)
    old_uid = kubectl.json("get", "pvc", claim, "-n", ns)["metadata"]["uid"]
    assert st["storage"] == {"claim": claim, "claimUid": old_uid}, st.get("storage")
    first_train = st["stages"]["train"]["startTime"]

    # Triton's pod mounts it, so the protection controller keeps it Terminating until
    # that pod goes; on KWOK pods go at once, so a finalizer of the test's own holds it
    # long enough to read what status says meanwhile
    kubectl("patch", "pvc", claim, "-n", ns, "--type=json", "-p", json.dumps(
        [{"op": "add", "path": "/metadata/finalizers/-", "value": HOLD}]))
    kubectl("delete", "pvc", claim, "-n", ns, "--wait=false")
    lost = wait_for("Ready VolumeLost", lambda: (lambda s: s if next(
        (c for c in s.get("conditions") or [] if c["type"] == "Ready"), {}).get("reason")
        == "VolumeLost" else None)(kit.status(ns, name)), 30)
    ready = next(c for c in lost["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and claim in ready["message"], ready
    assert "is being deleted" in ready["message"], ready
    assert lost["storage"]["lostClaimUid"] == old_uid, lost["storage"]
    assert not any(rec["state"] == "Succeeded" and rec.get("job") for rec in
                   lost["stages"].values()), lost["stages"]
    repo = next(c for c in lost["conditions"] if c["type"] == "RepositoryReady")
    assert (repo["status"], repo["reason"]) == ("False", "VolumeLost"), repo
    # every Job and Triton go, and nothing starts on the claim being deleted
    wait_for("the Jobs and Triton gone", lambda: not kit.jobs_for(ns, name) and not
             kit._selected("deployments", ns, name), 30)
    time.sleep(5)
    st = kit.status(ns, name)
    assert ready_reason(kit, ns, name) == "VolumeLost" and not kit.jobs_for(ns, name), st
    assert len(warnings(kit, ns, name, "VolumeLost")) == 1
    held = kubectl.json("get", "pvc", claim, "-n", ns)["metadata"]
    kubectl("patch", "pvc", claim, "-n", ns, "--type=merge", "-p", json.dumps(
        {"metadata": {"finalizers": [f for f in held.get("finalizers", []) if f != HOLD]}}))

    # the operator lets go of it (Triton and the Jobs go), and makes a new claim; the
    # test's stand-in for a provisioner hands the released volume to it
    wait_for("a new claim", lambda: kubectl.json("get", "pvc", claim, "-n", ns)["metadata"][
        "uid"] != old_uid, 60)
    pv = kit.ensure_volume(ns, name)
    kubectl("patch", "pv", pv, "--type=merge",
            "-p", json.dumps({"spec": {"claimRef": {"uid": None, "resourceVersion": None}}}))
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"], timeout=180)
    new_uid = kubectl.json("get", "pvc", claim, "-n", ns)["metadata"]["uid"]
    assert new_uid != old_uid and st["storage"] == {"claim": claim, "claimUid": new_uid}
    for step, rec in st["stages"].items():
        if rec.get("job"):   # every step that ran, ran again: attempt 0, after the loss
            assert rec["attempt"] == 0 and rec["startTime"] >= first_train, (step, rec)
    assert st["stages"]["train"]["startTime"] > first_train
    assert len(warnings(kit, ns, name, "VolumeLost")) == 1
    assert ready_reason(kit, ns, name) == "Ready"
