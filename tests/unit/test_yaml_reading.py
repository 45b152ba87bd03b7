"""render and the local run read a resource file as kubectl does, so they refuse
what the API server refuses: PyYAML alone reads an unquoted `1e3` as a string,
kubectl (go-yaml v2, YAML 1.1) as a number, which the schema's string refuses."""
from __future__ import annotations

import pytest

from mnist_operator.api.spec import load_yaml, load_yaml_documents
from mnist_operator.local.runner import UsageError, load_resource
from mnist_operator.tools.render import RenderError, render

HEAD = "apiVersion: mnist.serving.dev/v1alpha1\nkind: MnistServing\nmetadata: {name: demo}\n"


@pytest.mark.parametrize("plain, value", [
    ("1e3", 1000), ("1.5e3", 1500), ("2.0", 2), (".5", 0.5), ("-1E-1", -0.1),   # numbers
    ("017", 15), ("0o17", 15), ("0x1F", 31), ("0b101", 5), ("1_000", 1000), ("09", 9),
    ("yes", True), ("Off", False), ("n", False), ("~", None), ("", None),
    ("5Gi", "5Gi"), ("500m", "500m"), ("2026-04-01", "2026-04-01"),   # a date stays text
    ("1e400", "1e400"), ("0.0025", 0.0025), ("abc", "abc"),
])
def test_a_plain_scalar_has_the_type_kubectl_gives_it(plain, value):
    assert load_yaml(f"v: {plain}\n") == {"v": value}


def test_quoted_and_tagged_scalars_stay_as_written_and_keys_are_strings():
    assert load_yaml("a: '1e3'\nb: !!str 2\nc: \"yes\"\n") == {"a": "1e3", "b": "2", "c": "yes"}
    assert load_yaml("on: 1\n1: 2\nn: 3\n") == {"true": 1, "1": 2, "false": 3}
    assert load_yaml("base: &b {x: 1}\nm: {<<: *b, z: 2}\n")["m"] == {"x": 1, "z": 2}
    assert load_yaml_documents("a: 1\n---\nb: 1e3\n") == [{"a": 1}, {"b": 1000}]


def test_render_refuses_a_yaml_number_where_the_schema_says_string():
    with pytest.raises(RenderError) as exc:
        render(HEAD + "spec:\n  storage:\n    size: 1e3\n")
    assert exc.value.errors == ['spec.storage.size: must be a Kubernetes quantity written as a '
                                'string, for example "5Gi" (got the number 1000)']
    pvc = next(o for o in render(HEAD + "spec:\n  storage:\n    size: '1e3'\n")
               if o["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1e3"


def test_the_local_run_refuses_it_too():
    with pytest.raises(UsageError) as exc:
        load_resource(HEAD + "spec:\n  storage:\n    size: 1e3\n", "demo.yaml")
    assert "spec.storage.size: must be a Kubernetes quantity written as a string" in str(exc.value)
