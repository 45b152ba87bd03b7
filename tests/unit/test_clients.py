"""Distributed load, data plane: the split of a point's concurrency, the aggregate
over hand-made request records, the file barrier, and the sweep protocol of N
clients (threads here, with a stand-in for perf_analyzer)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from mnist_jobs.lib import aggregate as A
from mnist_jobs.lib import loadgen as C
from mnist_jobs.lib.stage_cli import InputError, StageError

MS = 1_000_000   # ns


def records(start_ms: int, end_ms: int, latencies_ms: list[float], every_ms: float = 1.0
            ) -> A.ClientRecords:
    """A client that sends one request every ``every_ms`` from ``start_ms`` on,
    the i-th taking ``latencies_ms[i]``."""
    reqs = tuple((int((start_ms + i * every_ms) * MS), int((start_ms + i * every_ms + l) * MS))
                 for i, l in enumerate(latencies_ms))
    return A.ClientRecords(start_ms * MS, end_ms * MS, reqs)


@pytest.mark.parametrize("total, n, shares", [
    (9, 2, [5, 4]), (8, 2, [4, 4]), (1, 2, [1, 0]), (10, 4, [3, 3, 2, 2]), (3, 1, [3]),
])
def test_a_points_concurrency_is_split_with_the_remainder_to_the_lowest_indexes(total, n, shares):
    assert C.split(total, n) == shares
    assert sum(C.split(total, n)) == total


def test_the_aggregate_keeps_only_the_window_in_which_every_client_was_measuring():
    # client a measures 0..1000 ms, b 400..1500 ms: the common window is 400..1000 ms
    a = records(0, 1000, [2.0] * 1000)
    b = records(400, 1500, [4.0] * 1100)
    row = A.aggregate([a, b], concurrency=6)
    assert row["windowMs"] == 600
    # completed in [400, 1000] ms: a's requests sent at 398..998 ms, b's at 400..996 ms
    in_a = sum(1 for s, d in a.requests if 400 * MS <= d <= 1000 * MS)
    in_b = sum(1 for s, d in b.requests if 400 * MS <= d <= 1000 * MS)
    assert (in_a, in_b) == (601, 597)
    assert row["requests"] == in_a + in_b
    assert row["inferPerSec"] == f"{(in_a + in_b) / 0.6:.1f}"
    assert row["perClient"] == [f"{in_a / 0.6:.1f}", f"{in_b / 0.6:.1f}"]


def test_percentiles_are_over_all_requests_never_an_average_of_each_clients():
    # a fast client with many requests, a slow one with few: the pooled p50 is the
    # fast client's latency, the mean of the two p50s is nowhere near any request
    fast = records(0, 1000, [1.0] * 900, every_ms=1.0)
    slow = records(0, 1000, [100.0] * 100, every_ms=8.0)
    row = A.aggregate([fast, slow], concurrency=2)
    assert row["p50Us"] == 1000
    assert row["p95Us"] == 100_000 and row["p99Us"] == 100_000
    mean_of_p50s = (1000 + 100_000) // 2
    assert row["p50Us"] != mean_of_p50s


def test_nearest_rank_percentile():
    ordered = list(range(1, 101))
    assert [A.percentile(ordered, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert A.percentile([7], 99) == 7


def test_littles_law_is_checked_on_the_aggregate():
    # 2 clients, 1 request in flight each, 2 ms per request: X = 1000/s, W = 2 ms, L = 2
    a = records(0, 1000, [2.0] * 500, every_ms=2.0)
    b = records(0, 1000, [2.0] * 500, every_ms=2.0)
    assert A.aggregate([a, b], concurrency=2)["little"] == "ok"
    assert A.aggregate([a, b], concurrency=8)["little"] == "FAIL(0.25)"


def test_clients_that_never_measured_together_have_no_aggregate():
    with pytest.raises(StageError, match="do not overlap"):
        A.aggregate([records(0, 100, [1.0]), records(200, 300, [1.0])], concurrency=2)


def test_a_profile_export_in_perf_analyzers_layout(tmp_path):
    # outputs are raw tensor bytes: not UTF-8, read with replacement characters
    export = {"experiments": [{"experiment": {"mode": "concurrency", "value": 2},
                               "requests": [{"timestamp": 10, "response_timestamps": [15],
                                             "response_outputs": [{"output": "OUT"}]},
                                            {"timestamp": 12, "response_timestamps": [13, 19]}],
                               "window_boundaries": [9, 14, 20]}], "version": "2.45.0"}
    path = tmp_path / "export.json"
    path.write_bytes(json.dumps(export).encode().replace(b"OUT", b"\xf5\xd3\xff"))
    got = A.load_records(path)
    assert (got.start_ns, got.end_ns) == (9, 20)
    assert got.requests == ((10, 15), (12, 19))   # the last response ends a request
    with pytest.raises(StageError, match="without request records"):
        A.records_of({"experiments": []})


def test_scaling_says_client_when_more_clients_raised_throughput():
    half = {"c": 64, "clients": 1, "inferPerSec": "1000.0"}
    assert A.scaling(half, {"c": 64, "clients": 2, "inferPerSec": "1500.0"}) == {
        "c": 64, "clients": [1, 2], "inferPerSec": ["1000.0", "1500.0"], "ratio": "1.50",
        "limit": "client", "threshold": "1.10"}
    assert A.scaling(half, {"c": 64, "clients": 2, "inferPerSec": "1050.0"})["limit"] == "server"
    # c=1 keeps one client busy however many there are: nothing to compare
    one = A.scaling({"c": 1, "clients": 1, "inferPerSec": "600.0"},
                    {"c": 1, "clients": 1, "inferPerSec": "610.0"})
    assert one["limit"] == "untested"
    assert A.verdict(one) == "untested: c=1 keeps only 1 client(s) busy, as many as half of them"


# --------------------------------------------------------------------------- the barrier
def test_flags_are_checked_and_one_client_needs_no_index_or_run(tmp_path):
    assert C.Clients.of(1, None, None, tmp_path).count == 1
    for args, flag in [((2, None, "r"), "--client-index"), ((2, 2, "r"), "--client-index"),
                       ((2, 0, None), "--clients-run"), ((2, 0, "a/b"), "--clients-run"),
                       ((0, 0, "r"), "--clients"), ((65, 0, "r"), "--clients")]:
        with pytest.raises(InputError, match=f"^{flag}:"):
            C.Clients.of(*args, tmp_path)
    assert C.index_from_env("3") == 3 and C.index_from_env(None) is None


def test_the_barrier_holds_every_client_until_the_last_arrives(tmp_path):
    first = C.Clients.of(2, 0, "run", tmp_path, timeout_s=10)
    second = C.Clients.of(2, 1, "run", tmp_path, timeout_s=10)
    passed = []
    waiter = threading.Thread(target=lambda: (first.barrier("p"), passed.append(time.monotonic())))
    waiter.start()
    time.sleep(0.5)
    assert not passed                     # alone at the barrier: still waiting
    arrived = time.monotonic()
    second.barrier("p")
    waiter.join(5)
    assert passed and passed[0] >= arrived
    assert sorted(p.name for p in (tmp_path / "clients" / "run" / "barrier" / "p").iterdir()) \
        == ["0", "1"]


def test_a_barrier_timeout_names_the_missing_clients(tmp_path):
    me = C.Clients.of(3, 0, "run", tmp_path, timeout_s=0.3)
    with pytest.raises(StageError, match=r"clients 1, 2 of 3 did not reach c4 within 0.3 s"):
        me.barrier("c4")


def test_a_client_that_failed_releases_the_others_at_once(tmp_path):
    C.Clients.of(2, 1, "run", tmp_path).finish("Failed", "perf_analyzer exited 1")
    me = C.Clients.of(2, 0, "run", tmp_path, timeout_s=30)
    started = time.monotonic()
    with pytest.raises(StageError, match="client 1 finished \\(Failed: perf_analyzer exited 1\\)"):
        me.barrier("c1")
    assert time.monotonic() - started < 5


def test_runs_do_not_share_barriers(tmp_path):
    (tmp_path / "clients" / "old" / "barrier" / "c1").mkdir(parents=True)
    (tmp_path / "clients" / "old" / "barrier" / "c1" / "1").touch()
    with pytest.raises(StageError, match="did not reach"):
        C.Clients.of(2, 0, "new", tmp_path, timeout_s=0.2).barrier("c1")


# --------------------------------------------------------------------------- the sweep
def fake_measure(latency_ms: float):
    """A stand-in for perf_analyzer: ``share`` requests in flight, each taking
    ``latency_ms``, recorded over one second in its layout; calls noted."""
    calls = []

    def measure(model: str, share: int, export) -> dict:
        calls.append((export.parent.name, model, export.stem, share))
        now = time.time_ns() // MS
        reqs = [{"timestamp": int((now + k * latency_ms / share) * MS),
                 "response_timestamps": [int((now + k * latency_ms / share + latency_ms) * MS)]}
                for k in range(int(1000 / latency_ms * share))]
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_text(json.dumps({"experiments": [{"requests": reqs, "window_boundaries":
                                                       [now * MS, (now + 1000) * MS]}]}))
        return {"server_queue_us": 10, "server_compute_us": 20}
    return measure, calls


def test_n_clients_split_each_point_and_client_0_aggregates_and_checks_scaling(tmp_path):
    measure, calls = fake_measure(5.0)
    found: dict[int, object] = {}

    def client(i: int) -> None:
        me = C.Clients.of(2, i, "run", tmp_path, timeout_s=30)
        found[i] = C.sweep(me, ["m"], [1, 5], measure, 1, 0.2, lambda text: None)

    threads = [threading.Thread(target=client, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert found[1] is None                       # only client 0 aggregates
    rows, scaled = found[0]
    # c=1: client 1 sits out; c=5: 3 + 2; the best point (5) again with one client: 5
    assert sorted(calls) == sorted([("0", "m", "m-c1", 1), ("0", "m", "m-c5", 3),
                                    ("1", "m", "m-c5", 2), ("0", "m", "m-half-c5", 5)])
    assert [(r["c"], r["clients"]) for r in rows["m"]] == [(1, 1), (5, 2)]
    assert rows["m"][0]["queueUs"] == 10 and rows["m"][0]["computeUs"] == 20
    assert scaled["m"]["clients"] == [1, 2] and scaled["m"]["c"] == 5
    assert scaled["m"]["limit"] == "server"    # the same latency whatever the clients
    assert json.loads((tmp_path / "clients" / "run" / "done" / "1").read_text())["state"] \
        == "Succeeded"


def test_a_result_of_64_clients_still_fits_the_termination_message():
    from mnist_jobs import bench
    from mnist_jobs.lib.stage_cli import write_result
    row = lambda c: {"c": c, "clients": 64, "inferPerSec": "123456.7", "p50Us": 1234,  # noqa: E731
                     "p95Us": 23456, "p99Us": 34567, "little": "ok", "windowMs": 4987,
                     "requests": 987654, "perClient": ["1929.0"] * 64, "queueUs": 12,
                     "computeUs": 345}
    sc = A.scaling({"c": 257, "clients": 32, "inferPerSec": "100000.0"},
                   {"c": 257, "clients": 64, "inferPerSec": "123456.7"})
    models = {m: {**bench.model_summary([row(c) for c in (1, 65, 129, 193, 257)], False),
                  "scaling": sc} for m in ("mnist_onnx", "mnist_trt", "mnist_bls")}
    result = bench.shrink({"protocol": "grpc", "clients": 64, "aggregation": bench.AGGREGATION,
                           "models": models, "out": "/work/bench/grpc",
                           "message": "64 clients; " + "; ".join(
                               f"{m}: the client was the limit (32 client(s) 100000.0, "
                               f"64 clients 123456.7 infer/s at c=257)" for m in models)})
    write_result(None, {"stage": "bench", "state": "Succeeded", **result})   # raises if too big
    assert result["models"]["mnist_bls"]["scaling"]["limit"] == "client"
