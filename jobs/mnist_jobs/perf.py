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
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

LITTLE_TOLERANCE = 0.20

COMPONENTS = ("Client Send", "Network+Server Send/Recv", "Server Queue",
              "Server Compute Input", "Server Compute Infer", "Server Compute Output",
              "Client Recv")
REQUIRED = ("Concurrency", "Inferences/Second", *COMPONENTS,
            "p50 latency", "p90 latency", "p95 latency", "p99 latency")


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
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["throughput"] = round(self.throughput, 2)
        d["little_ratio"] = round(self.little_ratio, 4)
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


def command(perf_analyzer: str, model: str, url: str, protocol: str, batch: int,
            concurrency: str, mode: str, interval_ms: int, count: int, stability: int,
            csv_path: Path, composing: list[str] | None = None,
            max_trials: int | None = None) -> list[str]:
    cmd = [perf_analyzer, "-m", model, "-i", protocol, "-u", url, "-b", str(batch),
           "--concurrency-range", concurrency, "--measurement-mode", mode,
           "-s", str(stability), "--shape", "input:1,28,28", "-f", str(csv_path)]
    if mode == "count_windows":
        cmd += ["--measurement-request-count", str(count)]
    else:
        cmd += ["--measurement-interval", str(interval_ms)]
    if max_trials:
        cmd += ["--max-trials", str(max_trials)]
    if composing:
        cmd += ["--bls-composing-models", ",".join(composing)]
    return cmd


def little_check(concurrency: int, throughput: float, latency_us: float, batch: int,
                 tolerance: float = LITTLE_TOLERANCE) -> tuple[float, bool]:
    if concurrency <= 0:
        return 0.0, False
    ratio = (throughput / batch) * (latency_us / 1e6) / concurrency
    return ratio, abs(ratio - 1.0) <= tolerance


def parse_csv(text: str, batch: int = 1, tolerance: float = LITTLE_TOLERANCE) -> list[Row]:
    """Rows of a perf_analyzer ``-f`` CSV, sorted by concurrency, each checked."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise PerfParseError("empty perf_analyzer CSV")
    missing = [c for c in REQUIRED if c not in reader.fieldnames]
    if missing:
        raise PerfParseError(f"perf_analyzer CSV lacks columns: {', '.join(missing)}")
    rows = []
    for rec in reader:
        if not rec.get("Concurrency"):
            continue
        try:
            v = {k: float(rec[k]) for k in REQUIRED}
        except (TypeError, ValueError) as exc:
            raise PerfParseError(f"bad number in perf_analyzer CSV row {rec}: {exc}") from None
        latency = sum(v[c] for c in COMPONENTS)
        conc = int(v["Concurrency"])
        ratio, ok = little_check(conc, v["Inferences/Second"], latency, batch, tolerance)
        extra = {k: val for k, val in rec.items() if k not in REQUIRED and k}
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
            little_ratio=ratio, little_ok=ok, extra=extra))
    if not rows:
        raise PerfParseError("perf_analyzer CSV has a header but no rows")
    rows.sort(key=lambda r: r.concurrency)
    return rows
