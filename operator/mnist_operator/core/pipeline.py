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
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePosixPath
from typing import Any, NamedTuple

from mnist_operator.api import stage_table
from mnist_operator.api.spec import MODELS, TRITON_MODEL, MnistServingSpec
from mnist_operator.api.vocabulary import FINISHED

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
    def candidate_repo(self) -> PurePosixPath: return self.root / "model_repo_candidates"
    @property
    def confirm(self) -> PurePosixPath: return self.root / "confirm"
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

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def as_status(self) -> dict[str, str]:
        return {"http": f"http://{self.host}:{self.http_port}",
                "grpc": f"{self.host}:{self.grpc_port}", "metrics": self.metrics_url}


# --------------------------------------------------------------------------- stage parameters
def repeated() -> Any:
    """A tuple field given as one flag per item (``--override a --override b``)."""
    return field(default=(), metadata={"repeat": True})


@dataclass(frozen=True)
class Params:
    """A stage CLI's flags, one field each: ``--field-name value``. A tuple is
    one comma-joined value (or one flag per item, see ``repeated``); True is a
    bare flag; None and False leave the flag out."""

    def argv(self) -> tuple[str, ...]:
        out: list[str] = []
        for f in fields(self):
            value, flag = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if value is None or value is False:
                continue
            if value is True:
                out.append(flag)
            elif f.metadata.get("repeat"):
                for item in value:
                    out += [flag, str(item)]
            elif isinstance(value, tuple):
                out += [flag, ",".join(map(str, value))]
            else:
                out += [flag, str(value)]
        return tuple(out)


@dataclass(frozen=True)
class TrainParams(Params):
    data_source: str
    data_dir: str
    epochs: int
    batch_size: int
    learning_rate: str
    momentum: str
    seed: int
    device: str
    out: str


@dataclass(frozen=True)
class ExportParams(Params):
    checkpoint: str
    out: str
    opset: int
    data_source: str
    data_dir: str


@dataclass(frozen=True)
class EngineParams(Params):
    onnx: str
    out: str
    profile: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int


@dataclass(frozen=True)
class RepoParams(Params):
    artifacts: str
    out: str
    models: tuple[str, ...]
    max_batch_size: int
    instances: int
    instance_kind: str
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    cpu_only: bool = False
    override: tuple[str, ...] = repeated()   # model:key=value,... (the closed loop's best config)


@dataclass(frozen=True)
class ServeParams(Params):
    model_repo: str
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str


@dataclass(frozen=True)
class ClientParams(Params):
    http_url: str
    grpc_url: str
    models: tuple[str, ...]
    data_source: str
    data_dir: str


@dataclass(frozen=True)
class BenchParams(Params):
    url: str
    protocol: str
    models: tuple[str, ...]
    batch_size: int
    concurrency: str          # start:end:step
    measurement_mode: str
    measurement_interval_ms: int
    measurement_request_count: int
    stability_percentage: int
    out: str
    repeats: int = 1
    load_mode: str = "concurrency"
    request_rate: str | None = None        # start:end:step, with load_mode requestRate
    request_distribution: str | None = None
    slo_p99_ms: int | None = None           # benchmark.slo, left out when 0
    slo_p95_ms: int | None = None
    slo_decide_within_s: int | None = None  # with an SLO: how long an undecided point is measured
    # Triton's metrics, sampled during each point: where it listens, not what is
    # measured, so no fingerprint input (plan hashes inputs, never parameters)
    metrics_url: str = ""
    clients: int | None = None              # perfAnalyzer.clients, left out when 1


@dataclass(frozen=True)
class AnalyzeParams(Params):
    model_repo: str
    models: tuple[str, ...]
    out: str
    max_concurrency: int
    max_batch_size: int
    max_instances: int
    search: str
    slo_p99_ms: int | None = None           # model-analyzer constraints
    slo_p95_ms: int | None = None


