"""Step results -> the compact parts of ``.status`` (model, benchmark, client).

Pure, no I/O. Both the operator and the local runner call :func:`summarize`
with the recorded step results (step name -> the stage's result JSON, step
names from :func:`mnist_operator.core.pipeline.plan`) and show what it returns.
The output holds only ints, strings and nested maps (API conventions: no
floats, no bools, no lists whose order could churn the status).

A step that is missing, still running or failed contributes nothing here;
its state and reason live in ``status.stages``.
"""
from __future__ import annotations

import re
from typing import Any

from mnist_operator.api.vocabulary import FALSE, TRUE, UNKNOWN
from mnist_operator.core import accuracy
from mnist_operator.core.pipeline import (BENCH_TUNED, CONFIRM, REPO_TUNED, SERVE_TUNED,
                                          analyze_models_of, best_of, best_overrides,
                                          confirmed_of)

SUCCEEDED, SKIPPED = "Succeeded", "Skipped"


def _ok(result: dict | None) -> bool:
    return bool(result) and result.get("state") == SUCCEEDED


def _scalar(value: Any) -> int | str:
    """Ints stay ints; everything else becomes a string (bools as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    return str(value)


def _pick(result: dict, keys: dict[str, str]) -> dict[str, int | str]:
    return {out: _scalar(result[src]) for out, src in keys.items() if result.get(src) is not None}


def _stage_line(result: dict | None) -> str:
    """One line for a stage that may have been skipped: 'Succeeded', 'Skipped: ...'."""
    if not result:
        return "NotRun"
    state = result.get("state", "Unknown")
    if state == SUCCEEDED:
        return state
    message = result.get("message") or result.get("reason") or ""
    return f"{state}: {message}" if message else state


def model_part(results: dict[str, dict]) -> dict[str, int | str]:
    train, export, engine, repo = (results.get(n) for n in ("train", "export", "engine", "repo"))
    out: dict[str, int | str] = {}
    if _ok(train):
        out.update(_pick(train, {"accuracy": "accuracy", "trainDevice": "device", "trainGpu": "gpu",
                                 "epochs": "epochs", "trainSamples": "trainSamples",
                                 "testSamples": "testSamples", "dataSource": "dataSource"}))
    if _ok(export):
        out.update(_pick(export, {"onnxMaxAbsDiff": "maxAbsDiff", "opset": "opset",
                                  "onnx": "onnx"}))
    if engine:
        out["engine"] = _stage_line(engine)
        if _ok(engine):
            out.update(_pick(engine, {"enginePrecision": "precision", "engineGpu": "gpu",
                                      "engineComputeCapability": "computeCapability",
                                      "engineThroughputQps": "throughputQps"}))
    if _ok(repo):
        out["served"] = ",".join(repo.get("models", []))
        if repo.get("onnxBackend"):
            out["onnxBackend"] = repo["onnxBackend"]
        if repo.get("blsDownstream"):
            out["blsDownstream"] = repo["blsDownstream"]
    return out


def _bench_rows(entry: dict) -> list[dict]:
    """Rows of one model in a bench result, in either of its two shapes
    (dicts, or lists in ``rowFormat`` order once the result was shrunk)."""
    rows = entry.get("rows", [])
    if rows and isinstance(rows[0], list):
        keys = entry.get("rowFormat") or ["c", "inferPerSec", "p99Us", "little"]
        return [dict(zip(keys, r)) for r in rows]
    return rows


def _points(concurrency: str, fallback: int) -> int:
    """How many concurrency points START:END:STEP measured (rows may have been
    dropped from a shrunk result, the range was not)."""
    try:
        start, end, step = (int(p) for p in concurrency.split(":"))
        return len(range(start, end + 1, step))
    except ValueError:
        return fallback


def perf_part(results: dict[str, dict], tuned: bool = False) -> dict[str, dict[str, dict]]:
    """model -> protocol -> best point, its p99, batching gain, Little's-law failures
    (request-rate mode: the rate asked for and achieved at best, points behind);
    of the bench-<protocol> steps, or with ``tuned`` of the closed loop's
    bench-tuned-<protocol> steps."""
    out: dict[str, dict[str, dict]] = {}
    prefix = BENCH_TUNED if tuned else "bench-"
    for name in sorted(results):
        result = results[name]
        if not name.startswith(prefix) or (not tuned and name.startswith(BENCH_TUNED)) \
                or not _ok(result):
            continue
        protocol = result.get("protocol") or name.removeprefix(prefix)
        rate_mode = result.get("loadMode") == "requestRate"
        load = "rate" if rate_mode else "c"
        swept = result.get("requestRate" if rate_mode else "concurrency") or ""
        for model, entry in sorted(result.get("models", {}).items()):
            best = entry.get("best", {})
            rows = _bench_rows(dict(entry, rowFormat=result.get("rowFormat")))
            point = {
                "bestInferPerSec": _scalar(best.get("inferPerSec", "0")),
                "p99UsAtBest": _scalar(best.get("p99Us", 0)),
                # the sweep's points and those the SLO search added
                "points": _points(swept, len(rows)) + len((entry.get("slo") or {})
                                                          .get("refined", [])),
            }
            if rate_mode:
                point.update(requestRateAtBest=_scalar(best.get("rate", 0)),
                             achievedAtBest=_scalar(best.get("achieved", "0")),
                             behind=_scalar(entry.get("behind", 0)),
                             distribution=_scalar(result.get("distribution", "constant")))
            else:
                point.update(concurrencyAtBest=_scalar(best.get("c", 0)),
                             batchingGain=_scalar(entry.get("batchingGain", "0")),
                             littleFailures=_scalar(entry.get("littleFailures", 0)))
            if "low" in best:   # repeats >= 2: the 95 % interval of the best point
                point.update(repeats=_scalar(best["repeats"]), lowAtBest=_scalar(best["low"]),
                             highAtBest=_scalar(best["high"]))
            point.update(latency_part(best))
            point.update(telemetry_part(best, result.get("telemetry")))
            point.update(slo_part(entry.get("slo"), load))
            point.update(clients_part(result.get("clients"), entry.get("scaling")))
            lowest = min(rows, key=lambda r: r[load]) if rows and not rate_mode \
                and "rowsNote" not in result else None
            if lowest is not None:
                point["lowestConcurrency"] = _scalar(lowest["c"])
                point["inferPerSecAtLowest"] = _scalar(lowest["inferPerSec"])
            out.setdefault(model, {})[protocol] = point
    return out


def latency_part(best: dict) -> dict[str, int | str]:
    """The best point's p99 from every request of its windows (the bench stage's
    profile export): the estimate, its distribution-free 95 % interval where there
    were enough requests, and how many; and whether perf_analyzer never called the
    point stable (measured in fixed windows)."""
    out: dict[str, int | str] = {}
    found = best.get("latency") or {}
    if found.get("p99"):
        estimate, low, high = found["p99"]
        out.update(requestsAtBest=_scalar(found["requests"]),
                   p99UsFromRequestsAtBest=_scalar(estimate))
        if low is not None:
            out.update(p99UsLowAtBest=_scalar(low), p99UsHighAtBest=_scalar(high))
    if found.get("from") == "due":
        out["latencyFromAtBest"] = (f"when due (constant rate): requests were sent up to "
                                    f"{int(found.get('sentLateUs', 0)) / 1000:.1f} ms late")
    elif found.get("lowerBound"):
        out["latencyFromAtBest"] = ("when sent, a lower bound: the client fell behind and a "
                                    "Poisson schedule's due times are not recorded")
    if best.get("unstable"):
        out["unstableAtBest"] = "measured in fixed windows: perf_analyzer never called it stable"
    return out


#: What the bench stage writes where Triton reported no GPU (telemetry.NO_GPU).
NO_GPU_MARK = "none"


def telemetry_part(best: dict, warning: str | None) -> dict[str, int | str]:
    """Triton's metrics at the best point: GPU utilization, mean power and
    inferences per joule, or ``telemetryAtBest`` in words ("no GPU", or why the
    endpoint could not be read); ``telemetryWarning`` when some point had none.
    Nothing when the bench ran without telemetry."""
    out: dict[str, int | str] = {f"{k}AtBest": _scalar(best[k])
                                 for k in ("gpuUtil", "powerW", "inferPerJoule", "inferPerJouleLow",
                                           "inferPerJouleHigh") if k in best}
    if best.get("gpu") == NO_GPU_MARK:
        out["telemetryAtBest"] = "no GPU"
    elif "telemetry" in best:
        out["telemetryAtBest"] = _scalar(best["telemetry"])
    if warning:
        out["telemetryWarning"] = _scalar(warning)
    return out


def clients_part(clients: Any, scaling: dict | None) -> dict[str, Any]:
    """Distributed load: the clients measuring, and at the best point the
    throughput of half of them and of all (numbers as strings, no floats in status)
    with the verdict: ``limit`` client when more clients still raised throughput."""
    if not isinstance(clients, int) or clients <= 1:
        return {}
    out: dict[str, Any] = {"clients": clients}
    if isinstance(scaling, dict) and scaling.get("limit"):
        out["scaling"] = {"concurrency": _scalar(scaling.get("c", 0)),
                          "clients": [_scalar(n) for n in scaling.get("clients", [])],
                          "inferPerSec": [_scalar(v) for v in scaling.get("inferPerSec", [])],
                          "ratio": _scalar(scaling.get("ratio", "")),
                          "limit": _scalar(scaling["limit"])}
    return out


def scaling_line(point: dict) -> str:
    """One model and protocol's scaling check, for humans (local summary, compare)."""
    sc = point.get("scaling") or {}
    if not sc:
        return f"{point.get('clients', 1)} clients"
    (a, b), (x, y) = sc["clients"], sc["inferPerSec"]
    return (f"{b} clients: {y} infer/s vs {a}: {x} at c={sc['concurrency']} "
            f"(x{sc['ratio']}): {limit_words(sc['limit'])}")


