"""Evidence as a node sends it: a record (or its absence), an SMT proof, a header, a commit.

A ``StateEvidence`` is one node's answer for one state key (``b"cert:" + id`` or
``b"issuer:" + code``), *unchecked*: the header as its exact canonical bytes (so
SM3 of them is the block hash the commit signs, with no re-encoding), the SMT
proof bytes, the commit certificate and, optionally, the validator set the node
says signed that height (used only if its hash is one a trusted header names;
see ``lightclient``). ``Evidence`` pairs a certificate's evidence with its
issuer's. Nothing here checks anything: ``lightclient`` does.

``state_from_json`` reads the node API's JSON view (``node/views.py``:
``certificate_json``; bytes as lower-case hex, ``header_bytes``, ``record_bytes``,
``proof``, ``commit``, ``validators``); the same shape serves for issuers and is
what ``state_to_json`` writes, so evidence saved for offline use round-trips.
``batch_from_json`` reads ``POST /v1/state/batch`` (``state_batch_body``): the
header, commit and validators once, then one ``StateEvidence`` per asked key - each
under the key *we* asked for, whatever the node says it answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ledger.block import BlockHeader
from ledger.commit import CommitCertificate, CommitSig, Validator, ValidatorSet
from ledger.errors import LedgerError
from ledger.records import CERT_PREFIX, ISSUER_PREFIX, cert_key, issuer_key
from verifier.errors import SourceError

#: Upper bounds on what one answer may hold: an SMT proof has at most 256 siblings.
_MAX_PROOF_HEX = 2 * (3 + 32 + 256 * 32 + 64)
_MAX_RECORD_HEX = 2 * 64 * 1024
_MAX_SIGNATURES = 1024


@dataclass(frozen=True)
class StateEvidence:
    """One node's unchecked answer for the state under ``key``."""

    key: bytes
    record: bytes | None
    proof: bytes
    header: bytes
    commit: CommitCertificate
    validators: ValidatorSet | None = None
    source: str = ""

    @property
    def height(self) -> int:
        return self.commit.height


@dataclass(frozen=True)
class Evidence:
    """What a verification needs from the chain: the certificate's state and its issuer's.

    ``issuer`` is None when the node cannot prove issuer records; the verifier then
    falls back to the issuer records of its trust bundle (or genesis).
    """

    certificate: StateEvidence
    issuer: StateEvidence | None = None


# --------------------------------------------------------------------------- JSON


