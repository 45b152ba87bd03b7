"""mnist_pt against a real tritonserver: the export stage's TorchScript file
served through the python backend with torch (this Triton has no native
PyTorch backend), alone and as what mnist_bls forwards to."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import last_json, run_cli, triton_processes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def torch_triton(trained_model):
    from mnist_jobs.lib.triton import TritonServer, free_ports
    repo = trained_model.workdir / "model_repo_pt"
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(repo),
                  "--models", "pytorch,bls", "--max-batch-size", "64", "--instances", "1",
                  "--instance-kind", "cpu", "--preferred-batch-sizes", "32",
                  "--max-queue-delay-us", "100", "--cpu-only")
    assert res.returncode == 0, res.stderr
    h, g, m = free_ports(3)
    server = TritonServer(repo, h, g, m, log_path=repo.parent / "triton-pt.log")
    try:
        server.start()
        server.wait_ready(180)
        yield server, last_json(res.stdout), repo.parent / "triton-pt.log"
    finally:
        server.stop()
        deadline = time.time() + 10
        while triton_processes(str(repo)) and time.time() < deadline:
            time.sleep(0.2)


def test_torchscript_served_and_bls_forwards_to_it(trained_model, torch_triton):
    from mnist_jobs.lib.triton import repository_index
    server, result, log = torch_triton
    assert result["models"] == ["mnist_pt", "mnist_bls"]
    assert result["blsDownstream"] == "mnist_pt"
    assert "python backend with torch" in result["pytorchBackend"]
    states = {m["name"]: m["state"] for m in repository_index(server.http_url)}
    assert states == {"mnist_pt": "READY", "mnist_bls": "READY", "mnist_custom": "READY"}
    assert "mnist_pt: mnist_pt_0_0 runs on cpu (CPU)" in log.read_text()   # said where it runs


def test_served_torchscript_predicts_what_torch_does(trained_model, torch_triton):
    import torch
    from mnist_jobs.client import evaluate, predict
    server, _, _ = torch_triton
    local = torch.jit.load(str(trained_model.artifacts / "model.ts")).eval()
    with torch.inference_mode():
        expected = local(torch.from_numpy(trained_model.images)).numpy()
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        served = predict(url, protocol, "mnist_pt", trained_model.images)
        assert np.array_equal(served, expected.argmax(1)), protocol
    out = evaluate({"grpc": server.grpc_url, "http": server.http_url}, ["mnist_pt", "mnist_bls"],
                   trained_model.images, trained_model.labels)
    torch_accuracy = f"{(expected.argmax(1) == trained_model.labels).mean():.4f}"
    for model in ("mnist_pt", "mnist_bls"):
        assert out["accuracy"][model] == {"http": torch_accuracy, "grpc": torch_accuracy}
    assert out["agree"] is True and out["disagreements"] == 0
    # the same network as the ONNX file: at most a digit or two may round differently
    assert abs(float(torch_accuracy) - trained_model.ort_accuracy) <= 0.002
