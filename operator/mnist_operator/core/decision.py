"""What one reconcile pass knows and what it decides: ``Pass`` (the resource, its
parsed spec, what exists, the clock, the substrate), ``Acts`` (what one part of
the pass asks for) and ``Decision`` (the answer the substrate carries out). Pure."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mnist_operator.api.spec import MnistServingSpec
from mnist_operator.api.vocabulary import LABEL_INSTANCE, RETRY_ANNOTATION, WORK_DIR
from mnist_operator.core import accuracy, builders, refusals
from mnist_operator.core.children import meta
from mnist_operator.core.pipeline import CONFIRM, Endpoints, Layout, Step, plan
from mnist_operator.core.status import one_line, parse_timestamp

#: serve's record while analyze holds the GPU, and while Triton comes back after it
PAUSED, SCALING_BACK = "PausedForAnalysis", "ScalingBack"
#: serving.stopAfterBenchmark: Triton scaled to 0 once every stage finished
STOPPED = "StoppedAfterBenchmark"

#: Look again this soon while waiting for a deleted child to go away.
DELETION_POLL_SECONDS = 2
#: How many attempt numbers to try when a Job carries no attempt label.
MAX_ATTEMPTS_SCANNED = 21


@dataclass(frozen=True)
class Event:
    type: str        # Normal | Warning
    reason: str      # CamelCase
    message: str     # one line


@dataclass
class Decision:
    create: list[dict] = field(default_factory=list)   # create; "already exists" is fine
    update: list[dict] = field(default_factory=list)   # replace the live object's spec
    delete: list[dict] = field(default_factory=list)   # {apiVersion, kind, name, namespace}
    status: dict = field(default_factory=dict)         # the whole new status
    events: list[Event] = field(default_factory=list)
    requeue_after: int | None = None                   # seconds; None: wait for a change


def name_conflict(live: dict | None, desired: dict) -> str | None:
    """Why ``desired`` cannot be created when its name is taken (409): the
    live object is not ours (another instance label, or none). None when the
    live object is this resource's own child, or is gone."""
    if live is None:
        return None
    want = (meta(desired).get("labels") or {}).get(LABEL_INSTANCE)
    have = (meta(live).get("labels") or {}).get(LABEL_INSTANCE)
    if want is None or have == want:
        return None
    return (f"{desired.get('kind')} {meta(desired).get('name')} already exists and is not this "
            f"resource's ({LABEL_INSTANCE}={have or 'unset'}): rename or delete it")



