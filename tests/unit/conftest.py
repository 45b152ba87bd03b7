"""Fixtures shared by the unit tests."""
import pytest


@pytest.fixture
def artifacts(tmp_path):
    """An export stage's output directory, as far as the repo stage reads it."""
    art = tmp_path / "artifacts"
    art.mkdir()
    (art / "model.onnx").write_bytes(b"onnx bytes are copied, not read")
    return art
