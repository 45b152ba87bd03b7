"""Runs inside a pod on the real node (SDK stand-in image): real held-out digits
to every served model through the Triton Service's DNS name, over gRPC and HTTP,
then perf_analyzer through the same Service. Prints one JSON document.

    python3 probe.py HOST MODELS   (digits.npy / labels.npy next to this file)
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpc_client
import tritonclient.http as http_client

HERE = Path(__file__).resolve().parent
BATCH = 32
CONCURRENCY = (1, 8)


def accuracy(module, url: str, model: str, images, labels) -> float:
    client = module.InferenceServerClient(url=url)
    hits = 0
    for start in range(0, len(images), BATCH):
        batch = images[start:start + BATCH]
        tensor = module.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = client.infer(model, [tensor], outputs=[module.InferRequestedOutput("output")])
        hits += int((result.as_numpy("output").argmax(axis=1) == labels[start:start + BATCH]).sum())
    return hits / len(images)


def perf(url: str, model: str, concurrency: int) -> dict:
    out = Path("/tmp") / f"{model}-{concurrency}.csv"
    # a loose stability bound: on 2 busy cores perf_analyzer otherwise gives up (exit 2)
    proc = subprocess.run(["perf_analyzer", "-m", model, "-u", url, "-i", "grpc",
                           f"--concurrency-range={concurrency}", "-p", "2000", "-s", "50",
                           "--max-trials=10", "-f", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"perf_analyzer {model} c={concurrency} failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    row = next(csv.DictReader(out.open()))
    return {"concurrency": concurrency, "inferPerSec": float(row["Inferences/Second"]),
            "p99Ms": float(row["p99 latency"]) / 1000.0}


def main() -> None:
    host, models = sys.argv[1], sys.argv[2].split(",")
    images = np.load(HERE / "digits.npy")
    labels = np.load(HERE / "labels.npy")
    report = {"samples": len(images), "accuracy": {}, "perf": []}
    for protocol, module, port in (("grpc", grpc_client, 8001), ("http", http_client, 8000)):
        for model in models:
            report["accuracy"][f"{model}/{protocol}"] = accuracy(module, f"{host}:{port}", model,
                                                                 images, labels)
    for model in models:
        for c in CONCURRENCY:
            report["perf"].append({"model": model, **perf(f"{host}:8001", model, c)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
