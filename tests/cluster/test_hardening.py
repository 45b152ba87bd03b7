"""A real cluster's rules on the real API server: Pod Security admission at
`restricted`, a ResourceQuota on compute, and what the resource says when the
API server refuses one of its children."""
from __future__ import annotations

import json

from mnist_operator import builders
from .test_operator_e2e import wait_ready_at

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def restrict(kubectl, ns: str) -> None:
    kubectl("label", "namespace", ns, *(f"{k}={v}" for k, v in RESTRICTED.items()), "--overwrite")


def compute_quota(name: str = "compute") -> dict:
    # A quota on requests and limits makes the API server refuse any pod whose
    # containers leave cpu or memory unset.
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
            "spec": {"hard": {"requests.cpu": "64", "requests.memory": "256Gi",
                              "limits.cpu": "128", "limits.memory": "512Gi"}}}


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
