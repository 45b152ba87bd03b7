"""The status a pass writes: the conditions (per the Kubernetes API conventions),
the phase and message, the Events that announce their changes, and the merge
patch that writes it. Pure."""
from __future__ import annotations

from typing import Any

from mnist_operator.api.spec import MnistServingSpec
from mnist_operator.api.stage_table import STAGES
from mnist_operator.api.vocabulary import (ACCURACY, FAILED, FALSE, FINISHED, IMPROVED_CONDITION,
                                           MEASURED_PHASE, PENDING, READY, RUNNING, SUCCEEDED, TRUE,
                                           UNKNOWN)
from mnist_operator.core import accuracy, refusals, summary
from mnist_operator.core.decision import PAUSED, STOPPED, Acts, Pass, Serving, clean, event
from mnist_operator.core.pipeline import Step
from mnist_operator.core.status import get_condition, ordered, set_condition, stage_condition
from mnist_operator.core.steps import STOPPED_MESSAGE, VOLUME_LOST, scaling_back


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




# ---------------------------------------------------------------- status
def unavailable(serving: Serving | None, spec: MnistServingSpec) -> tuple[str, str, str]:
    ready, want = serving.counts if serving else (0, 0)
    return FALSE, "TritonUnavailable", f"Triton has {ready}/{want} replicas available"


def serving_condition(p: Pass, serving: Serving | None, rec: dict) -> tuple[str, str, str]:
    if serving is not None and serving.paused:
        return FALSE, PAUSED, rec.get("message", "")
    if serving is not None and serving.stopped:
        return FALSE, STOPPED, STOPPED_MESSAGE
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
            if all(r.get("state") == PENDING and r.get("reason") not in ("Resumed", VOLUME_LOST)
                   for r in by_stage[facts.name]):
                st = UNKNOWN
        conditions = set_condition(conditions, facts.condition, st, reason, msg, gen, now)

    failed = next((s for s in steps if stages[s.name].get("state") == FAILED), None)
    if failed is not None:
        rec = stages[failed.name]
        phase, ready = "Failed", (FALSE, "StageFailed", f"{failed.name}: {rec.get('message')}")
    elif active is None and serving is not None and serving.stopped:
        phase, ready = MEASURED_PHASE, (FALSE, STOPPED, STOPPED_MESSAGE)
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
        if rec.get("state") == PENDING and rec.get("reason") == VOLUME_LOST:
            ready = (FALSE, VOLUME_LOST, rec.get("message", ""))
        elif stages[serving_step].get("state") == SUCCEEDED and not available and not paused:
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
        objective=p.spec.benchmark.closed_loop_objective, accuracy_verdict=verdict) or {}
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
    return clean(status), ready_events(before, ready) + accuracy_events(was, judged)


def accuracy_events(before: dict, judged: tuple[str, str, str]) -> Acts:
    """One Warning when a served model falls below the accuracy tolerance."""
    st, reason, msg = judged
    if st == FALSE and (before.get("status"), before.get("reason")) != (st, reason):
        return event("Warning", reason, msg)
    return Acts()


