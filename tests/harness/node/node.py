"""One real Kubernetes node on this machine: containerd + runc, CNI bridge,
kubelet, kube-proxy, and in-cluster CoreDNS and local-path-provisioner (the
dynamic provisioner kind ships, as the default StorageClass ``standard``),
joined to a :class:`ControlPlane` that advertises this host's address.

Everything the node touches on the host lives under names of its own, so
:func:`cleanup` can undo it whether the last run ended cleanly or crashed:

* files:      NODE_ROOT (containerd root, kubelet root, pod logs, volumes) and NODE_RUN
* cgroups:    /sys/fs/cgroup/<controller>/mnist-serving-node (kubelet's cgroupRoot)
* network:    the bridge ``mnist0``, netns ``/run/netns/cni-*``, iptables chains
              KUBE-* (kube-proxy, kubelet) and CNI-* (portmap)
* sysctls:    the values before the first start are saved in HOST_STATE and put back
* processes:  containerd shims and container processes (found by our socket path
              and cgroup), besides kubelet/containerd/kube-proxy, which die with
              their parent (PR_SET_PDEATHSIG)

Needs root. Binaries come from scripts/build-k8s.sh (kubelet, kube-proxy) and
scripts/build-node.sh (Debian packages, coredns, local-path-provisioner, images).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import string
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.control_plane import (POD_CIDR, Component, ControlPlane,
                                 _wait, bin_dir, free_port)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
NODE_ROOT = Path("/var/lib/mnist-serving-node")
NODE_RUN = Path("/run/mnist-serving-node")
HOST_STATE = Path("/var/lib/mnist-serving-node.host-state.json")  # outside NODE_ROOT: survives its removal
CGROUP_NAME = "mnist-serving-node"
CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
BRIDGE = "mnist0"
NODE_NAME = "mnist-node"
POD_SUBNET = "10.244.0.0/24"     # one node: one slice of POD_CIDR
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
STORAGE_CLASS = "standard"       # kind's default StorageClass name
CNI_BIN = Path("/usr/lib/cni")   # Debian's containernetworking-plugins
CHAIN_PREFIXES = ("KUBE-", "CNI-")
#: kubelet sets the first five (its kernel defaults), the bridge plugin ip_forward;
#: br_netfilter's switch makes bridged pod traffic pass kube-proxy's rules.
SYSCTLS = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
           "net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
DEBIAN_TOOLS = {"containerd": "containerd", "runc": "runc", "iptables": "iptables",
                "iptables-save": "iptables", "ip": "iproute2"}
NODE_BINARIES = ("coredns", "local-path-provisioner")
BUILD_NODE = "scripts/build-node.sh"


class NodeError(RuntimeError):
    pass


def log_line(msg: str) -> None:
    print(f"[node {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def node_bin_dir() -> Path:
    out = subprocess.run([str(REPO / BUILD_NODE), "--print-bin"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def preflight() -> dict[str, Path]:
    """Everything the node needs, or NodeError naming the command that provides it."""
    if os.geteuid() != 0:
        raise NodeError("the real-node tier needs root (containerd, kubelet, netfilter, mounts)")
    problems = []
    for tool, package in DEBIAN_TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"{tool} not on PATH (Debian package {package}): run {BUILD_NODE}")
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not (CNI_BIN / plugin).is_file():
            problems.append(f"CNI plugin {CNI_BIN / plugin} missing (containernetworking-plugins): "
                            f"run {BUILD_NODE}")
    found: dict[str, Path] = {}
    for name in ("kubelet", "kube-proxy"):
        found[name] = bin_dir() / name
        if not os.access(found[name], os.X_OK):
            problems.append(f"{found[name]} missing: run scripts/build-k8s.sh (or: make k8s)")
    for name in NODE_BINARIES:
        found[name] = node_bin_dir() / name
        if not os.access(found[name], os.X_OK):
            problems.append(f"{found[name]} missing: run {BUILD_NODE}")
    if not (CGROUP_FS / "memory").is_dir():
        problems.append("no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (this tier is "
                        "written for the hybrid cgroup layout of these VMs)")
    if problems:
        raise NodeError("the real node cannot start:\n  " + "\n  ".join(problems))
    return found


def host_ip() -> str:
    """The IPv4 address of the default route's interface: pods reach the API server there."""
    routes = json.loads(subprocess.run(["ip", "-4", "-j", "route", "show", "default"],
                                       capture_output=True, text=True, check=True).stdout)
    if not routes:
        raise NodeError("no IPv4 default route: cannot pick an address pods can reach")
    addrs = json.loads(subprocess.run(["ip", "-4", "-j", "addr", "show", "dev", routes[0]["dev"]],
                                      capture_output=True, text=True, check=True).stdout)
    return addrs[0]["addr_info"][0]["local"]