def clean(value: Any) -> Any:
    """Status holds ints, strings, bools, lists and maps: never floats."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def trim_result(parsed: dict | None) -> dict:
    """The stage-specific fields of a result (state/reason/message live beside it)."""
    return clean({k: v for k, v in (parsed or {}).items()
                   if k not in ("stage", "state", "reason", "message")})




@dataclass(frozen=True)
class Substrate:
    """Where the pipeline runs, as far as a decision depends on it."""
    layout: Layout         # the work directory as every stage sees it
    endpoints: Endpoints   # how the steps after serve reach Triton
    device: str            # the train and export stages' --device
    #: Serving and analyze's own Triton share one machine's cores (a local run):
    #: serving pauses for analyze even without GPUs.
    one_machine: bool = False


def cluster_substrate(cr: dict, spec: MnistServingSpec) -> Substrate:
    """Pods with the model volume at /work, Triton behind its Service."""
    return Substrate(Layout(WORK_DIR), builders.endpoints(cr),
                     "cuda" if spec.training.gpus > 0 else "cpu")




# --------------------------------------------------------------------------- one pass
@dataclass(frozen=True)
class Pass:
    """What one pass reads: the resource, its spec, its children, the clock."""
    cr: dict
    spec: MnistServingSpec
    now: datetime
    substrate: Substrate
    jobs: list[dict]
    pods: list[dict]
    deployment: dict | None
    service: dict | None
    pvc: dict | None
    account: dict | None                # the pods' ServiceAccount
    job_events: dict[str, list[dict]]   # Job name -> its FailedCreate events
    nodes: dict[str, dict]              # node name -> its GPU labels (nodes the pods ran on)
    old: dict                           # the status written last time
    gen: int
    retry_token: str | None
    refused: dict[str, dict]            # creates refused before, still current
    resume: bool                        # a failed step starts over (new generation or token)

    @classmethod
    def of(cls, cr: dict, spec: MnistServingSpec, observed: dict, now: datetime,
           substrate: Substrate) -> "Pass":
        old = cr.get("status") or {}
        gen = meta(cr).get("generation") or 0
        token = (meta(cr).get("annotations") or {}).get(RETRY_ANNOTATION)
        old_gen = old.get("observedGeneration")
        return cls(cr, spec, now, substrate, list(observed.get("jobs") or []),
                   list(observed.get("pods") or []), observed.get("deployment"),
                   observed.get("service"), observed.get("pvc"), observed.get("account"),
                   observed.get("job_events") or {}, observed.get("nodes") or {}, old, gen, token,
                   refusals.carried(old, gen, token),
                   (old_gen is not None and old_gen != gen)
                   or (token is not None and token != old.get("retryToken")))

    @property
    def old_stages(self) -> dict[str, dict]:
        return self.old.get("stages") or {}

    def plan(self, updated: dict[str, dict] | None = None) -> list[Step]:
        """The plan given the recorded stages, or these with the ``updated`` records
        of steps whose stage replans (analyze, confirm)."""
        return plan_of(self.spec, self.substrate, {**self.old_stages, **(updated or {})})


def plan_of(spec: MnistServingSpec, substrate: Substrate, stages: dict[str, dict]) -> list[Step]:
    """The steps for ``spec`` on ``substrate`` given the recorded ``stages``: the closed
    loop's follow a finished analyze (and, with an SLO, the candidates' confirmation),
    less the models the accuracy guard flags."""
    return plan(spec, substrate.layout, substrate.endpoints, device=substrate.device,
                analyzed=stages.get("analyze"), confirmed=stages.get(CONFIRM),
                below_tolerance=accuracy.below_tolerance(stages, spec.accuracy_tolerance))


@dataclass
class Acts:
    """What one decision adds to the pass's Decision, merged in pass order."""
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue: int | None = None   # seconds until a pass must look again
    held: list[dict] = field(default_factory=list)   # creates withheld: refused before

    def __add__(self, other: "Acts") -> "Acts":
        sooner = [r for r in (self.requeue, other.requeue) if r is not None]
        return Acts(self.create + other.create, self.update + other.update,
                    self.delete + other.delete, self.events + other.events,
                    min(sooner) if sooner else None, self.held + other.held)


def event(type_: str, reason: str, message: str) -> Acts:
    return Acts(events=[Event(type_, reason, one_line(message))])


def look_again(seconds: float) -> Acts:
    return Acts(requeue=max(1, int(math.ceil(seconds))))


def held_back(p: Pass, obj: dict) -> Acts | None:
    """A create refused before that still waits for its retry time (look again
    then); None when it may be tried now."""
    entry = refusals.withheld(p.refused, obj, p.now)
    if entry is None:
        return None
    return Acts(held=[obj]) + look_again(
        (parse_timestamp(entry["retryTime"]) - p.now).total_seconds())


@dataclass(frozen=True)
class Serving:
    """The one Triton Deployment of a pass: the serve step it serves and its state."""
    step: str                   # serve, or serve-tuned once the closed loop applies
    want: dict                  # the Deployment that step builds
    available: bool
    counts: tuple[int, int]     # (ready, wanted) replicas
    resuming: bool = False      # scaling back after a pause for analyze
    paused_by: str = ""         # scaled to 0 while this stage (analyze, confirm) runs its own Triton
    stopped: bool = False       # scaled to 0 after every stage (serving.stopAfterBenchmark)

    @property
    def paused(self) -> bool:
        return bool(self.paused_by)


