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

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from mnist_operator.core import accuracy, builders, refusals, summary
from mnist_operator.core.children import (BLOCKED_REASONS, QUEUED_REASONS, deployment_readiness, job_outcome, meta,
                       object_fingerprint, object_ref, pods_of_job, ran_on, replica_failure,
                       replicas, terminating, triton_pods)
from mnist_operator.core.pipeline import Endpoints, Layout, Step, is_done, plan
from mnist_operator.api.spec import MnistServingSpec, SpecError, parse_spec
from mnist_operator.api.stage_table import STAGES
from mnist_operator.core.status import (get_condition, one_line, ordered, parse_timestamp, set_condition,
                     stage_condition, timestamp)
from mnist_operator.api.vocabulary import (ACCURACY, BACKING_OFF, FAILED, FALSE, FINISHED, IMPROVED_CONDITION,
                         LABEL_ATTEMPT, LABEL_FINGERPRINT, LABEL_INSTANCE, LABEL_STEP, PENDING,
                         READY, RETRY_ANNOTATION, RUNNING, SKIPPED, SUCCEEDED, TRUE, UNKNOWN,
                         WORK_DIR)

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


def name_conflict(live: dict | None, desired: dict) -> str | None:
    """Why ``desired`` cannot be created when its name is taken (409): the
    live object is not ours (another instance label, or none). None when the
    live object is this resource's own child, or is gone."""
    if live is None:
        return None
    want = (meta(desired).get("labels") or {}).get(LABEL_INSTANCE)
    have = (meta(live).get("labels") or {}).get(LABEL_INSTANCE)
    if want is None or have == want:
        return None
    return (f"{desired.get('kind')} {meta(desired).get('name')} already exists and is not this "
            f"resource's ({LABEL_INSTANCE}={have or 'unset'}): rename or delete it")


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
    "service": Service|None, "pvc": PVC|None, "account": ServiceAccount|None,
    "job_events": {Job name: [its FailedCreate events]}, "nodes": {node name: its
    GPU feature discovery labels}}, every object as the API returns it (camelCase
    dicts), children of this resource only.
    """
    try:
        spec = parse_spec(cr.get("spec"))
    except SpecError as err:
        return _invalid_spec(cr, err, now)
    return _run(Pass.of(cr, spec, observed, now, substrate or cluster_substrate(cr, spec)))


def _invalid_spec(cr: dict, err: SpecError, now: datetime) -> Decision:
    old = cr.get("status") or {}
    gen = meta(cr).get("generation") or 0
    message = one_line("invalid spec: " + "; ".join(err.errors))
    before = get_condition(old.get("conditions"), READY) or {}
    status = dict(old, observedGeneration=gen, phase="Failed",
                  conditions=ordered(set_condition(old.get("conditions"), READY, FALSE,
                                                   "InvalidSpec", message, gen, now)))
    events = []
    if (before.get("reason"), before.get("message")) != ("InvalidSpec", message):
        events.append(Event("Warning", "InvalidSpec", message))
    return Decision(status=_clean(status), events=events)


# --------------------------------------------------------------------------- one pass
@dataclass(frozen=True)
class Pass:
    """What one pass reads: the resource, its spec, its children, the clock."""
    cr: dict
    spec: MnistServingSpec
    now: datetime
    substrate: Substrate
    jobs: list[dict]
    pods: list[dict]
    deployment: dict | None
    service: dict | None
    pvc: dict | None
    account: dict | None                # the pods' ServiceAccount
    job_events: dict[str, list[dict]]   # Job name -> its FailedCreate events
    nodes: dict[str, dict]              # node name -> its GPU labels (nodes the pods ran on)
    old: dict                           # the status written last time
    gen: int
    retry_token: str | None
    refused: dict[str, dict]            # creates refused before, still current
    resume: bool                        # a failed step starts over (new generation or token)

    @classmethod
    def of(cls, cr: dict, spec: MnistServingSpec, observed: dict, now: datetime,
           substrate: Substrate) -> "Pass":
        old = cr.get("status") or {}
        gen = meta(cr).get("generation") or 0
        token = (meta(cr).get("annotations") or {}).get(RETRY_ANNOTATION)
        old_gen = old.get("observedGeneration")
        return cls(cr, spec, now, substrate, list(observed.get("jobs") or []),
                   list(observed.get("pods") or []), observed.get("deployment"),
                   observed.get("service"), observed.get("pvc"), observed.get("account"),
                   observed.get("job_events") or {}, observed.get("nodes") or {}, old, gen, token,
                   refusals.carried(old, gen, token),
                   (old_gen is not None and old_gen != gen)
                   or (token is not None and token != old.get("retryToken")))

    @property
    def old_stages(self) -> dict[str, dict]:
        return self.old.get("stages") or {}

    def plan(self, analyzed: dict | None) -> list[Step]:
        return plan_of(self.spec, self.substrate, {**self.old_stages, "analyze": analyzed})


def plan_of(spec: MnistServingSpec, substrate: Substrate, stages: dict[str, dict]) -> list[Step]:
    """The steps for ``spec`` on ``substrate`` given the recorded ``stages``: the closed
    loop's follow a finished analyze, less the models the accuracy guard flags."""
    return plan(spec, substrate.layout, substrate.endpoints, device=substrate.device,
                analyzed=stages.get("analyze"),
                below_tolerance=accuracy.below_tolerance(stages, spec.accuracy_tolerance))


