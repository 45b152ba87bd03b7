"""Distributed load: N bench clients (an Indexed Job's pods, or N local
processes) measuring one server together, through files on the shared
output directory only (the data plane never talks to the Kubernetes API).

    <out>/clients/<run>/barrier/<point>/<index>   a client has arrived at a point
    <out>/clients/<run>/<index>/<model>-<point>.json   its profile export there
    <out>/clients/<run>/best.json                 the points the scaling check re-measures
    <out>/clients/<run>/done/<index>              a client has finished (its state)

``<run>`` names one run of the clients (in a cluster the Job's uid, so a
retried Job never meets the barrier files of the attempt before it).

The concurrency of a point is the total in flight, split over the clients
(``split``), so rows stay comparable whatever the number of clients. Every
client, measuring or not, passes every barrier. Client 0 aggregates
(aggregate.py): after the sweep it picks each model's best point, which
every client then measures once more with only half the clients active,
and after everyone's done marker it computes the rows and the scaling verdict.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mnist_jobs.lib import aggregate
from mnist_jobs.lib.stage_cli import InputError, StageError

MAX_CLIENTS = 64
#: How often a waiting client looks at the barrier directory.
POLL_S = 0.1


def split(total: int, clients: int) -> list[int]:
    """``total`` requests in flight over ``clients``: c // N each, the remainder
    to the lowest indexes (a client whose share is 0 sits the point out)."""
    base, rest = divmod(total, clients)
    return [base + (1 if i < rest else 0) for i in range(clients)]


def index_from_env(value: str | None) -> int | None:
    """--client-index's default: the JOB_COMPLETION_INDEX of an Indexed Job's pod."""
    return int(value) if value and value.isdigit() else None


@dataclass(frozen=True)
class Clients:
    count: int
    index: int
    root: Path                  # <out>/clients/<run>
    timeout_s: float = 600.0    # the longest a client waits for the others

    @staticmethod
    def of(count: int, index: int | None, run: str | None, out: Path,
           timeout_s: float = 600.0) -> "Clients":
        """Checked flags; ``count`` 1 needs neither an index nor a run."""
        if not 1 <= count <= MAX_CLIENTS:
            raise InputError("--clients", f"must be in 1..{MAX_CLIENTS} (got {count})")
        if count == 1:
            return Clients(1, 0, out / "clients")
        if index is None:
            raise InputError("--client-index", "needed with --clients > 1 (or "
                                               "JOB_COMPLETION_INDEX in the environment)")
        if not 0 <= index < count:
            raise InputError("--client-index", f"must be in 0..{count - 1} (got {index})")
        if not run or "/" in run or run.startswith("."):
            raise InputError("--clients-run", "a name for this run of the clients is needed "
                                              "with --clients > 1 (one path segment)")
        if timeout_s <= 0:
            raise InputError("--barrier-timeout-s", f"must be > 0 (got {timeout_s})")
        return Clients(count, index, out / "clients" / run, timeout_s)

    @property
    def aggregator(self) -> bool:
        return self.index == 0

    def export(self, index: int, model: str, point: str) -> Path:
        return self.root / str(index) / f"{model}-{point}.json"

    def _done(self) -> Path:
        return self.root / "done"

    def finish(self, state: str, message: str = "") -> None:
        """This client's done marker: the others stop waiting for it."""
        self._done().mkdir(parents=True, exist_ok=True)
        (self._done() / str(self.index)).write_text(
            json.dumps({"state": state, "message": message}))

    def _finished(self, indexes: set[int]) -> dict[int, dict]:
        out = {}
        for i in indexes:
            try:
                out[i] = json.loads((self._done() / str(i)).read_text())
            except (OSError, ValueError):
                continue
        return out

    def _wait(self, what: str, present: Callable[[], set[int]], *, done: bool = False,
              sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> None:
        """Until ``present()`` holds every index; a client that finished without
        arriving (it failed), unless ``done`` markers are what is awaited, or the
        timeout ends the wait with the missing ones named."""
        deadline = clock() + self.timeout_s
        everyone = set(range(self.count))
        while True:
            missing = everyone - present()
            if not missing:
                return
            gone = {} if done else self._finished(missing)
            if gone:
                i, d = min(gone.items())
                raise StageError(f"client {i} finished ({d.get('state')}: "
                                 f"{d.get('message') or 'no message'}) before reaching {what}",
                                 reason="ClientFailed")
            if clock() >= deadline:
                raise StageError(f"clients {', '.join(map(str, sorted(missing)))} of "
                                 f"{self.count} did not reach {what} within "
                                 f"{self.timeout_s:g} s", reason="BarrierTimeout")
            sleep(POLL_S)

    def barrier(self, point: str) -> None:
        """Arrive at ``point`` and wait until every client has."""
        here = self.root / "barrier" / point
        here.mkdir(parents=True, exist_ok=True)
        (here / str(self.index)).touch()
        self._wait(point, lambda: {int(p.name) for p in here.iterdir() if p.name.isdigit()})

    def wait_done(self) -> dict[int, dict]:
        """The aggregator: every client's done marker; a failed one fails the run."""
        everyone = set(range(self.count))
        self._wait("done", lambda: set(self._finished(everyone)), done=True)
        states = self._finished(everyone)
        failed = {i: d for i, d in states.items() if d.get("state") != "Succeeded"}
        if failed:
            i, d = min(failed.items())
            raise StageError(f"client {i} failed: {d.get('message') or d.get('state')}",
                             reason="ClientFailed")
        return states

    def publish_best(self, best: dict[str, int]) -> None:
        path = self.root / "best.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(best))
        os.replace(tmp, path)   # the others never read half a file

    def read_best(self) -> dict[str, int]:
        path = self.root / "best.json"
        self._wait("the aggregator's choice of best points",
                   lambda: set(range(self.count)) if path.exists() else set())
        return json.loads(path.read_text())


#: Measures ``model`` at ``share`` requests in flight, writing the profile export
#: to the path given; returns the client's own parsed row (perf.Row as a dict).
Measure = Callable[[str, int, Path], dict]


def point_row(clients: Clients, model: str, point: str, c: int, active: int, own: dict,
              batch: int, tolerance: float) -> dict:
    """The aggregate of one point over the ``active`` clients that measured it.
    Queue and compute are the server's own averages over the window, which
    perf_analyzer reads from the server (all clients' requests): client 0's
    figures (it measures every point: the lowest index gets the first request)."""
    records = [aggregate.load_records(clients.export(i, model, point))
               for i, share in enumerate(split(c, active)) if share]
    row = aggregate.aggregate(records, c, batch, tolerance)
    row.update(queueUs=int(own["server_queue_us"]), computeUs=int(own["server_compute_us"]))
    return row


def sweep(clients: Clients, models: list[str], points: list[int], measure: Measure,
          batch: int, tolerance: float, log: Callable[[str], None]
          ) -> tuple[dict[str, list[dict]], dict[str, dict]] | None:
    """Every client's part of the sweep and of the scaling check. The aggregator
    returns each model's aggregated rows and its scaling verdict; the others None."""
    own: dict[tuple[str, str], dict] = {}

    def at(model: str, point: str, c: int, active: int) -> None:
        clients.barrier(f"{model}-{point}")
        share = split(c, active)[clients.index] if clients.index < active else 0
        if share:
            own[(model, point)] = measure(model, share, clients.export(clients.index, model, point))
        else:
            log(f"{model} c={c}: client {clients.index} sits this point out")

    half = clients.count // 2
    try:
        for model in models:
            for c in points:
                at(model, f"c{c}", c, clients.count)
        clients.barrier("swept")
        rows: dict[str, list[dict]] = {}
        if clients.aggregator:
            for model in models:
                rows[model] = [point_row(clients, model, f"c{c}", c, clients.count,
                                         own[(model, f"c{c}")], batch, tolerance)
                               for c in points]
            clients.publish_best({m: max(r, key=lambda x: float(x["inferPerSec"]))["c"]
                                  for m, r in rows.items()})
        best = clients.read_best()
        for model in models:
            at(model, f"half-c{best[model]}", best[model], half)
        clients.finish("Succeeded")
    except BaseException as exc:   # a failed client must not leave the others waiting
        clients.finish("Failed", str(exc) or type(exc).__name__)
        raise
    if not clients.aggregator:
        return None
    clients.wait_done()
    scaled = {}
    for model in models:
        c = best[model]
        half_row = point_row(clients, model, f"half-c{c}", c, half, own[(model, f"half-c{c}")],
                             batch, tolerance)
        full_row = next(r for r in rows[model] if r["c"] == c)
        scaled[model] = aggregate.scaling(half_row, full_row)
        log(f"{model} c={c}: {half} client(s) {half_row['inferPerSec']} infer/s, "
            f"{clients.count} clients {full_row['inferPerSec']} infer/s: ratio "
            f"{scaled[model]['ratio']}: {aggregate.verdict(scaled[model])}")
    return rows, scaled


__all__ = ["Clients", "split", "index_from_env", "sweep", "point_row", "MAX_CLIENTS"]
