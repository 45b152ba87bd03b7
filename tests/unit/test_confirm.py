"""With an SLO the closed loop holds model-analyzer's candidates to the bench stage's
rule before serving any: repo-candidates writes them into a repository of their own,
confirm-candidates measures each there (the percentiles' 95 % intervals, measured
further while undecided) and only those that meet the SLO are applied."""
from __future__ import annotations

import copy
from pathlib import PurePosixPath

import pytest

from mnist_jobs import confirm
from mnist_jobs.lib import slo as slo_rule
from mnist_jobs.lib.stage_cli import InputError
from mnist_operator.api.spec import parse_spec
from mnist_operator.core import builders, pipeline
from mnist_jobs import analyze

from test_closed_loop import APPLY, MA_CONFIG_1, bench_result, triton_repo
from test_reconcile import World, assert_quiet, created, events

LAY = pipeline.Layout(PurePosixPath("/work"))
SLO = {"benchmark": {"modelAnalyzer": {"applyBest": True}, "slo": {"p99Ms": 10}}}
SETTINGS = analyze.config_settings(MA_CONFIG_1)
#: model-analyzer found a better config for two models, at these concurrencies
ANALYZED = {"models": {
    "mnist_onnx": {"bestConfig": "mnist_onnx_config_1", "concurrency": 64, "throughput": "7084.3",
                   "apply": SETTINGS},
    "mnist_pt": {"bestConfig": "mnist_pt_config_2", "concurrency": 16, "throughput": "3001.0",
                 "apply": {**SETTINGS, "instances": 3}}}}


def point(verdict: str, p99: list, requests: int = 9000, c: int = 64) -> dict:
    return {"c": c, "verdict": verdict, "meetsSlo": verdict == "meets", "inferPerSec": "5100.0",
            "p99Us": p99[0], "latency": {"requests": requests, "p99": p99},
            **({} if verdict == "meets" else {"why": f"p99 {verdict}"})}


def confirmed(*met: str) -> dict:
    """confirm's result: ``met`` meet p99 <= 10 ms, the other candidate misses it."""
    models = {"mnist_onnx": point("meets", [8000, 7900, 8100]) if "mnist_onnx" in met
              else point("misses", [12000, 11800, 12300]),
              "mnist_pt": point("meets", [6000, 5900, 6100], c=16) if "mnist_pt" in met
              else point("undecided", [9900, 9700, 10200], c=16)}
    return {"slo": "p99 <= 10 ms", "protocol": "grpc", "models": models,
            "confirmed": list(met)}


def planned(spec: dict, analyzed: dict | None, confirmed_: dict | None = None) -> dict:
    return {s.name: s for s in pipeline.plan(parse_spec(spec), LAY, analyzed=analyzed,
                                             confirmed=confirmed_)}


def record(steps: dict, name: str, result: dict, state: str = "Succeeded") -> dict:
    return {**result, "state": state, "fingerprint": steps[name].fingerprint}


# --------------------------------------------------------------------------- the plan
def test_with_an_slo_the_candidates_are_confirmed_before_anything_is_applied():
    steps = planned(SLO, None)
    analyzed = record(steps, "analyze", ANALYZED)
    steps = planned(SLO, analyzed)
    assert list(steps)[-2:] == ["repo-candidates", "confirm-candidates"]
    assert "repo-tuned" not in steps and "serve-tuned" not in steps
    repo = steps["repo-candidates"].params
    assert repo.out == "/work/model_repo_candidates" and len(repo.override) == 2
    check = steps["confirm-candidates"]
    # each candidate at the concurrency model-analyzer measured it at, judged by the SLO
    assert check.params.candidates == ("mnist_onnx:64", "mnist_pt:16")
    assert check.params.model_repo == "/work/model_repo_candidates"
    assert (check.params.slo_p99_ms, check.params.protocol) == (10, "grpc")
    assert check.needs == ("repo-candidates",)


