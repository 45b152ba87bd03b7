"""Stage serve (local only): run a real tritonserver until SIGTERM/SIGINT.

    python -m mnist_jobs.serve --model-repo runs/demo/model_repo \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 --result runs/demo/results/serve.json

In Kubernetes Triton is a Deployment; this stage is the local stand-in. It
refuses ports already in use before starting, waits for
``/v2/health/ready`` (progress on stderr), writes the result (endpoints,
models and their states, ``server: Ready``) as soon as the server is ready,
then stays up. On SIGTERM or SIGINT it stops Triton (SIGTERM to its process
group, SIGKILL after a timeout) and rewrites the result with
``server: Stopped``. If Triton dies on its own the stage fails.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from mnist_jobs.lib.stage_cli import InputError, StageError, run_stage, stage_parser, write_result
from mnist_jobs.lib.triton import TritonServer, port_in_use, repository_index


def _models(index: list[dict]) -> dict[str, str]:
    return {m["name"]: m.get("state", "UNKNOWN") for m in index}


#: The fields of a result (docs/CONTRACT.md is generated from these).
RESULT_FIELDS = {
    "server": "Ready, then Stopped", "endpoints": "http, grpc and metrics URLs",
    "models": "each model's state in Triton's repository index",
    "tritonserver": "which tritonserver binary ran", "readySeconds": "start to ready",
    "log": "path of Triton's log", "stoppedBy": "the signal that stopped it",
    "tritonExitCode": "tritonserver's exit code (-1: unknown)",
}


def parser():
    p = stage_parser("serve", "Serve a model repository with a local tritonserver until stopped.")
    p.add_argument("--model-repo", type=Path, required=True)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--host", default="127.0.0.1", help="address the endpoints are reported on")
    p.add_argument("--ready-timeout", type=int, default=180, help="seconds to wait for readiness")
    p.add_argument("--log", type=Path, help="tritonserver log (default: <model-repo>/../triton.log)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()

    def body(a):
        if not (a.model_repo / ".").is_dir():
            raise InputError("--model-repo", f"{a.model_repo} is not a directory")
        ports = {"--http-port": a.http_port, "--grpc-port": a.grpc_port,
                 "--metrics-port": a.metrics_port}
        if len(set(ports.values())) != 3:
            raise InputError("--http-port", "the http, grpc and metrics ports must differ")
        for flag, port in ports.items():
            if not 0 < port < 65536:
                raise InputError(flag, f"{port} is not a port number")
            if port_in_use(port):
                raise InputError(flag, f"port {port} is already in use")

        stop = threading.Event()
        stopped_by: list[str] = []

        def on_signal(signum, _frame):
            stopped_by.append(signal.Signals(signum).name)
            stop.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        log = a.log or a.model_repo.resolve().parent / "triton.log"
        server = TritonServer(a.model_repo, a.http_port, a.grpc_port, a.metrics_port,
                              log_path=log, host=a.host)
        print(f"serve: starting tritonserver ({server.install.source}) on "
              f"http {a.http_port}, grpc {a.grpc_port}, metrics {a.metrics_port}; log {log}",
              file=sys.stderr, flush=True)
        started = time.time()
        try:
            server.start()
            server.wait_ready(a.ready_timeout, lambda w: print(
                f"serve: waiting for Triton to be ready ({int(w)} s)", file=sys.stderr, flush=True))
            models = _models(repository_index(server.http_url))
            fields = {
                "server": "Ready",
                "endpoints": {"http": f"http://{server.http_url}", "grpc": server.grpc_url,
                              "metrics": f"http://{server.metrics_url}/metrics"},
                "models": models, "tritonserver": server.install.source,
                "readySeconds": int(round(time.time() - started)), "log": str(log),
            }
            not_ready = sorted(n for n, s in models.items() if s != "READY")
            if not_ready:
                raise StageError(f"models not ready: {', '.join(not_ready)} (see {log})",
                                 reason="ModelNotReady")
            text = write_result(a.result, {"stage": "serve", "state": "Succeeded", **fields})
            print(text, flush=True)
            print(f"serve: ready ({', '.join(models)}); Ctrl-C or SIGTERM stops it",
                  file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                if server.proc is None or server.proc.poll() is not None:
                    raise StageError(f"tritonserver exited unexpectedly; see {log}",
                                     reason="ServerExited")
        finally:
            code = server.stop()
            for s, h in old.items():
                signal.signal(s, h)
        print(f"serve: tritonserver stopped (exit {code})", file=sys.stderr, flush=True)
        return {**fields, "server": "Stopped", "stoppedBy": stopped_by[0] if stopped_by else "",
                "tritonExitCode": code if code is not None else -1}

    return run_stage("serve", p, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
