"""The local run: the operator's core driven on this machine (what runs, what
is reused, retries, the status it writes) with the stage processes replaced by
canned results of a real demo run, and its input errors."""
from __future__ import annotations

import copy
import io
import json
import socket
from pathlib import Path, PurePosixPath

import pytest
import yaml

from mnist_operator.core import pipeline
from mnist_jobs.lib import triton
from mnist_operator.local import display, processes, runner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "local.yaml"
DEMO_RESULTS = Path(__file__).parent / "data" / "results-demo"


def example_doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def plan_for(doc: dict) -> list[pipeline.Step]:
    _, spec = runner.load_resource(yaml.safe_dump(doc), "x.yaml")
    return pipeline.plan(spec, pipeline.Layout(PurePosixPath("/w")), pipeline.Endpoints())


def canned(step: str) -> dict:
    """The demo run's result of ``step`` (a tuned step gives its untuned twin's)."""
    twin = {"repo-tuned": "repo", "serve-tuned": "serve", "bench-tuned-grpc": "bench-grpc",
            "bench-tuned-http": "bench-http"}.get(step, step)
    result = json.loads((DEMO_RESULTS / f"{twin}.json").read_text())
    result.pop("fingerprint", None)
    return result


class FakeStages:
    """Stands in for the stage subprocesses and the background Triton: each step
    writes its canned result (or a failure), and every start is counted."""

    def __init__(self):
        self.results: dict[str, dict] = {}
        self.failing: dict[str, int] = {}    # step -> how many attempts fail
        self.ran: list[str] = []             # stage subprocesses, in order
        self.tritons: list[str] = []         # background Triton starts, in order

    def result(self, step: str) -> dict:
        if self.failing.get(step, 0) > 0:
            self.failing[step] -= 1
            return {"stage": step, "state": "Failed", "reason": "Boom", "message": "it broke"}
        return self.results.get(step) or canned(step)

    def run_stage(self, argv, result_path: Path, log_path: Path, echo, env=None):
        self.ran.append(result_path.stem)
        result = self.result(result_path.stem)
        for path, text in ((result_path, json.dumps(result)), (log_path, "log\n")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return processes.StageOutcome(int(result["state"] == "Failed"), result, 0.0, log_path)

    def background(self, argv, result_path: Path, log_path: Path, echo, env=None):
        self.tritons.append(result_path.stem)
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(self.result(result_path.stem)))
        return _FakeTriton(result_path, log_path)


class _FakeTriton:
    def __init__(self, result_path: Path, log_path: Path):
        self.result_path, self.log_path = result_path, log_path

    def wait_result(self, timeout: float):
        result = json.loads(self.result_path.read_text())
        return processes.StageOutcome(int(result["state"] == "Failed"), result, 0.0, self.log_path)

    def stop(self) -> None:
        pass


@pytest.fixture
def stages(monkeypatch) -> FakeStages:
    fake = FakeStages()
    monkeypatch.setattr(processes, "run_stage", fake.run_stage)
    monkeypatch.setattr(processes, "Background", fake.background)
    return fake


def local_run(tmp_path: Path, stages: FakeStages, doc: dict, *flags: str) -> tuple[int, dict]:
    """``mnist-serving run`` of ``doc`` in tmp_path/work: (exit code, status.json)."""
    stages.ran.clear()
    stages.tritons.clear()
    path = tmp_path / "resource.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = runner.main([str(path), "--workdir", str(tmp_path / "work"), *flags])
    return code, json.loads((tmp_path / "work" / "status.json").read_text())


def with_spec(**changes) -> dict:
    doc = example_doc()
    for dotted, value in changes.items():
        node = doc["spec"]
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return doc


JOB_STEPS = ["train", "export", "engine", "repo", "client", "bench-grpc", "bench-http", "analyze"]


def test_example_parses_and_plans_every_step():
    name, spec = runner.load_resource(EXAMPLE.read_text(), str(EXAMPLE))
    assert name == "demo"
    assert spec.serving.cpu_only and spec.serving.gpus == 0 and spec.training.gpus == 0
    steps = plan_for(example_doc())
    assert [s.name for s in steps] == ["train", "export", "engine", "repo", "serve", "client",
                                       "bench-grpc", "bench-http", "analyze"]


