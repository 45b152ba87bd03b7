"""A stage pod that a ResourceQuota refuses: waiting while the quota is full (no
attempt spent, the Job kept, its deadline moved out), a failure at once when the
pod asks for more than the quota's hard limit. Through the core, with the job
controller's FailedCreate events worded as the API server words them.
(The real API server and job controller: tests/cluster/test_quota_wait.py.)"""
from __future__ import annotations

import copy
from datetime import timedelta

from mnist_operator.core.children import (EXCEEDS_QUOTA, WAITING_FOR_QUOTA, job_outcome,
                                          quota_refusal)
from mnist_operator.core.reconcile import reconcile
from test_reconcile import World, created, events

TRAIN_DEADLINE = 6 * 3600   # api/stage_table.py


def refusal(pod: str, quota: str, requested: str, used: str, limited: str) -> str:
    """The job controller's FailedCreate message around the ResourceQuota admission
    plugin's refusal (k8s.io/apiserver plugin/resourcequota: "exceeded quota: %s,
    requested: %s, used: %s, limited: %s", lists sorted and joined by commas)."""
    return (f'Error creating: pods "{pod}" is forbidden: exceeded quota: {quota}, '
            f"requested: {requested}, used: {used}, limited: {limited}")


FULL = refusal("demo-train-x-0-abcde", "compute", "requests.cpu=1", "requests.cpu=2",
               "requests.cpu=2")
NEVER = refusal("demo-train-x-0-abcde", "small", "requests.cpu=4", "requests.cpu=0",
                "requests.cpu=2")


