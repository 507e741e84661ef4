"""Blocks: a frozen header, raw transactions, the block hash and the tx_root.

A block is ``(header, txs)`` where ``txs`` are the raw, signed transaction bytes exactly as
clients sent them; a tx id is ``SM3(raw bytes)`` (the same id ``ledger/tx.py`` gives), so
the chain never re-encodes a transaction and ids cannot drift.

* ``tx_root`` is the RFC 9162 Merkle root (SM3) whose leaves are the tx ids:
  leaf = SM3(0x00 ‖ tx id), node = SM3(0x01 ‖ left ‖ right). The leaf prefix keeps a tx id
  from ever being read as an inner node.
* The block hash is SM3 of the canonical encoding of the header (a msgpack map with a
  format version ``v``), so it commits to the txs through ``tx_root`` and to the state
  through ``state_root``.
* Decoding is strict: only canonical bytes (``certificates.canonical.decode``), exactly the
  expected fields, the right types and lengths; anything else is ``BlockDecodeError``
  naming the field. The stored form of a block is the same canonical encoding.
* A block of a few 1 MB batch txs is costly to hash and to copy, so nothing is done twice:
  a decoded block keeps its bytes (canonical, so they *are* its encoding) and ``encode``
  returns them; ``decode`` takes the ids of txs the caller already hashed (``known_id``:
  the mempool's, looked up by the raw bytes) and hashes only the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack

from certificates import canonical, merkle
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.commit import CommitCertificate
from ledger.errors import BlockDecodeError, CommitError

HEADER_VERSION = 1
HASH_SIZE = 32
KEY_ID_SIZE = 16
#: A block holds a few 100,000-record batches at most; refuse anything far larger unread.
MAX_BLOCK_BYTES = 256 * 1024 * 1024

_HEADER_FIELDS = frozenset(
    {
        "v",
        "chain_id",
        "height",
        "prev_hash",
        "time_ms",
        "proposer",
        "round",
        "tx_root",
        "state_root",
        "validators_hash",
        "next_validators_hash",
    }
)


def tx_id(raw_tx: bytes) -> bytes:
    """SM3 of the raw transaction bytes (agrees with ``ledger.tx``)."""
    return sm3(raw_tx)


def compute_tx_root(tx_ids: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle root over the tx ids as leaf data; SM3("") for an empty block."""
    return merkle.root(tx_ids)


@dataclass(frozen=True)
class BlockHeader:
    chain_id: str
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: bytes
    round: int
    tx_root: bytes
    state_root: bytes
    validators_hash: bytes
    next_validators_hash: bytes

    def to_value(self) -> dict[str, Any]:
        return {
            "v": HEADER_VERSION,
            "chain_id": self.chain_id,
            "height": self.height,
            "prev_hash": self.prev_hash,
            "time_ms": self.time_ms,
            "proposer": self.proposer,
            "round": self.round,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
            "validators_hash": self.validators_hash,
            "next_validators_hash": self.next_validators_hash,
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_value())

    @cached_property
    def hash(self) -> bytes:
        return sm3(self.encode())

    @classmethod
    def from_value(cls, value: Any) -> BlockHeader:
        if not isinstance(value, dict):
            raise BlockDecodeError(f"block header must be a map, got {type(value).__name__}")
        if set(value) != _HEADER_FIELDS:
            missing = sorted(_HEADER_FIELDS - set(value))
            extra = sorted(set(value) - _HEADER_FIELDS)
            raise BlockDecodeError(f"block header fields: missing {missing}, unexpected {extra}")
        if value["v"] != HEADER_VERSION:
            raise BlockDecodeError(f"block header version {value['v']!r} is not {HEADER_VERSION}")
        chain_id = value["chain_id"]
        if not isinstance(chain_id, str) or not chain_id:
            raise BlockDecodeError("block header chain_id must be a non-empty string")
        return cls(
            chain_id=chain_id,
            height=_int(value, "height", 1),
            prev_hash=_bytes(value, "prev_hash", HASH_SIZE),
            time_ms=_int(value, "time_ms", 0),
            proposer=_bytes(value, "proposer", KEY_ID_SIZE),
            round=_int(value, "round", 0),
            tx_root=_bytes(value, "tx_root", HASH_SIZE),
            state_root=_bytes(value, "state_root", HASH_SIZE),
            validators_hash=_bytes(value, "validators_hash", HASH_SIZE),
            next_validators_hash=_bytes(value, "next_validators_hash", HASH_SIZE),
        )

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        return cls.from_value(_decode(data, "block header"))


