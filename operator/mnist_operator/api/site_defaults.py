"""Operator-wide defaults and the watched namespaces, read from the environment.

The Helm chart turns its ``stageDefaults`` values into the ``MNIST_SERVING_DEFAULT_*``
variables below (templates/deployment.yaml). :func:`from_env` turns them into a
partial spec (camelCase) for :func:`with_defaults` (``spec.merge_defaults``), which merges it
UNDER each resource's spec: a field the resource sets wins, a field it leaves out
takes the operator's default, and the built-in dataclass default comes last. The
CRD carries no default for these fields (``operatorDefault`` in spec.py), so the
API server never fills them in before the operator sees the resource.

Pure: ``environ`` is any mapping; nothing here reads os.environ itself. An empty
variable counts as unset. A bad value raises ValueError with one line naming the
variable.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from mnist_operator.api import spec as S

WATCH_NAMESPACES = "MNIST_SERVING_WATCH_NAMESPACES"

#: Variable -> the spec field it defaults (camelCase path under spec).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "MNIST_SERVING_DEFAULT_IMAGE_PYTORCH": ("images", "pytorch"),
    "MNIST_SERVING_DEFAULT_IMAGE_TRITON": ("images", "triton"),
    "MNIST_SERVING_DEFAULT_IMAGE_SDK": ("images", "sdk"),
    "MNIST_SERVING_DEFAULT_IMAGE_STAGES": ("images", "stages"),
    "MNIST_SERVING_DEFAULT_IMAGE_PULL_POLICY": ("images", "pullPolicy"),
    "MNIST_SERVING_DEFAULT_GPUS_TRAINING": ("training", "gpus"),
    "MNIST_SERVING_DEFAULT_GPUS_ENGINE": ("tensorrt", "gpus"),
    "MNIST_SERVING_DEFAULT_GPUS_SERVING": ("serving", "gpus"),
    "MNIST_SERVING_DEFAULT_NODE_SELECTOR": ("scheduling", "nodeSelector"),
    "MNIST_SERVING_DEFAULT_TOLERATIONS": ("scheduling", "tolerations"),
    "MNIST_SERVING_DEFAULT_RESOURCES": ("resources",),
}

#: How each variable's text becomes a value (the spec parse checks the rest).
_INT_VARS = {"MNIST_SERVING_DEFAULT_GPUS_TRAINING", "MNIST_SERVING_DEFAULT_GPUS_ENGINE",
             "MNIST_SERVING_DEFAULT_GPUS_SERVING"}
_JSON_VARS = {"MNIST_SERVING_DEFAULT_NODE_SELECTOR", "MNIST_SERVING_DEFAULT_TOLERATIONS",
              "MNIST_SERVING_DEFAULT_RESOURCES"}

#: Variables that default a whole section, field by field (one JSON object).
_SECTION_VARS = {"MNIST_SERVING_DEFAULT_RESOURCES"}

#: Every variable the operator reads (the chart should set no other MNIST_SERVING_*).
READ_VARS = frozenset(DEFAULT_FIELDS) | {WATCH_NAMESPACES, "MNIST_SERVING_RESYNC_SECONDS"}


def _convert(var: str, raw: str) -> Any:
    if var in _INT_VARS:
        if not re.fullmatch(r"\s*-?[0-9]+\s*", raw):
            raise ValueError(f"{var}: must be an integer (got {raw!r})")
        return int(raw)
    if var in _JSON_VARS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{var}: not valid JSON ({err.msg} at character {err.pos})") from None
    return raw


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _blame(error: str) -> str:
    """ "spec.images.sdk: msg" -> "MNIST_SERVING_DEFAULT_IMAGE_SDK: msg" (longest path first)."""
    for var, path in sorted(DEFAULT_FIELDS.items(), key=lambda kv: -len(".".join(kv[1]))):
        prefix = "spec." + ".".join(path)
        if error.startswith(prefix) and error[len(prefix):len(prefix) + 1] in (":", "[", "."):
            return var + error[len(prefix):]
    return error


def from_env(environ: Mapping[str, str]) -> dict:
    """The operator's defaults as a partial spec, e.g. {"images": {"sdk": ...}};
    raise ValueError ("VAR: what is wrong", several joined by "; ")."""
    partial: dict = {}
    errors: list[str] = []
    for var, path in DEFAULT_FIELDS.items():
        raw = environ.get(var, "")
        if not raw.strip():
            continue
        try:
            value = _convert(var, raw)
        except ValueError as err:
            errors.append(str(err))
            continue
        if value == {} and var in _SECTION_VARS:
            continue  # a section with no defaults in it: nothing to fill
        _put(partial, path, value)
    # The same single-field checks a resource gets (enum, range, image pattern, ...).
    errors += [_blame(e) for e in S.field_errors(partial)]
    if errors:
        raise ValueError("; ".join(errors))
    return partial


def with_defaults(cr: dict, defaults: dict) -> dict:
    """The resource as the core should see it: its spec with the operator's defaults
    merged under it (what it sets wins). The one door through which operator defaults
    reach a spec: the operator's pass and ``mnist-serving render`` both use it."""
    return {**cr, "spec": S.merge_defaults(cr.get("spec"), defaults)}


def watch_namespaces(environ: Mapping[str, str]) -> list[str]:
    """MNIST_SERVING_WATCH_NAMESPACES ("a,b"); empty or unset: [] (every namespace)."""
    return [ns.strip() for ns in environ.get(WATCH_NAMESPACES, "").split(",") if ns.strip()]


__all__ = ["DEFAULT_FIELDS", "READ_VARS", "WATCH_NAMESPACES", "from_env", "with_defaults",
           "watch_namespaces"]
