"""Pipelined commits (``Chain.commit_block(durable=False)``): the same store, read-your-writes
while the write is in flight, reads of stored data wait for it, a failed write goes back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ledger import schema
from ledger.block import Block
from ledger.chain import Chain
from ledger.errors import InvalidBlockError, StorageError, TxRejected
from ledger.records import IssuerRecord, issuer_key
from ledger.store import KVStore, LevelDBStore, MemoryStore, WriteBatch
from tests.crash_child import block_txs, grow, next_block, serial, sign_commit
from tests.ledger_fixtures import (
    BLOCK_MS,
    GENESIS_TIME,
    ISSUER_A,
    anchor,
    batch_tx,
    cert_id,
    gov,
    issue_tx,
    make_genesis,
    status_tx,
)


def _everything(store: KVStore) -> list[tuple[bytes, bytes]]:
    return list(store.iterate())


def test_pipelined_commits_store_exactly_what_durable_commits_store(tmp_path: Path) -> None:
    # Each block revokes a certificate of the block before, which is still being written
    # when the block is applied: the revocation must find it (it would be dropped if not).
    durable = Chain.create(LevelDBStore(tmp_path / "durable"), make_genesis())
    piped = Chain.create(LevelDBStore(tmp_path / "piped"), make_genesis())
    try:
        for h in range(1, 7):
            txs = block_txs(h, 5)
            block = next_block(durable, txs)
            commit = sign_commit(block)
            durable.commit_block(block, commit)
            assert next_block(piped, txs) == block
            piped.commit_block(block, commit, durable=False)
            assert piped.head_height == h and piped.state_root == durable.state_root
            assert len(block.txs) == len(txs)
        piped.wait_durable()
        assert _everything(piped.store) == _everything(durable.store)
        record = piped.certificate(cert_id(serial(5, 0)))
        assert record is not None and record.status == "revoked"
    finally:
        durable.close()
        piped.close()
    reopened = Chain.open(LevelDBStore(tmp_path / "piped", create=False))
    try:
        assert (reopened.head_height, reopened.state_root) == (6, durable.state_root)
    finally:
        reopened.close()


class GatedStore(MemoryStore):
    """A memory store whose writes wait for ``gate``, and which notes any read of a block,
    commit or index made while a write waits (data the store does not hold yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()
        self.early_reads: list[bytes] = []

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self.writing.set()
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            super().write(batch, sync)
        finally:
            self.writing.clear()

    def get(self, key: bytes) -> bytes | None:
        if self.writing.is_set() and key[:2] in (b"b/", b"c/", b"t/", b"h/"):
            self.early_reads.append(key)
        return super().get(key)


def _held_write() -> tuple[GatedStore, Chain, Block]:
    """A chain whose block 2 was committed pipelined, its write held at the store's gate."""
    store = GatedStore()
    chain = Chain.create(store, make_genesis())
    grow(chain, 1)
    block = next_block(chain, block_txs(2, 3))
    store.gate.clear()
    chain.commit_block(block, sign_commit(block), durable=False)
    assert store.writing.wait(10)
    return store, chain, block


def test_the_next_block_reads_the_block_still_being_written() -> None:
    store, chain, block = _held_write()
    # Returned with the write held at the gate: the head moved, the store has nothing yet.
    assert chain.head_height == 2
    assert MemoryStore.get(store, schema.block(2)) is None
    # Block 3, applied now: a revocation of a certificate of block 2 is kept and a second
    # issue of one of its ids is refused, both from the records still in flight.
    rejected: list[TxRejected] = []
    again = batch_tx([anchor(serial(2, 1))])
    revoke = status_tx("revoke", cert_id(serial(2, 0)), reason="pipelined")
    third = chain.propose_block([revoke, again], GENESIS_TIME + 3 * BLOCK_MS,
                                block.header.proposer,
                                on_reject=lambda tid, exc: rejected.append(exc))
    assert third.tx_ids == (revoke.id,)
    assert [exc.reason for exc in rejected] == ["duplicate_id"]
    record = chain.certificate(cert_id(serial(2, 1)))
    assert record is not None and record.status == "issued"
    store.gate.set()
    chain.wait_durable()
    assert MemoryStore.get(store, schema.block(2)) is not None
    chain.close()


def test_reads_of_stored_blocks_wait_for_the_write_in_flight() -> None:
    store, chain, block = _held_write()
    # The gate opens a little later; a read that did not wait would find nothing.
    opener = threading.Timer(0.2, store.gate.set)
    opener.start()
    try:
        assert chain.block(2) == block
        assert chain.commit(2) is not None
        assert chain.tx_location(block.tx_ids[0]) == (2, 0)
        assert store.early_reads == []
    finally:
        opener.cancel()
        store.gate.set()
        chain.close()


class FailingStore(MemoryStore):
    """A memory store whose writes fail while ``fail`` is set (a full or broken disk) and
    wait for ``gate``."""

    fail = False

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail:
            raise StorageError("disk full")
        super().write(batch, sync)


def test_a_failed_pipelined_write_takes_the_chain_back_to_the_stored_head() -> None:
    store = FailingStore()
    chain = Chain.create(store, make_genesis())
    grow(chain, 1)
    other = Chain.create(MemoryStore(), make_genesis())  # a node that never sees block 2
    first, first_commit = chain.block(1), chain.commit(1)
    assert first is not None and first_commit is not None
    other.commit_block(first, first_commit)
    root = chain.state_root
    # Block 2 deactivates issuer A (a record the chain keeps in memory once read).
    second = next_block(chain, [*block_txs(2, 3), gov("set_issuer_active",
                                                      {"code": ISSUER_A, "active": False})])
    store.fail = True
    chain.commit_block(second, sign_commit(second), durable=False)  # the write fails behind
    assert chain.head_height == 2
    record = chain.record(issuer_key(ISSUER_A))  # read (and kept) while the write runs
    assert record is not None and not IssuerRecord.from_bytes(record).active
    staged = next_block(chain, block_txs(3, 3))  # staged on top of a block not stored
    with pytest.raises(StorageError, match="disk full"):
        chain.wait_durable()
    with pytest.raises(InvalidBlockError):  # dropped with its parent, not kept as valid
        chain.validate_block(staged)
    assert (chain.head_height, chain.state_root) == (1, root)
    assert chain.certificate(cert_id(serial(2, 0))) is None
    assert chain.block(2) is None
    record = chain.record(issuer_key(ISSUER_A))
    assert record is not None and IssuerRecord.from_bytes(record).active
    # Back at height 1 in every respect: another block 2, built where block 2 never was,
    # validates and commits here, and so does the block after it.
    store.fail = False
    replacement = next_block(other, [issue_tx(anchor("AFTERFAIL"))])
    # The tree's cache was dropped with the lost block's records and refills from the
    # store, which must then hold every block: this commit is not pipelined. (The gate
    # opens a little later; a pipelined commit would return before it, its block unstored.)
    store.gate.clear()
    opener = threading.Timer(0.2, store.gate.set)
    opener.start()
    try:
        chain.commit_block(replacement, sign_commit(replacement), durable=False)
        assert MemoryStore.get(store, schema.block(2)) is not None
    finally:
        opener.cancel()
        store.gate.set()
    third = next_block(chain, block_txs(3, 3))
    chain.commit_block(third, sign_commit(third), durable=False)
    chain.wait_durable()
    assert chain.certificate(cert_id(serial(2, 0))) is None
    assert Chain.open(store).state_root == third.header.state_root == chain.state_root


def test_the_next_commit_raises_a_failed_pipelined_write() -> None:
    store = FailingStore()
    chain = Chain.create(store, make_genesis())
    grow(chain, 1)
    second = next_block(chain, block_txs(2, 3))
    store.fail = True
    chain.commit_block(second, sign_commit(second), durable=False)
    third = next_block(chain, block_txs(3, 3))
    with pytest.raises(StorageError, match="disk full"):
        chain.commit_block(third, sign_commit(third), durable=False)
    assert chain.head_height == 1
