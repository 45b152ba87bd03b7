"""The kopf shell: read children -> reconcile() -> apply the Decision -> patch status.

Thin on purpose: every decision lives in reconcile.py. Run it as
``mnist-serving operator [--namespace NS ...|--all-namespaces] [--liveness URL]
[--metrics-port N]`` or ``kopf run -m mnist_operator.handlers`` (both register the
same handlers; under ``kopf run`` the startup handler serves /metrics on 8081).

A pass reads the resource and its children from a cache the watches keep
(cache.py; primed by one listing per kind at startup, written through by the
pass's own writes), so a Ready resource costs no requests. The pass queue
(passqueue.py) runs it when something it depends on changed (create/update/resume
of the resource, an event of a Job, Pod, Deployment, Service, claim or ServiceAccount
it owns, found by instance label, hashed for long names), when the Decision's
``requeue_after`` comes due (the end of a retry backoff, a refused create's retry
time), and on a slow resync (``MNIST_SERVING_RESYNC_SECONDS``, default 300).
Deletion needs no finalizer (kopf drops the one an older operator's timer left):
owner references let the garbage collector remove the children (the PVC has none
when ``storage.keepOnDelete`` is set).

Environment (the Helm chart sets it; see site_defaults.py): the operator-wide
defaults ``MNIST_SERVING_DEFAULT_*`` fill the fields a resource leaves out, and
``MNIST_SERVING_WATCH_NAMESPACES`` ("a,b") picks the namespaces when neither
``--namespace`` nor ``--all-namespaces`` is given.
"""
from __future__ import annotations

import argparse
import contextvars
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import kopf

from . import builders, kube, metrics, refusals, site_defaults
from .cache import ClusterCache
from .passqueue import PassQueue
from .reconcile import Decision, name_conflict, reconcile, status_patch
from .spec import GROUP, KIND, PLURAL, VERSION, merge_defaults

log = logging.getLogger("mnist_operator")

#: Seconds between passes of a resource nothing happens to (a safety net: events drive passes).
RESYNC_SECONDS = float(os.environ.get("MNIST_SERVING_RESYNC_SECONDS", "300"))
#: Passes at once. A pass spends most of its time waiting for the API server (its status
#: patch, its creates), so more threads than cores keep resources moving under load: with 4,
#: passes of 50 resources waited 2.7 s (p50) in the queue for a free thread (docs/BENCHMARKS.md).
PASS_WORKERS = 16
MANAGED = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}
#: apiVersion, kind of the children the cache is primed with and the watches keep.
CHILD_KINDS = [("batch/v1", "Job"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
               ("v1", "PersistentVolumeClaim"), ("v1", "ServiceAccount")]

_api = None
#: Set by main(): only exact namespace names were given (no globs, not cluster-wide).
_STATIC_NAMESPACES = False
#: Set by main(): the namespaces given (empty: all); under `kopf run` the cache is primed cluster-wide.
_namespaces: list[str] = []
#: Set by main() (--metrics-port, 0: off); None under `kopf run`, where startup serves the default.
_metrics_port: int | None = None
_api_lock = threading.Lock()
#: The operator's defaults (a partial spec), read once from the environment at start.
_defaults: dict | None = None
known = ClusterCache()
#: The context of kopf's first handler call: kopf.event() in a pass reads its variables
#: (which kopf sets for resource handlers, not yet for startup ones).
_context: contextvars.Context | None = None


def api():
    global _api
    with _api_lock:
        if _api is None:
            _api = kube.api_client(connections=PASS_WORKERS)
        return _api


def load_defaults(environ=os.environ) -> dict:
    """Read (once) and keep the operator-wide defaults; ValueError names a bad variable."""
    global _defaults
    if _defaults is None:
        _defaults = site_defaults.from_env(environ)
    return _defaults


def with_defaults(cr: dict, defaults: dict) -> dict:
    """The resource as reconcile should see it: its spec with the operator's defaults
    merged under it (what it sets wins). reconcile stays a pure function of this."""
    return {**cr, "spec": merge_defaults(cr.get("spec"), defaults)}


# --------------------------------------------------------------------------- the one pass
def apply(decision: Decision, cr: dict) -> list[refusals.Refusal]:
    """Carry out a Decision; each call is idempotent (409 on create, 404 on delete), and
    each answer goes into the cache, so the next pass does not act on what it changed.
    Returns the creates the API server refused (the rest of the Decision still runs)."""
    a = api()
    refused = []
    for ref in decision.delete:
        if kube.delete(a, ref):
            known.mark_deleting(cr, ref)
        else:
            known.forget_child(cr, ref)
    for obj in decision.create:
        try:
            created = kube.create(a, obj)
        except kube.KubeError as e:
            if e.status not in refusals.REFUSAL_CODES:
                raise  # the API server's own trouble: the pass is retried
            refused.append(refusals.Refusal(obj["kind"], obj["metadata"]["name"], e.status,
                                            refusals.classify(e.status, e.reason, e.message),
                                            e.message))
            continue
        if created is None:  # 409: ours already, or someone else's object
            m = obj["metadata"]
            live = kube.get(a, obj["apiVersion"], obj["kind"], m["namespace"], m["name"])
            problem = name_conflict(live, obj)
            if problem:
                kopf.event(cr, type="Warning", reason="NameConflict", message=problem)
            elif live is not None:
                known.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **live})
        else:
            known.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **created})
    for obj in decision.update:
        patched = kube.patch(a, obj)
        if patched:
            known.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **patched})
    for ev in decision.events:
        kopf.event(cr, type=ev.type, reason=ev.reason, message=ev.message)
    return refused


