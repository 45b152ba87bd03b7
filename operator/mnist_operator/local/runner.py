"""``mnist-serving run FILE``: the operator's pipeline on this machine, no cluster.

    mnist-serving run examples/local.yaml [--workdir runs/<name>] [--force STEP]
                      [--device auto|cpu|cuda] [--http-port N --grpc-port N --metrics-port N]

Reads the same MnistServing YAML a cluster gets, plans the same steps
(:func:`mnist_operator.pipeline.plan`) and runs each step's stage CLI as a
subprocess; ``serve`` runs Triton in the background while the steps that
talk to it run, then is stopped. A step whose recorded result carries the
step's current fingerprint is reused, so a rerun after a spec change redoes
only what the change touches. The end is the status the operator would
write, printed and saved as ``<workdir>/status.json``.

With ``benchmark.modelAnalyzer.applyBest`` the steps are planned again once
``analyze`` has a result: ``repo-tuned`` writes ``model_repo_tuned/`` with
the best config, Triton is restarted on it (``serve-tuned``) and the sweep
runs again (``bench-tuned-<protocol>``); the status shows before and after.

Exit codes: 0 every step finished, 1 a step failed (its one-line reason is
printed), 2 bad input (the spec file, a flag, a busy port), 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, TextIO

from .. import pipeline, results
from ..pipeline import Endpoints, Layout, Step
from ..spec import GROUP, KIND, MnistServingSpec, SpecError, parse_spec
from . import processes

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVE_READY_TIMEOUT_S = 300

RUN, REUSE, DISABLED = "run", "reuse", "disabled"
RESTARTED = "restarted"   # serve: Triton started again for later steps, same fingerprint


class UsageError(Exception):
    """Bad input to the runner; each line of ``lines`` names what to fix."""

    def __init__(self, *lines: str):
        super().__init__("; ".join(lines))
        self.lines = list(lines)


# --------------------------------------------------------------------------- pure decisions
def load_resource(text: str, source: str) -> tuple[str, MnistServingSpec]:
    """(metadata.name, spec) of an MnistServing document, or a UsageError."""
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise UsageError(f"{source}: not valid YAML: {first}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: expected an MnistServing object")
    kind, api = doc.get("kind"), str(doc.get("apiVersion", ""))
    if kind != KIND or not api.startswith(GROUP + "/"):
        raise UsageError(f"{source}: kind/apiVersion: expected {KIND} in {GROUP}, "
                         f"got {kind!r} in {api!r}")
    name = (doc.get("metadata") or {}).get("name") or Path(source).stem
    try:
        spec = parse_spec(doc.get("spec"))
    except SpecError as err:
        raise UsageError(*(f"{source}: {e}" for e in err.errors)) from None
    return str(name), spec


def decide(steps: list[Step], recorded: dict[str, dict], force: list[str],
           already: dict[str, str] | None = None) -> dict[str, str]:
    """run / reuse / disabled per step.

    A step runs when its recorded fingerprint does not match, when it is
    forced, or when a step it reads from runs (a fresh upstream output makes
    a reused downstream result stale even if the inputs hash the same).
    ``serve`` (and ``serve-tuned``) is the exception in the other direction:
    starting Triton again does not invalidate what was measured against an
    identical repository. ``already``: decisions made before a re-plan, kept.
    """
    forced = set()
    for name in force:
        if name in {s.name for s in steps}:
            forced.update(pipeline.stale_after(steps, name))
    serving = {s.name for s in steps if s.long_running}
    out: dict[str, str] = {}
    for step in steps:
        if already and step.name in already:
            out[step.name] = already[step.name]
            continue
        done = pipeline.is_done(step, recorded.get(step.name)) and step.name not in forced
        if not step.enabled:
            out[step.name] = REUSE if done else DISABLED
            continue
        dirty_upstream = any(out.get(n) == RUN for n in step.needs if n not in serving)
        fresh_serve = any(out.get(n) == RUN for n in step.needs if n in serving)
        out[step.name] = RUN if (not done or dirty_upstream or fresh_serve) else REUSE
    return out


def serve_needed_by(steps: list[Step], decisions: dict[str, str],
                    serve: str = "serve") -> list[str]:
    """Steps that will run and talk to the Triton of ``serve`` (so it must be up for them)."""
    return [s.name for s in steps if serve in s.needs and decisions.get(s.name) == RUN]


def pick_ports(explicit: dict[str, int | None], in_use: Callable[[int], bool],
               free: Callable[[int], list[int]]) -> dict[str, int]:
    """Explicit ports must be free (one error naming the flag); the rest are picked."""
    chosen = {flag: port for flag, port in explicit.items() if port}
    for flag, port in chosen.items():
        if not 0 < port < 65536:
            raise UsageError(f"{flag}: {port} is not a port number")
        if in_use(port):
            raise UsageError(f"{flag}: port {port} is already in use")
    if len(set(chosen.values())) != len(chosen):
        raise UsageError("--http-port: the http, grpc and metrics ports must differ")
    missing = [flag for flag in explicit if flag not in chosen]
    spare = [p for p in free(len(missing) + 3) if p not in chosen.values()]
    chosen.update(zip(missing, spare))
    return chosen


def headline(step: str, result: dict) -> str:
    """The few words worth showing when a step finishes."""
    state = result.get("state")
    if state != "Succeeded":
        return result.get("message") or result.get("reason") or ""
    if step == "train":
        return (f"held-out accuracy {result.get('accuracy')} on {result.get('testSamples')} "
                f"digits ({result.get('device')})")
    if step == "export":
        return f"ONNX opset {result.get('opset')}, ORT vs torch max |diff| {result.get('maxAbsDiff')}"
    if step == "engine":
        return f"{result.get('builder')} plan {result.get('planBytes')} bytes ({result.get('gpu', '')})"
    if step.startswith("repo"):
        tuned = "; ".join(f"{m} {o}" for m, o in result.get("overrides", {}).items())
        return "models " + ", ".join(result.get("models", [])) + (f" (tuned: {tuned})" if tuned else "")
    if step.startswith("serve"):
        return ", ".join(f"{m} {s}" for m, s in result.get("models", {}).items())
    if step == "client":
        acc = result.get("accuracy", {})
        return "; ".join(f"{m} " + " ".join(f"{p} {a}" for p, a in per.items())
                         for m, per in acc.items()) + f" (agree: {result.get('agree')})"
    if step.startswith("bench"):
        return "; ".join(f"{m} best {e['best']['inferPerSec']} infer/s at c={e['best']['c']}"
                         for m, e in result.get("models", {}).items())
    if step == "analyze":
        return "; ".join(f"{m} best {e.get('bestConfig')} {e.get('throughput')} infer/s"
                         for m, e in result.get("models", {}).items())
    return ""


def build_status(name: str, steps: list[Step], records: dict[str, dict],
                 decisions: dict[str, str], endpoints: Endpoints, workdir: Path,
                 phase: str, apply_best: bool = False) -> dict:
    """What the operator would write to ``.status`` for this run (plus where it ran)."""
    stages = {}
    fingerprints = {s.name: s.fingerprint for s in steps}
    for step in steps:
        rec = records.get(step.name)
        if not rec or rec.get("fingerprint") != step.fingerprint:
            # never ran, or its result is from another spec: not this run's
            stages[step.name] = {"state": "Pending", "fingerprint": step.fingerprint}
            continue
        entry = {"state": rec.get("state", "Unknown"), "fingerprint": step.fingerprint,
                 "durationSeconds": int(rec.get("durationSeconds", 0)),
                 "run": {RUN: "ran", REUSE: "reused", DISABLED: "disabled",
                         RESTARTED: "restarted"}.get(
                     decisions.get(step.name, ""), "not run")}
        for key in ("reason", "message", "startTime", "completionTime"):
            if rec.get(key):
                entry[key] = str(rec[key])
        stages[step.name] = entry
    current = {n: r for n, r in records.items()
               if r and r.get("fingerprint") == fingerprints.get(n)}
    return {"name": name, "phase": phase, "stages": stages,
            **results.summarize(current, apply_best=apply_best),
            "endpoints": {**endpoints.as_status(),
                          "note": "served by the local Triton during the run; stopped at its end"},
            "workdir": str(workdir)}


def _in_model_order(by_model: dict) -> list[tuple[str, object]]:
    """Models as the seed lists them (onnx, trt, bls), anything else after."""
    rank = {m: i for i, m in enumerate(pipeline.TRITON_MODEL.values())}
    return sorted(by_model.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def perf_table(status: dict) -> list[str]:
    perf = status.get("benchmark", {}).get("perfAnalyzer", {})
    lines = []
    if perf:
        lines.append(f"  {'model':<12} {'protocol':<8} {'best infer/s':>12} {'p99 ms':>8} "
                     f"{'at conc':>7} {'c-lowest infer/s':>16} {'gain':>6} {'Little fails':>12}")
        for model, per in _in_model_order(perf):
            for protocol, p in per.items():
                lines.append(
                    f"  {model:<12} {protocol:<8} {p['bestInferPerSec']:>12} "
                    f"{int(p['p99UsAtBest']) / 1000:>8.2f} {p['concurrencyAtBest']:>7} "
                    f"{str(p.get('inferPerSecAtLowest', '-')):>16} {p['batchingGain']:>6} "
                    f"{p['littleFailures']:>5}/{p['points']:<6}")
    return lines


def analyzer_table(status: dict) -> list[str]:
    ma = status.get("benchmark", {}).get("modelAnalyzer", {})
    if not ma:
        return []
    if "state" in ma:
        return [f"  {ma['state']}"]
    lines = [f"  {'model':<12} {'best config':<28} {'infer/s':>9} {'p99 ms':>7} {'conc':>5} "
             f"{'inst':>4} {'default infer/s':>15} {'best/default':>12}"]
    for model, m in ma.items():
        if not isinstance(m, dict):
            continue
        lines.append(f"  {model:<12} {m.get('bestConfig', '-'):<28} {m.get('throughput', '-'):>9} "
                     f"{m.get('p99Ms', '-'):>7} {m.get('concurrency', '-'):>5} "
                     f"{m.get('instances', '-'):>4} {m.get('defaultThroughput', '-'):>15} "
                     f"{m.get('bestOverDefault', '-'):>12}")
    return lines


def closed_loop_table(status: dict) -> list[str]:
    loop = status.get("benchmark", {}).get("closedLoop", {})
    if not loop:
        return []
    if "applied" not in loop:
        return [f"  {loop.get('state')}: {loop.get('message', '')}"]
    lines = [f"  {model:<12} {', '.join(f'{k} {v}' for k, v in cfg.items())}"
             for model, cfg in loop.get("applied", {}).items()]
    if loop.get("before"):
        lines.append(f"  {'model/protocol':<20} {'before infer/s':>14} {'after infer/s':>13} "
                     f"{'gain':>6}")
        lines += [f"  {key:<20} {loop['before'][key]:>14} {loop['after'][key]:>13} "
                  f"{loop['gains'][key]:>6}" for key in loop["before"]]
        lines.append(f"  overall gain {loop['gain']} ({loop.get('state')})")
    else:
        lines.append(f"  {loop.get('state')}")
    return lines


def summary_lines(status: dict, status_path: Path) -> list[str]:
    out = [f"{status['name']}: {status['phase']}  (work dir {status['workdir']})", "", "stages"]
    for name, st in status["stages"].items():
        extra = st.get("message", "") if st["state"] != "Succeeded" else ""
        out.append(f"  {name:<11} {st['state']:<10} {st.get('durationSeconds', 0):>5} s  "
                   f"{st.get('run', ''):<9} {st['fingerprint']}  {extra}".rstrip())
    model = status.get("model", {})
    if model:
        out += ["", "model"]
        out += [f"  {k:<16} {v}" for k, v in model.items()]
    client = status.get("clientAccuracy", {})
    if client:
        out += ["", f"client accuracy (real held-out digits through Triton, "
                    f"{client.get('samples')} each; disagreements {client.get('disagreements')})"]
        out += [f"  {m:<12} " + "  ".join(f"{p} {a}" for p, a in per.items())
                for m, per in _in_model_order(client) if isinstance(per, dict)]
    table = perf_table(status)
    if table:
        out += ["", "perf_analyzer (best point per model and protocol; gain = best / "
                    "lowest-concurrency throughput)"] + table
    ma = analyzer_table(status)
    if ma:
        out += ["", "model-analyzer (best config per model)"] + ma
    loop = closed_loop_table(status)
    if loop:
        out += ["", "closed loop (applyBest: the best config served and the sweep run again)"] + loop
    out += ["", f"status: {status_path}"]
    return out


# --------------------------------------------------------------------------- progress
class Progress:
    """One live line per step on a terminal (elapsed time + the stage's latest
    stderr line); plain prefixed lines otherwise (CI logs, pipes)."""

    def __init__(self, stream: TextIO, live: bool):
        self.stream, self.live = stream, live
        self._lock = threading.Lock()
        self._step: str | None = None
        self._started = 0.0
        self._last = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if live:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 20)).columns

    def _draw(self) -> None:
        if self._step is None:
            return
        line = f"  .. {self._step:<11} {time.time() - self._started:5.0f} s  {self._last}"
        self.stream.write("\r\033[K" + line[: self._width() - 1])
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def start(self, step: str) -> None:
        with self._lock:
            self._step, self._started, self._last = step, time.time(), "starting"
            if self.live:
                self._draw()
            else:
                self.stream.write(f"  -> {step}\n")
                self.stream.flush()

    def line(self, step: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        with self._lock:
            if step != self._step:
                return   # Triton's late lines after its step finished: the log has them
            self._last = text
            if self.live:
                self._draw()
            else:
                self.stream.write(f"     [{step}] {text}\n")
                self.stream.flush()

    def done(self, step: str, mark: str, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(f"  {mark} {step:<11} {text}\n")
            self.stream.flush()
            if step == self._step:
                self._step = None

    def note(self, text: str) -> None:
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()
            if self.live:
                self._draw()

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- I/O shell
def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _record(path: Path, result: dict, step: Step, started: str, seconds: float) -> dict:
    """The stage's result plus what the runner knows: fingerprint and times."""
    rec = {"stage": step.stage, "state": "Failed", **result, "fingerprint": step.fingerprint,
           "startTime": started, "completionTime": _now()}
    rec.setdefault("durationSeconds", int(round(seconds)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, sort_keys=True) + "\n")
    return rec


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _last_log_line(log: Path) -> str:
    try:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mnist-serving run",
                description="Run the MnistServing pipeline on this machine (no cluster).")
    p.add_argument("file", type=Path, help="MnistServing YAML (the same a cluster gets)")
    p.add_argument("--workdir", type=Path, help="work directory (default runs/<metadata.name>)")
    p.add_argument("--force", action="append", default=[], metavar="STEP",
                   help="rerun STEP and everything after it even if its result is current "
                        "(repeatable; 'all' reruns everything)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="train/export device (default: cpu when training.gpus is 0, else auto)")
    p.add_argument("--http-port", type=int, help="Triton HTTP port (default: a free one)")
    p.add_argument("--grpc-port", type=int, help="Triton gRPC port (default: a free one)")
    p.add_argument("--metrics-port", type=int, help="Triton metrics port (default: a free one)")
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


class Run:
    """One run: the steps, their records, the background Triton."""

    def __init__(self, name: str, steps: list[Step], lay: Layout, workdir: Path,
                 endpoints: Endpoints, decisions: dict[str, str], progress: Progress,
                 replan: Callable[[dict], list[Step]] | None = None,
                 force: list[str] | None = None, apply_best: bool = False):
        self.name, self.steps, self.lay, self.workdir = name, steps, lay, workdir
        self.endpoints, self.decisions, self.progress = endpoints, decisions, progress
        self.replan, self.force, self.apply_best = replan, list(force or []), apply_best
        self.records: dict[str, dict] = {s.name: _read_json(Path(lay.result(s.name)))
                                         for s in steps}
        self.env = processes.stage_env(REPO_ROOT)
        self.serve: processes.Background | None = None
        self.serve_step: Step | None = None
        self.serve_started = ""
        self.current: tuple[Step, str] | None = None

    def command(self, step: Step) -> list[str]:
        return [sys.executable, "-m", f"mnist_jobs.{step.stage}", *step.args,
                "--result", str(self.lay.result(step.name))]

    def log(self, step: Step) -> Path:
        return self.workdir / "logs" / f"{step.name}.log"

    def execute(self) -> str:
        """Run every step in order; return the phase (Ready or Failed)."""
        i = 0
        while i < len(self.steps):
            step, i = self.steps[i], i + 1
            decision = self.decisions[step.name]
            if step.long_running:
                needs_triton = serve_needed_by(self.steps, self.decisions, step.name)
                if needs_triton:
                    self.stop_serve()   # one Triton at a time: the earlier repository is done
                    if not self.start_serve(step, needs_triton):
                        return "Failed"
                else:
                    self.report_reused(step, "Triton not started: nothing to measure")
                continue
            if self.serve and self.serve_step is not None:
                needs_triton = serve_needed_by(self.steps, self.decisions, self.serve_step.name)
                if step.name not in needs_triton and not any(
                        n in needs_triton for n in self.remaining_after(step)):
                    self.stop_serve()   # free the cores before a step that does not need it
            if decision == REUSE:
                self.report_reused(step)
            elif decision == DISABLED:
                self.records[step.name] = _record(
                    Path(self.lay.result(step.name)),
                    {"stage": step.stage, "state": "Skipped", "reason": step.skip_reason,
                     "message": f"{step.name} is disabled in the spec", "durationSeconds": 0},
                    step, _now(), 0)
                self.progress.done(step.name, "--", f"Skipped ({step.skip_reason})")
            elif not self.run_step(step):
                return "Failed"
            if step.name == "analyze":
                self.plan_after_analyze()
        self.stop_serve()
        return "Ready"

    def plan_after_analyze(self) -> None:
        """applyBest: the steps after analyze follow from its result."""
        if self.replan is None:
            return
        steps = self.replan(self.records.get("analyze") or {})
        if [s.fingerprint for s in steps] == [s.fingerprint for s in self.steps]:
            return
        names = [s.name for s in steps]
        kept = {n: self.decisions[n] for n in names[:names.index("analyze") + 1]}
        added = names[len(kept):]
        for name in added:   # results of an earlier closed loop, reused if still current
            self.records[name] = _read_json(Path(self.lay.result(name)))
        self.steps = steps
        self.decisions = decide(steps, self.records, self.force, already=kept)
        if added:
            self.progress.note(f"  applyBest: then {', '.join(added)} "
                               f"(to run: {', '.join(n for n in added if self.decisions[n] == RUN) or 'none'})")

    def remaining_after(self, step: Step) -> list[str]:
        names = [s.name for s in self.steps]
        return names[names.index(step.name) + 1:]

    def report_reused(self, step: Step, why: str = "") -> None:
        rec = self.records.get(step.name) or {}
        self.progress.done(step.name, "==", f"reused ({rec.get('state')}, fingerprint "
                                            f"{step.fingerprint}{'; ' + why if why else ''})")

    def run_step(self, step: Step) -> bool:
        started = _now()
        self.current = (step, started)
        self.progress.start(step.name)
        outcome = processes.run_stage(self.command(step), Path(self.lay.result(step.name)),
                                      self.log(step),
                                      lambda line: self.progress.line(step.name, line), self.env)
        result = outcome.result or {
            "state": "Failed", "reason": "NoResult",
            "message": f"exit {outcome.returncode} without a result: "
                       f"{_last_log_line(outcome.log)}"}
        rec = _record(Path(self.lay.result(step.name)), result, step, started, outcome.seconds)
        self.records[step.name] = rec
        self.current = None
        return self.finish(step, rec, outcome.seconds)

    def interrupted(self) -> None:
        """Record the step that was running when the user stopped the run."""
        if self.current is None:
            return
        step, started = self.current
        self.current = None
        self.records[step.name] = _record(
            Path(self.lay.result(step.name)),
            {"stage": step.stage, "state": "Failed", "reason": "Interrupted",
             "message": "interrupted by the user"}, step, started, 0)

    def finish(self, step: Step, rec: dict, seconds: float) -> bool:
        state = rec.get("state")
        mark = {"Succeeded": "ok", "Skipped": "--"}.get(state, "!!")
        self.progress.done(step.name, mark, f"{state} in {seconds:.0f} s  {headline(step.name, rec)}")
        if state in ("Succeeded", "Skipped"):
            return True
        self.progress.note(f"error: step {step.name} failed: "
                           f"{rec.get('message') or rec.get('reason')} (log {self.log(step)})")
        return False

    def start_serve(self, step: Step, needed_by: list[str]) -> bool:
        self.serve_started = _now()
        if self.decisions[step.name] == REUSE:
            self.decisions[step.name] = RESTARTED
        self.progress.start(step.name)
        self.serve_step = step
        self.serve = processes.Background(
            self.command(step), Path(self.lay.result(step.name)), self.log(step),
            lambda line: self.progress.line(step.name, line), self.env)
        outcome = self.serve.wait_result(SERVE_READY_TIMEOUT_S)
        result = outcome.result or {
            "state": "Failed", "reason": "NoResult",
            "message": f"exit {outcome.returncode} without a result: "
                       f"{_last_log_line(outcome.log)}"}
        ok = result.get("state") == "Succeeded" and outcome.returncode == 0
        if not ok:
            self.stop_serve()
            result = _read_json(Path(self.lay.result(step.name))) or result
        rec = {**result, "readySeconds": result.get("readySeconds", int(outcome.seconds))}
        self.records[step.name] = _record(Path(self.lay.result(step.name)), rec, step,
                                          self.serve_started, outcome.seconds)
        if ok:
            self.progress.done(step.name, "ok", f"Ready in {outcome.seconds:.0f} s at "
                               f"{self.endpoints.url('grpc')} (grpc), "
                               f"{self.endpoints.url('http')} (http) for {', '.join(needed_by)}")
            return True
        return self.finish(step, self.records[step.name], outcome.seconds)

    def stop_serve(self) -> None:
        if self.serve is None:
            return
        serve, step = self.serve, self.serve_step
        self.serve = None
        serve.stop()
        final = _read_json(serve.result_path)
        if final and step is not None:
            # the stage rewrote its result on the way out (server: Stopped)
            self.records[step.name] = _record(serve.result_path, final, step,
                                              self.serve_started, 0)
            self.progress.note(f"     [serve] Triton stopped (exit {final.get('tritonExitCode')})")

    def status(self, phase: str) -> dict:
        return build_status(self.name, self.steps, self.records, self.decisions, self.endpoints,
                            self.workdir, phase, self.apply_best)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    out = sys.stdout
    try:
        args = parser().parse_args(argv)
        if not args.file.is_file():
            raise UsageError(f"{args.file}: no such file")
        name, spec = load_resource(args.file.read_text(), str(args.file))
        workdir = (args.workdir or Path("runs") / name).resolve()
        lay = Layout(PurePosixPath(workdir))
        ports = pick_ports({"--http-port": args.http_port, "--grpc-port": args.grpc_port,
                            "--metrics-port": args.metrics_port}, _port_in_use, _free_ports)
        endpoints = Endpoints("127.0.0.1", ports["--http-port"], ports["--grpc-port"],
                              ports["--metrics-port"])
        device = args.device or ("cpu" if spec.training.gpus == 0 else "auto")
        steps = pipeline.plan(spec, lay, endpoints, device=device,
                              analyzed=_read_json(Path(lay.result("analyze"))))
        names = [s.name for s in steps]
        force = names[:1] if "all" in args.force else args.force
        for f in force:
            if f not in names:
                raise UsageError(f"--force: unknown step {f!r} (one of: {', '.join(names)}, all)")
    except UsageError as err:
        for line in err.lines:
            print(f"mnist-serving run: error: {line}", file=sys.stderr)
        return 2

    def replan(analyzed: dict) -> list[Step]:
        return pipeline.plan(spec, lay, endpoints, device=device, analyzed=analyzed)

    recorded = {s.name: _read_json(Path(lay.result(s.name))) for s in steps}
    decisions = decide(steps, recorded, force)
    to_run = [n for n, d in decisions.items() if d == RUN]
    print(f"mnist-serving run {args.file} -> {workdir}", file=out)
    print(f"  {len(steps)} steps; to run: {', '.join(to_run) or 'none (all reused)'}", file=out)
    progress = Progress(out, live=out.isatty())
    run = Run(name, steps, lay, workdir, endpoints, decisions, progress, replan, force,
              spec.benchmark.model_analyzer.apply_best)
    started = time.time()
    code = 0
    # Ctrl-C, and SIGTERM from a CI runner or `timeout`, stop Triton and the
    # running stage; set explicitly because a shell starting us with `&`
    # hands us SIGINT ignored.
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        phase = run.execute()
        code = 0 if phase == "Ready" else 1
    except KeyboardInterrupt:
        _ignore_interrupts()   # a second Ctrl-C must not skip the cleanup
        phase = "Failed"
        progress.note("interrupted: stopping Triton and the running stage")
        run.interrupted()
        code = 130
    finally:
        _ignore_interrupts()
        run.stop_serve()
        progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status = run.status(phase)
    if code == 130:
        status["message"] = "interrupted by the user"
    status["wallSeconds"] = int(round(time.time() - started))
    status_path = workdir / "status.json"
    status_path.parent.mkdir(parents=True, exist_ok=True)
    status_path.write_text(json.dumps(status, indent=2) + "\n")
    print("", file=out)
    for line in summary_lines(status, status_path):
        print(line, file=out)
    print(f"wall time {status['wallSeconds']} s", file=out)
    out.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
