"""Stage analyze: real ``model-analyzer profile`` and its best config per model.

    python -m mnist_jobs.analyze --model-repo runs/demo/model_repo --models mnist_onnx \
        --out runs/demo/analyze --max-concurrency 16 --max-batch-size 64 --max-instances 2 --search bounded

Search modes (``--search``):

* ``bounded`` (the spec's default, the demo): model-analyzer's automatic search is
  disabled and it profiles a few named configs per model: instance counts
  1..--max-instances (kind --instance-kind), each with dynamic batching and
  max_batch_size --max-batch-size, plus the model's default config (which
  model-analyzer always measures), at concurrency 1 and --max-concurrency
  only (override with --concurrency 1,4,16), with --measurement-interval-ms
  windows (default 1000). With the defaults that is 3 configs x 2 points;
  on a 2-core machine about 1.5 minutes.
* ``brute``: model-analyzer's brute-force search bounded by
  --max-concurrency, --max-batch-size and --max-instances (the full search,
  many minutes: DESIGN.md measured 9 configs in 372 s on 2 cores).

Launch modes: ``local`` (default) starts the tritonserver found by
:mod:`mnist_jobs.lib.triton` itself (triton_server_path, backend_directory and
the environment the python backend stub needs); ``remote`` profiles a
server started with ``--model-control-mode explicit`` on the same machine
(the operator runs it in the same pod), at --triton-http-endpoint /
--triton-grpc-endpoint; model-analyzer then loads each config through the
model-control API.

Everything goes under --out: ``config.yaml`` (the exact config used; JSON
syntax, which YAML accepts, so no yaml module is needed here),
``checkpoints/``, ``results/metrics-model-inference.csv`` and the other CSVs,
``reports/`` (summary reports; HTML when wkhtmltopdf is absent, PDF when it is
present), ``output_model_repository/`` (the profiled configs),
``model-analyzer.log`` and ``triton.log``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mnist_jobs.lib import perf, provenance
from mnist_jobs.lib.stage_cli import InputError, StageError, fmt, run_stage, stage_parser
from mnist_jobs.lib.triton import (TritonServer, add_launch_flags, backend_directory,
                                   check_launch_flags, find_tritonserver, free_ports, server_env,
                                   start_explicit)

THROUGHPUT = "Throughput (infer/sec)"
P99 = "p99 Latency (ms)"
LOG = "model-analyzer.log"


def _find_model_analyzer() -> str:
    env = os.environ.get("MODEL_ANALYZER")
    if env:
        return env
    beside = Path(sys.executable).parent / "model-analyzer"
    if beside.exists():
        return str(beside)
    found = shutil.which("model-analyzer")
    if found:
        return found
    raise StageError("model-analyzer not found (pip install triton-model-analyzer, or set "
                     "MODEL_ANALYZER)", reason="ModelAnalyzerNotFound")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise InputError(flag, f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise InputError(flag, "values must be >= 1")
    return values


@dataclass(frozen=True)
class AnalyzeArgs:
    """The stage's arguments, checked (:meth:`from_args`), as build_config and the
    run read them. The Triton fields name the server model-analyzer profiles: a
    tritonserver started beside it replaces them (remote mode, its endpoints)."""
    model_repo: Path
    models: tuple[str, ...]
    out: Path
    max_concurrency: int
    max_batch_size: int
    max_instances: int
    search: str                          # bounded | brute
    concurrency: tuple[int, ...] | None  # bounded search's points; None: 1 and max
    instance_kind: str                   # auto | cpu | gpu
    interval_ms: int
    launch_mode: str                     # local | remote
    http_endpoint: str | None
    grpc_endpoint: str | None
    bls_composing: tuple[str, ...]       # the models mnist_bls calls, read from its config
    protocol: str = "grpc"
    stability: int = 30
    metrics_url: str | None = None
    slo_p99_ms: int = 0
    slo_p95_ms: int = 0
    timeout_s: int = 1800

    @classmethod
    def from_args(cls, a) -> "AnalyzeArgs":
        """Every input check, with an :class:`InputError` naming the flag."""
        models = tuple(m.strip() for m in a.models.split(",") if m.strip())
        if not models:
            raise InputError("--models", "empty list")
        repo = a.model_repo
        if not repo.is_dir():
            raise InputError("--model-repo", f"{repo} is not a directory")
        for m in models:
            if not (repo / m / "config.pbtxt").is_file():
                raise InputError("--models", f"{m!r} is not in {repo} (no {m}/config.pbtxt)")
        for flag, v in (("--max-concurrency", a.max_concurrency),
                        ("--max-batch-size", a.max_batch_size),
                        ("--max-instances", a.max_instances)):
            if v < 1:
                raise InputError(flag, "must be >= 1")
        for flag, v in (("--slo-p99-ms", a.slo_p99_ms), ("--slo-p95-ms", a.slo_p95_ms)):
            if v < 0:
                raise InputError(flag, f"must be >= 0 (0 = no limit), got {v}")
        check_launch_flags(a)
        concurrency = tuple(_int_list("--concurrency", a.concurrency)) if a.concurrency else None
        return cls(repo, models, a.out, a.max_concurrency, a.max_batch_size, a.max_instances,
                   a.search, concurrency, a.instance_kind, a.measurement_interval_ms,
                   a.triton_launch_mode, a.triton_http_endpoint, a.triton_grpc_endpoint,
                   bls_composing(repo, models), stability=a.stability_percentage,
                   metrics_url=a.triton_metrics_url, slo_p99_ms=a.slo_p99_ms,
                   slo_p95_ms=a.slo_p95_ms, timeout_s=a.timeout_s)


def bls_composing(repo: Path, models: tuple[str, ...]) -> tuple[str, ...]:
    """The model mnist_bls calls (its ``downstream_model`` parameter), when profiled."""
    if "mnist_bls" not in models:
        return ()
    text = (repo / "mnist_bls" / "config.pbtxt").read_text()
    found = re.search(r'key: "downstream_model"\s*value: \{ string_value: "([^"]+)"', text)
    return (found.group(1),) if found else ()


def build_config(args: AnalyzeArgs) -> dict:
    """model-analyzer's profile config for ``args``."""
    out = args.out
    cfg: dict = {
        "model_repository": str(args.model_repo.resolve()),
        "checkpoint_directory": str((out / "checkpoints").resolve()),
        "export_path": str(out.resolve()),
        "output_model_repository_path": str((out / "output_model_repository").resolve()),
        "override_output_model_repository": True,
        "client_protocol": args.protocol,
        "perf_analyzer_path": perf.find_perf_analyzer(),
        "perf_analyzer_flags": {"measurement-mode": "time_windows",
                                "measurement-interval": str(args.interval_ms),
                                "stability-percentage": str(args.stability)},
        "triton_launch_mode": args.launch_mode,
        "triton_output_path": str((out / "triton.log").resolve()),
        "perf_output": True,
        "perf_output_path": str((out / "perf_analyzer.log").resolve()),
        # the summary report compares the configs; the per-config detailed
        # reports only redraw the same rows, for seconds of plotting
        "skip_detailed_reports": True,
    }
    cfg.update(_launch_config(args))
    if args.bls_composing:
        cfg["bls_composing_models"] = ",".join(args.bls_composing)
    # benchmark.slo: the best config is the highest throughput within it (model-analyzer
    # 1.58's constraint keys, integer milliseconds; a config breaking them is not picked)
    constraints = {key: {"max": ms} for key, ms in (("perf_latency_p99", args.slo_p99_ms),
                                                     ("perf_latency_p95", args.slo_p95_ms)) if ms}
    if constraints:
        cfg["objectives"] = {"perf_throughput": 10}
        cfg["constraints"] = constraints
    cfg.update(_search_config(args))
    return cfg


