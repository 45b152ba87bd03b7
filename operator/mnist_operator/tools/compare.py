"""``mnist-serving compare``: one table and one plot across runs and clusters.

    mnist-serving compare [PATH ...] [--cluster] [--kubeconfig F] [--context C]
                          [-n NS | -A] [--baseline SOURCE] [--out DIR] [--docs FILE]

A PATH is a local run directory (``runs/<name>/``, holding the ``status.json``
the local runner writes) or a ``status.json`` file; with no PATH and no
``--cluster``, every ``runs/*/status.json`` is read. ``--cluster`` lists the
MnistServings of one namespace (or every one, ``-A``) and reads their ``.status``.

The output is one row per (source, model, protocol): the GPU or device, the
best perf_analyzer throughput with its p99 and concurrency (or request rate),
the dynamic-batching gain, the rows failing Little's law, the GPU utilization
and inferences per joule Triton's metrics gave at the best point ("no GPU"
where it measured none), the throughput at
the SLO where the run had one, and model-analyzer's best config. The plot
draws the SLO's p99 limit as a dashed line and the throughput at it as a star.
It is printed as markdown and written to ``DIR/compare.csv``; a plot of
throughput against p99 latency per model goes to ``DIR/compare.png``.

``--baseline SOURCE`` (a local run directory as given, or a cluster resource
``namespace/name``) adds two columns: each row's mean best throughput over the
baseline source's row of the same model and protocol, with its 95 % Fieller
interval from each point's repeats (:mod:`mnist_operator.core.verdicts`), and
the verdict (``better``, ``no difference``, ``worse``, ``no interval`` with
one repeat, ``unbounded``; ``baseline`` on its own rows, ``-`` where the
baseline has no row of that model and protocol).

Layout: pure functions turn a status (plus its benchmark sweeps) into
:class:`Row` objects and rows into markdown / CSV; the thin shells read files,
call the Kubernetes API and draw the plot. The Kubernetes client and
matplotlib are imported only when used.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from mnist_operator.api.spec import GROUP, PLURAL, VERSION
from mnist_operator.core.provenance import (BENCH_PREFIX, ENVIRONMENT, device_of, environment_id,
                                            environment_of)
from mnist_operator.core.summary import scaling_line
from mnist_operator.core.verdicts import compare as compare_points
from mnist_operator.core.verdicts import ratio_text

STATUS_FILE = "status.json"
CSV_FILE, PNG_FILE = "compare.csv", "compare.png"
DOCS_HEADING = "## Comparison"
#: A sweep is trusted only if it holds the best point the summary reports
#: (same concurrency, throughput within this relative difference).
SAME_POINT_TOLERANCE = 0.001


class Unusable(Exception):
    """A source that gives no row; the message is one line, without the source name."""


@dataclass(frozen=True)
class Point:
    load: int                  # the concurrency, or the request rate (requests/s)
    infer_per_sec: float
    p99_us: int
    open_loop: bool = False    # load is a request rate (benchmark.perfAnalyzer.load.mode)

    @property
    def label(self) -> str:
        return f"{self.load}/s" if self.open_loop else f"c={self.load}"


@dataclass(frozen=True)
class Row:
    source: str
    model: str
    protocol: str
    device: str
    best_infer_per_sec: str
    p99_ms_at_best: str
    concurrency_at_best: int | str
    request_rate_at_best: str
    batching_gain: str
    little_failures: str
    accuracy: str
    analyzer_config: str
    analyzer_gain: str
    measured: str
    #: the environment fingerprint: the id of ``environment_details``
    environment: str = "-"
    environment_details: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    #: distributed load: the clients and whether more of them still raised throughput
    clients: str = "-"
    slo: str = "-"                      # benchmark.slo, as the bench stage states it
    infer_per_sec_at_slo: str = "-"     # the best meeting it, with its load and failing neighbour
    gpu_util_at_best: str = "-"         # Triton's metrics at the best point (bench --metrics-url)
    infer_per_joule_at_best: str = "-"
    #: the concurrency sweep behind the best point, or just the best point
    sweep: tuple[Point, ...] = field(default=(), compare=False)
    at_slo: Point | None = field(default=None, compare=False)
    #: the best point's repeats and the 95 % interval of its mean ("-" with one repeat)
    repeats: str = "-"
    low_at_best: str = "-"
    high_at_best: str = "-"
    #: the best point's p99 from every request, its 95 % interval and the request count
    p99_interval_at_best: str = "-"
    #: --baseline: the ratio to the baseline source's row and its verdict
    vs_baseline: str = "-"
    verdict: str = "-"


COLUMNS = (
    ("source", "source"),
    ("model", "model"),
    ("protocol", "protocol"),
    ("device", "GPU / device"),
    ("best_infer_per_sec", "best infer/s"),
    ("p99_ms_at_best", "p99 ms at best"),
    ("p99_interval_at_best", "p99 ms from every request [95 % interval] (requests)"),
    ("concurrency_at_best", "concurrency at best"),
    ("request_rate_at_best", "request rate at best (achieved), req/s"),
    ("batching_gain", "batching gain (best / lowest c)"),
    ("little_failures", "Little's law fails / points"),
    ("gpu_util_at_best", "GPU util at best"),
    ("infer_per_joule_at_best", "infer/J at best"),
    ("clients", "clients (half -> all: the limit)"),
    ("accuracy", "held-out accuracy"),
    ("slo", "SLO"),
    ("infer_per_sec_at_slo", "infer/s at SLO (load; first failing)"),
    ("analyzer_config", "model-analyzer best config"),
    ("analyzer_gain", "best / default"),
    ("measured", "measured (UTC)"),
    ("environment", "environment"),
)
#: With --baseline, right after the best throughput they are about.
BASELINE_COLUMNS = (
    ("vs_baseline", "vs baseline"),
    ("verdict", "verdict"),
)
BASELINE_VERDICT = "baseline"   # the verdict on the baseline source's own rows


def columns(baseline: bool = False) -> tuple[tuple[str, str], ...]:
    """The table's columns; with a baseline its two right after ``best infer/s``."""
    if not baseline:
        return COLUMNS
    at = [attr for attr, _ in COLUMNS].index("best_infer_per_sec") + 1
    return COLUMNS[:at] + BASELINE_COLUMNS + COLUMNS[at:]