@dataclass(frozen=True)
class ConfirmParams(Params):
    model_repo: str
    candidates: tuple[str, ...]             # model:concurrency (model-analyzer's)
    protocol: str
    batch_size: int
    measurement_mode: str
    measurement_interval_ms: int
    measurement_request_count: int
    stability_percentage: int
    repeats: int
    slo_p99_ms: int
    slo_p95_ms: int
    slo_decide_within_s: int
    out: str


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Step:
    name: str                    # status key and Job name part: train, bench-grpc, ...
    stage: str                   # mnist_jobs module, a row of stage_table.STAGES
    params: Params               # its CLI's flags, without --result
    fingerprint: str             # 12 hex chars
    needs: tuple[str, ...]       # step names whose outputs it reads
    gpus: int                    # nvidia.com/gpu it requests
    enabled: bool = True         # False: recorded as Skipped without running
    skip_reason: str = ""        # CamelCase reason when not enabled
    inputs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def facts(self) -> stage_table.Stage:
        return stage_table.BY_NAME[self.stage]

    @property
    def args(self) -> tuple[str, ...]:
        """After ``python -m mnist_jobs.<stage>``."""
        return self.params.argv()

    @property
    def image_kind(self) -> str:
        return self.facts.image

    @property
    def long_running(self) -> bool:
        return self.facts.long_running

    @property
    def pods(self) -> int:
        """Pods its Job runs together: the bench clients (an Indexed Job), else one."""
        return getattr(self.params, "clients", None) or 1


#: The closed loop's steps (bench-tuned-<protocol> besides these two).
REPO_TUNED, SERVE_TUNED, BENCH_TUNED = "repo-tuned", "serve-tuned", "bench-tuned-"
#: With an SLO, the steps that hold the candidates to it before the tuned ones.
REPO_CANDIDATES, CONFIRM = "repo-candidates", "confirm-candidates"


def analyze_models_of(recorded: dict | None) -> dict[str, dict]:
    """The per-model part of an analyze record: the stage result itself
    (local runner) or the status record that holds it under ``result``."""
    if not recorded:
        return {}
    models = recorded.get("models") or (recorded.get("result") or {}).get("models") or {}
    return models if isinstance(models, dict) else {}


def best_of(entry: dict, objective: str = "throughput") -> dict:
    """One model's analyze entry as the closed loop ranks it for ``objective``
    (benchmark.objective): the config with the most throughput (at the SLO, as
    model-analyzer's constraints already hold it), or with inferencesPerJoule the
    one with the most inferences per joule (``{}`` where no GPU power was measured)."""
    return (entry.get("perJoule") or {}) if objective == "inferencesPerJoule" else entry


def best_overrides(recorded: dict | None, objective: str = "throughput") -> dict[str, dict[str, Any]]:
    """model -> the repo stage's --override values for its best config for ``objective``.

    Models whose best config is their own (``*_config_default``) are left
    out: they already serve the best one. Dynamic batching is always on in
    our repository; a best config without it keeps ours (and says so in
    the analyze result)."""
    out: dict[str, dict[str, Any]] = {}
    for model, found_entry in sorted(analyze_models_of(recorded).items()):
        entry = best_of(found_entry, objective)
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


def confirmed_of(recorded: dict | None) -> list[str] | None:
    """The models a confirm record (the stage result or its status record) found
    meeting the SLO; None when it holds no such list."""
    if not recorded:
        return None
    found = recorded.get("confirmed", (recorded.get("result") or {}).get("confirmed"))
    return list(found) if isinstance(found, list) else None


def override_arg(model: str, values: dict[str, Any]) -> str:
    """``mnist_onnx:instances=2,max_batch_size=64,...`` for repo --override."""
    return f"{model}:" + ",".join(f"{k}={values[k]}" for k in sorted(values))


def fingerprint(inputs: Any) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Context:
    """What every group of steps reads: the spec (and its dict, built once: it is
    most of a plan's cost), where the work directory is and how Triton is reached."""
    spec: MnistServingSpec
    given: dict[str, Any]
    lay: Layout
    endpoints: Endpoints

    @property
    def data_source(self) -> str:
        return self.spec.training.dataset.source

    @property
    def data_dir(self) -> str:
        return self.spec.training.dataset.path or str(self.lay.data)


class _Draft(NamedTuple):
    """A step before its fingerprint, which needs its upstream steps' ones."""
    name: str
    stage: str
    params: Params
    inputs: dict
    needs: tuple[str, ...] = ()
    gpus: int = 0
    enabled: bool = True
    skip_reason: str = ""


def _fingerprinted(drafts: list[_Draft], before: list[Step] | None = None) -> list[Step]:
    """``drafts`` as steps, in order: each fingerprint hashes the step's name and
    inputs and the fingerprints of the steps it needs (from ``before`` or earlier
    in ``drafts``)."""
    fps = {s.name: s.fingerprint for s in before or ()}
    steps: list[Step] = []
    for d in drafts:
        fp = fingerprint({"step": d.name, "inputs": d.inputs,
                          "upstream": {n: fps[n] for n in d.needs}})
        fps[d.name] = fp
        steps.append(Step(d.name, d.stage, d.params, fp, d.needs, d.gpus, d.enabled,
                          d.skip_reason, d.inputs))
    return steps


