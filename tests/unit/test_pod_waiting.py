"""How soon status says why a stage pod is not running (issue 27, item 6): a pod
waiting its turn for cpu, memory, a GPU or its claim says so in the first pass
after the scheduler reports it; a pod that fits no node is news (a Warning) once
its minute of grace is over, and the pass asks to look again at that moment
rather than waiting for an event that may not come (the scheduler rewrites
nothing while nothing changes: that wait was 94 to 125 s)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from mnist_operator.core.children import UNSCHEDULABLE_GRACE_SECONDS
from tests.unit.test_reconcile import (CLAIM_UNBOUND, EVERY_GPU_BUSY, NO_NODE_HAS_THE_PRODUCT,
                                       World, _stuck_pod)

#: kube-scheduler's words for a pod whose cpu request only a busy node could give
EVERY_CPU_BUSY = EVERY_GPU_BUSY.replace("nvidia.com/gpu", "cpu")


def scheduler_reports(w: World, message: str, seconds_ago: float = 0) -> None:
    """The train pod, PodScheduled False (Unschedulable) since ``seconds_ago``."""
    stamp = (w.now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    job = w.job("train")["metadata"]["name"]
    w.pods[:] = [_stuck_pod(job, {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "lastTransitionTime": stamp, "message": message}]})]


@pytest.mark.parametrize("message, reason", [
    (EVERY_CPU_BUSY, "WaitingForResources"),
    (EVERY_GPU_BUSY, "WaitingForGPU"),
    (CLAIM_UNBOUND, "WaitingForVolume"),
])
def test_a_queued_pod_says_so_in_the_first_pass_after_the_scheduler(message, reason):
    w = World()
    w.step()
    scheduler_reports(w, message)          # the scheduler's verdict of this very second
    d = w.step(1)
    rec = w.stage("train")
    assert (rec["state"], rec["reason"]) == ("Running", reason)
    assert rec["message"].startswith(f"Job {w.job('train')['metadata']['name']} waiting: 0/2 nodes")
    assert not d.events


def test_a_pod_that_fits_no_node_is_news_as_its_grace_ends_not_at_the_next_event():
    w = World()
    w.step()
    scheduler_reports(w, NO_NODE_HAS_THE_PRODUCT, seconds_ago=20)
    d = w.step()
    assert w.stage("train")["reason"] == "JobCreated" and not d.events
    assert d.requeue_after == UNSCHEDULABLE_GRACE_SECONDS - 20     # look again then
    d = w.step(d.requeue_after)                                    # the pass it asked for
    assert w.stage("train")["reason"] == "Unschedulable"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Unschedulable")]
    assert d.requeue_after is None or d.requeue_after > UNSCHEDULABLE_GRACE_SECONDS
