"""The closed loop (benchmark.modelAnalyzer.applyBest): model-analyzer's best
config is written into a second repository, Triton serves it, the sweep runs
again, and status says before/after. Both runners, plus the repo and analyze
stage pieces it is built from."""
from __future__ import annotations

import copy
import json
from pathlib import Path, PurePosixPath

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mnist_jobs import analyze, repo
from mnist_operator.core import pipeline, summary
from mnist_operator.local import display
from mnist_operator.api.spec import parse_spec
from tests.harness.stage_flags import spec_flags

from test_local_runner import example_doc, local_run, stages  # noqa: F401  (a fixture)
from test_reconcile import World, assert_quiet, created, events, walk_numbers

LAY = pipeline.Layout(PurePosixPath("/work"))
DEMO = Path(__file__).parent / "data" / "results-demo"
APPLY = {"benchmark": {"modelAnalyzer": {"applyBest": True}}}
TUNED = ["repo-tuned", "serve-tuned", "bench-tuned-grpc", "bench-tuned-http"]

# config.pbtxt files as model-analyzer 1.58 writes them into output_model_repository
# (protobuf text format, one field per line; trimmed to the fields that matter)
MA_CONFIG_1 = """name: "mnist_onnx"
max_batch_size: 64
input {
  name: "input"
  data_type: TYPE_FP32
  dims: 1
}
instance_group {
  count: 2
  kind: KIND_CPU
}
dynamic_batching {
  preferred_batch_size: 32
  preferred_batch_size: 64
  max_queue_delay_microseconds: 100
}
backend: "python"
"""


def analyze_record(spec: dict, best: str = "mnist_onnx_config_1", state: str = "Succeeded",
                   apply: dict | None = None, fingerprint: str | None = None) -> dict:
    """An analyze record as the runners keep it (the stage result + fingerprint)."""
    step = next(s for s in pipeline.plan(parse_spec(spec), LAY) if s.name == "analyze")
    settings = apply if apply is not None else analyze.config_settings(MA_CONFIG_1)
    return {"stage": "analyze", "state": state, "fingerprint": fingerprint or step.fingerprint,
            "models": {"mnist_onnx": {"bestConfig": best, "throughput": "7084.3",
                                      "instances": "2:CPU", "maxBatchSize": "64",
                                      "apply": settings}}}


def steps_of(spec: dict, analyzed: dict | None) -> dict[str, pipeline.Step]:
    return {s.name: s for s in pipeline.plan(parse_spec(spec), LAY, analyzed=analyzed)}


# --------------------------------------------------------------------------- stage pieces
def test_analyze_reads_the_best_configs_settings_from_its_pbtxt():
    assert analyze.config_settings(MA_CONFIG_1) == {
        "maxBatchSize": 64, "instances": 2, "instanceKind": "cpu", "dynamicBatching": "on",
        "preferredBatchSizes": "32,64", "maxQueueDelayUs": 100}
    # our own template's bracketed form, and a config without batching or kind
    ours = 'max_batch_size: 16\ninstance_group [\n  {\n    count: 3\n  }\n]\n'
    assert analyze.config_settings(ours) == {"maxBatchSize": 16, "instances": 3,
                                             "instanceKind": "auto", "dynamicBatching": "off"}


def test_analyze_summary_carries_apply_from_pbtxt_or_the_csv(tmp_path):
    text = (Path(__file__).parent / "data" / "metrics-model-inference.csv").read_text()
    parsed = analyze.parse_inference_csv(text)
    best = parsed["mnist_onnx"]["best"]["config"]
    assert analyze.summarize(parsed)["mnist_onnx"]["apply"] == {
        "instances": int(parsed["mnist_onnx"]["best"]["instances"].split(":")[0]),
        "instanceKind": "cpu", "maxBatchSize": int(parsed["mnist_onnx"]["best"]["maxBatchSize"])}
    (tmp_path / best).mkdir()
    (tmp_path / best / "config.pbtxt").write_text(MA_CONFIG_1)
    assert analyze.summarize(parsed, tmp_path)["mnist_onnx"]["apply"]["instances"] == 2


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def build(artifacts, out, models, cpu_only, overrides, preferred=(32, 64)):
    """The repo stage with max batch 128, one instance of kind auto, delay 100 us."""
    return repo.build_repository(repo.RepoConfig(artifacts, out, models, 128, 1, "auto",
                                                 list(preferred), 100, cpu_only, 0, overrides))


