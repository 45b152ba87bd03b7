"""``mnist-serving run FILE``: the operator's pipeline on this machine, no cluster.
(A MnistServingSweep in FILE runs its points one after another: local/sweep.py.)

    mnist-serving run examples/local.yaml [--workdir runs/<name>] [--force STEP]
                      [--device auto|cpu|cuda] [--http-port N --grpc-port N --metrics-port N]

Reads the same MnistServing YAML a cluster gets and hands it to the
operator's own core, ``reconcile``, pass after pass; machine.py carries out
each Decision here (a Job is a stage subprocess, the Deployment a Triton in
the background). Steps, retries with backoff, conditions and the closed loop
(``benchmark.modelAnalyzer.applyBest``) therefore behave as in a cluster,
and the end is the status the operator writes, plus where the run happened
(``workdir``, ``wallSeconds``, each step's ``run``: ran, reused or
disabled), printed and saved as ``<workdir>/status.json``. A step whose
result file (``results/<step>.json``) carries its current fingerprint is
reused, so a rerun after a spec change redoes only what the change touches.
Serving pauses while model-analyzer runs its own Triton (they share the
machine's cores); the run ends once Triton serves again, and stops it.

Exit codes: 0 Ready, 1 a step failed (its one-line reason is printed), 2 bad
input (the spec file, a flag, a busy port), 130 Ctrl-C.
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

from mnist_jobs.lib import triton  # the serve stage's own port checks: the runner agrees with it
from mnist_operator.api.spec import (GROUP, KIND, VERSION, MnistServingSpec, SpecError,
                                     load_yaml, parse_spec)
from mnist_operator.api.vocabulary import DONE_PHASES, FAILED, FAILED_PHASE, SKIPPED
from mnist_operator.core import pipeline
from mnist_operator.core.pipeline import Endpoints, Layout
from mnist_operator.core.reconcile import Substrate, reconcile
from mnist_operator.local import processes
from mnist_operator.local.display import Progress, summary_lines
from mnist_operator.local.machine import (DISABLED, RAN, REUSED, Machine, Reporter, recorded_stages,
                                          write_record)

REPO_ROOT = Path(__file__).resolve().parents[3]
#: A run that has not settled after this many passes is a bug, not a slow stage.
MAX_PASSES = 1000
ENDPOINTS_NOTE = "served by the local Triton during the run; stopped at its end"


class UsageError(Exception):
    """Bad input to the runner; each line of ``lines`` names what to fix."""

    def __init__(self, *lines: str):
        super().__init__("; ".join(lines))
        self.lines = list(lines)


def load_resource(text: str, source: str) -> tuple[str, MnistServingSpec]:
    """(metadata.name, spec) of an MnistServing document, or a UsageError."""
    import yaml
    try:
        doc = load_yaml(text)   # as kubectl reads it: the API server's types
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


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def local_resource(name: str, spec: MnistServingSpec, stages: dict[str, dict]) -> dict:
    """The resource as the core sees it in a cluster: generation 1, and a status
    whose stages are what earlier runs finished."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": "local", "uid": f"local-{name}",
                         "generation": 1},
            "spec": spec.to_dict(), "status": {"observedGeneration": 1, "stages": stages}}


