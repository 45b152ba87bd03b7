"""The Helm chart: lint, render for Kubernetes 1.36 (default values and both
RBAC scopes), rendered objects checked against the Kubernetes 1.36 JSON schemas,
bad values rejected naming the key, CRD and RBAC rules identical to the
operator's Python source (the same one manifests/ is generated from)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from .tools import CHART, ROOT, require_tool

sys.path.insert(0, str(ROOT / "operator"))
from mnist_operator.tools import crd as source  # noqa: E402  the one source of truth

KUBE_VERSION = "1.36.0"
RELEASE, NAMESPACE = "demo", "mnist-system"
#: the leader Lease, its Role and RoleBinding: <fullname>-leader
LEADER = "demo-mnist-serving-leader"


@pytest.fixture(scope="module")
def helm():
    return require_tool("helm")


def render(helm, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(helm), "template", RELEASE, str(CHART), "-n", NAMESPACE,
                          "--kube-version", KUBE_VERSION, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def objects(helm, *args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(helm, *args).stdout) if d]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objs: list[dict]) -> list[tuple[str, str | None]]:
    return sorted((o["kind"], o["metadata"].get("namespace")) for o in objs)


# ------------------------------------------------------------------ lint and schemas

def test_helm_lint_strict_passes(helm):
    out = subprocess.run([str(helm), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", [
    [],
    ["--set", "rbac.scope=namespace"],
    ["--set", "rbac.scope=namespace", "--set", "rbac.namespaces={team-a,team-b}"],
    ["--set", "crds.install=false", "--set", "serviceAccount.name=op"],
    ["--set", "metrics.enabled=true", "--set", "operator.logLevel=verbose"],
    ["--set", "replicas=2"],
], ids=["defaults", "namespace-scope", "namespace-scope-two", "minimal", "metrics", "standby"])
def test_rendered_objects_are_valid_kubernetes_1_36(helm, values):
    objs = objects(helm, *values)
    assert objs
    for obj in objs:  # strict: an unknown field anywhere fails too
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


# ------------------------------------------------------------------ one source of truth

def test_generated_chart_files_match_the_operator_source():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-chart.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_rendered_crds_are_the_generated_crds_plus_helm_metadata(helm):
    crds = [o for o in objects(helm) if o["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == [
        "mnistservings.mnist.serving.dev", "mnistservingsweeps.mnist.serving.dev"]
    for crd, expected in zip(crds, (source.crd(), source.sweep_crd())):
        assert crd["spec"] == expected["spec"]  # numbers, patterns, CEL survive fromYaml/toYaml
        assert crd["metadata"]["name"] == expected["metadata"]["name"]
        assert expected["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crd_keep_and_install_switches(helm):
    not_kept = [o for o in objects(helm, "--set", "crds.keep=false")
                if o["kind"] == "CustomResourceDefinition"]
    assert len(not_kept) == 2
    assert not any("helm.sh/resource-policy" in c["metadata"].get("annotations", {}) for c in not_kept)
    assert not [o for o in objects(helm, "--set", "crds.install=false") if o["kind"] == "CustomResourceDefinition"]


def test_cluster_scope_grants_every_operator_rule_cluster_wide(helm):
    objs = objects(helm)
    role = one(objs, "ClusterRole")
    assert role["rules"] == source.NAMESPACED_RULES + source.CLUSTER_ONLY_RULES
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "demo-mnist-serving", "namespace": NAMESPACE}]
    # the one Role: the leader Lease's, in the release namespace
    assert [(o["kind"], o["metadata"]["name"], o["metadata"]["namespace"]) for o in objs
            if o["kind"] in ("Role", "RoleBinding")] == [("Role", LEADER, NAMESPACE),
                                                         ("RoleBinding", LEADER, NAMESPACE)]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace")]


def test_namespace_scope_grants_roles_only_in_watched_namespaces(helm):
    objs = objects(helm, "--set", "rbac.scope=namespace", "--set", "rbac.namespaces={team-a,team-b}")
    roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] != LEADER]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == source.NAMESPACED_RULES for r in roles)
    bindings = [o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["name"] != LEADER]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["subjects"][0]["namespace"] == NAMESPACE for b in bindings)
    # Only the cluster-level rules (CRD watch) stay cluster-wide.
    assert one(objs, "ClusterRole")["rules"] == source.CLUSTER_ONLY_RULES
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in container["args"] if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MNIST_SERVING_WATCH_NAMESPACES"] == "team-a,team-b"


def test_namespace_scope_defaults_to_the_release_namespace(helm):
    objs = objects(helm, "--set", "rbac.scope=namespace")
    assert [r["metadata"]["namespace"] for r in objs
            if r["kind"] == "Role" and r["metadata"]["name"] != LEADER] == [NAMESPACE]


@pytest.mark.parametrize("values", [[], ["--set", "rbac.scope=namespace", "--set", "rbac.namespaces={a,b}"]],
                         ids=["cluster", "namespace"])
def test_the_leader_lease_is_granted_in_the_release_namespace_only(helm, values):
    """get/create/update on Leases, by a Role of its own in the release namespace, in both
    scopes: never in the watched namespaces, never cluster-wide."""
    objs = objects(helm, *values)
    role = one(objs, "Role", LEADER)
    assert role["metadata"]["namespace"] == NAMESPACE and role["rules"] == source.LEADER_RULES
    assert source.LEADER_RULES == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                    "verbs": ["get", "create", "update"]}]
    binding = one(objs, "RoleBinding", LEADER)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LEADER}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "demo-mnist-serving",
                                    "namespace": NAMESPACE}]
    leases = [r for o in objs if o["kind"] in ("Role", "ClusterRole") and o["metadata"]["name"] != LEADER
              for r in o["rules"] if "leases" in r["resources"]]
    assert not leases


# ------------------------------------------------------------------ the operator Deployment

def test_operator_deployment_shape(helm):
    objs = objects(helm, "--set", "metrics.enabled=true")
    dep = one(objs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]  # it would block a drain
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/mnist-serving/operator:0.1.0"  # tag defaults to appVersion
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "readinessProbe" not in c
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"] and "--metrics-port=8081" in c["args"]
    assert f"--leader-lease={LEADER}" in c["args"]
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    svc = one(objs, "Service")
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


def test_two_replicas_a_leader_and_a_standby_with_a_disruption_budget(helm):
    objs = objects(helm, "--set", "replicas=2")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": dep["spec"]["selector"]}
    assert pdb["metadata"]["namespace"] == NAMESPACE


def test_stage_defaults_reach_the_operator_as_env(helm):
    dep = one(objects(helm, "--set", "stageDefaults.images.sdk=registry.local/sdk:1",
                      "--set", "stageDefaults.gpus.serving=2",
                      "--set", "stageDefaults.nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-H100",
                      "--set", "image.tag=dev"), "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MNIST_SERVING_DEFAULT_IMAGE_SDK"] == "registry.local/sdk:1"
    assert env["MNIST_SERVING_DEFAULT_IMAGE_PYTORCH"] == "nvcr.io/nvidia/pytorch:26.04-py3"
    assert env["MNIST_SERVING_DEFAULT_IMAGE_TRITON"] == "nvcr.io/nvidia/tritonserver:26.04-py3"
    assert env["MNIST_SERVING_DEFAULT_IMAGE_STAGES"] == "ghcr.io/mnist-serving/operator:dev"
    assert env["MNIST_SERVING_DEFAULT_GPUS_SERVING"] == "2"
    assert json.loads(env["MNIST_SERVING_DEFAULT_NODE_SELECTOR"]) == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert json.loads(env["MNIST_SERVING_DEFAULT_TOLERATIONS"]) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _operator_env(helm, *values: str) -> dict[str, str]:
    container = one(objects(helm, *values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_stage_resources_reach_the_operator_as_one_partial_section(helm):
    from mnist_operator.api import site_defaults

    assert "resources" not in site_defaults.from_env(_operator_env(helm))   # {}: built-ins only
    env = _operator_env(helm, "--set", "stageDefaults.resources.train.limits.memory=16Gi",
                        "--set-string", "stageDefaults.resources.triton.requests.cpu=2")
    assert site_defaults.from_env(env)["resources"] == {
        "train": {"limits": {"memory": "16Gi"}}, "triton": {"requests": {"cpu": "2"}}}


def test_rendered_defaults_parse_with_the_operator_and_reach_a_resource(helm):
    """The env the chart renders goes through the operator's own reader (site_defaults)."""
    from mnist_operator.api import site_defaults
    from mnist_operator.api.spec import merge_defaults, parse_spec

    env = _operator_env(helm, "--set", "stageDefaults.images.sdk=registry.local/sdk:1",
                        "--set", "stageDefaults.images.pullPolicy=Always",
                        "--set", "stageDefaults.gpus.training=0", "--set", "stageDefaults.gpus.engine=2",
                        "--set", "stageDefaults.gpus.serving=2",
                        "--set", "stageDefaults.nodeSelector.pool=gpu", "--set", "image.tag=dev")
    defaults = site_defaults.from_env(env)
    assert defaults == {
        "images": {"pytorch": "nvcr.io/nvidia/pytorch:26.04-py3",
                   "triton": "nvcr.io/nvidia/tritonserver:26.04-py3",
                   "sdk": "registry.local/sdk:1", "stages": "ghcr.io/mnist-serving/operator:dev",
                   "pullPolicy": "Always"},
        "training": {"gpus": 0}, "tensorrt": {"gpus": 2}, "serving": {"gpus": 2},
        "scheduling": {"nodeSelector": {"pool": "gpu"},
                       "tolerations": [{"effect": "NoSchedule", "key": "nvidia.com/gpu",
                                        "operator": "Exists"}]}}
    spec = parse_spec(merge_defaults({"serving": {"gpus": 1}, "scheduling": {"tolerations": []}}, defaults))
    assert spec.serving.gpus == 1 and spec.scheduling.tolerations == []   # the resource wins
    assert spec.tensorrt.gpus == 2 and spec.images.stages == "ghcr.io/mnist-serving/operator:dev"