def _one_pass(namespace: str, name: str) -> Decision | None:
    """Decide from the cache, act, write status; None when the resource is gone."""
    a = api()
    cr = known.resource(namespace, name)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return None
    now = datetime.now(timezone.utc)
    observed = kube.observe_children(a, cr, known, now)
    decision = reconcile(with_defaults(cr, load_defaults()), observed, now)
    refused = apply(decision, cr)
    decision.status, warnings = refusals.record(decision.status, refused,
                                                cr["metadata"].get("generation") or 0, now)
    for type_, reason, message in warnings:
        kopf.event(cr, type=type_, reason=reason, message=message)
    old = cr.get("status") or {}
    if decision.status != {k: v for k, v in old.items() if k != "kopf"}:
        written = kube.patch_status(a, namespace, name, status_patch(old, decision.status))
        if written is None:  # deleted during the pass; its DELETED event clears the cache
            return None
        known.put_resource(written)
    metrics.observe_status(namespace, name, old, decision.status)  # phase gauge, finished steps
    podless = kube.podless_jobs(observed["jobs"], observed["pods"])
    if podless:  # its pods may be refused, which only its Events say: look again then
        recheck = kube.podless_recheck(podless, now)
        decision.requeue_after = min(decision.requeue_after or recheck, recheck)
    retry = refusals.retry_in(decision.status, now)
    if retry is not None:
        decision.requeue_after = min(decision.requeue_after or retry, retry)
    return decision


def next_pass(key: tuple[str, str]) -> float | None:
    """The pass queue's work: one pass; the seconds until the next (None: gone)."""
    def counted() -> Decision | None:
        return metrics.reconcile_pass(_one_pass, *key)  # counted, timed, errors by reason
    decision = counted() if _context is None else _context.copy().run(counted)
    if decision is None:
        return None
    if decision.requeue_after is None:
        return RESYNC_SECONDS
    return min(float(decision.requeue_after), RESYNC_SECONDS)


passes = PassQueue(next_pass, workers=PASS_WORKERS)


def prime(a, namespaces: list[str]) -> None:
    """Fill the cache with one listing per kind (per namespace, or cluster-wide), so no
    pass reads it before it holds what exists; the watches keep it from then on."""
    for ns in namespaces or [None]:
        for cr in kube.list_objects(a, f"{GROUP}/{VERSION}", KIND, ns):
            known.put_resource(cr)
        selector = f"{builders.LABEL_MANAGED_BY}={builders.MANAGED_BY}"
        for api_version, kind in CHILD_KINDS:
            for obj in kube.list_objects(a, api_version, kind, ns, selector):
                known.put(obj)