@dataclass
class Acts:
    """What one decision adds to the pass's Decision, merged in pass order."""
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue: int | None = None   # seconds until a pass must look again
    held: list[dict] = field(default_factory=list)   # creates withheld: refused before

    def __add__(self, other: "Acts") -> "Acts":
        sooner = [r for r in (self.requeue, other.requeue) if r is not None]
        return Acts(self.create + other.create, self.update + other.update,
                    self.delete + other.delete, self.events + other.events,
                    min(sooner) if sooner else None, self.held + other.held)


def event(type_: str, reason: str, message: str) -> Acts:
    return Acts(events=[Event(type_, reason, one_line(message))])


def look_again(seconds: float) -> Acts:
    return Acts(requeue=max(1, int(math.ceil(seconds))))


def held_back(p: Pass, obj: dict) -> Acts | None:
    """A create refused before that still waits for its retry time (look again
    then); None when it may be tried now."""
    entry = refusals.withheld(p.refused, obj, p.now)
    if entry is None:
        return None
    return Acts(held=[obj]) + look_again(
        (parse_timestamp(entry["retryTime"]) - p.now).total_seconds())


@dataclass(frozen=True)
class Serving:
    """The one Triton Deployment of a pass: the serve step it serves and its state."""
    step: str                   # serve, or serve-tuned once the closed loop applies
    want: dict                  # the Deployment that step builds
    available: bool
    counts: tuple[int, int]     # (ready, wanted) replicas
    resuming: bool = False      # scaling back after a pause for analyze
    paused: bool = False        # scaled to 0 while analyze runs its own Triton


def _run(p: Pass) -> Decision:
    """One pass, top to bottom: volume, the pods' ServiceAccount, stale Jobs,
    every step in order, the Deployment once, refused creates held back, status."""
    steps = p.plan(p.old_stages.get("analyze"))
    acts = ensure_volume(p) + ensure_account(p) + delete_stale_jobs(p, steps)
    stages, active, serving, steps, step_acts = advance_steps(p, steps)
    acts += step_acts
    if active is not None and before_serve(steps, active):
        acts += drop_deployment(p)
    elif active is not None and serving is not None \
            and pauses_serving(p, active, stages[active.name]):
        serving = replace(serving, paused=True, resuming=False)
        stages[serving.step] = paused_record(p, stages[serving.step])
    if serving is not None:
        acts += deployment_acts(p, serving)
    acts, kept = withhold_refused(p, acts)
    status, status_acts = build_status(p, steps, stages, active, serving, kept)
    acts += status_acts
    return Decision(create=acts.create, update=acts.update, delete=acts.delete, status=status,
                    events=acts.events, requeue_after=acts.requeue)


