"""Passes driven by the watches and the Decision's own clock, not by polling: the
operator runs here with its default resync (minutes), so what a test sees within
seconds came from an event or from ``requeue_after``."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from mnist_operator.core import builders

from tests.harness.operator_process import wait_for

pytestmark = pytest.mark.cluster

ATTEMPT = "mnist.serving.dev/attempt"


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_a_retry_starts_within_a_second_of_its_backoff_ending(operator, pipeline_ns, kit):
    ns, name = pipeline_ns, "fail-export-w"
    kit.apply_cr(ns, name, {"retries": {"limit": 1, "backoffSeconds": 5}})
    backing_off = wait_for("export backing off", lambda: (
        lambda rec: rec if rec.get("state") == "BackingOff" else None)(
            (kit.status(ns, name).get("stages") or {}).get("export") or {}), 60, interval=0.2)
    retry_at = _epoch(backing_off["retryTime"])
    retry = wait_for("export attempt 1", lambda: next(
        (j for j in kit.jobs_for(ns, name, "export") if j["metadata"]["labels"][ATTEMPT] == "1"),
        None), 30, interval=0.2)
    started = _epoch(retry["metadata"]["creationTimestamp"])
    # both times have second precision and retryTime is exact: a second apart at most
    assert 0 <= started - retry_at <= 1, (backing_off["retryTime"],
                                          retry["metadata"]["creationTimestamp"])


def test_a_resource_with_a_name_over_63_characters_gets_its_pod_events(operator, pipeline_ns,
                                                                       kit, kubectl):
    ns = pipeline_ns
    name = "hang-train-" + "a-name-long-enough-that-its-instance-label-is-hashed-" * 2
    name = name.rstrip("-")
    assert len(name) > 63 and builders.instance_label(name) != name
    kit.apply_cr(ns, name)
    pod = wait_for("the train pod running", lambda: next(
        (p for p in kit.pods_for(ns, name)
         if (p.get("status") or {}).get("phase") == "Running"), None), 60)
    wait_for("train Running in status", lambda: (
        (kit.status(ns, name).get("stages") or {}).get("train") or {}).get("state") == "Running", 30)
    # A pod-only change: no Job or resource event follows it, and the resync is minutes away.
    status = {"status": {"containerStatuses": [{
        "name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}
        for c in pod["spec"]["containers"]]}}
    changed = time.monotonic()
    kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status",
            "--type=merge", "-p", json.dumps(status))
    rec = wait_for("train shows the stuck pod", lambda: (
        lambda r: r if r.get("reason") == "ImagePullBackOff" else None)(
            (kit.status(ns, name).get("stages") or {}).get("train") or {}), 15, interval=0.2)
    assert time.monotonic() - changed < 5, rec