# --------------------------------------------------------------------------- handlers
@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress in annotations only, so .status holds nothing but ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # Exact namespace names need no namespace scanning; without it kopf retries a namespace
    # list a namespaced Role forbids through every backoff (18 s) before it starts watching.
    settings.scanning.disabled = _STATIC_NAMESPACES
    try:  # `kopf run -m mnist_operator.handlers` skips main(): check the defaults here too
        defaults = load_defaults()
    except ValueError as err:
        raise kopf.PermanentError(f"bad operator defaults: {err}") from None
    log.info("operator defaults: %s", defaults or "none (built-in defaults only)")
    if _metrics_port is None:  # `kopf run -m mnist_operator.handlers`: main() did not serve them
        try:
            metrics.serve(metrics.DEFAULT_PORT)
        except OSError as err:
            log.warning("no /metrics: port %d: %s", metrics.DEFAULT_PORT, err)
    # Startup handlers finish before kopf starts watching: the watches' first listing
    # lands on a primed cache, and no pass (each asked for by a handler, resume for
    # what exists) reads it before it holds everything.
    prime(api(), _namespaces if _STATIC_NAMESPACES else [])
    log.info("cache primed: %s", known.sizes())
    passes.start()


def _keep_context() -> None:
    global _context
    if _context is None:
        _context = contextvars.copy_context()


@kopf.on.cleanup()
def stop_passes(**_: Any) -> None:
    passes.stop()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    _keep_context()
    known.put_resource(dict(body))  # before the pass, which may start before the event handler
    passes.request((namespace, name))  # returns None: kopf writes nothing into status


def on_child(body: dict, type_: str | None) -> None:
    """Keep the cache; a pass for the owner of a change. A listing (type None: a watch's
    first, or its re-list after a gap) asks only for what changed since the cache held
    it: the resume pass may have run before it, and it is the only news of a change
    made between the priming listing and the watch's start, or during the gap."""
    _keep_context()
    if type_ == "DELETED":
        owner, changed = known.remove(body), True
    else:
        owner, changed = known.put(body)
        changed = changed or type_ is not None
    if owner and changed:
        passes.request((body["metadata"]["namespace"], owner))


# Async on purpose: they run on kopf's event loop, take no worker thread, and
# let go of the event as soon as they return (the cache keeps a slim copy).
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event("v1", "services", labels=MANAGED)
async def service_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event("v1", "persistentvolumeclaims", labels=MANAGED)
async def claim_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event("v1", "serviceaccounts", labels=MANAGED)
async def account_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    on_child(dict(body), type)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(body: kopf.Body, namespace: str, name: str, type: str | None,
                         **_: Any) -> None:
    _keep_context()
    if type == "DELETED":  # its children's entries, its queued passes, its phase gauge go
        known.drop_resource(namespace, name)
        passes.forget((namespace, name))
        metrics.forget(namespace, name)
    elif known.put_resource(dict(body)):
        # news kopf's change handlers do not see: annotations under our group (the retry
        # annotation) are left out of kopf's diff, as its own progress annotations are;
        # a listing (type None) asks too when it shows a newer version than was kept
        passes.request((namespace, name))


# --------------------------------------------------------------------------- entry point
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnist-serving operator",
                                description="Run the MnistServing operator (kopf) against the "
                                            "cluster of the current kubeconfig or service account.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; glob patterns as kopf allows)")
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default when no --namespace is given "
                            f"and ${site_defaults.WATCH_NAMESPACES} is empty)")
    p.add_argument("--liveness", metavar="URL", default=None,
                   help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics-port", type=int, default=metrics.DEFAULT_PORT, metavar="PORT",
                   help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics "
                        f"(default {metrics.DEFAULT_PORT}; 0 turns them off)")
    p.add_argument("--verbose", action="store_true", help="log debug messages")
    return p


def namespaces_to_watch(args: argparse.Namespace, environ=os.environ) -> list[str]:
    """Flags first, then MNIST_SERVING_WATCH_NAMESPACES; [] means every namespace."""
    if args.namespace or args.all_namespaces:
        return list(args.namespace)
    return site_defaults.watch_namespaces(environ)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        load_defaults()
    except ValueError as err:
        print(f"mnist-serving operator: error: {err}", file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose)
    global _STATIC_NAMESPACES, _metrics_port, _namespaces
    _metrics_port = args.metrics_port
    try:
        metrics.serve(args.metrics_port)
    except OSError as err:
        print(f"mnist-serving operator: error: --metrics-port {args.metrics_port}: {err}", file=sys.stderr)
        return 2
    namespaces = namespaces_to_watch(args)
    _namespaces = namespaces
    _STATIC_NAMESPACES = bool(namespaces) and not any(ch in ns for ns in namespaces for ch in "*?[!")
    # One replica with a Recreate strategy: no peering needed.
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness)
    return 0


__all__ = ["main", "next_pass", "passes", "known", "apply", "configure", "load_defaults", "with_defaults",
           "namespaces_to_watch"]
