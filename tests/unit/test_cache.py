"""The watch-fed cache: slim copies keep every field a pass reads, buckets follow the
listing's selector and owner rule, and nothing outlives its object or its resource."""
from __future__ import annotations

import copy

from test_reconcile import ALL_STEPS, UNSCHEDULABLE, World, _stuck_pod

from mnist_operator.core import builders
from mnist_operator.cluster.cache import ClusterCache, slim
from mnist_operator.core.reconcile import reconcile

MANAGED_FIELDS = [{"manager": "kube-controller-manager", "operation": "Update",
                   "fieldsV1": {"f:status": {"f:conditions": {}}}}]


def as_served(kind: str, obj: dict) -> dict:
    """An object as the API server would hold it: managed fields, a full pod spec."""
    out = copy.deepcopy(obj)
    out.setdefault("apiVersion", "v1")
    out["kind"] = kind
    out["metadata"] = {**out["metadata"], "managedFields": MANAGED_FIELDS, "resourceVersion": "7"}
    if kind == "Pod":
        out["spec"] = {"containers": [{"name": "stage", "image": "nvcr.io/nvidia/pytorch:25.01",
                                       "env": [{"name": f"V{i}", "value": "x" * 40} for i in range(30)]}],
                       "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": "c"}}]}
        out["status"] = {**out.get("status", {}), "hostIP": "10.0.0.1", "podIPs": [{"ip": "10.1.0.9"}],
                         "qosClass": "Burstable"}
    return out


def served_children(observed: dict) -> dict:
    """The World's children (observe_children's shape) as the API server would serve them."""
    served = {"jobs": [as_served("Job", j) for j in observed["jobs"]],
              "pods": [as_served("Pod", p) for p in observed["pods"]]}
    for key, kind in (("deployment", "Deployment"), ("service", "Service"),
                      ("pvc", "PersistentVolumeClaim"), ("account", "ServiceAccount")):
        served[key] = as_served(kind, observed[key]) if observed[key] else None
    return served


class Comparing(World):
    """Every pass decided twice, on full and on slim children: the same Decision."""

    def step(self, advance: float = 0):
        from datetime import timedelta
        served = served_children(self.observed())
        slimmed = {k: ([slim(o["kind"], o) for o in v] if isinstance(v, list)
                       else (slim(v["kind"], v) if v else None)) for k, v in served.items()}
        now = self.now + timedelta(seconds=advance)
        assert reconcile(copy.deepcopy(self.cr), slimmed, now) == \
            reconcile(copy.deepcopy(self.cr), served, now)
        self.compared = getattr(self, "compared", 0) + 1
        return super().step(advance)


def test_slim_children_decide_as_full_ones_through_a_whole_pipeline():
    w = Comparing()
    w.step()
    w.pods.append(_stuck_pod(w.job("train")["metadata"]["name"], UNSCHEDULABLE))
    w.step(1)
    for s in ALL_STEPS:
        w.run_through(s)
    w.finish("analyze", "Failed")      # a failed attempt, its backoff and retry
    w.step(1)
    w.step(600)
    assert w.compared >= len(ALL_STEPS) + 3


def test_a_slim_pod_is_much_smaller():
    p = as_served("Pod", _stuck_pod("j", UNSCHEDULABLE))
    assert len(repr(slim("Pod", p))) * 3 < len(repr(p))
    assert "managedFields" not in slim("Pod", p)["metadata"] and "spec" not in slim("Pod", p)


def cr(name="demo", uid="uid-1"):
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1"}}


def child(kind, name, label="demo", owner_uid=None, rv="5"):
    meta = {"name": name, "namespace": "ns", "resourceVersion": rv,
            "labels": {builders.LABEL_INSTANCE: label}}
    if owner_uid:
        meta["ownerReferences"] = [{"kind": "MnistServing", "uid": owner_uid}]
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def test_children_follow_the_instance_label_and_the_owner_uid():
    c = ClusterCache()
    c.put_resource(cr())
    c.put(child("Job", "mine", owner_uid="uid-1"))
    c.put(child("Job", "of-an-older-demo", owner_uid="uid-0"))   # same name, deleted before
    c.put(child("PersistentVolumeClaim", "kept"))               # keepOnDelete: no owner
    c.put(child("Job", "elsewhere", label="other", owner_uid="uid-1"))
    c.put(child("ServiceAccount", "a-runner", owner_uid="uid-0"))
    c.put(child("ServiceAccount", "demo-runner", owner_uid="uid-1"))
    seen = c.children(cr())
    assert [j["metadata"]["name"] for j in seen["jobs"]] == ["mine"]
    assert seen["pvc"]["metadata"]["name"] == "kept"
    assert seen["account"]["metadata"]["name"] == "demo-runner"
    assert seen["deployment"] is None and seen["service"] is None and seen["pods"] == []


