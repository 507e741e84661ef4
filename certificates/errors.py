"""Exception hierarchy for the certificates package.

Every error raised by this package derives from ``CertificatesError`` so callers
(CLI, node API, verifier) can catch one root and report ``str(err)``: each
message names what was wrong and, where useful, what to do about it.
"""

from __future__ import annotations


class CertificatesError(Exception):
    """Root of every error raised by ``certificates``."""

    code = "certificates_error"


class CryptoError(CertificatesError):
    code = "crypto_error"


class InvalidKeyError(CryptoError):
    """A public or private key is malformed, off the curve or out of range."""

    code = "invalid_key"


class InvalidSignatureError(CryptoError):
    """A signature is malformed (wrong length, bad DER, r or s out of range)."""

    code = "invalid_signature"


class BackendUnavailableError(CryptoError):
    code = "backend_unavailable"


class KeystoreError(CertificatesError):
    """A key file cannot be read, decrypted or written."""

    code = "keystore_error"


class EncodingError(CertificatesError):
    """A value cannot be canonically encoded, or bytes are not canonical."""

    code = "encoding_error"


class IdentifierError(CertificatesError):
    """A certificate identifier or unified social credit code is invalid."""

    code = "invalid_identifier"


class DocumentError(CertificatesError):
    """A certificate document is malformed."""

    code = "invalid_document"


class DisclosureError(CertificatesError):
    """A presentation is malformed or does not match its digest."""

    code = "invalid_presentation"


class MerkleError(CertificatesError):
    """A Merkle proof is malformed or its parameters are inconsistent."""

    code = "merkle_error"


class RootMismatchError(MerkleError):
    """A proof recomputed a root different from the expected one."""

    code = "root_mismatch"

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        self.expected = expected
        self.calculated = calculated
        super().__init__(
            f"root mismatch: expected {expected.hex()}, calculated {calculated.hex()}"
        )
