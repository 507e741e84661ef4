"""A batch's identifiers checked in C (ledger/_idcheck.c) give the Python rule's verdict
(``state_cert.id_ok``) on every identifier, and a batch the C path does not take is still
checked record by record, naming the record at fault."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ledger.state_cert as state_cert
from certificates.identifiers import ISO7064_ALPHABET, ROOT_CODE
from ledger.errors import TxRejected
from ledger.tx import Anchor, IssueBatchBody
from tests.ledger_fixtures import (
    ISSUER_A,
    ISSUER_B,
    TYPE_DIPLOMA,
    TYPE_LICENSE,
    TYPE_OTHER,
    LedgerHarness,
    anchor,
    cert_id,
)

CODES = [(TYPE_DIPLOMA, ISSUER_A), (TYPE_LICENSE, ISSUER_A), (TYPE_OTHER, ISSUER_B)]
# Characters a damaged or hostile id might carry: every class the rule tells apart.
ODD = "0123456789ABCZ.az-_ \x00\x7f\u00e9\u4e2d"


def c_verdict(cid: str, type_code: str, issuer: str) -> bool:
    _, state, _ = state_cert._id_matcher(type_code, issuer)
    prefix = f"{ROOT_CODE}.{type_code}.{issuer}.".encode("ascii")
    return bool(state_cert._idcheck.first_invalid([cid], prefix, state) == -1)


def test_the_id_check_is_built() -> None:
    # Not skipped anywhere: scripts/test.sh installs with a compiler at hand.
    assert state_cert._idcheck is not None, "ledger/_idcheck.c was not built (see setup.py)"


@pytest.mark.parametrize(("type_code", "issuer"), CODES)
def test_every_one_character_change_gets_the_python_verdict(type_code: str,
                                                            issuer: str) -> None:
    for serial, version in (("B000000001", 1), ("Z", 999), ("9" * 40, 10)):
        good = cert_id(serial, issuer, type_code, version)
        assert c_verdict(good, type_code, issuer) and state_cert.id_ok(good, type_code, issuer)
        verdicts = set()
        for i in range(len(good) + 1):
            for ch in ODD:
                for bad in (good[:i] + ch + good[i + 1:], good[:i] + ch + good[i:],
                            good[:i] + good[i + 1:]):
                    want = state_cert.id_ok(bad, type_code, issuer)
                    assert c_verdict(bad, type_code, issuer) == want, bad
                    verdicts.add(want)
        assert verdicts == {True, False}  # some changes keep it valid (the same id)


@settings(max_examples=300, deadline=None)
@given(codes=st.sampled_from(CODES),
       serial=st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.a", min_size=0, max_size=43),
       version=st.text("0123456789A.", min_size=0, max_size=4),
       check=st.sampled_from([None, *"0AZ.a"]))
@example(codes=CODES[0], serial="B1", version="000", check=None)
@example(codes=CODES[0], serial="X" * 41, version="001", check=None)
def test_generated_ids_get_the_python_verdict(codes: tuple[str, str], serial: str,
                                              version: str, check: str | None) -> None:
    type_code, issuer = codes
    head = f"{ROOT_CODE}.{type_code}.{issuer}.{serial}.{version}."
    if check is None:  # the check character that makes it valid, if any does
        check = next((c for c in ISO7064_ALPHABET
                      if state_cert.id_ok(head + c, type_code, issuer)), "0")
    cid = head + check
    assert c_verdict(cid, type_code, issuer) == state_cert.id_ok(cid, type_code, issuer)


def test_the_first_invalid_id_is_found_by_its_index() -> None:
    _, state, _ = state_cert._id_matcher(TYPE_DIPLOMA, ISSUER_A)
    prefix = f"{ROOT_CODE}.{TYPE_DIPLOMA}.{ISSUER_A}.".encode("ascii")
    ids = [cert_id(f"S{i}") for i in range(6)]
    first = state_cert._idcheck.first_invalid
    assert first(ids, prefix, state) == -1
    assert first(tuple(ids), prefix, state) == -1
    assert first([], prefix, state) == -1
    for bad in (ids[4][:-1] + "?", b"bytes", None, ids[4] + "\u00e9"):
        assert first([*ids[:4], bad, ids[5]], prefix, state) == 4
    with pytest.raises(ValueError, match=r"1\.\.36"):
        first(ids, prefix, 0)
    with pytest.raises(TypeError):
        first(ids, "not bytes", state)


def body(records: list[Anchor]) -> IssueBatchBody:
    return IssueBatchBody(ISSUER_A, tuple(records))


def test_a_valid_batch_of_one_type_takes_the_c_path_with_the_same_keys() -> None:
    h = LedgerHarness()
    issuer = h.issuer(ISSUER_A)
    records = [anchor(f"N{i}") for i in range(50)]
    native = state_cert._batch_keys_native(tuple(records), issuer)
    assert native is not None
    assert native == state_cert._batch_keys_checked(body(records), issuer)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda a: a._replace(id=a.id[:-1] + ("0" if a.id[-1] != "0" else "1")), "bad_identifier"),
    (lambda a: a._replace(id=a.id + "\u00e9"), "bad_identifier"),
    (lambda a: a._replace(issuer=ISSUER_B), "issuer_mismatch"),
    (lambda a: a._replace(type=TYPE_OTHER, id=cert_id("N7", ISSUER_A, TYPE_OTHER)),
     "type_not_granted"),
    (lambda a: a._replace(valid_until=a.valid_from - 1), "bad_validity"),
    (lambda a: a._replace(supersedes=cert_id("OLD")), "supersede_mismatch"),
])
def test_a_batch_with_one_bad_record_is_named_by_the_python_path(
        change: Callable[[Anchor], Anchor], reason: str) -> None:
    h = LedgerHarness()
    issuer = h.issuer(ISSUER_A)
    records = [anchor(f"N{i}") for i in range(12)]
    records[7] = change(records[7])
    assert state_cert._batch_keys_native(tuple(records), issuer) is None
    with pytest.raises(TxRejected, match=r"records\[7\]") as err:
        state_cert._batch_keys(body(records), issuer)
    assert err.value.reason == reason


def test_a_batch_of_two_granted_types_is_accepted_by_the_python_path() -> None:
    h = LedgerHarness()
    issuer = h.issuer(ISSUER_A)
    records = [anchor("D1"), anchor("L1", type_code=TYPE_LICENSE)]
    assert state_cert._batch_keys_native(tuple(records), issuer) is None
    assert state_cert._batch_keys(body(records), issuer) == tuple(
        state_cert.cert_key(a.id) for a in records)