# --------------------------------------------------------------------------- pure

def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def sweep_points(entry: dict) -> list[Point]:
    """The rows of one model in a bench result, in either shape the stage
    writes (dicts, or lists in ``rowFormat`` order once shrunk)."""
    out = []
    for row in entry.get("rows") or []:
        open_loop = isinstance(row, dict) and "rate" in row or entry.get("openLoop", False)
        c, ips, p99 = ((row[0], row[1], row[2]) if isinstance(row, list)
                       else (row.get("rate" if open_loop else "c"), row.get("inferPerSec"),
                             row.get("p99Us")))
        if _number(c) is None or _number(ips) is None or _number(p99) is None:
            continue
        out.append(Point(int(_number(c)), float(ips), int(p99), open_loop))
    return sorted(out, key=lambda p: p.load)


def bench_json_points(doc: dict, model: str) -> list[Point]:
    """The full sweep of one model from ``bench/<protocol>/bench.json``."""
    rows = (doc.get("rows") or {}).get(model) or []
    open_loop = doc.get("loadMode") == "requestRate"
    load = ("rate", "request_rate") if open_loop else ("c", "concurrency")
    return sweep_points({"rows": [{load[0]: r.get(load[1]), "inferPerSec": r.get("throughput"),
                                   "p99Us": r.get("p99_us")} for r in rows]})


def _holds_best(points: list[Point], best: Point) -> bool:
    return any(p.load == best.load and p.open_loop == best.open_loop
               and abs(p.infer_per_sec - best.infer_per_sec)
               <= SAME_POINT_TOLERANCE * max(best.infer_per_sec, 1.0) for p in points)


def sweeps_of(bench_results: dict[str, dict]) -> dict[tuple[str, str], list[Point]]:
    """(model, protocol) -> sweep, from bench step results (``bench-<protocol>``).
    A result shrunk to its failing rows (``rowsNote``) has no sweep to give."""
    out: dict[tuple[str, str], list[Point]] = {}
    for step, result in bench_results.items():
        if not step.startswith(BENCH_PREFIX) or not result or result.get("rowsNote"):
            continue
        protocol = result.get("protocol") or step.removeprefix(BENCH_PREFIX)
        open_loop = result.get("loadMode") == "requestRate"
        for model, entry in (result.get("models") or {}).items():
            points = sweep_points(dict(entry, openLoop=open_loop))
            if points:
                out[(model, protocol)] = points
    return out