def _launch_config(args: AnalyzeArgs) -> dict:
    """Which Triton model-analyzer profiles: one it starts (local), or one running (remote)."""
    if args.launch_mode == "local":
        install = find_tritonserver()
        h, g, m = free_ports(3)
        env = server_env(install, base={"PATH": os.environ.get("PATH", "")})
        return {
            "triton_server_path": str(install.binary),
            "triton_server_flags": {"backend_directory": str(backend_directory(install))},
            "triton_server_environment": {k: env[k] for k in
                                          ("LD_LIBRARY_PATH", "PYTHONPATH", "PATH") if k in env},
            "triton_http_endpoint": f"localhost:{h}", "triton_grpc_endpoint": f"localhost:{g}",
            "triton_metrics_url": f"http://localhost:{m}/metrics",
        }
    host = (args.http_endpoint or "localhost:8000").rsplit(":", 1)[0]
    return {"triton_http_endpoint": args.http_endpoint,
            "triton_grpc_endpoint": args.grpc_endpoint,
            "triton_metrics_url": args.metrics_url or f"http://{host}:8002/metrics"}


def _search_config(args: AnalyzeArgs) -> dict:
    """What is profiled: model-analyzer's brute search, or our few named configs."""
    if args.search == "brute":
        return {"run_config_search_mode": "brute",
                "run_config_search_max_concurrency": args.max_concurrency,
                "run_config_search_max_model_batch_size": args.max_batch_size,
                "run_config_search_max_instance_count": args.max_instances,
                "profile_models": ",".join(args.models)}
    points = list(args.concurrency) if args.concurrency else sorted({1, args.max_concurrency})
    group = {"count": list(range(1, args.max_instances + 1))}
    if args.instance_kind != "auto":
        group["kind"] = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}[args.instance_kind]
    return {"run_config_search_disable": True,
            "profile_models": {
                m: {"model_config_parameters": {
                        "max_batch_size": [args.max_batch_size],
                        "dynamic_batching": {"max_queue_delay_microseconds": [100]},
                        "instance_group": [[group]]},
                    "parameters": {"concurrency": points, "batch_sizes": [1]}}
                for m in args.models}}


