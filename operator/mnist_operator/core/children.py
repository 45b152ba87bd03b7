"""Reading a resource's children: what a Job, its pods and the Deployment say
happened. Pure: API objects (camelCase dicts) in, values out; reconcile
decides from them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mnist_operator.api.spec import parse_quantity
from mnist_operator.api.vocabulary import (FAILED, LABEL_COMPONENT, LABEL_FINGERPRINT, RUNNING,
                                           SKIPPED, SUCCEEDED)
from mnist_operator.core import refusals
from mnist_operator.core.status import one_line, parse_timestamp


def meta(obj: dict | None) -> dict:
    return (obj or {}).get("metadata") or {}


def terminating(obj: dict) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def object_ref(obj: dict) -> dict:
    m = meta(obj)
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "name": m.get("name"), "namespace": m.get("namespace")}


def object_fingerprint(obj: dict | None) -> str | None:
    """The fingerprint a child carries: on itself or on its pod template."""
    if not obj:
        return None
    template = meta((obj.get("spec") or {}).get("template"))
    for m in (meta(obj), template):
        for key in ("annotations", "labels"):
            fp = (m.get(key) or {}).get(LABEL_FINGERPRINT)
            if fp:
                return fp
    return None


def triton_pods(pods: list[dict]) -> list[dict]:
    return [p for p in pods if (meta(p).get("labels") or {}).get(LABEL_COMPONENT) == "triton"
            and not terminating(p)]


def gpu_of(labels: dict[str, str]) -> str:
    """A node's GPUs as GPU feature discovery labels them: product x count (memory MiB)."""
    product = labels.get("nvidia.com/gpu.product")
    if not product:
        return ""
    count, memory = labels.get("nvidia.com/gpu.count"), labels.get("nvidia.com/gpu.memory")
    return product + (f" x{count}" if count else "") + (f" ({memory} MiB)" if memory else "")


def ran_on(pods: list[dict], node_labels: dict[str, dict] | None = None) -> dict[str, Any]:
    """Where pods ran, as their status says: the node names, their GPUs (``node_labels``:
    node name -> GPU labels) and each container's image digest (what actually ran,
    whatever tag the spec named)."""
    nodes = sorted({(p.get("spec") or {}).get("nodeName") or "" for p in pods} - {""})
    images: dict[str, set[str]] = {}
    for pod in pods:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            if c.get("imageID"):
                images.setdefault(c["name"], set()).add(c["imageID"])
    out: dict[str, Any] = {}
    if nodes:
        out["node"] = ",".join(nodes)
    gpus = sorted({gpu_of((node_labels or {}).get(n) or {}) for n in nodes} - {""})
    if gpus:
        out["gpu"] = ",".join(gpus)
    if images:
        out["images"] = {name: ",".join(sorted(ids)) for name, ids in sorted(images.items())}
    return out


def pods_of_job(job: dict, pods: list[dict]) -> list[dict]:
    name = meta(job).get("name")
    uid = meta(job).get("uid")
    out = []
    for pod in pods:
        m = meta(pod)
        labels = m.get("labels") or {}
        owned = any(r.get("kind") == "Job" and (r.get("uid") == uid if uid else r.get("name") == name)
                    for r in m.get("ownerReferences") or [])
        if owned or name in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name")):
            out.append(pod)
    return out


