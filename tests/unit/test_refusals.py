"""A child the API server refuses is news: status, one Warning, a backoff, a resume.
(The real API server's refusals: tests/cluster/test_hardening.py.)"""
from __future__ import annotations

import copy
from datetime import timedelta

from mnist_operator.core import refusals as R
from mnist_operator.core.reconcile import job_outcome, reconcile, replica_failure
from mnist_operator.api.spec import parse_spec
from test_reconcile import T0, World, created, events

QUOTA = ('jobs.batch "demo-train-ee3394-0" is forbidden: exceeded quota: jobs, '
         'requested: count/jobs.batch=1, used: count/jobs.batch=0, limited: count/jobs.batch=0')


class RefusingWorld(World):
    """The shell's part too: creates of ``refuse`` kinds are refused, and
    refusals.record() writes them into status as handlers._one_pass does."""

    def __init__(self, spec=None, refuse=("Job",), code=403, reason="Forbidden", message=QUOTA):
        super().__init__(spec)
        self.refuse, self.code, self.reason, self.message = set(refuse), code, reason, message
        self.attempts: list[str] = []
        self.warnings: list[tuple[str, str, str]] = []

    def step(self, advance: float = 0):
        self.now += timedelta(seconds=advance)
        d = reconcile(copy.deepcopy(self.cr), self.observed(), self.now)
        refused = []
        for obj in d.create:
            if obj["kind"] in self.refuse:
                self.attempts.append(obj["metadata"]["name"])
                refused.append(R.Refusal(obj["kind"], obj["metadata"]["name"], self.code,
                                         R.classify(self.code, self.reason, self.message),
                                         self.message))
            else:
                self.objects.setdefault((obj["kind"], obj["metadata"]["name"]),
                                        {**copy.deepcopy(obj), "metadata": {
                                            **obj["metadata"], "uid": "u", "generation": 1}})
        d.status, warnings = R.record(d.status, refused, self.cr["metadata"]["generation"], self.now)
        self.warnings += warnings
        self.cr["status"] = copy.deepcopy(d.status)
        self.decisions.append(d)
        return d


def test_a_refused_job_shows_its_reason_in_the_stage_the_condition_and_one_warning():
    w = RefusingWorld()
    w.step()
    train = w.stage("train")
    assert train["state"] == "Pending" and train["reason"] == "QuotaExceeded"
    assert "exceeded quota" in train["message"] and "HTTP 403" in train["message"]
    assert w.cond("Ready")["status"] == "False" and w.cond("Ready")["reason"] == "CreateRefused"
    assert "exceeded quota" in w.status["message"]
    entry = w.status["refusals"][f"Job/{w.attempts[0]}"]
    assert (entry["code"], entry["reason"], entry["count"]) == (403, "QuotaExceeded", 1)
    assert [(t, r) for t, r, _ in w.warnings] == [("Warning", "QuotaExceeded")]
    assert w.objects.get(("PersistentVolumeClaim", "demo-model"))   # the rest still happened


def test_a_refused_create_backs_off_doubling_instead_of_every_pass():
    w = RefusingWorld()
    w.step()
    for _ in range(5):                      # passes inside the 10 s backoff try nothing
        d = w.step(advance=1)
        assert not [o for o in d.create if o["kind"] == "Job"]
        assert d.requeue_after is not None and d.requeue_after <= 10
    assert len(w.attempts) == 1
    w.step(advance=6)                       # 11 s after the refusal: one more try
    assert len(w.attempts) == 2
    w.step(advance=15)                      # the next backoff is 20 s
    assert len(w.attempts) == 2
    w.step(advance=6)
    assert len(w.attempts) == 3
    assert w.status["refusals"][f"Job/{w.attempts[0]}"]["count"] == 3
    assert len(w.warnings) == 1             # the same refusal again is no new event
    assert w.stage("train")["attempt"] == 0  # a refusal spends no retry


def test_once_the_cause_is_gone_the_next_try_creates_it_and_status_forgets():
    w = RefusingWorld()
    w.step()
    w.refuse = set()                        # the quota was raised
    w.step(advance=11)
    assert w.jobs("train") and w.stage("train")["state"] == "Running"
    w.step()
    assert "refusals" not in w.status
    assert w.cond("Ready")["reason"] == "Progressing"


def test_a_spec_change_or_the_retry_annotation_tries_at_once():
    w = RefusingWorld()
    w.step()
    w.refuse = set()
    w.edit_spec(retries__limit=3)           # a new generation: no waiting for the backoff
    w.step(advance=1)
    assert w.jobs("train")
    w2 = RefusingWorld()
    w2.step()
    w2.refuse = set()
    w2.cr["metadata"]["annotations"]["mnist.serving.dev/retry"] = "1"
    w2.step(advance=1)
    assert w2.jobs("train")


