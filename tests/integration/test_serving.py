"""repo + serve + client against a real tritonserver (python backend, ONNX Runtime)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import os

import numpy as np
import pytest

from conftest import ROOT, last_json, run_cli, triton_processes

pytestmark = pytest.mark.integration


def _one_line_error(proc: subprocess.CompletedProcess, stage: str, flag: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{stage}: error: {flag}"), lines[0]
    return lines[0]


def test_repo_result_and_models_loaded(model_repo, triton):
    from mnist_jobs.lib.triton import repository_index
    _, result = model_repo
    assert result["models"] == ["mnist_onnx", "mnist_bls"]
    assert "mnist_trt" in result["leftOut"]          # no TensorRT engine on this machine
    assert result["blsDownstream"] == "mnist_onnx"
    assert "python backend" in result["onnxBackend"]
    states = {m["name"]: m["state"] for m in repository_index(triton.http_url)}
    assert states["mnist_onnx"] == "READY" and states["mnist_bls"] == "READY"


def test_client_accuracy_http_and_grpc(trained_model, triton):
    from mnist_jobs.client import evaluate
    urls = {"http": triton.http_url, "grpc": triton.grpc_url}
    out = evaluate(urls, ["mnist_onnx", "mnist_bls"], trained_model.images, trained_model.labels)
    expected = f"{trained_model.ort_accuracy:.4f}"
    for model in ("mnist_onnx", "mnist_bls"):
        assert out["accuracy"][model] == {"http": expected, "grpc": expected}
    assert out["agree"] is True and out["disagreements"] == 0
    assert trained_model.ort_accuracy > 0.85


def test_a_client_written_for_the_seed_gets_the_bls_model_as_mnist_custom(trained_model, triton):
    """The seed's repository names its BLS model mnist_custom: asked for by that name,
    Triton answers with what mnist_bls answers, over both protocols."""
    from mnist_jobs.client import evaluate
    urls = {"http": triton.http_url, "grpc": triton.grpc_url}
    out = evaluate(urls, ["mnist_custom", "mnist_bls"], trained_model.images[:200],
                   trained_model.labels[:200])
    assert out["accuracy"]["mnist_custom"] == out["accuracy"]["mnist_bls"]
    assert out["agree"] is True and out["disagreements"] == 0


def test_client_cli_matches_held_out_accuracy(trained_model, triton):
    """The client CLI on the whole held-out split: served accuracy over HTTP
    and gRPC equals ONNX Runtime's here and the train stage's reported one."""
    res = run_cli("client", "--http-url", triton.http_url, "--grpc-url", triton.grpc_url,
                  "--models", "mnist_onnx,mnist_bls", "--samples", "100000",
                  "--data-source", "offline", "--data-dir", str(trained_model.data_dir))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    from mnist_jobs.client import load_test_digits
    import onnxruntime as ort
    images, labels = load_test_digits("offline", trained_model.data_dir, 100000)
    assert out["samples"] == len(labels)
    sess = ort.InferenceSession(str(trained_model.artifacts / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    expected = (sess.run(["output"], {"input": images})[0].argmax(1) == labels).mean()
    for model in ("mnist_onnx", "mnist_bls"):
        assert out["accuracy"][model] == {"http": f"{expected:.4f}", "grpc": f"{expected:.4f}"}
    assert out["agree"] is True and out["disagreements"] == 0
    if "accuracy" in trained_model.train_result:           # the real train stage ran
        assert abs(expected - float(trained_model.train_result["accuracy"])) <= 0.002


def test_bls_equals_direct_on_batched_requests(trained_model, triton):
    """Concurrent requests of different batch sizes through BLS (so the dynamic
    batcher merges them and BLS splits the answer) equal the direct model."""
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    images = trained_model.images
    sizes = [1, 3, 7, 16, 2, 5, 31, 1]
    chunks, start = [], 0
    for n in sizes:
        chunks.append(images[start:start + n])
        start += n
    results: dict[tuple[str, int], np.ndarray] = {}
    done = []

    def callback(key):
        def cb(result, error):
            assert error is None, error
            results[key] = result.as_numpy("output")
            done.append(key)
        return cb
    for model in ("mnist_bls", "mnist_onnx"):
        for i, chunk in enumerate(chunks):
            inp = grpcclient.InferInput("input", list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            client.async_infer(model, [inp], callback((model, i)))
    deadline = time.time() + 30
    while len(done) < 2 * len(chunks) and time.time() < deadline:
        time.sleep(0.05)
    assert len(done) == 2 * len(chunks)
    for i, chunk in enumerate(chunks):
        assert results[("mnist_bls", i)].shape == (len(chunk), 10)
        np.testing.assert_allclose(results[("mnist_bls", i)], results[("mnist_onnx", i)],
                                   rtol=1e-4, atol=1e-4)
    client.close()


def test_bls_downstream_error_fails_each_request(trained_model, triton):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
    client = httpclient.InferenceServerClient(triton.http_url, concurrency=4)
    x = trained_model.images[:4]
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    pending = [client.async_infer("mnist_bls_missing", [inp]) for _ in range(4)]
    for p in pending:
        with pytest.raises(InferenceServerException, match="mnist_missing"):
            p.get_result()
    client.close()


def test_repo_unknown_model_is_input_error(trained_model, tmp_path):
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(tmp_path),
                  "--models", "onnx,resnet")
    line = _one_line_error(res, "repo", "--models")
    assert "resnet" in line


def test_repo_max_batch_below_preferred_is_input_error(trained_model, tmp_path):
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(tmp_path),
                  "--max-batch-size", "16", "--preferred-batch-sizes", "32,64")
    _one_line_error(res, "repo", "--max-batch-size")


def _free() -> int:
    from mnist_jobs.lib.triton import free_ports
    return free_ports(1)[0]


def test_serve_port_in_use_is_input_error(model_repo, triton):
    repo, _ = model_repo
    busy = triton.ports["grpc"]
    before = triton_processes(str(repo))
    res = run_cli("serve", "--model-repo", str(repo), "--grpc-port", str(busy),
                  "--http-port", str(_free()), "--metrics-port", str(_free()), timeout=30)
    line = _one_line_error(res, "serve", "--grpc-port")
    assert str(busy) in line
    assert triton_processes(str(repo)) == before      # nothing new was started


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:            # a failed assertion: stop serve the polite way first
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_serve(trained_model, tmp_path):
    repo = tmp_path / "repo"
    res = run_cli("repo", "--artifacts", str(trained_model.artifacts), "--out", str(repo),
                  "--models", "onnx", "--cpu-only")
    assert res.returncode == 0, res.stderr
    result_path = tmp_path / "serve.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "jobs"))
    ports = [_free(), _free(), _free()]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_jobs.serve", "--model-repo", str(repo),
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                             "--metrics-port", str(ports[2]), "--result", str(result_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 90
    while not result_path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    return proc, repo, result_path, ports


def test_serve_killed_leaves_no_triton(trained_model, tmp_path):
    """Even SIGKILL of serve (no chance to clean up) takes Triton down with it."""
    proc, repo, result_path, _ = _start_serve(trained_model, tmp_path)
    try:
        assert json.loads(result_path.read_text())["server"] == "Ready"
        assert any("tritonserver" in c for _, c in triton_processes(str(repo)))
        proc.kill()
        proc.wait(10)
        deadline = time.time() + 30
        while triton_processes(str(repo)) and time.time() < deadline:
            time.sleep(0.2)
        assert triton_processes(str(repo)) == []
    finally:
        _stop(proc)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_signal(trained_model, tmp_path, signum):
    """serve on a small repository (mnist_onnx only), stopped like a user would."""
    proc, repo, result_path, (_, grpc, _) = _start_serve(trained_model, tmp_path)
    try:
        ready = json.loads(result_path.read_text())
        assert ready["server"] == "Ready"
        assert ready["models"] == {"mnist_onnx": "READY"}
        assert ready["endpoints"]["grpc"].endswith(f":{grpc}")
        running = triton_processes(str(repo))
        assert any("tritonserver" in c for _, c in running), running
        assert any("triton_python_backend_stub" in c for _, c in running)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    final = json.loads(result_path.read_text())
    assert final["server"] == "Stopped" and final["stoppedBy"] == signum.name
    assert final["tritonExitCode"] == 0
    assert triton_processes(str(repo)) == []


def test_serve_reports_a_model_that_fails_to_load(model_repo, tmp_path):
    repo, _ = model_repo
    broken = tmp_path / "repo"
    shutil.copytree(repo / "mnist_onnx", broken / "mnist_onnx")
    (broken / "mnist_onnx" / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    res = run_cli("serve", "--model-repo", str(broken), "--http-port", str(_free()),
                  "--grpc-port", str(_free()), "--metrics-port", str(_free()), timeout=120)
    assert res.returncode == 1
    result = last_json(res.stdout)
    assert result["state"] == "Failed" and result["reason"] == "ServerFailed"
    assert "failed to load 'mnist_onnx'" in result["message"]
    assert triton_processes(str(broken)) == []
