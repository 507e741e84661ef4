"""The sparse Merkle tree's batch update: one pass down the tree for a block's keys.

The keys are sorted, then the update recurses down once from the root, splitting the sorted
run by the bit at each branch (``apply``), so every touched branch is read, rewritten and
hashed once per batch. Where keys leave a branch's chain, or reach an empty subtree or a
leaf, ``general`` builds the new branch that separates them (``side``/``join`` place the
pieces; a delete that empties a side makes the other rise). Below the point where a key is
alone in its batch a loop takes over (``insert_one``): it walks down recording each branch
and which hash in it to replace, then splices the new hashes in upwards - most of the work.

Everything here is a closure over the batch (its keys, values and the writes dict), built
by ``_updater``, which keeps the hot path free of attribute look-ups. ``batch_update`` runs
it from the root; ``right_half_update`` runs it below the root's right child, for the SMT
worker (``ledger.smt_worker``), whose result ``batch_update`` then takes in place of its own
recursion there. ``ledger.smt.SparseMerkleTree.update`` checks the arguments, picks how
records are read (store, overlay, cache) and keeps the writes.

``ledger/_smtcore.c`` is the same recursion in C (``native=True``; built by ``pip install``
where a compiler is at hand, and optional: ``NATIVE`` says whether it is here). It calls
back for SM3, storage keys and reads, so it changes no format and no hash; the Python here
stays the reference, and the tests require both to give the same roots, writes and deletes.
The C version takes no right half: with a worker planning one, the Python version runs.

``verify_encoded_proof`` checks an encoded proof with the C module's ``proof_root`` first
(one call instead of decoding into a tuple and hashing level by level in Python: a
verifier checks one or two proofs per verification). Only the accepting path is in C: a
proof it refuses, or whose root differs, goes through ``ledger.smt_proof.verify_proof``,
which names the defect - so that check stays the rule, and C can only agree with it or
defer to it (the tests hold C to it on valid and damaged proofs).
"""

from __future__ import annotations

import ctypes
from bisect import bisect_left
from collections.abc import Callable

from certificates.hashing import sm3
from ledger.smt_proof import _LEAF, _NODE, EMPTY_ROOT, SMTError, SMTProof, verify_proof
from ledger.smt_records import (
    _BIG_INT,
    _FLAGS_DEPTH,
    _ID_BYTES,
    _MARK,
    _NBYTES,
    _ROOT_ID,
    Get,
    NodeKey,
    _chain,
    _make,
    _node_id,
    _record_hash,
    _Sub,
)

#: Reads the record under a storage key at a depth (the tree's overlay, cache and store).
Fetch = Callable[[bytes, int], bytes | None]
#: The root's new right child, its writes merged into the dict it is given.
RightHalf = Callable[[dict[bytes, bytes | None]], _Sub]
Step = Callable[[int, bytes, bytes | None, int, int], _Sub]
General = Callable[[int, bytes | None, bytes | None, int, int], _Sub]
Child = Callable[[int, int, bytes, bytes | None, int, int], _Sub]
#: A ``cache_depth`` deeper than any branch: every read goes through ``hit`` then ``fetch``.
CACHE_EVERY = 256

try:
    from ledger import _smtcore
except ImportError:  # no compiler where it was installed: the Python version does it all
    _smtcore = None  # type: ignore[assignment]

#: Whether the C version of ``batch_update`` is built (see the module header).
NATIVE = _smtcore is not None


def _register_c_sm3() -> bool:
    """Hand GmSSL's C SM3 functions to the C update, so that it hashes without a call into
    Python per node. gmssl_pyx's extension (``certificates.hashing.sm3`` is its
    ``sm3_hash``) exports them; ``set_sm3`` registers them only if they reproduce the
    published test vectors. Without them the C update calls ``sm3`` back, as before."""
    if _smtcore is None:
        return False
    try:
        from gmssl_pyx import gmsslext

        lib = ctypes.CDLL(gmsslext.__file__)  # already loaded: the same handle
        addrs = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                 for name in ("sm3_init", "sm3_update", "sm3_finish")]
    except (ImportError, OSError, AttributeError):
        return False
    init, update, finish = addrs
    if init is None or update is None or finish is None:
        return False
    return bool(_smtcore.set_sm3(init, update, finish))


#: Whether the C update hashes through GmSSL directly (see ``_register_c_sm3``).
NATIVE_SM3 = _register_c_sm3()


def verify_encoded_proof(root: bytes, key: bytes, value: bytes | None, proof: bytes,
                         *, native: bool = True) -> None:
    """``verify_proof(root, key, value, SMTProof.from_bytes(proof))``: the same answer and
    the same errors, through the C check when it is built and hashes through GmSSL."""
    if native and NATIVE_SM3 and _smtcore.proof_root(key, value, proof) == root:
        return
    verify_proof(root, key, value, SMTProof.from_bytes(proof))


