"""The mempool: admission against committed + pending state, bounds, reaping, recheck."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

import ledger.state
import ledger.state_base
from ledger.errors import MalformedTxError, TxRejected
from ledger.records import cert_key, issuer_key
from ledger.state import BlockContext
from ledger.tx import Transaction
from node.errors import MempoolFull, TxTooLarge
from node.mempool import Mempool
from tests.ledger_fixtures import (
    CHAIN_ID,
    ISSUER_A,
    LedgerHarness,
    anchor,
    batch_tx,
    gov,
    issue_tx,
    signed,
    status_tx,
)


class Tick:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        self.t += 1
        return self.t


def make(h: LedgerHarness, **limits: int) -> Mempool:
    opts = {"max_txs": 100, "max_bytes": 1 << 20, "max_tx_bytes": 1 << 16, **limits}
    return Mempool(h.state, CHAIN_ID, sig_cache=h.sig_cache, monotonic=Tick(), **opts)


def ctx(h: LedgerHarness) -> BlockContext:
    return h.ctx()


@pytest.fixture()
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every SM2 transaction-signature check made by the ledger, by tx id."""
    seen: list[bytes] = []
    real: Callable[[Transaction, bytes], bool] = ledger.state_base.verify_signature

    def counting(tx: Transaction, public_key: bytes) -> bool:
        seen.append(tx.id)
        return real(tx, public_key)

    monkeypatch.setattr(ledger.state_base, "verify_signature", counting)
    return seen


def test_admit_dedup_and_signature_checked_once(verifications: list[bytes]) -> None:
    h = LedgerHarness()
    pool = make(h)
    tx = issue_tx(anchor("M1"))
    res = pool.add(tx.to_bytes(), ctx(h), gossip=True)
    assert res.added and res.tx_id == tx.id and tx.id in pool and len(pool) == 1
    assert not pool.add(tx.to_bytes(), ctx(h), gossip=True).added  # idempotent
    assert verifications == [tx.id]
    # The block path (proposal, validation) reuses the verdict through the shared cache.
    h.commit(*pool.reap(10, 1 << 20))
    assert verifications == [tx.id]


