"""A batch's record ids read in one bulk call through every state layer (``get_many``).

Each layer a validator reads through (the rule overlay, the mempool's read recorder and
per-commit memo, the pending overlay, the chain's record view) answers ``get_many`` as its
``get`` would, key by key; a valid batch reads its ids in one call; a batch the bulk read
refuses is still walked record by record, so the first record at fault is named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bench import BenchNetwork
from ledger.chain import Chain
from ledger.records import CERT_PREFIX
from ledger.state import Overlay, apply_block, apply_tx
from ledger.state_base import get_many
from ledger.store import LevelDBStore
from node.mempool import _Reads, _Remembered
from tests.ledger_fixtures import LedgerHarness, anchor, batch_tx


class BulkDict(dict[bytes, bytes]):
    """A plain state with ``get_many``, counting both kinds of read."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.single: list[bytes] = []
        self.bulk: list[tuple[bytes, ...]] = []

    def get(self, key: bytes, default: object = None) -> bytes | None:  # type: ignore[override]
        self.single.append(key)
        return super().get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        self.bulk.append(tuple(keys))
        return [super(BulkDict, self).get(k) for k in keys]


def test_every_layer_answers_get_many_as_get_does() -> None:
    base = BulkDict({b"a": b"1", b"b": b"2", b"c": b"3"})
    pending = Overlay(base)
    pending.put(b"b", None)  # deleted above the base
    pending.put(b"d", b"4")  # only above the base
    memo = _Remembered(pending)
    assert memo.get(b"c") == b"3"  # kept by the memo
    reads = _Reads(memo)
    top = Overlay(reads)
    top.put(b"e", b"5")
    keys = [b"a", b"b", b"c", b"d", b"e", b"x", b"a"]
    want = [b"1", None, b"3", b"4", b"5", None, b"1"]
    assert get_many(top, keys) == want
    assert reads.keys == set(keys) - {b"e"}  # every key that reached the recorder
    for layer in (base, pending, memo, reads, top):
        assert get_many(layer, keys) == [layer.get(k) for k in keys], layer
    # A fresh memo that has seen c answers it itself, and asks the base for the others
    # in one call; one that has seen them all asks nothing.
    memo = _Remembered(base)
    assert memo.get(b"c") == b"3"
    base.bulk.clear()
    assert get_many(memo, [b"a", b"c", b"x"]) == [b"1", b"3", None]
    assert base.bulk == [(b"a", b"x")]
    memo.get(b"a"), memo.get(b"x")
    assert get_many(memo, [b"x", b"c", b"a"]) == [None, b"3", b"1"]
    assert base.bulk == [(b"a", b"x")]


def test_the_chain_record_view_answers_in_bulk_with_and_without_its_filter(
        tmp_path: Path) -> None:
    net = BenchNetwork()
    chain = Chain.create(LevelDBStore(tmp_path / "db"), net.genesis)
    batch = net.batch(0, 50)
    block = net.propose(chain, [batch])
    chain.commit_block(block, net.sign_commit(block))
    present = [CERT_PREFIX + a.id.encode() for a in batch.body.records][:20]  # type: ignore[union-attr]
    keys = [*present, CERT_PREFIX + b"1.2.156.3005.2.NOPE.X.1", present[3]]
    try:
        want = [chain.record(k) for k in keys]
        assert all(v is not None for v in want[:20]) and want[20] is None
        assert chain.records(keys) == want
        chain.close()
        chain = Chain.open(LevelDBStore(tmp_path / "db", create=False))  # the filter is set
        assert chain.records(keys) == want
    finally:
        chain.close()


def test_a_valid_batch_reads_its_ids_in_one_bulk_call() -> None:
    h = LedgerHarness()
    state = BulkDict(h.state)
    tx = batch_tx([anchor(str(i)) for i in range(50)])
    eff = apply_tx(state, tx, h.ctx(), sig_cache=h.sig_cache)
    ids = [k for k in eff.updates if k.startswith(CERT_PREFIX)]
    assert len(ids) == 50
    assert state.bulk == [tuple(ids)]
    assert not set(state.single) & set(ids)  # no id was read one by one


@pytest.mark.parametrize("case", ["in_state", "repeated", "pending_in_block"])
def test_the_first_record_at_fault_is_named(case: str) -> None:
    h = LedgerHarness()
    if case == "in_state":
        h.commit(batch_tx([anchor("3")]))
        txs = [batch_tx([anchor(str(i)) for i in range(6)])]
        where = "records[3]"
    elif case == "repeated":
        txs = [batch_tx([anchor("0"), anchor("1"), anchor("0"), anchor("1")])]
        where = "records[2]"
    else:
        txs = [batch_tx([anchor("4")]), batch_tx([anchor(str(i)) for i in range(6)])]
        where = "records[4]"
    state = BulkDict(h.state)
    with pytest.raises(Exception) as info:
        apply_block(state, txs, h.ctx(), sig_cache=h.sig_cache)
    assert getattr(info.value, "reason", None) == "duplicate_id", info.value
    assert where in str(info.value), info.value
    assert getattr(info.value, "index", None) == len(txs) - 1
