"""Run the real operator against the cluster tier, and read what a user would see.

The operator runs as a subprocess of its real entry point (``mnist-serving operator``),
in its own process group, dying with the test process (PR_SET_PDEATHSIG, as the
control-plane components do), so a test can ``kill()`` it with SIGKILL and
``restart()`` it, exactly as a node failure or an OOM kill would.

Fixtures (registered in conftest.py; mark tests ``@pytest.mark.cluster``):

  mnist_crd         session: the CRD from manifests/crd, Established
  kit               function: MnistKit bound to the admin kubectl (helpers below)
  operator          function: an OperatorProcess watching ``pod_namespace``, started and
                    live; killed at teardown. .kill() .stop() .start() .restart() .alive
                    .pid .log_text() .wait_logged(text); .metrics() scrapes its /metrics
                    (port .metrics_port) and .metric(name, **labels) sums matching samples
  operator_factory  function: operator_factory(namespaces=[...], kubeconfig=None,
                    env=None, all_namespaces=False, start=True) -> OperatorProcess;
                    every one made is killed at teardown
  pipeline_ns       function: pod_namespace with one fake 8-GPU node and the CRD ready

MnistKit (``kit``): apply_cr(ns, name, spec_patch=None, annotations=None) -> dict,
patch_spec(ns, name, patch), annotate(ns, name, key, value), get_cr(ns, name),
delete_cr(ns, name, wait=True), status(ns, name), wait_phase(ns, name, phase, timeout),
wait_ready(ns, name, timeout), events_for(ns, name) (Events whose involvedObject is the
resource), jobs_for(ns, name), pods_for(ns, name), job_names(ns, name, step=None),
children(ns, name) -> {kind: [names]}, get_printed(ns) (``kubectl get mnistserving``).
Module function ``wait_for(what, predicate, timeout, interval)`` returns the first
truthy value of predicate() or fails with ``what`` and the last value seen.

apply_cr also creates a PersistentVolume pre-bound to the resource's claim
(``<name>-model``): the test cluster has no storage provisioner, and a pod whose
claim is unbound is never scheduled. ``FAST_SPEC`` keeps a whole pipeline short
(one concurrency point, 1 s retry backoff); ``spec_patch`` deep-merges into it.

KWOK plays every stage pod (kwok/stages.yaml): a pod that succeeds ends with a
realistic result JSON for its step as termination message. Failure injection by
resource name (the operator copies nothing else from the resource to its pods):
``fail-<step>-...`` fails that step on every attempt, ``flaky-<step>-...`` fails
its attempt 0 only, ``hang-<step>-...`` keeps it running, ``slow-<step>-...`` makes
it take 20 s; a data directory under ``/simulate/missing`` (``training.dataset.path``)
fails train/export/client as a missing dataset would, and a spec change fixes it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .control_plane import REPO, Component, _die_with_parent, free_port

from mnist_operator.core import builders
from mnist_operator.api.spec import GROUP, KIND, PLURAL, VERSION

#: another commit's CRD, for running its operator against this harness (old-code comparisons)
CRD_DIR = Path(os.environ.get("MNIST_SERVING_TEST_CRD_DIR") or REPO / "manifests" / "crd")
CRD_NAME = f"{PLURAL}.{GROUP}"
API_VERSION = f"{GROUP}/{VERSION}"
#: A whole pipeline in seconds under KWOK: every step still runs, with the fewest points.
FAST_SPEC: dict = {
    "training": {"epochs": 1, "gpus": 1},
    "benchmark": {"perfAnalyzer": {"protocols": ["grpc", "http"],
                                   "concurrency": {"start": 1, "end": 1, "step": 1}},
                  "modelAnalyzer": {"enabled": True, "maxConcurrency": 2, "maxInstances": 1}},
    "retries": {"limit": 1, "backoffSeconds": 1},
}


def deep_merge(base: dict, patch: dict | None) -> dict:
    """``patch`` over ``base`` (dicts merge, anything else replaces; None deletes)."""
    out = copy.deepcopy(base)
    for key, value in (patch or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cr_manifest(namespace: str, name: str, spec_patch: dict | None = None,
                annotations: dict | None = None, base: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta,
            "spec": deep_merge(FAST_SPEC if base is None else base, spec_patch)}


def claim_name(name: str) -> str:
    return builders.child_name(name, "model")


def prebound_pv(namespace: str, name: str) -> dict:
    """A PV the PV controller binds to the resource's claim as soon as it exists."""
    pv_name = "pv-" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"mnist.serving.dev/test": "true"}},
            "spec": {"capacity": {"storage": "10Gi"},
                     "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "storageClassName": "",
                     "claimRef": {"namespace": namespace, "name": claim_name(name)},
                     "hostPath": {"path": f"/tmp/mnist-serving-test/{pv_name}"}}}


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25):
    """The first truthy predicate() value; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - e.g. the object does not exist yet
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {str(last)[:2000]}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the operator process
def operator_binary() -> Path:
    exe = Path(sys.executable).parent / "mnist-serving"
    if not exe.exists():
        raise AssertionError(f"{exe} missing: install the project into the venv (pip install -e .)")
    return exe


class OperatorProcess:
    """``mnist-serving operator`` as a child process; kill -9 and restart it at will."""

    def __init__(self, log_dir: Path, kubeconfig: Path, *, namespaces: list[str] | None = None,
                 all_namespaces: bool = False, env: dict | None = None, name: str = "operator"):
        self.kubeconfig = Path(kubeconfig)
        self.port = free_port()
        self.metrics_port = free_port()
        args = [str(operator_binary()), "operator",
                f"--liveness=http://127.0.0.1:{self.port}/healthz", f"--metrics-port={self.metrics_port}"]
        if all_namespaces:
            args.append("--all-namespaces")
        for ns in namespaces or []:
            args += ["--namespace", ns]
        self.argv = args
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                    "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.log = Path(log_dir) / f"{name}-{self.port}.log"
        self.starts = 0
        self._component: Component | None = None

    # -- lifecycle
    def start(self, timeout: float = 60) -> "OperatorProcess":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as f:
            f.write(f"=== start #{self.starts + 1}: {' '.join(self.argv)}\n")
        c = Component("operator", self.argv, self.log)
        logf = self.log.open("ab")
        try:  # as Component.start(), with the operator's own environment (kubeconfig, interval)
            c.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
                                      preexec_fn=_die_with_parent, close_fds=True)
        finally:
            logf.close()
        self._component = c
        self.starts += 1
        self.wait_live(timeout)
        return self

    def wait_live(self, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"

        def live():
            if not self.alive:
                raise AssertionError(f"operator exited ({self.returncode}):\n{self.tail()}")
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        try:
            wait_for("the operator's liveness endpoint", live, timeout, interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- operator log tail:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL, no cleanup: what an OOM kill or a lost node does."""
        if self._component and self.alive:
            os.killpg(self._component.proc.pid, signal.SIGKILL)
            self._component.proc.wait(10)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM (kopf finishes its handlers), SIGKILL after ``grace``."""
        if self._component:
            self._component.stop(grace=grace)

    def restart(self, *, hard: bool = True, down_for: float = 0, timeout: float = 60) -> None:
        self.kill() if hard else self.stop()
        time.sleep(down_for)
        self.start(timeout)

    # -- inspection
    @property
    def alive(self) -> bool:
        return bool(self._component and self._component.alive())

    @property
    def pid(self) -> int | None:
        return self._component.proc.pid if self._component and self._component.proc else None

    @property
    def returncode(self) -> int | None:
        return self._component.proc.returncode if self._component and self._component.proc else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_logged(self, text: str, timeout: float = 30) -> None:
        wait_for(f"{text!r} in the operator log", lambda: text in self.log_text(), timeout)

    def metrics(self) -> list:
        """Every sample of the operator's /metrics, parsed by prometheus_client."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain"), r.headers
            text = r.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def api_requests(self) -> dict[tuple[str, str], float]:
        """The Kubernetes API requests the operator made so far, by (verb, resource)."""
        out: dict[tuple[str, str], float] = {}
        for s in self.metrics():
            if s.name == "mnist_serving_api_requests_total":
                key = (s.labels["verb"], s.labels["resource"])
                out[key] = out.get(key, 0.0) + s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(s.value for s in self.metrics()
                   if s.name == name and labels.items() <= s.labels.items())