class QuotaWorld(World):
    """The job controller's side too: a Job with no pod and the FailedCreate events
    observe_children passes in for it."""

    def __init__(self, spec=None):
        super().__init__(spec)
        self.job_events: dict[str, list[dict]] = {}

    def observed(self) -> dict:
        return {**super().observed(), "job_events": copy.deepcopy(self.job_events)}

    def start_refusing(self, step: str, message: str) -> dict:
        job = self.job(step)
        job["status"] = {"startTime": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.job_events[job["metadata"]["name"]] = [
            {"message": message, "count": 1,
             "lastTimestamp": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}]
        return job

    def pod_created(self, step: str) -> None:
        """The quota freed: the job controller's next try creates the pod."""
        job = self.job(step)
        name = job["metadata"]["name"]
        self.job_events.pop(name, None)
        self.pods.append({"metadata": {"name": f"{name}-pod", "labels": {"job-name": name},
                                       "creationTimestamp": self.now.strftime(
                                           "%Y-%m-%dT%H:%M:%SZ")},
                          "status": {"phase": "Pending"}})
        job["status"]["active"] = 1

    def step(self, advance: float = 0):
        # a Job update here is a patch of its deadline only, not a new spec
        for_jobs = {k: copy.deepcopy(o["spec"]) for k, o in self.objects.items() if k[0] == "Job"}
        d = super().step(advance)
        for obj in d.update:
            key = (obj["kind"], obj["metadata"]["name"])
            if key[0] == "Job":
                self.objects[key]["spec"] = {**for_jobs[key], **obj["spec"]}
        return d


def test_the_quota_message_is_read_as_the_admission_plugin_writes_it():
    q = quota_refusal(refusal("p", "compute", "limits.memory=2Gi,requests.cpu=500m",
                              "limits.memory=15Gi,requests.cpu=3", "limits.memory=16Gi,requests.cpu=3"))
    assert q.quota == "compute"
    assert q.requested == {"limits.memory": "2Gi", "requests.cpu": "500m"}
    assert q.used == {"limits.memory": "15Gi", "requests.cpu": "3"}
    assert q.beyond_hard() == []                  # each fits once the used part frees
    never = quota_refusal(NEVER)
    assert never.beyond_hard() == ["requests.cpu=4 (the quota allows 2)"]
    assert quota_refusal(refusal("p", "q", "pods=1", "pods=0", "pods=0")).beyond_hard()
    assert quota_refusal("violates PodSecurity") is None


def test_a_full_quota_waits_without_spending_an_attempt_and_says_so_once():
    w = QuotaWorld()
    w.step()
    job = w.start_refusing("train", FULL)
    name = job["metadata"]["name"]
    d = w.step(15)
    train = w.stage("train")
    assert (train["state"], train["reason"], train["attempt"]) == ("Running", WAITING_FOR_QUOTA, 0)
    assert "exceeded quota: compute" in train["message"] and "requests.cpu=2" in train["message"]
    assert events(d) == [("Normal", WAITING_FOR_QUOTA)]
    assert not d.delete and not created(d)       # the job controller keeps trying
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Progressing")
    assert WAITING_FOR_QUOTA.lower() not in str(w.status.get("refusals", ""))
    # more passes while it waits: no event, no delete, no new attempt
    for _ in range(20):
        d = w.step(30)
        assert not d.events and not d.delete and not created(d), d
    assert w.stage("train")["attempt"] == 0 and w.jobs("train") == [name]
    # the quota's numbers move: the message follows, still without an event
    w.job_events[name][0]["message"] = FULL.replace("used: requests.cpu=2", "used: requests.cpu=1.5")
    d = w.step(5)
    assert "requests.cpu=1.5" in w.stage("train")["message"] and not d.events
    # the quota frees: the pod is created by the job controller, and the step goes on
    w.pod_created("train")
    d = w.step(5)
    assert (w.stage("train")["state"], w.stage("train")["reason"]) == ("Running", "JobRunning")
    assert not d.events
    w.finish("train")
    w.step(1)
    assert w.stage("train")["state"] == "Succeeded" and w.stage("train")["attempt"] == 0
    assert w.jobs("export")


def test_the_deadline_does_not_run_out_while_the_pod_waits_and_the_stage_keeps_its_own():
    w = QuotaWorld()
    w.step()
    job = w.start_refusing("train", FULL)
    w.step(10)
    assert not w.decisions[-1].update             # hours left: nothing to move
    # more than half of the stage's deadline spent waiting: it moves out by the wait
    d = w.step(TRAIN_DEADLINE * 0.6)
    waited = 10 + int(TRAIN_DEADLINE * 0.6)
    assert [(o["kind"], o["spec"]) for o in d.update] == [
        ("Job", {"activeDeadlineSeconds": waited + TRAIN_DEADLINE})]
    assert d.update[0]["metadata"] == {"name": job["metadata"]["name"], "namespace": "ml"}
    assert not w.step(60).update                  # moved once, not every pass
    # the pod comes 100 s later: the deadline is the wait for it plus the stage's own
    w.step(40)
    w.pod_created("train")
    d = w.step(0)
    assert [o["spec"] for o in d.update] == [
        {"activeDeadlineSeconds": waited + 100 + TRAIN_DEADLINE}]
    assert not w.step(5).update


def test_a_short_wait_gives_the_stage_its_whole_deadline_after_the_pod_comes():
    w = QuotaWorld()
    w.step()
    w.start_refusing("train", FULL)
    w.step(15)
    w.step(30)
    w.pod_created("train")
    d = w.step(0)
    assert [o["spec"] for o in d.update] == [{"activeDeadlineSeconds": 45 + TRAIN_DEADLINE}]


def test_a_request_beyond_the_hard_limit_fails_at_once_naming_the_quota_and_the_request():
    w = QuotaWorld({"retries": {"limit": 3}})
    w.step()
    job = w.start_refusing("train", NEVER)
    d = w.step(15)
    train = w.stage("train")
    assert (train["state"], train["reason"], train["attempt"]) == ("Failed", EXCEEDS_QUOTA, 0)
    assert "ResourceQuota small" in train["message"]
    assert "requests.cpu=4 (the quota allows 2)" in train["message"]
    assert w.status["phase"] == "Failed"
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert "ResourceQuota small" in ready["message"]
    assert [r["name"] for r in d.delete] == [job["metadata"]["name"]]   # no more tries
    assert ("Warning", "StageFailed") in events(d)
    assert not w.step(600).create                 # no retry of a pod that cannot fit
    # the quota is raised and the user asks for a retry: attempt 0 again
    w.cr["metadata"]["annotations"]["mnist.serving.dev/retry"] = "1"
    w.job_events.clear()
    w.step(1)
    w.step(1)
    assert (w.stage("train")["state"], w.stage("train")["attempt"]) == ("Running", 0)


def test_other_pod_refusals_still_fail_the_attempt():
    job = {"metadata": {"name": "j"}, "status": {"startTime": "2025-03-01T12:00:00Z"}}
    ev = [{"message": 'Error creating: pods "p" is forbidden: violates PodSecurity '
                      '"restricted:latest": runAsNonRoot != true',
           "lastTimestamp": "2025-03-01T12:00:01Z"}]
    out = job_outcome(job, [], None, ev)
    assert (out.state, out.reason, out.retry, out.pods_refused) == ("Failed", "PodSecurity",
                                                                    True, True)
    waiting = job_outcome(job, [], None, [{"message": FULL, "lastTimestamp": "x"}])
    assert (waiting.state, waiting.reason, waiting.pods_refused) == ("Running",
                                                                     WAITING_FOR_QUOTA, False)
    # the newest event counts: a full quota after a refusal the pod outgrew
    both = [{"message": NEVER, "lastTimestamp": "2025-03-01T12:00:01Z"},
            {"message": FULL, "lastTimestamp": "2025-03-01T12:00:09Z"}]
    assert job_outcome(job, [], None, both).reason == WAITING_FOR_QUOTA


def test_fed_its_own_result_a_waiting_step_changes_nothing():
    w = QuotaWorld()
    w.step()
    w.start_refusing("train", FULL)
    w.step(15)
    before = copy.deepcopy(w.status)
    d = reconcile(copy.deepcopy(w.cr), w.observed(), w.now + timedelta(seconds=1))
    assert (created(d), d.update, d.delete, d.events) == ([], [], [], [])
    assert d.status["stages"] == before["stages"]
