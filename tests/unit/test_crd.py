"""The generated CRD and RBAC: no drift from manifests/, a structural schema that
accepts what parse_spec accepts, CEL rules the API server can place and afford."""
from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mnist_operator.tools import crd as C
from mnist_operator.api import spec as S

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.36.0"  # the schema set closest to the pinned control plane (v1.36.3)


def schema() -> dict:
    return C.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def cr(spec: dict, status: dict | None = None) -> dict:
    out = {"apiVersion": f"{S.GROUP}/{S.VERSION}", "kind": S.KIND,
           "metadata": {"name": "demo"}, "spec": spec}
    if status is not None:
        out["status"] = status
    return out


#: A string's own CEL rule: its pattern, refused in words (the API server runs it).
FIELD_RULE = re.compile(r"^(self == '' \|\| )?self\.matches\(r'(.*)'\)$")


def field_rules(node: dict) -> list[dict]:
    """The rules a string carries about itself (cross-field rules sit on objects)."""
    return node.get("x-kubernetes-validations", []) if node.get("type") == "string" else []


def as_jsonschema(node):
    """The schema with each string's matches() rule as the pattern it checks, so
    jsonschema (which runs no CEL) refuses what the API server's rule refuses."""
    if isinstance(node, list):
        return [as_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_jsonschema(v) for k, v in node.items()}
    for rule in field_rules(node):
        empty_ok, pattern = FIELD_RULE.match(rule["rule"]).groups()
        out["pattern"] = f"^$|{pattern}" if empty_ok else pattern
    return out


def is_valid(obj: dict) -> bool:
    return jsonschema.Draft7Validator(as_jsonschema(schema())).is_valid(obj)


# --------------------------------------------------------------------------- drift
@pytest.mark.parametrize("rel", sorted(C.generated_files()))
def test_checked_in_manifests_match_the_generator(rel):
    path = MANIFESTS / rel
    assert path.is_file(), f"{path} is missing: run `make manifests`"
    assert path.read_text() == C.generated_files()[rel], (
        f"{path.relative_to(ROOT)} is out of date with operator/mnist_operator: run `make manifests`")


def test_crd_command_prints_the_crd():
    out = subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "crd"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert yaml.safe_load(out) == C.crd()
    rbac = subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "crd", "--rbac", "--namespaced"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert yaml.safe_load(rbac)["kind"] == "Role"


# --------------------------------------------------------------------------- the CRD object
def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(C.crd(), K8S_VERSION, strict=True)


