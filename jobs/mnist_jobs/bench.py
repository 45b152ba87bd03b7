"""Stage bench: real perf_analyzer per model over a concurrency range.

    python -m mnist_jobs.bench --url localhost:8001 --protocol grpc --models mnist_onnx,mnist_bls \
        --batch-size 1 --concurrency 1:257:64 --measurement-mode time_windows \
        --measurement-interval-ms 2000 --measurement-request-count 50 --stability-percentage 20 \
        --repeats 1 --load-mode concurrency --out runs/demo/bench

One perf_analyzer process per (model, concurrency) point, so progress is one
line per point as it finishes and a failing point does not lose the others.
Everything goes to --out: ``<model>-<protocol>.csv`` (perf_analyzer's CSV
rows of every point, sorted by concurrency), ``<model>-<protocol>.log``
(its stdout) and ``bench.json`` (all parsed rows with every field). The
result stays compact: per model its rows (concurrency, infer/s, p50, p99,
queue, compute, Little's-law verdict), the best point and the dynamic-batching
gain (best / lowest concurrency). Rows failing Little's law (tolerance
--little-tolerance, default 20 %) are flagged ``little: "FAIL(ratio)"``. A
point perf_analyzer cannot call stable is measured again within twice the
bound, then within any spread (its windows as they come), and flagged
``unstable`` (listed under ``widened``): its intervals say how far to trust
it. A point where perf_analyzer fails otherwise fails the stage (after
writing what it has).

--repeats N measures every point N times: a row is the median of the runs
and, for N >= 2, ``low``/``high``, the 95 % t interval of the mean throughput
(stats.py says why that interval).

--load-mode requestRate --request-rate START:END:STEP [--request-distribution
poisson] sweeps an open loop instead (perf_analyzer --request-rate-range):
rows carry ``rate``, ``achieved``, ``inFlight`` and ``keptUp`` in place of
``c`` and ``little`` (perf.py says what is checked and why).

--clients N --client-index I (default $JOB_COMPLETION_INDEX) --clients-run RUN:
one of N clients measuring the server together (lib/loadgen.py): each point's
concurrency is split over them, they start it together behind a barrier,
and client 0's result holds the aggregate of every request (aggregate.py)
plus whether more clients still raised throughput (``scaling``).

--slo-p99-ms (and --slo-p95-ms) then bisects between the last point that
meets the SLO and the first that does not (slo.py), and each model gets
``slo``: the best point meeting it, the bracket and the loads added.

--metrics-url http://HOST:PORT/metrics samples Triton's metrics endpoint
while each point is measured (telemetry.py says what and how): every row
gains ``gpuUtil``, ``powerW`` and ``inferPerJoule``, or ``gpu: "none"`` when
Triton measured no GPU, or ``telemetry: "unreachable: ..."`` when the endpoint
could not be read (a warning, the point still counts); bench.json keeps each
point's whole summary (per GPU, the model's inference count, queue and compute
time per request as Triton saw them).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mnist_jobs.lib import aggregate, latency
from mnist_jobs.lib import loadgen as distributed
from mnist_jobs.lib import perf, provenance
from mnist_jobs.lib import slo as slo_search
from mnist_jobs.lib import stats, telemetry
from mnist_jobs.lib.stage_cli import InputError, StageError, fmt, run_stage, stage_parser
from mnist_jobs.lib.triton import client_for, served_config, served_models

PROTOCOLS = ("grpc", "http")


def bls_downstream(protocol: str, url: str, model: str, served: dict[str, str]) -> list[str]:
    """The models a BLS model calls (for --bls-composing-models)."""
    try:
        cfg = served_config(client_for(protocol, url), protocol, model)
        value = cfg.get("parameters", {}).get("downstream_model", {})
        name = value.get("string_value") or value.get("stringValue")
        if name:
            return [name]
    except Exception:
        pass
    return [m for m in ("mnist_trt", "mnist_pt", "mnist_onnx") if served.get(m) == "READY"][:1]


def compact_row(runs: list[perf.Row]) -> dict:
    """One point of the sweep, measured ``len(runs)`` times: the median of each
    figure and, with two runs or more, the 95 % interval of the throughput
    (stats.py says which interval and why). A concurrency point carries its
    Little's-law verdict; a request-rate point its achieved rate, the mean
    number in flight and whether the client kept up (perf.py says why)."""
    s = stats.spread([r.throughput for r in runs])
    med = lambda attr: statistics.median(getattr(r, attr) for r in runs)  # noqa: E731
    first = runs[0]
    row: dict = {"rate": int(first.request_rate)} if first.request_rate else {"c": first.concurrency}
    row.update(inferPerSec=fmt(s.median, 1), p50Us=int(med("p50_us")), p95Us=int(med("p95_us")),
               p99Us=int(med("p99_us")),
               queueUs=int(med("server_queue_us")), computeUs=int(med("server_compute_us")))
    if first.request_rate:
        achieved, delayed = med("achieved_rate"), max(r.delayed_percent for r in runs)
        late = f", {fmt(delayed, 1)}% late" if delayed else ""
        row.update(achieved=fmt(achieved, 1), inFlight=fmt(med("in_flight"), 2),
                   keptUp="ok" if all(r.kept_up for r in runs)
                   else f"BEHIND({fmt(achieved / first.request_rate, 2)}{late})")
    else:
        little = [r.little_ratio for r in runs if not r.little_ok]
        row["little"] = f"FAIL({fmt(little[0], 2)})" if little else "ok"
    if s.low is not None:
        row.update(repeats=s.n, low=fmt(s.low, 1), high=fmt(s.high, 1))
    return row


def per_joule_interval(runs: list[dict]) -> dict:
    """With two runs or more, each with its inferences per joule (Triton's energy
    counter over that run), the 95 % interval of their mean, as the throughput's."""
    values = [r["inferPerJoule"] for r in runs if "inferPerJoule" in r]
    if len(values) < 2 or len(values) < len(runs):
        return {}
    s = stats.spread(values)
    return {"inferPerJouleLow": fmt(s.low, 1), "inferPerJouleHigh": fmt(s.high, 1)}


