"""Triton's own metrics endpoint, sampled while one measurement runs.

    with telemetry.Sampler("http://127.0.0.1:8002/metrics", "mnist_onnx") as sampled:
        ...                                   # one perf_analyzer run (or several)
    sampled.summary()                         # what Triton saw during it

Triton serves Prometheus text exposition on its metrics port. Per GPU
(label ``gpu_uuid``): ``nv_gpu_utilization`` (0..1), ``nv_gpu_power_usage``
(W), ``nv_gpu_memory_used_bytes`` and ``nv_energy_consumption`` (a counter,
joules since Triton started). Per model (labels ``model``, ``version``):
``nv_inference_count`` (inferences: a request of batch b counts b),
``nv_inference_request_success`` (requests) and the cumulative
``nv_inference_queue_duration_us`` / ``nv_inference_compute_infer_duration_us``.
A Triton without a GPU (or started with ``--allow-gpu-metrics=false``) serves
no ``nv_gpu_*`` or ``nv_energy_*`` family at all; the summary then says
``gpu: "none"`` instead of showing zeros, and still carries the model's part.

The sampler scrapes once when the measurement starts, every ``interval_ms``
in a background thread, and once when it ends. Counters are taken as the
difference between the first and the last scrape, so they cover exactly the
span of the measurement, warm-up trials included; gauges are averaged over the
scrapes. Inferences per joule divides the measured model's inference count
over that span by the energy over the same span: both sides count the same
seconds, which perf_analyzer's throughput (its final windows only) would not.
Triton refreshes its GPU figures every ``--metrics-interval-ms`` (2 s by
default), so over a short point the energy counter may not increase; the energy
is then mean power x time, and the summary says which one it used.

An endpoint that cannot be read is a warning (``telemetry: "unreachable:
..."``), never a failed measurement. Standard library only (urllib, threading).
"""
from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Sequence

DEFAULT_INTERVAL_MS = 500
#: What a row says when Triton measured no GPU: a word, never zeros.
NO_GPU = "none"
#: A scrape that takes longer than this is a failed one (the measurement goes on).
SCRAPE_TIMEOUT_S = 2.0

GPU_UTIL, GPU_POWER = "nv_gpu_utilization", "nv_gpu_power_usage"
GPU_MEMORY, GPU_ENERGY = "nv_gpu_memory_used_bytes", "nv_energy_consumption"
INFERENCES, REQUESTS = "nv_inference_count", "nv_inference_request_success"
QUEUE_US, COMPUTE_US = "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"
GPU_FAMILIES = (GPU_UTIL, GPU_POWER, GPU_MEMORY, GPU_ENERGY)

#: family -> [(labels, value)] of one exposition
Metrics = dict[str, list[tuple[dict[str, str], float]]]

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class MetricsFormatError(ValueError):
    pass


def parse(text: str) -> Metrics:
    """Prometheus text exposition -> family -> [(labels, value)]. Comments
    (``# HELP``, ``# TYPE``) and blank lines are skipped."""
    out: Metrics = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found = _SAMPLE.match(line)
        if not found:
            raise MetricsFormatError(f"line {number}: not a sample: {line[:80]!r}")
        name, label_text, value = found.groups()
        labels: dict[str, str] = {}
        rest = label_text or ""
        while rest.strip():
            pair = _LABEL.match(rest)
            if not pair:
                raise MetricsFormatError(f"line {number}: bad labels: {label_text[:80]!r}")
            labels[pair.group(1)] = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)],
                                           pair.group(2))
            rest = rest[pair.end():]
        try:
            number_value = float(value)
        except ValueError:
            raise MetricsFormatError(f"line {number}: bad value {value!r}") from None
        out.setdefault(name, []).append((labels, number_value))
    return out


def per_gpu(metrics: Metrics, family: str) -> dict[str, float]:
    """gpu_uuid -> value of one per-GPU family."""
    return {labels.get("gpu_uuid", ""): value for labels, value in metrics.get(family, [])}


def model_total(metrics: Metrics, family: str, model: str) -> float | None:
    """One model's value of a per-model family, summed over its versions;
    None when the model is not in it."""
    values = [v for labels, v in metrics.get(family, []) if labels.get("model") == model]
    return sum(values) if values else None


@dataclass(frozen=True)
class Scrape:
    at: float          # seconds on a monotonic clock
    metrics: Metrics


def _delta(first: Scrape, last: Scrape, family: str, model: str) -> float | None:
    a, b = model_total(first.metrics, family, model), model_total(last.metrics, family, model)
    return None if a is None or b is None else b - a


