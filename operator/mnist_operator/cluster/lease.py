"""Which replica acts: the pure rules of the leader Lease (no API calls; leader.py makes them).

Two operator replicas share one ``coordination.k8s.io/v1`` Lease in the operator's
namespace. The one named in ``spec.holderIdentity`` is the leader and runs kopf; every
other replica stands by, looking at the Lease every ``retry`` seconds. ``decide`` says
what a replica does next from what it just read:

  ACQUIRE   create the Lease (there is none), or write my name over an empty or expired
            holder, with the resourceVersion read (a 409 means another replica won)
  RENEW     I lead: write a new renewTime
  STANDBY   another replica holds a Lease that has not expired
  LOST      I led and no longer may: another replica holds it, or my last renewal is
            older than ``renew_deadline``. The process stops acting at once (it exits).

Expiry is judged on this replica's own monotonic clock, never on ``renewTime``: a Lease
has expired when the same version of it (its resourceVersion) has been in sight for
longer than its ``leaseDurationSeconds``. Two hosts' wall clocks may disagree; the time
one process has watched an unchanged object may not. The leader gives up after
``renew_deadline`` (shorter than the duration) without a renewal, so it has stopped
before any standby can think the Lease expired.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

ACQUIRE, RENEW, STANDBY, LOST = "Acquire", "Renew", "StandBy", "Lost"


@dataclass(frozen=True)
class Timing:
    """Seconds. duration: leaseDurationSeconds written into the Lease; renew: the leader's
    period; renew_deadline: the leader stops when it could not renew for this long;
    retry: a standby's period (and the leader's after a failed renewal)."""
    duration: int = 15
    renew: float = 5.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self):
        if not 0 < self.renew < self.renew_deadline < self.duration:
            raise ValueError(f"need 0 < renew < renew_deadline < duration: {self}")
        if not 0 < self.retry < self.duration:
            raise ValueError(f"need 0 < retry < duration: {self}")


@dataclass(frozen=True)
class Seen:
    """The Lease's version as last read, and this replica's monotonic time when that
    version was first read (None: there was no Lease)."""
    version: str | None
    since: float


@dataclass(frozen=True)
class Step:
    action: str
    #: seconds until the next look
    wait: float
    #: one line for the log
    why: str


def holder(lease: dict | None) -> str:
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or ""


def duration_of(lease: dict | None, default: int) -> float:
    value = ((lease or {}).get("spec") or {}).get("leaseDurationSeconds")
    return float(value) if isinstance(value, int) and value > 0 else float(default)


def observe(previous: Seen | None, lease: dict | None, now: float) -> Seen:
    """What this replica has seen after reading ``lease`` at ``now``: the time an
    unchanged version came into sight is kept; a new version starts the clock again."""
    version = ((lease or {}).get("metadata") or {}).get("resourceVersion")
    if previous is not None and previous.version == version:
        return previous
    return Seen(version, now)


def decide(lease: dict | None, me: str, now: float, seen: Seen, *, leading: bool,
           renewed_at: float | None, timing: Timing = Timing()) -> Step:
    """The next step of replica ``me`` (monotonic ``now``) that just read ``lease`` (None:
    no Lease exists); ``seen`` is ``observe(...)`` of that read; ``leading``: it holds the
    Lease and acts; ``renewed_at``: the monotonic time of its last successful write."""
    if leading and renewed_at is not None and now - renewed_at > timing.renew_deadline:
        return Step(LOST, 0.0, f"no renewal for {now - renewed_at:.1f} s "
                               f"(the deadline is {timing.renew_deadline:g} s)")
    who = holder(lease)
    if lease is None:
        return Step(ACQUIRE, timing.retry, "no Lease yet")
    if who == me:
        if leading:
            return Step(RENEW, timing.renew, "I hold it")
        # a process of the same identity held it (this container, restarted): it is gone
        return Step(ACQUIRE, timing.retry, "it names me from an earlier start")
    if leading:
        return Step(LOST, 0.0, f"{who or 'nobody'} holds it now")
    if not who:
        return Step(ACQUIRE, timing.retry, "released")
    age = now - seen.since
    lease_for = duration_of(lease, timing.duration)
    if age >= lease_for:
        return Step(ACQUIRE, timing.retry,
                    f"{who} has not renewed it for {age:.1f} s (its duration is {lease_for:g} s)")
    return Step(STANDBY, min(timing.retry, max(lease_for - age, 0.05)),
                f"{who} holds it (unchanged for {age:.1f} s of {lease_for:g} s)")


def micro_time(when: datetime) -> str:
    """A MicroTime as the API server writes it: RFC 3339, microseconds, UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(name: str, namespace: str, me: str, action: str, lease: dict | None,
               wall_now: datetime, timing: Timing = Timing()) -> dict:
    """The Lease to create (ACQUIRE with no Lease) or to put (ACQUIRE over another holder,
    RENEW), carrying the resourceVersion read so that only one writer wins."""
    old = (lease or {}).get("spec") or {}
    stamp = micro_time(wall_now)
    spec = {"holderIdentity": me, "leaseDurationSeconds": timing.duration,
            "acquireTime": old.get("acquireTime") or stamp, "renewTime": stamp,
            "leaseTransitions": int(old.get("leaseTransitions") or 0)}
    if action == ACQUIRE:
        spec["acquireTime"] = stamp
        if lease is not None and old.get("holderIdentity") != me:
            spec["leaseTransitions"] += 1
    elif action != RENEW:
        raise ValueError(f"no Lease to write for {action}")
    meta: dict = {"name": name, "namespace": namespace}
    if lease is not None:
        meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        if lease["metadata"].get("labels"):
            meta["labels"] = lease["metadata"]["labels"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": spec}


def released_body(lease: dict, wall_now: datetime) -> dict:
    """The Lease a leader leaves behind when it stops on purpose: no holder, so a standby
    takes it at its next look instead of waiting out the duration."""
    spec = dict(lease.get("spec") or {})
    spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(wall_now))
    return {**lease, "spec": spec}


__all__ = ["ACQUIRE", "RENEW", "STANDBY", "LOST", "Timing", "Seen", "Step", "holder",
           "observe", "decide", "lease_body", "released_body", "micro_time"]
