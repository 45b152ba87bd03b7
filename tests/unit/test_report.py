"""mnist-serving report: the pure HTML builders (answers, tables, the SVG chart,
escaping, nothing that would make a request) and the local/cluster gathering.

Runs are rows of real statuses (tests/unit/data/results-demo through
core.summary.summarize, as compare's tests build them); sweep statuses are
hand-made in the shape core/sweep.py writes, their numbers fixture inputs."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from mnist_operator.core.summary import summarize
from mnist_operator.tools import cli, compare, report
from mnist_operator.tools.compare import rows_of, sweeps_of
from tests.harness.html_tables import Tables, as_dicts

DATA = Path(__file__).parent / "data" / "results-demo"
EVIL = '<script>alert("x")</script> http://evil.invalid/a.png'


def demo() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


def faster(results: dict[str, dict], factor: float, spread: float = 0.02) -> dict[str, dict]:
    """The demo results with every throughput times ``factor`` and a 3-repeat interval."""
    out = copy.deepcopy(results)
    for step in ("bench-grpc", "bench-http"):
        for entry in out[step]["models"].values():
            for r in entry["rows"] + [entry["best"]]:
                r["inferPerSec"] = f"{float(r['inferPerSec']) * factor:.1f}"
            b = float(entry["best"]["inferPerSec"])
            entry["best"].update(repeats=3, low=f"{b * (1 - spread):.1f}",
                                 high=f"{b * (1 + spread):.1f}")
    return out


def status_of(results: dict[str, dict], name: str = "demo") -> dict:
    stages = {s: {"state": r["state"], "fingerprint": r["fingerprint"],
                  "completionTime": r.get("completionTime", "")} for s, r in results.items()}
    return {"name": name, "phase": "Ready", "stages": stages, **summarize(results)}


def run_rows(source: str, results: dict[str, dict]) -> list[compare.Row]:
    bench = {k: v for k, v in results.items() if k.startswith("bench-")}
    return rows_of(source, status_of(results), sweeps_of(bench))


def sweep_status(objective: str = "throughput") -> dict:
    """Three points in the shape core/sweep.py writes: two Ready, one Failed."""
    points = [
        {"name": "which-gpu-aaaaaa", "values": {"scheduling.gpuProduct": "H100",
                                                "serving.instances": 2},
         "phase": "Ready", "model": "mnist_onnx", "protocol": "grpc", "inferPerSec": "12000.0",
         "p99Us": 4100, "low": "11900.0", "high": "12100.0", "repeats": 3,
         "inferPerJoule": "41.2", "costPerMillion": "0.1852", "device": "H100",
         "environment": "e1e1e1e1"},
        {"name": "which-gpu-bbbbbb", "values": {"scheduling.gpuProduct": "A100",
                                                "serving.instances": 2},
         "phase": "Ready", "model": "mnist_onnx", "protocol": "grpc", "inferPerSec": "9000.0",
         "p99Us": 3900, "low": "8850.0", "high": "9150.0", "repeats": 3,
         "inferPerJoule": "30.0", "costPerMillion": "0.0772", "device": "A100",
         "environment": "e2e2e2e2"},
        {"name": "which-gpu-cccccc", "values": {"scheduling.gpuProduct": "A100",
                                                "serving.instances": 1},
         "phase": "Failed", "reason": "engine: out of memory"},
    ]
    best = points[1] if objective == "costPerMillion" else points[0]
    value = {"throughput": "12000.0", "costPerMillion": "0.0772"}[objective]
    other = points[0] if best is points[1] else points[1]
    verdict = ({"ratio": "1.33", "low": "1.30", "high": "1.36", "verdict": "better"}
               if best is points[0] else
               {"ratio": "0.75", "low": "0.73", "high": "0.77", "verdict": "worse"})
    return {"name": "which-gpu", "phase": "Complete", "objective": objective,
            "progress": {"total": 3, "ready": 2, "failed": 1, "running": 0, "waiting": 0},
            "points": points, "pareto": ["which-gpu-aaaaaa", "which-gpu-bbbbbb"],
            "best": {"point": best["name"], "values": best["values"], "value": value},
            "verdicts": [{"point": other["name"], **verdict}]}




# --------------------------------------------------------------------------- answers
def test_the_sweep_answer_is_the_best_point_its_value_and_the_verdict_on_the_runner_up():
    assert report.sweep_answer(sweep_status()) == (
        "Best: which-gpu-aaaaaa (scheduling.gpuProduct=H100, serving.instances=2): "
        "12000.0 infer/s, 1.33× [1.30, 1.36] the next best, which-gpu-bbbbbb (better).")


def test_a_cost_objective_answers_in_cost_and_ranks_the_cheapest_first():
    status = sweep_status("costPerMillion")
    assert report.sweep_answer(status) == (
        "Best: which-gpu-bbbbbb (scheduling.gpuProduct=A100, serving.instances=2): "
        "0.0772 per million inferences (9000.0 infer/s), throughput 0.75× [0.73, 0.77] "
        "the next best, which-gpu-aaaaaa (worse).")
    assert [p["name"] for p in report.ranking(status)] == [
        "which-gpu-bbbbbb", "which-gpu-aaaaaa", "which-gpu-cccccc"]


def test_a_sweep_without_a_best_point_says_how_far_it_is():
    status = {"progress": {"total": 4, "ready": 0, "failed": 0, "running": 2, "waiting": 2},
              "points": [], "objective": "throughput"}
    assert report.sweep_answer(status) == (
        "No best point yet: 0/4 points measured, 0 failed, 2 running, 2 waiting.")
    one = sweep_status()
    one["verdicts"] = []
    assert report.sweep_answer(one).endswith("; no other point to compare it with.")


def test_the_runs_answer_is_the_fastest_row_and_its_ratio_to_the_second():
    rows = run_rows("runs/fast", faster(demo(), 1.3)) + run_rows("runs/slow", faster(demo(), 1.0))
    answer = report.runs_answer(rows)
    assert answer.startswith("Fastest: runs/fast · mnist_onnx · grpc on cpu (train): "
                             "11291.9 infer/s at p99 15.50 ms, ")
    # the second fastest row is the fast run's http row: a ratio with its interval and verdict
    assert re.search(r", 1\.\d\d× \[\d\.\d\d, \d\.\d\d\] the second, runs/fast · mnist_onnx · "
                     r"http \((better|no difference)\)\.$", answer), answer
    single = run_rows("runs/only", demo())[:1]
    assert report.runs_answer(single).endswith("; no other run to compare it with.")
    assert report.runs_answer([]) == "No run has benchmark results."


# --------------------------------------------------------------------------- tables
def test_the_ranking_table_holds_the_status_figures_best_first_and_marks_the_front():
    status = sweep_status()
    (table,) = Tables(report.sweep_table(status)).tables
    rows = as_dicts(table)
    assert [r["point"] for r in rows] == ["which-gpu-aaaaaa", "which-gpu-bbbbbb",
                                          "which-gpu-cccccc"]
    best, second, failed = rows
    assert best["#"] == "1" and best["marks"] == "★ best ◆ Pareto"
    assert best["infer/s"] == "12000.0" and best["p99 ms"] == "4.10"
    assert best["95 % interval"] == "[11900.0, 12100.0]" and best["best / this"] == "best"
    assert best["cost per million"] == "0.1852" and best["infer/J"] == "41.2"
    assert second["marks"] == "◆ Pareto" and second["best / this"] == "1.33× [1.30, 1.36]"
    assert second["verdict"] == "better" and second["scheduling.gpuProduct"] == "A100"
    assert failed["#"] == "-" and failed["phase"] == "Failed engine: out of memory"
    assert failed["infer/s"] == "-" and failed["serving.instances"] == "1"


def test_the_runs_table_ranks_fastest_first_with_the_verdict_against_the_baseline():
    rows = compare.with_baseline(run_rows("runs/fast", faster(demo(), 1.3))
                                 + run_rows("runs/slow", faster(demo(), 1.0)), "runs/slow")
    (table,) = Tables(report.runs_table(report.fastest(rows))).tables
    got = as_dicts(table)
    assert got[0]["source"] == "runs/fast" and got[0]["best infer/s"] == "11291.9"
    assert got[0]["p99 ms at best"] == "15.50" and got[0]["load at best"] == "c=49"
    assert got[0]["vs baseline"].startswith("1.30 [") and got[0]["verdict"] == "better"
    slow = [r for r in got if r["source"] == "runs/slow"]
    assert {r["verdict"] for r in slow} == {"baseline"}
    assert "GPU util at best" not in table[0]   # a column every row leaves "-" is left out


def test_the_environment_table_is_compares_legend():
    rows = run_rows("runs/a", demo())
    (table,) = Tables(report.environments_table(rows)).tables
    assert table[0][:2] == ["environment", "GPU / device"]
    assert [r[0] for r in table[1:]] == sorted({r.environment for r in rows})
    assert table[1][1:] == [v for _, v in rows[0].environment_details]


# --------------------------------------------------------------------------- chart
def test_the_chart_has_one_line_per_run_with_a_dot_per_load():
    rows = run_rows("runs/a", demo())
    svg = report.chart(report.run_series(rows), "runs")
    assert svg.count('<g class="series"') == len(rows) == 4
    assert svg.count('<polyline class="line"') == len(rows)
    assert svg.count('<circle class="best"') == len(rows)
    dots = sum(len(r.sweep) for r in rows)
    assert svg.count('r="3.5"') == dots == 8     # the demo's sweeps: c=1 and c=49
    assert svg.count('<polyline class="front"') == 1


def test_a_sweep_chart_draws_each_measured_point_and_its_front():
    status = sweep_status()
    sweep = report.Sweep("which-gpu", "runs/which-gpu", status,
                         {"which-gpu-aaaaaa": run_rows("runs/which-gpu/which-gpu-aaaaaa", demo())})
    series = report.sweep_series(sweep)
    assert [s.label.split(" ")[0] for s in series] == ["which-gpu-aaaaaa", "which-gpu-bbbbbb"]
    # the first point's own run has rows of mnist_onnx/grpc: its sweep; the other its best only
    assert len(series[0].marks) == 2 and len(series[1].marks) == 1
    assert series[1].best == (3.9, 9000.0, series[1].best[2]) and all(s.front for s in series)
    svg = report.chart(series, "sweep")
    assert svg.count('<g class="series"') == 2 and svg.count('class="pareto"') == 2


@pytest.mark.parametrize("top, expected", [(0, [0.0, 1.0]), (9.5, [0, 2, 4, 6, 8, 10]),
                                           (12600, [0, 5000, 10000, 15000]),
                                           (18.6, [0, 5, 10, 15, 20])])
def test_ticks_are_round_and_reach_the_top(top, expected):
    assert report.ticks(top) == expected


# --------------------------------------------------------------------------- the page
def page_with(evil: str) -> tuple[str, list[str]]:
    """A page whose statuses carry ``evil`` in every string a person could set."""
    status = sweep_status()
    status["points"][2]["reason"] = evil
    status["points"][0]["device"] = evil
    status["points"][0]["values"]["serving.models"] = evil
    results = demo()
    results["bench-grpc"]["models"][evil] = results["bench-grpc"]["models"]["mnist_onnx"]
    rows = run_rows(f"runs/{evil}", results)
    text = report.page([report.Sweep(evil, evil, status)], rows,
                       "mnist-serving report runs/x", "2026-01-01 00:00 UTC")
    return text, [evil]


def test_every_string_from_a_status_is_escaped():
    text, _ = page_with(EVIL)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert text.count("&lt;script&gt;") >= 5


def test_the_page_refers_to_nothing_outside_itself():
    text, _ = page_with(EVIL)
    escaped = report.e(EVIL)
    rest = text.replace(escaped, "").replace('http-equiv="Content-Security-Policy"', "")
    # "http" only as the protocol name the statuses carry (a model's protocol column)
    assert re.findall(r"https?://|//", rest) == []
    assert set(re.findall(r"\bhttp\w*", rest)) <= {"http"}
    for needle in ("<script", " src=", "href=", "url(", "@import", "<link", "<img", "<iframe"):
        assert needle not in rest.lower(), needle
    assert f'content="{report.CSP}"' in text


def test_the_page_is_ordered_answer_sweeps_runs_environments_footer():
    rows = run_rows("runs/a", demo())
    text = report.page([report.Sweep("which-gpu", "runs/which-gpu", sweep_status())], rows,
                       "mnist-serving report runs/which-gpu runs/a", "2026-01-01 00:00 UTC")
    marks = ['id="answer"', 'id="sweep-1"', 'id="runs"', 'id="environments"', "<footer>"]
    assert [text.index(m) for m in marks] == sorted(text.index(m) for m in marks)
    answer = text[text.index('id="answer"'):text.index('id="sweep-1"')]
    assert report.e(report.sweep_answer(sweep_status())) in answer
    assert report.e(report.runs_answer(rows)) in answer
    assert "Written by <code>mnist-serving report runs/which-gpu runs/a</code>" in text


# --------------------------------------------------------------------------- gathering
def write_run(root: Path, results: dict[str, dict], name: str) -> dict:
    (root / "results").mkdir(parents=True)
    for step, result in results.items():
        (root / "results" / f"{step}.json").write_text(json.dumps(result))
    status = status_of(results, name)
    (root / "status.json").write_text(json.dumps(status))
    return status


def test_main_reads_a_local_sweep_with_its_points_runs_and_a_plain_run(tmp_path, capsys):
    status = sweep_status()
    status["points"] = status["points"][:2]
    write_run(tmp_path / "which-gpu" / "which-gpu-aaaaaa", faster(demo(), 1.3), "which-gpu-aaaaaa")
    (tmp_path / "which-gpu" / "status.json").write_text(json.dumps(status))
    write_run(tmp_path / "plain", demo(), "plain")
    out = tmp_path / "out" / "r.html"
    assert report.main([str(tmp_path / "which-gpu"), str(tmp_path / "plain"),
                        "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count('<g class="series"') == 2 + 4      # two points, four plain rows
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == report.sweep_answer(status) and printed[1].startswith("Fastest: ")
    assert report.main([str(tmp_path / "nothing"), "--out", str(out)]) == 1


def test_cluster_sweeps_take_their_points_from_the_child_mnistservings():
    def item(name: str, status: dict) -> dict:
        return {"metadata": {"name": name, "namespace": "ns"}, "status": status}
    results = demo()
    cr_status = {**summarize(results), "phase": "Ready",
                 "stages": {s: {"state": "Succeeded", "result": r} for s, r in results.items()
                            if s.startswith("bench-")}}
    servings = {"items": [item("which-gpu-aaaaaa", cr_status), item("lonely", cr_status)]}
    sweeps = {"items": [item("which-gpu", sweep_status())]}
    warn: list[str] = []
    found, rows = report.cluster_sweeps(servings, sweeps, "ctx", warn)
    assert [s.source for s in found] == ["ctx:ns/which-gpu"] and warn == []
    assert list(found[0].points) == ["which-gpu-aaaaaa"]
    assert {r.source for r in rows} == {"ctx:ns/lonely"}      # a point is not a plain run too
    assert all(len(r.sweep) == 2 for r in found[0].points["which-gpu-aaaaaa"])


def test_the_command_is_registered():
    assert cli.COMMANDS["report"][0] == "mnist_operator.tools.report"