def _ms(us: Any) -> str:
    value = _number(us)
    return f"{value / 1000:.2f}" if value is not None else "-"


def p99_interval_cell(point: dict) -> str:
    """The best point's p99 from every request with its distribution-free 95 % interval
    and how many requests it rests on ("-" without request records)."""
    if "p99UsFromRequestsAtBest" not in point:
        return "-"
    interval = (f" [{_ms(point['p99UsLowAtBest'])}, {_ms(point['p99UsHighAtBest'])}]"
                if "p99UsLowAtBest" in point else " [too few requests]")
    requests = _number(point.get("requestsAtBest"))
    return (_ms(point["p99UsFromRequestsAtBest"]) + interval
            + (f" ({int(requests):,})" if requests is not None else ""))


def _gain(point: dict) -> str:
    gain = point.get("batchingGain")
    if _number(gain) is None or _number(gain) == 0:
        return "-"
    lowest = point.get("lowestConcurrency")
    return str(gain) if lowest in (None, 1) else f"{gain} (vs c={lowest})"


def telemetry_cells(point: dict) -> tuple[str, str]:
    """(GPU util, infer/J) at the best point: Triton's figures, "no GPU" where it
    measured none, the reason where its metrics could not be read, "-" for a run
    without telemetry."""
    said = point.get("telemetryAtBest")
    if said:
        word = "no GPU" if said == "no GPU" else str(said).split(":")[0]
        return word, word
    return str(point.get("gpuUtilAtBest", "-")), str(point.get("inferPerJouleAtBest", "-"))


def slo_cells(point: dict, open_loop: bool) -> tuple[str, str, Point | None]:
    """(SLO, infer/s at it with its load and the first failing load, the at-SLO point)."""
    if "slo" not in point:
        return "-", "-", None
    label = (lambda load: f"{load}/s") if open_loop else (lambda load: f"c={load}")
    failing = (f"; {label(point['firstFailingAt'])} fails" if "firstFailingAt" in point else "")
    if point.get("inferPerSecAtSlo") in (None, "none"):
        return str(point["slo"]), f"none meets it{failing}", None
    load = point["requestRateAtSlo" if open_loop else "concurrencyAtSlo"]
    at = Point(int(load), float(point["inferPerSecAtSlo"]), int(point["p99UsAtSlo"]), open_loop)
    return str(point["slo"]), f"{point['inferPerSecAtSlo']} ({label(load)}{failing})", at


def slo_p99_ms(slo: str) -> float | None:
    """The p99 limit in an SLO as the bench stage states it ("p99 <= 8 ms, ...")."""
    found = re.search(r"p99 <= ([0-9]+) ms", slo)
    return float(found.group(1)) if found else None


def measured_at(status: dict, protocol: str) -> str:
    """When the bench step of ``protocol`` finished, so runs of different days
    are not read as one measurement."""
    stage = (status.get("stages") or {}).get(f"{BENCH_PREFIX}{protocol}") or {}
    return str(stage.get("completionTime") or "-")


def accuracy_of(status: dict, model: str, protocol: str) -> str:
    """The client stage's held-out accuracy of ``model`` over ``protocol``,
    marked when the accuracy guard found the model below tolerance."""
    client = status.get("clientAccuracy") or {}
    value = str((client.get(model) or {}).get(protocol, "-")) \
        if isinstance(client.get(model), dict) else "-"
    below = str(client.get("belowTolerance", "")).split(",")
    return f"{value} (below tolerance)" if model in below else value


