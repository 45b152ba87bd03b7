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
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from .. import pipeline, results
from ..pipeline import Endpoints, Layout, Step
from ..spec import GROUP, KIND, MnistServingSpec, SpecError, parse_spec
from mnist_jobs import triton  # the serve stage's own port checks: the runner agrees with it

from . import processes
from .display import Progress, headline, summary_lines

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
        self.progress.done(step.name, mark, f"{state} in {seconds:.0f} s  {headline(step.stage, rec)}")
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
                            "--metrics-port": args.metrics_port}, triton.port_in_use, triton.free_ports)
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
