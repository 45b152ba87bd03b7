"""What the operator knows of the cluster, fed by its watches: the MnistServing
bodies and slim copies of their children.

A pass reads its children here instead of listing them. Children are bucketed by
namespace and instance label (the selector the listing used), so a pod that
arrives before its Job or before its resource still lands in the right bucket;
reading a bucket keeps what the resource owns (its uid in the owner references,
or no owner at all, like a kept claim), as the listing did. Entries go on
DELETED, and a resource's bucket goes with the resource.

Slim copies keep every field reconcile, refusals and results read (metadata,
the Job's and the Deployment's status, the pod template's metadata, replicas,
completions and a Job's deadline,
container states and image digests, pod conditions and nodes); pod specs and managed fields, most of a
body's bytes, are dropped.

Everything is kept as compact JSON and decoded on each read: a parsed body takes four to
five times its JSON's bytes (a Ready resource's body about 51 KB against 11 KB), and
decoding is faster than the deep copy each read needs anyway (a pass may edit what it reads).
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

from mnist_operator.core.builders import LABEL_INSTANCE, instance_label
from mnist_operator.core.sweep import LABEL_SWEEP

#: kind -> the key of observe's dict it feeds (lists for Jobs and Pods, one object otherwise).
KINDS = {"Job": "jobs", "Pod": "pods", "Deployment": "deployment", "Service": "service",
         "PersistentVolumeClaim": "pvc", "ServiceAccount": "account"}
_META = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences",
         "deletionTimestamp", "generation", "resourceVersion", "creationTimestamp")
_POD_STATUS = ("phase", "reason", "message", "conditions", "startTime")
_CONTAINER_STATUS = ("name", "state", "lastState", "ready", "restartCount", "imageID")


def _slim_meta(meta: dict) -> dict:
    return {k: meta[k] for k in _META if k in meta}


def slim(kind: str, body: dict) -> dict:
    """The part of a child that a pass reads."""
    out = {"apiVersion": body.get("apiVersion"), "kind": kind,
           "metadata": _slim_meta(body.get("metadata") or {})}
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if kind == "Pod":
        st = {k: status[k] for k in _POD_STATUS if k in status}
        for key in ("initContainerStatuses", "containerStatuses"):
            if key in status:
                st[key] = [{k: c[k] for k in _CONTAINER_STATUS if k in c} for c in status[key] or []]
        out["status"] = st
        if spec.get("nodeName"):   # where it ran: the environment of its result
            out["spec"] = {"nodeName": spec["nodeName"]}
        return out
    # replicas (a Deployment's), completions (an Indexed Job's: how many must succeed),
    # activeDeadlineSeconds (a Job's: moved out while its pod waits for a quota)
    slim_spec = {k: spec[k] for k in ("replicas", "completions", "activeDeadlineSeconds")
                 if k in spec}
    if isinstance(spec.get("template"), dict) and "metadata" in spec["template"]:
        slim_spec["template"] = {"metadata": _slim_meta(spec["template"]["metadata"] or {})}
    out["spec"] = slim_spec
    if status:
        out["status"] = status  # small for Jobs, Deployments, Services and claims
    return out


class _Kept:
    """One object as compact JSON, with the resourceVersion it was kept at."""
    __slots__ = ("version", "data")

    def __init__(self, obj: dict) -> None:
        self.version = obj["metadata"].get("resourceVersion")
        self.data = json.dumps(obj, separators=(",", ":")).encode()

    def load(self) -> dict:
        return json.loads(self.data)


def _newer(a: str | None, old: _Kept | None, strictly: bool = False) -> bool:
    """False when resourceVersion ``a`` is older than what is kept: a write's response can
    beat the watch event of an earlier change. resourceVersions are etcd revisions;
    anything else wins. Asked before encoding, so an echo costs no JSON."""
    if old is None:
        return True
    b = old.version
    try:
        return int(a) > int(b) or (not strictly and int(a) == int(b))
    except (TypeError, ValueError):
        return a != b or not strictly


class ClusterCache:
    """Thread-safe: kopf's event loop writes, passes on worker threads read and write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (namespace, name) -> the MnistServing body, without managed fields
        self._resources: dict[tuple[str, str], _Kept] = {}
        #: (namespace, instance label) -> resource name, for children's events
        self._by_label: dict[tuple[str, str], str] = {}
        #: (namespace, instance label) -> kind -> name -> slim child
        self._children: dict[tuple[str, str], dict[str, dict[str, _Kept]]] = {}
        #: node name -> its GPU labels (asked once per node: they do not change under a pod)
        self._node_labels: dict[str, dict[str, str]] = {}
        #: (namespace, name) -> the MnistServingSweep body
        self._sweeps: dict[tuple[str, str], _Kept] = {}
        #: (namespace, name) of a sweep's point -> its sweep label, and the reverse index
        self._sweep_of: dict[tuple[str, str], str] = {}
        self._points: dict[tuple[str, str], set[str]] = {}

    # ---------------------------------------------------------------- resources
    def put_resource(self, body: dict) -> bool:
        """Keep the resource's body; False when it is what is kept already (the watch event
        of our own status write) or older: nothing new for a pass."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            if not _newer(meta.get("resourceVersion"), self._resources.get(key), strictly=True):
                return False
            self._resources[key] = _Kept(
                {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})
            self._by_label[(key[0], instance_label(key[1]))] = key[1]
            self._index_point(key, (meta.get("labels") or {}).get(LABEL_SWEEP))
            return True

    def _index_point(self, key: tuple[str, str], sweep: str | None) -> None:
        """Keep the sweep index in step with the resource's sweep label (lock held)."""
        old = self._sweep_of.pop(key, None)
        if old is not None:
            self._points.get((key[0], old), set()).discard(key[1])
        if sweep is not None:
            self._sweep_of[key] = sweep
            self._points.setdefault((key[0], sweep), set()).add(key[1])

    def drop_resource(self, namespace: str, name: str) -> None:
        label = (namespace, instance_label(name))
        with self._lock:
            self._resources.pop((namespace, name), None)
            self._by_label.pop(label, None)
            self._children.pop(label, None)
            self._index_point((namespace, name), None)

    def resource(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            kept = self._resources.get((namespace, name))
        return kept.load() if kept is not None else None

    def sweep_points(self, namespace: str, sweep_label: str) -> list[dict]:
        """The MnistServings of ``namespace`` labelled as points of the sweep whose label
        value is ``sweep_label`` (an index: only their bodies are decoded)."""
        with self._lock:
            kept = [self._resources[(namespace, name)]
                    for name in sorted(self._points.get((namespace, sweep_label), ()))]
        return [k.load() for k in kept]

    # ---------------------------------------------------------------- sweeps
    def put_sweep(self, body: dict) -> bool:
        """Keep a sweep's body; False when it is no newer than what is kept."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            if not _newer(meta.get("resourceVersion"), self._sweeps.get(key), strictly=True):
                return False
            self._sweeps[key] = _Kept(
                {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})
            return True

    def drop_sweep(self, namespace: str, name: str) -> None:
        with self._lock:
            self._sweeps.pop((namespace, name), None)

    def sweep(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            kept = self._sweeps.get((namespace, name))
        return kept.load() if kept is not None else None

    # ---------------------------------------------------------------- children
    def put(self, body: dict) -> tuple[str | None, bool]:
        """Keep a slim copy of a child. Returns the name of the resource it belongs to
        (None if not known yet), and whether this changed what was kept (False for the
        version kept already or an older one)."""
        kind = body.get("kind")
        meta = body.get("metadata") or {}
        label = (meta.get("labels") or {}).get(LABEL_INSTANCE)
        if kind not in KINDS or label is None:
            return None, False
        key = (meta.get("namespace"), label)
        version = meta.get("resourceVersion")
        with self._lock:
            bucket = self._children.setdefault(key, {}).setdefault(kind, {})
            old = bucket.get(meta["name"])
            changed = _newer(version, old, strictly=True)
            if _newer(version, old):
                bucket[meta["name"]] = _Kept(slim(kind, body))  # nothing of the event's body
            return self._by_label.get(key), changed

    def remove(self, body: dict) -> str | None:
        """Forget a deleted child; the name of the resource it belonged to, if known."""
        kind, meta = body.get("kind"), body.get("metadata") or {}
        key = (meta.get("namespace"), (meta.get("labels") or {}).get(LABEL_INSTANCE))
        with self._lock:
            kinds = self._children.get(key)
            if kinds is not None:
                kinds.get(kind, {}).pop(meta.get("name"), None)
                if not any(kinds.values()):
                    del self._children[key]
            return self._by_label.get(key)

    def mark_deleting(self, cr: dict, ref: dict) -> None:
        """After our own delete of the resource's child ``ref``: it is going (its watch
        event may not be here yet)."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (ref["namespace"], instance_label(cr["metadata"]["name"]))
        with self._lock:
            bucket = self._children.get(key, {}).get(ref["kind"], {})
            if ref["name"] in bucket:
                obj = bucket[ref["name"]].load()
                obj["metadata"]["deletionTimestamp"] = now
                bucket[ref["name"]] = _Kept(obj)

    def forget_child(self, cr: dict, ref: dict) -> None:
        """After our own delete found the resource's child ``ref`` gone already (404)."""
        key = (ref["namespace"], instance_label(cr["metadata"]["name"]))
        with self._lock:
            self._children.get(key, {}).get(ref["kind"], {}).pop(ref["name"], None)

    def children(self, cr: dict) -> dict:
        """This resource's children in observe_children's shape, less job_events."""
        meta = cr["metadata"]
        uid = meta.get("uid")
        with self._lock:
            kinds = self._children.get((meta["namespace"], instance_label(meta["name"]))) or {}
            kept = {kind: [objs[n] for n in sorted(objs)]   # by name, as a listing returns them
                    for kind, objs in ((k, kinds.get(k, {})) for k in KINDS)}
        found = {kind: [k.load() for k in objs] for kind, objs in kept.items()}

        def owned(obj: dict) -> bool:
            refs = obj["metadata"].get("ownerReferences") or []
            return uid is None or not refs or any(r.get("uid") == uid for r in refs)

        def one(kind: str) -> dict | None:
            return next((o for o in found[kind] if owned(o)), None)

        # Pods belong to the Jobs (and ReplicaSets), not to the resource itself.
        return {"jobs": [o for o in found["Job"] if owned(o)], "pods": found["Pod"],
                "deployment": one("Deployment"), "service": one("Service"),
                "pvc": one("PersistentVolumeClaim"), "account": one("ServiceAccount")}

    # ---------------------------------------------------------------- nodes
    def node_labels(self, name: str) -> dict[str, str] | None:
        """The GPU labels kept for node ``name``; None when it was never asked about."""
        with self._lock:
            return self._node_labels.get(name)

    def put_node_labels(self, name: str, labels: dict[str, str]) -> None:
        with self._lock:
            self._node_labels[name] = dict(labels)

    def sizes(self) -> dict[str, int]:
        """Objects kept, by kind (what bounds the operator's memory)."""
        with self._lock:
            out = {"MnistServing": len(self._resources)}
            if self._sweeps:
                out["MnistServingSweep"] = len(self._sweeps)
            for kinds in self._children.values():
                for kind, objs in kinds.items():
                    out[kind] = out.get(kind, 0) + len(objs)
            return out


__all__ = ["ClusterCache", "slim", "KINDS"]