def test_only_the_candidates_that_meet_the_slo_are_applied():
    analyzed = record(planned(SLO, None), "analyze", ANALYZED)
    steps = planned(SLO, analyzed)
    steps = planned(SLO, analyzed, record(steps, "confirm-candidates", confirmed("mnist_onnx")))
    # mnist_pt was undecided: it keeps its served config
    assert [o.split(":")[0] for o in steps["repo-tuned"].params.override] == ["mnist_onnx"]
    assert steps["serve-tuned"].params.model_repo == "/work/model_repo_tuned"
    both = planned(SLO, analyzed, record(steps, "confirm-candidates",
                                         confirmed("mnist_onnx", "mnist_pt")))
    assert len(both["repo-tuned"].params.override) == 2
    # the verdicts, not the confirm run, decide the tuned steps: the same ones reuse them
    assert both["repo-tuned"].fingerprint != steps["repo-tuned"].fingerprint


def test_no_tuned_steps_when_no_candidate_meets_the_slo_or_confirm_is_stale():
    analyzed = record(planned(SLO, None), "analyze", ANALYZED)
    steps = planned(SLO, analyzed)
    none = planned(SLO, analyzed, record(steps, "confirm-candidates", confirmed()))
    assert list(none)[-1] == "confirm-candidates"
    stale = {**record(steps, "confirm-candidates", confirmed("mnist_onnx")),
             "fingerprint": "0" * 12}
    assert "repo-tuned" not in planned(SLO, analyzed, stale)
    failed = record(steps, "confirm-candidates", confirmed("mnist_onnx"), state="Failed")
    assert "repo-tuned" not in planned(SLO, analyzed, failed)


def test_without_an_slo_the_closed_loop_applies_at_once():
    analyzed = record(planned(APPLY, None), "analyze", ANALYZED)
    steps = planned(APPLY, analyzed)
    assert "confirm-candidates" not in steps and "repo-tuned" in steps


