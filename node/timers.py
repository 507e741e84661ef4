"""Timers: deliver an item to a callback once its delay has passed, on one thread.

The consensus core asks for timeouts as data (``ScheduleTimeout``); the runtime
schedules them here and the timer thread puts the resulting event on the
consensus queue - it never touches consensus state itself. Periodic work (gossip,
block building) is a timer that re-arms itself when handled.

Time comes from the injected ``Clock`` (``monotonic``). The thread sleeps on a
condition until the earliest deadline or until a sooner timer is added; tests
with a ``ManualClock`` call ``fire_due()`` instead of running the thread.
A stale timer (for a height already decided) is harmless: the core ignores it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from node.clock import Clock

log = logging.getLogger(__name__)

#: Longest single sleep, so a clock that jumps is noticed within this bound.
_MAX_WAIT = 0.5


class Timers:
    def __init__(self, clock: Clock, deliver: Callable[[Any], None]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)

    def schedule(self, delay_s: float, item: Any) -> None:
        due = self._clock.monotonic() + max(0.0, delay_s)
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), item))
            if self._heap[0][2] is item:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def fire_due(self) -> int:
        """Deliver every item whose time has come; returns how many."""
        now = self._clock.monotonic()
        due: list[Any] = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[2])
        for item in due:
            self._deliver(item)
        return len(due)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopped:
                        return
                    wait = _MAX_WAIT
                    if self._heap:
                        wait = min(wait, max(0.0, self._heap[0][0] - self._clock.monotonic()))
                    if wait > 0:
                        self._cond.wait(wait)
                    if self._stopped:
                        return
                self.fire_due()
        except Exception:  # pragma: no cover - a bug here would stall consensus silently
            log.exception("timer thread crashed")
            raise