def _num(text: str) -> float:
    return float(str(text).replace(",", "").strip() or "nan")


def parse_inference_csv(text: str) -> dict[str, dict]:
    """metrics-model-inference.csv -> {model: {best, default, rows}}.

    Columns are display names. The config name (``Model Config Path``) is
    ``<model>_config_default`` for the model's own config and
    ``<model>_config_<n>`` for the variants.
    """
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    for need in ("Model", THROUGHPUT, P99):
        if need not in fields:
            raise ValueError(f"metrics-model-inference.csv lacks column {need!r} "
                             f"(has: {', '.join(fields)})")
    config_col = next((c for c in ("Model Config Path", "Model Config") if c in fields), None)
    out: dict[str, dict] = {}
    for rec in reader:
        if not rec.get("Model"):
            continue
        row = {
            "config": (rec.get(config_col) or "") if config_col else "",
            "batch": int(_num(rec.get("Batch", "1") or "1")),
            "concurrency": int(_num(rec.get("Concurrency", "0") or "0")),
            "instances": (rec.get("Instance Group") or "").strip(),
            "maxBatchSize": (rec.get("Max Batch Size") or "").strip(),
            "dynamicBatching": (rec.get("Dynamic Batcher") or rec.get("Dynamic Batching")
                                or "").strip(),
            "throughput": _num(rec[THROUGHPUT]),
            "p99Ms": _num(rec[P99]),
            "satisfies": (rec.get("Satisfies Constraints") or "").strip(),
        }
        out.setdefault(rec["Model"], {"rows": []})["rows"].append(row)
    if not out:
        raise ValueError("metrics-model-inference.csv has no rows")
    for model, entry in out.items():
        rows = entry["rows"]
        # model-analyzer's own verdict on the constraints (the SLO): a row it marks
        # "No" is never the best; with none meeting them there is no best
        eligible = [r for r in rows if r["satisfies"] != "No"]
        entry["best"] = max(eligible, key=lambda r: r["throughput"]) if eligible else None
        # the default compared like for like: among the points meeting the SLO too
        defaults = [r for r in eligible if r["config"].endswith("_config_default")]
        entry["default"] = max(defaults, key=lambda r: r["throughput"]) if defaults else None
    return out


