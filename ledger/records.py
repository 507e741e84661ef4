"""Records kept in the ledger state, and the logical keys they live under.

State is a map ``logical key -> record bytes`` (docs/ledger-design.md, "State"):

* ``b"cert:" + id``      -> ``CertRecord``
* ``b"issuer:" + code``  -> ``IssuerRecord``
* ``b"key:" + key_id``   -> owner index: the canonical code of the issuer the key
  belongs (or belonged) to. Transactions name their signer by key id only; this
  index finds the signing issuer in one read, and it makes a key usable by at most
  one issuer ever, so a key id is never ambiguous.
* ``b"gov:admins"``      -> ``AdminsRecord``
* ``b"gov:validators"``  -> ``ValidatorsRecord``
* ``b"tx:" + tx_id``     -> applied-tx marker ``[height, index]`` (replay protection)

Every record is canonical msgpack (``certificates.canonical``) so its SM3 hash,
the SMT leaf value, is the same on every node. ``CertRecord`` is the one record
there are millions of: it is encoded as a positional array (no field names) and
leaves out the type and issuer codes, which are parts of its identifier; a
typical record is about 190 bytes. Decoding is strict: a record that is not
exactly what ``to_bytes`` would produce raises ``RecordError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Final

import msgpack

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from certificates.identifiers import CertificateId
from ledger.commit import Validator, ValidatorSet
from ledger.errors import RecordError, ValidatorSetError

CERT_PREFIX: Final = b"cert:"
ISSUER_PREFIX: Final = b"issuer:"
KEY_PREFIX: Final = b"key:"
TX_PREFIX: Final = b"tx:"
ADMINS_KEY: Final = b"gov:admins"
VALIDATORS_KEY: Final = b"gov:validators"

STATUSES: Final = ("issued", "suspended", "revoked", "superseded")
_STATUS_CODE: Final = {s: i for i, s in enumerate(STATUSES)}


def cert_key(cert_id: str) -> bytes:
    return CERT_PREFIX + cert_id.encode("utf-8")


def issuer_key(code: str) -> bytes:
    return ISSUER_PREFIX + code.encode("utf-8")


def key_owner_key(key_id: bytes) -> bytes:
    return KEY_PREFIX + key_id


def tx_key(tx_id: bytes) -> bytes:
    return TX_PREFIX + tx_id


# A known-good type code, to validate an issuer code alone through CertificateId.build.
_SAMPLE_TYPE: Final = "11100000000013338W032"


def check_issuer_code(code: str) -> None:
    """Raise IdentifierError unless ``code`` can be the issuer part of an identifier."""
    CertificateId.build(_SAMPLE_TYPE, code, "1")


def check_type_code(code: str) -> None:
    """Raise IdentifierError unless ``code`` is a valid 21-character type code."""
    CertificateId.build(code, "1", "1")


def _decode(data: bytes, what: str) -> Any:
    try:
        return canonical.decode(data)
    except CertificatesError as exc:
        raise RecordError(f"{what}: {exc}") from exc


def _fail(what: str, why: str) -> RecordError:
    return RecordError(f"{what} record is malformed: {why}")


# --------------------------------------------------------------------------- certificates


def encode_cert(
    cert_id: str,
    digest: bytes,
    valid_from: int,
    valid_until: int | None,
    supersedes: str | None,
    status: str,
    issued_height: int,
    status_height: int,
    superseded_by: str | None,
    status_reason: str | None,
    signer_key_id: bytes,
    tx_id: bytes,
    batch_index: int | None,
) -> bytes:
    """Positional encoding of a CertRecord; the hot path of batch issuance calls this.

    Callers pass validated, NFC values, so msgpack's own output is already the
    canonical encoding (arrays have no key order; ints use their shortest form).
    """
    out: bytes = msgpack.packb(
        [
            _STATUS_CODE[status], cert_id, digest, valid_from, valid_until, supersedes,
            issued_height, status_height, superseded_by, status_reason,
            signer_key_id, tx_id, batch_index,
        ],
        use_bin_type=True,
    )
    return out


@dataclass(frozen=True)
class CertRecord:
    """A certificate's anchor and its current status."""

    id: str
    digest: bytes
    valid_from: int
    valid_until: int | None
    supersedes: str | None
    status: str
    issued_height: int
    status_height: int
    superseded_by: str | None
    status_reason: str | None
    signer_key_id: bytes
    tx_id: bytes  # the issuing transaction (for a batch: the batch transaction)
    batch_index: int | None = None  # position in the batch, None for a single issue

    @property
    def type(self) -> str:
        # id = 1.2.156.3005.2.TYPE.ISSUER.SERIAL.VERSION.CHECK; validated before storing.
        return self.id.split(".")[5]

    @property
    def issuer(self) -> str:
        return self.id.split(".")[6]

    @property
    def batch(self) -> tuple[bytes, int] | None:
        return None if self.batch_index is None else (self.tx_id, self.batch_index)

    def with_status(
        self, status: str, height: int, reason: str | None, superseded_by: str | None = None
    ) -> CertRecord:
        return dataclasses.replace(
            self, status=status, status_height=height, status_reason=reason or None,
            superseded_by=superseded_by,
        )

    def to_bytes(self) -> bytes:
        return encode_cert(
            self.id, self.digest, self.valid_from, self.valid_until, self.supersedes,
            self.status, self.issued_height, self.status_height, self.superseded_by,
            self.status_reason, self.signer_key_id, self.tx_id, self.batch_index,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CertRecord:
        v = _decode(data, "certificate record")
        if not isinstance(v, list) or len(v) != 13:
            raise _fail("certificate", "expected a 13-element array")
        (st, cid, digest, vf, vu, sup, ih, sh, sb, reason, kid, tid, bi) = v
        if not isinstance(st, int) or isinstance(st, bool) or not 0 <= st < len(STATUSES):
            raise _fail("certificate", f"unknown status code {st!r}")
        checks = (
            (isinstance(cid, str) and cid.count(".") == 9, "id"),
            (isinstance(digest, bytes) and len(digest) == 32, "digest"),
            (_is_uint(vf), "valid_from"),
            (vu is None or _is_uint(vu), "valid_until"),
            (sup is None or isinstance(sup, str), "supersedes"),
            (_is_uint(ih) and _is_uint(sh), "heights"),
            (sb is None or isinstance(sb, str), "superseded_by"),
            (reason is None or isinstance(reason, str), "status_reason"),
            (isinstance(kid, bytes) and len(kid) == 16, "signer_key_id"),
            (isinstance(tid, bytes) and len(tid) == 32, "tx_id"),
            (bi is None or _is_uint(bi), "batch_index"),
        )
        for ok, name in checks:
            if not ok:
                raise _fail("certificate", f"bad {name}")
        return cls(cid, digest, vf, vu, sup, STATUSES[st], ih, sh, sb, reason, kid, tid, bi)


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# --------------------------------------------------------------------------- issuers


@dataclass(frozen=True)
class IssuerKey:
    """One signing key of an issuer, valid for heights [valid_from, retired_at)."""

    public_key: bytes
    valid_from_height: int
    retired_at_height: int | None = None

    @cached_property
    def key_id(self) -> bytes:
        return sm2.key_id(self.public_key)

    def valid_at(self, height: int) -> bool:
        return self.valid_from_height <= height and (
            self.retired_at_height is None or height < self.retired_at_height
        )


@dataclass(frozen=True)
class IssuerRecord:
    """A registered issuing agency: its keys over time, granted types, supervision."""

    code: str
    name: str
    keys: tuple[IssuerKey, ...]
    types: tuple[str, ...]  # sorted, distinct
    active: bool = True
    supervises: tuple[str, ...] = ()  # sorted issuer codes this authority may act for

    @cached_property
    def type_set(self) -> frozenset[str]:
        return frozenset(self.types)

    def key(self, key_id: bytes) -> IssuerKey | None:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        return None

    def current_keys(self) -> tuple[IssuerKey, ...]:
        return tuple(k for k in self.keys if k.retired_at_height is None)

    def to_value(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "code": self.code,
            "keys": [[k.public_key, k.valid_from_height, k.retired_at_height] for k in self.keys],
            "name": self.name,
            "supervises": list(self.supervises),
            "types": list(self.types),
        }

    def to_bytes(self) -> bytes:
        return canonical.encode(self.to_value())

    @classmethod
    def from_bytes(cls, data: bytes) -> IssuerRecord:
        return _issuer_from_bytes(bytes(data))


@lru_cache(maxsize=4096)
def _issuer_from_bytes(data: bytes) -> IssuerRecord:
    # Cached: every certificate transaction reads its issuer; records are immutable.
    v = _decode(data, "issuer record")
    try:
        if not isinstance(v, dict) or sorted(v) != [
            "active", "code", "keys", "name", "supervises", "types"
        ]:
            raise ValueError("unexpected fields")
        keys = tuple(IssuerKey(bytes(p), int(f), None if r is None else int(r))
                     for p, f, r in v["keys"])
        for k in keys:
            sm2.validate_public_key(k.public_key)
        rec = IssuerRecord(
            str(v["code"]), str(v["name"]), keys, tuple(map(str, v["types"])),
            bool(v["active"]), tuple(map(str, v["supervises"])),
        )
    except (ValueError, TypeError, CertificatesError) as exc:
        raise _fail("issuer", str(exc)) from exc
    if rec.to_bytes() != data:
        raise _fail("issuer", "field types are not as written")
    return rec


def encode_key_owner(code: str) -> bytes:
    return canonical.encode(code)


def decode_key_owner(data: bytes) -> str:
    v = _decode(data, "key owner record")
    if not isinstance(v, str):
        raise _fail("key owner", "expected an issuer code")
    return v


# --------------------------------------------------------------------------- governance


@dataclass(frozen=True)
class AdminsRecord:
    """The governance admins; ``threshold`` of them must approve a ``gov.*`` tx."""

    keys: tuple[bytes, ...]
    threshold: int

    @cached_property
    def by_key_id(self) -> dict[bytes, bytes]:
        return {sm2.key_id(k): k for k in self.keys}

    def to_bytes(self) -> bytes:
        return canonical.encode({"keys": list(self.keys), "threshold": self.threshold})

    @classmethod
    def from_bytes(cls, data: bytes) -> AdminsRecord:
        return _admins_from_bytes(bytes(data))


@lru_cache(maxsize=64)
def _admins_from_bytes(data: bytes) -> AdminsRecord:
    v = _decode(data, "admins record")
    try:
        rec = AdminsRecord(tuple(bytes(k) for k in v["keys"]), int(v["threshold"]))
        for k in rec.keys:
            sm2.validate_public_key(k)
    except (KeyError, ValueError, TypeError, CertificatesError) as exc:
        raise _fail("admins", str(exc)) from exc
    if rec.to_bytes() != data or not 1 <= rec.threshold <= len(rec.keys):
        raise _fail("admins", "fields or threshold out of range")
    return rec


@dataclass(frozen=True)
class ValidatorsRecord:
    """The validator set, and a pending set that takes over at ``pending_height``."""

    current: ValidatorSet
    pending: ValidatorSet | None = None
    pending_height: int | None = None

    def set_at(self, height: int) -> ValidatorSet:
        """The set that signs block ``height`` (given no later change is applied)."""
        if self.pending is not None and self.pending_height is not None \
                and height >= self.pending_height:
            return self.pending
        return self.current

    def to_bytes(self) -> bytes:
        return canonical.encode({
            "current": self.current.to_value(),
            "pending": None if self.pending is None else self.pending.to_value(),
            "pending_height": self.pending_height,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> ValidatorsRecord:
        return _validators_from_bytes(bytes(data))


def validator_set_from_value(value: Any) -> ValidatorSet:
    """``ValidatorSet.to_value()`` back to a set; raises ValidatorSetError."""
    try:
        return ValidatorSet.of(
            Validator(str(v["name"]), bytes(v["public_key"]), str(v["address"])) for v in value
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidatorSetError(f"malformed validator list: {exc}") from exc


@lru_cache(maxsize=64)
def _validators_from_bytes(data: bytes) -> ValidatorsRecord:
    v = _decode(data, "validators record")
    try:
        pending = v["pending"]
        rec = ValidatorsRecord(
            validator_set_from_value(v["current"]),
            None if pending is None else validator_set_from_value(pending),
            None if v["pending_height"] is None else int(v["pending_height"]),
        )
    except (KeyError, TypeError, ValueError, ValidatorSetError) as exc:
        raise _fail("validators", str(exc)) from exc
    if rec.to_bytes() != data or (rec.pending is None) != (rec.pending_height is None):
        raise _fail("validators", "fields are inconsistent")
    return rec


def encode_tx_marker(height: int, index: int) -> bytes:
    """Value under ``b"tx:" + id``: where the transaction was applied."""
    return canonical.encode([height, index])


def decode_tx_marker(data: bytes) -> tuple[int, int]:
    v = _decode(data, "tx marker")
    if not (isinstance(v, list) and len(v) == 2 and all(_is_uint(x) for x in v)):
        raise _fail("tx marker", "expected [height, index]")
    return v[0], v[1]
