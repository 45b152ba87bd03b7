"""The local runner's decisions (what runs, what is reused), its input errors
and the status it writes, without starting any stage."""
from __future__ import annotations

import io
import json
import socket
from pathlib import Path, PurePosixPath

import pytest
import yaml

from mnist_operator import pipeline
from mnist_jobs import triton
from mnist_operator.local import display, runner
from mnist_operator.local.runner import DISABLED, REUSE, RUN

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "local.yaml"
DEMO_RESULTS = Path(__file__).parent / "data" / "results-demo"


def example_doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def plan_for(doc: dict) -> list[pipeline.Step]:
    _, spec = runner.load_resource(yaml.safe_dump(doc), "x.yaml")
    return pipeline.plan(spec, pipeline.Layout(PurePosixPath("/w")), pipeline.Endpoints())


def all_done(steps) -> dict[str, dict]:
    return {s.name: {"state": "Succeeded", "fingerprint": s.fingerprint} for s in steps}


def to_run(decisions: dict[str, str]) -> list[str]:
    return [n for n, d in decisions.items() if d == RUN]


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


def test_first_run_runs_everything_rerun_reuses_everything():
    steps = plan_for(example_doc())
    assert to_run(runner.decide(steps, {}, [])) == [s.name for s in steps]
    again = runner.decide(steps, all_done(steps), [])
    assert set(again.values()) == {REUSE}
    assert runner.serve_needed_by(steps, again) == []


def test_new_concurrency_range_reruns_only_bench():
    steps = plan_for(example_doc())
    doc = example_doc()
    doc["spec"]["benchmark"]["perfAnalyzer"]["concurrency"] = {"start": 1, "end": 9, "step": 8}
    decisions = runner.decide(plan_for(doc), all_done(steps), [])
    assert to_run(decisions) == ["bench-grpc", "bench-http"]
    assert runner.serve_needed_by(plan_for(doc), decisions) == ["bench-grpc", "bench-http"]


def test_new_learning_rate_reruns_everything():
    steps = plan_for(example_doc())
    doc = example_doc()
    doc["spec"]["training"]["learningRate"] = "0.02"
    assert to_run(runner.decide(plan_for(doc), all_done(steps), [])) == [s.name for s in steps]


def test_serving_change_keeps_the_model():
    steps = plan_for(example_doc())
    doc = example_doc()
    doc["spec"]["serving"]["instances"] = 2
    assert to_run(runner.decide(plan_for(doc), all_done(steps), [])) == [
        "repo", "serve", "client", "bench-grpc", "bench-http", "analyze"]


def test_force_and_failed_and_upstream_rerun():
    steps = plan_for(example_doc())
    done = all_done(steps)
    assert to_run(runner.decide(steps, done, ["client"])) == ["client"]
    assert to_run(runner.decide(steps, done, ["export"])) == [
        "export", "engine", "repo", "serve", "client", "bench-grpc", "bench-http", "analyze"]
    failed = dict(done, **{"bench-http": {**done["bench-http"], "state": "Failed"}})
    assert to_run(runner.decide(steps, failed, [])) == ["bench-http"]
    # a missing train result reruns train and, since its output is new, all after it
    assert to_run(runner.decide(steps, {k: v for k, v in done.items() if k != "train"}, [])) \
        == [s.name for s in steps]


def test_disabled_step_recorded_once():
    doc = example_doc()
    doc["spec"]["benchmark"]["modelAnalyzer"]["enabled"] = False
    steps = plan_for(doc)
    first = runner.decide(steps, all_done(plan_for(example_doc())), [])
    assert first["analyze"] == DISABLED and to_run(first) == []
    skipped = {"state": "Skipped", "fingerprint": steps[-1].fingerprint}
    assert runner.decide(steps, {**all_done(steps), "analyze": skipped}, [])["analyze"] == REUSE


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


def test_status_from_real_results_and_stale_records():
    steps = plan_for(example_doc())
    records = {p.stem: json.loads(p.read_text()) for p in DEMO_RESULTS.glob("*.json")}
    # the recorded results came from a run whose bench range was 1:49:48
    doc = example_doc()
    doc["spec"]["benchmark"]["perfAnalyzer"]["concurrency"] = {"start": 1, "end": 49, "step": 48}
    steps = plan_for(doc)
    decisions = runner.decide(steps, records, [])
    assert set(decisions.values()) == {REUSE}
    status = runner.build_status("demo", steps, records, decisions, pipeline.Endpoints(),
                                 Path("/w"), "Ready")
    assert status["stages"]["engine"]["state"] == "Skipped"
    assert status["stages"]["engine"]["reason"] == "TensorRTNotAvailable"
    assert status["stages"]["bench-grpc"]["run"] == "reused"
    assert status["benchmark"]["perfAnalyzer"]["mnist_bls"]["grpc"]["points"] == 2
    assert status["endpoints"]["grpc"] == "127.0.0.1:8001"
    # with the example's own range the bench results are stale: Pending, not shown
    stale = runner.build_status("demo", plan_for(example_doc()), records, decisions,
                                pipeline.Endpoints(), Path("/w"), "Failed")
    assert stale["stages"]["bench-grpc"]["state"] == "Pending"
    assert "perfAnalyzer" not in stale["benchmark"]
    text = "\n".join(display.summary_lines(status, Path("/w/status.json")))
    assert "mnist_onnx   grpc" in text and "model-analyzer" in text and "/w/status.json" in text


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
