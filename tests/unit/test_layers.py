"""Import layers hold (import-linter, contracts in pyproject.toml)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_every_contract_is_kept():
    out = lint()
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"Contracts: 5 kept, 0 broken", out.stdout), out.stdout


def test_a_reverse_import_breaks_the_layers(tmp_path):
    """The contract really reads our code: a pure module importing kopf, or a
    lower layer importing a higher one, is reported as broken."""
    for pkg in ("operator", "jobs"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    status = tmp_path / "operator" / "mnist_operator" / "core" / "status.py"
    status.write_text(status.read_text() + "\nfrom mnist_operator.core import reconcile  # noqa\n"
                      "from mnist_operator.tools import cli  # noqa\nimport kopf  # noqa\n")
    client = tmp_path / "jobs" / "mnist_jobs" / "client.py"
    client.write_text(client.read_text() + "\nfrom mnist_jobs import bench  # noqa\n")
    out = subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": f"{tmp_path / 'operator'}:{tmp_path / 'jobs'}",
                                           "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    for arrow in ("mnist_operator.core.status -> mnist_operator.core.reconcile",   # core-order
                  "mnist_operator.core.status -> mnist_operator.tools.cli",        # operator-layers
                  "mnist_operator.core.status -> kopf",                            # pure-core
                  "mnist_jobs.client -> mnist_jobs.bench"):                        # stages-over-lib
        assert arrow in out.stdout, out.stdout
    assert "Contracts: 1 kept, 4 broken" in out.stdout, out.stdout