def advance_steps(p: Pass, steps: list[Step]
                  ) -> tuple[dict[str, dict], Step | None, Serving | None, list[Step], Acts]:
    """Each step's new record in pipeline order; the first not finished is the
    active one, and every step after it waits. Returns the records, the active
    step, the Deployment's serving state, the plan (the closed loop's steps
    join it once analyze has a result) and what the steps decided."""
    stages: dict[str, dict] = {}
    active: Step | None = None
    serving: Serving | None = None
    acts = Acts()
    i = 0
    while i < len(steps):
        step, i = steps[i], i + 1
        rec = p.old_stages.get(step.name)
        if active is not None:
            stages[step.name] = rec if is_done(step, rec) else pending(step, rec)
            continue
        if not step.enabled:
            new = disabled(step, rec)
        elif step.long_running:
            new, drives, step_acts = advance_serve(p, steps, step, rec)
            serving = drives or serving
            acts += step_acts
        else:
            new, step_acts = advance_job(p, steps, step, rec,
                                         serving is not None and serving.available)
            acts += step_acts
        stages[step.name] = new
        acts += announce(step, rec, new)
        if step.facts.replans and new != rec:
            # what follows analyze depends on its result (applyBest); the steps up to it stay
            steps = p.plan(new)
        if new.get("state") not in FINISHED:
            active = step
    return stages, active, serving, steps, acts


def withhold_refused(p: Pass, acts: Acts) -> tuple[Acts, dict[str, dict]]:
    """A create the API server refused waits for its retry time (no create on
    every pass); one retried now keeps its entry, so a new refusal backs off
    longer. Returns the Acts without the withheld creates, and the refusals
    kept in status."""
    kept = {refusals.key_of(o): p.refused[refusals.key_of(o)] for o in acts.held
            if refusals.key_of(o) in p.refused}
    out = replace(acts, create=[])
    for obj in acts.create:
        key = refusals.key_of(obj)
        if key in p.refused:
            kept[key] = p.refused[key]
        wait = held_back(p, obj)
        if wait is None:
            out.create.append(obj)
        else:
            out += wait
    return out, kept


def ensure_account(p: Pass) -> Acts:
    """The pods' ServiceAccount, created while it is not there (before any pod
    owner: the Decision's creates run in order)."""
    account = builders.build_runner_service_account(p.cr, p.spec)
    return Acts(create=[account]) if account is not None and p.account is None else Acts()


def before_serve(steps: list[Step], step: Step) -> bool:
    order = [s.name for s in steps]
    first_serve = next(i for i, s in enumerate(steps) if s.long_running)
    return order.index(step.name) < first_serve


def ensure_volume(p: Pass) -> Acts:
    pvc = builders.build_pvc(p.cr, p.spec)
    if pvc is None or (p.pvc is not None and not terminating(p.pvc)):
        return Acts()
    return Acts(create=[pvc]) if p.pvc is None else look_again(DELETION_POLL_SECONDS)


def delete_stale_jobs(p: Pass, steps: list[Step]) -> Acts:
    """Jobs of fingerprints (or steps) the plan no longer has."""
    current = {s.name: s.fingerprint for s in steps}
    stale = []
    for job in p.jobs:
        labels = meta(job).get("labels") or {}
        step = labels.get(LABEL_STEP)
        if step is not None and not terminating(job) \
                and current.get(step) != labels.get(LABEL_FINGERPRINT):
            stale.append(object_ref(job))
    return Acts(delete=stale)


def drop_deployment(p: Pass) -> Acts:
    if p.deployment is None or terminating(p.deployment):
        return Acts()
    return Acts(delete=[object_ref(p.deployment)]) + event(
        "Normal", "ServingStopped", "Triton Deployment deleted until the model is rebuilt")


def shared_resource(p: Pass) -> str:
    """What serving and analyze's own Triton both need."""
    return "machine's cores" if p.substrate.one_machine else "GPU"


def pauses_serving(p: Pass, step: Step, rec: dict) -> bool:
    """analyze's own Triton takes the GPU that serving would hold (or, on one
    machine, its cores)."""
    shared = p.substrate.one_machine or (step.gpus > 0 and p.spec.serving.gpus > 0)
    return step.facts.runs_own_triton and shared and rec.get("state") != FAILED


def paused_record(p: Pass, rec: dict) -> dict:
    if rec.get("state") != SUCCEEDED:
        return rec
    return {**rec, "reason": PAUSED, "readyReplicas": 0,
            "message": f"Triton scaled to 0 while model-analyzer uses the {shared_resource(p)}"}


