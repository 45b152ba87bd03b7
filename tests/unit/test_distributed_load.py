"""Distributed load, control plane: benchmark.perfAnalyzer.clients through the
spec, the plan, the Indexed Job, the core reading index 0's result, the local
Indexed Job, and the status, summary and compare that show the scaling check."""
from __future__ import annotations

import copy
import json
import sys

import pytest

from mnist_operator.core import builders as B
from mnist_operator.core import pipeline as P
from mnist_operator.tools.compare import rows_of
from mnist_operator.local import processes
from mnist_operator.local.display import headline, perf_table
from mnist_operator.core.summary import summarize
from mnist_operator.api.spec import SpecError, parse_spec
from test_reconcile import World, walk_numbers

LAY = P.Layout(P.PurePosixPath("/work"))
CLIENTS = {"benchmark": {"perfAnalyzer": {"clients": 2}}}
INDEX = "batch.kubernetes.io/job-completion-index"


def plan(spec: dict) -> dict[str, P.Step]:
    return {s.name: s for s in P.plan(parse_spec(spec), LAY)}


def test_clients_is_measured_input_of_the_bench_steps_only():
    one, two = plan({}), plan(CLIENTS)
    for name in one:
        same = one[name].fingerprint == two[name].fingerprint
        assert same == (not name.startswith("bench-")), name
    assert "--clients" not in one["bench-grpc"].args and one["bench-grpc"].pods == 1
    args = two["bench-grpc"].args
    assert args[args.index("--clients") + 1] == "2" and two["bench-grpc"].pods == 2
    # clients: 1 written out is the default: nothing re-runs
    explicit = plan({"benchmark": {"perfAnalyzer": {"clients": 1}}})
    assert {n: s.fingerprint for n, s in explicit.items()} == \
        {n: s.fingerprint for n, s in one.items()}


@pytest.mark.parametrize("extra, words", [
    ({"benchmark": {"perfAnalyzer": {"clients": 2, "load": {"mode": "requestRate"}}}},
     "must be 1 with load.mode requestRate"),
    ({"benchmark": {"perfAnalyzer": {"clients": 2, "repeats": 3}}}, "must be 1 with repeats > 1"),
    ({"benchmark": {"perfAnalyzer": {"clients": 2}, "slo": {"p99Ms": 5}}},
     "must be 1 with a benchmark.slo"),
    ({"benchmark": {"perfAnalyzer": {"clients": 65}}}, ""),
])
def test_what_several_clients_cannot_do_is_refused_naming_the_field(extra, words):
    with pytest.raises(SpecError) as err:
        parse_spec(extra)
    assert "spec.benchmark.perfAnalyzer.clients" in str(err.value) and words in str(err.value)


