"""Pure object builders: an MnistServing body (dict) and its parsed spec in,
Kubernetes manifests (plain dicts) out. No I/O, no Kubernetes client.

The operator's reconcile core, ``render`` and the tests all build objects
here, so what ``mnist-serving render`` prints is what the operator creates.

    desired_objects(cr)                    every object for a CR (render)
    build_pvc(cr, spec)                    the model volume (None with existingClaim)
    build_step_job(cr, spec, step, n)      one Job per step and attempt
    build_triton_deployment(cr, spec, s)   the Triton server (s = the serve step)
    build_triton_service(cr, spec)         ClusterIP in front of it
    build_runner_service_account(cr, spec) the pods' ServiceAccount (None when the spec names one)
    endpoints(cr)                          where later steps reach Triton
    child_name / job_name / labels         names and labels, deterministic
"""
from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from mnist_operator.api import spec as S
from mnist_operator.api.vocabulary import (ANNOTATION_FINGERPRINT, LABEL_ATTEMPT, LABEL_COMPONENT,
                                           LABEL_FINGERPRINT, LABEL_INSTANCE, LABEL_MANAGED_BY,
                                           LABEL_NAME, LABEL_STEP, WORK_DIR)
from mnist_operator.core import pipeline as P

API_VERSION = f"{S.GROUP}/{S.VERSION}"
APP = "mnist-serving"
MANAGED_BY = "mnist-serving-operator"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"

LAYOUT = P.Layout(WORK_DIR)
#: Where the init container puts the mnist_jobs package (the Dockerfile's `cp` line).
STAGES_DIR = "/mnt/stages"
STAGES_SOURCE = "/opt/mnist-serving/jobs/."
TERMINATION_LOG = "/dev/termination-log"
#: The bench clients' shared run name (bench --clients-run), from the Job's uid label.
CLIENTS_RUN_ENV = "MNIST_CLIENTS_RUN"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"

MAX_NAME = 63
_DNS_LABEL = re.compile(S.DNS_LABEL_PATTERN)


# --------------------------------------------------------------------------- names and labels
def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _sanitize(text: str) -> str:
    """Lowercase, every run of characters outside [a-z0-9-] becomes '-'."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def child_name(cr_name: str, part: str) -> str:
    """``<cr>-<part>`` as a DNS-1123 label (<= 63 chars).

    When the CR name is too long (or not a label, e.g. it has dots), it is
    shortened and a hash of the full name keeps two such CRs apart; ``part``
    is kept whole, so the step and attempt stay readable at the end.
    """
    part = _sanitize(part)
    plain = f"{cr_name}-{part}"
    if len(plain) <= MAX_NAME and _DNS_LABEL.match(plain):
        return plain
    tail = f"-{_short_hash(cr_name)}-{part}"
    head = _sanitize(cr_name)[:MAX_NAME - len(tail)].rstrip("-") or "x"
    return f"{head}{tail}"


def job_name(cr_name: str, step: P.Step, attempt: int) -> str:
    """``<cr>-<step>-<fingerprint[:6]>-<attempt>``: a restart finds the same Job
    (never a duplicate), a spec change makes a new one, a retry bumps attempt."""
    return child_name(cr_name, f"{step.name}-{step.fingerprint[:6]}-{attempt}")


def claim_name(cr: dict, spec: S.MnistServingSpec) -> str:
    return spec.storage.existing_claim or child_name(cr["metadata"]["name"], "model")


def triton_name(cr: dict) -> str:
    """The Deployment's and the Service's name. A Service name must be a DNS-1035
    label (it starts with a letter), so a resource named "1st" serves as mnist-1st-triton."""
    name = cr["metadata"]["name"]
    return child_name(name if name[:1].isalpha() else f"mnist-{name}", "triton")


def instance_label(cr_name: str) -> str:
    """The CR name as a label value (<= 63 chars; a hash keeps long names apart)."""
    if len(cr_name) <= MAX_NAME:
        return cr_name
    tail = f"-{_short_hash(cr_name)}"
    return cr_name[:MAX_NAME - len(tail)].rstrip("-.") + tail


def labels(cr: dict, component: str, step: P.Step | None = None) -> dict[str, str]:
    out = {
        LABEL_NAME: APP,
        LABEL_INSTANCE: instance_label(cr["metadata"]["name"]),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    if step is not None:
        out[LABEL_STEP] = step.name
        out[LABEL_FINGERPRINT] = step.fingerprint
    return out


def selector_labels(cr: dict, component: str) -> dict[str, str]:
    """The stable subset of labels a Deployment/Service selects on."""
    full = labels(cr, component)
    return {k: full[k] for k in (LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT)}


def owner_references(cr: dict) -> list[dict]:
    """The CR as controller owner; none before the API server gave it a uid
    (``render`` of a file), since an owner reference without one is invalid."""
    uid = cr["metadata"].get("uid")
    if not uid:
        return []
    return [{"apiVersion": cr.get("apiVersion", API_VERSION), "kind": S.KIND,
             "name": cr["metadata"]["name"], "uid": uid,
             "controller": True, "blockOwnerDeletion": True}]


def _metadata(cr: dict, name: str, component: str, step: P.Step | None = None,
              owned: bool = True) -> dict:
    md: dict[str, Any] = {"name": name, "namespace": namespace(cr),
                          "labels": labels(cr, component, step)}
    refs = owner_references(cr) if owned else []
    if refs:
        md["ownerReferences"] = refs
    return md


def namespace(cr: dict) -> str:
    return cr["metadata"].get("namespace") or "default"


def endpoints(cr: dict) -> P.Endpoints:
    """How the client, bench and analyze steps reach Triton: the Service's DNS name."""
    return P.Endpoints(host=f"{triton_name(cr)}.{namespace(cr)}.svc")