def deployment_acts(p: Pass, serving: Serving) -> Acts:
    """The Deployment the pass wants, decided once: created, updated to a new
    repository or replica count (0 while paused), or left as it is."""
    want = serving.want
    if serving.paused:
        want = {**want, "spec": {**want["spec"], "replicas": 0}}
    dep = p.deployment
    if dep is None:
        return Acts(create=[want])
    if terminating(dep):
        return Acts()
    if object_fingerprint(dep) == object_fingerprint(want) and replicas(dep) == replicas(want):
        return Acts()
    acts = Acts(update=[want])
    if serving.paused and replicas(dep) != 0:
        acts += event("Normal", "ServingPaused",
                      f"Triton scaled to 0 replicas while model-analyzer uses the "
                      f"{shared_resource(p)}"
                      + ("" if p.substrate.one_machine else f" ({p.spec.serving.gpus} per pod)")
                      + "; it returns when analyze ends")
    return acts


# ---------------------------------------------------------------- step records
def base(step: Step, **fields: Any) -> dict:
    return _clean({"fingerprint": step.fingerprint, **fields})


def pending(step: Step, rec: dict | None, reason: str = "Waiting", message: str = "") -> dict:
    waiting_for = message or f"{step.name} waits for the steps before it"
    if rec and rec.get("fingerprint") == step.fingerprint and rec.get("state") == PENDING \
            and rec.get("reason") == reason:
        return rec
    return base(step, state=PENDING, reason=reason, message=waiting_for, attempt=0)


def disabled(step: Step, rec: dict | None) -> dict:
    if is_done(step, rec) and rec.get("state") == SKIPPED:
        return rec
    return base(step, state=SKIPPED, reason=step.skip_reason or "Disabled",
                message=f"{step.name} is disabled in the spec", attempt=0)


def serving_message(spec: MnistServingSpec) -> str:
    return f"Triton serving {', '.join(spec.served_triton_models())}"


def scaling_back(spec: MnistServingSpec) -> tuple[str, str, str]:
    return FALSE, "Progressing", (f"Triton scaling back to {spec.serving.replicas} "
                                  f"replica(s) after analyze")


def drives_deployment(p: Pass, steps: list[Step], step: Step, rec: dict | None) -> bool:
    """A serve step serves the Deployment unless it and every step up to a
    later serve step are done (then that later one does)."""
    if not is_done(step, rec):
        return True
    for other in steps[steps.index(step) + 1:]:
        if other.long_running:
            return False
        if not is_done(other, p.old_stages.get(other.name)):
            return True
    return True


def advance_serve(p: Pass, steps: list[Step], step: Step, rec: dict | None
                  ) -> tuple[dict, Serving | None, Acts]:
    """A serve step: the Service, and the Deployment of its repository (which
    ``deployment_acts`` creates or updates once the pass knows whether analyze
    pauses it). Returns its record, the serving state when it drives the
    Deployment, and what it decided."""
    if not drives_deployment(p, steps, step, rec):
        return rec, None, Acts()   # done; a later serve step's repository is the one served
    want = builders.build_triton_deployment(p.cr, p.spec, step)
    acts = Acts()
    if p.service is None:
        acts += Acts(create=[builders.build_triton_service(p.cr, p.spec)])
    elif terminating(p.service):
        acts += look_again(DELETION_POLL_SECONDS)
    dep = p.deployment
    if dep is not None and terminating(dep):
        acts += look_again(DELETION_POLL_SECONDS)
        dep = None
    elif dep is not None and (object_fingerprint(dep) != object_fingerprint(want)
                              or replicas(dep) != replicas(want)):
        dep = None   # a new repository, or back from a pause for analyze: not serving yet
    available, ready, wanted = deployment_readiness(dep) if dep else (False, 0, 0)
    serving = Serving(step.name, want, available, (ready, wanted or p.spec.serving.replicas))
    name = meta(want).get("name")
    same = rec if rec and rec.get("fingerprint") == step.fingerprint else None
    started = (same or {}).get("startTime") or timestamp(p.now)
    if available:
        if same and same.get("state") == SUCCEEDED:
            back = {"reason": "Available", "message": serving_message(p.spec)} \
                if same.get("reason") in (PAUSED, SCALING_BACK) else {}
            return {**same, "readyReplicas": ready, "replicas": wanted, **back}, serving, acts
        return base(step, state=SUCCEEDED, reason="Available", message=serving_message(p.spec),
                    deployment=name, attempt=0, startTime=started,
                    completionTime=timestamp(p.now), readyReplicas=ready,
                    replicas=wanted), serving, acts
    if same and same.get("state") == SUCCEEDED:
        # Served before with this fingerprint: nothing re-runs; Ready turns False.
        out = {**same, "readyReplicas": ready, "replicas": wanted or same.get("replicas", 0)}
        if same.get("reason") in (PAUSED, SCALING_BACK):   # a pause turns it back to PAUSED
            serving = replace(serving, resuming=True)
            out.update(reason=SCALING_BACK, message=scaling_back(p.spec)[2])
        return out, serving, acts
    refused = replica_failure(dep)
    if refused is not None:   # its pods are refused: say why, once
        if not (same and (same.get("reason"), same.get("message")) == refused):
            acts += event("Warning", refused[0], f"{step.name}: {refused[1]}")
        return base(step, state=RUNNING, reason=refused[0], message=refused[1], deployment=name,
                    attempt=0, readyReplicas=ready, startTime=started,
                    replicas=p.spec.serving.replicas), serving, acts
    if same and same.get("state") == RUNNING:
        return {**same, "readyReplicas": ready}, serving, acts
    return base(step, state=RUNNING, reason="RollingOut",
                message=f"waiting for Deployment {name} to become available", deployment=name,
                attempt=0, startTime=timestamp(p.now), readyReplicas=ready,
                replicas=p.spec.serving.replicas), serving, acts


