"""The node's only source of time and randomness, injected everywhere.

``node/`` never calls ``time.time()`` or the global ``random``: every piece that
needs wall time (block times, envelope sequence numbers), a monotonic clock
(timers, latencies) or random choices (peer order, back-off jitter) is handed a
``Clock`` and a ``random.Random``. Production uses ``SystemClock`` and
``production_rng()`` (seeded from ``secrets``); tests use ``ManualClock`` and a
fixed seed, so a run can be replayed.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time_ms(self) -> int:
        """Wall-clock Unix time in milliseconds (block times)."""

    def time_ns(self) -> int:
        """Wall-clock Unix time in nanoseconds (envelope sequence numbers)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timers, latencies)."""


class SystemClock:
    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, wall_ms: int = 1_735_689_600_000, mono: float = 1000.0) -> None:
        self._wall_ns = wall_ms * 1_000_000
        self._mono = mono
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall_ns += int(seconds * 1e9)

    def time_ms(self) -> int:
        with self._lock:
            return self._wall_ns // 1_000_000

    def time_ns(self) -> int:
        with self._lock:
            return self._wall_ns

    def monotonic(self) -> float:
        with self._lock:
            return self._mono


def production_rng() -> random.Random:
    """A ``random.Random`` seeded from the OS CSPRNG (jitter and peer order only)."""
    return random.Random(secrets.randbits(128))
