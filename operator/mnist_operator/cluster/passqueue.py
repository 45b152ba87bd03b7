"""The pass queue: when each MnistServing's next reconcile pass runs, and on which thread.

One object owns what kopf's timer, the per-resource locks and the waiting set did
before: a pass is asked for now (a change it depends on) or at a time (the
Decision's ``requeue_after``, the slow resync); asks for one resource coalesce
into its earliest time; at most one pass per resource runs at a time, and an ask
that lands while it runs makes one more pass right after it. ``run(key)`` returns
the seconds until that resource's next pass, or None for no more (it is gone).
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable, Hashable

log = logging.getLogger(__name__)


class PassQueue:
    def __init__(self, run: Callable[[Hashable], float | None], workers: int = 4,
                 error_delay: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._run = run
        self._workers = workers
        self._error_delay = error_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._due: dict[Hashable, float] = {}          # key -> when its next pass is due
        self._heap: list[tuple[float, int, Hashable]] = []  # (due, seq, key); stale ones skipped
        self._seq = 0
        self._running: set[Hashable] = set()
        self._asked: dict[Hashable, float] = {}         # asked for while running: earliest time
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # ---------------------------------------------------------------- asking
    def request(self, key: Hashable, delay: float = 0.0) -> None:
        """A pass for ``key`` in ``delay`` seconds, or earlier if one is already due sooner."""
        with self._cond:
            self._ask(key, self._clock() + max(delay, 0.0))

    def _ask(self, key: Hashable, when: float) -> None:
        if key in self._running:  # the running pass may have read before the change
            self._asked[key] = min(when, self._asked.get(key, when))
            return
        if self._due.get(key, float("inf")) <= when:
            return
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._cond.notify()

    def forget(self, key: Hashable) -> None:
        """The resource is gone: drop what is queued for it (a running pass finishes)."""
        with self._cond:
            self._due.pop(key, None)
            self._asked.pop(key, None)

    def due(self, key: Hashable) -> float | None:
        """Seconds until ``key``'s next pass (None: none queued)."""
        with self._cond:
            when = self._due.get(key)
            return None if when is None else when - self._clock()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._stopped = False
            self._threads = [threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
                             for i in range(self._workers)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(timeout)

    def _next(self) -> Hashable | None:
        """Wait for a due key that is not running; None when stopped."""
        with self._cond:
            while not self._stopped:
                now = self._clock()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)            # superseded or forgotten
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._running.add(key)
                    return key
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            try:
                delay = self._run(key)
            except Exception:  # our own thread: nobody else would log it
                log.exception("%s: reconcile pass failed; again in %ss", key, self._error_delay)
                delay = self._error_delay
            with self._cond:
                self._running.discard(key)
                asked = self._asked.pop(key, None)
                if asked is not None:
                    self._ask(key, asked)
                if delay is not None:
                    self._ask(key, self._clock() + max(delay, 0.0))


__all__ = ["PassQueue"]
