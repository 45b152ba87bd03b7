"""A real cluster's rules on the real API server: Pod Security admission at
`restricted`, a ResourceQuota on compute, and what the resource says when the
API server refuses one of its children."""
from __future__ import annotations

import json

import pytest

from mnist_operator.core import builders
from tests.harness.namespaces import compute_quota, restrict
from tests.harness.operator_process import wait_for
from .test_operator_e2e import wait_ready_at

pytestmark = pytest.mark.cluster

def test_the_pipeline_reaches_ready_under_restricted_pod_security_and_a_compute_quota(
        pipeline_ns, operator, kit, kubectl):
    ns = pipeline_ns
    restrict(kubectl, ns)
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(compute_quota()))
    # the namespace really refuses what the operator used to make: a pod with no securityContext
    bare = kubectl.run("run", "bare", "-n", ns, "--image=busybox", "--restart=Never",
                       "--overrides", json.dumps({"spec": {"containers": [{
                           "name": "bare", "image": "busybox",
                           "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}}))
    assert bare.returncode != 0 and "violates PodSecurity" in bare.stderr, bare.stderr

    cr = kit.apply_cr(ns, "hardened")
    st = wait_ready_at(kit, ns, "hardened", cr["metadata"]["generation"])
    assert all(rec["state"] in ("Succeeded", "Skipped") for rec in st["stages"].values()), st["stages"]
    # every stage ran in a pod the API server admitted under both rules
    pods = kit._selected("pods", ns, "hardened")
    steps = {p["metadata"]["labels"].get(builders.LABEL_STEP) for p in pods}
    assert {"train", "export", "engine", "repo", "client", "bench-grpc", "analyze"} <= steps, steps
    for p in pods:
        assert p["spec"]["automountServiceAccountToken"] is False
        assert p["spec"]["serviceAccountName"] == "hardened-runner"
        assert not any(v["name"].startswith("kube-api-access") for v in p["spec"]["volumes"])
    account = kubectl.json("get", "serviceaccount", "hardened-runner", "-n", ns)
    assert account["automountServiceAccountToken"] is False
    used = kubectl.json("get", "resourcequota", "compute", "-n", ns)["status"]["used"]
    assert set(used) >= {"requests.cpu", "limits.memory"}


# --------------------------------------------------------------------------- refusals
def refusal_of(kit, ns: str, name: str, kind: str) -> dict | None:
    entries = (kit.status(ns, name).get("refusals") or {})
    return next((e for e in entries.values() if e["kind"] == kind), None)


def warnings(kit, ns: str, name: str, reason: str) -> list[dict]:
    return [e for e in kit.events_for(ns, name) if e["type"] == "Warning" and e["reason"] == reason]


def deny_policy(kubectl, name: str, ns: str, resource: str, reason: str | None = None):
    """A ValidatingAdmissionPolicy (and its binding, for namespace ``ns``) that refuses
    every create of ``resource`` the operator makes there, with HTTP 422 (Invalid)
    unless ``reason`` says otherwise; returns its clean-up."""
    validation = {"expression": "false", "message": f"{resource} are not allowed here ({name})"}
    if reason:
        validation["reason"] = reason
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{
                           "apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE"],
                           "resources": [resource]}],
                           "objectSelector": {"matchLabels": {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}}},
                       "validations": [validation]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": ns}}}}}
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": [policy, binding]}))
    # a policy takes effect a moment after it is stored: wait until a dry run is refused
    labels = {builders.LABEL_MANAGED_BY: builders.MANAGED_BY}
    probe = {"persistentvolumeclaims": {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "probe", "namespace": ns, "labels": labels},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        "deployments": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": ns, "labels": labels},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}[resource]
    wait_for(f"policy {name} in force", lambda: kubectl.run(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(probe)).returncode != 0, 30)

    def lift():
        kubectl.run("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        kubectl.run("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
    return lift


def test_a_quota_refusal_is_in_status_backs_off_and_the_retry_annotation_resumes(
        pipeline_ns, operator, kit, kubectl):
    ns, name = pipeline_ns, "quota"
    kubectl("create", "quota", "no-jobs", "-n", ns, "--hard=count/jobs.batch=0")
    kit.apply_cr(ns, name)
    entry = wait_for("the train Job's refusal in status",
                     lambda: refusal_of(kit, ns, name, "Job"), 60)
    assert (entry["code"], entry["reason"]) == (403, "QuotaExceeded"), entry
    assert "exceeded quota: no-jobs" in entry["message"]
    st = kit.status(ns, name)
    assert st["stages"]["train"]["reason"] == "QuotaExceeded"
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CreateRefused")
    assert "exceeded quota" in ready["message"]
    # it tries again after 10 s, not on every pass, and says it once
    again = wait_for("a second try", lambda: (refusal_of(kit, ns, name, "Job") or {}).get("count", 0) >= 2, 40)
    assert again
    assert refusal_of(kit, ns, name, "Job")["count"] <= 3
    assert len(warnings(kit, ns, name, "QuotaExceeded")) == 1
    # the administrator lifts the quota; the user asks for a retry now
    kubectl("delete", "quota", "no-jobs", "-n", ns)
    cr = kit.get_cr(ns, name)
    kubectl("annotate", "mnist", name, "-n", ns, "mnist.serving.dev/retry=1")
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"])
    assert "refusals" not in st


def test_an_admission_policy_denial_of_triton_clears_by_itself_once_lifted(
        pipeline_ns, operator, kit, kubectl):
    ns, name = pipeline_ns, "denied"
    lift = deny_policy(kubectl, f"no-triton-{ns}", ns, "deployments", reason="Forbidden")
    try:
        cr = kit.apply_cr(ns, name)
        entry = wait_for("the Deployment's refusal", lambda: refusal_of(kit, ns, name, "Deployment"), 120)
        assert (entry["code"], entry["reason"]) == (403, "AdmissionDenied"), entry
        assert "deployments are not allowed here" in entry["message"]
        assert warnings(kit, ns, name, "AdmissionDenied")
    finally:
        lift()
    # no user action: the backoff ends and the next try succeeds
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"], timeout=150)
    assert "refusals" not in st


def test_a_volume_refused_as_invalid_is_the_resources_news_with_its_422(pipeline_ns, operator, kit, kubectl):
    # Validation closes every hole it knows of (storage.size, names, labels), so the
    # API server's 422 comes from a policy here, which is how an unforeseen one arrives.
    ns, name = pipeline_ns, "invalid"
    lift = deny_policy(kubectl, f"no-pvc-{ns}", ns, "persistentvolumeclaims")  # 422 by default
    try:
        cr = kit.apply_cr(ns, name)
        entry = wait_for("the volume's refusal",
                         lambda: refusal_of(kit, ns, name, "PersistentVolumeClaim"), 60)
        assert (entry["code"], entry["reason"]) == (422, "AdmissionDenied"), entry
        ready = next(c for c in kit.status(ns, name)["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "CreateRefused" and "persistentvolumeclaims are not allowed" in ready["message"]
    finally:
        lift()
    kubectl("annotate", "mnist", name, "-n", ns, "mnist.serving.dev/retry=1")
    wait_ready_at(kit, ns, name, cr["metadata"]["generation"])


def test_pods_refused_by_a_quota_with_no_room_at_all_fail_at_once_and_the_retry_resumes(
        pipeline_ns, operator, kit, kubectl):
    from mnist_operator.core import refusals

    ns, name = pipeline_ns, "podless"
    kubectl("create", "quota", "no-pods", "-n", ns, "--hard=pods=0")
    cr = kit.apply_cr(ns, name, {"retries": {"backoffSeconds": 2}})
    # a pod can never fit a quota of 0 pods: no waiting and no retries (issue 27)
    st = kit.wait_phase(ns, name, "Failed", 60)
    train = st["stages"]["train"]
    assert (train["reason"], train["attempt"]) == ("ExceedsQuota", 0), train
    assert "ResourceQuota no-pods" in train["message"] and "pods=1 (the quota allows 0)" \
        in train["message"], train
    assert warnings(kit, ns, name, "StageFailed")
    wait_for("the refused Job deleted", lambda: train["job"] not in
             [j["metadata"]["name"] for j in kit.jobs_for(ns, name)
              if not j["metadata"].get("deletionTimestamp")], 30)
    kubectl("delete", "quota", "no-pods", "-n", ns)
    kubectl("annotate", "mnist", name, "-n", ns, "mnist.serving.dev/retry=1")
    wait_for("the retry taken", lambda: kit.status(ns, name).get("phase") != "Failed", 30)
    st = wait_ready_at(kit, ns, name, cr["metadata"]["generation"])
    assert st["stages"]["train"]["attempt"] == 0
    # Pod Security's own refusal text, as this API server words it, is told apart too
    restrict(kubectl, ns)
    bare = kubectl.run("run", "bare", "-n", ns, "--image=busybox", "--restart=Never")
    assert refusals.classify(403, "Forbidden", bare.stderr) == "PodSecurity", bare.stderr