# --------------------------------------------------------------------------- metadata checks
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(S.DNS_SUBDOMAIN_PATTERN)
_LABEL_NAME = re.compile(S.LABEL_NAME_PATTERN)    # at most 63 characters, as the patterns say
_LABEL_VALUE = re.compile(S.LABEL_VALUE_PATTERN)
#: How the API server checks each kind's name (Jobs: a label, since their pods carry it).
_NAME_RULES = {"Service": ("DNS-1035 label", _DNS_1035, MAX_NAME),
               "Job": ("DNS-1123 label", _DNS_LABEL, MAX_NAME)}
_ANNOTATIONS_MAX_BYTES = 256 * 1024


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a label or annotation key ([prefix/]name), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} is not a DNS-1123 subdomain"
    if not _LABEL_NAME.match(name):
        return (f"name {name!r} must be 1-63 letters, digits, '-', '_' or '.', beginning and "
                "ending with a letter or digit")
    return None


def label_value_problem(value: str) -> str | None:
    if not _LABEL_VALUE.match(value):
        return (f"{value!r} must be at most 63 letters, digits, '-', '_' or '.', beginning and "
                "ending with a letter or digit")
    return None


def metadata_problems(obj: dict) -> list[str]:
    """What the API server would refuse in ``obj``'s metadata: its name for its kind,
    its namespace, its labels and annotations ("<Kind> <name>: metadata.x: why")."""
    md = obj.get("metadata") or {}
    kind, name = obj.get("kind", "object"), md.get("name") or ""
    what, pattern, limit = _NAME_RULES.get(kind, ("DNS-1123 subdomain", _SUBDOMAIN, 253))
    out = []
    if len(name) > limit or not pattern.match(name):
        out.append(f"metadata.name: {name!r} is not a {what} (at most {limit} characters)")
    ns = md.get("namespace")
    if ns is not None and (len(ns) > MAX_NAME or not _DNS_LABEL.match(ns)):
        out.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for key, value in (md.get("labels") or {}).items():
        problem = qualified_name_problem(key) or label_value_problem(str(value))
        if problem:
            out.append(f"metadata.labels[{key!r}]: {problem}")
    annotations = md.get("annotations") or {}
    for key in annotations:
        problem = qualified_name_problem(key)
        if problem:
            out.append(f"metadata.annotations[{key!r}]: {problem}")
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_MAX_BYTES:
        out.append("metadata.annotations: more than 256 KiB in all")
    return [f"{kind} {name}: {p}" for p in out]