def test_names_status_subresource_and_columns():
    c = C.crd()
    names = c["spec"]["names"]
    assert c["metadata"]["name"] == "mnistservings.mnist.serving.dev"
    assert names["kind"] == "MnistServing" and names["shortNames"] == ["mnist"]
    assert "mnist-serving" in names["categories"]
    v = c["spec"]["versions"][0]
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}
    cols = {col["name"]: col["jsonPath"] for col in v["additionalPrinterColumns"]}
    assert cols == {"Phase": ".status.phase", "Accuracy": ".status.model.accuracy",
                    "Throughput": ".status.benchmark.throughput",
                    "Ready": '.status.conditions[?(@.type=="Ready")].status',
                    "Age": ".metadata.creationTimestamp"}


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    # Structural schema: every node has a type (or keeps unknown fields), and an
    # object has properties or additionalProperties, never both.
    for path, node in _walk(schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert path.startswith(".spec"), f"{path}: defaults belong to spec"


def test_every_spec_field_is_in_the_schema_with_its_default():
    def check(cls, node, path):
        hints = __import__("typing").get_type_hints(cls)
        for fl in dataclasses.fields(cls):
            key = S.camel(fl.name)
            prop = node["properties"].get(key)
            assert prop is not None, f"{path}.{key} missing from the CRD"
            assert prop["description"] == fl.metadata["description"]
            tp = hints[fl.name]
            if dataclasses.is_dataclass(tp):
                check(tp, prop, f"{path}.{key}")
    check(S.MnistServingSpec, schema()["properties"]["spec"], "spec")
    # The spec default is exactly what parse_spec fills in, minus the optional fields
    # and the operator-wide ones.
    default = schema()["properties"]["spec"]["default"]
    full = S.parse_spec({}).to_dict()
    assert default["training"] == {k: v for k, v in full["training"].items() if k != "gpus"}
    assert "size" not in default["storage"] and "existingClaim" not in default["storage"]
    assert S.parse_spec(default).to_dict() == full


def _defaults_reaching(path: tuple[str, ...]):
    """Every default in the schema that could fill ``path`` (its own, or one of an
    enclosing section's, or the spec's), as (where, value)."""
    node = schema()["properties"]["spec"]
    for depth in range(len(path) + 1):
        if "default" in node:
            value = node["default"]
            for key in path[depth:]:
                value = value.get(key) if isinstance(value, dict) else None
            yield ".".join(("spec",) + path[:depth]), value
        if depth < len(path):
            node = node["properties"][path[depth]]


@pytest.mark.parametrize("path", S.operator_default_paths(), ids=".".join)
def test_operator_wide_fields_have_no_default_in_the_crd(path):
    # The API server must leave these out, so the operator can tell "unset" (its own
    # default applies) from "set" (the resource wins).
    for where, value in _defaults_reaching(path):
        assert value is None, f"the default at {where} fills spec.{'.'.join(path)} with {value!r}"
    prop = _at_path(path)
    assert "default" not in prop
    assert "operator's default" in prop["description"]


def _at_path(path):
    node = schema()["properties"]["spec"]
    for key in path:
        node = node["properties"][key]
    return node


def test_the_operator_defaults_fields_really_are_left_out_of_a_defaulted_resource():
    # What the API server stores for an empty spec: the spec default, then each
    # section's default (a default is not defaulted again inside, see crd.section_default).
    stored = schema()["properties"]["spec"]["default"]
    for path in S.operator_default_paths():
        node = stored
        for key in path[:-1]:
            node = node.get(key, {})
        assert path[-1] not in node, path
    site = {"images": {"sdk": "registry.local/sdk:1"}, "serving": {"gpus": 2},
            "scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}
    spec = S.parse_spec(S.merge_defaults(stored, site))
    assert (spec.images.sdk, spec.serving.gpus, spec.scheduling.tolerations[0].key) == (
        "registry.local/sdk:1", 2, "gpu")


def test_cel_rules_guard_operator_wide_fields_with_has():
    # A CEL rule reading an absent field fails ("no such key"): every rule that reads
    # an operator-wide field must check has() first, in the same rule.
    guarded = 0
    for rule in S.CROSS_FIELD_RULES:
        at = tuple(p for p in rule.at.split(".") if p)
        for ref in re.findall(r"(?<!has\()self((?:\.[A-Za-z]+)+)", rule.cel):
            full = at + tuple(ref.lstrip(".").split("."))
            if full in S.operator_default_paths():
                assert f"!has(self{ref})" in rule.cel, rule.cel
                guarded += 1
    assert guarded == 2  # serving.gpus in the cpuOnly rule, scheduling.nodeSelector in its own


def test_single_field_constraints_come_from_the_spec_metadata():
    spec = schema()["properties"]["spec"]["properties"]
    epochs = spec["training"]["properties"]["epochs"]
    assert (epochs["minimum"], epochs["maximum"], epochs["default"]) == (1, 1000, 2)
    models = spec["serving"]["properties"]["models"]
    assert models["items"]["enum"] == ["onnx", "tensorrt", "pytorch", "bls"]
    assert models["x-kubernetes-list-type"] == "set" and models["maxItems"] == 4
    assert spec["storage"]["properties"]["accessMode"]["enum"] == ["ReadWriteOnce", "ReadWriteMany"]
    assert spec["scheduling"]["properties"]["nodeSelector"]["maxProperties"] == 32
    toleration = spec["scheduling"]["properties"]["tolerations"]["items"]
    assert toleration["properties"]["operator"]["enum"] == ["Equal", "Exists"]
    # a pattern is a CEL rule whose message says in words what is expected
    pytorch = spec["images"]["properties"]["pytorch"]
    assert "pattern" not in pytorch
    assert field_rules(pytorch) == [{"rule": f"self == '' || self.matches(r'{S.IMAGE_PATTERN}')",
                                     "message": f"must be {S.IMAGE_WORDS}"}]
    tolerance = spec["serving"]["properties"]["accuracyTolerance"]
    assert field_rules(tolerance) == [{
        "rule": f"self.matches(r'{S.DECIMAL_PATTERN}')",
        "message": 'must be a decimal number between 0 and 1 written as a string, '
                   'for example "0.02"'}]


def test_every_pattern_is_a_rule_with_words_and_an_example():
    rules = [(path, r) for path, node in _walk(schema()["properties"]["spec"], "spec")
             for r in field_rules(node)]
    # 4 images, 3 decimals, storage.size, runId, serviceAccountName, 8 x requests and limits
    assert len(rules) == 4 + 3 + 1 + 1 + 1 + 8 * 2 * 2
    for path, rule in rules:
        assert FIELD_RULE.match(rule["rule"]), (path, rule)
        assert "for example \"" in rule["message"] and "^" not in rule["message"], (path, rule)


# --------------------------------------------------------------------------- CEL
def test_every_cross_field_rule_is_placed_with_a_field_path():
    placed = []
    for path, node in _walk(schema()["properties"]["spec"], "spec"):
        for v in node.get("x-kubernetes-validations", []) if node.get("type") == "object" else []:
            placed.append((path, v))
            # fieldPath must name a real property below the rule's object
            target = node
            for part in v["fieldPath"].lstrip(".").split("."):
                target = target["properties"][part]
            assert v["message"] and "\n" not in v["message"]
    assert len(placed) == len(S.CROSS_FIELD_RULES)
    assert {(p, v["rule"]) for p, v in placed} == {
        (".".join(x for x in ("spec", r.at) if x), r.cel) for r in S.CROSS_FIELD_RULES}


def test_cel_rules_only_read_bounded_strings_and_lists():
    # The API server rejects a CRD whose rules could exceed the cost budget; a
    # maxLength/maxItems on everything a rule reads keeps the estimate small.
    for path, node in _walk(schema()["properties"]["spec"], "spec"):
        for v in node.get("x-kubernetes-validations", []):
            for ref in re.findall(r"self((?:\.[A-Za-z]+)+)", v["rule"]):
                target = node
                for part in ref.lstrip(".").split("."):
                    if part not in target.get("properties", {}):
                        break  # a method such as .all() or .matches()
                    target = target["properties"][part]
                if target["type"] == "string":
                    assert "maxLength" in target, f"{path}{ref} is unbounded"
                if target["type"] == "array":
                    assert "maxItems" in target, f"{path}{ref} is unbounded"
                    if target["items"]["type"] == "string":
                        assert "maxLength" in target["items"], f"{path}{ref}[] is unbounded"


def test_cel_regexes_are_raw_strings():
    # CEL rejects '\.' in a quoted string; a raw string passes the regex as written.
    cels = [r.cel for r in S.CROSS_FIELD_RULES] + [
        r["rule"] for _, node in _walk(schema()["properties"]["spec"], "spec")
        for r in field_rules(node)]
    for cel in cels:
        for literal in re.findall(r"(r?)'([^']*)'", cel):
            if "\\" in literal[1]:
                assert literal[0] == "r", cel


# --------------------------------------------------------------------------- objects against the schema
def test_sample_and_defaults_validate_against_the_schema():
    for name in ("mnistserving.yaml", "mnistserving-cpu.yaml"):
        sample = yaml.safe_load((MANIFESTS / "samples" / name).read_text())
        assert is_valid(sample), name
        S.parse_spec(sample["spec"])  # and the cross-field rules
    assert is_valid(cr(S.parse_spec({}).to_dict()))
    assert is_valid(cr({"scheduling": {"tolerations": [{"key": "kwok.x-k8s.io/node",
                                                        "operator": "Exists",
                                                        "effect": "NoSchedule"}],
                                       "nodeSelector": {"type": "kwok"}}}))


@pytest.mark.parametrize("spec", [
    {"training": {"epochs": -1}},
    {"training": {"learningRate": 0.0025}},          # a float, not a decimal string
    {"serving": {"models": ["vgg"]}},
    {"images": {"pytorch": ""}},
    {"images": {"sdk": "UPPER/case"}},
    {"storage": {"accessMode": "ReadWriteOncePod"}},
    {"storage": {"size": "2 gigs"}},
    {"benchmark": {"perfAnalyzer": {"protocols": ["grpc", "grpc"]}}},  # listType set
    {"scheduling": {"nodeSelector": {str(i): "x" for i in range(33)}}},
])
def test_schema_rejects_what_parse_spec_rejects(spec):
    with pytest.raises(S.SpecError):
        S.parse_spec(spec)
    body = cr(spec)
    if spec == {"benchmark": {"perfAnalyzer": {"protocols": ["grpc", "grpc"]}}}:
        # jsonschema has no listType; the equivalent keyword is uniqueItems
        node = copy.deepcopy(schema())
        node["properties"]["spec"]["properties"]["benchmark"]["properties"]["perfAnalyzer"][
            "properties"]["protocols"]["uniqueItems"] = True
        assert not jsonschema.Draft7Validator(node).is_valid(body)
        return
    assert not is_valid(body)


def test_status_schema_types_conditions_and_keeps_stage_results():
    status = {
        "phase": "Ready", "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}],
        "stages": {"train": {"state": "Succeeded", "accuracy": "0.9812", "anything": {"x": 1}}},
        "model": {"accuracy": "0.9812"}, "benchmark": {"bestThroughput": "9512.3"},
        "endpoints": {"http": "http://demo-triton.ml.svc:8000"},
    }
    assert is_valid(cr({}, status))
    bad = copy.deepcopy(status)
    bad["conditions"][0]["status"] = "Yes"
    assert not is_valid(cr({}, bad))
    missing_reason = copy.deepcopy(status)
    del missing_reason["conditions"][0]["reason"]
    assert not is_valid(cr({}, missing_reason))
    conds = schema()["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map" and conds["x-kubernetes-list-map-keys"] == ["type"]


# --------------------------------------------------------------------------- RBAC
def _allowed(rules, group, resource, verb):
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)


def test_rbac_is_least_privilege_and_covers_the_operator():
    rules = C.OPERATOR_RULES
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
    flat = {(g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]}
    assert ("", "secrets") not in flat and ("", "pods/exec") not in flat
    needed = [
        (S.GROUP, "mnistservings", "watch"), (S.GROUP, "mnistservings", "patch"),
        (S.GROUP, "mnistservings/status", "patch"), ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"), ("", "pods", "list"), ("apps", "deployments", "patch"),
        ("", "services", "create"), ("", "persistentvolumeclaims", "create"),
        ("", "events", "create"), ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ]
    for n in needed:
        assert _allowed(rules, *n), n
    assert not _allowed(rules, "", "pods", "create")     # pods come from Jobs/Deployments only
    # the namespaced Role cannot hold cluster-scoped resources
    assert not any("customresourcedefinitions" in r["resources"] for r in C.NAMESPACED_RULES)
    for obj in (C.cluster_role(), C.namespaced_role(), C.service_account()):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rbac_grants_exactly_the_calls_the_operator_makes():
    """Each verb is one the operator (kube.py, kopf) really calls; the least-privilege
    test in tests/cluster/test_operator_e2e.py proves the set is enough to reach Ready.
    No update anywhere: every write is a create, a merge patch or a delete."""
    flat = {(g, res, v) for r in C.OPERATOR_RULES for g in r["apiGroups"]
            for res in r["resources"] for v in r["verbs"]}
    assert flat == {
        # a sweep creates, patches and deletes its points' MnistServings
        *((S.GROUP, "mnistservings", v) for v in ("get", "list", "watch", "create", "patch",
                                                  "delete")),
        (S.GROUP, "mnistservings/status", "patch"),
        (S.GROUP, "mnistservings/finalizers", "update"),   # blockOwnerDeletion's check
        *((S.GROUP, "mnistservingsweeps", v) for v in ("get", "list", "watch", "patch")),
        (S.GROUP, "mnistservingsweeps/status", "patch"),
        (S.GROUP, "mnistservingsweeps/finalizers", "update"),
        *(("batch", "jobs", v) for v in ("get", "list", "watch", "create", "delete")),
        ("", "pods", "list"), ("", "pods", "watch"),
        *(("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
        *(("", res, v) for res in ("services", "persistentvolumeclaims", "serviceaccounts")
          for v in ("get", "list", "watch", "create")),
        ("", "events", "create"), ("", "events", "list"), ("events.k8s.io", "events", "create"),
        *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
        ("", "nodes", "get"),   # a node's GPU labels, once per node (kube.node_gpus)
    }
    assert not any("nodes" in r["resources"] for r in C.NAMESPACED_RULES)


# --------------------------------------------------------------------------- manifests/ (kustomize)
def _kustomizations():
    return sorted(MANIFESTS.rglob("kustomization.yaml"))


def test_kustomizations_reference_files_that_exist_and_valid_objects():
    seen = set()
    for k in _kustomizations():
        doc = yaml.safe_load(k.read_text())
        for res in doc.get("resources", []):
            target = (k.parent / res).resolve()
            assert target.exists(), f"{k.relative_to(ROOT)}: {res} does not exist"
            assert target.is_dir() or target.suffix == ".yaml"
            if target.is_file():
                seen.add(target)
    for path in sorted(seen):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj["kind"] == "MnistServing":
                assert is_valid(obj)
            else:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_manager_runs_the_operator_with_a_liveness_probe_as_non_root():
    dep = yaml.safe_load((MANIFESTS / "manager" / "manager.yaml").read_text())
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == C.service_account()["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["command"] == ["mnist-serving", "operator"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in c["ports"]}[c["livenessProbe"]["httpGet"]["port"]] == 8080
    assert "readinessProbe" not in c
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    binding = yaml.safe_load((MANIFESTS / "rbac" / "role_binding.yaml").read_text())
    assert binding["roleRef"]["name"] == C.cluster_role()["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
