"""Block sync: catching up on committed blocks from peers, and serving them.

A node that was down, partitioned or slow misses heights that the others decided;
it must never vote on them again (consensus only moves forward), so it fetches the
blocks with their commit certificates instead:

* The sync thread wakes every ``sync_interval_ms``, or at once when the consensus
  thread sees messages for a height beyond the next one (``kick``), and asks one
  peer (random order, injected ``random.Random``) for ``GET /v1/sync/blocks?from=
  H&limit=N``, H being our head + 1.
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
        self._session = session_factory()
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
        self._session.close()

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
        """Ask one peer after another until one gives blocks; True if it has more."""
        names = sorted(self._peers)
        self._rng.shuffle(names)
        for name in names:
            start = self._chain.head_height + 1
            got = self._fetch(name, start)
            if got is None:
                continue
            peer_head, events = got
            if not events:
                if peer_head >= start:
                    continue  # it claims blocks it did not send: try another peer
                return False  # nobody we asked is ahead of us
            for ev in events:
                self._feed(ev)
            self._await_height(events[-1].height)
            return peer_head > self._chain.head_height and self._chain.head_height >= start
        return False

    def _fetch(self, name: str, start: int) -> tuple[int, list[CommittedBlockFromSync]] | None:
        url = f"{self._peers[name]}/v1/sync/blocks"
        m = self._metrics.sync_fetches
        try:
            resp = self._session.get(url, params={"from": start, "limit": MAX_BLOCKS},
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