# --------------------------------------------------------------------------- pod pieces
#: Every pod passes the restricted Pod Security Standard. uid and gid 1000 are the
#: non-root ``triton-server`` user that NGC's Triton images create for this purpose
#: (Triton's build.py gives it that id; the SDK image is built on the same base).
#: The PyTorch image has no user of its own but needs none: the stages write only to
#: the model volume and to /tmp, and HOME points at /tmp for torch's caches.
RUN_AS_ID = 1000
TMP_DIR = "/tmp"


def pod_security_context() -> dict:
    # fsGroup makes the model volume writable by RUN_AS_ID where the volume plugin
    # supports ownership (local-path and hostPath volumes come world-writable).
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict:
    # Nothing writes to the image: /tmp, /dev/shm and the volumes are mounts.
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _resources(spec: S.MnistServingSpec, container: str, gpus: int) -> dict:
    out = spec.resources.of(container)
    if gpus > 0:  # an extended resource: its request must equal its limit
        out["requests"][GPU_RESOURCE] = out["limits"][GPU_RESOURCE] = str(gpus)
    return out


def _container(name: str, image: str, spec: S.MnistServingSpec, *, command: list[str],
               resources: dict, mounts: list[dict], env: list[dict] | None = None,
               **extra: Any) -> dict:
    """A container as every pod of the operator has it: non-root, read-only image,
    cpu and memory bounded, a writable /tmp that is also HOME."""
    return {"name": name, "image": image, "imagePullPolicy": spec.images.pull_policy,
            "command": command,
            # model-analyzer has perf_analyzer write its CSV into the working directory
            "workingDir": TMP_DIR,
            "env": [{"name": "HOME", "value": TMP_DIR}, *(env or [])],
            "resources": resources,
            "securityContext": container_security_context(),
            "volumeMounts": [*mounts, {"name": "tmp", "mountPath": TMP_DIR}],
            **extra}


def runner_name(cr: dict, spec: S.MnistServingSpec) -> str:
    """The ServiceAccount of every stage and Triton pod."""
    return spec.scheduling.service_account_name or child_name(cr["metadata"]["name"], "runner")


def _tolerations(spec: S.MnistServingSpec, gpus: int) -> list[dict]:
    out = [S.to_dict(t) for t in spec.scheduling.tolerations]
    out = [{k: v for k, v in t.items() if v != ""} for t in out]
    # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule. With a
    # ReadWriteOnce volume every pod of the instance must follow Triton onto
    # its GPU node (see _affinity), GPU-less steps included.
    if gpus > 0 or spec.storage.access_mode == "ReadWriteOnce":
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in out:
            out.append(gpu_toleration)
    return out


def _node_selector(spec: S.MnistServingSpec, pin_gpu_product: bool) -> dict:
    out = dict(spec.scheduling.node_selector)
    if pin_gpu_product and spec.scheduling.gpu_product:
        out[GPU_PRODUCT_LABEL] = spec.scheduling.gpu_product
    return out


def _affinity(cr: dict, spec: S.MnistServingSpec) -> dict | None:
    """With a ReadWriteOnce volume every pod that mounts it must share a node:
    require co-location with the other pods of this instance. The first pod
    matches its own term, which the scheduler accepts when no other pod exists."""
    if spec.storage.access_mode != "ReadWriteOnce":
        return None
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {
            LABEL_NAME: APP, LABEL_INSTANCE: instance_label(cr["metadata"]["name"])}},
        "topologyKey": HOSTNAME_TOPOLOGY,
    }]}}


