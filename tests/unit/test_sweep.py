"""The sweep: axes -> points -> child MnistServings, bounded by maxParallel, and a
status that ranks the points (core/sweep.py, api/sweep.py)."""
from __future__ import annotations

import copy
import itertools
import random
from datetime import datetime, timezone

import pytest

from mnist_operator.api import sweep as W
from mnist_operator.api.spec import SpecError
from mnist_operator.core import sweep as C

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
H100, A100 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"


def sweep_cr(spec: dict, name: str = "which-gpu", generation: int = 1) -> dict:
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
            "metadata": {"name": name, "namespace": "ml", "uid": "uid-sweep",
                         "generation": generation}, "spec": spec}


SPEC = {"template": {"serving": {"models": ["onnx"]}},
        "axes": [{"field": "scheduling.gpuProduct", "values": [H100, A100]},
                 {"field": "serving.instances", "values": [1, 2]}],
        "maxParallel": 2, "costs": {H100: "4.00", A100: "2.00"}}


def refused(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as err:
        W.parse_sweep(spec)
    return err.value.errors


# --------------------------------------------------------------------------- axes and points
def test_the_product_of_the_axes_is_the_points_in_their_order():
    spec = W.parse_sweep(SPEC)
    assert [p.describe() for p in W.points(spec)] == [
        f'scheduling.gpuProduct="{H100}", serving.instances=1',
        f'scheduling.gpuProduct="{H100}", serving.instances=2',
        f'scheduling.gpuProduct="{A100}", serving.instances=1',
        f'scheduling.gpuProduct="{A100}", serving.instances=2']
    point = W.points(spec)[3]
    # a point stops serving once measured: its GPU goes to the next point
    assert W.point_spec(spec.template, point) == {
        "serving": {"models": ["onnx"], "stopAfterBenchmark": True, "instances": 2},
        "scheduling": {"gpuProduct": A100}}
    assert spec.template == {"serving": {"models": ["onnx"]}}          # the template is untouched
    keep = {"serving": {"models": ["onnx"], "stopAfterBenchmark": False}}
    assert W.point_spec(keep, point)["serving"]["stopAfterBenchmark"] is False


def test_a_point_keeps_its_name_when_values_are_added_or_axes_reordered():
    names = {p.key: p.child_name("s") for p in W.points(W.parse_sweep(SPEC))}
    grown = copy.deepcopy(SPEC)
    grown["axes"] = [{"field": "serving.instances", "values": [1, 2, 4]}, SPEC["axes"][0]]
    again = {p.key: p.child_name("s") for p in W.points(W.parse_sweep(grown))}
    assert len(again) == 6 and all(again[k] == v for k, v in names.items())
    assert len(set(again.values())) == 6 and all(n.startswith("s-") for n in again.values())


@pytest.mark.parametrize("axes, message", [
    ([{"field": "serving.instancez", "values": [1]}],
     "spec.axes[0].field: 'serving.instancez' names no MnistServing spec field"),
    ([{"field": "instances", "values": [1]}],
     "spec.axes[0].field: 'instances' names no MnistServing spec field "
     "(did you mean serving.instances?)"),
    ([{"field": "serving", "values": [{}]}],
     "spec.axes[0].field: 'serving' names no MnistServing spec field"),
    ([{"field": "serving.instances", "values": [1, "two"]}],
     'spec.axes[0].values[1]: "two" for serving.instances: must be an integer '
     '(got the string "two")'),
    ([{"field": "serving.instances", "values": [0]}],
     "spec.axes[0].values[0]: 0 for serving.instances: must be >= 1 (got 0)"),
    ([{"field": "serving.instances", "values": [2, 2]}],
     "spec.axes[0].values[1]: 2 is listed twice"),
    ([{"field": "serving.instances", "values": []}],
     "spec.axes[0].values: required, a non-empty list of values for serving.instances"),
    ([{"field": "serving.instances", "values": [1]}, {"field": "serving.instances", "values": [2]}],
     "spec.axes: serving.instances is swept by more than one axis"),
    ([{"field": "serving.instances", "values": list(range(1, 9))},
      {"field": "serving.maxBatchSize", "values": list(range(64, 73))}],
     "spec.axes: 72 points (8 x 9); at most 64"),
    ([{"field": "serving.maxBatchSize", "values": [16]}],
     "spec.axes: the point serving.maxBatchSize=16: spec.serving.dynamicBatching."
     "preferredBatchSizes: each must be <= serving.maxBatchSize (16)"),
])
def test_a_bad_axis_is_refused_naming_the_axis_and_value(axes, message):
    assert refused({"axes": axes}) == [message]


def test_a_bad_template_objective_or_price_is_refused_naming_the_field():
    assert refused({"template": {"serving": {"instances": 0}},
                    "axes": [{"field": "serving.gpus", "values": [1]}],
                    "objective": "cheapest", "costs": {H100: 4}, "maxParallel": 0}) == [
        "spec.template.serving.instances: must be >= 1 (got 0)",
        "spec.maxParallel: must be an integer in 1..64 (got 0)",
        "spec.objective: must be one of throughput, throughputAtSlo, inferencesPerJoule, "
        "costPerMillion (got 'cheapest')",
        f'spec.costs.{H100}: a price per GPU hour as a decimal string, e.g. "4.10" (got 4)']
    assert refused({"axes": [{"field": "serving.gpus", "values": [1]}],
                    "objective": "costPerMillion"}) == [
        "spec.costs: objective costPerMillion needs the price of each GPU product"]


# --------------------------------------------------------------------------- a world of children
BENCH = {  # a point's measured figures by (gpu, instances): median, low, high over 3 repeats
    (H100, 1): ("9000.0", "8900.0", "9100.0"), (H100, 2): ("12000.0", "11800.0", "12200.0"),
    (A100, 1): ("8950.0", "8700.0", "9250.0"), (A100, 2): ("6000.0", "5900.0", "6100.0"),
}
P99 = {(H100, 1): 900, (H100, 2): 1500, (A100, 1): 800, (A100, 2): 2000}


def merged(live: dict, patch: dict) -> dict:
    out = dict(live)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


class World:
    """The API server for the sweep's children: what it creates exists, a pass later
    its children run, and `finish` makes them Ready with figures (or Failed)."""

    def __init__(self, spec: dict = SPEC):
        self.sweep = sweep_cr(copy.deepcopy(spec))
        self.children: dict[str, dict] = {}
        self.most_unfinished = 0

    def step(self) -> C.SweepDecision:
        d = C.reconcile_sweep(copy.deepcopy(self.sweep), copy.deepcopy(list(self.children.values())),
                              NOW)
        for obj in d.create:
            assert obj["metadata"]["name"] not in self.children
            self.children[obj["metadata"]["name"]] = {**copy.deepcopy(obj),
                                                      "status": {"phase": "Training"}}
        for obj in d.update:   # a JSON merge patch, as the API server applies it
            live = self.children[obj["metadata"]["name"]]
            live["metadata"]["annotations"].update(obj["metadata"]["annotations"])
            live["spec"] = merged(live["spec"], obj["spec"])
        for ref in d.delete:
            del self.children[ref["name"]]
        self.sweep["status"] = d.status
        unfinished = sum(c["status"]["phase"] not in ("Ready", "Failed")
                         for c in self.children.values())
        self.most_unfinished = max(self.most_unfinished, unfinished)
        return d

    def finish(self, failed: set = frozenset()) -> None:
        for c in self.children.values():
            if c["status"]["phase"] in ("Ready", "Failed"):
                continue
            key = (c["spec"]["scheduling"]["gpuProduct"], c["spec"]["serving"].get("instances", 1))
            if key in failed:
                c["status"] = {"phase": "Failed", "message": "train: Job failed 3 times: OOMKilled"}
                continue
            value, low, high = BENCH[key]
            c["status"] = {"phase": "Ready", "benchmark": {"perfAnalyzer": {"mnist_onnx": {
                "grpc": {"bestInferPerSec": value, "p99UsAtBest": P99[key], "repeats": 3,
                         "lowAtBest": low, "highAtBest": high, "inferPerJouleAtBest": "30.0"},
                "http": {"bestInferPerSec": "10.0", "p99UsAtBest": 1}}}}}


def run_to_the_end(world: World, failed: set = frozenset()) -> list[C.SweepDecision]:
    decisions = []
    for _ in range(10):
        decisions.append(world.step())
        if world.sweep["status"]["phase"] == C.COMPLETE:
            break
        world.finish(failed)
    return decisions


def test_points_start_in_order_never_more_than_max_parallel_and_the_sweep_completes():
    world = World()
    first = world.step()
    assert [o["metadata"]["name"] for o in first.create] == [
        p.child_name("which-gpu") for p in W.points(W.parse_sweep(SPEC))][:2]
    assert world.sweep["status"]["progress"] == {"total": 4, "ready": 0, "failed": 0,
                                                 "running": 2, "waiting": 2}
    assert world.step().create == []                   # both slots taken: nothing new
    decisions = run_to_the_end(world)
    assert world.most_unfinished == 2
    status = world.sweep["status"]
    assert status["phase"] == "Complete" and status["readyPoints"] == "4/4"
    assert decisions[-1].requeue_after is None and decisions[-1].create == []
    complete = [c for c in status["conditions"] if c["type"] == "Complete"][0]
    assert complete["status"] == "True" and complete["reason"] == "AllPointsFinished"
    assert [e.reason for d in decisions for e in d.events].count("SweepComplete") == 1
    assert world.step().events == []                   # fed its own result: nothing new


def test_the_status_ranks_the_points_with_verdicts_a_front_and_costs():
    world = World()
    run_to_the_end(world)
    status = world.sweep["status"]
    rows = {(r["values"]["scheduling.gpuProduct"], r["values"]["serving.instances"]): r
            for r in status["points"]}
    best = rows[(H100, 2)]
    assert status["best"] == {"point": best["name"], "values": best["values"], "value": "12000.0"}
    assert best["model"] == "mnist_onnx" and best["protocol"] == "grpc" and best["p99Us"] == 1500
    assert best["costPerMillion"] == f"{4.00 / (12000.0 * 3600) * 1e6:.4f}"
    assert rows[(A100, 1)]["costPerMillion"] == f"{2.00 / (8950.0 * 3600) * 1e6:.4f}"
    by_point = {v["point"]: v for v in status["verdicts"]}
    assert best["name"] not in by_point and len(by_point) == 3
    assert by_point[rows[(A100, 2)]["name"]]["verdict"] == "better"   # best / 6000: far above 1
    assert {v["verdict"] for v in by_point.values()} == {"better"}
    # the front: (H100,2) fastest; (A100,1) the lowest p99; (H100,1) is beaten by neither
    assert status["pareto"] == [rows[(H100, 2)]["name"], rows[(H100, 1)]["name"],
                                rows[(A100, 1)]["name"]]


def test_two_close_points_are_no_difference_and_one_repeat_gives_no_interval():
    world = World({**SPEC, "axes": [{"field": "scheduling.gpuProduct", "values": [H100, A100]}]})
    run_to_the_end(world)   # instances 1 for both: 9000 [8900, 9100] against 8950 [8700, 9250]
    (verdict,) = world.sweep["status"]["verdicts"]
    assert verdict["verdict"] == "no difference" and float(verdict["low"]) < 1 < float(verdict["high"])
    for child in world.children.values():
        grpc = child["status"]["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
        for key in ("lowAtBest", "highAtBest", "repeats"):
            grpc.pop(key)
    world.step()
    (verdict,) = world.sweep["status"]["verdicts"]
    assert verdict["verdict"] == "no interval" and "low" not in verdict


def test_each_objective_picks_its_own_best():
    for objective, expected in (("throughput", (H100, 2)), ("costPerMillion", (A100, 1))):
        world = World({**SPEC, "objective": objective})
        run_to_the_end(world)
        best = world.sweep["status"]["best"]["values"]
        assert (best["scheduling.gpuProduct"], best["serving.instances"]) == expected, objective


def test_a_failed_point_is_a_row_with_its_reason_not_a_failed_sweep():
    world = World()
    decisions = run_to_the_end(world, failed={(A100, 2)})
    status = world.sweep["status"]
    assert status["phase"] == "Complete" and status["progress"]["failed"] == 1
    failed = [r for r in status["points"] if r["phase"] == "Failed"]
    assert [r["reason"] for r in failed] == ["train: Job failed 3 times: OOMKilled"]
    warnings = [e for d in decisions for e in d.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["PointFailed"]
    assert status["message"].startswith("3/4 points measured, 1 Failed; best ")


def test_a_changed_axis_adds_and_removes_points_and_keeps_finished_ones():
    world = World()
    run_to_the_end(world)
    kept = {n for n, c in world.children.items() if c["spec"]["serving"]["instances"] == 1}
    gone = set(world.children) - kept
    world.sweep["spec"]["axes"][1]["values"] = [1, 4]
    d = world.step()
    assert {r["name"] for r in d.delete} == gone and len(gone) == 2
    assert kept <= set(world.children) and len(world.children) == 4
    assert sorted(c["spec"]["serving"]["instances"] for c in world.children.values()) == [1, 1, 4, 4]
    assert all(world.children[n]["status"]["phase"] == "Ready" for n in kept)


def test_a_changed_template_updates_every_child_spec_once():
    world = World()
    world.step()
    for child in world.children.values():   # the API server's defaults, never sent by the sweep
        child["spec"]["training"] = {"epochs": 2}
    assert world.step().update == []
    world.sweep["spec"]["template"]["serving"]["maxBatchSize"] = 64
    world.sweep["spec"]["template"]["serving"]["dynamicBatching"] = {"preferredBatchSizes": [32]}
    d = world.step()
    assert len(d.update) == 2 and all(u["spec"]["serving"]["maxBatchSize"] == 64 for u in d.update)
    assert all(u["spec"]["training"] is None for u in d.update)   # not the sweep's: reset
    assert world.step().update == []
    del world.sweep["spec"]["template"]["serving"]["maxBatchSize"]
    del world.sweep["spec"]["template"]["serving"]["dynamicBatching"]
    world.step()
    assert all("maxBatchSize" not in c["spec"]["serving"] for c in world.children.values())


def test_children_are_owned_labelled_and_carry_their_point():
    child = World().step().create[0]
    md = child["metadata"]
    assert md["ownerReferences"][0]["kind"] == "MnistServingSweep"
    assert md["ownerReferences"][0]["controller"] is True
    assert md["labels"][C.LABEL_SWEEP] == "which-gpu"
    assert md["annotations"][C.ANNOTATION_POINT] == (
        '{"scheduling.gpuProduct":"NVIDIA-H100-80GB-HBM3","serving.instances":1}')


def test_an_invalid_sweep_fails_once_with_one_warning():
    world = World({"axes": [{"field": "serving.instancez", "values": [1]}]})
    first = world.step()
    assert world.sweep["status"]["phase"] == "Failed" and first.create == []
    assert [e.reason for e in first.events] == ["InvalidSpec"]
    assert "serving.instancez" in world.sweep["status"]["message"]
    assert world.step().events == []


# --------------------------------------------------------------------------- pure pieces
def test_the_pareto_front_matches_a_brute_force_check():
    rng = random.Random(7)
    for _ in range(200):
        rows = [{"name": f"p{i}", "phase": "Ready", "inferPerSec": str(rng.randint(1, 20)),
                 "p99Us": rng.randint(1, 20)} for i in range(rng.randint(1, 8))]
        front = set(C.pareto_front(rows))
        for r, o in itertools.product(rows, rows):
            dominates = (float(o["inferPerSec"]) >= float(r["inferPerSec"]) and o["p99Us"] <= r["p99Us"]
                         and (o["inferPerSec"], o["p99Us"]) != (r["inferPerSec"], r["p99Us"]))
            if dominates:
                assert r["name"] not in front
        assert all(any(o["name"] in front for o in rows
                       if float(o["inferPerSec"]) >= float(r["inferPerSec"]) and o["p99Us"] <= r["p99Us"])
                   for r in rows)


def test_cost_per_million_inferences():
    assert C.cost_per_million("3.60", 1, 1000.0) == "1.0000"     # $3.60/h, 3.6M inferences/h
    assert C.cost_per_million("3.60", 2, 1000.0) == "2.0000"
    assert C.cost_per_million(None, 1, 1000.0) is None and C.cost_per_million("1", 1, 0.0) is None


def test_the_sample_sweep_parses_and_its_points_render():
    from pathlib import Path

    import yaml

    from mnist_operator.tools import render
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "manifests" / "samples"
                          / "mnistservingsweep.yaml").read_text())
    spec = W.parse_sweep(doc["spec"])
    assert len(W.points(spec)) == 4 and spec.objective == "costPerMillion"
    for child in World(doc["spec"]).step().create:
        assert render.check_resource(child, "") == []


def test_a_point_that_applied_its_best_config_is_ranked_on_what_it_serves_now():
    """applyBest: the point serves model-analyzer's best config, so its row holds the
    tuned bench's figures (closedLoop.perfAnalyzer), not the ones measured before."""
    status = {"phase": "Ready", "benchmark": {
        "throughputOf": "tuned",
        "perfAnalyzer": {"mnist_onnx": {"grpc": {"bestInferPerSec": "11329.6",
                                                 "p99UsAtBest": 900}}},
        "closedLoop": {"perfAnalyzer": {"mnist_onnx": {"grpc": {"bestInferPerSec": "40858.5",
                                                                "p99UsAtBest": 1400}}}}}}
    spec = W.parse_sweep(SPEC)
    point = W.points(spec)[0]
    row = C.point_row(spec, point, "p", {"spec": {}, "status": status})
    assert (row["inferPerSec"], row["p99Us"], row["config"]) == ("40858.5", 1400, "tuned")
    before = dict(status, benchmark={k: v for k, v in status["benchmark"].items()
                                     if k != "throughputOf"})
    row = C.point_row(spec, point, "p", {"spec": {}, "status": before})
    assert (row["inferPerSec"], row["p99Us"]) == ("11329.6", 900) and "config" not in row
