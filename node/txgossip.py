"""Clients' transactions to the peers, in two tiers.

How it works: before a tx is in a block, only a proposer needs it: every other validator
gets it inside the proposal and checks its signature there, once, as it would have on
admission. So the ``tx-gossip`` thread (``node.runtime``) hands each take of client txs
(one per ``mempool.gossip_linger_ms``) to ``TxGossip.step``, which sends it at once to the
*next proposers* only - of the round being decided and of the one after it, which is also
the next height's first (``next_proposers``) - and keeps it; when the height or round
moves on, the new next proposers get the kept txs still pending that they lack. Every
``mempool.gossip_spread_ms`` it *spreads* what it kept and is still pending here to every
peer that lacks it, in a few large envelopes, and forgets it: a tx must outlive its entry
node, and the mempools stay alike. What a block has carried by then needs no spread (under
load, most of it).

Why: each envelope costs every receiver an SM2 check (and an HTTP request), and at the
cluster bench's load an envelope every 50 ms carried four or five txs, so the peers spent
nearly one SM2 check per committed tx on envelopes alone. The fast tier reaches one or two
peers instead of all, at the same latency; the spread adds a few checks a second.

``spread_s = 0`` turns the tiers off: every take goes to every peer (the behaviour before
the tiers). Sending runs on the caller's thread; the outbox signs and queues (the
per-peer senders do the network).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.commit import ValidatorSet


class TxSender(Protocol):
    def broadcast_txs(self, txs: Sequence[bytes], ids: Sequence[bytes] | None = None,
                      to: Collection[str] | None = None) -> None: ...


def next_proposers(current: ValidatorSet, following: ValidatorSet, height: int,
                   round_: int, peers: Collection[str]) -> list[str]:
    """The peers among the proposers of ``(height, round_)``, ``(height, round_ + 1)``
    and ``(height + 1, 0)``; ``current`` signs ``height``, ``following`` the next one.
    With an unchanged set the last two are the same validator (round-robin)."""
    names = {current.proposer(height, round_).name,
             current.proposer(height, round_ + 1).name,
             following.proposer(height + 1, 0).name}
    return sorted(n for n in names if n in peers)


@dataclass
class _Kept:
    raw: bytes
    tx_id: bytes
    sent: set[str] = field(default_factory=set)


class TxGossip:
    """The two tiers' state (see the module header); one thread calls it."""

    def __init__(self, sender: TxSender, peers: Sequence[str],
                 targets: Callable[[], Collection[str]], pending: Callable[[bytes], bool],
                 monotonic: Callable[[], float], spread_s: float, max_bytes: int) -> None:
        self._sender = sender
        self._peers = list(peers)
        self._targets = targets
        self._pending = pending
        self._monotonic = monotonic
        self._spread_s = spread_s
        self._max_bytes = max_bytes
        self._kept: list[_Kept] = []
        self._last_spread = monotonic()

    def wait_s(self, idle: float) -> float:
        """How long the caller may wait for new txs before ``step`` is due anyway."""
        if not self._kept or self._spread_s <= 0:
            return idle
        return max(0.0, min(idle, self._last_spread + self._spread_s - self._monotonic()))

    def step(self, txs: Sequence[tuple[bytes, bytes]]) -> None:
        """Take in ``(raw tx, id)`` pairs; send the next proposers the pending txs they
        lack, and spread if it is due."""
        if self._spread_s <= 0:
            if txs:
                self._sender.broadcast_txs([t for t, _ in txs], [i for _, i in txs])
            return
        if txs:
            if not self._kept:
                # The spread interval counts from the first tx kept, so that a tx waits at
                # most ``spread_s`` for it whenever it came.
                self._last_spread = self._monotonic()
            self._kept.extend(_Kept(raw, tid) for raw, tid in txs)
        if not self._kept:
            return
        if self._monotonic() - self._last_spread >= self._spread_s:
            self.spread()
        else:
            # New txs, and the older ones a proposer that has just become next lacks (it
            # may have to carry a tx the one before left out).
            self._send_missing([p for p in self._targets() if p in self._peers])

    def spread(self) -> None:
        """Send every kept tx still pending to each peer that lacks it; forget them all."""
        self._send_missing(self._peers)
        self._kept = []
        self._last_spread = self._monotonic()

    def _send_missing(self, peers: Sequence[str]) -> None:
        self._kept = [k for k in self._kept if self._pending(k.tx_id)]
        # Peers missing the same txs share envelopes (one signature for all of them).
        groups: dict[tuple[int, ...], list[str]] = {}
        for peer in peers:
            missing = tuple(i for i, k in enumerate(self._kept) if peer not in k.sent)
            if missing:
                groups.setdefault(missing, []).append(peer)
        for missing, to in groups.items():
            sent = [self._kept[i] for i in missing]
            for chunk in _chunks(sent, self._max_bytes):
                self._sender.broadcast_txs([k.raw for k in chunk], [k.tx_id for k in chunk], to)
            for k in sent:
                k.sent.update(to)


def _chunks(items: Iterable[_Kept], max_bytes: int) -> Iterable[list[_Kept]]:
    """Runs of at most ``max_bytes`` of txs (a larger tx goes alone)."""
    chunk: list[_Kept] = []
    size = 0
    for k in items:
        if chunk and size + len(k.raw) > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(k)
        size += len(k.raw)
    if chunk:
        yield chunk
