"""Exception hierarchy for the verifier package (one root, stable codes).

``VerifierError`` is the root; ``code`` is the machine-readable name the HTTP
API returns in ``{"error": {"code", "message"}}`` and ``status`` its HTTP status.
``EvidenceError`` names the *check* an answer from a node failed
(``commit_certificate``, ``state_proof``, ``stale`` ...), so the light client can
say why it refused each node and ``logic`` can report the same name.
"""

from __future__ import annotations

from collections.abc import Sequence


class VerifierError(Exception):
    """Root of every error raised by ``verifier``."""

    code = "verifier_error"
    status = 400


class InputError(VerifierError):
    """What the caller sent cannot be read (bad JSON, bad presentation, bad QR payload)."""

    code = "bad_input"


class PayloadError(InputError):
    """A QR payload (text or bytes) is malformed, unsupported or too large."""

    code = "bad_payload"


class TrustError(VerifierError):
    """A genesis file or trust bundle is unreadable or inconsistent."""

    code = "bad_trust_bundle"


class EvidenceError(VerifierError):
    """One node's answer fails a check; ``check`` is the stable check name."""

    code = "bad_evidence"
    status = 502

    def __init__(self, check: str, detail: str) -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"{check}: {detail}")


class SourceError(VerifierError):
    """A node could not be asked (connection failed, timeout, junk, unsupported)."""

    code = "node_failed"
    status = 502


class UnsupportedError(SourceError):
    """The node does not offer this kind of evidence (an older node API)."""

    code = "unsupported"


class NoTrustworthyAnswerError(VerifierError):
    """Every node was asked and every answer was refused; ``attempts`` says why each."""

    code = "no_trustworthy_node"
    status = 503

    NODES_HINT = ("Check the node URLs, or refresh the trust bundle if the validator set "
                  "changed")

    def __init__(self, what: str, attempts: Sequence[tuple[str, str]], *,
                 hint: str = NODES_HINT, source: str = "node") -> None:
        self.attempts = list(attempts)
        tried = "; ".join(f"{src}: {why}" for src, why in self.attempts) or "no nodes configured"
        super().__init__(f"no {source} gave trustworthy evidence for {what} ({tried}). {hint}")


class AuthError(VerifierError):
    """No credentials, or credentials that are not valid."""

    code = "unauthorized"
    status = 401


class ForbiddenError(VerifierError):
    """Valid credentials, but not for this resource (another department's)."""

    code = "forbidden"
    status = 403


class RateLimitedError(VerifierError):
    code = "rate_limited"
    status = 429

    def __init__(self, department: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"department {department!r} is over its verification rate; "
            f"retry in {retry_after:.1f} s"
        )


class AuditError(VerifierError):
    """The audit log cannot be written or read, or its hash chain is broken."""

    code = "audit_error"
    status = 500
