"""``mnist-serving run sweep.yaml``: a MnistServingSweep on this machine, no cluster.

The sweep's own core, ``reconcile_sweep``, decides as it does for the operator:
each pass names the points to create (at most ``maxParallel`` unfinished), and
here each is run to its end, one after another, as ``mnist-serving run`` runs a
MnistServing: in ``<workdir>/<point's name>``, so a rerun reuses every finished
step of every point. Once no point is left to create, the status the operator
would write for the sweep is printed and saved as ``<workdir>/status.json``.

Exit codes: 0 every point Ready, 1 a point failed, 2 bad input (each line names
the axis and value), 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO


from mnist_operator.api import sweep as W
from mnist_operator.api.spec import GROUP, SpecError, load_yaml, parse_spec
from mnist_operator.core.sweep import ANNOTATION_POINT, COMPLETE, reconcile_sweep
from mnist_operator.core.verdicts import ratio_text
from mnist_operator.local import runner


def sweep_resource(text: str, source: str) -> dict:
    """The sweep document as the core sees it in a cluster, or a UsageError naming
    each refused axis and value."""
    doc = load_yaml(text)
    if not str(doc.get("apiVersion", "")).startswith(GROUP + "/"):
        raise runner.UsageError(f"{source}: apiVersion: expected {GROUP}/..., "
                                f"got {doc.get('apiVersion')!r}")
    name = str((doc.get("metadata") or {}).get("name") or Path(source).stem)
    try:
        W.parse_sweep(doc.get("spec") or {})
    except SpecError as err:
        raise runner.UsageError(*(f"{source}: {e}" for e in err.errors)) from None
    return {"apiVersion": doc["apiVersion"], "kind": W.KIND,
            "metadata": {"name": name, "namespace": "local", "uid": f"local-{name}",
                         "generation": 1},
            "spec": doc["spec"], "status": {}}


def run(text: str, args: argparse.Namespace, out: TextIO) -> int:
    try:
        sweep = sweep_resource(text, str(args.file))
        ports = runner.chosen_ports(args)
    except runner.UsageError as err:
        return runner.refuse(err)
    name = sweep["metadata"]["name"]
    workdir = (args.workdir or Path("runs") / name).resolve()
    children: list[dict] = []
    interrupted = False
    while True:
        decision = reconcile_sweep(sweep, children, datetime.now(timezone.utc))
        sweep["status"] = decision.status
        if not decision.create or interrupted:
            break
        for child in decision.create:
            point = child["metadata"]["name"]
            print(f"\n== point {point}: "
                  f"{child['metadata']['annotations'][ANNOTATION_POINT]}", file=out)
            code, status = runner.run_one(point, parse_spec(child["spec"]), workdir / point,
                                          args, ports, f"{args.file} ({point})", out)
            children.append({**child, "status": status or {"phase": "Failed",
                                                           "message": "refused its input"}})
            if code == 130:
                interrupted = True
                break
    status = {"name": name, **sweep["status"], "workdir": str(workdir)}
    path = workdir / "status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status, indent=2) + "\n")
    print("", file=out)
    for line in summary_lines(status, path):
        print(line, file=out)
    out.flush()
    if interrupted:
        return 130
    return 0 if status.get("phase") == COMPLETE and not status["progress"]["failed"] else 1


def against_best(row: dict, verdicts: dict[str, dict], best: str | None) -> str:
    """A point's ranking cell: ``best``, or the best point's throughput over its own
    with the interval and verdict (``-`` when it has none)."""
    if row["name"] == best:
        return "best"
    v = verdicts.get(row["name"])
    return f"{ratio_text(v)} {v['verdict']}" if v else "-"


def summary_lines(status: dict, path: Path) -> list[str]:
    """The sweep's answer: progress, the best point, then one line per point with its
    figures and its verdict against the best."""
    lines = [f"sweep {status['name']}: {status.get('phase')}  ({status.get('message', '')})", ""]
    verdicts = {v["point"]: v for v in status.get("verdicts") or []}
    best = (status.get("best") or {}).get("point")
    lines.append(f"  {'point':<22} {'phase':<8} {'infer/s':>9} {'p99 ms':>7}  "
                 f"{'best / this':<24} values")
    for row in status.get("points") or []:
        against = against_best(row, verdicts, best)
        p99 = f"{row['p99Us'] / 1000:.2f}" if "p99Us" in row else "-"
        values = ", ".join(f"{k}={json.dumps(v)}" for k, v in row["values"].items())
        lines.append(f"  {row['name']:<22} {row['phase']:<8} {row.get('inferPerSec', '-'):>9} "
                     f"{p99:>7}  {against:<24} {values}")
    lines += ["", "  best / this: the best point's mean throughput over this one's, with its "
              f"95 % interval and verdict (objective {status.get('objective')})",
              f"status: {path}"]
    return lines


__all__ = ["run", "sweep_resource", "summary_lines", "against_best"]
