"""Session fixtures for the serving tests: a trained + exported model, a
model repository and ONE running tritonserver (free ports, always stopped).

The model comes from the real train and export stage CLIs (offline MNIST
subset, one short epoch). Held-out digits for the accuracy checks come from
``mnist_jobs.lib.data`` (the test split, preprocessed as in training), and the
reference accuracy is ONNX Runtime in this process on the same digits.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.harness.stage_flags import spec_flags

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 500


def run_cli(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """A stage with the flags the operator passes for a resource with every default, then
    the test's own (the last of a repeated flag wins)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "jobs") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", f"mnist_jobs.{module}", *spec_flags(module), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def last_json(stdout: str) -> dict:
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


@dataclass
class Model:
    workdir: Path
    artifacts: Path
    data_dir: Path
    images: np.ndarray       # held-out digits [N,1,28,28] float32, preprocessed
    labels: np.ndarray
    ort_predictions: np.ndarray
    ort_accuracy: float
    train_result: dict


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Model:
    work = tmp_path_factory.mktemp("work")
    data_dir, art = work / "data", work / "artifacts"
    train = run_cli("train", "--data-source", "offline", "--data-dir", str(data_dir),
                    "--epochs", "1", "--batch-size", "64", "--learning-rate", "0.01",
                    "--momentum", "0.9", "--seed", "0", "--device", "cpu", "--out", str(art),
                    "--result", str(work / "results" / "train.json"))
    assert train.returncode == 0, train.stderr[-2000:]
    export = run_cli("export", "--checkpoint", str(art / "model.pt"), "--out", str(art),
                     "--opset", "17", "--data-source", "offline", "--data-dir", str(data_dir),
                     "--result", str(work / "results" / "export.json"))
    assert export.returncode == 0, export.stderr[-2000:]
    assert (art / "model.onnx").is_file()

    sys.path.insert(0, str(ROOT / "jobs"))
    from mnist_jobs.client import load_test_digits
    import onnxruntime as ort
    images, labels = load_test_digits("offline", data_dir, SAMPLES)
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    preds = sess.run(["output"], {"input": images})[0].argmax(1)
    return Model(work, art, data_dir, images, labels, preds, float((preds == labels).mean()),
                 last_json(train.stdout))


@pytest.fixture(scope="session")
def model_repo(trained_model) -> tuple[Path, dict]:
    repo = trained_model.workdir / "model_repo"
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(repo),
                  "--models", "onnx,tensorrt,bls", "--max-batch-size", "128", "--instances", "1",
                  "--instance-kind", "auto", "--preferred-batch-sizes", "32,64",
                  "--max-queue-delay-us", "100", "--cpu-only")
    assert res.returncode == 0, res.stderr
    result = last_json(res.stdout)
    # A test-only copy of the BLS model whose downstream model does not exist:
    # every request of a batch it receives must get the downstream error.
    broken = repo / "mnist_bls_missing"
    shutil.copytree(repo / "mnist_bls", broken)
    cfg = (broken / "config.pbtxt").read_text()
    cfg = cfg.replace('name: "mnist_bls"', 'name: "mnist_bls_missing"')
    cfg = cfg.replace('string_value: "mnist_onnx"', 'string_value: "mnist_missing"')
    (broken / "config.pbtxt").write_text(cfg)
    return repo, result


def triton_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of live processes whose command line mentions ``marker``
    (tritonserver has --model-repository=<repo>; each python stub gets its
    model's path), ignoring zombies."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (pid_dir / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        cmd = " ".join(argv)
        is_pytest = any(a == "pytest" or a.endswith("/pytest") for a in argv[:3])
        if marker in cmd and state != "Z" and not is_pytest:
            found.append((int(pid_dir.name), cmd))
    return found


@pytest.fixture(scope="session")
def triton(model_repo):
    sys.path.insert(0, str(ROOT / "jobs"))
    from mnist_jobs.lib.triton import TritonServer, free_ports
    repo, _ = model_repo
    h, g, m = free_ports(3)
    server = TritonServer(repo, h, g, m, log_path=repo.parent / "triton.log")
    try:
        server.start()
        server.wait_ready(120)
        yield server
    finally:
        server.stop()
        deadline = time.time() + 10
        while triton_processes(str(repo)) and time.time() < deadline:
            time.sleep(0.2)
