"""Anchor records: what an issuer publishes on chain, signed; and batches of them.

An ``AnchorRecord`` is the public part of a certificate: identifier, type,
issuer, the certificate digest (the Merkle root over its salted leaves, see
``document``) and validity. It holds no personal data. The issuer signs
``canonical.sign_bytes(DOMAIN_ANCHOR, chain_id, record.canonical_value())``
with SM2; the domain tag and chain id make the signature useless for any
other purpose or chain.

A busy issuer anchors many certificates with one signature: ``BatchTree``
hashes each record's canonical bytes as an RFC 9162 leaf (SM3), signs
``{root, size, issuer}`` under ``DOMAIN_BATCH``, and hands each certificate a
``BatchMember`` (record + inclusion path). Verifying a member checks the batch
signature, then the path. One batch holds one issuer's records, ids unique.

Every type has a canonical value (bytes as ``bin``; ``to_bytes`` /
``from_bytes``) and a JSON form (bytes as lower-case hex). Parsing is strict:
malformed input raises ``DocumentError`` naming the problem; a signature that
does not verify raises ``InvalidSignatureError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from certificates import canonical
from certificates.document import (
    DIGEST_SIZE,
    hex_bytes,
    json_int,
    strict_keys,
    validate_identity,
    validate_supersedes,
    validate_validity,
)
from certificates.errors import (
    DocumentError,
    EncodingError,
    InvalidSignatureError,
    MerkleError,
)
from certificates.merkle import SM3_HASHER, MerkleTree, verify_inclusion
from certificates.sm2 import PrivateKey, PublicKey

MAX_BATCH_SIZE: Final = 100_000
MAX_PATH_LENGTH: Final = 64
KEY_ID_SIZE: Final = 16
SIGNATURE_SIZE: Final = 64
ANCHOR_KEYS: Final = ("id", "type", "issuer", "digest", "valid_from", "valid_until", "supersedes")
_BATCH_KEYS: Final = ("root", "size", "issuer", "signer_key_id", "signature")
_ISSUER_RE: Final = re.compile(r"[0-9A-Z]{1,32}")


class KeyMismatchError(InvalidSignatureError):
    """The public key given is not the one whose key id the signature names."""

    code = "key_mismatch"


def _bytes(value: object, size: int, what: str, binary: bool) -> bytes:
    # One parser for both forms: canonical values carry bin, JSON carries hex.
    if not binary:
        return hex_bytes(value, size, what, DocumentError)
    if not isinstance(value, bytes) or len(value) != size:
        raise DocumentError(f"{what}: expected {size} bytes")
    return value


def _decode(data: bytes, what: str) -> Any:
    try:
        return canonical.decode(data)
    except EncodingError as exc:
        raise DocumentError(f"{what}: {exc}") from exc


def _check_key_and_signature(key_id: object, signature: object) -> None:
    if not isinstance(key_id, bytes) or len(key_id) != KEY_ID_SIZE:
        raise DocumentError(f"signer_key_id must be {KEY_ID_SIZE} bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise DocumentError(f"signature must be {SIGNATURE_SIZE} bytes (r||s)")


def _verify(
    public_key: PublicKey, key_id: bytes, message: bytes, signature: bytes, what: str
) -> None:
    if public_key.key_id != key_id:
        raise KeyMismatchError(
            f"{what} was signed by key {key_id.hex()}, "
            f"not by the given key {public_key.key_id.hex()}"
        )
    if not public_key.verify(message, signature):
        raise InvalidSignatureError(
            f"issuer signature does not verify for {what} under key {key_id.hex()}"
        )


# --------------------------------------------------------------------------- single anchors


@dataclass(frozen=True)
class AnchorRecord:
    id: str
    type: str
    issuer: str
    digest: bytes
    valid_from: int
    valid_until: int | None = None
    supersedes: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", validate_identity(self.id, self.type, self.issuer))
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise DocumentError(f"digest must be {DIGEST_SIZE} bytes")
        validate_validity(self.valid_from, self.valid_until)
        object.__setattr__(self, "supersedes", validate_supersedes(self.supersedes, self.id))

    def canonical_value(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ANCHOR_KEYS}

    def to_bytes(self) -> bytes:
        return canonical.encode(self.canonical_value())

    def leaf_hash(self) -> bytes:
        """This record's leaf in a batch tree."""
        return SM3_HASHER.hash_leaf(self.to_bytes())

    def sign_bytes(self, chain_id: str) -> bytes:
        return canonical.sign_bytes(canonical.DOMAIN_ANCHOR, chain_id, self.canonical_value())

    def sign(self, private_key: PrivateKey, chain_id: str) -> SignedAnchor:
        signature = private_key.sign(self.sign_bytes(chain_id))
        return SignedAnchor(self, private_key.public.key_id, signature)

    def to_json_dict(self) -> dict[str, Any]:
        d = self.canonical_value()
        d["digest"] = self.digest.hex()
        return d

    @classmethod
    def from_json_dict(cls, obj: object) -> AnchorRecord:
        return cls._parse(obj, binary=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnchorRecord:
        return cls._parse(_decode(data, "anchor record"), binary=True)

    @classmethod
    def _parse(cls, obj: object, *, binary: bool, what: str = "anchor record") -> AnchorRecord:
        d = strict_keys(obj, ANCHOR_KEYS, what, DocumentError)
        # __post_init__ checks the types of everything but the digest.
        return cls(**{**d, "digest": _bytes(d["digest"], DIGEST_SIZE, f"{what}.digest", binary)})


@dataclass(frozen=True)
class SignedAnchor:
    record: AnchorRecord
    signer_key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.record, AnchorRecord):
            raise DocumentError(f"record must be an AnchorRecord, got {type(self.record).__name__}")
        _check_key_and_signature(self.signer_key_id, self.signature)

    def verify(self, public_key: PublicKey, chain_id: str) -> None:
        """Raise KeyMismatchError or InvalidSignatureError unless the issuer signed this."""
        _verify(
            public_key,
            self.signer_key_id,
            self.record.sign_bytes(chain_id),
            self.signature,
            self.record.id,
        )

    def canonical_value(self) -> dict[str, Any]:
        return {
            "record": self.record.canonical_value(),
            "signer_key_id": self.signer_key_id,
            "signature": self.signature,
        }

    def to_bytes(self) -> bytes:
        return canonical.encode(self.canonical_value())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "record": self.record.to_json_dict(),
            "signer_key_id": self.signer_key_id.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json_dict(cls, obj: object) -> SignedAnchor:
        return cls._parse(obj, binary=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedAnchor:
        return cls._parse(_decode(data, "signed anchor"), binary=True)

    @classmethod
    def _parse(cls, obj: object, *, binary: bool) -> SignedAnchor:
        d = strict_keys(
            obj, ("record", "signer_key_id", "signature"), "signed anchor", DocumentError
        )
        return cls(
            AnchorRecord._parse(d["record"], binary=binary, what="signed anchor.record"),
            _bytes(d["signer_key_id"], KEY_ID_SIZE, "signed anchor.signer_key_id", binary),
            _bytes(d["signature"], SIGNATURE_SIZE, "signed anchor.signature", binary),
        )


# --------------------------------------------------------------------------- batches


def batch_sign_bytes(root: bytes, size: int, issuer: str, chain_id: str) -> bytes:
    value = {"root": root, "size": size, "issuer": issuer}
    return canonical.sign_bytes(canonical.DOMAIN_BATCH, chain_id, value)


def _check_size(size: object, what: str) -> int:
    value: int = json_int(size, what, DocumentError)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise DocumentError(f"{what} {value} is outside 1..{MAX_BATCH_SIZE}")
    return value


@dataclass(frozen=True)
class SignedBatch:
    root: bytes
    size: int
    issuer: str
    signer_key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.root, bytes) or len(self.root) != DIGEST_SIZE:
            raise DocumentError(f"batch root must be {DIGEST_SIZE} bytes")
        _check_size(self.size, "batch size")
        if not isinstance(self.issuer, str) or not _ISSUER_RE.fullmatch(self.issuer):
            raise DocumentError(f"batch issuer {self.issuer!r} is not an issuer code")
        _check_key_and_signature(self.signer_key_id, self.signature)

    def sign_bytes(self, chain_id: str) -> bytes:
        return batch_sign_bytes(self.root, self.size, self.issuer, chain_id)

    def verify(self, public_key: PublicKey, chain_id: str) -> None:
        what = f"batch {self.root.hex()} of issuer {self.issuer}"
        _verify(public_key, self.signer_key_id, self.sign_bytes(chain_id), self.signature, what)

    def canonical_value(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _BATCH_KEYS}

    def to_bytes(self) -> bytes:
        return canonical.encode(self.canonical_value())

    def to_json_dict(self) -> dict[str, Any]:
        return {
            k: v.hex() if isinstance(v, bytes) else v for k, v in self.canonical_value().items()
        }

    @classmethod
    def from_json_dict(cls, obj: object) -> SignedBatch:
        return cls._parse(obj, binary=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedBatch:
        return cls._parse(_decode(data, "signed batch"), binary=True)

    @classmethod
    def _parse(cls, obj: object, *, binary: bool) -> SignedBatch:
        d = strict_keys(obj, _BATCH_KEYS, "signed batch", DocumentError)
        return cls(
            _bytes(d["root"], DIGEST_SIZE, "signed batch.root", binary),
            _check_size(d["size"], "signed batch.size"),
            d["issuer"],
            _bytes(d["signer_key_id"], KEY_ID_SIZE, "signed batch.signer_key_id", binary),
            _bytes(d["signature"], SIGNATURE_SIZE, "signed batch.signature", binary),
        )


@dataclass(frozen=True)
class BatchMember:
    record: AnchorRecord
    index: int
    size: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.record, AnchorRecord):
            raise DocumentError(f"record must be an AnchorRecord, got {type(self.record).__name__}")
        _check_size(self.size, "batch size")
        index = json_int(self.index, "member index", DocumentError)
        if not 0 <= index < self.size:
            raise DocumentError(f"member index {index} is outside 0..{self.size - 1}")
        if not isinstance(self.path, tuple) or len(self.path) > MAX_PATH_LENGTH:
            raise DocumentError(f"member path must be a tuple of at most {MAX_PATH_LENGTH} hashes")
        for i, h in enumerate(self.path):
            if not isinstance(h, bytes) or len(h) != DIGEST_SIZE:
                raise DocumentError(f"member path hash {i} must be {DIGEST_SIZE} bytes")

    def canonical_value(self) -> dict[str, Any]:
        return {
            "record": self.record.canonical_value(),
            "index": self.index,
            "size": self.size,
            "path": list(self.path),
        }

    def to_bytes(self) -> bytes:
        return canonical.encode(self.canonical_value())

    def to_json_dict(self) -> dict[str, Any]:
        d = self.canonical_value()
        d["record"] = self.record.to_json_dict()
        d["path"] = [h.hex() for h in self.path]
        return d

    @classmethod
    def from_json_dict(cls, obj: object) -> BatchMember:
        return cls._parse(obj, binary=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> BatchMember:
        return cls._parse(_decode(data, "batch member"), binary=True)

    @classmethod
    def _parse(cls, obj: object, *, binary: bool) -> BatchMember:
        d = strict_keys(obj, ("record", "index", "size", "path"), "batch member", DocumentError)
        if not isinstance(d["path"], list):
            raise DocumentError("batch member.path: expected an array")
        return cls(
            AnchorRecord._parse(d["record"], binary=binary, what="batch member.record"),
            json_int(d["index"], "batch member.index", DocumentError),
            json_int(d["size"], "batch member.size", DocumentError),
            tuple(
                _bytes(h, DIGEST_SIZE, f"batch member.path[{i}]", binary)
                for i, h in enumerate(d["path"])
            ),
        )


@dataclass(frozen=True, eq=False)
class BatchTree:
    """One issuer's records under one Merkle root; leaves hashed once, paths O(log n)."""

    records: Sequence[AnchorRecord]
    _tree: MerkleTree = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        records = tuple(self.records)
        if not 1 <= len(records) <= MAX_BATCH_SIZE:
            raise DocumentError(f"a batch holds 1..{MAX_BATCH_SIZE} records, got {len(records)}")
        index: dict[str, int] = {}
        for i, r in enumerate(records):
            if not isinstance(r, AnchorRecord):
                raise DocumentError(f"batch record {i} is not an AnchorRecord")
            if r.issuer != records[0].issuer:
                raise DocumentError(
                    f"batch record {i} ({r.id}) has issuer {r.issuer}, but the batch is for "
                    f"{records[0].issuer}; one batch holds one issuer's records"
                )
            if r.id in index:
                raise DocumentError(f"batch record {i}: id {r.id} duplicates record {index[r.id]}")
            index[r.id] = i
        object.__setattr__(self, "records", records)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_tree", MerkleTree([r.leaf_hash() for r in records]))

    @property
    def issuer(self) -> str:
        return self.records[0].issuer

    @property
    def size(self) -> int:
        return len(self.records)

    @property
    def root(self) -> bytes:
        return self._tree.root

    def index_of(self, record_id: str) -> int:
        try:
            return self._index[record_id]
        except KeyError:
            raise DocumentError(f"{record_id} is not in this batch") from None

    def sign(self, private_key: PrivateKey, chain_id: str) -> SignedBatch:
        root = self.root
        signature = private_key.sign(batch_sign_bytes(root, self.size, self.issuer, chain_id))
        return SignedBatch(root, self.size, self.issuer, private_key.public.key_id, signature)

    def member(self, index: int) -> BatchMember:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.size:
            raise DocumentError(f"member index {index!r} is outside 0..{self.size - 1}")
        path = tuple(self._tree.inclusion_proof(index))
        return BatchMember(self.records[index], index, self.size, path)

    def members(self) -> Iterator[BatchMember]:
        for i in range(self.size):
            yield self.member(i)


def verify_batch_member(
    member: BatchMember, signed_batch: SignedBatch, public_key: PublicKey, chain_id: str
) -> None:
    """Raise unless the issuer signed the batch and ``member`` is in it.

    InvalidSignatureError (or KeyMismatchError) for the signature, DocumentError
    when the record's issuer is not the batch's, MerkleError / RootMismatchError
    for the path.
    """
    signed_batch.verify(public_key, chain_id)
    if member.record.issuer != signed_batch.issuer:
        raise DocumentError(
            f"{member.record.id} has issuer {member.record.issuer}, "
            f"but the batch was signed for issuer {signed_batch.issuer}"
        )
    if member.size != signed_batch.size:
        raise MerkleError(f"member claims batch size {member.size}, batch has {signed_batch.size}")
    verify_inclusion(
        member.record.leaf_hash(), member.index, member.size, member.path, signed_batch.root
    )
