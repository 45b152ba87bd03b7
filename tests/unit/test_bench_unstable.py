"""The bench stage on a busy machine: a point perf_analyzer cannot stabilise is
measured once more within a wider bound, a point where it could not connect is
measured once more after a pause, and the result says so. perf_analyzer itself
is replaced by its real CSV and its real error lines."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mnist_jobs import bench
from mnist_jobs.lib.stage_cli import StageError

CSV = (Path(__file__).parent / "data" / "perf-mnist_onnx-grpc.csv").read_text()
UNSTABLE_OUTPUT = "Failed to obtain stable measurement within 10 measurement windows for " \
                  "concurrency 4. Please try to increase the --measurement-interval.\n"


CONNECT_OUTPUT = "Thread [9] had error: failed to connect to all addresses; last error: " \
                 "UNKNOWN: No such file or directory\n"


class FakePerfAnalyzer:
    """Unstable until the stability bound (-s) reaches ``stable_at``."""

    def __init__(self, stable_at: int, connect_failures: int = 0):
        self.stable_at, self.bounds = stable_at, []
        self.connect_failures = connect_failures   # the first runs that cannot connect

    def __call__(self, cmd, capture_output, text, timeout):
        if cmd[1:] == ["--version"]:   # the environment fingerprint asks, as of the real one
            return subprocess.CompletedProcess(cmd, 0, "Perf Analyzer Version 2.45.0 (commit 3c1eb13)\n", "")
        bound = int(cmd[cmd.index("-s") + 1])
        self.bounds.append(bound)
        if len(self.bounds) <= self.connect_failures:
            return subprocess.CompletedProcess(cmd, 99, "", CONNECT_OUTPUT)
        if bound < self.stable_at:
            return subprocess.CompletedProcess(cmd, 1, "", UNSTABLE_OUTPUT)
        Path(cmd[cmd.index("-f") + 1]).write_text(CSV)
        return subprocess.CompletedProcess(cmd, 0, "ok\n", "")


@pytest.fixture
def fake(monkeypatch, bench_surroundings):
    def install(stable_at: int, connect_failures: int = 0) -> FakePerfAnalyzer:
        pa = FakePerfAnalyzer(stable_at, connect_failures)
        monkeypatch.setattr(bench.subprocess, "run", pa)
        monkeypatch.setattr(bench, "RECONNECT_PAUSE_S", 0)
        return pa
    return install


def run(tmp_path: Path, stability: int = 10) -> dict:
    return bench.run_bench(bench.BenchConfig("127.0.0.1:8001", "grpc", ["mnist_onnx"], 1, "4:4:1", "time_windows",
                           500, 50, stability, tmp_path / "bench"))


def test_an_unstable_point_is_measured_again_within_twice_the_bound(tmp_path, fake):
    pa = fake(stable_at=20)
    result = run(tmp_path)
    assert pa.bounds == [10, 20]
    assert result["widened"] == [{"model": "mnist_onnx", "c": 4, "stabilityPercentage": 20}]
    assert result["models"]["mnist_onnx"]["best"]["inferPerSec"]


def test_a_stable_point_is_measured_once_and_says_nothing(tmp_path, fake):
    pa = fake(stable_at=10)
    result = run(tmp_path)
    assert pa.bounds == [10] and "widened" not in result


def test_still_unstable_within_the_wider_bound_is_measured_in_fixed_windows_and_flagged(
        tmp_path, fake):
    pa = fake(stable_at=50)
    result = run(tmp_path)
    assert pa.bounds == [10, 20, 100]
    assert result["widened"] == [{"model": "mnist_onnx", "c": 4, "stabilityPercentage": 100,
                                  "unstable": True}]
    best = result["models"]["mnist_onnx"]["best"]
    assert best["unstable"] is True and best["inferPerSec"]


def test_a_point_never_measured_even_in_fixed_windows_fails_the_stage(tmp_path, fake):
    pa = fake(stable_at=101)
    with pytest.raises(StageError) as err:
        run(tmp_path)
    assert pa.bounds == [10, 20, 100]
    assert "mnist_onnx c=4: Failed to obtain stable measurement" in str(err.value)


def test_a_point_that_could_not_connect_is_measured_once_more_and_said(tmp_path, fake):
    pa = fake(stable_at=10, connect_failures=1)
    result = run(tmp_path)
    assert pa.bounds == [10, 10]
    assert result["reconnected"] == [{"model": "mnist_onnx", "c": 4,
                                      "error": CONNECT_OUTPUT.strip()}]
    assert result["models"]["mnist_onnx"]["best"]["inferPerSec"]


def test_a_point_that_cannot_connect_twice_fails_the_stage_naming_it(tmp_path, fake):
    pa = fake(stable_at=10, connect_failures=2)
    with pytest.raises(StageError) as err:
        run(tmp_path)
    assert pa.bounds == [10, 10]
    assert "mnist_onnx c=4: Thread [9] had error: failed to connect to all addresses" in str(err.value)
