"""Stage repo: write a Triton model repository from the model_repo/ templates.

    python -m mnist_jobs.repo --artifacts runs/demo/artifacts --out runs/demo/model_repo \
        --models onnx,tensorrt,bls --max-batch-size 128 --instances 1 --instance-kind auto \
        --preferred-batch-sizes 32,64 --max-queue-delay-us 100 [--cpu-only] \
        [--override mnist_onnx:instances=2,max_batch_size=64,preferred_batch_sizes=32,64]

``--override MODEL:key=value,...`` (repeatable) gives one model its own
instances, instance_kind, max_batch_size, preferred_batch_sizes and
max_queue_delay_us: the operator's closed loop writes the config
model-analyzer found best this way. A BLS model never batches more than the
model it calls accepts, so its max_batch_size is lowered to its downstream's.

Templates are jinja2 (``*.j2``). jinja2 is imported here only, lazily: it
ships with torch (a torch dependency), so it is in the NGC PyTorch image and
the project venv, but not in the tritonserver images; no other stage needs
it. Where the templates are found, in order: ``$MNIST_JOBS_TEMPLATES``;
``mnist_jobs/templates/model_repo`` next to this module (package data in a
wheel; in the source checkout a symlink to the top-level ``model_repo/``);
the top-level ``model_repo/`` of a source checkout.
"""
from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_jobs.lib.stage_cli import InputError, StageError, run_stage, stage_parser

MODELS = ("mnist_onnx", "mnist_trt", "mnist_pt", "mnist_bls")
ALIASES = {"onnx": "mnist_onnx", "tensorrt": "mnist_trt", "trt": "mnist_trt", "pytorch": "mnist_pt",
           "pt": "mnist_pt", "bls": "mnist_bls", **{m: m for m in MODELS}}
