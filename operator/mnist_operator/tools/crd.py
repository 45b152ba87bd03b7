"""The MnistServing CustomResourceDefinition and the operator's RBAC rules, generated.

Pure: the CRD's OpenAPI schema comes from the dataclasses in :mod:`spec`
(each field's ``metadata``: description, enum, minimum, pattern, ...) and
the CEL rules from ``spec.CROSS_FIELD_RULES``, so the Python validation
(``render``, the operator) and the API server's cannot drift. The RBAC rules
live here too, so the kustomize manifests and the Helm chart are generated
from one source.

    mnist-serving crd                        # the CRD as YAML (manifests/crd/mnistservings.yaml)
    mnist-serving crd --sweep                # the MnistServingSweep CRD
    mnist-serving crd --rbac [--namespaced]  # the ClusterRole (or Role) as YAML
    mnist-serving crd --write-manifests DIR  # every generated file under DIR (`make manifests`)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from mnist_operator.api import spec as S
from mnist_operator.api import sweep as W

CRD_NAME = f"{S.PLURAL}.{S.GROUP}"
SWEEP_CRD_NAME = f"{W.PLURAL}.{S.GROUP}"
CATEGORIES = ["mnist-serving", "all"]
OPERATOR_NAME = "mnist-serving-operator"
OPERATOR_NAMESPACE = "mnist-serving-system"

#: Phases the operator writes to .status.phase (documentation; not an enum in the
#: schema, so a newer operator can add one without a CRD change).
PHASES = ("Pending", "Training", "Exporting", "BuildingEngine", "Deploying", "Benchmarking",
          "Analyzing", "Ready", "Failed")

# Every string a CEL rule reads is bounded (maxLength) and every list (maxItems),
# so the API server's cost estimate stays under its budget; list items that are
# enums get a maxLength too because the estimator does not read enum values.
_ENUM_ITEM_MAX_LENGTH = 16


# --------------------------------------------------------------------------- spec schema
def _scalar_type(tp: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string"}[tp]


def _item_schema(md: dict) -> dict:
    item = md.get("itemType", str)
    if dataclasses.is_dataclass(item):
        return object_schema(item)
    out: dict[str, Any] = {"type": _scalar_type(item)}
    if "itemsEnum" in md:
        out["enum"] = list(md["itemsEnum"])
        out["maxLength"] = _ENUM_ITEM_MAX_LENGTH
    if "itemsMinimum" in md:
        out["minimum"] = md["itemsMinimum"]
    return out


def _default(fl: dataclasses.Field) -> Any:
    if fl.default is not dataclasses.MISSING:
        return S.to_dict(fl.default)
    return S.to_dict(fl.default_factory())  # type: ignore[misc]


def section_default(cls: type) -> dict:
    """The defaulted contents of a whole section, without its ``noDefault`` fields
    (the operator-wide ones among them: the operator, not the API server, fills
    those, so it must see them left out).

    The API server checks a default against the CEL rules as it is (it does not
    default inside a default), so an omitted section must default to its full
    contents, not to ``{}``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for fl in dataclasses.fields(cls):
        if fl.metadata.get("noDefault"):
            continue
        tp = hints[fl.name]
        out[S.camel(fl.name)] = section_default(tp) if dataclasses.is_dataclass(tp) else _default(fl)
    return out


