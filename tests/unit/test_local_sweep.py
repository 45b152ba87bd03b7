"""`mnist-serving run sweep.yaml`: a sweep's points run one after another on this machine
through the sweep's own core, with the stage processes replaced by a real demo run's
canned results; its status is the one the operator's sweep writes."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from mnist_operator.api import sweep as W
from mnist_operator.core.sweep import reconcile_sweep
from mnist_operator.local import runner
from test_local_runner import (cluster_status, example_doc, stages,  # noqa: F401
                               without_substrate)

AXES = [{"field": "serving.instances", "values": [1, 2]}]


def sweep_doc(axes=AXES, **spec) -> dict:
    return {"apiVersion": "mnist.serving.dev/v1alpha1", "kind": W.KIND,
            "metadata": {"name": "inst"},
            "spec": {"template": example_doc()["spec"], "axes": axes, **spec}}


def run_sweep(tmp_path: Path, doc: dict, capsys=None) -> tuple[int, dict]:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = runner.main([str(path), "--workdir", str(tmp_path / "work")])
    return code, json.loads((tmp_path / "work" / "status.json").read_text())


def test_a_local_sweep_runs_each_point_in_its_own_directory_and_ranks_them(tmp_path, stages,
                                                                           capsys):
    code, status = run_sweep(tmp_path, sweep_doc())
    assert code == 0 and status["phase"] == "Complete"
    assert status["progress"] == {"total": 2, "ready": 2, "failed": 0, "running": 0, "waiting": 0}
    names = [r["name"] for r in status["points"]]
    assert names == [p.child_name("inst") for p in W.points(W.parse_sweep(sweep_doc()["spec"]))]
    for name in names:
        point = json.loads((tmp_path / "work" / name / "status.json").read_text())
        # measured, then Triton stopped: a point hands its machine to the next
        assert point["phase"] == "Measured" and point["workdir"] == str(tmp_path / "work" / name)
    assert stages.ran.count("train") == 2                   # one pipeline per point
    # canned results carry no repeats: a verdict with no interval, never a guess
    assert [v["verdict"] for v in status["verdicts"]] == ["no interval"]
    text = capsys.readouterr().out
    assert f"sweep inst: Complete  (2/2 points measured; best {status['best']['point']}" in text
    assert "no interval" in text and "serving.instances=2" in text


def test_a_second_run_reuses_every_finished_step_of_every_point(tmp_path, stages):
    run_sweep(tmp_path, sweep_doc())
    stages.ran.clear()
    code, again = run_sweep(tmp_path, sweep_doc())
    assert code == 0 and again["phase"] == "Complete" and stages.ran == []


def test_a_bad_sweep_is_refused_naming_the_axis_and_value(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_doc(axes=[{"field": "serving.instances",
                                                    "values": [1, 17]}])))
    assert runner.main([str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mnist-serving run: error: {path}: spec.axes[0].values[1]: 17 for serving.instances: "
        "must be <= 16 (got 17)")
    assert not (tmp_path / "w").exists()


def test_a_local_sweep_and_a_cluster_sweep_end_in_the_same_status(tmp_path, stages):
    """The operator's sweep over points whose statuses a cluster produced (the
    MnistServing core driven with the same canned results) writes the status the
    local sweep wrote, but for what says where it ran."""
    doc = sweep_doc()
    code, local = run_sweep(tmp_path, doc)
    assert code == 0
    sweep = {"apiVersion": doc["apiVersion"], "kind": W.KIND,
             "metadata": {"name": "inst", "namespace": "local", "uid": "local-inst",
                          "generation": 1}, "spec": doc["spec"], "status": {}}
    children = []
    while True:
        decision = reconcile_sweep(sweep, children, datetime.now(timezone.utc))
        sweep["status"] = decision.status
        if not decision.create:
            break
        for child in decision.create:
            point_status = json.loads((tmp_path / "work" / child["metadata"]["name"]
                                       / "status.json").read_text())
            cluster = cluster_status(child["spec"], point_status["stages"],
                                     child["metadata"]["name"])
            assert without_substrate(point_status) == without_substrate(cluster)
            children.append({**child, "status": cluster})

    def comparable(status: dict) -> dict:
        out = {k: v for k, v in status.items() if k not in ("name", "workdir", "conditions")}
        out["points"] = [{k: v for k, v in r.items() if k != "environment"}
                         for r in status["points"]]
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in status["conditions"]]
        return out
    assert comparable(local) == comparable(sweep["status"])
