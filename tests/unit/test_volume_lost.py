"""The model volume of a Ready resource is deleted or replaced: the operator says so
(Ready VolumeLost, one Warning), forgets every step whose output was on it, and
runs the pipeline again from train on the new claim. Through the core.
(The real API server and PV controller: tests/cluster/test_volume_lost.py.)"""
from __future__ import annotations

import copy

from mnist_operator.core.steps import VOLUME_LOST
from test_reconcile import ALL_STEPS, World, created, events

CLAIM = ("PersistentVolumeClaim", "demo-model")
JOB_STEPS = [s for s in ALL_STEPS if s != "serve"]


def bound(w: World, uid: str | None = None) -> dict:
    pvc = w.objects[CLAIM]
    if uid:
        pvc["metadata"]["uid"] = uid
    pvc["status"] = {"phase": "Bound"}
    return pvc


def ready_world() -> World:
    w = World()
    w.step()
    bound(w)
    w.run_through(*ALL_STEPS)
    assert w.status["phase"] == "Ready"
    assert w.status["storage"] == {"claim": "demo-model", "claimUid": "uid-demo-model"}
    return w


def assert_forgotten(w: World) -> None:
    """Nothing is recorded as done that was on the lost volume."""
    for step, rec in w.status["stages"].items():
        assert rec["state"] == "Pending" and rec["reason"] == VOLUME_LOST, (step, rec)
        assert rec["attempt"] == 0 and "job" not in rec and "result" not in rec, rec
    assert not w.status.get("model") and not w.status.get("benchmark")


def test_the_claims_uid_is_recorded_once_it_is_bound():
    w = World()
    w.step()
    assert "storage" not in w.status                      # Pending claim: nothing yet
    bound(w)
    d = w.step(1)
    assert w.status["storage"] == {"claim": "demo-model", "claimUid": "uid-demo-model"}
    assert not d.events
    # an existing claim is the user's: nothing recorded, nothing watched
    mine = World({"storage": {"existingClaim": "mine"}})
    mine.step()
    assert "storage" not in mine.status


def test_a_terminating_claim_is_a_lost_volume_at_once_and_everything_runs_again_from_train():
    w = ready_world()
    jobs = w.jobs()
    w.objects[CLAIM]["metadata"]["deletionTimestamp"] = "2025-03-01T13:00:00Z"
    d = w.step(1)
    assert [e for e in events(d) if e[0] == "Warning"] == [("Warning", VOLUME_LOST)]
    warning = next(e for e in d.events if e.reason == VOLUME_LOST)
    assert "demo-model" in warning.message and "is being deleted" in warning.message
    assert "from train" in warning.message
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", VOLUME_LOST)
    assert "is being deleted" in ready["message"] and w.status["phase"] == "Training"
    for cond in ("Trained", "RepositoryReady", "Serving", "Analyzed"):
        assert w.cond(cond)["status"] != "True", w.cond(cond)
    assert (w.cond("RepositoryReady")["status"], w.cond("RepositoryReady")["reason"]) == \
        ("False", VOLUME_LOST)
    assert_forgotten(w)
    # every Job goes (none may be read as done again) and Triton lets go of the claim
    deleted = sorted(r["name"] for r in d.delete if r["kind"] == "Job")
    assert deleted == sorted(jobs)
    assert [r["kind"] for r in d.delete if r["kind"] != "Job"] == ["Deployment"]
    assert not created(d)                                 # no Job on a claim being deleted
    assert w.status["storage"]["lostClaimUid"] == "uid-demo-model"
    assert "claimUid" not in w.status["storage"]
    # while the claim is still Terminating: no second Warning, still no Job
    for _ in range(5):
        d = w.step(2)
        assert not d.events and not created(d), d
        assert w.cond("Ready")["reason"] == VOLUME_LOST
    # the claim goes; a new one is made, bound, and train runs as attempt 0
    w.objects.pop(CLAIM)
    d = w.step(1)
    assert [o["kind"] for o in created(d)] == ["PersistentVolumeClaim"]
    d = w.step(1)
    assert [o["kind"] for o in created(d)] == ["Job"]
    bound(w, uid="uid-new-claim")                         # its first pod binds it
    w.step(1)
    assert w.status["storage"] == {"claim": "demo-model", "claimUid": "uid-new-claim"}
    assert (w.stage("train")["state"], w.stage("train")["attempt"]) == ("Running", 0)
    assert w.cond("Ready")["reason"] == "Progressing"
    # every step runs again, none taken as done from before
    for s in ALL_STEPS:
        assert w.stage(s)["state"] not in ("Succeeded", "Skipped"), (s, w.stage(s))
        w.run_through(s)
    assert w.status["phase"] == "Ready" and w.cond("Ready")["status"] == "True"
    assert sum(e.reason == VOLUME_LOST for d in w.decisions for e in d.events) == 1


def test_a_replaced_claim_is_a_lost_volume_too():
    w = ready_world()
    w.objects[CLAIM]["metadata"]["uid"] = "uid-someone-elses"    # deleted and made again
    d = w.step(1)
    assert events(d).count(("Warning", VOLUME_LOST)) == 1
    assert "was replaced" in w.cond("Ready")["message"]
    assert_forgotten(w)
    assert not [o for o in created(d) if o["kind"] == "Job"]    # the old Jobs go first
    d = w.step(1)
    assert [o["kind"] for o in created(d)] == ["Job"] and w.jobs("train")
    assert w.status["storage"] == {"claim": "demo-model", "claimUid": "uid-someone-elses"}
    assert not [e for e in events(d) if e[0] == "Warning"]


def test_a_claim_deleted_while_the_operator_was_away_is_made_again_and_train_reruns():
    w = ready_world()
    w.objects.pop(CLAIM)
    d = w.step(1)
    assert events(d).count(("Warning", VOLUME_LOST)) == 1
    assert "was deleted" in w.cond("Ready")["message"]
    assert [o["kind"] for o in created(d)] == ["PersistentVolumeClaim"]
    bound(w, uid="uid-second")
    w.step(1)
    assert w.stage("train")["state"] == "Running" and w.stage("train")["attempt"] == 0


def test_a_volume_lost_mid_pipeline_reruns_from_train_and_disabled_steps_stay_skipped():
    w = World({"tensorrt": {"enabled": False}, "serving": {"models": ["onnx", "bls"]}})
    w.step()
    bound(w)
    w.run_through("train", "export", "repo")
    w.objects[CLAIM]["metadata"]["deletionTimestamp"] = "2025-03-01T13:00:00Z"
    d = w.step(1)
    assert events(d).count(("Warning", VOLUME_LOST)) == 1
    assert w.stage("engine")["state"] == "Skipped"       # it never ran: nothing of it was lost
    assert w.stage("export")["reason"] == VOLUME_LOST
    # fed its own result, the pass changes nothing more
    before = copy.deepcopy(w.status)
    d = w.step(0)
    assert not d.events and not created(d)
    assert w.status["stages"] == before["stages"]