def test_empty_selector_and_tolerations_render_as_empty_defaults(helm, tmp_path):
    from mnist_operator.api import site_defaults

    values = tmp_path / "values.yaml"
    values.write_text("stageDefaults:\n  nodeSelector: {}\n  tolerations: []\n")
    scheduling = site_defaults.from_env(_operator_env(helm, "-f", str(values)))["scheduling"]
    assert scheduling == {"nodeSelector": {}, "tolerations": []}


@pytest.mark.parametrize("values", [[], ["--set", "rbac.scope=namespace", "--set", "rbac.namespaces={a,b}"],
                                    ["--set", "metrics.enabled=true"]], ids=["cluster", "namespace", "metrics"])
def test_operator_reads_every_variable_the_chart_sets(helm, values):
    """No promise the operator does not keep: each MNIST_SERVING_* variable is read,
    and the watched namespaces agree with the --namespace flags."""
    from mnist_operator.cluster import main as operator_main
    from mnist_operator.api import site_defaults

    env = _operator_env(helm, *values)
    ours = {name for name in env if name.startswith("MNIST_SERVING_")}
    assert ours <= site_defaults.READ_VARS, ours - site_defaults.READ_VARS
    assert set(site_defaults.DEFAULT_FIELDS) <= ours
    container = one(objects(helm, *values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    flags = operator_main.parser().parse_args(container["args"])
    from_env_only = operator_main.parser().parse_args([])
    assert (operator_main.namespaces_to_watch(flags, env) == operator_main.namespaces_to_watch(from_env_only, env)
            == (["a", "b"] if "rbac.scope=namespace" in values else []))


def test_default_ngc_images_are_one_release():
    images = yaml.safe_load((CHART / "values.yaml").read_text())["stageDefaults"]["images"]
    tags = {name: images[name].rsplit(":", 1)[1] for name in ("pytorch", "triton", "sdk")}
    releases = {re.match(r"(\d\d\.\d\d)-py3", t).group(1) for t in tags.values()}
    # and the release the operator's built-in defaults pin (kustomize, mnist-serving run)
    from mnist_operator.api.spec import Images
    built_in = {re.search(r":(\d\d\.\d\d)-py3", getattr(Images(), n)).group(1)
                for n in ("pytorch", "triton", "sdk")}
    assert len(releases) == 1 and releases == built_in, (tags, built_in)


def test_service_monitor_is_optional(helm):
    assert not [o for o in objects(helm) if o["kind"] == "ServiceMonitor"]
    sm = one(objects(helm, "--set", "metrics.serviceMonitor.enabled=true",
                     "--set", "metrics.serviceMonitor.labels.release=prom"), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "prom"


@pytest.mark.parametrize("port", [8081, 9100])
def test_service_monitor_service_and_container_agree_on_the_metrics_port(helm, port):
    """ServiceMonitor endpoint -> Service port (by name) -> targetPort -> the container
    port (by name) -> the port the operator serves /metrics on (its own flag parser)."""
    from mnist_operator.cluster import main as operator_main

    objs = objects(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", f"metrics.port={port}")
    sm, svc, dep = one(objs, "ServiceMonitor"), one(objs, "Service"), one(objs, "Deployment")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    (svc_port,) = [p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert svc_port["port"] == port
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    (c_port,) = [p for p in c["ports"] if p["name"] == svc_port["targetPort"]]
    assert c_port["containerPort"] == port
    assert operator_main.parser().parse_args(c["args"]).metrics_port == port


def test_kustomize_manager_serves_metrics_on_its_metrics_port():
    from mnist_operator.cluster import main as operator_main

    dep = yaml.safe_load((ROOT / "manifests" / "manager" / "manager.yaml").read_text())
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert operator_main.parser().parse_args(c["args"]).metrics_port == ports["metrics"] == 8081


def test_metrics_off_serves_nothing(helm):
    objs = objects(helm, "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
    assert not [o for o in objs if o["kind"] in ("ServiceMonitor", "Service")]
    (c,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in c["ports"]] == ["health"]
    from mnist_operator.cluster import main as operator_main
    assert operator_main.parser().parse_args(c["args"]).metrics_port == 0


@pytest.mark.parametrize("values", [[], ["--set", "rbac.scope=namespace", "--set", "rbac.namespaces={a,b}"],
                                    ["--set", "operator.logLevel=verbose"]], ids=["cluster", "namespace", "verbose"])
def test_operator_accepts_the_rendered_arguments(helm, values):
    """The chart's args parse with the operator's own argument parser (the image's ENTRYPOINT)."""
    from mnist_operator.cluster import main as operator_main

    container = one(objects(helm, *values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = operator_main.parser().parse_args(container["args"])
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics_port == 8081
    assert args.all_namespaces == ("rbac.scope=namespace" not in values)
    assert args.namespace == (["a", "b"] if "rbac.scope=namespace" in values else [])
    assert args.verbose == ("operator.logLevel=verbose" in values)
    assert args.leader_lease == LEADER and args.leader_namespace is None  # POD_NAMESPACE says


# ------------------------------------------------------------------ bad values

@pytest.mark.parametrize("values, key", [
    ("rbac:\n  scope: global\n", "/rbac/scope"),
    ("operator:\n  logLevel: debug\n", "/operator/logLevel"),
    ("image:\n  tag: 5\n", "/image/tag"),
    ("stageDefaults:\n  gpus:\n    serving: two\n", "/stageDefaults/gpus/serving"),
    ("metrics:\n  port: 70000\n", "/metrics/port"),
    ("replica: 2\n", "replica"),
    ("replicas: 0\n", "/replicas"),
    ("stageDefaults:\n  images:\n    tritn: x\n", "tritn"),
    ("stageDefaults:\n  resources:\n    trian:\n      limits: {memory: 1Gi}\n", "trian"),
    ("stageDefaults:\n  resources:\n    train:\n      limits: {memory: lots}\n",
     "/stageDefaults/resources/train/limits/memory"),
], ids=["bad-enum", "bad-log-level", "wrong-type", "string-for-int", "out-of-range", "unknown-key", "no-replica",
        "typo-in-nested-key", "unknown-container", "not-a-quantity"])
def test_bad_values_fail_naming_the_key(helm, tmp_path, values, key):
    bad = tmp_path / "values.yaml"
    bad.write_text(values)
    out = render(helm, "-f", str(bad), check=False)
    assert out.returncode != 0
    assert "don't meet the specifications of the schema" in out.stderr
    assert key in out.stderr, out.stderr


def test_every_value_is_in_the_schema_and_documented():
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()

    def walk(node: dict, path: str):
        assert node.get("additionalProperties") is False, f"schema object {path or '<root>'} is not strict"
        for name, sub in node["properties"].items():
            yield f"{path}.{name}".lstrip(".")
            if sub.get("type") == "object" and "properties" in sub:
                yield from walk(sub, f"{path}.{name}")

    declared = set(walk(schema, ""))
    defaults = yaml.safe_load("\n".join(lines))

    def keys(node, path=""):
        for name, sub in node.items():
            full = f"{path}.{name}".lstrip(".")
            yield full
            if isinstance(sub, dict) and full in declared and "properties" in _at(schema, full):
                yield from keys(sub, full)

    assert set(keys(defaults)) == declared
    # Every declared key has a comment right above it, unless it is a section
    # whose children carry theirs.
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z]+):", line)
        if not m:
            continue
        indent = len(m.group(1))
        stack = [(n, k) for n, k in stack if n < indent] + [(indent, m.group(2))]
        path = ".".join(k for _, k in stack)
        if path in declared and not lines[i - 1].lstrip().startswith("#") and not _is_section(lines, i):
            pytest.fail(f"values.yaml line {i + 1}: {path} has no comment above it")


def _at(schema: dict, dotted: str) -> dict:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def _is_section(lines: list[str], i: int) -> bool:
    """A key whose value is a nested block (documented by its children)."""
    line = lines[i]
    if not line.rstrip().endswith(":"):
        return False
    indent = len(line) - len(line.lstrip())
    nxt = next((l for l in lines[i + 1:] if l.strip()), "")
    return len(nxt) - len(nxt.lstrip()) > indent and not nxt.lstrip().startswith("- ")
