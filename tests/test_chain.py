"""Chain: create/open, propose/validate/commit, every block and commit rule, queries, proofs."""

from __future__ import annotations

import dataclasses
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from certificates.hashing import sm3
from ledger import commit as ledger_commit
from ledger import schema
from ledger.block import Block, compute_tx_root
from ledger.chain import Chain, verify_state_proof
from ledger.commit import CommitCertificate, CommitSig, make_commit, vote_sign_bytes
from ledger.errors import (
    CommitError,
    InvalidBlockError,
    LedgerError,
    SchemaVersionError,
    StorageError,
    TxRejected,
)
from ledger.records import VALIDATORS_KEY, IssuerRecord, ValidatorsRecord, cert_key, issuer_key
from ledger.smt import ProofError
from ledger.store import LevelDBStore, MemoryStore, WriteBatch
from ledger.tx import Transaction
from tests.crash_child import (
    block_txs,
    commit_next,
    grow,
    next_block,
    proposer_id,
    serial,
    sign_commit,
)
from tests.ledger_fixtures import (
    CHAIN_ID,
    ISSUER_A,
    VALIDATOR_NAMES,
    anchor,
    batch_tx,
    cert_id,
    gov,
    issue_tx,
    key,
    make_genesis,
    validator_set,
)


@pytest.fixture
def chain() -> Chain:
    return Chain.create(MemoryStore(), make_genesis())


def twin(chain: Chain) -> Chain:
    """A second node: same genesis and blocks, its own store."""
    other = Chain.create(MemoryStore(), make_genesis())
    for h in range(1, chain.head_height + 1):
        block, commit = chain.block(h), chain.commit(h)
        assert block is not None and commit is not None
        other.commit_block(block, commit)
    return other


# --------------------------------------------------------------------------- create / open


def test_create_opens_at_genesis(chain: Chain) -> None:
    assert chain.head_height == 0
    assert chain.head_header is None
    assert chain.head_hash == make_genesis().hash
    again = Chain.open(chain.store)
    assert again.state_root == chain.state_root
    assert again.genesis.hash == make_genesis().hash
    assert chain.validator_set(1) == validator_set()


def test_create_refuses_a_non_empty_store(chain: Chain) -> None:
    with pytest.raises(StorageError, match="already holds data"):
        Chain.create(chain.store, make_genesis())


def test_open_refuses_an_empty_store() -> None:
    with pytest.raises(StorageError, match="empty"):
        Chain.open(MemoryStore())


def test_open_refuses_another_schema_version(chain: Chain) -> None:
    b = WriteBatch()
    b.put(schema.meta_schema_version(), schema.encode_height(schema.SCHEMA_VERSION + 1))
    chain.store.write(b)
    with pytest.raises(SchemaVersionError, match=f"schema version {schema.SCHEMA_VERSION + 1}"):
        Chain.open(chain.store)


def test_open_or_create_checks_the_genesis(chain: Chain) -> None:
    other = dataclasses.replace(make_genesis(), chain_id="another-chain")
    with pytest.raises(StorageError, match="another genesis"):
        Chain.open_or_create(chain.store, other)
    assert Chain.open_or_create(chain.store, make_genesis()).head_height == 0


