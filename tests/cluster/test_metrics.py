"""The operator's Prometheus metrics, scraped from the real operator process
(``mnist-serving operator --metrics-port N``) after one resource walked to Ready
on the control plane (KWOK plays the stage pods)."""
from __future__ import annotations

import pytest

from mnist_operator.core import builders
from mnist_operator.core.status import PHASES

from tests.harness.operator_process import wait_for

pytestmark = pytest.mark.cluster


def test_metrics_count_passes_requests_phases_and_stage_outcomes(pipeline_ns, operator, kit):
    ns = pipeline_ns
    assert operator.metric("mnist_serving_resources") == 0      # served before any resource exists
    kit.apply_cr(ns, "metered")
    st = kit.wait_ready(ns, "metered", timeout=120)
    m = operator.metric

    # the API requests it made: one POST per Job it created, and status writes
    jobs = kit.jobs_for(ns, "metered")
    assert jobs and m("mnist_serving_api_requests_total", verb="POST", resource="jobs", code="201") == len(jobs)
    assert m("mnist_serving_api_requests_total", verb="POST", resource="deployments", code="201") == 1
    assert m("mnist_serving_api_requests_total", verb="POST", resource="persistentvolumeclaims", code="201") == 1
    assert m("mnist_serving_api_requests_total", verb="PATCH", resource="mnistservings/status", code="200") > 0
    assert m("mnist_serving_api_requests_total", verb="GET", resource="mnistservings", code="200") > 0

    # passes, timed
    ok = m("mnist_serving_reconcile_passes_total", result="ok")
    assert ok > 0 and m("mnist_serving_reconcile_duration_seconds_count") >= ok

    # the resource by phase
    wait_for("mnist_serving_resources{phase=Ready} 1", lambda: m("mnist_serving_resources", phase="Ready") == 1, 10)
    assert m("mnist_serving_resources") == 1
    assert {p for p in PHASES if m("mnist_serving_resources", phase=p) == 1} == {"Ready"}

    # one outcome per finished stage, with its duration
    job_steps = {j["metadata"]["labels"][builders.LABEL_STEP] for j in jobs}
    assert {"train", "analyze"} <= job_steps
    for step, rec in st["stages"].items():
        assert rec["state"] == "Succeeded", (step, rec)
        counted = m("mnist_serving_stage_outcomes_total", stage=step, state="Succeeded")
        assert counted == 1 if step in job_steps else counted >= 1, (step, counted)
    assert m("mnist_serving_stage_duration_seconds_count", stage="train", state="Succeeded") == 1
    assert m("mnist_serving_stage_duration_seconds_sum", stage="train", state="Succeeded") >= 0
    assert m("mnist_serving_stage_outcomes_total", state="Failed") == 0

    # deleted: no longer counted in any phase
    kit.delete_cr(ns, "metered")
    wait_for("mnist_serving_resources back to 0", lambda: m("mnist_serving_resources") == 0, 30)