# --------------------------------------------------------------------------- host state
def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key


def save_host_state() -> None:
    """Record the sysctls before the first start; a crashed run's values are never saved over them."""
    if HOST_STATE.exists():
        return
    values = {k: _sysctl_path(k).read_text().strip() for k in SYSCTLS if _sysctl_path(k).exists()}
    HOST_STATE.write_text(json.dumps({"sysctls": values}, indent=1))


def _restore_sysctls(done: list[str]) -> None:
    if not HOST_STATE.exists():
        return
    for key, value in json.loads(HOST_STATE.read_text())["sysctls"].items():
        path = _sysctl_path(key)
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value)
            done.append(f"sysctl {key.replace('/', '.')}={value}")
    HOST_STATE.unlink()


def _our_cgroups() -> list[Path]:
    return [d / CGROUP_NAME for d in sorted(CGROUP_FS.iterdir()) if (d / CGROUP_NAME).is_dir()]


def _pids_in(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def _shim_pids() -> set[int]:
    """containerd-shim processes of our containerd (they outlive it by design)."""
    needle = str(NODE_RUN).encode()
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmd and needle in cmd:
                out.add(int(proc.name))
    return out


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if any(target == p or target.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(target)
    return out


def _iptables_without_our_chains(dump: str) -> tuple[str, int]:
    """iptables-save text with every KUBE-*/CNI-* chain and each rule naming one removed."""
    kept, removed = [], 0
    for line in dump.splitlines():
        words = line.split()
        if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES):
            removed += 1
            continue
        if line.startswith("-A") and any(w.startswith(CHAIN_PREFIXES) for w in words[1:]):
            removed += 1
            continue
        kept.append(line)
    return "\n".join(kept) + "\n", removed


def cleanup(log=log_line) -> list[str]:
    """Undo everything a node run leaves on the host, clean or crashed. Idempotent."""
    done: list[str] = []
    # 1. processes: container processes (our cgroups), shims, anything else still using our paths
    for _ in range(20):
        pids = _shim_pids() | set().union(*(_pids_in(c) for c in _our_cgroups()) or [set()])
        pids.discard(os.getpid())
        if not pids:
            break
        _kill_all(pids)
        done.append(f"killed {len(pids)} leftover processes")
        time.sleep(0.25)
    # 2. mounts: overlay rootfs, shm, projected tokens, emptyDirs, pod netns
    netns = [str(p) for p in NETNS_DIR.glob("cni-*")] if NETNS_DIR.is_dir() else []
    for _ in range(5):
        mounts = _mounts_under((str(NODE_ROOT), str(NODE_RUN), *netns))
        if not mounts:
            break
        for target in sorted(set(mounts), key=len, reverse=True):
            if subprocess.run(["umount", target], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True)
        done.append(f"unmounted {len(set(mounts))} mounts")
    for ns in netns:
        with contextlib.suppress(OSError):
            os.remove(ns)
            done.append(f"removed {ns}")
    # 3. cgroups, deepest first
    for top in _our_cgroups():
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
            done.append(f"removed cgroup {top}")
    # 4. network: the bridge (pod veths went with their netns), netfilter chains
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "del", BRIDGE], check=True)
        done.append(f"deleted bridge {BRIDGE}")
    if shutil.which("iptables-save"):
        dump = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        cleaned, removed = _iptables_without_our_chains(dump)
        if removed:
            subprocess.run(["iptables-restore"], input=cleaned, text=True, check=True)
            done.append(f"removed {removed} iptables chains and rules")
    # 5. sysctls, files
    _restore_sysctls(done)
    for d in (NODE_ROOT, NODE_RUN):
        if d.exists():
            shutil.rmtree(d)
            done.append(f"removed {d}")
    for line in done:
        log(f"cleanup: {line}")
    return done


