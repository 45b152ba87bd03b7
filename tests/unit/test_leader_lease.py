"""The leader Lease: the pure rules (cluster/lease.py) and the elector that carries
them out (cluster/leader.py) against an in-memory Lease store with the API server's
optimistic concurrency (a write with a stale resourceVersion is refused with 409)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from mnist_operator.cluster import lease as L
from mnist_operator.cluster import leader, metrics

T = L.Timing()  # 15 s duration, renew every 5 s, deadline 10 s, standby every 2 s
WALL = datetime(2026, 7, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def a_lease(holder: str, version: str = "7", duration: int = 15) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "op-leader", "namespace": "sys", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": "2026-07-01T11:00:00.000000Z",
                     "renewTime": "2026-07-01T11:59:58.000000Z", "leaseTransitions": 3}}


def decide(lease, me="b", now=100.0, since=100.0, leading=False, renewed_at=None):
    seen = L.observe(None, lease, since)
    return L.decide(lease, me, now, seen, leading=leading, renewed_at=renewed_at, timing=T)


# --------------------------------------------------------------------------- the rules
def test_no_lease_is_created_at_once():
    assert decide(None).action == L.ACQUIRE


def test_a_lease_held_by_another_is_waited_out_on_my_own_clock():
    lease = a_lease("a")
    step = decide(lease, now=100.0, since=100.0)
    assert step.action == L.STANDBY and step.wait == T.retry and "a holds it" in step.why
    assert decide(lease, now=114.9, since=100.0).action == L.STANDBY
    near = decide(lease, now=114.0, since=100.0)
    assert near.wait == pytest.approx(1.0)  # looks again as it expires, not 2 s later
    took = decide(lease, now=115.0, since=100.0)
    assert took.action == L.ACQUIRE and "has not renewed it for 15.0 s" in took.why


def test_renew_time_is_never_trusted_only_an_unchanged_version():
    """A renewTime far in the past (another host's clock) does not make it expired: the
    first sight of a version starts the clock."""
    old = a_lease("a")
    old["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    assert decide(old, now=100.0, since=100.0).action == L.STANDBY


def test_observe_keeps_the_first_sight_of_a_version_and_restarts_on_a_new_one():
    first = L.observe(None, a_lease("a", "7"), 10.0)
    assert L.observe(first, a_lease("a", "7"), 20.0) == L.Seen("7", 10.0)
    assert L.observe(first, a_lease("a", "8"), 20.0) == L.Seen("8", 20.0)   # renewed
    assert L.observe(first, None, 20.0) == L.Seen(None, 20.0)               # deleted


def test_the_duration_written_in_the_lease_counts():
    lease = a_lease("a", duration=30)
    assert decide(lease, now=120.0, since=100.0).action == L.STANDBY
    assert decide(lease, now=130.0, since=100.0).action == L.ACQUIRE


def test_a_released_lease_is_taken_at_once():
    step = decide(a_lease(""), now=100.0, since=100.0)
    assert step.action == L.ACQUIRE and step.why == "released"


def test_the_leader_renews_its_own_lease():
    step = decide(a_lease("b"), leading=True, renewed_at=97.0)
    assert (step.action, step.wait) == (L.RENEW, T.renew)


def test_my_own_name_from_an_earlier_start_is_taken_back_at_once():
    """The same pod's container, restarted: the process that held it is gone."""
    assert decide(a_lease("b"), leading=False).action == L.ACQUIRE


def test_a_leader_that_sees_another_holder_has_lost():
    step = decide(a_lease("a"), leading=True, renewed_at=99.0)
    assert step.action == L.LOST and "a holds it now" in step.why


def test_a_leader_past_its_renew_deadline_has_lost_whatever_the_lease_says():
    step = decide(a_lease("b"), leading=True, now=110.5, renewed_at=100.0)
    assert step.action == L.LOST and "no renewal for 10.5 s" in step.why
    assert decide(a_lease("b"), leading=True, now=110.0, renewed_at=100.0).action == L.RENEW


def test_the_leader_stops_before_any_standby_may_take_over():
    """The standby's clock starts no earlier than the leader's last renewal was written,
    and it waits the whole duration; the leader gives up after the shorter deadline."""
    assert T.renew < T.renew_deadline < T.duration
    with pytest.raises(ValueError):
        L.Timing(duration=10, renew=5, renew_deadline=10)
    with pytest.raises(ValueError):
        L.Timing(retry=20)


def test_lease_bodies_carry_the_version_read_and_count_transitions():
    created = L.lease_body("op-leader", "sys", "b", L.ACQUIRE, None, WALL, T)
    assert created["metadata"] == {"name": "op-leader", "namespace": "sys"}
    assert created["spec"] == {"holderIdentity": "b", "leaseDurationSeconds": 15,
                               "acquireTime": "2026-07-01T12:00:00.123456Z",
                               "renewTime": "2026-07-01T12:00:00.123456Z", "leaseTransitions": 0}
    taken = L.lease_body("op-leader", "sys", "b", L.ACQUIRE, a_lease("a"), WALL, T)
    assert taken["metadata"]["resourceVersion"] == "7"
    assert taken["spec"]["leaseTransitions"] == 4 and taken["spec"]["holderIdentity"] == "b"
    renewed = L.lease_body("op-leader", "sys", "b", L.RENEW, a_lease("b"), WALL, T)
    assert renewed["spec"]["acquireTime"] == "2026-07-01T11:00:00.000000Z"  # kept
    assert renewed["spec"]["renewTime"] == "2026-07-01T12:00:00.123456Z"
    assert renewed["spec"]["leaseTransitions"] == 3
    with pytest.raises(ValueError):
        L.lease_body("op-leader", "sys", "b", L.STANDBY, a_lease("a"), WALL, T)
    released = L.released_body(a_lease("b"), WALL)
    assert released["spec"]["holderIdentity"] == "" and released["spec"]["leaseDurationSeconds"] == 1
    assert released["metadata"]["resourceVersion"] == "7"


# --------------------------------------------------------------------------- the elector
class Store:
    """One Lease as the API server keeps it: a new resourceVersion per write, 409 for a
    create of an existing object or a write carrying a stale version."""

    def __init__(self):
        self.obj: dict | None = None
        self.version = 0
        self.down = False

    def read(self):
        if self.down:
            raise ConnectionError("API server unreachable")
        return copy.deepcopy(self.obj)

    def write(self, body):
        if self.down:
            raise ConnectionError("API server unreachable")
        rv = body["metadata"].get("resourceVersion")
        if (self.obj is None) != (rv is None) or (rv and rv != self.obj["metadata"]["resourceVersion"]):
            return None
        self.version += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.obj)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def elector(store, clock, me, exits):
    e = leader.Elector(None, "sys", "op-leader", me, timing=T, clock=clock, exit_=exits.append)
    e.lease_api = store
    return e


