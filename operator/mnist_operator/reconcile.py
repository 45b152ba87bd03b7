"""The operator's decision: ``reconcile(cr, observed, now) -> Decision``.

Pure: no I/O, no clock, no Kubernetes client. The kopf shell (handlers.py)
lists the children, calls this, applies the Decision and patches status;
everything the operator *decides* is here and unit-tested.

Level-triggered. The inputs are the resource (spec, metadata, and the status
written last time, which persists across operator restarts) and what exists
now; the output is the objects to create, update and delete, the new status,
the Events to post, and when to look again. Fed its own result, the same call
returns no actions and no Events.

Rules, in the order ``pipeline.plan`` lists the steps:

* One step at a time. A step is done when status records Succeeded/Skipped
  with its current fingerprint (``pipeline.is_done``), so a spec change
  re-runs only the steps whose fingerprint moved.
* A disabled step is recorded Skipped (reason from the plan) without a Job.
* ``serve`` is the Triton Deployment + Service. It is done once the
  Deployment with the serve fingerprint has been available; later steps only
  start while it is available. It is wanted only once every earlier step is
  done: re-training deletes it, which frees the GPUs for the Jobs and never
  serves a half-written repository.
* A failed attempt posts a Warning and is retried as attempt+1 after
  ``retries.backoffSeconds * 2**attempt`` seconds, up to ``retries.limit``;
  then phase Failed. A new generation or a new value of the annotation
  ``mnist.serving.dev/retry`` resumes a failed step from attempt 0 (its old
  Jobs are deleted first, since attempt 0's Job name is reused).
* A Job that exists but that status does not know (the operator died between
  creating it and writing status) is adopted, never duplicated. A Job that
  vanished before its result was recorded is recreated.
* Closed loop (``modelAnalyzer.applyBest``): the plan is built from the
  recorded analyze result, and built again in the same pass once analyze
  finishes, so ``repo-tuned`` starts at once. Two serve steps then share the
  one Deployment: it serves the repository of the last serve step that every
  step before it allows (``serve`` while ``repo-tuned`` writes, then
  ``serve-tuned``: the fingerprint changes and the pods roll).
* While ``analyze`` runs with GPUs, the Deployment is scaled to 0 (Serving
  condition reason PausedForAnalysis): its Triton sidecar needs the GPU that
  serving holds, and a volume that is ReadWriteOnce keeps both on one node, so
  on a one-GPU node, or a cluster whose every GPU serves, it would never
  start. It scales back once analyze has finished (or failed for good).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from . import builders, refusals, results
from .pipeline import Endpoints, Layout, Step, is_done, plan
from .spec import MnistServingSpec, SpecError, parse_spec
from .stages import STAGES
from .status import (get_condition, one_line, ordered, parse_timestamp, set_condition,
                     stage_condition, timestamp)
from .vocabulary import (BACKING_OFF, FAILED, FALSE, FINISHED, LABEL_ATTEMPT, LABEL_FINGERPRINT,
                         LABEL_INSTANCE, LABEL_STEP, PENDING, READY, RETRY_ANNOTATION, RUNNING,
                         SKIPPED, SUCCEEDED, TRUE, UNKNOWN, WORK_DIR)

#: serve's record while analyze holds the GPU, and while Triton comes back after it
PAUSED, SCALING_BACK = "PausedForAnalysis", "ScalingBack"

#: Look again this soon while waiting for a deleted child to go away.
DELETION_POLL_SECONDS = 2
#: How many attempt numbers to try when a Job carries no attempt label.
MAX_ATTEMPTS_SCANNED = 21


@dataclass(frozen=True)
class Event:
    type: str        # Normal | Warning
    reason: str      # CamelCase
    message: str     # one line


@dataclass
class Decision:
    create: list[dict] = field(default_factory=list)   # create; "already exists" is fine
    update: list[dict] = field(default_factory=list)   # replace the live object's spec
    delete: list[dict] = field(default_factory=list)   # {apiVersion, kind, name, namespace}
    status: dict = field(default_factory=dict)         # the whole new status
    events: list[Event] = field(default_factory=list)
    requeue_after: int | None = None                   # seconds; None: wait for a change


# --------------------------------------------------------------------------- reading children
def _meta(obj: dict | None) -> dict:
    return (obj or {}).get("metadata") or {}


def _terminating(obj: dict) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def object_ref(obj: dict) -> dict:
    m = _meta(obj)
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "name": m.get("name"), "namespace": m.get("namespace")}


def object_fingerprint(obj: dict | None) -> str | None:
    """The fingerprint a child carries: on itself or on its pod template."""
    if not obj:
        return None
    template = _meta((obj.get("spec") or {}).get("template"))
    for m in (_meta(obj), template):
        for key in ("annotations", "labels"):
            fp = (m.get(key) or {}).get(LABEL_FINGERPRINT)
            if fp:
                return fp
    return None


def _pods_of_job(job: dict, pods: list[dict]) -> list[dict]:
    name = _meta(job).get("name")
    uid = _meta(job).get("uid")
    out = []
    for pod in pods:
        m = _meta(pod)
        labels = m.get("labels") or {}
        owned = any(r.get("kind") == "Job" and (r.get("uid") == uid if uid else r.get("name") == name)
                    for r in m.get("ownerReferences") or [])
        if owned or name in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name")):
            out.append(pod)
    return out


def _terminated_states(pods: list[dict]) -> list[dict]:
    """Terminated states of the stage containers (not init containers), newest last."""
    states = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or \
                (cs.get("lastState") or {}).get("terminated")
            if term:
                states.append(term)
    return sorted(states, key=lambda t: t.get("finishedAt") or "")


#: Container waiting reasons that will not fix themselves soon: shown in
#: status (and one Warning event) while the Job waits for its deadline.
STUCK_CONTAINER_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError")


#: A pod is only called Unschedulable after this long: the scheduler says so
#: for a moment while a volume binds or a node frees up, which is no news.
UNSCHEDULABLE_GRACE_SECONDS = 60


def pod_blocker(pods: list[dict], now: datetime | None = None) -> tuple[str, str] | None:
    """Why a stage pod is not running yet, when it is stuck: (Reason, message)
    for a pod unschedulable for UNSCHEDULABLE_GRACE_SECONDS (any time when
    ``now`` is None) or a container that cannot start; None otherwise."""
    for pod in pods:
        st = pod.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" \
                    and c.get("reason") == "Unschedulable":
                since = parse_timestamp(c.get("lastTransitionTime"))
                if now is not None and (since is None or (now - since).total_seconds()
                                        < UNSCHEDULABLE_GRACE_SECONDS):
                    continue
                return "Unschedulable", one_line(c.get("message") or "no node fits the pod")
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_CONTAINER_REASONS:
                return waiting["reason"], one_line(
                    f"container {cs.get('name')}: {waiting.get('message') or waiting['reason']}")
    return None


def parse_result(message: str | None) -> dict | None:
    """The stage result JSON from a termination message, if it is one."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("state") else None


