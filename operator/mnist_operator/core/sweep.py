"""A sweep's decision: ``reconcile_sweep(sweep, children, now) -> SweepDecision``.

Pure, level-triggered, like the MnistServing core. From the sweep (spec and last
status) and the child MnistServings that exist it decides:

* which points exist as children: every point of the axes' product, created in
  the product's order while fewer than ``maxParallel`` are unfinished (neither
  Ready nor Failed); a child whose point left the axes is deleted; a child whose
  template changed gets the new spec (its own fingerprints decide what re-runs);
* the status: progress, one row per point, the best point for the objective,
  the Pareto front of throughput against p99, and a verdict between the best
  point and each other one (the ratio of their throughputs with its 95 %
  interval, from the points' repeats: core/verdicts.py).

A failed point is a failed point with its reason; the sweep goes on. An invalid
sweep spec is phase Failed with the refusal in its condition, and one Warning.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mnist_operator.api import spec as S
from mnist_operator.api import sweep as W
from mnist_operator.api.vocabulary import (DONE_PHASES, FAILED_PHASE, FALSE, GROUP,
                                           LABEL_MANAGED_BY, TRUE)
from mnist_operator.core import verdicts
from mnist_operator.core.builders import MANAGED_BY, instance_label
from mnist_operator.core.decision import Event
from mnist_operator.core.provenance import device_of, environment_id, environment_of
from mnist_operator.core.status import one_line, set_condition
from mnist_operator.core.summary import TUNED

#: The child's label naming its sweep, the annotation holding its point, and the one
#: holding the hash of the spec the sweep gave it (the API server defaults the live
#: spec, so the live spec is never equal to what was sent: the hash says what was).
LABEL_SWEEP = f"{GROUP}/sweep"
ANNOTATION_POINT = f"{GROUP}/point"
ANNOTATION_SPEC_HASH = f"{GROUP}/sweep-spec"
#: A child's phases that end a point (it no longer counts against maxParallel).
FINISHED_PHASES = (*DONE_PHASES, FAILED_PHASE)
#: The sweep's own phases and conditions.
RUNNING, COMPLETE, FAILED = "Running", "Complete", "Failed"
COMPLETE_CONDITION = "Complete"
#: Look again this often while points run (child events drive passes; this is a net).
RESYNC_SECONDS = 60


@dataclass
class SweepDecision:
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)   # {apiVersion, kind, name, namespace}
    status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: int | None = None


# --------------------------------------------------------------------------- children
def child_of(sweep: dict, spec: W.SweepSpec, point: W.Point) -> dict:
    """The MnistServing of one point: owned by the sweep, labelled with it, its
    point's values in an annotation (label values cannot hold every value)."""
    md = sweep["metadata"]
    spec = W.point_spec(spec.template, point)
    return {
        "apiVersion": f"{S.GROUP}/{S.VERSION}", "kind": S.KIND,
        "metadata": {
            "name": point.child_name(md["name"]), "namespace": md["namespace"],
            "labels": {LABEL_SWEEP: instance_label(md["name"]), LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {ANNOTATION_POINT: point.key, ANNOTATION_SPEC_HASH: spec_hash(spec)},
            "ownerReferences": [{"apiVersion": f"{S.GROUP}/{S.VERSION}", "kind": W.KIND,
                                 "name": md["name"], "uid": md.get("uid", ""),
                                 "controller": True, "blockOwnerDeletion": True}]},
        "spec": spec,
    }


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def merge_patch(live: dict, desired: dict) -> dict:
    """A JSON merge patch turning ``live`` into ``desired``: keys ``desired`` lacks
    become null (the API server then fills its defaults in again)."""
    out: dict = {k: None for k in live if k not in desired}
    for k, v in desired.items():
        if isinstance(v, dict) and isinstance(live.get(k), dict):
            out[k] = merge_patch(live[k], v)
        else:
            out[k] = v
    return out


def _ref(obj: dict) -> dict:
    md = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", f"{S.GROUP}/{S.VERSION}"),
            "kind": obj.get("kind", S.KIND), "name": md["name"], "namespace": md["namespace"]}


