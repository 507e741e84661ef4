"""Transaction bodies: the values, kinds and strict field readers behind ``ledger.tx``.

Every body is a frozen dataclass built only through ``from_value`` (strict: exact map keys,
types and lengths, ``MalformedTxError`` naming the field); ``to_value`` yields canonical
values. ``parse_body(kind, value)`` picks the class for a kind (``BODY_TYPES``). Batch
records have a fast path (``_fast_anchor``) for the common well-formed case and fall back
to the strict reader to name what is wrong. The envelope, ids and signatures are in
``ledger.tx``, which re-exports everything public here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, Self

import msgpack

from certificates import canonical, sm2
from ledger.errors import MalformedTxError

TX_VERSION: Final = 1
DOMAIN_GOV: Final = "certledger/gov/v1"
MAX_TX_BYTES: Final = 32 * 1024 * 1024
MAX_BATCH: Final = 100_000  # enforced by ledger.state (reason batch_too_large)
NONCE_SIZE: Final = 16
KEY_ID_SIZE: Final = 16
SIGNATURE_SIZE: Final = 64
DIGEST_SIZE: Final = 32
MAX_ID_LEN: Final = 128
MAX_CODE_LEN: Final = 64
MAX_TEXT_LEN: Final = 512
MAX_LIST: Final = 1024  # types, approvals, validators per gov body
_UINT_MAX: Final = canonical.INT_MAX


def _pack(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


# --------------------------------------------------------------------------- field readers
# Each reader takes (value, path, js): ``js`` means the value came from JSON (bytes are
# hex strings, key order is free, strings are NFC-normalised instead of rejected).


def _text(v: Any, path: str, js: bool, max_len: int, min_len: int = 1) -> str:
    if type(v) is not str:
        raise MalformedTxError(path, f"expected a string, got {type(v).__name__}")
    if not v.isascii():
        if canonical.has_lone_surrogate(v):
            raise MalformedTxError(
                path, "string holds a lone surrogate (U+D800-U+DFFF), which is not Unicode text")
        if not unicodedata.is_normalized("NFC", v):
            if not js:
                raise MalformedTxError(path, "string is not in Unicode NFC (not canonical)")
            v = unicodedata.normalize("NFC", v)
    if not min_len <= len(v) <= max_len:
        raise MalformedTxError(path, f"length must be {min_len}..{max_len}, got {len(v)}")
    out: str = v
    return out


def _opt_text(v: Any, path: str, js: bool, max_len: int) -> str | None:
    return None if v is None else _text(v, path, js, max_len)


def _blob(v: Any, path: str, js: bool, size: int) -> bytes:
    if js:
        if type(v) is not str:
            raise MalformedTxError(path, f"expected a hex string, got {type(v).__name__}")
        try:
            v = bytes.fromhex(v)
        except ValueError:
            raise MalformedTxError(path, "not valid hex") from None
    elif type(v) is not bytes:
        raise MalformedTxError(path, f"expected bytes, got {type(v).__name__}")
    if len(v) != size:
        raise MalformedTxError(path, f"expected {size} bytes, got {len(v)}")
    out: bytes = v
    return out


def _uint(v: Any, path: str) -> int:
    if type(v) is not int or not 0 <= v <= _UINT_MAX:
        raise MalformedTxError(path, f"expected a non-negative integer, got {v!r:.40}")
    return v


def _list(v: Any, path: str, max_len: int) -> list[Any]:
    if type(v) is not list:
        raise MalformedTxError(path, f"expected a list, got {type(v).__name__}")
    if len(v) > max_len:
        raise MalformedTxError(path, f"at most {max_len} entries, got {len(v)}")
    return v


def _map(v: Any, path: str, js: bool, keys: tuple[str, ...]) -> dict[str, Any]:
    if type(v) is not dict:
        raise MalformedTxError(path, f"expected a map, got {type(v).__name__}")
    if (set(v) != set(keys)) if js else (tuple(v) != keys):
        raise MalformedTxError(
            path, f"expected exactly the keys {list(keys)}"
            + ("" if js else " in that order") + f", got {list(v)}"
        )
    return v


def _hex(b: bytes, js: bool) -> Any:
    return b.hex() if js else b


# --------------------------------------------------------------------------- values


class Anchor(NamedTuple):
    """What goes on the chain for one certificate: no personal data.

    Times are Unix epoch seconds, as in ``certificates.anchor.AnchorRecord``;
    ``valid_until`` None means no expiry.
    """

    id: str
    type: str
    issuer: str
    digest: bytes
    valid_from: int
    valid_until: int | None = None
    supersedes: str | None = None

    def to_value(self, js: bool = False) -> dict[str, Any]:
        return {  # keys in canonical (sorted) order
            "digest": _hex(self.digest, js), "id": self.id, "issuer": self.issuer,
            "supersedes": self.supersedes, "type": self.type, "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }


_ANCHOR_KEYS: Final = ("digest", "id", "issuer", "supersedes", "type", "valid_from",
                       "valid_until")


def load_anchor(v: Any, path: str = "anchor", js: bool = False) -> Anchor:
    fast = None if js else _fast_anchor(v)
    if fast is not None:
        return fast
    m = _map(v, path, js, _ANCHOR_KEYS)
    vu = m["valid_until"]
    return Anchor(
        _text(m["id"], path + ".id", js, MAX_ID_LEN),
        _text(m["type"], path + ".type", js, MAX_CODE_LEN),
        _text(m["issuer"], path + ".issuer", js, MAX_CODE_LEN),
        _blob(m["digest"], path + ".digest", js, DIGEST_SIZE),
        _uint(m["valid_from"], path + ".valid_from"),
        None if vu is None else _uint(vu, path + ".valid_until"),
        _opt_text(m["supersedes"], path + ".supersedes", js, MAX_ID_LEN),
    )


def _fast_anchor(v: Any) -> Anchor | None:
    """The common case of a decoded anchor (ASCII strings) in one expression, or None
    to let the field-by-field path decide and name the bad field. Batch decoding
    spends most of its time here."""
    if type(v) is not dict or tuple(v) != _ANCHOR_KEYS:
        return None
    digest, cid, issuer, sup, typ, vf, vu = v.values()
    if (
        type(cid) is str and 0 < len(cid) <= MAX_ID_LEN and cid.isascii()
        and type(typ) is str and 0 < len(typ) <= MAX_CODE_LEN and typ.isascii()
        and type(issuer) is str and 0 < len(issuer) <= MAX_CODE_LEN and issuer.isascii()
        and type(digest) is bytes and len(digest) == DIGEST_SIZE
        and type(vf) is int and vf >= 0 and (vu is None or (type(vu) is int and vu >= 0))
        and (sup is None or (type(sup) is str and 0 < len(sup) <= MAX_ID_LEN and sup.isascii()))
    ):
        return Anchor(cid, typ, issuer, digest, vf, vu, sup)
    return None


Approval = tuple[bytes, bytes]  # (admin key id, SM2 signature over approval_sign_bytes)


class ValidatorSpec(NamedTuple):
    name: str
    public_key: bytes
    address: str = ""


def _load_approvals(v: Any, path: str, js: bool) -> tuple[Approval, ...]:
    out: list[Approval] = []
    for i, a in enumerate(_list(v, path, MAX_LIST)):
        p = f"{path}[{i}]"
        if type(a) is not list or len(a) != 2:
            raise MalformedTxError(p, "expected [admin_key_id, signature]")
        out.append((_blob(a[0], p + "[0]", js, KEY_ID_SIZE),
                    _blob(a[1], p + "[1]", js, SIGNATURE_SIZE)))
    if len({k for k, _ in out}) != len(out):
        raise MalformedTxError(path, "the same admin key approves twice")
    return tuple(out)


def _load_codes(v: Any, path: str, js: bool) -> tuple[str, ...]:
    out = tuple(_text(c, f"{path}[{i}]", js, MAX_CODE_LEN)
                for i, c in enumerate(_list(v, path, MAX_LIST)))
    if len(set(out)) != len(out):
        raise MalformedTxError(path, "lists a code twice")
    return out


def _load_bool(v: Any, path: str) -> bool:
    if type(v) is not bool:
        raise MalformedTxError(path, f"expected true or false, got {v!r:.40}")
    return v


def _load_validators(v: Any, path: str, js: bool) -> tuple[ValidatorSpec, ...]:
    out = []
    for i, x in enumerate(_list(v, path, MAX_LIST)):
        p = f"{path}[{i}]"
        m = _map(x, p, js, ("address", "name", "public_key"))
        out.append(ValidatorSpec(
            _text(m["name"], p + ".name", js, MAX_CODE_LEN),
            _blob(m["public_key"], p + ".public_key", js, sm2.PUBLIC_KEY_SIZE),
            _text(m["address"], p + ".address", js, MAX_TEXT_LEN, min_len=0),
        ))
    return tuple(out)


# --------------------------------------------------------------------------- bodies


class Body:
    """Base of every body; subclasses list their fields in canonical order."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_value(self, js: bool = False) -> dict[str, Any]:
        return {f: _dump(getattr(self, f), js) for f in self.FIELDS}

    @classmethod
    def from_value(cls, v: Any, path: str = "body", js: bool = False) -> Self:
        m = _map(v, path, js, cls.FIELDS)
        return cls(**{f: _LOADERS[f](m[f], f"{path}.{f}", js) for f in cls.FIELDS})


