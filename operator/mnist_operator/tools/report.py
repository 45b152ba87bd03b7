"""``mnist-serving report``: one self-contained HTML page from runs, sweeps and clusters.

    mnist-serving report [PATH ...] [--cluster] [--kubeconfig F] [--context C]
                         [-n NS | -A] [--baseline SOURCE] [--out FILE]

A PATH is a local run directory (``runs/<name>/``), a local sweep directory (its
``status.json`` has ``points``; each point's run is ``<dir>/<point>/``) or a
``status.json`` file; with no PATH and no ``--cluster``, every
``runs/*/status.json``. ``--cluster`` reads the MnistServings and
MnistServingSweeps of one namespace (``-n``, default the context's) or of every
one (``-A``) with your own kubeconfig; a sweep's points are its child
MnistServings. ``--baseline`` names the run the other runs' ratios are against
(default: the fastest run's source), as in ``mnist-serving compare``.

The page (``--out``, default ``report.html``), top to bottom: the answer in one
sentence per sweep and for the runs; per sweep its ranking with the verdicts
and the Pareto front; throughput against p99 as an inline SVG per sweep and for
the runs; the environments; the command that wrote it. It opens offline: inline
CSS and SVG only, no script, and a Content-Security-Policy that forbids any
request. Every string from a status is escaped.

Layout: pure builders return HTML strings; :func:`main` reads and writes.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from mnist_operator.api import sweep as W
from mnist_operator.api.spec import GROUP, VERSION
from mnist_operator.api.vocabulary import DONE_PHASES
from mnist_operator.core.verdicts import ratio_text as text_of_ratio
from mnist_operator.core.provenance import ENVIRONMENT
from mnist_operator.core.sweep import pareto_front
from mnist_operator.tools import compare
from mnist_operator.tools.compare import (STATUS_FILE, Row, Unusable, baseline_source,
                                          cluster_source, list_cluster, load_local, ordered,
                                          ratio_cells, rows_from_list, slo_p99_ms, with_baseline)

DEFAULT_OUT = Path("report.html")
#: No request of any kind: styles inline, images only as data: URLs (there are none).
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#bab0ac")
OBJECTIVE_WORDS = {"throughput": "{} infer/s", "throughputAtSlo": "{} infer/s at the SLO",
                   "inferencesPerJoule": "{} inferences per joule",
                   "costPerMillion": "{} per million inferences"}
OBJECTIVE_KEYS = {"throughput": "inferPerSec", "throughputAtSlo": "inferPerSecAtSlo",
                  "inferencesPerJoule": "inferPerJoule", "costPerMillion": "costPerMillion"}


@dataclass(frozen=True)
class Sweep:
    """One MnistServingSweep: its status and, per point, the rows of its own run."""
    name: str
    source: str
    status: dict
    points: dict[str, list[Row]] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """One line of the chart: (p99 ms, infer/s, tooltip) marks and the best of them."""
    label: str
    marks: tuple[tuple[float, float, str], ...]
    best: tuple[float, float, str]
    front: bool = False


# --------------------------------------------------------------------------- text
def e(value: Any) -> str:
    """Escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def values_text(values: dict) -> str:
    """A point's values: ``scheduling.gpuProduct=H100, serving.instances=2``."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in (values or {}).items())


def _ms(us: Any) -> str:
    value = _number(us)
    return "-" if value is None else f"{value / 1000:.2f}"


def ratio_text(ratio: str, low: str | None, high: str | None) -> str:
    """``1.33× [1.30, 1.36]``, or ``1.33×`` without an interval."""
    return text_of_ratio({"ratio": ratio, "low": low, "high": high}, unit="×")


def objective_of(status: dict) -> str:
    objective = str(status.get("objective") or "throughput")
    return objective if objective in W.OBJECTIVES else "throughput"


def ranking(status: dict) -> list[dict]:
    """The sweep's points, those with a value for the objective first (best first),
    then the others in the axes' order."""
    objective = objective_of(status)
    key, sign = OBJECTIVE_KEYS[objective], 1 if W.OBJECTIVES[objective] == "lower" else -1
    points = [p for p in status.get("points") or [] if isinstance(p, dict)]

    def value(p: dict) -> float | None:
        return _number(p.get(key)) if p.get("phase") in DONE_PHASES else None
    ranked = sorted((p for p in points if value(p) is not None),
                    key=lambda p: (sign * value(p), str(p.get("name"))))
    return ranked + [p for p in points if value(p) is None]