def test_two_replicas_one_leads_the_other_takes_over_after_the_duration():
    store, clock, exits = Store(), Clock(), []
    a, b = elector(store, clock, "a", exits), elector(store, clock, "b", exits)
    assert a.step().action == L.ACQUIRE
    a.leading = True
    assert b.step().action == L.STANDBY
    for _ in range(4):          # a renews every 5 s; b never gets it
        clock.now += T.renew
        assert a.step().action == L.RENEW
        assert b.step().action == L.STANDBY
    # a dies right after a renewal: b took its first look at this version then
    clock.now += 0.5
    assert b.step().action == L.STANDBY
    clock.now += T.duration - 1
    assert b.step().action == L.STANDBY
    clock.now += 1
    assert b.step().action == L.ACQUIRE
    assert store.obj["spec"]["holderIdentity"] == "b" and store.obj["spec"]["leaseTransitions"] == 1
    # a, had it only been paused, finds it has lost (and would exit)
    a_step = a.step()
    assert a_step.action == L.LOST
    assert exits == []


def test_only_one_of_two_racing_replicas_wins_the_create():
    store, clock, exits = Store(), Clock(), []
    a, b = elector(store, clock, "a", exits), elector(store, clock, "b", exits)
    lease_a, lease_b = a.lease_api.read(), b.lease_api.read()   # both see no Lease
    assert lease_a is None and lease_b is None
    body_a = L.lease_body("op-leader", "sys", "a", L.ACQUIRE, None, WALL, T)
    body_b = L.lease_body("op-leader", "sys", "b", L.ACQUIRE, None, WALL, T)
    assert store.write(body_a) is not None and store.write(body_b) is None
    assert b.step().action == L.STANDBY


def test_a_leader_cut_off_from_the_api_server_exits_at_its_deadline():
    store, clock, exits = Store(), Clock(), []
    a = elector(store, clock, "a", exits)
    assert a.step().action == L.ACQUIRE
    a.leading = True
    store.down = True
    clock.now += T.renew
    failed = a.step()                           # a failed look: try again soon
    assert (failed.action, failed.wait) == ("ReadFailed", T.retry)
    clock.now += T.renew_deadline - T.renew + 0.1
    step = a.step()
    assert step.action == L.LOST and "no renewal for 10.1 s" in step.why


def test_release_leaves_no_holder_and_a_standby_takes_it_at_its_next_look():
    store, clock, exits = Store(), Clock(), []
    a, b = elector(store, clock, "a", exits), elector(store, clock, "b", exits)
    a.step()
    a.leading = True
    assert b.step().action == L.STANDBY
    a.release()
    assert store.obj["spec"]["holderIdentity"] == ""
    clock.now += T.retry
    assert b.step().action == L.ACQUIRE and store.obj["spec"]["holderIdentity"] == "b"