def parse_gpu_csv(text: str) -> dict[tuple[str, str, int, int], float]:
    """metrics-model-gpu.csv -> (model, config, batch, concurrency) -> GPU power in W,
    summed over the GPUs of the measurement (what the server drew). model-analyzer
    reads it from Triton's ``nv_gpu_power_usage`` while perf_analyzer measures; it
    writes no row for a measurement without a GPU, so a CPU run gives nothing."""
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    power_col = next((c for c in fields if c.endswith("GPU Power Usage (W)")), None)
    config_col = next((c for c in ("Model Config Path", "Model Config") if c in fields), None)
    if power_col is None or config_col is None or "Model" not in fields:
        return {}
    out: dict[tuple[str, str, int, int], float] = {}
    for rec in reader:
        watts = _num(rec.get(power_col) or "")
        if not rec.get("Model") or watts != watts:   # NaN: an empty cell
            continue
        key = (rec["Model"], rec.get(config_col) or "", int(_num(rec.get("Batch") or "1")),
               int(_num(rec.get("Concurrency") or "0")))
        out[key] = out.get(key, 0.0) + watts
    return out


def add_power(parsed: dict[str, dict], power: dict[tuple[str, str, int, int], float]) -> None:
    """Give each row measured with a GPU its power and inferences per joule (its
    throughput over its power), and each model ``perJoule``: the row with the most
    inferences per joule among those meeting the constraints (the SLO), or None."""
    for model, entry in parsed.items():
        for row in entry["rows"]:
            watts = power.get((model, row["config"], row["batch"], row["concurrency"]))
            if watts:
                row.update(powerW=watts, inferPerJoule=row["throughput"] / watts)
        eligible = [r for r in entry["rows"] if r["satisfies"] != "No" and "inferPerJoule" in r]
        entry["perJoule"] = max(eligible, key=lambda r: r["inferPerJoule"]) if eligible else None


def config_settings(pbtxt: str) -> dict:
    """What a profiled config.pbtxt sets that the repo stage can apply: instance
    count and kind, max_batch_size, dynamic batching (ints and strings)."""
    out: dict = {}
    mbs = re.search(r"^max_batch_size:\s*(\d+)", pbtxt, re.M)
    if mbs:
        out["maxBatchSize"] = int(mbs.group(1))
    group = re.search(r"instance_group\s*\[?\s*\{([^}]*)\}", pbtxt)
    if group:
        count = re.search(r"count:\s*(\d+)", group.group(1))
        kind = re.search(r"kind:\s*KIND_(\w+)", group.group(1))
        out["instances"] = int(count.group(1)) if count else 1
        out["instanceKind"] = kind.group(1).lower() if kind and kind.group(1) in ("CPU", "GPU") \
            else "auto"
    batching = re.search(r"dynamic_batching\s*\{([^}]*)\}", pbtxt)
    out["dynamicBatching"] = "on" if batching else "off"
    if batching:
        sizes = [int(v) for v in re.findall(r"preferred_batch_size:\s*\[?\s*([\d,\s]+)\]?",
                                            batching.group(1)) for v in re.findall(r"\d+", v)]
        out["preferredBatchSizes"] = ",".join(map(str, sorted(set(sizes))))
        delay = re.search(r"max_queue_delay_microseconds:\s*(\d+)", batching.group(1))
        out["maxQueueDelayUs"] = int(delay.group(1)) if delay else 0
    return out


def csv_settings(row: dict) -> dict:
    """The same from the CSV row alone (``Instance Group`` is ``COUNT:KIND``)."""
    out: dict = {}
    count, _, kind = row.get("instances", "").partition(":")
    if count.strip().isdigit():
        out["instances"] = int(count)
        out["instanceKind"] = kind.strip().lower() if kind.strip() in ("CPU", "GPU") else "auto"
    if str(row.get("maxBatchSize", "")).strip().isdigit():
        out["maxBatchSize"] = int(row["maxBatchSize"])
    return out


