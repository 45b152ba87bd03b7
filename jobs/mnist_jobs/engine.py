"""Stage engine: the ONNX model to a TensorRT plan for the GPU it runs on.

    python -m mnist_jobs.engine --onnx runs/demo/artifacts/model.onnx \
        --out runs/demo/artifacts/model.plan --profile runs/demo/artifacts/trt-profile.json \
        --precision fp16 --min-batch 1 --opt-batch 64 --max-batch 128 \
        --result runs/demo/results/engine.json

Builders, in order:

1. ``trtexec`` ($TRTEXEC, PATH, or /usr/src/tensorrt/bin/trtexec where the NGC
   images keep it): one optimisation profile over the batch axis of
   ``input`` (min/opt/max x 1x28x28), ``--fp16`` when asked; it times the
   engine at the opt shape and exports per-layer times (``--exportProfile``)
   and per-iteration times (``--exportTimes``).
2. the TensorRT Python API (``import tensorrt``): ONNX parser, builder config,
   the same optimisation profile, a serialized engine; the profile file then
   records the build settings (no timing run).
3. neither: the stage is Skipped with reason ``TensorRTNotAvailable`` (exit 0);
   a stale plan from an earlier build is removed so it is never served.

A plan only loads on the GPU model (compute capability) it was built on, so
the result names the GPU when it can find out (nvidia-smi, else torch).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mnist_jobs.lib.stage_cli import InputError, Skipped, StageError, fmt, run_stage, stage_parser

INPUT_NAME = "input"                 # fixed by the seed (docs/CONTRACT.md)
SAMPLE_SHAPE = (1, 28, 28)           # one digit, after the batch axis
PRECISIONS = ("fp32", "fp16")
NGC_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
MAX_BATCH = 4096


# --------------------------------------------------------------------------- pure parts
def check_batches(min_batch: int, opt_batch: int, max_batch: int) -> None:
    """min <= opt <= max, all in 1..4096; the error names the flag to fix."""
    for flag, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch),
                        ("--max-batch", max_batch)):
        if not 1 <= value <= MAX_BATCH:
            raise InputError(flag, f"must be between 1 and {MAX_BATCH}, got {value}")
    if opt_batch < min_batch:
        raise InputError("--opt-batch", f"must be >= --min-batch ({min_batch}), got {opt_batch}")
    if max_batch < opt_batch:
        raise InputError("--max-batch", f"must be >= --opt-batch ({opt_batch}), got {max_batch}")


def shape(batch: int) -> str:
    """trtexec's shape syntax for one batch size: ``input:64x1x28x28``."""
    return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *SAMPLE_SHAPE))


def trtexec_command(trtexec: str, onnx: Path, plan: Path, profile: Path, times: Path,
                    precision: str, min_batch: int, opt_batch: int, max_batch: int) -> list[str]:
    """The trtexec command line that builds, saves and times the engine."""
    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={plan}",
           f"--minShapes={shape(min_batch)}", f"--optShapes={shape(opt_batch)}",
           f"--maxShapes={shape(max_batch)}",
           f"--shapes={shape(opt_batch)}",          # the timing run uses the opt batch
           f"--exportProfile={profile}", f"--exportTimes={times}",
           "--separateProfileRun"]                  # per-layer profiling must not skew the timings
    if precision == "fp16":
        cmd.append("--fp16")
    return cmd


_THROUGHPUT = re.compile(r"Throughput:\s*([0-9.]+)\s*qps")
_GPU_COMPUTE = re.compile(r"GPU Compute Time:.*?mean\s*=\s*([0-9.]+)\s*ms.*?"
                          r"percentile\(99%\)\s*=\s*([0-9.]+)\s*ms")
_TRT_VERSION = re.compile(r"TensorRT version:\s*([0-9.]+)|\[TensorRT v(\d+)\]")


def parse_trtexec_output(text: str) -> dict[str, str]:
    """The timing summary trtexec prints (strings, for the result)."""
    out: dict[str, str] = {}
    if m := _THROUGHPUT.search(text):
        out["throughputQps"] = m.group(1)
    if m := _GPU_COMPUTE.search(text):
        out["gpuComputeMeanMs"], out["gpuComputeP99Ms"] = m.group(1), m.group(2)
    if m := _TRT_VERSION.search(text):
        out["tensorrtVersion"] = m.group(1) or _trt_version_number(m.group(2))
    return out


def _trt_version_number(packed: str) -> str:
    # trtexec prints "[TensorRT v100700]" for 10.7.0
    n = int(packed)
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}"


def parse_nvidia_smi(text: str) -> dict[str, str]:
    """First line of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    line = next((l for l in text.splitlines() if l.strip()), "")
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 2 or not parts[0]:
        return {}
    return {"gpu": parts[0], "computeCapability": parts[1]}


# --------------------------------------------------------------------------- the machine
def find_trtexec() -> str | None:
    env = os.environ.get("TRTEXEC")
    if env:
        return env
    return shutil.which("trtexec") or (NGC_TRTEXEC if os.access(NGC_TRTEXEC, os.X_OK) else None)


def gpu_info(ask_torch: bool = True) -> dict[str, str]:
    """GPU name and compute capability, when this machine can tell (torch is
    asked only when nvidia-smi is absent, and only if ``ask_torch``)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20)
            if proc.returncode == 0 and (info := parse_nvidia_smi(proc.stdout)):
                return info
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not ask_torch:
        return {}
    try:
        import torch
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "computeCapability": f"{major}.{minor}"}
    except ImportError:
        pass
    return {}