def rows_of(source: str, status: dict, sweeps: dict[tuple[str, str], list[Point]] | None = None,
            gpu_product: str = "") -> list[Row]:
    """The table rows of one status (local ``status.json`` or a CR's ``.status``).
    Raises :class:`Unusable` when it holds no perf_analyzer result."""
    if not isinstance(status, dict):
        raise Unusable("status is not a JSON object")
    benchmark = status.get("benchmark") or {}
    perf = benchmark.get("perfAnalyzer") or {}
    if not perf:
        if "phase" not in status and "stages" not in status:
            raise Unusable("not an MnistServing status (no phase, stages or benchmark)")
        raise Unusable(f"no benchmark results in status.benchmark.perfAnalyzer "
                       f"(phase {status.get('phase', '-')})")
    analyzer = benchmark.get("modelAnalyzer") or {}
    device = device_of(status, gpu_product)
    rows = []
    for model, per in sorted(perf.items()):
        ma = analyzer.get(model) if isinstance(analyzer.get(model), dict) else {}
        for protocol, point in sorted(per.items()):
            open_loop = "requestRateAtBest" in point
            best = Point(int(_number(point.get("requestRateAtBest" if open_loop
                                               else "concurrencyAtBest")) or 0),
                         _number(point.get("bestInferPerSec")) or 0.0,
                         int(_number(point.get("p99UsAtBest")) or 0), open_loop)
            env = environment_of(status, model, protocol, device)
            sweep = (sweeps or {}).get((model, protocol)) or []
            if not _holds_best(sweep, best):
                sweep = [best]  # missing, shrunk or from another run: show the summary only
            slo, at_slo_cell, at_slo = slo_cells(point, open_loop)
            gpu_util, per_joule = telemetry_cells(point)
            rows.append(Row(
                source=source, model=model, protocol=protocol, device=device,
                best_infer_per_sec=str(point.get("bestInferPerSec", "-")),
                p99_ms_at_best=_ms(point.get("p99UsAtBest")),
                p99_interval_at_best=p99_interval_cell(point),
                concurrency_at_best="-" if open_loop else best.load,
                request_rate_at_best=f"{best.load} ({point.get('achievedAtBest', '-')})"
                if open_loop else "-",
                batching_gain=_gain(point),
                little_failures=("-" if open_loop else
                                 f"{point.get('littleFailures', '-')}/{point.get('points', '-')}"),
                accuracy=accuracy_of(status, model, protocol),
                analyzer_config=str(ma.get("bestConfig", "-")),
                analyzer_gain=str(ma.get("bestOverDefault", "-")),
                measured=measured_at(status, protocol),
                clients=scaling_line(point) if "clients" in point else "-",
                slo=slo, infer_per_sec_at_slo=at_slo_cell,
                gpu_util_at_best=gpu_util, infer_per_joule_at_best=per_joule,
                environment=environment_id(env), environment_details=env,
                sweep=tuple(sweep), at_slo=at_slo,
                **({"repeats": str(point["repeats"]), "low_at_best": str(point["lowAtBest"]),
                    "high_at_best": str(point["highAtBest"])}
                   if "lowAtBest" in point and "repeats" in point else {})))
    return rows


def stage_results(status: dict) -> dict[str, dict]:
    """Step name -> result, from a CR's ``status.stages.<step>.result`` (the
    operator copies each stage's result there); finished steps only."""
    out = {}
    for step, entry in (status.get("stages") or {}).items():
        if isinstance(entry, dict) and entry.get("state") == "Succeeded" and entry.get("result"):
            out[step] = entry["result"]
    return out


def cluster_source(context: str, item: dict) -> str:
    meta = item.get("metadata") or {}
    prefix = f"{context}:" if context else ""
    return f"{prefix}{meta.get('namespace', '-')}/{meta.get('name', '-')}"


def rows_from_list(body: dict, context: str = "") -> tuple[list[Row], list[str]]:
    """Rows and one-line warnings from the body of a MnistServing list call."""
    rows: list[Row] = []
    warnings: list[str] = []
    for item in body.get("items") or []:
        source = cluster_source(context, item)
        status = item.get("status") or {}
        gpu_product = ((item.get("spec") or {}).get("scheduling") or {}).get("gpuProduct", "")
        try:
            rows += rows_of(source, status, sweeps_of(stage_results(status)), gpu_product)
        except Unusable as exc:
            warnings.append(f"{source}: {exc}; skipped")
    return rows, warnings


def baseline_source(baseline: str, sources: Iterable[str]) -> str:
    """The source ``baseline`` names: one exactly (a local run directory as
    given, ``ctx:namespace/name``), or else one local source whose
    ``status.json`` it is (``runs/a/status.json``, ``runs/a/``) or one cluster
    source whose ``namespace/name`` it is. Raises :class:`Unusable` (one line
    naming ``--baseline`` and the sources) when it names none or several."""
    known = list(dict.fromkeys(sources))
    if baseline in known:
        return baseline
    as_path = Path(baseline)
    wanted = {str(as_path), str(as_path.parent) if as_path.name == STATUS_FILE else str(as_path)}
    found = [s for s in known if s in wanted
             or (":" in s and s.split(":", 1)[1] == baseline)]
    if len(found) == 1:
        return found[0]
    listing = ", ".join(known) or "none"
    if found:
        raise Unusable(f"--baseline {baseline} names several sources ({', '.join(found)}); "
                       f"give one of: {listing}")
    raise Unusable(f"--baseline {baseline} is none of the sources compared; "
                   f"available: {listing}")


