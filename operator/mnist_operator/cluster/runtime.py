"""The operator's runtime: one object that owns what a running operator holds (the
API client, the cache, the pass queue, the operator-wide defaults, kopf's context)
and carries out the Decisions of the pure core.

A pass reads the resource and its children from a cache the watches keep
(cache.py; primed by one listing per kind at startup, written through by the
pass's own writes), so a Ready resource costs no requests. The pass queue
(passqueue.py) runs it when something it depends on changed (create/update/resume
of the resource, an event of a child it owns, found by instance label, hashed for
long names), when the Decision's ``requeue_after`` comes due (the end of a retry
backoff, a refused create's retry time), and on a slow resync
(``MNIST_SERVING_RESYNC_SECONDS``, default 300).
"""
from __future__ import annotations

import contextvars
import logging
import os
import threading
from datetime import datetime, timezone

import kopf

from mnist_operator.api import site_defaults
from mnist_operator.api import sweep as W
from mnist_operator.api.spec import GROUP, KIND, VERSION
from mnist_operator.cluster import kube, metrics
from mnist_operator.cluster.cache import ClusterCache
from mnist_operator.cluster.passqueue import PassQueue
from mnist_operator.core import builders, refusals
from mnist_operator.core.reconcile import Decision, name_conflict, reconcile, status_patch
from mnist_operator.core.sweep import LABEL_SWEEP, SweepDecision, reconcile_sweep

log = logging.getLogger("mnist_operator")