def limit_words(limit: str) -> str:
    """A scaling check's ``limit`` in words (``untested``: the best point had too
    few requests in flight to keep more clients busy than half of them)."""
    return "untested (too few in flight for more clients)" if limit == "untested" \
        else f"the {limit} was the limit"


def failing_reason(slo: str, failing: dict) -> str:
    """Why the first failing load fails, as the bench stage said (``why``); for a
    result written before it said so, what its latencies tell against the SLO's
    limits, and else its client fell behind (the only other way to fail)."""
    if failing.get("why"):
        return str(failing["why"])
    over = [f"{name} over the limit" for name, ms in re.findall(r"(p9[59]) <= (\d+) ms", slo)
            if int(failing.get(f"{name}Us") or 0) > int(ms) * 1000]
    return "; ".join(over) or "the client fell behind"


def slo_part(found: dict | None, load: str) -> dict[str, int | str]:
    """A bench model's SLO search as status fields: the best throughput meeting the
    SLO with its load and p99, and the first failing load next to it with why it
    fails (``firstFailingReason``: a latency over its limit, or the client fell
    behind the rate asked for, whatever its p99); "none" when no point meets it."""
    if not found:
        return {}
    at = "requestRateAtSlo" if load == "rate" else "concurrencyAtSlo"
    out: dict[str, int | str] = {"slo": _scalar(found.get("slo", ""))}
    best = found.get("atSlo")
    if best:
        out.update({"inferPerSecAtSlo": _scalar(best["inferPerSec"]), at: _scalar(best[load]),
                    "p99UsAtSlo": _scalar(best["p99Us"])})
        p99 = (best.get("latency") or {}).get("p99")
        if p99 and p99[2] is not None:   # met with 95 % confidence: the bound that says so
            out.update(requestsAtSlo=_scalar(best["latency"]["requests"]),
                       p99UsHighAtSlo=_scalar(p99[2]))
    else:
        out.update(inferPerSecAtSlo="none", sloNote=_scalar(found.get("none", "")))
    failing = found.get("firstFailing")
    if failing:
        out.update(firstFailingAt=_scalar(failing[load]), p99UsFirstFailing=_scalar(failing["p99Us"]),
                   firstFailingReason=_scalar(failing_reason(found.get("slo", ""), failing)))
    if found.get("refined"):
        out["refinedPoints"] = _scalar(len(found["refined"]))
    return out


