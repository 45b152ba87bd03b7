"""The leader Lease on the API server: wait for it while standing by, keep it renewed
while leading, let it go on a clean stop. The rules are lease.py's; this module makes
the calls and keeps the clocks.

``mnist-serving operator --leader-lease NAME`` (the chart always passes it) calls
``Elector.wait_until_leading()`` before kopf starts: a standby registers no watch,
runs no handler, posts no Event and patches no status, and its liveness endpoint
answers (``StandbyProbe``) so the kubelet leaves it alone. Once it holds the Lease a
daemon thread renews it; when a renewal finds another holder, or none succeeded
for ``renew_deadline`` seconds, the process exits at once (os._exit: nothing else
runs, no handler finishes) and Kubernetes restarts it, as a standby.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import quote, urlparse

from kubernetes.client.exceptions import ApiException

from mnist_operator.cluster import kube, lease as L, metrics

log = logging.getLogger("mnist_operator")

#: Environment the chart sets from the downward API: this replica's name (its identity
#: in the Lease) and namespace (where the Lease lives).
POD_NAME, POD_NAMESPACE = "POD_NAME", "POD_NAMESPACE"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Exit status of a leader that lost its Lease (Kubernetes restarts it as a standby).
EXIT_LOST = 3
#: Seconds one Lease request may take: less than the renew deadline's margin.
REQUEST_TIMEOUT = 4


def identity(environ=os.environ) -> str:
    """The pod's name; outside a pod, host and process id (unique among live processes)."""
    return environ.get(POD_NAME) or f"{socket.gethostname()}-{os.getpid()}"


