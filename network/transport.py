"""Peer transport: one sender thread per peer, bounded queues, batching, back-off.

``Transport.send(peer, data)`` / ``broadcast(data)`` only append opaque bytes
(sealed envelopes) to per-peer queues and return at once; they never block on
the network and never raise on a network failure — consensus must not stall
because one validator is slow or gone.

Each ``PeerSender`` thread loops: take up to ``batch_max_messages`` /
``batch_max_bytes`` from the head of its queue, POST them as one
``seal_batch`` body (``application/msgpack``) with a timeout, and then

* 2xx: delivered; back-off resets; the peer is marked up;
* 4xx other than 408/429: the peer refused the batch itself (malformed, too
  big); retrying the same bytes cannot help, so the batch is dropped and counted;
* anything else (connection error, timeout, 5xx, 408, 429): the batch goes back
  to the head of the queue, the session is replaced (a fresh connection next
  time), and the thread sleeps an exponential back-off with jitter.

Order is preserved per peer. Queues are bounded: on overflow the oldest (or,
by choice, the newest) message is dropped and counted — for consensus the
newest messages matter most, so ``drop_oldest`` is the default.

Requests go through ``network.httpconn.KeepAliveSession`` by default (``http.client``
on one persistent connection; ``requests`` cost ~1 ms of CPU per POST), which
raises ``requests`` exceptions, so a ``requests.Session`` may be injected instead.

Randomness, clock and sleep are injected (``random.Random``, ``clock()``,
``sleep(seconds)``) so tests can replay back-off exactly. By default the sleep
is a wait on the stop event, so ``stop()`` interrupts a back-off at once; an
in-flight request is bounded by its timeout and ``stop()`` by its own bound.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import requests

from network.envelope import seal_batch
from network.errors import describe_failure
from network.httpconn import KeepAliveSession

log = logging.getLogger(__name__)

Overflow = Literal["drop_oldest", "drop_newest"]
Timeout = float | tuple[float, float]
CONTENT_TYPE = "application/msgpack"


class Backoff:
    """Exponential back-off with "equal jitter": a delay in [d/2, d], d = min(cap, base*2^n).

    Half of the delay is fixed so the sender always really backs off; the other
    half is random so validators that lost the same peer do not retry in step.
    """

    def __init__(self, rng: random.Random, base: float = 0.05, cap: float = 2.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("back-off needs 0 < base <= cap")
        self._rng = rng
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, math.ldexp(self.base, min(self.attempt, 62)))
        self.attempt += 1
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True)
class PeerStats:
    name: str
    url: str
    sent: int
    batches: int
    failures: int
    dropped: dict[str, int]
    queued: int
    up: bool
    last_error: str
    last_ok_at: float | None


@dataclass(frozen=True)
class TransportStats:
    """Totals (including peers since removed) and the current peers.

    ``peers_up``: current peers whose latest delivery attempt did not fail.
    """

    sent: int
    dropped: dict[str, int]
    failures: dict[str, int]
    peers_up: list[str]
    peers: dict[str, PeerStats]


@dataclass(frozen=True)
class SenderConfig:
    """Tuning shared by every peer sender; the defaults suit a LAN of validators."""

    queue_limit: int = 1024
    overflow: Overflow = "drop_oldest"
    batch_max_messages: int = 64
    batch_max_bytes: int = 1024 * 1024
    #: Bigger messages are dropped on enqueue: the receiver would refuse them anyway.
    max_message_bytes: int = 4 * 1024 * 1024
    #: (connect, read) seconds for every POST.
    timeout: Timeout = (1.0, 5.0)
    backoff_base: float = 0.05
    backoff_cap: float = 2.0

    def __post_init__(self) -> None:
        if min(self.queue_limit, self.batch_max_messages, self.batch_max_bytes) < 1:
            raise ValueError("queue_limit, batch_max_messages and batch_max_bytes must be >= 1")
        if self.overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest, not {self.overflow!r}")


class PeerSender:
    """The queue and thread for one peer. Built by ``Transport``; usable alone in tests."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        rng: random.Random,
        config: SenderConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        session_factory: Callable[[], requests.Session] = KeepAliveSession,  # type: ignore[assignment]
    ) -> None:
        cfg = config if config is not None else SenderConfig()
        self.name = name
        self.url = url
        self._queue: deque[bytes] = deque()
        self._limit = cfg.queue_limit
        self._overflow = cfg.overflow
        self._batch_n = cfg.batch_max_messages
        self._batch_bytes = cfg.batch_max_bytes
        self._max_message = cfg.max_message_bytes
        self._timeout = cfg.timeout
        self._backoff = Backoff(rng, cfg.backoff_base, cfg.backoff_cap)
        self._clock = clock
        self._stop = threading.Event()
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._stop.wait
        self._session_factory = session_factory
        self._session: requests.Session | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"peer-sender-{name}", daemon=True)
        # Counters: written under self._cond, read by stats().
        self._sent = 0
        self._batches = 0
        self._failures = 0
        self._dropped: Counter[str] = Counter()
        self._up = True
        self._last_error = ""
        self._last_ok_at: float | None = None

    # ------------------------------------------------------------------ caller side

    def enqueue(self, data: bytes) -> None:
        with self._cond:
            if self._stop.is_set():
                self._dropped["stopped"] += 1
                return
            if len(data) > self._max_message:
                self._dropped["too_large"] += 1
                return
            self._queue.append(bytes(data))
            self._trim_locked()
            self._cond.notify()

    def _trim_locked(self) -> None:
        while len(self._queue) > self._limit:
            if self._overflow == "drop_oldest":
                self._queue.popleft()
            else:
                self._queue.pop()
            self._dropped["queue_full"] += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the thread; True when it ended within ``timeout`` seconds.

        Messages still queued are dropped (counted as ``stopped``): after a stop
        nobody is left to send them. A thread caught in a request lingers at
        most the request timeout; it is a daemon, so it never blocks exit.
        """
        with self._cond:
            self._stop.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            if self._queue:
                self._dropped["stopped"] += len(self._queue)
                self._queue.clear()
        return not self._thread.is_alive()

    def stats(self) -> PeerStats:
        with self._cond:
            return PeerStats(
                name=self.name,
                url=self.url,
                sent=self._sent,
                batches=self._batches,
                failures=self._failures,
                dropped=dict(self._dropped),
                queued=len(self._queue),
                up=self._up,
                last_error=self._last_error,
                last_ok_at=self._last_ok_at,
            )

    # ------------------------------------------------------------------ thread side

    def _take_batch(self) -> list[bytes]:
        with self._cond:
            while not self._queue and not self._stop.is_set():
                self._cond.wait()
            batch: list[bytes] = []
            if self._stop.is_set():
                return batch
            size = 0
            while self._queue and len(batch) < self._batch_n:
                nxt = self._queue[0]
                # A single message larger than the byte budget still goes, alone.
                if batch and size + len(nxt) > self._batch_bytes:
                    break
                batch.append(self._queue.popleft())
                size += len(nxt)
            return batch

    def _requeue_front(self, batch: list[bytes]) -> None:
        with self._cond:
            if self._stop.is_set():
                self._dropped["stopped"] += len(batch)
                return
            self._queue.extendleft(reversed(batch))
            # The queue may have filled while we were sending; the limit still holds.
            self._trim_locked()

    def _post(self, body: bytes) -> tuple[str, str]:
        """One POST: ("ok" | "rejected" | "retry", why)."""
        if self._session is None:
            self._session = self._session_factory()
        try:
            resp = self._session.post(
                self.url, data=body, headers={"Content-Type": CONTENT_TYPE}, timeout=self._timeout
            )
            status = resp.status_code
            resp.close()
        except requests.RequestException as exc:
            return "retry", describe_failure(exc)
        if 200 <= status < 300:
            return "ok", ""
        if 400 <= status < 500 and status not in (408, 429):
            return "rejected", f"HTTP {status}"
        return "retry", f"HTTP {status}"

    def _reset_session(self) -> None:
        # A fresh Session means a fresh TCP connection: a half-dead pooled
        # connection (peer restarted, proxy cut) is never reused.
        if self._session is not None:
            self._session.close()
            self._session = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if not batch:
                    continue
                outcome, why = self._post(seal_batch(batch))
                self._record(outcome, why, batch)
                if outcome == "retry":
                    self._reset_session()
                    self._requeue_front(batch)
                    self._sleep(self._backoff.next_delay())
        except Exception:  # a bug here must not pass silently in a daemon thread
            log.exception("peer sender %s crashed", self.name)
            raise
        finally:
            self._reset_session()

    def _record(self, outcome: str, why: str, batch: list[bytes]) -> None:
        with self._cond:
            was_up = self._up
            if outcome == "ok":
                self._sent += len(batch)
                self._batches += 1
                self._up = True
                self._last_ok_at = self._clock()
                self._backoff.reset()
            elif outcome == "rejected":
                self._dropped["rejected"] += len(batch)
                self._up = True  # it answered; it just did not like the batch
                self._last_error = why
                self._backoff.reset()
            else:
                self._failures += 1
                self._up = False
                self._last_error = why
        # Log transitions only: a peer down for an hour must not flood the log.
        if was_up and outcome == "retry":
            log.warning("peer %s (%s) unreachable: %s", self.name, self.url, why)
        elif not was_up and outcome != "retry":
            log.info("peer %s (%s) reachable again", self.name, self.url)
        elif outcome == "rejected":
            log.warning("peer %s refused a batch of %d: %s", self.name, len(batch), why)


class Transport:
    """Per-peer senders for a validator's outgoing consensus traffic.

    ``peers`` maps a peer name to its base URL (``http://host:port``); messages
    are POSTed to ``base + path``. ``config``, ``clock``, ``sleep`` and
    ``session_factory`` are handed to every ``PeerSender``. Each sender gets its
    own ``random.Random`` seeded from ``rng`` in sorted peer order, so a seeded
    transport backs off reproducibly.
    """

    def __init__(
        self,
        peers: dict[str, str],
        path: str = "/v1/consensus",
        *,
        rng: random.Random | None = None,
        config: SenderConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        session_factory: Callable[[], requests.Session] = KeepAliveSession,  # type: ignore[assignment]
    ) -> None:
        self._path = path
        self._rng = rng if rng is not None else random.Random()
        self._config = config if config is not None else SenderConfig()
        self._clock = clock
        self._sleep = sleep
        self._session_factory = session_factory
        self._senders: dict[str, PeerSender] = {}
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._dropped: Counter[str] = Counter()
        self._retired_sent = 0
        for name in sorted(peers):
            self._senders[name] = self._make(name, peers[name])

    def _make(self, name: str, base_url: str) -> PeerSender:
        seeded = random.Random(self._rng.getrandbits(64))
        url = base_url.rstrip("/") + self._path
        return PeerSender(
            name,
            url,
            rng=seeded,
            config=self._config,
            clock=self._clock,
            sleep=self._sleep,
            session_factory=self._session_factory,
        )

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for s in self._senders.values():
                s.start()

    def send(self, peer: str, data: bytes) -> None:
        sender = self._senders.get(peer)
        if sender is None:
            with self._lock:
                self._dropped["unknown_peer"] += 1
            log.debug("dropping message for unknown peer %r", peer)
            return
        sender.enqueue(data)

    def broadcast(self, data: bytes, exclude: Iterable[str] = ()) -> None:
        skip = set(exclude)
        for name, sender in list(self._senders.items()):
            if name not in skip:
                sender.enqueue(data)

    def add_peer(self, name: str, base_url: str) -> None:
        """Add (or re-point) a peer, e.g. after a validator-set change."""
        with self._lock:
            old = self._senders.pop(name, None)
            sender = self._make(name, base_url)
            self._senders[name] = sender
            if self._stopped:
                sender.stop(0)  # so sends to it are counted as dropped, not queued forever
            elif self._started:
                sender.start()
        if old is not None:
            old.stop()
            self._retire(old)

    def remove_peer(self, name: str, timeout: float = 2.0) -> None:
        with self._lock:
            old = self._senders.pop(name, None)
        if old is not None:
            old.stop(timeout)
            self._retire(old)

    def _retire(self, sender: PeerSender) -> None:
        # Totals stay monotonic (they feed Prometheus counters) after a peer leaves.
        gone = sender.stats()
        with self._lock:
            self._retired_sent += gone.sent
            self._dropped.update(gone.dropped)

    def peers(self) -> list[str]:
        return sorted(self._senders)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop every sender within ``timeout`` seconds in total; True if all ended."""
        with self._lock:
            self._stopped = True
            senders = list(self._senders.values())
        deadline = time.monotonic() + timeout
        for s in senders:  # signal all first, so they wind down in parallel
            s.stop(0)
        ok = True
        for s in senders:
            ok = s.stop(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def stats(self) -> TransportStats:
        per = {name: s.stats() for name, s in sorted(self._senders.items())}
        dropped: Counter[str] = Counter()
        with self._lock:
            dropped.update(self._dropped)
            retired_sent = self._retired_sent
        for p in per.values():
            dropped.update(p.dropped)
        return TransportStats(
            sent=retired_sent + sum(p.sent for p in per.values()),
            dropped=dict(dropped),
            failures={n: p.failures for n, p in per.items()},
            peers_up=[n for n, p in per.items() if p.up],
            peers=per,
        )

    def __enter__(self) -> Transport:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
