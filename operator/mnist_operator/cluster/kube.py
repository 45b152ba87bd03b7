"""Thin Kubernetes API helpers over the official client, on plain dicts.

Every object travels as the JSON the API server speaks (camelCase dicts), the
same shape builders.py produces and reconcile.py reads, so nothing here
converts to and from the client's generated models. Idempotent by design:
create treats 409 as "already there", delete and patch treat 404 as "already gone".
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mnist_operator.api import sweep
from mnist_operator.api.spec import GROUP, KIND, PLURAL, VERSION
from mnist_operator.cluster import metrics
from mnist_operator.cluster.cache import ClusterCache
from mnist_operator.core.status import parse_timestamp

log = logging.getLogger(__name__)

#: apiVersion, kind -> resource plural (the kinds an MnistServing owns).
PLURALS = {
    ("batch/v1", "Job"): "jobs",
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("apps/v1", "Deployment"): "deployments",
    (f"{GROUP}/{VERSION}", "MnistServing"): PLURAL,
    (f"{GROUP}/{VERSION}", sweep.KIND): sweep.PLURAL,
}
INSTANCE_LABEL = "app.kubernetes.io/instance"


class KubeError(RuntimeError):
    """An API call failed with a status other than the ones we treat as success."""

    def __init__(self, status: int, method: str, path: str, body: str):
        self.status = status
        try:
            parsed = json.loads(body)
            message, reason = parsed.get("message", body), parsed.get("reason", "")
        except (ValueError, AttributeError):
            message, reason = body, ""
        self.message = str(message)
        self.reason = str(reason)   # the API's Status reason: Forbidden, Invalid, ...
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def api_client(connections: int = 10) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig; a pool of
    ``connections`` (one per thread that calls at once, or urllib3 opens and drops extra ones)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    """The objects of a kind in ``namespace``; None: in every namespace."""
    plural = PLURALS[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/{plural}" if namespace is None else f"{root}/namespaces/{quote(namespace)}/{plural}"


def _request(api: client.ApiClient, method: str, path: str, body: Any = None,
             query: dict | None = None, content_type: str = "application/json"
             ) -> tuple[int, dict | None]:
    if query:
        path = f"{path}?{urlencode(query)}"
    headers = {"Accept": "application/json", "Content-Type": content_type}
    params = api.param_serialize(method, path, header_params=headers, body=body,
                                 auth_settings=["BearerToken"])
    try:
        resp = api.call_api(*params)
        status, raw = resp.status, resp.read()
    except ApiException as e:  # older clients raise on non-2xx
        status, raw = e.status, e.body
    metrics.api_request(method, path, status)
    text = raw.decode() if isinstance(raw, bytes) else (raw or "")
    if status >= 400:
        raise KubeError(status, method, path, text)
    return status, (json.loads(text) if text else None)


def _unless_gone(api: client.ApiClient, method: str, path: str, body: Any = None,
                 content_type: str = "application/json") -> dict | None:
    """The answer's body; None when the object is not there (404)."""
    try:
        return _request(api, method, path, body, content_type=content_type)[1]
    except KubeError as e:
        if e.status == 404:
            return None
        raise


def create(api: client.ApiClient, obj: dict) -> dict | None:
    """Create ``obj``: the object as created (what was sent, if the answer has no body);
    None when it already exists (409)."""
    m = obj["metadata"]
    path = collection_path(obj["apiVersion"], obj["kind"], m["namespace"])
    try:
        return _request(api, "POST", path, obj)[1] or obj
    except KubeError as e:
        if e.status == 409:
            return None
        raise


def patch(api: client.ApiClient, obj: dict) -> dict | None:
    """Merge-patch the live object with ``obj`` (labels, annotations, spec); None when
    it is gone (404: deleted since the watch showed it, which its DELETED event says)."""
    m = obj["metadata"]
    path = f"{collection_path(obj['apiVersion'], obj['kind'], m['namespace'])}/{quote(m['name'])}"
    body = {k: v for k, v in obj.items() if k in ("metadata", "spec")}
    body["metadata"] = {k: v for k, v in m.items() if k in ("labels", "annotations")}
    return _unless_gone(api, "PATCH", path, body, content_type="application/merge-patch+json")


def delete(api: client.ApiClient, ref: dict) -> bool:
    """Delete by reference, children in the background; False when already gone (404)."""
    path = f"{collection_path(ref['apiVersion'], ref['kind'], ref['namespace'])}/{quote(ref['name'])}"
    try:
        _request(api, "DELETE", path, {"propagationPolicy": "Background"})
    except KubeError as e:
        if e.status == 404:
            return False
        raise
    return True


def get(api: client.ApiClient, api_version: str, kind: str, namespace: str, name: str
        ) -> dict | None:
    path = f"{collection_path(api_version, kind, namespace)}/{quote(name)}"
    return _unless_gone(api, "GET", path)


def list_objects(api: client.ApiClient, api_version: str, kind: str, namespace: str | None,
                 label_selector: str | None = None) -> list[dict]:
    """Objects of a kind in ``namespace`` (None: in every namespace)."""
    _, body = _request(api, "GET", collection_path(api_version, kind, namespace),
                       query={"labelSelector": label_selector} if label_selector else None)
    items = (body or {}).get("items") or []
    for item in items:  # list items omit these; builders and reconcile expect them
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