# --------------------------------------------------------------------------- reading the cluster
def status_summary(status: dict) -> str:
    """A resource's status as a failure message shows it: the phase, then one line a step."""
    lines = [f"phase {status.get('phase')}: {status.get('message', '')}"]
    for step, rec in (status.get("stages") or {}).items():
        lines.append(f"  {step}: {rec.get('state')} {rec.get('reason', '')} "
                     f"job={rec.get('job')} {rec.get('message', '')}"[:300])
    return "\n".join(lines)


class MnistKit:
    """What a user does and sees with kubectl, as functions."""

    def __init__(self, kubectl):
        self.kubectl = kubectl
        self.pvs: list[str] = []

    # -- the resource
    def apply_cr(self, namespace: str, name: str, spec_patch: dict | None = None,
                 annotations: dict | None = None, base: dict | None = None,
                 volume: bool = True) -> dict:
        doc = cr_manifest(namespace, name, spec_patch, annotations, base)
        if volume and not doc["spec"].get("storage", {}).get("existingClaim"):
            self.ensure_volume(namespace, name)
        out = self.kubectl("apply", "-f", "-", "-o", "json", input=json.dumps(doc))
        return json.loads(out)

    def ensure_volume(self, namespace: str, name: str) -> str:
        pv = prebound_pv(namespace, name)
        pv_name = pv["metadata"]["name"]
        if pv_name not in self.pvs:
            self.kubectl("apply", "-f", "-", input=json.dumps(pv))
            self.pvs.append(pv_name)
        return pv_name

    def patch_spec(self, namespace: str, name: str, patch: dict) -> dict:
        out = self.kubectl("patch", PLURAL, name, "-n", namespace, "--type=merge",
                           "-p", json.dumps({"spec": patch}), "-o", "json")
        return json.loads(out)

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        self.kubectl("annotate", PLURAL, name, "-n", namespace, f"{key}={value}", "--overwrite")

    def get_cr(self, namespace: str, name: str) -> dict | None:
        p = self.kubectl.run("get", PLURAL, name, "-n", namespace, "-o", "json")
        if p.returncode != 0:
            if "NotFound" in p.stderr:
                return None
            raise AssertionError(f"kubectl get {PLURAL} {name}: {p.stderr}")
        return json.loads(p.stdout)

    def status(self, namespace: str, name: str) -> dict:
        return (self.get_cr(namespace, name) or {}).get("status") or {}

    def delete_cr(self, namespace: str, name: str, wait: bool = True) -> None:
        self.kubectl("delete", PLURAL, name, "-n", namespace, f"--wait={str(wait).lower()}", timeout=90)

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float = 90) -> dict:
        def reached():
            st = self.status(namespace, name)
            if st.get("phase") == phase:
                return st
            return False if phase == "Failed" or st.get("phase") != "Failed" else \
                AssertionError(f"phase Failed: {st.get('message')}")
        try:
            return wait_for(f"{namespace}/{name} phase {phase}",
                            lambda: self._raise_if(reached()), timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{status_summary(self.status(namespace, name))}") from None

    @staticmethod
    def _raise_if(value):
        if isinstance(value, AssertionError):
            raise value
        return value

    def wait_ready(self, namespace: str, name: str, timeout: float = 120) -> dict:
        return self.wait_phase(namespace, name, "Ready", timeout)

    def get_printed(self, namespace: str, *args: str) -> str:
        return self.kubectl("get", PLURAL, "-n", namespace, *args)

    # -- what it made
    def events_for(self, namespace: str, name: str) -> list[dict]:
        items = self.kubectl.json("get", "events", "-n", namespace,
                                  "--field-selector", f"involvedObject.kind={KIND},involvedObject.name={name}")
        return sorted(items.get("items", []),
                      key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def _selected(self, kind: str, namespace: str, name: str, extra: str = "") -> list[dict]:
        selector = f"{builders.LABEL_INSTANCE}={builders.instance_label(name)}" + (f",{extra}" if extra else "")
        return self.kubectl.json("get", kind, "-n", namespace, "-l", selector).get("items", [])

    def jobs_for(self, namespace: str, name: str, step: str | None = None) -> list[dict]:
        return self._selected("jobs", namespace, name, f"{builders.LABEL_STEP}={step}" if step else "")

    def job_names(self, namespace: str, name: str, step: str | None = None) -> list[str]:
        return sorted(j["metadata"]["name"] for j in self.jobs_for(namespace, name, step))

    def pods_for(self, namespace: str, name: str) -> list[dict]:
        return self._selected("pods", namespace, name)

    def children(self, namespace: str, name: str) -> dict[str, list[str]]:
        out = {}
        for kind in ("jobs", "pods", "deployments", "replicasets", "services", "persistentvolumeclaims"):
            out[kind] = sorted(o["metadata"]["name"] for o in self._selected(kind, namespace, name))
        return out

    def cleanup(self) -> None:
        if self.pvs:
            # one DELETE per name: 500 of them on a loaded API server take minutes
            self.kubectl.run("delete", "pv", *self.pvs, "--wait=false", "--ignore-not-found",
                             timeout=max(60, len(self.pvs)))
            self.pvs.clear()


def install_crd(kubectl) -> None:
    kubectl("apply", "-k", str(CRD_DIR))

    def established():
        crd = kubectl.json("get", "crd", CRD_NAME)
        return {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}.get("Established") == "True"
    wait_for(f"crd/{CRD_NAME} Established", established, 60)


__all__ = ["OperatorProcess", "MnistKit", "wait_for", "install_crd", "cr_manifest", "deep_merge",
           "prebound_pv", "claim_name", "FAST_SPEC", "CRD_NAME", "API_VERSION"]
