"""Every pod the operator makes meets a real cluster's rules: the restricted Pod
Security Standard, cpu and memory bounds on every container, no API token.
(The API server's own admission proves the first in tests/cluster/test_hardening.py.)"""
from __future__ import annotations

import pytest

from mnist_operator.core import builders as B
from mnist_operator.api import site_defaults
from mnist_operator.core.reconcile import reconcile
from mnist_operator.api.spec import RESOURCE_DEFAULTS, SpecError, merge_defaults, parse_spec
from test_builders import make_cr, objects, pod
from test_reconcile import T0

SPECS = {
    "gpu": {},
    "cpu": {"training": {"gpus": 0}, "tensorrt": {"enabled": False},
            "serving": {"cpuOnly": True, "models": ["onnx", "bls"]}},
}


def pod_templates(spec: dict) -> dict[str, dict]:
    return {k: pod(o) for k, o in objects(spec).items() if "template" in o.get("spec", {})}


def all_containers(p: dict) -> list[dict]:
    return p.get("initContainers", []) + p["containers"]


@pytest.mark.parametrize("flavour", SPECS)
def test_every_pod_meets_the_restricted_pod_security_standard(flavour):
    for key, p in pod_templates(SPECS[flavour]).items():
        ctx = p["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, key
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, key
        assert not any(k in p for k in ("hostNetwork", "hostPID", "hostIPC")), key
        assert all(set(v) & {"name", "persistentVolumeClaim", "emptyDir"} == set(v) - {"name"}
                   or "persistentVolumeClaim" in v or "emptyDir" in v for v in p["volumes"]), key
        for c in all_containers(p):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (key, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (key, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (key, c["name"])
            assert "privileged" not in sc and "runAsUser" not in sc, (key, c["name"])
            # a read-only image needs somewhere to write: /tmp, and HOME is it
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], (key, c["name"])
            assert {"name": "HOME", "value": "/tmp"} in c["env"], (key, c["name"])
            assert c["workingDir"] == "/tmp", (key, c["name"])   # tools write to the cwd


@pytest.mark.parametrize("flavour", SPECS)
def test_every_container_has_cpu_and_memory_requests_and_limits(flavour):
    for key, p in pod_templates(SPECS[flavour]).items():
        for c in all_containers(p):
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) >= {"cpu", "memory"}, (key, c["name"], bound)


def test_resources_come_from_the_spec_then_the_operator_then_the_built_in_table():
    defaults = site_defaults.from_env({"MNIST_SERVING_DEFAULT_RESOURCES": (
        '{"train": {"limits": {"memory": "16Gi"}}, "triton": {"requests": {"cpu": "2"}}}')})
    cr = make_cr({"resources": {"train": {"requests": {"cpu": "3"}}}})
    cr = {**cr, "spec": merge_defaults(cr["spec"], defaults)}
    got = {k: o for k, o in ((f"{o['kind']}/{o['metadata']['labels'].get(B.LABEL_STEP, '')}", o)
                             for o in B.desired_objects(cr))}
    train = pod(got["Job/train"])["containers"][0]["resources"]
    assert train["requests"]["cpu"] == "3"                  # the resource's own
    assert train["limits"]["memory"] == "16Gi"              # the operator's default
    assert train["requests"]["memory"] == RESOURCE_DEFAULTS["train"][0][1]   # built in
    assert train["requests"]["nvidia.com/gpu"] == train["limits"]["nvidia.com/gpu"] == "1"
    triton = pod(got["Deployment/"])["containers"][0]["resources"]
    assert triton["requests"]["cpu"] == "2"
    bench = pod(got["Job/bench-grpc"])["containers"][0]["resources"]
    assert bench["limits"]["cpu"] == RESOURCE_DEFAULTS["bench"][1][0]


@pytest.mark.parametrize("spec, error", [
    ({"storage": {"size": "0"}}, "spec.storage.size: must be > 0"),
    ({"storage": {"size": "-1Gi"}}, "spec.storage.size: must be > 0"),
    ({"resources": {"bench": {"limits": {"memory": "0Mi"}}}},
     "spec.resources.bench.limits.memory: must be > 0"),
    ({"resources": {"train": {"requests": {"cpu": "16"}}}},      # above the built-in limit
     "spec.resources.train.requests.cpu: must be <= limits.cpu"),
    ({"resources": {"triton": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}},
     "spec.resources.triton.requests.memory: must be <= limits.memory"),
])
def test_quantities_must_be_positive_and_requests_within_limits(spec, error):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert error in err.value.errors


def test_pods_run_as_the_runner_account_without_a_token():
    objs = objects()
    account = objs["ServiceAccount"]
    assert account["metadata"]["name"] == "demo-runner"
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    for key, p in pod_templates({}).items():
        assert p["serviceAccountName"] == "demo-runner", key
        assert p["automountServiceAccountToken"] is False, key
    own = objects({"scheduling": {"serviceAccountName": "team-runner"}})
    assert "ServiceAccount" not in own
    assert pod(own["Job/train"])["serviceAccountName"] == "team-runner"


def test_the_account_is_created_before_any_pod_owner_and_only_while_it_is_not_there():
    cr = make_cr()
    first = reconcile(cr, {"jobs": [], "pods": []}, T0)
    assert [o["kind"] for o in first.create] == ["PersistentVolumeClaim", "ServiceAccount", "Job"]
    jobs = [o for o in first.create if o["kind"] == "Job"]
    there = reconcile({**cr, "status": first.status},
                      {"jobs": jobs, "pods": [], "pvc": first.create[0],
                       "account": first.create[1]}, T0)
    assert there.create == []          # the account is observed: nothing to send
    gone = reconcile({**cr, "status": first.status},
                     {"jobs": jobs, "pods": [], "pvc": first.create[0]}, T0)
    assert [o["kind"] for o in gone.create] == ["ServiceAccount"]   # deleted: made again


def test_a_named_account_is_never_created():
    cr = make_cr(spec={"scheduling": {"serviceAccountName": "team-runner"}})
    first = reconcile(cr, {"jobs": [], "pods": []}, T0)
    assert [o["kind"] for o in first.create] == ["PersistentVolumeClaim", "Job"]


# --------------------------------------------------------------------------- names and metadata
def test_a_resource_named_with_a_leading_digit_gets_a_dns_1035_service_name():
    objs = objects(name="1st")
    service = objs["Service"]["metadata"]["name"]
    assert service == "mnist-1st-triton" == objs["Deployment"]["metadata"]["name"]
    assert B.endpoints(make_cr(name="1st")).host == "mnist-1st-triton.ml.svc"
    for o in B.desired_objects(make_cr(name="1st")) + B.desired_objects(make_cr(name="9" * 120)):
        assert B.metadata_problems(o) == [], o["metadata"]["name"]


def test_metadata_problems_are_what_the_api_server_refuses():
    svc = {"kind": "Service", "metadata": {"name": "1st-triton", "namespace": "ml"}}
    assert B.metadata_problems(svc) == [
        "Service 1st-triton: metadata.name: '1st-triton' is not a DNS-1035 label (at most 63 characters)"]
    job = {"kind": "Job", "metadata": {"name": "a.b", "labels": {"x/y/z": "v", "ok": "-bad"}}}
    problems = B.metadata_problems(job)
    assert any("metadata.name: 'a.b' is not a DNS-1123 label" in p for p in problems)
    assert any("metadata.labels['x/y/z']" in p for p in problems)
    assert any("metadata.labels['ok']" in p for p in problems)
    assert B.metadata_problems({"kind": "PersistentVolumeClaim", "metadata": {"name": "a.b"}}) == []


def test_render_refuses_metadata_the_api_server_would_refuse():
    from mnist_operator.tools.render import RenderError, render
    doc = ("apiVersion: mnist.serving.dev/v1alpha1\nkind: MnistServing\n"
           "metadata:\n  name: demo\n  namespace: Bad_NS\n  labels: {\"team/a/b\": x}\nspec: {}\n")
    with pytest.raises(RenderError) as err:
        render(doc)
    assert any("metadata.namespace: 'Bad_NS'" in e for e in err.value.errors)
    assert any("metadata.labels['team/a/b']" in e for e in err.value.errors)


@pytest.mark.parametrize("scheduling, error", [
    ({"nodeSelector": {"bad key": "x"}}, "spec.scheduling.nodeSelector: keys must be label keys"),
    ({"nodeSelector": {"pool": "a b"}}, "spec.scheduling.nodeSelector: keys must be label keys"),
    ({"tolerations": [{"key": "a", "operator": "Exists", "value": "v"}]},
     "spec.scheduling.tolerations: a toleration with operator Exists must have no value"),
])
def test_scheduling_fields_the_api_server_would_refuse_in_a_pod_are_refused_up_front(scheduling, error):
    with pytest.raises(SpecError) as err:
        parse_spec({"scheduling": scheduling})
    assert any(e.startswith(error) for e in err.value.errors), err.value.errors
