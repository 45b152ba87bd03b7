"""The operator image, tested without a Docker engine: hadolint on the
Dockerfile, and the Dockerfile's install steps replayed into a fresh venv from
exactly the files its build context admits (.dockerignore)."""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .tools import ROOT, VENV_BIN, require_tool

DOCKERFILE = ROOT / "Dockerfile"
UV_CACHE = Path(os.environ.get("MNIST_SERVING_CACHE", Path.home() / ".cache" / "mnist-serving")) / "uv"


def dockerfile_arg(name: str) -> str:
    match = re.search(rf'^ARG {name}="?([^"\n]*)"?$', DOCKERFILE.read_text(), re.M)
    assert match, f"Dockerfile declares no ARG {name}"
    return match.group(1)


def build_context(dest: Path) -> list[str]:
    """Copy the files .dockerignore admits (an allowlist: '*' then '!path') into dest."""
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [l for l in lines if l and not l.startswith("#")]
    assert rules[0] == "*", ".dockerignore is expected to be an allowlist starting with '*'"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    excluded = [r.removeprefix("**/") for r in rules[1:] if not r.startswith("!")]
    copied = []
    for top in allowed:
        src = ROOT / top
        for path in [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(ROOT)
            if any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in excluded):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            copied.append(str(rel))
    return copied


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


def test_dockerfile_passes_hadolint():
    hadolint = require_tool("hadolint")
    out = run([hadolint, DOCKERFILE])
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_multistage_non_root_and_runs_the_operator():
    text = DOCKERFILE.read_text()
    base = dockerfile_arg("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image not pinned to a 3.11 patch: {base}"
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "AS builder" in text
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert 'ENTRYPOINT ["mnist-serving", "operator"]' in text
    assert "/opt/mnist-serving/jobs/mnist_jobs" in text
    assert "torch" not in dockerfile_arg("OPERATOR_REQUIREMENTS")


def test_every_base_dependency_is_pinned_in_the_image():
    """The wheel goes in with --no-deps: a dependency added to pyproject but not to
    OPERATOR_REQUIREMENTS would be missing from the image (prometheus-client, say)."""
    import tomllib

    def name(req: str) -> str:
        return re.split(r"[<>=!~\[; ]", req, 1)[0].lower().replace("_", "-")
    base = {name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    pinned = {name(r) for r in shlex.split(dockerfile_arg("OPERATOR_REQUIREMENTS"))}
    assert base <= pinned, f"pyproject dependencies missing from the Dockerfile: {sorted(base - pinned)}"
    assert all("==" in r for r in shlex.split(dockerfile_arg("OPERATOR_REQUIREMENTS")))


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory):
    """The builder stage, replayed: wheel from the build context, fresh venv,
    wheel --no-deps plus the pinned operator requirements."""
    tmp = tmp_path_factory.mktemp("image")
    ctx = tmp / "context"
    files = build_context(ctx)
    assert "pyproject.toml" in files and any(f.startswith("jobs/mnist_jobs/") for f in files)
    assert not any("__pycache__" in f for f in files)
    wheel = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--wheel-dir", tmp / "dist", ctx])
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("mnist_serving-*.whl")
    venv = tmp / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(UV_CACHE)}
    uv = VENV_BIN / "uv"
    for cmd in ([uv, "venv", "-q", "--python", sys.executable, venv],
                [uv, "pip", "install", "-q", "--python", venv / "bin" / "python", "--no-deps", whl],
                [uv, "pip", "install", "-q", "--python", venv / "bin" / "python",
                 *shlex.split(dockerfile_arg("OPERATOR_REQUIREMENTS"))]):
        out = run(cmd, env=env)
        assert out.returncode == 0, f"{cmd}: {out.stderr[-3000:]}"
    return venv


def test_image_venv_has_no_ml_stack(operator_venv):
    py = operator_venv / "bin" / "python"
    for heavy in ("torch", "onnxruntime", "tritonclient"):
        out = run([py, "-c", f"import {heavy}"])
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, f"{heavy} is importable in the image venv"
    out = run([py, "-c", "import kopf, kubernetes, yaml, jinja2, prometheus_client, mnist_operator.cluster.handlers, "
                          "mnist_jobs"])
    assert out.returncode == 0, out.stderr


def test_entrypoint_help_runs_in_the_image_venv(operator_venv):
    cli = operator_venv / "bin" / "mnist-serving"
    top = run([cli, "--help"])
    assert top.returncode == 0 and "operator" in top.stdout, top.stdout + top.stderr
    op = run([cli, "operator", "--help"])  # the image's ENTRYPOINT, exactly
    assert op.returncode == 0, f"`mnist-serving operator --help` failed in the operator venv:\n{op.stderr[-3000:]}"
    assert "usage" in (op.stdout + op.stderr).lower()


def test_jobs_package_copies_out_with_the_documented_cp(tmp_path):
    """The init container's command from the Dockerfile header, run on the
    layout the image has: the copied package imports with only PYTHONPATH set."""
    line = next(l for l in DOCKERFILE.read_text().splitlines() if l.lstrip("# ").startswith("cp -R "))
    cmd = shlex.split(line.lstrip("# ").split("(")[0])
    image_root = tmp_path / "image"
    shutil.copytree(ROOT / "jobs" / "mnist_jobs", image_root / "opt/mnist-serving/jobs/mnist_jobs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    stages = tmp_path / "mnt" / "stages"
    stages.mkdir(parents=True)
    cmd = [c.replace("/opt/", f"{image_root}/opt/").replace("/mnt/stages/", f"{stages}/") for c in cmd]
    assert run(cmd).returncode == 0
    out = run([sys.executable, "-S", "-c", "import mnist_jobs, mnist_jobs.lib.stage_cli; print(mnist_jobs.__file__)"],
              env={"PYTHONPATH": str(stages)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(stages))
    assert (stages / "mnist_jobs" / "templates").is_dir()


def test_every_symlink_in_the_image_sources_points_into_the_build_context():
    """jobs/mnist_jobs/templates/model_repo links to ../../../model_repo: with
    model_repo/ outside the context the image held a dangling link and every repo
    stage failed in a real container (found on the real-node tier)."""
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()]
    admitted = [l[1:].rstrip("/") for l in lines if l.startswith("!")]
    links = [p for top in ("operator", "jobs") for p in (ROOT / top).rglob("*") if p.is_symlink()]
    assert links, "expected the model_repo templates link under jobs/"
    for link in links:
        target = link.resolve().relative_to(ROOT)
        assert any(target.parts[0] == a or str(target) == a for a in admitted), \
            f"{link.relative_to(ROOT)} -> {target}: not in the build context (.dockerignore)"
    assert "cp -RL" in DOCKERFILE.read_text(), "the stage package must be copied with links followed"