def test_repo_override_gives_one_model_its_own_config(artifacts, tmp_path):
    out = tmp_path / "repo"
    overrides = repo.parse_overrides(
        ["onnx:instances=2,instance_kind=cpu,max_batch_size=64,preferred_batch_sizes=16,64"])
    result = build(artifacts, out, ["mnist_onnx", "mnist_bls"], True, overrides)
    onnx, bls = parse(out / "mnist_onnx" / "config.pbtxt"), parse(out / "mnist_bls" / "config.pbtxt")
    assert onnx.max_batch_size == 64
    assert list(onnx.dynamic_batching.preferred_batch_size) == [16, 64]
    (group,) = onnx.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # the BLS model forwards whole batches: never more than its downstream accepts
    assert bls.max_batch_size == 64
    assert bls.parameters["downstream_max_batch_size"].string_value == "64"
    # and as many instances (stubs) as its downstream, of its own kind (the shared auto)
    assert bls.instance_group[0].count == 2
    assert bls.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    assert result["overrides"] == {"mnist_onnx": "instance_kind=cpu,instances=2,"
                                                 "max_batch_size=64,preferred_batch_sizes=16/64"}
    assert any("mnist_bls: max_batch_size lowered to 64" in n for n in result["notes"])
    assert "mnist_bls: 2 instances, as many as mnist_onnx it forwards to" in result["notes"]


def test_repo_bls_keeps_its_own_instance_override(artifacts, tmp_path):
    out = tmp_path / "repo"
    result = build(artifacts, out, ["mnist_onnx", "mnist_bls"], True,
                   repo.parse_overrides(["onnx:instances=4", "bls:instances=3"]))
    assert parse(out / "mnist_onnx" / "config.pbtxt").instance_group[0].count == 4
    assert parse(out / "mnist_bls" / "config.pbtxt").instance_group[0].count == 3
    assert not any("as many as" in n for n in result.get("notes", []))


def test_repo_override_drops_preferred_sizes_above_the_models_limit(artifacts, tmp_path):
    result = build(artifacts, tmp_path / "r", ["mnist_onnx"], False,
                   repo.parse_overrides(["mnist_onnx:max_batch_size=32"]))
    cfg = parse(tmp_path / "r" / "mnist_onnx" / "config.pbtxt")
    assert cfg.max_batch_size == 32 and list(cfg.dynamic_batching.preferred_batch_size) == [32]
    assert "preferred batch sizes [64] dropped" in result["notes"][0]


@pytest.mark.parametrize("text,field", [
    ("mnist_onnx", "--override: expected MODEL:key=value"),
    ("resnet:instances=2", "--override: expected MODEL:key=value"),
    ("onnx:threads=2", "--override: mnist_onnx: unknown key 'threads'"),
    ("onnx:instances=two", "--override: mnist_onnx: instances must be an integer"),
    ("onnx:instance_kind=tpu", "--override: mnist_onnx: instance_kind must be one of"),
    ("onnx:64", "--override: mnist_onnx: expected key=value"),
])
def test_repo_override_bad_input_names_the_flag(text, field):
    with pytest.raises(repo.InputError) as err:
        repo.parse_overrides([text])
    assert str(err.value).startswith(field)


def test_repo_override_values_are_checked_like_the_flags(artifacts, tmp_path):
    with pytest.raises(repo.InputError, match=r"^--override mnist_onnx:instances: must be >= 1"):
        build(artifacts, tmp_path / "r", ["mnist_onnx"], False,
              repo.parse_overrides(["onnx:instances=0"]), preferred=[])
    with pytest.raises(repo.InputError, match="^--override: mnist_bls is not in --models"):
        build(artifacts, tmp_path / "r", ["mnist_onnx"], False,
              repo.parse_overrides(["bls:instances=2"]), preferred=[])


