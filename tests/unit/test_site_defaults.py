"""Operator-wide defaults from the environment (what the Helm chart sets) and how
they reach a resource: one-line errors naming the variable, the resource wins."""
from __future__ import annotations

import pytest

from mnist_operator.cluster import main as operator_main
from mnist_operator.cluster.runtime import Operator
from mnist_operator.api import site_defaults
from mnist_operator.api.site_defaults import from_env, watch_namespaces
from mnist_operator.api.spec import merge_defaults, parse_spec

PREFIX = "MNIST_SERVING_DEFAULT_"


@pytest.mark.parametrize("var, raw, expected", [
    ("IMAGE_PYTORCH", "registry.local/pytorch:25.01-py3", {"images": {"pytorch": "registry.local/pytorch:25.01-py3"}}),
    ("IMAGE_TRITON", "registry.local/tritonserver:25.01-py3", {"images": {"triton": "registry.local/tritonserver:25.01-py3"}}),
    ("IMAGE_SDK", "registry.local/sdk@sha256:" + "b" * 64, {"images": {"sdk": "registry.local/sdk@sha256:" + "b" * 64}}),
    ("IMAGE_STAGES", "ghcr.io/mnist-serving/operator:dev", {"images": {"stages": "ghcr.io/mnist-serving/operator:dev"}}),
    ("IMAGE_PULL_POLICY", "Never", {"images": {"pullPolicy": "Never"}}),
    ("GPUS_TRAINING", "0", {"training": {"gpus": 0}}),
    ("GPUS_ENGINE", "2", {"tensorrt": {"gpus": 2}}),
    ("GPUS_SERVING", " 4 ", {"serving": {"gpus": 4}}),
    ("NODE_SELECTOR", '{"nvidia.com/gpu.product": "NVIDIA-H100"}',
     {"scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100"}}}),
    ("TOLERATIONS", '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
     {"scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}),
])
def test_each_variable_becomes_its_spec_field(var, raw, expected):
    assert from_env({PREFIX + var: raw}) == expected


def test_unset_and_empty_variables_give_no_defaults():
    assert from_env({}) == {}
    assert from_env({PREFIX + "IMAGE_SDK": "", PREFIX + "GPUS_SERVING": "  ",
                     "MNIST_SERVING_WATCH_NAMESPACES": "a"}) == {}


def test_all_variables_together_fill_a_spec():
    env = {PREFIX + "IMAGE_SDK": "registry.local/sdk:1", PREFIX + "GPUS_TRAINING": "0",
           PREFIX + "GPUS_SERVING": "2", PREFIX + "NODE_SELECTOR": '{"pool": "gpu"}',
           PREFIX + "TOLERATIONS": "[]"}
    spec = parse_spec(merge_defaults({"serving": {"gpus": 1}}, from_env(env)))
    assert spec.images.sdk == "registry.local/sdk:1" and spec.training.gpus == 0
    assert spec.serving.gpus == 1                      # the resource wins
    assert spec.scheduling.node_selector == {"pool": "gpu"}
    assert spec.images.triton == "nvcr.io/nvidia/tritonserver:26.04-py3"   # built-in last


