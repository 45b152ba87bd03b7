"""The kopf shell's one piece of logic: reconcile passes are coalesced per resource."""
from __future__ import annotations

import threading
import time

from mnist_operator import handlers


def test_a_burst_of_triggers_runs_one_pass_and_queues_one_more(monkeypatch):
    started, release = threading.Semaphore(0), threading.Event()
    passes: list[str] = []

    def one_pass(namespace, name):
        passes.append(name)
        started.release()
        release.wait(10)
        return name

    monkeypatch.setattr(handlers, "_one_pass", one_pass)
    results: list = []
    run = lambda name: threading.Thread(   # noqa: E731
        target=lambda: results.append(handlers.reconcile_resource("ns", name)))
    first = run("a")
    first.start()
    assert started.acquire(timeout=5)            # pass 1 of "a" is running
    waiter = run("a")
    waiter.start()
    deadline = time.monotonic() + 5
    while ("ns", "a") not in handlers._waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    # twenty more events for "a" while pass 1 runs and pass 2 waits: none waits
    burst = [run("a") for _ in range(20)]
    for t in burst:
        t.start()
    for t in burst:
        t.join(5)
        assert not t.is_alive()
    assert results == [None] * 20
    other = run("b")                             # another resource is not held up
    other.start()
    assert started.acquire(timeout=5)
    release.set()
    for t in (first, waiter, other):
        t.join(5)
    assert sorted(passes) == ["a", "a", "b"]     # the queued pass ran, after the change
    assert handlers._waiting == set()


def test_child_events_queue_a_pass_without_waiting_for_it(monkeypatch):
    release, ran = threading.Event(), []
    gate = threading.Semaphore(0)

    def one_pass(namespace, name):
        ran.append(name)
        gate.release()
        release.wait(10)

    monkeypatch.setattr(handlers, "_one_pass", one_pass)
    meta = {"labels": {"app.kubernetes.io/instance": "c"}}   # a pod: named by its label
    handlers._on_child(meta, "ns", None)                     # the initial listing: ignored
    handlers._on_child(meta, "ns", "ADDED")
    assert gate.acquire(timeout=5)                           # pass 1 runs (and blocks)
    started = time.monotonic()
    for _ in range(200):                                     # a burst of pod events
        handlers._on_child(meta, "ns", "MODIFIED")
    assert time.monotonic() - started < 1, "an event handler waited for a pass"
    assert ("ns", "c") in handlers._waiting                  # one pass queued behind it
    release.set()
    assert gate.acquire(timeout=5)
    time.sleep(0.2)
    assert ran == ["c", "c"] and handlers._waiting == set()


def test_a_queued_pass_sees_the_event_handlers_context(monkeypatch):
    # kopf.event() inside the pass reads kopf's context variables
    import contextvars
    var = contextvars.ContextVar("kopf_settings_like")
    seen, done = [], threading.Event()

    def one_pass(namespace, name):
        seen.append(var.get(None))
        done.set()

    monkeypatch.setattr(handlers, "_one_pass", one_pass)
    var.set("from the event loop")
    handlers.queue_pass("ns", "ctx")
    assert done.wait(5) and seen == ["from the event loop"]
