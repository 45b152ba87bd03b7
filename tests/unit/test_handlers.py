"""The kopf shell: child events reach their resource through the cache and queue a pass;
a pass reads the cache and writes its answers back into it."""
from __future__ import annotations

import asyncio
import contextvars

import pytest

from mnist_operator.cluster import handlers, kube, runtime
from mnist_operator.cluster.cache import ClusterCache
from mnist_operator.cluster.runtime import Operator
from mnist_operator.core import builders
from mnist_operator.core.reconcile import Decision

LONG = "a-resource-whose-name-is-longer-than-sixty-three-characters-for-sure"


def cr(name: str, uid: str = "uid-cr") -> dict:
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1,
                         "resourceVersion": "1"}, "spec": {}}


def pod(owner_name: str, name: str = "p") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "5",
                         "labels": {builders.LABEL_INSTANCE: builders.instance_label(owner_name)},
                         "ownerReferences": [{"kind": "Job", "name": "j", "uid": "uid-job"}]},
            "spec": {"containers": [{"name": "stage", "image": "x"}]},
            "status": {"phase": "Running"}}


class Asked:
    def __init__(self):
        self.keys: list = []

    def request(self, key, delay=0.0):
        self.keys.append((key, delay))


@pytest.fixture
def shell(monkeypatch):
    operator = Operator(cache=ClusterCache(), environ={})
    operator.passes = Asked()
    monkeypatch.setattr(handlers, "OPERATOR", operator)  # what the kopf handlers delegate to
    return operator.cache, operator.passes


def test_a_pod_of_a_long_named_resource_queues_its_pass(shell):
    known, asked = shell
    assert len(LONG) > 63 and builders.instance_label(LONG) != LONG
    known.put_resource(cr(LONG))
    handlers.OPERATOR.child_event(pod(LONG), "ADDED")
    assert asked.keys == [(("ns", LONG), 0.0)]
    assert [p["metadata"]["name"] for p in known.children(cr(LONG))["pods"]] == ["p"]


def test_a_listing_of_what_was_primed_queues_no_pass_and_deleted_empties_it(shell):
    known, asked = shell
    known.put_resource(cr("demo"))
    known.put(pod("demo"))                  # the priming listing
    handlers.OPERATOR.child_event(pod("demo"), None)    # the watch's first listing: the same version
    assert asked.keys == [] and len(known.children(cr("demo"))["pods"]) == 1
    handlers.OPERATOR.child_event(pod("demo"), "DELETED")
    assert asked.keys == [(("ns", "demo"), 0.0)] and known.children(cr("demo"))["pods"] == []


def test_a_listing_that_shows_a_change_since_priming_queues_a_pass(shell):
    # After a restart the resume pass can run before the Job watch lists: a Job that
    # finished in between is news only that listing carries (the same after a re-list).
    known, asked = shell
    known.put_resource(cr("demo"))
    known.put(pod("demo"))
    finished = pod("demo")
    finished["metadata"]["resourceVersion"] = "6"
    finished["status"]["phase"] = "Succeeded"
    handlers.OPERATOR.child_event(finished, None)
    assert asked.keys == [(("ns", "demo"), 0.0)]
    assert known.children(cr("demo"))["pods"][0]["status"]["phase"] == "Succeeded"


def test_a_listing_that_shows_a_newer_resource_queues_its_pass(shell):
    known, asked = shell
    known.put_resource(cr("demo"))
    asyncio.run(handlers.resource_event(body=cr("demo"), namespace="ns", name="demo", type=None))
    assert asked.keys == []
    newer = cr("demo")
    newer["metadata"]["resourceVersion"] = "2"
    asyncio.run(handlers.resource_event(body=newer, namespace="ns", name="demo", type=None))
    assert asked.keys == [(("ns", "demo"), 0.0)]


def test_a_child_of_an_unknown_resource_is_kept_and_queues_nothing(shell):
    known, asked = shell
    handlers.OPERATOR.child_event(pod("later"), "ADDED")
    assert asked.keys == []
    known.put_resource(cr("later"))   # its own watch event comes after its pod's
    assert len(known.children(cr("later"))["pods"]) == 1