def _int(value: dict[str, Any], name: str, minimum: int) -> int:
    v = value[name]
    if type(v) is not int:  # bool is an int subclass; refuse it
        raise BlockDecodeError(f"block header {name} must be an integer, got {type(v).__name__}")
    if v < minimum:
        raise BlockDecodeError(f"block header {name} is {v}, must be >= {minimum}")
    return v


def _bytes(value: dict[str, Any], name: str, size: int) -> bytes:
    v = value[name]
    if not isinstance(v, bytes) or len(v) != size:
        got = f"{len(v)} bytes" if isinstance(v, bytes) else type(v).__name__
        raise BlockDecodeError(f"block header {name} must be {size} bytes, got {got}")
    return v


def _decode(data: bytes, what: str) -> Any:
    try:
        return canonical.decode(data, max_len=MAX_BLOCK_BYTES)
    except CertificatesError as exc:
        raise BlockDecodeError(f"{what} is not canonically encoded: {exc}") from exc


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[bytes, ...]

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @cached_property
    def tx_ids(self) -> tuple[bytes, ...]:
        return tuple(sm3(t) for t in self.txs)

    @classmethod
    def with_ids(cls, header: BlockHeader, txs: tuple[bytes, ...],
                 tx_ids: tuple[bytes, ...]) -> Block:
        """A block whose tx ids (SM3 of each tx) the caller has already computed: the
        proposer, which hashed every tx once while applying it."""
        if len(tx_ids) != len(txs):
            raise ValueError("one tx id per transaction")
        block = cls(header, txs)
        block.__dict__["tx_ids"] = tx_ids  # cached_property's slot; the dataclass is frozen
        return block

    def computed_tx_root(self) -> bytes:
        return self._computed_tx_root

    @cached_property
    def _computed_tx_root(self) -> bytes:
        # Cached: a node checks it when it first takes a proposal's value for its id
        # (node.ledger_app.value_id_of), then again in validate_block.
        return compute_tx_root(self.tx_ids)

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return canonical.encode({"header": self.header.to_value(), "txs": list(self.txs)})

    @classmethod
    def decode(cls, data: bytes,
               known_id: Callable[[bytes], bytes | None] | None = None) -> Block:
        """Strict decode. ``known_id(raw)``, if given, returns ``SM3(raw)`` for tx bytes
        the caller has already hashed (else None): those are not hashed again."""
        value = _decode(data, "block")
        if not isinstance(value, dict) or set(value) != {"header", "txs"}:
            raise BlockDecodeError("block must be a map with exactly 'header' and 'txs'")
        txs = value["txs"]
        if not isinstance(txs, list) or not all(isinstance(t, bytes) and t for t in txs):
            raise BlockDecodeError("block txs must be a list of non-empty byte strings")
        block = cls(BlockHeader.from_value(value["header"]), tuple(txs))
        # _decode checked data == canonical.encode(value): these bytes are the encoding.
        block.__dict__["_encoded"] = bytes(data)
        if known_id is not None:
            block.__dict__["tx_ids"] = tuple(known_id(t) or sm3(t) for t in txs)
        return block


def decode_header_of_block(data: bytes) -> BlockHeader:
    """The header of an encoded block without decoding its transactions.

    The block map's keys sort as ``header`` < ``txs``, so the header is the first value:
    read just that value and check it byte for byte against its canonical encoding. Used
    where only headers matter (validator sets of old heights, the parent of the head).
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data))
    unpacker.feed(data)
    try:
        if unpacker.read_map_header() != 2 or unpacker.unpack() != "header":
            raise BlockDecodeError("block must be a map starting with 'header'")
        start = unpacker.tell()
        value = unpacker.unpack()
        end = unpacker.tell()
    except BlockDecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on junk
        raise BlockDecodeError(f"block header is not valid msgpack: {exc!r}") from exc
    header = BlockHeader.from_value(value)
    if header.encode() != data[start:end]:
        raise BlockDecodeError("block header is not canonically encoded")
    return header


def encode_commit(commit: CommitCertificate) -> bytes:
    return canonical.encode(commit.to_value())


def decode_commit(data: bytes) -> CommitCertificate:
    """Strict decode of a stored or received commit certificate."""
    value = _decode(data, "commit certificate")
    if not isinstance(value, dict) or set(value) != {"height", "round", "block_hash", "signatures"}:
        raise BlockDecodeError("commit certificate must have exactly height, round, block_hash, "
                               "signatures")
    if any(type(value[k]) is not int or value[k] < 0 for k in ("height", "round")):
        raise BlockDecodeError("commit certificate height and round must be integers >= 0")
    try:
        return CommitCertificate.from_value(value)
    except CommitError as exc:
        raise BlockDecodeError(str(exc)) from exc