def _settings(row: dict, configs: Path | None) -> dict:
    """The settings the closed loop writes into the repository for one row's config
    (read from ``configs/<config>/config.pbtxt`` when model-analyzer left it)."""
    pbtxt = configs / row["config"] / "config.pbtxt" if configs and row["config"] else None
    return config_settings(pbtxt.read_text()) if pbtxt and pbtxt.is_file() else csv_settings(row)


#: Why a model has no best config by inferences per joule.
NO_POWER = ("model-analyzer measured no GPU power (no GPU, or Triton reports no "
            "nv_gpu_power_usage): nothing to rank by inferences per joule")


def per_joule_part(entry: dict, configs: Path | None) -> dict:
    """A model's best config by inferences per joule, with what it won with."""
    b = entry.get("perJoule")
    if b is None:
        return {"perJouleNote": NO_POWER if not any("powerW" in r for r in entry["rows"])
                else "no config measured with GPU power meets the SLO"}
    return {"perJoule": {"bestConfig": b["config"], "concurrency": b["concurrency"],
                         "throughput": fmt(b["throughput"], 1), "p99Ms": fmt(b["p99Ms"], 2),
                         "powerW": fmt(b["powerW"], 1), "inferPerJoule": fmt(b["inferPerJoule"], 2),
                         "apply": _settings(b, configs)}}


def summarize(parsed: dict[str, dict], configs: Path | None = None) -> dict:
    """Per model: the best config (the most throughput), its throughput against the
    default config's, under ``apply`` the settings the closed loop writes into the
    repository, and under ``perJoule`` the best config by inferences per joule
    (``perJouleNote`` when there is none: no GPU power measured)."""
    result = {}
    for model, entry in parsed.items():
        b, d = entry["best"], entry["default"]
        if b is None:   # no measured config meets the SLO: nothing to call best or apply
            fastest = min(entry["rows"], key=lambda r: r["p99Ms"])
            result[model] = {"meetsSlo": "none",
                             "configsMeasured": len({r["config"] for r in entry["rows"]}),
                             "note": f"no config meets the SLO; the lowest p99 was "
                                     f"{fmt(fastest['p99Ms'], 2)} ms ({fastest['config']} at "
                                     f"concurrency {fastest['concurrency']})"}
            continue
        s = {"bestConfig": b["config"], "batch": b["batch"], "concurrency": b["concurrency"],
             "instances": b["instances"], "maxBatchSize": b["maxBatchSize"],
             "throughput": fmt(b["throughput"], 1), "p99Ms": fmt(b["p99Ms"], 2),
             "configsMeasured": len({r["config"] for r in entry["rows"]})}
        if d is not None:
            s["defaultThroughput"] = fmt(d["throughput"], 1)
            s["bestOverDefault"] = fmt(b["throughput"] / d["throughput"], 2) if d["throughput"] else "0"
        if "powerW" in b:
            s.update(powerW=fmt(b["powerW"], 1), inferPerJoule=fmt(b["inferPerJoule"], 2))
        s["apply"] = _settings(b, configs)
        result[model] = {**s, **per_joule_part(entry, configs)}
    return result


def dcgm_library() -> Path | None:
    """DCGM 4's library where model-analyzer 1.58 loads it from (dcgm_structs)."""
    for path in (Path(f"/usr/lib/{platform.machine()}-linux-gnu/libdcgm.so.4"),
                 Path("/usr/lib64/libdcgm.so.4")):
        if path.is_file():
            return path
    return None


def needs_triton_beside(launch_mode: str) -> bool:
    """model-analyzer's local mode lists the GPUs with DCGM to fence the Triton it
    launches (CUDA_VISIBLE_DEVICES), and fails on a GPU machine without DCGM; its
    remote mode needs no DCGM (GPU metrics come from Triton's own endpoint)."""
    return launch_mode == "local" and Path("/dev/nvidiactl").exists() and dcgm_library() is None


