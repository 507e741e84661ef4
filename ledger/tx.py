"""Transactions: the signed envelope, its kinds and bodies, strict decoding.

Envelope (canonical msgpack map)::

    {body, chain_id, kind, nonce, signature, signer_key_id, v}

* ``sign_bytes()`` = ``canonical.sign_bytes(DOMAIN_TX, chain_id,
  {body, kind, nonce, signer_key_id, v})`` - one SM2 signature by the key whose id
  is ``signer_key_id``; for ``cert.issue_batch`` it covers every record, so a batch
  costs one signature check however large it is.
* tx id = SM3 of the full envelope bytes (signature included).
* ``gov.*`` bodies also carry ``approvals``: ``[admin_key_id, signature]`` pairs over
  ``approval_sign_bytes`` (domain ``certledger/gov/v1``: kind, the body without its
  approvals, nonce), so m-of-n admins approve one exact change. ``gov_tx`` builds one.

Decoding is strict and fast. ``from_bytes`` accepts only the exact canonical
encoding (it re-packs the decoded value and compares; map keys must arrive in
canonical order and strings in NFC), checks every field's type and length, and
raises ``MalformedTxError`` naming the field. It never re-normalises a large body:
the body's bytes are sliced from the input and reused for ``sign_bytes`` and the
tx id, which keeps a 100,000-record batch cheap to decode and verify. Semantic
checks (identifiers, keys on the curve, permissions) belong to ``ledger.state``.

Bodies are frozen dataclasses built only through ``from_value`` (strict) - use
``Transaction.create``, ``gov_tx``, ``from_bytes`` or ``from_json``; ``to_value``
then yields canonical values, which is why plain ``msgpack.packb`` is the
canonical encoding here (tests check it against ``canonical.encode``).
"""

from __future__ import annotations

import dataclasses
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Final, NamedTuple, Self

import msgpack

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from certificates.hashing import sm3
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
    if not v.isascii() and not unicodedata.is_normalized("NFC", v):
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


# --------------------------------------------------------------------------- envelope

_ENVELOPE_KEYS: Final = ("body", "chain_id", "kind", "nonce", "signature", "signer_key_id", "v")
_K = {k: _pack(k) for k in _ENVELOPE_KEYS}
_BODY_OFFSET: Final = 1 + len(_K["body"])  # fixmap header + "body"