def _model_steps(c: _Context, device: str) -> list[_Draft]:
    """train, export and engine: the model and its ONNX and TensorRT forms."""
    spec, a = c.spec, c.lay.artifacts
    t, x, trt = spec.training, spec.export, spec.tensorrt
    trt_inputs = {k: v for k, v in c.given["tensorrt"].items() if k != "gpus"}
    trt_inputs["gpuProduct"] = spec.scheduling.gpu_product
    # a plan loads only in Triton's TensorRT version: a new image builds it again
    trt_inputs["image"] = spec.images.pytorch
    return [
        _Draft("train", "train",
               TrainParams(c.data_source, c.data_dir, t.epochs, t.batch_size, t.learning_rate,
                           t.momentum, t.seed, device, str(a)),
               {"training": {k: v for k, v in c.given["training"].items() if k != "gpus"}},
               gpus=t.gpus),
        _Draft("export", "export",
               ExportParams(str(a / "model.pt"), str(a), x.opset, c.data_source, c.data_dir),
               {"opset": x.opset}, ("train",), gpus=t.gpus),
        _Draft("engine", "engine",
               EngineParams(str(a / "model.onnx"), str(a / "model.plan"),
                            str(a / "trt-profile.json"), trt.precision, trt.min_batch,
                            trt.opt_batch, trt.max_batch),
               trt_inputs, ("export",), gpus=trt.gpus if trt.enabled else 0,
               enabled=trt.enabled, skip_reason="" if trt.enabled else "Disabled"),
    ]


def _serving_steps(c: _Context) -> list[_Draft]:
    """repo, serve and client: the repository, Triton on it, and a first request."""
    sv, ep, db = c.spec.serving, c.endpoints, c.spec.serving.dynamic_batching
    repo = RepoParams(str(c.lay.artifacts), str(c.lay.model_repo),
                      tuple(m for m in MODELS if m in sv.models),
                      sv.max_batch_size, sv.instances, sv.instance_kind,
                      tuple(db.preferred_batch_sizes), db.max_queue_delay_microseconds,
                      cpu_only=sv.cpu_only)
    # the accuracy tolerance judges results and changes nothing a step makes; whether
    # Triton stops after the benchmark changes only the Deployment's replica count
    serving = {k: v for k, v in c.given["serving"].items()
               if k not in ("replicas", "gpus", "accuracyTolerance", "stopAfterBenchmark")}
    serve = ServeParams(str(c.lay.model_repo), ep.http_port, ep.grpc_port, ep.metrics_port,
                        ep.host)
    served = c.spec.served_triton_models()
    return [
        _Draft("repo", "repo", repo, {"serving": serving}, ("export", "engine")),
        _Draft("serve", "serve", serve,
               {"replicas": sv.replicas, "gpus": sv.gpus, "image": c.spec.images.triton},
               ("repo",), gpus=sv.gpus),
        _Draft("client", "client",
               ClientParams(ep.url("http"), ep.url("grpc"), tuple(served), c.data_source,
                            c.data_dir),
               {"models": served}, ("serve",)),
    ]


def _slo_flags(spec: MnistServingSpec) -> dict[str, int | None]:
    """The SLO reaches the commands and the fingerprints only when set, so a
    resource without one keeps its fingerprints."""
    slo = spec.benchmark.slo
    return {"slo_p99_ms": slo.p99_ms or None, "slo_p95_ms": slo.p95_ms or None}


def _bench_slo_flags(spec: MnistServingSpec) -> dict[str, int | None]:
    slo = spec.benchmark.slo
    return {**_slo_flags(spec),
            "slo_decide_within_s": slo.decide_within_seconds if slo.active else None}


def _slo_inputs(c: _Context) -> dict[str, Any]:
    return {"slo": c.given["benchmark"]["slo"]} if c.spec.benchmark.slo.active else {}