def test_repo_cli_with_override_writes_the_result(artifacts, tmp_path, capsys):
    code = repo.main([*spec_flags("repo"), "--artifacts", str(artifacts), "--out", str(tmp_path / "r"),
                      "--models", "onnx", "--cpu-only", "--override",
                      "mnist_onnx:instances=2,max_batch_size=64", "--result",
                      str(tmp_path / "res.json")])
    assert code == 0
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["state"] == "Succeeded" and res["overrides"]["mnist_onnx"] == \
        "instances=2,max_batch_size=64"
    assert parse(tmp_path / "r" / "mnist_onnx" / "config.pbtxt").instance_group[0].count == 2


# --------------------------------------------------------------------------- pipeline
def test_tuned_steps_appear_only_with_apply_best_and_a_best_config():
    base = list(steps_of({}, None))
    assert list(steps_of(APPLY, None)) == base                        # nothing analyzed yet
    assert list(steps_of(APPLY, analyze_record(APPLY))) == base + TUNED
    assert list(steps_of({}, analyze_record({}))) == base             # applyBest off
    assert list(steps_of(APPLY, analyze_record(APPLY, state="Failed"))) == base
    assert list(steps_of(APPLY, analyze_record(APPLY, fingerprint="0" * 12))) == base  # stale
    # the served config is already the best: nothing to apply
    assert list(steps_of(APPLY, analyze_record(APPLY, best="mnist_onnx_config_default"))) == base
    off = {"benchmark": {"modelAnalyzer": {"applyBest": True, "enabled": False}}}
    assert list(steps_of(off, analyze_record(APPLY))) == base


def test_turning_apply_best_on_keeps_the_analysis():
    before, after = steps_of({}, None), steps_of(APPLY, None)
    assert {n: s.fingerprint for n, s in before.items()} == \
        {n: s.fingerprint for n, s in after.items()}


def test_tuned_steps_arguments():
    steps = steps_of(APPLY, analyze_record(APPLY))
    args = list(steps["repo-tuned"].args)
    assert args[args.index("--out") + 1] == "/work/model_repo_tuned"
    assert args[args.index("--override") + 1] == (
        "mnist_onnx:instance_kind=cpu,instances=2,max_batch_size=64,max_queue_delay_us=100,"
        "preferred_batch_sizes=32,64")
    assert steps["repo-tuned"].stage == "repo" and steps["serve-tuned"].stage == "serve"
    serve = list(steps["serve-tuned"].args)
    assert serve[serve.index("--model-repo") + 1] == "/work/model_repo_tuned"
    assert steps["serve-tuned"].long_running and steps["serve-tuned"].needs == ("repo-tuned",)
    bench, base = list(steps["bench-tuned-grpc"].args), list(steps["bench-grpc"].args)
    assert bench[bench.index("--out") + 1] == "/work/bench_tuned/grpc"
    # the same sweep as before, against the tuned Triton
    assert [a for a in bench if "bench" not in a] == [a for a in base if "bench" not in a]


def test_the_best_config_is_in_the_tuned_fingerprints():
    a = steps_of(APPLY, analyze_record(APPLY))
    other = dict(analyze.config_settings(MA_CONFIG_1), instances=1)
    b = steps_of(APPLY, analyze_record(APPLY, apply=other))
    assert [n for n in TUNED if a[n].fingerprint != b[n].fingerprint] == TUNED
    assert all(a[n].fingerprint == b[n].fingerprint for n in a if n not in TUNED)


def test_run_id_rebenchmarks_before_and_after_and_keeps_the_tuned_repository():
    spec2 = {"benchmark": {"runId": "again", "modelAnalyzer": {"applyBest": True}}}
    a = steps_of(APPLY, analyze_record(APPLY))
    b = steps_of(spec2, analyze_record(spec2))
    moved = [n for n in b if a[n].fingerprint != b[n].fingerprint]
    assert moved == ["bench-grpc", "bench-http", "analyze", "bench-tuned-grpc", "bench-tuned-http"]


def test_a_new_concurrency_range_rebenchmarks_both_sides_only():
    spec2 = {"benchmark": {"modelAnalyzer": {"applyBest": True},
                           "perfAnalyzer": {"concurrency": {"end": 65}}}}
    a, b = steps_of(APPLY, analyze_record(APPLY)), steps_of(spec2, analyze_record(spec2))
    assert [n for n in b if a[n].fingerprint != b[n].fingerprint] == \
        ["bench-grpc", "bench-http", "bench-tuned-grpc", "bench-tuned-http"]


