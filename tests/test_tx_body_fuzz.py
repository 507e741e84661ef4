"""A signer's odd transaction is refused with a reason, never with a crash.

Every kind of transaction (``sample_txs``) has its body changed at one place - a value
of another type, a deleted or added key, a list emptied or grown - and is then signed
again by the key that may sign it (admins re-approve governance bodies), so the change
gets past the signature into the rules. Building it may fail only with
``MalformedTxError``; applying it (block path) and checking it (mempool path) may fail
only with ``TxRejected``, the same reason both ways, and leave the state as it was.
The same changes made to the signed bytes without signing again must be refused by
``Transaction.from_bytes`` with ``MalformedTxError`` or fail their signature check.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.errors import CertificatesError
from ledger.errors import MalformedTxError, TxRejected
from ledger.state import apply_block, check_tx
from ledger.tx import Transaction, gov_tx
from tests.fuzzing import at, places, values
from tests.ledger_fixtures import (
    CHAIN_ID,
    LedgerHarness,
    admins,
    anchor,
    issue_tx,
    key,
    sample_txs,
    state_root,
)

SAMPLES = sample_txs()
KINDS = sorted(SAMPLES)
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

VALUES = values(binary=True, text_size=30, max_leaves=6)


def _like(old: Any) -> st.SearchStrategy[Any]:
    """Values of ``old``'s type: edge cases, near neighbours, and edits of it."""
    if isinstance(old, bool):
        return st.just(not old)
    if isinstance(old, int):
        return st.sampled_from([0, -1, 1, old - 1, old + 1, 2**63 - 1, -(2**63)]) | st.integers(
            -(2**63), 2**63 - 1)
    if isinstance(old, str):
        edits = st.tuples(st.integers(0, max(0, len(old))), st.text(max_size=2)).map(
            lambda e: old[:e[0]] + e[1] + old[e[0] + 1:])
        return edits | st.text(max_size=40) | st.just(old.lower()) | st.just(old + old)
    if isinstance(old, bytes):
        return st.binary(min_size=len(old), max_size=len(old)) | st.binary(max_size=80)
    return VALUES


def _change(value: Any, data: st.DataObject) -> Any:
    value = copy.deepcopy(value)
    parent, last = at(value, data.draw(st.sampled_from(places(value)[1:]), label="place"))
    old = parent[last]
    how = data.draw(st.sampled_from(["same type"] * 4 + ["replace", "delete", "add", "grow"]),
                    label="how")
    if how == "same type":  # what the parser accepts, so the rules must judge it
        parent[last] = data.draw(_like(old), label="like")
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=12), label="key")] = data.draw(VALUES, label="new")
    elif how == "grow" and isinstance(old, list) and old:
        parent[last] = old + old  # a repeated record, approval, type or validator
    else:
        parent[last] = data.draw(VALUES, label="value")
    return value


@pytest.fixture(scope="module")
def harness() -> LedgerHarness:
    # The certificate the status and supersede samples name exists: their rules run.
    h = LedgerHarness()
    h.commit(issue_tx(anchor("2430599")))
    return h


def _resign(kind: str, body: Any) -> Transaction:
    if kind.startswith("gov."):
        return gov_tx(kind, body, admins(2), CHAIN_ID)
    return Transaction.create(kind, body, key("issuer-a"), CHAIN_ID)


@SETTINGS
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_a_changed_and_re_signed_body_is_refused_with_a_reason(
        harness: LedgerHarness, kind: str, data: st.DataObject) -> None:
    body = SAMPLES[kind].body.to_value()
    body.pop("approvals", None)  # gov_tx approves the changed body afresh
    try:
        tx = _resign(kind, _change(body, data))
    except (MalformedTxError, CertificatesError):
        event("refused while building")
        return  # refused while building: the parser named the field
    before = state_root(harness.state)
    reasons = []
    for run in (lambda: apply_block(harness.state, [tx], harness.ctx()),
                lambda: check_tx(harness.state, tx, harness.ctx())):
        try:
            run()
        except TxRejected as exc:
            reasons.append(exc.reason)
    assert len(reasons) in (0, 2) and len(set(reasons)) <= 1, reasons  # both paths agree
    event(f"applied: {reasons[0] if reasons else 'accepted'}")
    assert state_root(harness.state) == before  # apply_block only returns its effects


@SETTINGS
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_a_changed_signed_tx_is_malformed_or_fails_its_signature(
        harness: LedgerHarness, kind: str, data: st.DataObject) -> None:
    original = SAMPLES[kind]
    raw = canonical.encode(_change(canonical.decode(original.to_bytes()), data))
    try:
        tx = Transaction.from_bytes(raw)
    except MalformedTxError:
        event("malformed")
        return
    event("decoded")
    if tx == original:
        return  # the change was undone by the encoding (e.g. a key re-added as it was)
    with pytest.raises(TxRejected):
        check_tx(harness.state, tx, harness.ctx())