def _key_prefix(node_key: NodeKey) -> NodeKey | bytes:
    """``node_key`` as the C update takes it: the prefix itself when it is ``prefix.__add__``
    (``ledger.schema.smt_node``), so that no call is made per node; else the callable."""
    owner = getattr(node_key, "__self__", None)
    if type(owner) is bytes and getattr(node_key, "__name__", None) == "__add__":
        return owner
    return node_key


def batch_update(
    keys: list[bytes], vals: list[bytes | None], old: bytes | None, *, node_key: NodeKey,
    read: Get, hit: Get, fetch: Fetch, cache_depth: int,
    missing: Callable[[bytes], SMTError], deleted: list[bytes],
    right_half: RightHalf | None = None, native: bool = False,
) -> tuple[bytes, dict[bytes, bytes | None]]:
    """The new root and the writes (storage key -> record, None = delete) after setting
    sorted, checked ``keys`` to ``vals`` (None = delete) in the tree whose root record is
    ``old``. Records at depth <= ``cache_depth`` are read through ``hit`` then ``fetch``,
    deeper ones through ``read``; deleted storage keys are also appended to ``deleted``.

    ``right_half``, when given, supplies the root's right child instead of recursing into
    it (``ledger.smt_worker`` computes it in another process); the caller passes it only
    when ``old`` is a branch at depth 0 whose right child is a stored branch and some key
    starts with bit 1. If it raises ``SMTError`` the half is computed here after all.

    ``native`` runs the C version instead, when it is built and there is no ``right_half``;
    it raises ``SMTError`` itself for a corrupt record."""
    if native and right_half is None and _smtcore is not None:
        return _smtcore.batch_update(keys, vals, old, _key_prefix(node_key), read, hit, fetch,
                                     cache_depth, missing, deleted,
                                     None if NATIVE_SM3 else sm3, SMTError)
    writes: dict[bytes, bytes | None] = {}
    apply, general, _ = _updater(keys, vals, writes, node_key=node_key, read=read, hit=hit,
                                 fetch=fetch, cache_depth=cache_depth, missing=missing,
                                 deleted=deleted, right_half=right_half)
    root_key = node_key(_ROOT_ID)
    try:
        if old is not None and len(old) != 64:
            res = apply(0, old, root_key, 0, len(keys))
        else:
            res = general(0, old, None, 0, len(keys))
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
    return new_root, writes


def right_half_update(
    keys: list[bytes], vals: list[bytes | None], top: bytes, *, node_key: NodeKey,
    hit: Get, fetch: Fetch, missing: Callable[[bytes], SMTError], deleted: list[bytes],
) -> tuple[_Sub, dict[bytes, bytes | None]]:
    """What ``batch_update`` does below a depth-0 root for its right child, a stored branch
    of hash ``top``: the new child (as ``batch_update``'s recursion returns it) and its
    writes, given sorted ``keys`` that all start with bit 1. Every record is read through
    ``hit`` then ``fetch``."""
    writes: dict[bytes, bytes | None] = {}
    _, _, child = _updater(keys, vals, writes, node_key=node_key, read=hit, hit=hit,
                           fetch=fetch, cache_depth=CACHE_EVERY, missing=missing,
                           deleted=deleted, right_half=None)
    try:
        # A copy that missed a write would still hold the branch's old record, and every
        # update rewrites that record: so a stale copy shows here, before it can mislead.
        skey = node_key(_node_id(1, 1))
        rec = hit(skey) or fetch(skey, 1)
        if rec is None or _record_hash(rec, 1) != top:
            raise SMTError("the record under the root's right child does not hash to it "
                           "(a stale or incomplete copy of the tree)")
        return child(0, 1, top, None, 0, len(keys)), writes
    except (IndexError, ValueError, OverflowError) as exc:  # only a corrupt record gets here
        raise SMTError(f"corrupt SMT node in storage: {exc}") from exc


def _updater(
    keys: list[bytes], vals: list[bytes | None], writes: dict[bytes, bytes | None], *,
    node_key: NodeKey, read: Get, hit: Get, fetch: Fetch, cache_depth: int,
    missing: Callable[[bytes], SMTError], deleted: list[bytes], right_half: RightHalf | None,
) -> tuple[Step, General, Child]:
    """The recursion's closures over one batch: ``apply``, ``general`` and ``child``."""
    ks = list(map(_BIG_INT, keys))
    # writes is keyed by storage key: node_key runs once per position touched.

    def load(skey: bytes, t: int) -> bytes:
        rec = read(skey) if t > cache_depth else hit(skey) or fetch(skey, t)
        if rec is None:
            raise missing(skey)
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
                raise missing(tkey)
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
            if t or right_half is None:
                r1 = child(d, (prefix << 1) | 1, node[33:65], rkv, mid, hi)
            else:
                try:
                    r1 = right_half(writes)
                except SMTError:
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

    return apply, general, child
