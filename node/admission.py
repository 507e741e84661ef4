"""Transaction admission: one verification gate, back-pressure, a worker for peers' txs.

Why: admitting a tx is a few milliseconds of Python (decode, rules, the overlay) around
its SM2 check. When every waitress thread admits transactions at once, the consensus
thread and the peer handlers hardly get the interpreter: rounds time out and a height
that takes 100 ms idle takes seconds under load. So admission is shaped here:

* **One gate.** Every mempool admission (client or peer) runs under one lock: the GIL
  makes the Python part serial anyway, and a single admitting thread leaves the other
  threads their share of the interpreter. (The SM2 check itself, through OpenSSL,
  releases the GIL - ``certificates.sm2_openssl``; through GmSSL it held it too.)
* **Back-pressure for clients** (``submit``): a client tx is refused with
  ``Busy`` (HTTP 429 ``busy`` + ``Retry-After``) when the pending backlog exceeds
  ``backlog_txs`` / ``backlog_bytes`` (a block or two: more only adds latency),
  or when ``max_waiting`` client requests already wait at the gate (so client
  requests never occupy every HTTP thread and peer traffic still gets served).
  Admission resumes as soon as commits shrink the backlog.
* **Peers' txs are asynchronous** (``offer_peer_txs``): the ``/v1/consensus``
  handler only queues them and answers at once, so the votes queued behind them
  on the sending peer are not held up by hundreds of signature checks here. The
  worker thread admits them through the gate. The queue is bounded; overflow is
  dropped and counted (the sender still holds those txs and proposes them).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from node.errors import MempoolError
from node.mempool import AddResult, Mempool

log = logging.getLogger(__name__)


class Busy(MempoolError):
    """The node has enough pending work; retry after ``retry_after`` seconds."""

    code = "busy"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    def __init__(self, mempool: Mempool, *, add_client: Callable[[bytes], AddResult],
                 add_peer: Callable[[bytes, bytes], None],
                 count_drop: Callable[[str, int], None],
                 backlog_txs: int, backlog_bytes: int, max_waiting: int = 2,
                 peer_queue_txs: int = 20_000, retry_after_s: float = 0.1) -> None:
        self._mempool = mempool
        self._add_client, self._add_peer, self._count = add_client, add_peer, count_drop
        self.backlog_txs, self.backlog_bytes = backlog_txs, backlog_bytes
        self.max_waiting, self.retry_after = max_waiting, retry_after_s
        self._gate = threading.Lock()
        self._cond = threading.Condition()
        self._waiting = 0
        self._peer: deque[tuple[bytes, bytes]] = deque()  # (raw tx, its id)
        self._peer_limit = peer_queue_txs
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="peer-tx-admission", daemon=True)

    # ------------------------------------------------------------------ clients

    def busy_reason(self) -> str | None:
        """Why a client tx would be refused now, or None."""
        mp = self._mempool
        if len(mp) >= self.backlog_txs:
            return f"{len(mp)} transactions pending (limit {self.backlog_txs})"
        if mp.size_bytes >= self.backlog_bytes:
            return f"{mp.size_bytes} bytes pending (limit {self.backlog_bytes})"
        return None

    def submit(self, raw: bytes) -> AddResult:
        """Admit a client's tx through the gate, or raise ``Busy`` (or the mempool's error)."""
        why = self.busy_reason()
        if why is None:
            with self._cond:
                if self._waiting >= self.max_waiting:
                    why = f"{self._waiting} submissions already waiting to be checked"
                else:
                    self._waiting += 1
        if why is not None:
            self._count("admission_busy", 1)
            raise Busy(f"node busy: {why}; retry in {self.retry_after:g}s", self.retry_after)
        with self._gate:
            with self._cond:
                self._waiting -= 1
            return self._add_client(raw)

    # ------------------------------------------------------------------ peers

    def offer_peer_txs(self, txs: list[tuple[bytes, bytes]]) -> None:
        """Queue txs gossiped by a peer, each with its id (SM3 of its bytes, computed when its
        envelope was checked); never blocks (the HTTP handler returns at once)."""
        with self._cond:
            room = self._peer_limit - len(self._peer)
            if room < len(txs):
                self._count("peer_txs_backlog", len(txs) - max(room, 0))
                txs = txs[:max(room, 0)]
            self._peer.extend(txs)
            self._cond.notify()

    def peer_backlog(self) -> int:
        with self._cond:
            return len(self._peer)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._peer.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._peer and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                raw, tx_id = self._peer.popleft()
            try:
                with self._gate:
                    self._add_peer(raw, tx_id)
            except Exception:  # a bug in one tx's handling must not end peer admission
                log.exception("admitting a peer's transaction failed")