@dataclass(frozen=True)
class JobOutcome:
    state: str                      # Running | Succeeded | Skipped | Failed
    reason: str = ""
    message: str = ""
    result: dict | None = None
    start: str | None = None
    finish: str | None = None
    pods_refused: bool = False      # the API server refused every pod the Job tried


def pods_refused(job: dict, pods: list[dict], failed_creates: list[dict] | None
                 ) -> JobOutcome | None:
    """A Job that has no pod because the API server refuses them (Pod Security, a
    quota, a missing ServiceAccount): the job controller's FailedCreate event says
    why. It would only retry until its deadline, hours away: a failed attempt now."""
    if pods or not failed_creates:
        return None
    newest = max(failed_creates, key=lambda e: e.get("lastTimestamp") or "")
    text = newest.get("message") or "the job controller could not create its pod"
    reason = refusals.classify(403, "FailedCreate", text)
    return JobOutcome(FAILED, reason, one_line(f"the API server refused its pod: {text}"),
                      start=(job.get("status") or {}).get("startTime"),
                      finish=newest.get("lastTimestamp"), pods_refused=True)


def job_outcome(job: dict, pods: list[dict], now: datetime | None = None,
                failed_creates: list[dict] | None = None) -> JobOutcome:
    """What a stage Job says happened: its conditions, its pods' exit codes,
    the result JSON the stage wrote as its termination message, and the job
    controller's FailedCreate events when it has no pod at all."""
    refused = pods_refused(job, pods, failed_creates)
    if refused is not None:
        return refused
    st = job.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or [] if c.get("status") == "True"}
    terms = _terminated_states(pods)
    parsed = next((r for r in (parse_result(t.get("message")) for t in reversed(terms)) if r), None)
    failed_term = next((t for t in reversed(terms) if t.get("exitCode", 0) != 0), None)
    start = st.get("startTime")
    complete = "Complete" in conds or "SuccessCriteriaMet" in conds or (st.get("succeeded") or 0) > 0
    failed = "Failed" in conds or "FailureTarget" in conds or (
        failed_term is not None and not st.get("active") and not complete)
    if complete and not failed:
        state = parsed.get("state") if parsed and parsed.get("state") in (SUCCEEDED, SKIPPED) \
            else SUCCEEDED
        finish = st.get("completionTime") or (terms[-1].get("finishedAt") if terms else None)
        return JobOutcome(state, (parsed or {}).get("reason", ""), (parsed or {}).get("message", ""),
                          parsed, start, finish)
    if failed:
        cond = conds.get("Failed") or conds.get("FailureTarget") or {}
        finish = (failed_term or {}).get("finishedAt") or cond.get("lastTransitionTime")
        if parsed and parsed.get("state") == FAILED:
            return JobOutcome(FAILED, parsed.get("reason") or "StageFailed",
                              parsed.get("message") or "", parsed, start, finish)
        if failed_term is not None:
            code = failed_term.get("exitCode")
            reason = failed_term.get("reason") or "Error"
            if reason == "Error":
                reason = "ExitCode"
            text = failed_term.get("message") or ""
            return JobOutcome(FAILED, reason, one_line(f"exit code {code}" + (f": {text}" if text
                                                                                else "")),
                              None, start, finish)
        return JobOutcome(FAILED, cond.get("reason") or "JobFailed",
                          cond.get("message") or "the Job failed", None, start, finish)
    blocker = pod_blocker(pods, now)
    if blocker:
        return JobOutcome(RUNNING, blocker[0], blocker[1], start=start)
    return JobOutcome(RUNNING, start=start)


