"""A point's own status write wakes its sweep.

The operator writes a point's status (its phase, its results) in the point's pass; the
watch event of that write holds nothing the cache lacks, so it asks for no pass. Before
the pass told the sweep itself, the sweep saw its last point turn Ready only at its
60 s resync whenever that event lost the race with the pass's own cache write (the
KWOK sweep benchmark's "last point Ready -> sweep Complete": 58 s, docs/BENCHMARKS.md).
"""
from __future__ import annotations

import asyncio

import pytest

from mnist_operator.cluster import handlers, kube, runtime
from mnist_operator.cluster.cache import ClusterCache
from mnist_operator.cluster.runtime import Operator


class Asked:
    def __init__(self):
        self.keys: list = []

    def request(self, key, delay=0.0):
        self.keys.append((key, delay))


def resource(name: str, *, sweep: str | None = None) -> dict:
    md = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1,
          "resourceVersion": "1"}
    if sweep:
        md["labels"] = {"mnist.serving.dev/sweep": sweep}
        md["ownerReferences"] = [{"apiVersion": "mnist.serving.dev/v1alpha1",
                                  "kind": "MnistServingSweep", "name": sweep,
                                  "uid": f"uid-{sweep}", "controller": True}]
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
            "metadata": md, "spec": {}}


@pytest.fixture
def operator(monkeypatch):
    op = Operator(cache=ClusterCache(), environ={})
    op.passes, op.sweep_passes = Asked(), Asked()
    monkeypatch.setattr(handlers, "OPERATOR", op)
    monkeypatch.setattr(op, "api", lambda: None)
    monkeypatch.setattr(op, "apply", lambda _decision, _cr: [])
    monkeypatch.setattr(kube, "observe_children",
                        lambda _a, owner, cache, _now: cache.children(owner))
    monkeypatch.setattr(runtime.kopf, "event", lambda *a, **k: None)
    writes = []

    def patch_status(_api, namespace, name, status, kind="MnistServing"):
        live = op.cache.resource(namespace, name)
        written = {**live, "metadata": {**live["metadata"], "resourceVersion": "2"},
                   "status": status}
        writes.append(written)
        return written
    monkeypatch.setattr(kube, "patch_status", patch_status)
    op.writes = writes
    return op


def test_a_points_status_write_asks_for_its_sweeps_pass(operator):
    operator.cache.put_resource(resource("s-abc123", sweep="s"))
    assert operator.one_pass("ns", "s-abc123") is not None
    assert len(operator.writes) == 1
    assert operator.sweep_passes.keys == [(("ns", "s"), 0.0)]
    # the watch event of that write is no news: neither pass is asked for again
    asyncio.run(handlers.resource_event(body=operator.writes[0], namespace="ns",
                                        name="s-abc123", type="MODIFIED"))
    assert operator.sweep_passes.keys == [(("ns", "s"), 0.0)] and operator.passes.keys == []


def test_a_resource_of_no_sweep_asks_for_no_sweep_pass(operator):
    operator.cache.put_resource(resource("alone"))
    operator.one_pass("ns", "alone")
    assert len(operator.writes) == 1 and operator.sweep_passes.keys == []


def test_a_pass_that_writes_nothing_asks_nothing(operator):
    operator.cache.put_resource(resource("s-abc123", sweep="s"))
    operator.one_pass("ns", "s-abc123")
    operator.sweep_passes.keys.clear()
    operator.one_pass("ns", "s-abc123")             # the same decision: no status write
    assert len(operator.writes) == 1 and operator.sweep_passes.keys == []