def _figures(row: Row) -> dict[str, str]:
    """A row's best point as :func:`mnist_operator.core.verdicts.compare` reads it."""
    point = {"inferPerSec": row.best_infer_per_sec}
    if row.low_at_best != "-":
        point.update(repeats=row.repeats, low=row.low_at_best, high=row.high_at_best)
    return point


def ratio_cells(row: Row, base: Row) -> tuple[str, str]:
    """("ratio [low, high]", verdict) of ``row``'s mean best throughput over ``base``'s."""
    try:
        got = compare_points(_figures(row), _figures(base)).as_status()
    except ValueError:   # a figure missing or not a number: nothing to say
        return "-", "-"
    return ratio_text(got), got["verdict"]


def with_baseline(rows: Iterable[Row], baseline: str) -> list[Row]:
    """``rows`` with the vs-baseline columns: each row against the ``baseline``
    source's row of the same model and protocol."""
    rows = list(rows)
    base: dict[tuple[str, str], Row] = {}
    for r in rows:
        if r.source == baseline:
            base.setdefault((r.model, r.protocol), r)
    out = []
    for r in rows:
        b = base.get((r.model, r.protocol))
        if b is None:
            cells = ("-", "-")
        elif r.source == baseline:
            cells = ("1.00", BASELINE_VERDICT)
        else:
            cells = ratio_cells(r, b)
        out.append(replace(r, vs_baseline=cells[0], verdict=cells[1]))
    return out


def baseline_note(baseline: str) -> str:
    """The line under the table saying what the vs-baseline column is."""
    return (f"vs baseline: ratio of mean throughputs to {baseline}, 95 % interval "
            "(Fieller, Welch df), from each point's repeats; no interval with one repeat.\n")


def ordered(rows: Iterable[Row]) -> list[Row]:
    """Same model and protocol next to each other, and within them the same
    environment, so sources compare line by line with like beside like."""
    return sorted(rows, key=lambda r: (r.model, r.protocol, r.environment, r.source))


def _cells(row: Row, baseline: bool = False) -> list[str]:
    return [str(getattr(row, attr)) for attr, _ in columns(baseline)]


def markdown(rows: list[Row], baseline: bool = False) -> str:
    head = [title for _, title in columns(baseline)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r, baseline)) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def environments(rows: list[Row]) -> str:
    """The legend of the environment column: one line per fingerprint."""
    seen = {r.environment: r.environment_details for r in rows}
    head = ["environment", *(title for _, title in ENVIRONMENT)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join([env, *(v.replace("|", "\\|") for _, v in details)]) + " |"
              for env, details in sorted(seen.items())]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row], baseline: bool = False) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([attr for attr, _ in columns(baseline)] + [key for key, _ in ENVIRONMENT])
    writer.writerows(_cells(r, baseline) + [v for _, v in r.environment_details] for r in rows)
    return buf.getvalue()


def docs_section(table: str, command: str) -> str:
    return "\n".join([
        DOCS_HEADING, "",
        "One row per (source, model, protocol), from `mnist-serving compare`. "
        "Best = the perf_analyzer point with the highest throughput; batching gain = best "
        "throughput over the throughput at the lowest concurrency measured; best / default = "
        "model-analyzer's best config over Triton's default config; environment = the "
        "fingerprint of where the numbers were measured (second table). The plot of "
        "throughput against p99 latency is written next to the CSV.", "",
        "```", command, "```", "", table.rstrip("\n"), ""])


