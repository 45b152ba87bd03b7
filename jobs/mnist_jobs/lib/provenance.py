"""What a measurement ran against, as the data plane sees it: the Triton
server's version, a hash of each model's config as served, and the versions of
the measuring tools. The control plane adds where it ran (node, image digests,
GPU) from the pods; together they are the environment fingerprint that
``mnist-serving compare`` groups rows by.

Every probe answers "unknown" rather than failing the stage: a number without
its environment is still a number, and the fingerprint says what is missing.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sysconfig
from pathlib import Path

from mnist_jobs.lib.triton import client_for, served_config

UNKNOWN = "unknown"


def _scalar(value) -> str:
    return "" if value in (None, "", 0, "0", [], {}) else str(value)


def serving_settings(config: dict) -> dict:
    """The settings of a served config that decide how it performs, the same
    whichever protocol read it (gRPC's JSON writes 64-bit numbers as strings and
    leaves defaults out; HTTP's does neither)."""
    c = config.get("config", config)
    groups = [{"count": _scalar(g.get("count")) or "1", "kind": _scalar(g.get("kind"))}
              for g in c.get("instance_group") or []]
    batching = c.get("dynamic_batching")
    out = {"backend": _scalar(c.get("backend")), "platform": _scalar(c.get("platform")),
           "max_batch_size": _scalar(c.get("max_batch_size")), "instance_group": groups,
           "dynamic_batching": None if batching is None else {
               "preferred_batch_size": [str(b) for b in batching.get("preferred_batch_size") or []],
               "max_queue_delay_microseconds":
                   _scalar(batching.get("max_queue_delay_microseconds"))},
           "parameters": {k: _scalar((v or {}).get("string_value"))
                          for k, v in sorted((c.get("parameters") or {}).items())}}
    return out


def config_hash(config: dict) -> str:
    """A served config's identity: the hash of its serving settings."""
    text = json.dumps(serving_settings(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def served(protocol: str, url: str, models: list[str]) -> dict:
    """Triton's version and each model's config hash, read from the server itself."""
    out: dict = {"triton": UNKNOWN, "configs": {m: UNKNOWN for m in models}}
    try:
        c = client_for(protocol, url)
        meta = c.get_server_metadata(as_json=True) if protocol == "grpc" else c.get_server_metadata()
        out["triton"] = str(meta.get("version") or UNKNOWN)
        for m in models:
            out["configs"][m] = config_hash(served_config(c, protocol, m))
    except Exception:   # the measurement already ran; say what could not be read
        pass
    return out


def tool_version(command: list[str], prefix: str = "") -> str:
    """The first line a tool prints for its version flag, less ``prefix``."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    line = next((l.strip() for l in (proc.stdout + proc.stderr).splitlines() if l.strip()), "")
    if proc.returncode != 0 or not line:
        return UNKNOWN
    return line.removeprefix(prefix).strip() if prefix else line


def perf_analyzer_version(perf_analyzer: str) -> str:
    return tool_version([perf_analyzer, "--version"], "Perf Analyzer Version")


def model_analyzer_version(model_analyzer: str) -> str:
    """Its package's version when ``model_analyzer`` is this interpreter's own script
    (``--version`` imports all of model-analyzer: seconds); else what it prints."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    if Path(model_analyzer).resolve().parent == scripts:
        try:
            return importlib.metadata.version("triton-model-analyzer")
        except importlib.metadata.PackageNotFoundError:
            pass
    return tool_version([model_analyzer, "--version"])


__all__ = ["UNKNOWN", "serving_settings", "config_hash", "served", "tool_version", "perf_analyzer_version",
           "model_analyzer_version"]
