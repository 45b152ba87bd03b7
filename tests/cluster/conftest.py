"""Fixtures for the cluster tier: a real control plane on loopback (see tests/harness/control_plane.py).

Fixture API (put cluster tests under tests/cluster/, subfolders included, and
mark them ``@pytest.mark.cluster``):

session scope
  control_plane   ControlPlane with etcd + kube-apiserver only (API tier, ~3 s)
  cluster         the same ControlPlane with kube-controller-manager,
                  kube-scheduler and KWOK started too (pods tier, ~5 s more)
  kubeconfig      admin kubeconfig path (system:masters client certificate)
  kubectl         kubectl(*args, input=None, check=True, kubeconfig=None) ->
                  stdout str; kubectl.run(...) -> CompletedProcess; pinned binary
  api_client      kubernetes.client.ApiClient for the admin kubeconfig
function scope
  namespace       a fresh namespace name (API tier), deleted after the test
  pod_namespace   the same on the pods tier, its default ServiceAccount ready
  gpu_nodes       factory: gpu_nodes(count, gpus=8, product=..., taint=True,
                  cpu="32", memory="256Gi", labels=None) -> [names], Ready;
                  deleted after the test
  sa_kubeconfig   factory: sa_kubeconfig(namespace, name) -> kubeconfig path
                  authenticating as that ServiceAccount (TokenRequest)

ControlPlane (what control_plane/cluster return) also offers: .kubeconfig,
.server, .ca_file, .log_dir, .api_get(path) -> (status, body) with admin
credentials (/metrics, /readyz), .api_client(kubeconfig=None),
.service_account_kubeconfig(ns, name), .restart(component, down_for=0,
grace=2) for fault tests, .check_alive(), .components[name].proc (pids).

KWOK pod behaviour is driven by labels/annotations on the pod (template): see
kwok/stages.yaml (simulate=fail|hang|unready, simulated-duration,
simulated-start-delay, simulated-exit-code, simulated-result -> termination
message).

A missing binary fails every cluster test with the command that builds it;
nothing is skipped. On a failure the component logs' tails are attached to the
report and the log folder is kept (its path is printed).
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from tests.harness.control_plane import (ControlPlane, ControlPlaneError, Kubectl, MissingBinaries, pid_alive, find_binaries,
                    gpu_node_manifest)

_STATE: dict = {}


def _plane_or_fail() -> ControlPlane:
    if "error" in _STATE:
        pytest.fail(_STATE["error"], pytrace=False)
    plane = _STATE.get("plane")
    if plane is None:
        try:
            find_binaries()
            plane = ControlPlane().start()
        except (MissingBinaries, ControlPlaneError) as e:
            _STATE["error"] = str(e)
        if "error" in _STATE:  # failed outside the except block: one clear message, no chained traceback
            pytest.fail(_STATE["error"], pytrace=False)
        _STATE["plane"] = plane
    return plane


@pytest.fixture(scope="session")
def control_plane():
    plane = _plane_or_fail()
    yield plane
    # torn down in pytest_sessionfinish so both tiers share one API server


@pytest.fixture(scope="session")
def cluster(control_plane):
    if "pods_error" in _STATE:
        pytest.fail(_STATE["pods_error"], pytrace=False)
    try:
        control_plane.start_pods_tier()
    except ControlPlaneError as e:
        _STATE["pods_error"] = str(e)
    if "pods_error" in _STATE:
        pytest.fail(_STATE["pods_error"], pytrace=False)
    return control_plane


@pytest.fixture(scope="session")
def kubeconfig(control_plane):
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane):
    return Kubectl(control_plane)


@pytest.fixture(scope="session")
def api_client(control_plane):
    client = control_plane.api_client()
    yield client
    client.close()


def _make_namespace(plane: ControlPlane, kubectl: Kubectl, wait_sa: bool):
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "mnist.serving.dev/test=true")
    if wait_sa:  # the serviceaccount controller creates "default"; pods are refused before it exists
        deadline = time.monotonic() + 30
        while plane.api_get(f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] != 200:
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"default ServiceAccount never appeared in {name}")
            time.sleep(0.1)
    return name


@pytest.fixture
def namespace(control_plane, kubectl):
    name = _make_namespace(control_plane, kubectl, wait_sa=control_plane.pods_tier)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def pod_namespace(cluster, kubectl):
    name = _make_namespace(cluster, kubectl, wait_sa=True)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def gpu_nodes(cluster, kubectl):
    created: list[str] = []

    def make(count: int = 1, *, timeout: float = 60, **kw) -> list[str]:
        names = [f"kwok-gpu-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        docs = {"apiVersion": "v1", "kind": "List", "items": [gpu_node_manifest(n, **kw) for n in names]}
        kubectl("apply", "-f", "-", input=json.dumps(docs))
        created.extend(names)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            nodes = kubectl.json("get", "nodes", *sorted(pending))
            items = nodes.get("items", [nodes])
            for n in items:
                conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
                if conds.get("Ready") == "True":
                    pending.discard(n["metadata"]["name"])
            if pending and time.monotonic() > deadline:
                raise ControlPlaneError(f"fake nodes never became Ready (is kwok running?): {sorted(pending)}\n"
                                        f"{cluster.logs_summary()}")
            if pending:
                time.sleep(0.2)
        return names

    yield make
    if created:
        kubectl.run("delete", "node", *created, "--wait=false", "--ignore-not-found")


@pytest.fixture
def sa_kubeconfig(control_plane):
    return control_plane.service_account_kubeconfig


# --------------------------------------------------------------------------- reporting and teardown

def _terminate(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config):
    # SIGTERM (CI timeouts, `timeout`) becomes an interruption, so session teardown stops the
    # control plane; SIGKILL is covered by PR_SET_PDEATHSIG in every component.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    plane = _STATE.get("plane")
    if report.failed and plane is not None and ("control_plane" in item.fixturenames):
        _STATE["failed"] = True
        dead = [c.name for c in plane.components.values() if not c.alive()]
        header = f"logs kept in {plane.log_dir}" + (f"; DEAD: {', '.join(dead)}" if dead else "")
        report.sections.append(("control plane", header + "\n" + plane.logs_summary()))
        for op in _STATE.get("operators", []):  # operators started by this test (operator_factory)
            report.sections.append((f"operator log {op.log}", op.tail(60)))


def pytest_terminal_summary(terminalreporter):
    timings = _STATE.get("timings")
    if timings:
        parts = [f"etcd {timings['etcd']:.1f}s", f"API tier {timings['api']:.1f}s"]
        if "pods" in timings:
            parts.append(f"pods tier +{timings['pods']:.1f}s")
        terminalreporter.write_line("control-plane startup: " + ", ".join(parts))


def pytest_sessionfinish(session, exitstatus):
    plane = _STATE.pop("plane", None)
    if plane is None:
        return
    _STATE["timings"] = dict(plane.timings)
    # keep the logs when a test failed or pytest itself broke; not for a clean run or an interruption
    keep = bool(_STATE.get("failed")) or exitstatus in (1, 3)
    plane.keep_workdir = keep
    pids = plane.pids()
    plane.stop()
    left = [p for p in pids if pid_alive(p)]
    if left:
        raise RuntimeError(f"control-plane processes survived teardown: {left}")
    if keep:
        print(f"\ncontrol-plane logs kept in {plane.log_dir}")



# --------------------------------------------------------------------------- the operator (tests/harness/operator_process.py)
from tests.harness.operator_process import MnistKit, OperatorProcess, install_crd  # noqa: E402


@pytest.fixture(scope="session")
def mnist_crd(control_plane, kubectl):
    """The MnistServing CRD from manifests/crd, Established (stays for the session)."""
    install_crd(kubectl)
    return control_plane


@pytest.fixture
def kit(kubectl):
    k = MnistKit(kubectl)
    yield k
    k.cleanup()


@pytest.fixture
def pipeline_ns(mnist_crd, pod_namespace, gpu_nodes):
    """A fresh namespace on the pods tier, one fake 8-GPU node, the CRD installed."""
    gpu_nodes(1)
    return pod_namespace


@pytest.fixture
def operator_factory(cluster, mnist_crd, tmp_path):
    """operator_factory(namespaces=[...], kubeconfig=None, env=None, all_namespaces=False,
    start=True) -> OperatorProcess; every one is killed at teardown (its log is attached
    to a failing test's report)."""
    made: list[OperatorProcess] = []

    def make(namespaces=None, *, kubeconfig=None, env=None, all_namespaces=False, start=True):
        op = OperatorProcess(cluster.log_dir, kubeconfig or cluster.kubeconfig, namespaces=namespaces,
                             all_namespaces=all_namespaces, env=env, name=f"operator-{len(made)}")
        made.append(op)
        _STATE.setdefault("operators", []).append(op)
        return op.start() if start else op

    yield make
    for op in made:
        op.kill()
        _STATE.get("operators", []).remove(op)


@pytest.fixture
def operator(operator_factory, pipeline_ns):
    """The real operator (`mnist-serving operator -n <pipeline_ns>`), live; killed at teardown."""
    return operator_factory([pipeline_ns])
