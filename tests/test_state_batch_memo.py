"""A batch's stateless record checks, remembered on the decoded tx (``Transaction.memo``).

A validator checks each batch on admission and again in its block. The second check
reuses the first one's stateless verdict only for the same issuer code and granted
types: these tests hold the remembered path to exactly what a fresh decode gives, and
show a grant withdrawn in between is still refused.
"""

from __future__ import annotations

import pytest

import ledger.state_cert as state_cert
from ledger.records import CertRecord, encode_cert
from ledger.state import Overlay, apply_tx, check_tx
from ledger.tx import Transaction
from tests.ledger_fixtures import (
    GENESIS_TIME,
    ISSUER_A,
    TYPE_DIPLOMA,
    LedgerHarness,
    anchor,
    batch_tx,
    gov,
)


def effects(h: LedgerHarness, tx: Transaction) -> dict[bytes, bytes | None]:
    return apply_tx(Overlay(h.state), tx, h.ctx(), sig_cache=h.sig_cache).updates


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = state_cert._batch_keys

    def spy(*args: object) -> tuple[bytes, ...]:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(state_cert, "_batch_keys", spy)
    return calls


def test_a_second_check_reuses_the_verdict_and_writes_what_a_fresh_decode_writes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LedgerHarness()
    tx = batch_tx([anchor(str(i)) for i in range(40)])
    calls = counting(monkeypatch)
    first = effects(h, tx)
    second = effects(h, tx)
    fresh = effects(h, Transaction.from_bytes(tx.to_bytes()))
    assert calls == [1, 1]  # the second check of the same object ran no record check
    assert first == second == fresh
    assert len(first) == 40 + 1  # the records and the tx marker


def test_a_duplicate_is_still_found_on_the_remembered_path() -> None:
    h = LedgerHarness()
    tx = batch_tx([anchor(str(i)) for i in range(10)])
    check_tx(h.state, tx, h.ctx())  # remembers the stateless verdict
    h.commit(batch_tx([anchor("7")]))
    with pytest.raises(Exception) as info:
        check_tx(h.state, tx, h.ctx())
    assert getattr(info.value, "reason", None) == "duplicate_id"
    assert "records[7]" in str(info.value)


def test_a_grant_withdrawn_after_the_first_check_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = LedgerHarness()
    tx = batch_tx([anchor(str(i)) for i in range(10)])
    check_tx(h.state, tx, h.ctx())
    h.commit(gov("revoke_types", {"code": ISSUER_A, "types": [TYPE_DIPLOMA]}))
    calls = counting(monkeypatch)
    with pytest.raises(Exception) as info:
        check_tx(h.state, tx, h.ctx())
    assert getattr(info.value, "reason", None) == "type_not_granted"
    assert calls == [1]


def test_a_verdict_remembered_for_other_inputs_is_not_used() -> None:
    """The check that catches a memo read without its key: a verdict stored under
    another issuer's inputs (here: one that would wave the records through) is ignored."""
    h = LedgerHarness()
    bad = anchor("1", valid_from=10, valid_until=5)  # valid_from after valid_until
    tx = batch_tx([bad])
    issuer = h.issuer(ISSUER_A)
    tx.memo[state_cert._BATCH_MEMO] = (("another", issuer.type_set),
                                       (b"cert:" + bad.id.encode(),))
    with pytest.raises(Exception) as info:
        check_tx(h.state, tx, h.ctx())
    assert getattr(info.value, "reason", None) == "bad_validity"


def test_remembered_records_follow_the_height_they_carry() -> None:
    """The records a batch writes carry the height: what a tx remembers from a check at one
    height gives a fresh decode's records there and at any other."""
    h = LedgerHarness()
    tx = batch_tx([anchor(str(i)) for i in range(12)])

    def at(tx: Transaction, height: int) -> dict[bytes, bytes | None]:
        return apply_tx(Overlay(h.state), tx, h.ctx(height), sig_cache=h.sig_cache).updates

    def fresh(height: int) -> dict[bytes, bytes | None]:
        return at(Transaction.from_bytes(tx.to_bytes()), height)

    first = at(tx, 5)
    assert at(tx, 5) == first == fresh(5)
    later = at(tx, 6)
    assert later == fresh(6) and later != first
    assert at(tx, 5) == fresh(5)  # and back


@pytest.mark.parametrize("height", [5, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32])
def test_records_joined_from_their_parts_are_encode_cert_at_any_height(height: int) -> None:
    """The parts are packed once per tx; every record joined from them at a height is the
    very bytes ``encode_cert`` gives, whatever width msgpack uses for the height and for
    the record's index (300 records: indexes past 127 and 255)."""
    h = LedgerHarness()
    records = [anchor(str(i), valid_until=None if i % 3 else GENESIS_TIME + i) for i in range(300)]
    tx = batch_tx(records)
    first = effects_at(h, tx, 7)
    parts = tx.memo[state_cert._PARTS_MEMO]
    got = effects_at(h, tx, height)
    assert tx.memo[state_cert._PARTS_MEMO] is parts  # not packed again
    for i, a in enumerate(records):
        key = b"cert:" + a.id.encode()
        assert got[key] == encode_cert(a.id, a.digest, a.valid_from, a.valid_until, None,
                                       "issued", height, height, None, None,
                                       tx.signer_key_id, tx.id, i)
        assert CertRecord.from_bytes(got[key]).issued_height == height
        assert CertRecord.from_bytes(first[key]).issued_height == 7


def effects_at(h: LedgerHarness, tx: Transaction, height: int) -> dict[bytes, bytes | None]:
    return apply_tx(Overlay(h.state), tx, h.ctx(height), sig_cache=h.sig_cache).updates