def upstream(steps: list[Step], step: Step) -> set[str]:
    by_name = {s.name: s for s in steps}
    seen, todo = set(), list(step.needs)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(by_name[n].needs if n in by_name else ())
    return seen


def after_serve(steps: list[Step], step: Step) -> bool:
    by_name = {s.name: s for s in steps}
    return any(by_name[n].long_running for n in upstream(steps, step) if n in by_name)


def attempt_of(p: Pass, step: Step, job: dict) -> int | None:
    labels = {**(meta(job).get("annotations") or {}), **(meta(job).get("labels") or {})}
    if str(labels.get(LABEL_ATTEMPT, "")).isdigit():
        return int(labels[LABEL_ATTEMPT])
    name = meta(job).get("name")
    cr_name = meta(p.cr)["name"]
    return next((a for a in range(MAX_ATTEMPTS_SCANNED)
                 if builders.job_name(cr_name, step, a) == name), None)


def step_jobs(p: Pass, step: Step) -> tuple[dict[int, dict], list[dict]]:
    """This step's Jobs at its current fingerprint: {attempt: Job} of the live
    ones, and the list of those being deleted."""
    live, going = {}, []
    for job in p.jobs:
        labels = meta(job).get("labels") or {}
        if labels.get(LABEL_STEP) != step.name or labels.get(LABEL_FINGERPRINT) != step.fingerprint:
            continue
        if terminating(job):
            going.append(job)
            continue
        attempt = attempt_of(p, step, job)
        if attempt is not None:
            live[attempt] = job
    return live, going


