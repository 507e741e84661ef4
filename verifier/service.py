"""The verification service: read what was shown, get evidence, run ``logic``.

Shared by the HTTP app and the CLI. ``parse_shown`` reads the one thing a caller
shows, from a JSON object with exactly one of:

* ``presentation``: a ``certledger/presentation/v1`` JSON presentation;
* ``wallet`` (or ``document``): a wallet entry (document + salts), as the holder or
  issuer keeps it; everything in it counts as disclosed;
* ``qr``: a QR payload - its base41 or base64url text, or the whole ``…/q/…`` URL;

plus an optional ``anchor`` (a signed anchor JSON, whose SM2 signature is then
verified under ``issuer_signature``).

Evidence comes from an ``EvidenceProvider``: the ``LightClient`` (nodes) or
``SavedEvidence`` (offline: evidence saved earlier, checked against a trust
bundle exactly like a node's answer, stale if far below the bundle's height).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from certificates.anchor import SignedAnchor
from certificates.disclosure import Presentation
from certificates.document import CommittedDocument
from certificates.errors import CertificatesError
from certificates.identifiers import CertificateId
from verifier.errors import EvidenceError, InputError, NoTrustworthyAnswerError, VerifierError
from verifier.evidence import Evidence
from verifier.lightclient import LightClient, check_state
from verifier.logic import Shown, Subject, Verdict, status_of, subject_of, verify
from verifier.metrics import VerifierMetrics
from verifier.qr import decode_payload, from_text
from verifier.trust import TrustedState

SHOWN_KEYS = ("presentation", "wallet", "document", "qr")


class EvidenceProvider(Protocol):
    @property
    def trusted(self) -> TrustedState: ...

    def evidence(self, cert_id: str, issuer_code: str) -> Evidence: ...


def parse_qr(text: str) -> Shown:
    return decode_payload(from_text(text))


def parse_shown(body: Mapping[str, Any]) -> tuple[Subject, SignedAnchor | None]:
    """(what is shown, optional signed anchor) from a request body; InputError if unreadable.

    What is shown comes back as a checked ``Subject`` (digest recomputed once).
    """
    present = [k for k in SHOWN_KEYS if body.get(k) is not None]
    if len(present) != 1:
        raise InputError("send exactly one of 'presentation', 'wallet' (or 'document') and "
                         f"'qr'; got {', '.join(present) or 'none'}")
    kind, value = present[0], body[present[0]]
    try:
        shown: Shown
        if kind == "presentation":
            shown = Presentation.from_json_dict(value)
        elif kind in ("wallet", "document"):
            shown = CommittedDocument.from_wallet_dict(value)
        else:
            if not isinstance(value, str):
                raise InputError("'qr' must be the payload text or URL")
            shown = parse_qr(value)
        anchor = None if body.get("anchor") is None else SignedAnchor.from_json_dict(
            body["anchor"])
    except CertificatesError as exc:
        raise InputError(f"{kind}: {exc}") from exc
    # A malformed presentation is the caller's error, found before any lookup.
    return subject_of(shown), anchor


def _offline(cert_id: str, why: str) -> NoTrustworthyAnswerError:
    """No node was asked offline: the hint is about the evidence file and the bundle."""
    return NoTrustworthyAnswerError(
        cert_id, [("saved evidence", why)], source="saved evidence",
        hint="Save its evidence again (verify --save-evidence against the nodes) and use it "
             "with a trust bundle of the same chain exported no earlier")


class SavedEvidence:
    """Offline evidence: saved node answers, by certificate id, checked like live ones."""

    def __init__(self, trusted: TrustedState, saved: Mapping[str, Evidence],
                 max_lag: int = 5) -> None:
        self._trusted, self._saved, self.max_lag = trusted, dict(saved), max_lag

    @property
    def trusted(self) -> TrustedState:
        return self._trusted

    def evidence(self, cert_id: str, issuer_code: str) -> Evidence:
        ev = self._saved.get(cert_id)
        if ev is None:
            raise _offline(cert_id, "no saved evidence for it")
        try:
            checked = check_state(ev.certificate, self._trusted)
        except EvidenceError as exc:
            raise _offline(cert_id, str(exc)) from exc
        if checked.header.height + self.max_lag < self._trusted.height:
            raise _offline(cert_id, f"stale: block {checked.header.height} is older than the "
                                    f"trust bundle's block {self._trusted.height}")
        return ev


class VerificationService:
    def __init__(self, provider: EvidenceProvider, *, clock: Callable[[], float] = time.time,
                 metrics: VerifierMetrics | None = None) -> None:
        self.provider = provider
        self.clock = clock
        self.metrics = metrics or VerifierMetrics()
        if isinstance(provider, LightClient):
            m = self.metrics
            provider.on_reject = lambda node, reason: m.inc(
                "certledger_verifier_node_rejections_total", node, reason)
            # Read at scrape time: keys / look-ups is how well look-ups coalesce.
            m.gauges["certledger_verifier_node_batches"] = (
                "State look-ups (each one request per node asked).",
                lambda: provider.lookups)
            m.gauges["certledger_verifier_node_batched_keys"] = (
                "State keys carried by those look-ups.", lambda: provider.looked_up_keys)

    def verify(self, shown: Shown | Subject, anchor: SignedAnchor | None = None,
               channel: str = "api") -> Verdict:
        """A verdict; NoTrustworthyAnswerError (503) when no node gives usable evidence."""
        started = time.perf_counter()
        subject = subject_of(shown)
        try:
            evidence = self.provider.evidence(subject.meta.id, subject.meta.issuer)
        except VerifierError:
            self.metrics.inc("certledger_verifier_verifications_total", channel, "error")
            raise
        verdict = verify(subject, evidence, self.provider.trusted, self.clock(), anchor=anchor)
        self.metrics.observe(time.perf_counter() - started)
        self.metrics.inc("certledger_verifier_verifications_total", channel,
                         "valid" if verdict.valid else "invalid")
        for name in verdict.failed:
            self.metrics.inc("certledger_verifier_failed_checks_total", name)
        return verdict

    def verify_many(self, items: Sequence[tuple[Subject, SignedAnchor | None, str]]
                    ) -> list[Verdict | VerifierError]:
        """``verify`` for (subject, anchor, channel) items at once, a verdict or an error each.

        With the light client the evidence of all of them comes from one look-up
        (``LightClient.evidence_many``); every check is still run for every item.
        """
        started = time.perf_counter()
        wanted = [(s.meta.id, s.meta.issuer) for s, _, _ in items]
        many = getattr(self.provider, "evidence_many", None)
        found: list[Evidence | VerifierError]
        if many is not None:
            found = many(wanted)
        else:
            found = []
            for cert_id, issuer in wanted:
                try:
                    found.append(self.provider.evidence(cert_id, issuer))
                except VerifierError as exc:
                    found.append(exc)
        now = self.clock()
        out: list[Verdict | VerifierError] = []
        for (subject, anchor, channel), ev in zip(items, found, strict=True):
            if isinstance(ev, VerifierError):
                self.metrics.inc("certledger_verifier_verifications_total", channel, "error")
                out.append(ev)
                continue
            verdict = verify(subject, ev, self.provider.trusted, now, anchor=anchor)
            self.metrics.observe(time.perf_counter() - started)
            self.metrics.inc("certledger_verifier_verifications_total", channel,
                             "valid" if verdict.valid else "invalid")
            for name in verdict.failed:
                self.metrics.inc("certledger_verifier_failed_checks_total", name)
            out.append(verdict)
        return out

    def status(self, cert_id: str) -> dict[str, Any]:
        evidence = self.provider.evidence(cert_id, cert_id.split(".")[6])
        try:
            return status_of(cert_id, evidence, self.provider.trusted, self.clock())
        finally:
            self.metrics.inc("certledger_verifier_verifications_total", "status", "done")


def check_cert_id(cert_id: str) -> str:
    try:
        return str(CertificateId.parse(cert_id))
    except CertificatesError as exc:
        raise InputError(f"certificate id: {exc}") from exc
