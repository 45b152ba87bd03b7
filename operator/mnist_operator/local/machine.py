"""This machine as the cluster the operator's core decides for.

``reconcile`` is the only place that decides, for a cluster and for a local
run alike. Here its Decision is carried out on this machine: a Job is a
stage subprocess (run to its end, since the core runs one step at a time),
the Triton Deployment is the ``serve`` stage in the background, and the
Service, volume and ServiceAccount are only remembered. What happened goes
back to the core as the Job, Pod and Deployment objects it reads in a
cluster: the stage's result file stands in for the pod's termination
message, and the Deployment is available once Triton answers.
"""
from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mnist_operator.api.spec import MnistServingSpec
from mnist_operator.api.vocabulary import ANNOTATION_FINGERPRINT, FINISHED, LABEL_STEP
from mnist_operator.core import pipeline
from mnist_operator.core.builders import CLIENTS_RUN_ENV
from mnist_operator.core.pipeline import Layout, Step
from mnist_operator.core.reconcile import Decision, Substrate, plan_of
from mnist_operator.core.status import timestamp
from mnist_operator.local import processes
from mnist_operator.local.display import headline

SERVE_READY_TIMEOUT_S = 300
#: Per-step ``run`` values in the local status: what this run did with the step.
RAN, REUSED, DISABLED = "ran", "reused", "disabled"


def _now() -> str:
    return timestamp(datetime.now(timezone.utc))


def last_log_line(log: Path) -> str:
    try:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def result_of(outcome: processes.StageOutcome) -> dict:
    """The stage's result, or why there is none (its exit code and last log line)."""
    return outcome.result or {
        "state": "Failed", "reason": "NoResult",
        "message": f"exit {outcome.returncode} without a result: {last_log_line(outcome.log)}"}


def write_record(lay: Layout, step: Step, result: dict, started: str, seconds: float) -> dict:
    """The stage's result plus what the run knows (fingerprint, times) in
    ``results/<step>.json``: the record a later run reuses."""
    rec = {"stage": step.stage, "state": "Failed", **result, "fingerprint": step.fingerprint,
           "startTime": started, "completionTime": _now()}
    rec.setdefault("durationSeconds", int(round(seconds)))
    path = Path(lay.result(step.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, sort_keys=True) + "\n")
    return rec


def recorded_stages(steps: list[Step], lay: Layout, force: list[str]) -> dict[str, dict]:
    """status.stages as the core would have recorded them, from the result files
    of earlier runs: finished steps of the current fingerprint only (a failed
    or interrupted one runs again), minus ``force`` and what follows it."""
    forced = {n for name in force for n in pipeline.stale_after(steps, name)}
    out = {}
    for step in steps:
        rec = processes.read_result(Path(lay.result(step.name)))
        if step.name in forced or not pipeline.is_done(step, rec):
            continue
        out[step.name] = {
            "fingerprint": step.fingerprint, "state": rec["state"], "attempt": 0,
            **{k: str(rec[k]) for k in ("reason", "message", "startTime", "completionTime")
               if rec.get(k)},
            "result": {k: v for k, v in rec.items()
                       if k not in ("stage", "state", "reason", "message", "fingerprint",
                                    "startTime", "completionTime")}}
    return out


@dataclass
class Reporter:
    """What the run shows while it goes: the display's progress lines."""
    start: Callable[[str], None]
    line: Callable[[str, str], None]
    done: Callable[[str, str, str], None]
    note: Callable[[str], None]


