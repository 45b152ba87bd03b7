"""Stage train: the seed's LeNet on MNIST, on CPU or CUDA.

    python -m mnist_jobs.train --data-source offline --data-dir runs/demo/data \
        --epochs 3 --batch-size 64 --learning-rate 0.01 --momentum 0.9 --seed 1 --device auto \
        --out runs/demo/artifacts --result runs/demo/results/train.json

Writes ``model.pt`` (state_dict) and ``model.json`` (hyperparameters and
accuracy) to ``--out``; the result reports held-out test accuracy.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from mnist_jobs.lib import data
from mnist_jobs.lib.stage_cli import InputError, fmt, run_stage, stage_parser


def check_args(args) -> None:
    """Every numeric flag, with an :class:`InputError` naming it."""
    if not 1 <= args.epochs <= 1000:
        raise InputError("--epochs", f"must be between 1 and 1000, got {args.epochs}")
    if not 1 <= args.batch_size <= 65536:
        raise InputError("--batch-size", f"must be between 1 and 65536, got {args.batch_size}")
    if not (math.isfinite(args.learning_rate) and 0 < args.learning_rate <= 10):
        raise InputError("--learning-rate", f"must be in (0, 10], got {args.learning_rate}")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise InputError("--momentum", f"must be in [0, 1), got {args.momentum}")
    if not 0 <= args.seed < 2**63:
        raise InputError("--seed", f"must be between 0 and 2**63-1, got {args.seed}")


def pick_device(requested: str) -> str:
    import torch
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda requested but no CUDA device is available")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def evaluate(net, images: np.ndarray, labels: np.ndarray, device: str) -> float:
    import torch
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            x = torch.from_numpy(images[start:start + 1000]).to(device)
            correct += int((net(x).argmax(1).cpu().numpy() == labels[start:start + 1000]).sum())
    return correct / max(1, len(labels))


def train(args) -> dict:
    import torch

    from mnist_jobs.lib.model import LeNet

    check_args(args)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train_x, train_y = data.load_train_arrays(args.data_source, args.data_dir)
    test_x, test_y = data.load_test_arrays(args.data_source, args.data_dir)
    print(f"train: {len(train_y)} training / {len(test_y)} held-out digits "
          f"({args.data_source}) on {device}", file=sys.stderr, flush=True)

    net = LeNet().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.learning_rate, momentum=args.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(train_x).to(device)
    y_all = torch.from_numpy(train_y).to(device)
    generator = torch.Generator().manual_seed(args.seed)
    steps = (len(train_y) + args.batch_size - 1) // args.batch_size
    report_every = max(1, steps // 4)
    started = time.time()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(train_y), generator=generator).to(device)
        running = 0.0
        for step in range(steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(x_all[idx]), y_all[idx])
            loss.backward()
            optimizer.step()
            running += loss.item()
            if (step + 1) % report_every == 0 or step + 1 == steps:
                print(f"train: epoch {epoch}/{args.epochs} step {step + 1}/{steps} "
                      f"loss {running / (step + 1):.4f} ({time.time() - started:.1f} s)",
                      file=sys.stderr, flush=True)
        accuracy = evaluate(net, test_x, test_y, device)
        print(f"train: epoch {epoch}/{args.epochs} held-out accuracy {accuracy:.4f} "
              f"({time.time() - started:.1f} s)",
              file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, args.out / "model.pt")
    seconds = time.time() - started
    summary = {
        "accuracy": fmt(accuracy), "trainSeconds": fmt(seconds, 1), "trainSamples": int(len(train_y)),
        "testSamples": int(len(test_y)), "device": device, "epochs": args.epochs,
        "dataSource": args.data_source,
    }
    if device == "cuda":  # which GPU trained it: comparisons across clusters read this
        summary["gpu"] = torch.cuda.get_device_name(0)
    hyper = {"batchSize": args.batch_size, "learningRate": str(args.learning_rate),
             "momentum": str(args.momentum), "seed": args.seed}
    (args.out / "model.json").write_text(json.dumps({**summary, **hyper}, indent=2) + "\n")
    return {**summary, "checkpoint": str(args.out / "model.pt")}


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "accuracy": "held-out test accuracy, a decimal string",
    "trainSeconds": "training time in seconds, a decimal string",
    "trainSamples": "digits trained on", "testSamples": "held-out digits evaluated",
    "device": "cpu or cuda", "gpu": "the GPU's name, when it trained on one",
    "epochs": "epochs run", "dataSource": "download, idx or offline",
    "checkpoint": "path of model.pt (the state_dict)",
}


def parser():
    p = stage_parser("train", "Train the seed's LeNet on MNIST and report held-out accuracy.")
    p.add_argument("--data-source", choices=data.SOURCES, required=True)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    # The hyperparameters have one home, the spec (spec.training): the CLI requires them.
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--momentum", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), required=True)
    p.add_argument("--out", type=Path, required=True, help="directory for model.pt and model.json")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