def _bench_steps(c: _Context) -> list[_Draft]:
    """bench-<protocol>: one perf_analyzer sweep per protocol."""
    pa = c.spec.benchmark.perf_analyzer
    conc, load, rate = pa.concurrency, pa.load, pa.load.request_rate
    open_loop = {"request_rate": f"{rate.start}:{rate.end}:{rate.step}",
                 "request_distribution": load.distribution} if load.mode == "requestRate" else {}
    # what the sweep measures; the open-loop settings, repeats and clients count only
    # when they are in use, so resources that use none of them keep their fingerprints
    measured = {k: v for k, v in c.given["benchmark"]["perfAnalyzer"].items()
                if k != "protocols" and not (k == "load" and not open_loop)
                and not (k in ("repeats", "clients") and v == 1)}
    drafts = []
    for protocol in pa.protocols:
        params = BenchParams(
            c.endpoints.url(protocol), protocol, tuple(c.spec.bench_models()), pa.batch_size,
            f"{conc.start}:{conc.end}:{conc.step}", pa.measurement_mode,
            pa.measurement_interval_ms, pa.measurement_request_count, pa.stability_percentage,
            str(c.lay.bench / protocol), repeats=pa.repeats, load_mode=load.mode, **open_loop,
            **_bench_slo_flags(c.spec), metrics_url=c.endpoints.metrics_url,
            clients=pa.clients if pa.clients > 1 else None)
        # each step measures one protocol: adding or removing the other
        # protocol must not re-run this one
        inputs = {"perfAnalyzer": measured, "runId": c.spec.benchmark.run_id,
                  "protocol": protocol, **_slo_inputs(c)}
        drafts.append(_Draft(f"bench-{protocol}", "bench", params, inputs, ("serve",)))
    return drafts


def _analyze_step(c: _Context) -> _Draft:
    """analyze: model-analyzer over the repository (Skipped unless enabled)."""
    ma = c.spec.benchmark.model_analyzer
    return _Draft(
        "analyze", "analyze",
        AnalyzeParams(str(c.lay.model_repo), tuple(c.spec.analyze_models()), str(c.lay.analyze),
                      ma.max_concurrency, ma.max_batch_size, ma.max_instances, ma.search,
                      **_slo_flags(c.spec)),
        # applyBest decides what follows analyze, not what it measures: hashed
        # as false, so turning it on keeps a finished analysis
        {"modelAnalyzer": {**c.given["benchmark"]["modelAnalyzer"], "applyBest": False},
         "runId": c.spec.benchmark.run_id, **_slo_inputs(c)},
        ("repo",), gpus=c.spec.serving.gpus if ma.enabled else 0,
        enabled=ma.enabled, skip_reason="" if ma.enabled else "Disabled")


def _configs_to_apply(spec: MnistServingSpec, analyze: Step, analyzed: dict | None,
                      below_tolerance: frozenset[str]) -> dict[str, dict[str, Any]]:
    """The closed loop's best configs, per model: none unless applyBest is on and
    ``analyzed`` is a Succeeded analysis of ``analyze`` as planned now."""
    ma = spec.benchmark.model_analyzer
    # only a current analysis counts: while analyze re-runs there is nothing
    # to apply yet; both runners plan again once it has finished
    best = best_overrides(analyzed, spec.benchmark.closed_loop_objective) \
        if ma.apply_best and ma.enabled and \
        is_done(analyze, analyzed) and analyzed.get("state") == "Succeeded" else {}
    # the accuracy guard: a model below tolerance never gets a tuned config
    return {m: v for m, v in best.items() if m not in below_tolerance}


def _tuned_steps(steps: list[Step], lay: Layout, best: dict[str, dict[str, Any]]) -> list[_Draft]:
    """repo-tuned, serve-tuned and bench-tuned-<protocol>: the planned repo, serve
    and bench steps again, on the tuned repository. The best config, not analyze's
    fingerprint, is their input: a re-analysis (new runId) that finds the same
    config reuses the tuned repository and its Triton."""
    by_name = {s.name: s for s in steps}
    repo, serve = by_name["repo"], by_name["serve"]
    drafts = [
        _Draft(REPO_TUNED, "repo",
               replace(repo.params, out=str(lay.tuned_repo),
                       override=tuple(override_arg(m, v) for m, v in best.items())),
               {"serving": repo.inputs["serving"], "apply": best}, ("export", "engine")),
        _Draft(SERVE_TUNED, "serve", replace(serve.params, model_repo=str(lay.tuned_repo)),
               serve.inputs, (REPO_TUNED,), gpus=serve.gpus),
    ]
    for bench in (s for s in steps if s.stage == "bench"):
        protocol = bench.params.protocol
        drafts.append(_Draft(f"{BENCH_TUNED}{protocol}", "bench",
                             replace(bench.params, out=str(lay.tuned_bench / protocol)),
                             bench.inputs, (SERVE_TUNED,)))
    return drafts