def test_a_refused_volume_is_the_resources_news_and_nothing_else_waits_on_it():
    w = RefusingWorld(refuse=("PersistentVolumeClaim",), code=422, reason="Invalid",
                      message='PersistentVolumeClaim "demo-model" is invalid: denied by policy')
    w.step()
    entry = w.status["refusals"]["PersistentVolumeClaim/demo-model"]
    assert (entry["code"], entry["reason"]) == (422, "Invalid")
    assert w.cond("Ready")["reason"] == "CreateRefused"
    assert ("Warning", "Invalid") in [(t, r) for t, r, _ in w.warnings]


def test_the_pass_that_was_refused_looks_again_at_the_retry_time():
    """No watch event comes for an object that was never created: the pass itself
    must come back when the refusal's backoff ends."""
    w = RefusingWorld(refuse=("PersistentVolumeClaim",))
    w.step()
    assert R.retry_in(w.status, w.now) == R.FIRST_BACKOFF_SECONDS
    assert R.retry_in(w.status, w.now + timedelta(seconds=60)) == 1   # overdue: at once
    w.step(R.FIRST_BACKOFF_SECONDS)                 # refused again: backs off longer
    assert R.retry_in(w.status, w.now) == 2 * R.FIRST_BACKOFF_SECONDS
    w.refuse = set()
    w.step(2 * R.FIRST_BACKOFF_SECONDS)             # created now
    w.step(1)
    assert R.retry_in(w.status, w.now) is None and not w.status.get("refusals")


def test_the_account_waits_with_its_refusal_but_the_job_goes_ahead():
    w = RefusingWorld(refuse=("ServiceAccount",))
    w.step()
    assert "ServiceAccount/demo-runner" in w.status["refusals"]
    d = w.step(advance=1)
    assert not [o for o in d.create if o["kind"] == "ServiceAccount"]


def test_pods_refused_by_admission_fail_the_attempt_at_once_and_the_job_goes():
    w = World()
    w.step()
    job = w.jobs("train")[0]
    message = ('Error creating: pods "demo-train-ee3394-0-x" is forbidden: violates PodSecurity '
               '"restricted:latest": runAsNonRoot != true')
    observed = w.observed()
    observed["job_events"] = {job: [{"message": message, "lastTimestamp": "2025-03-01T12:00:05Z"}]}
    seen = T0 + timedelta(seconds=20)
    d = reconcile(copy.deepcopy(w.cr), observed, seen)
    train = d.status["stages"]["train"]
    assert train["state"] == "BackingOff" and train["reason"] == "PodSecurity"
    # the backoff counts from the pass that ended the attempt, not from the refusal's event
    assert train["completionTime"] == seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    backoff = parse_spec(w.cr["spec"]).retries.backoff_seconds
    assert d.requeue_after == backoff and train["retryTime"] == (
        seen + timedelta(seconds=backoff)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "violates PodSecurity" in train["message"]
    assert [r["name"] for r in d.delete] == [job]      # no more tries by the job controller
    assert ("Warning", "StageFailed") in events(d)
    assert not created(d)


def test_job_outcome_needs_no_pods_and_a_failed_create_to_call_it_refused():
    job = {"metadata": {"name": "j"}, "status": {"startTime": "2025-03-01T12:00:00Z"}}
    ev = [{"message": "violates PodSecurity", "lastTimestamp": "2025-03-01T12:00:01Z"}]
    assert job_outcome(job, [], None, ev).reason == "PodSecurity"
    assert job_outcome(job, [], None, None).state == "Running"
    pod = {"metadata": {"name": "p"}, "status": {}}
    assert job_outcome(job, [pod], None, ev).state == "Running"   # it has a pod after all


def test_a_deployment_whose_pods_are_refused_says_so():
    dep = {"status": {"conditions": [{"type": "ReplicaFailure", "status": "True",
                                      "reason": "FailedCreate",
                                      "message": 'pods "x" is forbidden: exceeded quota: q'}]}}
    reason, message = replica_failure(dep)
    assert reason == "QuotaExceeded" and "exceeded quota" in message
    assert replica_failure({"status": {"conditions": []}}) is None


def test_classify_names_what_a_user_can_act_on():
    assert R.classify(403, "Forbidden", QUOTA) == "QuotaExceeded"
    assert R.classify(403, "Forbidden", 'ValidatingAdmissionPolicy "p" with binding "b" '
                                        'denied request: no') == "AdmissionDenied"
    assert R.classify(422, "Invalid", "spec.x: Invalid value") == "Invalid"
    assert R.classify(400, "", "bad") == "BadRequest"
    assert R.carried({"observedGeneration": 1, "refusals": {"a": {}}}, 2, None) == {}
    assert R.carried({"observedGeneration": 2, "refusals": {"a": {}}}, 2, None) == {"a": {}}