@pytest.mark.parametrize("var, raw, message", [
    ("GPUS_SERVING", "two", "MNIST_SERVING_DEFAULT_GPUS_SERVING: must be an integer (got 'two')"),
    ("GPUS_TRAINING", "1.5", "MNIST_SERVING_DEFAULT_GPUS_TRAINING: must be an integer (got '1.5')"),
    ("GPUS_ENGINE", "0", "MNIST_SERVING_DEFAULT_GPUS_ENGINE: must be >= 1 (got 0)"),
    ("GPUS_SERVING", "9", "MNIST_SERVING_DEFAULT_GPUS_SERVING: must be <= 8 (got 9)"),
    ("TOLERATIONS", "[{key: gpu}]", "MNIST_SERVING_DEFAULT_TOLERATIONS: not valid JSON (Expecting property name"),
    ("TOLERATIONS", '{"key": "gpu"}', "MNIST_SERVING_DEFAULT_TOLERATIONS: must be a list"),
    ("TOLERATIONS", '[{"key": "gpu", "operator": "Maybe"}]',
     "MNIST_SERVING_DEFAULT_TOLERATIONS[0].operator: must be one of 'Equal', 'Exists' (got 'Maybe')"),
    ("TOLERATIONS", '[{"kee": "gpu"}]', "MNIST_SERVING_DEFAULT_TOLERATIONS[0].kee: unknown field"),
    ("NODE_SELECTOR", "{nope", "MNIST_SERVING_DEFAULT_NODE_SELECTOR: not valid JSON"),
    ("NODE_SELECTOR", '{"gpu": true}', "MNIST_SERVING_DEFAULT_NODE_SELECTOR: must be a map of strings"),
    ("IMAGE_TRITON", "Not An Image", "MNIST_SERVING_DEFAULT_IMAGE_TRITON: must be an image reference"),
    ("IMAGE_PULL_POLICY", "Sometimes", "MNIST_SERVING_DEFAULT_IMAGE_PULL_POLICY: must be one of"),
])
def test_a_bad_value_is_one_line_naming_the_variable(var, raw, message):
    with pytest.raises(ValueError) as exc:
        from_env({PREFIX + var: raw})
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)


def test_every_bad_variable_is_reported():
    with pytest.raises(ValueError) as exc:
        from_env({PREFIX + "GPUS_SERVING": "x", PREFIX + "IMAGE_SDK": "UPPER/case", PREFIX + "GPUS_ENGINE": "1"})
    assert [e.split(":")[0] for e in str(exc.value).split("; ")] == [
        "MNIST_SERVING_DEFAULT_GPUS_SERVING", "MNIST_SERVING_DEFAULT_IMAGE_SDK"]


def test_every_operator_wide_field_has_a_variable():
    from mnist_operator.api.spec import operator_default_paths
    assert sorted(site_defaults.DEFAULT_FIELDS.values()) == sorted(operator_default_paths())


@pytest.mark.parametrize("raw, expected", [
    (None, []), ("", []), ("team-a", ["team-a"]), ("team-a, team-b,", ["team-a", "team-b"])])
def test_watch_namespaces(raw, expected):
    env = {} if raw is None else {"MNIST_SERVING_WATCH_NAMESPACES": raw}
    assert watch_namespaces(env) == expected


@pytest.mark.parametrize("argv, env, expected", [
    ([], "", []),                                   # every namespace
    ([], "team-a,team-b", ["team-a", "team-b"]),
    (["-n", "ops"], "team-a", ["ops"]),            # a flag beats the variable
    (["--all-namespaces"], "team-a", []),
])
def test_operator_watches_flags_then_the_variable(argv, env, expected):
    args = operator_main.parser().parse_args(argv)
    assert operator_main.namespaces_to_watch(args, {"MNIST_SERVING_WATCH_NAMESPACES": env}) == expected


def test_operator_hands_reconcile_the_resource_with_its_defaults_under_it():
    cr = {"metadata": {"name": "demo"}, "spec": {"images": {"sdk": "mine/sdk:2"},
                                                 "serving": {"models": ["onnx"], "cpuOnly": True}}}
    seen = site_defaults.with_defaults(cr, from_env({PREFIX + "IMAGE_SDK": "site/sdk:1",
                                                PREFIX + "IMAGE_TRITON": "site/triton:1",
                                                PREFIX + "GPUS_SERVING": "1"}))
    assert seen["metadata"] is cr["metadata"]
    assert seen["spec"]["images"] == {"sdk": "mine/sdk:2", "triton": "site/triton:1"}
    assert seen["spec"]["serving"]["gpus"] == 0        # cpuOnly beats the operator default
    assert cr["spec"]["images"] == {"sdk": "mine/sdk:2"}  # the live object is untouched


def test_operator_refuses_to_start_with_a_bad_default(monkeypatch, capsys):
    monkeypatch.setenv(PREFIX + "GPUS_SERVING", "lots")
    assert operator_main.main([], Operator()) == 2
    err = capsys.readouterr().err
    assert err == ("mnist-serving operator: error: MNIST_SERVING_DEFAULT_GPUS_SERVING: "
                   "must be an integer (got 'lots')\n")