def test_a_pass_runs_in_kopfs_context(monkeypatch):
    # kopf.event() inside the pass reads kopf's context variables
    var = contextvars.ContextVar("kopf_settings_like")
    seen = []

    def one_pass(namespace, name):
        seen.append(var.get(None))
        return None

    operator = Operator(environ={})
    operator.one_pass = one_pass
    token = var.set("from kopf's startup")
    operator.context = contextvars.copy_context()
    var.reset(token)
    assert operator.next_pass(("ns", "ctx")) is None
    assert seen == ["from kopf's startup"]


class FakeKube:
    """The API answers: a create returns the object with a resourceVersion."""

    def __init__(self):
        self.created, self.deleted = [], []

    def create(self, _api, obj):
        self.created.append(obj["metadata"]["name"])
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "9", "uid": "uid-new"}}

    def delete(self, _api, ref):
        self.deleted.append(ref["name"])
        return True


def test_apply_writes_what_it_created_and_deleted_into_the_cache(shell, monkeypatch):
    known, _ = shell
    fake = FakeKube()
    for fn in ("create", "delete"):
        monkeypatch.setattr(kube, fn, getattr(fake, fn))
    monkeypatch.setattr(handlers.OPERATOR, "api", lambda: None)
    owner = cr("demo")
    old_job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "old", "namespace": "ns", "resourceVersion": "3",
                            "labels": {builders.LABEL_INSTANCE: "demo"}}}
    known.put_resource(owner)
    known.put(old_job)
    new_job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "new", "namespace": "ns",
                            "labels": {builders.LABEL_INSTANCE: "demo"}}, "spec": {}}
    decision = Decision(create=[new_job], delete=[
        {"apiVersion": "batch/v1", "kind": "Job", "name": "old", "namespace": "ns"}])
    assert handlers.OPERATOR.apply(decision, owner) == []
    jobs = {j["metadata"]["name"]: j for j in known.children(owner)["jobs"]}
    assert set(jobs) == {"old", "new"}
    assert jobs["old"]["metadata"].get("deletionTimestamp")
    assert jobs["new"]["metadata"]["uid"] == "uid-new"


def test_a_resource_event_with_news_queues_a_pass_and_our_own_write_does_not(shell):
    import asyncio
    known, asked = shell
    known.put_resource(cr("demo"))                       # as our status write left it
    event = lambda body, type_: asyncio.run(handlers.resource_event(  # noqa: E731
        body=body, namespace="ns", name="demo", type=type_))
    event(cr("demo"), "MODIFIED")                        # its watch event: nothing new
    assert asked.keys == []
    annotated = cr("demo")
    annotated["metadata"].update(resourceVersion="2", annotations={"mnist.serving.dev/retry": "1"})
    event(annotated, "MODIFIED")                         # kopf's change handlers miss this one
    assert asked.keys == [(("ns", "demo"), 0.0)]
    assert known.resource("ns", "demo")["metadata"]["annotations"] == {"mnist.serving.dev/retry": "1"}


def test_a_job_without_a_pod_is_asked_about_only_after_the_grace(monkeypatch):
    """The job controller makes a pod within seconds: a young podless Job costs no events
    LIST; one podless past the grace has its FailedCreate events read."""
    from datetime import datetime, timedelta, timezone
    listed = []

    def request(api, method, path, body=None, query=None, content_type=None):
        listed.append(query["fieldSelector"])
        return 200, {"items": [{"message": "Error creating: forbidden", "count": 3}]}
    monkeypatch.setattr(kube, "_request", request)
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
    known = ClusterCache()
    owner = cr("demo")
    known.put_resource(owner)

    def job(name, age):
        created = (now - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                             "resourceVersion": "4", "creationTimestamp": created,
                             "labels": {builders.LABEL_INSTANCE: "demo"}}, "status": {}}
    young = job("young", 1)
    known.put(young)
    assert kube.observe_children(None, owner, known, now)["job_events"] == {}
    assert listed == []
    assert kube.podless_recheck([young], now) == kube.PODLESS_GRACE_SECONDS - 1   # its grace's end
    old = job("old", kube.PODLESS_GRACE_SECONDS + 1)
    known.put(old)
    events = kube.observe_children(None, owner, known, now)["job_events"]
    assert list(events) == ["old"] and listed == ["involvedObject.uid=uid-old,reason=FailedCreate"]
    assert kube.podless_recheck([young, old], now) == kube.PODLESS_SECONDS