def start_triton_beside(repo: Path, out: Path) -> TritonServer:
    """A tritonserver in explicit model-control mode for model-analyzer's remote
    mode: the operator's analyze pod runs the same beside it as a sidecar."""
    print("analyze: no DCGM for model-analyzer's local mode on this GPU machine: profiling "
          "a tritonserver started beside it (explicit model control, remote mode)",
          file=sys.stderr, flush=True)
    return start_explicit(repo, out)


def run_analyze(a) -> dict:
    args = AnalyzeArgs.from_args(a)
    ma = _find_model_analyzer()
    args.out.mkdir(parents=True, exist_ok=True)
    beside = start_triton_beside(args.model_repo, args.out) \
        if needs_triton_beside(args.launch_mode) else None
    if beside:
        args = replace(args, launch_mode="remote", http_endpoint=beside.http_url,
                       grpc_endpoint=beside.grpc_url,
                       metrics_url=f"http://{beside.metrics_url}/metrics")
    try:
        cfg = write_profile_config(args, dcgm=beside is None)
        code, started = profile(ma, args.out, args.timeout_s)
    finally:
        if beside is not None:
            beside.stop()
    seconds = int(round(time.time() - started))
    result = collect_results(args.out, code)
    if beside:
        result["tritonBeside"] = ("no DCGM for model-analyzer's local mode on this GPU machine: "
                                  "a tritonserver beside it, profiled in remote mode")
    tools = {"modelAnalyzer": provenance.model_analyzer_version(ma),
             "perfAnalyzer": provenance.perf_analyzer_version(cfg["perf_analyzer_path"])}
    return {**result, "search": args.search, "launchMode": args.launch_mode,
            "profileSeconds": seconds, "environment": tools, "out": str(args.out)}


def write_profile_config(args: AnalyzeArgs, *, dcgm: bool) -> dict:
    """``<out>/config.yaml`` for a fresh run; returns the config."""
    out = args.out
    try:
        cfg = build_config(args)
    except FileNotFoundError as exc:
        raise StageError(str(exc), reason="PerfAnalyzerNotFound") from None
    if not dcgm:   # DCGM only lists GPUs for a Triton model-analyzer launches itself
        cfg["dcgm_disable"] = True
    (out / "perf_analyzer_error.log").unlink(missing_ok=True)   # only this run's errors count
    # model-analyzer resumes from its checkpoint: measurements of an earlier
    # repository (another max_batch_size, say) would mix into this run's
    # results under the same config names, so every run starts fresh
    for stale in ("checkpoints", "results", "reports"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "config.yaml").write_text("# model-analyzer profile config written by mnist_jobs.analyze "
                                     "(JSON is valid YAML)\n" + json.dumps(cfg, indent=2) + "\n")
    return cfg


def profile(ma: str, out: Path, timeout_s: int) -> tuple[int, float]:
    """``model-analyzer profile -f <out>/config.yaml``, its output into
    ``<out>/model-analyzer.log`` (progress lines to stderr), stopped after
    ``timeout_s``; returns its exit code and when it started."""
    cmd = [ma, "profile", "-f", str(out / "config.yaml")]
    log_path = out / LOG
    print(f"analyze: {' '.join(cmd)} (log {log_path})", file=sys.stderr, flush=True)
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            assert proc.stdout is not None
            deadline = started + timeout_s
            for line in proc.stdout:
                log.write(f"[+{time.time() - started:6.1f}s] {line}")
                log.flush()
                if "Profiling " in line or "measurement" in line.lower() and "INFO" in line:
                    print(f"analyze: {line.strip()[:200]}", file=sys.stderr, flush=True)
                if time.time() > deadline:
                    raise StageError(f"model-analyzer ran over --timeout-s {timeout_s}; "
                                     f"log {log_path}", reason="Timeout")
            return proc.wait(), started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()


