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
tx id, which keeps a 100,000-record batch cheap to decode and verify. A
``cert.issue_batch`` in its common form (ASCII text, shortest forms) has its records read
straight from the bytes by ``ledger/_anchors.c`` where that is built (0.5 us a record
instead of 3.7); whatever it declines is decoded the general way. Semantic
checks (identifiers, keys on the curve, permissions) belong to ``ledger.state``.

Bodies are frozen dataclasses built only through ``from_value`` (strict) - use
``Transaction.create``, ``gov_tx``, ``from_bytes`` or ``from_json``; ``to_value``
then yields canonical values, which is why plain ``msgpack.packb`` is the
canonical encoding here (tests check it against ``canonical.encode``).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import msgpack

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.errors import MalformedTxError
from ledger.tx_body import (
    BODY_TYPES,
    DIGEST_SIZE,
    DOMAIN_GOV,
    KEY_ID_SIZE,
    KINDS,
    MAX_BATCH,
    MAX_CODE_LEN,
    MAX_ID_LEN,
    MAX_LIST,
    MAX_TEXT_LEN,
    MAX_TX_BYTES,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    TX_VERSION,
    Anchor,
    Approval,
    Body,
    GovBody,
    GrantSupervisionBody,
    IssueBatchBody,
    IssueBody,
    IssuerTypesBody,
    RegisterIssuerBody,
    RotateKeyBody,
    SetIssuerActiveBody,
    SetValidatorsBody,
    StatusBody,
    SupersedeBody,
    ValidatorSpec,
    _blob,
    _map,
    _pack,
    _text,
    load_anchor,
    parse_body,
)

try:
    from ledger import _anchors
except ImportError:  # built by the install where a compiler is at hand (setup.py)
    _anchors = None  # type: ignore[assignment]

# The bodies and limits live in ledger.tx_body; this module is their public face.
__all__ = [
    "BODY_TYPES",
    "DIGEST_SIZE",
    "DOMAIN_GOV",
    "KEY_ID_SIZE",
    "KINDS",
    "MAX_BATCH",
    "MAX_CODE_LEN",
    "MAX_ID_LEN",
    "MAX_LIST",
    "MAX_TEXT_LEN",
    "MAX_TX_BYTES",
    "NONCE_SIZE",
    "SIGNATURE_SIZE",
    "TX_VERSION",
    "Anchor",
    "Approval",
    "Body",
    "GovBody",
    "GrantSupervisionBody",
    "IssueBatchBody",
    "IssueBody",
    "IssuerTypesBody",
    "RegisterIssuerBody",
    "RotateKeyBody",
    "SetIssuerActiveBody",
    "SetValidatorsBody",
    "StatusBody",
    "SupersedeBody",
    "Transaction",
    "ValidatorSpec",
    "approval_sign_bytes",
    "gov_tx",
    "load_anchor",
    "parse_body",
    "verify_approval",
    "verify_signature",
]

# --------------------------------------------------------------------------- envelope

_ENVELOPE_KEYS: Final = ("body", "chain_id", "kind", "nonce", "signature", "signer_key_id", "v")
_K = {k: _pack(k) for k in _ENVELOPE_KEYS}
_BODY_OFFSET: Final = 1 + len(_K["body"])  # fixmap header + "body"
#: A batch's bytes up to its issuer's value: the envelope's fixmap, "body", the body's
#: fixmap and "issuer" (keys in canonical order: body first, issuer before records).
_BATCH_HEAD: Final = b"\x87" + _K["body"] + b"\x82" + _pack("issuer")
_TAIL_KEYS: Final = _ENVELOPE_KEYS[1:]


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

    @cached_property
    def memo(self) -> dict[str, Any]:
        """Results of pure functions of this tx that a check may reuse, each stored with the
        other inputs it depended on (``ledger.state_cert`` keeps a batch's stateless record
        checks here). Local to this object: never encoded, never compared."""
        return {}

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
        if _anchors is not None and data.startswith(_BATCH_HEAD):
            tx = cls._batch_from_bytes(data)
            if tx is not None:
                return tx
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

    @classmethod
    def _batch_from_bytes(cls, data: bytes) -> Transaction | None:
        """A ``cert.issue_batch`` in its common form, its records decoded by
        ``ledger/_anchors.c`` (~3.5 us a record the general way); None if anything is
        unusual, and ``from_bytes`` goes the general way, which decides and names faults.
        Canonical as a whole: the head is matched byte for byte, the C part accepts only
        canonical records, and the rest must re-pack to itself with its keys in order."""
        parsed = _anchors.load_batch(data, len(_BATCH_HEAD), Anchor, MAX_ID_LEN, MAX_CODE_LEN)
        if parsed is None:
            return None
        issuer, records, end = parsed
        rest = b"\x86" + data[end:]  # chain_id .. v: the envelope's other six entries
        try:
            tail = msgpack.unpackb(rest, raw=False, strict_map_key=True, use_list=True)
            if (type(tail) is not dict or tuple(tail) != _TAIL_KEYS or _pack(tail) != rest
                    or tail["kind"] != "cert.issue_batch"):
                return None
            tx = cls(tail["v"], tail["chain_id"], "cert.issue_batch",
                     IssueBatchBody(issuer, records), tail["signer_key_id"], tail["nonce"],
                     tail["signature"])
        except Exception:  # any doubt goes the general way
            return None
        tx.__dict__["body_bytes"] = data[_BODY_OFFSET:end]
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