# --------------------------------------------------------------------------- results
@pytest.fixture
def demo() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DEMO.glob("*.json"))}


def tuned_bench(result: dict, factor: float) -> dict:
    """A bench result with every throughput scaled (a faster tuned Triton)."""
    out = copy.deepcopy(result)
    for entry in out["models"].values():
        entry["best"]["inferPerSec"] = f"{float(entry['best']['inferPerSec']) * factor:.1f}"
    return out


def test_summarize_closed_loop_before_after_gain(demo):
    analyzed = dict(demo["analyze"], models={"mnist_onnx": dict(
        demo["analyze"]["models"]["mnist_onnx"], bestConfig="mnist_onnx_config_1",
        apply=analyze.config_settings(MA_CONFIG_1))})
    run = {**demo, "analyze": analyzed,
           "repo-tuned": {"stage": "repo", "state": "Succeeded"},
           "serve-tuned": {"stage": "serve", "state": "Succeeded"},
           "bench-tuned-grpc": tuned_bench(demo["bench-grpc"], 1.5)}
    bench = summarize_of(run)
    loop = bench["closedLoop"]
    assert loop["applied"] == {"mnist_onnx": {
        "config": "mnist_onnx_config_1", "dynamicBatching": "on", "instanceKind": "cpu",
        "instances": 2, "maxBatchSize": 64, "maxQueueDelayUs": 100,
        "preferredBatchSizes": "32,64"}}
    keys = [f"{m}/grpc" for m in sorted(demo["bench-grpc"]["models"])]
    assert list(loop["before"]) == keys == list(loop["after"])
    for k in keys:
        model = k.split("/")[0]
        assert loop["before"][k] == demo["bench-grpc"]["models"][model]["best"]["inferPerSec"]
        assert loop["gains"][k] == "1.50"
    assert loop["gain"] == "1.50" and loop["state"] == "Measured"
    # the base sweep is what perfAnalyzer shows; the tuned one lives under closedLoop only
    assert bench["perfAnalyzer"]["mnist_onnx"]["grpc"]["bestInferPerSec"] == \
        demo["bench-grpc"]["models"]["mnist_onnx"]["best"]["inferPerSec"]
    walk_numbers(bench)


def summarize_of(run: dict) -> dict:
    return summary.summarize(run)["benchmark"]


def test_summarize_closed_loop_in_progress_and_failed(demo):
    analyzed = dict(demo["analyze"], models={"mnist_onnx": dict(
        demo["analyze"]["models"]["mnist_onnx"], bestConfig="mnist_onnx_config_1",
        apply={"instances": 2})})
    run = {**demo, "analyze": analyzed, "repo-tuned": {"stage": "repo", "state": "Succeeded"}}
    loop = summarize_of(run)["closedLoop"]
    assert loop == {"objective": "throughput",
                    "applied": {"mnist_onnx": {"config": "mnist_onnx_config_1", "instances": 2}},
                    "state": "Applied"}
    run["serve-tuned"] = {"stage": "serve", "state": "Failed", "message": "model failed to load"}
    assert summarize_of(run)["closedLoop"]["state"] == \
        "serve-tuned Failed: model failed to load"
    assert "closedLoop" not in summarize_of(demo)


# --------------------------------------------------------------------------- local runner
def recorded_for(steps: list[pipeline.Step], **overrides) -> dict[str, dict]:
    recs = {s.name: {"state": "Succeeded", "fingerprint": s.fingerprint} for s in steps}
    recs.update(overrides)
    return recs


def applying(doc: dict, **benchmark) -> dict:
    doc = copy.deepcopy(doc)
    doc["spec"]["benchmark"]["modelAnalyzer"]["applyBest"] = True
    doc["spec"]["benchmark"].update(benchmark)
    return doc