# --------------------------------------------------------------------------- configuration
def _render(name: str, **values) -> str:
    return string.Template((HERE / "config" / name).read_text()).substitute(**values)


@dataclass
class Node:
    """A real node joined to ``plane`` (which must advertise :func:`host_ip`)."""

    plane: ControlPlane
    images: dict = field(default_factory=dict)   # name -> tests.harness.node.images.Image
    log: object = log_line
    components: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.binaries = preflight()
        self.ip = self.plane.advertise_address
        if not self.ip:
            raise NodeError("the control plane must advertise an address pods can reach (advertise_address)")
        self.socket = NODE_RUN / "containerd" / "containerd.sock"
        self.config_dir = NODE_ROOT / "config"

    # ---- processes
    def _component(self, name: str, argv: list) -> Component:
        c = Component(name, [str(a) for a in argv], self.plane.log_dir / f"{name}.log")
        self.components[name] = c
        c.start()
        return c

    def _procs(self) -> list[Component]:
        return [*self.plane.components.values(), *self.components.values()]

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    # ---- bring-up
    def start(self, timeout: float = 120) -> "Node":
        t0 = time.monotonic()
        cleanup(self.log)
        save_host_state()
        # pod -> Service -> pod on one bridge: the DNAT reply must pass netfilter too
        _sysctl_path("net/bridge/bridge-nf-call-iptables").write_text("1")
        self._write_configs()
        self._start_containerd(timeout)
        self.timings["containerd"] = time.monotonic() - t0
        self._import_images()
        self.timings["images imported"] = time.monotonic() - t0
        self._start_kubelet(timeout)
        self.timings["node Ready"] = time.monotonic() - t0
        self._start_kube_proxy(timeout)
        self._install_addons(timeout)
        self.timings["add-ons ready"] = time.monotonic() - t0
        return self

    def _write_configs(self) -> None:
        for d in (self.config_dir, NODE_ROOT / "cni" / "net.d", NODE_ROOT / "local-path", NODE_RUN):
            d.mkdir(parents=True, exist_ok=True)
        pki = self.plane.pki
        crt, key = pki.issue("kubelet-serving", NODE_NAME, server=True, dns=[NODE_NAME], ips=[self.ip])
        self.kubelet_port, self.kubelet_healthz, self.proxy_healthz, self.proxy_metrics = (
            free_port(), free_port(), free_port(), free_port())
        values = dict(
            node_root=NODE_ROOT, node_run=NODE_RUN, socket=self.socket, pause=self.images["pause"].ref,
            cni_bin=CNI_BIN, cni_conf=NODE_ROOT / "cni" / "net.d", bridge=BRIDGE, pod_subnet=POD_SUBNET,
            pod_gateway=POD_SUBNET.rsplit(".", 1)[0] + ".1", ipam_dir=NODE_ROOT / "cni" / "ipam",
            ca=pki.ca_file, tls_cert=crt, tls_key=key, cgroup_root=f"/{CGROUP_NAME}",
            cluster_dns=CLUSTER_DNS, cluster_domain=CLUSTER_DOMAIN, node_ip=self.ip,
            kubelet_port=self.kubelet_port, kubelet_healthz=self.kubelet_healthz,
            resolv=self.config_dir / "resolv.conf", pod_logs=NODE_ROOT / "pod-logs",
            proxy_kubeconfig=self._kubeconfig("kube-proxy", "system:kube-proxy"),
            cluster_cidr=POD_CIDR, node_name=NODE_NAME,
            proxy_healthz=self.proxy_healthz, proxy_metrics=self.proxy_metrics,
        )
        # No upstream resolver is reachable from here: CoreDNS answers cluster names only.
        (self.config_dir / "resolv.conf").write_text(f"nameserver {CLUSTER_DNS}\n")
        (self.config_dir / "containerd.toml").write_text(_render("containerd.toml", **values))
        (NODE_ROOT / "cni" / "net.d" / "10-mnist-serving.conflist").write_text(_render("cni.conflist", **values))
        (self.config_dir / "kubelet.yaml").write_text(_render("kubelet.yaml", **values))
        (self.config_dir / "kube-proxy.yaml").write_text(_render("kube-proxy.yaml", **values))

    def _kubeconfig(self, stem: str, user: str, orgs=()) -> Path:
        return self.plane.component_kubeconfig(stem, user, orgs=orgs)

    def _start_containerd(self, timeout: float) -> None:
        self._component("containerd", ["containerd", f"--config={self.config_dir / 'containerd.toml'}"])
        _wait("containerd's socket", lambda: self.ctr("version", check=False).returncode == 0,
              timeout, self._procs())

    def _import_images(self) -> None:
        from tests.harness.node.images import import_images
        import_images(self.images.values(), address=str(self.socket), log=self.log)

    def _start_kubelet(self, timeout: float) -> None:
        for top in sorted(CGROUP_FS.iterdir()):
            if top.is_dir() and (top / "cgroup.procs").exists():
                (top / CGROUP_NAME).mkdir(exist_ok=True)
        cpuset = CGROUP_FS / "cpuset"
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new v1 cpuset starts empty
            (cpuset / CGROUP_NAME / knob).write_text((cpuset / knob).read_text())
        kc = self._kubeconfig("kubelet", f"system:node:{NODE_NAME}", orgs=["system:nodes"])
        self._component("kubelet", [
            self.binaries["kubelet"], f"--config={self.config_dir / 'kubelet.yaml'}", f"--kubeconfig={kc}",
            f"--root-dir={NODE_ROOT / 'kubelet'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.ip}", "--v=1",
        ])
        _wait(f"node {NODE_NAME} Ready", self._node_ready, timeout, self._procs(), interval=0.5)

    def _node_ready(self) -> bool:
        code, body = self.plane.api_get(f"/api/v1/nodes/{NODE_NAME}")
        if code != 200:
            return False
        conds = {c["type"]: c["status"] for c in json.loads(body)["status"].get("conditions", [])}
        return conds.get("Ready") == "True"

    def _start_kube_proxy(self, timeout: float) -> None:
        self._component("kube-proxy", [self.binaries["kube-proxy"],
                                       f"--config={self.config_dir / 'kube-proxy.yaml'}", "--v=1"])
        _wait("kube-proxy /healthz", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{self.proxy_healthz}/healthz", timeout=2).status == 200,
            timeout, self._procs())

    def _install_addons(self, timeout: float) -> None:
        docs = _render("addons.yaml", coredns=self.images["coredns"].ref,
                       provisioner=self.images["local-path-provisioner"].ref,
                       helper=self.images["helper"].ref, cluster_dns=CLUSTER_DNS,
                       cluster_domain=CLUSTER_DOMAIN, storage_class=STORAGE_CLASS,
                       volumes_dir=NODE_ROOT / "local-path")
        self.plane.kubectl("apply", "-f", "-", input=docs)
        for ns, deploy in (("kube-system", "coredns"), ("local-path-storage", "local-path-provisioner")):
            try:
                self.plane.kubectl("rollout", "status", f"deployment/{deploy}", "-n", ns,
                                   f"--timeout={int(timeout)}s", timeout=timeout + 10)
            except AssertionError as e:
                pods = self.plane.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
                raise NodeError(f"{ns}/{deploy} never became available: {e}\n{pods}\n"
                                f"{self.components['kubelet'].tail(30)}") from None

    # ---- teardown
    def stop(self) -> None:
        for name in ("kube-proxy", "kubelet", "containerd"):
            c = self.components.get(name)
            if c is not None:
                c.stop(grace=5)
        cleanup(self.log)

    def logs_summary(self, lines: int = 20) -> str:
        return "\n".join(f"--- {c.name} ({c.log}):\n{c.tail(lines)}" for c in self.components.values())


def start_cluster(*, images: dict, keep_workdir: bool = False, log=log_line) -> tuple[ControlPlane, Node]:
    """A control plane that pods can reach (no KWOK) plus one real node."""
    preflight()
    plane = ControlPlane(advertise_address=host_ip(), keep_workdir=keep_workdir)
    try:
        plane.start()
        plane.start_pods_tier(kwok=False)
        node = Node(plane, images=images, log=log).start()
    except BaseException:
        plane.stop()
        cleanup(log)
        raise
    return plane, node


__all__ = ["Node", "NodeError", "cleanup", "preflight", "host_ip", "start_cluster",
           "STORAGE_CLASS", "NODE_NAME"]
