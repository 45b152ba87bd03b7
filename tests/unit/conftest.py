"""Fixtures shared by the unit tests."""
import pytest


@pytest.fixture
def artifacts(tmp_path):
    """An export stage's output directory, as far as the repo stage reads it."""
    art = tmp_path / "artifacts"
    art.mkdir()
    (art / "model.onnx").write_bytes(b"onnx bytes are copied, not read")
    return art


@pytest.fixture
def bench_surroundings(monkeypatch):
    """What the bench stage finds around it, faked: perf_analyzer on the PATH, Triton
    serving mnist_onnx, and Triton's version and configs; a test fakes perf_analyzer's
    runs itself (bench.subprocess.run)."""
    from mnist_jobs import bench
    from mnist_jobs.lib import perf
    monkeypatch.setattr(perf, "find_perf_analyzer", lambda: "perf_analyzer")
    monkeypatch.setattr(bench, "served_models", lambda protocol, url: {"mnist_onnx": "READY"})
    monkeypatch.setattr(bench.provenance, "served",
                        lambda protocol, url, models: {"triton": "2.45.0", "configs": {}})