#: Seconds between passes of a resource nothing happens to (a safety net: events drive passes).
RESYNC_SECONDS = float(os.environ.get("MNIST_SERVING_RESYNC_SECONDS", "300"))
#: Passes at once. A pass spends most of its time waiting for the API server (its status
#: patch, its creates), so more threads than cores keep resources moving under load: with 4,
#: passes of 50 resources waited 2.7 s (p50) in the queue for a free thread (docs/BENCHMARKS.md).
PASS_WORKERS = 16
#: Sweep passes at once: a sweep's pass reads the cache and writes a few objects.
SWEEP_WORKERS = 2
#: apiVersion, kind of the children the cache is primed with and the watches keep.
CHILD_KINDS = [("batch/v1", "Job"), ("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
               ("v1", "PersistentVolumeClaim"), ("v1", "ServiceAccount")]


class Operator:
    """What one operator process holds, and the pass that uses it."""

    def __init__(self, cache: ClusterCache | None = None, environ=os.environ):
        self.cache = cache if cache is not None else ClusterCache()
        self.passes = PassQueue(self.next_pass, workers=PASS_WORKERS)
        #: sweeps' passes, on a queue of their own (a sweep may share a MnistServing's name)
        self.sweep_passes = PassQueue(self.next_sweep_pass, workers=SWEEP_WORKERS)
        self.environ = environ
        #: the namespaces watched (empty: all) and whether they are exact names, set by main()
        self.namespaces: list[str] = []
        self.static_namespaces = False
        #: --metrics-port as main() served it; None under `kopf run`, where startup serves it
        self.metrics_port: int | None = None
        self._api = None
        self._api_lock = threading.Lock()
        self._defaults: dict | None = None
        #: kopf's context at its first handler call: kopf.event() in a pass reads its
        #: variables (kopf sets them for resource handlers, not yet for startup ones)
        self.context: contextvars.Context | None = None

    # ----------------------------------------------------------------- what it holds
    def api(self):
        with self._api_lock:
            if self._api is None:
                self._api = kube.api_client(connections=PASS_WORKERS)
            return self._api

    def defaults(self) -> dict:
        """The operator-wide defaults, read once; ValueError names a bad variable."""
        if self._defaults is None:
            self._defaults = site_defaults.from_env(self.environ)
        return self._defaults

    def keep_context(self) -> None:
        if self.context is None:
            self.context = contextvars.copy_context()

    def in_context(self, fn, *args):
        """``fn(*args)`` in kopf's context, once a handler call has kept it."""
        return fn(*args) if self.context is None else self.context.copy().run(fn, *args)

    # ----------------------------------------------------------------- the one pass
    def apply(self, decision: Decision, cr: dict) -> list[refusals.Refusal]:
        """Carry out a Decision; each call is idempotent (409 on create, 404 on delete), and
        each answer goes into the cache, so the next pass does not act on what it changed.
        Returns the creates the API server refused (the rest of the Decision still runs)."""
        a = self.api()
        refused = []
        for ref in decision.delete:
            if kube.delete(a, ref):
                self.cache.mark_deleting(cr, ref)
            else:
                self.cache.forget_child(cr, ref)
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
                    self.cache.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **live})
            else:
                self.cache.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **created})
        for obj in decision.update:
            patched = kube.patch(a, obj)
            if patched:
                self.cache.put({"apiVersion": obj["apiVersion"], "kind": obj["kind"], **patched})
        for ev in decision.events:
            kopf.event(cr, type=ev.type, reason=ev.reason, message=ev.message)
        return refused

    def one_pass(self, namespace: str, name: str) -> Decision | None:
        """Decide from the cache, act, write status; None when the resource is gone."""
        a = self.api()
        cr = self.cache.resource(namespace, name)
        if cr is None or cr["metadata"].get("deletionTimestamp"):
            return None
        now = datetime.now(timezone.utc)
        observed = kube.observe_children(a, cr, self.cache, now)
        decision = reconcile(site_defaults.with_defaults(cr, self.defaults()), observed, now)
        refused = self.apply(decision, cr)
        decision.status, warnings = refusals.record(decision.status, refused,
                                                    cr["metadata"].get("generation") or 0, now)
        for type_, reason, message in warnings:
            kopf.event(cr, type=type_, reason=reason, message=message)
        old = cr.get("status") or {}
        if decision.status != {k: v for k, v in old.items() if k != "kopf"}:
            written = kube.patch_status(a, namespace, name, status_patch(old, decision.status))
            if written is None:  # deleted during the pass; its DELETED event clears the cache
                return None
            self.cache.put_resource(written)
            # the watch event of this write is nothing new to the cache, so it asks for no
            # pass: a sweep's point tells its sweep here (a phase, a result), or the sweep
            # would see its last point Ready only at its resync
            self._tell_sweep(written)
        metrics.observe_status(namespace, name, old, decision.status)  # phase gauge, finished steps
        podless = kube.podless_jobs(observed["jobs"], observed["pods"])
        if podless:  # its pods may be refused, which only its Events say: look again then
            recheck = kube.podless_recheck(podless, now)
            decision.requeue_after = min(decision.requeue_after or recheck, recheck)
        retry = refusals.retry_in(decision.status, now)
        if retry is not None:
            decision.requeue_after = min(decision.requeue_after or retry, retry)
        return decision

    def next_pass(self, key: tuple[str, str]) -> float | None:
        """The pass queue's work: one pass; the seconds until the next (None: gone)."""
        # counted, timed, errors by reason
        decision = self.in_context(metrics.reconcile_pass, self.one_pass, *key)
        if decision is None:
            return None
        if decision.requeue_after is None:
            return RESYNC_SECONDS
        return min(float(decision.requeue_after), RESYNC_SECONDS)

    def prime(self) -> None:
        """Fill the cache with one listing per kind (per namespace, or cluster-wide), so no
        pass reads it before it holds what exists; the watches keep it from then on."""
        a = self.api()
        for ns in (self.namespaces if self.static_namespaces else []) or [None]:
            for cr in kube.list_objects(a, f"{GROUP}/{VERSION}", KIND, ns):
                self.cache.put_resource(cr)
            try:
                for sweep in kube.list_objects(a, f"{GROUP}/{VERSION}", W.KIND, ns):
                    self.cache.put_sweep(sweep)
            except kube.KubeError as err:   # an install without the sweep's CRD
                if err.status != 404:
                    raise
                log.warning("no %s resource on this cluster: sweeps are off", W.KIND)
            selector = f"{builders.LABEL_MANAGED_BY}={builders.MANAGED_BY}"
            for api_version, kind in CHILD_KINDS:
                for obj in kube.list_objects(a, api_version, kind, ns, selector):
                    self.cache.put(obj)

    # ----------------------------------------------------------------- a sweep's pass
    def apply_sweep(self, decision: SweepDecision, sweep: dict) -> None:
        """Create, patch and delete the sweep's points, as apply() does for a pass's
        children (409 on create and 404 on delete are success); each answer goes into
        the cache, so the next pass counts the point as running."""
        a = self.api()
        for ref in decision.delete:
            kube.delete(a, ref)
        for obj in decision.create:
            created = kube.create(a, obj)
            if created is not None:
                self.cache.put_resource({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                         **created})
        for obj in decision.update:
            patched = kube.patch(a, obj)
            if patched:
                self.cache.put_resource({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                         **patched})
        for ev in decision.events:
            kopf.event(sweep, type=ev.type, reason=ev.reason, message=ev.message)

    def one_sweep_pass(self, namespace: str, name: str) -> SweepDecision | None:
        sweep = self.cache.sweep(namespace, name)
        if sweep is None or sweep["metadata"].get("deletionTimestamp"):
            return None
        uid = sweep["metadata"].get("uid")
        points = [c for c in self.cache.sweep_points(namespace, builders.instance_label(name))
                  if any(o.get("uid") == uid for o in c["metadata"].get("ownerReferences") or [])]
        decision = reconcile_sweep(sweep, points, datetime.now(timezone.utc))
        self.apply_sweep(decision, sweep)
        old = sweep.get("status") or {}
        if decision.status != old:
            written = kube.patch_status(self.api(), namespace, name,
                                        status_patch(old, decision.status), kind=W.KIND)
            if written is None:
                return None
            self.cache.put_sweep(written)
        return decision

    def next_sweep_pass(self, key: tuple[str, str]) -> float | None:
        decision = self.in_context(self.one_sweep_pass, *key)
        if decision is None:
            return None
        return float(decision.requeue_after) if decision.requeue_after else RESYNC_SECONDS

    def sweep_changed(self, body: dict, namespace: str, name: str) -> None:
        self.keep_context()
        self.cache.put_sweep(body)
        self.sweep_passes.request((namespace, name))

    def sweep_event(self, body: dict, namespace: str, name: str, type_: str | None) -> None:
        self.keep_context()
        if type_ == "DELETED":   # its points go with it (owner references)
            self.cache.drop_sweep(namespace, name)
            self.sweep_passes.forget((namespace, name))
        elif self.cache.put_sweep(body):
            self.sweep_passes.request((namespace, name))

    def _tell_sweep(self, body: dict) -> None:
        """A point changed (its phase, its results): its sweep's pass is due."""
        owner = next((o["name"] for o in body["metadata"].get("ownerReferences") or []
                      if o.get("kind") == W.KIND), None)
        if owner and LABEL_SWEEP in (body["metadata"].get("labels") or {}):
            self.sweep_passes.request((body["metadata"]["namespace"], owner))

    # ----------------------------------------------------------------- what the watches say
    def resource_changed(self, body: dict, namespace: str, name: str) -> None:
        """Create, update or resume: keep it (before the pass, which may start before the
        event handler) and ask for a pass."""
        self.keep_context()
        self.cache.put_resource(body)
        self.passes.request((namespace, name))
        self._tell_sweep(body)

    def resource_event(self, body: dict, namespace: str, name: str, type_: str | None) -> None:
        self.keep_context()
        if type_ == "DELETED":  # its children's entries, its queued passes, its phase gauge go
            self.cache.drop_resource(namespace, name)
            self.passes.forget((namespace, name))
            metrics.forget(namespace, name)
            self._tell_sweep(body)
        elif self.cache.put_resource(body):
            # news kopf's change handlers do not see: annotations under our group (the retry
            # annotation) are left out of kopf's diff, as its own progress annotations are;
            # a listing (type None) asks too when it shows a newer version than was kept
            self.passes.request((namespace, name))
            self._tell_sweep(body)   # its status moved (a phase, a result): the sweep's too

    def child_event(self, body: dict, type_: str | None) -> None:
        """Keep the cache; a pass for the owner of a change. A listing (type None: a watch's
        first, or its re-list after a gap) asks only for what changed since the cache held
        it: the resume pass may have run before it, and it is the only news of a change
        made between the priming listing and the watch's start, or during the gap."""
        self.keep_context()
        if type_ == "DELETED":
            owner, changed = self.cache.remove(body), True
        else:
            owner, changed = self.cache.put(body)
            changed = changed or type_ is not None
        if owner and changed:
            self.passes.request((body["metadata"]["namespace"], owner))


__all__ = ["Operator", "CHILD_KINDS", "PASS_WORKERS", "RESYNC_SECONDS"]