def _dump(v: Any, js: bool) -> Any:
    if isinstance(v, bytes):
        return _hex(v, js)
    if isinstance(v, Anchor):
        return v.to_value(js)
    if isinstance(v, ValidatorSpec):
        return {"address": v.address, "name": v.name, "public_key": _hex(v.public_key, js)}
    if isinstance(v, tuple):
        return [_dump(x, js) for x in v]
    return v


@dataclass(frozen=True)
class IssueBody(Body):
    """``cert.issue``: the body *is* the anchor map."""

    anchor: Anchor

    def to_value(self, js: bool = False) -> dict[str, Any]:
        return self.anchor.to_value(js)

    @classmethod
    def from_value(cls, v: Any, path: str = "body", js: bool = False) -> Self:
        return cls(load_anchor(v, path, js))


@dataclass(frozen=True)
class IssueBatchBody(Body):
    """``cert.issue_batch``: up to MAX_BATCH anchors of one issuer, one signature."""

    FIELDS = ("issuer", "records")
    issuer: str
    records: tuple[Anchor, ...]


@dataclass(frozen=True)
class StatusBody(Body):
    """``cert.revoke`` / ``cert.suspend`` / ``cert.reinstate``."""

    FIELDS = ("id", "reason")
    id: str
    reason: str


