"""Compact sparse Merkle tree over 256-bit keys: batch updates, inclusion and absence proofs.

The tree (the binary form of Diem's Jellyfish Merkle tree, without versions)
---------------------------------------------------------------------------
Keys and values are 32 bytes (a key is an SM3 digest, read as 256 bits, most significant bit
first: bit ``j`` of a key chooses the child at depth ``j + 1``). The hash of a subtree is:

* ``EMPTY_ROOT`` (32 zero bytes) if it holds no key;
* ``SM3(0x00 || key || value)`` if it holds exactly one key: a lone leaf sits at the highest
  position where it is alone, whatever depth that is;
* ``SM3(0x01 || left || right)`` otherwise, over the hashes of the two halves.

So the root depends only on the set of (key, value) pairs, never on the order or batching of
updates. Keys sharing their first ``n`` bits and no more meet at a *branch* at depth ``n``;
between a branch and the branch above it hang *chain* nodes whose other child is empty.

Proofs
------
``prove`` returns an ``SMTProof``; its encoding and ``verify_proof`` (pure) live in
``ledger.smt_proof`` and are re-exported here.

Storage
-------
Only branches are stored, one record each, keyed by the *position* of the top of the edge
that leads to them (just below the parent branch; the root's record is at depth 0). Chain
nodes are not stored; their hashes are recomputed when something below them changes. A
record holds the hashes of both children and a leaf child's key and value, so a path costs
one read per branch and a proof needs no hashing::

    branch record  0x01 | left hash | right hash | flags | d | prefix | [left kv] [right kv]
        flags bit0/bit1: the left/right child is a leaf, its key || value (64) follows;
        d: the depth of the branch (<= 255); prefix: its first d bits, right-aligned, in
        ceil(d/8) bytes. The first 65 bytes are the branch's hash input.
    leaf record    key || value (64 bytes; only at the root of a one-key tree)

A position's id is its heap index, ``2**t + (its t leading bits)``, in big-endian bytes
(``01`` for the root); the caller's ``node_key`` maps ids to storage keys. Keying by
position lets the latest version overwrite in place, with a delete when a branch disappears
or moves, so storage stays O(number of keys): one record per branch (n - 1 for n keys), about
140 bytes per key with 1M keys, node keys included. No history is kept. ``check_root``
rehashes the root record (cheap, on open); ``audit`` rehashes every record.

Writes, overlay, cache
----------------------
``update`` returns the writes (``None`` = delete) for the caller's atomic batch, switches the
tree to the new root and keeps those writes in an in-memory overlay that reads consult before
``get``, so the tree serves the new root before the caller persists. ``commit()`` drops the
overlay once the writes are persisted; ``rollback()`` drops it and returns to the root of the
last commit (a block that was not committed). Several updates may be pending; persist their
write lists in order. Records at depth <= ``cache_depth`` are kept in memory once read or
written (at most ``2**(cache_depth + 1)``; "depth" is the branch's, which bounds its
position's; ``CACHE_ALL`` keeps every record, one per key, and refreshes it in bulk) and
refreshed by ``commit``; ``get_committed`` reads committed records through
that cache for a read-only tree (proofs while a block is staged). The tree object must be the
only writer of its nodes. It is not thread-safe.

The batch update sorts the keys and recurses down once, splitting the sorted run by the bit at
each branch, so every touched branch is read, rewritten and hashed once per batch. Below the
point where a key is alone in its batch a loop takes over (``insert_one``): most of the work.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, ItemsView, Iterable, Mapping
from functools import partial

from certificates.hashing import sm3
from ledger.smt_proof import (
    _LEAF,
    _NODE,
    _Z,
    EMPTY_ROOT,
    ProofError,
    SMTError,
    SMTProof,
    SMTRootMismatchError,
    _check_value,
    _key_int,
    verify_proof,
)

__all__ = [
    "CACHE_ALL",
    "EMPTY_ROOT",
    "ProofError",
    "SMTError",
    "SMTProof",
    "SMTRootMismatchError",
    "SparseMerkleTree",
    "Writes",
    "verify_proof",
]

#: ``cache_depth`` that keeps every record in memory (no branch is deeper than 255).
CACHE_ALL = 256
_NBYTES = tuple((t + 7) >> 3 for t in range(257))
_ID_BYTES = tuple((t >> 3) + 1 for t in range(256))
_MARK = 1 << 256
_FLAGS_DEPTH = tuple(tuple(bytes((f, d)) for d in range(256)) for f in range(4))
_ROOT_ID = b"\x01"
_BIG_INT = partial(int.from_bytes, byteorder="big")

Get = Callable[[bytes], bytes | None]
NodeKey = Callable[[bytes], bytes]
Write = tuple[bytes, bytes | None]
#: An update's writes, each storage key once (None = delete): a view of an overlay dict
#: that the tree never changes afterwards.
Writes = ItemsView[bytes, bytes | None]
# A subtree during an update: (hash at its top, key||value if a leaf, its record if a branch
# whose record is at hand); None when empty. A branch record moving down to a new position
# has no hash yet there: b"".
_Sub = tuple[bytes, bytes | None, bytes | None] | None


def _chain(h: bytes, bits: int, d: int, t: int) -> bytes:
    """Hash at depth ``t`` above the node of hash ``h`` at depth ``d`` (position ``bits``),
    through the chain nodes in between, whose other child is empty."""
    for i in range(d - t):
        h = sm3(_NODE + _Z + h) if (bits >> i) & 1 else sm3(_NODE + h + _Z)
    return h


def _no_hit(skey: bytes) -> None:
    return None


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


class SparseMerkleTree:
    """The latest version of the tree, read through ``get(node_key(id))`` and the overlay."""

    def __init__(
        self, get: Get, node_key: NodeKey, root: bytes = EMPTY_ROOT, *, cache_depth: int = 16
    ) -> None:
        _check_value(root, "root")
        self._get = get
        self._node_key = node_key
        self._root = root
        self._committed_root = root
        self._overlay: dict[bytes, bytes | None] = {}  # by storage key
        self._deleted: list[bytes] = []  # overlay keys that were set to None (deletes)
        # Committed records at depth <= cache_depth (at most 2**(cache_depth + 1) of them),
        # read once and then kept: every batch passes through the top of the tree, and a
        # store such as LevelDB costs microseconds per read. -1 turns the cache off.
        self._cache_depth = cache_depth
        self._cache: dict[bytes, bytes] = {}

    @property
    def root(self) -> bytes:
        return self._root

    def commit(self) -> None:
        """The writes of every update so far are persisted: read them through ``get`` now."""
        # Refresh the cache, and add the records written at depth <= cache_depth: new
        # branches would otherwise cost a store read each on the next batch. A record's
        # position is at most its branch's depth (byte 66), so that depth decides.
        cache, cache_depth = self._cache, self._cache_depth
        if cache_depth >= CACHE_ALL:
            # Every record qualifies: a bulk update, then drop the deleted positions.
            overlay = self._overlay
            cache.update(overlay)  # type: ignore[arg-type]  # the Nones go just below
            for skey in self._deleted:
                if overlay.get(skey, b"") is None:  # not re-written by a later update
                    cache.pop(skey, None)
        elif cache_depth >= 0:
            pop = cache.pop
            for skey, rec in self._overlay.items():
                if rec is None:
                    pop(skey, None)
                elif len(rec) == 64 or rec[66] <= cache_depth:
                    cache[skey] = rec
                else:
                    pop(skey, None)
        self._overlay = {}
        self._deleted = []
        self._committed_root = self._root

    def revert_commit(self, root: bytes) -> None:
        """The writes ``commit`` took as persisted were not: go back to ``root``, the root
        persisted before them. The cache may hold their records, so it is dropped whole and
        refills from ``get`` (slower until then, never wrong)."""
        _check_value(root, "root")
        self._cache.clear()
        self._overlay = {}
        self._deleted = []
        self._root = self._committed_root = root

    def rollback(self) -> None:
        """Forget the updates since the last commit (their writes were not persisted)."""
        self._overlay = {}
        self._deleted = []
        self._root = self._committed_root

    def preload(self, records: Iterable[tuple[bytes, bytes]], key_bytes: int = 32) -> set[bytes]:
        """Cache committed ``(storage key, record)`` pairs read in bulk (a fresh ``CACHE_ALL``
        tree at open: one pass over the store instead of a read per record on first touch),
        and return the first ``key_bytes`` bytes of every leaf key they hold: the tree's keys."""
        if self._cache_depth < CACHE_ALL or self._cache:
            raise SMTError("preload needs a fresh tree that caches every record (CACHE_ALL)")
        cache = self._cache
        cache.update(records)
        recs, nbytes, kb = cache.values(), _NBYTES, key_bytes
        # Comprehensions: about half the time of one loop with branches, at 1M records.
        keys = {rec[:kb] for rec in recs if len(rec) == 64}  # the lone leaf of a one-key tree
        keys.update({rec[67 + nbytes[rec[66]] : 67 + nbytes[rec[66]] + kb]
                     for rec in recs if len(rec) > 64 and rec[65] & 1})
        keys.update({rec[-64 : kb - 64] for rec in recs if len(rec) > 64 and rec[65] & 2})
        return keys

    def get_committed(self, skey: bytes) -> bytes | None:
        """The committed record under storage key ``skey`` (cache, then store; never the
        overlay): what a read-only tree on the committed root may read through. Records of
        branches at depth <= cache_depth read from the store join the cache (they are at a
        position no deeper than their branch)."""
        rec = self._cache.get(skey)
        if rec is None:
            rec = self._get(skey)
            if rec is not None and (len(rec) == 64 or rec[66] <= self._cache_depth):
                self._cache[skey] = rec
        return rec

    def _fetch(self, skey: bytes, t: int) -> bytes | None:
        """The record under ``skey`` at depth ``t``: overlay, then cache, then store."""
        overlay = self._overlay
        if skey in overlay:
            return overlay[skey]
        if t > self._cache_depth:
            return self._get(skey)
        rec = self._cache.get(skey)
        if rec is None:
            rec = self._get(skey)
            if rec is not None:
                self._cache[skey] = rec
        return rec

    def _read(self, nid: bytes, t: int) -> bytes:
        skey = self._node_key(nid)
        rec = self._fetch(skey, t)
        if rec is None:
            raise self._missing(skey)
        return rec

    def _missing(self, skey: bytes) -> SMTError:
        return SMTError(
            f"SMT node {skey.hex()} is missing from storage: the store does not hold the tree "
            f"of root {self._root.hex()} (corrupt or wrong data directory)"
        )

    def _root_record(self) -> bytes | None:
        return None if self._root == EMPTY_ROOT else self._read(_ROOT_ID, 0)

    def get_value(self, key: bytes) -> bytes | None:
        """The 32-byte value stored under ``key``, or None."""
        k = _key_int(key)
        node = self._root_record()
        if node is not None and len(node) == 64:
            return node[32:] if node[:32] == key else None
        while node is not None:
            d, prefix, _, _, lkv, rkv = _decode(node)
            if (k >> (256 - d)) != prefix:
                return None
            kv = rkv if (k >> (255 - d)) & 1 else lkv
            if kv is not None:
                return kv[32:] if kv[:32] == key else None
            node = self._read(_node_id(d + 1, k >> (255 - d)), d + 1)
        return None

    def prove(self, key: bytes) -> SMTProof:
        """Inclusion proof if ``key`` is present, absence proof otherwise."""
        k = _key_int(key)
        siblings: list[bytes] = []
        t = 0
        node = self._root_record()
        kv = node if node is not None and len(node) == 64 else None
        # _decode inlined (it runs again to name a defect); with no overlay and no cache (a
        # read-only tree, as Chain.prove builds) nodes come straight from ``get``.
        get, node_key = self._get, self._node_key
        direct = not self._overlay and self._cache_depth < 0
        append = siblings.append
        while kv is None and node is not None:
            if len(node) < 67 or node[0] != 1 or node[65] > 3:
                _decode(node)
            f, d = node[65], node[66]
            p = 67 + _NBYTES[d]
            if len(node) != p + 64 * ((f & 1) + (f >> 1)):
                _decode(node)
            prefix = int.from_bytes(node[67:p], "big")
            diverge = (k >> (256 - d)) ^ prefix
            if diverge:
                # The key leaves this branch's chain at depth e: its side there is empty.
                e = d - diverge.bit_length()
                siblings += [_Z] * (e - t)
                append(_chain(sm3(node[:65]), prefix, d, e + 1))
                break
            if d > t:
                siblings += [_Z] * (d - t)
            t = d + 1
            if (k >> (255 - d)) & 1:
                append(node[1:33])
                kv = node[-64:] if f & 2 else None
            else:
                append(node[33:65])
                kv = node[p : p + 64] if f & 1 else None
            if kv is None:
                nid = ((k >> (256 - t)) | (1 << t)).to_bytes(_ID_BYTES[t], "big")
                if direct:
                    skey = node_key(nid)
                    node = get(skey)
                    if node is None:
                        raise self._missing(skey)
                else:
                    node = self._read(nid, t)
        if kv is not None and kv[:32] != key:
            return SMTProof(tuple(siblings), (kv[:32], kv[32:]))
        return SMTProof(tuple(siblings))

    def check_root(self) -> None:
        """Recompute the root from the stored root record (a cheap check when opening)."""
        node = self._root_record()
        if node is None:
            return
        if len(node) == 64:
            h = sm3(_LEAF + node)
        else:
            _decode(node)
            h = _record_hash(node, 0)
        if h != self._root:
            raise SMTError(f"stored SMT root node hashes to {h.hex()}, expected {self._root.hex()}")

    def audit(self) -> int:
        """Recompute every stored hash from the leaves up; return the number of keys."""
        node = self._root_record()
        if node is None or len(node) == 64:
            self.check_root()
            return 0 if node is None else 1
        count, h = self._audit(node, 0, 0)
        if h != self._root:
            raise SMTError(f"SMT nodes hash to root {h.hex()}, expected {self._root.hex()}")
        return count

    def _audit(self, rec: bytes, t: int, bits: int) -> tuple[int, bytes]:
        d, prefix, lh, rh, lkv, rkv = _decode(rec)
        if d < t or prefix >> (d - t) != bits:
            raise SMTError(f"SMT branch at depth {d} is misplaced under position {t}/{bits:x}")
        count = 0
        for side, stored, kv in ((0, lh, lkv), (1, rh, rkv)):
            pos = (prefix << 1) | side
            if kv is not None:
                if int.from_bytes(kv[:32], "big") >> (255 - d) != pos:
                    raise SMTError(f"SMT leaf {kv[:32].hex()} is misplaced at depth {d + 1}")
                n, h = 1, sm3(_LEAF + kv)
            else:
                n, h = self._audit(self._read(_node_id(d + 1, pos), d + 1), d + 1, pos)
            if h != stored:
                raise SMTError(
                    f"SMT node at depth {d + 1} hashes to {h.hex()}, its parent "
                    f"records {stored.hex()}"
                )
            count += n
        return count, _record_hash(rec, t)

    def update(self, items: Mapping[bytes, bytes | None]) -> tuple[bytes, Writes]:
        """Apply every insert, update and delete (value None) of ``items`` in one pass.

        Returns the new root and the writes for the caller's atomic batch; the tree switches
        to the new root and serves it from the overlay until ``commit``/``rollback``.
        """
        keys = list(items)
        if set(map(type, keys)) - {bytes} or set(map(len, keys)) - {32}:
            for key in keys:
                _key_int(key)
        keys.sort()
        vals = [items[key] for key in keys]
        present = [v for v in vals if v is not None]
        if set(map(type, present)) - {bytes} or set(map(len, present)) - {32}:
            for key, val in zip(keys, vals, strict=True):
                if val is not None:
                    _check_value(val, f"value for key {key.hex()}")
        if not keys:
            return self._root, {}.items()
        ks = list(map(_BIG_INT, keys))
        # Both dicts are keyed by storage key: node_key runs once per position touched.
        writes: dict[bytes, bytes | None] = {}
        deleted = self._deleted
        overlay, get, node_key = self._overlay, self._get, self._node_key
        # After a commit the overlay is empty: read the store directly (the common case).
        read: Get = (
            get if not overlay else lambda skey: overlay[skey] if skey in overlay else get(skey)
        )
        fetch, cache_depth = self._fetch, self._cache_depth
        # A cache hit is only valid when no pending write can shadow it.
        hit: Get = self._cache.get if not overlay else _no_hit

        def load(skey: bytes, t: int) -> bytes:
            rec = read(skey) if t > cache_depth else hit(skey) or fetch(skey, t)
            if rec is None:
                raise self._missing(skey)
            return rec

        def insert_one(t: int, mh: bytes, mkv: bytes | None, i: int, v: bytes) -> _Sub:
            # Hot path: insert or update key i in the subtree at depth t, a leaf (mkv is its
            # key||value, mh its hash) or a stored branch (mkv None). Walk down recording each
            # branch and which hash in it to replace, then splice the new hashes in upwards.
            k = ks[i]
            mk = k | _MARK  # its prefixes are the heap indexes of its path's positions
            kv = keys[i] + v
            stack = []
            okv: bytes | None = None
            while mkv is None:
                tkey = node_key((mk >> (256 - t)).to_bytes(_ID_BYTES[t], "big"))
                node = read(tkey) if t > cache_depth else hit(tkey) or fetch(tkey, t)
                if node is None:
                    raise self._missing(tkey)
                d = node[66]
                chain = 0
                if d > t:
                    x = (k >> (256 - d)) ^ int.from_bytes(node[67 : 67 + _NBYTES[d]], "big")
                    if x:
                        # The key leaves the chain above this branch at depth e: a new branch
                        # there gets the key's leaf and, one level down, this branch.
                        e = d - x.bit_length()
                        writes[node_key(_node_id(e + 1, (k >> (255 - e)) ^ 1))] = node
                        oh = _record_hash(node, e + 1)
                        break
                    chain = t + 1
                if (k >> (255 - d)) & 1:
                    stack.append((tkey, node, 33, chain))
                    if node[65] & 2:
                        mh, mkv = node[33:65], node[-64:]
                else:
                    stack.append((tkey, node, 1, chain))
                    if node[65] & 1:
                        p = 67 + _NBYTES[d]
                        mh, mkv = node[1:33], node[p : p + 64]
                t = d + 1
            else:
                if mkv[:32] == kv[:32]:
                    e = -1  # same key: the leaf is replaced where it is
                else:
                    # Another key's leaf: both go under a new branch at depth e.
                    e = 256 - (int.from_bytes(mkv[:32], "big") ^ k).bit_length()
                    tkey = node_key((mk >> (256 - t)).to_bytes(_ID_BYTES[t], "big"))
                    oh, okv = mh, mkv
            h = sm3(_LEAF + kv)
            hkv: bytes | None = kv
            rec: bytes | None = None
            if e >= 0:
                if (k >> (255 - e)) & 1:
                    rec = _make(e, k >> (256 - e), oh, h, okv, kv)
                else:
                    rec = _make(e, k >> (256 - e), h, oh, kv, okv)
                h = sm3(rec[:65])
                if e > t:
                    h = _chain(h, k >> (256 - e), e, t)
                writes[tkey] = rec
                hkv = None
            if mkv is not None and stack:
                # The parent held a leaf here: its flags and key||value change too.
                tkey, node, a, chain = stack.pop()
                f, d = node[65], node[66]
                tail = b"" if hkv is None else hkv
                if a == 33:  # the right child's key||value is the record's last 64 bytes
                    flags = _FLAGS_DEPTH[(f & 1) | (hkv is not None) << 1][d]
                    rec = node[:33] + h + flags + node[67:-64] + tail
                else:
                    p = 67 + _NBYTES[d]
                    flags = _FLAGS_DEPTH[(f & 2) | (hkv is not None)][d]
                    rec = node[:1] + h + node[33:65] + flags + node[67:p] + tail + node[p + 64 :]
                h = sm3(rec[:65])
                if chain:
                    h = _chain(h, k >> (256 - d), d, chain - 1)
                writes[tkey] = rec
                hkv = None
            for tkey, node, a, chain in reversed(stack):
                rec = node[:a] + h + node[a + 32 :]
                h = sm3(rec[:65])
                if chain:
                    d = node[66]
                    h = _chain(h, k >> (256 - d), d, chain - 1)
                writes[tkey] = rec
            return h, hkv, rec

        def side(s: int, pos: int, sub: _Sub, lo: int, hi: int) -> _Sub:
            # The child at depth s + 1 (position ``pos``) given what is there now: empty, a
            # leaf, a stored branch (hash only) or a branch record moving down to it.
            if sub is None:  # nothing there yet; never without keys (they differ at bit s)
                if lo + 1 == hi:
                    v = vals[lo]
                    if v is None:
                        return None
                    kv = keys[lo] + v
                    return sm3(_LEAF + kv), kv, None
                return general(s + 1, None, None, lo, hi)
            h, hkv, rec = sub
            if rec is not None:  # moved down: store it at its new position
                if lo < hi:
                    return apply(s + 1, rec, None, lo, hi)
                writes[node_key(_node_id(s + 1, pos))] = rec
                return _record_hash(rec, s + 1), None, rec
            return sub if lo == hi else child(s, pos, h, hkv, lo, hi)

        def child(s: int, pos: int, h: bytes, kv: bytes | None, lo: int, hi: int) -> _Sub:
            # Items [lo, hi) into the child at depth s + 1, a leaf (kv) or a stored branch.
            if lo + 1 == hi:
                v = vals[lo]
                if v is not None:
                    return insert_one(s + 1, h, kv, lo, v)
            if kv is not None:
                return general(s + 1, kv, None, lo, hi)
            skey = node_key(_node_id(s + 1, pos))
            return apply(s + 1, load(skey, s + 1), skey, lo, hi)

        def apply(t: int, node: bytes, skey: bytes | None, lo: int, hi: int) -> _Sub:
            # The subtree at depth t after items [lo, hi), given the branch record there
            # (stored here under skey, or moving down).
            kl = ks[lo]
            d = node[66]
            p = 67 + _NBYTES[d]
            if d > t:  # a chain above the branch: do all keys stay on it?
                prefix = int.from_bytes(node[67:p], "big")
                if ((kl >> (256 - d)) ^ prefix) | ((ks[hi - 1] >> (256 - d)) ^ prefix):
                    return general(t, node, skey, lo, hi)
            else:
                prefix = kl >> (256 - d)
            # All keys are under this branch: split them by bit d.
            f = node[65]
            mid = bisect_left(ks, ((prefix << 1) | 1) << (255 - d), lo, hi)
            lkv = node[p : p + 64] if f & 1 else None
            rkv = node[-64:] if f & 2 else None
            if mid > lo:
                r0 = child(d, prefix << 1, node[1:33], lkv, lo, mid)
            else:
                r0 = node[1:33], lkv, None
            if mid < hi:
                r1 = child(d, (prefix << 1) | 1, node[33:65], rkv, mid, hi)
            else:
                r1 = node[33:65], rkv, None
            if r0 is None or r1 is None:  # a delete emptied a side
                return join(t, d, prefix, skey, r0, r1)
            h0, kv0, _ = r0
            h1, kv1, _ = r1
            if kv0 is None and kv1 is None and not f:  # two branches before and after
                rec = _NODE + h0 + h1 + node[65:]
            else:
                flags = _FLAGS_DEPTH[(kv0 is not None) | (kv1 is not None) << 1][d]
                parts = (_NODE, h0, h1, flags, node[67:p], kv0 or b"", kv1 or b"")
                rec = b"".join(parts)
            h = sm3(rec[:65])
            if d > t:
                h = _chain(h, prefix, d, t)
            if skey is None:
                skey = node_key(_node_id(t, prefix >> (d - t)))
            writes[skey] = rec
            return h, None, rec

        def general(t: int, node: bytes | None, skey: bytes | None, lo: int, hi: int) -> _Sub:
            # Like apply() where there is no branch (empty, a leaf) or some keys leave its chain.
            kl, kh = ks[lo], ks[hi - 1]
            sub0: _Sub = None
            sub1: _Sub = None
            if node is None or len(node) == 64:
                kk = kl if node is None else int.from_bytes(node[:32], "big")
                if lo + 1 == hi and kl == kk:
                    v = vals[lo]
                    if v is None:
                        return None
                    kv = keys[lo] + v
                    return sm3(_LEAF + kv), kv, None
                s = 256 - ((kl ^ kk) | (kh ^ kk)).bit_length()
                if node is not None:
                    leaf: _Sub = sm3(_LEAF + node), node, None
                    if (kk >> (255 - s)) & 1:
                        sub1 = leaf
                    else:
                        sub0 = leaf
            else:
                # apply() found keys leaving the chain above this branch, the first at depth
                # s: the branch moves down a level under a new branch at s.
                d = node[66]
                prefix = int.from_bytes(node[67 : 67 + _NBYTES[d]], "big")
                x = ((kl >> (256 - d)) ^ prefix) | ((kh >> (256 - d)) ^ prefix)
                s = d - x.bit_length()
                if (prefix >> (d - 1 - s)) & 1:
                    sub1 = b"", None, node
                else:
                    sub0 = b"", None, node
            cp = kl >> (256 - s)
            if lo + 1 == hi:
                mid = lo if (kl >> (255 - s)) & 1 else hi
            else:
                mid = bisect_left(ks, ((cp << 1) | 1) << (255 - s), lo, hi)
            r0 = side(s, cp << 1, sub0, lo, mid)
            r1 = side(s, (cp << 1) | 1, sub1, mid, hi)
            return join(t, s, cp, skey, r0, r1)

        def join(t: int, s: int, cp: int, skey: bytes | None, r0: _Sub, r1: _Sub) -> _Sub:
            # The subtree at depth t made of the new children r0, r1 of a branch at depth s.
            tkey = skey if skey is not None else node_key(_node_id(t, cp >> (s - t)))
            if r0 is None or r1 is None:
                # At most one side left: it rises to depth t; a leaf as it is, a branch's
                # record moves up to this position.
                if skey is not None:
                    writes[skey] = None
                    deleted.append(skey)
                r = r1 if r0 is None else r0
                if r is None or r[1] is not None:
                    return r
                h, _, rec = r
                pos = (cp << 1) | (r0 is None)
                ckey = node_key(_node_id(s + 1, pos))
                if rec is None:
                    rec = load(ckey, s + 1)
                writes[ckey] = None
                deleted.append(ckey)
                writes[tkey] = rec
                return _chain(h, pos, s + 1, t), None, rec
            h0, kv0, _ = r0
            h1, kv1, _ = r1
            rec = _make(s, cp, h0, h1, kv0, kv1)
            h = sm3(rec[:65])
            if s > t:
                h = _chain(h, cp, s, t)
            writes[tkey] = rec
            return h, None, rec

        root_key = node_key(_ROOT_ID)
        try:
            old = self._root_record()
            if old is not None and len(old) != 64:
                res = apply(0, old, root_key, 0, len(ks))
            else:
                res = general(0, old, None, 0, len(ks))
        except (IndexError, ValueError, OverflowError) as exc:  # only a corrupt record gets here
            raise SMTError(f"corrupt SMT node in storage: {exc}") from exc
        if res is None:
            new_root = EMPTY_ROOT
            if old is not None:
                writes[root_key] = None
                deleted.append(root_key)
        else:
            new_root, kv, _ = res
            if kv is not None:
                writes[root_key] = kv
        # A new overlay dict when one is pending: the earlier update's writes (a view of
        # its dict) must not change under its caller.
        self._overlay = overlay | writes if overlay else writes
        self._root = new_root
        # A view, not a list: ~50k fresh tuples per block cost more than the rest of
        # handing the writes over (the allocations drive the garbage collector).
        return new_root, writes.items()
