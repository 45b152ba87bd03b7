"""reconcile(cr, observed, now): every transition, on a small simulated cluster.

``World`` plays the API server and the Job/Deployment controllers: it applies
a Decision (creates, updates, deletes, status) and lets a test finish a Job
the way a kubelet would (a Pod with a terminated container whose message is
the stage's result JSON) or flip the Deployment's readiness.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from mnist_operator.core.reconcile import (RETRY_ANNOTATION, Decision, job_outcome, reconcile,
                                      status_patch)
from mnist_operator.core.status import get_condition

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
STEP = "mnist.serving.dev/step"
ALL_STEPS = ["train", "export", "engine", "repo", "serve", "client", "bench-grpc",
             "bench-http", "analyze"]

RESULTS = {
    "train": {"accuracy": "0.9812", "epochs": 2, "device": "cuda", "durationSeconds": 40},
    "export": {"opset": 17, "maxAbsDiff": "0.000001", "onnx": "/work/artifacts/model.onnx"},
    "engine": {"precision": "fp32"},
    "repo": {"models": "mnist_onnx,mnist_trt,mnist_bls"},
    "client": {"samples": 10000, "disagreements": 0},
    "bench-grpc": {"protocol": "grpc"},
    "bench-http": {"protocol": "http"},
    "analyze": {},
}


def make_cr(spec: dict | None = None, generation: int = 1) -> dict:
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": "MnistServing",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1",
                         "generation": generation, "annotations": {}},
            "spec": spec or {}}


class World:
    def __init__(self, spec: dict | None = None):
        self.cr = make_cr(spec)
        self.objects: dict[tuple[str, str], dict] = {}
        self.pods: list[dict] = []
        self.nodes: dict[str, dict] = {}   # node name -> its GPU labels, as kube.node_gpus reads them
        self.now = T0
        self.decisions: list[Decision] = []

    # the API server ---------------------------------------------------------
    def observed(self) -> dict:
        def one(kind):
            return next((copy.deepcopy(o) for (k, _), o in self.objects.items() if k == kind), None)
        return {"jobs": [copy.deepcopy(o) for (k, _), o in self.objects.items() if k == "Job"],
                "pods": copy.deepcopy(self.pods), "deployment": one("Deployment"),
                "service": one("Service"), "pvc": one("PersistentVolumeClaim"),
                "account": one("ServiceAccount"), "nodes": copy.deepcopy(self.nodes)}

    def step(self, advance: float = 0) -> Decision:
        self.now += timedelta(seconds=advance)
        d = reconcile(copy.deepcopy(self.cr), self.observed(), self.now)
        for obj in d.create:
            key = (obj["kind"], obj["metadata"]["name"])
            if key not in self.objects:
                o = copy.deepcopy(obj)
                o["metadata"]["uid"] = f"uid-{key[1]}"
                o["metadata"]["generation"] = 1
                self.objects[key] = o
        for obj in d.update:
            key = (obj["kind"], obj["metadata"]["name"])
            live = self.objects[key]
            live["spec"] = copy.deepcopy(obj["spec"])
            live["metadata"]["generation"] += 1
        for ref in d.delete:
            self.delete(ref["kind"], ref["name"])
        self.cr["status"] = copy.deepcopy(d.status)
        self.decisions.append(d)
        return d

    def delete(self, kind: str, name: str) -> None:
        self.objects.pop((kind, name), None)
        self.pods = [p for p in self.pods if p["metadata"]["labels"].get("job-name") != name]

    def edit_spec(self, **changes) -> None:
        spec = self.cr["spec"]
        for path, value in changes.items():
            node = spec
            *parents, leaf = path.split("__")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        self.cr["metadata"]["generation"] += 1

    # controllers ------------------------------------------------------------
    def job(self, step: str) -> dict:
        jobs = [o for (k, _), o in self.objects.items()
                if k == "Job" and o["metadata"]["labels"][STEP] == step]
        assert jobs, f"no Job for {step}; have {sorted(self.objects)}"
        return max(jobs, key=lambda j: int(j["metadata"]["labels"]["mnist.serving.dev/attempt"]))

    def jobs(self, step: str | None = None) -> list[str]:
        return sorted(n for (k, n), o in self.objects.items()
                      if k == "Job" and (step is None or o["metadata"]["labels"][STEP] == step))

    def finish(self, step: str, state: str = "Succeeded", exit_code: int | None = None,
               result: dict | None = None, message: str | None = None, reason: str = "") -> None:
        job = self.job(step)
        name = job["metadata"]["name"]
        code = exit_code if exit_code is not None else (1 if state == "Failed" else 0)
        if message is None:
            body = {"stage": job["metadata"]["labels"][STEP].split("-")[0], "state": state,
                    **({"reason": reason} if reason else {}),
                    **(result if result is not None else RESULTS.get(step, {}))}
            if state == "Failed":
                body["message"] = "loss is NaN"
            message = json.dumps(body)
        done = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pods.append({"metadata": {"name": f"{name}-pod", "labels": {"job-name": name}},
                          "status": {"phase": "Succeeded" if code == 0 else "Failed",
                                     "containerStatuses": [{"name": "stage", "state": {
                                         "terminated": {"exitCode": code, "message": message,
                                                        "reason": "Completed" if code == 0
                                                        else ("OOMKilled" if code == 137 else "Error"),
                                                        "finishedAt": done}}}]}})
        cond = "Complete" if code == 0 else "Failed"
        job["status"] = {"startTime": done, "conditions": [{"type": cond, "status": "True",
                                                            "lastTransitionTime": done}],
                         **({"succeeded": 1, "completionTime": done} if code == 0 else {"failed": 1})}

    def set_serving(self, available: bool) -> None:
        dep = next(o for (k, _), o in self.objects.items() if k == "Deployment")
        want = dep["spec"]["replicas"]
        n = want if available else 0
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": want,
                         "updatedReplicas": want, "readyReplicas": n, "availableReplicas": n}

    # reading status ---------------------------------------------------------
    @property
    def status(self) -> dict:
        return self.cr["status"]

    def stage(self, step: str) -> dict:
        return self.status["stages"][step]

    def cond(self, type_: str) -> dict:
        return get_condition(self.status["conditions"], type_)

    def run_through(self, *steps: str) -> None:
        """Create-and-finish each step in order (serve: become available;
        analyze: Triton, paused while it ran, comes back)."""
        for s in steps:
            if s == "serve":
                self.set_serving(True)
            else:
                self.finish(s, "Skipped" if s == "engine" else "Succeeded",
                            reason="TensorRTNotAvailable" if s == "engine" else "")
            self.step(1)
            if s == "analyze" and self.stage("serve")["reason"] == "ScalingBack":
                self.set_serving(True)
                self.step(1)


def created(d: Decision) -> list[dict]:
    """What a pass creates, less the pods' ServiceAccount (there from the first pass on)."""
    return [o for o in d.create if o["kind"] != "ServiceAccount"]