def test_the_confirm_job_measures_beside_its_own_triton_on_the_candidates():
    analyzed = record(planned(SLO, None), "analyze", ANALYZED)
    spec = parse_spec({**SLO, "serving": {"gpus": 1}})
    step = next(s for s in pipeline.plan(spec, LAY, analyzed=analyzed)
                if s.name == "confirm-candidates")
    cr = {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
          "metadata": {"name": "demo", "namespace": "default", "uid": "u1"}, "spec": spec.to_dict()}
    job = builders.build_step_job(cr, spec, step, 0)
    pod = job["spec"]["template"]["spec"]
    main = pod["containers"][0]
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "triton")
    assert "--model-repository=/work/model_repo_candidates" in sidecar["command"]
    assert "--model-control-mode=explicit" in sidecar["command"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert main["command"][:3] == ["python3", "-m", "mnist_jobs.confirm"]
    assert "--triton-launch-mode" in main["command"] and "remote" in main["command"]
    # perf_analyzer's requests and limits: the bench stage's
    assert main["resources"] == builders._resources(spec, "bench", 0)


# --------------------------------------------------------------------------- the operator
def world_confirming(spec: dict = SLO) -> World:
    w = World(copy.deepcopy(spec))
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve", "client")
    for p in ("grpc", "http"):
        w.finish(f"bench-{p}", result=bench_result(p, "5000.0"))
        w.step(1)
    w.finish("analyze", result=ANALYZED)
    w.step(1)
    w.finish("repo-candidates", result={"models": ["mnist_onnx", "mnist_pt"]})
    w.step(1)
    return w


def test_operator_pauses_serving_for_confirm_then_serves_only_the_confirmed():
    w = world_confirming({**SLO, "serving": {"gpus": 1}})
    assert w.jobs("confirm-candidates") and w.status["phase"] == "Confirming"
    assert w.cond("Serving")["reason"] == "PausedForAnalysis"
    assert "the confirm stage" in w.cond("Serving")["message"]
    assert triton_repo(w) == "--model-repository=/work/model_repo"
    w.finish("confirm-candidates", result=confirmed("mnist_onnx"))
    d = w.step(1)
    assert w.cond("CandidatesConfirmed")["status"] == "True"
    assert [o["metadata"]["name"] for o in created(d)] == w.jobs("repo-tuned")
    command = w.job("repo-tuned")["spec"]["template"]["spec"]["containers"][0]["command"]
    overrides = [command[i + 1] for i, a in enumerate(command) if a == "--override"]
    assert [o.split(":")[0] for o in overrides] == ["mnist_onnx"]
    loop = w.status["benchmark"]["closedLoop"]
    assert list(loop["applied"]) == ["mnist_onnx"]
    assert loop["confirmation"]["mnist_onnx"] == \
        "meets at c=64: 5100.0 infer/s, p99 8000 us [7900, 8100] over 9,000 requests"
    assert loop["confirmation"]["mnist_pt"].startswith(
        "undecided at c=16: 5100.0 infer/s, p99 9900 us [9700, 10200] over 9,000 requests")


def test_operator_says_nothing_to_apply_when_no_candidate_holds():
    w = world_confirming()
    w.finish("confirm-candidates", result=confirmed())
    d = w.step(1)
    assert not created(d)      # no tuned repository: Triton comes back on the served one
    w.set_serving(True)
    w.step(1)
    assert w.status["phase"] == "Ready" and triton_repo(w) == "--model-repository=/work/model_repo"
    loop = w.status["benchmark"]["closedLoop"]
    assert loop["state"] == "NothingToApply" and "applied" not in loop
    assert loop["message"].startswith(
        "no candidate config met p99 <= 10 ms when the confirm stage measured it again")
    assert "mnist_onnx misses at c=64" in loop["message"]
    cond = w.cond("Improved")
    assert (cond["status"], cond["reason"]) == ("False", "NothingToApply")
    assert_quiet(w)


def test_operator_retries_a_failed_confirm_and_applies_nothing_meanwhile():
    w = world_confirming()
    w.finish("confirm-candidates", state="Failed", exit_code=1,
             result={"reason": "PerfAnalyzerFailed", "message": "perf_analyzer failed"})
    d = w.step(1)
    rec = w.stage("confirm-candidates")
    assert (rec["state"], rec["reason"]) == ("BackingOff", "PerfAnalyzerFailed")
    assert ("Warning", "StageFailed") in events(d) and "repo-tuned" not in w.status["stages"]
    w.step(60)
    assert w.stage("confirm-candidates")["attempt"] == 1
    w.finish("confirm-candidates", result=confirmed("mnist_pt"))
    w.step(1)
    assert w.stage("repo-tuned")["state"] == "Running"
    assert list(w.status["benchmark"]["closedLoop"]["applied"]) == ["mnist_pt"]


# --------------------------------------------------------------------------- the stage
@pytest.mark.parametrize("p99, verdict", [
    ([8000, 7900, 8100], "meets"),          # upper bound within 10 ms
    ([9900, 9700, 10200], "undecided"),     # the interval holds the limit
    ([12000, 11800, 12300], "misses"),      # lower bound over it
    ([8000, None, None], "undecided"),      # too few requests for an interval
])
def test_a_candidate_is_judged_by_the_bench_stages_rule(p99, verdict):
    row = {"c": 64, "p99Us": p99[0], "p95Us": p99[0], "latency": {"requests": 9000, "p99": p99}}
    assert confirm.verdict(slo_rule.Slo(p99_ms=10), row) == verdict


@pytest.mark.parametrize("text, words", [
    ("", "empty list"), ("mnist_onnx", "not MODEL:CONCURRENCY"),
    ("mnist_onnx:0", "not MODEL:CONCURRENCY"), ("mnist_onnx:4,mnist_onnx:8", "given twice"),
])
def test_bad_candidates_name_the_flag(text, words):
    with pytest.raises(InputError, match=f"--candidates: .*{words}"):
        confirm.parse_candidates(text)


def test_confirm_without_an_slo_is_refused_naming_the_flag(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    code = confirm.main(["--model-repo", str(tmp_path / "repo"), "--candidates", "mnist_onnx:4",
                         "--protocol", "grpc", "--batch-size", "1",
                         "--measurement-mode", "count_windows", "--measurement-interval-ms", "500",
                         "--measurement-request-count", "50", "--stability-percentage", "20",
                         "--repeats", "1", "--slo-p99-ms", "0", "--slo-p95-ms", "0",
                         "--slo-decide-within-s", "0", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--slo-p99-ms: confirm judges candidates against an SLO" in capsys.readouterr().err
