"""The step graph: which steps a spec change re-runs (the promise both runners keep)."""
from pathlib import PurePosixPath

import pytest

from mnist_operator.core import pipeline
from mnist_operator.api.spec import parse_spec

ALL = ["train", "export", "engine", "repo", "serve", "client", "bench-grpc", "bench-http", "analyze"]
LAY = pipeline.Layout(PurePosixPath("/work"))


def fingerprints(spec_dict: dict, lay=LAY, endpoints=pipeline.Endpoints()) -> dict[str, str]:
    return {s.name: s.fingerprint for s in pipeline.plan(parse_spec(spec_dict), lay, endpoints)}


def rerun(before: dict, after: dict) -> list[str]:
    a, b = fingerprints(before), fingerprints(after)
    return [name for name in b if a.get(name) != b[name]]


def test_steps_in_order_with_their_stage_module():
    steps = pipeline.plan(parse_spec({}), LAY)
    assert [s.name for s in steps] == ALL
    assert {s.name: s.stage for s in steps}["bench-http"] == "bench"
    assert all(len(s.fingerprint) == 12 for s in steps)


@pytest.mark.parametrize("change,expected", [
    ({"training": {"learningRate": "0.01"}}, ALL),
    ({"training": {"gpus": 0}}, []),                         # where it trains, not what
    ({"export": {"opset": 18}}, ALL[1:]),
    ({"tensorrt": {"precision": "fp16"}}, ["engine", "repo", "serve", "client",
                                           "bench-grpc", "bench-http", "analyze"]),
    ({"serving": {"instances": 2}}, ["repo", "serve", "client", "bench-grpc", "bench-http",
                                     "analyze"]),
    ({"serving": {"replicas": 1, "gpus": 2}}, ["serve", "client", "bench-grpc", "bench-http"]),
    ({"benchmark": {"perfAnalyzer": {"concurrency": {"end": 65}}}}, ["bench-grpc", "bench-http"]),
    ({"benchmark": {"perfAnalyzer": {"protocols": ["grpc"]}}}, []),   # bench-http just goes away
    ({"benchmark": {"perfAnalyzer": {"repeats": 3}}}, ["bench-grpc", "bench-http"]),
    ({"benchmark": {"perfAnalyzer": {"repeats": 1}}}, []),
    ({"benchmark": {"perfAnalyzer": {"load": {"mode": "requestRate"}}}},
     ["bench-grpc", "bench-http"]),
    ({"benchmark": {"perfAnalyzer": {"load": {"distribution": "poisson"}}}}, []),  # unused
    ({"benchmark": {"slo": {"p99Ms": 10}}}, ["bench-grpc", "bench-http", "analyze"]),
    ({"benchmark": {"slo": {"p99Ms": 0}}}, []),
    ({"benchmark": {"runId": "again"}}, ["bench-grpc", "bench-http", "analyze"]),
    ({"benchmark": {"modelAnalyzer": {"maxInstances": 3}}}, ["analyze"]),
    # a new NGC release: the plan is built again for its TensorRT, nothing is retrained
    ({"images": {"pytorch": "nvcr.io/nvidia/pytorch:26.05-py3",
                 "triton": "nvcr.io/nvidia/tritonserver:26.05-py3"}},
     ["engine", "repo", "serve", "client", "bench-grpc", "bench-http", "analyze"]),
    ({"serving": {"accuracyTolerance": "0.05"}}, []),         # judges results, makes nothing
])
def test_a_spec_change_reruns_only_what_it_affects(change, expected):
    assert rerun({}, change) == expected


def test_fingerprints_do_not_depend_on_where_or_how_it_runs():
    local = fingerprints({}, pipeline.Layout(PurePosixPath("/tmp/runs/demo")),
                         pipeline.Endpoints("127.0.0.1", 18000, 18001, 18002))
    assert local == fingerprints({})
    # the local runner's Triton: its own metrics port reaches the bench command
    local_bench = next(s for s in pipeline.plan(parse_spec({}), LAY, pipeline.Endpoints(
        "127.0.0.1", 18000, 18001, 18002)) if s.name == "bench-http").args
    assert local_bench[local_bench.index("--metrics-url") + 1] == "http://127.0.0.1:18002/metrics"
    # the bench steps differ by where Triton's metrics are read, and nothing else
    other_metrics = fingerprints({}, endpoints=pipeline.Endpoints(metrics_port=19002))
    assert other_metrics == fingerprints({})