def test_a_resource_deleted_during_its_pass_ends_the_pass_quietly(shell, monkeypatch):
    known, _ = shell
    known.put_resource(cr("gone"))

    def request(_api, method, path, body=None, query=None, content_type=""):
        raise kube.KubeError(404, method, path,
                                      '{"reason": "NotFound", "message": "not found"}')

    monkeypatch.setattr(handlers.OPERATOR, "api", lambda: None)
    monkeypatch.setattr(kube, "observe_children",
                        lambda _a, owner, cache, _now: cache.children(owner))
    monkeypatch.setattr(kube, "_request", request)   # the status PATCH's answer
    monkeypatch.setattr(handlers.OPERATOR, "apply", lambda _decision, _cr: [])
    monkeypatch.setattr(runtime.kopf, "event", lambda *a, **k: None)
    assert handlers.OPERATOR.one_pass("ns", "gone") is None   # no traceback, nothing rescheduled
    assert known.resource("ns", "gone") is not None     # the watch's DELETED event drops it


# --------------------------------------------------------------------------- sweeps
SWEEP = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServingSweep",
         "metadata": {"name": "s", "namespace": "ns", "uid": "uid-sweep", "generation": 1,
                      "resourceVersion": "1"},
         "spec": {"axes": [{"field": "serving.instances", "values": [1, 2, 3]}], "maxParallel": 2}}


def test_a_sweep_pass_creates_its_points_writes_status_and_counts_what_it_made(monkeypatch):
    operator = Operator(cache=ClusterCache(), environ={})
    operator.cache.put_sweep(SWEEP)
    created, patched = [], []

    def create(_api, obj):
        created.append(obj["metadata"]["name"])
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "5", "uid": "u"}}

    def patch_status(_api, namespace, name, status, kind="MnistServing"):
        patched.append((kind, name, status["readyPoints"]))
        return {**SWEEP, "metadata": {**SWEEP["metadata"], "resourceVersion": "2"},
                "status": status}
    monkeypatch.setattr(kube, "create", create)
    monkeypatch.setattr(kube, "patch_status", patch_status)
    monkeypatch.setattr(operator, "api", lambda: None)
    monkeypatch.setattr(runtime.kopf, "event", lambda *a, **k: None)
    operator.one_sweep_pass("ns", "s")
    assert len(created) == 2 and patched == [("MnistServingSweep", "s", "0/3")]
    operator.one_sweep_pass("ns", "s")              # both points are running: nothing more
    assert len(created) == 2 and len(patched) == 1


def test_a_points_change_asks_for_its_sweeps_pass(shell):
    _, asked = shell
    point = cr("s-abc123")
    point["metadata"]["labels"] = {"mnist.serving.dev/sweep": "s"}
    point["metadata"]["ownerReferences"] = [{"kind": "MnistServingSweep", "name": "s",
                                             "uid": "uid-sweep"}]
    sweeps = Asked()
    handlers.OPERATOR.sweep_passes = sweeps
    asyncio.run(handlers.resource_event(body=point, namespace="ns", name="s-abc123",
                                        type="MODIFIED"))
    assert asked.keys == [(("ns", "s-abc123"), 0.0)] and sweeps.keys == [(("ns", "s"), 0.0)]
    asyncio.run(handlers.resource_event(body=cr("alone"), namespace="ns", name="alone",
                                        type="MODIFIED"))
    assert sweeps.keys == [(("ns", "s"), 0.0)]       # a MnistServing of no sweep: no sweep pass