def verdict_of(row: dict) -> str:
    """A compact row's check: Little's law (concurrency) or keeping up (request rate)."""
    return row.get("little", row.get("keptUp", "ok"))


def model_summary(points_of: list[dict], rate_mode: bool) -> dict:
    """One model's rows, its best point and what the sweep says about it: the
    dynamic-batching gain and Little's-law failures (closed loop), or the
    points whose client fell behind (open loop)."""
    best = max(points_of, key=lambda r: float(r["inferPerSec"]))
    lowest = float(points_of[0]["inferPerSec"])
    summary: dict = {
        "rows": points_of,
        "best": {k: best[k] for k in ("c", "rate", "achieved", "inferPerSec", "p99Us",
                                      "repeats", "low", "high", "latency", "unstable",
                                      "inferPerJouleLow", "inferPerJouleHigh", *telemetry.ROW_KEYS)
                 if k in best},
    }
    if rate_mode:   # a higher rate asked for is no batching gain
        summary["behind"] = sum(r["keptUp"] != "ok" for r in points_of)
    else:
        summary.update(batchingGain=fmt(float(best["inferPerSec"]) / lowest, 2) if lowest > 0
                       else "0", littleFailures=sum(r["little"] != "ok" for r in points_of))
    return summary


def shrink(result: dict, limit: int = 3200) -> dict:
    """A long sweep must still fit the 4 KiB termination message: shrink the
    per-row detail (everything stays in bench.json), never the verdicts."""
    summary, out = result["models"], result["out"]
    rate = result.get("loadMode") == "requestRate"
    load, check = ("rate", "keptUp") if rate else ("c", "little")
    if len(json.dumps(result)) > limit:
        for entry in summary.values():
            entry["rows"] = [[r[load], r["inferPerSec"], r["p99Us"], verdict_of(r)]
                             for r in entry["rows"]]
        result["rowFormat"] = [load, "inferPerSec", "p99Us", check]
    if len(json.dumps(result)) > limit:
        for entry in summary.values():
            entry["rows"] = [r for r in entry["rows"] if r[3] != "ok"][:5]
        failing = "whose client fell behind" if rate else "failing Little's law"
        result["rowsNote"] = f"only rows {failing} are listed; all rows in {out}/bench.json"
    return result


