"""A batch's records decoded in C (ledger/_anchors.c) give exactly the general path's
result: the same transaction, or the general path's own error."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.tx as tx_module

# Not skipped anywhere: scripts/test.sh installs with a compiler at hand, so a missing
# module is a broken build, and this import fails the file.
from ledger import _anchors as anchors_c
from ledger.errors import MalformedTxError
from ledger.tx import MAX_CODE_LEN, MAX_ID_LEN, Anchor, Transaction


def _record(i: int = 0, **change: Any) -> dict[str, Any]:
    r = {"digest": bytes([i % 256]) * 32, "id": f"1.2.156.3005.2.T.I.{i:06d}.001.X",
         "issuer": "I", "supersedes": None, "type": "T", "valid_from": 1_735_689_600,
         "valid_until": None}
    r.update(change)
    return r


def _batch(records: list[Any], issuer: Any = "I", **change: Any) -> bytes:
    env = {"body": {"issuer": issuer, "records": records}, "chain_id": "chain",
           "kind": "cert.issue_batch", "nonce": b"\x01" * 16, "signature": b"\x02" * 64,
           "signer_key_id": b"\x03" * 16, "v": 1}
    env.update(change)
    return bytes(msgpack.packb(env, use_bin_type=True))


def _general(data: bytes) -> Any:
    saved = tx_module._anchors
    tx_module._anchors = None  # type: ignore[assignment]
    try:
        return _outcome(data)
    finally:
        tx_module._anchors = saved


def _outcome(data: bytes) -> Any:
    try:
        tx = Transaction.from_bytes(data)
    except MalformedTxError as exc:
        return "refused", str(exc)
    return ("ok", tx.v, tx.chain_id, tx.kind, tx.body, tx.signer_key_id, tx.nonce,
            tx.signature, tx.body_bytes, tx.to_bytes(), tx.id)


def test_a_common_batch_is_decoded_in_c_as_the_general_path_decodes_it() -> None:
    data = _batch([_record(i, valid_until=2_000_000_000 + i) for i in range(40)]
                  + [_record(99, supersedes="1.2.156.3005.2.T.I.000001.001.X")])
    parsed = anchors_c.load_batch(data, len(tx_module._BATCH_HEAD), Anchor, MAX_ID_LEN,
                                  MAX_CODE_LEN)
    assert parsed is not None  # the C path is the one taken
    issuer, records, end = parsed
    assert issuer == "I" and len(records) == 41 and type(records[0]) is Anchor
    assert end == data.index(b"\xa8chain_id")
    assert Transaction._batch_from_bytes(data) is not None
    assert _outcome(data) == _general(data)
    assert _outcome(data)[0] == "ok"


# Values on both sides of each form's edges: string lengths at the fixstr/str8 boundary
# and the limits, integers at each width's boundary, non-ASCII text, wrong types.
texts = (st.sampled_from(["", "A", "x" * 31, "x" * 32, "é", "e\u0301", "张三"])
         | st.integers(1, 200).map(lambda n: "Z" * n)
         | st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=40))
uints = st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                         -1, -200])
records = st.builds(
    lambda i, change: _record(i, **change),
    st.integers(0, 1000),
    st.fixed_dictionaries({}, optional={
        "id": texts, "issuer": texts, "type": texts, "supersedes": st.none() | texts,
        "valid_from": uints, "valid_until": st.none() | uints,
        "digest": st.sampled_from([b"\x00" * 31, b"\x00" * 33, "digest", None]),
    }),
)


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    data = bytearray(_batch(draw(st.lists(records, max_size=20)),
                            issuer=draw(st.sampled_from(["I", "", "é", "x" * 65, 7]))))
    for _ in range(draw(st.integers(0, 2))):  # and damage, anywhere
        where = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if how == "insert":
            data.insert(where, byte)
        elif how == "flip":
            data[where] ^= byte or 1
        else:
            del data[where]
    return bytes(data)


@settings(max_examples=500)
@given(batches())
def test_c_and_the_general_path_agree_on_any_batch(data: bytes) -> None:
    assert _outcome(data) == _general(data)


RECORDS = [_record(1), _record(2)]
GOOD = _batch(RECORDS)

# Each breaks the canonical form (or the common case) in one place; C must decline and
# leave the verdict to the general path.
UNUSUAL = {
    "a wide integer": GOOD.replace(b"\xaavalid_from\xce", b"\xaavalid_from\xcf\x00\x00\x00\x00",
                                   1),
    "a wide digest header": GOOD.replace(b"\xa6digest\xc4\x20", b"\xa6digest\xc5\x00\x20", 1),
    "a wide id header": GOOD.replace(b"\xa2id\xbf", b"\xa2id\xd9\x1f", 1),
    "a wide array header": GOOD.replace(b"\xa7records\x92", b"\xa7records\xdc\x00\x02", 1),
    "keys out of order": GOOD.replace(b"\xa4type\xa1T\xaavalid_from",
                                      b"\xaavalid_from\xa1T\xa4type", 1),
    "a non-ASCII type": _batch([_record(1, type="é")]),
    "another kind": _batch(RECORDS, kind="cert.issue"),
    "a wide integer after the body": GOOD[:-1] + b"\xcc\x01",  # "v": 1 as a uint 8
    "a byte after the body": GOOD + b"\x00",
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_unusual_input_is_left_to_the_general_path(case: str) -> None:
    data = UNUSUAL[case]
    assert data != GOOD and GOOD.endswith(b"\xa1v\x01")
    assert Transaction._batch_from_bytes(data) is None
    assert _outcome(data) == _general(data)


def test_every_truncation_is_declined_without_reading_past_the_end() -> None:
    assert Transaction._batch_from_bytes(GOOD) is not None
    for n in range(len(tx_module._BATCH_HEAD), len(GOOD)):
        cut = GOOD[:n]
        assert anchors_c.load_batch(cut, len(tx_module._BATCH_HEAD), Anchor, MAX_ID_LEN,
                                    MAX_CODE_LEN) is None or n >= GOOD.index(b"\xa8chain_id")
        assert Transaction._batch_from_bytes(cut) is None


def test_a_record_count_the_input_cannot_hold_is_declined() -> None:
    head = GOOD[:GOOD.index(b"\xa7records") + 8]
    huge = head + b"\xdd\x7f\xff\xff\xff" + GOOD[GOOD.index(b"\xa7records") + 9:]
    assert anchors_c.load_batch(huge, len(tx_module._BATCH_HEAD), Anchor, MAX_ID_LEN,
                                MAX_CODE_LEN) is None