def test_disabled_steps_are_marked_and_need_no_gpu():
    steps = {s.name: s for s in pipeline.plan(parse_spec(
        {"tensorrt": {"enabled": False}, "serving": {"models": ["onnx", "bls"]},
         "benchmark": {"modelAnalyzer": {"enabled": False}}}), LAY)}
    for name in ("engine", "analyze"):
        assert not steps[name].enabled and steps[name].skip_reason == "Disabled"
        assert steps[name].gpus == 0


def test_step_arguments_carry_the_spec_and_the_endpoints():
    steps = {s.name: s for s in pipeline.plan(parse_spec(
        {"benchmark": {"perfAnalyzer": {"concurrency": {"start": 4, "end": 8, "step": 2}}}}),
        LAY, pipeline.Endpoints("demo-triton.ml.svc"))}
    bench = list(steps["bench-grpc"].args)
    assert bench[bench.index("--url") + 1] == "demo-triton.ml.svc:8001"
    assert bench[bench.index("--concurrency") + 1] == "4:8:2"
    assert bench[bench.index("--out") + 1] == "/work/bench/grpc"
    assert bench[bench.index("--metrics-url") + 1] == "http://demo-triton.ml.svc:8002/metrics"
    train = list(steps["train"].args)
    assert train[train.index("--data-dir") + 1] == "/work/data"


def test_is_done_needs_the_same_fingerprint_and_a_finished_state():
    step = pipeline.plan(parse_spec({}), LAY)[0]
    assert pipeline.is_done(step, {"state": "Succeeded", "fingerprint": step.fingerprint})
    assert pipeline.is_done(step, {"state": "Skipped", "fingerprint": step.fingerprint})
    assert not pipeline.is_done(step, {"state": "Failed", "fingerprint": step.fingerprint})
    assert not pipeline.is_done(step, {"state": "Succeeded", "fingerprint": "0" * 12})
    assert not pipeline.is_done(step, None)


def test_stale_after_follows_the_graph():
    steps = pipeline.plan(parse_spec({}), LAY)
    assert pipeline.stale_after(steps, "serve") == ["serve", "client", "bench-grpc", "bench-http"]
    assert pipeline.stale_after(steps, "repo") == ALL[3:]


def test_request_rate_mode_reaches_the_bench_command_line():
    spec = {"benchmark": {"perfAnalyzer": {"load": {
        "mode": "requestRate", "distribution": "poisson",
        "requestRate": {"start": 100, "end": 700, "step": 300}}}}}
    args = next(s for s in pipeline.plan(parse_spec(spec), LAY) if s.name == "bench-grpc").args
    for flag, value in (("--load-mode", "requestRate"), ("--request-rate", "100:700:300"),
                        ("--request-distribution", "poisson")):
        assert args[args.index(flag) + 1] == value
    closed = next(s for s in pipeline.plan(parse_spec({}), LAY) if s.name == "bench-grpc").args
    assert "--request-rate" not in closed and "--request-distribution" not in closed


def test_the_slo_reaches_bench_and_analyze_and_a_change_keeps_training():
    spec = {"benchmark": {"slo": {"p99Ms": 10, "p95Ms": 4}}}
    steps = {s.name: s for s in pipeline.plan(parse_spec(spec), LAY)}
    for name in ("bench-grpc", "analyze"):
        args = steps[name].args
        assert args[args.index("--slo-p99-ms") + 1] == "10"
        assert args[args.index("--slo-p95-ms") + 1] == "4"
    assert "--slo-p99-ms" not in next(s for s in pipeline.plan(parse_spec({}), LAY)
                                      if s.name == "analyze").args
    assert rerun(spec, {"benchmark": {"slo": {"p99Ms": 20, "p95Ms": 4}}}) == \
        ["bench-grpc", "bench-http", "analyze"]