@dataclass(frozen=True)
class BenchConfig:
    """One bench run, parsed once and checked in one place: a refusal names its flag.
    The first ten fields are the sweep every run has; the rest have defaults."""
    url: str
    protocol: str
    models: Sequence[str]
    batch: int
    concurrency: str                  # START:END:STEP (concurrency mode)
    mode: str                         # perf_analyzer's measurement mode
    interval_ms: int
    count: int                        # requests per window in count_windows mode
    stability: int                    # perf_analyzer -s, in percent
    out: Path
    tolerance: float = perf.LITTLE_TOLERANCE
    max_trials: int | None = None
    point_timeout_s: int = 300
    repeats: int = 1
    load_mode: str = "concurrency"
    request_rate: str | None = None   # START:END:STEP (requestRate mode)
    distribution: str = "constant"
    slo: slo_search.Slo = field(default_factory=slo_search.Slo)
    metrics_url: str = ""
    telemetry_interval_ms: int = telemetry.DEFAULT_INTERVAL_MS
    clients: distributed.Clients | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError("--protocol", f"unknown protocol {self.protocol!r}; choose grpc or http")
        if self.load_mode not in perf.LOAD_MODES:
            raise InputError("--load-mode", f"unknown mode {self.load_mode!r}; choose "
                                            f"{' or '.join(perf.LOAD_MODES)}")
        if self.distribution not in perf.DISTRIBUTIONS:
            raise InputError("--request-distribution",
                             f"unknown distribution {self.distribution!r}; "
                             f"choose {' or '.join(perf.DISTRIBUTIONS)}")
        self.points  # noqa: B018  (START:END:STEP parses, or the flag is named)
        if self.batch < 1:
            raise InputError("--batch-size", "must be >= 1")
        if self.mode not in ("time_windows", "count_windows"):
            raise InputError("--measurement-mode", f"unknown mode {self.mode!r}")
        if self.interval_ms < 1 or self.count < 1:
            raise InputError("--measurement-interval-ms", "must be >= 1")
        if not 0 < self.stability <= 100:
            raise InputError("--stability-percentage", "must be in 1..100")
        if not self.models:
            raise InputError("--models", "empty list")
        for flag, ms in (("--slo-p99-ms", self.slo.p99_ms), ("--slo-p95-ms", self.slo.p95_ms)):
            if ms < 0:
                raise InputError(flag, f"must be >= 0 (0 = no limit), got {ms}")
        if self.slo.decide_within_s < 0:
            raise InputError("--slo-decide-within-s",
                             f"must be >= 0 (0 = never measure further), got "
                             f"{self.slo.decide_within_s}")
        if self.metrics_url and not self.metrics_url.startswith(("http://", "https://")):
            raise InputError("--metrics-url",
                             f"must be http://HOST:PORT/metrics, got {self.metrics_url!r}")
        if self.telemetry_interval_ms < 50:
            raise InputError("--telemetry-interval-ms",
                             f"must be >= 50, got {self.telemetry_interval_ms}")
        if not 1 <= self.repeats <= stats.MAX_REPEATS:
            raise InputError("--repeats", f"must be in 1..{stats.MAX_REPEATS} (got {self.repeats})")
        if self.distributed:
            self._check_distributed()

    def _check_distributed(self) -> None:
        if self.rate_mode:
            raise InputError("--clients", "more than one client needs --load-mode concurrency "
                                          "(a request rate is not split over clients)")
        if self.repeats > 1:
            raise InputError("--clients", "more than one client measures each point once: "
                                          "--repeats must be 1")
        if self.slo.active:
            raise InputError("--clients", "more than one client does not search an SLO: "
                                          "--slo-p99-ms and --slo-p95-ms must be 0")

    @classmethod
    def from_args(cls, a) -> "BenchConfig":
        return cls(a.url, a.protocol, tuple(m.strip() for m in a.models.split(",") if m.strip()),
                   a.batch_size, a.concurrency, a.measurement_mode, a.measurement_interval_ms,
                   a.measurement_request_count, a.stability_percentage, a.out,
                   a.little_tolerance, a.max_trials, repeats=a.repeats, load_mode=a.load_mode,
                   request_rate=a.request_rate, distribution=a.request_distribution,
                   slo=slo_search.Slo(a.slo_p99_ms, a.slo_p95_ms, a.slo_decide_within_s),
                   metrics_url=a.metrics_url,
                   telemetry_interval_ms=a.telemetry_interval_ms,
                   clients=distributed.Clients.of(a.clients, a.client_index, a.clients_run,
                                                  a.out, a.barrier_timeout_s))

    @property
    def rate_mode(self) -> bool:
        return self.load_mode == "requestRate"

    @property
    def load_key(self) -> str:
        """A row's load: ``c`` (concurrency) or ``rate`` (requests a second)."""
        return "rate" if self.rate_mode else "c"

    @property
    def distributed(self) -> bool:
        return self.clients is not None and self.clients.count > 1

    @property
    def points(self) -> list[int]:
        """The loads the sweep measures (concurrencies, or request rates)."""
        flag, text = (("--request-rate", self.request_rate) if self.rate_mode
                      else ("--concurrency", self.concurrency))
        if not text:
            raise InputError(flag, f"START:END:STEP is needed with --load-mode {self.load_mode}")
        try:
            return perf.concurrency_values(*perf.parse_concurrency(text))
        except ValueError as exc:
            raise InputError(flag, str(exc)) from None

    def settings(self) -> dict:
        """What bench.json says about how every point was measured."""
        return {"url": self.url, "protocol": self.protocol, "batchSize": self.batch,
                "concurrency": self.concurrency, "measurementMode": self.mode,
                "measurementIntervalMs": self.interval_ms,
                "measurementRequestCount": self.count, "stabilityPercentage": self.stability,
                "littleTolerance": self.tolerance}

    def command(self, pa: str, model: str, load: int, within: int, csv_path: Path,
                composing: list[str] | None, profile_export: Path | None = None) -> list[str]:
        """perf_analyzer's command line for one load of one model."""
        at = f"{load}:{load}:1"
        sent = perf.Load(at, at if self.rate_mode else None, self.distribution)
        window = perf.Window(self.mode, self.interval_ms, self.count, within, self.max_trials)
        return perf.command(pa, model, self.url, self.protocol, self.batch, sent, window,
                            csv_path, composing, profile_export)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@dataclass
