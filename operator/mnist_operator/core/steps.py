"""Advancing each step of the plan: a Job per stage attempt (adopted, never
duplicated; retried after a backoff), the serve step's Deployment, the record
each step keeps in ``status.stages`` and the Events that announce its changes.
Pure: a Pass in, records and Acts out."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from mnist_operator.api.spec import MnistServingSpec
from mnist_operator.api.vocabulary import (BACKING_OFF, FAILED, FALSE, FINISHED, LABEL_ATTEMPT,
                                           LABEL_FINGERPRINT, LABEL_STEP, PENDING, RUNNING, SKIPPED,
                                           SUCCEEDED)
from mnist_operator.core import builders, refusals
from mnist_operator.core.children import (BLOCKED_REASONS, QUEUED_REASONS, WAITING_FOR_QUOTA,
                                          deployment_readiness, job_outcome, meta,
                                          object_fingerprint, object_ref, pods_of_job, ran_on,
                                          replica_failure, replicas, terminating, triton_pods,
                                          unschedulable_news_in)
from mnist_operator.core.decision import (DELETION_POLL_SECONDS, MAX_ATTEMPTS_SCANNED, PAUSED,
                                          SCALING_BACK, STOPPED, Acts, Pass, Serving, clean,
                                          event, held_back, look_again, trim_result)
from mnist_operator.core.pipeline import Step, is_done
from mnist_operator.core.status import one_line, parse_timestamp, timestamp


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
            # what follows analyze (and confirm) depends on its result (applyBest); the
            # steps up to it stay
            steps = p.plan({step.name: new})
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


#: The claim that held the steps' output was deleted or replaced: every step that ran
#: runs again from train (its record's reason, the Ready condition's, the Warning event's).
VOLUME_LOST = "VolumeLost"


def claim_live(p: Pass) -> bool:
    """The operator's claim is there and not being deleted (always, with storage.existingClaim:
    a claim the user owns is the user's business)."""
    if builders.build_pvc(p.cr, p.spec) is None:
        return True
    return p.pvc is not None and not terminating(p.pvc)


def volume_news(p: Pass) -> tuple[dict, str | None]:
    """``status.storage`` for this pass, and what happened to the claim when the one
    recorded is gone (None while it is there). The claim's uid is recorded once it is
    Bound; a claim that is Terminating, missing or another object (another uid) is
    that volume lost. After a loss the old uid is kept as ``lostClaimUid`` until a new
    claim is bound, so the old claim, still Terminating, is never recorded again."""
    want = builders.build_pvc(p.cr, p.spec)
    if want is None:
        return {}, None
    name = meta(want).get("name")
    old = p.old.get("storage") or {}
    pvc = p.pvc
    uid = meta(pvc).get("uid") if pvc is not None else None
    recorded = old.get("claimUid")
    if recorded:
        if pvc is None:
            what = f"claim {name} (uid {recorded}) was deleted"
        elif uid != recorded:
            what = f"claim {name} was replaced (uid {recorded}, now {uid})"
        elif terminating(pvc):
            what = (f"claim {name} (uid {recorded}) is being deleted (Terminating until no "
                    f"pod mounts it)")
        else:
            return {"claim": name, "claimUid": recorded}, None
        return {"claim": name, "lostClaimUid": recorded, "lostTime": timestamp(p.now),
                "message": f"model volume lost: {what}"}, what
    bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
    if pvc is not None and bound and not terminating(pvc) and uid \
            and uid != old.get("lostClaimUid"):
        return {"claim": name, "claimUid": uid}, None
    return dict(old), None


def lose_volume(p: Pass, what: str) -> tuple[Pass, Acts]:
    """The volume is gone: nothing recorded as done is on it any more. Every step that
    ran (a Job or the Deployment) is recorded Pending (VolumeLost, attempt 0, its
    fingerprint kept) and every Job is deleted, so no finished Job is read as done
    again and each attempt 0 gets its name back; one Warning says so. Returns the pass
    as the steps must see it (those Jobs as being deleted) and what to do."""
    ran = [n for n, rec in p.old_stages.items()
           if not (rec.get("state") == SKIPPED and not rec.get("job"))]
    message = one_line(f"model volume lost: {what}; every step runs again from train once a "
                       f"new claim exists")
    stages = {n: (base_record(rec, state=PENDING, reason=VOLUME_LOST, message=message, attempt=0)
                  if n in ran else rec) for n, rec in p.old_stages.items()}
    going = [j for j in p.jobs if not terminating(j)]
    marked = [j if terminating(j) else {**j, "metadata": {**meta(j),
                                                          "deletionTimestamp": timestamp(p.now)}}
              for j in p.jobs]
    acts = Acts(delete=[object_ref(j) for j in going]) + event(
        "Warning", VOLUME_LOST, f"model volume lost: {what}; the output of "
                               f"{', '.join(ran) or 'no step'} was on it: running every step "
                               f"again from train")
    return replace(p, old={**p.old, "stages": stages}, jobs=marked), acts


