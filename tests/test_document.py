"""Documents, salted leaf commitments, the certificate digest and the wallet form."""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.document import (
    HOLDER,
    MAX_FIELDS,
    META,
    CommittedDocument,
    Document,
    DocumentMeta,
    FieldValue,
    commit,
    leaf_hash,
)
from certificates.errors import DisclosureError, DocumentError
from certificates.hashing import sm3
from certificates.identifiers import CertificateId
from certificates.merkle import MerkleTree, root_from_leaf_hashes

try:
    from tests.vectors import load_vectors
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from vectors import load_vectors  # type: ignore[no-redef]

VECTOR_ID: str = load_vectors()["certificate_identifiers"]["valid"][0]
CID = CertificateId.parse(VECTOR_ID)
OTHER_ID = str(CertificateId.build(CID.type_code, CID.issuer_code, "2430600", 1))
FAST = settings(max_examples=60, deadline=None)

FIELDS: dict[str, FieldValue] = {
    "school": "清华大学",
    "degree": "工学学士",
    "major": "计算机科学与技术",
    "graduated": True,
    "year": 2012,
    "photo_sm3": bytes(range(32)),
}


def make_document(**overrides: Any) -> Document:
    kwargs: dict[str, Any] = {
        "id": VECTOR_ID,
        "type": CID.type_code,
        "issuer": CID.issuer_code,
        "holder": "张三 110101199003071234",
        "fields": FIELDS,
        "issued_at": 1_341_100_800,
        "valid_from": 1_341_100_800,
        "valid_until": None,
        "supersedes": None,
    }
    kwargs.update(overrides)
    return Document(**kwargs)


def counting_rng() -> Callable[[int], bytes]:
    """Deterministic, distinct salts: reproducible digests in tests."""
    state = {"n": 0}

    def rng(n: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(n, "big")

    return rng


# --------------------------------------------------------------------------- documents


def test_document_normalises_and_exposes_a_sorted_read_only_view() -> None:
    doc = make_document(id=f"  {VECTOR_ID}\n")
    assert doc.id == VECTOR_ID
    assert list(doc.fields) == sorted(FIELDS)
    assert doc.fields["year"] == 2012 and dict(doc.fields) == FIELDS
    with pytest.raises(TypeError):
        doc.fields["year"] = 2013  # type: ignore[index]
    assert hash(doc) == hash(make_document())
    assert doc == make_document()
    assert doc.meta == DocumentMeta(
        VECTOR_ID, CID.type_code, CID.issuer_code, 1_341_100_800, 1_341_100_800
    )


def test_field_equality_is_type_exact() -> None:
    as_bool = make_document(fields={"flag": True})
    as_int = make_document(fields={"flag": 1})
    assert as_bool != as_int
    assert commit(as_bool, counting_rng()).digest != commit(as_int, counting_rng()).digest


def test_nfc_and_nfd_inputs_are_the_same_document_and_digest() -> None:
    text = "Zoë Ångström 张三"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    a = make_document(holder=text, fields={"name": text})
    b = make_document(holder=nfd, fields={"name": nfd})
    assert a == b
    assert a.holder == unicodedata.normalize("NFC", text)
    assert commit(a, counting_rng()).digest == commit(b, counting_rng()).digest


BAD_DOCUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"id": VECTOR_ID[:-1] + "G"}, "check character"),
    ({"id": 5}, "id must be a string"),
    ({"type": "11100000000013338W033"}, "does not match the type code"),
    ({"issuer": "11370800MB28559184"}, "does not match the issuer code"),
    ({"holder": ""}, "holder is empty"),
    ({"holder": "  "}, "holder is empty"),
    ({"holder": None}, "holder must be a string"),
    ({"fields": {}}, "at least one field"),
    ({"fields": [("a", 1)]}, "fields must be a mapping"),
    ({"fields": {"$holder": "x"}}, "is reserved"),
    ({"fields": {"Name": "x"}}, "is invalid"),
    ({"fields": {"1st": "x"}}, "is invalid"),
    ({"fields": {"a" * 65: "x"}}, "is invalid"),
    ({"fields": {"a-b": "x"}}, "is invalid"),
    ({"fields": {"ok": 1.5}}, "type float is not allowed"),
    ({"fields": {"ok": None}}, "type NoneType is not allowed"),
    ({"fields": {"ok": ["x"]}}, "type list is not allowed"),
    ({"fields": {"ok": "字" * 1366}}, "limit is 4096"),
    ({"fields": {"ok": b"x" * 4097}}, "limit is 4096"),
    ({"fields": {"ok": 2**64}}, "outside the 64-bit range"),
    ({"fields": {"ok": "\ud800"}}, "not valid Unicode"),
    ({"fields": {f"f{i}": i for i in range(MAX_FIELDS + 1)}}, f"limit is {MAX_FIELDS}"),
    ({"issued_at": "2012"}, "issued_at must be an integer"),
    ({"issued_at": True}, "issued_at must be an integer"),
    ({"valid_from": 1.0}, "valid_from must be an integer"),
    ({"valid_until": 1_341_100_799}, "is before valid_from"),
    ({"valid_until": 2**63}, "outside the signed 64-bit range"),
    ({"supersedes": VECTOR_ID}, "names the certificate itself"),
    ({"supersedes": "1.2.3"}, "supersedes:"),
    ({"supersedes": 7}, "supersedes must be a string"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_DOCUMENTS)
