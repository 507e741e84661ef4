"""The state machine: every rejection reason, happy paths for every kind, records, genesis.

Each rejection case builds a harness, commits any setup blocks, and returns the bad
block and its expected reason; ``LedgerHarness.reject`` checks the reason (for the
block and for ``check_tx``) and that the state root did not move.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.state_base as state_mod
import ledger.state_cert as state_cert
from certificates.identifiers import CertificateId
from ledger.errors import GenesisError, RecordError, TxRejected
from ledger.genesis import Genesis
from ledger.records import (
    ADMINS_KEY,
    VALIDATORS_KEY,
    AdminsRecord,
    CertRecord,
    IssuerRecord,
    ValidatorsRecord,
    cert_key,
    decode_tx_marker,
    tx_key,
)
from ledger.state import (
    REASONS,
    Overlay,
    apply_block,
    apply_tx,
    check_tx,
    id_ok,
    precheck_tx,
    validators_at,
)
from ledger.tx import MAX_BATCH, IssueBatchBody, Transaction, gov_tx, verify_signature
from tests.ledger_fixtures import (
    CHAIN_ID,
    GENESIS_TIME,
    ISSUER_A,
    ISSUER_B,
    SUPERVISOR,
    TYPE_DIPLOMA,
    TYPE_LICENSE,
    TYPE_OTHER,
    UNREGISTERED,
    LedgerHarness,
    admins,
    anchor,
    batch_tx,
    cert_id,
    gov,
    issue_tx,
    key,
    make_genesis,
    signed,
    state_root,
    status_tx,
    supersede_tx,
    validator_set,
)

Block = tuple[list[Transaction | bytes], str]


def issued(h: LedgerHarness, serial: str, **kw: Any) -> str:
    a = anchor(serial, **kw)
    signer = {ISSUER_A: "issuer-a", ISSUER_B: "issuer-b"}[a.issuer]
    h.commit(issue_tx(a, signer))
    return a.id


def validators_body(names: list[str]) -> dict[str, Any]:
    return {"validators": validator_set(names).to_value()}


def rotate(code: str, new: str) -> dict[str, Any]:
    return {"code": code, "public_key": key(new).public.data}


# --------------------------------------------------------------------------- rejections


def c_malformed_bytes(h: LedgerHarness) -> Block:
    return [b"\x81\xa1x\x01"], "malformed"


def c_malformed_truncated(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1")).to_bytes()[:-3]], "malformed"


def c_malformed_key(h: LedgerHarness) -> Block:
    body = {"code": UNREGISTERED, "name": "x", "public_key": b"\x04" + b"\x01" * 64,
            "types": []}
    return [gov("register_issuer", body)], "malformed"


def c_malformed_self_supervision(h: LedgerHarness) -> Block:
    return [gov("grant_supervision", {"supervisor": ISSUER_B, "supervised": ISSUER_B})], \
        "malformed"


def c_malformed_self_rotation_with_approvals(h: LedgerHarness) -> Block:
    body = {**rotate(ISSUER_A, "issuer-a-2"), "approvals": []}
    t = gov("rotate_issuer_key", body)  # approvals by admins, but signed by the issuer
    forged = Transaction.create("gov.rotate_issuer_key", t.body.to_value(), key("issuer-a"),
                                CHAIN_ID)
    return [forged], "malformed"


def c_wrong_chain_id(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1"), chain_id="certledger-other")], "wrong_chain_id"


def c_bad_signature(h: LedgerHarness) -> Block:
    t, other = issue_tx(anchor("1")), issue_tx(anchor("2"))
    return [dataclasses.replace(t, signature=other.signature)], "bad_signature"


def c_bad_approval_signature(h: LedgerHarness) -> Block:
    t = gov("set_issuer_active", {"code": ISSUER_B, "active": False})
    other = gov("set_issuer_active", {"code": ISSUER_B, "active": True})
    v = t.body.to_value()
    v["approvals"][1][1] = other.body.to_value()["approvals"][1][1]
    return [Transaction.create(t.kind, v, key("admin-0"), CHAIN_ID, t.nonce)], "bad_signature"


def c_unknown_signer(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1"), signer="stranger")], "unknown_signer"


def c_unknown_issuer(h: LedgerHarness) -> Block:
    return [gov("grant_types", {"code": UNREGISTERED, "types": [TYPE_DIPLOMA]})], \
        "unknown_issuer"


def c_issuer_inactive(h: LedgerHarness) -> Block:
    h.commit(gov("set_issuer_active", {"code": ISSUER_A, "active": False}))
    return [issue_tx(anchor("1"))], "issuer_inactive"


def c_key_not_valid_at_height(h: LedgerHarness) -> Block:
    h.commit(gov("rotate_issuer_key", rotate(ISSUER_A, "issuer-a-2")))
    return [issue_tx(anchor("1"))], "key_not_valid_at_height"


def c_key_retired_earlier_in_block(h: LedgerHarness) -> Block:
    self_rotation = Transaction.create("gov.rotate_issuer_key",
                                       {**rotate(ISSUER_A, "issuer-a-2"), "approvals": []},
                                       key("issuer-a"), CHAIN_ID)
    return [self_rotation, issue_tx(anchor("1"))], "key_not_valid_at_height"


def c_type_not_granted(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1", type_code=TYPE_OTHER))], "type_not_granted"


def c_type_not_granted_revoke(h: LedgerHarness) -> Block:
    return [gov("revoke_types", {"code": ISSUER_B, "types": [TYPE_DIPLOMA]})], \
        "type_not_granted"


def c_issuer_mismatch(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1", issuer=ISSUER_B, type_code=TYPE_LICENSE))], "issuer_mismatch"


def c_issuer_mismatch_batch(h: LedgerHarness) -> Block:
    return [batch_tx([anchor("1")], issuer=ISSUER_B)], "issuer_mismatch"


def c_issuer_mismatch_batch_record(h: LedgerHarness) -> Block:
    recs = [anchor("1"), anchor("2", issuer=ISSUER_B, type_code=TYPE_LICENSE)]
    return [batch_tx(recs)], "issuer_mismatch"


def c_bad_identifier_check_char(h: LedgerHarness) -> Block:
    good = cert_id("1")
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")
    return [issue_tx(anchor("1", cid=bad))], "bad_identifier"


def c_bad_identifier_issuer_part(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1", cid=cert_id("1", issuer=ISSUER_B)))], "bad_identifier"


def c_bad_identifier_type_part(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1", cid=cert_id("1", type_code=TYPE_LICENSE)))], "bad_identifier"


def c_bad_identifier_in_batch(h: LedgerHarness) -> Block:
    recs = [anchor("1"), anchor("2", cid=cert_id("2").lower())]
    return [batch_tx(recs)], "bad_identifier"


def c_bad_identifier_register(h: LedgerHarness) -> Block:
    body = {"code": "not-a-code", "name": "x", "public_key": key("issuer-new").public.data,
            "types": []}
    return [gov("register_issuer", body)], "bad_identifier"


def c_bad_identifier_grant(h: LedgerHarness) -> Block:
    return [gov("grant_types", {"code": ISSUER_B, "types": ["123"]})], "bad_identifier"


def c_duplicate_id(h: LedgerHarness) -> Block:
    issued(h, "1")
    return [issue_tx(anchor("1"))], "duplicate_id"


def c_duplicate_id_in_batch(h: LedgerHarness) -> Block:
    return [batch_tx([anchor("1"), anchor("2"), anchor("1")])], "duplicate_id"


def c_duplicate_id_batch_vs_state(h: LedgerHarness) -> Block:
    issued(h, "2")
    return [batch_tx([anchor("1"), anchor("2")])], "duplicate_id"


def c_duplicate_id_supersede(h: LedgerHarness) -> Block:
    old, other = issued(h, "1"), issued(h, "2")
    new = anchor("2", supersedes=old, cid=other)
    return [supersede_tx(old, new)], "duplicate_id"


def c_duplicate_tx(h: LedgerHarness) -> Block:
    t = issue_tx(anchor("1"))
    h.commit(t)
    return [t], "duplicate_tx"


def c_duplicate_tx_same_block(h: LedgerHarness) -> Block:
    t = status_tx("suspend", issued(h, "1"))
    return [t, t], "duplicate_tx"


def c_illegal_reinstate_issued(h: LedgerHarness) -> Block:
    return [status_tx("reinstate", issued(h, "1"))], "illegal_status_change"


def c_illegal_suspend_revoked(h: LedgerHarness) -> Block:
    cid = issued(h, "1")
    h.commit(status_tx("revoke", cid))
    return [status_tx("suspend", cid)], "illegal_status_change"


def c_illegal_revoke_superseded(h: LedgerHarness) -> Block:
    old = issued(h, "1")
    h.commit(supersede_tx(old, anchor("1", version=2, supersedes=old)))
    return [status_tx("revoke", old)], "illegal_status_change"


def c_illegal_supersede_suspended(h: LedgerHarness) -> Block:
    old = issued(h, "1")
    h.commit(status_tx("suspend", old))
    return [supersede_tx(old, anchor("1", version=2, supersedes=old))], "illegal_status_change"


def c_not_authorized(h: LedgerHarness) -> Block:
    return [status_tx("revoke", issued(h, "1"), signer="issuer-b")], "not_authorized"


def c_not_authorized_unsupervised(h: LedgerHarness) -> Block:
    return [status_tx("suspend", issued(h, "1"), signer="supervisor")], "not_authorized"


def c_not_authorized_supervisor_supersede(h: LedgerHarness) -> Block:
    old = issued(h, "1", issuer=ISSUER_B, type_code=TYPE_LICENSE)
    new = anchor("1", issuer=SUPERVISOR, type_code=TYPE_LICENSE, supersedes=old)
    return [supersede_tx(old, new, signer="supervisor")], "not_authorized"


def c_unknown_certificate(h: LedgerHarness) -> Block:
    return [status_tx("revoke", cert_id("404"))], "unknown_certificate"


def c_unknown_certificate_supersede(h: LedgerHarness) -> Block:
    old = cert_id("404")
    return [supersede_tx(old, anchor("404", version=2, supersedes=old))], "unknown_certificate"


def c_bad_validity(h: LedgerHarness) -> Block:
    a = anchor("1", valid_from=GENESIS_TIME + 10, valid_until=GENESIS_TIME)
    return [issue_tx(a)], "bad_validity"


def c_bad_validity_batch(h: LedgerHarness) -> Block:
    return [batch_tx([anchor("1"), anchor("2", valid_from=10, valid_until=9)])], "bad_validity"


def c_batch_too_large(h: LedgerHarness) -> Block:
    body = IssueBatchBody(ISSUER_A, (anchor("1"),) * (MAX_BATCH + 1))
    return [signed("cert.issue_batch", body, "issuer-a")], "batch_too_large"


def c_empty_batch(h: LedgerHarness) -> Block:
    return [batch_tx([])], "empty_batch"


def c_insufficient_approvals(h: LedgerHarness) -> Block:
    return [gov("set_issuer_active", {"code": ISSUER_B, "active": False}, n_admins=1)], \
        "insufficient_approvals"


def c_not_admin(h: LedgerHarness) -> Block:
    t = gov_tx("gov.set_issuer_active", {"code": ISSUER_B, "active": False},
               [key("issuer-a"), *admins(2)], CHAIN_ID)
    return [t], "not_admin"


def c_not_admin_approval(h: LedgerHarness) -> Block:
    t = gov_tx("gov.set_issuer_active", {"code": ISSUER_B, "active": False},
               [key("admin-0"), key("stranger")], CHAIN_ID)
    return [t], "not_admin"


def c_not_admin_foreign_rotation(h: LedgerHarness) -> Block:
    t = Transaction.create("gov.rotate_issuer_key",
                           {**rotate(ISSUER_A, "issuer-a-2"), "approvals": []},
                           key("issuer-b"), CHAIN_ID)
    return [t], "not_admin"


def c_invalid_validator_set_duplicate(h: LedgerHarness) -> Block:
    body = validators_body(["val-0", "val-1"])
    body["validators"][1]["public_key"] = body["validators"][0]["public_key"]
    return [gov("set_validators", body)], "invalid_validator_set"


def c_invalid_validator_set_empty(h: LedgerHarness) -> Block:
    return [gov("set_validators", {"validators": []})], "invalid_validator_set"


def c_invalid_validator_set_off_curve(h: LedgerHarness) -> Block:
    body = validators_body(["val-0"])
    body["validators"][0]["public_key"] = b"\x04" + b"\x02" * 64
    return [gov("set_validators", body)], "invalid_validator_set"


def c_invalid_validator_set_pending(h: LedgerHarness) -> Block:
    h.commit(gov("set_validators", validators_body(["val-0", "val-1", "val-2", "val-4"])))
    return [gov("set_validators", validators_body(["val-0"]))], "invalid_validator_set"


def c_supersede_mismatch(h: LedgerHarness) -> Block:
    old = issued(h, "1")
    return [supersede_tx(old, anchor("1", version=2, supersedes=cert_id("9")))], \
        "supersede_mismatch"


def c_supersede_mismatch_issue(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1", version=2, supersedes=cert_id("1")))], "supersede_mismatch"


def c_supersede_mismatch_batch(h: LedgerHarness) -> Block:
    return [batch_tx([anchor("2", supersedes=cert_id("1"))])], "supersede_mismatch"


def c_issuer_exists(h: LedgerHarness) -> Block:
    body = {"code": ISSUER_B, "name": "x", "public_key": key("issuer-new").public.data,
            "types": []}
    return [gov("register_issuer", body)], "issuer_exists"


def c_key_in_use(h: LedgerHarness) -> Block:
    body = {"code": UNREGISTERED, "name": "x", "public_key": key("issuer-a").public.data,
            "types": []}
    return [gov("register_issuer", body)], "key_in_use"


def c_key_in_use_admin_key(h: LedgerHarness) -> Block:
    return [gov("rotate_issuer_key", rotate(ISSUER_A, "admin-2"))], "key_in_use"


def c_block_fails_as_a_whole(h: LedgerHarness) -> Block:
    return [issue_tx(anchor("1")), issue_tx(anchor("2", type_code=TYPE_OTHER))], \
        "type_not_granted"


CASES: list[Callable[[LedgerHarness], Block]] = [
    v for k, v in sorted(globals().items()) if k.startswith("c_") and callable(v)
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_rejection(case: Callable[[LedgerHarness], Block]) -> None:
    h = LedgerHarness()
    txs, reason = case(h)
    err = h.reject(*txs, reason=reason)
    assert err.index == len(txs) - 1  # the last tx of each bad block is the bad one
    assert reason in str(err)


_SIGNER_LEVEL = {"malformed", "wrong_chain_id", "duplicate_tx", "bad_signature",
                 "unknown_signer", "key_not_valid_at_height", "issuer_inactive",
                 "empty_batch", "batch_too_large"}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_precheck_is_the_part_of_the_check_before_the_rules(
        case: Callable[[LedgerHarness], Block]) -> None:
    # The mempool's lock-free pre-check: for a certificate tx it stops before the kind's
    # rules, and whatever it rejects, the full check rejects for the same reason.
    h = LedgerHarness()
    txs, reason = case(h)
    if len(txs) > 1:
        h.commit(*txs[:-1])  # the last tx is the bad one; the others apply before it
    tx = txs[-1]
    with pytest.raises(TxRejected) as full:
        check_tx(h.state, tx, h.ctx())
    assert full.value.reason == reason
    kind = tx.kind if isinstance(tx, Transaction) else None
    if reason in _SIGNER_LEVEL or (kind is not None and not kind.startswith("cert.")):
        with pytest.raises(TxRejected) as pre:
            precheck_tx(h.state, tx, h.ctx(), sig_cache={})
        assert pre.value.reason == reason
    else:
        precheck_tx(h.state, tx, h.ctx(), sig_cache={})  # the rules are not its job


def test_precheck_fills_the_signature_cache() -> None:
    h = LedgerHarness()
    cache: dict[bytes, bool] = {}
    good, other = issue_tx(anchor("1")), issue_tx(anchor("2"))
    forged = dataclasses.replace(good, signature=other.signature)
    precheck_tx(h.state, good, h.ctx(), sig_cache=cache)
    with pytest.raises(TxRejected):
        precheck_tx(h.state, forged, h.ctx(), sig_cache=cache)
    assert cache == {good.id: True, forged.id: False}


def test_every_reason_has_a_rejection_case() -> None:
    reasons = {case(LedgerHarness())[1] for case in CASES}
    assert reasons == REASONS


def test_malformed_rejection_names_the_field() -> None:
    h = LedgerHarness()
    tx = issue_tx(anchor("1"))
    digest = tx.body.to_value()["digest"]
    data = tx.to_bytes().replace(b"\xc4\x20" + digest, b"\xc4\x1f" + b"\x00" * 31)
    err = h.reject(data, reason="malformed")
    assert "digest" in str(err)


# --------------------------------------------------------------------------- happy paths


def test_certificate_lifecycle() -> None:
    h = LedgerHarness()
    a = anchor("2430599")
    t = issue_tx(a)
    eff = h.commit(t)
    rec = h.cert(a.id)
    assert (rec.status, rec.issued_height, rec.tx_id, rec.batch) == ("issued", 1, t.id, None)
    assert (rec.type, rec.issuer, rec.digest, rec.valid_until) == (
        TYPE_DIPLOMA, ISSUER_A, a.digest, a.valid_until)
    assert rec.signer_key_id == key("issuer-a").public.key_id
    assert eff.results[0].subjects == (a.id,) and eff.results[0].kind == "cert.issue"
    assert decode_tx_marker(h.state[tx_key(t.id)]) == (1, 0)
    h.commit(status_tx("suspend", a.id, reason="核查中"))
    assert (h.cert(a.id).status, h.cert(a.id).status_reason) == ("suspended", "核查中")
    h.commit(status_tx("reinstate", a.id))
    assert (h.cert(a.id).status, h.cert(a.id).status_height) == ("issued", 3)
    h.commit(status_tx("suspend", a.id))
    h.commit(status_tx("revoke", a.id, reason="学历造假"))
    rec = h.cert(a.id)
    assert (rec.status, rec.status_height, rec.issued_height) == ("revoked", 5, 1)


def test_batch_issue_checks_one_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = verify_signature

    def counting(tx: Transaction, pub: bytes) -> bool:
        calls.append(tx.id)
        return real(tx, pub)

    monkeypatch.setattr(state_mod, "verify_signature", counting)
    h = LedgerHarness()
    recs = [anchor(f"B{i:05d}") for i in range(200)]
    t = batch_tx(recs)
    eff = h.commit(Transaction.from_bytes(t.to_bytes()))
    assert calls == [t.id]
    assert eff.results[0].subjects == tuple(a.id for a in recs)
    for i in (0, 199):
        rec = h.cert(recs[i].id)
        assert rec.batch == (t.id, i) and rec.status == "issued"
        # the inlined batch encoding is exactly CertRecord's
        assert rec.to_bytes() == h.state[cert_key(recs[i].id)]
    # a second apply with the same cache verifies nothing
    apply_block(h.genesis.initial_state(), [t], h.ctx(1), sig_cache=h.sig_cache)
    assert calls == [t.id]


def test_later_txs_see_earlier_effects_in_the_same_block() -> None:
    h = LedgerHarness()
    a = anchor("1")
    h.commit(issue_tx(a), status_tx("suspend", a.id), status_tx("revoke", a.id))
    assert h.cert(a.id).status == "revoked"


def test_supersede() -> None:
    h = LedgerHarness()
    old = issued(h, "1")
    new = anchor("1", version=2, supersedes=old)
    eff = h.commit(supersede_tx(old, new))
    assert eff.results[0].subjects == (old, new.id)
    o, n = h.cert(old), h.cert(new.id)
    assert (o.status, o.superseded_by, o.status_height) == ("superseded", new.id, 2)
    assert (n.status, n.supersedes, n.issued_height) == ("issued", old, 2)
    assert CertificateId.parse(new.id) == CertificateId.parse(old).next_version()


def test_governance_register_grant_and_issue() -> None:
    h = LedgerHarness()
    body = {"code": UNREGISTERED, "name": "某县民政局", "types": [TYPE_OTHER],
            "public_key": key("issuer-new").public.data}
    h.commit(gov("register_issuer", body, n_admins=3))
    rec = h.issuer(UNREGISTERED)
    assert (rec.name, rec.types, rec.active, rec.keys[0].valid_from_height) == (
        "某县民政局", (TYPE_OTHER,), True, 1)
    a = anchor("1", issuer=UNREGISTERED, type_code=TYPE_OTHER)
    h.commit(Transaction.create("cert.issue", a.to_value(), key("issuer-new"), CHAIN_ID))
    assert h.cert(a.id).status == "issued"
    h.commit(gov("grant_types", {"code": UNREGISTERED, "types": [TYPE_LICENSE]}))
    assert h.issuer(UNREGISTERED).types == tuple(sorted((TYPE_OTHER, TYPE_LICENSE)))
    h.commit(gov("revoke_types", {"code": UNREGISTERED, "types": [TYPE_OTHER]}))
    assert h.issuer(UNREGISTERED).types == (TYPE_LICENSE,)
    # revoking a type stops issuance, not status changes of existing certificates
    h.reject(Transaction.create("cert.issue", anchor("2", issuer=UNREGISTERED,
             type_code=TYPE_OTHER).to_value(), key("issuer-new"), CHAIN_ID),
             reason="type_not_granted")
    h.commit(Transaction.create("cert.revoke", {"id": a.id, "reason": ""}, key("issuer-new"),
                                CHAIN_ID))
    assert h.cert(a.id).status == "revoked"


def test_set_issuer_active_round_trip() -> None:
    h = LedgerHarness()
    h.commit(gov("set_issuer_active", {"code": ISSUER_A, "active": False}))
    assert not h.issuer(ISSUER_A).active
    h.commit(gov("set_issuer_active", {"code": ISSUER_A, "active": True}))
    issued(h, "1")


def test_key_rotation_by_admins() -> None:
    h = LedgerHarness()
    before = issued(h, "1")
    h.commit(gov("rotate_issuer_key", rotate(ISSUER_A, "issuer-a-2")))  # height 2
    keys = h.issuer(ISSUER_A).keys
    assert [(k.valid_from_height, k.retired_at_height) for k in keys] == [(0, 2), (2, None)]
    h.reject(issue_tx(anchor("2")), reason="key_not_valid_at_height")
    h.commit(issue_tx(anchor("2"), signer="issuer-a-2"))
    old = h.cert(before)
    assert old.status == "issued" and old.signer_key_id == key("issuer-a").public.key_id
    h.commit(status_tx("suspend", before, signer="issuer-a-2"))  # the new key manages it
    assert h.cert(before).status == "suspended"


def test_key_rotation_by_the_issuer_itself() -> None:
    h = LedgerHarness()
    body = {**rotate(ISSUER_A, "issuer-a-2"), "approvals": []}
    h.commit(Transaction.create("gov.rotate_issuer_key", body, key("issuer-a"), CHAIN_ID))
    h.reject(issue_tx(anchor("1")), reason="key_not_valid_at_height")
    # the retired key can no longer rotate either
    again = {**rotate(ISSUER_A, "issuer-a-3"), "approvals": []}
    h.reject(Transaction.create("gov.rotate_issuer_key", again, key("issuer-a"), CHAIN_ID),
             reason="key_not_valid_at_height")
    h.commit(Transaction.create("gov.rotate_issuer_key", again, key("issuer-a-2"), CHAIN_ID))
    assert [k.retired_at_height for k in h.issuer(ISSUER_A).keys] == [1, 2, None]


def test_supervision() -> None:
    h = LedgerHarness()
    b_cert = issued(h, "1", issuer=ISSUER_B, type_code=TYPE_LICENSE)
    h.commit(status_tx("suspend", b_cert, signer="supervisor"))  # granted at genesis
    assert h.cert(b_cert).status == "suspended"
    a_cert = issued(h, "2")
    h.reject(status_tx("revoke", a_cert, signer="supervisor"), reason="not_authorized")
    h.commit(gov("grant_supervision", {"supervisor": SUPERVISOR, "supervised": ISSUER_A}))
    assert h.issuer(SUPERVISOR).supervises == tuple(sorted((ISSUER_A, ISSUER_B)))
    h.commit(status_tx("revoke", a_cert, signer="supervisor", reason="上级撤销"))
    assert h.cert(a_cert).status == "revoked"


def test_validator_set_change_takes_effect_two_heights_later() -> None:
    h = LedgerHarness()
    old, new = validator_set(), validator_set(["val-0", "val-1", "val-2", "val-4"])
    eff = h.commit(gov("set_validators", validators_body(["val-0", "val-1", "val-2", "val-4"])))
    assert (eff.validators, eff.next_validators) == (old, old)  # height 1
    rec = ValidatorsRecord.from_bytes(h.state[VALIDATORS_KEY])
    assert (rec.current, rec.pending, rec.pending_height) == (old, new, 3)
    eff = h.commit()  # height 2: the header commits to the new set for height 3
    assert (eff.validators, eff.next_validators) == (old, new)
    assert validators_at(h.state, 3) == new
    eff = h.commit()  # height 3
    assert (eff.validators, eff.next_validators) == (new, new)
    assert ValidatorsRecord.from_bytes(h.state[VALIDATORS_KEY]) == ValidatorsRecord(new)
    h.commit(gov("set_validators", validators_body(["val-0"])))  # nothing pending now


def test_mempool_path_apply_tx_and_sig_cache() -> None:
    h = LedgerHarness()
    cache: dict[bytes, bool] = {}
    pool = Overlay(h.state)
    a = anchor("1")
    for t in (issue_tx(a), status_tx("suspend", a.id)):
        eff = apply_tx(pool, t, h.ctx(), sig_cache=cache)
        pool.updates.update(eff.updates)
        assert cache[t.id] is True
    assert CertRecord.from_bytes(pool.get(cert_key(a.id)) or b"").status == "suspended"
    assert cert_key(a.id) not in h.state  # the committed view is untouched
    with pytest.raises(TxRejected) as info:
        check_tx(pool, status_tx("reinstate", anchor("2").id), h.ctx())
    assert info.value.reason == "unknown_certificate"
    # a cached False is trusted: no re-verification
    t = issue_tx(anchor("3"))
    with pytest.raises(TxRejected) as info:
        check_tx(h.state, t, h.ctx(), sig_cache={t.id: False})
    assert info.value.reason == "bad_signature"


# --------------------------------------------------------------------------- identifiers


ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.ab "


@settings(max_examples=400, deadline=None)
@given(serial=st.text("0123456789ABCDEFXYZ", min_size=1, max_size=42),
       version=st.integers(0, 1000), edits=st.lists(
           st.tuples(st.integers(0, 200), st.sampled_from(ID_CHARS)), max_size=2),
       issuer=st.sampled_from([ISSUER_A, ISSUER_B, "340100"]),
       type_code=st.sampled_from([TYPE_DIPLOMA, TYPE_LICENSE]))
def test_fast_identifier_check_agrees_with_the_parser(
    serial: str, version: int, edits: list[tuple[int, str]], issuer: str, type_code: str
) -> None:
    try:
        text = str(CertificateId.build(type_code, issuer, serial, version))
    except Exception:
        text = f"1.2.156.3005.2.{type_code}.{issuer}.{serial}.{version:03d}.0"
    for pos, ch in edits:
        pos %= len(text) + 1
        text = text[:pos] + ch + text[pos + 1:]
    try:
        cid = CertificateId.parse(text)
        expected = str(cid) == text and (cid.type_code, cid.issuer_code) == (type_code, ISSUER_A)
    except Exception:
        expected = False
    assert id_ok(text, type_code, ISSUER_A) == expected
    assert (state_cert.id_problem(text, type_code, ISSUER_A) is None) == expected


# --------------------------------------------------------------------------- records


def test_cert_record_round_trip_and_size() -> None:
    h = LedgerHarness()
    a = anchor("2430599")
    h.commit(issue_tx(a))
    data = h.state[cert_key(a.id)]
    assert len(data) < 200
    rec = CertRecord.from_bytes(data)
    assert rec.to_bytes() == data
    changed = rec.with_status("superseded", 9, None, superseded_by=a.id)
    assert CertRecord.from_bytes(changed.to_bytes()) == changed
    for bad in (b"", b"\x90", data[:-1], data + b"\x00", b"\x9d" + b"\xc0" * 13):
        with pytest.raises(RecordError):
            CertRecord.from_bytes(bad)


def test_other_records_round_trip_and_reject_garbage() -> None:
    state = make_genesis().initial_state()
    issuer = IssuerRecord.from_bytes(state[b"issuer:" + ISSUER_B.encode()])
    assert issuer.to_bytes() == state[b"issuer:" + ISSUER_B.encode()]
    assert AdminsRecord.from_bytes(state[ADMINS_KEY]).threshold == 2
    assert ValidatorsRecord.from_bytes(state[VALIDATORS_KEY]).current == validator_set()
    for cls in (IssuerRecord, AdminsRecord, ValidatorsRecord):
        with pytest.raises(RecordError):
            cls.from_bytes(b"\x80")


# --------------------------------------------------------------------------- genesis


def test_genesis_file_round_trip(tmp_path: Path) -> None:
    g = make_genesis()
    path = tmp_path / "genesis.json"
    g.write(path)
    back = Genesis.from_file(path)
    assert back == g and back.hash == g.hash
    assert back.initial_state() == g.initial_state()
    assert state_root(back.initial_state()) == state_root(g.initial_state())


def _genesis_json(**changes: Any) -> str:
    obj = make_genesis().to_json()
    obj.update(changes)
    return json.dumps(obj)


@pytest.mark.parametrize(("change", "message"), [
    ({"threshold": 4}, "threshold 4"),
    ({"threshold": 0}, "threshold 0"),
    ({"admins": ["zz"]}, r"admins\[0\]: public key is not valid hex"),
    ({"admins": []}, "at least one admin"),
    ({"chain_id": ""}, "chain_id"),
    ({"genesis_time": -1}, "genesis_time"),
    ({"extra": 1}, "unknown fields"),
    ({"validators": []}, "validator"),
])
def test_genesis_errors_name_the_problem(change: dict[str, Any], message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        Genesis.loads(_genesis_json(**change))


def test_genesis_issuer_errors() -> None:
    issuers = make_genesis().to_json()["issuers"]
    with pytest.raises(GenesisError, match="duplicate issuer"):
        Genesis.loads(_genesis_json(issuers=[issuers[0], issuers[0]]))
    bad_code = dict(issuers[0], code="abc")
    with pytest.raises(GenesisError, match="issuer 'abc'"):
        Genesis.loads(_genesis_json(issuers=[bad_code]))
    shared_key = dict(issuers[1], public_key=issuers[0]["public_key"])
    with pytest.raises(GenesisError, match="already used"):
        Genesis.loads(_genesis_json(issuers=[issuers[0], shared_key]))
    with pytest.raises(GenesisError, match="supervises"):
        Genesis.loads(_genesis_json(issuers=[issuers[2]]))
    with pytest.raises(GenesisError, match="not valid JSON"):
        Genesis.loads("{")
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.from_file("/nonexistent/genesis.json")


def test_state_unchanged_after_rejection_is_by_value() -> None:
    h = LedgerHarness()
    snapshot = dict(h.state)
    with pytest.raises(TxRejected) as info:
        apply_block(h.state, [issue_tx(anchor("1")), b"junk"], (CHAIN_ID, 1, GENESIS_TIME))
    assert (info.value.reason, info.value.index) == ("malformed", 1)
    assert h.state == snapshot
