"""The Helm chart, rendered for the pinned Kubernetes and accepted by a real
kube-apiserver (server-side dry run: admission, CRD structural-schema and CEL
compilation, RBAC object validation), in both RBAC scopes."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CHART = Path(__file__).resolve().parents[2] / "charts" / "mnist-serving"


@pytest.mark.cluster
@pytest.mark.parametrize("scope", ["cluster", "namespace"])
def test_rendered_chart_passes_server_side_dry_run(control_plane, namespace, kubectl, scope):
    helm = control_plane.binaries["helm"]
    rendered = subprocess.run(
        [str(helm), "template", "demo", str(CHART), "-n", namespace, "--kube-version", "1.36.3",
         "--set", f"rbac.scope={scope}", "--set", "metrics.enabled=true"], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    out = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered.stdout)
    expected = ["serviceaccount/demo-mnist-serving", "service/demo-mnist-serving-metrics",
                "deployment.apps/demo-mnist-serving",
                "customresourcedefinition.apiextensions.k8s.io/mnistservings.mnist.serving.dev"]
    expected += (["clusterrole.rbac.authorization.k8s.io/demo-mnist-serving",
                  "clusterrolebinding.rbac.authorization.k8s.io/demo-mnist-serving"] if scope == "cluster" else
                 ["role.rbac.authorization.k8s.io/demo-mnist-serving",
                  "rolebinding.rbac.authorization.k8s.io/demo-mnist-serving",
                  "clusterrole.rbac.authorization.k8s.io/demo-mnist-serving-cluster"])
    for name in expected:
        assert f"{name} " in out and "(server dry run)" in out, out
    # A dry run persists nothing.
    assert kubectl.run("get", "deployment", "demo-mnist-serving", "-n", namespace).returncode != 0
