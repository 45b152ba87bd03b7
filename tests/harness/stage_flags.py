"""A stage's flags as the operator passes them, for tests that run a stage by hand,
and the check that its result carries only the fields docs/CONTRACT.md names.

The spec model is the one home of every default, and a stage CLI requires each flag
the spec decides (tests/unit/test_contract.py). A test that runs a stage therefore
starts from what the operator would pass for a resource with every default, minus
where files and endpoints are, and adds its own flags after: argparse keeps the last
value of a repeated flag, so a test's own choice wins.
"""
from __future__ import annotations

import importlib
from pathlib import PurePosixPath
from typing import Any

from mnist_jobs.lib.stage_cli import COMMON_RESULT_FIELDS
from mnist_operator.api.spec import parse_spec
from mnist_operator.core import pipeline

#: Flags that say where files and endpoints are, not what to do: the builders choose
#: them from the work directory's layout, and a test from its own temporary one.
WHERE = {"--data-dir", "--http-port", "--grpc-port", "--metrics-port", "--host", "--http-url",
         "--grpc-url", "--metrics-url", "--url", "--out", "--checkpoint", "--onnx", "--profile",
         "--artifacts", "--model-repo"}


#: A stage the plan holds only after an analysis found a better config: planned for a
#: resource with every default but this, once its analyze step has found one.
AFTER_ANALYSIS = {"confirm": {"benchmark": {"slo": {"p99Ms": 100},
                                            "modelAnalyzer": {"applyBest": True}}}}
FOUND = {"mnist_onnx": {"bestConfig": "mnist_onnx_config_1", "concurrency": 1,
                        "apply": {"instances": 2}}}


def _planned(stage: str, spec: dict[str, Any] | None) -> list[pipeline.Step]:
    parsed = parse_spec(spec or AFTER_ANALYSIS.get(stage, {}))
    lay = pipeline.Layout(PurePosixPath("/work"))
    steps = pipeline.plan(parsed, lay)
    if stage in AFTER_ANALYSIS:
        analyze = next(s for s in steps if s.name == "analyze")
        steps = pipeline.plan(parsed, lay, analyzed={
            "state": "Succeeded", "fingerprint": analyze.fingerprint, "models": FOUND})
    return steps


def spec_flags(stage: str, spec: dict[str, Any] | None = None) -> list[str]:
    """``stage``'s flags for a resource whose spec is ``spec`` (every default when None)."""
    argv = next(s for s in _planned(stage, spec) if s.stage == stage).params.argv()
    out: list[str] = []
    for i, word in enumerate(argv):
        if word.startswith("--") and word not in WHERE:
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            out += [word] if value is None else [word, value]
    return out


#: What a local run adds to a stage's result when it records it.
RECORDED = {"fingerprint", "startTime", "completionTime"}


def undocumented(result: dict[str, Any], stage: str | None = None) -> set[str]:
    """The fields of a stage result (or of what its body returned, naming ``stage``)
    that docs/CONTRACT.md does not name."""
    own = importlib.import_module(f"mnist_jobs.{stage or result['stage']}").RESULT_FIELDS
    return set(result) - set(COMMON_RESULT_FIELDS) - set(own) - RECORDED
