"""`mnist-serving compare` as a user runs it: the installed command on a local
run directory, and ``--cluster`` against a real kube-apiserver + etcd (the
cluster tier's ControlPlane) holding MnistServing resources whose status
carries the real stage results of tests/unit/data/results-demo.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_operator.core.summary import summarize
from tests.harness.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "unit" / "data" / "results-demo"
COMMAND = Path(sys.executable).with_name("mnist-serving")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def demo_results() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def compare(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMMAND), "compare", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def table_rows(stdout: str, table: int = 0) -> list[list[str]]:
    """The rows of the output's first table (the comparison) or second (the environments)."""
    lines = [line for line in stdout.split("\n\n")[table].splitlines()
             if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


@pytest.mark.integration
def test_installed_command_on_a_run_directory(tmp_path):
    results = demo_results()
    run = tmp_path / "runs" / "demo"
    (run / "results").mkdir(parents=True)
    for step, result in results.items():
        (run / "results" / f"{step}.json").write_text(json.dumps(result))
    stages = {s: {"state": r["state"], "fingerprint": r["fingerprint"]} for s, r in results.items()}
    (run / "status.json").write_text(json.dumps(
        {"name": "demo", "phase": "Ready", "stages": stages, **summarize(results)}))
    (tmp_path / "runs" / "half").mkdir()  # no status.json: a warning, not a failure

    # no PATH: every runs/*/status.json of the current directory
    out = compare(cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    assert [(r[1], r[2]) for r in rows] == [("mnist_bls", "grpc"), ("mnist_bls", "http"),
                                            ("mnist_onnx", "grpc"), ("mnist_onnx", "http")]
    assert all(r[0] == "runs/demo" and r[3] == "cpu (train)" for r in rows)
    # one run on one machine: one environment, every row under its id
    (legend,) = table_rows(out.stdout, table=1)
    assert {r[-1] for r in rows} == {legend[0]} and legend[1] == "cpu (train)"
    written = list(csv.DictReader((tmp_path / "runs" / "compare" / "compare.csv").open()))
    assert [r["best_infer_per_sec"] for r in written] == [r[4] for r in rows]
    assert (tmp_path / "runs" / "compare" / "compare.png").read_bytes()[:8] == PNG_MAGIC

    # an explicit bad path: named on one line, exit 1 when nothing else is left
    out = compare(str(tmp_path / "runs" / "half"), cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert f"{tmp_path / 'runs' / 'half'}: no status.json here; skipped" in out.stderr


def _write_run(run: Path, results: dict[str, dict]) -> None:
    (run / "results").mkdir(parents=True)
    for step, result in results.items():
        (run / "results" / f"{step}.json").write_text(json.dumps(result))
    stages = {s: {"state": r["state"], "fingerprint": r["fingerprint"]} for s, r in results.items()}
    (run / "status.json").write_text(json.dumps(
        {"name": run.name, "phase": "Ready", "stages": stages, **summarize(results)}))


@pytest.mark.integration
def test_installed_command_with_a_baseline(tmp_path):
    """Two local runs whose bench best points carry 3 repeats (as the bench stage
    writes them), the status built by summarize: ratio, interval and verdict per row."""
    base, new = demo_results(), demo_results()
    for results, grpc, http in ((base, ("8686.1", "8600.0", "8800.0"),
                                 ("8411.2", "8300.0", "8500.0")),
                                (new, ("9500.0", "9400.0", "9600.0"),
                                 ("8400.0", "8000.0", "8800.0"))):
        for protocol, (infer, low, high) in (("grpc", grpc), ("http", http)):
            best = results[f"bench-{protocol}"]["models"]["mnist_onnx"]["best"]
            best.update(inferPerSec=infer, repeats=3, low=low, high=high)
    _write_run(tmp_path / "runs" / "base", base)
    _write_run(tmp_path / "runs" / "new", new)

    out = compare("runs/base", "runs/new", "--baseline", "runs/base/", "--out", "cmp",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {(r[0], r[1], r[2]): r[4:7] for r in table_rows(out.stdout)}
    assert rows[("runs/new", "mnist_onnx", "grpc")] == ["9500.0", "1.09 [1.08, 1.10]", "better"]
    assert rows[("runs/new", "mnist_onnx", "http")] == ["8400.0", "1.00 [0.96, 1.04]",
                                                        "no difference"]
    assert rows[("runs/new", "mnist_bls", "grpc")] == ["7415.3", "1.00", "no interval"]
    assert rows[("runs/base", "mnist_onnx", "grpc")] == ["8686.1", "1.00", "baseline"]
    assert out.stdout.split("\n\n")[1].startswith(
        "vs baseline: ratio of mean throughputs to runs/base, 95 % interval")
    written = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [r["verdict"] for r in written if r["source"] == "runs/new"] == \
        ["no interval", "no interval", "better", "no difference"]

    refused = compare("runs/base", "runs/new", "--baseline", "runs/old", "--out", "cmp2",
                      cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "mnist-serving compare: error: --baseline runs/old is none of the sources compared; "
        "available: runs/base, runs/new"]


def _resource(name: str, namespace: str, gpu_product: str = "") -> dict:
    doc = yaml.safe_load((ROOT / "examples" / "local.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    if gpu_product:
        doc["spec"]["scheduling"] = {"gpuProduct": gpu_product}
    return doc


def _status(results: dict[str, dict], phase: str) -> dict:
    """The status shape the operator writes: stage records with their result fields."""
    stages = {s: {"state": r["state"], "fingerprint": r["fingerprint"],
                  "completionTime": r["completionTime"],
                  "result": {k: v for k, v in r.items()
                             if k not in ("stage", "state", "reason", "message")}}
              for s, r in results.items()}
    return {"phase": phase, "stages": stages, **summarize(results)}


@pytest.mark.integration
@pytest.mark.cluster
def test_cluster_lists_every_mnistserving(tmp_path):
    plane = ControlPlane().start()
    try:
        crd = subprocess.run([str(COMMAND), "crd"], capture_output=True, text=True, check=True)
        plane.kubectl("apply", "-f", "-", input=crd.stdout)
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      "crd/mnistservings.mnist.serving.dev")
        results = demo_results()
        early = {k: results[k] for k in ("train", "export")}
        for ns in ("team-a", "team-b"):
            plane.kubectl("create", "namespace", ns)
        for name, ns, res, phase, gpu in (("l4", "team-a", results, "Ready", "NVIDIA-L4"),
                                          ("young", "team-a", early, "Exporting", ""),
                                          ("cpu", "team-b", results, "Ready", "")):
            plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(_resource(name, ns, gpu)))
            plane.kubectl("patch", "mnistserving", name, "-n", ns, "--subresource=status",
                          "--type=merge", "-p", json.dumps({"status": _status(res, phase)}))
        kubeconfig = str(plane.kubeconfig)
        context = yaml.safe_load(Path(kubeconfig).read_text())["current-context"]

        out = compare("--cluster", "--kubeconfig", kubeconfig, "-A", "--out", str(tmp_path / "all"))
        assert out.returncode == 0, out.stderr
        rows = table_rows(out.stdout)
        assert {r[0] for r in rows} == {f"{context}:team-a/l4", f"{context}:team-b/cpu"}
        assert len(rows) == 8  # 2 resources x 2 models x 2 protocols
        l4 = {(r[1], r[2]): r for r in rows if r[0].endswith("/l4")}
        # "-": no request records (these results predate them), no request rate
        assert l4[("mnist_onnx", "grpc")][3:10] == [
            "NVIDIA-L4", "8686.1", "15.50", "-", "49", "-", "5.12"]
        assert l4[("mnist_onnx", "grpc")][-2] == results["bench-grpc"]["completionTime"]
        # an L4 resource and a CPU one: two environments, never one
        assert len({r[-1] for r in rows}) == 2 and len(table_rows(out.stdout, table=1)) == 2
        assert f"{context}:team-a/young: no benchmark results" in out.stderr
        assert (tmp_path / "all" / "compare.png").read_bytes()[:8] == PNG_MAGIC

        out = compare("--cluster", "--kubeconfig", kubeconfig, "--context", context,
                      "-n", "team-b", "--out", str(tmp_path / "b"))
        assert out.returncode == 0, out.stderr
        assert {r[0] for r in table_rows(out.stdout)} == {f"{context}:team-b/cpu"}

        out = compare("--cluster", "--kubeconfig", kubeconfig, "-n", "empty",
                      "--out", str(tmp_path / "none"))
        assert out.returncode == 1
        assert "nothing to compare" in out.stderr
    finally:
        plane.stop()