def _against_default(m: dict[str, int | str]) -> dict[str, int | str]:
    """One model's analyzer part with the best config against the default config
    made consistent with the best being the best. model-analyzer's best is the
    fastest point meeting the SLO, but the analyze result's default figure is the
    default config's fastest point whether it meets the SLO or not (analyze.py's
    parse_inference_csv), so with an SLO it can lie above the best. When the best
    IS the default config, the default's fastest point meeting the SLO is the best
    point itself (1.00); otherwise a default figure above the best comes from a
    point outside the SLO, no basis for a ratio: ``defaultNote`` says so instead."""
    best, default = m.get("bestConfig"), m.get("defaultThroughput")
    if not best or default is None or "throughput" not in m:
        return m
    if str(best).endswith("_config_default"):
        return {**m, "defaultThroughput": m["throughput"], "bestOverDefault": "1.00"}
    try:
        consistent = float(default) <= float(m["throughput"])
    except (TypeError, ValueError):
        return m
    if consistent:
        return m
    out = {k: v for k, v in m.items() if k not in ("defaultThroughput", "bestOverDefault")}
    out["defaultNote"] = (f"the default config's {default} infer/s was at a point that does not "
                          f"meet the SLO; {best} is the fastest point that does")
    return out


def analyzer_part(result: dict | None) -> dict[str, Any]:
    if not result:
        return {}
    if not _ok(result):
        return {"state": _stage_line(result)}
    out: dict[str, Any] = {}
    for model, entry in sorted(result.get("models", {}).items()):
        out[model] = _pick(entry, {
            "bestConfig": "bestConfig", "throughput": "throughput", "p99Ms": "p99Ms",
            "concurrency": "concurrency", "instances": "instances", "maxBatchSize": "maxBatchSize",
            "defaultThroughput": "defaultThroughput", "bestOverDefault": "bestOverDefault",
            "configsMeasured": "configsMeasured", "meetsSlo": "meetsSlo", "note": "note",
            "powerW": "powerW", "inferPerJoule": "inferPerJoule", "perJouleNote": "perJouleNote"})
        out[model] = _against_default(out[model])
        if entry.get("perJoule"):   # the best by inferences per joule, with what it won with
            out[model]["perJoule"] = _pick(entry["perJoule"], {
                k: k for k in ("bestConfig", "concurrency", "throughput", "p99Ms", "powerW",
                               "inferPerJoule")})
    if result.get("failedMeasurements"):
        out["failedMeasurements"] = _scalar(result["failedMeasurements"])
    return out