#: Where the job controller writes an Indexed Job pod's index (annotation and label).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def completion_index(pod: dict) -> int | None:
    m = meta(pod)
    value = (m.get("annotations") or {}).get(COMPLETION_INDEX) \
        or (m.get("labels") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and str(value).isdigit() else None


def completions(job: dict) -> int:
    """Pods that must succeed for the Job to be complete (an Indexed Job's N)."""
    return int((job.get("spec") or {}).get("completions") or 1)


def result_pods(pods: list[dict]) -> list[dict]:
    """The pods whose termination message is the step's result: an Indexed
    Job's index 0 (the bench clients' aggregator), else every pod."""
    indexed = [p for p in pods if completion_index(p) is not None]
    return [p for p in indexed if completion_index(p) == 0] if indexed else pods


def terminated_states(pods: list[dict]) -> list[dict]:
    """Terminated states of the stage containers (not init containers), newest last."""
    states = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or \
                (cs.get("lastState") or {}).get("terminated")
            if term:
                states.append(term)
    return sorted(states, key=lambda t: t.get("finishedAt") or "")


#: Container waiting reasons that will not fix themselves soon: shown in
#: status (and one Warning event) while the Job waits for its deadline.
STUCK_CONTAINER_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError")


#: A pod that fits no node is only called Unschedulable (a Warning) after this long:
#: the scheduler says so for a moment while a node comes up or a taint goes, which
#: is no news. A pod that waits its turn (WaitingFor*) says so at once: that posts
#: no Warning, and it is what a user watching a full cluster wants to read.
UNSCHEDULABLE_GRACE_SECONDS = 60

#: Why an unschedulable pod waits when it is expected queuing, not a fault: its
#: claim is still binding, or every node that fits it is full (a GPU, cpu or
#: memory frees when a pod ends). Shown in the stage record, no Warning.
WAITING_FOR_VOLUME, WAITING_FOR_GPU, WAITING_FOR_RESOURCES = \
    "WaitingForVolume", "WaitingForGPU", "WaitingForResources"
QUEUED_REASONS = (WAITING_FOR_VOLUME, WAITING_FOR_GPU, WAITING_FOR_RESOURCES)
#: A Job whose pod a ResourceQuota refuses for now (the namespace's quota is full): the
#: job controller keeps trying on its own, so the step waits (one Normal event).
WAITING_FOR_QUOTA = "WaitingForQuota"
#: A pod that asks for more than the quota's hard limit: it can never be created.
EXCEEDS_QUOTA = "ExceedsQuota"
#: Every reason pod_blocker gives, and the quota's wait.
BLOCKED_REASONS = ("Unschedulable", *QUEUED_REASONS, *STUCK_CONTAINER_REASONS, WAITING_FOR_QUOTA)

# kube-scheduler's words (pkg/scheduler: volumebinding, preemption); its message reads
# "0/N nodes are available: <filter reasons>. preemption: 0/N nodes are available: <...>."
_UNBOUND_CLAIMS = "pod has unbound immediate PersistentVolumeClaims"
_PREEMPTION = " preemption: "
#: Preemption's word for a node that no eviction could make fit (the request is more than
#: the node has, a taint, a selector): only such nodes left means the pod fits nowhere.
_NOT_HELPFUL = "Preemption is not helpful for scheduling"


def unschedulable_reason(message: str) -> str:
    """Why the scheduler cannot place a pod, from its PodScheduled message: a
    queued reason when the pod would fit once a claim binds or a node frees up,
    else Unschedulable (no node can ever take it as it is)."""
    filters, _, preemption = message.partition(_PREEMPTION)
    if _UNBOUND_CLAIMS in filters:
        return WAITING_FOR_VOLUME
    if "Insufficient " not in filters:
        return "Unschedulable"
    _, colon, histogram = preemption.partition("nodes are available: ")
    if colon and all(item.split(" ", 1)[-1] == _NOT_HELPFUL
                     for item in histogram.rstrip(".").split(", ")):
        return "Unschedulable"   # more than any node has: freeing one would not help
    return WAITING_FOR_GPU if "Insufficient nvidia.com/gpu" in filters else WAITING_FOR_RESOURCES


def _unschedulable(pod: dict) -> dict | None:
    """The pod's PodScheduled condition when the scheduler reports it Unschedulable."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" \
                and c.get("reason") == "Unschedulable":
            return c
    return None


def _grace_left(cond: dict, now: datetime | None) -> float:
    """Seconds until an Unschedulable condition is news (0: it is; ``now`` None: always)."""
    if now is None:
        return 0.0
    since = parse_timestamp(cond.get("lastTransitionTime"))
    if since is None:
        return float(UNSCHEDULABLE_GRACE_SECONDS)
    return max(0.0, UNSCHEDULABLE_GRACE_SECONDS - (now - since).total_seconds())


def _scheduler_says(cond: dict) -> tuple[str, str]:
    message = cond.get("message") or "no node fits the pod"
    return unschedulable_reason(message), one_line(message)


def pod_blocker(pods: list[dict], now: datetime | None = None) -> tuple[str, str] | None:
    """Why a stage pod is not running yet, when it is stuck: (Reason, message)
    for an unschedulable pod (the reason from unschedulable_reason: a queued one
    at once, Unschedulable after UNSCHEDULABLE_GRACE_SECONDS, or at once when
    ``now`` is None) or a container that cannot start; None otherwise."""
    for pod in pods:
        cond = _unschedulable(pod)
        if cond is not None:
            reason, message = _scheduler_says(cond)
            if reason in QUEUED_REASONS or _grace_left(cond, now) == 0:
                return reason, message
        st = pod.get("status") or {}
        for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_CONTAINER_REASONS:
                return waiting["reason"], one_line(
                    f"container {cs.get('name')}: {waiting.get('message') or waiting['reason']}")
    return None


def unschedulable_news_in(pods: list[dict], now: datetime) -> float | None:
    """Seconds until a pod that fits no node has waited out its grace: the pass
    looks again then, not at the next event, which may be minutes away (the
    scheduler rewrites nothing while nothing changes). None when no pod waits so."""
    left = [_grace_left(c, now) for c in map(_unschedulable, pods)
            if c is not None and _scheduler_says(c)[0] == "Unschedulable"]
    return min((s for s in left if s > 0), default=None)


def parse_result(message: str | None) -> dict | None:
    """The stage result JSON from a termination message, if it is one."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("state") else None


@dataclass(frozen=True)
class JobOutcome:
    state: str                      # Running | Succeeded | Skipped | Failed
    reason: str = ""
    message: str = ""
    result: dict | None = None
    start: str | None = None
    finish: str | None = None
    pods_refused: bool = False      # the API server refused every pod the Job tried
    retry: bool = True              # False: another attempt would be refused the same way


# The ResourceQuota admission plugin's words (k8s.io/apiserver, plugin/resourcequota):
# "exceeded quota: <quota>, requested: <list>, used: <list>, limited: <list>", each list
# "<resource>=<quantity>" items sorted by resource and joined by "," (no spaces), naming
# only the resources that would go over.
_QUOTA_REFUSAL = re.compile(r"exceeded quota: (?P<quota>[^,\s]+), requested: (?P<requested>\S+), "
                            r"used: (?P<used>\S+), limited: (?P<limited>\S+)")


@dataclass(frozen=True)
class QuotaRefusal:
    """A pod the ResourceQuota admission plugin refused: the quota and, per resource
    that would go over, what the pod requests, what is used and the hard limit."""
    quota: str
    requested: dict[str, str]
    used: dict[str, str]
    limited: dict[str, str]

    def beyond_hard(self) -> list[str]:
        """The resources the pod alone asks more of than the quota allows in all: no
        amount of waiting frees that much ("r=4 > hard 2" for each)."""
        out = []
        for name, asked in self.requested.items():
            want, hard = parse_quantity(asked), parse_quantity(self.limited.get(name, ""))
            if want is not None and hard is not None and want > hard:
                out.append(f"{name}={asked} (the quota allows {self.limited[name]})")
        return out


def _resource_list(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.rstrip(".").split(",") if "=" in item)


def quota_refusal(message: str) -> QuotaRefusal | None:
    """The quota refusal in an API message (a FailedCreate event's, a create's), if it is one."""
    m = _QUOTA_REFUSAL.search(message or "")
    if m is None:
        return None
    return QuotaRefusal(m["quota"], _resource_list(m["requested"]), _resource_list(m["used"]),
                        _resource_list(m["limited"]))


def pods_refused(job: dict, pods: list[dict], failed_creates: list[dict] | None
                 ) -> JobOutcome | None:
    """A Job that has no pod because the API server refuses them: the job controller's
    FailedCreate events say why (the newest counts).

    * A quota that is full for now: the step waits (Running, WaitingForQuota, the
      quota's message). The job controller retries the pod by itself, with a backoff
      of at most a minute, so the pod comes once the quota frees; no attempt is spent.
    * A pod that asks for more than the quota's hard limit can never be created:
      a failure at once, not retried (ExceedsQuota, naming the quota and the request).
    * Anything else (Pod Security, a missing ServiceAccount): it would only retry until
      its deadline, hours away: a failed attempt now, ended when the operator ends it
      (no finish time of its own: the retry backoff counts from this pass, not from a
      refusal seen seconds later)."""
    if pods or not failed_creates:
        return None
    newest = max(failed_creates, key=lambda e: e.get("lastTimestamp") or "")
    text = newest.get("message") or "the job controller could not create its pod"
    start = (job.get("status") or {}).get("startTime")
    quota = quota_refusal(text)
    if quota is None and "exceeded quota" in text:   # words this version cannot read: waiting
        quota = QuotaRefusal("", {}, {}, {})
    if quota is not None:
        beyond = quota.beyond_hard()
        if beyond:
            return JobOutcome(FAILED, EXCEEDS_QUOTA, one_line(
                f"its pod asks for more than ResourceQuota {quota.quota} allows in all: "
                f"{', '.join(beyond)}; lower the request or raise the quota's hard limit, then "
                f"retry (the API server said: {text})"),
                start=start, pods_refused=True, retry=False)
        which = f"ResourceQuota {quota.quota}" if quota.quota else "a ResourceQuota"
        return JobOutcome(RUNNING, WAITING_FOR_QUOTA, one_line(
            f"its pod waits for room in {which} (the job controller retries by itself): "
            f"{text}"), start=start)
    reason = refusals.classify(403, "FailedCreate", text)
    return JobOutcome(FAILED, reason, one_line(f"the API server refused its pod: {text}"),
                      start=start, pods_refused=True)


def job_outcome(job: dict, pods: list[dict], now: datetime | None = None,
                failed_creates: list[dict] | None = None) -> JobOutcome:
    """What a stage Job says happened: its conditions, its pods' exit codes,
    the result JSON the stage wrote as its termination message, and the job
    controller's FailedCreate events when it has no pod at all."""
    refused = pods_refused(job, pods, failed_creates)
    if refused is not None:
        return refused
    st = job.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or [] if c.get("status") == "True"}
    terms = terminated_states(pods)
    parsed = next((r for r in (parse_result(t.get("message"))
                               for t in reversed(terminated_states(result_pods(pods)))) if r), None)
    failed_term = next((t for t in reversed(terms) if t.get("exitCode", 0) != 0), None)
    start = st.get("startTime")
    complete = "Complete" in conds or "SuccessCriteriaMet" in conds \
        or (st.get("succeeded") or 0) >= completions(job)
    failed = "Failed" in conds or "FailureTarget" in conds or (
        failed_term is not None and not st.get("active") and not complete)
    if complete and not failed:
        state = parsed.get("state") if parsed and parsed.get("state") in (SUCCEEDED, SKIPPED) \
            else SUCCEEDED
        finish = st.get("completionTime") or (terms[-1].get("finishedAt") if terms else None)
        return JobOutcome(state, (parsed or {}).get("reason", ""), (parsed or {}).get("message", ""),
                          parsed, start, finish)
    if failed:
        cond = conds.get("Failed") or conds.get("FailureTarget") or {}
        finish = (failed_term or {}).get("finishedAt") or cond.get("lastTransitionTime")
        # the result's own words: the aggregator's, or (it was stopped) the failed client's
        for said in (parsed, parse_result((failed_term or {}).get("message"))):
            if said and said.get("state") == FAILED:
                return JobOutcome(FAILED, said.get("reason") or "StageFailed",
                                  said.get("message") or "", said, start, finish)
        if failed_term is not None:
            code = failed_term.get("exitCode")
            reason = failed_term.get("reason") or "Error"
            if reason == "Error":
                reason = "ExitCode"
            text = failed_term.get("message") or ""
            return JobOutcome(FAILED, reason, one_line(f"exit code {code}" + (f": {text}" if text
                                                                                else "")),
                              None, start, finish)
        return JobOutcome(FAILED, cond.get("reason") or "JobFailed",
                          cond.get("message") or "the Job failed", None, start, finish)
    blocker = pod_blocker(pods, now)
    if blocker:
        return JobOutcome(RUNNING, blocker[0], blocker[1], start=start)
    return JobOutcome(RUNNING, start=start)


