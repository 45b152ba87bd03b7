"""Fixtures for the real-node tier (mark tests ``@pytest.mark.node``): one real
Kubernetes node on this machine (tests/harness/node/node.py) joined to a control plane
that pods reach, with the images of tests/harness/node/images.py imported.

session scope
  node_cluster   NodeCluster: .plane (ControlPlane), .node (Node), .images
                 (name -> Image), .kubectl (Kubectl), .timings
Nothing skips: a missing prerequisite fails every node test with the command that
provides it (scripts/build-k8s.sh, scripts/build-node.sh). The host is cleaned
before the node starts (a crashed run's leftovers too) and after the session.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from tests.harness.control_plane import ControlPlane, ControlPlaneError, Kubectl, MissingBinaries

from tests.harness.node.node import Node, NodeError, cleanup, node_bin_dir, start_cluster

_STATE: dict = {}


@dataclass
class NodeCluster:
    plane: ControlPlane
    node: Node
    images: dict
    kubectl: Kubectl
    timings: dict = field(default_factory=dict)


def _start() -> NodeCluster:
    from tests.harness.node.images import build_images
    t0 = time.monotonic()
    images = build_images(binaries_dir=node_bin_dir())
    built = time.monotonic() - t0
    plane, node = start_cluster(images=images)
    return NodeCluster(plane, node, images, Kubectl(plane),
                       {"images (built or reused)": built, **node.timings})


@pytest.fixture(scope="session")
def node_cluster():
    if "error" in _STATE:
        pytest.fail(_STATE["error"], pytrace=False)
    _STATE["attempted"] = True
    try:
        cluster = _start()
    except (NodeError, MissingBinaries, ControlPlaneError) as e:
        _STATE["error"] = str(e)
    if "error" in _STATE:
        pytest.fail(_STATE["error"], pytrace=False)
    yield cluster
    cluster.node.stop()
    cluster.plane.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "node_cluster" in getattr(item, "funcargs", {}):
        cluster = item.funcargs["node_cluster"]
        pods = cluster.kubectl.run("get", "pods", "-A", "-o", "wide").stdout
        report.sections.append(("node: pods", pods))
        report.sections.append(("node: component logs", cluster.node.logs_summary(30)))


def pytest_sessionfinish(session):
    # an interrupted session (Ctrl-C, SIGTERM) skips fixture teardown: still leave the host clean
    if _STATE.get("attempted"):
        cleanup()
