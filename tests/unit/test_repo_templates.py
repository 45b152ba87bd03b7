"""The repo stage's rendered configs, parsed with Triton's own ModelConfig proto."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mnist_jobs import repo
from tests.harness.stage_flags import spec_flags, undocumented

ROOT = Path(__file__).resolve().parents[2]


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def build(art, out, **kw):
    args = dict(models=["mnist_onnx", "mnist_trt", "mnist_bls"], max_batch_size=128, instances=2,
                instance_kind="gpu", preferred_batch_sizes=[32, 64], max_queue_delay_us=250)
    args.update(kw)
    return repo.build_repository(repo.RepoConfig(art, out, **args))


def check_io(cfg, max_batch):
    assert cfg.max_batch_size == max_batch
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", model_config_pb2.TYPE_FP32, [1, 28, 28])
    assert (out.name, out.data_type, list(out.dims)) == ("output", model_config_pb2.TYPE_FP32, [10])


def test_native_repo_without_engine(artifacts, tmp_path):
    out = tmp_path / "repo"
    result = build(artifacts, out)
    assert undocumented(result, "repo") == set(), "fields docs/CONTRACT.md does not name"
    assert result["models"] == ["mnist_onnx", "mnist_bls"]
    assert "mnist_trt" in result["leftOut"] and not (out / "mnist_trt").exists()
    onnx = parse(out / "mnist_onnx" / "config.pbtxt")
    assert onnx.platform == "onnxruntime_onnx" and onnx.backend == ""
    check_io(onnx, 128)
    assert list(onnx.dynamic_batching.preferred_batch_size) == [32, 64]
    assert onnx.dynamic_batching.max_queue_delay_microseconds == 250
    (group,) = onnx.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (out / "mnist_onnx" / "1" / "model.onnx").read_bytes() == (artifacts / "model.onnx").read_bytes()
    assert not (out / "mnist_onnx" / "1" / "model.py").exists()
    bls = parse(out / "mnist_bls" / "config.pbtxt")
    assert bls.backend == "python"
    check_io(bls, 128)
    assert bls.parameters["downstream_model"].string_value == "mnist_onnx"
    assert (out / "mnist_bls" / "1" / "model.py").read_text() == \
        (ROOT / "model_repo" / "mnist_bls" / "model.py").read_text()


def test_the_bls_model_also_answers_to_the_seeds_name(artifacts, tmp_path):
    """A client written for the seed asks for mnist_custom: the same BLS model, one instance,
    named in the result but not measured (not in `models`)."""
    out = tmp_path / "repo"
    result = build(artifacts, out)
    assert result["aliases"] == {"mnist_custom": "mnist_bls"} and "mnist_custom" not in result["models"]
    seed, bls = parse(out / "mnist_custom" / "config.pbtxt"), parse(out / "mnist_bls" / "config.pbtxt")
    assert (seed.name, bls.name) == ("mnist_custom", "mnist_bls")
    assert seed.parameters["downstream_model"].string_value == "mnist_onnx"
    check_io(seed, 128)
    assert [g.count for g in seed.instance_group] == [1] and [g.count for g in bls.instance_group] == [2]
    assert (out / "mnist_custom" / "1" / "model.py").read_text() == \
        (out / "mnist_bls" / "1" / "model.py").read_text()
    build(artifacts, out, models=["mnist_onnx"])       # no BLS asked for: no alias served
    assert not (out / "mnist_custom").exists()


def test_engine_present_gives_trt_and_bls_calls_it(artifacts, tmp_path):
    (artifacts / "model.plan").write_bytes(b"plan bytes are copied, not read")
    out = tmp_path / "repo"
    result = build(artifacts, out, instance_kind="auto")
    assert result["models"] == ["mnist_onnx", "mnist_trt", "mnist_bls"]
    assert "leftOut" not in result
    trt = parse(out / "mnist_trt" / "config.pbtxt")
    assert trt.platform == "tensorrt_plan"
    check_io(trt, 128)
    (group,) = trt.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO   # left to Triton
    assert (out / "mnist_trt" / "1" / "model.plan").is_file()
    assert parse(out / "mnist_bls" / "config.pbtxt").parameters["downstream_model"].string_value == "mnist_trt"


def test_cpu_only_serves_onnx_through_python_backend(artifacts, tmp_path):
    out = tmp_path / "repo"
    result = build(artifacts, out, cpu_only=True, instance_kind="cpu", models=["mnist_onnx"])
    text = (out / "mnist_onnx" / "config.pbtxt").read_text()
    cfg = parse(out / "mnist_onnx" / "config.pbtxt")
    assert cfg.name == "mnist_onnx" and cfg.backend == "python" and cfg.platform == ""
    check_io(cfg, 128)
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert "python backend with ONNX Runtime" in text           # says so in the config
    assert "ONNX Runtime" in result["onnxBackend"] and result["cpuOnly"] is True
    assert (out / "mnist_onnx" / "1" / "model.py").is_file()
    assert cfg.parameters["allow_spinning"].string_value == "0"
    assert cfg.parameters["onnx_file"].string_value == "model.onnx"
    assert (out / "mnist_onnx" / "1" / "model.onnx").is_file()


def test_bls_alone_pulls_in_its_downstream_and_stale_models_go(artifacts, tmp_path):
    out = tmp_path / "repo"
    (out / "mnist_trt" / "1").mkdir(parents=True)           # left from an earlier run
    result = build(artifacts, out, models=["mnist_bls"])
    assert result["models"] == ["mnist_onnx", "mnist_bls"]
    assert not (out / "mnist_trt").exists()


def test_no_preferred_sizes(artifacts, tmp_path):
    out = tmp_path / "repo"
    build(artifacts, out, preferred_batch_sizes=[], models=["mnist_onnx"])
    cfg = parse(out / "mnist_onnx" / "config.pbtxt")
    assert cfg.HasField("dynamic_batching") and list(cfg.dynamic_batching.preferred_batch_size) == []


@pytest.mark.parametrize("argv, flag", [
    (["--models", "onnx,vgg"], "--models"),
    (["--max-batch-size", "32", "--preferred-batch-sizes", "16,64"], "--max-batch-size"),
    (["--preferred-batch-sizes", "a,b"], "--preferred-batch-sizes"),
    (["--instances", "0"], "--instances"),
    (["--instance-kind", "tpu"], "arguments"),
])
def test_bad_input_names_the_flag(artifacts, tmp_path, capsys, argv, flag):
    code = repo.main([*spec_flags("repo"), "--artifacts", str(artifacts), "--out", str(tmp_path / "r"),
                      *argv])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.strip().startswith(f"repo: error: {flag}")
    assert json.loads(captured.out)["reason"] == "InvalidInput"


def test_missing_onnx_names_artifacts(tmp_path, capsys):
    assert repo.main([*spec_flags("repo"), "--artifacts", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "repo: error: --artifacts" in capsys.readouterr().err


def test_templates_found_next_to_package_and_in_checkout(monkeypatch, tmp_path):
    found = repo.templates_dir()
    assert (found / "mnist_bls" / "model.py").resolve() == (ROOT / "model_repo" / "mnist_bls" / "model.py")
    monkeypatch.setenv("MNIST_JOBS_TEMPLATES", str(tmp_path))     # no templates there: skipped
    assert repo.templates_dir().resolve() == found.resolve()


def test_torchscript_served_natively_as_mnist_pt(artifacts, tmp_path):
    (artifacts / "model.ts").write_bytes(b"torchscript bytes are copied, not read")
    out = tmp_path / "repo"
    result = build(artifacts, out, models=["mnist_onnx", "mnist_pt", "mnist_bls"])
    assert result["models"] == ["mnist_onnx", "mnist_pt", "mnist_bls"]
    assert result["pytorchBackend"] == "pytorch_libtorch"
    cfg = parse(out / "mnist_pt" / "config.pbtxt")
    assert cfg.name == "mnist_pt" and cfg.platform == "pytorch_libtorch" and cfg.backend == ""
    check_io(cfg, 128)
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    # the PyTorch backend's default file name; no python model in the native flavour
    assert (out / "mnist_pt" / "1" / "model.pt").read_bytes() == (artifacts / "model.ts").read_bytes()
    assert not (out / "mnist_pt" / "1" / "model.py").exists()
    # without an engine mnist_bls calls the TorchScript model, not ONNX Runtime
    assert result["blsDownstream"] == "mnist_pt"
    assert parse(out / "mnist_bls" / "config.pbtxt").parameters["downstream_model"].string_value \
        == "mnist_pt"


def test_torchscript_through_the_python_backend_with_cpu_only(artifacts, tmp_path):
    (artifacts / "model.ts").write_bytes(b"torchscript")
    out = tmp_path / "repo"
    result = build(artifacts, out, cpu_only=True, instance_kind="auto", models=["mnist_pt"])
    cfg = parse(out / "mnist_pt" / "config.pbtxt")
    assert cfg.name == "mnist_pt" and cfg.backend == "python" and cfg.platform == ""
    check_io(cfg, 128)
    assert cfg.parameters["torchscript_file"].string_value == "model.pt"
    assert (out / "mnist_pt" / "1" / "model.py").read_text() == \
        (ROOT / "model_repo" / "mnist_pt" / "model.py").read_text()
    assert "python backend with torch" in result["pytorchBackend"]


def test_engine_still_comes_first_for_bls_and_no_torchscript_leaves_mnist_pt_out(artifacts, tmp_path):
    (artifacts / "model.plan").write_bytes(b"plan")
    out = tmp_path / "repo"
    result = build(artifacts, out, models=["mnist_trt", "mnist_pt", "mnist_bls"])
    assert result["models"] == ["mnist_trt", "mnist_bls"]
    assert result["leftOut"] == {"mnist_pt": "no TorchScript file (model.ts not in artifacts)"}
    assert result["blsDownstream"] == "mnist_trt"
    assert not (out / "mnist_pt").exists()