def _per(total: float | None, count: float | None) -> float | None:
    return total / count if total is not None and count else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def model_part(first: Scrape, last: Scrape, model: str) -> dict:
    """The measured model as Triton counted it over the span: inferences,
    requests, and queue / compute time per request (Triton adds each request's
    durations to the cumulative counters, so per request is what they average
    to, as perf_analyzer's server-side figures are)."""
    inferences, requests = (_delta(first, last, f, model) for f in (INFERENCES, REQUESTS))
    if inferences is None:
        return {"model": model, "missing": f"Triton reports no {INFERENCES} for {model}"}
    out = {"model": model, "inferences": int(inferences), "requests": int(requests or 0)}
    for key, family in (("queueUsPerRequest", QUEUE_US), ("computeInferUsPerRequest", COMPUTE_US)):
        value = _per(_delta(first, last, family, model), requests)
        if value is not None:
            out[key] = round(value, 1)
    return out


def gpu_part(scrapes: list[Scrape], seconds: float) -> dict:
    """Per GPU and over all of them: utilization (mean and max of the scrapes),
    power (mean, summed over GPUs: what the server drew), memory used (max) and
    energy (the counter's difference, or mean power x time where it did not move
    or is missing); ``{"gpu": "none"}`` when Triton reports no GPU."""
    # family -> one gpu_uuid -> value map per scrape
    seen = {f: [per_gpu(s.metrics, f) for s in scrapes] for f in GPU_FAMILIES}
    uuids = sorted({u for maps in seen.values() for m in maps for u in m})
    if not uuids:
        return {"gpu": NO_GPU}

    def values(family: str, uuid: str) -> list[float]:
        return [m[uuid] for m in seen[family] if uuid in m]

    gpus: dict[str, dict] = {}
    for uuid in uuids:
        util, power, memory = (values(f, uuid) for f in (GPU_UTIL, GPU_POWER, GPU_MEMORY))
        energy = [seen[GPU_ENERGY][i].get(uuid) for i in (0, -1)]
        gpus[uuid] = {
            **({"utilMean": round(_mean(util), 4), "utilMax": round(max(util), 4)} if util else {}),
            **({"powerW": round(_mean(power), 2)} if power else {}),
            **({"memoryUsedMaxBytes": int(max(memory))} if memory else {}),
            **({"energyJ": round(energy[1] - energy[0], 3)} if None not in energy else {}),
        }
    per = list(gpus.values())
    out: dict = {"gpus": gpus}
    if any("utilMean" in g for g in per):
        out.update(gpuUtil=round(_mean([g["utilMean"] for g in per if "utilMean" in g]), 4),
                   gpuUtilMax=max(g["utilMax"] for g in per if "utilMax" in g))
    power_w = round(sum(g["powerW"] for g in per if "powerW" in g), 2) \
        if any("powerW" in g for g in per) else None
    if power_w is not None:
        out["powerW"] = power_w
    counted = [g["energyJ"] for g in per if "energyJ" in g]
    if len(counted) == len(per) and sum(counted) > 0:
        out.update(energyJ=round(sum(counted), 3), energySource="counter")
    elif power_w is not None and seconds > 0:
        why = "did not increase" if len(counted) == len(per) else "is missing"
        out.update(energyJ=round(power_w * seconds, 3),
                   energySource=f"power x time ({GPU_ENERGY} {why})")
    return out


def summarize(scrapes: list[Scrape], model: str, errors: Sequence[str] = ()) -> dict:
    """What Triton saw during one measurement of ``model``, from the scrapes
    taken over it (in time order); ``errors``: why the other scrapes failed."""
    if len(scrapes) < 2:
        why = errors[0] if errors else f"{len(scrapes)} scrape(s), two are needed"
        return {"telemetry": f"unreachable: {why}"}
    first, last = scrapes[0], scrapes[-1]
    seconds = last.at - first.at
    out: dict = {"seconds": round(seconds, 3), "scrapes": len(scrapes),
                 **model_part(first, last, model), **gpu_part(scrapes, seconds)}
    if errors:
        out["failedScrapes"] = len(errors)
    if out.get("energyJ") and "inferences" in out:
        out["inferPerJoule"] = round(out["inferences"] / out["energyJ"], 2)
    return out


#: The keys row_fields may give a compact row.
ROW_KEYS = ("gpuUtil", "powerW", "inferPerJoule", "gpu", "telemetry")


