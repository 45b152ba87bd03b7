"""The closed loop by two objectives on one spec, as a docs/BENCHMARKS.md section.

    python benchmarks/gpu/objectives.py STATUS_THROUGHPUT STATUS_ENERGY --command CMD [--write]

Each STATUS is the status.json a local run of the same spec left, with
benchmark.objective throughput and inferencesPerJoule (the second run reuses
every step up to analyze: only the tuned steps follow the objective). The table
says, per objective, the config applied, what model-analyzer measured for it,
the confirm stage's verdict on it (with an SLO: re-measured by the bench stage's
rule before it was applied), what the tuned bench measured (infer/s and infer/J
with their 95 % intervals) and the Improved condition judged on the objective.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator"))

from mnist_operator.tools.compare import replace_section  # noqa: E402

BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
HEADING = "## The closed loop by throughput and by energy (lent GPU)"


def _interval(point: dict, value: str, low: str, high: str) -> str:
    if value not in point:
        return "-"
    return point[value] + (f" [{point[low]}, {point[high]}]" if low in point else "")


def row(status: dict) -> str:
    bench = status.get("benchmark") or {}
    loop = bench.get("closedLoop") or {}
    objective = loop.get("objective", "-")
    applied = "; ".join(f"{m} {c.get('config')} ({c.get('instances', '-')} instances)"
                        for m, c in (loop.get("applied") or {}).items()) or loop.get("state", "-")
    ma = bench.get("modelAnalyzer") or {}
    found = []
    for model, m in ma.items():
        if not isinstance(m, dict):
            continue
        chosen = m.get("perJoule", {}) if objective == "inferencesPerJoule" else m
        found.append(f"{model}: {chosen.get('throughput', '-')} infer/s, "
                     f"{chosen.get('powerW', '-')} W, {chosen.get('inferPerJoule', '-')} infer/J "
                     f"at c={chosen.get('concurrency', '-')}")
    confirmed = "; ".join(f"{m}: {line}" for m, line in (loop.get("confirmation") or {}).items())
    tuned = loop.get("perfAnalyzer") or {}
    after = [f"{model}/{proto}: {_interval(p, 'bestInferPerSec', 'lowAtBest', 'highAtBest')} "
             f"infer/s, {_interval(p, 'inferPerJouleAtBest', 'inferPerJouleLowAtBest', 'inferPerJouleHighAtBest')} "
             f"infer/J, {p.get('powerWAtBest', '-')} W"
             for model, per in tuned.items() for proto, p in per.items()]
    improved = next((c for c in status.get("conditions") or [] if c.get("type") == "Improved"), {})
    verdict = f"{improved.get('status', '-')} ({improved.get('reason', '-')}): " \
              f"{improved.get('message', '-')}"
    return (f"| {objective} | {applied} | {'; '.join(found) or '-'} | {confirmed or '-'} | "
            f"{'; '.join(after) or '-'} | {verdict} |")


def applied(status: dict) -> dict:
    loop = (status.get("benchmark") or {}).get("closedLoop") or {}
    return {m: c.get("config") for m, c in (loop.get("applied") or {}).items()}


def section(statuses: list[dict], command: str, where: str) -> str:
    same = all(applied(s) == applied(statuses[0]) for s in statuses)
    lines = [HEADING, "", f"Written by `{command}` ({where}).", "",
             "| objective | config applied | model-analyzer's figures for it | confirmed before "
             "it was applied | tuned bench: infer/s [95 %], infer/J [95 %], power | Improved |",
             "|---|---|---|---|---|---|"]
    lines += [row(s) for s in statuses]
    lines += ["", ("The objectives applied the same config: judged on each, the verdict is "
                   "read from that objective's figure." if same else
                   "The objectives applied different configs."),
              "model-analyzer's infer/J is perf_analyzer's throughput over the GPU's mean power "
              "in that measurement; the bench's is Triton's inference count over the energy "
              "counter's increase across each repeat's whole span (warm-up and gaps included), "
              "so the two differ; each is compared only with its own kind."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("statuses", type=Path, nargs="+")
    p.add_argument("--command", required=True, help="the commands that produced the statuses")
    p.add_argument("--where", required=True, help="the machine and date, in words")
    p.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    a = p.parse_args(argv)
    text = section([json.loads(s.read_text()) for s in a.statuses], a.command, a.where)
    print(text)
    if a.write:
        BENCHMARKS.write_text(replace_section(BENCHMARKS.read_text(), text, HEADING))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