def test_the_bench_job_is_an_indexed_job_of_one_pod_per_client():
    cr = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
          "metadata": {"name": "demo", "namespace": "ml", "uid": "u"}, "spec": CLIENTS}
    spec = parse_spec(CLIENTS)
    steps = B.plan_for(cr, spec)
    bench = next(s for s in steps if s.name == "bench-grpc")
    job = B.build_step_job(cr, spec, bench, 0)
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"], js["backoffLimit"]) \
        == ("Indexed", 2, 2, 0)
    pod = js["template"]["spec"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = spread[0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= \
        js["template"]["metadata"]["labels"].items()
    # ReadWriteOnce (the default): still required on Triton's node, spreading is only preferred
    assert "podAffinity" in pod["affinity"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MNIST_CLIENTS_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    train = B.build_step_job(cr, spec, steps[0], 0)
    assert "completionMode" not in train["spec"]
    assert "podAntiAffinity" not in train["spec"]["template"]["spec"]["affinity"]


AGGREGATE = {"stage": "bench", "state": "Succeeded", "protocol": "grpc", "clients": 2,
             "concurrency": "1:257:64",
             "message": "2 clients; mnist_onnx: the client was the limit (1 client(s) 2000.0, "
                        "2 clients 3000.0 infer/s at c=65)",
             "models": {"mnist_onnx": {
                 "rows": [{"c": 1, "inferPerSec": "600.0", "p99Us": 900, "little": "ok"},
                          {"c": 65, "inferPerSec": "3000.0", "p99Us": 30000, "little": "ok"}],
                 "best": {"c": 65, "inferPerSec": "3000.0", "p99Us": 30000},
                 "batchingGain": "5.00", "littleFailures": 0,
                 "scaling": {"c": 65, "clients": [1, 2], "inferPerSec": ["2000.0", "3000.0"],
                             "ratio": "1.50", "limit": "client", "threshold": "1.10"}}}}


def finish_indexed(world: World, step: str, results: dict[int, dict], succeeded: int) -> None:
    """The job controller and kubelets: ``results`` per completion index, index 1
    finishing after index 0 (the aggregator's message must win anyway)."""
    job = world.job(step)
    name = job["metadata"]["name"]
    for i, result in results.items():
        world.pods.append({"metadata": {"name": f"{name}-{i}", "labels": {"job-name": name},
                                        "annotations": {INDEX: str(i)}},
                           "status": {"phase": "Succeeded", "containerStatuses": [{
                               "name": "bench", "state": {"terminated": {
                                   "exitCode": 0, "message": json.dumps(result),
                                   "finishedAt": f"2025-03-01T12:1{i}:00Z"}}}]}})
    done = succeeded == job["spec"]["completions"]
    job["status"] = {"startTime": "2025-03-01T12:00:00Z", "succeeded": succeeded,
                     **({"completionTime": "2025-03-01T12:11:00Z", "conditions": [
                         {"type": "Complete", "status": "True"}]} if done else {})}


def test_the_core_reads_index_0s_result_and_waits_for_every_index():
    world = World(copy.deepcopy(CLIENTS))
    world.step()
    world.run_through("train", "export", "engine", "repo", "serve", "client")
    assert world.job("bench-grpc")["spec"]["completions"] == 2
    small = {"stage": "bench", "state": "Succeeded", "client": 1, "aggregatedBy": 0}
    finish_indexed(world, "bench-grpc", {0: AGGREGATE}, succeeded=1)
    world.step(1)
    assert world.stage("bench-grpc")["state"] == "Running"   # one of two pods done
    world.pods.clear()
    finish_indexed(world, "bench-grpc", {0: AGGREGATE, 1: small}, succeeded=2)
    world.step(1)
    stage = world.stage("bench-grpc")
    assert stage["state"] == "Succeeded" and stage["result"]["clients"] == 2
    # the verdict in the record's message and in the Event a user sees
    assert stage["message"] == AGGREGATE["message"]
    assert ("StageSucceeded", f"bench-grpc: {AGGREGATE['message']}") in \
        [(e.reason, e.message) for e in world.decisions[-1].events]
    point = world.status["benchmark"]["perfAnalyzer"]["mnist_onnx"]["grpc"]
    assert point["clients"] == 2
    assert point["scaling"] == {"concurrency": 65, "clients": [1, 2],
                                "inferPerSec": ["2000.0", "3000.0"], "ratio": "1.50",
                                "limit": "client"}
    walk_numbers(world.status)


def test_a_failed_client_is_the_steps_failure_in_its_own_words():
    world = World(copy.deepcopy(CLIENTS))
    world.step()
    world.run_through("train", "export", "engine", "repo", "serve", "client")
    job = world.job("bench-grpc")
    name = job["metadata"]["name"]
    failed = {"stage": "bench", "state": "Failed", "reason": "PerfAnalyzerFailed",
              "message": "client 1: perf_analyzer failed for mnist_onnx at c=32 (exit 99): x"}
    world.pods.append({"metadata": {"name": f"{name}-1", "labels": {"job-name": name},
                                    "annotations": {INDEX: "1"}},
                       "status": {"containerStatuses": [{"name": "bench", "state": {"terminated": {
                           "exitCode": 1, "message": json.dumps(failed),
                           "finishedAt": "2025-03-01T12:01:00Z"}}}]}})
    job["status"] = {"startTime": "2025-03-01T12:00:00Z", "failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    world.step(1)
    stage = world.stage("bench-grpc")
    assert stage["reason"] == "PerfAnalyzerFailed" and "client 1" in stage["message"]


def test_status_summary_and_compare_show_the_scaling_check():
    status = {"phase": "Ready", **summarize({"bench-grpc": AGGREGATE})}
    assert "over 2 clients (1 of them: x1.50, the client was the limit)" in \
        headline("bench", AGGREGATE)
    table = "\n".join(perf_table(status))
    assert "2 clients: 3000.0 infer/s vs 1: 2000.0 at c=65 (x1.50): the client was the limit" \
        in table
    row = rows_of("run", status)[0]
    assert row.clients.endswith("the client was the limit")
    untested = copy.deepcopy(AGGREGATE)
    untested["models"]["mnist_onnx"]["scaling"].update(c=1, clients=[1, 1], limit="untested")
    assert "untested (too few in flight for more clients)" in \
        "\n".join(perf_table({"phase": "Ready", **summarize({"bench-grpc": untested})}))
    one = {**AGGREGATE, "clients": 1}
    assert rows_of("run", {"phase": "Ready", **summarize({"bench-grpc": one})})[0].clients == "-"


def test_the_local_indexed_job_runs_every_index_at_once_and_reports_index_0(tmp_path):
    # each index writes its own index; all must be running before any can finish
    script = ("import json, os, sys, time, pathlib\n"
              "i = os.environ['JOB_COMPLETION_INDEX']\n"
              "d = pathlib.Path(sys.argv[2]); (d / i).touch()\n"
              "t = time.time()\n"
              "while len(list(d.iterdir())) < 3 and time.time() - t < 20: time.sleep(0.05)\n"
              "pathlib.Path(sys.argv[1]).write_text(json.dumps({'state': 'Succeeded', "
              "'index': i, 'saw': len(list(d.iterdir()))}))\n"
              "sys.exit(int(i == sys.argv[3]))\n")
    meet = tmp_path / "meet"
    meet.mkdir()

    def run(fail: str):
        for p in meet.iterdir():
            p.unlink()
        results = [tmp_path / f"r{i}.json" for i in range(3)]
        return processes.run_indexed(
            [[sys.executable, "-c", script, str(results[i]), str(meet), fail] for i in range(3)],
            results, [tmp_path / f"log{i}" for i in range(3)], lambda line: None, {})

    ok = run(fail="none")
    assert ok.returncode == 0 and ok.result == {"state": "Succeeded", "index": "0", "saw": 3}
    assert run(fail="2").returncode == 1      # any index failing fails the Job