@pytest.fixture()
def batch_rules(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every run of the batch-issue rules, by tx id."""
    runs: list[bytes] = []
    real = ledger.state._HANDLERS["cert.issue_batch"]

    def counting(*args: object) -> tuple[str, ...]:
        runs.append(args[1].id)  # type: ignore[attr-defined]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setitem(ledger.state._HANDLERS, "cert.issue_batch", counting)
    return runs


def test_admission_runs_a_batch_s_rules_once(batch_rules: list[bytes],
                                              verifications: list[bytes]) -> None:
    # The pre-check outside the lock checks the signer and signature only; the record
    # rules of a batch (as costly as its signature) run once, against the overlay.
    h = LedgerHarness()
    pool = make(h)
    tx = batch_tx([anchor(f"R{i}") for i in range(3)])
    assert pool.add(tx.to_bytes(), ctx(h), gossip=True).added
    assert batch_rules == [tx.id] and verifications == [tx.id]
    # A rule failure still rejects at admission, with its reason (a pending tx issued R0).
    dup = batch_tx([anchor("R9"), anchor("R0")])
    with pytest.raises(TxRejected) as info:
        pool.add(dup.to_bytes(), ctx(h), gossip=True)
    assert info.value.reason == "duplicate_id" and dup.id not in pool


def test_pool_hands_out_its_decoded_txs() -> None:
    h = LedgerHarness()
    pool = make(h)
    tx = issue_tx(anchor("D1"))
    pool.add(tx.to_bytes(), ctx(h), gossip=False)
    got = pool.decoded(tx.id)
    assert got is not None and got.to_bytes() == tx.to_bytes()
    assert pool.decoded(b"\x00" * 32) is None
    pool.remove([tx.id])
    assert pool.decoded(tx.id) is None


def test_rejections_carry_the_ledger_reason() -> None:
    h = LedgerHarness()
    pool = make(h)
    with pytest.raises(MalformedTxError):
        pool.add(b"\x93junk", ctx(h), gossip=True)
    good = issue_tx(anchor("M2"))
    forged = signed(good.kind, good.body, "issuer-b")  # issuer B may not issue for A
    with pytest.raises(TxRejected) as info:
        pool.add(forged.to_bytes(), ctx(h), gossip=True)
    assert info.value.reason in {"issuer_mismatch", "type_not_granted"}
    other_chain = issue_tx(anchor("M3"), chain_id="another-chain")
    with pytest.raises(TxRejected) as info:
        pool.add(other_chain.to_bytes(), ctx(h), gossip=True)
    assert info.value.reason == "wrong_chain_id"
    assert len(pool) == 0


def test_pending_overlay_sees_earlier_pending_txs() -> None:
    h = LedgerHarness()
    pool = make(h)
    a = anchor("M4")
    pool.add(issue_tx(a).to_bytes(), ctx(h), gossip=True)
    # A second issue of the same id conflicts with the pending one...
    with pytest.raises(TxRejected) as info:
        pool.add(issue_tx(a).to_bytes(), ctx(h), gossip=True)
    assert info.value.reason == "duplicate_id"
    # ...and a revocation of the pending certificate is fine (unknown to committed state).
    pool.add(status_tx("revoke", a.id).to_bytes(), ctx(h), gossip=False)
    assert len(pool) == 2


def test_bounds() -> None:
    h = LedgerHarness()
    txs = [issue_tx(anchor(f"B{i}")).to_bytes() for i in range(3)]
    pool = make(h, max_txs=2)
    pool.add(txs[0], ctx(h), gossip=True)
    pool.add(txs[1], ctx(h), gossip=True)
    with pytest.raises(MempoolFull):
        pool.add(txs[2], ctx(h), gossip=True)
    pool = make(h, max_bytes=len(txs[0]) + 10)
    pool.add(txs[0], ctx(h), gossip=True)
    with pytest.raises(MempoolFull):
        pool.add(txs[1], ctx(h), gossip=True)
    assert pool.size_bytes == len(txs[0])
    with pytest.raises(TxTooLarge):
        make(h, max_tx_bytes=100).add(txs[0], ctx(h), gossip=True)


def test_reap_in_arrival_order_within_limits() -> None:
    h = LedgerHarness()
    pool = make(h)
    raws = [issue_tx(anchor(f"R{i}")).to_bytes() for i in range(5)]
    for r in raws:
        pool.add(r, ctx(h), gossip=False)

    def reap(max_txs: int, max_bytes: int) -> list[bytes]:
        return [t.to_bytes() for t in pool.reap(max_txs, max_bytes)]

    assert reap(3, 1 << 20) == raws[:3]
    assert reap(10, len(raws[0]) * 2 + 1) == raws[:2]
    assert reap(10, 1 << 20) == raws


def test_update_removes_committed_and_drops_what_no_longer_applies() -> None:
    h = LedgerHarness()
    pool = make(h)
    a, b = anchor("U1"), anchor("U2")
    mine = issue_tx(a)
    pool.add(mine.to_bytes(), ctx(h), gossip=True)
    pool.add(issue_tx(b).to_bytes(), ctx(h), gossip=True)
    # Another node's block issues b with a different tx: our pending issue of b is now void.
    other = issue_tx(b)
    assert other.id != issue_tx(b).id  # fresh nonce each time
    h.commit(mine, other)
    admitted, dropped = pool.update([mine.id, other.id], ctx(h))
    assert set(admitted) == {mine.id} and admitted[mine.id] > 0
    assert list(dropped.values()) == ["duplicate_id"]
    assert len(pool) == 0 and pool.size_bytes == 0
    # After the update the overlay is the new state: a revocation of a applies.
    pool.add(status_tx("revoke", a.id).to_bytes(), ctx(h), gossip=True)


def test_update_rechecks_only_what_the_block_touched(batch_rules: list[bytes]) -> None:
    h = LedgerHarness()
    pool = make(h)
    batch = batch_tx([anchor(f"B{i}") for i in range(4)])
    single = issue_tx(anchor("S1"))
    for tx in (batch, single):
        pool.add(tx.to_bytes(), ctx(h), gossip=True)
    assert batch_rules == [batch.id]
    # Another node's block issues S1 with another tx: it wrote S1's record, which our
    # pending single read; nothing our batch read.
    effects = h.commit(issue_tx(anchor("S1")))
    _, dropped = pool.update([], ctx(h), effects.updates.keys())
    assert dropped == {single.id: "duplicate_id"}
    assert batch_rules == [batch.id] and batch.id in pool  # kept without its rules again
    with pytest.raises(TxRejected) as info:  # and its effects are still in the overlay
        pool.add(issue_tx(anchor("B2")).to_bytes(), ctx(h), gossip=True)
    assert info.value.reason == "duplicate_id"
    # Without the written keys, everything is re-checked, as before.
    pool.update([], ctx(h))
    assert batch_rules == [batch.id, batch.id]


def test_update_rechecks_the_signer_key_at_the_new_height() -> None:
    # A key that retires at the next height, with no write at that height: the one rule
    # that changes without a write must still drop the tx.
    h = LedgerHarness()
    rec = h.issuer(ISSUER_A)
    keys = tuple(dataclasses.replace(k, retired_at_height=h.height + 2) for k in rec.keys)
    h.state[issuer_key(ISSUER_A)] = dataclasses.replace(rec, keys=keys).to_bytes()
    pool = make(h)
    tx = issue_tx(anchor("K1"))
    pool.add(tx.to_bytes(), ctx(h), gossip=True)
    effects = h.commit(issue_tx(anchor("K2")))  # at height 1 the key is still valid
    assert issuer_key(ISSUER_A) not in effects.updates
    _, dropped = pool.update([], ctx(h), effects.updates.keys())
    assert dropped == {tx.id: "key_not_valid_at_height"}


def test_committed_reads_are_remembered_until_the_next_update() -> None:
    """The overlay's checks read each committed key once per commit; after a commit that
    changes a record, the update reads it afresh and so does every later admission."""
    h = LedgerHarness()
    reads: list[bytes] = []
    state = h.state

    class Counting:
        def get(self, key: bytes, /) -> bytes | None:
            reads.append(key)
            return state.get(key)

    pool = Mempool(Counting(), h.genesis.chain_id, max_txs=100, max_bytes=1 << 20,
                   max_tx_bytes=1 << 20, sig_cache={}, monotonic=time.monotonic)
    pool.add(issue_tx(anchor("R1")).to_bytes(), ctx(h), gossip=True)
    first = reads.count(issuer_key(ISSUER_A))
    pool.add(issue_tx(anchor("R2")).to_bytes(), ctx(h), gossip=True)
    # The second admission's overlay check found the issuer record remembered; only its
    # lock-free pre-check read the store again.
    assert reads.count(issuer_key(ISSUER_A)) == first + 1
    # A block deactivates the issuer: the update reads the record anew and drops both,
    # and a later admission is refused on the new record.
    effects = h.commit(gov("set_issuer_active", {"code": ISSUER_A, "active": False}))
    _, dropped = pool.update([], ctx(h), effects.updates.keys())
    assert set(dropped.values()) == {"issuer_inactive"} and len(dropped) == 2
    with pytest.raises(TxRejected) as info:
        pool.add(issue_tx(anchor("R3")).to_bytes(), ctx(h), gossip=True)
    assert info.value.reason == "issuer_inactive"


def test_txs_reading_a_removed_tx_are_rechecked() -> None:
    h = LedgerHarness()
    pool = make(h)
    first = issue_tx(anchor("X1"))
    revoke = status_tx("revoke", anchor("X1").id)
    for tx in (first, revoke):
        pool.add(tx.to_bytes(), ctx(h), gossip=True)
    pool.remove([first.id])  # the proposer found it no longer applies
    effects = h.commit()
    _, dropped = pool.update([], ctx(h), effects.updates.keys())
    assert dropped == {revoke.id: "unknown_certificate"}


def test_txs_reading_a_dropped_tx_are_rechecked() -> None:
    h = LedgerHarness()
    pool = make(h)
    batch = batch_tx([anchor("Y1"), anchor("Y2")])
    revoke = status_tx("revoke", anchor("Y1").id)  # reads Y1, which only the batch wrote
    for tx in (batch, revoke):
        pool.add(tx.to_bytes(), ctx(h), gossip=True)
    effects = h.commit(issue_tx(anchor("Y2")))  # voids the batch; Y1 untouched by the block
    assert cert_key(anchor("Y1").id) not in effects.updates
    _, dropped = pool.update([], ctx(h), effects.updates.keys())
    assert dropped == {batch.id: "duplicate_id", revoke.id: "unknown_certificate"}


def test_gossip_queue_holds_client_txs_only() -> None:
    h = LedgerHarness()
    pool = make(h)
    c = issue_tx(anchor("G1")).to_bytes()
    p = issue_tx(anchor("G2")).to_bytes()
    pool.add(c, ctx(h), gossip=True)
    pool.add(p, ctx(h), gossip=False)
    assert pool.take_gossip(1 << 20, 0) == [c]
    assert pool.take_gossip(1 << 20, 0.01) == []


def test_listener_and_remove() -> None:
    h = LedgerHarness()
    pool = make(h)
    calls: list[int] = []
    pool.on_new_tx(lambda: calls.append(len(pool)))
    tx = issue_tx(anchor("L1"), signer="issuer-a")
    pool.add(tx.to_bytes(), ctx(h), gossip=True)
    assert calls == [1]
    pool.remove([tx.id])
    assert len(pool) == 0 and pool.size_bytes == 0


def test_take_gossip_lingers_to_fill_one_envelope() -> None:
    """Envelopes are spaced by ``linger``: a tx after a quiet spell goes at once; one
    arriving sooner waits for the spacing (gathering company, so one signed envelope
    carries many txs), and stops waiting as soon as the budget is full."""
    h = LedgerHarness()
    pool = Mempool(h.state, CHAIN_ID, sig_cache=h.sig_cache, monotonic=time.monotonic,
                   max_txs=100, max_bytes=1 << 20, max_tx_bytes=1 << 16)
    first = issue_tx(anchor("L1")).to_bytes()
    pool.add(first, ctx(h), gossip=True)
    start = time.monotonic()
    assert pool.take_gossip(1 << 20, 0, linger=0.3) == [first]
    assert time.monotonic() - start < 0.25  # nothing sent lately: no wait
    second = issue_tx(anchor("L1B")).to_bytes()
    pool.add(second, ctx(h), gossip=True)
    assert pool.take_gossip(1 << 20, 0, linger=0.3) == [second]
    assert time.monotonic() - start >= 0.3  # spaced from the first envelope
    more = [issue_tx(anchor(f"L{i}")).to_bytes() for i in range(2, 5)]
    budget = sum(map(len, more))
    got: list[list[bytes]] = []
    pool.add(more[0], ctx(h), gossip=True)
    taker = threading.Thread(target=lambda: got.append(pool.take_gossip(budget, 0, linger=30)))
    start = time.monotonic()
    taker.start()
    for raw in more[1:]:
        pool.add(raw, ctx(h), gossip=True)
    taker.join(10)
    assert got == [more] and time.monotonic() - start < 10  # filled, not timed out
    # Without a linger a lone tx goes at once.
    pool.add(issue_tx(anchor("L9")).to_bytes(), ctx(h), gossip=True)
    start = time.monotonic()
    assert len(pool.take_gossip(1 << 20, 0)) == 1 and time.monotonic() - start < 0.25
