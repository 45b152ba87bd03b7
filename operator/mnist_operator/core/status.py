"""Status vocabulary of an MnistServing, per the Kubernetes API conventions.

Pure: lists and dicts in, new lists and dicts out, never mutated in place.

Conditions: ``Ready``, one per stage and the accuracy guard's
``AccuracyWithinTolerance`` (see accuracy.py). One per stage (the per-stage scheme reads better in
``kubectl get -o wide`` and in ``kubectl wait --for=condition=Trained`` than
one per step; the two bench steps fold into ``Benchmarked``). Every condition
carries type, status, reason (CamelCase), message (one line),
lastTransitionTime (kept while status does not change) and
observedGeneration.

Phase: a one-word summary for humans (``kubectl get``); machines should read
conditions.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from mnist_operator.api.stage_table import STAGES
from mnist_operator.api.vocabulary import (ACCURACY, BACKING_OFF, FAILED, FAILED_PHASE, FALSE,
                                           FINISHED, PENDING, PENDING_PHASE, READY, READY_PHASE,
                                           RUNNING, SKIPPED, SUCCEEDED, TRUE, UNKNOWN)

#: Condition type per pipeline stage, in pipeline order (the stage table's).
CONDITION_FOR_STAGE = {s.name: s.condition for s in STAGES}
CONDITION_TYPES = (READY, *CONDITION_FOR_STAGE.values(), ACCURACY)

#: Phase while a stage is the one in progress.
PHASE_FOR_STAGE = {s.name: s.phase for s in STAGES}
PHASES = tuple(dict.fromkeys((PENDING_PHASE, *PHASE_FOR_STAGE.values(), READY_PHASE,
                              FAILED_PHASE)))


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes times."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def one_line(text: Any, limit: int = 1024) -> str:
    """Messages and Events are one line (kopf and kubectl print them as such)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def camel_reason(text: str) -> str:
    """A reason the CRD's pattern accepts: CamelCase letters and digits only."""
    words = re.split(r"[^A-Za-z0-9]+", str(text or ""))
    out = "".join(w[:1].upper() + w[1:] for w in words if w).lstrip("0123456789")
    return out[:1].upper() + out[1:] if out else "Unknown"


def get_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def set_condition(conditions: list[dict] | None, type_: str, status: str, reason: str,
                  message: str, observed_generation: int, now: datetime) -> list[dict]:
    """A new condition list with ``type_`` set; lastTransitionTime moves only
    when ``status`` changes. Other conditions keep their place."""
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown (got {status!r})")
    reason = camel_reason(reason)
    old = get_condition(conditions, type_)
    changed = old is None or old.get("status") != status
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": one_line(message),
        "lastTransitionTime": timestamp(now) if changed else old.get("lastTransitionTime")
        or timestamp(now),
        "observedGeneration": int(observed_generation or 0),
    }
    out = [dict(c) for c in conditions or [] if c.get("type") != type_]
    index = next((i for i, c in enumerate(conditions or []) if c.get("type") == type_), len(out))
    out.insert(index, new)
    return out


def ordered(conditions: list[dict]) -> list[dict]:
    """Ready first, then the stage conditions in pipeline order (stable output)."""
    rank = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(conditions, key=lambda c: rank.get(c.get("type"), len(rank)))


def stage_condition(records: list[dict], stage: str) -> tuple[str, str, str]:
    """(status, reason, message) of a stage's condition from its steps' records
    (one record for most stages, one per protocol for bench). True once every step
    finished and one succeeded; False when a step failed, is under way, or every
    step was skipped (the skip's reason, Disabled or TensorRTNotAvailable, say)."""
    if not records:
        return UNKNOWN, "Pending", f"{stage} has not started"
    failed = [r for r in records if r.get("state") == FAILED]
    if failed:
        r = failed[0]
        return FALSE, r.get("reason") or "Failed", r.get("message") or f"{stage} failed"
    if all(r.get("state") in FINISHED for r in records):
        skipped = [r for r in records if r.get("state") == SKIPPED]
        if skipped and len(skipped) == len(records):
            # a stage that did not run did not do what its condition names (an engine
            # skipped for want of TensorRT was not built): False, with the skip's
            # reason; Ready does not wait on it (pass_status.build_status)
            r = skipped[0]
            return FALSE, r.get("reason") or "Skipped", r.get("message") or f"{stage} skipped"
        return TRUE, "Succeeded", records[-1].get("message") or f"{stage} succeeded"
    busy = next(r for r in records if r.get("state") not in FINISHED)
    state = busy.get("state") or PENDING
    reason = busy.get("reason") if state in (BACKING_OFF, PENDING) and busy.get("reason") else state
    return FALSE, reason, busy.get("message") or f"{stage} is {state.lower()}"


__all__ = ["CONDITION_FOR_STAGE", "CONDITION_TYPES", "PHASE_FOR_STAGE", "PHASES", "READY",
           "TRUE", "FALSE", "UNKNOWN", "PENDING", "RUNNING", "BACKING_OFF", "SUCCEEDED",
           "SKIPPED", "FAILED", "FINISHED", "timestamp", "parse_timestamp", "camel_reason", "one_line",
           "get_condition", "set_condition", "ordered", "stage_condition"]
