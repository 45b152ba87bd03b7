"""Data-plane serving benchmark (local, CPU). One command:

    .venv/bin/python benchmarks/serving.py            # (make bench)
    .venv/bin/python benchmarks/serving.py --model runs/demo/artifacts/model.onnx   # reuse a model

What it does, all in one run on this machine:
1. trains (offline MNIST subset) and exports the model with the real train and
   export stage CLIs, unless --model gives an existing model.onnx;
2. writes a --cpu-only model repository (repo stage): mnist_onnx served by
   the python backend with ONNX Runtime, and mnist_bls forwarding each dynamic
   batch to mnist_onnx as one request;
3. starts one real tritonserver (pytriton wheel) and runs the bench stage
   (real perf_analyzer, gRPC, batch 1, concurrency 1 and 64) on both models;
4. stops Triton, then measures in-process ONNX Runtime throughput of the same
   model.onnx at batch 64;
5. prints a markdown table and writes it to docs/BENCHMARKS.md under the
   heading "## Serving (local, CPU)", replacing only that section.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "jobs"))

from mnist_jobs.lib.triton import TritonServer, free_ports  # noqa: E402

HEADING = "## Serving (local, CPU)"


def stage(module: str, *args: str, timeout: int = 1800) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "jobs") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"==> mnist_jobs.{module} {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", f"mnist_jobs.{module}", *args], env=env,
                          stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: {module} failed: {result.get('message', proc.stdout[-500:])}")
    return result


def ort_throughput(model: Path, batch: int, seconds: float, threads: int) -> float:
    import numpy as np
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    for _ in range(20):
        sess.run(["output"], {"input": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["output"], {"input": x})
        n += 1
    return n * batch / (time.perf_counter() - start)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def versions() -> str:
    from importlib.metadata import version
    out = []
    for dist in ("nvidia-pytriton", "onnxruntime", "tritonclient", "torch"):
        try:
            out.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    pa = subprocess.run([str(Path(sys.executable).parent / "perf_analyzer"), "--version"],
                        capture_output=True, text=True)
    if pa.returncode == 0 and pa.stdout.strip():
        out.append(pa.stdout.strip().splitlines()[0])
    return ", ".join(out)


def replace_section(path: Path, body: str, heading: str = HEADING) -> None:
    """Put ``body`` in place of the section under ``heading`` (appended when missing)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = "\n".join(lines[:start] + body.rstrip("\n").splitlines()
                        + ([""] + lines[end:] if end < len(lines) else [])) + "\n"
    path.write_text(new)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="reuse this model.onnx instead of training")
    p.add_argument("--workdir", type=Path, help="keep artifacts here (default: a temp dir)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer window")
    p.add_argument("--ort-seconds", type=float, default=10.0)
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md")
    a = p.parse_args()

    tmp = None
    work = a.workdir or Path(tmp := tempfile.mkdtemp(prefix="mnist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    art = work / "artifacts"
    started = time.time()
    try:
        train_res = {}
        if a.model:
            art.mkdir(parents=True, exist_ok=True)
            if a.model.resolve() != (art / "model.onnx").resolve():
                shutil.copy2(a.model, art / "model.onnx")
            how = f"reused `{a.model}`"
        else:
            train_res = stage("train", "--data-source", "offline", "--data-dir", str(work / "data"),
                              "--epochs", str(a.epochs), "--batch-size", "64",
                              "--learning-rate", "0.01", "--momentum", "0.9", "--seed", "0",
                              "--device", "cpu", "--out", str(art))
            stage("export", "--checkpoint", str(art / "model.pt"), "--out", str(art),
                  "--opset", "17", "--data-source", "offline", "--data-dir", str(work / "data"))
            how = (f"trained here ({a.epochs} epochs, offline subset, test accuracy "
                   f"{train_res.get('accuracy', train_res.get('testAccuracy', '?'))}) and exported")
        repo = work / "model_repo"
        stage("repo", "--artifacts", str(art), "--out", str(repo), "--models", "onnx,bls",
              "--max-batch-size", "128", "--instances", "1", "--instance-kind", "cpu",
              "--preferred-batch-sizes", "32,64", "--max-queue-delay-us", "100", "--cpu-only")
        h, g, m = free_ports(3)
        with TritonServer(repo, h, g, m, log_path=work / "triton.log") as server:
            server.wait_ready(120)
            bench = stage("bench", "--url", server.grpc_url, "--protocol", "grpc",
                          "--models", "mnist_onnx,mnist_bls", "--batch-size", "1",
                          "--concurrency", "1:64:63", "--measurement-mode", "time_windows",
                          "--measurement-interval-ms", str(a.interval_ms),
                          "--measurement-request-count", "50", "--stability-percentage", "20",
                          "--repeats", "1", "--load-mode", "concurrency", "--out", str(work / "bench"))
        threads = os.cpu_count() or 1
        ort_ips = ort_throughput(art / "model.onnx", 64, a.ort_seconds, threads)
    finally:
        if tmp and not a.workdir:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    best = {}
    for model in ("mnist_onnx", "mnist_bls"):
        r = {row["c"]: row for row in bench["models"][model]["rows"]}
        c1, c64 = float(r[1]["inferPerSec"]), float(r[64]["inferPerSec"])
        best[model] = c64
        little = "ok" if all(x["little"] == "ok" for x in r.values()) else \
            ", ".join(f"c={c}: {x['little']}" for c, x in r.items() if x["little"] != "ok")
        rows.append(f"| {model} | {c1:,.0f} | {r[1]['p99Us'] / 1000:.1f} | {c64:,.0f} | "
                    f"{r[64]['p99Us'] / 1000:.1f} | {c64 / c1:.1f}x | {c64 / ort_ips:.2f} | {little} |")
    ratio = best["mnist_bls"] / best["mnist_onnx"]
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""{HEADING}

Command: `.venv/bin/python benchmarks/serving.py` (or `make bench`); {today};
{machine()}; {versions()}; {int(time.time() - started)} s in all.

Model: the seed's LeNet, {how}. Served by the `tritonserver` inside the
nvidia-pytriton wheel on the CPU. This build has no native onnxruntime
backend, so `mnist_onnx` is the `--cpu-only` flavour: model.onnx run by ONNX
Runtime inside the python backend; `mnist_bls` forwards each dynamic batch
it receives to `mnist_onnx` as ONE request and splits the answer. One
instance each, max batch 128, preferred batches 32/64, queue delay 100 us.
perf_analyzer over gRPC, batch 1, time windows of {a.interval_ms} ms,
stability 20 %. In-process: ONNX Runtime on the same model.onnx, batch 64,
{threads} intra-op threads, measured in the same run after Triton stopped.

| model | c=1 infer/s | c=1 p99 ms | c=64 infer/s | c=64 p99 ms | dynamic-batching gain (c64/c1) | served/in-process (c64) | Little's law |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

* In-process ONNX Runtime, batch 64: **{ort_ips:,.0f} infer/s**.
* BLS/direct throughput at concurrency 64: **{ratio:.2f}** (target >= 0.8).
* Little's law: each row's concurrency vs throughput x mean latency, within
  {float(bench['littleTolerance']) * 100:.0f} %.
"""
    print(body)
    if not a.no_write:
        replace_section(ROOT / "docs" / "BENCHMARKS.md", body)
        print(f"benchmark: wrote section {HEADING!r} of docs/BENCHMARKS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