#: What mnist_bls forwards to, best first: the TensorRT engine, then TorchScript (on the GPU
#: even in the python-backend flavour), then ONNX.
BLS_DOWNSTREAM = ("mnist_trt", "mnist_pt", "mnist_onnx")
KINDS = {"auto": None, "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
#: The BLS model's name in the repository the seed walkthrough clones: a client written
#: for the seed asks for it, so mnist_bls is also served under it (one instance: it only
#: has to answer; the measurements use mnist_bls).
SEED_BLS_NAME = "mnist_custom"


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    candidates = []
    if os.environ.get("MNIST_JOBS_TEMPLATES"):
        candidates.append(Path(os.environ["MNIST_JOBS_TEMPLATES"]))
    candidates += [Path(__file__).parent / "templates" / "model_repo", here.parents[1] / "model_repo"]
    for c in candidates:
        if (c / "mnist_bls" / "config.pbtxt.j2").is_file():
            return c
    raise StageError("model repository templates not found (looked in "
                     + ", ".join(str(c) for c in candidates) + ")", reason="TemplatesNotFound")


def parse_models(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError("--models", "empty list; choose from onnx, tensorrt, pytorch, bls")
    out = []
    for n in names:
        if n not in ALIASES:
            raise InputError("--models", f"unknown model {n!r}; choose from onnx, tensorrt, pytorch, bls "
                             "(or mnist_onnx, mnist_trt, mnist_pt, mnist_bls)")
        if ALIASES[n] not in out:
            out.append(ALIASES[n])
    return out


def parse_int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(flag, f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise InputError(flag, "every size must be >= 1")
    return sorted(set(values))


#: --override keys and how each value is read.
OVERRIDE_KEYS = ("instances", "instance_kind", "max_batch_size", "preferred_batch_sizes",
                 "max_queue_delay_us")


def parse_override(text: str) -> tuple[str, dict[str, Any]]:
    """``MODEL:key=value,...`` -> (model, {key: value}). A token without ``=``
    continues the list before it (``preferred_batch_sizes=32,64``)."""
    flag = "--override"
    model_text, sep, body = text.partition(":")
    model = ALIASES.get(model_text.strip())
    if not sep or model is None:
        raise InputError(flag, f"expected MODEL:key=value,... with MODEL one of "
                               f"{', '.join(MODELS)}, got {text!r}")
    raw: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in body.split(",")):
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip()
            if key not in OVERRIDE_KEYS:
                raise InputError(flag, f"{model}: unknown key {key!r}; choose from "
                                       f"{', '.join(OVERRIDE_KEYS)}")
            raw[key] = [value.strip()]
        elif token and key == "preferred_batch_sizes":
            raw[key].append(token)
        elif token:
            raise InputError(flag, f"{model}: expected key=value, got {token!r}")
    if not raw:
        raise InputError(flag, f"{model}: no key=value given")
    out: dict[str, Any] = {}
    for key, values in raw.items():
        if key == "instance_kind":
            if values[0] not in KINDS:
                raise InputError(flag, f"{model}: instance_kind must be one of "
                                       f"{', '.join(sorted(KINDS))}, got {values[0]!r}")
            out[key] = values[0]
        elif key == "preferred_batch_sizes":
            out[key] = parse_int_list(f"{flag} {model}:preferred_batch_sizes", ",".join(values))
        else:
            try:
                out[key] = int(values[0])
            except ValueError:
                raise InputError(flag, f"{model}: {key} must be an integer, "
                                       f"got {values[0]!r}") from None
    return model, out


def parse_overrides(texts: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for text in texts:
        model, values = parse_override(text)
        out.setdefault(model, {}).update(values)
    return out


def _model_settings(base: dict[str, Any], override: dict[str, Any], model: str,
                    notes: list[str]) -> dict[str, Any]:
    """One model's batching and instances: the shared flags plus its override."""
    flag = "--override" if override else None
    s = {**base, **override}
    for key, least in (("max_batch_size", 1), ("instances", 1), ("max_queue_delay_us", 0)):
        if s[key] < least:
            raise InputError(f"{flag} {model}:{key}" if key in override else f"--{key.replace('_', '-')}",
                             f"must be >= {least}")
    too_big = [b for b in s["preferred_batch_sizes"] if b > s["max_batch_size"]]
    if too_big and override:
        # the shared preferred sizes may not fit a model's own smaller batch limit
        s["preferred_batch_sizes"] = [b for b in s["preferred_batch_sizes"]
                                      if b <= s["max_batch_size"]]
        notes.append(f"{model}: preferred batch sizes {too_big} dropped (above its "
                     f"max_batch_size {s['max_batch_size']})")
    elif too_big:
        raise InputError("--max-batch-size", f"{s['max_batch_size']} is smaller than the "
                         f"preferred batch size {max(too_big)} (--preferred-batch-sizes)")
    return s


def describe_override(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={'/'.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in sorted(values.items()))


def render_config(template_root: Path, model: str, context: dict[str, Any]) -> str:
    try:
        import jinja2
    except ImportError:
        raise StageError("the repo stage renders jinja2 templates and jinja2 is not installed "
                         "(pip install jinja2; it ships with torch)", reason="MissingDependency")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_root)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.get_template(f"{model}/config.pbtxt.j2").render(**context)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def write_seed_bls(root: Path, out: Path, context: dict) -> None:
    """mnist_bls once more under the seed's name, with one instance."""
    version = out / SEED_BLS_NAME / "1"
    version.mkdir(parents=True)
    (out / SEED_BLS_NAME / "config.pbtxt").write_text(
        render_config(root, "mnist_bls", dict(context, model_name=SEED_BLS_NAME)))
    shutil.copy2(root / "mnist_bls" / "model.py", version / "model.py")


@dataclass(frozen=True)
class RepoConfig:
    """One repository to write, parsed once and checked in one place: a refusal names
    its flag. ``overrides`` gives one model its own settings (the closed loop's best)."""
    artifacts: Path
    out: Path
    models: Sequence[str]
    max_batch_size: int
    instances: int
    instance_kind: str
    preferred_batch_sizes: Sequence[int]
    max_queue_delay_us: int
    cpu_only: bool = False
    ort_threads: int = 0
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _model_settings(self.shared, {}, "every model", [])  # the shared flags alone must be valid
        unknown = sorted(set(self.overrides) - set(self.models))
        if unknown:
            raise InputError("--override", f"{', '.join(unknown)} is not in --models")

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> RepoConfig:
        return cls(a.artifacts, a.out, parse_models(a.models), a.max_batch_size, a.instances,
                   a.instance_kind, parse_int_list("--preferred-batch-sizes", a.preferred_batch_sizes),
                   a.max_queue_delay_us, a.cpu_only, a.ort_threads, parse_overrides(a.override))

    @property
    def shared(self) -> dict[str, Any]:
        """The settings every model has unless overridden."""
        return dict(max_batch_size=self.max_batch_size, instances=self.instances,
                    instance_kind=self.instance_kind,
                    preferred_batch_sizes=list(self.preferred_batch_sizes),
                    max_queue_delay_us=self.max_queue_delay_us)


@dataclass(frozen=True)
class Selection:
    """Which models the repository serves, and why any asked for are not."""
    models: list[str]
    downstream: str | None                  # what mnist_bls forwards to, if it is served
    left_out: dict[str, str]
    notes: list[str]


def select_models(cfg: RepoConfig) -> Selection:
    artifacts = {"mnist_trt": ("model.plan", "no TensorRT engine"),
                 "mnist_pt": ("model.ts", "no TorchScript file")}
    selected, left_out, notes = list(cfg.models), {}, []
    for model, (name, missing) in artifacts.items():
        if model in selected and not (cfg.artifacts / name).is_file():
            selected.remove(model)
            left_out[model] = f"{missing} ({name} not in artifacts)"
    downstream = None
    if "mnist_bls" in selected:
        downstream = next((m for m in BLS_DOWNSTREAM if m in selected), "mnist_onnx")
        if downstream not in selected:
            selected.insert(0, downstream)
            notes.append(f"added {downstream}: mnist_bls calls it")
    selected.sort(key=MODELS.index)
    return Selection(selected, downstream, left_out, notes)


def settings_of(cfg: RepoConfig, chosen: Selection) -> dict[str, dict[str, Any]]:
    """Each served model's batching and instances, the BLS model fitted to its downstream."""
    own = {m: dict(cfg.overrides.get(m, {})) for m in chosen.models}
    downstream, notes = chosen.downstream, chosen.notes
    if downstream and "instances" in own[downstream] and "instances" not in own["mnist_bls"]:
        # each BLS instance is one stub forwarding to the downstream: with fewer of them
        # than the downstream has, the BLS model caps what the tuned downstream serves
        tuned = own[downstream]["instances"]
        own["mnist_bls"]["instances"] = tuned
        notes.append(f"mnist_bls: {tuned} instances, as many as {downstream} it forwards to")
    settings = {m: _model_settings(cfg.shared, own[m], m, notes) for m in chosen.models}
    if downstream and settings["mnist_bls"]["max_batch_size"] > settings[downstream]["max_batch_size"]:
        limit = settings[downstream]["max_batch_size"]
        settings["mnist_bls"] = _model_settings(
            cfg.shared, {**own["mnist_bls"], "max_batch_size": limit}, "mnist_bls", notes)
        notes.append(f"mnist_bls: max_batch_size lowered to {limit}, the max_batch_size of "
                     f"{downstream} it forwards whole batches to")
    return settings


#: What each model's version directory holds: (artifact, its name there), and the
#: python-backend model.py that serves it when the repository is --cpu-only.
MODEL_FILES = {"mnist_onnx": ("model.onnx", "model.onnx"),
               "mnist_trt": ("model.plan", "model.plan"),
               "mnist_pt": ("model.ts", "model.pt")}  # model.pt: the PyTorch backend's default


def write_model(cfg: RepoConfig, root: Path, model: str, context: dict[str, Any]) -> None:
    version = cfg.out / model / "1"
    version.mkdir(parents=True)
    (cfg.out / model / "config.pbtxt").write_text(render_config(root, model, context))
    if model in MODEL_FILES:
        source, name = MODEL_FILES[model]
        shutil.copy2(cfg.artifacts / source, version / name)
    if model == "mnist_bls" or (cfg.cpu_only and model != "mnist_trt"):
        shutil.copy2(root / model / "model.py", version / "model.py")
    if model == "mnist_bls":
        write_seed_bls(root, cfg.out, dict(context, instances=1))


def build_repository(cfg: RepoConfig) -> dict:
    if not (cfg.artifacts / "model.onnx").is_file():
        raise InputError("--artifacts", f"{cfg.artifacts / 'model.onnx'} not found "
                                        "(run the export stage first)")
    chosen = select_models(cfg)
    settings = settings_of(cfg, chosen)
    root = templates_dir()
    cfg.out.mkdir(parents=True, exist_ok=True)
    for model in (*MODELS, SEED_BLS_NAME):  # a stale model (an old mnist_trt) must not be served
        shutil.rmtree(cfg.out / model, ignore_errors=True)
    for model in chosen.models:
        s = settings[model]
        write_model(cfg, root, model, dict(s, instance_kind=KINDS[s["instance_kind"]],
                                           cpu_only=cfg.cpu_only, ort_threads=cfg.ort_threads,
                                           downstream=chosen.downstream))
    return describe_repository(cfg, chosen, settings)


def describe_repository(cfg: RepoConfig, chosen: Selection,
                        settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "modelRepo": str(cfg.out), "models": chosen.models, "maxBatchSize": cfg.max_batch_size,
        "instances": cfg.instances, "instanceKind": cfg.instance_kind,
        "preferredBatchSizes": list(cfg.preferred_batch_sizes),
        "maxQueueDelayUs": cfg.max_queue_delay_us, "cpuOnly": cfg.cpu_only,
    }
    if "mnist_onnx" in chosen.models:
        result["onnxBackend"] = ("python backend with ONNX Runtime (--cpu-only)" if cfg.cpu_only
                                 else "onnxruntime_onnx")
    if "mnist_pt" in chosen.models:
        result["pytorchBackend"] = ("python backend with torch (--cpu-only)" if cfg.cpu_only
                                    else "pytorch_libtorch")
    if chosen.downstream:
        result["blsDownstream"] = chosen.downstream
        result["aliases"] = {SEED_BLS_NAME: "mnist_bls"}
    if cfg.overrides:
        result["overrides"] = {m: describe_override(v) for m, v in sorted(cfg.overrides.items())}
        result["configs"] = {m: describe_override(settings[m]) for m in chosen.models
                             if settings[m] != cfg.shared}
    if chosen.left_out:
        result["leftOut"] = chosen.left_out
    if chosen.notes:
        result["notes"] = chosen.notes
    return result


#: The fields of a Succeeded result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "modelRepo": "path of the repository", "models": "the models it serves, in order",
    "maxBatchSize": "the shared max_batch_size", "instances": "the shared instance count",
    "instanceKind": "auto, cpu or gpu", "preferredBatchSizes": "the shared preferred sizes",
    "maxQueueDelayUs": "the shared dynamic-batching delay", "cpuOnly": "python-backend models",
    "onnxBackend": "what serves mnist_onnx", "pytorchBackend": "what serves mnist_pt",
    "blsDownstream": "the model mnist_bls forwards to",
    "aliases": "other names a model is served under (the seed's mnist_custom)",
    "overrides": "each --override as given", "configs": "each model's own settings, if not shared",
    "leftOut": "models asked for and not served, with why", "notes": "adjustments made, in words",
}


def parser():
    p = stage_parser("repo", "Write a Triton model repository (mnist_onnx, mnist_trt, mnist_pt, "
                             "mnist_bls).")
    p.add_argument("--artifacts", type=Path, required=True,
                   help="directory with model.onnx [model.plan] [model.ts]")
    p.add_argument("--out", type=Path, required=True, help="model repository to write")
    p.add_argument("--models", required=True,
                   help="comma list of onnx,tensorrt,pytorch,bls")
    p.add_argument("--max-batch-size", type=int, required=True)
    p.add_argument("--instances", type=int, required=True, help="instances per model")
    p.add_argument("--instance-kind", choices=sorted(KINDS), required=True,
                   help="auto leaves the kind to Triton (GPU when there is one)")
    p.add_argument("--preferred-batch-sizes", required=True, help="comma list, e.g. 32,64")
    p.add_argument("--max-queue-delay-us", type=int, required=True)
    p.add_argument("--cpu-only", action="store_true",
                   help="serve mnist_onnx (ONNX Runtime) and mnist_pt (torch) through the python "
                        "backend, for Triton builds without the onnxruntime and pytorch backends")
    p.add_argument("--ort-threads", type=int, default=0,
                   help="ONNX Runtime intra-op threads in the --cpu-only model (0 = ORT default)")
    p.add_argument("--override", action="append", default=[], metavar="MODEL:KEY=VALUE,...",
                   help="one model's own settings (repeatable), keys: " + ", ".join(OVERRIDE_KEYS)
                        + "; e.g. mnist_onnx:instances=2,max_batch_size=64")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("repo", parser(), lambda a: build_repository(RepoConfig.from_args(a)), argv)


if __name__ == "__main__":
    raise SystemExit(main())
