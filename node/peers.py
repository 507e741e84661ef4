"""Talking to the other validators: sealing what we send, opening what we receive.

``Outbox`` turns payloads into signed envelopes (``network.envelope.seal``) and
hands them to the ``network.transport.Transport`` (one sender thread per peer,
bounded queue, batching, back-off). Sealing and enqueueing happen under one lock,
so envelope sequence numbers reach every peer in increasing order whichever
thread sends (the consensus thread, the tx gossip thread); the receivers'
``ReplayGuard`` may then be strict. A list of consensus messages too large for one
envelope is split across several.

``Inbox.receive`` handles the body of ``POST /v1/consensus``: ``open_batch``
checks each envelope (size, shape, chain id, sender in the validator set,
signature, replay) and drops bad ones with a reason. Both kinds are covered
(``node.wire``): a payload is decoded for its cover, before the signature check, so one
that does not decode is refused as malformed; authentic ones are handed on decoded -
consensus messages to the consensus queue, transactions (with the ids their envelope's
signature covers, so admission does not hash them again) to the mempool. Every drop is
counted by reason. Nothing a peer sends raises anything but ``EnvelopeError`` for a batch
that is junk as a whole, which the API answers with a 4xx.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certificates import canonical, sm2
from network.envelope import ReplayGuard, SeqCounter, open_batch, seal
from network.errors import EnvelopeError
from network.transport import Transport
from node.consensus import codec
from node.consensus.messages import Message
from node.wire import (
    KIND_CONSENSUS,
    KIND_TXS,
    consensus_cover,
    encode_txs,
    message_cover,
    tx_cover,
    tx_ids,
)

#: Envelope bytes beyond the payload (fields, signature); generous.
ENVELOPE_OVERHEAD = 1024


class Outbox:
    def __init__(self, chain_id: str, key: sm2.PrivateKey, transport: Transport,
                 seq: SeqCounter, max_payload_bytes: int) -> None:
        self._chain_id = chain_id
        self._key = key
        self._transport = transport
        self._seq = seq
        self._max_payload = max_payload_bytes
        self._lock = threading.Lock()

    def _send(self, kind: str, payload: bytes, to: Collection[str] | None = None,
              covers: Any = None) -> None:
        with self._lock:
            env = seal(self._chain_id, kind, payload, self._key, self._seq.next(),
                       covers=covers)
            if to is None:
                self._transport.broadcast(env)
            else:
                for peer in to:
                    self._transport.send(peer, env)

    def broadcast_messages(self, msgs: Sequence[Message],
                           to: Collection[str] | None = None) -> None:
        """Send consensus messages to every peer (or the peers ``to``), in as few
        envelopes as fit."""
        chunk: list[bytes] = []
        covers: list[bytes] = []
        size = 0
        for m in msgs:
            data = codec.encode(m)
            if chunk and size + len(data) > self._max_payload:
                self._send_encoded(chunk, covers, to)
                chunk, covers, size = [], [], 0
            chunk.append(data)
            covers.append(message_cover(data, m))
            size += len(data) + 8
        if chunk:
            self._send_encoded(chunk, covers, to)

    def _send_encoded(self, encoded: list[bytes], covers: list[bytes],
                      to: Collection[str] | None) -> None:
        # node.wire's list framing; the signature covers the messages minus proposals' values
        self._send(KIND_CONSENSUS, canonical.encode(encoded), to, covers=covers)

    def broadcast_txs(self, txs: Sequence[bytes], ids: Sequence[bytes] | None = None,
                      to: Collection[str] | None = None) -> None:
        """Gossip raw txs to every peer (or the peers ``to``) in one envelope; ``ids``,
        their ids when known (``node.wire.tx_ids`` otherwise), are what its signature
        covers."""
        if txs:
            ids = tx_ids(txs) if ids is None else list(ids)
            self._send(KIND_TXS, encode_txs(txs), to, covers=ids)


@dataclass(frozen=True)
class Received:
    accepted: int
    rejected: dict[str, int]


class Inbox:
    def __init__(self, chain_id: str, known_keys: Callable[[], Mapping[bytes, bytes]],
                 on_messages: Callable[[list[Message]], None],
                 on_txs: Callable[[list[tuple[bytes, bytes]]], None],
                 count_drop: Callable[[str, int], None], *,
                 max_envelope_bytes: int, max_batch_bytes: int) -> None:
        self._chain_id = chain_id
        self._known_keys = known_keys
        self._on_messages = on_messages
        self._on_txs = on_txs
        self._count = count_drop
        self._max_env = max_envelope_bytes
        self._max_batch = max_batch_bytes
        # A small window: senders seal in order (Outbox), but a retried HTTP batch may
        # arrive after a newer one on a fresh connection.
        self.guard = ReplayGuard(window=256)
        self._covers = {KIND_TXS: tx_cover(max_envelope_bytes),
                        KIND_CONSENSUS: consensus_cover(max_envelope_bytes)}

    def receive(self, body: bytes) -> Received:
        """Open and dispatch a batch; ``EnvelopeError`` if the body is junk as a whole."""
        try:
            batch = open_batch(body, self._chain_id, self._known_keys(), self._max_env,
                               max_batch_bytes=self._max_batch, guard=self.guard,
                               covers=self._covers)
        except EnvelopeError as exc:
            self._count(f"envelope_{exc.reason}", 1)
            raise
        rejected = Counter(batch.rejected)
        # Both kinds are covered: their payloads were decoded before the signature check,
        # and one that does not decode was refused there (malformed).
        for env in batch.accepted:
            if env.kind == KIND_CONSENSUS:
                self._on_messages(env.decoded)  # [Message], decoded by the cover
            elif env.kind == KIND_TXS:
                self._on_txs(env.decoded)  # [(raw tx, its id)], decoded by the cover
            else:
                rejected["unknown_kind"] += 1
        for reason, n in rejected.items():
            self._count(f"envelope_{reason}", n)
        return Received(len(batch.accepted), dict(rejected))