def advance_job(p: Pass, steps: list[Step], step: Step, rec: dict | None, serving_up: bool
                ) -> tuple[dict, Acts]:
    """A Job step: adopt, start, observe, back off, retry or give up."""
    if is_done(step, rec):
        return rec, Acts()
    cur = rec if rec and rec.get("fingerprint") == step.fingerprint else None
    live, going = step_jobs(p, step)
    acts = Acts()
    if p.resume and cur and cur.get("state") in (FAILED, BACKING_OFF):
        cur = base(step, state=PENDING, reason="Resumed", attempt=0,
                   message=f"{step.name} resumed from attempt 0")
        acts += event("Normal", "Resumed", f"{step.name}: retrying from attempt 0")
    if cur and cur.get("state") == PENDING and cur.get("reason") == "Resumed":
        # Attempt 0's Job name is reused: the old Jobs must be gone first.
        if live or going:
            return cur, acts + Acts(delete=[object_ref(j) for j in live.values()]) \
                + look_again(DELETION_POLL_SECONDS)
        new, started = start_job(p, steps, step, cur, 0, serving_up)
        return new, acts + started

    attempt = int((cur or {}).get("attempt") or 0)
    if live and max(live) > attempt or (cur is None and live):
        # A Job status does not know about: adopt it, never duplicate it.
        attempt = max(live)
        cur = base(step, state=RUNNING, reason="Adopted", attempt=attempt,
                   job=meta(live[attempt]).get("name"),
                   message=f"adopted Job {meta(live[attempt]).get('name')}")
    state = (cur or {}).get("state")
    if state == FAILED:
        return cur, acts   # retries exhausted: wait for a spec change or the retry annotation
    if state == BACKING_OFF:
        retry_at = parse_timestamp(cur.get("retryTime")) or p.now
        if p.now < retry_at:
            return cur, acts + look_again((retry_at - p.now).total_seconds())
        new, started = start_job(p, steps, step, cur, attempt + 1, serving_up)
        return new, acts + started

    job = live.get(attempt)
    if job is not None:
        new, seen = observe_job(p, steps, step, cur, attempt, job)
        return new, acts + seen
    if any(meta(j).get("name") == builders.job_name(meta(p.cr)["name"], step, attempt)
           for j in going):
        return cur or pending(step, rec), acts + look_again(DELETION_POLL_SECONDS)
    if state == RUNNING and cur.get("job"):
        acts += event("Warning", "JobMissing",
                      f"{step.name}: Job {cur['job']} disappeared before its result was "
                      f"recorded; recreating it")
    new, started = start_job(p, steps, step, cur, attempt, serving_up)
    return new, acts + started


def start_job(p: Pass, steps: list[Step], step: Step, cur: dict | None, attempt: int,
              serving_up: bool) -> tuple[dict, Acts]:
    if after_serve(steps, step) and not serving_up:
        return pending(step, cur, "WaitingForTriton",
                       f"{step.name} waits for Triton to become available"), Acts()
    job = builders.build_step_job(p.cr, p.spec, step, attempt)
    name = meta(job).get("name")
    wait = held_back(p, job)
    if wait is not None:   # refused before: it waits for its retry time
        held = p.refused[refusals.key_of(job)]
        return base(step, state=PENDING, reason=held["reason"], attempt=attempt, job=name,
                    message=held["message"]), wait
    return base(step, state=RUNNING, reason="JobCreated", attempt=attempt, job=name,
                startTime=timestamp(p.now),
                message=f"Job {name} created (attempt {attempt})"), Acts(create=[job])


def observe_job(p: Pass, steps: list[Step], step: Step, cur: dict | None, attempt: int, job: dict
                ) -> tuple[dict, Acts]:
    name = meta(job).get("name")
    out = job_outcome(job, pods_of_job(job, p.pods), p.now, p.job_events.get(name))
    # pods refused: stop the job controller trying; the retry is a new Job
    acts = Acts(delete=[object_ref(job)]) if out.pods_refused else Acts()
    common = dict(attempt=attempt, job=name,
                  startTime=out.start or (cur or {}).get("startTime") or timestamp(p.now))
    if out.state == RUNNING:
        stuck = out.reason  # "" unless a pod cannot be scheduled or started
        if cur and cur.get("state") == RUNNING and cur.get("job") == name:
            was_stuck = cur.get("reason") in BLOCKED_REASONS
            if (not stuck and not was_stuck) or (stuck and cur.get("reason") == stuck):
                return cur, acts
        if stuck:
            rec = base(step, state=RUNNING, reason=stuck,
                       message=one_line(f"Job {name} waiting: {out.message}"), **common)
            if stuck in QUEUED_REASONS:   # queuing for a claim or a free GPU: no fault
                return rec, acts
            return rec, acts + event("Warning", stuck, f"{step.name}: {out.message}")
        return base(step, state=RUNNING, reason="JobRunning",
                    message=f"Job {name} running (attempt {attempt})", **common), acts
    finished = out.finish or timestamp(p.now)
    if out.state in FINISHED:
        return base(step, state=out.state, reason=out.reason or out.state,
                    message=out.message or f"{step.name} {out.state.lower()}",
                    completionTime=finished, result=_trim_result(out.result),
                    **environment_of(p, steps, step, job), **common), acts
    # Failed: retry after backoff, or give up.
    limit, backoff = p.spec.retries.limit, p.spec.retries.backoff_seconds
    failed = dict(reason=out.reason, completionTime=finished,
                  result=_trim_result(out.result), **common)
    if attempt < limit:
        delay = backoff * 2 ** attempt
        retry_at = (parse_timestamp(finished) or p.now) + timedelta(seconds=delay)
        if retry_at > p.now:
            acts += look_again((retry_at - p.now).total_seconds())
        return base(step, state=BACKING_OFF, retryTime=timestamp(retry_at),
                    message=one_line(f"attempt {attempt} failed: {out.message}; "
                                     f"retrying in {delay}s"), **failed), acts
    return base(step, state=FAILED,
                message=one_line(f"failed after {attempt + 1} attempt(s): {out.message}"),
                **failed), acts


