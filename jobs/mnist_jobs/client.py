"""Client: real held-out MNIST digits to every served model, over HTTP and gRPC.

    # one protocol (the stage contract)
    python -m mnist_jobs.client --url localhost:8001 --protocol grpc --models mnist_onnx,mnist_bls \
        --samples 1000 --data-source offline --data-dir runs/demo/data
    # both protocols in one run
    python -m mnist_jobs.client --http-url localhost:8000 --grpc-url localhost:8001 ...

The digits and their preprocessing come from :mod:`mnist_jobs.lib.data` (the same
code the train stage uses), taking the test split only. Reports accuracy
per model and protocol (strings), and whether every model and protocol
predicted the same digit for every sample (``agree``; ``disagreements``
counts the samples where they did not).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mnist_jobs.lib.stage_cli import InputError, StageError, fmt, run_stage, stage_parser
from mnist_jobs.lib.triton import client_module, served_config, served_models


def predict(url: str, protocol: str, model: str, images: np.ndarray,
            batch_size: int = 64) -> np.ndarray:
    """Argmax predictions of ``model`` for ``images`` [N,1,28,28] float32."""
    tc = client_module(protocol)
    client = tc.InferenceServerClient(url=url)
    try:
        cfg = served_config(client, protocol, model)
        max_batch = int(cfg.get("max_batch_size", cfg.get("maxBatchSize", 0)) or 0)
        step = min(batch_size, max_batch) if max_batch > 0 else batch_size
        preds = []
        for start in range(0, len(images), step):
            chunk = np.ascontiguousarray(images[start:start + step], dtype=np.float32)
            inp = tc.InferInput("input", list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            out = tc.InferRequestedOutput("output")
            result = client.infer(model, [inp], outputs=[out])
            logits = result.as_numpy("output")
            if logits is None or logits.shape != (len(chunk), 10):
                raise StageError(f"{model} over {protocol} returned shape "
                                 f"{None if logits is None else logits.shape}",
                                 reason="BadResponse")
            preds.append(logits.argmax(axis=1))
        return np.concatenate(preds)
    finally:
        client.close()


def evaluate(urls: dict[str, str], models: list[str], images: np.ndarray,
             labels: np.ndarray) -> dict:
    accuracy: dict[str, dict[str, str]] = {}
    all_preds = []
    for model in models:
        for protocol, url in urls.items():
            try:
                pred = predict(url, protocol, model, images)
            except StageError:
                raise
            except Exception as exc:
                raise StageError(f"{model} over {protocol} at {url}: "
                                 f"{str(exc).splitlines()[0][:200]}", reason="InferFailed") from None
            acc = float((pred == labels).mean())
            accuracy.setdefault(model, {})[protocol] = fmt(acc)
            all_preds.append(pred)
            print(f"client: {model} {protocol}: accuracy {acc:.4f} on {len(labels)} digits",
                  file=sys.stderr, flush=True)
    stacked = np.stack(all_preds)
    disagreements = int((stacked != stacked[0]).any(axis=0).sum())
    return {"samples": int(len(labels)), "accuracy": accuracy,
            "agree": disagreements == 0, "disagreements": disagreements}


def load_test_digits(source: str, data_dir: Path, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` held-out digits, preprocessed as the model was trained."""
    from mnist_jobs.lib import data
    images, labels = data.load_test_arrays(source, data_dir)
    images = np.asarray(images, dtype=np.float32)[:samples]
    labels = np.asarray(labels)[:samples]
    if images.ndim == 3:
        images = images[:, None]
    return images, labels


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "samples": "held-out digits sent to each model over each protocol",
    "accuracy": "model -> protocol -> accuracy, a decimal string",
    "agree": "every model and protocol predicted the same digits",
    "disagreements": "digits on which they did not",
}


def parser():
    p = stage_parser("client", "Send held-out MNIST digits to served models; report accuracy.")
    p.add_argument("--url", help="HOST:PORT for --protocol")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--http-url", help="HOST:PORT of the HTTP endpoint (with --grpc-url: both)")
    p.add_argument("--grpc-url", help="HOST:PORT of the gRPC endpoint")
    p.add_argument("--models", required=True, help="comma list of model names")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--data-source", choices=("download", "idx", "offline"), required=True)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()

    def body(a):
        urls = {}
        if a.grpc_url:
            urls["grpc"] = a.grpc_url
        if a.http_url:
            urls["http"] = a.http_url
        if a.url:
            urls.setdefault(a.protocol, a.url)
        if not urls:
            raise InputError("--url", "give --url (with --protocol) or --http-url/--grpc-url")
        models = [m.strip() for m in a.models.split(",") if m.strip()]
        if not models:
            raise InputError("--models", "empty list")
        if a.samples < 1:
            raise InputError("--samples", "must be >= 1")
        for protocol, url in urls.items():
            served = served_models(protocol, url)
            for m in models:
                if served.get(m) != "READY":
                    raise InputError("--models", f"model {m!r} is not served at {url}")
        images, labels = load_test_digits(a.data_source, a.data_dir, a.samples)
        return evaluate(urls, models, images, labels)
    return run_stage("client", p, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
