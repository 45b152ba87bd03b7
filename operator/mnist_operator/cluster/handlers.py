"""Every kopf registration, and nothing else: each handler is one line that hands
the event to the runtime (runtime.py), which decides nothing either: the pure
core (core/reconcile.py) does.

``mnist-serving operator`` (main.py) imports this module; ``kopf run -m
mnist_operator.cluster.handlers`` registers the same handlers (its startup then
serves /metrics on 8081). Deletion needs no finalizer (kopf drops the one an older
operator's timer left): owner references let the garbage collector remove the
children (the PVC has none when ``storage.keepOnDelete`` is set).
"""
from __future__ import annotations

import logging
from typing import Any

import kopf

from mnist_operator.api import sweep
from mnist_operator.api.spec import GROUP, PLURAL, VERSION
from mnist_operator.cluster import metrics
from mnist_operator.cluster.runtime import Operator
from mnist_operator.core import builders

log = logging.getLogger("mnist_operator")

#: The one runtime of this process (kopf's registry is process-wide too).
OPERATOR = Operator()
MANAGED = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}
#: The children whose events the operator watches, as kopf names a resource.
CHILD_RESOURCES = [("batch", "v1", "jobs"), ("apps", "v1", "deployments"), ("v1", "pods"),
                   ("v1", "services"), ("v1", "persistentvolumeclaims"), ("v1", "serviceaccounts")]


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
    settings.scanning.disabled = OPERATOR.static_namespaces
    try:  # `kopf run -m` skips main(): check the defaults here too
        defaults = OPERATOR.defaults()
    except ValueError as err:
        raise kopf.PermanentError(f"bad operator defaults: {err}") from None
    log.info("operator defaults: %s", defaults or "none (built-in defaults only)")
    if OPERATOR.metrics_port is None:  # `kopf run -m`: main() did not serve them
        try:
            metrics.serve(metrics.DEFAULT_PORT)
        except OSError as err:
            log.warning("no /metrics: port %d: %s", metrics.DEFAULT_PORT, err)
    # Startup handlers finish before kopf starts watching: the watches' first listing
    # lands on a primed cache, and no pass (each asked for by a handler, resume for
    # what exists) reads it before it holds everything.
    OPERATOR.prime()
    log.info("cache primed: %s", OPERATOR.cache.sizes())
    OPERATOR.passes.start()
    OPERATOR.sweep_passes.start()


@kopf.on.cleanup()
def stop_passes(**_: Any) -> None:
    OPERATOR.passes.stop()
    OPERATOR.sweep_passes.stop()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_change(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    OPERATOR.resource_changed(dict(body), namespace, name)  # returns None: kopf writes no status


# Async on purpose: they run on kopf's event loop, take no worker thread, and let
# go of the event as soon as they return (the cache keeps a slim copy).
@kopf.on.event(GROUP, VERSION, PLURAL)
async def resource_event(body: kopf.Body, namespace: str, name: str, type: str | None,
                         **_: Any) -> None:
    OPERATOR.resource_event(dict(body), namespace, name, type)


@kopf.on.resume(GROUP, VERSION, sweep.PLURAL)
@kopf.on.create(GROUP, VERSION, sweep.PLURAL)
@kopf.on.update(GROUP, VERSION, sweep.PLURAL)
def on_sweep_change(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    OPERATOR.sweep_changed(dict(body), namespace, name)


@kopf.on.event(GROUP, VERSION, sweep.PLURAL)
async def sweep_event(body: kopf.Body, namespace: str, name: str, type: str | None,
                      **_: Any) -> None:
    OPERATOR.sweep_event(dict(body), namespace, name, type)


async def child_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    OPERATOR.child_event(dict(body), type)


for _resource in CHILD_RESOURCES:
    kopf.on.event(*_resource, labels=MANAGED, id=f"{_resource[-1]}-event")(child_event)


__all__ = ["OPERATOR", "configure", "on_change", "resource_event", "on_sweep_change",
           "sweep_event", "child_event"]
