"""What travels inside peer envelopes, and the block-sync response.

Envelope kinds (``network.envelope``: the envelope is signed by the sending
validator; its payload is one of these):

* ``consensus/v2``: a canonical list of consensus messages, each the
  ``node.consensus.codec`` encoding of a ``Proposal`` or ``Vote``. Every message
  also carries its author's signature, which the core checks: a relayed message
  (gossip forwards other validators' votes) is as good as one from its author.
  A covered kind (``consensus_cover``): the envelope's signature covers each
  message's encoding, but a proposal's without its value (the whole block, up to
  several MB). The value is bound anyway: the proposer signs its ``value_id`` (the
  block hash, which the envelope covers too, and commits to the txs through its
  tx_root), and the core drops a proposal whose value does not hash to it, txs
  included (``value_id_of``), before using the value. So a block is
  hashed once on receipt (decoding it for its id), not twice, and not once more by
  its sender for each envelope. A value changed on the way is therefore caught by the
  core, not by the envelope: the proposal is dropped (``consensus_malformed``) and the
  proposer's re-send brings it again - what dropping it on the way would have done.
  (``consensus/v1`` signed the payload; as with the txs, the kind name changed with the
  signature.)
* ``txs/v2``: a canonical list of raw transactions (mempool gossip). A covered kind
  (``network.envelope``): the envelope's signature covers the list of the txs' ids
  (SM3 of each), which the receiver computes anyway to admit them (``tx_cover``), instead
  of the whole payload, which it would hash once more. (``txs/v1`` signed the payload;
  the kind name changed with the signature so that a node of either kind refuses the
  other's gossip as an unknown kind.)

Sync (``GET /v1/sync/blocks``): a canonical map ``{"head": int, "blocks":
[[block bytes, commit bytes], ...]}``. Nothing in it is trusted: the receiver
decodes strictly and the consensus core checks every commit certificate.

Decoders raise ``WireError`` only, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from certificates import canonical
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.block import Block, decode_commit, encode_commit
from ledger.commit import CommitCertificate
from ledger.errors import LedgerError
from network.envelope import Cover
from network.errors import EnvelopeError
from node.consensus import codec
from node.consensus.errors import ConsensusError
from node.consensus.messages import Message, Proposal, Vote
from node.errors import WireError

KIND_CONSENSUS = "consensus/v2"
KIND_TXS = "txs/v2"


def _list_of_bytes(payload: bytes, what: str, max_len: int) -> list[bytes]:
    try:
        items: Any = canonical.decode(payload, max_len=max_len)
    except CertificatesError as exc:
        raise WireError(f"{what}: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(i, bytes) for i in items):
        raise WireError(f"{what}: expected a list of byte strings")
    return items


def encode_messages(msgs: Sequence[Message]) -> bytes:
    return canonical.encode([codec.encode(m) for m in msgs])


def _decode_message(item: bytes) -> Message:
    try:
        m = codec.decode(item)
    except ConsensusError as exc:
        raise WireError(f"consensus message: {exc}") from exc
    if not isinstance(m, Proposal | Vote):
        raise WireError(f"consensus payload holds a {type(m).__name__}, not a message")
    return m


def decode_messages(payload: bytes, max_len: int) -> list[Message]:
    return [_decode_message(i) for i in _list_of_bytes(payload, "consensus payload", max_len)]


def message_cover(item: bytes, m: Message) -> bytes:
    """What a ``consensus/v2`` envelope's signature covers for message ``m`` (encoded as
    ``item``): a vote's encoding, a proposal's encoding without its value."""
    if isinstance(m, Proposal):
        fields = codec.to_value(m)
        del fields["value"]
        return canonical.encode(fields)
    return item


def cover_messages(msgs: Sequence[Message]) -> list[bytes]:
    """The covers of ``msgs`` as ``encode_messages(msgs)`` carries them (for a sealer)."""
    return [message_cover(codec.encode(m), m) for m in msgs]


def consensus_cover(max_len: int) -> Cover:
    """The cover of ``consensus/v2`` (see the header): payload -> (each message's cover,
    the messages)."""
    def cover(payload: bytes) -> tuple[list[bytes], list[Message]]:
        try:
            items = _list_of_bytes(payload, "consensus payload", max_len)
            msgs = [_decode_message(i) for i in items]
        except WireError as exc:
            raise EnvelopeError("malformed", str(exc)) from exc
        return [message_cover(i, m) for i, m in zip(items, msgs, strict=True)], msgs
    return cover


def encode_txs(txs: Sequence[bytes]) -> bytes:
    return canonical.encode(list(txs))


def decode_txs(payload: bytes, max_len: int) -> list[bytes]:
    return _list_of_bytes(payload, "tx payload", max_len)


def tx_ids(txs: Sequence[bytes]) -> list[bytes]:
    """What a ``txs/v2`` envelope's signature covers: each tx's id, SM3 of its bytes (as
    ``ledger.tx.Transaction.id``)."""
    return [sm3(t) for t in txs]


def tx_cover(max_len: int) -> Cover:
    """The cover of ``txs/v2`` (see the header): payload -> (tx ids, [(raw tx, its id)])."""
    def cover(payload: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
        try:
            txs = decode_txs(payload, max_len)
        except WireError as exc:
            raise EnvelopeError("malformed", str(exc)) from exc
        ids = tx_ids(txs)
        return ids, list(zip(txs, ids, strict=True))
    return cover


def encode_sync(head: int, blocks: Sequence[tuple[bytes, CommitCertificate]]) -> bytes:
    return canonical.encode({"head": head,
                             "blocks": [[b, encode_commit(c)] for b, c in blocks]})


def decode_sync(data: bytes, max_len: int) -> tuple[int, list[tuple[Block, bytes,
                                                                    CommitCertificate]]]:
    """(peer head height, [(block, its raw bytes, its commit)]) from a sync response."""
    try:
        value: Any = canonical.decode(data, max_len=max_len)
    except CertificatesError as exc:
        raise WireError(f"sync response: {exc}") from exc
    if not isinstance(value, dict) or set(value) != {"head", "blocks"}:
        raise WireError("sync response must be a map with head and blocks")
    head, blocks = value["head"], value["blocks"]
    if type(head) is not int or head < 0 or not isinstance(blocks, list):
        raise WireError("sync response head must be an integer and blocks a list")
    out = []
    for item in blocks:
        if not (isinstance(item, list) and len(item) == 2
                and all(isinstance(x, bytes) for x in item)):
            raise WireError("sync response block entries must be [block, commit] byte pairs")
        try:
            out.append((Block.decode(item[0]), item[0], decode_commit(item[1])))
        except LedgerError as exc:
            raise WireError(f"sync response block: {exc}") from exc
    return head, out