def sweep_answer(status: dict) -> str:
    """The sweep's answer in one sentence: its best point for the objective, the
    value, and the verdict against the runner-up."""
    best = status.get("best") or {}
    progress = status.get("progress") or {}
    if not best.get("point"):
        return (f"No best point yet: {progress.get('ready', 0)}/{progress.get('total', 0)} "
                f"points measured, {progress.get('failed', 0)} failed, "
                f"{progress.get('running', 0)} running, {progress.get('waiting', 0)} waiting.")
    objective = objective_of(status)
    row = next((p for p in status.get("points") or [] if p.get("name") == best["point"]), {})
    value = OBJECTIVE_WORDS[objective].format(best.get("value", "-"))
    if objective != "throughput" and "inferPerSec" in row:
        value += f" ({row['inferPerSec']} infer/s)"
    head = f"Best: {best['point']} ({values_text(best.get('values') or {})}): {value}"
    ranked = [p for p in ranking(status) if p.get("name") != best["point"]]
    verdicts = {v.get("point"): v for v in status.get("verdicts") or []}
    runner_up = next((p for p in ranked if p.get("name") in verdicts), None)
    if runner_up is None:
        return head + "; no other point to compare it with."
    v = verdicts[runner_up["name"]]
    subject = {"throughput": "", "inferencesPerJoule": "inferences per joule "}.get(
        objective, "throughput ")
    return (f"{head}, {subject}{ratio_text(v.get('ratio', '-'), v.get('low'), v.get('high'))} "
            f"the next best, {runner_up['name']} ({v.get('verdict', '-')}).")


def row_label(row: Row) -> str:
    return f"{row.source} · {row.model} · {row.protocol}"


def fastest(rows: Iterable[Row]) -> list[Row]:
    """Rows by best throughput, fastest first."""
    return sorted(rows, key=lambda r: (-(_number(r.best_infer_per_sec) or 0.0), row_label(r)))


def runs_answer(rows: list[Row]) -> str:
    """The runs' answer in one sentence: the fastest row and its ratio to the second."""
    ranked = fastest(rows)
    if not ranked:
        return "No run has benchmark results."
    first = ranked[0]
    head = (f"Fastest: {row_label(first)} on {first.device}: {first.best_infer_per_sec} infer/s "
            f"at p99 {first.p99_ms_at_best} ms")
    if len(ranked) == 1:
        return head + "; no other run to compare it with."
    second = ranked[1]
    cell, verdict = ratio_cells(first, second)
    if cell == "-":
        return f"{head}; the second, {row_label(second)}, has no figure to compare with."
    ratio, _, span = cell.partition(" ")
    return (f"{head}, {ratio}×{' ' + span if span else ''} the second, "
            f"{row_label(second)} ({verdict}).")