def replace_section(text: str, body: str, heading: str = DOCS_HEADING) -> str:
    """``text`` with the ``heading`` section (up to the next ``## ``) replaced by
    ``body``, or ``body`` appended; other sections stay as they are."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = [""] + lines[end:] if end < len(lines) else []
    return "\n".join(lines[:start] + body.rstrip("\n").splitlines() + tail) + "\n"


# ------------------------------------------------------------------------ I/O shells

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def local_bench_results(run_dir: Path, status: dict) -> dict[str, dict]:
    """The bench step results of a local run (``results/bench-*.json``); a
    result shrunk to its failing rows gets its full sweep back from
    ``bench/<protocol>/bench.json``. Whether a sweep belongs to this status is
    decided by :func:`rows_of` (it must hold the status's best point), not by
    fingerprint: the runner may have re-planned since the file was written."""
    out = {}
    for step, entry in (status.get("stages") or {}).items():
        if not step.startswith(BENCH_PREFIX) or not isinstance(entry, dict):
            continue
        result = _read_json(run_dir / "results" / f"{step}.json")
        if not isinstance(result, dict) or result.get("state") != "Succeeded":
            continue
        if result.get("rowsNote"):
            protocol = result.get("protocol") or step.removeprefix(BENCH_PREFIX)
            doc = _read_json(run_dir / "bench" / protocol / "bench.json") or {}
            models = {m: {**e, "rows": [{"rate" if p.open_loop else "c": p.load,
                                         "inferPerSec": p.infer_per_sec, "p99Us": p.p99_us}
                                        for p in bench_json_points(doc, m)]}
                      for m, e in (result.get("models") or {}).items()}
            result = {k: v for k, v in result.items() if k != "rowsNote"} | {"models": models}
        out[step] = result
    return out


def load_local(path: Path) -> list[Row]:
    """Rows of one local run directory or status.json file."""
    status_path = path / STATUS_FILE if path.is_dir() else path
    if not status_path.is_file():
        raise Unusable(f"no {STATUS_FILE} here")
    status = _read_json(status_path)
    if not isinstance(status, dict):
        raise Unusable(f"{status_path.name} is not a JSON object")
    source = str(path if path.is_dir() else path.parent)
    return rows_of(source, status, sweeps_of(local_bench_results(status_path.parent, status)))


def list_cluster(kubeconfig: str | None, context: str | None, namespace: str | None,
                 all_namespaces: bool) -> tuple[dict, str]:
    """The MnistServing list body and the context name it came from."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise Unusable("the kubernetes Python client is not installed (pip install kubernetes)")
    if kubeconfig and not Path(kubeconfig).is_file():
        raise Unusable(f"--kubeconfig {kubeconfig}: no such file")
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        ctx_name = chosen["name"]
        default_ns = chosen.get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        if kubeconfig or context:
            raise
        config.load_incluster_config()
        ctx_name = "in-cluster"
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        default_ns = ns_file.read_text().strip() if ns_file.is_file() else "default"
    api = client.CustomObjectsApi()
    if all_namespaces:
        body = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    else:
        body = api.list_namespaced_custom_object(GROUP, VERSION, namespace or default_ns, PLURAL)
    return body, ctx_name


def figure(rows: list[Row]) -> Any:
    """Throughput against p99 latency, one panel per model, one line per
    source x protocol over its sweep (labels are concurrencies or rates), the
    SLO's p99 limit dashed and the throughput at it starred."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r.model for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 5.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for index, row in enumerate(r for r in rows if r.model == model):
            xs = [p.p99_us / 1000 for p in row.sweep]
            ys = [p.infer_per_sec for p in row.sweep]
            label = f"{row.source} · {row.protocol} · {row.device} · env {row.environment}"
            if row.accuracy.endswith("(below tolerance)"):
                label += " · accuracy below tolerance"
            if len(row.sweep) == 1:
                label += " (best point only)"
            (line,) = ax.plot(xs, ys, marker="o", linewidth=1.6, label=label)
            for p in row.sweep:
                ax.annotate(p.label, (p.p99_us / 1000, p.infer_per_sec),
                            # alternate below/above so close series keep readable labels
                            textcoords="offset points", xytext=(5, -11 if index % 2 == 0 else 6),
                            fontsize=8,
                            color=line.get_color())
            if row.at_slo is not None:   # the throughput at the SLO, on its line
                ax.plot([row.at_slo.p99_us / 1000], [row.at_slo.infer_per_sec], marker="*",
                        markersize=15, color=line.get_color(), markeredgecolor="black",
                        linestyle="none", label=f"{row.source} · {row.protocol}: at the SLO, "
                                                f"{row.at_slo.label}")
        limits = sorted({ms for r in rows if r.model == model
                         for ms in [slo_p99_ms(r.slo)] if ms is not None})
        for ms in limits:
            ax.axvline(ms, color="crimson", linestyle="--", linewidth=1.2,
                       label=f"SLO p99 <= {ms:g} ms")
        ax.set_title(model)
        ax.set_xlabel("p99 latency (ms)")
        ax.set_ylabel("throughput (infer/s)")
        # from zero, with room for the labels right of and below the last point
        panel = [p for r in rows if r.model == model for p in r.sweep]
        ax.set_xlim(0, max([p.p99_us / 1000 for p in panel] + limits) * 1.18 or 1)
        ax.set_ylim(0, max(p.infer_per_sec for p in panel) * 1.12 or 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("perf_analyzer: throughput vs p99 latency (c = concurrency, N/s = request rate)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib.pyplot as plt
    fig = figure(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_cluster_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--cluster and where to read it: the user's own kubeconfig, so their RBAC holds."""
    p.add_argument("--cluster", action="store_true",
                   help=f"also read {what} of one namespace (-n, default: the "
                        "context's) or of every namespace (-A)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mnist-serving compare",
        description="One table (markdown + CSV) and one plot from local runs and/or the "
                    "MnistServing resources of a cluster.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="local run directory (runs/<name>/) or status.json file; "
                        "default: runs/*/status.json unless --cluster")
    add_cluster_flags(p, "the MnistServings")
    p.add_argument("--baseline", metavar="SOURCE",
                   help="add each row's throughput ratio to this source's row of the same "
                        "model and protocol, with its 95 %% interval and a verdict: a local "
                        "run directory as given, or a cluster resource namespace/name")
    p.add_argument("--out", type=Path, default=Path("runs/compare"),
                   help="where compare.csv and compare.png go (default: runs/compare)")
    p.add_argument("--docs", type=Path, metavar="FILE",
                   help="also replace the '## Comparison' section of FILE with the table")
    return p


def _warn(line: str) -> None:
    print(f"mnist-serving compare: warning: {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if (args.kubeconfig or args.context or args.namespace or args.all_namespaces) \
            and not args.cluster:
        parser().error("--kubeconfig, --context, -n and -A need --cluster")
    paths = list(args.paths)
    if not paths and not args.cluster:
        paths = sorted(p.parent for p in Path("runs").glob(f"*/{STATUS_FILE}"))
        if not paths:
            print("mnist-serving compare: error: no PATH given and no runs/*/status.json here",
                  file=sys.stderr)
            return 1

    rows: list[Row] = []
    for path in paths:
        try:
            rows += load_local(path)
        except Unusable as exc:
            _warn(f"{path}: {exc}; skipped")
    if args.cluster:
        try:
            body, context = list_cluster(args.kubeconfig, args.context, args.namespace,
                                         args.all_namespaces)
            found, warnings = rows_from_list(body, context)
            rows += found
            for line in warnings:
                _warn(line)
        except Exception as exc:  # config, connection, RBAC: one line, then the rest
            _warn(f"--cluster: {' '.join(str(exc).split())[:300]}; skipped")

    if not rows:
        print("mnist-serving compare: error: nothing to compare (no source had benchmark results)",
              file=sys.stderr)
        return 1
    rows = ordered(rows)
    table = markdown(rows)
    if args.baseline is not None:
        try:
            baseline = baseline_source(args.baseline, (r.source for r in rows))
        except Unusable as exc:
            print(f"mnist-serving compare: error: {exc}", file=sys.stderr)
            return 2
        rows = with_baseline(rows, baseline)
        table = markdown(rows, baseline=True) + "\n" + baseline_note(baseline)
    status = 0
    table += "\n" + environments(rows)
    print(table, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CSV_FILE).write_text(csv_text(rows, baseline=args.baseline is not None))
    print(f"\nwrote {args.out / CSV_FILE}", file=sys.stderr)
    try:
        plot(rows, args.out / PNG_FILE)
        print(f"wrote {args.out / PNG_FILE}", file=sys.stderr)
    except ImportError:
        print("mnist-serving compare: error: matplotlib is not installed (pip install matplotlib); "
              "table and CSV written, no plot", file=sys.stderr)
        status = 1
    if args.docs:
        command = "mnist-serving compare " + " ".join(argv if argv is not None else sys.argv[1:])
        old = args.docs.read_text() if args.docs.exists() else "# Benchmarks\n"
        args.docs.write_text(replace_section(old, docs_section(table, command.strip())))
        print(f"wrote section {DOCS_HEADING!r} of {args.docs}", file=sys.stderr)
    return status


__all__ = ["Row", "Point", "Unusable", "rows_of", "rows_from_list", "sweeps_of", "stage_results",
           "device_of", "markdown", "csv_text", "replace_section", "plot", "main",
           "baseline_source", "with_baseline", "ratio_cells", "baseline_note", "columns"]