def events(d: Decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in d.events]


def assert_quiet(world: World) -> None:
    """Idempotence: reconciling the same world again changes nothing."""
    before = copy.deepcopy(world.status)
    d = world.step()
    assert (created(d), d.update, d.delete, d.events) == ([], [], [], []), d
    assert world.status == before


def walk_numbers(value, path="status"):
    if isinstance(value, float):
        raise AssertionError(f"float at {path}: {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            walk_numbers(v, f"{path}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            walk_numbers(v, f"{path}[{i}]")


# --------------------------------------------------------------------------- happy path
def test_first_pass_creates_volume_and_train_job_only():
    w = World()
    d = w.step()
    assert [(o["kind"], o["metadata"]["name"]) for o in created(d)] == [
        ("PersistentVolumeClaim", "demo-model"), ("Job", w.jobs("train")[0])]
    assert w.status["phase"] == "Training"
    assert w.status["observedGeneration"] == 1
    assert w.stage("train")["state"] == "Running" and w.stage("train")["attempt"] == 0
    assert w.cond("Ready")["status"] == "False" and w.cond("Ready")["reason"] == "Progressing"
    assert w.cond("Trained")["status"] == "False"
    assert w.cond("Analyzed")["status"] == "Unknown"
    assert events(d) == [("Normal", "StageStarted")]
    assert_quiet(w)


def test_every_stage_in_order_to_ready():
    w = World()
    w.step()
    expected_phase = {"train": "Exporting", "export": "BuildingEngine", "engine": "Deploying",
                      "repo": "Deploying", "serve": "Verifying", "client": "Benchmarking",
                      "bench-grpc": "Benchmarking", "bench-http": "Analyzing",
                      "analyze": "Ready"}
    condition = {"train": "Trained", "export": "Exported", "engine": "EngineBuilt",
                 "repo": "RepositoryReady", "serve": "Serving", "client": "Verified",
                 "bench-http": "Benchmarked", "analyze": "Analyzed"}
    for s in ALL_STEPS:
        if s == "serve":
            assert w.stage("serve")["state"] == "Running"
            assert w.cond("Serving")["reason"] == "RollingOut"
            assert not w.jobs("client"), "client must wait for Triton"
        w.run_through(s)
        d = w.decisions[-1]
        assert w.status["phase"] == expected_phase[s], s
        assert w.stage(s)["state"] in ("Succeeded", "Skipped"), (s, w.stage(s))
        if s in condition:
            # the engine was skipped (no TensorRT): EngineBuilt must not claim it was built
            want = "False" if s == "engine" else "True"
            assert w.cond(condition[s])["status"] == want, (s, w.cond(condition[s]))
        # exactly one Job running at a time
        running = [n for n, r in w.status["stages"].items() if r["state"] == "Running"]
        assert len(running) <= 1, running
        if s != "analyze":
            assert ("Normal", "StageStarted") in events(d), (s, events(d))
    assert w.cond("Ready")["status"] == "True" and w.cond("Ready")["reason"] == "Ready"
    assert ("Normal", "Ready") in events(w.decisions[-1])
    assert w.stage("engine")["reason"] == "TensorRTNotAvailable"
    assert w.cond("EngineBuilt")["reason"] == "TensorRTNotAvailable"
    assert w.cond("EngineBuilt")["status"] == "False"     # and Ready is True without it
    assert w.status["model"]["accuracy"] == "0.9812"
    assert w.stage("train")["result"]["durationSeconds"] == 40
    assert w.status["endpoints"]["grpc"] == "demo-triton.ml.svc:8001"
    assert sorted(w.jobs()) == sorted(w.jobs(s)[0] for s in ALL_STEPS if s != "serve")
    walk_numbers(w.status)
    assert_quiet(w)


def test_disabled_steps_are_skipped_without_jobs():
    w = World({"tensorrt": {"enabled": False}, "serving": {"models": ["onnx", "bls"]},
               "benchmark": {"modelAnalyzer": {"enabled": False}}})
    w.step()
    w.run_through("train", "export")
    assert w.stage("engine") == {**w.stage("engine"), "state": "Skipped", "reason": "Disabled"}
    assert (w.cond("EngineBuilt")["status"], w.cond("EngineBuilt")["reason"]) == \
        ("False", "Disabled")
    assert w.jobs("engine") == [] and w.jobs("repo")
    w.run_through("repo", "serve", "client", "bench-grpc", "bench-http")
    assert w.stage("analyze")["state"] == "Skipped" and w.jobs("analyze") == []
    assert w.status["phase"] == "Ready"
    # skipped stages read False (nothing was built or analyzed); Ready does not wait on them
    assert (w.cond("Analyzed")["status"], w.cond("Analyzed")["reason"]) == ("False", "Disabled")
    assert (w.cond("Ready")["status"], w.cond("Ready")["reason"]) == ("True", "Ready")
    assert_quiet(w)


# --------------------------------------------------------------------------- failures
def test_failed_job_retries_with_backoff_then_fails():
    w = World({"retries": {"limit": 2, "backoffSeconds": 10}})
    w.step()
    w.finish("train", "Failed", reason="TrainingDiverged")
    d = w.step()
    rec = w.stage("train")
    assert rec["state"] == "BackingOff" and rec["reason"] == "TrainingDiverged"
    assert "loss is NaN" in rec["message"]
    assert d.requeue_after == 10
    assert ("Warning", "StageFailed") in events(d)
    assert w.cond("Trained")["status"] == "False" and w.status["phase"] == "Training"
    # before the backoff ends: nothing new
    d = w.step(5)
    assert not created(d) and d.requeue_after == 5
    d = w.step(5)
    assert [o["metadata"]["labels"]["mnist.serving.dev/attempt"] for o in created(d)] == ["1"]
    assert w.stage("train")["attempt"] == 1 and w.stage("train")["state"] == "Running"
    w.finish("train", "Failed")
    d = w.step()
    assert d.requeue_after == 20  # 10 * 2**1
    w.step(20)
    assert w.stage("train")["attempt"] == 2
    w.finish("train", "Failed")
    d = w.step()
    assert w.stage("train")["state"] == "Failed"
    assert w.status["phase"] == "Failed"
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StageFailed")
    assert "train" in ready["message"] and "3 attempt" in ready["message"]
    assert ("Warning", "Failed") in events(d)
    assert len(w.jobs("train")) == 3  # failed attempts are kept for their logs
    assert d.requeue_after is None
    w.now += timedelta(hours=1)
    assert_quiet(w)


def test_exit_code_without_result_json_gives_reason():
    w = World({"retries": {"limit": 0}})
    w.step()
    w.finish("train", exit_code=137, message="")
    w.step()
    rec = w.stage("train")
    assert rec["state"] == "Failed" and rec["reason"] == "OOMKilled"
    assert "exit code 137" in rec["message"]


def test_job_deadline_without_pod_uses_job_condition():
    job = {"metadata": {"name": "j"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline"}]}}
    out = job_outcome(job, [])
    assert (out.state, out.reason) == ("Failed", "DeadlineExceeded")


def test_retry_annotation_resumes_failed_step_from_attempt_zero():
    w = World({"retries": {"limit": 0}})
    w.step()
    w.finish("train", "Failed")
    w.step()
    assert w.status["phase"] == "Failed"
    old_job = w.jobs("train")
    w.cr["metadata"]["annotations"][RETRY_ANNOTATION] = "1"
    d = w.step()
    assert ("Normal", "Resumed") in events(d)
    assert [r["name"] for r in d.delete] == old_job and not created(d)
    d = w.step()
    assert [o["metadata"]["name"] for o in created(d)] == old_job  # attempt 0 again
    assert w.stage("train")["state"] == "Running" and w.stage("train")["attempt"] == 0
    assert w.status["phase"] == "Training"
    assert_quiet(w)
    # the same annotation value again does not resume a second failure
    w.finish("train", "Failed")
    w.step()
    assert w.status["phase"] == "Failed"
    assert_quiet(w)


def test_new_generation_resumes_failed_step():
    w = World({"retries": {"limit": 0}})
    w.step()
    w.finish("train", "Failed")
    w.step()
    w.edit_spec(retries__limit=3)  # train's fingerprint does not depend on retries
    d = w.step()
    assert ("Normal", "Resumed") in events(d)
    w.step()
    assert w.stage("train")["state"] == "Running"


# --------------------------------------------------------------------------- spec changes
def test_spec_change_mid_pipeline_reruns_only_affected_steps():
    w = World()
    w.step()
    w.run_through("train", "export")
    engine_job = w.jobs("engine")
    # a serving change does not touch the running engine build
    w.edit_spec(serving__instances=2)
    d = w.step()
    assert not created(d) and not d.delete and w.jobs("engine") == engine_job
    assert w.status["observedGeneration"] == 2
    # a new learning rate retrains: the running engine Job is stale and goes
    old_jobs = w.jobs()
    w.edit_spec(training__learningRate="0.01")
    d = w.step()
    # every Job of the old fingerprints goes, the running engine build included
    assert sorted(r["name"] for r in d.delete) == old_jobs and engine_job[0] in old_jobs
    assert [o["metadata"]["labels"][STEP] for o in created(d)] == ["train"]
    assert ("Normal", "SpecChanged") in events(d)
    assert w.status["phase"] == "Training"
    assert w.stage("export")["state"] == "Pending"
    assert w.cond("Trained")["status"] == "False"


def test_spec_change_after_ready_rebenchmarks_only():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    assert w.status["phase"] == "Ready"
    train_job = w.jobs("train")
    w.edit_spec(benchmark__perfAnalyzer__concurrency={"start": 1, "end": 9, "step": 4})
    d = w.step()
    assert [o["metadata"]["labels"][STEP] for o in created(d)] == ["bench-grpc"]
    assert {r["kind"] for r in d.delete} == {"Job"}
    old_bench = w.decisions[-2].status["stages"]
    assert sorted(r["name"] for r in d.delete) == sorted(
        old_bench[s]["job"] for s in ("bench-grpc", "bench-http"))  # only the old sweep's Jobs
    assert w.jobs("train") == train_job and w.stage("train")["state"] == "Succeeded"
    assert w.status["phase"] == "Benchmarking"
    assert w.stage("analyze")["state"] == "Succeeded"  # analyze does not read the sweep
    assert ("Deployment", "demo-triton") in w.objects
    w.run_through("bench-grpc", "bench-http")
    assert w.status["phase"] == "Ready"


def test_removed_protocol_drops_its_step_and_status_entry():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    old = copy.deepcopy(w.status)
    http_job = w.jobs("bench-http")
    w.edit_spec(benchmark__perfAnalyzer__protocols=["grpc"])
    d = w.step()
    assert "bench-http" not in d.status["stages"]
    assert http_job[0] in [r["name"] for r in d.delete]
    assert status_patch(old, d.status)["stages"]["bench-http"] is None
    # the grpc sweep measured one protocol and its inputs did not change: nothing re-runs
    assert w.status["phase"] == "Ready" and "bench-http" not in w.status["stages"]
    assert w.status["stages"]["bench-grpc"] == old["stages"]["bench-grpc"]
    assert not created(d)


def test_retraining_after_ready_deletes_the_deployment():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    w.edit_spec(training__epochs=3)
    d = w.step()
    assert {"Deployment"} <= {r["kind"] for r in d.delete}
    assert ("Deployment", "demo-triton") not in w.objects
    assert ("Service", "demo-triton") in w.objects  # the name stays, endpoints empty
    assert w.status["phase"] == "Training"
    w.run_through("train", "export", "engine", "repo")
    dep = w.objects[("Deployment", "demo-triton")]
    serve_fp = w.stage("serve")["fingerprint"]
    assert dep["spec"]["template"]["metadata"]["annotations"][
        "mnist.serving.dev/fingerprint"] == serve_fp


def test_serving_change_rolls_the_deployment():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    w.edit_spec(serving__replicas=2, storage__accessMode="ReadWriteMany")
    d = w.step()
    assert [o["kind"] for o in d.update] == ["Deployment"]
    assert d.update[0]["spec"]["replicas"] == 2
    assert w.status["phase"] == "Deploying"
    w.set_serving(True)
    w.step()
    # the serve fingerprint moved, so everything after it re-runs
    assert w.status["phase"] == "Verifying"


# --------------------------------------------------------------------------- lost children
def test_deleted_running_job_is_recreated():
    w = World()
    w.step()
    (name,) = w.jobs("train")
    w.delete("Job", name)
    d = w.step()
    assert [o["metadata"]["name"] for o in created(d)] == [name]
    assert ("Warning", "JobMissing") in events(d)
    assert_quiet(w)


def test_finished_step_is_not_rerun_when_its_job_is_deleted():
    w = World()
    w.step()
    w.run_through("train")
    w.delete("Job", w.jobs("train")[0])
    d = w.step()
    assert all(o["metadata"]["labels"].get(STEP) != "train" for o in created(d))
    assert w.stage("train")["state"] == "Succeeded"


def test_deleted_deployment_after_ready_is_recreated_without_rerunning():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    w.delete("Deployment", "demo-triton")
    d = w.step()
    assert [o["kind"] for o in created(d)] == ["Deployment"]
    assert w.cond("Ready")["reason"] == "TritonUnavailable"
    assert all(w.stage(s)["state"] in ("Succeeded", "Skipped") for s in ALL_STEPS)
    w.set_serving(True)
    d = w.step()
    assert w.cond("Ready")["status"] == "True" and not created(d)


def test_deleted_pvc_is_recreated():
    w = World()
    w.step()
    w.delete("PersistentVolumeClaim", "demo-model")
    d = w.step()
    assert [o["kind"] for o in created(d)] == ["PersistentVolumeClaim"]


def test_existing_claim_is_never_created():
    w = World({"storage": {"existingClaim": "mine"}})
    d = w.step()
    assert [o["kind"] for o in created(d)] == ["Job"]


# --------------------------------------------------------------------------- restart
def test_restart_adopts_job_missing_from_status():
    w = World()
    w.step()
    (name,) = w.jobs("train")
    w.cr["status"] = {}  # the operator died after creating the Job, before writing status
    d = w.step()
    assert not created(d)
    assert w.stage("train")["job"] == name and w.stage("train")["state"] == "Running"


def test_restart_adopts_retry_attempt_created_before_status_was_written():
    w = World({"retries": {"limit": 2, "backoffSeconds": 5}})
    w.step()
    w.finish("train", "Failed")
    w.step()
    backing_off = copy.deepcopy(w.status)
    w.step(5)
    assert w.stage("train")["attempt"] == 1
    w.cr["status"] = backing_off  # status write of the retry was lost
    d = w.step()
    assert not created(d) and w.stage("train")["attempt"] == 1
    assert len(w.jobs("train")) == 2


def test_finished_job_found_after_restart_is_recorded():
    w = World()
    w.step()
    w.finish("train")
    w.cr["status"] = {}
    w.step()
    assert w.stage("train")["state"] == "Succeeded"
    assert w.status["phase"] == "Exporting"


# --------------------------------------------------------------------------- serving health
def test_triton_down_after_ready_turns_ready_false_without_rerunning():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    jobs = w.jobs()
    w.set_serving(False)
    d = w.step()
    assert (created(d), d.delete, d.update) == ([], [], [])
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "TritonUnavailable")
    assert w.cond("Serving")["reason"] == "TritonUnavailable"
    assert ("Warning", "TritonUnavailable") in events(d)
    assert w.jobs() == jobs
    assert_quiet(w)
    w.set_serving(True)
    d = w.step()
    assert w.cond("Ready")["status"] == "True" and ("Normal", "Ready") in events(d)
    assert w.cond("Ready")["lastTransitionTime"] == w.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def replicas(w: World) -> int:
    return next(o for (k, _), o in w.objects.items() if k == "Deployment")["spec"]["replicas"]


def test_analyze_pauses_serving_for_its_gpu_and_brings_it_back():
    # analyze's Triton sidecar needs the GPU serving holds (one-GPU node, full cluster)
    w = World()
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve", "client", "bench-grpc")
    w.finish("bench-http")
    d = w.step(1)
    assert [o["metadata"]["labels"][STEP] for o in created(d)] == ["analyze"]
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == [("Deployment", 0)]
    assert ("Normal", "ServingPaused") in events(d)
    assert not [e for e in d.events if e.type == "Warning"]
    serving, ready = w.cond("Serving"), w.cond("Ready")
    assert (serving["status"], serving["reason"]) == ("False", "PausedForAnalysis")
    assert (ready["status"], ready["reason"]) == ("False", "Progressing")
    assert w.stage("serve")["state"] == "Succeeded"
    assert w.status["phase"] == "Analyzing"
    assert_quiet(w)
    w.set_serving(False)   # the controller scaled it down: still paused, nothing new
    d = w.step(1)
    assert not (d.create or d.update or d.delete or d.events) and w.cond("Serving")["reason"] == "PausedForAnalysis"
    assert_quiet(w)

    w.finish("analyze")
    d = w.step(1)
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == [("Deployment", 1)]
    assert not created(d) and not [e for e in d.events if e.type == "Warning"]
    assert w.status["phase"] == "Deploying"
    assert w.cond("Ready")["reason"] == "Progressing"
    assert "scaling back" in w.cond("Ready")["message"]
    assert w.cond("Serving")["reason"] == "RollingOut"
    assert_quiet(w)
    w.set_serving(True)
    d = w.step(1)
    assert w.status["phase"] == "Ready" and ("Normal", "Ready") in events(d)
    assert w.stage("serve")["reason"] == "Available"
    assert_quiet(w)


def test_a_rerun_of_analyze_after_ready_pauses_without_a_triton_warning():
    w = World()
    w.step()
    w.run_through(*ALL_STEPS)
    w.edit_spec(benchmark__runId="second")
    w.step(1)
    w.run_through("bench-grpc", "bench-http")
    assert replicas(w) == 0 and w.cond("Serving")["reason"] == "PausedForAnalysis"
    warnings = [e for d in w.decisions for e in d.events if e.type == "Warning"]
    assert warnings == []
    w.run_through("analyze")
    assert w.status["phase"] == "Ready" and replicas(w) == 1


def test_serving_keeps_running_through_analyze_when_it_holds_no_gpu():
    w = World({"serving": {"cpuOnly": True, "models": ["onnx", "bls"]},
               "tensorrt": {"enabled": False}})
    w.step()
    w.run_through("train", "export", "repo", "serve", "client", "bench-grpc", "bench-http")
    assert w.stage("analyze")["state"] == "Running"
    assert replicas(w) == 1 and w.cond("Serving")["status"] == "True"
    assert not [d for d in w.decisions if d.update]


def test_a_failed_analyze_gives_the_gpu_back_to_serving():
    w = World({"retries": {"limit": 0}})
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve", "client", "bench-grpc",
                  "bench-http")
    assert replicas(w) == 0
    w.finish("analyze", "Failed")
    d = w.step(1)
    assert w.status["phase"] == "Failed" and replicas(w) == 1
    assert [o["spec"]["replicas"] for o in d.update] == [1]


def test_later_steps_wait_while_triton_is_down():
    w = World()
    w.step()
    w.run_through("train", "export", "engine", "repo", "serve")
    w.finish("client")
    w.set_serving(False)
    d = w.step(1)
    assert not created(d)
    assert w.stage("bench-grpc")["reason"] == "WaitingForTriton"
    w.set_serving(True)
    d = w.step(1)
    assert [o["metadata"]["labels"][STEP] for o in created(d)] == ["bench-grpc"]


# --------------------------------------------------------------------------- invalid spec
def test_invalid_spec_fails_naming_the_field_and_creates_nothing():
    w = World({"training": {"epochs": 0}, "tensorrt": {"optBatch": 999}})
    d = w.step()
    assert (created(d), d.delete) == ([], [])
    assert w.status["phase"] == "Failed"
    ready = w.cond("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.training.epochs" in ready["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "InvalidSpec")]
    assert "\n" not in d.events[0].message
    assert_quiet(w)
    w.edit_spec(training__epochs=1, tensorrt__optBatch=64)
    d = w.step()
    assert w.status["phase"] == "Training" and created(d)


def test_status_patch_nulls_only_what_went_away():
    old = {"phase": "Ready", "kopf": {"x": 1}, "stages": {"a": {"state": "Succeeded"}, "b": {}}}
    new = {"phase": "Training", "stages": {"a": {"state": "Running"}}}
    # kopf's own bookkeeping (status.kopf) is not ours to remove
    assert status_patch(old, new) == {"phase": "Training",
                                      "stages": {"a": {"state": "Running"}, "b": None}}


@pytest.mark.parametrize("exit_code,state", [(0, "Succeeded"), (1, "Failed")])
def test_job_outcome_reads_termination_message(exit_code, state):
    w = World()
    w.step()
    w.finish("train", state)
    out = job_outcome(w.job("train"), w.pods)
    assert out.state == state and out.result["stage"] == "train"


def _stuck_pod(job_name: str, status: dict) -> dict:
    return {"metadata": {"name": f"{job_name}-x", "labels": {"job-name": job_name}},
            "status": {"phase": "Pending", **status}}


# kube-scheduler 1.36's PodScheduled messages, as the cluster tier's scheduler wrote them
NO_NODE_HAS_THE_PRODUCT = (
    "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. no new claims "
    "to deallocate, preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
MORE_GPUS_THAN_A_NODE_HAS = (
    "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. no new claims to deallocate, "
    "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
EVERY_GPU_BUSY = (
    "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. no new claims to deallocate, "
    "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
CLAIM_UNBOUND = ("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
                 "not found")


def unschedulable(message: str) -> dict:
    return {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "lastTransitionTime": "2020-01-01T00:00:00Z",   # long ago
                            "message": message}]}


UNSCHEDULABLE = unschedulable(NO_NODE_HAS_THE_PRODUCT)
PULL_BACKOFF = {"containerStatuses": [{"name": "stage", "state": {"waiting": {
    "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nvcr.io/nvidia/pytorch:99\""}}}]}


@pytest.mark.parametrize("status,reason,words", [
    (UNSCHEDULABLE, "Unschedulable", "didn't match Pod's node affinity/selector"),
    (unschedulable(MORE_GPUS_THAN_A_NODE_HAS), "Unschedulable", "Insufficient nvidia.com/gpu"),
    (PULL_BACKOFF, "ImagePullBackOff", "nvcr.io/nvidia/pytorch:99"),
])
def test_a_stuck_stage_pod_is_named_in_status_and_one_warning(status, reason, words):
    w = World()
    w.step()
    job = w.job("train")["metadata"]["name"]
    w.pods.append(_stuck_pod(job, status))
    d = w.step(1)
    rec = w.stage("train")
    assert rec["state"] == "Running" and rec["reason"] == reason and words in rec["message"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", reason)]
    # the same picture again: no new event, same status
    d2 = w.step(1)
    assert not d2.events and w.stage("train") == rec
    # the pod gets going: back to an ordinary running record, then it finishes normally
    w.pods.clear()
    w.step(1)
    assert w.stage("train")["reason"] == "JobRunning"
    w.finish("train")
    w.step(1)
    assert w.stage("train")["state"] == "Succeeded"


@pytest.mark.parametrize("message,reason", [
    (EVERY_GPU_BUSY, "WaitingForGPU"),
    (CLAIM_UNBOUND, "WaitingForVolume"),
    (EVERY_GPU_BUSY.replace("nvidia.com/gpu", "cpu"), "WaitingForResources"),
])
def test_a_pod_queued_for_a_gpu_or_its_claim_says_so_without_a_warning(message, reason):
    """Waiting for a busy GPU (or a claim to bind) is queuing a user expects at
    capacity: the stage record says what it waits for, no Warning is posted."""
    w = World()
    w.step()
    job = w.job("train")["metadata"]["name"]
    w.pods.append(_stuck_pod(job, unschedulable(message)))
    d = w.step(1)
    rec = w.stage("train")
    assert rec["state"] == "Running" and rec["reason"] == reason and message in rec["message"]
    assert not d.events and not w.step(1).events and w.stage("train") == rec
    w.pods.clear()                     # a GPU freed: the pod runs
    w.step(1)
    assert w.stage("train")["reason"] == "JobRunning"
    w.finish("train")
    w.step(1)
    assert w.stage("train")["state"] == "Succeeded"


def test_a_queued_pod_that_comes_to_fit_no_node_is_news():
    w = World()
    w.step()
    job = w.job("train")["metadata"]["name"]
    w.pods.append(_stuck_pod(job, unschedulable(EVERY_GPU_BUSY)))
    w.step(1)
    w.pods[:] = [_stuck_pod(job, UNSCHEDULABLE)]   # the only GPU nodes went away
    d = w.step(1)
    assert w.stage("train")["reason"] == "Unschedulable"
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Unschedulable")]


@pytest.mark.parametrize("message,reason", [
    (NO_NODE_HAS_THE_PRODUCT, "Unschedulable"),
    (MORE_GPUS_THAN_A_NODE_HAS, "Unschedulable"),     # no eviction would make room
    (EVERY_GPU_BUSY, "WaitingForGPU"),
    (CLAIM_UNBOUND, "WaitingForVolume"),
    # some nodes full, the rest without the product: the full ones will free up
    ("0/64 nodes are available: 8 Insufficient nvidia.com/gpu, 56 node(s) didn't match Pod's "
     "node affinity/selector. no new claims to deallocate, preemption: 0/64 nodes are available: "
     "8 No preemption victims found for incoming pod, 56 Preemption is not helpful for "
     "scheduling.", "WaitingForGPU"),
    # preemption not tried (preemptionPolicy Never): nothing says the request is too big
    ("0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: not eligible due to "
     "preemptionPolicy=Never.", "WaitingForGPU"),
    ("0/2 nodes are available: 2 node(s) had untolerated taint(s). no new claims to deallocate, "
     "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
     "Unschedulable"),
])
def test_the_schedulers_message_tells_queuing_from_fitting_no_node(message, reason):
    from mnist_operator.core.children import unschedulable_reason
    assert unschedulable_reason(message) == reason


def test_pod_blocker_ignores_ordinary_waiting():
    from mnist_operator.core.children import pod_blocker
    creating = {"containerStatuses": [{"name": "stage", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    assert pod_blocker([_stuck_pod("j", creating)]) is None
    assert pod_blocker([]) is None


def test_a_name_taken_by_someone_elses_object_is_explained():
    from mnist_operator.core.reconcile import name_conflict
    desired = {"kind": "Service", "metadata": {"name": "demo-triton",
                                               "labels": {"app.kubernetes.io/instance": "demo"}}}
    foreign = {"kind": "Service", "metadata": {"name": "demo-triton", "labels": {"owner": "x"}}}
    other = {"kind": "Service", "metadata": {"name": "demo-triton",
                                             "labels": {"app.kubernetes.io/instance": "other"}}}
    msg = name_conflict(foreign, desired)
    assert "Service demo-triton already exists" in msg and "instance=unset" in msg
    assert "instance=other" in name_conflict(other, desired)
    assert name_conflict(desired, desired) is None      # our own child: the 409 is harmless
    assert name_conflict(None, desired) is None         # gone meanwhile


def test_a_moment_of_unschedulable_is_no_news():
    """The scheduler says Unschedulable while a volume binds: no Warning for that."""
    w = World()
    w.step()
    job = w.job("train")["metadata"]["name"]
    fresh = {"conditions": [dict(UNSCHEDULABLE["conditions"][0],
                                 lastTransitionTime=w.now.strftime("%Y-%m-%dT%H:%M:%SZ"))]}
    w.pods.append(_stuck_pod(job, fresh))
    d = w.step(1)
    assert not d.events and w.stage("train")["reason"] != "Unschedulable"
    d = w.step(61)   # still unschedulable a minute later: now it is news
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Unschedulable")]


def test_stop_after_benchmark_scales_triton_to_zero_once_every_stage_finished():
    """serving.stopAfterBenchmark (what a sweep sets on its points): measured, then the
    GPUs are handed back; every figure stays; turning it off serves again."""
    w = World({"serving": {"stopAfterBenchmark": True}})
    w.step()
    w.run_through(*ALL_STEPS[:-1])
    assert w.status["phase"] == "Analyzing" and replicas(w) == 0   # paused for analyze
    before = w.status["benchmark"]
    w.finish("analyze")
    d = w.step(1)
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == []   # stays at 0
    assert w.status["phase"] == "Measured"
    serving, ready = w.cond("Serving"), w.cond("Ready")
    assert (serving["status"], serving["reason"]) == ("False", "StoppedAfterBenchmark")
    assert (ready["status"], ready["reason"]) == ("False", "StoppedAfterBenchmark")
    assert "its GPUs are free" in ready["message"]
    assert w.status["benchmark"] == before                 # the figures stay
    assert not [e for e in d.events if e.type == "Warning"]
    assert_quiet(w)

    w.edit_spec(serving__stopAfterBenchmark=False)
    d = w.step(1)
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == [("Deployment", 1)]
    assert not created(d)                                  # nothing re-runs
    w.set_serving(True)
    w.step(1)
    assert w.status["phase"] == "Ready" and w.cond("Serving")["reason"] == "Available"


def test_stop_after_benchmark_scales_a_serving_triton_down_once_with_an_event():
    w = World({"serving": {"stopAfterBenchmark": True, "gpus": 0}})   # analyze does not pause it
    w.step()
    w.run_through(*ALL_STEPS[:-1])
    assert replicas(w) == 1
    w.finish("analyze")
    d = w.step(1)
    assert [(o["kind"], o["spec"]["replicas"]) for o in d.update] == [("Deployment", 0)]
    assert ("Normal", "ServingStopped") in events(d)
    assert w.status["phase"] == "Measured"
    w.set_serving(False)
    d = w.step(1)
    assert not (d.create or d.update or d.delete or d.events)
    assert_quiet(w)