def test_runner_runs_tuned_steps_like_any_other(tmp_path, stages, capsys):
    stages.results["analyze"] = {"stage": "analyze", "state": "Succeeded", **ANALYZE_RESULT}
    code, status = local_run(tmp_path, stages, applying(example_doc()))
    assert code == 0 and status["phase"] == "Ready"
    assert stages.ran[-3:] == ["repo-tuned", "bench-tuned-grpc", "bench-tuned-http"]
    # the base Triton; back after analyze's pause while repo-tuned writes; then the tuned one
    assert stages.tritons == ["serve", "serve", "serve-tuned"]
    assert "applyBest: then repo-tuned, serve-tuned, bench-tuned-grpc, bench-tuned-http" \
        in capsys.readouterr().out
    assert status["benchmark"]["closedLoop"]["applied"]["mnist_onnx"]["instances"] == 2
    code, again = local_run(tmp_path, stages, applying(example_doc()))
    assert code == 0 and stages.ran == [] and stages.tritons == ["serve-tuned"]
    assert {s["run"] for s in again["stages"].values()} == {"reused"}
    # fingerprints decide, as in a cluster: a lost tuned repository is written
    # again, and the sweeps of the same inputs are kept
    (tmp_path / "work" / "results" / "repo-tuned.json").unlink()
    local_run(tmp_path, stages, applying(example_doc()))
    assert stages.ran == ["repo-tuned"]


def test_runner_run_id_rebenchmarks_and_reanalyzes_only(tmp_path, stages):
    stages.results["analyze"] = {"stage": "analyze", "state": "Succeeded", **ANALYZE_RESULT}
    local_run(tmp_path, stages, applying(example_doc()))
    # as the operator does: nothing to apply until the new analysis is done, so
    # the tuned records go; the same best config then writes the tuned
    # repository again under the same fingerprint
    code, status = local_run(tmp_path, stages, applying(example_doc(), runId="again"))
    assert code == 0 and stages.ran == ["bench-grpc", "bench-http", "analyze", "repo-tuned",
                                        "bench-tuned-grpc", "bench-tuned-http"]
    assert status["stages"]["repo-tuned"]["fingerprint"] == \
        json.loads((tmp_path / "work" / "results" / "repo-tuned.json").read_text())["fingerprint"]


def test_runner_summary_shows_before_and_after():
    status = {"name": "x", "phase": "Ready", "workdir": "/w", "stages": {},
              "benchmark": {"closedLoop": {
                  "applied": {"mnist_onnx": {"config": "mnist_onnx_config_1", "instances": 2}},
                  "before": {"mnist_onnx/grpc": "1000.0"}, "after": {"mnist_onnx/grpc": "1200.0"},
                  "gains": {"mnist_onnx/grpc": "1.20"}, "gain": "1.20", "state": "Measured"}}}
    text = "\n".join(display.summary_lines(status, Path("/w/status.json")))
    assert "mnist_onnx   config mnist_onnx_config_1, instances 2" in text
    assert "mnist_onnx/grpc" in text and "1000.0" in text and "1200.0" in text
    assert "overall gain 1.20 (Measured)" in text


# --------------------------------------------------------------------------- operator
def deployment(w: World) -> dict:
    return next(o for (k, _), o in w.objects.items() if k == "Deployment")


def triton_repo(w: World) -> str:
    cmd = deployment(w)["spec"]["template"]["spec"]["containers"][0]["command"]
    return next(a for a in cmd if a.startswith("--model-repository="))


ANALYZE_RESULT = {"models": {"mnist_onnx": {
    "bestConfig": "mnist_onnx_config_1", "throughput": "7084.3",
    "apply": analyze.config_settings(MA_CONFIG_1)}}}


def bench_result(protocol: str, infer: str) -> dict:
    return {"protocol": protocol, "concurrency": "1:257:64",
            "models": {"mnist_onnx": {"best": {"c": 64, "inferPerSec": infer, "p99Us": 900},
                                      "rows": [[1, "1000.0", 500, 0]],
                                      "batchingGain": "2.0", "littleFailures": 0}}}


def world_through_analyze(spec: dict) -> World:
    w = World(copy.deepcopy(spec))   # edit_spec changes the CR's spec in place
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve", "client")
    for p in ("grpc", "http"):
        w.finish(f"bench-{p}", result=bench_result(p, "5000.0"))
        w.step(1)
    return w


def world_serving_tuned() -> World:
    """APPLY after analyze found a better config: the tuned repository written
    and Triton available on it, its sweep not yet run."""
    w = world_through_analyze(APPLY)
    w.finish("analyze", result=ANALYZE_RESULT)
    w.step(1)
    w.finish("repo-tuned", result={})
    w.step(1)
    w.set_serving(True)
    w.step(1)
    return w