#: What the closed loop compares for each objective (benchmark.objective): the point
#: of a bench entry, its figure, and the figure's 95 % interval ends.
COMPARED = {"throughput": ("best", "inferPerSec", "low", "high"),
            "throughputAtSlo": ("atSlo", "inferPerSec", "low", "high"),
            "inferencesPerJoule": ("best", "inferPerJoule", "inferPerJouleLow", "inferPerJouleHigh")}
#: The compared figure in words and its unit.
BASIS = {"throughput": ("best throughput", "infer/s"),
         "throughputAtSlo": ("throughput at the SLO {slo}", "infer/s"),
         "inferencesPerJoule": ("inferences per joule at the best point", "infer/J")}


def _compared_point(entry: dict, objective: str) -> dict:
    """The point the closed loop compares for ``objective``: ``value`` and, with
    repeats, ``low`` and ``high``. At the SLO, none meeting it is 0 WITHOUT an
    interval (no verdict); a point without the figure (no GPU: no inferences per
    joule) gives nothing to compare."""
    where, value, low, high = COMPARED[objective]
    point = ((entry.get("slo") or {}).get("atSlo") or {"inferPerSec": "0"}) \
        if where == "atSlo" else entry.get("best", {})
    return {name: str(point[k]) for name, k in (("value", value), ("low", low), ("high", high))
            if k in point}


