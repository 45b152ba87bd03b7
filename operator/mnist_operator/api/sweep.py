"""The ``MnistServingSweep`` resource: one MnistServing spec as a template, and
axes, each a spec field and its values. The product of the axes is the set of
points; each point is one child MnistServing.

Pure: parsing and expansion only. A refusal names the field (``spec.axes[1]``)
and, for a value, the value, in one line each, as the MnistServing spec does.
Every point's spec must parse as a MnistServing spec: the template is checked
alone first (``spec.template.*``), then each value, then each point's whole
spec, so a combination that breaks a cross-field rule is refused by name.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from mnist_operator.api import spec as S

KIND = "MnistServingSweep"
PLURAL = "mnistservingsweeps"
SINGULAR = "mnistservingsweep"
SHORT_NAMES = ["mnistsweep"]

#: The most points one sweep may have: each is a whole pipeline on a GPU.
MAX_POINTS = 64
MAX_AXES = 8
MAX_VALUES = 32
#: What ranks the points, and which way is better.
OBJECTIVES = {"throughput": "higher", "throughputAtSlo": "higher",
              "inferencesPerJoule": "higher", "costPerMillion": "lower"}
#: A price per GPU hour, as a decimal string (the API conventions avoid floats).
PRICE_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


@dataclass(frozen=True)
class Axis:
    field: str      # camelCase dotted path under a MnistServing spec, e.g. serving.instances
    values: tuple


@dataclass(frozen=True)
class SweepSpec:
    template: dict
    axes: tuple[Axis, ...]
    max_parallel: int = 1
    objective: str = "throughput"
    costs: dict = field(default_factory=dict)   # GPU product -> price per GPU hour


@dataclass(frozen=True)
class Point:
    """One combination of axis values, in the axes' order."""
    values: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        """The point's identity: its values as canonical JSON (stable across axis order)."""
        return json.dumps(dict(sorted(self.values)), sort_keys=True, separators=(",", ":"))

    def child_name(self, sweep_name: str) -> str:
        """``<sweep>-<6 hex of the key>``: the same point keeps its name when axes change."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:6]
        return f"{sweep_name[:240]}-{digest}"

    def describe(self) -> str:
        return ", ".join(f"{name}={json.dumps(value)}" for name, value in self.values)


# --------------------------------------------------------------------------- axis fields
def field_of(path: str) -> dataclasses.Field | None:
    """The MnistServing spec field at a camelCase dotted path, None when there is none.
    A path must end at a value (not at a section: sweep one field of it instead)."""
    cls: Any = S.MnistServingSpec
    fl = None
    for part in path.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        by_name = {fl.metadata.get("name") or S.camel(fl.name): fl for fl in dataclasses.fields(cls)}
        fl = by_name.get(part)
        if fl is None:
            return None
        cls = S.type_hints(cls)[fl.name]
    return None if dataclasses.is_dataclass(cls) else fl


def sweepable_fields() -> list[str]:
    """Every path an axis may name (for the message when one names none)."""
    out: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for fl in dataclasses.fields(cls):
            name = prefix + (fl.metadata.get("name") or S.camel(fl.name))
            tp = S.type_hints(cls)[fl.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, name + ".")
            else:
                out.append(name)
    walk(S.MnistServingSpec, "")
    return out


def with_value(template: dict, path: str, value: Any) -> dict:
    """A copy of ``template`` with the field at ``path`` set to ``value``."""
    out = copy.deepcopy(template)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise S.SpecError([f"spec.template.{part}: must be an object"])
    node[leaf] = copy.deepcopy(value)
    return out


def point_spec(template: dict, point: Point) -> dict:
    """The template with the point's values; a point stops serving once measured
    (serving.stopAfterBenchmark), handing its GPUs to the next, unless the template
    says otherwise."""
    spec = template
    if "stopAfterBenchmark" not in (template.get("serving") or {}):
        spec = with_value(spec, "serving.stopAfterBenchmark", True)
    for path, value in point.values:
        spec = with_value(spec, path, value)
    return spec


# --------------------------------------------------------------------------- parsing
def _errors_of(spec: dict) -> list[str]:
    try:
        S.parse_spec(spec)
    except S.SpecError as err:
        return err.errors
    return []


def _axis(i: int, raw: Any, template: dict, errors: list[str]) -> Axis | None:
    where = f"spec.axes[{i}]"
    if not isinstance(raw, dict):
        errors.append(f"{where}: must be an object with field and values")
        return None
    unknown = sorted(set(raw) - {"field", "values"})
    if unknown:
        errors.append(f"{where}.{unknown[0]}: unknown field (an axis has field and values)")
    path, values = raw.get("field"), raw.get("values")
    if not isinstance(path, str) or not path:
        errors.append(f"{where}.field: required, a MnistServing spec field such as "
                      "serving.instances")
        return None
    if field_of(path) is None:
        close = [p for p in sweepable_fields() if p.split(".")[-1] == path.split(".")[-1]]
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.append(f"{where}.field: {path!r} names no MnistServing spec field{hint}")
        return None
    if not isinstance(values, list) or not values:
        errors.append(f"{where}.values: required, a non-empty list of values for {path}")
        return None
    if len(values) > MAX_VALUES:
        errors.append(f"{where}.values: at most {MAX_VALUES} values (got {len(values)})")
        return None
    seen: list[str] = []
    ok = True
    for j, value in enumerate(values):
        canonical = json.dumps(value, sort_keys=True)
        if canonical in seen:
            errors.append(f"{where}.values[{j}]: {canonical} is listed twice")
            ok = False
            continue
        seen.append(canonical)
        own = [e for e in _errors_of(with_value(template, path, value))
               if e.startswith(f"spec.{path}")]
        for e in own:
            errors.append(f"{where}.values[{j}]: {canonical} for {path}: "
                          f"{e.split(': ', 1)[1] if ': ' in e else e}")
            ok = False
    return Axis(path, tuple(values)) if ok else None


def parse_sweep(data: Any) -> SweepSpec:
    """Parse a sweep's ``.spec``; raise SpecError naming each bad field and value."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise S.SpecError(["spec: must be an object"])
    unknown = sorted(set(data) - {"template", "axes", "maxParallel", "objective", "costs"})
    errors += [f"spec.{k}: unknown field" for k in unknown]
    template = data.get("template") or {}
    if not isinstance(template, dict):
        raise S.SpecError(errors + ["spec.template: must be an object (a MnistServing spec)"])
    errors += [e.replace("spec.", "spec.template.", 1) for e in _errors_of(template)]
    raw_axes = data.get("axes")
    if not isinstance(raw_axes, list) or not raw_axes:
        errors.append("spec.axes: required, a non-empty list of {field, values}")
        raw_axes = []
    elif len(raw_axes) > MAX_AXES:
        errors.append(f"spec.axes: at most {MAX_AXES} axes (got {len(raw_axes)})")
    axes = [_axis(i, raw, template, errors) for i, raw in enumerate(raw_axes[:MAX_AXES])]
    paths = [a.field for a in axes if a is not None]
    for path in sorted({p for p in paths if paths.count(p) > 1}):
        errors.append(f"spec.axes: {path} is swept by more than one axis")
    max_parallel = data.get("maxParallel", 1)
    if not isinstance(max_parallel, int) or isinstance(max_parallel, bool) \
            or not 1 <= max_parallel <= MAX_POINTS:
        errors.append(f"spec.maxParallel: must be an integer in 1..{MAX_POINTS} "
                      f"(got {max_parallel!r})")
    objective = data.get("objective", "throughput")
    if objective not in OBJECTIVES:
        errors.append(f"spec.objective: must be one of {', '.join(OBJECTIVES)} (got {objective!r})")
    costs = data.get("costs") or {}
    if not isinstance(costs, dict):
        errors.append("spec.costs: must be a map of GPU product to price per GPU hour")
        costs = {}
    for product, price in costs.items():
        if not isinstance(price, str) or not re.match(PRICE_PATTERN, price):
            errors.append(f"spec.costs.{product}: a price per GPU hour as a decimal string, "
                          f"e.g. \"4.10\" (got {price!r})")
    if objective == "costPerMillion" and not costs:
        errors.append("spec.costs: objective costPerMillion needs the price of each GPU product")
    if errors:
        raise S.SpecError(errors)
    spec = SweepSpec(template, tuple(a for a in axes if a is not None), max_parallel,
                     objective, dict(costs))
    size = 1
    for axis in spec.axes:
        size *= len(axis.values)
    if size > MAX_POINTS:
        raise S.SpecError([f"spec.axes: {size} points ({' x '.join(str(len(a.values)) for a in spec.axes)}); "
                           f"at most {MAX_POINTS}"])
    for point in points(spec):
        errors += [f"spec.axes: the point {point.describe()}: {e}"
                   for e in _errors_of(point_spec(template, point))]
    if errors:
        raise S.SpecError(errors)
    return spec


def points(spec: SweepSpec) -> list[Point]:
    """The product of the axes, in the order they and their values are listed."""
    return [Point(tuple(zip((a.field for a in spec.axes), combo)))
            for combo in itertools.product(*(a.values for a in spec.axes))]


__all__ = ["KIND", "PLURAL", "SINGULAR", "SHORT_NAMES", "MAX_POINTS", "OBJECTIVES", "Axis",
           "SweepSpec", "Point", "parse_sweep", "points", "point_spec", "field_of",
           "sweepable_fields"]