def test_operator_closed_loop_rolls_triton_and_records_before_after():
    w = world_through_analyze(APPLY)
    base_fp = w.stage("serve")["fingerprint"]
    assert triton_repo(w) == "--model-repository=/work/model_repo"
    w.finish("analyze", result=ANALYZE_RESULT)
    d = w.step(1)
    # the same pass that records analyze starts the tuned repository, and scales
    # Triton (paused while analyze held the GPU) back up on the first repository
    assert w.stage("analyze")["state"] == "Succeeded"
    assert [o["metadata"]["name"] for o in created(d)] == w.jobs("repo-tuned")
    job = w.job("repo-tuned")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--override" in job and "/work/model_repo_tuned" in job
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == [("Deployment", 1)]
    assert triton_repo(w) == "--model-repository=/work/model_repo"
    assert w.status["phase"] == "Deploying"
    assert w.cond("Serving")["reason"] == "RollingOut"
    w.set_serving(True)
    w.step(1)
    assert w.cond("Serving")["status"] == "True"
    assert_quiet(w)

    w.finish("repo-tuned", result={"models": ["mnist_onnx", "mnist_bls"]})
    d = w.step(1)
    # serve-tuned: the Deployment's pod template changes, so its pods roll
    assert [o["kind"] for o in d.update] == ["Deployment"]
    assert triton_repo(w) == "--model-repository=/work/model_repo_tuned"
    tuned_fp = w.stage("serve-tuned")["fingerprint"]
    assert tuned_fp != base_fp
    assert deployment(w)["spec"]["template"]["metadata"]["annotations"][
        "mnist.serving.dev/fingerprint"] == tuned_fp
    assert w.stage("serve-tuned")["state"] == "Running" and not w.jobs("bench-tuned-grpc")
    assert w.cond("Serving")["reason"] == "RollingOut"
    assert ("Normal", "StageStarted") in events(d)
    w.step()    # the old pod is still ready while the rollout waits: status says so once
    assert w.stage("serve-tuned")["state"] == "Running"
    assert_quiet(w)

    w.set_serving(True)
    w.step(1)
    assert w.stage("serve-tuned")["state"] == "Succeeded"
    assert w.stage("serve")["state"] == "Succeeded"     # served before; nothing re-runs
    assert w.jobs("bench-tuned-grpc") and w.status["phase"] == "Benchmarking"
    w.finish("bench-tuned-grpc", result=bench_result("grpc", "6000.0"))
    w.step(1)
    w.finish("bench-tuned-http", result=bench_result("http", "5500.0"))
    d = w.step(1)
    assert w.status["phase"] == "Ready" and ("Normal", "Ready") in events(d)
    loop = w.status["benchmark"]["closedLoop"]
    assert loop["before"] == {"mnist_onnx/grpc": "5000.0", "mnist_onnx/http": "5000.0"}
    assert loop["after"] == {"mnist_onnx/grpc": "6000.0", "mnist_onnx/http": "5500.0"}
    assert loop["gain"] == "1.15" and loop["state"] == "Measured"
    assert loop["applied"]["mnist_onnx"]["instances"] == 2
    walk_numbers(w.status)
    assert_quiet(w)


def test_operator_run_id_measures_before_on_the_base_repository_again():
    w = world_serving_tuned()
    for p in ("grpc", "http"):
        w.finish(f"bench-tuned-{p}", result=bench_result(p, "6000.0"))
        w.step(1)
    assert w.status["phase"] == "Ready"
    jobs_before = {s: w.jobs(s) for s in ("repo-tuned", "bench-tuned-grpc")}

    w.edit_spec(benchmark__runId="again")
    d = w.step(1)
    # bench-grpc runs again against the served-as-specified repository: Triton rolls back
    assert triton_repo(w) == "--model-repository=/work/model_repo"
    assert [o["kind"] for o in d.update] == ["Deployment"]
    assert "serve-tuned" not in w.status["stages"]        # nothing to apply until analyze is done
    w.set_serving(True)
    w.step(1)
    for p in ("grpc", "http"):
        w.finish(f"bench-{p}", result=bench_result(p, "5100.0"))
        w.step(1)
    w.finish("analyze", result=ANALYZE_RESULT)
    d = w.step(1)
    # the same best config: the same repo-tuned Job (same fingerprint) writes the tuned
    # repository again (its record went away with the re-analysis), Triton rolls to it
    assert w.stage("repo-tuned")["state"] == "Running"
    assert [o["metadata"]["name"] for o in created(d)] == jobs_before["repo-tuned"]
    w.finish("repo-tuned", result={})
    w.step(1)
    assert triton_repo(w) == "--model-repository=/work/model_repo_tuned"
    w.set_serving(True)
    w.step(1)
    for p in ("grpc", "http"):
        w.finish(f"bench-tuned-{p}", result=bench_result(p, "6200.0"))
        w.step(1)
    assert w.jobs("bench-tuned-grpc") != jobs_before["bench-tuned-grpc"]
    assert w.status["phase"] == "Ready"
    assert w.status["benchmark"]["closedLoop"]["before"]["mnist_onnx/grpc"] == "5100.0"
    assert w.status["benchmark"]["closedLoop"]["after"]["mnist_onnx/grpc"] == "6200.0"
    assert_quiet(w)


