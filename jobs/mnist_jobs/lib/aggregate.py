"""One measurement point over several perf_analyzer clients, from their request records.

Each client writes perf_analyzer's profile export (``--profile-export-file``,
checked against perf_analyzer 2.45):

    {"experiments": [{"experiment": {"mode": "concurrency", "value": 2},
                      "requests": [{"timestamp": <ns>, "response_timestamps": [<ns>, ...],
                                    ...}, ...],
                      "window_boundaries": [<ns>, <ns>, ...]}],
     "version": "2.45.0"}

``requests`` holds the requests of the windows perf_analyzer kept as its
measurement, and ``window_boundaries`` those windows' edges; the requests
completed between the first and the last edge, over that span, is exactly
the throughput perf_analyzer itself reports. Outputs are raw tensor bytes,
so the file is not valid UTF-8 and is read with replacement characters.

Clients start together behind a barrier but do not measure for the same
span. The aggregate keeps the window in which every client was measuring
(the latest first edge to the earliest last edge): the total throughput is
the requests any client completed in it over its length, and the
percentiles come from ONE sorted list of every such request's latency (an
average of per-client percentiles is not a percentile of anything).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mnist_jobs.lib.stage_cli import StageError, fmt


@dataclass(frozen=True)
class ClientRecords:
    """One client's measurement of one point: its window and its requests (ns)."""
    start_ns: int
    end_ns: int
    requests: tuple[tuple[int, int], ...]   # (sent, last response)


def records_of(export: dict) -> ClientRecords:
    """The last experiment of a profile export (one point per perf_analyzer run)."""
    try:
        experiment = export["experiments"][-1]
        requests = tuple((int(r["timestamp"]), int(r["response_timestamps"][-1]))
                         for r in experiment["requests"] if r.get("response_timestamps"))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise StageError(f"profile export without request records ({exc!r})",
                         reason="BadProfileExport") from None
    edges = experiment.get("window_boundaries") or []
    if len(edges) >= 2:
        start, end = int(edges[0]), int(edges[-1])
    elif requests:   # no window edges: the span of the requests themselves
        start, end = min(r[0] for r in requests), max(r[1] for r in requests)
    else:
        raise StageError("profile export has neither requests nor windows",
                         reason="BadProfileExport")
    return ClientRecords(start, end, requests)


def load_records(path: Path) -> ClientRecords:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
        return records_of(json.loads(text))
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read the profile export {path}: {exc}",
                         reason="BadProfileExport") from None


def percentile(ordered: list[int], q: float) -> int:
    """The nearest-rank percentile of an ascending list (perf_analyzer's own definition)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def aggregate(clients: list[ClientRecords], concurrency: int, batch: int = 1,
              tolerance: float = 0.2) -> dict:
    """The compact row of one point measured by ``clients`` at ``concurrency``
    requests in flight in total: throughput, latencies and Little's law over
    every request completed in the common window, and each client's share."""
    if not clients:
        raise StageError("no client measured this point", reason="NoClientRecords")
    start, end = max(c.start_ns for c in clients), min(c.end_ns for c in clients)
    if end <= start:
        raise StageError("the clients' measurement windows do not overlap (one finished "
                         "before another began): no common window to aggregate",
                         reason="NoCommonWindow")
    seconds = (end - start) / 1e9
    per_client = [[done - sent for sent, done in c.requests if start <= done <= end]
                  for c in clients]
    latencies = sorted(l for client in per_client for l in client)
    if not latencies:
        raise StageError("no request completed in the clients' common window",
                         reason="NoCommonWindow")
    infer_per_sec = len(latencies) * batch / seconds
    mean_us = sum(latencies) / len(latencies) / 1000
    # closed loop: requests in flight = completion rate x mean latency (L = X W)
    ratio = (len(latencies) / seconds) * (mean_us / 1e6) / concurrency
    return {
        "c": concurrency, "clients": len(clients),
        "inferPerSec": fmt(infer_per_sec, 1),
        "p50Us": percentile(latencies, 50) // 1000, "p95Us": percentile(latencies, 95) // 1000,
        "p99Us": percentile(latencies, 99) // 1000,
        "little": "ok" if abs(ratio - 1) <= tolerance else f"FAIL({fmt(ratio, 2)})",
        "windowMs": int((end - start) / 1e6), "requests": len(latencies),
        "perClient": [fmt(len(l) * batch / seconds, 1) for l in per_client],
    }


#: More clients "raised throughput" when N clients reach this much more than N/2 did.
CLIENT_LIMIT_RATIO = 1.1


def scaling(half: dict, full: dict) -> dict:
    """The best point measured with half the clients and with all of them: a
    ratio above CLIENT_LIMIT_RATIO says the clients were the limit (more of
    them raised throughput), anything else that the server was. A point with
    fewer requests in flight than clients keeps no more of them busy than half
    did: nothing was tested (``untested``)."""
    a, b = float(half["inferPerSec"]), float(full["inferPerSec"])
    ratio = b / a if a > 0 else math.inf
    limit = "untested" if full["clients"] <= half["clients"] \
        else "client" if ratio > CLIENT_LIMIT_RATIO else "server"
    return {"c": full["c"], "clients": [half["clients"], full["clients"]],
            "inferPerSec": [half["inferPerSec"], full["inferPerSec"]],
            "ratio": fmt(ratio, 2) if a > 0 else "inf", "limit": limit,
            "threshold": fmt(CLIENT_LIMIT_RATIO, 2)}


def verdict(sc: dict) -> str:
    """A scaling check in words."""
    if sc["limit"] == "untested":
        return (f"untested: c={sc['c']} keeps only {sc['clients'][1]} client(s) busy, as many "
                "as half of them")
    return f"the {sc['limit']} was the limit"


__all__ = ["ClientRecords", "records_of", "load_records", "percentile", "aggregate",
           "scaling", "verdict", "CLIENT_LIMIT_RATIO"]
