"""Certificate documents, salted field commitments and the certificate digest.

A ``Document`` is the full certificate as the issuer and the holder keep it; it
never goes on chain. ``commit`` turns it into a ``CommittedDocument``:

* one fresh 16-byte salt per leaf. Leaves are the user fields, ``$meta`` (id,
  type, issuer and dates; always disclosed) and ``$holder`` (the holder
  identifier; hideable like any field);
* leaf hash = SM3(0x00 || canonical([name, salt, value])). The salt stops a
  verifier confirming a guessed hidden value (a birth date has few
  possibilities); the name binds each value to its field;
* leaves are ordered by the UTF-8 bytes of their names (so ``$holder`` and
  ``$meta`` come first) and the certificate digest is the RFC 9162 Merkle root
  (SM3) of the leaf hashes. Only the digest goes on chain, in an AnchorRecord.

Strings are NFC-normalised on construction so 张三 typed on two keyboards
commits identically. JSON forms: bytes field values are ``{"b64": "<padded
standard base64>"}`` (an object, so they can never be mistaken for a string);
salts and digests are lower-case hex. Parsing is strict: a missing, extra or
mistyped key raises, naming it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from certificates import canonical
from certificates.errors import CertificatesError, DisclosureError, DocumentError, IdentifierError
from certificates.identifiers import CertificateId
from certificates.merkle import SM3_HASHER, root_from_leaf_hashes

if TYPE_CHECKING:
    from certificates.anchor import AnchorRecord

FieldValue = str | int | bool | bytes

FIELD_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FIELDS: Final = 256
MAX_VALUE_BYTES: Final = 4096  # str (UTF-8) and bytes values alike: presentations go in QR codes
SALT_SIZE: Final = 16
DIGEST_SIZE: Final = 32
TIME_MIN: Final = -(2**63)  # signed: a digitised 1965 diploma has a pre-1970 valid_from
TIME_MAX: Final = 2**63 - 1
HOLDER: Final = "$holder"
META: Final = "$meta"
META_KEYS: Final = ("id", "type", "issuer", "issued_at", "valid_from", "valid_until", "supersedes")
DOCUMENT_KEYS: Final = (*META_KEYS[:3], "holder", "fields", *META_KEYS[3:])
WALLET_FORMAT: Final = "certledger/wallet/v1"
_HEX_RE: Final = re.compile(r"[0-9a-f]*")

ErrorType = type[CertificatesError]
V = TypeVar("V")


# --------------------------------------------------------------------------- strict JSON helpers


def strict_keys(obj: object, keys: Iterable[str], what: str, error: ErrorType) -> dict[str, Any]:
    """``obj`` as a dict with exactly ``keys``; otherwise ``error`` naming the offending key."""
    if not isinstance(obj, dict):
        raise error(f"{what}: expected an object, got {type(obj).__name__}")
    wanted = list(keys)
    missing = [k for k in wanted if k not in obj]
    if missing:
        raise error(f"{what}: missing key {missing[0]!r}")
    extra = sorted(str(k) for k in obj if k not in wanted)
    if extra:
        raise error(f"{what}: unexpected key {extra[0]!r}")
    return obj


def json_int(value: object, what: str, error: ErrorType, *, optional: bool = False) -> Any:
    if optional and value is None:
        return None
    # bool is an int subclass; a JSON true must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{what}: expected an integer, got {type(value).__name__}")
    return value


def json_str(value: object, what: str, error: ErrorType, *, optional: bool = False) -> Any:
    if optional and value is None:
        return None
    if not isinstance(value, str):
        raise error(f"{what}: expected a string, got {type(value).__name__}")
    return value


def hex_bytes(value: object, size: int, what: str, error: ErrorType) -> bytes:
    """Lower-case hex of exactly ``size`` bytes (``bytes.fromhex`` alone accepts spaces)."""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX_RE.fullmatch(value):
        raise error(f"{what}: expected {2 * size} lower-case hex digits ({size} bytes)")
    return bytes.fromhex(value)


def field_value_to_json(value: FieldValue) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def field_value_from_json(value: object, what: str, error: ErrorType) -> FieldValue:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        text = strict_keys(value, ("b64",), what, error)["b64"]
        if isinstance(text, str):
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = None
            # Re-encoding rejects non-canonical padding bits: one value, one text.
            if raw is not None and base64.b64encode(raw).decode("ascii") == text:
                return raw
        raise error(f"{what}: 'b64' must be padded standard base64")
    raise error(
        f"{what}: expected a string, integer, boolean or {{'b64': ...}}, got {type(value).__name__}"
    )


# --------------------------------------------------------------------------- validation


def check_field_name(name: object) -> str:
    if not isinstance(name, str):
        raise DocumentError(f"field name {name!r} must be a string")
    if name.startswith("$"):
        raise DocumentError(
            f"field name {name!r} is reserved: names starting with '$' are for {HOLDER} and {META}"
        )
    if not FIELD_NAME_RE.fullmatch(name):
        raise DocumentError(
            f"field name {name!r} is invalid: use 1-64 of a-z, 0-9, _ starting with a letter"
        )
    return name


def _check_text(what: str, value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise DocumentError(f"{what} is not valid Unicode (lone surrogate)") from exc
    if size > MAX_VALUE_BYTES:
        raise DocumentError(f"{what} is {size} bytes in UTF-8, limit is {MAX_VALUE_BYTES}")
    return value


def check_field_value(name: str, value: object) -> FieldValue:
    """The canonical form of a field value (NFC strings), or DocumentError."""
    what = f"field {name!r}"
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not canonical.INT_MIN <= value <= canonical.INT_MAX:
            raise DocumentError(f"{what}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, str):
        return _check_text(what, value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) > MAX_VALUE_BYTES:
            raise DocumentError(f"{what} is {len(raw)} bytes, limit is {MAX_VALUE_BYTES}")
        return raw
    raise DocumentError(
        f"{what}: type {type(value).__name__} is not allowed; use str, int, bool or bytes"
    )


def check_holder(holder: object) -> str:
    if not isinstance(holder, str):
        raise DocumentError(f"holder must be a string, got {type(holder).__name__}")
    if not holder.strip():
        raise DocumentError("holder is empty")
    return _check_text("holder", holder)


def check_time(what: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise DocumentError(f"{what} must be an integer (unix seconds), got {type(value).__name__}")
    if not TIME_MIN <= value <= TIME_MAX:
        raise DocumentError(f"{what} {value} is outside the signed 64-bit range")


def validate_identity(id_: object, type_: object, issuer: object) -> str:
    """The canonical form of ``id_`` after checking type and issuer agree with it."""
    if not isinstance(id_, str):
        raise DocumentError(f"id must be a string, got {type(id_).__name__}")
    try:
        cid = CertificateId.parse(id_)
    except IdentifierError as exc:
        raise DocumentError(f"id: {exc}") from exc
    if type_ != cid.type_code:
        raise DocumentError(f"type {type_!r} does not match the type code {cid.type_code!r} of id")
    if issuer != cid.issuer_code:
        raise DocumentError(
            f"issuer {issuer!r} does not match the issuer code {cid.issuer_code!r} of id"
        )
    return str(cid)


def validate_validity(valid_from: object, valid_until: object) -> None:
    check_time("valid_from", valid_from)
    check_time("valid_until", valid_until, optional=True)
    if isinstance(valid_from, int) and isinstance(valid_until, int) and valid_until < valid_from:
        raise DocumentError(f"valid_until {valid_until} is before valid_from {valid_from}")


def validate_supersedes(supersedes: object, id_: str) -> str | None:
    if supersedes is None:
        return None
    if not isinstance(supersedes, str):
        raise DocumentError(f"supersedes must be a string or None, got {type(supersedes).__name__}")
    try:
        text = str(CertificateId.parse(supersedes))
    except IdentifierError as exc:
        raise DocumentError(f"supersedes: {exc}") from exc
    if text == id_:
        raise DocumentError("supersedes names the certificate itself")
    return text


# --------------------------------------------------------------------------- model


class FrozenMap(Mapping[str, V]):
    """Immutable, hashable mapping in UTF-8 key order.

    Equality is type-exact: ``{"a": True}`` and ``{"a": 1}`` commit to different
    digests, so they must not compare equal.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Mapping[str, V]) -> None:
        pairs = sorted(items.items(), key=lambda kv: kv[0].encode("utf-8"))
        self._items: tuple[tuple[str, V], ...] = tuple(pairs)
        self._index: dict[str, V] = dict(pairs)

    def __getitem__(self, key: str) -> V:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping) or len(other) != len(self._items):
            return False
        return all(
            k in other and type(other[k]) is type(v) and other[k] == v for k, v in self._items
        )

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._index!r})"


