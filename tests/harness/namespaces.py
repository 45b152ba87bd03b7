"""A real cluster's rules for a test namespace, shared by the control-plane
and real-node tiers: Pod Security admission at `restricted` and a quota that
makes every container declare its compute."""
from __future__ import annotations

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
