"""An SLO search's answer as a docs/BENCHMARKS.md section, with the command that
produced it: the highest throughput whose p99 meets the limit, the 95 % interval
of that p99 from every request and how many requests it rests on, and the first
load that fails beside it.

    python benchmarks/slo.py [SPEC.yaml] [--workdir DIR] [--write]

runs `mnist-serving run SPEC.yaml` here (examples/slo-local.yaml by default;
`make bench-slo`), then prints (and with --write writes) the section from the
bench step's result.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from mnist_operator.tools.compare import replace_section  # noqa: E402

HEADING = "## SLO search (local, CPU)"
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"


def p99_cell(row: dict) -> str:
    """A row's p99 from every request with its 95 % interval and request count."""
    found = row.get("latency") or {}
    if "p99" not in found:
        return f"{row['p99Us'] / 1000:.2f} (perf_analyzer's)"
    estimate, low, high = found["p99"]
    interval = f"[{low / 1000:.2f}, {high / 1000:.2f}]" if low is not None else "[too few]"
    return f"{estimate / 1000:.2f} {interval} over {found['requests']:,}"


def further(row: dict) -> str:
    m = row.get("measuredFurther")
    if not m:
        return "-"
    return f"{m['runs']} run(s), {m['seconds']} s, " + ("decided" if m["decided"] else "undecided")


def rows(result: dict) -> list[str]:
    out = ["| model | SLO | answer: infer/s at | its p99 ms [95 %] over requests | measured further "
           "| first failing | its p99 ms [95 %] over requests | why it fails | loads bisected |",
           "|---|---|---|---|---|---|---|---|---|"]
    for model, entry in sorted(result["models"].items()):
        slo = entry.get("slo") or {}
        best, failing = slo.get("atSlo"), slo.get("firstFailing")
        answer = f"**{best['inferPerSec']}** at c={best['c']}" if best else slo.get("none", "-")
        out.append(" | ".join([
            f"| {model}", slo.get("slo", "-"), answer, p99_cell(best) if best else "-",
            further(best) if best else "-", f"c={failing['c']}" if failing else "-",
            p99_cell(failing) if failing else "-", failing.get("why", "-") if failing else "-",
            ", ".join(map(str, slo.get("refined") or [])) or "-"]) + " |")
    return out


def section(result: dict, command: str, seconds: float) -> str:
    return "\n".join([
        HEADING, "",
        f"Written by `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{seconds:.0f} s in all, the local run's steps reused where finished). A load meets "
        "the SLO only when the upper end of its p99's distribution-free 95 % interval (every "
        "request of its windows) is under the limit; one whose interval holds the limit is "
        "measured further, up to `decideWithinSeconds`. The answer is the highest throughput "
        "over the loads that meet it; the first failing load is its neighbour in the "
        "bisection.", "",
        *rows(result), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default="examples/slo-local.yaml")
    p.add_argument("--workdir", default="runs/bench-slo")
    p.add_argument("--write", action="store_true", help="write the section to docs/BENCHMARKS.md")
    a = p.parse_args(argv)
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "mnist_operator.tools.cli", "run", a.spec,
                          "--workdir", a.workdir], cwd=ROOT)
    if run.returncode != 0:
        print(f"slo benchmark: the run failed (exit {run.returncode}); see {a.workdir}",
              file=sys.stderr)
        return 1
    result = json.loads((ROOT / a.workdir / "results" / "bench-grpc.json").read_text())
    command = "make bench-slo" if a.spec == "examples/slo-local.yaml" else \
        f"python benchmarks/slo.py {a.spec}"
    text = section(result, command, time.time() - started)
    print(text)
    if a.write:
        BENCHMARKS.write_text(replace_section(BENCHMARKS.read_text(), text, HEADING))
        print(f"slo benchmark: wrote {HEADING!r} in {BENCHMARKS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