def replicas(dep: dict) -> int:
    return int((dep.get("spec") or {}).get("replicas", 1))


def replica_failure(dep: dict | None) -> tuple[str, str] | None:
    """(Reason, message) when the Deployment's ReplicaSet cannot create pods
    (its ReplicaFailure condition: Pod Security, a quota, ...); None otherwise."""
    for c in ((dep or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            text = c.get("message") or c.get("reason") or "pods cannot be created"
            return (refusals.classify(403, c.get("reason") or "FailedCreate", text),
                    one_line(f"the API server refused a Triton pod: {text}"))
    return None


def deployment_readiness(dep: dict) -> tuple[bool, int, int]:
    """(available, ready replicas, wanted replicas) of a Deployment whose
    rollout the controller has observed."""
    st = dep.get("status") or {}
    want = replicas(dep)
    ready = int(st.get("availableReplicas") or 0)
    seen = int(st.get("observedGeneration") or 0) >= int(meta(dep).get("generation") or 0)
    updated = int(st.get("updatedReplicas") or 0) >= want
    return seen and updated and ready >= want and want > 0, ready, want


__all__ = ["meta", "terminating", "COMPLETION_INDEX", "completion_index", "completions", "result_pods", "object_ref", "object_fingerprint", "pods_of_job", "triton_pods", "ran_on", "gpu_of", "terminated_states", "STUCK_CONTAINER_REASONS", "UNSCHEDULABLE_GRACE_SECONDS", "QUEUED_REASONS", "BLOCKED_REASONS", "unschedulable_reason", "pod_blocker", "unschedulable_news_in", "parse_result", "JobOutcome", "QuotaRefusal", "quota_refusal", "WAITING_FOR_QUOTA", "EXCEEDS_QUOTA", "pods_refused", "job_outcome", "replicas", "replica_failure", "deployment_readiness"]