def _best_per_point(result: dict | None, protocol: str, objective: str) -> dict[str, dict]:
    """``model/protocol`` -> the compared point of one bench result."""
    if not _ok(result):
        return {}
    points = {f"{model}/{protocol}": _compared_point(entry, objective)
              for model, entry in sorted(result.get("models", {}).items())}
    return {k: p for k, p in points.items() if "value" in p}


#: Improved's reasons: the intervals apart upwards, overlapping, apart downwards, none.
IMPROVED, NO_CHANGE, REGRESSED, NO_INTERVAL = "Improved", "NoChange", "Regressed", "NoInterval"


def verdict(before: dict, after: dict) -> str:
    """Improved only when the 95 % intervals do not overlap (after's lower end
    above before's upper end); without intervals (repeats 1) no verdict."""
    if not all(k in point for point in (before, after) for k in ("low", "high")):
        return NO_INTERVAL
    if float(after["low"]) > float(before["high"]):
        return IMPROVED
    if float(after["high"]) < float(before["low"]):
        return REGRESSED
    return NO_CHANGE


def overall_verdict(verdicts: dict[str, str]) -> str:
    """One word for the whole loop: any pair without an interval or any regression
    says so; Improved only when every pair improved."""
    words = set(verdicts.values())
    for word in (NO_INTERVAL, REGRESSED):
        if word in words:
            return word
    return IMPROVED if words == {IMPROVED} else NO_CHANGE


def _interval(point: dict) -> str:
    return f"{point['low']}..{point['high']}"


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}" if before > 0 else "0"


def _nothing_to_apply(analyzed: dict, objective: str) -> dict[str, str]:
    """Why the closed loop applies nothing: per model, the best config found for
    the objective is the served one, or there is none (and why)."""
    found = []
    for m, e in sorted(analyze_models_of(analyzed).items()):
        best = best_of(e, objective).get("bestConfig")
        found.append(f"{m} {best}" if best else f"{m}: {e.get('perJouleNote') or e.get('note')}")
    return {"state": "NothingToApply",
            "message": f"the served config is already the best one found for {objective} "
                       f"({'; '.join(found)})"}


def confirmation_line(entry: dict) -> str:
    """One candidate's re-measured point in words: ``meets p99 <= 10 ms at c=64: p99
    8000 us [7900, 8100] over 9,000 requests``."""
    found = (entry.get("latency") or {})
    p99 = found.get("p99") or [entry.get("p99Us"), None, None]
    interval = f" [{p99[1]}, {p99[2]}]" if p99[1] is not None else " (no interval)"
    return (f"{entry.get('verdict', '?')} at c={entry.get('c')}: {entry.get('inferPerSec')} "
            f"infer/s, p99 {p99[0]} us{interval} over {found.get('requests', 0):,} requests"
            + (f" ({entry['why']})" if entry.get("why") else ""))


def confirmation_part(confirm: dict) -> dict[str, str]:
    """With an SLO: each candidate re-measured by the confirm stage, model -> its line."""
    return {m: confirmation_line(e) for m, e in sorted((confirm.get("models") or {}).items())}