def test_malformed_document_is_rejected_with_a_named_problem(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(DocumentError, match=None) as info:
        make_document(**overrides)
    assert message in str(info.value)


def test_limits_are_inclusive() -> None:
    make_document(fields={"a" * 64: "字" * 1365 + "x", "b": b"x" * 4096, "c": -(2**63)})
    make_document(valid_until=1_341_100_800, supersedes=OTHER_ID, issued_at=-1)


# --------------------------------------------------------------------------- JSON


def test_document_json_round_trips_through_text() -> None:
    doc = make_document(valid_until=2_000_000_000, supersedes=OTHER_ID)
    d = doc.to_json_dict()
    assert d["fields"]["photo_sm3"] == {"b64": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
    assert Document.from_json_dict(json.loads(json.dumps(d))) == doc


def _json_with(path: list[str], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(make_document().to_json_dict())
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


BAD_JSON: list[tuple[list[str], Any, str | None]] = [
    (["holder"], KeyError, "missing key 'holder'"),
    (["extra"], 1, "unexpected key 'extra'"),
    (["issued_at"], "1341100800", "document.issued_at: expected an integer, got str"),
    (["issued_at"], 1341100800.0, "expected an integer, got float"),
    (["valid_from"], True, "expected an integer, got bool"),
    (["valid_until"], "never", "document.valid_until: expected an integer"),
    (["supersedes"], 1, "document.supersedes: expected a string"),
    (["id"], None, "document.id: expected a string"),
    (["fields"], [], "document.fields: expected an object"),
    (["fields", "year"], 1.5, "document.fields.year: expected a string, integer"),
    (["fields", "year"], None, "document.fields.year"),
    (["fields", "photo_sm3"], {"b64": "AAE="}, None),  # valid: 2 bytes
    (["fields", "photo_sm3"], {"b64": "AAF="}, "padded standard base64"),
    (["fields", "photo_sm3"], {"b64": "AA"}, "padded standard base64"),
    (["fields", "photo_sm3"], {"b64": "A A="}, "padded standard base64"),
    (["fields", "photo_sm3"], {"b64": 5}, "padded standard base64"),
    (["fields", "photo_sm3"], {"b64": "AAE=", "x": 1}, "unexpected key 'x'"),
    (["fields", "photo_sm3"], {"hex": "00"}, "missing key 'b64'"),
    (["fields", "$meta"], "x", "is reserved"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_JSON)
def test_document_json_is_parsed_strictly(path: list[str], value: Any, message: str | None) -> None:
    d = _json_with(path, value)
    if message is None:
        Document.from_json_dict(d)
        return
    with pytest.raises(DocumentError) as info:
        Document.from_json_dict(d)
    assert message in str(info.value)


@pytest.mark.parametrize("obj", [None, [], "document", 3])
def test_document_json_must_be_an_object(obj: object) -> None:
    with pytest.raises(DocumentError, match="expected an object"):
        Document.from_json_dict(obj)


# --------------------------------------------------------------------------- commitment


def test_leaves_are_ordered_by_name_bytes_with_reserved_leaves_first() -> None:
    committed = commit(make_document())
    assert committed.leaf_names() == (HOLDER, META, *sorted(FIELDS))
    assert len(committed.leaf_hashes()) == len(FIELDS) + 2


def test_leaf_hash_and_digest_follow_the_spec_bytes() -> None:
    doc = make_document()
    committed = commit(doc, counting_rng())
    values = doc.leaf_values()
    for name, h in zip(committed.leaf_names(), committed.leaf_hashes(), strict=True):
        salt = committed.salts[name]
        assert h == sm3(b"\x00" + canonical.encode([name, salt, values[name]]))
        assert h == leaf_hash(name, salt, values[name])
    assert values[META] == {
        "id": VECTOR_ID,
        "type": CID.type_code,
        "issuer": CID.issuer_code,
        "issued_at": 1_341_100_800,
        "valid_from": 1_341_100_800,
        "valid_until": None,
        "supersedes": None,
    }
    assert values[HOLDER] == doc.holder
    assert committed.digest == root_from_leaf_hashes(committed.leaf_hashes())
    assert committed.digest == MerkleTree(committed.leaf_hashes()).root
    assert len(committed.digest) == 32


def test_salts_are_fresh_per_leaf_and_per_commit() -> None:
    doc = make_document()
    a, b = commit(doc), commit(doc)
    assert all(len(s) == 16 for s in a.salts.values())
    assert len(set(a.salts.values())) == len(a.salts)
    assert not set(a.salts.values()) & set(b.salts.values())
    assert a.digest != b.digest
    assert commit(doc, counting_rng()).digest == commit(doc, counting_rng()).digest


def test_every_value_is_bound_into_the_digest() -> None:
    base = commit(make_document(), counting_rng()).digest
    variants = [
        make_document(holder="李四"),
        make_document(fields={**FIELDS, "year": 2013}),
        make_document(fields={**FIELDS, "extra": ""}),
        make_document(valid_until=2_000_000_000),
        make_document(issued_at=0),
        make_document(supersedes=OTHER_ID),
    ]
    digests = {commit(v, counting_rng()).digest for v in variants}
    assert base not in digests and len(digests) == len(variants)


def test_committed_document_checks_its_salts() -> None:
    committed = commit(make_document())
    salts = dict(committed.salts)
    with pytest.raises(DisclosureError, match="missing salt for 'year'"):
        CommittedDocument(committed.document, {k: v for k, v in salts.items() if k != "year"})
    with pytest.raises(DisclosureError, match="unexpected salt for 'nope'"):
        CommittedDocument(committed.document, {**salts, "nope": b"\0" * 16})
    with pytest.raises(DisclosureError, match="salt for '\\$meta' must be 16 bytes"):
        CommittedDocument(committed.document, {**salts, META: b"\0" * 15})
    with pytest.raises(DisclosureError, match="must be 16 bytes"):
        commit(make_document(), lambda n: b"\0" * (n + 1))
    assert CommittedDocument(committed.document, salts) == committed


def test_anchor_record_carries_no_personal_data() -> None:
    doc = make_document(valid_until=2_000_000_000, supersedes=OTHER_ID)
    committed = commit(doc)
    record = committed.anchor_record()
    assert (record.id, record.type, record.issuer, record.digest) == (
        doc.id,
        doc.type,
        doc.issuer,
        committed.digest,
    )
    assert (record.valid_from, record.valid_until, record.supersedes) == (
        doc.valid_from,
        2_000_000_000,
        OTHER_ID,
    )
    published = record.to_bytes() + json.dumps(record.to_json_dict()).encode()
    for secret in (doc.holder, "清华大学", "计算机科学与技术"):
        assert secret.encode() not in published


# --------------------------------------------------------------------------- wallet


def test_wallet_round_trips_through_json_text() -> None:
    committed = commit(make_document())
    wallet = committed.to_wallet_dict()
    assert wallet["format"] == "certledger/wallet/v1"
    assert wallet["digest"] == committed.digest.hex()
    assert set(wallet["salts"]) == set(committed.leaf_names())
    back = CommittedDocument.from_wallet_dict(json.loads(json.dumps(wallet)))
    assert back == committed and back.digest == committed.digest


def _wallet_with(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    wallet = copy.deepcopy(commit(make_document()).to_wallet_dict())
    mutate(wallet)
    return wallet


BAD_WALLETS: list[tuple[Callable[[dict[str, Any]], None], type[Exception], str]] = [
    (lambda w: w.pop("digest"), DisclosureError, "wallet: missing key 'digest'"),
    (lambda w: w.update(extra=1), DisclosureError, "wallet: unexpected key 'extra'"),
    (lambda w: w.update(format="v0"), DisclosureError, "format must be"),
    (lambda w: w.update(salts=[]), DisclosureError, "wallet.salts: expected an object"),
    (lambda w: w["salts"].pop("year"), DisclosureError, "missing salt for 'year'"),
    (lambda w: w["salts"].update(zz="00" * 16), DisclosureError, "unexpected salt for 'zz'"),
    (lambda w: w["salts"].update(year="00" * 15), DisclosureError, "wallet.salts.year"),
    (lambda w: w["salts"].update(year="AB" * 16), DisclosureError, "lower-case hex"),
    (lambda w: w["salts"].update(year="00" * 16), DisclosureError, "does not match"),
    (lambda w: w.update(digest="00" * 32), DisclosureError, "wallet entry is corrupt"),
    (lambda w: w.update(digest=5), DisclosureError, "wallet.digest"),
    (lambda w: w["document"].update(holder="李四"), DisclosureError, "does not match"),
    (lambda w: w["document"].pop("fields"), DocumentError, "missing key 'fields'"),
    (lambda w: w.update(document=None), DocumentError, "expected an object"),
]


@pytest.mark.parametrize(("mutate", "error", "message"), BAD_WALLETS)
def test_wallet_is_parsed_strictly(
    mutate: Callable[[dict[str, Any]], None], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        CommittedDocument.from_wallet_dict(_wallet_with(mutate))
    assert message in str(info.value)


# --------------------------------------------------------------------------- properties

field_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
field_values: st.SearchStrategy[FieldValue] = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.binary(max_size=20),
)


@FAST
@given(st.dictionaries(field_names, field_values, min_size=1, max_size=12))
def test_any_valid_document_round_trips_and_commits_deterministically(
    fields: dict[str, FieldValue],
) -> None:
    doc = make_document(fields=fields)
    assert Document.from_json_dict(json.loads(json.dumps(doc.to_json_dict()))) == doc
    a, b = commit(doc, counting_rng()), commit(doc, counting_rng())
    assert a.digest == b.digest
    assert CommittedDocument.from_wallet_dict(json.loads(json.dumps(a.to_wallet_dict()))) == a