@dataclass(frozen=True)
class SupersedeBody(Body):
    """``cert.supersede``: ``id`` becomes superseded; ``new`` (with supersedes=id) issued."""

    FIELDS = ("id", "new")
    id: str
    new: Anchor


@dataclass(frozen=True)
class GovBody(Body):
    """Base of ``gov.*`` bodies: ``approvals`` are m-of-n admin signatures."""

    approvals: tuple[Approval, ...]

    def value_without_approvals(self) -> dict[str, Any]:
        v = self.to_value()
        del v["approvals"]
        return v


@dataclass(frozen=True)
class RegisterIssuerBody(GovBody):
    FIELDS = ("approvals", "code", "name", "public_key", "types")
    code: str
    name: str
    public_key: bytes
    types: tuple[str, ...]


@dataclass(frozen=True)
class IssuerTypesBody(GovBody):
    """``gov.grant_types`` / ``gov.revoke_types``."""

    FIELDS = ("approvals", "code", "types")
    code: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class RotateKeyBody(GovBody):
    """``gov.rotate_issuer_key``: admins (m-of-n) or the issuer's current key (no approvals)."""

    FIELDS = ("approvals", "code", "public_key")
    code: str
    public_key: bytes


@dataclass(frozen=True)
class SetIssuerActiveBody(GovBody):
    FIELDS = ("active", "approvals", "code")
    active: bool
    code: str


@dataclass(frozen=True)
class GrantSupervisionBody(GovBody):
    FIELDS = ("approvals", "supervised", "supervisor")
    supervised: str
    supervisor: str


@dataclass(frozen=True)
class SetValidatorsBody(GovBody):
    FIELDS = ("approvals", "validators")
    validators: tuple[ValidatorSpec, ...]


def _load_records(v: Any, path: str, js: bool) -> tuple[Anchor, ...]:
    items = _list(v, path, 1 << 31)  # the count limit is state's (batch_too_large)
    if js:
        return tuple([load_anchor(a, f"{path}[{i}]", js) for i, a in enumerate(items)])
    fast = [_fast_anchor(a) for a in items]
    return tuple([a if a is not None else load_anchor(items[i], f"{path}[{i}]")
                  for i, a in enumerate(fast)])


_LOADERS: Final[dict[str, Any]] = {
    "issuer": lambda v, p, js: _text(v, p, js, MAX_CODE_LEN),
    "records": _load_records,
    "id": lambda v, p, js: _text(v, p, js, MAX_ID_LEN),
    "reason": lambda v, p, js: _text(v, p, js, MAX_TEXT_LEN, min_len=0),
    "new": load_anchor,
    "approvals": _load_approvals,
    "code": lambda v, p, js: _text(v, p, js, MAX_CODE_LEN),
    "name": lambda v, p, js: _text(v, p, js, MAX_TEXT_LEN),
    "public_key": lambda v, p, js: _blob(v, p, js, sm2.PUBLIC_KEY_SIZE),
    "types": _load_codes,
    "active": lambda v, p, js: _load_bool(v, p),
    "supervised": lambda v, p, js: _text(v, p, js, MAX_CODE_LEN),
    "supervisor": lambda v, p, js: _text(v, p, js, MAX_CODE_LEN),
    "validators": _load_validators,
}

BODY_TYPES: Final[dict[str, type[Body]]] = {
    "cert.issue": IssueBody,
    "cert.issue_batch": IssueBatchBody,
    "cert.revoke": StatusBody,
    "cert.suspend": StatusBody,
    "cert.reinstate": StatusBody,
    "cert.supersede": SupersedeBody,
    "gov.register_issuer": RegisterIssuerBody,
    "gov.grant_types": IssuerTypesBody,
    "gov.revoke_types": IssuerTypesBody,
    "gov.rotate_issuer_key": RotateKeyBody,
    "gov.set_issuer_active": SetIssuerActiveBody,
    "gov.grant_supervision": GrantSupervisionBody,
    "gov.set_validators": SetValidatorsBody,
}
KINDS: Final = tuple(BODY_TYPES)


def parse_body(kind: str, value: Any, *, js: bool = False) -> Body:
    """Strictly parse a body for ``kind`` (a plain map, canonical unless ``js``)."""
    cls = BODY_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedTxError("kind", f"unknown kind {kind!r:.60}; expected one of {KINDS}")
    return cls.from_value(value, "body", js)
