"""Stage confirm: the closed loop's candidate configs measured against the SLO
before any of them is served.

    python -m mnist_jobs.confirm --model-repo runs/demo/model_repo_candidates \
        --candidates mnist_onnx:64,mnist_pt:16 --protocol grpc --batch-size 1 \
        --measurement-mode time_windows --measurement-interval-ms 2000 \
        --measurement-request-count 50 --stability-percentage 20 --repeats 1 \
        --slo-p99-ms 50 --slo-decide-within-s 60 --out runs/demo/confirm

model-analyzer picks each model's best config from perf_analyzer's single p99
per measurement. This stage holds that choice to the bench stage's rule
(lib/slo.py): it serves the candidate repository (every model, each candidate
with its best config, as the tuned Triton would serve it), measures each
candidate model at the concurrency model-analyzer chose, with the bench
stage's own point measurement (every request's latency, the 95 % interval of
each percentile, measured further while undecided, up to
--slo-decide-within-s), and gives each a verdict:

* ``meets``: the upper bound of each limited percentile is within its limit;
* ``misses``: a lower bound is over its limit;
* ``undecided``: an interval still holds the limit when the time is spent.

Only a candidate that meets the SLO is applied by the closed loop (the plan
reads ``confirmed``); the others keep the served config, and status says why.

Triton: ``--triton-launch-mode local`` (default) starts a tritonserver on
--model-repo; ``remote`` uses the one at --triton-http-endpoint and
--triton-grpc-endpoint (the operator's Job runs it as a sidecar, as for
analyze), in explicit model-control mode either way: the stage loads the
repository's models itself.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mnist_jobs.bench import BenchConfig, ModelSweep, RunNotes, bls_downstream
from mnist_jobs.lib import latency, perf, provenance
from mnist_jobs.lib import slo as slo_search
from mnist_jobs.lib.stage_cli import InputError, StageError, run_stage, stage_parser
from mnist_jobs.lib.triton import (add_launch_flags, check_launch_flags, client_for, http_json,
                                   is_ready, repository_index, served_config, served_models,
                                   start_explicit)

MEETS, MISSES, UNDECIDED = "meets", "misses", "undecided"
#: How long a model may take to load (a TensorRT plan on a cold GPU is the slow one).
LOAD_TIMEOUT_S = 300


def say(text: str) -> None:
    print(f"confirm: {text}", file=sys.stderr, flush=True)


def parse_candidates(text: str) -> dict[str, int]:
    """``mnist_onnx:64,mnist_pt:16`` -> {model: concurrency}."""
    out: dict[str, int] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        model, _, load = item.partition(":")
        if not model or not load.isdigit() or int(load) < 1:
            raise InputError("--candidates", f"{item!r} is not MODEL:CONCURRENCY (a whole "
                                             "number >= 1)")
        if model in out:
            raise InputError("--candidates", f"model {model!r} given twice")
        out[model] = int(load)
    if not out:
        raise InputError("--candidates", "empty list")
    return out


def verdict(slo: slo_search.Slo, point: dict) -> str:
    """The bench stage's rule for one point: meets, undecided or misses."""
    if slo.meets(point):
        return MEETS
    return UNDECIDED if slo.undecided(point) else MISSES


@dataclass(frozen=True)
class ConfirmArgs:
    model_repo: Path
    candidates: dict[str, int]
    measure: BenchConfig          # how each point is measured, and the SLO
    launch_mode: str              # local | remote
    http_endpoint: str
    grpc_endpoint: str
    metrics_url: str

    @classmethod
    def from_args(cls, a) -> "ConfirmArgs":
        candidates = parse_candidates(a.candidates)
        if not a.model_repo.is_dir():
            raise InputError("--model-repo", f"{a.model_repo} is not a directory")
        slo = slo_search.Slo(a.slo_p99_ms, a.slo_p95_ms, a.slo_decide_within_s)
        if not slo.active:
            raise InputError("--slo-p99-ms", "confirm judges candidates against an SLO: give "
                                             "--slo-p99-ms or --slo-p95-ms")
        check_launch_flags(a)
        first = next(iter(candidates.values()))
        # the URL and metrics follow the Triton the stage starts or is given; BenchConfig
        # checks the measurement flags (--protocol among them) as for bench
        measure = BenchConfig("", a.protocol, tuple(candidates), a.batch_size,
                              f"{first}:{first}:1", a.measurement_mode,
                              a.measurement_interval_ms, a.measurement_request_count,
                              a.stability_percentage, a.out, repeats=a.repeats, slo=slo)
        return cls(a.model_repo, candidates, measure, a.triton_launch_mode,
                   a.triton_http_endpoint or "", a.triton_grpc_endpoint or "",
                   a.triton_metrics_url or "")


def load_repository(http_url: str) -> None:
    """Load every model of the repository (as the tuned Triton will serve them all).
    A model that does not load fails the stage with Triton's reason."""
    base = f"http://{http_url}"
    for name in (m["name"] for m in repository_index(http_url)):
        say(f"loading {name}")
        status, body = http_json(f"{base}/v2/repository/models/{name}/load", "POST", {},
                                 timeout=LOAD_TIMEOUT_S)
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else body
            raise StageError(f"{name} did not load from the candidate repository: {error}",
                             reason="ModelLoadFailed")


