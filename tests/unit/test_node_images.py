"""The pure parts of tests/harness/node/images.py: deterministic layers, the one-pass
OCI archive, build-context hashing, content tags. No root, network or containerd."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest

from tests.harness.node import images


def _tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "sub" / "tool").write_text("#!/bin/sh\n")
    (root / "pkg" / "sub" / "tool").chmod(0o750)
    (root / "pkg" / "link").symlink_to("mod.py")
    os.link(root / "pkg" / "mod.py", root / "pkg" / "same.py")
    return root / "pkg"


def _layer_bytes(src: Path) -> bytes:
    out = io.BytesIO()
    images.write_layer(out, images._tree(src, "usr/lib/pkg"))
    return out.getvalue()


def test_layer_is_deterministic_and_ignores_mtime_owner_and_non_exec_mode_bits(tmp_path):
    src = _tree(tmp_path / "a")
    first = _layer_bytes(src)
    assert _layer_bytes(src) == first
    os.utime(src / "mod.py", (1, 1))
    (src / "sub").chmod(0o700)
    (src / "sub" / "tool").chmod(0o700)   # still executable: still 0755
    assert _layer_bytes(src) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members)
    assert members["usr/lib/pkg/sub/tool"].mode == 0o755 and members["usr/lib/pkg/mod.py"].mode == 0o644
    assert {m.uid for m in members.values()} == {0} and {m.mtime for m in members.values()} == {images.EPOCH}
    assert members["usr/lib/pkg/link"].issym() and members["usr/lib/pkg/link"].linkname == "mod.py"
    assert members["usr/lib/pkg/same.py"].islnk() and members["usr/lib/pkg/same.py"].linkname == "usr/lib/pkg/mod.py"


def test_layer_changes_with_content_names_and_exec_bit(tmp_path):
    base = _layer_bytes(_tree(tmp_path / "a"))
    changed = _tree(tmp_path / "b")
    (changed / "mod.py").write_text("x = 2\n")
    assert _layer_bytes(changed) != base
    renamed = _tree(tmp_path / "c")
    (renamed / "sub" / "tool").rename(renamed / "sub" / "tool2")
    assert _layer_bytes(renamed) != base
    not_exec = _tree(tmp_path / "d")
    (not_exec / "sub" / "tool").chmod(0o644)
    assert _layer_bytes(not_exec) != base


def test_preserving_entries_keep_mode_and_mtime(tmp_path):
    f = tmp_path / "shadow"
    f.write_text("root:*:1::::::\n")
    f.chmod(0o640)
    os.utime(f, (1000, 1000))
    out = io.BytesIO()
    images.write_layer(out, [images._Entry("etc/shadow", path=f, preserve=True)])
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        (member,) = tar.getmembers()
    assert (member.mode, member.mtime, member.uid) == (0o640, 1000, os.getuid())


def _read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_archive_names_blobs_by_digest_and_copies_them_by_range(tmp_path):
    layer = _layer_bytes(_tree(tmp_path / "src"))
    first = tmp_path / "one.tar"
    writer = images._ArchiveWriter(first)
    blob = writer.write_blob(lambda sink: sink.write(layer))
    manifest = writer.add_bytes(b'{"m": 1}')
    writer.finish(images._index(manifest, "localhost/x/y:t"))

    files = _read_archive(first)
    assert blob.digest == "sha256:" + hashlib.sha256(layer).hexdigest() and blob.size == len(layer)
    assert files[f"blobs/sha256/{blob.digest[7:]}"] == layer
    with open(first, "rb") as f:
        f.seek(blob.offset)
        assert f.read(blob.size) == layer
    index = json.loads(files["index.json"])
    assert index["manifests"][0]["digest"] == manifest.digest
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "localhost/x/y:t"
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

    second = tmp_path / "two.tar"
    writer = images._ArchiveWriter(second)
    copied = writer.copy_blob(first, blob)
    writer.finish(images._index(manifest, "localhost/x/y:t"))
    assert copied.digest == blob.digest and _read_archive(second)[f"blobs/sha256/{blob.digest[7:]}"] == layer


def test_tag_is_a_hash_of_layer_keys_and_config():
    layer = images._Layer(images._key("a"), "a", lambda scratch: [])
    other = images._Layer(images._key("b"), "b", lambda scratch: [])
    plan = images._Assembled([layer], {"Cmd": ["sh"]})
    assert plan.tag("x") == images._Assembled([layer], {"Cmd": ["sh"]}).tag("x")
    assert len(plan.tag("x")) == 16
    assert images._Assembled([other], {"Cmd": ["sh"]}).tag("x") != plan.tag("x")
    assert images._Assembled([layer], {"Cmd": ["bash"]}).tag("x") != plan.tag("x")
    assert plan.tag("y") != plan.tag("x")


def _context(root: Path) -> Path:
    (root / ".dockerignore").write_text("# allowlist\n*\n!pyproject.toml\n!operator/\n!jobs/\n"
                                        "**/__pycache__\n**/*.egg-info\n")
    (root / "Dockerfile").write_text("FROM x\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "notes.txt").write_text("not sent\n")
    for d in ("operator/pkg/__pycache__", "jobs/x.egg-info", "jobs/pkg/templates", ".venv/lib", "model_repo"):
        (root / d).mkdir(parents=True)
    (root / "operator/pkg/a.py").write_text("a\n")
    (root / "operator/pkg/__pycache__/a.pyc").write_bytes(b"\0")
    (root / "jobs/x.egg-info/PKG-INFO").write_text("x\n")
    (root / ".venv/lib/big").write_text("never walked\n")
    (root / "jobs/pkg/templates/model_repo").symlink_to("../../../model_repo")
    return root


def test_build_context_follows_dockerignore(tmp_path):
    ctx = images.build_context(_context(tmp_path))
    assert ctx == ["jobs/", "jobs/pkg/", "jobs/pkg/templates/", "jobs/pkg/templates/model_repo",
                   "operator/", "operator/pkg/", "operator/pkg/a.py", "pyproject.toml"]


def test_dockerignore_patterns_match_as_docker_does():
    rules = images._dockerignore("*\n!operator/\n**/__pycache__\n/docs/*.md\n!docs/keep.md\n")
    assert images._ignored("README.md", rules) and images._ignored(".git/config", rules)
    assert not images._ignored("operator/a/b.py", rules)
    assert images._ignored("operator/a/__pycache__/b.pyc", rules)
    assert images._ignored("docs/x.md", rules) and not images._ignored("docs/keep.md", rules)
    assert images._may_readmit("docs", rules) and not images._may_readmit(".venv", rules)


def test_context_digest_changes_only_with_what_the_build_reads(tmp_path):
    root = _context(tmp_path)
    before = images.context_digest(root)
    (root / "notes.txt").write_text("changed, but ignored\n")
    (root / "operator/pkg/__pycache__/a.pyc").write_bytes(b"\1")
    assert images.context_digest(root) == before
    (root / "operator/pkg/a.py").write_text("b\n")
    after_code = images.context_digest(root)
    assert after_code != before
    (root / "Dockerfile").write_text("FROM y\n")
    assert images.context_digest(root) != after_code


def test_pinned_closure_follows_requirements_extras_and_markers(tmp_path):
    def dist(name, version, *requires):
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
    dist("Top_Pkg", "1.0", "dep>=1", 'extra-dep; extra == "all"', 'win-only; sys_platform == "win32"',
         'old-py; python_version < "3.8"')
    dist("dep", "2.0", "leaf")
    dist("leaf", "3.0")
    dist("extra_dep", "4.0")
    assert images.pinned_closure(["top-pkg"], tmp_path) == {"dep": "2.0", "leaf": "3.0", "top-pkg": "1.0"}
    assert images.pinned_closure(["top-pkg[all]"], tmp_path)["extra-dep"] == "4.0"
    with pytest.raises(images.ImageBuildError, match="not installed"):
        images.pinned_closure(["absent"], tmp_path)


def test_pip_entries_place_modules_and_rewrite_shebangs_without_touching_the_cache(tmp_path):
    target = tmp_path / "target"
    (target / "bin").mkdir(parents=True)
    (target / "pkg").mkdir()
    (target / "pkg" / "__init__.py").write_text("")
    cached = tmp_path / "cache-script"
    cached.write_text("#!/work/main/.venv/bin/python\nimport pkg\n")
    os.link(cached, target / "bin" / "tool")   # uv hard-links from its cache
    names = {e.name: e for e in images._pip_entries(target)}
    assert set(names) == {"usr/local/bin/tool", f"{images.SITE_PACKAGES}/pkg",
                          f"{images.SITE_PACKAGES}/pkg/__init__.py"}
    assert (target / "bin" / "tool").read_text() == "#!/usr/bin/python3\nimport pkg\n"
    assert cached.read_text().startswith("#!/work/main/.venv/bin/python")


def _elf(segment_types: list[int]) -> bytes:
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 32, 64)                      # e_phoff
    struct.pack_into("<HH", header, 54, 56, len(segment_types))  # e_phentsize, e_phnum
    return bytes(header) + b"".join(struct.pack("<I", t) + bytes(52) for t in segment_types)


def test_static_elf_means_no_program_interpreter(tmp_path):
    for name, data, static in (("static", _elf([1, 1]), True), ("dynamic", _elf([6, 3, 1]), False),
                               ("script", b"#!/bin/sh\n" + bytes(80), False)):
        (tmp_path / name).write_bytes(data)
        assert images._static_elf(tmp_path / name) is static, name


def test_host_mirror_reads_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert images._host_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main contrib\n")
    assert images._host_mirror("bookworm", tmp_path) == "http://old.example/debian"
    with pytest.raises(images.ImageBuildError):
        images._host_mirror("trixie", tmp_path)


def test_dependencies_come_first_and_unknown_names_fail():
    wanted, order = images._with_dependencies(["sdk", "pause"])
    assert wanted == ["sdk", "pause"] and order == ["pause", "python-base", "sdk"]
    assert images._with_dependencies(None)[1] == list(images.ORDER)
    with pytest.raises(ValueError, match="unknown"):
        images._with_dependencies(["nope"])