def test_spec_errors_one_per_line():
    doc = example_doc()
    doc["spec"]["training"]["epochs"] = 0
    doc["spec"]["serving"]["modelz"] = []
    with pytest.raises(runner.UsageError) as err:
        runner.load_resource(yaml.safe_dump(doc), "bad.yaml")
    assert sorted(err.value.lines) == ["bad.yaml: spec.serving.modelz: unknown field",
                                       "bad.yaml: spec.training.epochs: must be >= 1 (got 0)"]


@pytest.mark.parametrize("text, expected", [
    ("kind: Deployment\napiVersion: apps/v1\n", "kind/apiVersion: expected MnistServing"),
    ("spec: [unclosed\n", "not valid YAML"),
    ("- a list\n", "expected an MnistServing object"),
])
def test_not_an_mnistserving(text, expected):
    with pytest.raises(runner.UsageError) as err:
        runner.load_resource(text, "f.yaml")
    assert len(err.value.lines) == 1 and expected in err.value.lines[0]


def test_first_run_runs_everything_rerun_reuses_everything(tmp_path, stages, capsys):
    code, status = local_run(tmp_path, stages, example_doc())
    assert code == 0 and status["phase"] == "Ready"
    assert stages.ran == JOB_STEPS
    # Triton serves client and bench, stops for analyze's own Triton, and is back for Ready
    assert stages.tritons == ["serve", "serve"]
    assert {n: s["run"] for n, s in status["stages"].items()} == {
        n: "ran" for n in ["train", "export", "engine", "repo", "serve", "client",
                           "bench-grpc", "bench-http", "analyze"]}
    code, again = local_run(tmp_path, stages, example_doc())
    assert code == 0 and stages.ran == [] and again["phase"] == "Ready"
    assert {s["run"] for s in again["stages"].values()} == {"reused"}
    assert "to run: none (all reused)" in capsys.readouterr().out


def test_new_concurrency_range_reruns_only_bench(tmp_path, stages):
    local_run(tmp_path, stages, example_doc())
    code, _ = local_run(tmp_path, stages, with_spec(
        benchmark__perfAnalyzer__concurrency={"start": 1, "end": 9, "step": 8}))
    assert code == 0 and stages.ran == ["bench-grpc", "bench-http"]


def test_new_learning_rate_reruns_everything(tmp_path, stages):
    local_run(tmp_path, stages, example_doc())
    local_run(tmp_path, stages, with_spec(training__learningRate="0.02"))
    assert stages.ran == JOB_STEPS


def test_serving_change_keeps_the_model(tmp_path, stages):
    local_run(tmp_path, stages, example_doc())
    code, status = local_run(tmp_path, stages, with_spec(serving__instances=2))
    assert code == 0 and stages.ran == ["repo", "client", "bench-grpc", "bench-http", "analyze"]
    assert status["stages"]["serve"]["run"] == "ran"


def test_force_and_failed_results(tmp_path, stages):
    local_run(tmp_path, stages, example_doc())
    local_run(tmp_path, stages, example_doc(), "--force", "client")
    assert stages.ran == ["client"]
    local_run(tmp_path, stages, example_doc(), "--force", "export")
    assert stages.ran == ["export", "engine", "repo", "client", "bench-grpc", "bench-http",
                          "analyze"]
    result = tmp_path / "work" / "results" / "bench-http.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "state": "Failed"}))
    local_run(tmp_path, stages, example_doc())
    assert stages.ran == ["bench-http"]
    # fingerprints decide, as in a cluster: a lost train result retrains, and
    # the steps after it, whose inputs did not change, are reused
    (tmp_path / "work" / "results" / "train.json").unlink()
    local_run(tmp_path, stages, example_doc())
    assert stages.ran == ["train"]


