"""Stage subprocesses for the local runner: run, stream progress, stop cleanly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO


@dataclass
class StageOutcome:
    returncode: int
    result: dict
    seconds: float
    log: Path


def read_result(path: Path) -> dict:
    """A result JSON file's object; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pump(stream: TextIO, log: TextIO, echo: Callable[[str], None]) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        echo(line.rstrip("\n"))


def run_stage(argv: list[str], result_path: Path, log_path: Path,
              echo: Callable[[str], None], env: dict | None = None) -> StageOutcome:
    """Run one stage to completion, echoing its stderr progress lines."""
    result_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if result_path.exists():
        result_path.unlink()
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True)
        try:
            _pump(proc.stderr, log, echo)
            code = proc.wait()
        except KeyboardInterrupt:
            stop(proc)
            raise
    return StageOutcome(code, read_result(result_path), time.time() - started, log_path)


def run_indexed(argvs: list[list[str]], result_paths: list[Path], log_paths: list[Path],
                echo: Callable[[str], None], env: dict) -> StageOutcome:
    """An Indexed Job here: one stage process per index, started together, each
    with its JOB_COMPLETION_INDEX; index 0's result is the outcome, which fails
    when any index failed."""
    for path in (*result_paths, *log_paths):
        path.parent.mkdir(parents=True, exist_ok=True)
    for path in result_paths:
        if path.exists():
            path.unlink()
    started = time.time()
    logs = [path.open("w") for path in log_paths]
    procs: list[subprocess.Popen] = []
    pumps = []
    try:
        for i, argv in enumerate(argvs):
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True, start_new_session=True,
                                          env={**env, "JOB_COMPLETION_INDEX": str(i)}))
            pumps.append(threading.Thread(target=_pump, args=(procs[-1].stderr, logs[i], echo),
                                          daemon=True))
            pumps[-1].start()
        codes = [proc.wait() for proc in procs]
        for pump in pumps:
            pump.join(timeout=5)
    except KeyboardInterrupt:
        for proc in procs:
            stop(proc)
        raise
    finally:
        for log in logs:
            log.close()
    code = codes[0] or next((c for c in codes if c), 0)
    return StageOutcome(code, read_result(result_paths[0]), time.time() - started, log_paths[0])


class Background:
    """A long-running stage (serve): started, waited on until its result appears."""

    def __init__(self, argv: list[str], result_path: Path, log_path: Path,
                 echo: Callable[[str], None], env: dict | None = None):
        result_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if result_path.exists():
            result_path.unlink()
        self.result_path = result_path
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        self._pump = threading.Thread(target=_pump, args=(self.proc.stderr, self._log, echo),
                                      daemon=True)
        self._pump.start()

    def wait_result(self, timeout: float) -> StageOutcome:
        started = time.time()
        while time.time() - started < timeout:
            result = read_result(self.result_path)
            if result:
                return StageOutcome(0 if result.get("state") != "Failed" else 1, result,
                                    time.time() - started, self.log_path)
            code = self.proc.poll()
            if code is not None:
                self._pump.join(timeout=5)
                return StageOutcome(code or 1, read_result(self.result_path),
                                    time.time() - started, self.log_path)
            time.sleep(0.2)
        return StageOutcome(124, {"state": "Failed", "reason": "Timeout",
                                  "message": f"no result after {int(timeout)} s"},
                            time.time() - started, self.log_path)

    def stop(self) -> None:
        stop(self.proc)
        self._pump.join(timeout=5)
        self._log.close()


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the stage's process group (it stops Triton itself), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def stage_env(repo_root: Path) -> dict:
    """The stages run with this interpreter and find mnist_jobs even uninstalled."""
    env = dict(os.environ)
    jobs = str(repo_root / "jobs")
    env["PYTHONPATH"] = jobs + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env