def name_conflict(live: dict | None, desired: dict) -> str | None:
    """Why ``desired`` cannot be created when its name is taken (409): the
    live object is not ours (another instance label, or none). None when the
    live object is this resource's own child, or is gone."""
    if live is None:
        return None
    want = (_meta(desired).get("labels") or {}).get(LABEL_INSTANCE)
    have = (_meta(live).get("labels") or {}).get(LABEL_INSTANCE)
    if want is None or have == want:
        return None
    return (f"{desired.get('kind')} {_meta(desired).get('name')} already exists and is not this "
            f"resource's ({LABEL_INSTANCE}={have or 'unset'}): rename or delete it")


def _replicas(dep: dict) -> int:
    return int((dep.get("spec") or {}).get("replicas", 1))


def replica_failure(dep: dict | None) -> tuple[str, str] | None:
    """(Reason, message) when the Deployment's ReplicaSet cannot create pods
    (its ReplicaFailure condition: Pod Security, a quota, ...); None otherwise."""
    for c in ((dep or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            text = c.get("message") or c.get("reason") or "pods cannot be created"
            return (refusals.classify(403, c.get("reason") or "FailedCreate", text),
                    one_line(f"the API server refused a Triton pod: {text}"))
    return None


def deployment_readiness(dep: dict) -> tuple[bool, int, int]:
    """(available, ready replicas, wanted replicas) of a Deployment whose
    rollout the controller has observed."""
    st = dep.get("status") or {}
    want = _replicas(dep)
    ready = int(st.get("availableReplicas") or 0)
    seen = int(st.get("observedGeneration") or 0) >= int(_meta(dep).get("generation") or 0)
    updated = int(st.get("updatedReplicas") or 0) >= want
    return seen and updated and ready >= want and want > 0, ready, want


# --------------------------------------------------------------------------- status helpers
def _clean(value: Any) -> Any:
    """Status holds ints, strings, bools, lists and maps: never floats."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _trim_result(parsed: dict | None) -> dict:
    """The stage-specific fields of a result (state/reason/message live beside it)."""
    return _clean({k: v for k, v in (parsed or {}).items()
                   if k not in ("stage", "state", "reason", "message")})


def status_patch(old: dict | None, new: dict) -> dict:
    """A JSON merge patch turning ``old`` status into ``new``: keys that went
    away become null (stages of steps no longer planned, say)."""
    def diff(a: Any, b: Any) -> Any:
        if not isinstance(a, dict) or not isinstance(b, dict):
            return b
        out = {k: diff(a.get(k), v) for k, v in b.items()}
        out.update({k: None for k in a if k not in b})
        return out
    out = diff(old or {}, new)
    out.pop("kopf", None)  # kopf's own bookkeeping, if a kopf version keeps any there
    return out


# --------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Substrate:
    """Where the pipeline runs, as far as a decision depends on it."""
    layout: Layout         # the work directory as every stage sees it
    endpoints: Endpoints   # how the steps after serve reach Triton
    device: str            # the train and export stages' --device
    #: Serving and analyze's own Triton share one machine's cores (a local run):
    #: serving pauses for analyze even without GPUs.
    one_machine: bool = False


def cluster_substrate(cr: dict, spec: MnistServingSpec) -> Substrate:
    """Pods with the model volume at /work, Triton behind its Service."""
    return Substrate(Layout(WORK_DIR), builders.endpoints(cr),
                     "cuda" if spec.training.gpus > 0 else "cpu")


def reconcile(cr: dict, observed: dict, now: datetime,
              substrate: Substrate | None = None) -> Decision:
    """Decide what to do for one MnistServing.

    ``observed``: {"jobs": [Job], "pods": [Pod], "deployment": Deployment|None,
    "service": Service|None, "pvc": PVC|None, "job_events": {Job name: [its
    FailedCreate events]}}, every object as the API returns it (camelCase
    dicts), children of this resource only.
    """
    try:
        spec = parse_spec(cr.get("spec"))
    except SpecError as err:
        return _invalid_spec(cr, err, now)
    return _Reconciler(cr, spec, observed, now, substrate or cluster_substrate(cr, spec)).run()


def _invalid_spec(cr: dict, err: SpecError, now: datetime) -> Decision:
    old = cr.get("status") or {}
    gen = _meta(cr).get("generation") or 0
    message = one_line("invalid spec: " + "; ".join(err.errors))
    before = get_condition(old.get("conditions"), READY) or {}
    status = dict(old, observedGeneration=gen, phase="Failed",
                  conditions=ordered(set_condition(old.get("conditions"), READY, FALSE,
                                                   "InvalidSpec", message, gen, now)))
    events = []
    if (before.get("reason"), before.get("message")) != ("InvalidSpec", message):
        events.append(Event("Warning", "InvalidSpec", message))
    return Decision(status=_clean(status), events=events)


class _Reconciler:
    """One reconcile pass; methods read top to bottom like the pipeline."""

    def __init__(self, cr: dict, spec: MnistServingSpec, observed: dict, now: datetime,
                 substrate: Substrate):
        self.cr, self.spec, self.now, self.substrate = cr, spec, now, substrate
        self.old = cr.get("status") or {}
        self.old_stages: dict[str, dict] = self.old.get("stages") or {}
        self.gen = _meta(cr).get("generation") or 0
        self.steps = self.plan(self.old_stages.get("analyze"))
        self.jobs = [j for j in observed.get("jobs") or []]
        self.pods = list(observed.get("pods") or [])
        self.deployment = observed.get("deployment")
        self.service = observed.get("service")
        self.pvc = observed.get("pvc")
        self.job_events: dict[str, list[dict]] = observed.get("job_events") or {}
        self.decision = Decision()
        token = (_meta(cr).get("annotations") or {}).get(RETRY_ANNOTATION)
        self.retry_token = token
        # creates the API server refused before; those still withheld are kept in status
        self.refused = refusals.carried(self.old, self.gen, token)
        self.refused_kept: dict[str, dict] = {}
        old_gen = self.old.get("observedGeneration")
        # A failed step starts over on a spec change or a new retry annotation value.
        self.resume = (old_gen is not None and old_gen != self.gen) or \
            (token is not None and token != self.old.get("retryToken"))
        self.serving_available = False
        self.serving_counts = (0, 0)
        self.serving_step: str | None = None   # the serve step the Deployment serves
        self.serving_want: dict | None = None  # the Deployment that step builds
        self.paused = False                      # Deployment scaled to 0 for analyze
        self.resuming = False                    # scaling back up after that pause
        self._names: dict[tuple[str, int], str] = {}

    # ---------------------------------------------------------------- helpers
    def plan(self, analyzed: dict | None) -> list[Step]:
        return plan(self.spec, self.substrate.layout, self.substrate.endpoints,
                    device=self.substrate.device, analyzed=analyzed)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.decision.events.append(Event(type_, reason, one_line(message)))

    def requeue(self, seconds: float) -> None:
        s = max(1, int(math.ceil(seconds)))
        r = self.decision.requeue_after
        self.decision.requeue_after = s if r is None else min(r, s)

    def job_name(self, step: Step, attempt: int) -> str:
        key = (step.name, attempt)
        if key not in self._names:
            self._names[key] = _meta(builders.build_step_job(self.cr, self.spec, step, attempt))["name"]
        return self._names[key]

    def attempt_of(self, step: Step, job: dict) -> int | None:
        labels = {**(_meta(job).get("annotations") or {}), **(_meta(job).get("labels") or {})}
        if str(labels.get(LABEL_ATTEMPT, "")).isdigit():
            return int(labels[LABEL_ATTEMPT])
        name = _meta(job).get("name")
        return next((a for a in range(MAX_ATTEMPTS_SCANNED) if self.job_name(step, a) == name), None)

    def step_jobs(self, step: Step) -> tuple[dict[int, dict], list[dict]]:
        """This step's Jobs at its current fingerprint: {attempt: Job} of the
        live ones, and the list of those being deleted."""
        live, going = {}, []
        for job in self.jobs:
            labels = _meta(job).get("labels") or {}
            if labels.get(LABEL_STEP) != step.name or labels.get(LABEL_FINGERPRINT) != step.fingerprint:
                continue
            if _terminating(job):
                going.append(job)
                continue
            attempt = self.attempt_of(step, job)
            if attempt is not None:
                live[attempt] = job
        return live, going

    # ---------------------------------------------------------------- the pass
    def run(self) -> Decision:
        self.ensure_volume()
        self.delete_stale_jobs()
        stages: dict[str, dict] = {}
        blocked_at: Step | None = None
        i = 0
        while i < len(self.steps):
            step, i = self.steps[i], i + 1
            rec = self.old_stages.get(step.name)
            if blocked_at is not None:
                stages[step.name] = rec if is_done(step, rec) else self.pending(step, rec)
                continue
            if not step.enabled:
                new = self.disabled(step, rec)
            elif step.long_running:
                new = self.serve(step, rec)
            else:
                new = self.job_step(step, rec)
            stages[step.name] = new
            self.announce(step, rec, new)
            if step.facts.replans and new != rec:
                # what follows analyze depends on its result (applyBest);
                # the steps up to it stay the same
                self.steps = self.plan(new)
            if new.get("state") not in FINISHED:
                blocked_at = step
        if blocked_at is not None and self.before_serve(blocked_at):
            self.drop_deployment()
        elif blocked_at is not None and self.pauses_serving(blocked_at, stages[blocked_at.name]):
            self.pause_deployment(stages)
        self.withhold_refused()
        self.add_runner_account()
        self.decision.status = self.build_status(stages, blocked_at)
        return self.decision

    def withhold_refused(self) -> None:
        """A create the API server refused waits for its retry time (no create on
        every pass); one retried now keeps its entry, so a new refusal backs off longer."""
        self.decision.create = [o for o in self.decision.create if not self.held_back(o)]

    def held_back(self, obj: dict) -> bool:
        key = refusals.key_of(obj)
        if key in self.refused:
            self.refused_kept[key] = self.refused[key]
        entry = refusals.withheld(self.refused, obj, self.now)
        if entry is not None:
            self.requeue((parse_timestamp(entry["retryTime"]) - self.now).total_seconds())
        return entry is not None

    def add_runner_account(self) -> None:
        """Pods need their ServiceAccount first: create it with any pod owner
        (already there is fine), so no pass has to list ServiceAccounts."""
        account = builders.build_runner_service_account(self.cr, self.spec)
        owners = [i for i, o in enumerate(self.decision.create) if o["kind"] in ("Job", "Deployment")]
        if account and owners and not self.held_back(account):
            self.decision.create.insert(owners[0], account)

    def before_serve(self, step: Step) -> bool:
        order = [s.name for s in self.steps]
        first_serve = next(i for i, s in enumerate(self.steps) if s.long_running)
        return order.index(step.name) < first_serve

    def ensure_volume(self) -> None:
        pvc = builders.build_pvc(self.cr, self.spec)
        if pvc is not None and (self.pvc is None or _terminating(self.pvc)):
            if self.pvc is None:
                self.decision.create.append(pvc)
            else:
                self.requeue(DELETION_POLL_SECONDS)

    def delete_stale_jobs(self) -> None:
        """Jobs of fingerprints (or steps) the plan no longer has."""
        current = {s.name: s.fingerprint for s in self.steps}
        for job in self.jobs:
            labels = _meta(job).get("labels") or {}
            step = labels.get(LABEL_STEP)
            if step is None or _terminating(job):
                continue
            if current.get(step) != labels.get(LABEL_FINGERPRINT):
                self.decision.delete.append(object_ref(job))

    def drop_deployment(self) -> None:
        if self.deployment is not None and not _terminating(self.deployment):
            self.decision.delete.append(object_ref(self.deployment))
            self.event("Normal", "ServingStopped",
                       "Triton Deployment deleted until the model is rebuilt")

    def pauses_serving(self, step: Step, rec: dict) -> bool:
        """analyze's own Triton takes the GPU that serving would hold (or, on one
        machine, its cores)."""
        shared = self.substrate.one_machine or (step.gpus > 0 and self.spec.serving.gpus > 0)
        return (step.facts.runs_own_triton and shared
                and self.serving_step is not None and rec.get("state") != FAILED)

    def shared(self) -> str:
        """What serving and analyze's Triton both need."""
        return "machine's cores" if self.substrate.one_machine else "GPU"

    def pause_deployment(self, stages: dict[str, dict]) -> None:
        """Scale the Deployment the serve step wants to 0 replicas."""
        want = {**self.serving_want, "spec": {**self.serving_want["spec"], "replicas": 0}}
        self.paused, self.resuming = True, False
        rec = stages[self.serving_step]
        if rec.get("state") == SUCCEEDED:
            stages[self.serving_step] = {
                **rec, "reason": PAUSED, "readyReplicas": 0,
                "message": f"Triton scaled to 0 while model-analyzer uses the {self.shared()}"}
        dep = self.deployment
        if dep is None:
            self.want_deployment(want, create=True)
        elif _terminating(dep):
            self.want_deployment(None)
        elif _replicas(dep) != 0 or object_fingerprint(dep) != object_fingerprint(want):
            self.want_deployment(want, create=False)
            if _replicas(dep) != 0:
                self.event("Normal", "ServingPaused",
                           f"Triton scaled to 0 replicas while model-analyzer uses the {self.shared()}"
                           + ("" if self.substrate.one_machine else
                              f" ({self.spec.serving.gpus} per pod)")
                           + "; it returns when analyze ends")
        else:
            self.want_deployment(None)   # already paused

    # ---------------------------------------------------------------- step kinds
    def base(self, step: Step, rec: dict | None, **fields: Any) -> dict:
        return _clean({"fingerprint": step.fingerprint, **fields})

    def pending(self, step: Step, rec: dict | None, reason: str = "Waiting",
                message: str = "") -> dict:
        waiting_for = message or f"{step.name} waits for the steps before it"
        if rec and rec.get("fingerprint") == step.fingerprint and rec.get("state") == PENDING \
                and rec.get("reason") == reason:
            return rec
        return self.base(step, rec, state=PENDING, reason=reason, message=waiting_for, attempt=0)

    def disabled(self, step: Step, rec: dict | None) -> dict:
        if is_done(step, rec) and rec.get("state") == SKIPPED:
            return rec
        return self.base(step, rec, state=SKIPPED, reason=step.skip_reason or "Disabled",
                         message=f"{step.name} is disabled in the spec", attempt=0)

    def drives_deployment(self, step: Step, rec: dict | None) -> bool:
        """A serve step serves the Deployment unless it and every step up to a
        later serve step are done (then that later one does)."""
        if not is_done(step, rec):
            return True
        later = self.steps[self.steps.index(step) + 1:]
        for other in later:
            if other.long_running:
                return False
            if not is_done(other, self.old_stages.get(other.name)):
                return True
        return True

    def want_deployment(self, obj: dict | None, create: bool = False) -> None:
        """One desired Deployment per pass: a later serve step (or a pause)
        replaces an earlier one's; None leaves the live one as it is."""
        for bucket in (self.decision.create, self.decision.update):
            bucket[:] = [o for o in bucket if o.get("kind") != "Deployment"]
        if obj is not None:
            (self.decision.create if create else self.decision.update).append(obj)

    def serve(self, step: Step, rec: dict | None) -> dict:
        if not self.drives_deployment(step, rec):
            return rec   # done; a later serve step's repository is the one served
        self.serving_step = step.name
        want = self.serving_want = builders.build_triton_deployment(self.cr, self.spec, step)
        want_fp = object_fingerprint(want) or step.fingerprint
        dep = self.deployment
        if self.service is None or _terminating(self.service):
            if self.service is None:
                self.decision.create.append(builders.build_triton_service(self.cr, self.spec))
            else:
                self.requeue(DELETION_POLL_SECONDS)
        if dep is None:
            self.want_deployment(want, create=True)
        elif _terminating(dep):
            self.requeue(DELETION_POLL_SECONDS)
            dep = None
        elif object_fingerprint(dep) != want_fp or _replicas(dep) != _replicas(want):
            # a new repository, or back from a pause for analyze
            self.want_deployment(want, create=False)
            dep = None
        available, ready, wanted = deployment_readiness(dep) if dep else (False, 0, 0)
        self.serving_available = available
        self.serving_counts = (ready, wanted or self.spec.serving.replicas)
        name = _meta(want).get("name")
        same = rec if rec and rec.get("fingerprint") == step.fingerprint else None
        if available:
            if same and same.get("state") == SUCCEEDED:
                back = {"reason": "Available", "message": self.serving_message()} \
                    if same.get("reason") in (PAUSED, SCALING_BACK) else {}
                return {**same, "readyReplicas": ready, "replicas": wanted, **back}
            return self.base(step, rec, state=SUCCEEDED, reason="Available",
                             message=self.serving_message(), deployment=name, attempt=0,
                             startTime=(same or {}).get("startTime") or timestamp(self.now),
                             completionTime=timestamp(self.now), readyReplicas=ready,
                             replicas=wanted)
        if same and same.get("state") == SUCCEEDED:
            # Served before with this fingerprint: nothing re-runs; Ready turns False.
            out = {**same, "readyReplicas": ready, "replicas": wanted or same.get("replicas", 0)}
            if same.get("reason") in (PAUSED, SCALING_BACK):
                self.resuming = True   # pause_deployment says PAUSED again if it still is
                out.update(reason=SCALING_BACK, message=self.scaling_back()[2])
            return out
        refused = replica_failure(dep)
        if refused is not None:   # its pods are refused: say why, once
            if not (same and (same.get("reason"), same.get("message")) == refused):
                self.event("Warning", refused[0], f"{step.name}: {refused[1]}")
            return self.base(step, rec, state=RUNNING, reason=refused[0], message=refused[1],
                             deployment=name, attempt=0, readyReplicas=ready,
                             startTime=(same or {}).get("startTime") or timestamp(self.now),
                             replicas=self.spec.serving.replicas)
        if same and same.get("state") == RUNNING:
            return {**same, "readyReplicas": ready}
        return self.base(step, rec, state=RUNNING, reason="RollingOut",
                         message=f"waiting for Deployment {name} to become available",
                         deployment=name, attempt=0, startTime=timestamp(self.now),
                         readyReplicas=ready, replicas=self.spec.serving.replicas)

    def after_serve(self, step: Step) -> bool:
        by_name = {s.name: s for s in self.steps}
        return any(by_name[n].long_running for n in self._upstream(step) if n in by_name)

    def _upstream(self, step: Step) -> set[str]:
        by_name = {s.name: s for s in self.steps}
        seen, todo = set(), list(step.needs)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(by_name[n].needs if n in by_name else ())
        return seen

    def job_step(self, step: Step, rec: dict | None) -> dict:
        if is_done(step, rec):
            return rec
        cur = rec if rec and rec.get("fingerprint") == step.fingerprint else None
        live, going = self.step_jobs(step)

        if self.resume and cur and cur.get("state") in (FAILED, BACKING_OFF):
            cur = self.base(step, cur, state=PENDING, reason="Resumed", attempt=0,
                            message=f"{step.name} resumed from attempt 0")
            self.event("Normal", "Resumed", f"{step.name}: retrying from attempt 0")
        if cur and cur.get("state") == PENDING and cur.get("reason") == "Resumed":
            # Attempt 0's Job name is reused: the old Jobs must be gone first.
            if live or going:
                self.decision.delete.extend(object_ref(j) for j in live.values())
                self.requeue(DELETION_POLL_SECONDS)
                return cur
            return self.start(step, cur, 0)

        attempt = int((cur or {}).get("attempt") or 0)
        if live and max(live) > attempt or (cur is None and live):
            # A Job status does not know about: adopt it, never duplicate it.
            attempt = max(live)
            cur = self.base(step, cur, state=RUNNING, reason="Adopted", attempt=attempt,
                            job=_meta(live[attempt]).get("name"),
                            message=f"adopted Job {_meta(live[attempt]).get('name')}")
        state = (cur or {}).get("state")
        if state == FAILED:
            return cur   # retries exhausted: wait for a spec change or the retry annotation
        if state == BACKING_OFF:
            retry_at = parse_timestamp(cur.get("retryTime")) or self.now
            if self.now < retry_at:
                self.requeue((retry_at - self.now).total_seconds())
                return cur
            return self.start(step, cur, attempt + 1)

        job = live.get(attempt)
        if job is None:
            if any(_meta(j).get("name") == self.job_name(step, attempt) for j in going):
                self.requeue(DELETION_POLL_SECONDS)
                return cur or self.pending(step, rec)
            if state == RUNNING and cur.get("job"):
                self.event("Warning", "JobMissing",
                           f"{step.name}: Job {cur['job']} disappeared before its result was "
                           f"recorded; recreating it")
            return self.start(step, cur, attempt)
        return self.observe(step, cur, attempt, job)

    def start(self, step: Step, cur: dict | None, attempt: int) -> dict:
        if self.after_serve(step) and not self.serving_available:
            return self.pending(step, cur, "WaitingForTriton",
                                f"{step.name} waits for Triton to become available")
        job = builders.build_step_job(self.cr, self.spec, step, attempt)
        if self.held_back(job):   # refused before: it waits for its retry time
            held = self.refused[refusals.key_of(job)]
            return self.base(step, cur, state=PENDING, reason=held["reason"], attempt=attempt,
                             job=_meta(job).get("name"), message=held["message"])
        self.decision.create.append(job)
        return self.base(step, cur, state=RUNNING, reason="JobCreated", attempt=attempt,
                         job=_meta(job).get("name"), startTime=timestamp(self.now),
                         message=f"Job {_meta(job).get('name')} created (attempt {attempt})")

    def observe(self, step: Step, cur: dict | None, attempt: int, job: dict) -> dict:
        name = _meta(job).get("name")
        out = job_outcome(job, _pods_of_job(job, self.pods), self.now, self.job_events.get(name))
        if out.pods_refused:  # stop the job controller trying; the retry is a new Job
            self.decision.delete.append(object_ref(job))
        common = dict(attempt=attempt, job=name,
                      startTime=out.start or (cur or {}).get("startTime") or timestamp(self.now))
        if out.state == RUNNING:
            stuck = out.reason  # "" unless a pod cannot be scheduled or started
            if cur and cur.get("state") == RUNNING and cur.get("job") == name:
                was_stuck = cur.get("reason") in ("Unschedulable", *STUCK_CONTAINER_REASONS)
                if (not stuck and not was_stuck) or (stuck and cur.get("reason") == stuck):
                    return cur
            if stuck:
                self.event("Warning", stuck, one_line(f"{step.name}: {out.message}"))
                return self.base(step, cur, state=RUNNING, reason=stuck,
                                 message=one_line(f"Job {name} waiting: {out.message}"), **common)
            return self.base(step, cur, state=RUNNING, reason="JobRunning",
                             message=f"Job {name} running (attempt {attempt})", **common)
        finished = out.finish or timestamp(self.now)
        if out.state in FINISHED:
            return self.base(step, cur, state=out.state, reason=out.reason or out.state,
                             message=out.message or f"{step.name} {out.state.lower()}",
                             completionTime=finished, result=_trim_result(out.result), **common)
        # Failed: retry after backoff, or give up.
        limit, base = self.spec.retries.limit, self.spec.retries.backoff_seconds
        failed = dict(reason=out.reason, completionTime=finished,
                      result=_trim_result(out.result), **common)
        if attempt < limit:
            delay = base * 2 ** attempt
            retry_at = (parse_timestamp(finished) or self.now) + timedelta(seconds=delay)
            if retry_at > self.now:
                self.requeue((retry_at - self.now).total_seconds())
            return self.base(step, cur, state=BACKING_OFF, retryTime=timestamp(retry_at),
                             message=one_line(f"attempt {attempt} failed: {out.message}; "
                                              f"retrying in {delay}s"), **failed)
        return self.base(step, cur, state=FAILED,
                         message=one_line(f"failed after {attempt + 1} attempt(s): {out.message}"),
                         **failed)

    # ---------------------------------------------------------------- events
    def announce(self, step: Step, old: dict | None, new: dict) -> None:
        """One Event per transition of a step's record (none when nothing moved)."""
        key = lambda r: (r or {}).get("fingerprint"), lambda r: (r or {}).get("state"), \
            lambda r: (r or {}).get("attempt"), lambda r: (r or {}).get("job")
        if all(k(old) == k(new) for k in key):
            return
        state, name = new.get("state"), step.name
        if old and old.get("state") in FINISHED and old.get("fingerprint") != new.get("fingerprint"):
            self.event("Normal", "SpecChanged", f"{name}: inputs changed, running it again")
        if state == RUNNING:
            if new.get("reason") == "JobCreated":
                self.event("Normal", "StageStarted", f"{name}: {new.get('message')}")
            elif step.long_running:
                self.event("Normal", "StageStarted", f"{name}: {new.get('message')}")
        elif state == SUCCEEDED:
            self.event("Normal", "StageSucceeded", f"{name}: {new.get('message')}")
        elif state == SKIPPED:
            self.event("Normal", "StageSkipped", f"{name} skipped ({new.get('reason')}): "
                                                  f"{new.get('message')}")
        elif state in (BACKING_OFF, FAILED):
            self.event("Warning", "StageFailed", f"{name} ({new.get('reason')}): "
                                                 f"{new.get('message')}")

    # ---------------------------------------------------------------- status
    def build_status(self, stages: dict[str, dict], active: Step | None) -> dict:
        gen, now = self.gen, self.now
        conditions = list(self.old.get("conditions") or [])
        by_stage: dict[str, list[dict]] = {}
        for step in self.steps:
            by_stage.setdefault(step.stage, []).append(stages[step.name])
        for facts in STAGES:
            stage, type_ = facts.name, facts.condition
            if stage not in by_stage:
                continue
            if facts.long_running:
                st, reason, msg = self.serving_condition(stages[self.serving_step or "serve"])
            else:
                st, reason, msg = stage_condition(by_stage[stage], stage)
                if all(r.get("state") == PENDING and r.get("reason") != "Resumed"
                       for r in by_stage[stage]):
                    st = UNKNOWN
            conditions = set_condition(conditions, type_, st, reason, msg, gen, now)

        failed = next((s for s in self.steps if stages[s.name].get("state") == FAILED), None)
        if failed is not None:
            rec = stages[failed.name]
            phase, ready = "Failed", (FALSE, "StageFailed", f"{failed.name}: {rec.get('message')}")
        elif active is None and self.serving_available:
            phase, ready = "Ready", (TRUE, "Ready", "every stage done; Triton is serving "
                                     + ", ".join(self.spec.served_triton_models()))
        elif active is None and self.resuming:
            phase, ready = "Deploying", self.scaling_back()
        elif active is None:
            phase, ready = "Deploying", self.unavailable()
        else:
            phase = active.facts.phase
            rec = stages[active.name]
            if stages[self.serving_step or "serve"].get("state") == SUCCEEDED \
                    and not self.serving_available and not self.paused:
                ready = self.scaling_back() if self.resuming else self.unavailable()
            else:
                ready = (FALSE, "Progressing", f"{active.name}: {rec.get('message')}")
        if self.refused_kept and phase != "Failed":
            ready = (FALSE, refusals.READY_REASON, refusals.summary(self.refused_kept))
        before = get_condition(conditions, READY) or {}
        conditions = set_condition(conditions, READY, *ready, gen, now)
        self.ready_events(before, ready, phase)

        summary_input = {
            s.name: {"stage": s.stage, "state": stages[s.name]["state"],
                     "reason": stages[s.name].get("reason", ""),
                     "message": stages[s.name].get("message", ""),
                     **(stages[s.name].get("result") or {})}
            for s in self.steps if stages[s.name].get("state") in FINISHED}
        summary = results.summarize(
            summary_input, apply_best=self.spec.benchmark.model_analyzer.apply_best) or {}
        status = {
            "observedGeneration": gen,
            "phase": phase,
            "message": get_condition(conditions, READY)["message"],
            "conditions": ordered(conditions),
            "stages": stages,
            "endpoints": self.substrate.endpoints.as_status(),
            # model, benchmark (and clientAccuracy once the client step ran)
            **{k: v for k, v in summary.items() if v is not None},
        }
        if self.retry_token is not None:
            status["retryToken"] = self.retry_token
        if self.refused_kept:
            status["refusals"] = self.refused_kept
        return _clean(status)

    def unavailable(self) -> tuple[str, str, str]:
        ready, want = self.serving_counts
        return FALSE, "TritonUnavailable", f"Triton has {ready}/{want} replicas available"

    def serving_message(self) -> str:
        return f"Triton serving {', '.join(self.spec.served_triton_models())}"

    def scaling_back(self) -> tuple[str, str, str]:
        return FALSE, "Progressing", (f"Triton scaling back to {self.spec.serving.replicas} "
                                      f"replica(s) after analyze")

    def serving_condition(self, rec: dict) -> tuple[str, str, str]:
        if self.paused:
            return FALSE, PAUSED, rec.get("message", "")
        if self.resuming:
            return FALSE, "RollingOut", self.scaling_back()[2]
        if self.serving_available:
            ready, want = self.serving_counts
            return TRUE, "Available", f"{ready}/{want} Triton replicas available"
        if rec.get("state") == SUCCEEDED:
            return self.unavailable()
        if rec.get("state") == RUNNING:
            return FALSE, "RollingOut", rec.get("message", "")
        return UNKNOWN, "Pending", "serving waits for the model repository"

    def ready_events(self, before: dict, ready: tuple[str, str, str], phase: str) -> None:
        st, reason, msg = ready
        if (before.get("status"), before.get("reason")) == (st, reason):
            return
        if st == TRUE:
            self.event("Normal", "Ready", msg)
        elif reason == "TritonUnavailable" and before.get("status") == TRUE:
            self.event("Warning", "TritonUnavailable", msg)
        elif reason == "StageFailed":
            self.event("Warning", "Failed", msg)


__all__ = ["Decision", "Event", "Substrate", "cluster_substrate", "reconcile", "job_outcome", "deployment_readiness", "name_conflict",
           "parse_result", "object_ref", "object_fingerprint", "status_patch", "RETRY_ANNOTATION"]
