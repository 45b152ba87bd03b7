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