def _confirm_steps(c: _Context, steps: list[Step], best: dict[str, dict[str, Any]],
                   analyzed: dict) -> list[_Draft]:
    """repo-candidates and confirm-candidates: every candidate config in a repository
    of its own, each candidate model measured there at model-analyzer's concurrency
    and judged by the bench stage's SLO rule before anything is served."""
    repo = next(s for s in steps if s.name == "repo")
    pa, slo = c.spec.benchmark.perf_analyzer, c.spec.benchmark.slo
    objective, found = c.spec.benchmark.closed_loop_objective, analyze_models_of(analyzed)
    loads = {m: max(1, int(best_of(found.get(m, {}), objective).get("concurrency") or 1))
             for m in best}
    params = ConfirmParams(
        str(c.lay.candidate_repo), tuple(f"{m}:{loads[m]}" for m in best), pa.protocols[0],
        pa.batch_size, pa.measurement_mode, pa.measurement_interval_ms,
        pa.measurement_request_count, pa.stability_percentage, pa.repeats, slo.p99_ms,
        slo.p95_ms, slo.decide_within_seconds, str(c.lay.confirm))
    measured = {k: c.given["benchmark"]["perfAnalyzer"][k]
                for k in ("batchSize", "measurementMode", "measurementIntervalMs",
                          "measurementRequestCount", "stabilityPercentage", "repeats")}
    return [
        _Draft(REPO_CANDIDATES, "repo",
               replace(repo.params, out=str(c.lay.candidate_repo),
                       override=tuple(override_arg(m, v) for m, v in best.items())),
               {"serving": repo.inputs["serving"], "apply": best}, ("export", "engine")),
        _Draft(CONFIRM, "confirm", params,
               {"loads": loads, "perfAnalyzer": measured, "protocol": pa.protocols[0],
                **_slo_inputs(c)},
               (REPO_CANDIDATES,), gpus=c.spec.serving.gpus),
    ]


def plan(spec: MnistServingSpec, lay: Layout, endpoints: Endpoints = Endpoints(),
         *, device: str = "auto", analyzed: dict | None = None, confirmed: dict | None = None,
         below_tolerance: frozenset[str] = frozenset()) -> list[Step]:
    """Every step of the pipeline for ``spec``, in the order they run.

    ``device`` is the train stage's --device (auto locally; the operator
    passes cuda when training.gpus > 0 and cpu otherwise). ``analyzed`` is
    the recorded analyze result, if any: with ``applyBest`` and a Succeeded
    analyze of the current fingerprint whose best config differs from the
    served one, the closed loop's steps follow ``analyze``; models in
    ``below_tolerance`` (the accuracy guard's) keep their served config.
    With an SLO, ``repo-candidates`` and ``confirm-candidates`` come first, and
    ``confirmed`` (their recorded result) decides which candidates are applied:
    only those whose re-measured point meets the SLO by the bench stage's rule.

    A fingerprint hashes the spec inputs each step names, never its
    parameters: paths and endpoints differ between a local run and a
    cluster, and must not make a finished step run again.
    """
    c = _Context(spec, spec.to_dict(), lay, endpoints)
    steps = _fingerprinted(_model_steps(c, device) + _serving_steps(c) + _bench_steps(c)
                           + [_analyze_step(c)])
    best = _configs_to_apply(spec, steps[-1], analyzed, below_tolerance)
    if best and spec.benchmark.slo.active:
        checks = _fingerprinted(_confirm_steps(c, steps, best, analyzed), before=steps)
        steps += checks
        met = confirmed_of(confirmed) if is_done(checks[-1], confirmed) \
            and confirmed.get("state") == "Succeeded" else None
        best = {m: v for m, v in best.items() if m in (met or ())}
    if not best:
        return steps
    return steps + _fingerprinted(_tuned_steps(steps, lay, best), before=steps)


def is_done(step: Step, recorded: dict | None) -> bool:
    """A recorded step result is still valid for ``step``: it finished with
    the same fingerprint (Skipped counts as finished)."""
    return bool(recorded) and recorded.get("fingerprint") == step.fingerprint \
        and recorded.get("state") in FINISHED


def stale_after(steps: list[Step], changed: str) -> list[str]:
    """Names of ``changed`` and every step downstream of it (for messages/tests)."""
    out, dirty = [], {changed}
    for s in steps:
        if s.name in dirty or dirty & set(s.needs):
            dirty.add(s.name)
            out.append(s.name)
    return out


__all__ = ["Layout", "Endpoints", "Step", "Params", "TrainParams", "ExportParams",
           "EngineParams", "RepoParams", "ServeParams", "ClientParams", "BenchParams",
           "AnalyzeParams", "ConfirmParams", "plan", "fingerprint", "is_done",
           "best_overrides", "analyze_models_of", "confirmed_of", "override_arg",
           "REPO_TUNED", "SERVE_TUNED", "BENCH_TUNED", "REPO_CANDIDATES", "CONFIRM",
           "stale_after", "TRITON_MODEL", "HTTP_PORT", "GRPC_PORT", "METRICS_PORT"]