def _phase(child: dict | None) -> str:
    if child is None:
        return "Waiting"
    return (child.get("status") or {}).get("phase") or "Pending"


def plan_children(sweep: dict, spec: W.SweepSpec, children: list[dict]
                  ) -> tuple[list[dict], list[dict], list[dict], list[W.Point]]:
    """(to create, to update, to delete, the points in order)."""
    want = W.points(spec)
    have = {c["metadata"]["name"]: c for c in children}
    wanted = {p.child_name(sweep["metadata"]["name"]): p for p in want}
    delete = [_ref(c) for name, c in sorted(have.items()) if name not in wanted
              and not c["metadata"].get("deletionTimestamp")]
    update, create = [], []
    unfinished = sum(1 for name, c in have.items()
                     if name in wanted and _phase(c) not in FINISHED_PHASES)
    for point in want:
        desired = child_of(sweep, spec, point)
        live = have.get(desired["metadata"]["name"])
        if live is None:
            if unfinished < spec.max_parallel:
                create.append(desired)
                unfinished += 1
        elif (live["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != \
                desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
            update.append({"apiVersion": desired["apiVersion"], "kind": desired["kind"],
                           "metadata": desired["metadata"],
                           "spec": merge_patch(live.get("spec") or {}, desired["spec"])})
    return create, update, delete, want


# --------------------------------------------------------------------------- rows
def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def served_perf(status: dict) -> dict:
    """The bench points of the configuration a point serves now: the closed loop's
    tuned bench once it applied model-analyzer's best config, else the bench's."""
    benchmark = status.get("benchmark") or {}
    if benchmark.get("throughputOf") == TUNED:
        return (benchmark.get("closedLoop") or {}).get("perfAnalyzer") or {}
    return benchmark.get("perfAnalyzer") or {}


def best_entry(status: dict) -> tuple[str, str, dict] | None:
    """The point's headline: the (model, protocol) with the highest best throughput of
    the configuration it serves."""
    perf = served_perf(status)
    entries = [(m, p, e) for m, per in perf.items() if isinstance(per, dict)
               for p, e in per.items() if isinstance(e, dict)]
    if not entries:
        return None
    return max(entries, key=lambda mpe: (_number(mpe[2].get("bestInferPerSec")) or 0.0,
                                         mpe[0], mpe[1]))


def cost_per_million(price: str | None, gpus: int, infer_per_sec: float | None) -> str | None:
    """What a million inferences cost at the best throughput: the GPUs' hourly price
    over the inferences of an hour, times a million."""
    if price is None or not infer_per_sec or gpus < 1:
        return None
    return f"{float(price) * gpus / (infer_per_sec * 3600) * 1e6:.4f}"


def point_row(spec: W.SweepSpec, point: W.Point, name: str, child: dict | None) -> dict:
    """One row of the sweep's status: the point's values, phase and measured figures."""
    row: dict[str, Any] = {"name": name, "values": dict(point.values), "phase": _phase(child)}
    status = (child or {}).get("status") or {}
    if row["phase"] == FAILED_PHASE:
        row["reason"] = one_line(str(status.get("message", "")))[:200]
    found = best_entry(status)
    if found is None:
        return row
    model, protocol, e = found
    row.update(model=model, protocol=protocol, inferPerSec=str(e.get("bestInferPerSec", "0")),
               p99Us=int(_number(e.get("p99UsAtBest")) or 0))
    if (status.get("benchmark") or {}).get("throughputOf") == TUNED:
        row["config"] = "tuned"   # model-analyzer's best, applied by the closed loop
    if "lowAtBest" in e:
        row.update(low=str(e["lowAtBest"]), high=str(e["highAtBest"]),
                   repeats=int(_number(e.get("repeats")) or 0))
    if "inferPerSecAtSlo" in e:
        row["inferPerSecAtSlo"] = str(e["inferPerSecAtSlo"])
    if "inferPerJouleAtBest" in e:
        row["inferPerJoule"] = str(e["inferPerJouleAtBest"])
    if "inferPerJouleLowAtBest" in e:
        row.update(inferPerJouleLow=str(e["inferPerJouleLowAtBest"]),
                   inferPerJouleHigh=str(e["inferPerJouleHighAtBest"]))
    child_spec = S.parse_spec((child or {}).get("spec") or {})
    product = child_spec.scheduling.gpu_product or device_of(status)
    row["device"] = product
    gpus = child_spec.serving.gpus * child_spec.serving.replicas
    cost = cost_per_million(spec.costs.get(product), gpus, _number(row["inferPerSec"]))
    if cost is not None:
        row["costPerMillion"] = cost
    row["environment"] = environment_id(environment_of(status, model, protocol, product))
    return row


def objective_value(row: dict, objective: str) -> float | None:
    key = {"throughput": "inferPerSec", "throughputAtSlo": "inferPerSecAtSlo",
           "inferencesPerJoule": "inferPerJoule", "costPerMillion": "costPerMillion"}[objective]
    return _number(row.get(key)) if row.get("phase") in DONE_PHASES else None


def best_row(rows: list[dict], objective: str) -> dict | None:
    ranked = [r for r in rows if objective_value(r, objective) is not None]
    if not ranked:
        return None
    lower = W.OBJECTIVES[objective] == "lower"
    return min(ranked, key=lambda r: ((1 if lower else -1) * objective_value(r, objective),
                                      r["name"]))


def pareto_front(rows: list[dict]) -> list[str]:
    """The Ready points no other beats on both throughput (higher) and p99 (lower)."""
    done = [r for r in rows if r.get("phase") in DONE_PHASES and "inferPerSec" in r]

    def beaten(r: dict) -> bool:
        t, p = float(r["inferPerSec"]), r["p99Us"]
        return any(float(o["inferPerSec"]) >= t and o["p99Us"] <= p
                   and (float(o["inferPerSec"]) > t or o["p99Us"] < p) for o in done)
    return [r["name"] for r in sorted(done, key=lambda r: -float(r["inferPerSec"]))
            if not beaten(r)]


def judged_figure(row: dict, objective: str) -> dict | None:
    """The figure a verdict compares, as a bench row (``inferPerSec``, ``low``,
    ``high``, ``repeats``): inferences per joule for that objective (each repeat has
    its own energy span), else the throughput; None when the row lacks it."""
    if objective != "inferencesPerJoule":
        return row if "inferPerSec" in row else None
    if "inferPerJoule" not in row:
        return None
    out = {"inferPerSec": row["inferPerJoule"], "repeats": row.get("repeats", 1)}
    if "inferPerJouleLow" in row:
        out.update(low=row["inferPerJouleLow"], high=row["inferPerJouleHigh"])
    return out


def verdict_rows(best: dict | None, rows: list[dict], objective: str = "throughput") -> list[dict]:
    """The best point against each other measured one: the ratio of their figures
    (judged_figure: inferences per joule for that objective, else throughput) with
    its 95 % interval and what it says ("no interval" with one repeat, never a guess)."""
    mine = judged_figure(best, objective) if best is not None else None
    if mine is None:
        return []
    out = []
    for r in rows:
        theirs = judged_figure(r, objective)
        if r is best or r.get("phase") not in DONE_PHASES or theirs is None:
            continue
        out.append({"point": r["name"], **verdicts.compare(mine, theirs).as_status()})
    return out


# --------------------------------------------------------------------------- the decision
def reconcile_sweep(sweep: dict, children: list[dict], now: datetime) -> SweepDecision:
    md, old = sweep["metadata"], sweep.get("status") or {}
    gen = md.get("generation") or 0
    conditions = list(old.get("conditions") or [])
    try:
        spec = W.parse_sweep(sweep.get("spec") or {})
    except S.SpecError as err:
        message = one_line("; ".join(err.errors))
        conditions = set_condition(conditions, COMPLETE_CONDITION, FALSE, "InvalidSpec",
                                   message, gen, now)
        events = [] if old.get("phase") == FAILED and old.get("message") == message else [
            Event("Warning", "InvalidSpec", message[:1000])]
        return SweepDecision(status={"observedGeneration": gen, "phase": FAILED,
                                     "message": message, "conditions": conditions},
                             events=events)
    own = [c for c in children if c["metadata"].get("deletionTimestamp") is None]
    create, update, delete, want = plan_children(sweep, spec, own)
    by_name = {c["metadata"]["name"]: c for c in own + create}   # created now: Pending
    rows = [point_row(spec, p, p.child_name(md["name"]), by_name.get(p.child_name(md["name"])))
            for p in want]
    status = sweep_status(spec, rows, conditions, old, gen, now)
    events = transition_events(old, status, [c["metadata"]["name"] for c in create])
    finished = status["phase"] == COMPLETE and not create and not update
    return SweepDecision(create=create, update=update, delete=delete, status=status,
                         events=events, requeue_after=None if finished else RESYNC_SECONDS)


def sweep_status(spec: W.SweepSpec, rows: list[dict], conditions: list[dict], old: dict,
                 gen: int, now: datetime) -> dict:
    done = sum(r["phase"] in DONE_PHASES for r in rows)
    count = {phase: sum(r["phase"] == phase for r in rows) for phase in (FAILED_PHASE, "Waiting")}
    running = len(rows) - done - sum(count.values())
    # ready: points with their figures, serving (Ready) or stopped once measured (Measured)
    progress = {"total": len(rows), "ready": done, "failed": count[FAILED_PHASE],
                "running": running, "waiting": count["Waiting"]}
    best = best_row(rows, spec.objective)
    complete = running == 0 and count["Waiting"] == 0
    summary = (f"{progress['ready']}/{progress['total']} points measured"
               + (f", {progress['failed']} Failed" if progress["failed"] else "")
               + (f"; best {best['name']} ({spec.objective} "
                  f"{best_value(best, spec.objective)})" if best else ""))
    conditions = set_condition(conditions, COMPLETE_CONDITION, TRUE if complete else FALSE,
                               "AllPointsFinished" if complete else "PointsRunning", summary,
                               gen, now)
    status: dict[str, Any] = {
        "observedGeneration": gen, "phase": COMPLETE if complete else RUNNING,
        "message": summary, "conditions": conditions, "progress": progress,
        "readyPoints": f"{progress['ready']}/{progress['total']}", "objective": spec.objective,
        "points": rows, "pareto": pareto_front(rows), "verdicts": verdict_rows(best, rows, spec.objective)}
    if best is not None:
        status["best"] = {"point": best["name"], "values": best["values"],
                          "value": best_value(best, spec.objective)}
    return status


def best_value(row: dict, objective: str) -> str:
    value = objective_value(row, objective)
    return "-" if value is None else (f"{value:.4f}" if objective == "costPerMillion"
                                      else f"{value:.1f}")


def transition_events(old: dict, new: dict, created: list[str]) -> list[Event]:
    """One Event per change a person watching would want: a point started, a point
    failed (Warning, with its reason), the sweep completed."""
    events = [Event("Normal", "PointCreated", f"MnistServing {name} created") for name in created]
    before = {r["name"]: r.get("phase") for r in old.get("points") or []}
    for r in new["points"]:
        if r["phase"] == FAILED_PHASE and before.get(r["name"]) != FAILED_PHASE:
            events.append(Event("Warning", "PointFailed",
                                f"{r['name']} ({json.dumps(r['values'])}): {r.get('reason', '')}"))
    if new["phase"] == COMPLETE and old.get("phase") != COMPLETE:
        events.append(Event("Normal", "SweepComplete", new["message"]))
    return events


__all__ = ["SweepDecision", "reconcile_sweep", "child_of", "point_row", "pareto_front",
           "best_row", "verdict_rows", "judged_figure", "cost_per_million", "LABEL_SWEEP", "ANNOTATION_POINT"]