class RunNotes:
    """What a run noted beside its rows, in bench.json and the result."""
    failures: list[str] = field(default_factory=list)
    widened: list[dict] = field(default_factory=list)      # measured again, wider bound
    reconnected: list[dict] = field(default_factory=list)  # measured again after a lost connect
    observed: dict[str, dict[str, dict]] = field(default_factory=dict)  # model -> load -> metrics


class ModelSweep:
    """One model's sweep: each load measured ``repeats`` times (one perf_analyzer run
    each), its compact rows, its CSV and log under --out."""

    def __init__(self, cfg: BenchConfig, pa: str, model: str, composing: list[str] | None,
                 notes: RunNotes):
        self.cfg, self.pa, self.model, self.composing, self.notes = cfg, pa, model, composing, notes
        self.rows: list[perf.Row] = []          # every run of every point
        self.points_of: list[dict] = []         # one compact row per point
        self.header: str | None = None
        self.csv_lines: list[str] = []
        #: load -> every request's latency (µs) of its runs' windows, from the profile export
        self.latencies: dict[int, list[int]] = {}
        #: load -> the most a request was sent after it was due (constant request rate), µs
        self.sent_late: dict[int, int] = {}
        #: loads measured only within any spread (perf_analyzer never called them stable)
        self.unstable: set[int] = set()
        self.log_path = cfg.out / f"{model}-{cfg.protocol}.log"
        self.log_path.write_text("")

    def measure_point(self, load: int) -> dict | None:
        """Measure one point ``repeats`` times: its compact row, or None when
        perf_analyzer failed (recorded in the notes). Triton's metrics are sampled
        over all runs of the point."""
        cfg, model = self.cfg, self.model
        at = f"rate={load}/s" if cfg.rate_mode else f"c={load}"
        with telemetry.sampler(cfg.metrics_url, model, cfg.telemetry_interval_ms) as sampled:
            runs = self.measure_runs(load, at, sampled.mark)
        if len(runs) < cfg.repeats:
            return None
        seen = sampled.summary()
        point = {**compact_row(runs), **telemetry.row_fields(seen, fmt),
                 **per_joule_interval(sampled.per_run())}
        if load in self.latencies:
            found = self.latencies.pop(load)
            point["latency"] = self.latency_of(load, found, point)
            if cfg.slo.decide_within_s and cfg.slo.undecided(point):
                self.decide(load, at, point, found)
        if load in self.unstable:
            point["unstable"] = True
        if seen:
            self.notes.observed.setdefault(model, {})[str(load)] = seen
            say(f"{model} {cfg.protocol} {at}: {telemetry.line(seen)}")
        self.rows.extend(runs)
        self.points_of.append(point)
        if cfg.repeats > 1:
            say(f"{model} {cfg.protocol} {at}: median {point['inferPerSec']} infer/s, "
                f"95 % interval of the mean [{point['low']}, {point['high']}] "
                f"({cfg.repeats} runs)")
        if "latency" in point:
            say(f"{model} {cfg.protocol} {at}: {latency.describe(point['latency'])} "
                f"(perf_analyzer's p99 {point['p99Us']} us)")
        return point

    def request_latencies(self, load: int, records: aggregate.ClientRecords) -> list[int]:
        """Every request's latency in µs; under a constant request rate counted from when
        it was due, so a request sent late counts its wait (lib/latency.py)."""
        if self.cfg.rate_mode and self.cfg.distribution == "constant":
            found, late = latency.from_due_us(records, load)
            self.sent_late[load] = max(self.sent_late.get(load, 0), late)
            return found
        return latency.latencies_us(records)

    def latency_of(self, load: int, found: list[int], point: dict) -> dict:
        """The point's percentiles with their intervals and, under a request rate, what
        the latencies count from: when due (constant), or when sent, a lower bound
        when the client fell behind (Poisson: the export has no due times)."""
        out = latency.summary(found)
        if self.cfg.rate_mode and load in self.sent_late:
            out.update({"from": "due", "sentLateUs": self.sent_late[load]})
        elif self.cfg.rate_mode:
            out["from"] = "sent"
            if point.get("keptUp", "ok") != "ok":
                out["lowerBound"] = True
        return out

    def decide(self, load: int, at: str, point: dict, found: list[int]) -> None:
        """Measure an undecided point further, one perf_analyzer run at a time, its
        requests added to the point's latency (its throughput stays the first runs'),
        until the SLO decides it or the time bound is spent; the point says so."""
        cfg, started, runs = self.cfg, time.monotonic(), 0
        while cfg.slo.undecided(point) and time.monotonic() - started < cfg.slo.decide_within_s:
            m = self.run_once(load, f"{self.model} {cfg.protocol} {at} further")
            if m.code != 0 or m.records is None:
                break
            found = found + self.request_latencies(load, m.records)
            point["latency"] = self.latency_of(load, found, point)
            runs += 1
        if runs:
            decided = not cfg.slo.undecided(point)
            point["measuredFurther"] = {"runs": runs, "seconds": round(time.monotonic() - started),
                                        "decided": decided}
            say(f"{self.model} {cfg.protocol} {at}: measured further ({runs} run(s)): "
                f"{latency.describe(point['latency'])}, "
                + ("decided" if decided else "still undecided"))

    def measure_runs(self, load: int, at: str, ran: Callable[[], None]) -> list[perf.Row]:
        """The ``repeats`` perf_analyzer runs of one point (fewer when one failed);
        ``ran`` is called after each (the telemetry's mark)."""
        cfg, runs = self.cfg, []
        for run in range(1, cfg.repeats + 1):
            tag = (f"{self.model} {cfg.protocol} {at}"
                   + (f" run {run}/{cfg.repeats}" if cfg.repeats > 1 else ""))
            m = self.run_once(load, tag)
            code, output, text = m.code, m.output, m.text
            if code != 0 or not text.strip():
                error = _last_line(output)
                self.notes.failures.append(f"{self.model} {at}: {error}")
                say(f"{tag}: perf_analyzer failed (exit {code}): {error}")
                break
            lines = text.strip().splitlines()
            self.header = self.header or lines[0]
            self.csv_lines.extend(lines[1:])
            if m.records is not None:
                self.latencies.setdefault(load, []).extend(self.request_latencies(load, m.records))
            for r in perf.parse_csv(text, cfg.batch, cfg.tolerance):
                r.extra["repeat"] = run
                if cfg.rate_mode:
                    perf.mark_keep_up(r, output)
                runs.append(r)
                say(f"{tag}: {r.throughput:.1f} infer/s, p99 {r.p99_us} us, "
                    f"avg {r.avg_latency_us} us, {_check(r, load, cfg.rate_mode)}")
            ran()
        return runs

    def run_once(self, load: int, tag: str) -> Measurement:
        """One perf_analyzer run; measured again within wider bounds while it is not
        stable (the last within any spread), or once more after a pause when it could
        not connect."""
        cfg = self.cfg

        def measure(within: int) -> Measurement:
            return _measure_point(lambda csv_path, export: cfg.command(
                self.pa, self.model, load, within, csv_path, self.composing,
                profile_export=export), self.log_path, cfg.point_timeout_s)
        m = measure(cfg.stability)
        bound = cfg.stability
        # a busy machine: again within twice the bound, then within any spread (perf_analyzer
        # then takes its windows as they come: a fixed-window measurement), said in the result
        # and flagged on the row; the point's intervals say how far to trust it
        for wider in dict.fromkeys(b for b in (min(100, 2 * bound), 100) if b > bound):
            if not (m.code != 0 and UNSTABLE in m.output):
                break
            fixed = wider == 100
            say(f"{tag}: not stable within {bound} %; measuring again within {wider} %"
                + (" (fixed windows: the row is flagged unstable)" if fixed else ""))
            m, bound = measure(wider), wider
            if m.code == 0 and m.text.strip():
                self.notes.widened.append({"model": self.model, cfg.load_key: load,
                                           "stabilityPercentage": wider,
                                           **({"unstable": True} if fixed else {})})
                if fixed:
                    self.unstable.add(load)
        if m.code != 0 and any(words in m.output for words in CONNECT_FAILED):
            # the server answered the points before: a dropped connect, tried once more
            error = _last_line(m.output)
            say(f"{tag}: perf_analyzer could not connect ({error}); "
                f"measuring again in {RECONNECT_PAUSE_S} s")
            time.sleep(RECONNECT_PAUSE_S)
            m = measure(cfg.stability)
            if m.code == 0 and m.text.strip():
                self.notes.reconnected.append({"model": self.model, cfg.load_key: load,
                                               "error": error})
        return m

    def refine_slo(self, swept: int) -> dict | None:
        """With an SLO and every point measured: bisect between the last point that
        meets it and the first that does not (slo.py); None otherwise."""
        cfg, key = self.cfg, self.cfg.load_key
        if not (cfg.slo.active and self.points_of and len(self.points_of) == swept):
            return None
        where = f"{self.model} {cfg.protocol} SLO {cfg.slo.describe()}"

        def bisect(load: int) -> dict | None:
            say(f"{where}: measuring {key}={load} between the last passing and first failing point")
            return self.measure_point(load)
        at_slo = slo_search.refine(list(self.points_of), key, bisect, cfg.slo)
        self.points_of.sort(key=lambda r: r[key])
        best_at, failing = at_slo.get("atSlo"), at_slo.get("firstFailing")
        say(f"{where}: "
            + (f"{best_at['inferPerSec']} infer/s at {key}={best_at[key]}" if best_at
               else at_slo["none"])
            + (f"; {key}={failing[key]} fails (p99 {failing['p99Us'] / 1000:.2f} ms: "
               f"{failing.get('why') or 'over the limit'})" if failing else ""))
        return at_slo

    def write_csv(self) -> None:
        if self.header:
            self.csv_lines.sort(key=lambda l: float(l.split(",")[0]))
            (self.cfg.out / f"{self.model}-{self.cfg.protocol}.csv").write_text(
                "\n".join([self.header, *self.csv_lines]) + "\n")

    def summary(self, at_slo: dict | None) -> dict:
        entry = model_summary(self.points_of, self.cfg.rate_mode)
        if at_slo is not None:
            entry["slo"] = at_slo
        if self.composing:
            entry["composing"] = self.composing
        return entry