def _none_confirmed(confirm: dict, lines: dict[str, str]) -> dict[str, Any]:
    slo = confirm.get("slo", "the SLO")
    return {"state": "NothingToApply", "confirmation": lines,
            "message": f"no candidate config met {slo} when the confirm stage measured it "
                       "again; every model keeps its served config ("
                       + "; ".join(f"{m} {line}" for m, line in lines.items()) + ")"}


def closed_loop_part(results: dict[str, dict], apply_best: bool = False,
                     objective: str = "throughput") -> dict[str, Any]:
    """applyBest: the config applied per model (model-analyzer's best for the
    objective), the compared figure before (bench-*) and after (bench-tuned-*) per
    model/protocol, and the gain (sum of the after figures over the sum of the same
    before figures). ``basis`` says which figure (COMPARED): the best throughput,
    the throughput at the SLO (a config faster at saturation can be slower within
    a latency limit) or the inferences per joule at the best point."""
    tuned = {n.removeprefix(BENCH_TUNED): r for n, r in sorted(results.items())
             if n.startswith(BENCH_TUNED)}
    repo = results.get(REPO_TUNED)
    analyzed, confirm = results.get("analyze"), results.get(CONFIRM)
    candidates = best_overrides(analyzed, objective)
    # with an SLO only the candidates the confirm stage found meeting it are applied
    met = confirmed_of(confirm) if _ok(confirm) else None
    lines = confirmation_part(confirm) if _ok(confirm) else {}
    if apply_best and not repo and not tuned and _ok(analyzed):
        if not candidates:
            return _nothing_to_apply(analyzed, objective)
        if met is not None and not set(met) & set(candidates):
            return _none_confirmed(confirm, lines)
    if not repo and not tuned and not lines:
        return {}
    found = analyze_models_of(analyzed)
    chosen = {m: best_of(found.get(m, {}), objective) for m in candidates
              if met is None or m in met}
    out: dict[str, Any] = {"objective": objective, **({"confirmation": lines} if lines else {}),
                           "applied": {
        model: {"config": _scalar(best.get("bestConfig", "")),
                **{k: _scalar(v) for k, v in sorted(best.get("apply", {}).items()) if v != ""}}
        for model, best in chosen.items()}}
    unfinished = [(n, r) for n, r in ((REPO_TUNED, repo), (SERVE_TUNED, results.get(SERVE_TUNED)),
                                      *((BENCH_TUNED + p, r) for p, r in tuned.items()))
                  if r is not None and not _ok(r)]
    before: dict[str, dict] = {}
    after: dict[str, dict] = {}
    for protocol, result in tuned.items():
        after.update(_best_per_point(result, protocol, objective))
        before.update(_best_per_point(results.get(f"bench-{protocol}"), protocol, objective))
    common = sorted(set(before) & set(after))
    if common:
        slo = next((str(r["slo"]) for r in tuned.values() if r.get("slo")), "")
        words, unit = BASIS[objective]
        out.update(basis=words.format(slo=slo), unit=unit)
        figures = {k: (float(after[k]["value"]), float(before[k]["value"])) for k in common}
        out["before"] = {k: before[k]["value"] for k in common}
        out["after"] = {k: after[k]["value"] for k in common}
        out["gains"] = {k: _ratio(*figures[k]) for k in common}
        out["gain"] = _ratio(sum(a for a, _ in figures.values()), sum(b for _, b in figures.values()))
        out["verdicts"] = {k: verdict(before[k], after[k]) for k in common}
        out["verdict"] = overall_verdict(out["verdicts"])
        with_interval = [k for k in common if out["verdicts"][k] != NO_INTERVAL]
        if with_interval:
            out["intervals"] = {k: f"{_interval(before[k])} -> {_interval(after[k])}"
                                for k in with_interval}
    if not repo and not tuned:   # confirmed; the tuned repository is next
        out["state"] = "Confirmed"
    elif unfinished:
        name, result = unfinished[0]
        out["state"] = f"{name} {_stage_line(result)}"
    elif tuned and not common and objective == "inferencesPerJoule":
        out["state"] = "Unmeasured"
        out["message"] = "the bench measured no inferences per joule (no GPU telemetry)"
    else:
        out["state"] = "Measured" if common else "Applied"
    return out