def field_schema(tp: Any, fl: dataclasses.Field) -> dict:
    """The OpenAPI schema of one dataclass field (its metadata says the rest)."""
    md = fl.metadata
    if typing.get_origin(tp) is typing.Union:  # Optional[int]
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    out: dict[str, Any] = {"description": md["description"]}
    if dataclasses.is_dataclass(tp):
        out.update(object_schema(tp))
        if not md.get("noDefault"):
            # Every section has a default, so CEL rules always see its fields.
            out["default"] = section_default(tp)
        return out
    if tp is list or typing.get_origin(tp) is list:
        out["type"] = "array"
        out["items"] = _item_schema(md)
        if md.get("listType"):
            out["x-kubernetes-list-type"] = md["listType"]
    elif tp is dict or typing.get_origin(tp) is dict:
        out["type"] = "object"
        out["additionalProperties"] = {"type": "string", "maxLength": 253}
    else:
        out["type"] = _scalar_type(tp)
        if tp is int:
            out["format"] = "int64" if md.get("maximum", 0) > 2**31 - 1 else "int32"
    for key in ("enum", "minimum", "maximum", "minLength", "maxLength", "minItems",
                "maxItems", "maxProperties"):
        if key in md:
            out[key] = list(md[key]) if key == "enum" else md[key]
    if "pattern" in md:
        # A CEL rule, not an OpenAPI pattern: the API server then answers with the
        # words of expect instead of the regular expression. An empty value is
        # minLength's to refuse where there is one (one message, not two).
        rule = f"self.matches(r'{md['pattern']}')"
        if md.get("minLength"):
            rule = f"self == '' || {rule}"
        out["x-kubernetes-validations"] = [{"rule": rule, "message": f"must be {md['expect']}"}]
    if "enum" in out and "maxLength" not in out:
        out["maxLength"] = max(len(e) for e in out["enum"])  # bounds CEL cost estimates
    if not md.get("noDefault"):
        out["default"] = _default(fl)
    return out


def object_schema(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    props = {S.camel(fl.name): field_schema(hints[fl.name], fl)
             for fl in dataclasses.fields(cls)}
    return {"type": "object", "properties": props}


def _at(schema: dict, dotted: str) -> dict:
    for part in filter(None, dotted.split(".")):
        schema = schema["properties"][part]
    return schema


def spec_schema() -> dict:
    """``.spec``: the dataclass schema plus the CEL cross-field rules where they sit."""
    schema = object_schema(S.MnistServingSpec)
    schema["description"] = (S.MnistServingSpec.__doc__ or "").strip()
    schema["default"] = section_default(S.MnistServingSpec)
    for rule in S.CROSS_FIELD_RULES:
        target = _at(schema, rule.at)
        target.setdefault("x-kubernetes-validations", []).append(
            {"rule": rule.cel, "message": rule.message, "fieldPath": "." + rule.field_path})
    return schema


# --------------------------------------------------------------------------- status schema
def condition_schema() -> dict:
    """metav1.Condition, as Kubernetes API conventions type it."""
    return {
        "type": "object",
        "description": "One aspect of the resource's state (Ready, Progressing, Degraded, ...).",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316,
                     "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                                r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                     "description": "Condition type in CamelCase."},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"],
                       "description": "True, False or Unknown."},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                                   "description": "metadata.generation the condition was set for."},
            "lastTransitionTime": {"type": "string", "format": "date-time",
                                   "description": "When status last changed."},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1024,
                       "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                       "description": "CamelCase reason for the last transition."},
            "message": {"type": "string", "maxLength": 32768,
                        "description": "Human-readable detail."},
        },
    }


def _open(description: str, **props: Any) -> dict:
    """An object whose known keys are typed and whose other keys are kept."""
    out: dict[str, Any] = {"type": "object", "description": description,
                           "x-kubernetes-preserve-unknown-fields": True}
    if props:
        out["properties"] = props
    return out


def _str(description: str) -> dict:
    return {"type": "string", "description": description}