def _check(r: perf.Row, load: int, rate_mode: bool) -> str:
    """A run's check in words: keeping up (request rate) or Little's law (concurrency)."""
    if rate_mode:
        return (f"achieved {r.achieved_rate:.1f}/s of {load}/s, "
                f"{'kept up' if r.kept_up else 'BEHIND'}"
                + (f" ({r.delayed_percent:.2f} % delayed)" if r.delayed_percent else "")
                + f", {r.in_flight:.2f} in flight")
    return f"Little {'ok' if r.little_ok else 'FAIL'} ({r.little_ratio:.2f})"


def _ready(cfg: BenchConfig) -> tuple[str, dict[str, str]]:
    """perf_analyzer's path and what the server serves; every model asked for must be READY."""
    try:
        pa = perf.find_perf_analyzer()
    except FileNotFoundError as exc:
        raise StageError(str(exc), reason="PerfAnalyzerNotFound") from None
    served = served_models(cfg.protocol, cfg.url)
    for m in cfg.models:
        if served.get(m) != "READY":
            have = ", ".join(f"{n} ({s})" for n, s in sorted(served.items())) or "none"
            raise InputError("--models", f"model {m!r} is not served at {cfg.url} (served: {have})")
    return pa, served


def _composing(cfg: BenchConfig, model: str, served: dict[str, str]) -> list[str] | None:
    return bls_downstream(cfg.protocol, cfg.url, model, served) if model == "mnist_bls" else None


