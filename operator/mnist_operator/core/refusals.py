"""When the API server refuses a child: what status says, and when to try again.

Pure. The kopf shell creates what a Decision asks for; a create answered 403,
422 or 400 (an invalid object, a ResourceQuota, an admission policy's denial)
comes back here as a :class:`Refusal`. :func:`record` writes it into status
(``status.refusals`` keyed ``Kind/name``, the step that wanted the object, the
Ready condition) with one Warning event, and sets when to try again: 10 s,
doubling per refusal of the same object, at most 5 minutes. Until then
reconcile withholds that create (:func:`withheld`) and the pass looks again
then (:func:`retry_in`); a new generation or retry annotation tries at once.
An object that reconcile no longer wants to create (it exists now, or the spec
moved on) drops its entry on the next pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from mnist_operator.core.status import (FALSE, PENDING, READY, get_condition, one_line, ordered,
                                        parse_timestamp, set_condition, timestamp)

FIRST_BACKOFF_SECONDS = 10
MAX_BACKOFF_SECONDS = 300
#: status.refusals entries keep the API's message to this length
MESSAGE_LIMIT = 1024
#: HTTP codes that mean "this object, as it is, will not be created": anything else
#: (a timeout, 429, a 5xx) is the API server's trouble and the pass is simply retried.
REFUSAL_CODES = (400, 403, 422)
READY_REASON = "CreateRefused"


@dataclass(frozen=True)
class Refusal:
    kind: str
    name: str
    code: int
    reason: str     # CamelCase: QuotaExceeded, AdmissionDenied, Forbidden, Invalid, BadRequest
    message: str    # the API server's message, one line

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def classify(code: int, api_reason: str, message: str) -> str:
    """A reason a user can act on, from the API's Status (code, reason, message)."""
    if "exceeded quota" in message:
        return "QuotaExceeded"
    if "ValidatingAdmissionPolicy" in message or "admission webhook" in message:
        return "AdmissionDenied"
    if "violates PodSecurity" in message:
        return "PodSecurity"
    return api_reason or {400: "BadRequest", 403: "Forbidden", 422: "Invalid"}.get(code, "Refused")


def key_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _entry_message(r: Refusal) -> str:
    return one_line(f"the API server refused {r.kind} {r.name} (HTTP {r.code}, {r.reason}): "
                    f"{r.message}")[:MESSAGE_LIMIT]


def record(status: dict, refused: list[Refusal], generation: int, now: datetime
           ) -> tuple[dict, list[tuple[str, str, str]]]:
    """``status`` (as reconcile wrote it this pass) with the refusals of this pass
    in it, and the Warning events (type, reason, message) to post: one per object,
    when it is first refused or refused for a new reason."""
    if not refused:
        return status, []
    out = dict(status)
    entries = dict(out.get("refusals") or {})
    stages = {k: dict(v) for k, v in (out.get("stages") or {}).items()}
    events = []
    for r in refused:
        old = entries.get(r.key) or {}
        count = int(old.get("count") or 0) + 1
        delay = min(FIRST_BACKOFF_SECONDS * 2 ** (count - 1), MAX_BACKOFF_SECONDS)
        message = _entry_message(r)
        entries[r.key] = {"kind": r.kind, "name": r.name, "code": r.code, "reason": r.reason,
                          "message": message, "count": count,
                          "firstTime": old.get("firstTime") or timestamp(now),
                          "retryTime": timestamp(now + timedelta(seconds=delay))}
        if (old.get("reason"), old.get("message")) != (r.reason, message):
            events.append(("Warning", r.reason, message))
        owner_field = {"Job": "job", "Deployment": "deployment"}.get(r.kind)
        for rec in stages.values():  # the step that wanted it shows why it has not started
            if owner_field and rec.get(owner_field) == r.name:
                rec.update(state=PENDING, reason=r.reason, message=message)
                rec.pop("startTime", None)
    out["refusals"] = entries
    if stages:
        out["stages"] = stages
    out["conditions"] = ordered(set_condition(out.get("conditions"), READY, FALSE, READY_REASON,
                                              summary(entries), generation, now))
    out["message"] = get_condition(out["conditions"], READY)["message"]
    return out, events


def summary(entries: dict) -> str:
    """The Ready message while anything is refused: the first refusal, and how many more."""
    first = next(iter(entries.values()))
    more = len(entries) - 1
    return first["message"] + (f" (and {more} more refused object(s))" if more else "")


def carried(old_status: dict, generation: int, retry_token: str | None) -> dict:
    """The refusals still in force: none after a spec change or a new retry annotation."""
    if old_status.get("observedGeneration") not in (None, generation):
        return {}
    if retry_token is not None and retry_token != old_status.get("retryToken"):
        return {}
    return dict(old_status.get("refusals") or {})


def retry_in(status: dict, now: datetime) -> int | None:
    """Seconds until the first refused create may be tried again (at least 1; None when
    nothing is refused): the pass that was refused looks again then, since no watch
    event will come for an object that does not exist."""
    times = [parse_timestamp(e.get("retryTime")) for e in (status.get("refusals") or {}).values()]
    times = [t for t in times if t is not None]
    return max(1, math.ceil((min(times) - now).total_seconds())) if times else None


def withheld(entries: dict, obj: dict, now: datetime) -> dict | None:
    """The refusal entry that holds ``obj`` back until its retry time, if any."""
    entry = entries.get(key_of(obj))
    if not entry:
        return None
    retry_at = parse_timestamp(entry.get("retryTime"))
    return entry if retry_at is not None and now < retry_at else None


__all__ = ["Refusal", "classify", "record", "carried", "retry_in", "withheld", "key_of", "summary",
           "REFUSAL_CODES", "READY_REASON"]
