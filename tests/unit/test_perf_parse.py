"""perf_analyzer CSV parsing and the Little's-law check, on real perf_analyzer
output (tests/unit/data/perf-*.csv, written by perf_analyzer 2.45 against the
pytriton tritonserver on this machine)."""
from __future__ import annotations

import csv
import json
import io
from pathlib import Path

import pytest

from mnist_jobs.lib import perf

DATA = Path(__file__).parent / "data"


def real(name: str) -> str:
    return (DATA / name).read_text()


def test_rows_fields_and_little():
    text = real("perf-range-mnist_bls-grpc.csv")
    raw = list(csv.DictReader(io.StringIO(text)))
    rows = perf.parse_csv(text)
    assert [r.concurrency for r in rows] == sorted(int(r["Concurrency"]) for r in raw)
    for r, rec in zip(rows, sorted(raw, key=lambda x: int(x["Concurrency"]))):
        assert r.throughput == float(rec["Inferences/Second"])
        assert r.p99_us == int(rec["p99 latency"]) and r.p50_us == int(rec["p50 latency"])
        assert r.server_queue_us == int(rec["Server Queue"])
        assert r.server_compute_us == sum(int(rec[k]) for k in (
            "Server Compute Input", "Server Compute Infer", "Server Compute Output"))
        assert r.avg_latency_us == sum(int(rec[k]) for k in perf.COMPONENTS)
        expected = r.throughput * r.avg_latency_us / 1e6 / r.concurrency
        assert r.little_ratio == pytest.approx(expected)
        assert r.little_ok                                 # a real closed loop obeys it


def test_rows_are_resorted_by_concurrency():
    text = real("perf-range-mnist_bls-grpc.csv")
    header, *lines = text.strip().splitlines()
    shuffled = "\n".join([header, *reversed(lines)])      # perf_analyzer sorts by throughput
    assert [r.concurrency for r in perf.parse_csv(shuffled)] == [1, 64]


@pytest.mark.parametrize("name", ["perf-mnist_onnx-grpc.csv", "perf-mnist_bls-grpc.csv"])
def test_merged_bench_csvs(name):
    rows = perf.parse_csv(real(name))
    assert [r.concurrency for r in rows] == [1, 64]
    assert all(r.little_ok for r in rows)


def test_a_row_breaking_littles_law_is_flagged_not_dropped():
    # the real c=1 row relabelled as concurrency 8: 8 != X * W, so it must fail
    header, first, *rest = real("perf-range-mnist_bls-grpc.csv").strip().splitlines()
    broken = "\n".join([header, "8" + first[first.index(","):], *rest])
    rows = perf.parse_csv(broken)
    assert [r.concurrency for r in rows] == [8, 64]
    assert not rows[0].little_ok and rows[0].little_ratio < 0.2
    assert rows[1].little_ok


def test_batch_size_enters_littles_law():
    rows = perf.parse_csv(real("perf-range-mnist_bls-grpc.csv"), batch=4)
    assert all(not r.little_ok for r in rows)             # 4x fewer requests than inferences
    assert rows[0].little_ratio == pytest.approx(perf.parse_csv(
        real("perf-range-mnist_bls-grpc.csv"))[0].little_ratio / 4)


def test_bad_csvs():
    with pytest.raises(perf.PerfParseError, match="lacks columns"):
        perf.parse_csv("Concurrency,Inferences/Second\n1,10\n")
    with pytest.raises(perf.PerfParseError, match="no rows"):
        perf.parse_csv(real("perf-mnist_onnx-grpc.csv").splitlines()[0] + "\n")
    with pytest.raises(perf.PerfParseError, match="empty"):
        perf.parse_csv("")


@pytest.mark.parametrize("text, expected", [
    ("1:257:64", (1, 257, 64)), ("4", (4, 4, 1)), ("2:8", (2, 8, 1)),
])
def test_concurrency_ranges(text, expected):
    assert perf.parse_concurrency(text) == expected


def test_concurrency_values_include_end_like_perf_analyzer():
    assert perf.concurrency_values(1, 257, 64) == [1, 65, 129, 193, 257]


@pytest.mark.parametrize("text, message", [
    ("9:1:1", "end 1 < start 9"), ("1:9:0", "step"), ("0:4:1", "start"),
    ("a:b", "integers"), ("1:2:3:4", "START:END:STEP"),
])
def test_bad_concurrency_ranges(text, message):
    with pytest.raises(ValueError, match=message):
        perf.parse_concurrency(text)


def test_command_line():
    cmd = perf.command("pa", "mnist_bls", "h:1", "grpc", 1, perf.Load("1:9:8"),
                       perf.Window("count_windows", 500, 40, 20), Path("o.csv"), ["mnist_onnx"])
    assert cmd[:3] == ["pa", "-m", "mnist_bls"]
    for pair in (["-i", "grpc"], ["-u", "h:1"], ["-b", "1"], ["--concurrency-range", "1:9:8"],
                 ["--measurement-mode", "count_windows"], ["--measurement-request-count", "40"],
                 ["-s", "20"], ["--shape", "input:1,28,28"], ["-f", "o.csv"],
                 ["--bls-composing-models", "mnist_onnx"]):
        i = cmd.index(pair[0])
        assert cmd[i:i + 2] == pair
    assert "--measurement-interval" not in cmd
    cmd = perf.command("pa", "m", "h:1", "http", 1, perf.Load("1"),
                       perf.Window("time_windows", 500, 40, 20), Path("o"))
    assert cmd[cmd.index("--measurement-interval") + 1] == "500"
    assert "--bls-composing-models" not in cmd


