"""The kopf shell: read children -> reconcile() -> apply the Decision -> patch status.

Thin on purpose: every decision lives in reconcile.py. Run it as
``mnist-serving operator [--namespace NS ...|--all-namespaces] [--liveness URL]
[--metrics-port N]`` or ``kopf run -m mnist_operator.handlers`` (both register the
same handlers; under ``kopf run`` the startup handler serves /metrics on 8081).

Triggers, all funnelling into one coalesced pass per MnistServing:
create/update/resume of the resource; a level-triggered timer
(``MNIST_SERVING_RECONCILE_SECONDS``, default 10) that also ends retry
backoffs; and events of the Jobs, Pods and Deployment it owns (by label),
so a finished stage moves the pipeline on at once (``queue_pass``). Deletion needs no
finalizer: owner references let the garbage collector remove the children
(the PVC has none when ``storage.keepOnDelete`` is set).

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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import kopf

from . import builders, kube, metrics, refusals, site_defaults
from .reconcile import Decision, name_conflict, reconcile, status_patch
from .spec import GROUP, KIND, PLURAL, VERSION, merge_defaults

log = logging.getLogger("mnist_operator")

RECONCILE_SECONDS = float(os.environ.get("MNIST_SERVING_RECONCILE_SECONDS", "10"))
MANAGED = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}

_api = None
#: Set by main(): only exact namespace names were given (no globs, not cluster-wide).
_STATIC_NAMESPACES = False
#: Set by main() (--metrics-port, 0: off); None under `kopf run`, where startup serves the default.
_metrics_port: int | None = None
_api_lock = threading.Lock()
#: The operator's defaults (a partial spec), read once from the environment at start.
_defaults: dict | None = None
_locks: dict[tuple[str, str], threading.Lock] = {}
_waiting: set[tuple[str, str]] = set()   # resources with a pass queued behind the running one
#: Passes that child events ask for (kopf's own threads run the timer and resource handlers).
_passes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile")


def api():
    global _api
    with _api_lock:
        if _api is None:
            _api = kube.api_client()
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


def _lock_for(namespace: str, name: str) -> threading.Lock:
    # Timer, resource and child handlers run in parallel threads: one pass per resource at a time.
    with _api_lock:
        return _locks.setdefault((namespace, name), threading.Lock())


# --------------------------------------------------------------------------- the one pass
def apply(decision: Decision, cr: dict) -> list[refusals.Refusal]:
    """Carry out a Decision; each call is idempotent (409 on create, 404 on delete).
    Returns the creates the API server refused (the rest of the Decision still runs)."""
    a = api()
    refused = []
    for ref in decision.delete:
        kube.delete(a, ref)
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
        if not created:  # 409: ours already, or someone else's object
            m = obj["metadata"]
            live = kube.get(a, obj["apiVersion"], obj["kind"], m["namespace"], m["name"])
            problem = name_conflict(live, obj)
            if problem:
                kopf.event(cr, type="Warning", reason="NameConflict", message=problem)
    for obj in decision.update:
        kube.patch(a, obj)
    for ev in decision.events:
        kopf.event(cr, type=ev.type, reason=ev.reason, message=ev.message)
    return refused


def reconcile_resource(namespace: str, name: str) -> Decision | None:
    """One reconcile pass for the resource (``_one_pass``), in the caller's
    thread (kopf's, for the timer and the resource's own handlers); None when
    coalesced into a pass already waiting (see ``_claim_wait``)."""
    if not _claim_wait(namespace, name):
        return None
    return _locked_pass(namespace, name)


def _claim_wait(namespace: str, name: str) -> bool:
    """At most one pass runs and one waits per resource. False: a pass is
    already waiting; it has not read anything yet, so it sees the caller's
    change too and the caller need not run one."""
    with _api_lock:
        if (namespace, name) in _waiting:
            return False
        _waiting.add((namespace, name))
        return True


def _locked_pass(namespace: str, name: str) -> Decision | None:
    """Wait for the running pass (this one is in ``_waiting`` meanwhile), then run."""
    try:
        lock = _lock_for(namespace, name)
        lock.acquire()
    finally:
        with _api_lock:
            _waiting.discard((namespace, name))
    try:
        return metrics.reconcile_pass(_one_pass, namespace, name)  # counted, timed, errors by reason
    finally:
        lock.release()


def _one_pass(namespace: str, name: str) -> Decision | None:
    """Read the resource and its children fresh, decide, act, write status."""
    a = api()
    cr = kube.get_mnistserving(a, namespace, name)
    if cr is None or cr["metadata"].get("deletionTimestamp"):
        return None
    selector = f"{kube.INSTANCE_LABEL}={builders.instance_label(name)}"
    observed = kube.observe_children(a, cr, selector)
    now = datetime.now(timezone.utc)
    decision = reconcile(with_defaults(cr, load_defaults()), observed, now)
    refused = apply(decision, cr)
    decision.status, warnings = refusals.record(decision.status, refused,
                                                cr["metadata"].get("generation") or 0, now)
    for type_, reason, message in warnings:
        kopf.event(cr, type=type_, reason=reason, message=message)
    old = cr.get("status") or {}
    if decision.status != {k: v for k, v in old.items() if k != "kopf"}:
        kube.patch_status(a, namespace, name, status_patch(old, decision.status))
    metrics.observe_status(namespace, name, old, decision.status)  # phase gauge, finished steps
    if decision.requeue_after is not None:
        log.debug("%s/%s: look again in %ss", namespace, name, decision.requeue_after)
    return decision


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
    # The timer keeps a finalizer on the resource; a deletion that lands while a pass runs in
    # its thread waits for kopf's next poll of the stopped timer (default 60 s): poll often.
    settings.background.cancellation_polling = 1
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


@kopf.on.cleanup()
def stop_passes(**_: Any) -> None:
    _passes.shutdown(wait=False, cancel_futures=True)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(namespace: str, name: str, **_: Any) -> None:
    reconcile_resource(namespace, name)  # returns None: kopf writes nothing into status


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_SECONDS, initial_delay=RECONCILE_SECONDS)
def periodic(namespace: str, name: str, **_: Any) -> None:
    reconcile_resource(namespace, name)


def _owner(meta: dict) -> str | None:
    """The MnistServing a child belongs to: its owner reference, else its instance label."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return ref.get("name")
    return None


