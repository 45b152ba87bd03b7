"""What a change of the chart's stageDefaults re-runs (values.yaml and
docs/defaults-and-security.md say it): only images.pytorch, images.triton and
gpus.serving enter a step's fingerprint; the other fields, resources among them,
re-run nothing. Each value goes the way the chart sends it: an environment
variable read by site_defaults, merged under a resource that leaves it out."""
from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from mnist_operator.api import site_defaults
from mnist_operator.api.spec import merge_defaults, parse_spec
from mnist_operator.core import pipeline

AFTER_ENGINE = ["engine", "repo", "serve", "client", "bench-grpc", "bench-http", "analyze"]
SERVE_ON = ["serve", "client", "bench-grpc", "bench-http"]


def fingerprints(environ: dict[str, str], resource: dict | None = None) -> dict[str, str]:
    spec = parse_spec(merge_defaults(resource or {}, site_defaults.from_env(environ)))
    return {s.name: s.fingerprint
            for s in pipeline.plan(spec, pipeline.Layout(PurePosixPath("/work")))}


def rerun(variable: str, value: str, resource: dict | None = None) -> list[str]:
    before = fingerprints({}, resource)
    after = fingerprints({f"MNIST_SERVING_DEFAULT_{variable}": value}, resource)
    return [name for name in after if after[name] != before[name]]


#: (variable, a new value, the steps it re-runs): the table of the docs
TABLE = [
    ("IMAGE_PYTORCH", "nvcr.io/nvidia/pytorch:26.05-py3", AFTER_ENGINE),
    ("IMAGE_TRITON", "nvcr.io/nvidia/tritonserver:26.05-py3", SERVE_ON),
    ("GPUS_SERVING", "2", SERVE_ON),
    ("IMAGE_SDK", "nvcr.io/nvidia/tritonserver:26.05-py3-sdk", []),
    ("IMAGE_STAGES", "registry.local/mnist-serving/operator:0.2.0", []),
    ("IMAGE_PULL_POLICY", "Always", []),
    ("GPUS_TRAINING", "2", []),
    ("GPUS_ENGINE", "2", []),
    ("NODE_SELECTOR", '{"nvidia.com/gpu.product": "NVIDIA-H100"}', []),
    ("TOLERATIONS", "[]", []),
    ("RESOURCES", '{"train": {"limits": {"memory": "16Gi"}}, "triton": {"requests": {"cpu": "2"}}}',
     []),
]


@pytest.mark.parametrize("variable, value, steps", TABLE)
def test_a_stage_default_reruns_exactly_the_steps_that_hash_it(variable, value, steps):
    assert rerun(variable, value) == steps


def test_every_stage_default_is_in_the_table():
    assert {v.removeprefix("MNIST_SERVING_DEFAULT_") for v in site_defaults.DEFAULT_FIELDS} \
        == {row[0] for row in TABLE}


def test_a_resource_that_sets_the_field_is_not_touched_by_its_default():
    own = {"images": {"pytorch": "nvcr.io/nvidia/pytorch:26.04-py3"}}
    assert rerun("IMAGE_PYTORCH", "nvcr.io/nvidia/pytorch:26.05-py3", own) == []
