"""The user-facing pages (README.md and the docs/ pages in readme.PAGES): the
README stays a five-minute read, every relative link leads somewhere, each
marked block lives in exactly one page, and the README's `make demo` output
is what the local runner's display code prints today."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mnist_operator.api.vocabulary import ACCURACY
from mnist_operator.core.summary import summarize
from mnist_operator.local import display
from mnist_operator.tools.render import render
from tests.harness.node.readme import PAGES, README

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: docs/ pages that are records, not part of PAGES (their blocks and commands are not read)
RECORDS = {"BENCHMARKS.md", "CONTRACT.md"}
MAX_README_LINES = 250
RESULTS_DEMO = Path(__file__).parent / "data" / "results-demo"


def _all_markdown() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, \
        f"README.md has {len(lines)} lines; move detail to a docs/ page (at most {MAX_README_LINES})"


def test_every_docs_page_is_a_user_facing_page_or_a_record():
    """A new docs/ page joins readme.PAGES, so its blocks and commands are read."""
    assert {p.name for p in DOCS.glob("*.md")} - RECORDS == {p.name for p in PAGES if p != README}
    assert all(p.exists() for p in PAGES)


# --------------------------------------------------------------------------- links
def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    out: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n, base = 1, slug
        while slug in out:   # repeated headings get -1, -2, ...
            slug, n = f"{base}-{n}", n + 1
        out.add(slug)
    return out


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", _all_markdown(), ids=lambda p: p.name)
def test_relative_links_lead_to_a_file_and_heading_that_exist(page):
    broken = []
    for link in _links(page.read_text()):
        if re.match(r"[a-z]+:", link):   # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_anchor_rule_matches_githubs():
    assert _anchors("## Closed loop: serve what model-analyzer found best\n## kind with a GPU\n") == \
        {"closed-loop-serve-what-model-analyzer-found-best", "kind-with-a-gpu"}


# --------------------------------------------------------------------------- marked blocks
def test_each_marked_block_is_in_exactly_one_page():
    where: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        begins = re.findall(r"<!-- ([\w-]+):begin\b", text)
        ends = re.findall(r"<!-- ([\w-]+):end -->", text)
        assert sorted(begins) == sorted(ends), f"{page.name}: unpaired markers {begins} / {ends}"
        for name in begins:
            where.setdefault(name, []).append(page.name)
    twice = {n: p for n, p in where.items() if len(p) != 1}
    assert not twice, twice
    # the blocks the tests and `make docs` read
    assert {"demo", "kubectl-get", "kind", "client-command", "reference", "troubleshooting"} <= set(where)
    assert where["reference"] == ["reference.md"] and where["demo"] == ["README.md"]


def test_the_readme_resource_is_one_the_operator_accepts():
    (yaml_text,) = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    kinds = {o["kind"] for o in render(yaml_text)}
    assert {"Job", "Deployment", "Service", "PersistentVolumeClaim"} <= kinds, kinds


# --------------------------------------------------------------------------- the demo output
def _demo_output() -> list[str]:
    block = re.search(r"<!-- demo:begin -->(.*?)<!-- demo:end -->", README.read_text(), re.S).group(1)
    return re.search(r"```\n(.*?)```", block, re.S).group(1).splitlines()


def _status_from(lines: list[str]) -> dict:
    """The status the README's demo output shows, read back from its text."""
    name, phase, workdir = re.fullmatch(r"(\S+): (\S+)  \(work dir (\S+)\)", lines[0]).groups()
    status: dict = {"name": name, "phase": phase, "workdir": workdir, "stages": {}, "conditions": []}
    perf: dict = {}
    analyzer: dict = {}
    section = ""
    for line in lines[1:]:
        if line and not line.startswith("  "):
            section = line.split(" (")[0]
            m = re.match(r"client accuracy \(.*?, (\d+) each; disagreements (\d+)\)", line)
            if m:
                status["clientAccuracy"] = {"samples": int(m[1]), "disagreements": int(m[2])}
            continue
        cells = line.split()
        if not cells or cells[0] == "model":   # a table's header: the display writes its own
            continue
        if section == "stages":
            m = re.fullmatch(r"  (\S+)\s+(\S+)\s+(\d+) s  (\S+)\s+([0-9a-f]{12})(?:  (.*))?", line)
            status["stages"][m[1]] = {"state": m[2], "durationSeconds": int(m[3]), "run": m[4],
                                      "fingerprint": m[5], **({"message": m[6]} if m[6] else {})}
        elif section == "client accuracy" and line.startswith("  accuracy guard: "):
            m = re.fullmatch(r"  accuracy guard: (\S+) \((\w+)\): (.*)", line)
            status["conditions"].append({"type": ACCURACY, "status": m[1], "reason": m[2], "message": m[3]})
        elif section == "client accuracy":
            status["clientAccuracy"][cells[0]] = dict(zip(cells[1::2], cells[2::2]))
        elif section == "perf_analyzer":
            model, protocol, best, p99, at, lowest, gain, fails = cells[:8]
            failures, points = fails.split("/")
            perf.setdefault(model, {})[protocol] = {
                "bestInferPerSec": best, "p99UsAtBest": round(float(p99) * 1000),
                "concurrencyAtBest": int(at.removeprefix("c=")), "inferPerSecAtLowest": lowest,
                "batchingGain": gain, "littleFailures": int(failures), "points": int(points),
                **({"telemetryAtBest": "no GPU"} if line.endswith("(no GPU)") else {})}
        elif section == "model-analyzer":
            keys = ("bestConfig", "throughput", "p99Ms", "concurrency", "instances",
                    "defaultThroughput", "bestOverDefault")
            analyzer[cells[0]] = dict(zip(keys, cells[1:]))
    status["benchmark"] = {"perfAnalyzer": perf, "modelAnalyzer": analyzer}
    return status


def test_the_readme_demo_output_is_what_the_display_prints():
    """Every line of the README's `make demo` output, redrawn by the local
    runner's display code from the values it shows: a change of the display's
    format (a header, a column) shows up here as a stale README."""
    shown = _demo_output()
    drawn = display.summary_lines(_status_from(shown), Path(shown[-1].removeprefix("status: ")))
    assert drawn == shown


def _headers(lines: list[str]) -> list[str]:
    """Section titles and table header lines, numbers masked."""
    keep = [line for line in lines if line and (not line.startswith("  ") or line.split()[0] == "model")]
    return [re.sub(r"\d+", "N", line) for line in keep]


def test_the_readme_demo_headers_are_those_of_a_real_status():
    """The same section titles and table headers as a status summarized from
    real stage results (tests/unit/data/results-demo), but for the model
    part, which the README leaves out (and says so)."""
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS_DEMO.glob("*.json"))}
    stages = {step: {"state": r["state"], "fingerprint": r["fingerprint"],
                     "durationSeconds": r.get("durationSeconds", 0), "run": "ran"}
              for step, r in results.items()}
    status = {"name": "demo", "phase": "Ready", "workdir": "runs/demo", "stages": stages,
              **summarize(results)}
    real = display.summary_lines(status, Path("runs/demo/status.json"))
    left_out = {"model", "measured in (environment)"}
    assert [h for h in _headers(real) if h not in left_out] == _headers(_demo_output())