def improved_condition(loop: dict) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Improved condition, from the closed
    loop's status part; None when there is no closed loop."""
    if not loop:
        return None
    if loop.get("state") == "NothingToApply":
        return FALSE, "NothingToApply", loop.get("message", "")
    if loop.get("state") == "Unmeasured":
        return UNKNOWN, "Unmeasured", f"closed loop: {loop.get('message', '')}"
    if "verdict" not in loop:
        return UNKNOWN, "Measuring", f"closed loop: {loop.get('state', 'Applied')}"
    word = loop["verdict"]
    pairs = "; ".join(f"{k} {loop['before'][k]} -> {loop['after'][k]} {loop.get('unit', 'infer/s')} "
                      f"({loop['verdicts'][k]}"
                      + (f", 95 % intervals {loop['intervals'][k]})" if k in loop.get(
                          "intervals", {}) else ")") for k in loop["verdicts"])
    why = {IMPROVED: "every tuned interval lies above the one before",
           NO_CHANGE: "the intervals before and after overlap",
           REGRESSED: "a tuned interval lies below the one before",
           NO_INTERVAL: "no verdict without a 95 % interval on both sides (set "
                        "benchmark.perfAnalyzer.repeats 2 or more with repeats 1; none "
                        "without a load meeting the SLO)"}[word]
    return (TRUE if word == IMPROVED else FALSE), word, \
        f"{loop.get('basis', 'best throughput')}: {why}: {pairs}"


def client_part(results: dict[str, dict], verdict: accuracy.Judgement | None) -> dict[str, Any]:
    result = results.get("client")
    if not _ok(result):
        return {}
    out: dict[str, Any] = {model: {p: _scalar(acc) for p, acc in sorted(per.items())}
                           for model, per in sorted(result.get("accuracy", {}).items())}
    out["samples"] = _scalar(result.get("samples", 0))
    out["disagreements"] = _scalar(result.get("disagreements", 0))
    if verdict is not None:   # the accuracy guard, against PyTorch's held-out accuracy
        out["pytorch"] = f"{verdict.reference:.4f}"
        out["tolerance"] = f"{verdict.tolerance:g}"
        if verdict.below:
            out["belowTolerance"] = ",".join(verdict.below)
    return out


def best_throughput(perf: dict) -> str | None:
    """The highest perf_analyzer infer/s over every model and protocol, as a
    string (the CRD's Throughput printer column reads it)."""
    values = []
    for per_protocol in perf.values():
        for point in per_protocol.values():
            try:
                values.append((float(point.get("bestInferPerSec")), str(point.get("bestInferPerSec"))))
            except (TypeError, ValueError):
                continue
    return max(values)[1] if values else None


def throughput_at_slo(perf: dict) -> tuple[str, str] | None:
    """(infer/s, the SLO) of the highest throughput meeting the SLO over every model
    and protocol; ("none", SLO) when none meets it; None without an SLO."""
    points = [p for per in perf.values() for p in per.values() if "slo" in p]
    if not points:
        return None
    met = [(float(p["inferPerSecAtSlo"]), str(p["inferPerSecAtSlo"]))
           for p in points if p["inferPerSecAtSlo"] != "none"]
    return (max(met)[1] if met else "none"), str(points[0]["slo"])


def headline(perf: dict) -> dict[str, str]:
    """``bestThroughput``, ``throughputAtSlo`` with its ``slo``, and ``throughput``
    (the printer column: the throughput at the SLO with the SLO when the bench ran
    with one, else the best) of one set of perf points."""
    out: dict[str, str] = {}
    best = best_throughput(perf)
    if best is not None:
        out["bestThroughput"] = out["throughput"] = best
    at_slo = throughput_at_slo(perf)
    if at_slo is not None:
        out["throughputAtSlo"], out["slo"] = at_slo
        # one word, so `kubectl get` columns stay split by spaces: 1759.3@p99<=8ms
        out["throughput"] = f"{at_slo[0]}@{at_slo[1].replace(' ', '')}"
    return out