def test_an_older_answer_does_not_overwrite_a_newer_copy():
    c = ClusterCache()
    c.put(child("Job", "j", rv="12"))
    c.put({**child("Job", "j", rv="11"), "status": {"active": 1}})
    assert "status" not in c.children(cr())["jobs"][0]


def test_put_says_whether_a_child_changed_what_was_kept():
    c = ClusterCache()
    c.put_resource(cr())
    assert c.put(child("Job", "j", rv="12")) == ("demo", True)     # new
    assert c.put(child("Job", "j", rv="12")) == ("demo", False)    # the same version again
    assert c.put(child("Job", "j", rv="11")) == ("demo", False)    # older
    assert c.put(child("Job", "j", rv="13")) == ("demo", True)     # newer
    assert c.put(child("Job", "k", label="unowned")) == (None, True)


def test_the_echo_of_our_own_status_write_is_nothing_new():
    c = ClusterCache()
    written = {**cr(), "status": {"phase": "Ready"}}
    written["metadata"] = {**written["metadata"], "resourceVersion": "9", "managedFields": MANAGED_FIELDS}
    assert c.put_resource(written) is True                  # the PATCH's answer
    assert c.put_resource(copy.deepcopy(written)) is False  # its watch event: no pass
    assert c.put_resource(cr()) is False                    # an older event (rv 1)
    kept = c.resource("ns", "demo")
    assert kept["status"] == {"phase": "Ready"} and "managedFields" not in kept["metadata"]


def test_deleted_children_and_a_deleted_resource_leave_nothing():
    c = ClusterCache()
    c.put_resource(cr())
    c.put(child("Job", "j"))
    c.put(child("Pod", "p"))
    assert c.remove(child("Pod", "p")) == "demo"
    assert c.sizes() == {"MnistServing": 1, "Job": 1, "Pod": 0}
    c.drop_resource("ns", "demo")
    assert c.sizes() == {"MnistServing": 0}
    assert c.resource("ns", "demo") is None


def test_what_a_pass_reads_is_its_own_copy():
    c = ClusterCache()
    c.put_resource(cr())
    c.put(child("Job", "j"))
    read = c.children(cr())["jobs"][0]
    read["metadata"]["labels"]["edited"] = "by a pass"
    c.resource("ns", "demo")["metadata"]["name"] = "edited"
    assert "edited" not in c.children(cr())["jobs"][0]["metadata"]["labels"]
    assert c.resource("ns", "demo")["metadata"]["name"] == "demo"


def test_mark_deleting_shows_on_the_next_read_only_for_that_child():
    c = ClusterCache()
    c.put_resource(cr())
    c.put(child("Job", "a"))
    c.put(child("Job", "b"))
    c.mark_deleting(cr(), {"namespace": "ns", "kind": "Job", "name": "a"})
    jobs = {j["metadata"]["name"]: j for j in c.children(cr())["jobs"]}
    assert jobs["a"]["metadata"]["deletionTimestamp"].endswith("Z")
    assert "deletionTimestamp" not in jobs["b"]["metadata"]


def test_a_sweeps_points_come_from_an_index_that_follows_their_label():
    def point(name: str, sweep: str | None, version: str = "1") -> dict:
        labels = {"mnist.serving.dev/sweep": sweep} if sweep else {}
        return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": version,
                             "labels": labels}, "spec": {}}
    c = ClusterCache()
    for body in (point("s-b", "s"), point("s-a", "s"), point("alone", None), point("t-a", "t")):
        c.put_resource(body)
    c.put_resource({**point("s-a", "s"), "metadata": {**point("s-a", "s")["metadata"],
                                                      "namespace": "other"}})
    assert [b["metadata"]["name"] for b in c.sweep_points("ns", "s")] == ["s-a", "s-b"]
    c.put_resource(point("s-b", "t", version="2"))          # relabelled: moves with its label
    assert [b["metadata"]["name"] for b in c.sweep_points("ns", "s")] == ["s-a"]
    assert [b["metadata"]["name"] for b in c.sweep_points("ns", "t")] == ["s-b", "t-a"]
    c.drop_resource("ns", "s-a")
    assert c.sweep_points("ns", "s") == [] and len(c.sweep_points("other", "s")) == 1
