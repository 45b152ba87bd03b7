"""Stage export: the trained network to ONNX (and TorchScript, as the seed does).

    python -m mnist_jobs.export --checkpoint runs/demo/artifacts/model.pt \
        --out runs/demo/artifacts --opset 17 --data-source offline \
        --result runs/demo/results/export.json

The ONNX file has a dynamic batch axis (input ``input`` FP32 [-1,1,28,28],
output ``output`` FP32 [-1,10]) and is self-contained: no external ``.data``
file, so Triton's model repository needs only ``model.onnx``. Before it
reports success, ONNX Runtime and PyTorch run the same real held-out digits
(batches of 256, 1 and 7) and must agree within ``--tolerance``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mnist_jobs.lib import data
from mnist_jobs.lib.stage_cli import InputError, StageError, run_stage, stage_parser

CHECK_BATCHES = (256, 1, 7)  # 1 and an odd size prove the batch axis is dynamic


def _export_onnx(net, path: Path, opset: int) -> None:
    import onnx
    import torch
    example = torch.zeros(2, 1, 28, 28)
    tmp = path.with_name(path.name + ".tmp")
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            net, (example,), input_names=["input"], output_names=["output"],
            dynamic_shapes={"x": {0: batch}}, opset_version=opset, dynamo=True,
            external_data=False, verbose=False)
        program.save(str(tmp), external_data=False)
    except TypeError:  # older torch without the dynamo exporter's keywords
        torch.onnx.export(net, example, str(tmp), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=opset)
    model = onnx.load(str(tmp), load_external_data=True)
    # One self-contained file: fold any external tensors back in.
    onnx.save_model(model, str(path), save_as_external_data=False)
    tmp.unlink()
    for leftover in path.parent.glob(path.name + ".tmp*"):
        leftover.unlink()
    onnx.checker.check_model(str(path))


def _export_torchscript(net, path: Path) -> str:
    import torch
    try:
        with torch.no_grad():
            traced = torch.jit.trace(net, torch.zeros(1, 1, 28, 28))
        traced.save(str(path))
        return str(path)
    except Exception as exc:  # optional: without it the repo stage leaves mnist_pt out, saying why
        print(f"export: TorchScript not written: {exc}", file=sys.stderr)
        return f"not written: {type(exc).__name__}"


def _io_signature(path: Path) -> dict:
    import onnx
    model = onnx.load(str(path), load_external_data=False)

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return {"inputs": {v.name: dims(v) for v in model.graph.input},
            "outputs": {v.name: dims(v) for v in model.graph.output}}


def max_abs_diff(net, onnx_path: Path, images: np.ndarray) -> float:
    import onnxruntime as ort
    import torch
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst, start = 0.0, 0
    for size in CHECK_BATCHES:
        batch = np.ascontiguousarray(images[start:start + size])
        start += size
        (ort_out,) = session.run(["output"], {"input": batch})
        with torch.no_grad():
            torch_out = net(torch.from_numpy(batch)).numpy()
        if ort_out.shape != (len(batch), 10):
            raise StageError(f"ONNX Runtime returned shape {ort_out.shape} for a batch of "
                             f"{len(batch)}", reason="OutputMismatch")
        worst = max(worst, float(np.abs(ort_out - torch_out).max()))
    return worst


def export(args) -> dict:
    import torch

    from mnist_jobs.lib.model import LeNet

    if not args.checkpoint.is_file():
        raise InputError("--checkpoint", f"{args.checkpoint} does not exist (run the train stage)")
    if not 7 <= args.opset <= 23:
        raise InputError("--opset", f"must be between 7 and 23, got {args.opset}")
    net = LeNet()
    net.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    print(f"export: writing {onnx_path} (opset {args.opset})", file=sys.stderr, flush=True)
    _export_onnx(net, onnx_path, args.opset)
    external = sorted(p.name for p in args.out.iterdir() if p.suffix == ".data")
    if external:
        raise StageError(f"ONNX export left external data files {external}", reason="NotSelfContained")
    signature = _io_signature(onnx_path)
    if list(signature["inputs"]) != ["input"] or list(signature["outputs"]) != ["output"]:
        raise StageError(f"unexpected ONNX signature {signature}", reason="BadSignature")

    images, _ = data.load_test_arrays(args.data_source, args.data_dir)
    if len(images) < sum(CHECK_BATCHES):
        raise InputError("--data-source", f"needs at least {sum(CHECK_BATCHES)} test digits")
    diff = max_abs_diff(net, onnx_path, images)
    print(f"export: ONNX Runtime vs PyTorch on {sum(CHECK_BATCHES)} real digits: "
          f"max abs diff {diff:.2e}", file=sys.stderr, flush=True)
    if diff > args.tolerance:
        raise StageError(f"ONNX Runtime and PyTorch disagree: max abs diff {diff:.3e} > "
                         f"{args.tolerance:g}", reason="OutputMismatch")
    torchscript = _export_torchscript(net, args.out / "model.ts")
    return {"onnx": str(onnx_path), "opset": args.opset, "maxAbsDiff": f"{diff:.3e}",
            "checkedDigits": sum(CHECK_BATCHES), "torchscript": torchscript,
            "onnxBytes": onnx_path.stat().st_size}


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "onnx": "path of model.onnx", "opset": "the ONNX opset written",
    "maxAbsDiff": "largest ONNX Runtime vs PyTorch output difference on real digits",
    "checkedDigits": "digits that comparison ran on",
    "torchscript": "path of model.ts, or why it was not written",
    "onnxBytes": "size of model.onnx",
}


def parser():
    p = stage_parser("export", "Export the trained network to a self-contained ONNX file.")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt from the train stage")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--opset", type=int, required=True)
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed |ONNX Runtime - PyTorch| on any logit")
    p.add_argument("--data-source", choices=data.SOURCES, required=True)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("export", parser(), export, argv)


if __name__ == "__main__":
    raise SystemExit(main())