def drive(cr: dict, machine: Machine, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Pass after pass of the core until a pass changes nothing, sleeping through
    backoffs as the operator's requeue does; returns the last status."""
    planned = {s.name for s in machine.steps(cr["status"])}
    for _ in range(MAX_PASSES):
        decision = reconcile(cr, machine.observe(), datetime.now(timezone.utc), machine.substrate)
        for ev in decision.events:
            if ev.type == "Warning":
                machine.report.note(f"  ! {ev.reason}: {ev.message}")
        machine.apply(decision)
        changed = decision.status != cr["status"]
        cr["status"] = decision.status
        added = [n for n in decision.status.get("stages", {}) if n not in planned]
        if added:   # the closed loop: analyze's result brought its steps
            planned.update(added)
            machine.report.note(f"  applyBest: then {', '.join(added)}")
        if machine.serve_failure is not None:
            return decision.status
        if changed or decision.create or decision.update or decision.delete:
            continue
        if decision.status.get("phase") in (*DONE_PHASES, FAILED_PHASE) \
                or decision.requeue_after is None:
            return decision.status
        sleep(decision.requeue_after)
    raise RuntimeError(f"the run did not settle after {MAX_PASSES} passes")


def local_status(name: str, status: dict, machine: Machine, seeded: dict[str, dict],
                 interrupted: bool, before: dict | None = None) -> dict:
    """The core's status plus where the run happened: ``name``, ``workdir``, the
    endpoint note, and per step what this run did with it (``run``) and how long. A
    reused step keeps where it ran (``environment``) from ``before``, the status the
    run that measured it wrote, when its fingerprint is the same."""
    out = {"name": name, **status, "workdir": str(machine.workdir),
           "endpoints": {**status.get("endpoints", {}), "note": ENDPOINTS_NOTE}}
    stages = {k: dict(v) for k, v in (status.get("stages") or {}).items()}
    broken = None
    if interrupted and machine.running is not None:
        step, started = machine.running
        write_record(machine.substrate.layout, step, {"state": FAILED, "reason": "Interrupted",
                                                      "message": "interrupted by the user"},
                     started, 0)
        broken = (step, "Interrupted", "interrupted by the user")
    elif machine.serve_failure is not None:
        step, rec = machine.serve_failure
        broken = (step, rec.get("reason") or "TritonFailed", rec.get("message") or "")
    if broken is not None:
        step, reason, message = broken
        stages[step.name] = {**stages.get(step.name, {}), "fingerprint": step.fingerprint,
                             "state": FAILED, "reason": reason, "message": message}
        out.update(phase=FAILED_PHASE, message=f"{step.name}: {message}")
    steps = {s.name: s for s in machine.steps(status)}
    for step_name, rec in stages.items():
        if step_name in seeded:   # never re-run; Triton starting again serves the same result
            rec["run"] = REUSED
            earlier = ((before or {}).get("stages") or {}).get(step_name) or {}
            if earlier.get("fingerprint") == rec.get("fingerprint") and "environment" in earlier:
                rec.setdefault("environment", earlier["environment"])
        elif step_name in machine.ran:
            rec["run"] = RAN
        elif rec.get("state") == SKIPPED and step_name in steps:
            rec["run"] = DISABLED
            write_record(machine.substrate.layout, steps[step_name],
                         {"stage": steps[step_name].stage, "state": SKIPPED,
                          "reason": rec.get("reason"), "message": rec.get("message"),
                          "durationSeconds": 0}, rec.get("startTime") or "", 0)
        seconds = (rec.get("result") or {}).get("durationSeconds")
        if seconds is not None:
            rec["durationSeconds"] = seconds
    out["stages"] = stages
    if interrupted:
        out["message"] = "interrupted by the user"
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if not args.file.is_file():
            raise UsageError(f"{args.file}: no such file")
        text = args.file.read_text()
        if is_sweep(text):
            from mnist_operator.local import sweep   # only a sweep needs it
            return sweep.run(text, args, sys.stdout)
        name, spec = load_resource(text, str(args.file))
        ports = chosen_ports(args)
    except UsageError as err:
        return refuse(err)
    code, _ = run_one(name, spec, (args.workdir or Path("runs") / name).resolve(), args, ports,
                      str(args.file), sys.stdout)
    return code


def earlier_status(path: Path) -> dict | None:
    """The status an earlier run left in this work directory, if it can be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def refuse(err: UsageError) -> int:
    for line in err.lines:
        print(f"mnist-serving run: error: {line}", file=sys.stderr)
    return 2


def is_sweep(text: str) -> bool:
    """Whether the document is a MnistServingSweep (its kind line, before full parsing)."""
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "MnistServingSweep"


def chosen_ports(args: argparse.Namespace) -> dict[str, int]:
    return pick_ports({"--http-port": args.http_port, "--grpc-port": args.grpc_port,
                       "--metrics-port": args.metrics_port}, triton.port_in_use, triton.free_ports)


def run_one(name: str, spec: MnistServingSpec, workdir: Path, args: argparse.Namespace,
            ports: dict[str, int], source: str, out) -> tuple[int, dict | None]:
    """One MnistServing on this machine: (exit code, its status; None on bad input)."""
    try:
        lay = Layout(PurePosixPath(workdir))
        endpoints = Endpoints("127.0.0.1", ports["--http-port"], ports["--grpc-port"],
                              ports["--metrics-port"])
        device = args.device or ("cpu" if spec.training.gpus == 0 else "auto")
        substrate = Substrate(lay, endpoints, device, one_machine=True)
        steps = pipeline.plan(spec, lay, endpoints, device=device,
                              analyzed=processes.read_result(Path(lay.result("analyze"))),
                              confirmed=processes.read_result(Path(lay.result(pipeline.CONFIRM))))
        names = [s.name for s in steps]
        force = names[:1] if "all" in args.force else args.force
        for f in force:
            if f not in names:
                raise UsageError(f"--force: unknown step {f!r} (one of: {', '.join(names)}, all)")
    except UsageError as err:
        return refuse(err), None

    seeded = recorded_stages(steps, lay, force)
    to_run = [s.name for s in steps if s.name not in seeded]
    print(f"mnist-serving run {source} -> {workdir}", file=out)
    print(f"  {len(steps)} steps; to run: {', '.join(to_run) or 'none (all reused)'}", file=out)
    progress = Progress(out, live=out.isatty())
    for step in steps:
        if step.name in seeded:
            progress.done(step.name, "==", f"reused ({seeded[step.name]['state']}, fingerprint "
                                           f"{step.fingerprint})")
    machine = Machine(spec, substrate, workdir,
                      Reporter(progress.start, progress.line, progress.done, progress.note),
                      processes.stage_env(REPO_ROOT))
    cr = local_resource(name, spec, seeded)
    started = time.time()
    interrupted = False
    # Ctrl-C, and SIGTERM from a CI runner or `timeout`, stop Triton and the
    # running stage; set explicitly because a shell starting us with `&`
    # hands us SIGINT ignored.
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        final = drive(cr, machine)
    except KeyboardInterrupt:
        _ignore_interrupts()   # a second Ctrl-C must not skip the cleanup
        progress.note("interrupted: stopping Triton and the running stage")
        final, interrupted = cr["status"], True
    finally:
        _ignore_interrupts()
        machine.stop_triton()
        progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status_path = workdir / "status.json"
    status = local_status(name, final, machine, seeded, interrupted, earlier_status(status_path))
    status["wallSeconds"] = int(round(time.time() - started))
    status_path.parent.mkdir(parents=True, exist_ok=True)
    status_path.write_text(json.dumps(status, indent=2) + "\n")
    print("", file=out)
    for line in summary_lines(status, status_path):
        print(line, file=out)
    print(f"wall time {status['wallSeconds']} s", file=out)
    out.flush()
    if interrupted:
        return 130, status
    return (0 if status.get("phase") in DONE_PHASES else 1), status


if __name__ == "__main__":
    raise SystemExit(main())