#: throughputOf: the headline figures are the tuned bench's; the tuned config is
#: (being) served and its bench has not finished; a closed-loop step failed.
TUNED, PENDING, UNMEASURED = "tuned", "pending", "unmeasured"


def served_headline(results: dict[str, dict], perf: dict, tuned: dict, apply_best: bool,
                    loop: dict, objective: str = "throughput") -> dict[str, str]:
    """The headline figures of what is served now. Without a config to apply they
    are the bench's. Once the closed loop applies model-analyzer's best config
    they are the tuned bench's (``throughputOf: tuned``; before and after stay
    under closedLoop), and until every model and protocol of the tuned bench
    succeeded there are none: ``throughput`` says ``pending`` (or ``unmeasured``
    when a closed-loop step failed) and ``throughputNote`` why, rather than the
    figures of a config no longer served (they stay under perfAnalyzer). ``tuned``:
    the tuned bench's points (perf_part with tuned)."""
    analyzed = results.get("analyze")
    if not (apply_best and _ok(analyzed) and best_overrides(analyzed, objective)):
        return headline(perf)
    pairs = lambda p: {(m, proto) for m, per in p.items() for proto in per}  # noqa: E731
    if tuned and pairs(tuned) >= pairs(perf):
        return {**headline(tuned), "throughputOf": TUNED}
    failed = any(not _ok(r) for n, r in results.items()
                 if n in (REPO_TUNED, SERVE_TUNED) or n.startswith(BENCH_TUNED))
    word = UNMEASURED if failed else PENDING
    where = f"closed loop: {loop['state']}" if loop.get("state") else f"{REPO_TUNED} not finished"
    return {"throughput": word, "throughputOf": word,
            "throughputNote": f"applyBest moves serving to model-analyzer's best config and "
                              + ("the closed loop failed" if failed else
                                 "its bench has not finished")
                              + f" ({where}); the figures before tuning are under perfAnalyzer"}


def summarize(results: dict[str, dict], *, apply_best: bool = False, objective: str = "throughput",
              accuracy_verdict: accuracy.Judgement | None = None) -> dict:
    """The ``model``, ``benchmark`` and ``clientAccuracy`` parts of the status
    (``apply_best``: the spec asks for the closed loop, maximizing ``objective``,
    benchmark.objective as the spec means it; ``accuracy_verdict``:
    the accuracy guard's, shown in clientAccuracy). ``benchmark.throughput``
    is what the Throughput printer column shows: the throughput at the SLO when
    the bench ran with one, else the best, of the config served now
    (served_headline: the tuned bench's with the closed loop)."""
    benchmark: dict[str, Any] = {}
    perf, tuned = perf_part(results), perf_part(results, tuned=True)
    loop = closed_loop_part(results, apply_best, objective)
    if perf:
        benchmark["perfAnalyzer"] = perf
        benchmark.update(served_headline(results, perf, tuned, apply_best, loop, objective))
    analyzer = analyzer_part(results.get("analyze"))
    if analyzer:
        benchmark["modelAnalyzer"] = analyzer
    if loop:
        benchmark["closedLoop"] = loop
        if benchmark.get("throughputOf") == TUNED:   # what is served now, point by point
            loop["perfAnalyzer"] = tuned
    out: dict[str, Any] = {"model": model_part(results), "benchmark": benchmark}
    client = client_part(results, accuracy_verdict)
    if client:
        out["clientAccuracy"] = client
    return out


__all__ = ["summarize", "clients_part", "scaling_line", "limit_words", "improved_condition", "verdict", "overall_verdict"]
