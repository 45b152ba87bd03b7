"""The closed loop with an SLO on a real node: model-analyzer's best config is confirmed
in a real pod (the confirm stage beside its own Triton sidecar, on the candidate
repository) before the Deployment rolls to it.

The resource is the local integration test's (tests/integration/test_confirm_candidates.py): its
served config waits 200 ms for a batch that never fills, so model-analyzer's configs
are far faster on any machine and its best is a real candidate. It shares the
session's node and the chart release with test_node_e2e.py (installed here only when
this file runs alone), in a namespace held to the restricted Pod Security Standard.
"""
from __future__ import annotations

import copy
import json
import time

import pytest

from mnist_operator.core import builders
from tests.harness.namespaces import restrict
from tests.harness.operator_process import MnistKit, status_summary, wait_for
from tests.integration.test_confirm_candidates import SLOW_SERVED
from tests.node.test_node_e2e import _epoch, condition
# the chart's release the earlier node modules installed, or installed here
from tests.node.test_node_sweep import release  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.node, pytest.mark.timeout(1500)]

NS, NAME = "node-tuned", "confirm"
READY_TIMEOUT = 1200


@pytest.fixture(scope="module")
def tuned(node_cluster, release):
    """The resource applied into a fresh restricted namespace and waited to Ready."""
    kubectl, kit = node_cluster.kubectl, MnistKit(node_cluster.kubectl)
    kubectl("create", "namespace", NS)
    restrict(kubectl, NS)
    wait_for("the default ServiceAccount", lambda: kubectl.run(
        "get", "serviceaccount", "default", "-n", NS).returncode == 0, 30)
    doc = copy.deepcopy(SLOW_SERVED)
    doc["metadata"] = {"name": NAME, "namespace": NS}
    doc["spec"]["storage"] = {"size": "1Gi"}
    t0 = time.monotonic()
    kubectl("apply", "-f", "-", input=json.dumps(doc))

    def ready():
        st = kit.status(NS, NAME)
        if st.get("phase") == "Failed":
            raise AssertionError(f"{NAME} Failed:\n{status_summary(st)}")
        return st if st.get("phase") == "Ready" else None
    try:
        status = wait_for(f"{NS}/{NAME} Ready", ready, READY_TIMEOUT, interval=2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{status_summary(kit.status(NS, NAME))}") from None
    print(f"\n{NS}/{NAME}: apply -> Ready {time.monotonic() - t0:.0f} s")
    return {"status": status, "kit": kit}


def test_the_candidate_is_confirmed_in_a_real_pod_then_served(tuned, node_cluster):
    st, kit, images = tuned["status"], tuned["kit"], node_cluster.images
    stages = st["stages"]
    loop_steps = ("repo-candidates", "confirm-candidates", "repo-tuned", "serve-tuned",
                  "bench-tuned-grpc")
    assert all(stages[s]["state"] == "Succeeded" for s in loop_steps), status_summary(st)
    # confirmed before anything of the candidate was served
    assert _epoch(stages["confirm-candidates"]["completionTime"]) <= \
        _epoch(stages["repo-tuned"]["startTime"])
    assert condition(st, "CandidatesConfirmed")["status"] == "True"
    checked = st["stages"]["confirm-candidates"]["result"]
    entry = checked["models"]["mnist_onnx"]
    assert checked["confirmed"] == ["mnist_onnx"] and entry["verdict"] == "meets", entry
    loop = st["benchmark"]["closedLoop"]
    assert loop["confirmation"]["mnist_onnx"].startswith(f"meets at c={entry['c']}: ")
    assert list(loop["applied"]) == ["mnist_onnx"] and loop["state"] == "Measured"
    # the pod: the confirm stage in the sdk image, exit 0, beside a Triton sidecar of the
    # triton image serving the candidate repository, both under the restricted standard
    (pod,) = [p for p in kit.pods_for(NS, NAME)
              if p["metadata"]["labels"].get(builders.LABEL_STEP) == "confirm-candidates"]
    main = pod["status"]["containerStatuses"][0]
    assert main["state"]["terminated"]["exitCode"] == 0 and main["image"] == images["sdk"].ref
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "triton")
    assert sidecar["restartPolicy"] == "Always" and sidecar["image"] == images["triton"].ref
    assert "--model-repository=/work/model_repo_candidates" in sidecar["command"]
    # what was confirmed is what the tuned Deployment then served
    served = st["stages"]["bench-tuned-grpc"]["result"]["environment"]["configs"]
    assert checked["environment"]["configs"]["mnist_onnx"] == served["mnist_onnx"]
    (dep,) = kit.kubectl.json("get", "deployments", "-n", NS, "-l",
                              f"app.kubernetes.io/instance={NAME}")["items"]
    command = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--model-repository=/work/model_repo_tuned" in command


def test_deleting_the_resource_leaves_nothing(tuned, node_cluster):
    kubectl, kit = node_cluster.kubectl, tuned["kit"]
    kit.delete_cr(NS, NAME)
    wait_for("every child gone", lambda: not any(kit.children(NS, NAME).values()), 180,
             interval=1)
    kubectl("delete", "namespace", NS, "--wait=false")
