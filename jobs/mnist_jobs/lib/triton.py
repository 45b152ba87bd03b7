"""Locating and launching a real ``tritonserver`` (shared by serve, analyze, tests).

Where the server comes from, in order:

1. ``$MNIST_TRITONSERVER``: path to a ``tritonserver`` binary; its backends
   are expected in ``../backends`` (the layout of ``/opt/tritonserver``).
2. The ``nvidia-pytriton`` wheel in the running interpreter
   (``pytriton/tritonserver/bin/tritonserver``). That build runs on the CPU
   and has only the python backend.
3. ``tritonserver`` on ``PATH`` (the NGC ``tritonserver`` image,
   ``/opt/tritonserver``).

What the pytriton build needs and how we give it, without touching the
installed wheel:

* Its shared libraries live in ``site-packages/nvidia_pytriton.libs``; the
  server binary finds them through its RPATH, but a python-backend stub
  copied elsewhere does not, so ``LD_LIBRARY_PATH`` gets that directory.
* The python backend runs each model in ``triton_python_backend_stub``,
  which it looks for next to ``libtriton_python.so``. The wheel ships one
  stub per Python version under ``python_backend_stubs/<X.Y>/`` and none in
  the backend directory. We build a private backend directory (a cache,
  outside the wheel) holding the backend library, its utils module and the
  stub for the Python version of *this* interpreter, because the models
  import numpy/onnxruntime from this interpreter's site-packages.
* The stub embeds ``libpython<X.Y>``; we put this interpreter's LIBDIR
  first on ``LD_LIBRARY_PATH`` so it is the same build, and put this
  interpreter's site-packages on ``PYTHONPATH`` (a venv is not found by an
  embedded interpreter on its own).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mnist_jobs.lib.stage_cli import InputError, StageError


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path            # backend directory as shipped
    libs: Path | None         # extra shared-library directory (pytriton)
    stubs: Path | None        # python_backend_stubs/<X.Y>/ (pytriton)
    source: str               # "env", "pytriton" or "path"


def find_tritonserver() -> TritonInstall:
    env = os.environ.get("MNIST_TRITONSERVER")
    if env:
        binary = Path(env)
        if not binary.is_file():
            raise StageError(f"MNIST_TRITONSERVER={env} is not a file", reason="TritonNotFound")
        return TritonInstall(binary, binary.parent.parent / "backends", None, None, "env")
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0])
        binary = root / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return TritonInstall(binary, root / "tritonserver" / "backends",
                                 root.parent / "nvidia_pytriton.libs",
                                 root / "tritonserver" / "python_backend_stubs", "pytriton")
    which = shutil.which("tritonserver")
    if which:
        binary = Path(which).resolve()
        return TritonInstall(binary, binary.parent.parent / "backends", None, None, "path")
    raise StageError("tritonserver not found: install nvidia-pytriton (pip install "
                     "'mnist-serving[local]'), set MNIST_TRITONSERVER, or put it on PATH",
                     reason="TritonNotFound")


def _cache_dir() -> Path:
    base = os.environ.get("MNIST_SERVING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mnist-serving")
    return Path(base)


def backend_directory(install: TritonInstall) -> Path:
    """A backend directory whose python backend has a stub for this Python.

    For a stock install (the stub already sits beside libtriton_python.so)
    this is the shipped directory. For pytriton it is a private copy under
    the cache, rebuilt when the wheel's files change (size+mtime key).
    """
    if install.stubs is None:
        return install.backends
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StageError(f"the pytriton wheel has no python backend stub for Python {version}",
                         reason="TritonNotFound")
    src = install.backends / "python"
    files = [src / "libtriton_python.so", src / "triton_python_backend_utils.py", stub]
    key = "-".join(f"{f.stat().st_size:x}{int(f.stat().st_mtime):x}" for f in files)
    dest_root = _cache_dir() / "triton-backends" / f"py{version}-{key}"
    dest = dest_root / "python"
    if not (dest / "triton_python_backend_stub").is_file():
        tmp = dest_root.with_name(dest_root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "python").mkdir(parents=True)
        for f in files:
            shutil.copy2(f, tmp / "python" / f.name)
        try:
            tmp.rename(dest_root)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return dest_root


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    lib_dirs: list[str] = []
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and (Path(libdir) / ldlib).exists():
        lib_dirs.append(libdir)
    if install.libs is not None and install.libs.is_dir():
        lib_dirs.append(str(install.libs))
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = ":".join(lib_dirs)
    paths = sysconfig.get_paths()
    py_dirs = list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    if env.get("PYTHONPATH"):
        py_dirs.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(py_dirs)
    env["PATH"] = os.path.dirname(sys.executable) + ":" + env.get("PATH", "")
    return env


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host != "localhost" else "127.0.0.1", port))
        except OSError:
            return True
    # Also refuse when something listens on all interfaces' wildcard.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_json(url: str, method: str = "GET", body: dict | None = None,
              timeout: float = 5.0) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


def client_module(protocol: str):
    """tritonclient's module for ``protocol`` (grpc or http), imported when first asked."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def client_for(protocol: str, url: str):
    return client_module(protocol).InferenceServerClient(url=url)


