"""The resource reference (docs/reference.md) is generated from the spec model and must not drift."""
from pathlib import Path

from mnist_operator.tools import reference
from mnist_operator.api import spec

ROOT = Path(__file__).resolve().parents[2]


def test_docs_reference_matches_the_spec_model():
    page = (ROOT / "docs" / "reference.md").read_text()
    assert reference.splice(page, reference.markdown()) == page, \
        "docs/reference.md is stale: run `make docs`"


def test_every_spec_field_has_a_row_with_its_default():
    text = reference.markdown()
    assert "| `spec.training.epochs` | integer | `2` |" in text
    assert "| `spec.benchmark.perfAnalyzer.concurrency.end` | integer | `257` |" in text
    assert "`spec.tensorrt.optBatch`: must be <= maxBatch" in text
    # one row per leaf field of every section, none twice; then the sweep's own fields
    serving, _, sweep = text.partition("#### `MnistServingSweep`")
    rows = [line for line in serving.splitlines() if line.startswith("| `spec.")]
    assert len(rows) == len(set(rows)) == _leaf_count(spec.MnistServingSpec)
    assert [line.split("`")[1] for line in sweep.splitlines() if line.startswith("| `spec.")] == [
        "spec.template", "spec.axes", "spec.axes[].field", "spec.axes[].values",
        "spec.maxParallel", "spec.objective", "spec.costs"]


def _leaf_count(cls) -> int:
    import dataclasses
    import typing
    if cls is spec.Resources:   # one row per container: its four quantities share it
        return len(dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    return sum(_leaf_count(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else 1
               for f in dataclasses.fields(cls))


def test_splice_refuses_a_document_without_markers():
    import pytest
    with pytest.raises(ValueError, match="markers"):
        reference.splice("no markers here", "x")
