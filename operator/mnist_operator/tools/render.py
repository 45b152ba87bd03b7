"""``mnist-serving render FILE [-n NAMESPACE] [--defaults-env FILE]``: every
object the operator would create for the MnistServing resources in FILE, as
multi-document YAML (like ``helm template``), with no cluster.

The operator-wide defaults reach the spec through the operator's own door
(api/site_defaults.py): the ``MNIST_SERVING_DEFAULT_*`` variables of this
process's environment, and of ``--defaults-env FILE`` (``NAME=value`` lines, as
``kubectl exec deploy/OPERATOR -- env`` prints them; the file wins), so what it
prints is what an operator with those variables creates.

The spec is checked first with the same rules the API server applies (the
CRD schema and its CEL rules are generated from the same model): on bad
input it prints one line per error, each naming the field, and exits 2.
``-`` reads standard input.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import yaml

from mnist_operator.api import site_defaults
from mnist_operator.api import spec as S
from mnist_operator.core import builders as B

API_VERSION = f"{S.GROUP}/{S.VERSION}"
# metadata.name of a namespaced custom resource: a DNS-1123 subdomain.
NAME_PATTERN = re.compile(S.DNS_SUBDOMAIN_PATTERN)


class RenderError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def check_resource(doc: Any, where: str, defaults: dict | None = None) -> list[str]:
    """The errors of one document (empty when it is a valid MnistServing)."""
    if not isinstance(doc, dict):
        return [f"{where}: not a YAML mapping"]
    errors = []
    if doc.get("apiVersion") != API_VERSION:
        errors.append(f"{where}apiVersion: must be {API_VERSION} (got {doc.get('apiVersion')!r})")
    if doc.get("kind") != S.KIND:
        errors.append(f"{where}kind: must be {S.KIND} (got {doc.get('kind')!r})")
    md = doc.get("metadata")
    name = md.get("name") if isinstance(md, dict) else None
    if not isinstance(name, str) or not name:
        errors.append(f"{where}metadata.name: required")
    elif len(name) > 253 or not NAME_PATTERN.match(name):
        errors.append(f"{where}metadata.name: {name!r} is not a DNS-1123 subdomain "
                      "(lowercase letters, digits, '-' and '.', at most 253)")
    if isinstance(md, dict) and name:  # the rest of metadata, as the API server checks it
        own = {"kind": S.KIND, "metadata": {**md, "name": "x"}}   # name: checked above
        errors += [f"{where}{p.split(': ', 1)[1]}" for p in B.metadata_problems(own)]
    try:
        S.parse_spec(S.merge_defaults(doc.get("spec"), defaults or {}))
    except S.SpecError as exc:
        errors += [f"{where}{e}" for e in exc.errors]
    return errors


def render(text: str, namespace: str | None = None, defaults: dict | None = None) -> list[dict]:
    """Objects for every MnistServing document in ``text``, with the operator-wide
    ``defaults`` (a partial spec, site_defaults.from_env's) under each; RenderError lists
    every problem (``spec.a.b: message``, prefixed with the document's name
    when the file holds several)."""
    try:
        docs = [d for d in S.load_yaml_documents(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RenderError([f"not valid YAML: {str(exc).splitlines()[0]}"]) from None
    if not docs:
        raise RenderError(["no MnistServing in the input"])
    errors: list[str] = []
    objects: list[dict] = []
    for i, doc in enumerate(docs):
        where = "" if len(docs) == 1 else f"document {i + 1}: "
        problems = check_resource(doc, where, defaults)
        if problems:
            errors += problems
            continue
        cr = dict(doc)
        cr["metadata"] = dict(doc["metadata"])
        if namespace:
            cr["metadata"]["namespace"] = namespace
        cr["metadata"].setdefault("namespace", "default")
        made = B.desired_objects(site_defaults.with_defaults(cr, defaults or {}))
        # what the API server would refuse in the children's metadata is a bug here: say so
        errors += [f"{where}{p}" for o in made for p in B.metadata_problems(o)]
        objects += made
    if errors:
        raise RenderError(errors)
    return objects


def env_file(path: str) -> dict[str, str]:
    """``NAME=value`` lines (blank lines and ``#`` comments skipped), as ``env`` prints."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return dict(line.split("=", 1) for line in lines
                if "=" in line and not line.lstrip().startswith("#"))


def to_yaml(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True, width=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mnist-serving render",
                                description="Print every object the operator would create for "
                                            "the MnistServing in FILE (no cluster needed).")
    p.add_argument("file", metavar="FILE", help="MnistServing YAML ('-' for stdin)")
    p.add_argument("-n", "--namespace", help="namespace of the objects (default: the "
                                             "resource's own, else 'default')")
    p.add_argument("--defaults-env", metavar="FILE",
                   help="NAME=value lines with the operator's MNIST_SERVING_DEFAULT_* variables "
                        "(e.g. `kubectl exec deploy/OPERATOR -- env`); they win over this "
                        "process's own environment")
    a = p.parse_args(argv)
    try:
        text = sys.stdin.read() if a.file == "-" else open(a.file, encoding="utf-8").read()
        environ = {**os.environ, **(env_file(a.defaults_env) if a.defaults_env else {})}
    except OSError as exc:
        print(f"mnist-serving render: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        defaults = site_defaults.from_env(environ)
    except ValueError as exc:
        print(f"mnist-serving render: error: operator defaults: {exc}", file=sys.stderr)
        return 2
    try:
        objects = render(text, a.namespace, defaults)
    except RenderError as exc:
        for line in exc.errors:
            print(f"mnist-serving render: error: {line}", file=sys.stderr)
        return 2
    sys.stdout.write("# Rendered by `mnist-serving render`. ownerReferences are left out: the "
                     "operator sets them from the MnistServing's uid.\n")
    sys.stdout.write(to_yaml(objects))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
