"""The pass queue: coalescing, one pass per resource at a time, exact scheduling."""
from __future__ import annotations

import threading
import time

import pytest

from mnist_operator.cluster.passqueue import PassQueue


@pytest.fixture
def queue_of():
    made: list[PassQueue] = []

    def make(run, **kw) -> PassQueue:
        q = PassQueue(run, **kw)
        q.start()
        made.append(q)
        return q
    yield make
    for q in made:
        q.stop()


def test_a_burst_while_a_pass_runs_makes_one_more_pass_after_it(queue_of):
    started, release = threading.Semaphore(0), threading.Event()
    passes: list[str] = []

    def run(key):
        passes.append(key)
        started.release()
        release.wait(10)
        return None

    q = queue_of(run)
    q.request("a")
    assert started.acquire(timeout=5)            # pass 1 of "a" is running
    for _ in range(50):                          # events for "a" meanwhile
        q.request("a")
    q.request("b")                               # another resource is not held up
    assert started.acquire(timeout=5)
    assert sorted(passes) == ["a", "b"]
    release.set()
    assert started.acquire(timeout=5)            # the one pass after it
    time.sleep(0.3)
    assert sorted(passes) == ["a", "a", "b"] and len(q) == 0


def test_a_requested_pass_runs_when_due_and_earlier_asks_win(queue_of):
    ran: list[tuple[str, float]] = []
    done = threading.Event()

    def run(key):
        ran.append((key, time.monotonic()))
        done.set()
        return None

    q = queue_of(run)
    asked = time.monotonic()
    q.request("r", 5.0)
    q.request("r", 0.4)                          # a backoff that ends sooner
    q.request("r", 3.0)                          # later than what is queued: no change
    assert 0 < q.due("r") <= 0.4
    assert done.wait(5)
    took = ran[0][1] - asked
    assert 0.35 <= took < 1.0, took
    time.sleep(0.2)
    assert len(ran) == 1 and q.due("r") is None


def test_the_pass_result_schedules_the_next_and_none_stops(queue_of):
    times: list[float] = []
    two = threading.Event()

    def run(key):
        times.append(time.monotonic())
        if len(times) == 2:
            two.set()
            return None                          # the resource is gone
        return 0.3                               # requeue_after

    q = queue_of(run)
    q.request("r")
    assert two.wait(5)
    assert 0.25 <= times[1] - times[0] < 1.0
    time.sleep(0.5)
    assert len(times) == 2 and q.due("r") is None


def test_forget_drops_what_is_queued(queue_of):
    ran: list[str] = []
    q = queue_of(lambda key: ran.append(key))
    q.request("gone", 0.3)
    q.forget("gone")
    time.sleep(0.5)
    assert ran == [] and len(q) == 0


def test_a_failing_pass_is_retried_after_the_error_delay(queue_of):
    calls: list[float] = []
    again = threading.Event()

    def run(key):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("API server away")
        again.set()
        return None

    q = queue_of(run, error_delay=0.2)
    q.request("r")
    assert again.wait(5)
    assert calls[1] - calls[0] >= 0.15