def build_with_trtexec(trtexec: str, a) -> dict:
    times = a.profile.with_name(a.profile.stem + "-times.json")
    cmd = trtexec_command(trtexec, a.onnx, a.out, a.profile, times, a.precision,
                          a.min_batch, a.opt_batch, a.max_batch)
    log_path = a.out.with_name(a.out.stem + "-trtexec.log")
    print(f"engine: {' '.join(cmd)} (log {log_path})", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout_s)
    except subprocess.TimeoutExpired:
        raise StageError(f"trtexec ran over {a.timeout_s} s (log {log_path})",
                         reason="Timeout") from None
    text = proc.stdout + proc.stderr
    log_path.write_text(text)
    if proc.returncode != 0 or not a.out.is_file():
        errors = [l for l in text.splitlines() if "ERROR" in l] or text.strip().splitlines()[-1:]
        raise StageError(f"trtexec exited {proc.returncode}: {(errors or [''])[0][:200]} "
                         f"(log {log_path})", reason="EngineBuildFailed")
    return {"builder": "trtexec", "timesFile": str(times), "log": str(log_path),
            **parse_trtexec_output(text)}


def build_with_python_api(trt, a) -> dict:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)        # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(a.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise StageError(f"TensorRT cannot parse {a.onnx}: {(errors or ['?'])[0][:200]}",
                         reason="OnnxParseFailed")
    config = builder.create_builder_config()
    if a.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (a.min_batch, *SAMPLE_SHAPE), (a.opt_batch, *SAMPLE_SHAPE),
                      (a.max_batch, *SAMPLE_SHAPE))
    config.add_optimization_profile(profile)
    print("engine: building with the TensorRT Python API", file=sys.stderr, flush=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageError("TensorRT returned no engine (see the builder log above)",
                         reason="EngineBuildFailed")
    a.out.write_bytes(bytes(serialized))
    a.profile.write_text(json.dumps({
        "builder": "tensorrt-python", "tensorrtVersion": trt.__version__,
        "precision": a.precision, "input": INPUT_NAME,
        "shapes": {"min": shape(a.min_batch), "opt": shape(a.opt_batch),
                   "max": shape(a.max_batch)}}, indent=1) + "\n")
    return {"builder": "tensorrt-python", "tensorrtVersion": trt.__version__}


def _import_tensorrt():
    try:
        import tensorrt
        return tensorrt
    except ImportError:
        return None


def build(a) -> dict:
    check_batches(a.min_batch, a.opt_batch, a.max_batch)
    if a.precision not in PRECISIONS:
        raise InputError("--precision", f"must be fp32 or fp16, got {a.precision!r}")
    if not a.onnx.is_file():
        raise InputError("--onnx", f"{a.onnx} does not exist (run the export stage)")
    # A plan from an earlier build (other settings, other GPU) must never be served.
    a.out.unlink(missing_ok=True)
    trtexec = find_trtexec()
    trt = None if trtexec else _import_tensorrt()
    # a skip reports what nvidia-smi knows without importing torch (seconds on a CPU machine)
    gpu = gpu_info(ask_torch=bool(trtexec or trt))
    settings = {"precision": a.precision, "minBatch": a.min_batch, "optBatch": a.opt_batch,
                "maxBatch": a.max_batch, **gpu}
    if not trtexec and trt is None:
        raise Skipped("TensorRT not available here (no trtexec and no tensorrt Python module); "
                      "mnist_trt is not built", reason="TensorRTNotAvailable", **settings)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.profile.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    built = build_with_trtexec(trtexec, a) if trtexec else build_with_python_api(trt, a)
    print(f"engine: wrote {a.out} ({a.out.stat().st_size} bytes) in "
          f"{time.time() - started:.1f} s", file=sys.stderr, flush=True)
    return {"engine": str(a.out), "profile": str(a.profile), "planBytes": a.out.stat().st_size,
            "buildSeconds": fmt(time.time() - started, 1), **settings, **built}


#: The fields of a Succeeded or Skipped result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "engine": "path of model.plan", "profile": "path of the trtexec profile",
    "planBytes": "size of model.plan", "buildSeconds": "build time, a decimal string",
    "precision": "fp32 or fp16", "minBatch": "the optimisation profile's minimum batch",
    "optBatch": "its optimum batch", "maxBatch": "its maximum batch",
    "gpu": "the GPU it was built on (a plan loads on that model only)",
    "computeCapability": "that GPU's compute capability",
    "builder": "trtexec or tensorrt-python", "tensorrtVersion": "TensorRT's version",
    "timesFile": "trtexec's per-inference times", "log": "trtexec's log",
    "throughputQps": "trtexec's own throughput figure",
    "gpuComputeMeanMs": "trtexec's mean GPU compute time", "gpuComputeP99Ms": "its p99",
}


def parser():
    p = stage_parser("engine", "Build a TensorRT plan from the ONNX model (trtexec or Python API).")
    p.add_argument("--onnx", type=Path, required=True, help="model.onnx from the export stage")
    p.add_argument("--out", type=Path, required=True, help="the plan file to write")
    p.add_argument("--profile", type=Path, required=True,
                   help="trtexec's per-layer profile (JSON); the build settings otherwise")
    p.add_argument("--precision", required=True, help="fp32 or fp16")
    p.add_argument("--min-batch", type=int, required=True)
    p.add_argument("--opt-batch", type=int, required=True)
    p.add_argument("--max-batch", type=int, required=True)
    p.add_argument("--timeout-s", type=int, default=1800, help="limit for one trtexec run")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("engine", parser(), build, argv)


if __name__ == "__main__":
    raise SystemExit(main())