def served_models(protocol: str, url: str) -> dict[str, str]:
    """name -> state, from the server's repository index."""
    try:
        c = client_for(protocol, url)
        if protocol == "grpc":
            index = c.get_model_repository_index(as_json=True).get("models", [])
        else:
            index = c.get_model_repository_index()
    except Exception as exc:  # connection refused, wrong protocol on the port, ...
        raise InputError("--url", f"cannot read the repository index of {url} over "
                         f"{protocol}: {str(exc).splitlines()[0][:200]}") from None
    return {m["name"]: m.get("state", "") for m in index}


def served_config(client, protocol: str, model: str) -> dict:
    """A served model's config as one dict over either protocol (gRPC's JSON wraps it)."""
    cfg = client.get_model_config(model, as_json=True) if protocol == "grpc" \
        else client.get_model_config(model)
    return cfg.get("config", cfg)


def repository_index(http_url: str, timeout: float = 5.0) -> list[dict]:
    """``POST /v2/repository/index`` -> [{name, version, state, reason}]."""
    base = http_url if "://" in http_url else f"http://{http_url}"
    status, body = http_json(f"{base}/v2/repository/index", "POST", {}, timeout)
    if status != 200 or not isinstance(body, list):
        raise StageError(f"repository index at {base} answered {status}: {body}",
                         reason="ServerNotReady")
    return body


def is_ready(http_url: str, timeout: float = 1.0) -> bool:
    base = http_url if "://" in http_url else f"http://{http_url}"
    try:
        status, _ = http_json(f"{base}/v2/health/ready", timeout=timeout)
    except (OSError, urllib.error.URLError):
        return False
    return status == 200


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the process that started it dies
    (even by SIGKILL), so a killed serve/test never leaves Triton running.
    Linux only; elsewhere a no-op."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _numpy_version() -> str:
    """The numpy the python-backend stub imports: the stub puts the interpreter's own
    site-packages before PYTHONPATH (seen on the lent GPU machine), so a numpy 1 first on
    PYTHONPATH does not hide a numpy 2 installed there. "0" when there is none."""
    from importlib.metadata import distributions
    paths = sysconfig.get_paths()
    for folder in dict.fromkeys([paths["purelib"], paths["platlib"], *sys.path]):
        for dist in distributions(name="numpy", path=[folder]):
            return dist.version
    return "0"


def stub_numpy_problem(install: TritonInstall, numpy_version: str) -> str | None:
    """Why the python backend of ``install`` cannot work with this numpy, or None.

    The python-backend stubs inside the pytriton wheel are built against
    numpy 1.x; with numpy 2 in the stub's environment, tensors cross the
    stub boundary with the wrong byte sizes and every output comes back
    empty, with no error in Triton's log (seen on the lent GPU machine, whose
    image ships numpy 2). Stock Triton images bring a stub that matches
    their own numpy, so only the pytriton build is checked.
    """
    if install.source != "pytriton":
        return None
    major = numpy_version.split(".", 1)[0]
    if major.isdigit() and int(major) >= 2:
        return (f"the python backend stub of the pytriton build needs numpy<2, but this "
                f"environment has numpy {numpy_version}: install 'numpy<2' (pip install 'numpy<2')")
    return None


