"""The accuracy guard: a served model below PyTorch's held-out accuracy by more
than the spec's tolerance is flagged in status and events, and the closed loop
never applies a tuned config to it."""
from __future__ import annotations

import copy

import pytest

from mnist_operator.core import accuracy
from mnist_operator.tools import compare
from mnist_operator.api.spec import SpecError, parse_spec

from test_closed_loop import ANALYZE_RESULT, APPLY, bench_result
from test_reconcile import World, events


def client(onnx: dict[str, str], bls: dict[str, str]) -> dict:
    return {"samples": 1000, "disagreements": 3,
            "accuracy": {"mnist_onnx": onnx, "mnist_bls": bls}}


def records(train_acc: str, client_result: dict) -> dict:
    return {"train": {"state": "Succeeded", "result": {"accuracy": train_acc}},
            "client": {"state": "Succeeded", "result": client_result}}


def test_a_model_is_judged_by_its_worst_protocol():
    got = accuracy.judge(records("0.9500", client({"grpc": "0.9500", "http": "0.9500"},
                                                  {"grpc": "0.9450", "http": "0.9300"})), 0.01)
    assert got.worst == {"mnist_onnx": 0.95, "mnist_bls": 0.93}
    assert got.below == ("mnist_bls",)
    # exactly the tolerance is still within it
    assert accuracy.judge(records("0.9500", client({"grpc": "0.9400"}, {"grpc": "0.95"})),
                          0.01).below == ()


def test_nothing_is_judged_until_train_and_client_succeeded():
    assert accuracy.judge({}, 0.01) is None
    failed = records("0.95", client({"grpc": "0.5"}, {"grpc": "0.5"}))
    failed["client"]["state"] = "Failed"
    assert accuracy.judge(failed, 0.01) is None
    assert accuracy.condition(None)[:2] == ("Unknown", "NotMeasured")


def flagged_world(spec: dict | None = None) -> World:
    w = World(copy.deepcopy(spec) if spec else None)
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve")
    return w


def test_a_model_below_tolerance_turns_the_condition_false_with_one_warning():
    w = flagged_world()
    assert w.cond("AccuracyWithinTolerance")["status"] == "Unknown"
    w.finish("client", result=client({"grpc": "0.9812", "http": "0.9812"},
                                     {"grpc": "0.9812", "http": "0.9000"}))
    d = w.step(1)
    cond = w.cond("AccuracyWithinTolerance")
    assert (cond["status"], cond["reason"]) == ("False", "BelowTolerance")
    assert cond["message"].startswith("mnist_bls below PyTorch's held-out accuracy")
    assert "mnist_bls 0.9000" in cond["message"] and "PyTorch 0.9812" in cond["message"]
    assert events(d).count(("Warning", "BelowTolerance")) == 1
    acc = w.status["clientAccuracy"]
    assert (acc["pytorch"], acc["tolerance"], acc["belowTolerance"]) == ("0.9812", "0.01",
                                                                         "mnist_bls")
    assert ("Warning", "BelowTolerance") not in events(w.step(1))   # said once
    # flagged, not failed: the pipeline goes on
    assert w.jobs("bench-grpc")


def test_a_wider_tolerance_clears_the_flag_and_reruns_nothing():
    w = flagged_world()
    w.finish("client", result=client({"grpc": "0.9812"}, {"grpc": "0.9000"}))
    w.step(1)
    before = {s: r["fingerprint"] for s, r in w.status["stages"].items()}
    w.edit_spec(serving={"accuracyTolerance": "0.1"})
    d = w.step(1)
    assert w.cond("AccuracyWithinTolerance")["status"] == "True"
    assert {s: r["fingerprint"] for s, r in w.status["stages"].items()} == before
    assert not [o for o in d.create if o["kind"] == "Job" and "client" in o["metadata"]["name"]]


def test_the_closed_loop_never_applies_a_tuned_config_to_a_flagged_model():
    def analyzed_world(onnx_accuracy: str) -> World:
        w = flagged_world(APPLY)
        w.finish("client", result=client({"grpc": onnx_accuracy}, {"grpc": "0.9812"}))
        w.step(1)
        for p in ("grpc", "http"):
            w.finish(f"bench-{p}", result=bench_result(p, "5000.0"))
            w.step(1)
        w.finish("analyze", result=ANALYZE_RESULT)
        w.step(1)
        return w

    assert analyzed_world("0.9812").jobs("repo-tuned")   # within tolerance: the best is applied
    w = analyzed_world("0.9000")
    assert not w.jobs("repo-tuned") and "repo-tuned" not in w.status["stages"]
    assert w.cond("AccuracyWithinTolerance")["reason"] == "BelowTolerance"
    assert "the closed loop leaves them as served" in w.cond("AccuracyWithinTolerance")["message"]


@pytest.mark.parametrize("value", ["1.5", "abc", "-0.1"])
def test_a_bad_tolerance_is_refused_naming_the_field(value):
    with pytest.raises(SpecError, match=r"spec\.serving\.accuracyTolerance"):
        parse_spec({"serving": {"accuracyTolerance": value}})


def test_compare_marks_a_model_below_tolerance():
    status = {"phase": "Ready", "clientAccuracy": {
        "mnist_onnx": {"grpc": "0.9812"}, "mnist_bls": {"grpc": "0.9000"},
        "pytorch": "0.9812", "tolerance": "0.01", "belowTolerance": "mnist_bls"},
        "benchmark": {"perfAnalyzer": {m: {"grpc": {"bestInferPerSec": "100.0",
                                                    "concurrencyAtBest": 1, "p99UsAtBest": 900}}
                                       for m in ("mnist_onnx", "mnist_bls")}}}
    rows = {r.model: r for r in compare.rows_of("run", status)}
    assert rows["mnist_bls"].accuracy == "0.9000 (below tolerance)"
    assert rows["mnist_onnx"].accuracy == "0.9812"
    assert "0.9000 (below tolerance)" in compare.csv_text(list(rows.values()))
