"""Coalescing concurrent look-ups into batches: one request carries many threads' keys.

A busy verifier runs many verifications at once, each needing one node look-up.
``Coalescer.get(key)`` queues the key; if no batch is in flight the calling thread
becomes the *leader*: it takes everything queued (up to ``max_batch``), calls
``fetch(keys)`` once, and hands each waiting thread its own result. While that
request is in flight new keys queue up; when it returns, the leader passes the
lead to the first queued thread (which sends the next batch at once) and returns
its own result - so nothing ever waits on a timer, a lone request is sent
immediately, and under load each batch holds whatever arrived during the last
round trip ("group commit", like the audit log's).

``fetch`` answers a list aligned with the keys, each a value or an exception for
that key alone; if it raises, every key of the batch gets that exception. A
waiting thread gives up after ``wait_timeout`` seconds (``SourceError``), so no
caller hangs on a stuck leader. With ``wait_in_flight`` a thread whose key a
leader already took waits for that batch to end instead (for a ``fetch`` with side
effects, such as writing an audit row, whose caller must not answer before it is
done; ``fetch`` itself must then be bounded in time); only a key still queued
gives up. A ``fetch`` may call ``release_lead()`` to let the next batch start
before it returns (the pipeline does when nothing is queued yet, so a request
arriving during its audit commit need not wait for it). Nothing here knows about
nodes or proofs.

A waiting thread sleeps on its own locked ``threading.Lock`` that the leader releases
once (its result is in, or the lead is its), not on a ``threading.Event``: an Event
is a Condition, whose woken thread must then take the Condition's lock back while
the leader may still hold it to wake the next one - a second sleep and wake-up for
each waiter, and wake-ups are what a busy two-core verifier spends its time on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from verifier.errors import SourceError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WaitTimeout(SourceError):
    """A key waited ``wait_timeout`` in the queue and left it: no batch carried it."""


class _Waiter(Generic[K, V]):
    __slots__ = ("done", "error", "gate", "key", "lead", "value")

    def __init__(self, key: K) -> None:
        self.key = key
        self.gate = threading.Lock()
        self.gate.acquire()  # open once by ``wake``, whoever calls it first
        self.value: V | None = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False

    def wait(self, timeout: float = -1) -> bool:
        """True once woken; False if ``timeout`` seconds passed first."""
        return self.gate.acquire(timeout=timeout)

    def wake(self) -> None:
        # A leader wakes its own waiter too, which may have been woken already (given
        # the lead as its wait timed out): a gate already open stays open.
        with contextlib.suppress(RuntimeError):
            self.gate.release()


class Coalescer(Generic[K, V]):
    def __init__(self, fetch: Callable[[list[K]], Sequence[V | BaseException]], *,
                 max_batch: int = 64, wait_timeout: float = 15.0,
                 wait_in_flight: bool = False) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fetch = fetch
        self.max_batch = max_batch
        self.wait_timeout = wait_timeout
        self.wait_in_flight = wait_in_flight
        self._lock = threading.Lock()
        self._queue: list[_Waiter[K, V]] = []
        self._busy = False  # a leader holds the lead (under _lock)
        self._local = threading.local()  # .passed: this leader already passed the lead
        #: Batches sent and keys they carried (for metrics and tests).
        self.batches = 0
        self.keys = 0

    @property
    def queued(self) -> int:
        """Keys waiting for the next batch (not those in flight)."""
        with self._lock:
            return len(self._queue)

    def get(self, key: K) -> V:
        me: _Waiter[K, V] = _Waiter(key)
        with self._lock:
            self._queue.append(me)
            lead = not self._busy
            self._busy = True
        if not lead:
            if not me.wait(self.wait_timeout):
                with self._lock:
                    taken = me not in self._queue
                    if not me.done and not me.lead and not (taken and self.wait_in_flight):
                        # Timed out: leave the queue if still in it, so no leader takes it.
                        if not taken:
                            self._queue.remove(me)
                        raise WaitTimeout(f"no answer within {self.wait_timeout:g}s "
                                          "(batched look-up)")
                if not me.done and not me.lead:
                    me.wait()  # taken into a batch (wait_in_flight): it always ends
            if me.done:
                return self._result(me)
        # The lead: our key is at the head of the queue.
        self._local.passed = False
        try:
            self._run_batch()
        finally:
            if not self._local.passed:
                self._pass_lead()
        return self._result(me)

    def release_lead(self) -> None:
        """From inside ``fetch``: let the next batch start now, before this one ends.

        For a ``fetch`` whose last part need not be done one batch at a time (its
        callers still wait for their own results).
        """
        if not getattr(self._local, "passed", True):
            self._local.passed = True
            self._pass_lead()

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self.batches += 1
            self.keys += len(batch)
        try:
            got: Sequence[V | BaseException] = self._fetch([w.key for w in batch])
            if len(got) != len(batch):
                raise SourceError(f"batch answer holds {len(got)} results for "
                                  f"{len(batch)} keys")
        except BaseException as exc:  # every waiter must hear, whatever went wrong
            got = [exc] * len(batch)
        for w, res in zip(batch, got, strict=True):
            if isinstance(res, BaseException):
                w.error = res
            else:
                w.value = res
        with self._lock:
            for w in batch:
                w.done = True
        for w in batch:
            w.wake()

    def _pass_lead(self) -> None:
        with self._lock:
            if not self._queue:
                self._busy = False
                return
            nxt = self._queue[0]
            nxt.lead = True
        nxt.wake()

    @staticmethod
    def _result(w: _Waiter[K, V]) -> V:
        if w.error is not None:
            raise w.error
        assert w.done
        return w.value  # type: ignore[return-value]