def environment_of(p: Pass, steps: list[Step], step: Step, job: dict) -> dict:
    """Where a finished step ran (its pod's node and image digests) and, for a
    step that talks to Triton, where Triton ran as it finished: with the
    result's own versions, the environment fingerprint of its numbers."""
    env = ran_on(pods_of_job(job, p.pods), p.nodes)
    if any(s.long_running for s in steps if s.name in step.needs):
        server = ran_on(triton_pods(p.pods), p.nodes)
        if server:
            env["server"] = server
    return {"environment": env} if env else {}


# ---------------------------------------------------------------- events
def announce(step: Step, old: dict | None, new: dict) -> Acts:
    """One Event per transition of a step's record (none when nothing moved)."""
    keys = ("fingerprint", "state", "attempt", "job")
    if all((old or {}).get(k) == new.get(k) for k in keys):
        return Acts()
    state, name = new.get("state"), step.name
    acts = Acts()
    if old and old.get("state") in FINISHED and old.get("fingerprint") != new.get("fingerprint"):
        acts += event("Normal", "SpecChanged", f"{name}: inputs changed, running it again")
    if state == RUNNING and (new.get("reason") == "JobCreated" or step.long_running):
        acts += event("Normal", "StageStarted", f"{name}: {new.get('message')}")
    elif state == SUCCEEDED:
        acts += event("Normal", "StageSucceeded", f"{name}: {new.get('message')}")
    elif state == SKIPPED:
        acts += event("Normal", "StageSkipped", f"{name} skipped ({new.get('reason')}): "
                                                f"{new.get('message')}")
    elif state in (BACKING_OFF, FAILED):
        acts += event("Warning", "StageFailed", f"{name} ({new.get('reason')}): "
                                                f"{new.get('message')}")
    return acts


# ---------------------------------------------------------------- status
def unavailable(serving: Serving | None, spec: MnistServingSpec) -> tuple[str, str, str]:
    ready, want = serving.counts if serving else (0, 0)
    return FALSE, "TritonUnavailable", f"Triton has {ready}/{want} replicas available"


def serving_condition(p: Pass, serving: Serving | None, rec: dict) -> tuple[str, str, str]:
    if serving is not None and serving.paused:
        return FALSE, PAUSED, rec.get("message", "")
    if serving is not None and serving.resuming:
        return FALSE, "RollingOut", scaling_back(p.spec)[2]
    if serving is not None and serving.available:
        ready, want = serving.counts
        return TRUE, "Available", f"{ready}/{want} Triton replicas available"
    if rec.get("state") == SUCCEEDED:
        return unavailable(serving, p.spec)
    if rec.get("state") == RUNNING:
        return FALSE, "RollingOut", rec.get("message", "")
    return UNKNOWN, "Pending", "serving waits for the model repository"


def ready_events(before: dict, ready: tuple[str, str, str]) -> Acts:
    st, reason, msg = ready
    if (before.get("status"), before.get("reason")) == (st, reason):
        return Acts()
    if st == TRUE:
        return event("Normal", "Ready", msg)
    if reason == "TritonUnavailable" and before.get("status") == TRUE:
        return event("Warning", "TritonUnavailable", msg)
    if reason == "StageFailed":
        return event("Warning", "Failed", msg)
    return Acts()