def base_record(rec: dict, **fields: Any) -> dict:
    return clean({"fingerprint": rec.get("fingerprint"), **fields})


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


#: Who holds the serving GPU while serving pauses, by the stage that runs its own Triton.
PAUSED_FOR = {"analyze": "model-analyzer", "confirm": "the confirm stage"}


def pauses_serving(p: Pass, step: Step, rec: dict) -> bool:
    """analyze's or confirm's own Triton takes the GPU that serving would hold (or,
    on one machine, its cores)."""
    shared = p.substrate.one_machine or (step.gpus > 0 and p.spec.serving.gpus > 0)
    return step.facts.runs_own_triton and shared and rec.get("state") != FAILED


def paused_record(p: Pass, rec: dict, stage: str) -> dict:
    if rec.get("state") != SUCCEEDED:
        return rec
    return {**rec, "reason": PAUSED, "readyReplicas": 0,
            "message": f"Triton scaled to 0 while {PAUSED_FOR[stage]} uses the "
                       f"{shared_resource(p)}"}


def stops_serving(p: Pass, steps: list[Step], stages: dict[str, dict]) -> bool:
    """serving.stopAfterBenchmark and every step finished without a failure."""
    return p.spec.serving.stop_after_benchmark and all(
        stages[s.name].get("state") in (SUCCEEDED, SKIPPED) for s in steps)


STOPPED_MESSAGE = ("every stage done; Triton scaled to 0 after its benchmark "
                   "(serving.stopAfterBenchmark): its GPUs are free and every figure stays "
                   "in status")


def stopped_record(rec: dict) -> dict:
    return {**rec, "reason": STOPPED, "readyReplicas": 0, "message": STOPPED_MESSAGE}


def deployment_acts(p: Pass, serving: Serving) -> Acts:
    """The Deployment the pass wants, decided once: created, updated to a new
    repository or replica count (0 while paused or stopped), or left as it is."""
    want = serving.want
    if serving.paused or serving.stopped:
        want = {**want, "spec": {**want["spec"], "replicas": 0}}
    dep = p.deployment
    if dep is None:
        return Acts(create=[want])
    if terminating(dep):
        return Acts()
    if object_fingerprint(dep) == object_fingerprint(want) and replicas(dep) == replicas(want):
        return Acts()
    acts = Acts(update=[want])
    if serving.stopped and replicas(dep) != 0:
        acts += event("Normal", "ServingStopped", f"Triton scaled to 0 replicas: {STOPPED_MESSAGE}")
    if serving.paused and replicas(dep) != 0:
        acts += event("Normal", "ServingPaused",
                      f"Triton scaled to 0 replicas while {PAUSED_FOR[serving.paused_by]} "
                      f"uses the {shared_resource(p)}"
                      + ("" if p.substrate.one_machine else f" ({p.spec.serving.gpus} per pod)")
                      + f"; it returns when {serving.paused_by} ends")
    return acts


# ---------------------------------------------------------------- step records
def base(step: Step, **fields: Any) -> dict:
    return clean({"fingerprint": step.fingerprint, **fields})


