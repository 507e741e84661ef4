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
``ledger.smt_proof`` and are re-exported here, with ``verify_encoded_proof`` (the same check
on the encoded bytes, through C where built: ``ledger.smt_update``).

Storage
-------
Only branches are stored, one record each, keyed by the *position* of the top of the edge
that leads to them (just below the parent branch; the root's record is at depth 0). Chain
nodes are not stored; their hashes are recomputed when something below them changes. A
record holds the hashes of both children and a leaf child's key and value, so a path costs
one read per branch and a proof needs no hashing (the layout is in ``ledger.smt_records``).

A position's id is its heap index in big-endian bytes; the caller's ``node_key`` maps ids to
storage keys. Keying by position lets the latest version overwrite in place, with a delete
when a branch disappears or moves, so storage stays O(number of keys): one record per branch
(n - 1 for n keys), about 140 bytes per key with 1M keys, node keys included. No history is
kept. ``check_root`` rehashes the root record (cheap, on open); ``audit`` rehashes every
record.

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

The batch update itself (``ledger.smt_update``) sorts the keys and recurses down once, so
every touched branch is read, rewritten and hashed once per batch; ``native`` (the default)
runs its C version where it is built (``NATIVE``), with the same roots and writes. With
``attach_worker`` the right half of large batches is computed in a second process
(``ledger.smt_worker``, in Python), with the same roots and writes: worth it only without
the C version, so ``ledger.chain`` attaches one only then.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from certificates.hashing import sm3
from ledger.smt_proof import (
    _LEAF,
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
from ledger.smt_records import (
    _ID_BYTES,
    _NBYTES,
    _ROOT_ID,
    Get,
    NodeKey,
    Writes,
    _chain,
    _decode,
    _node_id,
    _record_hash,
    fold_writes,
    no_hit,
)
from ledger.smt_update import NATIVE, batch_update, verify_encoded_proof

if TYPE_CHECKING:
    from ledger.smt_worker import SMTWorker

__all__ = [
    "CACHE_ALL",
    "EMPTY_ROOT",
    "NATIVE",
    "ProofError",
    "SMTError",
    "SMTProof",
    "SMTRootMismatchError",
    "SparseMerkleTree",
    "Writes",
    "verify_encoded_proof",
    "verify_proof",
]

#: ``cache_depth`` that keeps every record in memory (no branch is deeper than 255).
CACHE_ALL = 256


class SparseMerkleTree:
    """The latest version of the tree, read through ``get(node_key(id))`` and the overlay."""

    def __init__(
        self, get: Get, node_key: NodeKey, root: bytes = EMPTY_ROOT, *, cache_depth: int = 16,
        native: bool = True,
    ) -> None:
        _check_value(root, "root")
        #: Whether updates run the C batch update (when it is built and no worker plans a
        #: half): settable, both give the same roots and writes.
        self.native = native
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
        # Whether the cache holds every committed record (CACHE_ALL, from empty or after
        # preload): only then can a worker's mirror be copied from it.
        self._complete = cache_depth >= CACHE_ALL and root == EMPTY_ROOT
        self._worker: SMTWorker | None = None

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
            fold_writes(cache, self._overlay, self._deleted)  # every record qualifies
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
        if self._worker is not None:
            self._worker.commit()

    def revert_commit(self, root: bytes) -> None:
        """The writes ``commit`` took as persisted were not: go back to ``root``, the root
        persisted before them. The cache may hold their records, so it is dropped whole and
        refills from ``get`` (slower until then, never wrong); so is a worker's mirror."""
        _check_value(root, "root")
        self._cache.clear()
        self._complete = False
        if self._worker is not None:
            self._worker.deactivate()
        self._overlay = {}
        self._deleted = []
        self._root = self._committed_root = root

    def rollback(self) -> None:
        """Forget the updates since the last commit (their writes were not persisted)."""
        self._overlay = {}
        self._deleted = []
        self._root = self._committed_root
        if self._worker is not None:
            self._worker.rollback()

    def attach_worker(self, worker: SMTWorker) -> None:
        """Compute the right half of large updates in ``worker``'s process from now on
        (``ledger.smt_worker``); it stays the caller's to close."""
        if self._worker is not None:
            self._worker.deactivate()
        worker.deactivate()
        self._worker = worker

    def preload(self, records: Iterable[tuple[bytes, bytes]], key_bytes: int = 32) -> set[bytes]:
        """Cache committed ``(storage key, record)`` pairs read in bulk (a fresh ``CACHE_ALL``
        tree at open: one pass over the store instead of a read per record on first touch),
        and return the first ``key_bytes`` bytes of every leaf key they hold: the tree's keys."""
        if self._cache_depth < CACHE_ALL or self._cache:
            raise SMTError("preload needs a fresh tree that caches every record (CACHE_ALL)")
        cache = self._cache
        cache.update(records)
        self._complete = True
        recs, nbytes, kb = cache.values(), _NBYTES, key_bytes
        # Comprehensions: about half the time of one loop with branches, at 1M records.
        keys = {rec[:kb] for rec in recs if len(rec) == 64}  # the lone leaf of a one-key tree
        keys.update({rec[67 + nbytes[rec[66]] : 67 + nbytes[rec[66]] + kb]
                     for rec in recs if len(rec) > 64 and rec[65] & 1})
        keys.update({rec[-64 : kb - 64] for rec in recs if len(rec) > 64 and rec[65] & 2})
        return keys

    @property
    def complete(self) -> bool:
        """Whether the cache holds every committed record (a miss then means absent, and
        the store is never read)."""
        return self._complete

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

    def check_paths(self, keys: Iterable[bytes]) -> int:
        """Check the branches on the paths of ``keys``: each child that is a branch has its
        record stored, and the record hashes to what its parent holds for it. Returns the
        number of records hashed (each once). With ``check_root``, that authenticates every
        path from the root to ``keys``, and the records beside them. Opening uses it on the
        keys the head block changed: their paths hold the records the block wrote, and the
        records beside them the ones it moved (an insert that splits the edge above a
        branch moves that branch's record down, where no changed key's path reads it)."""
        root = self._root_record()
        if root is None or len(root) == 64:
            return 0
        _decode(root)  # its children are checked below, each before it is read
        ks = sorted({_key_int(k) for k in keys})
        read, nbytes, id_bytes = self._read, _NBYTES, _ID_BYTES
        hashed = 0
        # One descent over the sorted keys, so each node is read and hashed once; _decode and
        # _record_hash inlined (at open: ~70k nodes for a block of 5,000 certificates on a
        # tree of 1M). A stack entry: a branch's record and the keys that pass through it.
        stack = [(root, 0, len(ks))]
        while stack:
            node, lo, hi = stack.pop()
            f, d = node[65], node[66]
            p = 67 + nbytes[d]
            prefix = int.from_bytes(node[67:p], "big")
            # The keys in its subtree (the others leave its chain above it: absent).
            lo = bisect_left(ks, prefix << (256 - d), lo, hi)
            hi = bisect_left(ks, (prefix + 1) << (256 - d), lo, hi)
            if lo == hi:
                continue
            mid = bisect_left(ks, ((prefix << 1) | 1) << (255 - d), lo, hi)
            t = d + 1
            base = (prefix << 1) | (1 << t)
            for s, a, b in ((0, lo, mid), (1, mid, hi)):
                if (f >> s) & 1:
                    continue  # a leaf: its hash is checked by the value walk and proofs
                nid = (base | s).to_bytes(id_bytes[t], "big")
                rec = read(nid, t)
                if len(rec) < 67 or rec[0] != 1 or rec[65] > 3:
                    _decode(rec)  # raises, naming the defect
                rd = rec[66]
                q = 67 + nbytes[rd]
                if len(rec) != q + 64 * ((rec[65] & 1) + (rec[65] >> 1)):
                    _decode(rec)
                h = sm3(rec[:65])
                if rd > t:
                    h = _chain(h, int.from_bytes(rec[67:q], "big"), rd, t)
                if h != node[1 + 32 * s : 33 + 32 * s]:
                    raise SMTError(f"SMT node {nid.hex()} does not hash to the hash its "
                                   "parent holds for it")
                hashed += 1
                if a < b:
                    stack.append((rec, a, b))
        return hashed

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
        overlay, get = self._overlay, self._get
        # After a commit the overlay is empty: read the store directly (the common case).
        read: Get = (
            get if not overlay else lambda skey: overlay[skey] if skey in overlay else get(skey)
        )
        # A cache hit is only valid when no pending write can shadow it.
        hit: Get = self._cache.get if not overlay else no_hit
        old, worker = self._root_record(), self._worker
        right_half = None
        if worker is not None:
            complete = self._complete and not overlay
            right_half = worker.plan(keys, vals, old, node_key=self._node_key,
                                     records=self._cache if complete else None,
                                     deleted=self._deleted)
        try:
            new_root, writes = batch_update(
                keys, vals, old, node_key=self._node_key, read=read, hit=hit,
                fetch=self._fetch, cache_depth=self._cache_depth, missing=self._missing,
                deleted=self._deleted, right_half=right_half, native=self.native)
        except BaseException:
            if worker is not None:
                worker.abandon()
            raise
        # A new overlay dict when one is pending: the earlier update's writes (a view of
        # its dict) must not change under its caller.
        self._overlay = overlay | writes if overlay else writes
        self._root = new_root
        if worker is not None:
            worker.after(self._root_record())
        # A view, not a list: ~50k fresh tuples per block cost more than the rest of
        # handing the writes over (the allocations drive the garbage collector).
        return new_root, writes.items()
