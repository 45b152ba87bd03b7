"""A sweep's ranking as a docs/BENCHMARKS.md section: one table per sweep run,
with the command that produced it.

    python benchmarks/sweep.py run SWEEP.yaml [--heading H] [--write]
        runs `mnist-serving run SWEEP.yaml` here, then prints (and with --write
        writes) the section from the sweep's status
    python benchmarks/sweep.py table STATUS.json --command CMD [--heading H] [--write]
        the section from a sweep status a run elsewhere left (the lent GPU's)

`make bench-sweep` is the first form on examples/sweep-local.yaml.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "jobs"))

from mnist_operator.local.sweep import against_best  # noqa: E402
from mnist_operator.tools.compare import p99_interval_cell, replace_section  # noqa: E402

BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"


def _point_status(sweep_dir: Path, name: str) -> dict:
    path = sweep_dir / name / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def rows(status: dict, sweep_dir: Path) -> list[str]:
    verdicts = {v["point"]: v for v in status.get("verdicts") or []}
    best = (status.get("best") or {}).get("point")
    out = ["| point | values | phase | infer/s (median) | 95 % interval of the mean | "
           "p99 ms (perf_analyzer) | p99 ms from requests [95 %] (requests) | best / this | device |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in status.get("points") or []:
        point = _point_status(sweep_dir, r["name"])
        per = ((point.get("benchmark") or {}).get("perfAnalyzer") or {}).get(r.get("model", ""), {})
        at = per.get(r.get("protocol", ""), {})
        requests = p99_interval_cell(at)
        against = against_best(r, verdicts, best)
        values = ", ".join(f"{k}={json.dumps(x)}" for k, x in r["values"].items())
        interval = f"[{r['low']}, {r['high']}] ({r['repeats']} runs)" if "low" in r else "-"
        p99 = f"{r['p99Us'] / 1000:.2f}" if "p99Us" in r else "-"
        out.append(f"| {r['name']} | {values} | {r['phase']} | {r.get('inferPerSec', '-')} | "
                   f"{interval} | {p99} | {requests} | {against} | {r.get('device', '-')} |")
    return out


def section(status: dict, sweep_dir: Path, heading: str, command: str) -> str:
    best = status.get("best") or {}
    lines = [heading, "", f"Written by `{command}`. {status.get('message', '')}.", "",
             *rows(status, sweep_dir), "",
             f"Objective: {status.get('objective')}; best point: {best.get('point', '-')} "
             f"({best.get('value', '-')}). \"best / this\" is the best point's mean throughput "
             "over the row's, with its 95 % interval (Fieller, Welch df, from the points' "
             "repeats) and the verdict; the p99 from requests is every request of the best "
             "load's windows, with its distribution-free 95 % interval.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("run", "table"))
    p.add_argument("path", type=Path, help="the sweep YAML (run) or its status.json (table)")
    p.add_argument("--command", help="the command that produced the status (table)")
    p.add_argument("--heading", default="## Sweep (local, CPU)")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    a = p.parse_args(argv)
    if a.mode == "run":
        import yaml
        name = yaml.safe_load(a.path.read_text())["metadata"]["name"]
        workdir = ROOT / "runs" / name
        code = subprocess.call([sys.executable, "-m", "mnist_operator.tools.cli", "run",
                                str(a.path), "--workdir", str(workdir)], cwd=ROOT)
        if code not in (0, 1):
            return code
        status_path, command = workdir / "status.json", f"python benchmarks/sweep.py run {a.path} --write"
    else:
        status_path, command = a.path, a.command or f"python benchmarks/sweep.py table {a.path}"
    status = json.loads(status_path.read_text())
    text = section(status, status_path.parent, a.heading, command)
    print(text)
    if a.write:
        BENCHMARKS.write_text(replace_section(BENCHMARKS.read_text(), text, a.heading))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
