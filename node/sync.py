"""Block sync: catching up on committed blocks from peers, and serving them.

A node that was down, partitioned or slow misses heights that the others decided;
it must never vote on them again (consensus only moves forward), so it fetches the
blocks with their commit certificates instead:

* The sync thread wakes every ``sync_interval_ms``, or at once when the consensus
  thread sees messages for a height beyond the next one (``kick``), and asks a peer
  (random order, injected ``random.Random``) for ``GET /v1/sync/blocks?from=
  H&limit=N``, H being our head + 1.
* A peer that does not answer within ``HEDGE_S`` is not waited for alone: the next
  one is asked too, and the first usable answer wins. A hung or blackholed peer
  would otherwise hold catch-up for the whole read timeout (10 s), and a node that
  is behind cannot vote until it has caught up. Each fetch runs on its own daemon
  thread with its own session (so a hung one never delays shutdown), a peer with a
  fetch still out is not asked again, and a peer that failed is asked after the
  others for ``COOLDOWN_S``.
* The answer is decoded strictly (``node.wire``) and checked for shape: contiguous
  heights from H, each commit naming its block's height and hash. Each block is then
  fed to the consensus thread as ``CommittedBlockFromSync``; the core verifies the
  commit certificate against that height's validator set and the block's validity,
  and emits ``Commit``, which the chain verifies once more while writing it. Nothing
  a peer sends is trusted, and a bad answer only costs that peer's turn.
* After feeding, the thread waits (bounded) for the head to move, and goes on
  fetching while the peer reports a higher head.

Serving (``serve_blocks``) reads committed blocks and commits from the chain, up to
a count and a byte budget.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import requests

from ledger.chain import Chain
from ledger.commit import CommitCertificate
from network.errors import describe_failure
from node.clock import Clock
from node.consensus.events import CommittedBlockFromSync
from node.errors import WireError
from node.metrics import NodeMetrics
from node.wire import decode_sync, encode_sync

log = logging.getLogger(__name__)

MAX_BLOCKS = 100
#: How long to wait for fed blocks to be committed before asking again.
_APPLY_WAIT = 10.0
#: After this long without an answer the next peer is asked as well.
HEDGE_S = 1.0
#: A peer that failed is asked only after the others for this long.
COOLDOWN_S = 15.0

#: A fetch's outcome: (the peer's head, the blocks it sent), or None if it failed.
Fetched = tuple[int, list[CommittedBlockFromSync]] | None


def serve_blocks(chain: Chain, start: int, limit: int, max_bytes: int) -> bytes:
    """The sync response for blocks ``start``.. (at least one if any, then within budget)."""
    out: list[tuple[bytes, CommitCertificate]] = []
    size = 0
    head = chain.head_height
    for h in range(max(start, 1), min(head, start + min(limit, MAX_BLOCKS) - 1) + 1):
        raw, commit = chain.block_bytes(h), chain.commit(h)
        if raw is None or commit is None:
            break
        if out and size + len(raw) > max_bytes:
            break
        out.append((raw, commit))
        size += len(raw)
    return encode_sync(head, out)


class BlockSync:
    def __init__(self, chain: Chain, peers: dict[str, str], *, rng: random.Random,
                 clock: Clock, interval_s: float, feed: Callable[[CommittedBlockFromSync], Any],
                 metrics: NodeMetrics, max_response_bytes: int,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        self._chain = chain
        self._peers = dict(peers)
        self._rng = rng
        self._clock = clock
        self._interval = interval_s
        self._feed = feed
        self._metrics = metrics
        self._max_bytes = max_response_bytes
        # One session per peer: fetches to different peers run at once.
        self._sessions = {name: session_factory() for name in self._peers}
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # peers with a fetch still out
        self._cool_until: dict[str, float] = {}
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._head_moved = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="block-sync", daemon=True)

    def kick(self) -> None:
        self._wake.set()

    def committed(self, height: int) -> None:
        """Called by the consensus thread after each commit."""
        with self._head_moved:
            self._head_moved.notify_all()

    def start(self) -> None:
        if self._peers:
            self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stopped.set()
        self._wake.set()
        with self._head_moved:
            self._head_moved.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for session in self._sessions.values():
            session.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                while self.sync_once() and not self._stopped.is_set():
                    pass  # the peer is further ahead: keep going
            except Exception:  # never let one bad answer end syncing for good
                log.exception("block sync round failed")

    def sync_once(self) -> bool:
        """Ask peers (hedged, see the module header) until one gives a usable answer;
        True if that peer has more blocks for us."""
        start = self._chain.head_height + 1
        answer = self._race(start)
        if answer is None:
            return False
        peer_head, events = answer
        if not events:
            return False  # the first peer to answer is not ahead of us
        for ev in events:
            self._feed(ev)
        self._await_height(events[-1].height)
        return peer_head > self._chain.head_height and self._chain.head_height >= start

    def _order(self) -> list[str]:
        """Peers to ask: shuffled, those that failed lately last, none with a fetch out."""
        now = self._clock.monotonic()
        names = sorted(self._peers)
        self._rng.shuffle(names)
        with self._lock:
            names = [n for n in names if n not in self._busy]
            return sorted(names, key=lambda n: self._cool_until.get(n, 0.0) > now)

    def _race(self, start: int) -> tuple[int, list[CommittedBlockFromSync]] | None:
        """The first usable answer for blocks from ``start``: blocks, or a head that says
        the peer is not ahead. One peer first; the next joins whenever ``HEDGE_S`` passes
        without an answer or an answer is unusable."""
        todo = self._order()
        answers: queue.Queue[tuple[str, Fetched]] = queue.Queue()  # this race's alone
        out = 0
        while todo or out:
            if todo and not out:
                self._launch(todo.pop(0), start, answers)
                out += 1
            try:
                name, got = answers.get(timeout=HEDGE_S if todo else 0.5)
            except queue.Empty:
                if self._stopped.is_set():
                    return None
                if todo:  # no answer in time: ask the next one as well
                    self._launch(todo.pop(0), start, answers)
                    out += 1
                continue
            out -= 1
            if got is not None and (got[1] or got[0] < start):
                return got
            # Failed, or claims blocks it did not send: ask the others first for a while.
            with self._lock:
                self._cool_until[name] = self._clock.monotonic() + COOLDOWN_S
        return None

    def _launch(self, name: str, start: int, answers: queue.Queue[tuple[str, Fetched]]
                ) -> None:
        with self._lock:
            self._busy.add(name)

        def fetch() -> None:
            got: Fetched = None
            try:
                got = self._fetch(name, start)
            except Exception:  # a bug in handling one answer must not end syncing
                log.exception("block sync from %s failed", name)
            finally:
                with self._lock:
                    self._busy.discard(name)
                answers.put((name, got))

        # Daemon: a fetch hung on a dead peer ends by its own timeout, never holds exit.
        threading.Thread(target=fetch, name="block-sync-fetch", daemon=True).start()

    def _fetch(self, name: str, start: int) -> tuple[int, list[CommittedBlockFromSync]] | None:
        url = f"{self._peers[name]}/v1/sync/blocks"
        m = self._metrics.sync_fetches
        try:
            resp = self._sessions[name].get(url, params={"from": start, "limit": MAX_BLOCKS},
                                            timeout=(1.0, 10.0))
            body = resp.content
        except requests.RequestException as exc:
            m.inc(1, "unreachable")
            log.debug("sync from %s failed: %s", name, describe_failure(exc))
            return None
        if resp.status_code != 200 or len(body) > self._max_bytes:
            m.inc(1, "bad_status")
            return None
        try:
            head, blocks = decode_sync(body, self._max_bytes)
        except WireError as exc:
            m.inc(1, "malformed")
            log.warning("peer %s sent a bad sync response: %s", name, exc)
            return None
        events: list[CommittedBlockFromSync] = []
        for i, (block, raw, commit) in enumerate(blocks):
            h = start + i
            if block.height != h or commit.height != h or commit.block_hash != block.hash:
                m.inc(1, "inconsistent")
                log.warning("peer %s sent block %d out of place or with another block's "
                            "commit", name, block.height)
                break
            events.append(CommittedBlockFromSync(h, raw, commit))
        m.inc(1, "blocks" if events else "nothing_new")
        return head, events

    def _await_height(self, height: int) -> None:
        deadline = self._clock.monotonic() + _APPLY_WAIT
        with self._head_moved:
            while self._chain.head_height < height and not self._stopped.is_set():
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    log.warning("synced blocks up to %d were not committed in time (head %d)",
                                height, self._chain.head_height)
                    return
                self._head_moved.wait(min(left, 0.5))

