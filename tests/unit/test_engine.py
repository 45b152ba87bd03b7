"""The engine stage: trtexec command line, input checks, the skip where
TensorRT is absent, and the subprocess path with a trtexec on PATH.

TensorRT is never installed on these machines, so the build itself is
exercised with a small executable named ``trtexec`` that does what the real
one does to the file system (writes the plan and the profile) and prints
trtexec's summary lines; everything the stage does around it is real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_jobs import engine
from mnist_jobs.lib.stage_cli import InputError

ROOT = Path(__file__).resolve().parents[2]


def run_engine(tmp_path: Path, *extra: str, env_path: str | None = None,
               onnx: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    if onnx is None:
        onnx = tmp_path / "model.onnx"
        onnx.write_bytes(b"onnx bytes")
    result = tmp_path / "engine.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "jobs"))
    env.pop("TRTEXEC", None)
    # PATH without any trtexec unless the test adds one; the interpreter is absolute.
    env["PATH"] = env_path if env_path is not None else "/usr/bin:/bin"
    args = ["--onnx", str(onnx), "--out", str(tmp_path / "model.plan"),
            "--profile", str(tmp_path / "trt-profile.json"), "--precision", "fp32",
            "--min-batch", "1", "--opt-batch", "64", "--max-batch", "128", *extra,
            "--result", str(result)]
    proc = subprocess.run([sys.executable, "-m", "mnist_jobs.engine", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, json.loads(result.read_text()) if result.exists() else {}


def test_trtexec_command_line():
    cmd = engine.trtexec_command("trtexec", Path("a/model.onnx"), Path("a/model.plan"),
                                 Path("a/p.json"), Path("a/t.json"), "fp32", 1, 64, 128)
    assert cmd == ["trtexec", "--onnx=a/model.onnx", "--saveEngine=a/model.plan",
                   "--minShapes=input:1x1x28x28", "--optShapes=input:64x1x28x28",
                   "--maxShapes=input:128x1x28x28", "--shapes=input:64x1x28x28",
                   "--exportProfile=a/p.json", "--exportTimes=a/t.json", "--separateProfileRun"]
    fp16 = engine.trtexec_command("trtexec", Path("m.onnx"), Path("m.plan"), Path("p"), Path("t"),
                                  "fp16", 2, 8, 8)
    assert fp16[-1] == "--fp16"
    assert "--minShapes=input:2x1x28x28" in fp16 and "--maxShapes=input:8x1x28x28" in fp16


@pytest.mark.parametrize("batches, flag", [
    ((1, 64, 32), "--max-batch"),
    ((65, 64, 128), "--opt-batch"),
    ((0, 64, 128), "--min-batch"),
    ((1, 64, 5000), "--max-batch"),
])
def test_batch_checks_name_the_flag(batches, flag):
    with pytest.raises(InputError) as err:
        engine.check_batches(*batches)
    assert str(err.value).startswith(flag + ":")
    engine.check_batches(4, 4, 4)  # equal bounds are a fixed-shape profile: fine


def test_bad_batches_exit_2_with_one_line(tmp_path):
    proc, result = run_engine(tmp_path, "--opt-batch", "256")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "engine: error: --max-batch: must be >= --opt-batch (256), got 128"]
    assert result["state"] == "Failed" and result["reason"] == "InvalidInput"


def test_missing_onnx_names_the_flag(tmp_path):
    proc, result = run_engine(tmp_path, onnx=tmp_path / "nope.onnx")
    assert proc.returncode == 2
    assert "--onnx:" in result["message"] and "nope.onnx" in result["message"]


def test_skipped_without_tensorrt_and_stale_plan_removed(tmp_path):
    stale = tmp_path / "model.plan"
    stale.write_bytes(b"plan from another GPU")
    proc, result = run_engine(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert result["state"] == "Skipped"
    assert result["reason"] == "TensorRTNotAvailable"
    assert result["message"].startswith("TensorRT not available")
    assert (result["minBatch"], result["optBatch"], result["maxBatch"]) == (1, 64, 128)
    assert not stale.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("engine: skipped: TensorRT not available")


FAKE_TRTEXEC = textwrap.dedent("""\
    #!{python}
    import json, sys
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
    open(args["saveEngine"], "wb").write(b"P" * 4096)
    json.dump([{{"count": 10}}], open(args["exportProfile"], "w"))
    json.dump([{{"latencyMs": 0.1}}], open(args["exportTimes"], "w"))
    open(args["saveEngine"] + ".argv", "w").write(json.dumps(sys.argv[1:]))
    print("&&&& RUNNING TensorRT.trtexec [TensorRT v100700] # trtexec")
    print("[I] Throughput: 31415.9 qps")
    print("[I] GPU Compute Time: min = 0.05 ms, max = 0.4 ms, mean = 0.0612 ms, "
          "median = 0.06 ms, percentile(90%) = 0.07 ms, percentile(95%) = 0.08 ms, "
          "percentile(99%) = 0.1234 ms")
    sys.exit({code})
""")


def install_trtexec(directory: Path, code: int = 0) -> Path:
    directory.mkdir()
    exe = directory / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, code=code))
    exe.chmod(0o755)
    return exe


def test_trtexec_on_path_builds_and_reports(tmp_path):
    bin_dir = tmp_path / "bin"
    install_trtexec(bin_dir)
    proc, result = run_engine(tmp_path, "--precision", "fp16",
                              env_path=f"{bin_dir}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert result["state"] == "Succeeded"
    assert result["builder"] == "trtexec"
    assert result["planBytes"] == 4096
    assert result["throughputQps"] == "31415.9"
    assert (result["gpuComputeMeanMs"], result["gpuComputeP99Ms"]) == ("0.0612", "0.1234")
    assert result["tensorrtVersion"] == "10.7.0"
    assert result["precision"] == "fp16"
    argv = json.loads((tmp_path / "model.plan.argv").read_text())
    assert "--fp16" in argv and "--optShapes=input:64x1x28x28" in argv
    assert (tmp_path / "trt-profile.json").is_file()
    assert Path(result["log"]).read_text().count("Throughput") == 1
    assert all(isinstance(v, (int, str, dict)) for v in result.values())


def test_trtexec_failure_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    exe = install_trtexec(bin_dir, code=1)
    exe.write_text(f"#!{sys.executable}\nimport sys\n"
                   "print('[E] Error[4]: [network.cpp] input has dynamic shape')\nsys.exit(1)\n")
    proc, result = run_engine(tmp_path, env_path=f"{bin_dir}:/usr/bin:/bin")
    assert proc.returncode == 1
    assert result["reason"] == "EngineBuildFailed"
    assert "trtexec exited 1: [E] Error[4]" in result["message"]
    assert proc.stderr.strip().splitlines()[-1].startswith("engine: error: trtexec exited 1")


def test_parse_nvidia_smi():
    assert engine.parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\n") == {
        "gpu": "NVIDIA H100 80GB HBM3", "computeCapability": "9.0"}
    assert engine.parse_nvidia_smi("") == {}