@dataclass(frozen=True)
class DocumentMeta:
    """The always-disclosed ``$meta`` leaf: identity and validity, no personal data."""

    id: str
    type: str
    issuer: str
    issued_at: int
    valid_from: int
    valid_until: int | None = None
    supersedes: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", validate_identity(self.id, self.type, self.issuer))
        check_time("issued_at", self.issued_at)
        validate_validity(self.valid_from, self.valid_until)
        object.__setattr__(self, "supersedes", validate_supersedes(self.supersedes, self.id))

    def canonical_value(self) -> dict[str, Any]:
        """The ``$meta`` leaf value; also its JSON form (all members are JSON-safe)."""
        return {k: getattr(self, k) for k in META_KEYS}

    @classmethod
    def from_json_dict(cls, obj: object, what: str = "meta") -> DocumentMeta:
        d = strict_keys(obj, META_KEYS, what, DocumentError)
        return cls(**d)  # __post_init__ checks every member's type and value


@dataclass(frozen=True)
class Document:
    """A full certificate; kept by issuer and holder, never published."""

    id: str
    type: str
    issuer: str
    holder: str
    fields: Mapping[str, FieldValue]
    issued_at: int
    valid_from: int
    valid_until: int | None = None
    supersedes: str | None = None

    def __post_init__(self) -> None:
        meta = self.meta  # validates id, type, issuer and dates
        object.__setattr__(self, "id", meta.id)
        object.__setattr__(self, "supersedes", meta.supersedes)
        object.__setattr__(self, "holder", check_holder(self.holder))
        if not isinstance(self.fields, Mapping):
            raise DocumentError(f"fields must be a mapping, got {type(self.fields).__name__}")
        if not self.fields:
            raise DocumentError("fields: a document needs at least one field")
        if len(self.fields) > MAX_FIELDS:
            raise DocumentError(f"fields: {len(self.fields)} fields, limit is {MAX_FIELDS}")
        checked = {check_field_name(n): check_field_value(n, v) for n, v in self.fields.items()}
        object.__setattr__(self, "fields", FrozenMap(checked))

    @property
    def meta(self) -> DocumentMeta:
        return DocumentMeta(
            self.id, self.type, self.issuer, self.issued_at, self.valid_from,
            self.valid_until, self.supersedes,
        )  # fmt: skip

    def leaf_values(self) -> dict[str, Any]:
        """Leaf name -> committed value, in leaf order."""
        values: dict[str, Any] = {HOLDER: self.holder, META: self.meta.canonical_value()}
        values.update(self.fields)
        return {n: values[n] for n in leaf_order(values)}

    def to_json_dict(self) -> dict[str, Any]:
        d = self.meta.canonical_value()
        d["holder"] = self.holder
        d["fields"] = {n: field_value_to_json(v) for n, v in self.fields.items()}
        return {k: d[k] for k in DOCUMENT_KEYS}

    @classmethod
    def from_json_dict(cls, obj: object) -> Document:
        d = strict_keys(obj, DOCUMENT_KEYS, "document", DocumentError)
        fields = d["fields"]
        if not isinstance(fields, dict):
            raise DocumentError(f"document.fields: expected an object, got {type(fields).__name__}")
        return cls(
            id=json_str(d["id"], "document.id", DocumentError),
            type=json_str(d["type"], "document.type", DocumentError),
            issuer=json_str(d["issuer"], "document.issuer", DocumentError),
            holder=json_str(d["holder"], "document.holder", DocumentError),
            fields={
                n: field_value_from_json(v, f"document.fields.{n}", DocumentError)
                for n, v in fields.items()
            },
            issued_at=json_int(d["issued_at"], "document.issued_at", DocumentError),
            valid_from=json_int(d["valid_from"], "document.valid_from", DocumentError),
            valid_until=json_int(
                d["valid_until"], "document.valid_until", DocumentError, optional=True
            ),
            supersedes=json_str(
                d["supersedes"], "document.supersedes", DocumentError, optional=True
            ),
        )