def _spread(pod_labels: dict[str, str]) -> dict:
    """The pods of one Indexed Job on different nodes where the scheduler can:
    preferred, since a ReadWriteOnce volume (the required podAffinity above)
    keeps them all on one node."""
    same_job = {k: pod_labels[k] for k in (LABEL_INSTANCE, LABEL_STEP, LABEL_ATTEMPT)}
    return {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": same_job},
                                           "topologyKey": HOSTNAME_TOPOLOGY}}]}


def _work_volume(cr: dict, spec: S.MnistServingSpec) -> dict:
    return {"name": "work", "persistentVolumeClaim": {"claimName": claim_name(cr, spec)}}


def _pod_spec(cr: dict, spec: S.MnistServingSpec, *, gpus: int, pin_gpu_product: bool,
              containers: list[dict], init_containers: list[dict], volumes: list[dict],
              restart_policy: str) -> dict:
    pod: dict[str, Any] = {"restartPolicy": restart_policy,
                           "serviceAccountName": runner_name(cr, spec),
                           # no stage and no Triton calls the Kubernetes API
                           "automountServiceAccountToken": False,
                           "securityContext": pod_security_context()}
    if init_containers:
        pod["initContainers"] = init_containers
    pod["containers"] = containers
    pod["volumes"] = [*volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    selector = _node_selector(spec, pin_gpu_product)
    if selector:
        pod["nodeSelector"] = selector
    tolerations = _tolerations(spec, gpus)
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = _affinity(cr, spec)
    if affinity:
        pod["affinity"] = affinity
    return pod


def _http_probe(path: str, port: str, **timing: int) -> dict:
    return {"httpGet": {"path": path, "port": port}, **timing}


def _triton_ports() -> list[dict]:
    return [{"name": "http", "containerPort": P.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": P.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": P.METRICS_PORT, "protocol": "TCP"}]


def _tritonserver_command(*extra: str, repository: str = str(LAYOUT.model_repo)) -> list[str]:
    return ["tritonserver", f"--model-repository={repository}",
            f"--http-port={P.HTTP_PORT}", f"--grpc-port={P.GRPC_PORT}",
            f"--metrics-port={P.METRICS_PORT}", *extra]


# The python backend (BLS, cpuOnly ONNX) passes tensors through /dev/shm, which
# is 64 MiB in a container by default.
def _shm_volume() -> dict:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}


def _shm_mount() -> dict:
    return {"name": "dshm", "mountPath": "/dev/shm"}


# --------------------------------------------------------------------------- objects
def build_pvc(cr: dict, spec: S.MnistServingSpec) -> dict | None:
    """The model volume; None with storage.existingClaim (the user's claim is used
    and never touched). keepOnDelete leaves out the owner reference, so deleting
    the MnistServing keeps the volume."""
    st = spec.storage
    if st.existing_claim:
        return None
    pvc_spec: dict[str, Any] = {"accessModes": [st.access_mode],
                                "resources": {"requests": {"storage": spec.storage_size}}}
    if st.storage_class_name:
        pvc_spec["storageClassName"] = st.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _metadata(cr, claim_name(cr, spec), "model-volume",
                                  owned=not st.keep_on_delete),
            "spec": pvc_spec}


def build_runner_service_account(cr: dict, spec: S.MnistServingSpec) -> dict | None:
    """The ServiceAccount the pods run under; None when the spec names its own.
    It holds no token and no role: pods get an identity, not API access."""
    if spec.scheduling.service_account_name:
        return None
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _metadata(cr, runner_name(cr, spec), "runner"),
            "automountServiceAccountToken": False}


def _stages_init_container(spec: S.MnistServingSpec) -> dict:
    return _container("stages", spec.images.stages, spec,
                      command=["cp", "-R", STAGES_SOURCE, f"{STAGES_DIR}/"],
                      resources=copy.deepcopy(S.COPY_RESOURCES),
                      mounts=[{"name": "stages", "mountPath": STAGES_DIR}])


