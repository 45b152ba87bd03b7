"""The pytriton build's python-backend stub and numpy 2 (a silent failure turned into one line)."""
from pathlib import Path

import pytest

from mnist_jobs.lib import triton
from mnist_jobs.lib.stage_cli import StageError


def _install(source: str) -> triton.TritonInstall:
    root = Path("/opt/x")
    return triton.TritonInstall(root / "bin/tritonserver", root / "backends", None, None, source)


@pytest.mark.parametrize("version", ["2.0.0", "2.5.2", "10.1"])
def test_pytriton_stub_with_numpy_2_is_refused_with_the_fix(version):
    problem = triton.stub_numpy_problem(_install("pytriton"), version)
    assert f"numpy {version}" in problem and "numpy<2" in problem


@pytest.mark.parametrize("source,version", [("pytriton", "1.26.4"), ("env", "2.5.2"),
                                            ("path", "2.1.0"), ("pytriton", "0")])
def test_other_builds_or_numpy_1_pass(source, version):
    assert triton.stub_numpy_problem(_install(source), version) is None


def test_server_refuses_to_start_when_the_check_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(triton, "find_tritonserver", lambda: _install("pytriton"))
    monkeypatch.setattr(triton, "_numpy_version", lambda: "2.5.2")
    with pytest.raises(StageError) as err:
        triton.TritonServer(tmp_path, 8000, 8001, 8002)
    assert err.value.reason == "IncompatibleNumpy"


def _numpy_dist(folder: Path, version: str) -> str:
    meta = folder / f"numpy-{version}.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: numpy\nVersion: {version}\n")
    return str(folder)


def test_the_check_sees_the_numpy_of_site_packages_before_pythonpath(monkeypatch, tmp_path):
    site = _numpy_dist(tmp_path / "site-packages", "2.1.0")
    first_on_path = _numpy_dist(tmp_path / "numpy1", "1.26.4")
    monkeypatch.setattr(triton.sysconfig, "get_paths", lambda: {"purelib": site, "platlib": site})
    monkeypatch.setattr(triton.sys, "path", [first_on_path, site])
    assert triton._numpy_version() == "2.1.0"   # what the stub imports, not what we import
    monkeypatch.setattr(triton.sysconfig, "get_paths",
                        lambda: {"purelib": str(tmp_path / "empty"), "platlib": str(tmp_path / "empty")})
    assert triton._numpy_version() == "1.26.4"
    monkeypatch.setattr(triton.sys, "path", [])
    assert triton._numpy_version() == "0"