def build_status(p: Pass, steps: list[Step], stages: dict[str, dict], active: Step | None,
                 serving: Serving | None, kept: dict[str, dict]) -> tuple[dict, Acts]:
    gen, now = p.gen, p.now
    available = serving is not None and serving.available
    paused = serving is not None and serving.paused
    resuming = serving is not None and serving.resuming
    serving_step = serving.step if serving else "serve"
    conditions = list(p.old.get("conditions") or [])
    by_stage: dict[str, list[dict]] = {}
    for step in steps:
        by_stage.setdefault(step.stage, []).append(stages[step.name])
    for facts in STAGES:
        if facts.name not in by_stage:
            continue
        if facts.long_running:
            st, reason, msg = serving_condition(p, serving, stages[serving_step])
        else:
            st, reason, msg = stage_condition(by_stage[facts.name], facts.name)
            if all(r.get("state") == PENDING and r.get("reason") != "Resumed"
                   for r in by_stage[facts.name]):
                st = UNKNOWN
        conditions = set_condition(conditions, facts.condition, st, reason, msg, gen, now)

    failed = next((s for s in steps if stages[s.name].get("state") == FAILED), None)
    if failed is not None:
        rec = stages[failed.name]
        phase, ready = "Failed", (FALSE, "StageFailed", f"{failed.name}: {rec.get('message')}")
    elif active is None and available:
        phase, ready = "Ready", (TRUE, "Ready", "every stage done; Triton is serving "
                                 + ", ".join(p.spec.served_triton_models()))
    elif active is None and resuming:
        phase, ready = "Deploying", scaling_back(p.spec)
    elif active is None:
        phase, ready = "Deploying", unavailable(serving, p.spec)
    else:
        phase = active.facts.phase
        rec = stages[active.name]
        if stages[serving_step].get("state") == SUCCEEDED and not available and not paused:
            ready = scaling_back(p.spec) if resuming else unavailable(serving, p.spec)
        else:
            ready = (FALSE, "Progressing", f"{active.name}: {rec.get('message')}")
    if kept and phase != "Failed":
        ready = (FALSE, refusals.READY_REASON, refusals.summary(kept))
    before = get_condition(conditions, READY) or {}
    conditions = set_condition(conditions, READY, *ready, gen, now)
    verdict = accuracy.judge(stages, p.spec.accuracy_tolerance)
    judged = accuracy.condition(verdict)
    was = get_condition(conditions, ACCURACY) or {}
    conditions = set_condition(conditions, ACCURACY, *judged, gen, now)

    summary_input = {
        s.name: {"stage": s.stage, "state": stages[s.name]["state"],
                 "reason": stages[s.name].get("reason", ""),
                 "message": stages[s.name].get("message", ""),
                 **(stages[s.name].get("result") or {})}
        for s in steps if stages[s.name].get("state") in FINISHED}
    summarized = summary.summarize(
        summary_input, apply_best=p.spec.benchmark.model_analyzer.apply_best,
        accuracy_verdict=verdict) or {}
    improved = summary.improved_condition(summarized.get("benchmark", {}).get("closedLoop"))
    if improved:
        conditions = set_condition(conditions, IMPROVED_CONDITION, *improved, gen, now)
    else:   # applyBest turned off: no verdict to keep
        conditions = [c for c in conditions if c.get("type") != IMPROVED_CONDITION]
    status = {
        "observedGeneration": gen,
        "phase": phase,
        "message": get_condition(conditions, READY)["message"],
        "conditions": ordered(conditions),
        "stages": stages,
        "endpoints": p.substrate.endpoints.as_status(),
        # model, benchmark (and clientAccuracy once the client step ran)
        **{k: v for k, v in summarized.items() if v is not None},
    }
    if p.retry_token is not None:
        status["retryToken"] = p.retry_token
    if kept:
        status["refusals"] = kept
    return _clean(status), ready_events(before, ready) + accuracy_events(was, judged)


def accuracy_events(before: dict, judged: tuple[str, str, str]) -> Acts:
    """One Warning when a served model falls below the accuracy tolerance."""
    st, reason, msg = judged
    if st == FALSE and (before.get("status"), before.get("reason")) != (st, reason):
        return event("Warning", reason, msg)
    return Acts()


__all__ = ["Decision", "Event", "Substrate", "cluster_substrate", "reconcile", "name_conflict",
           "status_patch", "RETRY_ANNOTATION", "job_outcome", "replica_failure", "plan_of"]