def _triton_sidecar(spec: S.MnistServingSpec, step: P.Step) -> dict:
    """Triton in the analyze or confirm pod, on its step's repository (a native
    sidecar: an init container with restartPolicy Always, stopped when the stage
    exits). model-analyzer's remote mode and the confirm stage load models through
    the model-control API, so explicit mode; it must run on the same machine and
    GPUs as the stage that measures it."""
    return _container("triton", spec.images.triton, spec,
                      command=_tritonserver_command("--model-control-mode=explicit",
                                                    repository=step.params.model_repo),
                      resources=_resources(spec, "triton", step.gpus),
                      mounts=[{"name": "work", "mountPath": str(WORK_DIR)}, _shm_mount()],
                      restartPolicy="Always", ports=_triton_ports(),
                      startupProbe=_http_probe("/v2/health/ready", "http", periodSeconds=5,
                                               failureThreshold=120))


SIDECAR_ARGS = (
    "--triton-launch-mode", "remote",
    "--triton-http-endpoint", f"localhost:{P.HTTP_PORT}",
    "--triton-grpc-endpoint", f"localhost:{P.GRPC_PORT}",
    "--triton-metrics-url", f"http://localhost:{P.METRICS_PORT}/metrics",
)


def step_command(step: P.Step) -> list[str]:
    # the pod's own Triton sidecar, not one the stage would launch (analyze and confirm
    # take the same flags for it)
    remote = SIDECAR_ARGS if step.facts.runs_own_triton else ()
    return ["python3", "-m", f"mnist_jobs.{step.stage}", *step.args, *remote,
            "--result", TERMINATION_LOG]


def build_step_job(cr: dict, spec: S.MnistServingSpec, step: P.Step, attempt: int) -> dict:
    """One Job for one step and attempt. The operator retries by creating the
    next attempt, so the Job itself never retries (backoffLimit 0)."""
    if step.long_running:
        raise ValueError(f"step {step.name!r} is the Triton Deployment, not a Job")
    name = job_name(cr["metadata"]["name"], step, attempt)
    sidecar = step.facts.runs_own_triton
    # In the analyze and confirm pods the GPU belongs to the Triton sidecar, which runs
    # the models.
    main_gpus = 0 if sidecar else step.gpus
    main = _container(step.stage, getattr(spec.images, step.image_kind), spec,
                      command=step_command(step),
                      env=[{"name": "PYTHONPATH", "value": STAGES_DIR},
                           {"name": "PYTHONUNBUFFERED", "value": "1"},
                           {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                      resources=_resources(spec, step.facts.resources_of, main_gpus),
                      mounts=[{"name": "work", "mountPath": str(WORK_DIR)},
                              {"name": "stages", "mountPath": STAGES_DIR, "readOnly": True}],
                      terminationMessagePath=TERMINATION_LOG,
                      terminationMessagePolicy="FallbackToLogsOnError")
    if step.pods > 1:   # one name for this Job's clients: a retry never meets the last one's files
        main["env"].append({"name": CLIENTS_RUN_ENV, "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{JOB_UID_LABEL}']"}}})
    init = [_stages_init_container(spec)]
    volumes = [_work_volume(cr, spec), {"name": "stages", "emptyDir": {}}]
    if sidecar:
        init.append(_triton_sidecar(spec, step))
        volumes.append(_shm_volume())
    # TensorRT plans only load on the GPU model they were built on: the engine
    # build, and the analyze and confirm pods that serve the plan, go to
    # scheduling.gpuProduct.
    pin = step.gpus > 0 and step.facts.pins_gpu_product
    pod_labels = {**labels(cr, step.name, step), LABEL_ATTEMPT: str(attempt)}
    md = _metadata(cr, name, step.name, step)
    md["labels"][LABEL_ATTEMPT] = str(attempt)
    pod = _pod_spec(cr, spec, gpus=step.gpus, pin_gpu_product=pin, containers=[main],
                    init_containers=init, volumes=volumes, restart_policy="Never")
    job_spec: dict[str, Any] = {"backoffLimit": 0,
                                "activeDeadlineSeconds": step.facts.deadline_seconds}
    if step.pods > 1:   # index 0 aggregates; its termination message is the step's result
        job_spec.update(completionMode="Indexed", completions=step.pods, parallelism=step.pods)
        pod.setdefault("affinity", {})["podAntiAffinity"] = _spread(pod_labels)
    job_spec["template"] = {"metadata": {"labels": pod_labels}, "spec": pod}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": md, "spec": job_spec}


