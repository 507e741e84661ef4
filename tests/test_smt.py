"""Sparse Merkle tree: a slow reference, Hypothesis properties, a stateful model, corruptions."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from certificates.errors import RootMismatchError
from certificates.hashing import sm3
from ledger.errors import LedgerError
from ledger.smt import (
    CACHE_ALL,
    EMPTY_ROOT,
    ProofError,
    SMTError,
    SMTProof,
    SMTRootMismatchError,
    SparseMerkleTree,
    verify_proof,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node_key(nid: bytes) -> bytes:
    return b"s/" + nid


# --- Slow reference: the definition of the module header, over whole dicts. ---


def bit(key: bytes, j: int) -> int:
    return (key[j >> 3] >> (7 - (j & 7))) & 1


def ref_root(d: Mapping[bytes, bytes], depth: int = 0) -> bytes:
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        ((k, v),) = d.items()
        return sm3(b"\x00" + k + v)
    left = {k: v for k, v in d.items() if not bit(k, depth)}
    right = {k: v for k, v in d.items() if bit(k, depth)}
    return sm3(b"\x01" + ref_root(left, depth + 1) + ref_root(right, depth + 1))


def ref_proof(d: Mapping[bytes, bytes], key: bytes) -> SMTProof:
    siblings, depth, sub = [], 0, dict(d)
    while len(sub) > 1:
        mine = {k: v for k, v in sub.items() if bit(k, depth) == bit(key, depth)}
        other = {k: v for k, v in sub.items() if bit(k, depth) != bit(key, depth)}
        siblings.append(ref_root(other, depth + 1))
        sub, depth = mine, depth + 1
    if len(sub) == 1 and key not in sub:
        ((k, v),) = sub.items()
        return SMTProof(tuple(siblings), (k, v))
    return SMTProof(tuple(siblings))


# --- Keys with interesting shapes: shared prefixes, chains, neighbours at bit 255. ---


def _flip(key: bytes, *bits: int) -> bytes:
    n = int.from_bytes(key, "big")
    for b in bits:
        n ^= 1 << (255 - b)
    return n.to_bytes(32, "big")


_rng = random.Random(20240601)
_BASE = _rng.randbytes(32)
POOL: list[bytes] = [
    *(_rng.randbytes(32) for _ in range(12)),
    bytes(32),
    b"\xff" * 32,
    _BASE,
    *(_flip(_BASE, b) for b in (0, 1, 2, 9, 31, 100, 200, 254, 255)),
    _flip(_BASE, 254, 255),
    _flip(_BASE, 100, 101),
    _flip(_BASE, 9, 200),
    _BASE[:31] + bytes([_BASE[31] ^ 0x0F]),
]
POOL = list(dict.fromkeys(POOL))
keys_st = st.sampled_from(POOL)
values_st = st.binary(min_size=32, max_size=32)
contents_st = st.dictionaries(keys_st, values_st, max_size=len(POOL))
batch_st = st.dictionaries(keys_st, st.none() | values_st, max_size=12)


def fresh() -> tuple[dict[bytes, bytes], SparseMerkleTree]:
    store: dict[bytes, bytes] = {}
    return store, SparseMerkleTree(store.get, node_key)


def persist(store: dict[bytes, bytes], writes: Iterable[tuple[bytes, bytes | None]]) -> None:
    for k, v in writes:
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v


def update_persist_commit(tree: SparseMerkleTree, store: dict[bytes, bytes],
                          model: dict[bytes, bytes], batch: Mapping[bytes, bytes | None]) -> None:
    """Apply ``batch`` to the tree, persist and commit it, and to the plain-dict model."""
    _, writes = tree.update(batch)
    persist(store, writes)
    tree.commit()
    for k, v in batch.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


def build(contents: Mapping[bytes, bytes]) -> tuple[dict[bytes, bytes], SparseMerkleTree]:
    store, tree = fresh()
    _, writes = tree.update(contents)
    persist(store, writes)
    tree.commit()
    return store, tree


# --- The construction, by hand. ---


def leaf(k: bytes, v: bytes) -> bytes:
    return sm3(b"\x00" + k + v)


def test_empty_and_single_leaf_roots() -> None:
    assert bytes(32) == EMPTY_ROOT
    store, tree = fresh()
    assert tree.root == EMPTY_ROOT
    k, v = POOL[0], b"v" * 32
    root, writes = tree.update({k: v})
    assert root == tree.root == leaf(k, v)
    persist(store, writes)
    assert len(store) == 1  # a one-key tree is its leaf record


def test_hand_built_roots() -> None:
    v = b"\x07" * 32
    a = bytes(32)
    b = _flip(a, 0)  # differ at bit 0: both leaves hang from the root
    assert build({a: v, b: v})[1].root == sm3(b"\x01" + leaf(a, v) + leaf(b, v))
    c = _flip(a, 1)  # share bit 0 = 0, differ at bit 1: a chain node at the root
    inner = sm3(b"\x01" + leaf(a, v) + leaf(c, v))
    assert build({a: v, c: v})[1].root == sm3(b"\x01" + inner + EMPTY_ROOT)
    d = _flip(a, 255)  # differ only at the last bit: 255 chain nodes above the branch
    h = sm3(b"\x01" + leaf(a, v) + leaf(d, v))
    for _ in range(255):
        h = sm3(b"\x01" + h + EMPTY_ROOT)
    assert build({a: v, d: v})[1].root == h


def test_golden_root() -> None:
    # Pins the construction (and SM3) against accidental change.
    contents = {bytes([i]) * 32: bytes([i + 1]) * 32 for i in range(5)}
    root = build(contents)[1].root
    assert root == ref_root(contents)
    assert root.hex() == GOLDEN_ROOT


GOLDEN_ROOT = "264d15c91799fece5d6f4326c1aff2afc052aa56385bf5bd70631b877a6652a7"


# --- Properties against the reference. ---


@FAST
@given(contents_st)
def test_root_matches_reference(contents: dict[bytes, bytes]) -> None:
    store, tree = build(contents)
    assert tree.root == ref_root(contents)
    assert tree.audit() == len(contents)
    # Exactly one record per branch (n - 1 of them), or the lone leaf: no stale nodes.
    assert len(store) == (len(contents) - 1 if len(contents) > 1 else len(contents))


@FAST
@given(st.lists(batch_st, max_size=6), st.randoms(use_true_random=False))
def test_root_independent_of_order_and_batching(
    batches: list[dict[bytes, bytes | None]], rnd: random.Random
) -> None:
    model: dict[bytes, bytes] = {}
    store, tree = fresh()
    for batch in batches:
        update_persist_commit(tree, store, model, batch)
    assert tree.root == ref_root(model)
    # Same contents, inserted one key at a time in a shuffled order: same root.
    items = list(model.items())
    rnd.shuffle(items)
    _, one_by_one = fresh()
    for k, v in items:
        one_by_one.update({k: v})
    assert one_by_one.root == tree.root
    assert len(store) == (len(model) - 1 if len(model) > 1 else len(model))


@FAST
@given(contents_st, keys_st)
def test_proofs_match_reference_and_verify(contents: dict[bytes, bytes], key: bytes) -> None:
    _, tree = build(contents)
    proof = tree.prove(key)
    assert proof == ref_proof(contents, key)
    assert SMTProof.from_bytes(proof.to_bytes()) == proof
    value = contents.get(key)
    assert tree.get_value(key) == value
    verify_proof(tree.root, key, value, proof)
    if value is None:
        with pytest.raises(ProofError):
            verify_proof(tree.root, key, b"\x01" * 32, proof)
    else:
        with pytest.raises(ProofError):
            verify_proof(tree.root, key, None, proof)
        with pytest.raises(SMTRootMismatchError):
            verify_proof(tree.root, key, bytes(a ^ 1 for a in value), proof)


@settings(max_examples=25, deadline=None)
@given(contents_st.filter(bool), keys_st, st.data())
def test_tampered_proofs_fail(
    contents: dict[bytes, bytes], key: bytes, data: st.DataObject
) -> None:
    _, tree = build(contents)
    value = contents.get(key)
    proof = tree.prove(key)
    encoded = proof.to_bytes()
    positions = range(len(encoded) * 8)
    flips = positions if len(encoded) <= 80 else data.draw(st.lists(st.sampled_from(positions)))
    for pos in flips:
        corrupted = bytearray(encoded)
        corrupted[pos >> 3] ^= 0x80 >> (pos & 7)
        with pytest.raises(ProofError):
            verify_proof(tree.root, key, value, SMTProof.from_bytes(bytes(corrupted)))
    for j, sibling in enumerate(proof.siblings):
        bad = list(proof.siblings)
        bad[j] = bytes([sibling[0] ^ 0x40]) + sibling[1:]
        with pytest.raises(ProofError):
            verify_proof(tree.root, key, value, SMTProof(tuple(bad), proof.other_leaf))


# --- Malformed input. ---


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda b: b"\x00\x00\x10" + b, st.binary(max_size=80)))
def test_garbage_proof_bytes_raise_proof_error(data: bytes) -> None:
    try:
        proof = SMTProof.from_bytes(data)
    except ProofError:
        return
    with pytest.raises(ProofError):
        verify_proof(sm3(data), POOL[0], None, proof)


Z = EMPTY_ROOT
S = b"\x11" * 32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than"),
        (b"\x00\x00", "shorter than"),
        (b"\x02\x00\x00", "unknown flags"),
        (b"\x00\x01\x01" + bytes(33), "exceeds 256"),
        (b"\x00\x00\x01\x7f" + S, "padding bits"),
        (b"\x00\x00\x01\x80", "header announces"),
        (b"\x00\x00\x01\x80" + S + b"x", "header announces"),
        (b"\x00\x00\x01\x80" + Z, "marked non-empty but is zero"),
        (b"\x01\x00\x00" + bytes(63), "header announces"),
    ],
)
def test_malformed_proof_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        SMTProof.from_bytes(data)


def test_malformed_proof_objects() -> None:
    store, tree = build({k: b"\x05" * 32 for k in POOL[:6]})
    key, root = POOL[0], tree.root
    good = tree.prove(key)
    value = b"\x05" * 32
    cases: list[tuple[bytes, bytes | None, SMTProof, str]] = [
        (key, value, SMTProof((S,) * 257), "at most 256"),
        (key, value, SMTProof((S[:31],)), "sibling 0 must be 32 bytes"),
        (key, value, SMTProof(good.siblings, (POOL[1], value)), "inclusion claimed"),
        (key, None, SMTProof(good.siblings, (key, value)), "absence claimed"),
        (key, None, SMTProof((S,), (_flip(key, 0), value)), "not on the key's path"),
        (key, None, SMTProof((S, Z)), "last sibling is empty"),
        (key, value, SMTProof((S, Z)), "last sibling is empty"),
        (key[:31], value, good, "key must be 32 bytes"),
        (key, value[:5], good, "value must be 32 bytes"),
        (key, None, SMTProof((S,), (key[:31], value)), "key must be 32 bytes"),
        (key, None, SMTProof((S,), (_flip(key, 255), b"")), "leaf value must be 32 bytes"),
    ]
    for k, v, proof, message in cases:
        with pytest.raises(ProofError, match=message):
            verify_proof(root, k, v, proof)
    with pytest.raises(ProofError, match="root must be 32 bytes"):
        verify_proof(root[:4], key, value, good)
    # Objects built by hand, ignoring the annotations, are refused too.
    with pytest.raises(ProofError, match="must be a tuple"):
        verify_proof(root, key, value, SMTProof(list(good.siblings)))  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="pair"):
        verify_proof(root, key, None, SMTProof(good.siblings, (key,)))  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="must be bytes"):
        SMTProof.from_bytes(good.to_bytes().hex())  # type: ignore[arg-type]
    assert SMTProof.from_bytes(bytearray(good.to_bytes())) == good
    with pytest.raises(ProofError, match="at most 256"):
        SMTProof((S,) * 257).to_bytes()
    assert store


def test_errors_are_typed() -> None:
    assert issubclass(ProofError, SMTError)
    assert issubclass(SMTError, LedgerError)
    err = SMTRootMismatchError(b"\x01" * 32, b"\x02" * 32)
    assert isinstance(err, RootMismatchError)
    assert isinstance(err, ProofError)
    assert (err.expected, err.calculated) == (b"\x01" * 32, b"\x02" * 32)


def test_bad_arguments_raise_smt_error() -> None:
    _, tree = fresh()
    with pytest.raises(SMTError, match="key must be 32 bytes, got 31 bytes"):
        tree.update({b"k" * 31: b"v" * 32})
    with pytest.raises(SMTError, match="key must be 32 bytes, got str"):
        tree.update({"k" * 32: b"v" * 32, b"k" * 32: b"v" * 32})  # type: ignore[dict-item]
    with pytest.raises(SMTError, match=r"value for key 6b6b.* must be 32 bytes, got 33 bytes"):
        tree.update({b"k" * 32: b"v" * 33})
    with pytest.raises(SMTError, match="key must be 32 bytes"):
        tree.prove(b"short")
    with pytest.raises(SMTError, match="key must be 32 bytes"):
        tree.get_value(b"short")
    with pytest.raises(SMTError, match="root must be 32 bytes"):
        SparseMerkleTree(fresh()[0].get, node_key, b"\x00")
    assert tree.root == EMPTY_ROOT  # failed updates change nothing


# --- Overlay, rollback, storage. ---


def test_overlay_commit_and_rollback() -> None:
    store, tree = build({k: b"\x01" * 32 for k in POOL[:8]})
    committed = tree.root
    root1, writes1 = tree.update({POOL[8]: b"\x02" * 32, POOL[0]: None})
    first = list(writes1)
    root2, writes2 = tree.update({POOL[9]: b"\x03" * 32})
    assert list(writes1) == first  # a later pending update leaves earlier writes alone
    # Served from the overlay before anything is persisted.
    assert tree.get_value(POOL[9]) == b"\x03" * 32
    assert tree.get_value(POOL[0]) is None
    verify_proof(root2, POOL[8], b"\x02" * 32, tree.prove(POOL[8]))
    tree.rollback()
    assert tree.root == committed
    assert tree.get_value(POOL[0]) == b"\x01" * 32
    assert tree.get_value(POOL[9]) is None
    # Redo and persist both write lists in order: a tree rebuilt from storage agrees.
    assert tree.update({POOL[8]: b"\x02" * 32, POOL[0]: None})[0] == root1
    assert tree.update({POOL[9]: b"\x03" * 32})[0] == root2
    persist(store, writes1)
    persist(store, writes2)
    tree.commit()
    reopened = SparseMerkleTree(store.get, node_key, root2)
    reopened.check_root()
    assert reopened.audit() == 9
    assert reopened.get_value(POOL[9]) == b"\x03" * 32


def test_no_op_updates_keep_the_root() -> None:
    contents = {k: b"\x01" * 32 for k in POOL[:8]}
    store, tree = build(contents)
    root = tree.root
    assert tree.update({POOL[20]: None})[0] == root  # deleting an absent key
    assert tree.update({POOL[1]: b"\x01" * 32})[0] == root  # same value again
    assert tree.update({})[0] == root
    assert len(store) == 7


def test_delete_everything_and_absent_keys() -> None:
    a = POOL[0]
    store, tree = build({a: b"\x01" * 32})
    root = tree.root
    assert tree.update({_flip(a, 0): None, _flip(a, 200): None})[0] == root  # absent: no-op
    contents = {k: b"\x02" * 32 for k in POOL}
    store, tree = build(contents)
    root, writes = tree.update(dict.fromkeys(contents))
    persist(store, writes)
    tree.commit()
    assert root == tree.root == EMPTY_ROOT
    assert store == {}
    verify_proof(EMPTY_ROOT, a, None, tree.prove(a))


def test_corrupt_storage_is_detected() -> None:
    contents = {k: b"\x01" * 32 for k in POOL}
    store, tree = build(contents)
    root_key = node_key(b"\x01")
    for nid in list(store):
        if nid == root_key:
            continue
        damaged = dict(store)
        rec = bytearray(damaged[nid])
        rec[5] ^= 1
        damaged[nid] = bytes(rec)
        reopened = SparseMerkleTree(damaged.get, node_key, tree.root)
        reopened.check_root()  # only the root record is re-hashed by this check
        with pytest.raises(SMTError, match="hashes to"):
            reopened.audit()
        with pytest.raises(SMTError, match="does not hash to the hash its parent holds"):
            reopened.check_paths(POOL)  # every node is on a path to some key of the pool
    damaged = dict(store)
    rec = bytearray(damaged[root_key])
    rec[5] ^= 1
    damaged[root_key] = bytes(rec)
    with pytest.raises(SMTError, match="root node hashes to"):
        SparseMerkleTree(damaged.get, node_key, tree.root).check_root()
    assert SparseMerkleTree(store.get, node_key, tree.root).check_paths(POOL) == len(store) - 1
    missing = SparseMerkleTree(fresh()[0].get, node_key, tree.root)
    for call in (missing.check_root, lambda: missing.prove(POOL[0])):
        with pytest.raises(SMTError, match="missing from storage"):
            call()
    with pytest.raises(SMTError, match="missing from storage"):
        missing.update({POOL[0]: None})
    truncated = dict(store)
    truncated[root_key] = store[root_key][:-1]
    with pytest.raises(SMTError, match="corrupt SMT"):
        SparseMerkleTree(truncated.get, node_key, tree.root).prove(POOL[0])
    truncated[root_key] = store[root_key] + b"\x00"
    with pytest.raises(SMTError, match="corrupt SMT"):
        SparseMerkleTree(truncated.get, node_key, tree.root).audit()
    with pytest.raises(SMTError, match="hash to root"):
        SparseMerkleTree(store.get, node_key, b"\x07" * 32).audit()
    everything = dict.fromkeys(POOL, b"\x09" * 32)
    for nid in list(store):
        if nid == root_key:
            continue
        for bad in ({k: v for k, v in store.items() if k != nid}, {**store, nid: store[nid][:60]}):
            reopened = SparseMerkleTree(bad.get, node_key, tree.root, cache_depth=-1)
            with pytest.raises(SMTError, match=r"missing from storage|corrupt SMT node"):
                reopened.update(everything)
            assert reopened.root == tree.root  # a failed update changes nothing
            failures = 0
            for k in POOL:  # one key at a time takes the single-key path
                try:
                    reopened.update({k: b"\x09" * 32})
                except SMTError:
                    failures += 1
                reopened.rollback()
            assert failures


def test_audit_finds_misplaced_nodes() -> None:
    store, tree = build({k: b"\x01" * 32 for k in POOL})
    # A record with two leaves (flags 3) whose leaves are swapped: hashes and order agree,
    # the leaves sit on the wrong sides.
    for nid, rec in store.items():
        if len(rec) > 64 and rec[65] == 3:
            p = len(rec) - 128
            swapped = rec[:1] + rec[33:65] + rec[1:33] + rec[65:p] + rec[-64:] + rec[p:-64]
            bad = {**store, nid: swapped}
            with pytest.raises(SMTError, match="misplaced"):
                SparseMerkleTree(bad.get, node_key, tree.root).audit()
            break
    else:
        pytest.fail("no two-leaf branch in the tree")
    # A branch whose prefix no longer matches where it is stored.
    messages = set()
    for nid, rec in store.items():
        if len(rec) > 67 and rec[65] == 0:
            bad = {**store, nid: rec[:-1] + bytes([rec[-1] ^ 1])}
            with pytest.raises(SMTError) as err:
                SparseMerkleTree(bad.get, node_key, tree.root).audit()
            messages.add("misplaced" in str(err.value))
    assert True in messages


# --- Stateful: the tree against a dict, with persistence, rollback and reopening. ---


def test_cache_all_serves_committed_records_without_the_store() -> None:
    """CACHE_ALL refreshes its cache in bulk at commit, deletions included: after a commit
    the tree answers reads, proofs and the next update from memory alone."""
    store: dict[bytes, bytes] = {}
    reads: list[bytes] = []

    def get(skey: bytes) -> bytes | None:
        reads.append(skey)
        return store.get(skey)

    tree = SparseMerkleTree(get, node_key, cache_depth=CACHE_ALL)
    keys = [sm3(b"k%d" % i) for i in range(200)]
    root, writes = tree.update({k: sm3(k) for k in keys})
    persist(store, writes)
    tree.commit()
    root, writes = tree.update({k: None for k in keys[:50]})  # branches vanish and move
    assert any(rec is None for _, rec in writes)
    persist(store, writes)
    tree.commit()
    reads.clear()
    for k in keys:
        value = None if k in keys[:50] else sm3(k)
        assert tree.get_value(k) == value
        verify_proof(root, k, value, tree.prove(k))
    tree.update({sm3(b"new"): sm3(b"v")})
    assert reads == []  # every record came from the cache, none of the deleted ones


def test_preload_fills_the_cache_and_names_every_key() -> None:
    store: dict[bytes, bytes] = {}
    keys = {sm3(b"p%d" % i) for i in range(300)}
    tree = SparseMerkleTree(store.get, node_key, cache_depth=CACHE_ALL)
    root, writes = tree.update({k: sm3(k) for k in keys})
    persist(store, writes)
    again = SparseMerkleTree(lambda skey: None, node_key, root, cache_depth=CACHE_ALL)
    assert again.preload(store.items(), 8) == {k[:8] for k in keys}
    for k in keys:  # served from the preloaded cache alone (the store answers nothing)
        verify_proof(root, k, sm3(k), again.prove(k))
    one: dict[bytes, bytes] = {}
    single = SparseMerkleTree(one.get, node_key, cache_depth=CACHE_ALL)
    persist(one, single.update({sm3(b"only"): sm3(b"v")})[1])
    assert single.preload(one.items()) == {sm3(b"only")}
    with pytest.raises(SMTError, match="CACHE_ALL"):
        SparseMerkleTree(one.get, node_key).preload(one.items())


class TreeMachine(RuleBasedStateMachine):
    # cache_depth: none, only the root, the top, every depth, every record (bulk refresh).
    # native: the C batch update (ledger/_smtcore.c) or the Python reference.
    @initialize(cache_depth=st.sampled_from([-1, 0, 3, 255, CACHE_ALL]), native=st.booleans())
    def setup(self, cache_depth: int, native: bool) -> None:
        self.cache_depth = cache_depth
        self.native = native
        self.store: dict[bytes, bytes] = {}
        self.tree = SparseMerkleTree(self.store.get, node_key, cache_depth=cache_depth,
                                     native=native)
        self.model: dict[bytes, bytes] = {}
        self.committed: dict[bytes, bytes] = {}
        self.pending: list[tuple[bytes, bytes | None]] = []

    @rule(batch=batch_st)
    def update(self, batch: dict[bytes, bytes | None]) -> None:
        root, writes = self.tree.update(batch)
        assert root == self.tree.root
        self.pending += writes
        for k, v in batch.items():
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    @rule()
    def persist_and_commit(self) -> None:
        persist(self.store, self.pending)
        self.pending = []
        self.tree.commit()
        self.committed = dict(self.model)
        assert len(self.store) == (len(self.model) - 1 if len(self.model) > 1 else len(self.model))

    @rule()
    def rollback(self) -> None:
        self.tree.rollback()
        self.pending = []
        self.model = dict(self.committed)

    @rule()
    def reopen_from_storage(self) -> None:
        persist(self.store, self.pending)
        self.pending = []
        self.tree.commit()
        self.committed = dict(self.model)
        root = self.tree.root
        self.tree = SparseMerkleTree(self.store.get, node_key, root, cache_depth=self.cache_depth,
                                     native=self.native)
        self.tree.check_root()
        assert self.tree.audit() == len(self.model)

    @rule(key=keys_st, other=values_st, flip=st.integers(min_value=0))
    def check_key(self, key: bytes, other: bytes, flip: int) -> None:
        root, value = self.tree.root, self.model.get(key)
        assert self.tree.get_value(key) == value
        encoded = self.tree.prove(key).to_bytes()
        proof = SMTProof.from_bytes(encoded)
        verify_proof(root, key, value, proof)
        for claim in (None, other):
            if claim != value:
                with pytest.raises(ProofError):
                    verify_proof(root, key, claim, proof)
        # One flipped bit anywhere in the encoding, or in one sibling, breaks the proof.
        pos = flip % (len(encoded) * 8)
        tampered = bytearray(encoded)
        tampered[pos >> 3] ^= 0x80 >> (pos & 7)
        with pytest.raises(ProofError):
            verify_proof(root, key, value, SMTProof.from_bytes(tampered))
        if proof.siblings:
            siblings = list(proof.siblings)
            j = flip % len(siblings)
            siblings[j] = bytes([siblings[j][0] ^ 1]) + siblings[j][1:]
            with pytest.raises(ProofError):
                verify_proof(root, key, value, SMTProof(tuple(siblings), proof.other_leaf))

    @invariant()
    def root_matches_reference(self) -> None:
        if hasattr(self, "tree"):
            assert self.tree.root == ref_root(self.model)


TreeMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
)
test_tree_machine = TreeMachine.TestCase


def test_large_random_batches_against_reference() -> None:
    # Bigger trees than the pool gives: random keys, several batches with updates and deletes.
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    store, tree = fresh()
    for _ in range(6):
        batch: dict[bytes, bytes | None] = {
            rng.randbytes(32): rng.randbytes(32) for _ in range(300)
        }
        for k in rng.sample(sorted(model), min(len(model), 60)):
            batch[k] = None if rng.random() < 0.5 else rng.randbytes(32)
        update_persist_commit(tree, store, model, batch)
    assert tree.root == ref_root(model)
    assert tree.audit() == len(model) == len(store) + 1
    present = sorted(model)
    probe: list[Callable[[], bytes]] = [lambda: rng.choice(present), lambda: rng.randbytes(32)]
    for i in range(200):
        key = probe[i % 2]()
        verify_proof(tree.root, key, model.get(key), tree.prove(key))


def test_check_paths_finds_a_moved_node_that_no_path_reads() -> None:
    """A and B meet at depth 2, below a chain from the root; C splits that chain at depth 1,
    so the record of the branch of A and B moves down to depth 2, off C's path. Opening
    checks the changed keys' paths (C's): only ``check_paths`` reads the moved record."""
    a, b, c = ((top << 252).to_bytes(32, "big") for top in (0b0000, 0b0010, 0b0100))
    store, tree = build({a: b"\x01" * 32, b: b"\x02" * 32})
    before = set(store)
    _, writes = tree.update({c: b"\x03" * 32})
    persist(store, writes)
    tree.commit()
    moved = node_key(b"\x04")  # depth 2, bits 00: heap index 0b100
    assert moved in store and moved not in before
    assert SparseMerkleTree(store.get, node_key, tree.root).check_paths([c]) == 1
    for damage in ("deleted", "changed"):
        damaged = dict(store)
        if damage == "deleted":
            del damaged[moved]
        else:
            rec = bytearray(damaged[moved])
            rec[40] ^= 1
            damaged[moved] = bytes(rec)
        reopened = SparseMerkleTree(damaged.get, node_key, tree.root)
        reopened.check_root()  # what opening checked before: all of it passes
        assert reopened.get_value(c) == b"\x03" * 32
        verify_proof(tree.root, c, b"\x03" * 32, reopened.prove(c))
        with pytest.raises(SMTError, match="missing from storage" if damage == "deleted"
                           else "does not hash"):
            reopened.check_paths([c])


def test_check_paths_refuses_a_corrupt_root_record_with_an_smt_error() -> None:
    store, tree = build({k: b"\x01" * 32 for k in POOL[:6]})
    damaged = dict(store)
    damaged[node_key(b"\x01")] = store[node_key(b"\x01")][:-1]
    with pytest.raises(SMTError, match="corrupt SMT branch record"):
        SparseMerkleTree(damaged.get, node_key, tree.root).check_paths(POOL[:6])