def status_schema() -> dict:
    return _open(
        "Observed state, written by the operator only (status subresource). Known fields are "
        "typed; per-stage results keep every field their stage reports.",
        phase=_str(f"Where the pipeline is: one of {', '.join(PHASES)}."),
        message=_str("One line about the current phase."),
        observedGeneration={"type": "integer", "format": "int64", "minimum": 0,
                            "description": "The metadata.generation the status reflects."},
        conditions={"type": "array", "maxItems": 32, "items": condition_schema(),
                    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                    "description": "Kubernetes API conventions conditions (Ready, ...)."},
        stages={"type": "object", "description": "Per step (train, export, ..., bench-grpc): "
                "Job name, state, fingerprint, times and the stage's result fields.",
                "additionalProperties": _open("One step's record.")},
        model=_open("The trained model.", accuracy=_str("Held-out accuracy, a decimal string.")),
        endpoints=_open("Where Triton serves.", http=_str("HTTP/REST URL."),
                        grpc=_str("gRPC HOST:PORT."), metrics=_str("Prometheus metrics URL.")),
        benchmark=_open("perf_analyzer and model-analyzer results.",
                        bestThroughput=_str("Best infer/s measured by perf_analyzer of the "
                                            "config served now, a decimal string: with "
                                            "modelAnalyzer.applyBest applying a config, the "
                                            "tuned bench's (before and after: closedLoop); "
                                            "absent until it finished."),
                        throughputAtSlo=_str("With benchmark.slo: the highest infer/s meeting "
                                             "the SLO over every model and protocol, or none; "
                                             "of the config served now, as bestThroughput."),
                        throughput=_str("What the Throughput column shows: throughputAtSlo "
                                        "and the SLO when benchmark.slo is set, else "
                                        "bestThroughput; pending while a config applyBest "
                                        "applies has not been benchmarked, unmeasured when "
                                        "a closed-loop step failed (throughputNote says "
                                        "why)."),
                        throughputOf=_str("With applyBest applying a config: tuned when the "
                                          "figures above are the tuned bench's, else pending "
                                          "or unmeasured (as throughput)."),
                        throughputNote=_str("Why throughput is pending or unmeasured; the "
                                            "figures before tuning stay under perfAnalyzer."),
                        closedLoop=_open(
                            "modelAnalyzer.applyBest: the config applied per model and the "
                            "figure the objective names, before and after, per model/protocol.",
                            objective=_str("The benchmark.objective in force (empty in the "
                                           "spec: throughputAtSlo with an SLO, else "
                                           "throughput)."),
                            basis=_str("The compared figure in words."),
                            unit=_str("Its unit: infer/s or infer/J."),
                            confirmation=_open(
                                "With benchmark.slo: each candidate config measured again by "
                                "the confirm stage before it is applied, model -> its verdict "
                                "(meets, misses or undecided), concurrency, throughput and p99 "
                                "with its 95 % interval and request count; only those that "
                                "meet the SLO are applied."),
                            verdict=_str("Improved (every tuned 95 % interval above the one "
                                         "before), NoChange, Regressed or NoInterval."))),
    )


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Accuracy", "type": "string", "jsonPath": ".status.model.accuracy"},
    {"name": "Throughput", "type": "string", "jsonPath": ".status.benchmark.throughput",
     "description": "Best infer/s measured by perf_analyzer, or the best meeting "
                    "benchmark.slo (with the SLO) when one is set"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _crd(name: str, kind: str, plural: str, singular: str, short_names: list[str],
         columns: list[dict], description: str, spec: dict, status: dict) -> dict:
    """An apiextensions.k8s.io/v1 CRD of this group: one served version, status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name,
                     "labels": {"app.kubernetes.io/name": "mnist-serving",
                                "app.kubernetes.io/part-of": "mnist-serving"}},
        "spec": {
            "group": S.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": singular, "shortNames": list(short_names),
                      "categories": list(CATEGORIES)},
            "versions": [{
                "name": S.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": description,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    }


def crd() -> dict:
    """The apiextensions.k8s.io/v1 CRD for MnistServing."""
    return _crd(CRD_NAME, S.KIND, S.PLURAL, S.SINGULAR, S.SHORT_NAMES, PRINTER_COLUMNS,
                "MnistServing trains an MNIST model, exports it to ONNX, builds a TensorRT "
                "engine, serves them from one Triton and benchmarks them; every result lands "
                "in status.", spec_schema(), status_schema())


# --------------------------------------------------------------------------- the sweep
def _template(schema: Any) -> Any:
    """A spec schema without defaults and without the cross-field rules, which sit on
    objects; a string's own rule (its pattern, in words) stays."""
    if isinstance(schema, list):
        return [_template(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    drop = {"default"} | ({"x-kubernetes-validations"} if schema.get("type") == "object" else set())
    return {k: _template(v) for k, v in schema.items() if k not in drop}


def sweep_spec_schema() -> dict:
    """``.spec`` of a sweep. The template is a MnistServing spec typed as one, but
    without defaults (it stays as written; each child is defaulted when created) and
    without the cross-field rules (they judge a whole point: the operator checks
    every point's spec with the same rules and says which one breaks them)."""
    template = _template(spec_schema())
    template["description"] = ("A MnistServing spec every point starts from; each axis "
                               "sets one of its fields.")
    return {
        "type": "object", "required": ["axes"],
        "description": "Points are the product of the axes' values; each is one child "
                       "MnistServing, named <sweep>-<hash of its values>.",
        "properties": {
            "template": template,
            "axes": {"type": "array", "minItems": 1, "maxItems": W.MAX_AXES,
                     "description": f"Each a spec field and its values; at most "
                                    f"{W.MAX_POINTS} points in all.",
                     "items": {"type": "object", "required": ["field", "values"],
                               "properties": {
                                   "field": {"type": "string", "maxLength": 128,
                                             "pattern": r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$",
                                             "description": "A MnistServing spec field, camelCase "
                                                            "and dotted: serving.instances."},
                                   "values": {"type": "array", "minItems": 1,
                                              "maxItems": W.MAX_VALUES,
                                              "description": "The values the field takes.",
                                              "items": {"x-kubernetes-preserve-unknown-fields": True}}}},
                     "x-kubernetes-validations": [{
                         "rule": "self.all(a, self.exists_one(b, b.field == a.field))",
                         "message": "each field is swept by one axis only"}]},
            "maxParallel": {"type": "integer", "format": "int32", "minimum": 1,
                            "maximum": W.MAX_POINTS, "default": 1,
                            "description": "Points running at once (neither Ready nor Failed); "
                                           "the rest wait their turn in the axes' order."},
            "objective": {"type": "string", "enum": list(W.OBJECTIVES), "default": "throughput",
                          "maxLength": max(map(len, W.OBJECTIVES)),
                          "description": "What ranks the points: throughput, throughputAtSlo "
                                         "(benchmark.slo), inferencesPerJoule (a GPU's energy) "
                                         "or costPerMillion (costs)."},
            "costs": {"type": "object", "maxProperties": 32,
                      "description": "Price per GPU hour by GPU product (the "
                                     "scheduling.gpuProduct of a point), a decimal string.",
                      "additionalProperties": {"type": "string", "maxLength": 32,
                                               "pattern": W.PRICE_PATTERN}},
        },
    }


def sweep_status_schema() -> dict:
    return _open(
        "Observed state, written by the operator only.",
        phase=_str("Running, Complete (every point Ready, Measured or Failed) or Failed (the "
                   "sweep's spec was refused)."),
        message=_str("One line: points measured (Ready, or Measured once they stopped "
                     "serving) and the best point."),
        observedGeneration={"type": "integer", "format": "int64", "minimum": 0,
                            "description": "The metadata.generation the status reflects."},
        conditions={"type": "array", "maxItems": 32, "items": condition_schema(),
                    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                    "description": "Complete, per the API conventions."},
        readyPoints=_str("Points measured (Ready or Measured) / all points."),
        objective=_str("The objective the best point is chosen by."),
        best=_open("The best point for the objective.", point=_str("Its child's name."),
                   value=_str("Its objective value, a decimal string.")),
    )


SWEEP_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.readyPoints",
     "description": "Points measured (Ready or Measured) / all points"},
    {"name": "Best", "type": "string", "jsonPath": ".status.best.point"},
    {"name": "Objective", "type": "string", "jsonPath": ".status.objective"},
    {"name": "Value", "type": "string", "jsonPath": ".status.best.value"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def sweep_crd() -> dict:
    """The apiextensions.k8s.io/v1 CRD for MnistServingSweep."""
    return _crd(SWEEP_CRD_NAME, W.KIND, W.PLURAL, W.SINGULAR, W.SHORT_NAMES,
                SWEEP_PRINTER_COLUMNS, "MnistServingSweep runs one MnistServing per combination "
                "of its axes' values and ranks them in status.", sweep_spec_schema(),
                sweep_status_schema())


# --------------------------------------------------------------------------- RBAC
def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


#: What the operator does in the namespaces it watches: exactly the calls it makes
#: (test_operator_e2e.py runs the operator under exactly these rules, to Ready).
#: * mnistservings: kopf lists, watches and patches them (finalizers, its progress
#:   annotations); results go to /status by patch.
#:   /finalizers "update" is what the API server asks of an owner reference with
#:   blockOwnerDeletion where OwnerReferencesPermissionEnforcement is on.
#: * jobs, deployments: listed once at start and watched (the watches feed the cache
#:   passes read; a finished stage moves the pipeline on at once), created, deleted
#:   when superseded; Deployments are also patched (a new repository, a pause for
#:   analyze). GET only after a create answered 409, to tell ours from someone else's.
#: * pods: only listed once and watched (the stage result is the termination message;
#:   FallbackToLogsOnError puts the log tail there, so pods/log is not needed).
#: * services, persistentvolumeclaims, serviceaccounts (the pods' runner account, no
#:   token, no role): listed once, watched, created while missing; never changed or
#:   deleted (owner references let the garbage collector remove them).
#: * events: kopf posts them; a pass lists a Job's FailedCreate events only when the
#:   Job has had no pod for a while (its pods are refused: Pod Security, a quota, ...).
#: * mnistservingsweeps: listed, watched and patched like mnistservings; their status
#:   by patch. A sweep creates its points' mnistservings, patches their spec when its
#:   template changes and deletes those whose point left its axes.
NAMESPACED_RULES: list[dict] = [
    _rule([S.GROUP], [S.PLURAL], ["get", "list", "watch", "create", "patch", "delete"]),
    _rule([S.GROUP], [f"{S.PLURAL}/status"], ["patch"]),
    _rule([S.GROUP], [f"{S.PLURAL}/finalizers"], ["update"]),
    _rule([S.GROUP], [W.PLURAL], ["get", "list", "watch", "patch"]),
    _rule([S.GROUP], [f"{W.PLURAL}/status"], ["patch"]),
    _rule([S.GROUP], [f"{W.PLURAL}/finalizers"], ["update"]),
    _rule(["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"]),
    _rule([""], ["pods"], ["list", "watch"]),
    _rule(["apps"], ["deployments"], ["get", "list", "watch", "create", "patch", "delete"]),
    _rule([""], ["services", "persistentvolumeclaims", "serviceaccounts"],
          ["get", "list", "watch", "create"]),
    _rule([""], ["events"], ["create", "list"]),
    _rule(["events.k8s.io"], ["events"], ["create"]),
]

#: Cluster-wide only: kopf lists and watches CRDs to notice MnistServing being
#: (re)installed; a node a stage ran on is read once for its GPU feature discovery
#: labels (the environment fingerprint; a namespaced Role goes without them). No kopf
#: peering objects: kopf runs standalone, and replicas elect one leader by Lease (below).
CLUSTER_ONLY_RULES: list[dict] = [
    _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    _rule([""], ["nodes"], ["get"]),
]

OPERATOR_RULES: list[dict] = NAMESPACED_RULES + CLUSTER_ONLY_RULES

#: In the operator's own namespace only (a Role there, whatever the scope): the leader
#: Lease (cluster/leader.py). Read by every replica every few seconds, created by the
#: first, replaced (with the resourceVersion read) to renew, take over or release it.
#: Never deleted, listed or watched.
LEADER_RULES: list[dict] = [
    _rule(["coordination.k8s.io"], ["leases"], ["get", "create", "update"]),
]
#: The Lease's name in manifests/ (the chart names it after its release).
LEADER_LEASE = f"{OPERATOR_NAME}-leader"


def _labels() -> dict:
    return {"app.kubernetes.io/name": "mnist-serving",
            "app.kubernetes.io/component": "operator",
            "app.kubernetes.io/part-of": "mnist-serving"}


def service_account(name: str = OPERATOR_NAME, namespace: str = OPERATOR_NAMESPACE) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels()}}


def cluster_role(name: str = OPERATOR_NAME) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": _labels()},
            "rules": OPERATOR_RULES}


