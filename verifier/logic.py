"""Verification logic, framework-free: (what is shown, evidence, trust, now) -> Verdict.

``verify`` runs every check, always in the same order and under stable names, so a
caller sees *why* a certificate fails, not only that it does:

=====================  ==================================================================
commit_certificate     the header of the evidence is signed by 2f+1 trusted validators
state_proof            the SMT proof puts the record (or its absence) in that header's state
anchored               a record for this certificate id exists in that committed state
integrity              the digest recomputed from the presentation equals the on-chain digest,
                       and the presentation's dates/supersedes equal the record's
issuer_signature       the record's signing key is a key of its issuer, valid at the height it
                       was issued (from the issuer record, proven or from the trust bundle);
                       with a signed anchor supplied, its SM2 signature is verified too
issuer_authorized      the issuer is registered, active, and granted the certificate type
status                 the record's status is ``issued`` (not suspended/revoked/superseded)
validity_period        valid_from <= now <= valid_until (the on-chain values)
not_superseded         no newer version replaced it
presentation_expiry    a short-lived QR presentation is holder-signed and not expired
=====================  ==================================================================

``valid`` is true only when every check passes. Where a check cannot run because an
earlier one failed (no trusted record), it fails and says so. The verdict carries
the disclosed values for the caller to show; nothing here stores anything.

On ``issuer_signature``: the node API exposes the record (with ``signer_key_id`` and
the issuing ``tx_id``), not the transaction bytes, so the tx's SM2 signature itself
was checked by the validators whose commit certifies the block; the verifier checks
that the key is the issuer's and was valid then. A ``SignedAnchor`` (the issuer's
SM2 signature over the anchor record), when the holder has one, is verified here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from certificates.anchor import SignedAnchor
from certificates.disclosure import Presentation
from certificates.document import CommittedDocument, DocumentMeta, FieldValue, field_value_to_json
from certificates.errors import CertificatesError
from certificates.sm2 import PublicKey
from ledger.block import BlockHeader
from ledger.errors import LedgerError
from ledger.records import CertRecord, IssuerRecord, cert_key, issuer_key
from verifier.compact import CompactPresentation
from verifier.errors import EvidenceError, InputError, PayloadError
from verifier.evidence import Evidence, StateEvidence
from verifier.lightclient import check_header, check_proof
from verifier.qr import QrPayload, verify_holder_signature
from verifier.trust import TrustedState

CHECK_NAMES: Final = (
    "commit_certificate", "state_proof", "anchored", "integrity", "issuer_signature",
    "issuer_authorized", "status", "validity_period", "not_superseded", "presentation_expiry",
)

Shown = Presentation | CommittedDocument | CompactPresentation | QrPayload


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    valid: bool
    checks: tuple[Check, ...]
    certificate: dict[str, Any]
    disclosed: dict[str, Any]
    anchored_at: int | None
    evidence: dict[str, Any] | None = None

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
                "certificate": self.certificate, "disclosed": self.disclosed,
                "anchored_at": self.anchored_at, "evidence": self.evidence}


@dataclass(frozen=True)
class Subject:
    """What was shown, reduced to what the checks need."""

    meta: DocumentMeta
    digest: bytes
    disclosed: Mapping[str, FieldValue]
    qr: QrPayload | None = None


def subject_of(shown: Shown | Subject) -> Subject:
    """InputError if the presentation is malformed (that is the caller's 400, not a verdict).

    Recomputing the digest is the costly part: callers keep the Subject and pass it on.
    """
    if isinstance(shown, Subject):
        return shown
    try:
        if isinstance(shown, QrPayload):
            p = shown.presentation
            return Subject(p.meta, p.digest(), p.disclosed(), shown)
        if isinstance(shown, CommittedDocument):
            d = shown.document
            values = {n: v for n, v in d.leaf_values().items() if n != "$meta"}
            return Subject(d.meta, shown.digest, values)
        return Subject(shown.meta, shown.digest(), shown.disclosed())
    except (CertificatesError, PayloadError) as exc:
        raise InputError(f"the presentation is malformed: {exc}") from exc


@lru_cache(maxsize=4096)  # the same few dates (valid_from, now to the second) recur
def _when(seconds: int | float) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


@dataclass
class _Run:
    checks: dict[str, Check] = field(default_factory=dict)

    def put(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = Check(name, ok, detail)


@dataclass(frozen=True)
class _Chain:
    """What one piece of evidence establishes: a trusted record (or proven absence), or not."""

    record: bytes | None
    failure: str | None  # None: the record (or its absence) is proven
    commit_detail: str
    proof_detail: str
    header: BlockHeader | None  # set when the commit certificate verified

    @property
    def proven(self) -> bool:
        return self.failure is None


def _chain_state(ev: StateEvidence | None, want_key: bytes, trusted: TrustedState) -> _Chain:
    if ev is None:
        why = "no evidence from the chain"
        return _Chain(None, why, why, "not checked: " + why, None)
    try:
        header, vs, _ = check_header(ev.header, ev.commit, trusted, ev.validators)
    except EvidenceError as exc:
        return _Chain(None, exc.detail, exc.detail,
                      "not checked: the commit certificate did not verify", None)
    commit_detail = (f"{len(ev.commit.signatures)} of {len(vs)} validators (quorum "
                     f"{vs.quorum}) signed block {header.height} ({header.hash.hex()[:16]}…)")
    if ev.key != want_key:
        why = "the evidence is for another state key"
        return _Chain(None, why, commit_detail, why, header)
    try:
        check_proof(ev.key, ev.record, ev.proof, header)
    except EvidenceError as exc:
        return _Chain(None, exc.detail, commit_detail, exc.detail, header)
    claim = "absence" if ev.record is None else "record"
    return _Chain(ev.record, None, commit_detail,
                  f"{claim} proven under the state root of block {header.height}", header)


def _issuer(evidence: Evidence | None, code: str, trusted: TrustedState
            ) -> tuple[IssuerRecord | None, str]:
    """The issuer record and where it came from; (None, why) when there is none."""
    ev = None if evidence is None else evidence.issuer
    if ev is None:
        rec = trusted.issuers.get(code)
        if rec is None:
            return None, f"issuer {code} is not registered in the trust bundle"
        return rec, f"trust bundle (height {trusted.issuers_height})"
    st = _chain_state(ev, issuer_key(code), trusted)
    if st.failure is not None or st.header is None:
        return None, f"issuer evidence refused: {st.failure}"
    if st.record is None:
        return None, (f"issuer {code} is not registered (absence proven at block "
                      f"{st.header.height})")
    try:
        return IssuerRecord.from_bytes(st.record), f"block {st.header.height}"
    except LedgerError as exc:
        return None, f"issuer record is malformed: {exc}"


def verify(shown: Shown | Subject, evidence: Evidence | None, trusted: TrustedState,
           now: float, *, anchor: SignedAnchor | None = None) -> Verdict:
    s = subject_of(shown)
    meta, run = s.meta, _Run()
    cert_ev = None if evidence is None else evidence.certificate
    st = _chain_state(cert_ev, cert_key(meta.id), trusted)
    header = st.header
    run.put("commit_certificate", header is not None, st.commit_detail)
    run.put("state_proof", st.proven, st.proof_detail)
    chain_ok = st.proven
    record: CertRecord | None = None
    if st.record is not None:
        try:
            record = CertRecord.from_bytes(st.record)
        except LedgerError as exc:
            chain_ok = False
            run.put("state_proof", False, f"the proven record is malformed: {exc}")
    if record is not None and record.id != meta.id:
        record, chain_ok = None, False
        run.put("state_proof", False, "the proven record is for another certificate")
    if not chain_ok or header is None:
        no_record = "no trusted on-chain record: " + (st.failure or "see state_proof")
    else:
        no_record = f"{meta.id} is not on the chain (absence proven at block {header.height})"
    if record is None:
        run.put("anchored", False, no_record)
        for name in ("integrity", "issuer_signature", "status", "validity_period",
                     "not_superseded"):
            run.put(name, False, no_record)
    else:
        run.put("anchored", True, f"anchored at block {record.issued_height}")
        _integrity(run, s, record)
        _record_checks(run, record, now)
    issuer, source = _issuer(evidence, meta.issuer, trusted)
    _issuer_checks(run, meta, record, issuer, source, anchor, trusted.chain_id)
    _expiry(run, s, trusted.chain_id, now)
    checks = tuple(run.checks[n] for n in CHECK_NAMES)
    return Verdict(
        valid=all(c.ok for c in checks),
        checks=checks,
        certificate={"id": meta.id, "type": meta.type, "issuer": meta.issuer,
                     "status": None if record is None else record.status,
                     "valid_until": meta.valid_until if record is None else record.valid_until},
        disclosed={n: field_value_to_json(v) for n, v in s.disclosed.items()},
        anchored_at=None if record is None else record.issued_height,
        evidence=None if header is None or cert_ev is None else {
            "height": header.height, "block_hash": header.hash.hex(),
            "time_ms": header.time_ms, "source": cert_ev.source},
    )


def _integrity(run: _Run, s: Subject, record: CertRecord) -> None:
    if s.digest != record.digest:
        run.put("integrity", False, f"the presentation's digest {s.digest.hex()[:16]}… is not "
                                    f"the anchored digest {record.digest.hex()[:16]}…: a field, "
                                    "a salt or a hidden hash was altered")
        return
    m = s.meta
    for name, shown, anchored in (("valid_from", m.valid_from, record.valid_from),
                                  ("valid_until", m.valid_until, record.valid_until),
                                  ("supersedes", m.supersedes, record.supersedes)):
        if shown != anchored:
            run.put("integrity", False, f"the document says {name} {shown!r}, the anchor "
                                        f"record {anchored!r}")
            return
    run.put("integrity", True, f"digest {record.digest.hex()[:16]}… matches the anchored one")


def _record_checks(run: _Run, record: CertRecord, now: float) -> None:
    reason = f" ({record.status_reason})" if record.status_reason else ""
    if record.status == "issued":
        run.put("status", True, "issued")
    else:
        run.put("status", False, f"{record.status} at block {record.status_height}{reason}")
    if now < record.valid_from:
        run.put("validity_period", False, f"not valid before {_when(record.valid_from)}")
    elif record.valid_until is not None and now > record.valid_until:
        run.put("validity_period", False, f"expired on {_when(record.valid_until)}")
    else:
        until = "no end" if record.valid_until is None else _when(record.valid_until)
        run.put("validity_period", True, f"valid from {_when(record.valid_from)} until {until}")
    if record.status == "superseded" or record.superseded_by is not None:
        run.put("not_superseded", False, f"superseded by {record.superseded_by} at block "
                                         f"{record.status_height}")
    else:
        run.put("not_superseded", True, "no newer version")


def _issuer_checks(run: _Run, meta: DocumentMeta, record: CertRecord | None,
                   issuer: IssuerRecord | None, source: str, anchor: SignedAnchor | None,
                   chain_id: str) -> None:
    if issuer is None:
        run.put("issuer_authorized", False, source)
    elif not issuer.active:
        run.put("issuer_authorized", False, f"issuer {issuer.code} ({issuer.name}) is "
                                            f"deactivated [{source}]")
    elif meta.type not in issuer.type_set:
        run.put("issuer_authorized", False, f"issuer {issuer.code} is not granted certificate "
                                            f"type {meta.type} [{source}]")
    else:
        run.put("issuer_authorized", True, f"{issuer.name} ({issuer.code}) is active and "
                                           f"granted type {meta.type} [{source}]")
    if record is None:
        return  # issuer_signature already failed for want of a record
    if issuer is None:
        run.put("issuer_signature", False, source)
        return
    kid = record.signer_key_id
    key = issuer.key(kid)
    if key is None:
        run.put("issuer_signature", False, f"the record was signed by key {kid.hex()}, which is "
                                           f"not a key of issuer {issuer.code} [{source}]")
        return
    if not key.valid_at(record.issued_height):
        run.put("issuer_signature", False, f"key {kid.hex()} of {issuer.code} was not valid at "
                                           f"block {record.issued_height} [{source}]")
        return
    if anchor is None:
        run.put("issuer_signature", True,
                f"issued by transaction {record.tx_id.hex()[:16]}… signed with {issuer.code}'s "
                f"key {kid.hex()}, valid at block {record.issued_height}; the validators "
                "verified that SM2 signature when they committed it")
        return
    akey = issuer.key(anchor.signer_key_id)
    a = anchor.record
    if a.id != record.id or a.digest != record.digest:
        run.put("issuer_signature", False, "the signed anchor supplied is for another "
                                           "certificate or digest")
    elif akey is None or not akey.valid_at(record.issued_height):
        run.put("issuer_signature", False, f"the signed anchor's key {anchor.signer_key_id.hex()}"
                                           f" is not a valid key of {issuer.code}")
    else:
        try:
            anchor.verify(PublicKey(akey.public_key), chain_id)
        except CertificatesError as exc:
            run.put("issuer_signature", False, f"signed anchor: {exc}")
            return
        run.put("issuer_signature", True, f"SM2 signature of {issuer.code}'s key "
                                          f"{anchor.signer_key_id.hex()} over the anchor verified")


def _expiry(run: _Run, s: Subject, chain_id: str, now: float) -> None:
    q = s.qr
    if q is None or q.expires is None:
        run.put("presentation_expiry", True, "not a short-lived presentation")
        return
    try:
        verify_holder_signature(q, chain_id)
    except PayloadError as exc:
        run.put("presentation_expiry", False, str(exc))
        return
    if now > q.expires:
        run.put("presentation_expiry", False, f"the presentation expired at {_when(q.expires)}")
    else:
        run.put("presentation_expiry", True, f"holder-signed, valid until {_when(q.expires)}")


def status_of(cert_id: str, evidence: Evidence | None, trusted: TrustedState,
              now: float) -> dict[str, Any]:
    """The proven on-chain state of a certificate id, without any presentation."""
    ev = None if evidence is None else evidence.certificate
    st = _chain_state(ev, cert_key(cert_id), trusted)
    out: dict[str, Any] = {"id": cert_id, "proven": st.proven,
                           "checks": [{"name": "commit_certificate", "ok": st.header is not None,
                                       "detail": st.commit_detail},
                                      {"name": "state_proof", "ok": st.proven,
                                       "detail": st.proof_detail}]}
    header = st.header
    if not st.proven or header is None:
        return out
    try:
        record = None if st.record is None else CertRecord.from_bytes(st.record)
    except LedgerError as exc:
        out.update(proven=False, error=f"the proven record is malformed: {exc}")
        return out
    out["found"] = record is not None
    out["evidence"] = {"height": header.height, "block_hash": header.hash.hex(),
                       "time_ms": header.time_ms, "source": "" if ev is None else ev.source}
    if record is not None:
        in_period = record.valid_from <= now and (record.valid_until is None
                                                  or now <= record.valid_until)
        out.update(status=record.status, valid_from=record.valid_from,
                   valid_until=record.valid_until, in_validity_period=in_period,
                   issued_height=record.issued_height, status_height=record.status_height,
                   superseded_by=record.superseded_by, digest=record.digest.hex())
    return out