# --------------------------------------------------------------------------- commitment


def leaf_order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: n.encode("utf-8"))


def leaf_hash(name: str, salt: bytes, value: Any) -> bytes:
    """SM3(0x00 || canonical([name, salt, value]))."""
    return SM3_HASHER.hash_leaf(canonical.encode([name, salt, value]))


@dataclass(frozen=True)
class CommittedDocument:
    """A document with its salts: the holder's wallet entry and the issuer's record."""

    document: Document
    salts: Mapping[str, bytes]
    digest: bytes = field(init=False, compare=False)
    _leaf_hashes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.document, Document):
            raise DisclosureError(
                f"document must be a Document, got {type(self.document).__name__}"
            )
        if not isinstance(self.salts, Mapping):
            raise DisclosureError(f"salts must be a mapping, got {type(self.salts).__name__}")
        values = self.document.leaf_values()
        for name in values:
            if name not in self.salts:
                raise DisclosureError(f"salts: missing salt for {name!r}")
        for name, salt in self.salts.items():
            if name not in values:
                raise DisclosureError(f"salts: unexpected salt for {name!r}, which is not a leaf")
            if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
                raise DisclosureError(f"salts: salt for {name!r} must be {SALT_SIZE} bytes")
        object.__setattr__(self, "salts", FrozenMap(dict(self.salts)))
        hashes = tuple(leaf_hash(n, self.salts[n], v) for n, v in values.items())
        object.__setattr__(self, "_leaf_hashes", hashes)
        object.__setattr__(self, "digest", root_from_leaf_hashes(hashes))

    def leaf_names(self) -> tuple[str, ...]:
        return tuple(leaf_order(self.salts))

    def leaf_hashes(self) -> tuple[bytes, ...]:
        return self._leaf_hashes

    def anchor_record(self) -> AnchorRecord:
        from certificates.anchor import AnchorRecord  # anchor imports this module

        d = self.document
        return AnchorRecord(
            d.id, d.type, d.issuer, self.digest, d.valid_from, d.valid_until, d.supersedes
        )

    def to_wallet_dict(self) -> dict[str, Any]:
        return {
            "format": WALLET_FORMAT,
            "document": self.document.to_json_dict(),
            "salts": {n: s.hex() for n, s in self.salts.items()},
            "digest": self.digest.hex(),
        }

    @classmethod
    def from_wallet_dict(cls, obj: object) -> CommittedDocument:
        """Parse a wallet entry; the stored digest must match the recomputed one."""
        d = strict_keys(obj, ("format", "document", "salts", "digest"), "wallet", DisclosureError)
        if d["format"] != WALLET_FORMAT:
            raise DisclosureError(f"wallet: format must be {WALLET_FORMAT!r}, got {d['format']!r}")
        document = Document.from_json_dict(d["document"])
        salts = d["salts"]
        if not isinstance(salts, dict):
            raise DisclosureError(f"wallet.salts: expected an object, got {type(salts).__name__}")
        committed = cls(
            document,
            {
                n: hex_bytes(s, SALT_SIZE, f"wallet.salts.{n}", DisclosureError)
                for n, s in salts.items()
            },
        )
        digest = hex_bytes(d["digest"], DIGEST_SIZE, "wallet.digest", DisclosureError)
        if digest != committed.digest:
            raise DisclosureError(
                f"wallet.digest {digest.hex()} does not match the document and salts "
                f"(computed {committed.digest.hex()}); the wallet entry is corrupt"
            )
        return committed


def commit(
    document: Document, rng: Callable[[int], bytes] = secrets.token_bytes
) -> CommittedDocument:
    """Salt every leaf of ``document`` afresh; ``rng`` is injectable for tests only."""
    return CommittedDocument(document, {name: rng(SALT_SIZE) for name in document.leaf_values()})