#: GPU feature discovery's labels: what an environment fingerprint says of a node's GPUs.
GPU_LABELS = ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory")


def node_gpus(api: client.ApiClient, pods: list[dict], known: ClusterCache) -> dict[str, dict]:
    """Node name -> its GPU feature discovery labels, for the nodes ``pods`` ran on. A node
    is asked about once (GET; its labels are kept); a node we may not read (a namespaced
    Role) or that is gone reads as no labels."""
    out = {}
    for name in sorted({(p.get("spec") or {}).get("nodeName") or "" for p in pods} - {""}):
        labels = known.node_labels(name)
        if labels is None:
            try:
                node = _request(api, "GET", f"/api/v1/nodes/{quote(name)}")[1] or {}
                found = (node.get("metadata") or {}).get("labels") or {}
                labels = {k: found[k] for k in GPU_LABELS if k in found}
            except KubeError as e:
                if e.status not in (403, 404):
                    raise
                labels = {}
            known.put_node_labels(name, labels)
        out[name] = labels
    return out


def observe_children(api: client.ApiClient, cr: dict, known: ClusterCache, now: datetime) -> dict:
    """What reconcile.reconcile() reads: this resource's children as the watches
    last showed them (``known``), and the job controller's FailedCreate events of
    Jobs that have had no pod for PODLESS_GRACE_SECONDS (the only request a pass
    makes here, and rarely)."""
    observed = known.children(cr)
    jobs, pods = observed["jobs"], observed["pods"]
    asked = [j for j in podless_jobs(jobs, pods) if _podless_long(j, now)]
    return {"jobs": jobs, "pods": pods,
            "job_events": failed_creates(api, cr["metadata"]["namespace"], asked),
            "deployment": observed["deployment"], "service": observed["service"],
            "pvc": observed["pvc"], "account": observed["account"],
            "nodes": node_gpus(api, pods, known)}


#: The job controller makes a Job's pod within seconds, more under load: only a Job this
#: old with no pod is asked about (an events LIST, the dearest request a pass makes),
#: then again every PODLESS_SECONDS while it has none (its pod's event ends that).
PODLESS_GRACE_SECONDS = 10
PODLESS_SECONDS = 5


def _age(job: dict, now: datetime) -> float:
    created = parse_timestamp(job["metadata"].get("creationTimestamp"))
    return float("inf") if created is None else (now - created).total_seconds()


def _podless_long(job: dict, now: datetime) -> bool:
    return _age(job, now) >= PODLESS_GRACE_SECONDS


def podless_recheck(jobs: list[dict], now: datetime) -> float:
    """Seconds until a pass should look at these podless Jobs' events (again)."""
    return max(PODLESS_SECONDS, min(PODLESS_GRACE_SECONDS - _age(j, now) for j in jobs))


def podless_jobs(jobs: list[dict], pods: list[dict]) -> list[dict]:
    """Running Jobs with no pod at all: the ones whose pods may have been refused."""
    named = {(p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") for p in pods} | \
        {(p["metadata"].get("labels") or {}).get("job-name") for p in pods}
    out = []
    for job in jobs:
        st = job.get("status") or {}
        finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                       for c in st.get("conditions") or [])
        if not finished and not st.get("active") and job["metadata"]["name"] not in named \
                and not job["metadata"].get("deletionTimestamp"):
            out.append(job)
    return out


def failed_creates(api: client.ApiClient, namespace: str, jobs: list[dict]) -> dict[str, list[dict]]:
    """Job name -> the job controller's FailedCreate events (why its pods were refused).
    Only asked for Jobs without pods, so a healthy pass makes no such call."""
    out = {}
    for job in jobs:
        uid = job["metadata"].get("uid")
        if not uid:
            continue
        _, body = _request(api, "GET", f"/api/v1/namespaces/{quote(namespace)}/events",
                           query={"fieldSelector": f"involvedObject.uid={uid},reason=FailedCreate"})
        items = (body or {}).get("items") or []
        if items:
            out[job["metadata"]["name"]] = [
                {"message": e.get("message", ""), "count": e.get("count", 1),
                 "lastTimestamp": e.get("lastTimestamp") or e.get("eventTime")} for e in items]
    return out


def patch_status(api: client.ApiClient, namespace: str, name: str, status_patch: dict,
                 kind: str = KIND) -> dict | None:
    """JSON-merge-patch ``.status`` of a MnistServing (or a sweep) through the status
    subresource; None when the resource is gone (404: deleted during the pass)."""
    path = f"{collection_path(f'{GROUP}/{VERSION}', kind, namespace)}/{quote(name)}/status"
    return _unless_gone(api, "PATCH", path, {"status": status_patch},
                        content_type="application/merge-patch+json")


__all__ = ["KubeError", "api_client", "create", "patch", "delete", "get", "list_objects",
           "observe_children", "podless_jobs", "podless_recheck", "patch_status", "collection_path",
           "INSTANCE_LABEL", "PLURALS"]