def test_operator_turning_apply_best_off_serves_the_spec_again():
    w = world_serving_tuned()
    assert triton_repo(w) == "--model-repository=/work/model_repo_tuned"
    w.edit_spec(benchmark__modelAnalyzer__applyBest=False)
    d = w.step(1)
    assert triton_repo(w) == "--model-repository=/work/model_repo"
    assert [o["kind"] for o in d.update] == ["Deployment"]
    assert not any(n in w.status["stages"] for n in TUNED)
    assert "closedLoop" not in w.status["benchmark"]
    assert w.stage("analyze")["state"] == "Succeeded" and not created(d)   # analysis kept
    w.set_serving(True)
    w.step(1)
    assert w.status["phase"] == "Ready"
    assert_quiet(w)


def test_nothing_to_apply_when_the_served_config_is_the_best(demo):
    # the real demo analysis: its best config is mnist_onnx_config_0 (not the default), so
    # make it the default one as in a run where the served config won
    analyzed = dict(demo["analyze"], models={"mnist_onnx": dict(
        demo["analyze"]["models"]["mnist_onnx"], bestConfig="mnist_onnx_config_default")})
    run = {**demo, "analyze": analyzed}
    assert summarize_of(run).get("closedLoop") is None      # applyBest off: nothing said
    loop = summary.summarize(run, apply_best=True)["benchmark"]["closedLoop"]
    assert loop == {"state": "NothingToApply", "message": "the served config is already the "
                    "best one found for throughput (mnist_onnx mnist_onnx_config_default)"}
    text = "\n".join(display.closed_loop_table({"benchmark": {"closedLoop": loop}}))
    assert "NothingToApply: the served config is already the best" in text


def test_operator_says_when_there_is_nothing_to_apply():
    w = world_through_analyze(APPLY)
    w.finish("analyze", result={"models": {"mnist_onnx": {
        "bestConfig": "mnist_onnx_config_default", "apply": {"instances": 1}}}})
    d = w.step(1)
    # Triton comes back on the same repository: no Job, no new repository
    assert not created(d) and [o["spec"]["replicas"] for o in d.update] == [1]
    w.set_serving(True)
    w.step(1)
    assert w.status["phase"] == "Ready"
    assert w.status["benchmark"]["closedLoop"]["state"] == "NothingToApply"
    assert_quiet(w)