def build_triton_deployment(cr: dict, spec: S.MnistServingSpec, serve_step: P.Step) -> dict:
    """Triton serving the serve step's model repository on the volume
    (``model_repo/``, or ``model_repo_tuned/`` for serve-tuned). The step's
    fingerprint is a pod-template annotation: a new repository rolls the pods."""
    gpus = spec.serving.gpus
    repository = serve_step.params.model_repo
    container = _container(
        "triton", spec.images.triton, spec,
        command=_tritonserver_command(repository=repository),
        resources=_resources(spec, "triton", gpus),
        mounts=[{"name": "work", "mountPath": str(WORK_DIR), "readOnly": True}, _shm_mount()],
        ports=_triton_ports(),
        startupProbe=_http_probe("/v2/health/ready", "http", periodSeconds=5,
                                 failureThreshold=120),
        readinessProbe=_http_probe("/v2/health/ready", "http", periodSeconds=5,
                                   failureThreshold=3),
        livenessProbe=_http_probe("/v2/health/live", "http", periodSeconds=10,
                                  failureThreshold=3))
    name = triton_name(cr)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(cr, name, "triton"),
        "spec": {
            "replicas": spec.serving.replicas,
            "selector": {"matchLabels": selector_labels(cr, "triton")},
            "strategy": _rollout(spec),
            "template": {
                "metadata": {"labels": labels(cr, "triton"),
                             "annotations": {ANNOTATION_FINGERPRINT: serve_step.fingerprint}},
                "spec": _pod_spec(cr, spec, gpus=gpus, pin_gpu_product=gpus > 0,
                                  containers=[container], init_containers=[],
                                  volumes=[_work_volume(cr, spec), _shm_volume()],
                                  restart_policy="Always"),
            },
        },
    }


def _rollout(spec: S.MnistServingSpec) -> dict:
    """ReadWriteOnce: every pod is on one node, often with one GPU, where a surge
    pod would wait forever, so replace in place. ReadWriteMany: surge first, so
    serving never drops below the wanted replicas."""
    if spec.storage.access_mode == "ReadWriteOnce":
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def build_triton_service(cr: dict, spec: S.MnistServingSpec) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(cr, triton_name(cr), "triton"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr, "triton"),
            "ports": [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"],
                       "protocol": "TCP"} for p in _triton_ports()],
        },
    }


def plan_for(cr: dict, spec: S.MnistServingSpec) -> list[P.Step]:
    """The pipeline as the cluster runs it: work dir /work, Triton behind the Service."""
    device = "cuda" if spec.training.gpus > 0 else "cpu"
    return P.plan(spec, LAYOUT, endpoints(cr), device=device)


def desired_objects(cr: dict) -> list[dict]:
    """Every object the operator would create for ``cr``: the PVC, every enabled
    step Job at attempt 0 (serve is the Deployment), the Deployment and Service.
    Raises spec.SpecError for an invalid spec."""
    spec = S.parse_spec(cr.get("spec") or {})
    steps = plan_for(cr, spec)
    out: list[dict] = []
    pvc = build_pvc(cr, spec)
    if pvc:
        out.append(pvc)
    runner = build_runner_service_account(cr, spec)
    if runner:
        out.append(runner)
    serve = next(s for s in steps if s.long_running)
    out += [build_step_job(cr, spec, s, 0) for s in steps if s.enabled and not s.long_running]
    out.append(build_triton_deployment(cr, spec, serve))
    out.append(build_triton_service(cr, spec))
    return out