def test_long_sweep_result_is_shrunk_under_the_termination_limit():
    from mnist_jobs.bench import compact_row, shrink
    rows = perf.parse_csv(real("perf-range-mnist_bls-grpc.csv"))
    flagged = perf.parse_csv(real("perf-range-mnist_bls-grpc.csv"), batch=4)  # fails Little
    many = [compact_row([r]) for r in rows] * 20 + [compact_row([flagged[0]])]
    result = {"models": {m: {"rows": list(many), "best": {}} for m in ("a", "b", "c")},
              "out": "/x"}
    small = shrink(result)
    assert len(json.dumps(small)) < 3300
    for entry in small["models"].values():          # the flagged row survives
        assert entry["rows"] and all(r[3] != "ok" for r in entry["rows"])
    short = {"models": {"a": {"rows": [compact_row([rows[0]])]}}, "out": "/x"}
    assert shrink(dict(short)) == short


# --------------------------------------------------------------------------- request-rate mode
# perf_analyzer 2.45 --request-rate-range R:R:1 --request-distribution poisson against the
# pytriton tritonserver here: 200/s it sends, 30000/s it cannot (and says so).
def test_request_rate_rows_report_achieved_rate_and_in_flight():
    text = real("perf-rate-range-mnist_onnx-grpc.csv")
    rows = perf.parse_csv(text)
    assert [r.request_rate for r in rows] == [100.0, 250.0, 400.0]
    assert all(r.concurrency == 0 and r.little_ok for r in rows)   # no fixed concurrency
    r = rows[1]
    assert r.achieved_rate == pytest.approx(246.668) and r.kept_up
    latency_s = (11 + 912 + 1138 + 53 + 1546 + 375 + 3) / 1e6
    assert r.in_flight == pytest.approx(246.668 * latency_s)      # Little: L = X W
    assert r.load == 250.0


def test_a_rate_the_client_cannot_send_is_flagged_from_its_warning_and_its_numbers():
    row = perf.parse_csv(real("perf-rate-poisson-30000-mnist_onnx-grpc.csv"))[0]
    assert row.request_rate == 30000 and row.achieved_rate == pytest.approx(1476.4)
    assert not row.kept_up                                        # 5 % of the rate asked for
    log = real("perf-rate-poisson-30000-mnist_onnx-grpc.log")
    assert perf.behind_warning(log) == 99.93 and perf.send_rate(log) == 1480.77
    perf.mark_keep_up(row, log)
    assert not row.kept_up and row.delayed_percent == 99.93
    assert row.extra["send_rate"] == 1480.77


def test_a_rate_the_client_sends_keeps_up_and_prints_no_warning():
    row = perf.parse_csv(real("perf-rate-poisson-200-mnist_onnx-grpc.csv"))[0]
    log = real("perf-rate-poisson-200-mnist_onnx-grpc.log")
    assert perf.behind_warning(log) is None and perf.send_rate(log) is None
    perf.mark_keep_up(row, log)
    assert row.kept_up and row.delayed_percent == 0.0
    # the warning alone flags a point even where the completions kept up (seen here on a
    # busy machine at 200/s: 205.5 infer/s, these two lines printed)
    late = perf.mark_keep_up(perf.parse_csv(real("perf-rate-poisson-200-mnist_onnx-grpc.csv"))[0],
                             BUSY_200)
    assert not late.kept_up and late.delayed_percent == 19.11


BUSY_200 = ("    Avg send request rate: 204.15 infer/sec\n    [WARNING] Perf Analyzer was not able "
            "to keep up with the desired request rate. 19.11% of the requests were delayed. \n")


def test_request_rate_command_replaces_the_concurrency_range():
    cmd = perf.command("pa", "m", "h:1", "grpc", 1, perf.Load("1", "300:300:1", "poisson"),
                       perf.Window("time_windows", 500, 40, 20), Path("o"))
    assert "--concurrency-range" not in cmd
    i = cmd.index("--request-rate-range")
    assert cmd[i:i + 4] == ["--request-rate-range", "300:300:1", "--request-distribution",
                            "poisson"]


def test_compact_rate_row_and_its_shrunk_form():
    from mnist_jobs.bench import compact_row, shrink
    behind = perf.mark_keep_up(perf.parse_csv(real("perf-rate-poisson-30000-mnist_onnx-grpc.csv"))[0],
                               real("perf-rate-poisson-30000-mnist_onnx-grpc.log"))
    row = compact_row([behind])
    assert row["rate"] == 30000 and row["achieved"] == "1476.4" and "little" not in row
    assert row["keptUp"] == "BEHIND(0.05, 99.9% late)"
    ok = compact_row(perf.parse_csv(real("perf-rate-range-mnist_onnx-grpc.csv"))[:1])
    result = {"loadMode": "requestRate", "out": "/x",
              "models": {m: {"rows": [ok] * 60 + [row], "best": {}} for m in ("a", "b", "c")}}
    small = shrink(result)
    assert small["rowFormat"] == ["rate", "inferPerSec", "p99Us", "keptUp"]
    assert all(r[3] != "ok" for e in small["models"].values() for r in e["rows"])
    assert "whose client fell behind" in small["rowsNote"]


def test_a_short_count_within_poisson_noise_is_not_behind():
    # 100/s for ~1.5 s is 150 ± 12 requests: 128 of them (85/s) is noise, 60 is not
    assert not perf.short_beyond_noise(100.0, 85.4, 128)
    assert perf.short_beyond_noise(100.0, 40.0, 60)
    assert perf.short_beyond_noise(30000.0, 1476.4, 2673)
    assert not perf.short_beyond_noise(200.0, 207.9, 375)          # above the rate asked for
    assert perf.request_count(real("perf-rate-poisson-30000-mnist_onnx-grpc.log")) == 2673