def _on_child(meta: dict, namespace: str, type_: str | None) -> None:
    owner = _owner(meta)
    if owner is None:  # pods: owned by their Job or ReplicaSet, named by the instance label
        owner = (meta.get("labels") or {}).get(kube.INSTANCE_LABEL)
    if owner and type_ is not None:  # type None: the initial listing, already covered by resume
        queue_pass(namespace, owner)


def queue_pass(namespace: str, name: str) -> None:
    """A pass for the resource, on our own threads; returns at once. Nothing of
    the event is kept: a sync handler would hold kopf's copy of every child
    event (a whole Pod) until a worker thread is free, and at 500 resources
    that backlog was most of the operator's memory."""
    if not _claim_wait(namespace, name):
        return
    # kopf.event() reads kopf's context variables: carry them to our thread
    _passes.submit(contextvars.copy_context().run, _queued_pass, namespace, name)


def _queued_pass(namespace: str, name: str) -> None:
    try:
        _locked_pass(namespace, name)
    except kube.KubeError as e:   # the timer looks again
        log.warning("%s/%s: %s", namespace, name, e)
    except Exception:             # a thread of our own: nobody else would log it
        log.exception("%s/%s: reconcile pass failed", namespace, name)


# Async on purpose: they run on kopf's event loop, take no worker thread, and
# let go of the event as soon as they return.
@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(meta: dict, namespace: str, type: str | None, **_: Any) -> None:
    _on_child(meta, namespace, type)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(meta: dict, namespace: str, type: str | None, **_: Any) -> None:
    _on_child(meta, namespace, type)


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(meta: dict, namespace: str, type: str | None, **_: Any) -> None:
    _on_child(meta, namespace, type)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(namespace: str, name: str, type: str | None, **_: Any) -> None:
    if type == "DELETED":  # no pass runs for a resource that is gone: drop it from the phase gauge
        metrics.forget(namespace, name)


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
    global _STATIC_NAMESPACES, _metrics_port
    _metrics_port = args.metrics_port
    try:
        metrics.serve(args.metrics_port)
    except OSError as err:
        print(f"mnist-serving operator: error: --metrics-port {args.metrics_port}: {err}", file=sys.stderr)
        return 2
    namespaces = namespaces_to_watch(args)
    _STATIC_NAMESPACES = bool(namespaces) and not any(ch in ns for ns in namespaces for ch in "*?[!")
    # One replica with a Recreate strategy: no peering needed.
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness)
    return 0


__all__ = ["main", "reconcile_resource", "apply", "configure", "load_defaults", "with_defaults",
           "namespaces_to_watch"]