def lease_namespace(environ=os.environ, sa_file: str | None = None) -> str | None:
    """$POD_NAMESPACE, else the namespace of the pod's service account, else None."""
    if environ.get(POD_NAMESPACE):
        return environ[POD_NAMESPACE]
    try:
        with open(sa_file or SA_NAMESPACE_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


class LeaseAPI:
    """GET, POST and PUT of one Lease, each bounded by REQUEST_TIMEOUT."""

    def __init__(self, api, namespace: str, name: str):
        self.api, self.namespace, self.name = api, namespace, name
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        params = self.api.param_serialize(method, path, header_params=headers, body=body,
                                          auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
            status, raw = resp.status, resp.read()
        except ApiException as e:
            status, raw = e.status, e.body
        metrics.api_request(method, path, status)
        text = raw.decode() if isinstance(raw, bytes) else (raw or "")
        return status, (json.loads(text) if text and text.lstrip().startswith("{") else None)

    def read(self) -> dict | None:
        status, body = self._call("GET", f"{self.collection}/{quote(self.name)}")
        if status == 404:
            return None
        if status >= 400:
            raise kube.KubeError(status, "GET", self.collection, json.dumps(body or {}))
        return body

    def write(self, body: dict) -> dict | None:
        """Create (no resourceVersion) or replace; None when another writer came first
        (409 on either)."""
        if body["metadata"].get("resourceVersion"):
            method, path = "PUT", f"{self.collection}/{quote(self.name)}"
        else:
            method, path = "POST", self.collection
        status, answer = self._call(method, path, body)
        if status == 409:
            return None
        if status >= 400:
            raise kube.KubeError(status, method, path, json.dumps(answer or {}))
        return answer


class StandbyProbe:
    """The liveness endpoint while kopf is not running yet: 200 on its path, so a standby
    is not restarted for standing by. Closed (its port freed) before kopf serves its own."""

    def __init__(self, url: str | None):
        self.server: ThreadingHTTPServer | None = None
        if not url:
            return
        parsed = urlparse(url)
        path = parsed.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                ok = self.path.split("?", 1)[0] == path
                body = json.dumps({"standby": True} if ok else {}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the kubelet probes every few seconds: no log
                pass

        self.server = ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="standby-probe", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Elector:
    """One replica's part in the election for Lease ``name`` in ``namespace``."""

    def __init__(self, api, namespace: str, name: str, me: str, *,
                 timing: L.Timing = L.Timing(), clock: Callable[[], float] = time.monotonic,
                 exit_: Callable[[int], None] = os._exit):
        self.lease_api = LeaseAPI(api, namespace, name)
        self.namespace, self.name, self.me, self.timing = namespace, name, me, timing
        self.clock, self.exit = clock, exit_
        self.seen: L.Seen | None = None
        self.renewed_at: float | None = None
        self.lease: dict | None = None
        self.leading = False
        self._stop = threading.Event()
        self._lost, self._lost_lock = False, threading.Lock()
        self._thread: threading.Thread | None = None

    def step(self) -> L.Step:
        """Read the Lease, decide, write it when the decision says so; the Step taken."""
        try:
            lease = self.lease_api.read()
        except Exception as err:  # noqa: BLE001 - the API server away: only the deadline counts
            now = self.clock()
            if self.leading and self.renewed_at is not None \
                    and now - self.renewed_at > self.timing.renew_deadline:
                return L.Step(L.LOST, 0.0, f"no renewal for {now - self.renewed_at:.1f} s: {err}")
            log.warning("leader Lease %s/%s: %s", self.namespace, self.name, err)
            return L.Step("ReadFailed", self.timing.retry, str(err))
        now = self.clock()
        self.seen = L.observe(self.seen, lease, now)
        self.lease = lease
        step = L.decide(lease, self.me, now, self.seen, leading=self.leading,
                        renewed_at=self.renewed_at, timing=self.timing)
        if step.action not in (L.ACQUIRE, L.RENEW):
            return step
        body = L.lease_body(self.name, self.namespace, self.me, step.action, lease,
                            datetime.now(timezone.utc), self.timing)
        try:
            written = self.lease_api.write(body)
        except Exception as err:  # noqa: BLE001
            log.warning("leader Lease %s/%s: %s failed: %s", self.namespace, self.name,
                        step.action.lower(), err)
            return L.Step(step.action + "Failed", self.timing.retry, str(err))
        if written is None:  # another replica wrote first: look again soon
            return L.Step(step.action + "Conflict", self.timing.retry, "another replica wrote first")
        self.lease, self.renewed_at = written, now
        self.seen = L.observe(self.seen, written, now)
        return step

    def wait_until_leading(self) -> None:
        """Block, standing by, until this replica holds the Lease."""
        metrics.set_leader(False)
        said = None
        while True:
            step = self.step()
            if step.action == L.ACQUIRE:
                self.leading = True
                metrics.set_leader(True)
                log.info("leader Lease %s/%s acquired by %s (%s): acting", self.namespace,
                         self.name, self.me, step.why)
                return
            holder = L.holder(self.lease)
            if step.action == L.STANDBY and holder != said:
                log.info("standing by: leader Lease %s/%s is held by %s; %s waits and does "
                         "nothing until it expires", self.namespace, self.name, holder, self.me)
                said = holder
            time.sleep(step.wait)

    def keep_renewing(self) -> None:
        """Renew in a daemon thread until release(); exit the process when the Lease is lost.
        A second thread watches the deadline alone, so a request that hangs cannot keep
        a leader acting past it."""
        self._thread = threading.Thread(target=self._renew_loop, name="leader-lease", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch_deadline, name="leader-deadline", daemon=True).start()

    def _watch_deadline(self) -> None:
        while not self._stop.wait(0.5):
            renewed = self.renewed_at
            if self.leading and renewed is not None \
                    and self.clock() - renewed > self.timing.renew_deadline:
                self.lost(f"no renewal for {self.clock() - renewed:.1f} s "
                          f"(the deadline is {self.timing.renew_deadline:g} s)")
                return

    def _renew_loop(self) -> None:
        wait = self.timing.renew
        while not self._stop.wait(wait):
            step = self.step()
            if self._stop.is_set():
                return
            if step.action == L.LOST:
                self.lost(step.why)
                return
            wait = step.wait if step.action == L.RENEW else self.timing.retry

    def lost(self, why: str) -> None:
        with self._lost_lock:
            if self._lost:
                return
            self._lost = True
        self.leading = False
        metrics.set_leader(False)
        log.error("leader Lease %s/%s lost by %s: %s; exiting at once so that nothing more "
                  "is done by this replica (it restarts as a standby)", self.namespace, self.name,
                  self.me, why)
        logging.shutdown()
        self.exit(EXIT_LOST)

    def release(self) -> None:
        """A clean stop: hand the Lease over now instead of after its duration."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT + 1)
        if not self.leading:
            return
        self.leading = False
        metrics.set_leader(False)
        try:
            lease = self.lease_api.read()
            if L.holder(lease) == self.me:
                self.lease_api.write(L.released_body(lease, datetime.now(timezone.utc)))
                log.info("leader Lease %s/%s released by %s", self.namespace, self.name, self.me)
        except Exception as err:  # noqa: BLE001 - it expires by itself then
            log.warning("leader Lease %s/%s not released: %s", self.namespace, self.name, err)


__all__ = ["Elector", "StandbyProbe", "LeaseAPI", "identity", "lease_namespace", "EXIT_LOST",
           "POD_NAME", "POD_NAMESPACE"]