def test_disabled_step_recorded_once(tmp_path, stages):
    doc = with_spec(benchmark__modelAnalyzer__enabled=False)
    code, status = local_run(tmp_path, stages, doc)
    assert code == 0 and "analyze" not in stages.ran
    assert status["stages"]["analyze"]["run"] == "disabled"
    assert status["stages"]["analyze"]["state"] == "Skipped"
    recorded = json.loads((tmp_path / "work" / "results" / "analyze.json").read_text())
    assert recorded["fingerprint"] == status["stages"]["analyze"]["fingerprint"]
    # no analyze: Triton is never paused, so it starts once
    assert stages.tritons == ["serve"]
    _, again = local_run(tmp_path, stages, doc)
    assert again["stages"]["analyze"]["run"] == "reused"


def test_a_failed_stage_is_retried_with_backoff_as_in_a_cluster(tmp_path, stages, capsys):
    stages.failing["client"] = 1
    doc = with_spec(retries={"limit": 1, "backoffSeconds": 0})
    code, status = local_run(tmp_path, stages, doc)
    assert code == 0 and stages.ran.count("client") == 2
    assert status["stages"]["client"]["attempt"] == 1
    assert "! StageFailed: client (Boom): attempt 0 failed: it broke" in capsys.readouterr().out
    stages.failing["bench-grpc"] = 2
    code, status = local_run(tmp_path, stages, with_spec(
        retries={"limit": 1, "backoffSeconds": 0}, benchmark__runId="again"))
    assert code == 1 and status["phase"] == "Failed"
    assert stages.ran == ["bench-grpc", "bench-grpc"]
    assert status["stages"]["bench-grpc"]["state"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")


def test_triton_that_does_not_come_up_fails_the_run(tmp_path, stages, capsys):
    stages.results["serve"] = {"stage": "serve", "state": "Failed", "reason": "ModelNotReady",
                               "message": "mnist_bls: UNAVAILABLE"}
    code, status = local_run(tmp_path, stages, example_doc())
    assert code == 1 and status["phase"] == "Failed"
    assert status["stages"]["serve"]["reason"] == "ModelNotReady"
    assert status["message"] == "serve: mnist_bls: UNAVAILABLE"
    assert "client" not in stages.ran


def test_ports_explicit_busy_is_one_error_naming_the_flag():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(runner.UsageError) as err:
            runner.pick_ports({"--http-port": None, "--grpc-port": port, "--metrics-port": None},
                              triton.port_in_use, triton.free_ports)
    assert err.value.lines == [f"--grpc-port: port {port} is already in use"]


def test_ports_picked_free_and_distinct():
    ports = runner.pick_ports({"--http-port": 18000, "--grpc-port": None, "--metrics-port": None},
                              lambda p: False, lambda n: [18000, 18001, 18002, 18003][:n])
    assert ports == {"--http-port": 18000, "--grpc-port": 18001, "--metrics-port": 18002}


def test_main_bad_spec_exits_2_one_line_per_error(tmp_path, capsys):
    doc = example_doc()
    doc["spec"]["training"]["epochs"] = 0
    doc["spec"]["benchmark"]["perfAnalyzer"]["batchSize"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert runner.main([str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = sorted(capsys.readouterr().err.strip().splitlines())
    assert err == [
        f"mnist-serving run: error: {path}: spec.benchmark.perfAnalyzer.batchSize: "
        "must be >= 1 (got 0)",
        f"mnist-serving run: error: {path}: spec.training.epochs: must be >= 1 (got 0)"]
    assert not (tmp_path / "w").exists()


def test_main_unknown_force_step(tmp_path, capsys):
    assert runner.main([str(EXAMPLE), "--workdir", str(tmp_path), "--force", "bench"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mnist-serving run: error: --force: unknown step 'bench' (one of: train, export, engine, "
        "repo, serve, client, bench-grpc, bench-http, analyze, all)")


def test_status_from_real_results(tmp_path, stages):
    code, status = local_run(tmp_path, stages, example_doc())
    assert code == 0
    assert status["stages"]["engine"]["state"] == "Skipped"
    assert status["stages"]["engine"]["reason"] == "TensorRTNotAvailable"
    assert status["benchmark"]["perfAnalyzer"]["mnist_bls"]["grpc"]["points"] == 2
    assert status["endpoints"]["grpc"].startswith("127.0.0.1:")
    assert status["observedGeneration"] == 1
    text = "\n".join(display.summary_lines(status, tmp_path / "work" / "status.json"))
    assert "mnist_onnx   grpc" in text and "model-analyzer" in text and "status.json" in text


def test_plain_progress_lines_when_not_a_tty():
    out = io.StringIO()
    progress = display.Progress(out, live=False)
    progress.start("train")
    progress.line("train", "train: epoch 1/3 step 15/63 loss 2.1290 (0.1 s)")
    progress.line("serve", "late line from a finished step")
    progress.done("train", "ok", "Succeeded in 9 s")
    progress.close()
    assert out.getvalue().splitlines() == [
        "  -> train", "     [train] train: epoch 1/3 step 15/63 loss 2.1290 (0.1 s)",
        "  ok train       Succeeded in 9 s"]


def without_substrate(status: dict) -> dict:
    """A status minus what only says where it ran: names, times, endpoints, the run's own fields."""
    drop = {"name", "workdir", "wallSeconds", "endpoints"}
    per_stage = {"run", "durationSeconds", "startTime", "completionTime", "environment"}
    out = {k: v for k, v in status.items() if k not in drop}
    out["stages"] = {n: {k: v for k, v in s.items() if k not in per_stage}
                     for n, s in status["stages"].items()}
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                         for c in status["conditions"]]
    return out


def cluster_status(spec: dict, steps, name: str = "demo") -> dict:
    """The status the core writes in a cluster (test_reconcile's World) for ``spec``
    when ``steps`` end as the canned demo run's did, one after another."""
    from test_reconcile import World
    cluster = World(copy.deepcopy(spec))
    cluster.cr["metadata"]["name"] = name
    cluster.step()
    for step in steps:
        if step == "serve":
            cluster.set_serving(True)
        else:
            cluster.finish(step, canned(step)["state"], result=canned(step))
        cluster.step(1)
    cluster.step(1)
    return cluster.status


def test_a_local_run_and_a_cluster_run_of_one_spec_end_in_the_same_status(tmp_path, stages):
    doc = example_doc()
    code, local = local_run(tmp_path, stages, doc)
    assert code == 0
    cluster = cluster_status(doc["spec"], local["stages"])
    assert cluster["phase"] == "Ready"
    assert without_substrate(local) == without_substrate(cluster)


def test_a_reused_bench_keeps_the_node_that_measured_it(tmp_path, stages):
    # issue 27: after a rerun that reused the bench, its environment line said "on -"
    env = {"triton": "2.59.0", "perfAnalyzer": "2.45", "configs": {"mnist_onnx": "abc123"}}
    for p in ("grpc", "http"):
        stages.results[f"bench-{p}"] = {**canned(f"bench-{p}"), "environment": env}
    code, first = local_run(tmp_path, stages, example_doc())
    import platform
    assert code == 0 and first["stages"]["bench-grpc"]["run"] == "ran"
    assert f"perf_analyzer 2.45, on {platform.node()};" in "\n".join(display.environment_lines(first))
    code, again = local_run(tmp_path, stages, example_doc())
    assert code == 0 and again["stages"]["bench-grpc"]["run"] == "reused"
    text = "\n".join(display.summary_lines(again, tmp_path / "work" / "status.json"))
    assert "on -" not in text
    # the node comes from the status the measuring run wrote
    assert again["stages"]["bench-grpc"]["environment"] == first["stages"]["bench-grpc"]["environment"]
    assert f"bench-grpc: Triton 2.59.0, perf_analyzer 2.45, on {platform.node()};" in text
    (tmp_path / "work" / "status.json").unlink()   # that status gone: no node, and said so
    code, third = local_run(tmp_path, stages, example_doc())
    text = "\n".join(display.summary_lines(third, tmp_path / "work" / "status.json"))
    assert ("bench-grpc: Triton 2.59.0, perf_analyzer 2.45 (reused: measured in an earlier "
            "run); served configs mnist_onnx abc123") in text
