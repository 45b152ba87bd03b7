"""A real Kubernetes control plane on loopback for the cluster test tier.

etcd + kube-apiserver form the "API" tier (an envtest-style server: CRDs,
admission, RBAC, no controllers). The "pods" tier adds kube-controller-manager,
kube-scheduler and KWOK on the same API server, so Jobs, Deployments, garbage
collection and namespace deletion behave as in a real cluster while pods run
on fake nodes whose lifecycle the KWOK Stages in ``kwok/stages.yaml`` play.

Binaries come from ``scripts/build-k8s.sh`` (cache outside the clone). Every
process runs in its own process group, dies with the test process
(PR_SET_PDEATHSIG) and is stopped by :meth:`ControlPlane.stop`; nothing here
skips: a missing binary raises :class:`MissingBinaries`.
"""

from __future__ import annotations

import atexit
import json
import contextlib
import ctypes
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
K8S_VERSION = "v1.36.3"
BUILD_SCRIPT = "scripts/build-k8s.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")
API_TIER = ("etcd", "kube-apiserver")
POD_TIER = ("kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


class MissingBinaries(RuntimeError):
    pass


class ControlPlaneError(RuntimeError):
    pass


def bin_dir() -> Path:
    override = os.environ.get("MNIST_SERVING_K8S_BIN")
    if override:
        return Path(override)
    cache = Path(os.environ.get("MNIST_SERVING_CACHE", Path.home() / ".cache" / "mnist-serving"))
    return cache / f"k8s-{K8S_VERSION}" / "bin"


def find_binaries(names=BINARIES) -> dict[str, Path]:
    """Paths of the pinned binaries; raises MissingBinaries naming the build script."""
    base = bin_dir()
    found = {n: base / n for n in names}
    missing = [n for n, p in found.items() if not (p.is_file() and os.access(p, os.X_OK))]
    if missing:
        raise MissingBinaries(
            f"control-plane binaries missing from {base}: {', '.join(missing)}.\n"
            f"Build them (once: ~11 min on 2 cores with a cold Go cache; cached outside the clone) with:\n"
            f"    {BUILD_SCRIPT}      (or: make k8s)\n"
            f"The cluster tier never skips: it needs a real kube-apiserver, etcd and KWOK."
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- certificates

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class PKI:
    """A throwaway CA and the certificates the control plane needs (ECDSA P-256)."""

    dir: Path
    ca_key: object = None
    ca_cert: x509.Certificate = None

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        self.ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mnist-serving-test-ca")])
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        (self.dir / "ca.crt").write_bytes(_pem_cert(self.ca_cert))
        (self.dir / "ca.key").write_bytes(_pem_key(self.ca_key))
        sa = _key()
        (self.dir / "sa.key").write_bytes(_pem_key(sa))
        (self.dir / "sa.pub").write_bytes(sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def issue(self, stem: str, common_name: str, *, orgs=(), server=False, client=False,
              dns=(), ips=()) -> tuple[Path, Path]:
        now = dt.datetime.now(dt.timezone.utc)
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
        )
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        crt, key_path = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        crt.write_bytes(_pem_cert(cert))
        key_path.write_bytes(_pem_key(key))
        return crt, key_path


def write_kubeconfig(path: Path, server: str, ca_file: Path, *, user: str, cert: Path | None = None,
                     key: Path | None = None, token: str | None = None, namespace: str | None = None) -> Path:
    creds: dict = {}
    if cert is not None:
        creds = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        creds = {"token": token}
    context = {"cluster": "mnist-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "mnist-test",
        "clusters": [{"name": "mnist-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "mnist-test", "context": context}],
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


def _die_with_parent():  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent, close_fds=True,
            )
        finally:
            logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # own session: pgid == pid
        if self.proc.poll() is None and grace > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # anything left in the group
        self.proc.wait(5)

    def tail(self, lines: int = 25) -> str:
        try:
            data = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(data[-lines:])


def _wait(what: str, predicate, timeout: float, components=(), interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        for c in components:
            if not c.alive():
                raise ControlPlaneError(
                    f"{c.name} exited (code {c.proc.returncode}) while waiting for {what}; "
                    f"log {c.log}:\n{c.tail()}")
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_err = e
        time.sleep(interval)
    logs = "\n".join(f"--- {c.name} ({c.log}):\n{c.tail()}" for c in components)
    raise ControlPlaneError(f"timed out after {timeout}s waiting for {what} (last error: {last_err})\n{logs}")


# --------------------------------------------------------------------------- the plane

WORKDIR_PREFIX = "mnist-k8s-"


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _sweep_stale_workdirs() -> None:
    """Remove work dirs of sessions that were SIGKILLed (their processes died with them)."""
    for d in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (FileNotFoundError, ValueError):
            continue
        if not (d / "KEEP").exists() and not pid_alive(owner):
            shutil.rmtree(d, ignore_errors=True)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver, plus (``start_pods_tier``) controller-manager, scheduler and KWOK."""

    workdir: Path = None
    keep_workdir: bool = False
    #: None: loopback only (KWOK tiers). An address of this host: the API server
    #: listens on every interface and advertises it, so pods on a real node reach
    #: it through the ``kubernetes`` Service, and it can reach the kubelet.
    advertise_address: str | None = None
    binaries: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.binaries = self.binaries or find_binaries()
        _sweep_stale_workdirs()
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pki = PKI(self.workdir / "pki")
        self.etcd_port, self.etcd_peer_port, self.api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        crt, key = self.pki.issue("admin", "mnist-test-admin", orgs=["system:masters"], client=True)
        self.kubeconfig = write_kubeconfig(self.workdir / "admin.kubeconfig", self.server, self.pki.ca_file,
                                           user="admin", cert=crt, key=key)
        self._admin_cert = (str(crt), str(key))
        self.pods_tier = False
        atexit.register(self.stop)

    # ---- helpers
    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    def _component(self, name: str, argv: list) -> Component:
        c = Component(name, [str(a) for a in argv], self.log_dir / f"{name}.log")
        self.components[name] = c
        c.start()
        return c

    def _address_flags(self) -> list[str]:
        if self.advertise_address is None:
            # the kubernetes Service cannot point at a loopback address; nothing in-cluster dials it here
            return ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                    "--endpoint-reconciler-type=none"]
        # `kubectl logs/exec` go API server -> kubelet with this client certificate
        crt, key = self.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                                  orgs=["system:masters"], client=True)
        return ["--bind-address=0.0.0.0", f"--advertise-address={self.advertise_address}",
                f"--kubelet-client-certificate={crt}", f"--kubelet-client-key={key}",
                "--kubelet-preferred-address-types=InternalIP"]

    def _https_get(self, url: str, *, cert=None, verify=True) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file)) if verify else ssl._create_unverified_context()
        if cert:
            ctx.load_cert_chain(*cert)
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def api_get(self, path: str) -> tuple[int, str]:
        return self._https_get(self.server + path, cert=self._admin_cert)

    def kubectl(self, *args, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig or self.kubeconfig}", *map(str, args)]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}{p.stdout}")
        return p

    def component_kubeconfig(self, stem: str, common_name: str, orgs=()) -> Path:
        crt, key = self.pki.issue(stem, common_name, orgs=orgs, client=True)
        return write_kubeconfig(self.workdir / f"{stem}.kubeconfig", self.server, self.ca_file,
                                user=common_name, cert=crt, key=key)

    # ---- API tier
    def start(self, timeout: float = 90) -> "ControlPlane":
        t0 = time.monotonic()
        b = self.binaries
        etcd = self._component("etcd", [
            b["etcd"], "--name=mnist-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=mnist-test=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync=true", "--quota-backend-bytes=4294967296", "--log-level=warn",
        ])
        _wait("etcd /health", lambda: b'"health":"true"' in urllib.request.urlopen(
            f"http://127.0.0.1:{self.etcd_port}/health", timeout=2).read(), 30, [etcd])
        self.timings["etcd"] = time.monotonic() - t0

        crt, key = self.pki.issue(
            "apiserver", "kube-apiserver", server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"],
            ips=["127.0.0.1", "10.96.0.1", *([self.advertise_address] if self.advertise_address else [])])
        proxy_crt, proxy_key = self.pki.issue("front-proxy-client", "front-proxy-client", client=True)
        pki = self.pki.dir
        api = self._component("kube-apiserver", [
            b["kube-apiserver"],
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            *self._address_flags(), f"--secure-port={self.api_port}",
            f"--tls-cert-file={crt}", f"--tls-private-key-file={key}", f"--client-ca-file={pki / 'ca.crt'}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            # aggregation-layer (front proxy) settings: controller-manager and scheduler read them
            f"--requestheader-client-ca-file={pki / 'ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy_crt}", f"--proxy-client-key-file={proxy_key}",
        ])
        _wait("kube-apiserver /readyz", lambda: self.api_get("/readyz")[0] == 200, timeout, [etcd, api])
        _wait("the default namespace", lambda: self.api_get("/api/v1/namespaces/default")[0] == 200,
              timeout, [etcd, api])
        self.timings["api"] = time.monotonic() - t0
        return self

    # ---- pods tier
    def start_pods_tier(self, timeout: float = 90, *, kwok: bool = True) -> "ControlPlane":
        """Controllers and scheduler; KWOK too unless ``kwok=False`` (a real node plays the pods)."""
        if self.pods_tier:
            return self
        t0 = time.monotonic()
        b, pki = self.binaries, self.pki.dir
        kcm_kc = self.component_kubeconfig("controller-manager", "system:kube-controller-manager")
        sched_kc = self.component_kubeconfig("scheduler", "system:kube-scheduler")
        self.kcm_port, self.sched_port, self.kwok_port = free_port(), free_port(), free_port()
        kcm = self._component("kube-controller-manager", [
            b["kube-controller-manager"], f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}", f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.kcm_port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # every default controller (job, cronjob, deployment, replicaset, garbage-collector,
            # namespace, serviceaccount, serviceaccount-token, endpoints, endpointslice,
            # node-lifecycle, pod-garbage-collector, ttl-after-finished, ...); cloud ones stay off.
            "--controllers=*", "--concurrent-gc-syncs=10",
            # the defaults (20 QPS, burst 30, 5 Job syncs) throttle the job controller to a
            # few Jobs a second, far below what hundreds of pipelines ask: the scale test
            # measured 41 s p50 from a Job to its pod at 500. Large clusters raise them too.
            "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-job-syncs=20",
            "--v=1",
        ])
        sched = self._component("kube-scheduler", [
            b["kube-scheduler"], f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.sched_port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false", "--v=1",
        ])
        procs = [self.components["etcd"], self.components["kube-apiserver"], kcm, sched]
        if kwok:
            procs.append(self._start_kwok())
        _wait("kube-controller-manager /healthz",
              lambda: self._https_get(f"https://127.0.0.1:{self.kcm_port}/healthz", verify=False)[0] == 200,
              timeout, procs)
        _wait("kube-scheduler /readyz",
              lambda: self._https_get(f"https://127.0.0.1:{self.sched_port}/readyz", verify=False)[0] == 200,
              timeout, procs)
        _wait("the default ServiceAccount (serviceaccount controller)",
              lambda: self.api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
              timeout, procs)
        if kwok:
            _wait("kwok /healthz", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{self.kwok_port}/healthz", timeout=2).status == 200, timeout, procs)
        self.pods_tier = True
        self.timings["pods"] = time.monotonic() - t0
        return self

    def _start_kwok(self) -> Component:
        # KWOK writes node and pod status for fake nodes; it runs as a cluster admin (as kwokctl does).
        kubeconfig = self.component_kubeconfig("kwok", "kwok-controller", orgs=["system:masters"])
        return self._component("kwok", [
            self.binaries["kwok"], f"--kubeconfig={kubeconfig}", f"--config={HERE / 'kwok' / 'config.yaml'}",
            f"--config={HERE / 'kwok' / 'stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}", "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{self.kwok_port}",
        ])

    def restart(self, name: str, *, down_for: float = 0.0, grace: float = 2.0, timeout: float = 90) -> None:
        """Stop one component and start it again with the same flags (ports, data dir, certs).

        For fault tests: an API server restart under a watching operator, a scheduler outage, ...
        ``grace`` is the SIGTERM-to-SIGKILL wait (0: a crash). kube-apiserver with open watches
        does not finish a graceful stop within 10 s here, so the default is short.
        """
        c = self.components[name]
        c.stop(grace=grace)
        time.sleep(down_for)
        c.start()
        others = [x for x in self.components.values() if x is not c] + [c]
        if name == "kube-apiserver":
            _wait("kube-apiserver /readyz after restart", lambda: self.api_get("/readyz")[0] == 200, timeout, others)
        elif name == "etcd":
            _wait("etcd /health after restart", lambda: b'"health":"true"' in urllib.request.urlopen(
                f"http://127.0.0.1:{self.etcd_port}/health", timeout=2).read(), timeout, others)
        else:
            port = {"kube-controller-manager": getattr(self, "kcm_port", None),
                    "kube-scheduler": getattr(self, "sched_port", None)}.get(name)
            if port:
                _wait(f"{name} /healthz after restart", lambda: self._https_get(
                    f"https://127.0.0.1:{port}/healthz", verify=False)[0] == 200, timeout, others)
            elif name == "kwok":
                _wait("kwok /healthz after restart", lambda: urllib.request.urlopen(
                    f"http://127.0.0.1:{self.kwok_port}/healthz", timeout=2).status == 200, timeout, others)

    def check_alive(self) -> None:
        dead = [c for c in self.components.values() if not c.alive()]
        if dead:
            raise ControlPlaneError("; ".join(
                f"{c.name} exited (code {c.proc.returncode}), log {c.log}:\n{c.tail()}" for c in dead))

    def logs_summary(self, lines: int = 15) -> str:
        return "\n".join(f"--- {c.name} ({c.log}):\n{c.tail(lines)}" for c in self.components.values())

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.components.values() if c.proc is not None]

    def stop(self) -> None:
        # reverse start order: clients first, etcd last
        for c in reversed(list(self.components.values())):
            c.stop()
        atexit.unregister(self.stop)
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        if self.keep_workdir:
            (self.workdir / "KEEP").touch()
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- API objects for tests
    def api_client(self, kubeconfig: Path | None = None):
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as ServiceAccount namespace/name (TokenRequest API)."""
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            tr = core.create_namespaced_service_account_token(
                name, namespace, client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(audiences=[SA_ISSUER],
                                                   expiration_seconds=expiration_seconds)))
        return write_kubeconfig(self.workdir / f"sa-{namespace}-{name}.kubeconfig", self.server, self.ca_file,
                                user=f"system:serviceaccount:{namespace}:{name}", token=tr.status.token,
                                namespace=namespace)


class Kubectl:
    """kubectl bound to a plane's admin kubeconfig: ``kubectl(*args)`` -> stdout (raises on failure),
    ``.run(*args)`` -> CompletedProcess, ``.json(*args)`` -> the parsed ``-o json`` output."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane

    def run(self, *args, input=None, check=False, kubeconfig=None, timeout=60):
        return self.plane.kubectl(*args, input=input, check=check, kubeconfig=kubeconfig, timeout=timeout)

    def __call__(self, *args, input=None, check=True, kubeconfig=None, timeout=60) -> str:
        return self.run(*args, input=input, check=check, kubeconfig=kubeconfig, timeout=timeout).stdout

    def json(self, *args, **kw):
        return json.loads(self(*args, "-o", "json", **kw))


# --------------------------------------------------------------------------- fake GPU nodes

GPU_PRODUCTS = {
    # product label -> (memory MiB, family, compute capability)
    "NVIDIA-H100-80GB-HBM3": (81559, "hopper", (9, 0)),
    "NVIDIA-A100-SXM4-80GB": (81920, "ampere", (8, 0)),
    "NVIDIA-L4": (23034, "ada-lovelace", (8, 9)),
    "Tesla-T4": (15360, "turing", (7, 5)),
}


def gpu_node_manifest(name: str, *, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3",
                      taint: bool = True, cpu: str = "32", memory: str = "256Gi", labels=None) -> dict:
    """A fake node as the NVIDIA GPU operator labels it (GFD labels, device plugin capacity).

    ``gpus=0`` gives a CPU-only node (no nvidia.com labels, no taint).
    """
    doc = yaml.safe_load((HERE / "kwok" / "gpu-node.yaml").read_text())
    meta = doc["metadata"]
    meta["name"] = name
    meta["labels"]["kubernetes.io/hostname"] = name
    capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        mem, family, (major, minor) = GPU_PRODUCTS.get(product, (81559, "hopper", (9, 0)))
        meta["labels"].update({
            "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.memory": str(mem), "nvidia.com/gpu.family": family,
            "nvidia.com/gpu.compute.major": str(major), "nvidia.com/gpu.compute.minor": str(minor),
        })
        capacity["nvidia.com/gpu"] = str(gpus)
        if not taint:
            doc["spec"]["taints"] = []
    else:
        meta["labels"] = {k: v for k, v in meta["labels"].items() if not k.startswith("nvidia.com/")}
        doc["spec"]["taints"] = []
    meta["labels"].update(labels or {})
    doc["status"] = {"capacity": capacity, "allocatable": dict(capacity)}
    return doc

