"""SM3 hashing (GB/T 32905) with one fast entry point.

``sm3(data)`` uses the GmSSL binding when it is importable and falls back to
OpenSSL's SM3 through ``cryptography``; both are C implementations. The
pure-Python ``gmssl.sm3`` is about a thousand times slower and is kept only as
an interoperability reference in tests, never on a hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes

DIGEST_SIZE = 32


def _sm3_openssl(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def _load_fast() -> Callable[[bytes], bytes] | None:
    try:
        from gmssl_pyx import sm3_hash
    except ImportError:  # pragma: no cover - depends on the platform's wheels
        return None
    fn: Callable[[bytes], bytes] = sm3_hash
    return fn


_fast = _load_fast()

#: The SM3 function used everywhere in certledger: bytes -> 32-byte digest.
sm3: Callable[[bytes], bytes] = _fast if _fast is not None else _sm3_openssl
sm3_openssl = _sm3_openssl


def sm3_backend_name() -> str:
    return "gmssl_pyx" if _fast is not None else "openssl"


class Sm3Stream:
    """Incremental SM3 over OpenSSL, for data too large to hold at once."""

    def __init__(self) -> None:
        self._h = hashes.Hash(hashes.SM3())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.copy().finalize()