# --------------------------------------------------------------------------- tables
def table(head: list[str], body: list[list[str]], cls: str = "", row_classes: list[str] = ()
          ) -> str:
    """A table of already-escaped cells; header titles are escaped here."""
    ths = "".join(f"<th>{e(h)}</th>" for h in head)
    classes = list(row_classes) + [""] * (len(body) - len(row_classes))
    trs = "".join(f'<tr class="{c}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
                  for c, cells in zip(classes, body))
    return (f'<div class="scroll"><table class="{e(cls)}"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def verdict_cell(verdict: str) -> str:
    slug = verdict.replace(" ", "-") if verdict in ("better", "worse", "no difference",
                                                    "baseline") else "other"
    return f'<span class="verdict {slug}">{e(verdict)}</span>'


def _optional(points: list[dict], key: str) -> bool:
    return any(key in p for p in points)


def sweep_table(status: dict) -> str:
    """The ranking: one row per point, best first, with its verdict against the best."""
    points = ranking(status)
    best = (status.get("best") or {}).get("point")
    front = set(status.get("pareto") or [])
    verdicts = {v.get("point"): v for v in status.get("verdicts") or []}
    axes = list(dict.fromkeys(k for p in points for k in (p.get("values") or {})))
    extra = [(k, t) for k, t in (("inferPerSecAtSlo", "infer/s at SLO"),
                                 ("inferPerJoule", "infer/J"),
                                 ("costPerMillion", "cost per million"))
             if _optional(points, k)]
    interval = _optional(points, "low")
    head = (["#", "point", "marks", *axes, "phase", "model · protocol", "infer/s"]
            + (["95 % interval"] if interval else []) + ["p99 ms"] + [t for _, t in extra]
            + ["best / this", "verdict", "device", "environment"])
    body, classes = [], []
    ranked = ranking_count(status)
    for i, p in enumerate(points):
        v = verdicts.get(p.get("name"), {})
        marks = [m for m, on in (("★ best", p.get("name") == best),
                                 ("◆ Pareto", p.get("name") in front)) if on]
        phase = e(p.get("phase", "-")) + (f'<div class="why">{e(p["reason"])}</div>'
                                         if p.get("reason") else "")
        cells = [str(i + 1) if i < ranked else "-", f"<code>{e(p.get('name', '-'))}</code>",
                 e(" ".join(marks)), *(e(_value_cell((p.get("values") or {}).get(a, "-")))
                                      for a in axes),
                 phase, e(f"{p['model']} · {p['protocol']}" if "model" in p else "-"),
                 e(p.get("inferPerSec", "-"))]
        cells += [e(f"[{p['low']}, {p['high']}]" if "low" in p else "-")] if interval else []
        cells += [e(_ms(p.get("p99Us")))] + [e(p.get(k, "-")) for k, _ in extra]
        cells += [e(ratio_text(v["ratio"], v.get("low"), v.get("high")) if v else
                    ("best" if p.get("name") == best else "-")),
                  verdict_cell(v.get("verdict", "-")) if v else e("-"),
                  e(p.get("device", "-")), e(p.get("environment", "-"))]
        body.append(cells)
        classes.append("best" if p.get("name") == best else "")
    return table(head, body, "ranking", classes)


def _value_cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def ranking_count(status: dict) -> int:
    """How many points have a value for the objective (the ranked ones)."""
    key = OBJECTIVE_KEYS[objective_of(status)]
    return sum(1 for p in status.get("points") or []
               if p.get("phase") in DONE_PHASES and _number(p.get(key)) is not None)


RUN_COLUMNS = (
    ("source", "source"), ("model", "model"), ("protocol", "protocol"),
    ("device", "GPU / device"), ("best_infer_per_sec", "best infer/s"),
    ("interval", "95 % interval"), ("p99_ms_at_best", "p99 ms at best"),
    ("p99_interval_at_best", "p99 ms, every request [95 % interval] (requests)"),
    ("load", "load at best"),
    ("vs_baseline", "vs baseline"), ("verdict", "verdict"),
    ("infer_per_sec_at_slo", "infer/s at SLO"), ("gpu_util_at_best", "GPU util at best"),
    ("infer_per_joule_at_best", "infer/J at best"), ("accuracy", "held-out accuracy"),
    ("pareto", "marks"), ("environment", "environment"), ("measured", "measured (UTC)"),
)
#: Shown even when every row has "-" there.
ALWAYS = {"source", "model", "protocol", "device", "best_infer_per_sec", "p99_ms_at_best",
          "load", "environment"}


def run_cell(row: Row, attr: str, front: set[int], index: int) -> str:
    """One cell's text of the runs table."""
    if attr == "interval":
        return f"[{row.low_at_best}, {row.high_at_best}]" if row.low_at_best != "-" else "-"
    if attr == "load":
        return (f"c={row.concurrency_at_best}" if row.request_rate_at_best == "-"
                else f"{row.request_rate_at_best} req/s")
    if attr == "pareto":
        return "◆ Pareto" if index in front else ""
    return str(getattr(row, attr))


def runs_front(rows: list[Row]) -> set[int]:
    """The indexes of the rows no other beats on both throughput and p99 at best."""
    points = [{"name": str(i), "phase": "Ready", "inferPerSec": str(_best(r)[1]),
               "p99Us": _best(r)[0]} for i, r in enumerate(rows)]
    return {int(name) for name in pareto_front(points)}


def _best(row: Row) -> tuple[int, float]:
    """(p99 µs, infer/s) of a row's best point."""
    best = max(row.sweep, key=lambda p: p.infer_per_sec) if row.sweep else None
    if best is None:
        return int((_number(row.p99_ms_at_best) or 0) * 1000), _number(row.best_infer_per_sec) or 0
    return best.p99_us, best.infer_per_sec


def runs_table(rows: list[Row]) -> str:
    """The runs, fastest first; optional columns only where some row has a figure."""
    front = runs_front(rows)
    cells = [[run_cell(r, attr, front, i) for attr, _ in RUN_COLUMNS] for i, r in enumerate(rows)]
    keep = [j for j, (attr, _) in enumerate(RUN_COLUMNS)
            if attr in ALWAYS or any(c[j] not in ("-", "") for c in cells)]
    head = ["#"] + [RUN_COLUMNS[j][1] for j in keep]
    body = [[str(i + 1)] + [verdict_cell(c[j]) if RUN_COLUMNS[j][0] == "verdict" else e(c[j])
                            for j in keep] for i, c in enumerate(cells)]
    return table(head, body, "runs", ["best"] + [""] * (len(rows) - 1))


def environments_table(rows: list[Row]) -> str:
    """The legend of the environment columns, as ``compare`` prints it: one row per
    fingerprint."""
    seen = {r.environment: r.environment_details for r in rows if r.environment != "-"}
    head = ["environment", *(title for _, title in ENVIRONMENT)]
    body = [[f"<code>{e(env)}</code>", *(e(v) for _, v in details)]
            for env, details in sorted(seen.items())]
    if not body:
        return '<p class="note">No environment fingerprint in these statuses.</p>'
    return table(head, body, "environments")


# --------------------------------------------------------------------------- the chart
def ticks(top: float, count: int = 5) -> list[float]:
    """Round ticks from 0 to at least ``top``."""
    if not top or top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def tick_label(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:g}"


@dataclass(frozen=True)
class Frame:
    """The plot area of a chart: data (p99 ms, infer/s) to SVG coordinates."""
    xmax: float
    ymax: float
    width: int = 880
    height: int = 400
    left: int = 78
    right: int = 24
    top: int = 16
    bottom: int = 52

    def x(self, ms: float) -> float:
        return round(self.left + ms / self.xmax * (self.width - self.left - self.right), 1)

    def y(self, ips: float) -> float:
        return round(self.height - self.bottom
                     - ips / self.ymax * (self.height - self.top - self.bottom), 1)


def axes_svg(frame: Frame, xticks: list[float], yticks: list[float]) -> str:
    """Grid, ticks and axis titles."""
    out = []
    for t in xticks:
        x = frame.x(t)
        out.append(f'<line class="grid" x1="{x}" y1="{frame.top}" x2="{x}" '
                   f'y2="{frame.height - frame.bottom}"/>'
                   f'<text class="tick" x="{x}" y="{frame.height - frame.bottom + 18}" '
                   f'text-anchor="middle">{tick_label(t)}</text>')
    for t in yticks:
        y = frame.y(t)
        out.append(f'<line class="grid" x1="{frame.left}" y1="{y}" '
                   f'x2="{frame.width - frame.right}" y2="{y}"/>'
                   f'<text class="tick" x="{frame.left - 8}" y="{y + 4}" '
                   f'text-anchor="end">{tick_label(t)}</text>')
    middle = (frame.top + frame.height - frame.bottom) / 2
    out.append(f'<text class="axis" x="{(frame.left + frame.width - frame.right) / 2}" '
               f'y="{frame.height - 10}" text-anchor="middle">p99 latency (ms)</text>'
               f'<text class="axis" transform="translate(18 {middle}) rotate(-90)" '
               f'text-anchor="middle">throughput (infer/s)</text>')
    return "".join(out)


def series_svg(index: int, series: Series, frame: Frame) -> str:
    """One run or point: its line over the sweep, a dot per load, the best one ringed
    and numbered as in the legend."""
    color = PALETTE[index % len(PALETTE)]
    coords = " ".join(f"{frame.x(ms)},{frame.y(ips)}" for ms, ips, _ in series.marks)
    dots = "".join(f'<circle cx="{frame.x(ms)}" cy="{frame.y(ips)}" r="3.5" fill="{color}">'
                   f"<title>{e(tip)}</title></circle>" for ms, ips, tip in series.marks)
    bx, by = frame.x(series.best[0]), frame.y(series.best[1])
    return (f'<g class="series" data-index="{index + 1}"><title>{e(series.label)}</title>'
            f'<polyline class="line" points="{coords}" stroke="{color}"/>{dots}'
            f'<circle class="best" cx="{bx}" cy="{by}" r="7" stroke="{color}"/>'
            f'<text class="num" x="{bx + 9}" y="{by - 8}" fill="{color}">{index + 1}</text></g>')


def front_svg(series: list[Series], frame: Frame) -> str:
    """The Pareto front through the best points on it, by p99."""
    on = sorted((s.best for s in series if s.front), key=lambda m: (m[0], -m[1]))
    if not on:
        return ""
    coords = " ".join(f"{frame.x(ms)},{frame.y(ips)}" for ms, ips, _ in on)
    diamonds = "".join(f'<path class="pareto" d="M{frame.x(ms)} {frame.y(ips) - 5}l5 5-5 5-5-5z"/>'
                       for ms, ips, _ in on)
    return (f'<g class="front-of"><title>Pareto front: no other beats these on both throughput '
            f'and p99</title><polyline class="front" points="{coords}"/>{diamonds}</g>')


def slo_svg(limits: list[float], frame: Frame) -> str:
    return "".join(f'<line class="slo" x1="{frame.x(ms)}" y1="{frame.top}" x2="{frame.x(ms)}" '
                   f'y2="{frame.height - frame.bottom}"/><text class="slo-label" '
                   f'x="{frame.x(ms) + 4}" y="{frame.top + 12}">SLO p99 ≤ {tick_label(ms)} ms'
                   f"</text>" for ms in limits)


def chart(series: list[Series], title: str, limits: Iterable[float] = ()) -> str:
    """Throughput against p99 as an inline SVG, with its legend."""
    if not series:
        return '<p class="note">Nothing measured to draw yet.</p>'
    limits = sorted(set(limits))
    xticks = ticks(max([ms for s in series for ms, _, _ in s.marks] + limits) * 1.08)
    yticks = ticks(max(ips for s in series for _, ips, _ in s.marks) * 1.08)
    frame = Frame(xmax=xticks[-1], ymax=yticks[-1])
    svg = (f'<svg class="chart" viewBox="0 0 {frame.width} {frame.height}" role="img" '
           f'aria-label="{e(title)}">{axes_svg(frame, xticks, yticks)}{slo_svg(limits, frame)}'
           + "".join(series_svg(i, s, frame) for i, s in enumerate(series))
           + f"{front_svg(series, frame)}</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        f"<b>{i + 1}</b> {e(s.label)}{' ◆' if s.front else ''}"
        f"{' (best point only)' if len(s.marks) == 1 else ''}</li>"
        for i, s in enumerate(series))
    return (f'<figure><figcaption>{e(title)}: dots are loads (hover for figures), the ringed '
            f"dot each line's best, the dashed black line the Pareto front (◆)</figcaption>"
            f'{svg}<ul class="legend">{legend}</ul></figure>')


def _marks(row: Row) -> tuple[tuple[float, float, str], ...]:
    return tuple((p.p99_us / 1000, p.infer_per_sec,
                  f"{row_label(row)} · {p.label} · {p.infer_per_sec:g} infer/s · "
                  f"p99 {p.p99_us / 1000:.2f} ms") for p in row.sweep)


def run_series(rows: list[Row]) -> list[Series]:
    """A line per run row over its concurrency (or rate) sweep."""
    front = runs_front(rows)
    out = []
    for i, r in enumerate(rows):
        marks = _marks(r) or ((_best(r)[0] / 1000, _best(r)[1], row_label(r)),)
        out.append(Series(f"{row_label(r)} on {r.device}", marks,
                          max(marks, key=lambda m: m[1]), i in front))
    return out


def sweep_series(sweep: Sweep) -> list[Series]:
    """A line per measured point: its run's sweep at the point's best (model,
    protocol), or its best point alone when the run's rows are not at hand."""
    front = set(sweep.status.get("pareto") or [])
    out = []
    for p in ranking(sweep.status):
        ips, p99 = _number(p.get("inferPerSec")), _number(p.get("p99Us"))
        if ips is None or p99 is None:
            continue
        label = f"{p.get('name')} ({values_text(p.get('values') or {})})"
        row = next((r for r in sweep.points.get(p.get("name"), [])
                    if (r.model, r.protocol) == (p.get("model"), p.get("protocol"))), None)
        best = (p99 / 1000, ips, f"{label} · best · {p.get('inferPerSec')} infer/s · "
                                 f"p99 {p99 / 1000:.2f} ms")
        marks = _marks(row) if row is not None else ()
        out.append(Series(label, marks or (best,), best if not marks else
                          max(marks, key=lambda m: m[1]), p.get("name") in front))
    return out


def slo_limits(rows: Iterable[Row]) -> list[float]:
    return [ms for r in rows for ms in [slo_p99_ms(r.slo)] if ms is not None]


# --------------------------------------------------------------------------- the page
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:24px 28px 8px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:19px;margin:34px 0 6px}
h2 small{font-weight:400;color:#667;font-size:13px;margin-left:8px}
.answer{font-size:19px;font-weight:600;background:#fff;border-left:6px solid #4e79a7;
padding:12px 16px;margin:8px 0;border-radius:4px;box-shadow:0 1px 2px #0001}
.meta,.note,figcaption{color:#556;font-size:13px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:8px 0;
box-shadow:0 1px 2px #0001}
th,td{padding:4px 7px;border-bottom:1px solid #e3e6ea;text-align:left;white-space:nowrap;
vertical-align:top}
th{background:#eef1f5;font-weight:600;white-space:normal;vertical-align:bottom}
tr.best td{background:#eef6ee;font-weight:600}
.why{white-space:normal;max-width:320px;color:#a33;font-weight:400}
.verdict{padding:1px 6px;border-radius:8px;background:#eee}
.verdict.better{background:#d8f0d8;color:#185c18}.verdict.worse{background:#f7dada;color:#8a1c1c}
.verdict.baseline{background:#dde7f3}
figure{margin:10px 0;background:#fff;padding:10px 12px;border-radius:4px;box-shadow:0 1px 2px #0001}
svg.chart{width:100%;height:auto;max-width:1000px;display:block}
.pareto{fill:#111}
.grid{stroke:#e6e8ec}.tick{font-size:11px;fill:#667}.axis{font-size:13px;fill:#334}
.line{fill:none;stroke-width:2}.best{fill:none;stroke-width:2.5}.num{font-size:12px;font-weight:700}
.front{fill:none;stroke:#111;stroke-width:1.5;stroke-dasharray:6 4}
.slo{stroke:#c0392b;stroke-width:1.5;stroke-dasharray:4 4}.slo-label{font-size:11px;fill:#c0392b}
.legend{list-style:none;padding:0;margin:6px 0 0;columns:2;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px}
footer{max-width:1200px;margin:24px auto;padding:0 28px 24px;color:#667;font-size:12px}
code{font-size:12px}
"""


def sweep_section(index: int, sweep: Sweep) -> str:
    """One sweep: its progress, ranking table and chart (its answer heads the page)."""
    s = sweep.status
    progress = s.get("progress") or {}
    objective = objective_of(s)
    rows = [r for rs in sweep.points.values() for r in rs]
    meta = (f"objective {objective} ({W.OBJECTIVES[objective]} is better) · phase "
            f"{s.get('phase', '-')} · {progress.get('ready', 0)}/{progress.get('total', 0)} "
            f"points measured, {progress.get('failed', 0)} failed, {progress.get('running', 0)} "
            f"running, {progress.get('waiting', 0)} waiting")
    return (f'<section id="sweep-{index + 1}"><h2>Sweep {e(sweep.name)}'
            f"<small>{e(sweep.source)}</small></h2>"
            f'<p class="meta">{e(meta)}</p>'
            f"{sweep_table(s)}"
            '<p class="note">best / this: the best point\'s mean throughput over this '
            "point's, with its 95 % interval (Fieller, Welch df) and the verdict; "
            "◆ Pareto: no other point beats it on both throughput and p99.</p>"
            + chart(sweep_series(sweep), f"Sweep {sweep.name}: throughput against p99",
                    slo_limits(rows)) +
            "</section>")


def runs_section(rows: list[Row], baseline: str | None) -> str:
    """The plain runs: their table (fastest first) and chart (their answer heads the page)."""
    rows = fastest(rows)
    note = (f"vs baseline: each row's mean throughput over {e(baseline)}'s row of the same "
            "model and protocol, with its 95 % interval (Fieller, Welch df); "
            if baseline else "")
    return (f'<section id="runs"><h2>Runs</h2>{runs_table(rows)}'
            f'<p class="note">{note}◆ Pareto: no other row beats it on both throughput and p99 '
            "at its best point.</p>"
            f"{chart(run_series(rows), 'Runs: throughput against p99', slo_limits(rows))}"
            "</section>")


def page(sweeps: list[Sweep], rows: list[Row], command: str, written: str,
         baseline: str | None = None) -> str:
    """The whole report: answers, sweeps, runs, environments, footer."""
    answers = [sweep_answer(s.status) for s in sweeps] + ([runs_answer(rows)] if rows else [])
    every_row = [r for s in sweeps for rs in s.points.values() for r in rs] + list(rows)
    body = "".join(sweep_section(i, s) for i, s in enumerate(sweeps))
    body += runs_section(rows, baseline) if rows else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mnist-serving report</title><style>{STYLE}</style></head><body><main>"
        '<h1>mnist-serving report</h1><div id="answer">'
        + "".join(f'<p class="answer">{e(a)}</p>' for a in answers) + "</div>"
        + body
        + '<section id="environments"><h2>Environments</h2><p class="note">Where the numbers '
        "were measured: the fingerprint in the environment columns.</p>"
        + environments_table(every_row) + "</section></main>"
        f"<footer>Written by <code>{e(command)}</code> at {e(written)}. One file: no script, "
        "no font, no request.</footer></body></html>\n")


# ------------------------------------------------------------------------ I/O shells
def _read_status(path: Path) -> Any:
    status_path = path / STATUS_FILE if path.is_dir() else path
    try:
        return json.loads(status_path.read_text())
    except (OSError, ValueError):
        return None


def is_sweep(status: Any) -> bool:
    return isinstance(status, dict) and isinstance(status.get("points"), list)


def local_sweep(path: Path, status: dict, warn: list[str]) -> Sweep:
    """A local sweep directory: its status and each point's run in ``<dir>/<point>/``."""
    root = path if path.is_dir() else path.parent
    points: dict[str, list[Row]] = {}
    for p in status["points"]:
        name = str(p.get("name", ""))
        if not name or not (root / name / STATUS_FILE).is_file():
            continue
        try:
            points[name] = load_local(root / name)
        except Unusable as exc:
            warn.append(f"{root / name}: {exc}; its best point only")
    return Sweep(str(status.get("name") or root.name), str(root), status, points)


def load_paths(paths: list[Path], warn: list[str]) -> tuple[list[Sweep], list[Row]]:
    sweeps, rows = [], []
    for path in paths:
        status = _read_status(path)
        try:
            if is_sweep(status):
                sweeps.append(local_sweep(path, status, warn))
            else:
                rows += load_local(path)
        except Unusable as exc:
            warn.append(f"{path}: {exc}; skipped")
    return sweeps, rows


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig context (or the pod's, in a cluster)."""
    from kubernetes import config
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = (next((c for c in contexts if c["name"] == context), current) if context
                  else current)
        return chosen.get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return ns_file.read_text().strip() if ns_file.is_file() else "default"


def list_sweeps(args: argparse.Namespace) -> dict:
    """The MnistServingSweep list body; call after :func:`list_cluster` loaded the config."""
    from kubernetes import client
    api = client.CustomObjectsApi()
    if args.all_namespaces:
        return api.list_cluster_custom_object(GROUP, VERSION, W.PLURAL)
    namespace = args.namespace or default_namespace(args.kubeconfig, args.context)
    return api.list_namespaced_custom_object(GROUP, VERSION, namespace, W.PLURAL)


def cluster_sweeps(servings: dict, sweeps: dict, context: str, warn: list[str]
                   ) -> tuple[list[Sweep], list[Row]]:
    """Sweeps with their points' rows from their child MnistServings, and the rows of
    the MnistServings that are no listed sweep's point."""
    items = servings.get("items") or []
    by_key = {((i.get("metadata") or {}).get("namespace"), (i.get("metadata") or {}).get("name")): i
              for i in items}
    out, taken = [], set()
    for item in sweeps.get("items") or []:
        md, status = item.get("metadata") or {}, item.get("status") or {}
        points: dict[str, list[Row]] = {}
        for p in status.get("points") or []:
            key = (md.get("namespace"), p.get("name"))
            if key in by_key:
                taken.add(key)
                found, lines = rows_from_list({"items": [by_key[key]]}, context)
                points[str(p.get("name"))] = found
                warn.extend(f"{line.removesuffix('; skipped')}; its best point only"
                            for line in lines)
        out.append(Sweep(str(md.get("name", "-")), cluster_source(context, item), status, points))
    rest = [i for k, i in by_key.items() if k not in taken]
    rows, lines = rows_from_list({"items": rest}, context)
    warn.extend(lines)
    return out, rows


def load_cluster(args: argparse.Namespace, warn: list[str]) -> tuple[list[Sweep], list[Row]]:
    try:
        servings, context = list_cluster(args.kubeconfig, args.context, args.namespace,
                                         args.all_namespaces)
    except Exception as exc:  # config, connection, RBAC: one line, then the rest
        warn.append(f"--cluster: {' '.join(str(exc).split())[:300]}; skipped")
        return [], []
    try:
        sweeps = list_sweeps(args)
    except Exception as exc:
        warn.append(f"--cluster sweeps: {' '.join(str(exc).split())[:300]}; skipped")
        sweeps = {}
    return cluster_sweeps(servings, sweeps, context, warn)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mnist-serving report",
        description="One self-contained HTML page (no script, no request) from local runs, "
                    "local sweeps and/or the MnistServings and MnistServingSweeps of a cluster.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="local run or sweep directory, or status.json; "
                        "default: runs/*/status.json unless --cluster")
    compare.add_cluster_flags(p, "the MnistServings and MnistServingSweeps")
    p.add_argument("--baseline", metavar="SOURCE",
                   help="the runs' ratios are against this source's rows (default: the "
                        "fastest run's source): a local run directory as given, or namespace/name")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"the HTML file to write (default: {DEFAULT_OUT})")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if (args.kubeconfig or args.context or args.namespace or args.all_namespaces) \
            and not args.cluster:
        parser().error("--kubeconfig, --context, -n and -A need --cluster")
    paths = list(args.paths) or ([] if args.cluster else
                                 sorted(p.parent for p in Path("runs").glob(f"*/{STATUS_FILE}")))
    warnings: list[str] = []
    sweeps, rows = load_paths(paths, warnings)
    if args.cluster:
        more_sweeps, more_rows = load_cluster(args, warnings)
        sweeps, rows = sweeps + more_sweeps, rows + more_rows
    for line in warnings:
        print(f"mnist-serving report: warning: {line}", file=sys.stderr)
    if not sweeps and not rows:
        print("mnist-serving report: error: nothing to report (no run or sweep with results)",
              file=sys.stderr)
        return 1
    baseline = None
    if len({r.source for r in rows}) > 1 or args.baseline:
        try:
            baseline = (baseline_source(args.baseline, (r.source for r in rows))
                        if args.baseline else fastest(rows)[0].source)
        except Unusable as exc:
            print(f"mnist-serving report: error: {exc}", file=sys.stderr)
            return 2
        rows = with_baseline(rows, baseline)
    command = " ".join(["mnist-serving report", *map(shlex.quote, argv)])
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(sweeps, ordered(rows), command, written, baseline))
    for s in sweeps:
        print(sweep_answer(s.status))
    if rows:
        print(runs_answer(rows))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


__all__ = ["Sweep", "Series", "page", "sweep_answer", "runs_answer", "sweep_table",
           "runs_table", "environments_table", "chart", "run_series", "sweep_series",
           "ranking", "ticks", "main"]