def _hex(obj: dict[str, Any], name: str, limit: int, *, size: int | None = None,
         optional: bool = False) -> bytes | None:
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise SourceError(f"evidence field {name!r} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise SourceError(f"evidence field {name!r} is not hex") from exc
    if size is not None and len(raw) != size:
        raise SourceError(f"evidence field {name!r} must be {size} bytes")
    return raw


def _need(value: bytes | None) -> bytes:
    assert value is not None  # _hex without optional never returns None
    return value


def commit_from_json(obj: object) -> CommitCertificate:
    """The node's ``commit_json`` view back to a ``CommitCertificate``."""
    if not isinstance(obj, dict):
        raise SourceError("evidence commit must be an object")
    sigs = obj.get("signatures")
    height, round_ = obj.get("height"), obj.get("round")
    # Within 64 bits: the sign-bytes encode them, and canonical encoding refuses more.
    if type(height) is not int or type(round_) is not int or not 1 <= height < 2**63 \
            or not 0 <= round_ < 2**63:
        raise SourceError("evidence commit height and round must be 64-bit integers "
                          "(height >= 1, round >= 0)")
    if not isinstance(sigs, list) or len(sigs) > _MAX_SIGNATURES:
        raise SourceError("evidence commit signatures must be a list")
    parsed = []
    for s in sigs:
        if not isinstance(s, dict):
            raise SourceError("evidence commit signature must be an object")
        parsed.append(CommitSig(_need(_hex(s, "key_id", 32, size=16)),
                                _need(_hex(s, "signature", 128, size=64))))
    block_hash = _need(_hex(obj, "block_hash", 64, size=32))
    return CommitCertificate(height, round_, block_hash, tuple(parsed))


def commit_to_json(c: CommitCertificate) -> dict[str, Any]:
    return {"height": c.height, "round": c.round, "block_hash": c.block_hash.hex(),
            "signatures": [{"key_id": s.key_id.hex(), "signature": s.signature.hex()}
                           for s in c.signatures]}


@lru_cache(maxsize=256)
def decode_header_bytes(data: bytes) -> BlockHeader:
    """``BlockHeader.decode``, remembered: every answer from one block carries the same bytes."""
    return BlockHeader.decode(data)  # a LedgerError is raised again, never cached


@lru_cache(maxsize=64)
def _validator_set(items: tuple[tuple[str, str, str], ...]) -> ValidatorSet:
    try:
        return ValidatorSet.of(Validator(name, _need(_hex({"k": key}, "k", 130, size=65)), addr)
                               for name, key, addr in items)
    except LedgerError as exc:
        raise SourceError(f"validators: {exc}") from exc


def validators_from_json(obj: object) -> ValidatorSet:
    """A list of ``{name, public_key, address}``, or the node's ``{"validators": [...]}``."""
    items = obj.get("validators") if isinstance(obj, dict) else obj
    if not isinstance(items, list) or not items or len(items) > _MAX_SIGNATURES:
        raise SourceError("validators must be a non-empty list")
    if all(isinstance(v, dict) and isinstance(v.get("public_key"), str) for v in items):
        # The same set comes with every answer: parse (and check the keys) once.
        return _validator_set(tuple((str(v.get("name", "")), v["public_key"],
                                     str(v.get("address", ""))) for v in items))
    try:
        out = []
        for v in items:
            if not isinstance(v, dict):
                raise SourceError("validator must be an object")
            out.append(Validator(str(v.get("name", "")), _need(_hex(v, "public_key", 130, size=65)),
                                 str(v.get("address", ""))))
        return ValidatorSet.of(out)
    except LedgerError as exc:
        raise SourceError(f"validators: {exc}") from exc


def validators_to_json(vs: ValidatorSet) -> list[dict[str, Any]]:
    return [{"name": v.name, "public_key": v.public_key.hex(), "address": v.address}
            for v in vs.validators]


def state_from_json(obj: object, key: bytes, source: str = "") -> StateEvidence:
    """Parse one answer for ``key``; ``SourceError`` if it is not in the expected shape."""
    if not isinstance(obj, dict):
        raise SourceError("evidence must be a JSON object")
    header = _need(_hex(obj, "header_bytes", 4096))
    try:
        decode_header_bytes(header)  # fail early on junk; the light client decodes again
    except LedgerError as exc:
        raise SourceError(f"evidence header: {exc}") from exc
    validators = obj.get("validators")
    return StateEvidence(
        key=key,
        record=_hex(obj, "record_bytes", _MAX_RECORD_HEX, optional=True),
        proof=_need(_hex(obj, "proof", _MAX_PROOF_HEX)),
        header=header,
        commit=commit_from_json(obj.get("commit")),
        validators=None if validators is None else validators_from_json(validators),
        source=source,
    )


def batch_from_json(obj: object, keys: Sequence[bytes], source: str = ""
                    ) -> list[StateEvidence | SourceError]:
    """One batch answer split into per-key evidence, in the order of ``keys``.

    ``keys`` are the certificate keys then the issuer keys, as they were asked. A
    malformed header, commit or validators fails the whole answer (``SourceError``
    raised); a malformed or mismatched entry fails its key only.
    """
    if not isinstance(obj, dict):
        raise SourceError("batch answer must be a JSON object")
    header = _need(_hex(obj, "header_bytes", 4096))
    try:
        decode_header_bytes(header)
    except LedgerError as exc:
        raise SourceError(f"batch header: {exc}") from exc
    commit = commit_from_json(obj.get("commit"))
    vobj = obj.get("validators")
    validators = None if vobj is None else validators_from_json(vobj)
    certs, issuers = obj.get("certificates"), obj.get("issuers")
    if not isinstance(certs, list) or not isinstance(issuers, list):
        raise SourceError("batch answer needs 'certificates' and 'issuers' lists")
    entries = iter(certs + issuers)
    out: list[StateEvidence | SourceError] = []
    for key in keys:
        entry = next(entries, None)
        prefix, ident = (CERT_PREFIX, "id") if key.startswith(CERT_PREFIX) else \
            (ISSUER_PREFIX, "code")
        try:
            if not isinstance(entry, dict):
                raise SourceError("batch answer has no entry for this key")
            if entry.get(ident) != key[len(prefix):].decode("utf-8"):
                raise SourceError(f"batch entry is for {str(entry.get(ident))[:80]!r}, "
                                  "not the key asked")
            out.append(StateEvidence(
                key=key, record=_hex(entry, "record_bytes", _MAX_RECORD_HEX, optional=True),
                proof=_need(_hex(entry, "proof", _MAX_PROOF_HEX)), header=header,
                commit=commit, validators=validators, source=source))
        except SourceError as exc:
            out.append(exc)
    return out


def state_to_json(ev: StateEvidence) -> dict[str, Any]:
    return {
        "key": ev.key.decode("utf-8", "replace"),
        "record_bytes": None if ev.record is None else ev.record.hex(),
        "proof": ev.proof.hex(),
        "header_bytes": ev.header.hex(),
        "commit": commit_to_json(ev.commit),
        "validators": None if ev.validators is None else validators_to_json(ev.validators),
        "source": ev.source,
    }


def evidence_to_json(ev: Evidence) -> dict[str, Any]:
    return {"format": "certledger/evidence/v1", "certificate": state_to_json(ev.certificate),
            "issuer": None if ev.issuer is None else state_to_json(ev.issuer)}


def evidence_from_json(obj: object, cert_id: str, issuer_code: str) -> Evidence:
    """Saved evidence (``evidence_to_json``), or a bare node answer for the certificate."""
    if isinstance(obj, dict) and obj.get("format") == "certledger/evidence/v1":
        issuer = obj.get("issuer")
        return Evidence(
            state_from_json(obj.get("certificate"), cert_key(cert_id), "saved evidence"),
            None if issuer is None
            else state_from_json(issuer, issuer_key(issuer_code), "saved evidence"),
        )
    return Evidence(state_from_json(obj, cert_key(cert_id), "saved evidence"))
