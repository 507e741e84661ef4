"""The sparse Merkle tree's stored records: layout, position ids and hashing helpers.

Shared by ``ledger.smt`` (the tree: storage, proofs, audit) and ``ledger.smt_update`` (the
batch update). Only branches are stored, one record each, keyed by the *position* of the top
of the edge that leads to them (see ``ledger.smt``'s header for why)::

    branch record  0x01 | left hash | right hash | flags | d | prefix | [left kv] [right kv]
        flags bit0/bit1: the left/right child is a leaf, its key || value (64) follows;
        d: the depth of the branch (<= 255); prefix: its first d bits, right-aligned, in
        ceil(d/8) bytes. The first 65 bytes are the branch's hash input.
    leaf record    key || value (64 bytes; only at the root of a one-key tree)

A position's id is its heap index, ``2**t + (its t leading bits)``, in big-endian bytes
(``01`` for the root). Between a branch and the branch above it hang *chain* nodes whose
other child is empty; they are never stored, and ``_chain`` hashes up through them.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView
from functools import partial

from certificates.hashing import sm3
from ledger.smt_proof import _NODE, _Z, SMTError

_NBYTES = tuple((t + 7) >> 3 for t in range(257))
_ID_BYTES = tuple((t >> 3) + 1 for t in range(256))
_MARK = 1 << 256
_FLAGS_DEPTH = tuple(tuple(bytes((f, d)) for d in range(256)) for f in range(4))
_ROOT_ID = b"\x01"
_BIG_INT = partial(int.from_bytes, byteorder="big")

Get = Callable[[bytes], bytes | None]
NodeKey = Callable[[bytes], bytes]
#: An update's writes, each storage key once (None = delete): a view of an overlay dict
#: that the tree never changes afterwards.
Writes = ItemsView[bytes, bytes | None]
# A subtree during an update: (hash at its top, key||value if a leaf, its record if a branch
# whose record is at hand); None when empty. A branch record moving down to a new position
# has no hash yet there: b"".
_Sub = tuple[bytes, bytes | None, bytes | None] | None


def no_hit(skey: bytes) -> None:
    """The cache look-up to use while writes are pending: they may shadow any record."""
    return None


def fold_writes(cache: dict[bytes, bytes], writes: dict[bytes, bytes | None],
                deleted: list[bytes]) -> None:
    """Apply a batch's ``writes`` (None = delete) to ``cache``, where ``deleted`` lists the
    keys written None: a bulk update, then the deletes (the fast form for ~50k writes)."""
    cache.update(writes)  # type: ignore[arg-type]  # the Nones go just below
    for skey in deleted:
        if writes.get(skey, b"") is None:  # not re-written by a later update
            cache.pop(skey, None)


def _chain(h: bytes, bits: int, d: int, t: int) -> bytes:
    """Hash at depth ``t`` above the node of hash ``h`` at depth ``d`` (position ``bits``),
    through the chain nodes in between, whose other child is empty."""
    for i in range(d - t):
        h = sm3(_NODE + _Z + h) if (bits >> i) & 1 else sm3(_NODE + h + _Z)
    return h


def _node_id(t: int, bits: int) -> bytes:
    """Id of the position at depth ``t`` whose leading bits are ``bits``: its heap index."""
    return ((1 << t) | bits).to_bytes(_ID_BYTES[t], "big")


def _make(d: int, prefix: int, lh: bytes, rh: bytes, lkv: bytes | None, rkv: bytes | None) -> bytes:
    """A branch record (see the module header)."""
    flags = (lkv is not None) | (rkv is not None) << 1
    return b"".join(
        (
            _NODE,
            lh,
            rh,
            _FLAGS_DEPTH[flags][d],
            prefix.to_bytes(_NBYTES[d], "big"),
            lkv or b"",
            rkv or b"",
        )
    )


_Branch = tuple[int, int, bytes, bytes, bytes | None, bytes | None]


def _decode(rec: bytes) -> _Branch:
    """(depth, prefix, left hash, right hash, left kv, right kv) of a branch record."""
    if len(rec) < 67 or rec[0] != 1 or rec[65] > 3:
        raise SMTError(f"corrupt SMT branch record ({len(rec)} bytes)")
    f, d = rec[65], rec[66]
    p = 67 + _NBYTES[d]
    if len(rec) != p + 64 * ((f & 1) + (f >> 1)):
        raise SMTError(f"corrupt SMT branch record ({len(rec)} bytes, flags {f}, depth {d})")
    lkv = rec[p : p + 64] if f & 1 else None
    rkv = rec[-64:] if f & 2 else None
    return d, int.from_bytes(rec[67:p], "big"), rec[1:33], rec[33:65], lkv, rkv


def _record_hash(rec: bytes, t: int) -> bytes:
    """Hash at depth ``t`` (the top of its edge, t <= d) of the subtree a branch record holds."""
    d = rec[66]
    return _chain(sm3(rec[:65]), int.from_bytes(rec[67 : 67 + _NBYTES[d]], "big"), d, t)
