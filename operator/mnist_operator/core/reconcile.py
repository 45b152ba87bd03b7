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
* The claim's uid is recorded in ``status.storage`` once it is Bound. A claim
  that is Terminating, gone or replaced (another uid) lost every step's output:
  each step that ran is recorded Pending (VolumeLost), its Jobs are deleted, one
  Warning says so, and the pipeline runs again from train once a new claim exists.
* A stage pod that a full ResourceQuota refuses waits (WaitingForQuota) and spends
  no attempt; one that asks for more than the quota's hard limit fails at once.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from mnist_operator.api.spec import SpecError, parse_spec
from mnist_operator.api.vocabulary import FALSE, READY, RETRY_ANNOTATION
from mnist_operator.core.children import job_outcome, meta, replica_failure
from mnist_operator.core.decision import (Acts, Decision, Event, Pass, Substrate, clean,
                                          cluster_substrate, name_conflict, plan_of)
from mnist_operator.core.pass_status import build_status, status_patch
from mnist_operator.core.status import get_condition, one_line, ordered, set_condition
from mnist_operator.core.steps import (advance_steps, before_serve, delete_stale_jobs,
                                       deployment_acts, drop_deployment, ensure_account,
                                       ensure_volume, lose_volume, paused_record,
                                       pauses_serving, stopped_record, stops_serving,
                                       volume_news, withhold_refused)


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
    return Decision(status=clean(status), events=events)


def _run(p: Pass) -> Decision:
    """One pass, top to bottom: the volume (lost: every step runs again), the pods'
    ServiceAccount, stale Jobs, every step in order, the Deployment once, refused creates
    held back, status."""
    storage, lost = volume_news(p)
    acts = Acts()
    if lost is not None:
        p, acts = lose_volume(p, lost)
    steps = p.plan()
    acts += ensure_volume(p) + ensure_account(p) + delete_stale_jobs(p, steps)
    stages, active, serving, steps, step_acts = advance_steps(p, steps)
    acts += step_acts
    if active is not None and before_serve(steps, active):
        acts += drop_deployment(p)
    elif active is not None and serving is not None \
            and pauses_serving(p, active, stages[active.name]):
        serving = replace(serving, paused_by=active.stage, resuming=False)
        stages[serving.step] = paused_record(p, stages[serving.step], active.stage)
    elif active is None and serving is not None and stops_serving(p, steps, stages):
        serving = replace(serving, stopped=True, resuming=False)
        stages[serving.step] = stopped_record(stages[serving.step])
    if serving is not None:
        acts += deployment_acts(p, serving)
    acts, kept = withhold_refused(p, acts)
    status, status_acts = build_status(p, steps, stages, active, serving, kept)
    if storage:
        status["storage"] = storage
    acts += status_acts
    return Decision(create=acts.create, update=acts.update, delete=acts.delete, status=status,
                    events=acts.events, requeue_after=acts.requeue)




__all__ = ["Decision", "Event", "Substrate", "cluster_substrate", "reconcile", "name_conflict",
           "status_patch", "RETRY_ANNOTATION", "job_outcome", "replica_failure", "plan_of"]