def row_fields(summary: dict, fmt: Callable[[float, int], str]) -> dict:
    """The few telemetry figures a compact bench row carries (decimals as
    strings, ``fmt`` the stage's formatter): GPU utilization, mean power and
    inferences per joule; ``gpu: "none"`` without a GPU; the warning when the
    endpoint could not be read; nothing without telemetry."""
    if "telemetry" in summary or summary.get("gpu") == NO_GPU:
        return {k: summary[k] for k in ("telemetry", "gpu") if k in summary}
    out = {}
    for key, digits in (("gpuUtil", 2), ("powerW", 1), ("inferPerJoule", 1)):
        if key in summary:
            out[key] = fmt(summary[key], digits)
    return out


def line(summary: dict) -> str:
    """One progress line of a summary, for people."""
    if "telemetry" in summary:
        return f"telemetry {summary['telemetry']}"
    triton = (f"Triton counted {summary['inferences']} inferences in {summary['seconds']:.1f} s"
              if "inferences" in summary else summary.get("missing", ""))
    if summary.get("gpu") == NO_GPU:
        return f"{triton}; no GPU metrics (gpu: {NO_GPU})"
    gpu = [f"GPU util {summary['gpuUtil']:.2f}" if "gpuUtil" in summary else "",
           f"{summary['powerW']:.1f} W" if "powerW" in summary else "",
           f"{summary['inferPerJoule']:.1f} infer/J" if "inferPerJoule" in summary else "",
           f"energy from {summary['energySource']}" if "energySource" in summary else ""]
    return f"{triton}; " + ", ".join(g for g in gpu if g)


def fetch_text(url: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read().decode("utf-8", errors="replace")


def _why(exc: Exception) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, Exception) else exc
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


class Sampler:
    """Wrap one measurement: scrapes ``url`` when entered, every ``interval_ms``
    while it runs, and when left; ``summary()`` afterwards. A scrape that fails
    is counted and skipped (the measurement never fails for it)."""

    def __init__(self, url: str, model: str, interval_ms: int = DEFAULT_INTERVAL_MS,
                 fetch: Callable[[str], str] = fetch_text,
                 clock: Callable[[], float] = time.monotonic):
        self.url, self.model, self.interval_s = url, model, interval_ms / 1000
        self._fetch, self._clock = fetch, clock
        self.scrapes: list[Scrape] = []
        self.errors: list[str] = []
        self.marks: list[int] = []     # the scrape that ends each run (mark)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a mark's scrape and the timer's stay in time order
        self._thread: threading.Thread | None = None

    def scrape(self) -> None:
        with self._lock:
            try:
                at = self._clock()
                self.scrapes.append(Scrape(at, parse(self._fetch(self.url))))
            except MetricsFormatError as exc:
                self.errors.append(f"{self.url} is not Prometheus text: {exc}")
            except Exception as exc:   # refused, timed out, HTTP error, DNS: a warning
                self.errors.append(f"{self.url}: {_why(exc)}")

    def mark(self) -> None:
        """One run of a repeated measurement ended: scrape now, so that each run
        has its own span (per_run)."""
        self.scrape()
        self.marks.append(len(self.scrapes) - 1)

    def per_run(self) -> list[dict]:
        """A summary of each run marked, over the scrapes from its start to its end."""
        bounds = [0, *self.marks]
        return [summarize(self.scrapes[a:b + 1], self.model) for a, b in zip(bounds, bounds[1:])]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scrape()

    def __enter__(self) -> "Sampler":
        self.scrape()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.scrape()

    def summary(self) -> dict:
        return summarize(self.scrapes, self.model, self.errors)


class Off:
    """No metrics URL: a measurement without telemetry, used like a Sampler."""

    def __enter__(self) -> "Off":
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def mark(self) -> None:
        return None

    def per_run(self) -> list[dict]:
        return []

    def summary(self) -> dict:
        return {}


def sampler(url: str, model: str, interval_ms: int = DEFAULT_INTERVAL_MS) -> Sampler | Off:
    """A Sampler of ``url``, or Off when ``url`` is empty."""
    return Sampler(url, model, interval_ms) if url else Off()


__all__ = ["parse", "per_gpu", "model_total", "Scrape", "summarize", "model_part", "gpu_part",
           "row_fields", "line", "ROW_KEYS", "Sampler", "Off", "sampler", "fetch_text",
           "MetricsFormatError", "NO_GPU", "DEFAULT_INTERVAL_MS"]