def test_leveldb_chain_persists(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    chain = Chain.create(store, make_genesis())
    grow(chain, 3)
    root, head_hash = chain.state_root, chain.head_hash
    chain.close()
    again = Chain.open(LevelDBStore(tmp_path / "db", create=False))
    assert (again.head_height, again.state_root, again.head_hash) == (3, root, head_hash)
    grow(again, 1)
    assert again.head_height == 4
    again.close()


# --------------------------------------------------------------------------- happy path


def test_commit_and_query(chain: Chain) -> None:
    blocks = grow(chain, 3)
    assert chain.head_height == 3
    assert chain.head_header == blocks[-1].header
    assert chain.state_root == blocks[-1].header.state_root
    for b in blocks:
        assert chain.block(b.height) == b
        assert chain.header(b.height) == b.header
        assert chain.height_of(b.hash) == b.height
        commit = chain.commit(b.height)
        assert commit is not None and commit.block_hash == b.hash
        for i, tid in enumerate(b.tx_ids):
            assert chain.tx_location(tid) == (b.height, i)
            assert chain.transaction(tid) == b.txs[i]
    assert blocks[1].header.prev_hash == blocks[0].hash
    assert blocks[0].header.prev_hash == make_genesis().hash
    rec = chain.certificate(cert_id(serial(1, 0)))
    assert rec is not None and rec.status == "revoked" and rec.status_height == 2
    rec = chain.certificate(cert_id(serial(3, 4)))
    assert rec is not None and rec.status == "issued" and rec.issued_height == 3
    assert chain.certificate(cert_id("NOPE")) is None
    assert chain.tx_location(b"\x00" * 32) is None
    assert chain.block(4) is None and chain.block(0) is None


def test_issuer_index(chain: Chain) -> None:
    grow(chain, 2, per_block=3)
    ids = chain.certificates_by_issuer(ISSUER_A, limit=100)
    assert sorted(ids) == ids
    assert set(ids) == {cert_id(serial(h, i)) for h in (1, 2) for i in range(3)}
    assert chain.certificates_by_issuer(ISSUER_A, start=ids[2], limit=2) == ids[2:4]
    assert chain.certificates_by_issuer("NOBODY") == []


def test_proofs_of_presence_and_absence(chain: Chain) -> None:
    with pytest.raises(LedgerError, match="no block"):
        chain.prove_certificate(cert_id("X1"))
    grow(chain, 2)
    cid = cert_id(serial(2, 1))
    proof = chain.prove_certificate(cid)
    assert proof.record is not None and proof.header == chain.head_header
    proof.commit.verify(CHAIN_ID, chain.validator_set(proof.header.height),
                        height=proof.header.height, block_hash=proof.header.hash)
    verify_state_proof(cert_key(cid), proof.record, proof.proof, proof.header.state_root)
    with pytest.raises(ProofError):  # a tampered record does not prove
        verify_state_proof(cert_key(cid), proof.record + b"x", proof.proof,
                           proof.header.state_root)
    absent = chain.prove_certificate(cert_id("ABSENT1"))
    assert absent.record is None
    verify_state_proof(cert_key(cert_id("ABSENT1")), None, absent.proof,
                       absent.header.state_root)
    with pytest.raises(ProofError):  # absence cannot be claimed for a present certificate
        verify_state_proof(cert_key(cid), None, proof.proof, proof.header.state_root)


def test_prove_many_answers_every_key_under_one_head(chain: Chain) -> None:
    grow(chain, 2)
    present = [cert_key(cert_id(serial(h, i))) for h in (1, 2) for i in range(2)]
    keys = [*present, cert_key(cert_id("ABSENT9")), present[0]]
    proofs = chain.prove_many(keys)
    assert len(proofs) == len(keys)
    assert {p.header.hash for p in proofs} == {chain.head_hash}
    for lk, p in zip(keys, proofs, strict=True):
        assert p == chain.prove(lk)
        verify_state_proof(lk, p.record, p.proof, chain.state_root)
    assert proofs[4].record is None and all(p.record is not None for p in proofs[:4])


def test_proof_ignores_a_staged_block(chain: Chain) -> None:
    grow(chain, 1)
    next_block(chain, block_txs(2, 3))  # staged, not committed
    cid = cert_id(serial(2, 0))
    proof = chain.prove_certificate(cid)
    assert proof.record is None
    verify_state_proof(cert_key(cid), None, proof.proof, chain.state_root)


def test_proposer_drops_failing_txs(chain: Chain) -> None:
    good = issue_tx(anchor("GOOD1"))
    dup = issue_tx(anchor("GOOD1"))  # same id again: duplicate_id
    foreign = issue_tx(anchor("F1"), signer="nobody")
    rejected: list[tuple[bytes, TxRejected]] = []
    block = chain.propose_block([good, b"\x01junk", dup, foreign], 0,
                                validator_set().proposer(1, 0).key_id,
                                on_reject=lambda tid, e: rejected.append((tid, e)))
    assert block.txs == (good.to_bytes(),)
    assert [e.reason for _, e in rejected] == ["malformed", "duplicate_id", "unknown_signer"]
    assert rejected[0][0] == sm3(b"\x01junk")
    assert block.header.time_ms == make_genesis().genesis_time  # raised to the minimum
    chain.commit_block(block, sign_commit(block))
    assert chain.certificate(cert_id("GOOD1")) is not None


class _CountingStore(MemoryStore):
    """A memory store that counts reads of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[bytes, int] = {}

    def get(self, key: bytes) -> bytes | None:
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key)


def test_membership_records_are_read_from_the_store_once_until_a_block_writes_them() -> None:
    store = _CountingStore()
    chain = Chain.create(store, make_genesis())
    store.reads.clear()  # opening checks the store directly
    stored = schema.record_for(issuer_key(ISSUER_A))
    commit_next(chain, [issue_tx(anchor("HOT1"))])
    commit_next(chain, [issue_tx(anchor("HOT2")), issue_tx(anchor("HOT3"))])
    assert store.reads.get(stored) == 1  # three txs checked, one read
    # A block deactivates the issuer: the next read sees it, and so do the rules.
    commit_next(chain, [gov("set_issuer_active", {"code": ISSUER_A, "active": False})])
    record = chain.record(issuer_key(ISSUER_A))
    assert record is not None and not IssuerRecord.from_bytes(record).active
    assert store.reads[stored] == 2
    rejected: list[str] = []
    block = chain.propose_block([issue_tx(anchor("HOT4"))], 0, proposer_id(chain),
                                on_reject=lambda tid, e: rejected.append(e.reason))
    assert block.txs == () and rejected == ["issuer_inactive"]


def test_a_record_read_while_a_block_was_stored_is_not_kept(chain: Chain) -> None:
    """A reader that got the bytes before a commit finished must not keep them: the block
    may have changed them. Here the block is stored in the middle of the reader's read."""
    key_ = issuer_key(ISSUER_A)
    stored = schema.record_for(key_)
    view = chain._view
    store_get = view._get
    old = view.get(key_)
    view.forget([key_])  # as if a block wrote it: the next get reads the store
    fired = False

    def racing_get(k: bytes) -> bytes | None:
        nonlocal fired
        got = store_get(k)  # the old bytes...
        if k == stored and not fired:
            fired = True
            commit_next(chain, [gov("set_issuer_active", {"code": ISSUER_A, "active": False})])
        return got  # ...handed back after the block that changed them was stored

    view._get = racing_get
    assert view.get(key_) == old
    assert fired
    view._get = store_get
    fresh = view.get(key_)
    assert fresh is not None and fresh != old and not IssuerRecord.from_bytes(fresh).active


def test_reopened_chain_still_refuses_an_existing_id(tmp_path: Path) -> None:
    """The record view's existence filter is rebuilt from the store at open."""
    chain = Chain.create(LevelDBStore(tmp_path / "db"), make_genesis())
    commit_next(chain, [batch_tx([anchor("OLD1"), anchor("OLD2")])])
    chain.close()
    again = Chain.open(LevelDBStore(tmp_path / "db", create=False))
    rejected: list[str] = []
    block = again.propose_block([issue_tx(anchor("OLD2")), issue_tx(anchor("NEW1"))], 0,
                                validator_set().proposer(2, 0).key_id,
                                on_reject=lambda tid, e: rejected.append(e.reason))
    assert rejected == ["duplicate_id"] and len(block.txs) == 1
    again.close()


def test_new_ids_are_checked_without_reading_records(chain: Chain) -> None:
    """Applying a batch of new ids reads no record from the store: the in-memory filter
    answers "absent"; an existing id still reads its record."""
    commit_next(chain, [issue_tx(anchor("SEEN"))])
    reads: list[bytes] = []
    store_get = chain.store.get

    def counting_get(key: bytes) -> bytes | None:
        reads.append(key)
        return store_get(key)

    chain.store.get = counting_get  # type: ignore[method-assign]
    chain._view._get = counting_get  # the view bound the store's get at open
    fresh = {schema.record_for(cert_key(cert_id(f"FRESH{i}"))) for i in range(20)}
    block = next_block(chain, [batch_tx([anchor(f"FRESH{i}") for i in range(20)])])
    assert len(block.txs) == 1
    assert not fresh & set(reads)  # (the issuer's records come from the view's cache)
    rejected: list[str] = []
    chain.propose_block([issue_tx(anchor("SEEN"))], 0, validator_set().proposer(2, 0).key_id,
                        on_reject=lambda tid, e: rejected.append(e.reason))
    assert rejected == ["duplicate_id"]
    assert schema.record_for(cert_key(cert_id("SEEN"))) in reads  # the hook sees reads


def test_the_record_filter_is_not_walked_by_the_garbage_collector(chain: Chain) -> None:
    """The filter holds one entry per record (a million at 1M certificates): as a dict of
    bytes it is untracked by the cyclic collector; a set is always tracked, and every full
    collection walked it (a few % of apply time, half the proof rate at 1M)."""
    commit_next(chain, [batch_tx([anchor(f"GC{i}") for i in range(5)])])
    reopened = Chain.open(chain.store)
    for c in (chain, reopened):
        known = c._view._known
        assert known is not None and len(known) >= 5
        gc.collect()
        assert not gc.is_tracked(known)


def test_a_proposed_block_knows_its_tx_ids(chain: Chain) -> None:
    """The proposer hashes each tx once; the ids it hands the block are those hashes."""
    block = next_block(chain, block_txs(2, 3))
    assert "tx_ids" in block.__dict__  # filled by the proposer, not computed again
    assert block.tx_ids == tuple(sm3(t) for t in block.txs)
    assert Block.decode(block.encode()).tx_ids == block.tx_ids
    with pytest.raises(ValueError):
        Block.with_ids(block.header, block.txs, block.tx_ids[:-1])


def test_a_proposed_block_validates_on_another_node(chain: Chain) -> None:
    grow(chain, 2)
    other = twin(chain)
    assert other.state_root == chain.state_root
    block = next_block(chain, block_txs(3, 7))
    other.validate_block(block)
    commit = sign_commit(block)
    other.commit_block(block, commit)
    chain.commit_block(block, commit)
    assert other.state_root == chain.state_root == block.header.state_root


def test_blocks_reuse_the_txs_a_node_already_decoded(chain: Chain,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``known_txs`` (the node's mempool) neither proposing nor validating a block
    parses its txs again; the result is the same block and state."""
    grow(chain, 2)
    other, third = twin(chain), twin(chain)
    txs = block_txs(3, 7)
    pool = {t.id: Transaction.from_bytes(t.to_bytes()) for t in txs}
    parsed: list[bytes] = []
    real = Transaction.from_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Transaction], data: bytes) -> Transaction:
        parsed.append(sm3(bytes(data)))
        return real(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(Transaction, "from_bytes", classmethod(counting))
    raw = [t.to_bytes() for t in txs]
    chain.known_txs = other.known_txs = pool.get
    block = next_block(chain, raw)
    other.validate_block(block)
    assert parsed == []
    # Without it, every node parses every tx: once proposing, once validating.
    chain.known_txs = other.known_txs = None
    again = next_block(chain, raw)
    third.validate_block(again)
    assert sorted(parsed) == sorted([t.id for t in txs] * 2)
    assert again.header.state_root == block.header.state_root
    commit = sign_commit(block)
    other.commit_block(block, commit)
    assert other.state_root == block.header.state_root


def test_commit_names_the_state_keys_it_wrote(chain: Chain) -> None:
    block = next_block(chain, [issue_tx(anchor("W1"))])
    written = chain.commit_block(block, sign_commit(block))
    assert cert_key(anchor("W1").id) in written
    assert all(chain.record(k) is not None for k in written)


def test_empty_block(chain: Chain) -> None:
    block = commit_next(chain, [])
    assert block.txs == () and block.header.tx_root == compute_tx_root([])
    assert chain.head_height == 1


def test_other_round_replaces_a_staged_block(chain: Chain) -> None:
    first = next_block(chain, block_txs(1, 3))
    second = next_block(chain, [issue_tx(anchor("R2A"))], round_=1)
    chain.validate_block(first)  # stage the first again, then commit the second
    chain.commit_block(second, sign_commit(second, round_=1))
    assert chain.certificate(cert_id("R2A")) is not None
    assert chain.certificate(cert_id(serial(1, 0))) is None
    assert Chain.open(chain.store).state_root == second.header.state_root


class FailingStore(MemoryStore):
    """A memory store whose writes fail while ``fail`` is set (a full or broken disk)."""

    fail = False

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        if self.fail:
            raise StorageError("disk full")
        super().write(batch, sync)


def test_failed_write_leaves_the_chain_at_its_head(chain: Chain) -> None:
    store = FailingStore()
    c = Chain.create(store, make_genesis())
    grow(c, 1)
    root = c.state_root
    block = next_block(c, block_txs(2, 3))
    store.fail = True
    with pytest.raises(StorageError, match="disk full"):
        c.commit_block(block, sign_commit(block))
    assert (c.head_height, c.state_root) == (1, root)
    store.fail = False
    c.commit_block(block, sign_commit(block))
    assert c.head_height == 2
    assert Chain.open(store).state_root == block.header.state_root


def test_a_failed_write_leaves_no_lost_record_in_the_tree(chain: Chain) -> None:
    # The SMT's cache takes a block's records while the block's write runs: a failed write
    # must not leave them there, or the next block is applied to state the store never had.
    store = FailingStore()
    c = Chain.create(store, make_genesis())
    grow(c, 1)
    other = twin(c)
    lost = next_block(c, block_txs(2, 3))
    store.fail = True
    with pytest.raises(StorageError, match="disk full"):
        c.commit_block(lost, sign_commit(lost))
    store.fail = False
    # Another block for height 2, with other certificates, built by a node that never saw
    # the lost one: it validates here only if the tree is back to the stored state.
    block = next_block(other, [issue_tx(anchor("AFTERLOSS"))])
    c.commit_block(block, sign_commit(block))
    assert c.state_root == block.header.state_root
    assert c.certificate(cert_id(serial(2, 0))) is None
    proof = c.prove_certificate(cert_id("AFTERLOSS"))
    verify_state_proof(cert_key(cert_id("AFTERLOSS")), proof.record, proof.proof,
                       c.state_root)
    assert Chain.open(store).state_root == block.header.state_root


class GatedStore(MemoryStore):
    """A memory store whose writes wait for ``gate`` (a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        assert self.gate.wait(10), "the test never opened the gate"
        super().write(batch, sync)


class _InterruptedWait:
    """A write's future whose first wait is cut by Ctrl-C while the write still runs."""

    def __init__(self, inner: Future[None], gate: threading.Event) -> None:
        self.inner, self.gate, self.waits = inner, gate, 0

    def result(self) -> None:
        self.waits += 1
        if self.waits == 1:
            raise KeyboardInterrupt
        self.gate.set()
        self.inner.result(timeout=10)

    def done(self) -> bool:
        return self.inner.done()

    def exception(self) -> BaseException | None:
        return self.inner.exception()


def test_an_interrupt_during_the_write_keeps_the_stored_block() -> None:
    # Ctrl-C while the block's write runs does not stop the write: the chain must follow
    # what the store ends up holding (the block), not put the tree back before it.
    store = GatedStore()
    store.gate.set()
    c = Chain.create(store, make_genesis())
    grow(c, 1)
    store.gate.clear()
    real = c._writer

    class Writer:
        def submit(self, fn: Callable[..., None], *args: object) -> _InterruptedWait:
            return _InterruptedWait(real.submit(fn, *args), store.gate)

    c._writer = Writer()  # type: ignore[assignment]
    block = next_block(c, block_txs(2, 3))
    with pytest.raises(KeyboardInterrupt):
        c.commit_block(block, sign_commit(block))
    c._writer = real
    assert (c.head_height, c.state_root) == (2, block.header.state_root)
    grow(c, 1)  # the next block applies on top of it
    assert Chain.open(store).state_root == c.state_root


# --------------------------------------------------------------------------- block rules


def _reheader(block: Block, **changes: object) -> Block:
    return Block(dataclasses.replace(block.header, **changes), block.txs)  # type: ignore[arg-type]


@pytest.fixture
def candidate(chain: Chain) -> Iterator[tuple[Chain, Block]]:
    """A chain at height 2 and a valid block 3 proposed by a twin (nothing staged here)."""
    grow(chain, 2)
    other = twin(chain)
    yield chain, next_block(other, block_txs(3, 4))


@pytest.mark.parametrize(
    ("rule", "changes"),
    [
        ("prev_hash", {"prev_hash": b"\x07" * 32}),
        ("height", {"height": 4}),
        ("tx_root", {"tx_root": b"\x07" * 32}),
        ("state_root", {"state_root": b"\x07" * 32}),
        ("time", {"time_ms": 0}),
        ("chain_id", {"chain_id": "other-chain"}),
        ("validators_hash", {"validators_hash": b"\x07" * 32}),
        ("next_validators_hash", {"next_validators_hash": b"\x07" * 32}),
        ("proposer", {"proposer": b"\x07" * 16}),
    ],
)
def test_block_rule(candidate: tuple[Chain, Block], rule: str, changes: dict[str, object]
                    ) -> None:
    chain, block = candidate
    chain.validate_block(block)  # the original is valid
    bad = _reheader(block, **changes)
    with pytest.raises(InvalidBlockError) as info:
        chain.validate_block(bad)
    assert info.value.rule == rule, str(info.value)
    assert f"block {bad.height}" in str(info.value)
    with pytest.raises(InvalidBlockError):
        chain.commit_block(bad, sign_commit(bad, chain_id=CHAIN_ID))
    assert chain.head_height == 2
    chain.commit_block(block, sign_commit(block))  # the good block still commits
    assert chain.state_root == block.header.state_root


def test_block_rule_every_tx_must_apply(candidate: tuple[Chain, Block]) -> None:
    chain, block = candidate
    dup = batch_tx([anchor(serial(1, 1))])  # already issued at height 1
    txs = (*block.txs, dup.to_bytes())
    bad = _reheader(Block(block.header, txs), tx_root=compute_tx_root([sm3(t) for t in txs]))
    with pytest.raises(InvalidBlockError, match="duplicate_id") as info:
        chain.validate_block(bad)
    assert info.value.rule == "tx_rejected"
    replay = _reheader(Block(block.header, (*block.txs, block.txs[0])),
                       tx_root=compute_tx_root([*block.tx_ids, block.tx_ids[0]]))
    with pytest.raises(InvalidBlockError, match="duplicate_tx"):
        chain.validate_block(replay)
    assert chain.head_height == 2


# --------------------------------------------------------------------------- commit rules


def _resign(commit: CommitCertificate, sigs: list[CommitSig]) -> CommitCertificate:
    return CommitCertificate(commit.height, commit.round, commit.block_hash, tuple(sigs))


def test_commit_rules(candidate: tuple[Chain, Block]) -> None:
    chain, block = candidate
    good = sign_commit(block, VALIDATOR_NAMES[:3])
    outsider = key("outsider")
    msg = vote_sign_bytes(CHAIN_ID, "precommit", block.height, 0, block.hash)
    cases = {
        "has 2 signatures, needs 3": sign_commit(block, VALIDATOR_NAMES[:2]),
        "not in the validator set": _resign(good, [*good.signatures[:2], CommitSig(
            outsider.public.key_id, outsider.sign(msg))]),
        "bad signature": _resign(good, [*good.signatures[:2], CommitSig(
            good.signatures[2].key_id, good.signatures[1].signature)]),
        "twice": _resign(good, [*good.signatures[:2], good.signatures[1]]),
        "is for height": sign_commit(_reheader(block, height=2)),
        "is for block": make_commit(block.height, 0, b"\x01" * 32, [
            (s.key_id, s.signature) for s in good.signatures]),
        "bad signature by": sign_commit(block, VALIDATOR_NAMES[:3], chain_id="other-chain"),
    }
    for match, commit in cases.items():
        with pytest.raises(CommitError, match=match):
            chain.commit_block(block, commit)
        assert chain.head_height == 2
    chain.commit_block(block, sign_commit(block, VALIDATOR_NAMES[1:]))  # any 3 of 4
    assert chain.head_height == 3


def test_a_commit_whose_signatures_the_caller_checked_is_not_verified_again(
        candidate: tuple[Chain, Block], monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's consensus core verified every signature of the certificate it commits:
    ``signatures_checked`` skips only the SM2 checks; every other commit rule holds."""
    chain, block = candidate
    good = sign_commit(block, VALIDATOR_NAMES[:3])
    outsider = key("outsider")
    msg = vote_sign_bytes(CHAIN_ID, "precommit", block.height, 0, block.hash)
    verified: list[bytes] = []
    real = ledger_commit.sm2.verify
    monkeypatch.setattr(ledger_commit.sm2, "verify",
                        lambda pk, m, sig: verified.append(m) or real(pk, m, sig))
    for match, commit in {
        "has 2 signatures, needs 3": sign_commit(block, VALIDATOR_NAMES[:2]),
        "not in the validator set": _resign(good, [*good.signatures[:2], CommitSig(
            outsider.public.key_id, outsider.sign(msg))]),
        "twice": _resign(good, [*good.signatures[:2], good.signatures[1]]),
        "is for block": make_commit(block.height, 0, b"\x01" * 32, [
            (s.key_id, s.signature) for s in good.signatures]),
    }.items():
        with pytest.raises(CommitError, match=match):
            chain.commit_block(block, commit, signatures_checked=True)
    assert chain.head_height == 2
    chain.commit_block(block, good, signatures_checked=True)
    assert chain.head_height == 3 and msg not in verified
    # Without it, the commit's signatures are verified, as test_commit_rules shows.
    chain.commit_block(nxt := next_block(chain), sign_commit(nxt))
    assert vote_sign_bytes(CHAIN_ID, "precommit", 4, 0, nxt.hash) in verified


def test_commit_of_a_block_at_the_wrong_height(candidate: tuple[Chain, Block]) -> None:
    chain, block = candidate
    bad = _reheader(block, height=5)
    with pytest.raises(InvalidBlockError, match="next height") as info:
        chain.commit_block(bad, sign_commit(bad))
    assert info.value.rule == "height"


# --------------------------------------------------------------------------- validator sets


def test_validator_change_takes_effect_two_blocks_later(chain: Chain) -> None:
    old = validator_set()
    new = validator_set(("val-1", "val-2", "val-3", "val-4"))
    change = gov("set_validators", {"validators": [v.to_value() for v in new.validators]})
    b1 = commit_next(chain, [change])  # height 1: the change is applied
    assert b1.header.validators_hash == old.hash and b1.header.next_validators_hash == old.hash
    assert chain.validator_set(2) == old and chain.validator_set(3) == new
    rec = chain.record(VALIDATORS_KEY)
    assert rec is not None and ValidatorsRecord.from_bytes(rec).pending_height == 3
    b2 = commit_next(chain, [])
    assert b2.header.validators_hash == old.hash and b2.header.next_validators_hash == new.hash
    b3 = next_block(chain, [])
    assert b3.header.validators_hash == new.hash
    with pytest.raises(CommitError, match="not in the validator set"):  # val-0 has left
        chain.commit_block(b3, sign_commit(b3, ("val-0", "val-1", "val-2")))
    chain.commit_block(b3, sign_commit(b3, ("val-2", "val-3", "val-4")))
    assert [chain.validator_set(h) for h in (1, 2, 3, 4)] == [old, old, new, new]
    reopened = Chain.open(chain.store)  # the head commit is checked against the new set
    assert reopened.head_height == 3
    with pytest.raises(LedgerError, match="no validator set"):
        chain.validator_set(6)


def test_bench_smoke() -> None:
    """The benchmark runs end to end on a tiny chain (figures are not checked here)."""
    from ledger.bench import run

    result = run(20, per_block=10, proofs=20, follow=True)
    assert result["certs"] == 20 and result["blocks"] == 2
    assert result["follower_certs_per_s"] > 0
    assert result["proof_bytes_avg"] > 0 and result["disk_bytes_per_cert"] > 0
    assert result["reopen_s"] >= 0


def test_remembered_key_hashes_stay_bounded(chain: Chain,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The record view keeps the SM3 of the keys it read across stages (a batch is read on
    admission and again in its block), until a stage finds HASHES_KEPT of them: then it
    starts afresh. The hashes it hands the SMT stay right either way."""
    import ledger.chain as chain_mod

    monkeypatch.setattr(chain_mod, "HASHES_KEPT", 30)
    view = chain._view
    commit_next(chain, [batch_tx([anchor(f"M{i}") for i in range(20)])])
    assert 20 <= len(view.hashes) < 30  # kept after the stage
    kept = dict(view.hashes)
    assert all(h == sm3(k) for k, h in kept.items())
    commit_next(chain, [batch_tx([anchor(f"N{i}") for i in range(20)])])
    # The stage found >= 30 and started afresh (what the commit read after it stays).
    first = [cert_key(anchor(f"M{i}").id) for i in range(20)]
    assert all(k in kept for k in first)
    assert len(view.hashes) < 20 and not any(k in view.hashes for k in first)
    assert twin(chain).state_root == chain.state_root
