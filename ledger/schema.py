"""Every storage key of the ledger, built by functions only, with ``SCHEMA_VERSION``.

The store is one flat, ordered key space. Each family of keys has a two-byte prefix
(a letter and ``/``); the rest is fixed-width binary where order matters, so a prefix scan
returns a family and heights sort numerically:

====================  ===================================  =================================
key                   value                                written
====================  ===================================  =================================
``m/v``               schema version (8-byte big-endian)   at create
``m/g``               genesis file bytes                   at create (audit needs only the DB)
``m/r``               state root after genesis (height 0)  at create
``m/h``               head height (8-byte big-endian)      every block
``m/s``               current SMT root (32 bytes)          every block
``m/u``               SM3 keys the head block changed      every block (checked at open)
``b/`` height         encoded block                        every block
``c/`` height         encoded commit certificate           every block
``h/`` block hash     height                               every block
``t/`` tx id          height (8) + index in block (4)      every transaction
``r/`` SM3(lkey)      record bytes (the state value)       when a record changes
``s/`` node key       SMT node (the SMT's own format)      when the tree changes
``i/`` issuer ``\\0`` id  empty: certificate index by issuer  when a certificate is issued
``v/`` set hash       canonical validator set              when a new set appears
``x/`` group id       records compressed together (zstd)   with a batch of records
====================  ===================================  =================================

In a ``LevelDBStore`` the values of ``b/`` and ``r/`` are stored encoded (zstd; records in
groups under ``x/``, each ``r/`` value pointing into its group) and decoded on read:
``ledger/valuecodec.py``. The store hides ``x/`` from a walk of the whole key space, so the
families above are all the chain and audit ever see.

Why these shapes: heights are 8-byte big-endian so ``b/`` and ``c/`` iterate in height
order; records are keyed by SM3 of the logical key, the same 32 bytes the SMT uses, so a
record and its leaf are found from one hash; the issuer index key carries the certificate id
itself (sorted, so LevelDB's prefix compression stores the shared ``1.2.156.…`` part once
per restart block) and needs no value. Changing any shape means bumping ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from certificates.hashing import sm3

#: 2: blocks and records zstd-encoded in LevelDB (``ledger/valuecodec.py``), ``x/`` added.
#: 3: records compressed in groups (``x/`` holds groups, not dictionaries).
SCHEMA_VERSION = 3

HEIGHT_SIZE = 8
_HEIGHT = struct.Struct(">Q")
_TX_LOC = struct.Struct(">QI")

META_PREFIX = b"m/"
BLOCK_PREFIX = b"b/"
COMMIT_PREFIX = b"c/"
BLOCK_HASH_PREFIX = b"h/"
TX_PREFIX = b"t/"
RECORD_PREFIX = b"r/"
SMT_PREFIX = b"s/"
ISSUER_INDEX_PREFIX = b"i/"
VALIDATORS_PREFIX = b"v/"
#: Internal to ``LevelDBStore``: the record groups its value encoding points into.
CODEC_PREFIX = b"x/"

#: Every family, for tools that walk the whole key space (audit, stats).
PREFIXES = (
    META_PREFIX,
    BLOCK_PREFIX,
    COMMIT_PREFIX,
    BLOCK_HASH_PREFIX,
    TX_PREFIX,
    RECORD_PREFIX,
    SMT_PREFIX,
    ISSUER_INDEX_PREFIX,
    VALIDATORS_PREFIX,
)


# --------------------------------------------------------------------------- integers


def encode_height(height: int) -> bytes:
    if not 0 <= height < 2**64:
        raise ValueError(f"height {height} is outside 0..2**64-1")
    return _HEIGHT.pack(height)


def decode_height(data: bytes) -> int:
    if len(data) != HEIGHT_SIZE:
        raise ValueError(f"a stored height has {len(data)} bytes, expected {HEIGHT_SIZE}")
    value: int = _HEIGHT.unpack(data)[0]
    return value


def encode_tx_location(height: int, index: int) -> bytes:
    return _TX_LOC.pack(height, index)


def decode_tx_location(data: bytes) -> tuple[int, int]:
    if len(data) != _TX_LOC.size:
        raise ValueError(f"a stored tx location has {len(data)} bytes, expected {_TX_LOC.size}")
    height, index = _TX_LOC.unpack(data)
    return int(height), int(index)


# --------------------------------------------------------------------------- meta


def meta_schema_version() -> bytes:
    return b"m/v"


def meta_genesis() -> bytes:
    return b"m/g"


def meta_genesis_state_root() -> bytes:
    return b"m/r"


def meta_head_height() -> bytes:
    return b"m/h"


def meta_smt_root() -> bytes:
    return b"m/s"


def meta_head_footprint() -> bytes:
    """Concatenated 32-byte state key hashes the head block wrote (genesis: its state).

    Open re-proves exactly these against the head's state root, so damage done by the last
    write is found in O(block) time; older damage is what ``audit`` is for.
    """
    return b"m/u"


# --------------------------------------------------------------------------- blocks


def block(height: int) -> bytes:
    return BLOCK_PREFIX + encode_height(height)


def commit(height: int) -> bytes:
    return COMMIT_PREFIX + encode_height(height)


def block_hash(block_hash_: bytes) -> bytes:
    """Index: block hash -> height."""
    return BLOCK_HASH_PREFIX + block_hash_


def tx(tx_id: bytes) -> bytes:
    """Index: tx id -> (height, index)."""
    return TX_PREFIX + tx_id


def validators(set_hash: bytes) -> bytes:
    """A validator set by its hash (headers name sets by hash)."""
    return VALIDATORS_PREFIX + set_hash


# --------------------------------------------------------------------------- state


def state_key_hash(logical_key: bytes) -> bytes:
    """SM3 of a logical key: the SMT key and the suffix of its record key."""
    return sm3(logical_key)


def record(key_hash: bytes) -> bytes:
    """State record by SM3(logical key); see ``state_key_hash``."""
    return RECORD_PREFIX + key_hash


def record_for(logical_key: bytes) -> bytes:
    return RECORD_PREFIX + sm3(logical_key)


#: Passed to the SMT as its ``node_key``: it names its nodes, we place them (``s/`` + the
#: node's id). A bound method rather than a function: the SMT calls it ~10 times per insert,
#: and a C-level call costs a fraction of a Python frame.
smt_node: Callable[[bytes], bytes] = SMT_PREFIX.__add__


def codec_group(group_id: bytes) -> bytes:
    """A group of records compressed together by ``ledger/valuecodec.py`` (not a chain
    family)."""
    return CODEC_PREFIX + group_id


def issuer_certificate(issuer: str, certificate_id: str) -> bytes:
    """Index: issuer -> certificate ids (the value is empty)."""
    return ISSUER_INDEX_PREFIX + issuer.encode("ascii") + b"\x00" + certificate_id.encode("ascii")


def issuer_certificates_prefix(issuer: str) -> bytes:
    return ISSUER_INDEX_PREFIX + issuer.encode("ascii") + b"\x00"


def certificate_id_from_issuer_key(key: bytes) -> str:
    return key[key.index(b"\x00", len(ISSUER_INDEX_PREFIX)) + 1 :].decode("ascii")
