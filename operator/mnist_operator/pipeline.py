"""The stage graph both runners share (the operator and the local runner).

Pure: spec in, steps out. A *step* is one run of one stage CLI: one Job in a
cluster, one subprocess locally, one JSON result either way. Most stages are
one step; ``bench`` is one step per protocol (``bench-grpc``, ``bench-http``).

Each step carries a *fingerprint*: a short hash of exactly the spec fields
that change its output, plus the fingerprints of the steps it reads from.
A step whose recorded fingerprint matches is done and is never rerun; a
spec change therefore re-runs the step it touches and everything downstream
of it, and nothing else (a new concurrency range re-benchmarks only, a new
learning rate retrains and redoes everything).

``serve`` is a step too: locally the ``serve`` stage runs Triton in the
background; in a cluster it is the Triton Deployment, and its fingerprint
goes into the pod template so a changed repository rolls the pods.

The closed loop (``benchmark.modelAnalyzer.applyBest``): once ``analyze``
has succeeded, ``plan`` given its recorded result adds ``repo-tuned`` (a
second repository, ``model_repo_tuned/``, with each model's best config as
``--override``), ``serve-tuned`` (Triton on that repository: the Deployment
rolls to it) and ``bench-tuned-<protocol>`` (the same sweep again). The best
config is part of their fingerprints, so a new analyze result with another
best config rewrites the tuned repository, and the same one reuses it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .spec import MnistServingSpec, TRITON_MODEL

#: Stage modules in pipeline order (``python -m mnist_jobs.<stage>``).
STAGES = ("train", "export", "engine", "repo", "serve", "client", "bench", "analyze")

#: Which image a step runs in (spec.images.<kind>).
IMAGE_FOR_STAGE = {
    "train": "pytorch", "export": "pytorch", "engine": "pytorch", "repo": "pytorch",
    "serve": "triton", "client": "sdk", "bench": "sdk", "analyze": "sdk",
}

#: Container ports Triton serves on (the Deployment and the local serve stage).
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002


@dataclass(frozen=True)
class Layout:
    """Where things live in the work directory (the model PVC, or runs/<name>/)."""
    root: PurePosixPath

    @property
    def data(self) -> PurePosixPath: return self.root / "data"
    @property
    def artifacts(self) -> PurePosixPath: return self.root / "artifacts"
    @property
    def model_repo(self) -> PurePosixPath: return self.root / "model_repo"
    @property
    def bench(self) -> PurePosixPath: return self.root / "bench"
    @property
    def analyze(self) -> PurePosixPath: return self.root / "analyze"
    @property
    def results(self) -> PurePosixPath: return self.root / "results"
    @property
    def tuned_repo(self) -> PurePosixPath: return self.root / "model_repo_tuned"
    @property
    def tuned_bench(self) -> PurePosixPath: return self.root / "bench_tuned"

    def result(self, step: str) -> PurePosixPath:
        return self.results / f"{step}.json"


@dataclass(frozen=True)
class Endpoints:
    """How later steps reach Triton: loopback locally, the Service in a cluster."""
    host: str = "127.0.0.1"
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT

    def url(self, protocol: str) -> str:
        return f"{self.host}:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def as_status(self) -> dict[str, str]:
        return {"http": f"http://{self.host}:{self.http_port}",
                "grpc": f"{self.host}:{self.grpc_port}",
                "metrics": f"http://{self.host}:{self.metrics_port}/metrics"}


@dataclass(frozen=True)
class Step:
    name: str                    # status key and Job name part: train, bench-grpc, ...
    stage: str                   # mnist_jobs module
    args: tuple[str, ...]        # after `python -m mnist_jobs.<stage>`, without --result
    fingerprint: str             # 12 hex chars
    needs: tuple[str, ...]       # step names whose outputs it reads
    gpus: int                    # nvidia.com/gpu it requests
    enabled: bool = True         # False: recorded as Skipped without running
    skip_reason: str = ""        # CamelCase reason when not enabled
    inputs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def image_kind(self) -> str:
        return IMAGE_FOR_STAGE[self.stage]

    @property
    def long_running(self) -> bool:
        return self.stage == "serve"


#: The closed loop's steps (bench-tuned-<protocol> besides these two).
REPO_TUNED, SERVE_TUNED, BENCH_TUNED = "repo-tuned", "serve-tuned", "bench-tuned-"


def is_tuned(step_name: str) -> bool:
    return step_name in (REPO_TUNED, SERVE_TUNED) or step_name.startswith(BENCH_TUNED)


def analyze_models_of(recorded: dict | None) -> dict[str, dict]:
    """The per-model part of an analyze record: the stage result itself
    (local runner) or the status record that holds it under ``result``."""
    if not recorded:
        return {}
    models = recorded.get("models") or (recorded.get("result") or {}).get("models") or {}
    return models if isinstance(models, dict) else {}


def best_overrides(recorded: dict | None) -> dict[str, dict[str, Any]]:
    """model -> the repo stage's --override values for its best config.

    Models whose best config is their own (``*_config_default``) are left
    out: they already serve the best one. Dynamic batching is always on in
    our repository; a best config without it keeps ours (and says so in
    the analyze result)."""
    out: dict[str, dict[str, Any]] = {}
    for model, entry in sorted(analyze_models_of(recorded).items()):
        best = str(entry.get("bestConfig", ""))
        found = entry.get("apply") or {}
        if not best or best.endswith("_config_default") or not found:
            continue
        values: dict[str, Any] = {}
        for key, src in (("instances", "instances"), ("max_batch_size", "maxBatchSize"),
                         ("max_queue_delay_us", "maxQueueDelayUs")):
            if str(found.get(src, "")).isdigit():
                values[key] = int(found[src])
        if found.get("instanceKind") in ("cpu", "gpu"):
            values["instance_kind"] = found["instanceKind"]
        sizes = str(found.get("preferredBatchSizes", ""))
        if found.get("dynamicBatching", "on") == "on" and sizes:
            values["preferred_batch_sizes"] = sizes
        if values:
            out[model] = values
    return out


def override_arg(model: str, values: dict[str, Any]) -> str:
    """``mnist_onnx:instances=2,max_batch_size=64,...`` for repo --override."""
    return f"{model}:" + ",".join(f"{k}={values[k]}" for k in sorted(values))


def fingerprint(inputs: Any) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _data_args(spec: MnistServingSpec, lay: Layout) -> list[str]:
    ds = spec.training.dataset
    return ["--data-source", ds.source, "--data-dir", ds.path or str(lay.data)]


def plan(spec: MnistServingSpec, lay: Layout, endpoints: Endpoints = Endpoints(),
         *, device: str = "auto", analyzed: dict | None = None) -> list[Step]:
    """Every step of the pipeline for ``spec``, in the order they run.

    ``device`` is the train stage's --device (auto locally; the operator
    passes cuda when training.gpus > 0 and cpu otherwise). ``analyzed`` is
    the recorded analyze result, if any: with ``applyBest`` and a Succeeded
    analyze of the current fingerprint whose best config differs from the
    served one, the closed loop's steps follow ``analyze``.
    """
    t, x, trt, sv = spec.training, spec.export, spec.tensorrt, spec.serving
    pa, ma = spec.benchmark.perf_analyzer, spec.benchmark.model_analyzer
    run_id = spec.benchmark.run_id
    steps: list[Step] = []
    fps: dict[str, str] = {}

    def add(name: str, stage: str, args: list[str], inputs: dict, needs: tuple[str, ...] = (),
            gpus: int = 0, enabled: bool = True, skip_reason: str = "") -> None:
        full = {"step": name, "inputs": inputs, "upstream": {n: fps[n] for n in needs}}
        fp = fingerprint(full)
        fps[name] = fp
        steps.append(Step(name, stage, tuple(args), fp, needs, gpus, enabled, skip_reason, inputs))

    a = lay.artifacts
    add("train", "train",
        [*_data_args(spec, lay), "--epochs", str(t.epochs), "--batch-size", str(t.batch_size),
         "--learning-rate", t.learning_rate, "--momentum", t.momentum, "--seed", str(t.seed),
         "--device", device, "--out", str(a)],
        {"training": {k: v for k, v in spec.to_dict()["training"].items() if k != "gpus"}},
        gpus=t.gpus)
    add("export", "export",
        ["--checkpoint", str(a / "model.pt"), "--out", str(a), "--opset", str(x.opset),
         *_data_args(spec, lay)],
        {"opset": x.opset}, ("train",), gpus=t.gpus)
    trt_inputs = {k: v for k, v in spec.to_dict()["tensorrt"].items() if k != "gpus"}
    trt_inputs["gpuProduct"] = spec.scheduling.gpu_product
    add("engine", "engine",
        ["--onnx", str(a / "model.onnx"), "--out", str(a / "model.plan"),
         "--profile", str(a / "trt-profile.json"), "--precision", trt.precision,
         "--min-batch", str(trt.min_batch), "--opt-batch", str(trt.opt_batch),
         "--max-batch", str(trt.max_batch)],
        trt_inputs, ("export",), gpus=trt.gpus if trt.enabled else 0,
        enabled=trt.enabled, skip_reason="" if trt.enabled else "Disabled")
    db = sv.dynamic_batching
    repo_args = ["--artifacts", str(a), "--out", str(lay.model_repo),
                 "--models", ",".join(m for m in ("onnx", "tensorrt", "bls") if m in sv.models),
                 "--max-batch-size", str(sv.max_batch_size), "--instances", str(sv.instances),
                 "--instance-kind", sv.instance_kind,
                 "--preferred-batch-sizes", ",".join(map(str, db.preferred_batch_sizes)),
                 "--max-queue-delay-us", str(db.max_queue_delay_microseconds)]
    if sv.cpu_only:
        repo_args.append("--cpu-only")
    serving = {k: v for k, v in spec.to_dict()["serving"].items()
               if k not in ("replicas", "gpus")}
    add("repo", "repo", repo_args, {"serving": serving}, ("export", "engine"))
    serve_args = ["--model-repo", str(lay.model_repo), "--http-port", str(endpoints.http_port),
                  "--grpc-port", str(endpoints.grpc_port),
                  "--metrics-port", str(endpoints.metrics_port), "--host", endpoints.host]
    serve_inputs = {"replicas": sv.replicas, "gpus": sv.gpus, "image": spec.images.triton}
    add("serve", "serve", serve_args, serve_inputs, ("repo",), gpus=sv.gpus)
    served = spec.served_triton_models()
    add("client", "client",
        ["--http-url", endpoints.url("http"), "--grpc-url", endpoints.url("grpc"),
         "--models", ",".join(served), *_data_args(spec, lay)],
        {"models": served}, ("serve",))
    bench_models = spec.bench_models()
    conc = pa.concurrency
    bench_args: dict[str, list[str]] = {}
    bench_inputs: dict[str, dict] = {}
    for protocol in pa.protocols:
        bench_args[protocol] = [
            "--url", endpoints.url(protocol), "--protocol", protocol,
            "--models", ",".join(bench_models), "--batch-size", str(pa.batch_size),
            "--concurrency", f"{conc.start}:{conc.end}:{conc.step}",
            "--measurement-mode", pa.measurement_mode,
            "--measurement-interval-ms", str(pa.measurement_interval_ms),
            "--measurement-request-count", str(pa.measurement_request_count),
            "--stability-percentage", str(pa.stability_percentage),
            "--out", str(lay.bench / protocol)]
        # each step measures one protocol: adding or removing the other
        # protocol must not re-run this one
        bench_inputs[protocol] = {
            "perfAnalyzer": {k: v for k, v in spec.to_dict()["benchmark"]["perfAnalyzer"].items()
                             if k != "protocols"},
            "runId": run_id, "protocol": protocol}
        add(f"bench-{protocol}", "bench", bench_args[protocol], bench_inputs[protocol], ("serve",))
    analyze_args = ["--model-repo", str(lay.model_repo), "--models", ",".join(spec.analyze_models()),
                    "--out", str(lay.analyze), "--max-concurrency", str(ma.max_concurrency),
                    "--max-batch-size", str(ma.max_batch_size),
                    "--max-instances", str(ma.max_instances), "--search", ma.search]
    add("analyze", "analyze", analyze_args,
        # applyBest decides what follows analyze, not what it measures: hashed
        # as false, so turning it on keeps a finished analysis
        {"modelAnalyzer": {**spec.to_dict()["benchmark"]["modelAnalyzer"], "applyBest": False},
         "runId": run_id},
        ("repo",), gpus=sv.gpus if ma.enabled else 0,
        enabled=ma.enabled, skip_reason="" if ma.enabled else "Disabled")

    # only a current analysis counts: while analyze re-runs there is nothing
    # to apply yet; both runners plan again once it has finished
    best = best_overrides(analyzed) if ma.apply_best and ma.enabled and \
        is_done(steps[-1], analyzed) and analyzed.get("state") == "Succeeded" else {}
    if not best:
        return steps
    tuned_args = [*repo_args]
    tuned_args[tuned_args.index("--out") + 1] = str(lay.tuned_repo)
    for model, values in best.items():
        tuned_args += ["--override", override_arg(model, values)]
    # the best config, not analyze's fingerprint: a re-analysis (new runId)
    # that finds the same config reuses the tuned repository and its Triton
    add(REPO_TUNED, "repo", tuned_args, {"serving": serving, "apply": best},
        ("export", "engine"))
    add(SERVE_TUNED, "serve", [*serve_args[:1], str(lay.tuned_repo), *serve_args[2:]],
        serve_inputs, (REPO_TUNED,), gpus=sv.gpus)
    for protocol in pa.protocols:
        args = [*bench_args[protocol]]
        args[args.index("--out") + 1] = str(lay.tuned_bench / protocol)
        add(f"{BENCH_TUNED}{protocol}", "bench", args, bench_inputs[protocol], (SERVE_TUNED,))
    return steps


def step_names(spec: MnistServingSpec) -> list[str]:
    return [s.name for s in plan(spec, Layout(PurePosixPath("/work")))]


def is_done(step: Step, recorded: dict | None) -> bool:
    """A recorded step result is still valid for ``step``: it finished with
    the same fingerprint (Skipped counts as finished)."""
    return bool(recorded) and recorded.get("fingerprint") == step.fingerprint \
        and recorded.get("state") in ("Succeeded", "Skipped")


def stale_after(steps: list[Step], changed: str) -> list[str]:
    """Names of ``changed`` and every step downstream of it (for messages/tests)."""
    out, dirty = [], {changed}
    for s in steps:
        if s.name in dirty or dirty & set(s.needs):
            dirty.add(s.name)
            out.append(s.name)
    return out


__all__ = ["STAGES", "Layout", "Endpoints", "Step", "plan", "fingerprint", "is_done",
           "best_overrides", "analyze_models_of", "override_arg", "is_tuned",
           "REPO_TUNED", "SERVE_TUNED", "BENCH_TUNED",
           "stale_after", "step_names", "TRITON_MODEL", "HTTP_PORT", "GRPC_PORT", "METRICS_PORT"]