def confirm_one(cfg: BenchConfig, pa: str, model: str, load: int,
                served: dict[str, str], notes: RunNotes) -> dict:
    """One candidate at its concurrency: the bench stage's point, and its verdict."""
    composing = bls_downstream(cfg.protocol, cfg.url, model, served) \
        if model == "mnist_bls" else None
    point = ModelSweep(cfg, pa, model, composing, notes).measure_point(load)
    if point is None:
        raise StageError(f"perf_analyzer failed for {model} at c={load}: {notes.failures[-1]} "
                         f"(logs in {cfg.out})", reason="PerfAnalyzerFailed")
    found = verdict(cfg.slo, point)
    loaded = served_config(client_for(cfg.protocol, cfg.url), cfg.protocol, model)
    entry = {"c": load, "verdict": found, "meetsSlo": found == MEETS,
             # what was measured: the candidate as Triton loaded it
             "instances": sum(int(g.get("count", 1)) for g in loaded.get("instance_group", [])),
             **{k: point[k] for k in ("inferPerSec", "p99Us", "p95Us", "latency",
                                      "measuredFurther", "unstable", "repeats", "low", "high",
                                      "powerW", "inferPerJoule") if k in point}}
    if found != MEETS:
        entry["why"] = "; ".join(cfg.slo.why_not(point))
    say(f"{model} c={load}: {found} {cfg.slo.describe()}: "
        + latency.describe(point.get("latency") or {})
        + (f" ({entry['why']})" if "why" in entry else ""))
    return entry


def run_confirm(a) -> dict:
    args = ConfirmArgs.from_args(a)
    try:
        pa = perf.find_perf_analyzer()
    except FileNotFoundError as exc:
        raise StageError(str(exc), reason="PerfAnalyzerNotFound") from None
    out = args.measure.out
    out.mkdir(parents=True, exist_ok=True)
    server = None
    if args.launch_mode == "local":
        say(f"starting tritonserver on {args.model_repo} (explicit model control)")
        server = start_explicit(args.model_repo, out)
        http, grpc, metrics = (server.http_url, server.grpc_url,
                               f"http://{server.metrics_url}/metrics")
    else:
        http, grpc, metrics = args.http_endpoint, args.grpc_endpoint, args.metrics_url
    started = time.monotonic()
    try:
        if server is None:
            _wait_ready(http)
        load_repository(http)
        url = grpc if args.measure.protocol == "grpc" else http
        served = served_models(args.measure.protocol, url)
        notes, models = RunNotes(), {}
        for model, load in args.candidates.items():
            cfg = replace(args.measure, url=url, concurrency=f"{load}:{load}:1",
                          metrics_url=metrics)
            models[model] = confirm_one(cfg, pa, model, load, served, notes)
        environment = {**provenance.served(args.measure.protocol, url, list(args.candidates)),
                       "perfAnalyzer": provenance.perf_analyzer_version(pa)}
    finally:
        if server is not None:
            server.stop()
    confirmed = [m for m, e in models.items() if e["meetsSlo"]]
    (out / "confirm.json").write_text(json.dumps({
        "modelRepo": str(args.model_repo), "slo": args.measure.slo.describe(),
        "settings": args.measure.settings(), "widened": notes.widened,
        "telemetry": notes.observed, "models": models}, indent=1))
    return {"slo": args.measure.slo.describe(), "protocol": args.measure.protocol,
            "models": models, "confirmed": confirmed,
            "measuredSeconds": int(round(time.monotonic() - started)),
            "message": "; ".join(f"{m} {e['verdict']} {args.measure.slo.describe()} at "
                                 f"c={e['c']}" for m, e in models.items()),
            "environment": environment, "out": str(out)}


def _wait_ready(http_url: str, timeout_s: float = 300) -> None:
    """The sidecar's Triton: its startup probe passed before this container began,
    but a restarted sidecar may still be coming up."""
    deadline = time.monotonic() + timeout_s
    while not is_ready(http_url):
        if time.monotonic() > deadline:
            raise StageError(f"Triton at {http_url} not ready after {int(timeout_s)} s",
                             reason="ServerNotReady")
        time.sleep(1)


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "slo": "the limits each candidate was judged against",
    "protocol": "grpc or http",
    "models": "model -> its point at model-analyzer's concurrency: c, the instances "
              "Triton loaded, inferPerSec, latency (percentiles with 95 % intervals), "
              "verdict (meets, misses or undecided), meetsSlo, why",
    "confirmed": "the models whose candidate meets the SLO: the closed loop applies these",
    "measuredSeconds": "time spent loading and measuring",
    "environment": "Triton, perf_analyzer and the served configs (provenance)",
    "out": "the directory with perf_analyzer's logs and confirm.json",
}


def parser():
    p = stage_parser("confirm", "Measure the closed loop's candidate configs against the SLO.")
    p.add_argument("--model-repo", type=Path, required=True,
                   help="the candidate repository (each candidate model with its best config)")
    p.add_argument("--candidates", required=True,
                   help="MODEL:CONCURRENCY,... the models to judge and model-analyzer's "
                        "concurrency for each")
    p.add_argument("--protocol", required=True, help="grpc or http")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--measurement-mode", required=True)
    p.add_argument("--measurement-interval-ms", type=int, required=True)
    p.add_argument("--measurement-request-count", type=int, required=True)
    p.add_argument("--stability-percentage", type=int, required=True)
    p.add_argument("--repeats", type=int, required=True)
    p.add_argument("--slo-p99-ms", type=int, required=True, help="p99 limit in ms (0 = none)")
    p.add_argument("--slo-p95-ms", type=int, required=True, help="p95 limit in ms (0 = none)")
    p.add_argument("--slo-decide-within-s", type=int, required=True,
                   help="how long an undecided candidate is measured further (0 = not)")
    p.add_argument("--out", type=Path, required=True)
    add_launch_flags(p, "left out: no telemetry")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("confirm", parser(), run_confirm, argv)


if __name__ == "__main__":
    raise SystemExit(main())