@dataclass
class Machine:
    """The cluster objects of one local run, and the processes behind them."""
    spec: MnistServingSpec
    substrate: Substrate
    workdir: Path
    report: Reporter
    env: dict
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)        # steps this run started
    running: tuple[Step, str] | None = None            # the stage in progress, and since when
    serve_failure: tuple[Step, dict] | None = None     # Triton did not come up
    _triton: object | None = None
    _triton_step: Step | None = None
    _triton_started: str = ""
    _serial: int = 0

    # ------------------------------------------------------------------ reading
    def observe(self) -> dict:
        """What the core reads in a cluster: this resource's children."""
        kind = lambda k: [o for (kk, _), o in self.objects.items() if kk == k]
        one = lambda k: next(iter(kind(k)), None)
        return {"jobs": kind("Job"), "pods": kind("Pod"), "job_events": {},
                "deployment": one("Deployment"), "service": one("Service"),
                "pvc": one("PersistentVolumeClaim"), "account": one("ServiceAccount")}

    def steps(self, status: dict) -> list[Step]:
        """The plan the core made this pass (the closed loop's steps once analyze has a result)."""
        return plan_of(self.spec, self.substrate, status.get("stages") or {})

    # ------------------------------------------------------------------ acting
    def apply(self, decision: Decision) -> None:
        """Carry out the core's Decision; a Job runs to its end before this returns."""
        steps = {s.name: s for s in self.steps(decision.status)}
        for ref in decision.delete:
            self.objects.pop((ref["kind"], ref["name"]), None)
            if ref["kind"] == "Deployment":
                self.stop_triton()
            if ref["kind"] == "Job":
                self.objects = {k: o for k, o in self.objects.items() if not (
                    k[0] == "Pod" and o["metadata"]["labels"].get("job-name") == ref["name"])}
        for obj in decision.create + decision.update:
            key = (obj["kind"], obj["metadata"]["name"])
            if obj["kind"] == "Job":
                if key not in self.objects:
                    self.run_job(obj, steps[obj["metadata"]["labels"][LABEL_STEP]])
            elif obj["kind"] == "Deployment":
                self.deploy(obj, steps)
            else:
                self.objects.setdefault(key, obj)

    def run_job(self, job: dict, step: Step) -> None:
        name = job["metadata"]["name"]
        self._serial += 1
        uid = f"local-{self._serial}"
        started = _now()
        self.running = (step, started)
        self.ran.add(step.name)
        self.report.start(step.name)
        echo = lambda text: self.report.line(step.name, text)  # noqa: E731
        if step.pods > 1:   # an Indexed Job: its pods, all at once
            # the clients' run name: this Job (a run's own serial) at this time
            env = {**self.env, CLIENTS_RUN_ENV: f"{uid}-{started.replace(':', '')}"}
            outcome = processes.run_indexed(
                [self.command(step, i) for i in range(step.pods)],
                [self.result_path(step, i) for i in range(step.pods)],
                [self.log(step, i) for i in range(step.pods)], echo, env)
        else:
            outcome = processes.run_stage(self.command(step), self.result_path(step),
                                          self.log(step), echo, self.env)
        self.running = None
        result = result_of(outcome)
        rec = write_record(self.substrate.layout, step, result, started, outcome.seconds)
        ok = rec["state"] in FINISHED and outcome.returncode == 0
        finished = rec["completionTime"]
        self.objects[("Job", name)] = {
            **job, "metadata": {**job["metadata"], "uid": uid},
            "status": {"startTime": started, "completionTime": finished if ok else None,
                       "succeeded" if ok else "failed": step.pods if ok else 1,
                       "conditions": [{"type": "Complete" if ok else "Failed", "status": "True",
                                       "lastTransitionTime": finished}]}}
        self.objects[("Pod", f"{name}-local")] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-local", "labels": {"job-name": name},
                         "ownerReferences": [{"kind": "Job", "name": name, "uid": uid}]},
            "spec": {"nodeName": platform.node()},   # this machine: no image, so no digest
            "status": {"containerStatuses": [{"name": step.stage, "state": {"terminated": {
                "exitCode": outcome.returncode, "finishedAt": finished,
                # the stage's own result, as its termination message would carry it
                "message": json.dumps(result) if outcome.result else result["message"]}}}]}}
        mark = {"Succeeded": "ok", "Skipped": "--"}.get(rec["state"], "!!")
        self.report.done(step.name, mark, f"{rec['state']} in {outcome.seconds:.0f} s  "
                                          f"{headline(step.stage, rec)}")
        if not ok:
            self.report_failure(step, rec)

    def deploy(self, want: dict, steps: dict[str, Step]) -> None:
        """The Triton Deployment as one background Triton: stopped at 0 replicas,
        (re)started on the repository of the serve step whose fingerprint it carries."""
        replicas = int(want["spec"].get("replicas", 1))
        fp = want["spec"]["template"]["metadata"]["annotations"][ANNOTATION_FINGERPRINT]
        step = next(s for s in steps.values() if s.long_running and s.fingerprint == fp)
        if replicas == 0:
            self.stop_triton()
        elif self._triton is None or self._triton_step != step:
            self.stop_triton()
            self.start_triton(step)
        up = self._triton is not None
        self.objects[("Deployment", want["metadata"]["name"])] = {
            **want, "metadata": {**want["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "replicas": replicas if up else 0,
                       "updatedReplicas": replicas if up else 0,
                       "availableReplicas": replicas if up else 0}}

    def start_triton(self, step: Step) -> None:
        self._triton_started = _now()
        self.ran.add(step.name)
        self.report.start(step.name)
        triton = processes.Background(self.command(step), self.result_path(step), self.log(step),
                                      lambda text: self.report.line(step.name, text), self.env)
        outcome = triton.wait_result(SERVE_READY_TIMEOUT_S)
        result = result_of(outcome)
        if result.get("state") == "Succeeded" and outcome.returncode == 0:
            self._triton, self._triton_step = triton, step
            write_record(self.substrate.layout, step,
                         {**result, "readySeconds": result.get("readySeconds",
                                                               int(outcome.seconds))},
                         self._triton_started, outcome.seconds)
            ep = self.substrate.endpoints
            self.report.done(step.name, "ok", f"Ready in {outcome.seconds:.0f} s at "
                                              f"{ep.url('grpc')} (grpc), {ep.url('http')} (http)")
            return
        triton.stop()
        rec = write_record(self.substrate.layout, step,
                           processes.read_result(triton.result_path) or result, self._triton_started,
                           outcome.seconds)
        self.serve_failure = (step, rec)
        self.report.done(step.name, "!!", f"{rec.get('state')} in {outcome.seconds:.0f} s  "
                                          f"{rec.get('message') or rec.get('reason')}")
        self.report_failure(step, rec)

    def stop_triton(self) -> None:
        if self._triton is None:
            return
        triton, step = self._triton, self._triton_step
        self._triton = self._triton_step = None
        triton.stop()
        final = processes.read_result(triton.result_path)
        if final and step is not None:   # the stage rewrote its result on the way out
            write_record(self.substrate.layout, step, final, self._triton_started, 0)
            self.report.note(f"     [serve] Triton stopped (exit {final.get('tritonExitCode')})")

    def command(self, step: Step, index: int = 0) -> list[str]:
        return [sys.executable, "-m", f"mnist_jobs.{step.stage}", *step.args,
                "--result", str(self.result_path(step, index))]

    def result_path(self, step: Step, index: int = 0) -> Path:
        """An Indexed Job's index 0 writes the step's result; the others beside it."""
        path = Path(self.substrate.layout.result(step.name))
        return path.with_name(f"{step.name}-{index}.json") if index else path

    def log(self, step: Step, index: int = 0) -> Path:
        return self.workdir / "logs" / (f"{step.name}-{index}.log" if index
                                        else f"{step.name}.log")

    def report_failure(self, step: Step, rec: dict) -> None:
        self.report.note(f"error: step {step.name} failed: "
                         f"{rec.get('message') or rec.get('reason')} (log {self.log(step)})")


__all__ = ["Machine", "Reporter", "recorded_stages", "write_record",
           "RAN", "REUSED", "DISABLED", "SERVE_READY_TIMEOUT_S"]
