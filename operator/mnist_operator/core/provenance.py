"""Where a status's numbers were measured: the device, and an environment
fingerprint (Triton's version, the served config, perf_analyzer's version, the
nodes and images of the pods) that tells two runs apart when their numbers
should not be compared as like for like. Pure: a status in, values out;
``compare``, the report and the sweep read it the same way."""
from __future__ import annotations

import hashlib
import json

#: A bench step's status key: ``bench-<protocol>``.
BENCH_PREFIX = "bench-"

#: What an environment fingerprint holds, in the legend's order: where the
#: numbers were measured, read from the pods (node, image digest) and from the
#: tools themselves (versions, the served config's hash).
ENVIRONMENT = (
    ("device", "GPU / device"),
    ("triton", "Triton"),
    ("modelConfig", "served config"),
    ("perfAnalyzer", "perf_analyzer"),
    ("tritonNode", "Triton node"),
    ("tritonGpu", "Triton node's GPUs"),
    ("tritonImages", "Triton image"),
    ("clientNode", "client node"),
    ("clientImages", "client image"),
)


def device_of(status: dict, gpu_product: str = "") -> str:
    """What ran it: the GPU the engine was built on, else the GPU type the CR
    pins its pods to, else the GPU that trained it, else the training device
    (``cpu``/``cuda``)."""
    model = status.get("model") or {}
    if model.get("engineGpu"):
        return str(model["engineGpu"])
    if gpu_product:
        return gpu_product
    if model.get("trainGpu"):
        return f"{model['trainGpu']} (train)"
    if model.get("trainDevice"):
        return f"{model['trainDevice']} (train)"
    return "-"


def _joined(images: dict | None) -> str:
    return ";".join(f"{name}={ref}" for name, ref in sorted((images or {}).items())) or "-"


def environment_of(status: dict, model: str, protocol: str, device: str
                   ) -> tuple[tuple[str, str], ...]:
    """The environment of one row's numbers: the bench step's own record (its
    pod's node and image, Triton's pods as it finished) and its result (Triton's
    version, the model's served config, perf_analyzer's version)."""
    rec = (status.get("stages") or {}).get(f"{BENCH_PREFIX}{protocol}") or {}
    measured = (rec.get("result") or {}).get("environment") or {}
    ran = rec.get("environment") or {}
    server = ran.get("server") or {}
    env = {"device": device, "triton": measured.get("triton", "-"),
           "modelConfig": (measured.get("configs") or {}).get(model, "-"),
           "perfAnalyzer": measured.get("perfAnalyzer", "-"),
           "tritonNode": server.get("node", "-"), "tritonGpu": server.get("gpu", "-"),
           "tritonImages": _joined(server.get("images")),
           "clientNode": ran.get("node", "-"), "clientImages": _joined(ran.get("images"))}
    return tuple((key, str(env[key])) for key, _ in ENVIRONMENT)


def environment_id(details: tuple[tuple[str, str], ...]) -> str:
    return hashlib.sha256(json.dumps(details).encode()).hexdigest()[:8]


__all__ = ["ENVIRONMENT", "device_of", "environment_of", "environment_id"]