# --------------------------------------------------------------------------- headline figures
def test_headline_figures_describe_the_config_served_now(demo):
    # issue 27: after the closed loop the Throughput column and bestThroughput still
    # showed the sweep before tuning (11,329.6 on an H100 serving 40,858.5)
    analyzed = dict(demo["analyze"], models={"mnist_onnx": dict(
        demo["analyze"]["models"]["mnist_onnx"], bestConfig="mnist_onnx_config_1",
        apply=analyze.config_settings(MA_CONFIG_1))})
    before = max((e["best"]["inferPerSec"] for p in ("grpc", "http")
                  for e in demo[f"bench-{p}"]["models"].values()), key=float)
    run = {**demo, "analyze": analyzed}
    assert summarize_of(run)["bestThroughput"] == before          # applyBest off: as before
    # a config to apply, its bench not in yet: no figure of the replaced config as current
    for extra in ({}, {"repo-tuned": {"stage": "repo", "state": "Succeeded"},
                       "serve-tuned": {"stage": "serve", "state": "Succeeded"},
                       "bench-tuned-grpc": tuned_bench(demo["bench-grpc"], 3.6)}):
        bench = summary.summarize({**run, **extra}, apply_best=True)["benchmark"]
        assert bench["throughput"] == bench["throughputOf"] == "pending"
        assert "bestThroughput" not in bench and "throughputAtSlo" not in bench
        assert "its bench has not finished" in bench["throughputNote"]
        assert bench["perfAnalyzer"]["mnist_onnx"]["grpc"]["bestInferPerSec"] == \
            demo["bench-grpc"]["models"]["mnist_onnx"]["best"]["inferPerSec"]
    run.update(extra, **{"bench-tuned-http": tuned_bench(demo["bench-http"], 3.6)})
    bench = summary.summarize(run, apply_best=True)["benchmark"]
    after = max((e["best"]["inferPerSec"] for p in ("grpc", "http")
                 for e in run[f"bench-tuned-{p}"]["models"].values()), key=float)
    assert bench["bestThroughput"] == bench["throughput"] == after and bench["throughputOf"] == "tuned"
    assert float(after) > 3 * float(before) and "throughputNote" not in bench
    assert before in bench["closedLoop"]["before"].values()       # before/after stay there
    assert after in bench["closedLoop"]["after"].values()
    # a closed-loop step failed: the tuned config's figure is unmeasured, not the old one
    run["bench-tuned-http"] = {"stage": "bench", "state": "Failed", "message": "boom"}
    bench = summary.summarize(run, apply_best=True)["benchmark"]
    assert bench["throughput"] == "unmeasured" and "bestThroughput" not in bench
    assert "bench-tuned-http Failed: boom" in bench["throughputNote"]
    walk_numbers(bench)


def test_the_throughput_at_the_slo_is_the_tuned_one_too():
    from test_slo_status import RESULT
    tuned = copy.deepcopy(RESULT)
    entry = tuned["models"]["mnist_onnx"]
    entry["slo"]["atSlo"]["inferPerSec"], entry["best"]["inferPerSec"] = "9999.9", "19999.9"
    run = {"bench-grpc": {"stage": "bench", "state": "Succeeded", **RESULT},
           "analyze": {"stage": "analyze", "state": "Succeeded", **ANALYZE_RESULT},
           "repo-tuned": {"stage": "repo", "state": "Succeeded"},
           "serve-tuned": {"stage": "serve", "state": "Succeeded"},
           "bench-tuned-grpc": {"stage": "bench", "state": "Succeeded", **tuned}}
    bench = summary.summarize(run, apply_best=True, objective="throughputAtSlo")["benchmark"]
    assert (bench["throughputAtSlo"], bench["bestThroughput"]) == ("9999.9", "19999.9")
    assert bench["throughput"] == "9999.9@p99<=8ms" and bench["slo"] == "p99 <= 8 ms"
    assert bench["closedLoop"]["before"] == {
        "mnist_onnx/grpc": RESULT["models"]["mnist_onnx"]["slo"]["atSlo"]["inferPerSec"]}


def test_operator_throughput_column_follows_the_served_config():
    w = world_serving_tuned()
    assert w.status["benchmark"]["throughput"] == "pending"        # not the 5000.0 replaced
    w.finish("bench-tuned-grpc", result=bench_result("grpc", "6000.0"))
    w.step(1)
    assert w.status["benchmark"]["throughput"] == "pending"        # http not measured yet
    w.finish("bench-tuned-http", result=bench_result("http", "5500.0"))
    w.step(1)
    bench = w.status["benchmark"]
    assert w.status["phase"] == "Ready"
    assert (bench["throughput"], bench["bestThroughput"], bench["throughputOf"]) == \
        ("6000.0", "6000.0", "tuned")
    assert bench["closedLoop"]["before"]["mnist_onnx/grpc"] == "5000.0"
    assert "throughputNote" not in bench
    assert_quiet(w)
    w.edit_spec(benchmark__modelAnalyzer__applyBest=False)        # serving the spec again
    w.step(1)
    assert w.status["benchmark"]["throughput"] == "5000.0" and "throughputOf" not in w.status["benchmark"]
