"""The typed MnistServing spec: defaults, and one-line errors that name the field."""
from __future__ import annotations

import pytest

from mnist_operator.api.spec import (CROSS_FIELD_RULES, MnistServingSpec, SpecError, merge_defaults,
                                 operator_default_paths, parse_spec, validate)


def errors_of(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec)
    return exc.value.errors


def test_empty_spec_gets_every_default():
    spec = parse_spec({})
    d = spec.to_dict()
    assert d["training"]["epochs"] == 2 and d["training"]["learningRate"] == "0.0025"
    assert d["serving"]["models"] == ["onnx", "tensorrt", "pytorch", "bls"]
    assert d["tensorrt"] == {"enabled": True, "precision": "fp32", "minBatch": 1, "optBatch": 64,
                             "maxBatch": 128, "gpus": 1}
    assert spec.storage_size == "2Gi"
    assert spec.served_triton_models() == ["mnist_onnx", "mnist_trt", "mnist_pt", "mnist_bls"]
    # to_dict round-trips through parse_spec unchanged
    assert parse_spec(d).to_dict() == d
    assert validate(MnistServingSpec()) == []


@pytest.mark.parametrize("spec, expected", [
    ({"training": {"epochs": -1}}, "spec.training.epochs: must be >= 1 (got -1)"),
    ({"training": {"epochs": "two"}}, 'spec.training.epochs: must be an integer (got the string "two")'),
    ({"training": {"epochs": True}}, "spec.training.epochs: must be an integer"),
    ({"training": {"learningRate": "0"}}, "spec.training.learningRate: must be > 0"),
    ({"training": {"learningRate": "fast"}},
     'spec.training.learningRate: must be a decimal number above 0 written as a string, '
     'for example "0.0025" (got "fast")'),
    ({"serving": {"accuracyTolerance": "abc"}},
     'spec.serving.accuracyTolerance: must be a decimal number between 0 and 1 written as a '
     'string, for example "0.02" (got "abc")'),
    ({"training": {"momentum": "1.5"}}, "spec.training.momentum: must be < 1"),
    ({"tensorrt": {"optBatch": 512, "maxBatch": 256}}, "spec.tensorrt.optBatch: must be <= maxBatch (256)"),
    ({"tensorrt": {"minBatch": 8, "optBatch": 4}}, "spec.tensorrt.optBatch: must be >= minBatch (8)"),
    ({"tensorrt": {"precision": "int4"}}, "spec.tensorrt.precision: must be one of 'fp32', 'fp16' (got 'int4')"),
    ({"serving": {"models": ["vgg"]}}, "spec.serving.models[0]: unknown value 'vgg'; must be one of onnx, tensorrt, pytorch, bls"),
    ({"serving": {"models": []}}, "spec.serving.models: must have at least 1 item(s)"),
    ({"serving": {"models": ["onnx", "onnx"]}}, "spec.serving.models: must not contain duplicates"),
    ({"serving": {"models": ["bls"]}}, "spec.serving.models: bls needs onnx, tensorrt or pytorch in the same list"),
    ({"serving": {"maxBatchSize": 256}},
     "spec.serving.models: serving.maxBatchSize must be <= tensorrt.maxBatch when tensorrt is served"),
    ({"serving": {"models": ["tensorrt"]}, "tensorrt": {"enabled": False}},
     "spec.serving.models: tensorrt needs tensorrt.enabled: true"),
    ({"serving": {"models": ["onnx"], "cpuOnly": True, "gpus": 1}},
     "spec.serving.gpus: must be 0 with cpuOnly: true"),
    ({"serving": {"models": ["onnx"], "maxBatchSize": 16}},
     "spec.serving.dynamicBatching.preferredBatchSizes: each must be <= serving.maxBatchSize (16)"),
    ({"serving": {"replicas": 2}}, "spec.serving.replicas: must be 1 with a ReadWriteOnce volume"),
    ({"images": {"pytorch": ""}}, "spec.images.pytorch: must not be empty"),
    ({"images": {"triton": "UPPER/Case:tag"}},
     "spec.images.triton: must be an image reference [registry[:port]/]path[:tag][@sha256:digest] "
     'with a lowercase registry and path, for example "nvcr.io/nvidia/tritonserver:26.04-py3" '
     '(got "UPPER/Case:tag")'),
    ({"images": {"sdk": None, "stages": 3}}, "spec.images.stages: must be an image reference"),
    ({"storage": {"existingClaim": "mine", "size": "1Gi"}},
     "spec.storage.existingClaim: existingClaim and size are mutually exclusive"),
    ({"storage": {"size": "lots"}},
     'spec.storage.size: must be a Kubernetes quantity written as a string, for example "5Gi" '
     '(got "lots")'),
    # the API server refuses any JSON type but a string where the schema says string
    ({"storage": {"size": 1000}},
     'spec.storage.size: must be a Kubernetes quantity written as a string, for example "5Gi" '
     '(got the number 1000)'),
    ({"resources": {"train": {"requests": {"cpu": 2}}}},
     'spec.resources.train.requests.cpu: must be a Kubernetes quantity written as a string, '
     'for example "500m" or "2" (got the number 2)'),
    ({"storage": {"storageClassName": True}},
     "spec.storage.storageClassName: must be a string (got the boolean true)"),
    ({"training": {"learningRate": ""}}, "spec.training.learningRate: must be a decimal number"),
    ({"storage": {"accessMode": "ReadWriteOncePod"}}, "spec.storage.accessMode: must be one of"),
    ({"benchmark": {"perfAnalyzer": {"concurrency": {"start": 10, "end": 2}}}},
     "spec.benchmark.perfAnalyzer.concurrency.end: must be >= concurrency.start (empty range): 10:2"),
    ({"benchmark": {"perfAnalyzer": {"load": {"requestRate": {"start": 500, "end": 100}}}}},
     "spec.benchmark.perfAnalyzer.load.requestRate.end: must be >= requestRate.start "
     "(empty range): 500:100"),
    ({"benchmark": {"slo": {"p99Ms": -1}}}, "spec.benchmark.slo.p99Ms: must be >= 0 (got -1)"),
    ({"benchmark": {"perfAnalyzer": {"repeats": 11}}},
     "spec.benchmark.perfAnalyzer.repeats: must be <= 10 (got 11)"),
    ({"benchmark": {"perfAnalyzer": {"load": {"mode": "open"}}}},
     "spec.benchmark.perfAnalyzer.load.mode: must be one of 'concurrency', 'requestRate' "
     "(got 'open')"),
    ({"serving": {"models": ["onnx"]}, "tensorrt": {"enabled": False},
      "benchmark": {"perfAnalyzer": {"models": ["bls"]}}},
     "spec.benchmark.perfAnalyzer.models: each must be in serving.models"),
    ({"benchmark": {"perfAnalyzer": {"batchSize": 512}}},
     "spec.benchmark.perfAnalyzer.batchSize: must be <= serving.maxBatchSize"),
    ({"training": {"epoch": 3}}, "spec.training.epoch: unknown field"),
    ({"serving": "all"}, 'spec.serving: must be an object (got the string "all")'),
    ({"tensorrt": {"enabled": "yes"}}, 'spec.tensorrt.enabled: must be true or false (got the string "yes")'),
    ({"scheduling": {"nodeSelector": {"a": 1}}}, "spec.scheduling.nodeSelector: must be a map of strings"),
])
def test_bad_spec_names_the_field(spec, expected):
    errors = errors_of(spec)
    assert any(e.startswith(expected) for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_every_error_is_reported_not_just_the_first():
    errors = errors_of({"training": {"epochs": 0, "batchSize": 0}, "export": {"opset": 99}})
    assert [e.split(":")[0] for e in errors] == [
        "spec.training.epochs", "spec.training.batchSize", "spec.export.opset"]


def test_valid_variants_parse():
    for spec in (
        {"serving": {"replicas": 3}, "storage": {"accessMode": "ReadWriteMany"}},
        {"images": {"stages": "localhost:5000/mnist/operator:dev"}},
        {"images": {"triton": "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64}},
        {"serving": {"models": ["onnx"], "cpuOnly": True, "gpus": 0}, "tensorrt": {"enabled": False}},
        {"storage": {"existingClaim": "shared-models"}},
        {"training": {"learningRate": ".01", "momentum": "0"}},
    ):
        parse_spec(spec)


def test_rule_paths_are_unique_per_message():
    # Each rule names its field as the API server will (spec.<at>.<fieldPath>).
    seen = {(r.path, r.message) for r in CROSS_FIELD_RULES}
    assert len(seen) == len(CROSS_FIELD_RULES)
    assert all(r.path.startswith("spec.") for r in CROSS_FIELD_RULES)


# --------------------------------------------------------------------------- operator defaults
SITE = {"images": {"sdk": "registry.local/sdk:1", "pullPolicy": "Always"},
        "training": {"gpus": 0}, "serving": {"gpus": 2},
        "scheduling": {"nodeSelector": {"pool": "gpu"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}


def test_operator_defaults_fill_what_the_resource_leaves_out():
    spec = parse_spec(merge_defaults({"training": {"epochs": 3}}, SITE))
    assert spec.images.sdk == "registry.local/sdk:1" and spec.images.pull_policy == "Always"
    assert spec.training.gpus == 0 and spec.serving.gpus == 2
    assert spec.scheduling.node_selector == {"pool": "gpu"}
    assert [t.key for t in spec.scheduling.tolerations] == ["nvidia.com/gpu"]
    # built-in defaults stay the last fallback
    assert spec.training.epochs == 3 and spec.images.triton == "nvcr.io/nvidia/tritonserver:26.04-py3"
    assert spec.tensorrt.gpus == 1


def test_the_resource_wins_over_operator_defaults():
    spec = parse_spec(merge_defaults({"images": {"sdk": "mine/sdk:2"}, "serving": {"gpus": 1},
                                      "scheduling": {"nodeSelector": {"zone": "a"},
                                                     "tolerations": []}}, SITE))
    assert spec.images.sdk == "mine/sdk:2" and spec.images.pull_policy == "Always"
    assert spec.serving.gpus == 1
    # maps and lists are replaced whole, not merged: the resource can drop a site key
    assert spec.scheduling.node_selector == {"zone": "a"}
    assert spec.scheduling.tolerations == []


def test_no_defaults_means_built_in_defaults():
    assert (parse_spec(merge_defaults({}, None)) == parse_spec(merge_defaults({}, {}))
            == parse_spec({}) == MnistServingSpec())


def test_cpu_only_without_gpus_serves_on_zero_gpus_whatever_the_default():
    cpu = {"serving": {"models": ["onnx", "bls"], "cpuOnly": True}, "tensorrt": {"enabled": False}}
    assert parse_spec(cpu).serving.gpus == 0
    assert parse_spec(merge_defaults(cpu, SITE)).serving.gpus == 0
    errors = errors_of({**cpu, "serving": {**cpu["serving"], "gpus": 2}})
    assert errors == ["spec.serving.gpus: must be 0 with cpuOnly: true"]


def test_merge_leaves_its_inputs_alone_and_bad_shapes_to_parse():
    data = {"serving": {"cpuOnly": True}}
    merge_defaults(data, SITE)
    assert data == {"serving": {"cpuOnly": True}} and SITE["serving"] == {"gpus": 2}
    assert merge_defaults("oops", SITE) == "oops"
    assert errors_of({"serving": "all"}) == ['spec.serving: must be an object (got the string "all")']
    # a None section or field counts as left out, as parse_spec treats it
    assert merge_defaults({"images": None, "serving": {"gpus": None}}, SITE)["serving"]["gpus"] == 2


def test_operator_default_fields_are_the_operator_wide_ones():
    assert operator_default_paths() == [
        ("images", "pytorch"), ("images", "triton"), ("images", "sdk"), ("images", "stages"),
        ("images", "pullPolicy"), ("training", "gpus"), ("tensorrt", "gpus"), ("serving", "gpus"),
        ("scheduling", "nodeSelector"), ("scheduling", "tolerations"), ("resources",)]
