"""The operator's Prometheus metrics, on a registry of its own, served at /metrics.

What a pass did is recorded by two calls from handlers.py (``reconcile_pass``
around each pass, ``observe_status`` once its status is written) and one from
kube.py (``api_request`` for every API response). The rest are small functions
of values (``stage_transitions``, ``phase_counts``, ``resource_of``,
``error_reason``) that the unit tests call directly.

Every label set is bounded: no resource names, only phases, step names,
verbs, resource plurals, HTTP status codes and exception type names.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Callable, Iterator, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mnist_operator.core.status import FAILED, PHASES, SKIPPED, SUCCEEDED, parse_timestamp

log = logging.getLogger(__name__)

PREFIX = "mnist_serving_"
#: Flag default of ``mnist-serving operator --metrics-port`` (kopf's liveness keeps 8080).
DEFAULT_PORT = 8081
#: The states a step record ends in; reaching one counts an outcome (once per transition).
OUTCOMES = (SUCCEEDED, FAILED, SKIPPED)

REGISTRY = CollectorRegistry(auto_describe=True)

PASSES = Counter(PREFIX + "reconcile_passes", "Reconcile passes, by result: ok (status decided), "
                 "gone (the resource was deleted or is being deleted), error (the pass raised).",
                 ["result"], registry=REGISTRY)
PASS_SECONDS = Histogram(PREFIX + "reconcile_duration_seconds",
                         "Wall time of one reconcile pass (read, decide, act, write status).",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                         registry=REGISTRY)
ERRORS = Counter(PREFIX + "reconcile_errors", "Reconcile passes that raised, by reason: http_<status> "
                 "for a failed API call, else the exception type.", ["reason"], registry=REGISTRY)
RESOURCES = Gauge(PREFIX + "resources", "MnistServing resources by status.phase, as of their last pass.",
                  ["phase"], registry=REGISTRY)
STAGE_OUTCOMES = Counter(PREFIX + "stage_outcomes", "Steps that reached Succeeded, Failed or Skipped "
                         "(status.stages.<step>.state).", ["stage", "state"], registry=REGISTRY)
STAGE_SECONDS = Histogram(PREFIX + "stage_duration_seconds", "startTime to completionTime of a step "
                          "that reached Succeeded, Failed or Skipped.", ["stage", "state"],
                          buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
                          registry=REGISTRY)
API_REQUESTS = Counter(PREFIX + "api_requests", "Kubernetes API requests the operator made, by verb, "
                       "resource (plural[/subresource]) and HTTP status code.",
                       ["verb", "resource", "code"], registry=REGISTRY)
LEADER = Gauge(PREFIX + "leader", "1 while this replica acts (holds the leader Lease, or runs without "
               "--leader-lease), 0 while it stands by.", registry=REGISTRY)

_lock = threading.Lock()
#: (namespace, name) -> status.phase of every resource seen alive: what RESOURCES counts.
_phases: dict[tuple[str, str], str] = {}
_server = None


# --------------------------------------------------------------------------- pure parts
def stage_transitions(old: dict | None, new: dict | None) -> Iterator[tuple[str, str, float | None]]:
    """(step, state, seconds or None) for each step whose record in ``new``
    (a status) reached an outcome it did not have in ``old``. A record that
    stays Succeeded pass after pass yields nothing; one that re-ran (a new
    completionTime) counts again. Seconds: completionTime - startTime."""
    before = (old or {}).get("stages") or {}
    for step, rec in sorted(((new or {}).get("stages") or {}).items()):
        state = (rec or {}).get("state")
        if state not in OUTCOMES:
            continue
        prev = before.get(step) or {}
        if prev.get("state") == state and prev.get("completionTime") == rec.get("completionTime"):
            continue
        start, end = parse_timestamp(rec.get("startTime")), parse_timestamp(rec.get("completionTime"))
        seconds = (end - start).total_seconds() if start and end and end >= start else None
        yield step, state, seconds


def phase_counts(phases: dict) -> dict[str, int]:
    """Resources per phase, every known phase present (0 when none is in it)."""
    counts = dict.fromkeys(PHASES, 0)
    for phase in phases.values():
        counts[phase] = counts.get(phase, 0) + 1
    return counts


_API_PATH = re.compile(r"^/apis?/(?:[^/]+/)?v[^/]*/(?:namespaces/[^/]+/)?([a-z0-9]+)(?:/[^/]+(/[a-z]+)?)?/?$")


def resource_of(path: str) -> str:
    """The resource plural of an API path ("jobs", "mnistservings/status"), query
    left out; "other" for what is not a resource path (/version, /healthz)."""
    m = _API_PATH.match(path.split("?", 1)[0])
    if not m:
        return "other"
    return m.group(1) + (m.group(2) or "")


def error_reason(err: BaseException) -> str:
    status = getattr(err, "status", None)
    if isinstance(status, int):
        return f"http_{status}"
    return type(err).__name__


# --------------------------------------------------------------------------- recording
T = TypeVar("T")


def reconcile_pass(one_pass: Callable[[str, str], T | None], namespace: str, name: str) -> T | None:
    """Run ``one_pass(namespace, name)``, counting and timing it. None from it
    means the resource is gone (or being deleted): it leaves the phase gauge."""
    started = time.perf_counter()
    try:
        result = one_pass(namespace, name)
    except Exception as err:
        ERRORS.labels(reason=error_reason(err)).inc()
        PASSES.labels(result="error").inc()
        raise
    finally:
        PASS_SECONDS.observe(time.perf_counter() - started)
    if result is None:
        forget(namespace, name)
    PASSES.labels(result="ok" if result is not None else "gone").inc()
    return result


def observe_status(namespace: str, name: str, old: dict | None, new: dict) -> None:
    """After a pass wrote ``new`` over ``old`` (statuses): the resource's phase,
    and each step that just finished."""
    for step, state, seconds in stage_transitions(old, new):
        STAGE_OUTCOMES.labels(stage=step, state=state).inc()
        if seconds is not None:
            STAGE_SECONDS.labels(stage=step, state=state).observe(seconds)
    phase = new.get("phase")
    with _lock:
        if phase:
            _phases[(namespace, name)] = phase
        else:
            _phases.pop((namespace, name), None)
        _set_phases()


def forget(namespace: str, name: str) -> None:
    """The resource is gone: it no longer counts in any phase."""
    with _lock:
        if _phases.pop((namespace, name), None) is not None:
            _set_phases()


def _set_phases() -> None:  # under _lock
    for phase, count in phase_counts(_phases).items():
        RESOURCES.labels(phase=phase).set(count)


def api_request(method: str, path: str, status: int) -> None:
    API_REQUESTS.labels(verb=method, resource=resource_of(path), code=str(status)).inc()


def set_leader(leading: bool) -> None:
    LEADER.set(1 if leading else 0)


# --------------------------------------------------------------------------- serving
def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve REGISTRY at http://addr:port/metrics in a daemon thread, once per
    process; port 0 serves nothing. OSError when the port is taken."""
    global _server
    with _lock:
        if _server is not None or not port:
            return False
        _server = start_http_server(port, addr=addr, registry=REGISTRY)  # (server, thread)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, port)
    return True


_set_phases()  # every phase exported from the start, at 0
LEADER.set(1)  # a replica acts unless main() stands it by for the leader Lease


def _reset() -> None:
    """Tests only: forget every resource (the counters keep counting)."""
    with _lock:
        _phases.clear()
        _set_phases()


__all__ = ["REGISTRY", "DEFAULT_PORT", "reconcile_pass", "observe_status", "forget", "api_request",
           "serve", "set_leader", "stage_transitions", "phase_counts", "resource_of", "error_reason"]