@dataclass(frozen=True, eq=False)
class Transaction:
    """A signed transaction; equal iff the signed envelope bytes are equal."""

    v: int
    chain_id: str
    kind: str
    body: Body
    signer_key_id: bytes
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if type(self.v) is not int or self.v != TX_VERSION:
            raise MalformedTxError("v", f"unsupported version {self.v!r:.20}, expected 1")
        _text(self.chain_id, "chain_id", False, 64)
        cls = BODY_TYPES.get(self.kind)
        if cls is None:
            raise MalformedTxError("kind", f"unknown kind {self.kind!r:.60}")
        if type(self.body) is not cls:
            raise MalformedTxError("body", f"{self.kind} needs a {cls.__name__}")
        _blob(self.signer_key_id, "signer_key_id", False, KEY_ID_SIZE)
        _blob(self.nonce, "nonce", False, NONCE_SIZE)
        _blob(self.signature, "signature", False, SIGNATURE_SIZE)

    # ---- bytes, id, sign-bytes (all cached: a tx is checked many times)

    @cached_property
    def body_bytes(self) -> bytes:
        return _pack(self.body.to_value())

    @cached_property
    def _tail(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        return (_pack(self.chain_id), _pack(self.kind), _pack(self.nonce),
                _pack(self.signer_key_id), _pack(self.v))

    def to_bytes(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        chain, kind, nonce, skid, v = self._tail
        return b"".join((
            b"\x87", _K["body"], self.body_bytes, _K["chain_id"], chain, _K["kind"], kind,
            _K["nonce"], nonce, _K["signature"], _pack(self.signature),
            _K["signer_key_id"], skid, _K["v"], v,
        ))

    @cached_property
    def id(self) -> bytes:
        return sm3(self._encoded)

    def sign_bytes(self) -> bytes:
        return self._sign_bytes

    @cached_property
    def _sign_bytes(self) -> bytes:
        _, kind, nonce, skid, v = self._tail
        # canonical.sign_bytes(..., None) ends with encode(None) = 0xc0; keep its prefix.
        prefix = canonical.sign_bytes(canonical.DOMAIN_TX, self.chain_id, None)[:-1]
        return b"".join((
            prefix, b"\x85", _K["body"], self.body_bytes, _K["kind"], kind, _K["nonce"], nonce,
            _K["signer_key_id"], skid, _K["v"], v,
        ))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transaction) and self._encoded == other._encoded

    def __hash__(self) -> int:
        return hash(self.id)

    # ---- construction

    @classmethod
    def create(
        cls, kind: str, body: Body | Mapping[str, Any], signer: sm2.PrivateKey, chain_id: str,
        nonce: bytes | None = None,
    ) -> Transaction:
        """Build and sign a transaction; ``body`` is a Body or a plain map for ``kind``."""
        value = body.to_value() if isinstance(body, Body) else body
        try:
            value = canonical.normalize(value)
            chain_id = canonical.normalize(chain_id)
        except CertificatesError as exc:
            raise MalformedTxError("body", str(exc)) from exc
        parsed = parse_body(kind, value)
        nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
        unsigned = cls(TX_VERSION, chain_id, kind, parsed, signer.public.key_id, nonce,
                       b"\x00" * SIGNATURE_SIZE)
        tx = dataclasses.replace(unsigned, signature=signer.sign(unsigned.sign_bytes()))
        tx.__dict__["body_bytes"] = unsigned.body_bytes  # reuse: a batch body is large
        return tx

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Transaction:
        """Strict decode; raises MalformedTxError naming the field, never anything else."""
        data = bytes(data)
        if len(data) > MAX_TX_BYTES:
            raise MalformedTxError("tx", f"{len(data)} bytes, limit is {MAX_TX_BYTES}")
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # msgpack raises many unrelated types on junk
            raise MalformedTxError("tx", f"not valid msgpack ({type(exc).__name__})") from exc
        env = _map(value, "envelope", False, _ENVELOPE_KEYS)
        try:
            canonical_bytes = _pack(value) == data
        except Exception as exc:  # e.g. ext types msgpack cannot re-pack
            raise MalformedTxError("tx", f"cannot re-encode ({type(exc).__name__})") from exc
        if not canonical_bytes:
            raise MalformedTxError("tx", "encoding is not canonical (integer or length widths)")
        kind = env["kind"]
        if type(kind) is not str:
            raise MalformedTxError("kind", "expected a string")
        body = parse_body(kind, env["body"])
        tx = cls(env["v"], env["chain_id"], kind, body, env["signer_key_id"], env["nonce"],
                 env["signature"])
        # The body's bytes are the input's, between "body" and "chain_id": no re-encoding.
        tail = len(data) - _BODY_OFFSET - (len(tx._tail_bytes()))
        tx.__dict__["body_bytes"] = data[_BODY_OFFSET:_BODY_OFFSET + tail]
        tx.__dict__["_encoded"] = data
        return tx

    def _tail_bytes(self) -> bytes:
        chain, kind, nonce, skid, v = self._tail
        return b"".join((_K["chain_id"], chain, _K["kind"], kind, _K["nonce"], nonce,
                         _K["signature"], _pack(self.signature), _K["signer_key_id"], skid,
                         _K["v"], v))

    # ---- JSON (HTTP API): bytes as lowercase hex

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(), "v": self.v, "chain_id": self.chain_id, "kind": self.kind,
            "body": self.body.to_value(js=True), "signer_key_id": self.signer_key_id.hex(),
            "nonce": self.nonce.hex(), "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Transaction:
        """Parse ``to_json()`` output; an ``id``, if present, must match."""
        if not isinstance(obj, Mapping):
            raise MalformedTxError("tx", "expected a JSON object")
        extra = set(obj) - set(_ENVELOPE_KEYS) - {"id"}
        missing = set(_ENVELOPE_KEYS) - set(obj)
        if extra or missing:
            raise MalformedTxError(
                "tx", f"unknown fields {sorted(extra)}, missing fields {sorted(missing)}"
            )
        kind = obj["kind"]
        tx = cls(
            obj["v"], _text(obj["chain_id"], "chain_id", True, 64), kind,
            parse_body(kind, obj["body"], js=True),
            _blob(obj["signer_key_id"], "signer_key_id", True, KEY_ID_SIZE),
            _blob(obj["nonce"], "nonce", True, NONCE_SIZE),
            _blob(obj["signature"], "signature", True, SIGNATURE_SIZE),
        )
        if "id" in obj and obj["id"] != tx.id.hex():
            raise MalformedTxError("id", f"does not match the transaction ({tx.id.hex()})")
        return tx


# --------------------------------------------------------------------------- signatures


def verify_signature(tx: Transaction, public_key: bytes) -> bool:
    """True iff ``public_key`` has id ``tx.signer_key_id`` and signed ``tx.sign_bytes()``.

    The expensive check (~1 ms): callers cache the result by ``tx.id``.
    """
    try:
        if sm2.key_id(public_key) != tx.signer_key_id:
            return False
        return sm2.verify(public_key, tx.sign_bytes(), tx.signature)
    except CertificatesError:
        return False


def approval_sign_bytes(chain_id: str, kind: str, body: GovBody, nonce: bytes) -> bytes:
    """What each admin signs to approve a governance transaction."""
    return canonical.sign_bytes(
        DOMAIN_GOV, chain_id, {"body": body.value_without_approvals(), "kind": kind,
                               "nonce": nonce},
    )


def verify_approval(tx: Transaction, public_key: bytes, signature: bytes) -> bool:
    body = tx.body
    if not isinstance(body, GovBody):
        return False
    try:
        msg = approval_sign_bytes(tx.chain_id, tx.kind, body, tx.nonce)
        return sm2.verify(public_key, msg, signature)
    except CertificatesError:
        return False


def gov_tx(
    kind: str, body: Body | Mapping[str, Any], admins: list[sm2.PrivateKey], chain_id: str,
    nonce: bytes | None = None,
) -> Transaction:
    """A governance tx approved by every key in ``admins``; ``admins[0]`` signs the envelope.

    Any ``approvals`` already in ``body`` are replaced.
    """
    if not kind.startswith("gov.") or not admins:
        raise MalformedTxError("kind", "gov_tx needs a gov.* kind and at least one admin")
    value = dict(body.to_value() if isinstance(body, Body) else body)
    value["approvals"] = []
    nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
    draft = parse_body(kind, canonical.normalize(value))
    assert isinstance(draft, GovBody)
    msg = approval_sign_bytes(chain_id, kind, draft, nonce)
    value["approvals"] = sorted([a.public.key_id, a.sign(msg)] for a in admins)
    return Transaction.create(kind, value, admins[0], chain_id, nonce)
