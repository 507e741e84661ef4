"""Tx gossip (``txs/v2``): the envelope's signature covers the txs' ids, the receiver
hands each tx on with the id it computed to check that signature, and the mempool does not
hash the tx again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import ledger.tx
from certificates.hashing import sm3
from ledger.errors import TxRejected
from network.envelope import SeqCounter, open_envelope, seal, seal_batch
from node.peers import Inbox, Outbox
from node.wire import KIND_TXS, encode_txs, tx_cover
from tests.ledger_fixtures import LedgerHarness, anchor, batch_tx, issue_tx, key
from tests.test_node_mempool import ctx, make

CHAIN = "certledger-test"
SENDER = key("validator-gossip")
KNOWN = {SENDER.public.key_id: SENDER.public.data}
MAX = 1 << 22


class Sent:
    def __init__(self) -> None:
        self.envelopes: list[bytes] = []

    def broadcast(self, env: bytes) -> None:
        self.envelopes.append(env)

    def send(self, peer: str, env: bytes) -> None:
        self.envelopes.append(env)


def txs() -> list[bytes]:
    return [issue_tx(anchor("G1")).to_bytes(),
            batch_tx([anchor(f"G{i}") for i in range(2, 40)]).to_bytes()]


def outbox(sent: Sent) -> Outbox:
    return Outbox(CHAIN, SENDER, sent, SeqCounter(1), MAX)  # type: ignore[arg-type]


def inbox(got: list[tuple[bytes, bytes]], drops: dict[str, int]) -> Inbox:
    def count(reason: str, n: int) -> None:
        drops[reason] = drops.get(reason, 0) + n
    return Inbox(CHAIN, lambda: KNOWN, lambda _: None, got.extend, count,
                 max_envelope_bytes=MAX, max_batch_bytes=2 * MAX)


@pytest.mark.parametrize("ids_known", [True, False])
def test_gossip_travels_with_its_ids_and_the_signature_covers_them(ids_known: bool) -> None:
    sent, raws = Sent(), txs()
    outbox(sent).broadcast_txs(raws, [sm3(r) for r in raws] if ids_known else None)
    (env,) = sent.envelopes
    opened = open_envelope(env, CHAIN, KNOWN, MAX, {KIND_TXS: tx_cover(MAX)})
    assert opened.kind == KIND_TXS == "txs/v2"
    got: list[tuple[bytes, bytes]] = []
    drops: dict[str, int] = {}
    assert inbox(got, drops).receive(seal_batch(sent.envelopes)).accepted == 1
    assert got == [(r, sm3(r)) for r in raws] and drops == {}


def test_gossip_whose_txs_differ_from_the_ids_signed_is_dropped() -> None:
    raws = txs()
    forged = seal(CHAIN, KIND_TXS, encode_txs([raws[0], raws[0]]), SENDER, 9,
                  covers=[sm3(r) for r in raws])
    old_style = seal(CHAIN, KIND_TXS, encode_txs(raws), SENDER, 10)  # signed the payload
    got: list[tuple[bytes, bytes]] = []
    drops: dict[str, int] = {}
    received = inbox(got, drops).receive(seal_batch([forged, old_style]))
    assert received.accepted == 0 and got == []
    assert drops == {"envelope_bad_signature": 2}


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Sizes of what ``Transaction.id`` hashes."""
    sizes: list[int] = []
    real = ledger.tx.sm3

    def counting(data: Any) -> bytes:
        sizes.append(len(data))
        return real(data)

    monkeypatch.setattr(ledger.tx, "sm3", counting)
    yield sizes


def test_a_peer_tx_admitted_with_its_id_is_not_hashed_again(hashed: list[int]) -> None:
    h = LedgerHarness()
    pool = make(h, max_tx_bytes=1 << 20)
    raw = txs()[1]
    tx_id = sm3(raw)
    assert pool.add(raw, ctx(h), gossip=False, tx_id=tx_id).tx_id == tx_id
    assert len(raw) not in hashed
    other = issue_tx(anchor("G99")).to_bytes()
    assert pool.add(other, ctx(h), gossip=False).tx_id == sm3(other)
    assert len(other) in hashed  # without an id it hashes, as before
    assert pool.decoded(tx_id) is not None and pool.id_of(raw) == tx_id


def test_a_peer_tx_a_block_has_carried_is_refused_before_it_is_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LedgerHarness()
    pool = make(h, max_tx_bytes=1 << 20)
    done, fresh = batch_tx([anchor(f"D{i}") for i in range(20)]), issue_tx(anchor("D99"))
    h.commit(done)
    decoded: list[int] = []
    real = ledger.tx.Transaction.from_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type, raw: bytes) -> ledger.tx.Transaction:
        decoded.append(len(raw))
        return real(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(ledger.tx.Transaction, "from_bytes", classmethod(counting))
    raw = done.to_bytes()
    with pytest.raises(TxRejected) as exc:
        pool.add(raw, ctx(h), gossip=False, tx_id=done.id)
    assert exc.value.reason == "duplicate_tx" and decoded == []
    # Without the id (a client's submission) the rules find the same, after decoding.
    with pytest.raises(TxRejected) as exc:
        pool.add(raw, ctx(h), gossip=False)
    assert exc.value.reason == "duplicate_tx" and decoded == [len(raw)]
    assert pool.add(fresh.to_bytes(), ctx(h), gossip=False, tx_id=fresh.id).added
    assert len(pool) == 1