class TritonServer:
    """One ``tritonserver`` child process in its own process group."""

    def __init__(self, model_repo: Path, http_port: int, grpc_port: int, metrics_port: int,
                 log_path: Path | None = None, extra_args: Iterable[str] = (),
                 host: str = "127.0.0.1", exit_timeout_s: int = 5):
        self.install = find_tritonserver()
        problem = stub_numpy_problem(self.install, _numpy_version())
        if problem:
            raise StageError(problem, reason="IncompatibleNumpy")
        self.backend_dir = backend_directory(self.install)
        self.model_repo = Path(model_repo).resolve()
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.host = host
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.exit_timeout_s = exit_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._log_start = 0

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"{self.host}:{self.ports['metrics']}"

    def command(self) -> list[str]:
        return [str(self.install.binary), f"--model-repository={self.model_repo}",
                f"--backend-directory={self.backend_dir}",
                f"--http-port={self.ports['http']}", f"--grpc-port={self.ports['grpc']}",
                f"--metrics-port={self.ports['metrics']}",
                "--allow-metrics=true", "--exit-on-error=true",
                f"--exit-timeout-secs={self.exit_timeout_s}",
                *self.extra_args]

    def start(self) -> "TritonServer":
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
            self._log_start = self._log.tell()
            out = self._log
        else:
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=server_env(self.install),
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def log_tail(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def _first_error(self) -> str:
        """': <first error line of the log>' or ''."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_start)
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:  # a model that failed to load says why
            if "failed to load" in line:
                return ": " + line.split("] ", 1)[-1].strip().strip('"').split("\\n")[0][:300]
        noise = ("CudaDriverHelper", "NVML", "GPU metrics")
        for line in lines:
            if line[:1] == "E" and not any(n in line for n in noise):
                return ": " + line.split("] ", 1)[-1].strip()[:300]
        return ""

    def wait_ready(self, timeout: float = 120.0,
                   progress: Callable[[float], None] | None = None) -> None:
        assert self.proc is not None
        start = time.monotonic()
        last = 0.0
        while True:
            code = self.proc.poll()
            if code is not None:
                raise StageError(f"tritonserver exited with code {code} before it was ready"
                                 f"{self._first_error()}; log: {self.log_path}",
                                 reason="ServerFailed")
            if is_ready(self.http_url):
                return
            waited = time.monotonic() - start
            if waited > timeout:
                self.stop()
                raise StageError(f"tritonserver not ready after {int(timeout)} s; "
                                 f"log: {self.log_path}", reason="ServerNotReady")
            if progress is not None and waited - last >= 2.0:
                last = waited
                progress(waited)
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server's process group, escalate to SIGKILL; reap it."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                code = proc.wait(10)
            # stubs are in the same session/group; make sure none outlived it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_explicit(repo: Path, out: Path) -> TritonServer:
    """A tritonserver on ``repo`` in explicit model-control mode, on free ports, ready:
    the one analyze (remote mode) and confirm measure when no sidecar runs it."""
    h, g, m = free_ports(3)
    server = TritonServer(repo, h, g, m, log_path=out / "triton.log",
                          extra_args=["--model-control-mode=explicit"])
    server.start()
    server.wait_ready(300)
    return server


def add_launch_flags(p, metrics_when_left_out: str) -> None:
    """The flags of a stage that measures its own Triton: started by the stage
    (local), or the pod's sidecar (remote, the operator's SIDECAR_ARGS)."""
    p.add_argument("--triton-launch-mode", choices=("local", "remote"), default="local")
    p.add_argument("--triton-http-endpoint", help="remote mode: HOST:PORT")
    p.add_argument("--triton-grpc-endpoint", help="remote mode: HOST:PORT")
    p.add_argument("--triton-metrics-url",
                   help=f"remote mode: http://HOST:PORT/metrics ({metrics_when_left_out})")


def check_launch_flags(a) -> None:
    if a.triton_launch_mode == "remote" and not (a.triton_http_endpoint
                                                 and a.triton_grpc_endpoint):
        raise InputError("--triton-http-endpoint", "remote launch mode needs "
                         "--triton-http-endpoint and --triton-grpc-endpoint")