def collect_results(out: Path, code: int) -> dict:
    """What model-analyzer (exit ``code``) left under ``out``: the best config per
    model (also written to ``best.json``), the reports, failed measurements."""
    log_path = out / LOG
    if code != 0:
        tail = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()][-1:]
        raise StageError(f"model-analyzer exited {code}: {(tail or [''])[0][:200]} "
                         f"(log {log_path})", reason="ModelAnalyzerFailed")
    csv_path = out / "results" / "metrics-model-inference.csv"
    if not csv_path.is_file():
        raise StageError(f"model-analyzer wrote no {csv_path}", reason="NoResults")
    try:
        parsed = parse_inference_csv(csv_path.read_text())
    except ValueError as exc:
        raise StageError(str(exc), reason="BadResults") from None
    gpu_csv = out / "results" / "metrics-model-gpu.csv"
    add_power(parsed, parse_gpu_csv(gpu_csv.read_text()) if gpu_csv.is_file() else {})
    reports = sorted(str(p.relative_to(out)) for p in (out / "reports").rglob("*")
                     if p.suffix in (".html", ".pdf"))
    log_text = log_path.read_text(errors="replace")
    report_note = ("PDF" if any(r.endswith(".pdf") for r in reports) else
                   "HTML (wkhtmltopdf is not installed, so model-analyzer wrote HTML instead of PDF)"
                   if "wkhtmltopdf is not installed" in log_text else "HTML")
    (out / "best.json").write_text(json.dumps(parsed, indent=1))
    errors_log = out / "perf_analyzer_error.log"
    failed = errors_log.read_text(errors="replace").count("Command:") if errors_log.is_file() else 0
    result: dict = {}
    if failed:
        result["failedMeasurements"] = failed
        result["warning"] = (f"perf_analyzer failed {failed} measurement(s); those configs are "
                             f"missing from the results: see {errors_log}")
        print(f"analyze: warning: {result['warning']}", file=sys.stderr, flush=True)
    return {**result, "models": summarize(parsed, out / "output_model_repository"),
            "reports": reports[:6], "reportFormat": report_note}


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "models": "model -> its best config, its settings and the row it won with; under "
              "perJoule the same for the most inferences per joule (perJouleNote: why none)",
    "reports": "model-analyzer's reports", "reportFormat": "HTML or PDF, and why",
    "failedMeasurements": "configs perf_analyzer failed to measure",
    "warning": "what those failures mean, in words",
    "tritonBeside": "why a tritonserver ran beside model-analyzer",
    "search": "bounded or brute", "launchMode": "local or remote",
    "profileSeconds": "model-analyzer's run time",
    "environment": "model-analyzer's and perf_analyzer's versions",
    "out": "the directory with checkpoints, CSVs and reports",
}


def parser():
    p = stage_parser("analyze", "Profile served models with model-analyzer (bounded by default).")
    p.add_argument("--model-repo", type=Path, required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-concurrency", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, required=True)
    p.add_argument("--max-instances", type=int, required=True)
    p.add_argument("--search", choices=("bounded", "brute"), required=True,
                   help="bounded: a few named configs (the demo); brute: model-analyzer's search")
    p.add_argument("--concurrency", default="",
                   help="bounded search: concurrency points, e.g. 1,4,16 (default 1,MAX)")
    p.add_argument("--instance-kind", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--measurement-interval-ms", type=int, default=1000)
    p.add_argument("--stability-percentage", type=int, default=30,
                   help="perf_analyzer -s for every measurement (its default is 10)")
    p.add_argument("--slo-p99-ms", type=int, default=0,
                   help="model-analyzer constraint perf_latency_p99 max (ms; 0 = none)")
    p.add_argument("--slo-p95-ms", type=int, default=0,
                   help="model-analyzer constraint perf_latency_p95 max (ms; 0 = none)")
    p.add_argument("--timeout-s", type=int, default=1800)
    add_launch_flags(p, "default: the HTTP host, port 8002")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("analyze", parser(), run_analyze, argv)


if __name__ == "__main__":
    raise SystemExit(main())