def pending(step: Step, rec: dict | None, reason: str = "Waiting", message: str = "") -> dict:
    waiting_for = message or f"{step.name} waits for the steps before it"
    if rec and rec.get("fingerprint") == step.fingerprint and rec.get("state") == PENDING \
            and (rec.get("reason") == reason
                 or (reason == "Waiting" and rec.get("reason") == VOLUME_LOST)):
        return rec   # a lost volume keeps saying why the step runs again until it does
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
                if same.get("reason") in (PAUSED, SCALING_BACK, STOPPED) else {}
            return {**same, "readyReplicas": ready, "replicas": wanted, **back}, serving, acts
        return base(step, state=SUCCEEDED, reason="Available", message=serving_message(p.spec),
                    deployment=name, attempt=0, startTime=started,
                    completionTime=timestamp(p.now), readyReplicas=ready,
                    replicas=wanted), serving, acts
    if same and same.get("state") == SUCCEEDED:
        # Served before with this fingerprint: nothing re-runs; Ready turns False.
        out = {**same, "readyReplicas": ready, "replicas": wanted or same.get("replicas", 0)}
        if same.get("reason") in (PAUSED, SCALING_BACK, STOPPED):   # the pass may pause again
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

    if cur and cur.get("state") == PENDING and cur.get("reason") == VOLUME_LOST \
            and not claim_live(p):
        return cur, acts + look_again(DELETION_POLL_SECONDS)   # no new Job on a going claim
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
    pods = pods_of_job(job, p.pods)
    out = job_outcome(job, pods, p.now, p.job_events.get(name))
    # pods refused: stop the job controller trying; the retry is a new Job
    acts = Acts(delete=[object_ref(job)]) if out.pods_refused else Acts()
    common = dict(attempt=attempt, job=name,
                  startTime=out.start or (cur or {}).get("startTime") or timestamp(p.now))
    if out.state == RUNNING:
        news_in = unschedulable_news_in(pods, p.now)
        if news_in is not None:   # a pod fits no node: say so as its grace ends
            acts += look_again(news_in)
        stuck = out.reason  # "" unless a pod cannot be created, scheduled or started
        acts += quota_deadline(step, job, pods, cur, stuck, p.now)
        if cur and cur.get("state") == RUNNING and cur.get("job") == name:
            was_stuck = cur.get("reason") in BLOCKED_REASONS
            if stuck == WAITING_FOR_QUOTA == cur.get("reason"):   # the quota's numbers move
                waiting = one_line(f"Job {name} waiting: {out.message}")
                return {**cur, "message": waiting}, acts
            if (not stuck and not was_stuck) or (stuck and cur.get("reason") == stuck):
                return cur, acts
        if stuck:
            rec = base(step, state=RUNNING, reason=stuck,
                       message=one_line(f"Job {name} waiting: {out.message}"), **common)
            if stuck in QUEUED_REASONS:   # queuing for a claim or a free GPU: no fault
                return rec, acts
            if stuck == WAITING_FOR_QUOTA:   # queuing for room in a quota: said once
                return rec, acts + event("Normal", stuck, f"{step.name}: {out.message}")
            return rec, acts + event("Warning", stuck, f"{step.name}: {out.message}")
        return base(step, state=RUNNING, reason="JobRunning",
                    message=f"Job {name} running (attempt {attempt})", **common), acts
    finished = out.finish or timestamp(p.now)
    if out.state in FINISHED:
        return base(step, state=out.state, reason=out.reason or out.state,
                    message=out.message or f"{step.name} {out.state.lower()}",
                    completionTime=finished, result=trim_result(out.result),
                    **environment_of(p, steps, step, job), **common), acts
    # Failed: retry after backoff, or give up.
    limit, backoff = p.spec.retries.limit, p.spec.retries.backoff_seconds
    failed = dict(reason=out.reason, completionTime=finished,
                  result=trim_result(out.result), **common)
    if not out.retry:   # another attempt would be refused the same way: say so at once
        return base(step, state=FAILED, message=out.message, **failed), acts
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


def quota_deadline(step: Step, job: dict, pods: list[dict], cur: dict | None, stuck: str,
                   now: datetime) -> Acts:
    """The Job's activeDeadlineSeconds, kept from running out while its pod waits for
    room in a quota. The job controller counts the deadline from the Job's startTime,
    which it sets before any pod exists, so a wait would eat the stage's own time and
    a long one would fail the attempt. While the pod waits, the deadline moves to the
    time waited plus the stage's deadline whenever less than half of that is left; the
    pass after the pod is created sets it to exactly that (the time the Job waited for
    its first pod, plus the stage's deadline). One update, with no other field."""
    own = step.facts.deadline_seconds
    start = parse_timestamp((job.get("status") or {}).get("startTime"))
    if not own or start is None:
        return Acts()
    have = int((job.get("spec") or {}).get("activeDeadlineSeconds") or own)
    if stuck == WAITING_FOR_QUOTA:
        waited = (now - start).total_seconds()
        if have - waited >= own / 2:
            return Acts()
    elif (cur or {}).get("reason") == WAITING_FOR_QUOTA \
            and (cur or {}).get("job") == meta(job).get("name"):   # its pod came just now
        made = (parse_timestamp(meta(pod).get("creationTimestamp")) for pod in pods)
        first = min((t for t in made if t is not None), default=now)
        waited = (first - start).total_seconds()
    else:
        return Acts()
    want = int(math.ceil(max(0.0, waited))) + own
    if want <= have:
        return Acts()
    m = meta(job)
    return Acts(update=[{"apiVersion": job.get("apiVersion") or "batch/v1", "kind": "Job",
                         "metadata": {"name": m.get("name"), "namespace": m.get("namespace")},
                         "spec": {"activeDeadlineSeconds": want}}])


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