def test_lost_sets_the_metric_and_exits_once(caplog):
    store, clock, exits = Store(), Clock(), []
    a = elector(store, clock, "a", exits)
    a.leading = True
    metrics.set_leader(True)
    a.lost("b holds it now")
    a.lost("again")
    assert exits == [leader.EXIT_LOST]
    assert metrics.REGISTRY.get_sample_value("mnist_serving_leader") == 0
    metrics.set_leader(True)


def test_identity_and_namespace_from_the_downward_api(tmp_path):
    assert leader.identity({"POD_NAME": "op-7d9f-abcde"}) == "op-7d9f-abcde"
    assert leader.identity({}).endswith(f"-{__import__('os').getpid()}")
    sa = tmp_path / "namespace"
    sa.write_text("from-sa\n")
    assert leader.lease_namespace({"POD_NAMESPACE": "sys"}, str(sa)) == "sys"
    assert leader.lease_namespace({}, str(sa)) == "from-sa"
    assert leader.lease_namespace({}, str(tmp_path / "missing")) is None


def test_the_standby_probe_answers_on_the_liveness_path_and_frees_its_port():
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = leader.StandbyProbe(f"http://127.0.0.1:{port}/healthz")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200 and b"standby" in r.read()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    probe.close()
    with socket.socket() as s:  # kopf binds it next
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    leader.StandbyProbe(None).close()


# --------------------------------------------------------------------------- how it is run
def test_the_kustomize_bundle_runs_the_election_with_its_own_role():
    import yaml

    from mnist_operator.cluster import main as operator_main
    from mnist_operator.tools import crd as C
    from tests.harness.control_plane import REPO

    manifests = REPO / "manifests"
    dep = yaml.safe_load((manifests / "manager" / "manager.yaml").read_text())
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = operator_main.parser().parse_args(c["args"])
    assert args.leader_lease == C.LEADER_LEASE
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert downward[leader.POD_NAME] == "metadata.name"
    assert downward[leader.POD_NAMESPACE] == "metadata.namespace"
    for folder in (manifests / "rbac", manifests / "rbac" / "namespaced"):
        listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
        assert {"leader_role.yaml", "leader_role_binding.yaml"} <= set(listed)
        role = yaml.safe_load((folder / "leader_role.yaml").read_text())
        assert role == C.leader_role() and role["rules"] == C.LEADER_RULES
        binding = yaml.safe_load((folder / "leader_role_binding.yaml").read_text())
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert binding["subjects"][0]["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]


def test_a_lease_without_a_namespace_is_refused_before_anything_runs(monkeypatch, capsys):
    from mnist_operator.cluster import main as operator_main

    monkeypatch.delenv(leader.POD_NAMESPACE, raising=False)
    monkeypatch.setattr(leader, "SA_NAMESPACE_FILE", "/nonexistent/namespace")
    assert operator_main.main(["--metrics-port=0", "--leader-lease=op-leader"]) == 2
    assert "--leader-lease needs --leader-namespace" in capsys.readouterr().err


def test_the_lease_name_defaults_from_the_environment(monkeypatch):
    from mnist_operator.cluster import main as operator_main

    monkeypatch.setenv(operator_main.LEADER_LEASE, "from-env")
    assert operator_main.parser().parse_args([]).leader_lease == "from-env"
    monkeypatch.delenv(operator_main.LEADER_LEASE)
    assert operator_main.parser().parse_args([]).leader_lease is None


def test_a_standby_stops_on_sigterm_and_gives_the_handler_back(monkeypatch):
    """In a container the operator is PID 1, which the kernel sends no signal it has no
    handler for: a standby must handle SIGTERM itself (kopf, which would, has not started)."""
    import os
    import signal
    import time
    import types

    from mnist_operator.cluster import main as M

    class Standby:
        def __init__(self, *args):
            pass

        def wait_until_leading(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("SIGTERM did not stop the standby")

    monkeypatch.setattr(M.leader, "Elector", Standby)
    monkeypatch.setattr(M.leader, "StandbyProbe", lambda *a: types.SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(M.kube, "api_client", lambda **kw: None)
    monkeypatch.setattr(M.metrics, "serve", lambda port: None)
    monkeypatch.setattr(M.metrics, "set_leader", lambda leading: None)
    before = signal.getsignal(signal.SIGTERM)
    operator = types.SimpleNamespace(defaults=lambda: None)
    started = time.monotonic()
    assert M.main(["--leader-lease", "op-leader", "--leader-namespace", "sys"], operator=operator) == 0
    assert time.monotonic() - started < 4
    assert signal.getsignal(signal.SIGTERM) is before