def run_bench(cfg: BenchConfig) -> dict:
    pa, served = _ready(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.distributed:
        return distributed_bench(cfg, pa, served)
    points, notes = cfg.points, RunNotes()
    all_rows: dict[str, list[dict]] = {}
    points_by_model: dict[str, list[dict]] = {}   # the compact rows, whole (shrink spares them)
    summary: dict[str, dict] = {}
    for model in cfg.models:
        sweep = ModelSweep(cfg, pa, model, _composing(cfg, model, served), notes)
        for load in points:
            sweep.measure_point(load)
        at_slo = sweep.refine_slo(len(points))
        sweep.write_csv()
        all_rows[model] = [r.as_dict() for r in sorted(sweep.rows, key=lambda r: r.load)]
        points_by_model[model] = sweep.points_of
        if sweep.points_of:
            summary[model] = sweep.summary(at_slo)
    (cfg.out / "bench.json").write_text(json.dumps({
        **cfg.settings(), "repeats": cfg.repeats, "loadMode": cfg.load_mode,
        "requestRate": cfg.request_rate, "distribution": cfg.distribution,
        "slo": {"p99Ms": cfg.slo.p99_ms, "p95Ms": cfg.slo.p95_ms}, "failures": notes.failures,
        "widened": notes.widened, "reconnected": notes.reconnected,
        "metricsUrl": cfg.metrics_url, "telemetry": notes.observed, "rows": all_rows,
        "points": points_by_model}, indent=1))
    if notes.failures:
        raise StageError(f"perf_analyzer failed at {len(notes.failures)} point(s): "
                         f"{notes.failures[0]} (logs in {cfg.out})", reason="PerfAnalyzerFailed")
    return shrink(_result(cfg, pa, summary, notes))


def _result(cfg: BenchConfig, pa: str, summary: dict, notes: RunNotes) -> dict:
    result = {"protocol": cfg.protocol, "batchSize": cfg.batch, "concurrency": cfg.concurrency,
              "repeats": cfg.repeats, "littleTolerance": fmt(cfg.tolerance, 2),
              **({"loadMode": cfg.load_mode, "requestRate": cfg.request_rate,
                  "distribution": cfg.distribution} if cfg.rate_mode else {}),
              **({"slo": cfg.slo.describe()} if cfg.slo.active else {}),
              "models": summary, "out": str(cfg.out)}
    if notes.widened:
        result["widened"] = notes.widened
    if notes.reconnected:
        result["reconnected"] = notes.reconnected
    unread = [f"{m} {load}: {t['telemetry']}" for m, per in notes.observed.items()
              for load, t in per.items() if "telemetry" in t]
    if unread:   # a warning that outlives shrink(), which may drop the rows saying it
        result["telemetry"] = f"{len(unread)} point(s) without telemetry; first: {unread[0]}"
    result["environment"] = _environment(cfg, pa)
    return result


def _environment(cfg: BenchConfig, pa: str) -> dict:
    return {**provenance.served(cfg.protocol, cfg.url, list(cfg.models)),
            "perfAnalyzer": provenance.perf_analyzer_version(pa)}


#: What a distributed bench's rows are, in its result.
AGGREGATION = ("every request any client completed in the window where all clients were "
               "measuring; percentiles over all of them")


def distributed_bench(cfg: BenchConfig, pa: str, served: dict[str, str]) -> dict:
    """The sweep as one of several clients (lib/loadgen.py): client 0's result is the
    aggregate of all of them, the others' only says who aggregates. Client 0
    alone samples Triton's metrics, over its own measurement of each point
    (all clients measure a point together, behind its barrier)."""
    clients, me = cfg.clients, cfg.clients.index
    composing = {m: _composing(cfg, m, served) for m in cfg.models}
    observed: dict[tuple[str, int], dict] = {}   # (model, client 0's share) -> its telemetry

    def measure(model: str, share: int, export: Path) -> dict:
        export.parent.mkdir(parents=True, exist_ok=True)
        with telemetry.sampler(cfg.metrics_url if me == 0 else "", model,
                               cfg.telemetry_interval_ms) as sampled:
            m = _measure_point(lambda csv_path, _export: cfg.command(
                pa, model, share, cfg.stability, csv_path, composing[model],
                profile_export=export),
                export.parent / f"{model}-{cfg.protocol}.log", cfg.point_timeout_s)
            code, output, text = m.code, m.output, m.text
        seen = sampled.summary()
        if seen:   # the sweep's point, not the scaling check's later one
            observed.setdefault((model, share), seen)
        if code != 0 or not text.strip() or not export.is_file():
            raise StageError(f"client {me}: perf_analyzer failed for {model} at c={share} "
                             f"(exit {code}): {_last_line(output)}", reason="PerfAnalyzerFailed")
        row = perf.parse_csv(text, cfg.batch, cfg.tolerance)[0]
        say(f"client {me}: {model} {cfg.protocol} c={share}: {row.throughput:.1f} infer/s "
            f"on its own, p99 {row.p99_us} us")
        return row.as_dict()

    found = distributed.sweep(clients, list(cfg.models), cfg.points, measure, cfg.batch,
                              cfg.tolerance, say)
    if found is None:
        return {"protocol": cfg.protocol, "client": me, "clients": clients.count,
                "aggregatedBy": 0, "out": str(cfg.out)}
    rows, scaled = found
    summary = {}
    for model in cfg.models:
        for r in rows[model]:
            seen = observed.get((model, distributed.split(r["c"], clients.count)[0]), {})
            r.update(telemetry.row_fields(seen, fmt))
            say(f"{model} {cfg.protocol} c={r['c']} ({clients.count} clients): "
                f"{r['inferPerSec']} infer/s, p99 {r['p99Us']} us over {r['requests']} "
                f"requests in the common {r['windowMs']} ms, Little {r['little']}")
        summary[model] = {**model_summary(rows[model], rate_mode=False), "scaling": scaled[model]}
        if composing[model]:
            summary[model]["composing"] = composing[model]
    (cfg.out / "bench.json").write_text(json.dumps({
        **cfg.settings(), "clients": clients.count, "aggregation": AGGREGATION,
        "clientsDir": str(clients.root), "rows": rows, "scaling": scaled}, indent=1))
    result = {"protocol": cfg.protocol, "batchSize": cfg.batch, "concurrency": cfg.concurrency,
              "repeats": 1, "littleTolerance": fmt(cfg.tolerance, 2), "clients": clients.count,
              "aggregation": AGGREGATION, "models": summary, "out": str(cfg.out),
              # the step's message, in its status record and its StageSucceeded Event
              "message": f"{clients.count} clients; " + "; ".join(
                  f"{m}: {aggregate.verdict(sc)} ({sc['clients'][0]} client(s) "
                  f"{sc['inferPerSec'][0]}, {sc['clients'][1]} clients {sc['inferPerSec'][1]} "
                  f"infer/s at c={sc['c']})" for m, sc in scaled.items())}
    result["environment"] = _environment(cfg, pa)
    return shrink(result)


#: perf_analyzer's words when a point's windows never agree within the bound.
UNSTABLE = "Failed to obtain stable measurement"
#: Its words when a client thread could not reach the server (gRPC; HTTP through libcurl).
#: Seen once in CI mid-sweep, its neighbours measured fine: "Thread [9] had error: failed
#: to connect to all addresses; last error: UNKNOWN: No such file or directory".
CONNECT_FAILED = ("failed to connect to all addresses", "Couldn't connect to server")
RECONNECT_PAUSE_S = 1


def _last_line(output: str) -> str:
    """perf_analyzer's last words, short enough for a status message."""
    last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return last[0][:160]


@dataclass(frozen=True)
class Measurement:
    """One perf_analyzer run: its exit code, its output, its CSV, and the requests of
    its windows from its profile export (None when it wrote none)."""
    code: int
    output: str
    text: str
    records: aggregate.ClientRecords | None = None


def _measure_point(command_for: Callable[[Path, Path], list[str]], log_path: Path,
                   timeout_s: int) -> Measurement:
    """Run one perf_analyzer point writing a fresh CSV (and, if the command asks for
    one, a profile export next to it)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, export_path = Path(tmp) / "pa.csv", Path(tmp) / "requests.json"
        cmd = command_for(csv_path, export_path)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if isinstance(
                exc.stdout, bytes) else (exc.stdout or "")
            code = -1
            output += f"\n[timed out after {timeout_s} s]"
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n{output}\n")
        text = csv_path.read_text() if csv_path.exists() else ""
        records = aggregate.load_records(export_path) if code == 0 and export_path.exists() \
            else None
    return Measurement(code, output, text, records)


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "protocol": "grpc or http", "batchSize": "perf_analyzer -b",
    "concurrency": "the START:END:STEP asked for", "repeats": "measurements per point",
    "littleTolerance": "the Little's-law check's tolerance",
    "loadMode": "requestRate, in request-rate mode", "requestRate": "its START:END:STEP",
    "distribution": "constant or poisson", "slo": "the latency limits, when set",
    "models": "model -> its rows and best point (docs/results.md reads them)",
    "out": "the directory with perf_analyzer's CSVs and bench.json",
    "widened": "points measured again with a wider window",
    "reconnected": "points measured again after a lost connection",
    "telemetry": "points without Triton metrics, in words",
    "environment": "Triton, perf_analyzer and the served configs (provenance)",
    "clients": "pods that sent load together (distributed)",
    "client": "this pod's index (a distributed non-aggregating client)",
    "aggregatedBy": "0 on clients that did not aggregate",
    "aggregation": "how the clients' requests were combined",
}


def parser():
    p = stage_parser("bench", "Measure served models with perf_analyzer.")
    p.add_argument("--url", required=True, help="HOST:PORT of the protocol's endpoint")
    p.add_argument("--protocol", required=True, help="grpc or http")
    p.add_argument("--models", required=True, help="comma list of model names")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--concurrency", required=True, help="START:END:STEP, end inclusive")
    p.add_argument("--measurement-mode", required=True)
    p.add_argument("--measurement-interval-ms", type=int, required=True)
    p.add_argument("--measurement-request-count", type=int, required=True,
                   help="requests per window in count_windows mode")
    p.add_argument("--stability-percentage", type=int, required=True)
    p.add_argument("--max-trials", type=int, default=None,
                   help="perf_analyzer --max-trials (its default is 10)")
    p.add_argument("--repeats", type=int, required=True,
                   help=f"measure every point this many times (1..{stats.MAX_REPEATS}): median "
                        "and a 95 %% interval")
    p.add_argument("--load-mode", required=True,
                   help="concurrency (closed loop) or requestRate (open loop, perf_analyzer "
                        "--request-rate-range)")
    p.add_argument("--request-rate", default=None,
                   help="START:END:STEP requests/s, end inclusive (with --load-mode requestRate)")
    p.add_argument("--request-distribution", default="constant",
                   help="constant or poisson: the time between requests in requestRate mode")
    p.add_argument("--slo-p99-ms", type=int, default=0,
                   help="SLO: p99 latency limit in ms (0 = none); the sweep is then refined "
                        "around the boundary by bisection")
    p.add_argument("--slo-p95-ms", type=int, default=0, help="SLO: p95 latency limit in ms")
    p.add_argument("--slo-decide-within-s", type=int, default=0,
                   help="SLO: how long a point whose verdict is undecided (its percentile's 95 %% "
                        "interval holds the limit) is measured further; 0 = not at all")
    p.add_argument("--little-tolerance", type=float, default=perf.LITTLE_TOLERANCE,
                   help="allowed relative deviation from Little's law (0.2 = 20%%)")
    p.add_argument("--metrics-url", default="",
                   help="Triton's metrics endpoint, http://HOST:PORT/metrics, sampled during "
                        "every point (empty: no telemetry)")
    p.add_argument("--telemetry-interval-ms", type=int, default=telemetry.DEFAULT_INTERVAL_MS,
                   help="how often the metrics endpoint is scraped during a point")
    p.add_argument("--clients", type=int, default=1,
                   help=f"clients measuring together (1..{distributed.MAX_CLIENTS}); each "
                        "point's concurrency is the total over them")
    p.add_argument("--client-index", type=int,
                   default=distributed.index_from_env(os.environ.get("JOB_COMPLETION_INDEX")),
                   help="this client's index (default: $JOB_COMPLETION_INDEX); 0 aggregates")
    p.add_argument("--clients-run", default=os.environ.get("MNIST_CLIENTS_RUN"),
                   help="one name shared by the clients of this run (default: "
                        "$MNIST_CLIENTS_RUN): their barrier directory under --out")
    p.add_argument("--barrier-timeout-s", type=float, default=600.0,
                   help="the longest a client waits for the others at a barrier")
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("bench", parser(), lambda a: run_bench(BenchConfig.from_args(a)), argv)


if __name__ == "__main__":
    raise SystemExit(main())
