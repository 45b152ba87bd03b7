"""The chart's NOTES (what `helm install` prints) work offline on a cluster with
no GPU: they carry the CPU sample itself, as a command to paste, and point to
`kubectl explain`, never to a page on the internet. Helm prints NOTES only for an
install, which asks a cluster for its version: the control plane answers."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mnist-serving"


@pytest.fixture(autouse=True)
def crds_installed_without_helm(kubectl):
    """The session's control plane holds the CRDs (applied as `make deploy` does, not by
    Helm), as it does once any test before this one ran: the same state alone or in the
    suite."""
    kubectl("apply", "-k", str(ROOT / "manifests" / "crd"))


def notes(control_plane, kubeconfig, namespace: str, *values: str) -> str:
    # --take-ownership: the CRDs exist without Helm's labels; a dry run adopts nothing,
    # but Helm checks ownership before it renders the NOTES
    out = subprocess.run([str(control_plane.binaries["helm"]), "install", "demo", str(CHART),
                          "-n", namespace, "--dry-run=client", "--take-ownership", *values],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    assert out.returncode == 0, out.stderr
    return out.stdout.split("NOTES:\n", 1)[1]


def test_notes_carry_the_cpu_sample_and_kubectl_explain_and_no_link(control_plane, kubeconfig,
                                                                     namespace):
    text = notes(control_plane, kubeconfig, namespace)
    assert "http://" not in text and "https://" not in text
    assert "kubectl explain mnistserving.spec" in text
    # the here-document pastes as it is: the sample, as shipped in manifests/samples
    heredoc = text.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    sample = (ROOT / "manifests" / "samples" / "mnistserving-cpu.yaml").read_text()
    assert heredoc == sample.strip()
    assert yaml.safe_load(heredoc)["spec"]["serving"]["cpuOnly"] is True


def test_namespace_scope_names_the_watched_namespaces(control_plane, kubeconfig, namespace):
    text = notes(control_plane, kubeconfig, namespace, "--set", "rbac.scope=namespace",
                 "--set", "rbac.namespaces={team-a}")
    assert "watches MnistServing resources in: team-a" in text
