"""perf_analyzer: command lines, CSV parsing and the Little's-law check.

perf_analyzer's ``-f`` CSV has one row per concurrency, sorted by
throughput (not by concurrency), latencies in microseconds:

    Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,
    Server Queue,Server Compute Input,Server Compute Infer,
    Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency

The average client latency is not a column of its own: it is the sum of the
seven component columns (Client Send ... Client Recv), which is how
perf_analyzer splits it; it matches the "Avg latency" it prints.

Little's law for a closed loop of ``concurrency`` outstanding requests, each
of ``batch`` inferences: concurrency = (throughput / batch) x avg latency.
A row passes when the measured ratio
``(throughput / batch) x latency / concurrency`` is within ``tolerance``
(default 20 %) of 1. Rows that fail are kept and flagged, never dropped.

Request-rate mode (``--request-rate-range``, an open loop): the CSV's first
column is ``Request Rate`` instead of ``Concurrency``. The number of requests
in flight is not fixed, so Little's law has nothing to be checked against;
it gives the mean number in flight instead, ``in_flight = (throughput /
batch) x avg latency``, which is reported. What an open loop must obey is
flow balance: in a steady state requests complete as fast as they arrive,
so the achieved rate (throughput / batch) should match the requested one.
A point for which perf_analyzer printed its warning that it could not keep
up (``[WARNING] Perf Analyzer was not able to keep up with the desired
request rate. 99.93% of the requests were delayed.``), or whose achieved
rate is below KEEP_UP (90 %) of the requested one by more than counting
noise, is flagged ``kept_up=False``: its latencies describe a slower load
than the one asked for. Counting noise: a Poisson stream of rate r sends
r·T ± √(r·T) requests in T seconds, so a short measurement at a low rate
(100/s for 1.5 s: 150 ± 12) can fall 15 % short with nothing wrong; a
shortfall within 3 √(r·T) of the count perf_analyzer printed is not one.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

LITTLE_TOLERANCE = 0.20
#: A request-rate point keeps up when it achieves at least this share of the rate asked for.
KEEP_UP = 0.90
LOAD_MODES = ("concurrency", "requestRate")
DISTRIBUTIONS = ("constant", "poisson")

#: What perf_analyzer 2.45 prints for a rate it cannot send at (and the rate it did send).
_BEHIND = re.compile(r"not able to keep up with the desired request rate\. "
                     r"([0-9.]+)% of the requests were delayed")
_SEND_RATE = re.compile(r"Avg send request rate: ([0-9.]+) infer/sec")
_REQUEST_COUNT = re.compile(r"Client:\s*\n\s*Request count: ([0-9]+)")

COMPONENTS = ("Client Send", "Network+Server Send/Recv", "Server Queue",
              "Server Compute Input", "Server Compute Infer", "Server Compute Output",
              "Client Recv")
METRICS = ("Inferences/Second", *COMPONENTS,
           "p50 latency", "p90 latency", "p95 latency", "p99 latency")
#: The CSV's first column: the load each row was measured at.
LOAD_COLUMN = {"Concurrency": "concurrency", "Request Rate": "requestRate"}


class PerfParseError(ValueError):
    pass


@dataclass
class Row:
    concurrency: int
    throughput: float          # infer/s
    avg_latency_us: int
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    server_queue_us: int
    server_compute_us: int     # compute input + infer + output
    client_send_us: int = 0
    network_us: int = 0
    client_recv_us: int = 0
    little_ratio: float = 0.0
    little_ok: bool = False
    request_rate: float = 0.0  # requested (request-rate mode; concurrency is 0 there)
    achieved_rate: float = 0.0  # throughput / batch: requests completed per second
    in_flight: float = 0.0     # Little's law: achieved rate x avg latency
    kept_up: bool = True       # request-rate mode: achieved >= KEEP_UP x requested, no warning
    delayed_percent: float = 0.0  # perf_analyzer's "% of the requests were delayed"
    extra: dict = field(default_factory=dict)

    @property
    def load(self) -> float:
        """The load this row was measured at: its concurrency or its requested rate."""
        return self.request_rate if self.request_rate else self.concurrency

    def as_dict(self) -> dict:
        d = asdict(self)
        d["throughput"] = round(self.throughput, 2)
        d["little_ratio"] = round(self.little_ratio, 4)
        d["achieved_rate"] = round(self.achieved_rate, 2)
        d["in_flight"] = round(self.in_flight, 3)
        return d


def find_perf_analyzer() -> str:
    """$PERF_ANALYZER, then perf_analyzer beside this interpreter, then PATH."""
    env = os.environ.get("PERF_ANALYZER")
    if env:
        return env
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.exists():
        return str(beside)
    found = shutil.which("perf_analyzer")
    if found:
        return found
    raise FileNotFoundError("perf_analyzer not found (set PERF_ANALYZER or put it on PATH)")


def parse_concurrency(text: str) -> tuple[int, int, int]:
    """'start:end:step' (perf_analyzer's syntax, end inclusive) -> (start, end, step).

    Raises ValueError with a message for the user."""
    parts = text.split(":")
    if len(parts) not in (1, 2, 3):
        raise ValueError(f"expected START:END:STEP, got {text!r}")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected integers START:END:STEP, got {text!r}") from None
    start = nums[0]
    end = nums[1] if len(nums) > 1 else start
    step = nums[2] if len(nums) > 2 else 1
    if start < 1:
        raise ValueError(f"start must be >= 1, got {start}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if end < start:
        raise ValueError(f"empty range: end {end} < start {start}")
    return start, end, step


def concurrency_values(start: int, end: int, step: int) -> list[int]:
    return list(range(start, end + 1, step))


def behind_warning(output: str) -> float | None:
    """The share (%) of delayed requests perf_analyzer's keep-up warning states, if it printed one."""
    found = _BEHIND.search(output)
    return float(found.group(1)) if found else None


def send_rate(output: str) -> float | None:
    """The "Avg send request rate" perf_analyzer prints when it fell behind."""
    found = _SEND_RATE.search(output)
    return float(found.group(1)) if found else None


def request_count(output: str) -> int | None:
    """The client's "Request count" of the measurement perf_analyzer reports."""
    found = _REQUEST_COUNT.search(output)
    return int(found.group(1)) if found else None


def short_beyond_noise(requested: float, achieved: float, count: int | None) -> bool:
    """Achieved below KEEP_UP of requested, by more than 3 √(expected count)."""
    if achieved >= KEEP_UP * requested:
        return False
    if not count or achieved <= 0:
        return True
    expected = requested * count / achieved     # requests the measured time should have held
    return expected - count > 3 * math.sqrt(expected)


def mark_keep_up(row: Row, output: str) -> Row:
    """A request-rate row checked against what it asked for and what perf_analyzer said."""
    delayed = behind_warning(output)
    row.delayed_percent = delayed or 0.0
    row.kept_up = delayed is None and not short_beyond_noise(
        row.request_rate, row.achieved_rate, request_count(output))
    sent = send_rate(output)
    if sent is not None:
        row.extra["send_rate"] = sent
    return row


@dataclass(frozen=True)
class Load:
    """What perf_analyzer sends: a concurrency range (closed loop) or, with
    ``request_rate``, a request-rate range (open loop) with its distribution."""
    concurrency: str = "1"                 # START:END:STEP
    request_rate: str | None = None        # START:END:STEP, replacing the concurrency
    distribution: str = "constant"

    def flags(self) -> list[str]:
        if self.request_rate:
            return ["--request-rate-range", self.request_rate,
                    "--request-distribution", self.distribution]
        return ["--concurrency-range", self.concurrency]


@dataclass(frozen=True)
class Window:
    """How perf_analyzer measures: its windows (time or request count) and how
    stable they must be."""
    mode: str                              # time_windows or count_windows
    interval_ms: int
    count: int                             # requests per window in count_windows
    stability: int                         # -s, in percent
    max_trials: int | None = None

    def flags(self) -> list[str]:
        out = ["--measurement-mode", self.mode, "-s", str(self.stability)]
        out += (["--measurement-request-count", str(self.count)] if self.mode == "count_windows"
                else ["--measurement-interval", str(self.interval_ms)])
        return out + (["--max-trials", str(self.max_trials)] if self.max_trials else [])


def command(perf_analyzer: str, model: str, url: str, protocol: str, batch: int, load: Load,
            window: Window, csv_path: Path, composing: list[str] | None = None,
            profile_export: Path | None = None) -> list[str]:
    """perf_analyzer's command line for one model; ``profile_export`` has it write
    every request's timestamps there."""
    cmd = [perf_analyzer, "-m", model, "-i", protocol, "-u", url, "-b", str(batch),
           *load.flags(), *window.flags(), "--shape", "input:1,28,28", "-f", str(csv_path)]
    if composing:
        cmd += ["--bls-composing-models", ",".join(composing)]
    if profile_export:
        cmd += ["--profile-export-file", str(profile_export)]
    return cmd


def little_check(concurrency: int, throughput: float, latency_us: float, batch: int,
                 tolerance: float = LITTLE_TOLERANCE) -> tuple[float, bool]:
    if concurrency <= 0:
        return 0.0, False
    ratio = (throughput / batch) * (latency_us / 1e6) / concurrency
    return ratio, abs(ratio - 1.0) <= tolerance


def parse_csv(text: str, batch: int = 1, tolerance: float = LITTLE_TOLERANCE) -> list[Row]:
    """Rows of a perf_analyzer ``-f`` CSV (concurrency or request-rate), sorted by load;
    concurrency rows checked against Little's law, request-rate rows given their
    achieved rate and mean number in flight (see the module docstring)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise PerfParseError("empty perf_analyzer CSV")
    load_column = next((c for c in LOAD_COLUMN if c in reader.fieldnames), None)
    missing = [c for c in METRICS if c not in reader.fieldnames]
    if load_column is None or missing:
        missing = missing if load_column else ["Concurrency or Request Rate", *missing]
        raise PerfParseError(f"perf_analyzer CSV lacks columns: {', '.join(missing)}")
    rows = []
    for rec in reader:
        if not rec.get(load_column):
            continue
        try:
            v = {k: float(rec[k]) for k in (load_column, *METRICS)}
        except (TypeError, ValueError) as exc:
            raise PerfParseError(f"bad number in perf_analyzer CSV row {rec}: {exc}") from None
        latency = sum(v[c] for c in COMPONENTS)
        achieved = v["Inferences/Second"] / batch
        in_flight = achieved * latency / 1e6
        if load_column == "Concurrency":
            conc, rate = int(v[load_column]), 0.0
            ratio, ok = little_check(conc, v["Inferences/Second"], latency, batch, tolerance)
        else:
            conc, rate = 0, v[load_column]
            ratio, ok = 0.0, True   # no fixed concurrency to hold L = X W against
        extra = {k: val for k, val in rec.items() if k not in (load_column, *METRICS) and k}
        rows.append(Row(
            concurrency=conc, throughput=v["Inferences/Second"],
            avg_latency_us=int(round(latency)),
            p50_us=int(v["p50 latency"]), p90_us=int(v["p90 latency"]),
            p95_us=int(v["p95 latency"]), p99_us=int(v["p99 latency"]),
            server_queue_us=int(v["Server Queue"]),
            server_compute_us=int(v["Server Compute Input"] + v["Server Compute Infer"]
                                  + v["Server Compute Output"]),
            client_send_us=int(v["Client Send"]), network_us=int(v["Network+Server Send/Recv"]),
            client_recv_us=int(v["Client Recv"]),
            little_ratio=ratio, little_ok=ok, request_rate=rate, achieved_rate=achieved,
            in_flight=in_flight, kept_up=not rate or achieved >= KEEP_UP * rate, extra=extra))
    if not rows:
        raise PerfParseError("perf_analyzer CSV has a header but no rows")
    rows.sort(key=lambda r: r.load)
    return rows
