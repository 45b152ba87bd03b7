"""Shell scripts: shellcheck-clean (every script under scripts/ and hack/), and
the kind walkthrough refuses to start without its tools, naming the missing one."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from .tools import ROOT, require_tool

KIND_SCRIPT = ROOT / "hack" / "kind" / "create-cluster.sh"


def shell_scripts() -> list[Path]:
    found = []
    for top in ("scripts", "hack"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and (path.suffix == ".sh" or path.read_bytes()[:64].startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash"))):
                found.append(path)
    return found


def test_every_shell_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck")
    scripts = shell_scripts()
    assert KIND_SCRIPT in scripts and ROOT / "scripts" / "build-k8s.sh" in scripts
    out = subprocess.run([str(shellcheck), "-x", *map(str, scripts)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kind_script_names_the_missing_tool(tmp_path):
    # A PATH with bash and coreutils but none of docker/kind/nvkind/kubectl/helm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env", "grep", "sleep", "printf"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real.startswith("/"):
            (bin_dir / tool).symlink_to(real)
    out = subprocess.run([str(bin_dir / "bash"), str(KIND_SCRIPT)], capture_output=True, text=True, timeout=60,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "create-cluster: error: docker not found on PATH" in out.stderr, out.stderr


def test_kind_config_injects_all_gpus_into_the_worker():
    config = yaml.safe_load((ROOT / "hack" / "kind" / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker"]
    worker = config["nodes"][1]
    assert {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"} in worker["extraMounts"]
