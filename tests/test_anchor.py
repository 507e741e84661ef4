"""Anchor records, issuer signatures and batch trees."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from certificates import canonical
from certificates.anchor import (
    MAX_BATCH_SIZE,
    AnchorRecord,
    BatchMember,
    BatchTree,
    KeyMismatchError,
    SignedAnchor,
    SignedBatch,
    verify_batch_member,
)
from certificates.document import Document, commit
from certificates.errors import (
    DocumentError,
    InvalidSignatureError,
    MerkleError,
    RootMismatchError,
)
from certificates.identifiers import ROOT_CODE, CertificateId, iso7064_mod37_36_check_char
from certificates.merkle import SM3_HASHER, root_from_leaf_hashes
from certificates.sm2 import PrivateKey

try:
    from tests.vectors import load_vectors
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from vectors import load_vectors  # type: ignore[no-redef]

VALID_IDS: list[str] = load_vectors()["certificate_identifiers"]["valid"]
CID = CertificateId.parse(VALID_IDS[0])
OTHER = CertificateId.parse(VALID_IDS[1])  # another type and issuer
CHAIN = "certledger-test"
KEY = PrivateKey.generate()
OTHER_KEY = PrivateKey.generate()


def fast_id(serial: int, issuer: str = CID.issuer_code) -> str:
    # Identifiers straight from the check-character function: building 100,000
    # of them through CertificateId.build would dominate the batch timing.
    body = f"{CID.type_code}{issuer}{serial:010d}001"
    check = iso7064_mod37_36_check_char(body)
    return f"{ROOT_CODE}.{CID.type_code}.{issuer}.{serial:010d}.001.{check}"


def make_record(serial: int = 1, issuer: str = CID.issuer_code, **kw: Any) -> AnchorRecord:
    return AnchorRecord(
        id=fast_id(serial, issuer),
        type=CID.type_code,
        issuer=issuer,
        digest=kw.get("digest", serial.to_bytes(32, "big")),
        valid_from=kw.get("valid_from", 1_700_000_000),
        valid_until=kw.get("valid_until"),
        supersedes=kw.get("supersedes"),
    )


# --------------------------------------------------------------------------- records


def test_record_from_a_committed_document_round_trips() -> None:
    doc = Document(
        id=str(CID),
        type=CID.type_code,
        issuer=CID.issuer_code,
        holder="张三",
        fields={"degree": "工学学士"},
        issued_at=1,
        valid_from=2,
        valid_until=3,
        supersedes=fast_id(7),
    )
    record = commit(doc).anchor_record()
    assert set(record.canonical_value()) == {
        "id",
        "type",
        "issuer",
        "digest",
        "valid_from",
        "valid_until",
        "supersedes",
    }
    assert AnchorRecord.from_bytes(record.to_bytes()) == record
    assert AnchorRecord.from_json_dict(json.loads(json.dumps(record.to_json_dict()))) == record
    assert record.to_json_dict()["digest"] == record.digest.hex()
    assert record.leaf_hash() == SM3_HASHER.hash_leaf(canonical.encode(record.canonical_value()))


def test_sign_bytes_are_domain_and_chain_separated() -> None:
    record = make_record()
    sb = record.sign_bytes(CHAIN)
    assert sb == canonical.sign_bytes(canonical.DOMAIN_ANCHOR, CHAIN, record.canonical_value())
    assert canonical.DOMAIN_ANCHOR.encode() in sb and CHAIN.encode() in sb
    assert sb != record.sign_bytes("other-chain")


def test_anchor_signature_round_trip_and_failures() -> None:
    record = make_record(valid_until=1_800_000_000)
    signed = record.sign(KEY, CHAIN)
    assert signed.signer_key_id == KEY.public.key_id and len(signed.signature) == 64
    signed.verify(KEY.public, CHAIN)
    for form in (
        SignedAnchor.from_bytes(signed.to_bytes()),
        SignedAnchor.from_json_dict(json.loads(json.dumps(signed.to_json_dict()))),
    ):
        assert form == signed
        form.verify(KEY.public, CHAIN)

    expected = f"issuer signature does not verify for {record.id} under key "
    expected += KEY.public.key_id.hex()
    with pytest.raises(InvalidSignatureError) as info:
        signed.verify(KEY.public, "other-chain")
    assert expected in str(info.value)
    for tampered in (
        dataclasses.replace(record, digest=bytes(32)),
        dataclasses.replace(record, valid_until=None),
        dataclasses.replace(record, valid_from=0),
        dataclasses.replace(record, supersedes=fast_id(9)),
    ):
        with pytest.raises(InvalidSignatureError, match="does not verify"):
            dataclasses.replace(signed, record=tampered).verify(KEY.public, CHAIN)
    sig = bytearray(signed.signature)
    sig[10] ^= 1
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        dataclasses.replace(signed, signature=bytes(sig)).verify(KEY.public, CHAIN)
    with pytest.raises(KeyMismatchError) as mismatch:
        signed.verify(OTHER_KEY.public, CHAIN)
    assert KEY.public.key_id.hex() in str(mismatch.value)
    assert OTHER_KEY.public.key_id.hex() in str(mismatch.value)
    assert isinstance(mismatch.value, InvalidSignatureError)
    # Another key's signature under the right key id fails on the signature itself.
    forged = SignedAnchor(record, KEY.public.key_id, OTHER_KEY.sign(record.sign_bytes(CHAIN)))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        forged.verify(KEY.public, CHAIN)


BAD_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"digest": b"\0" * 31}, "digest must be 32 bytes"),
    ({"digest": "00" * 32}, "digest must be 32 bytes"),
    ({"valid_from": "2023"}, "valid_from must be an integer"),
    ({"valid_until": 1}, "is before valid_from"),
    ({"supersedes": "nope"}, "supersedes:"),
]


@pytest.mark.parametrize(("kw", "message"), BAD_RECORDS)
def test_malformed_record_is_named(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(DocumentError) as info:
        make_record(**kw)
    assert message in str(info.value)


def test_record_identity_must_agree() -> None:
    with pytest.raises(DocumentError, match="does not match the issuer code"):
        AnchorRecord(str(CID), CID.type_code, OTHER.issuer_code, bytes(32), 0)
    with pytest.raises(DocumentError, match="does not match the type code"):
        AnchorRecord(str(CID), OTHER.type_code, CID.issuer_code, bytes(32), 0)
    with pytest.raises(DocumentError, match="id: "):
        AnchorRecord(str(CID)[:-1] + "0", CID.type_code, CID.issuer_code, bytes(32), 0)


def _json_edit(obj: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(json.dumps(obj))
    change(d)
    return d


SIGNED = make_record().sign(KEY, CHAIN)
BAD_SIGNED_JSON: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda d: d.pop("signature"), "signed anchor: missing key 'signature'"),
    (lambda d: d.update(extra=1), "signed anchor: unexpected key 'extra'"),
    (lambda d: d.update(signature=d["signature"][:-2]), "signed anchor.signature"),
    (lambda d: d.update(signer_key_id=d["signer_key_id"].upper()), "lower-case hex"),
    (lambda d: d["record"].pop("valid_until"), "signed anchor.record: missing key 'valid_until'"),
    (lambda d: d["record"].update(digest="zz" * 32), "signed anchor.record.digest"),
    (lambda d: d["record"].update(valid_from=1.0), "valid_from must be an integer"),
    (lambda d: d.update(record=[]), "signed anchor.record: expected an object"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SIGNED_JSON)
def test_signed_anchor_json_is_parsed_strictly(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(DocumentError) as info:
        SignedAnchor.from_json_dict(_json_edit(SIGNED.to_json_dict(), change))
    assert message in str(info.value)


def test_signed_anchor_bytes_are_parsed_strictly() -> None:
    value = SIGNED.canonical_value()
    with pytest.raises(
        DocumentError, match=re.escape("signed anchor.signature: expected 64 bytes")
    ):
        SignedAnchor.from_bytes(canonical.encode({**value, "signature": SIGNED.signature[:63]}))
    with pytest.raises(
        DocumentError, match=re.escape("signed anchor.record.digest: expected 32 bytes")
    ):
        SignedAnchor.from_bytes(
            canonical.encode({**value, "record": {**value["record"], "digest": "00" * 32}})
        )
    with pytest.raises(DocumentError, match=r"not canonical|not valid msgpack"):
        SignedAnchor.from_bytes(SIGNED.to_bytes() + b"\0")
    with pytest.raises(DocumentError, match="anchor record: expected an object"):
        AnchorRecord.from_bytes(canonical.encode([1, 2]))


# --------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def batch() -> tuple[BatchTree, SignedBatch]:
    tree = BatchTree([make_record(i) for i in range(1000)])
    return tree, tree.sign(KEY, CHAIN)


def test_every_member_of_a_1000_record_batch_verifies(
    batch: tuple[BatchTree, SignedBatch],
) -> None:
    tree, signed = batch
    assert (signed.root, signed.size, signed.issuer) == (tree.root, 1000, CID.issuer_code)
    assert tree.root == root_from_leaf_hashes([r.leaf_hash() for r in tree.records])
    for member in tree.members():
        verify_batch_member(member, signed, KEY.public, CHAIN)
    assert tree.index_of(fast_id(123)) == 123


def test_batch_forms_round_trip(batch: tuple[BatchTree, SignedBatch]) -> None:
    tree, signed = batch
    member = tree.member(777)
    assert SignedBatch.from_bytes(signed.to_bytes()) == signed
    assert SignedBatch.from_json_dict(json.loads(json.dumps(signed.to_json_dict()))) == signed
    assert BatchMember.from_bytes(member.to_bytes()) == member
    assert BatchMember.from_json_dict(json.loads(json.dumps(member.to_json_dict()))) == member
    assert signed.sign_bytes(CHAIN) == canonical.sign_bytes(
        canonical.DOMAIN_BATCH,
        CHAIN,
        {"root": signed.root, "size": signed.size, "issuer": signed.issuer},
    )


def test_tampered_members_and_batches_fail(batch: tuple[BatchTree, SignedBatch]) -> None:
    tree, signed = batch
    member = tree.member(500)
    flipped = bytes([member.path[0][0] ^ 1]) + member.path[0][1:]
    cases: list[tuple[BatchMember, type[Exception]]] = [
        (dataclasses.replace(member, record=make_record(500, digest=bytes(32))), RootMismatchError),
        (dataclasses.replace(member, record=make_record(5000)), RootMismatchError),
        (dataclasses.replace(member, index=501), RootMismatchError),
        (dataclasses.replace(member, path=(flipped, *member.path[1:])), RootMismatchError),
        (dataclasses.replace(member, path=member.path[:-1]), MerkleError),
        (dataclasses.replace(member, size=999, index=500), MerkleError),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            verify_batch_member(bad, signed, KEY.public, CHAIN)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_batch_member(member, signed, KEY.public, "other-chain")
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_batch_member(member, dataclasses.replace(signed, size=1001), KEY.public, CHAIN)
    with pytest.raises(KeyMismatchError):
        verify_batch_member(member, signed, OTHER_KEY.public, CHAIN)
    # A member of another batch does not verify against this one.
    other = BatchTree([make_record(i) for i in range(1000, 1010)])
    with pytest.raises(MerkleError):
        verify_batch_member(other.member(3), signed, KEY.public, CHAIN)


def test_batch_signature_does_not_cover_another_issuers_record() -> None:
    theirs = BatchTree(
        [make_record(1, issuer=OTHER.issuer_code), make_record(2, OTHER.issuer_code)]
    )
    ours = BatchTree([make_record(1), make_record(2)]).sign(KEY, CHAIN)
    with pytest.raises(DocumentError, match="but the batch was signed for issuer"):
        verify_batch_member(theirs.member(0), ours, KEY.public, CHAIN)


BAD_BATCHES: list[tuple[Callable[[], list[Any]], str]] = [
    (lambda: [make_record(1), make_record(2, issuer=OTHER.issuer_code)], "one issuer's records"),
    (lambda: [make_record(1), make_record(2), make_record(1)], "duplicates record 0"),
    (lambda: [], "a batch holds 1..100000 records, got 0"),
    (lambda: [make_record(1), "record"], "batch record 1 is not an AnchorRecord"),
]


@pytest.mark.parametrize(("records", "message"), BAD_BATCHES)
def test_bad_batches_are_rejected(records: Callable[[], list[Any]], message: str) -> None:
    with pytest.raises(DocumentError) as info:
        BatchTree(records())
    assert message in str(info.value)


def test_batch_member_and_signed_batch_checks(batch: tuple[BatchTree, SignedBatch]) -> None:
    tree, signed = batch
    with pytest.raises(DocumentError, match=re.escape("outside 0..999")):
        tree.member(1000)
    with pytest.raises(DocumentError, match="not in this batch"):
        tree.index_of(fast_id(5000))
    with pytest.raises(DocumentError, match=re.escape("member index 3 is outside 0..2")):
        BatchMember(make_record(), 3, 3, ())
    with pytest.raises(DocumentError, match="batch size 0 is outside"):
        BatchMember(make_record(), 0, 0, ())
    with pytest.raises(DocumentError, match="path hash 0 must be 32 bytes"):
        BatchMember(make_record(), 0, 2, (b"\0",))
    with pytest.raises(DocumentError, match="not an issuer code"):
        dataclasses.replace(signed, issuer="abc")
    with pytest.raises(DocumentError, match=f"outside 1..{MAX_BATCH_SIZE}"):
        SignedBatch.from_json_dict({**signed.to_json_dict(), "size": MAX_BATCH_SIZE + 1})
    with pytest.raises(DocumentError, match="signed batch: unexpected key 'x'"):
        SignedBatch.from_json_dict({**signed.to_json_dict(), "x": 1})
    with pytest.raises(DocumentError, match=re.escape("batch member.path: expected an array")):
        BatchMember.from_json_dict({**tree.member(0).to_json_dict(), "path": "00"})
    with pytest.raises(DocumentError, match=re.escape("batch member.index: expected an integer")):
        BatchMember.from_json_dict({**tree.member(0).to_json_dict(), "index": True})


@pytest.mark.slow
def test_100k_batch_builds_with_all_paths_in_seconds() -> None:
    records = [make_record(i) for i in range(MAX_BATCH_SIZE)]
    start = time.perf_counter()
    tree = BatchTree(records)
    built = time.perf_counter()
    paths = [m.path for m in tree.members()]
    done = time.perf_counter()
    print(f"\n100,000-record batch: tree {built - start:.2f} s, all paths {done - built:.2f} s")
    assert len(paths) == MAX_BATCH_SIZE and max(len(p) for p in paths) == 17
    assert done - start < 15  # a few seconds on a laptop; generous for loaded CI
    signed = tree.sign(KEY, CHAIN)
    verify_batch_member(tree.member(MAX_BATCH_SIZE - 1), signed, KEY.public, CHAIN)
    with pytest.raises(DocumentError, match="got 100001"):
        BatchTree([*records, make_record(MAX_BATCH_SIZE)])
