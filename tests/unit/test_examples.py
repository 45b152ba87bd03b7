"""Every example under examples/ is a resource the local run (and so the API
server's schema, which parse_spec mirrors) accepts, read the way the local run
reads it."""
from __future__ import annotations

from pathlib import Path

import pytest

from mnist_operator.local import runner, sweep

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_is_accepted_as_the_local_run_reads_it(path):
    text = path.read_text()
    if runner.is_sweep(text):
        assert sweep.sweep_resource(text, str(path))["spec"]["axes"]
    else:
        name, spec = runner.load_resource(text, str(path))
        assert name and spec.benchmark.perf_analyzer.protocols