def namespaced_role(name: str = OPERATOR_NAME, namespace: str = OPERATOR_NAMESPACE) -> dict:
    """The alternative for an operator that watches its own namespace only."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
            "rules": NAMESPACED_RULES}


def leader_role(name: str = f"{OPERATOR_NAME}-leader",
                namespace: str = OPERATOR_NAMESPACE) -> dict:
    """The Lease rules, in the operator's namespace (both bundles install it)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
            "rules": LEADER_RULES}


# --------------------------------------------------------------------------- CLI
GENERATED_HEADER = "# GENERATED by `mnist-serving crd` from operator/mnist_operator/{src}; do not edit.\n" \
                   "# Regenerate with: make manifests\n"


def to_yaml(obj: dict, src: str = "api/spec.py") -> str:
    return GENERATED_HEADER.format(src=src) + yaml.safe_dump(obj, sort_keys=False, width=100)


def generated_files() -> dict[str, str]:
    """Relative path under manifests/ -> content, for every generated manifest."""
    return {
        "crd/mnistservings.yaml": to_yaml(crd()),
        "crd/mnistservingsweeps.yaml": to_yaml(sweep_crd(), "api/sweep.py"),
        "rbac/role.yaml": to_yaml(cluster_role(), "tools/crd.py"),
        "rbac/namespaced/role.yaml": to_yaml(namespaced_role(), "tools/crd.py"),
        # The same ServiceAccount in both, so either folder stands alone.
        "rbac/service_account.yaml": to_yaml(service_account(), "tools/crd.py"),
        "rbac/namespaced/service_account.yaml": to_yaml(service_account(), "tools/crd.py"),
        "rbac/leader_role.yaml": to_yaml(leader_role(), "tools/crd.py"),
        "rbac/namespaced/leader_role.yaml": to_yaml(leader_role(), "tools/crd.py"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mnist-serving crd",
                                description="Print the MnistServing CRD (or the operator's RBAC) "
                                            "generated from the spec model.")
    p.add_argument("--rbac", action="store_true", help="print the operator's ClusterRole instead")
    p.add_argument("--sweep", action="store_true", help="print the MnistServingSweep CRD instead")
    p.add_argument("--namespaced", action="store_true",
                   help="with --rbac: a namespaced Role (operator watching one namespace)")
    p.add_argument("--write-manifests", metavar="DIR", type=Path,
                   help="write every generated manifest under DIR (crd/, rbac/)")
    a = p.parse_args(argv)
    if a.write_manifests:
        for rel, text in generated_files().items():
            path = a.write_manifests / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if a.rbac:
        sys.stdout.write(to_yaml(namespaced_role() if a.namespaced else cluster_role(), "tools/crd.py"))
    elif a.sweep:
        sys.stdout.write(to_yaml(sweep_crd(), "api/sweep.py"))
    else:
        sys.stdout.write(to_yaml(crd()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
