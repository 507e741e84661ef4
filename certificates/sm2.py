"""SM2 signatures (GB/T 32918.2, GM/T 0003) behind one interface, two backends.

A signature is over ``e = SM3(Z_A || M)`` where ``Z_A`` hashes the signer id
(default ``1234567812345678``, GM/T 0009), the curve parameters and the public
key. ``Z_A`` is computed here once per key and cached, and the backends only
ever see the 32-byte digest ``e``:

* ``openssl``   - verification through OpenSSL's libcrypto (``certificates.sm2_openssl``),
  which releases the GIL for the check; signing through GmSSL. The default when its
  known-answer test passes;
* ``gmssl_pyx`` - the GmSSL C library through its digest API (holds the GIL);
* ``gmssl``     - the pure-Python implementation, the portable fallback and
  the interop reference. Its own nonce comes from ``random.choice``, which is
  predictable, so we always pass a nonce drawn from ``secrets``.

Wire format: public key ``04||X||Y`` (65 bytes), signature ``r||s`` (64 bytes).
Everything that enters from outside is checked strictly before a backend sees
it: key lengths and the curve equation, ``r`` and ``s`` in ``[1, n-1]``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from certificates.errors import BackendUnavailableError, InvalidKeyError, InvalidSignatureError
from certificates.hashing import sm3

# sm2p256v1, the recommended curve of GB/T 32918.5.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_SIGNER_ID = b"1234567812345678"
PUBLIC_KEY_SIZE = 65
PRIVATE_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_CURVE_BYTES = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))


# --------------------------------------------------------------------------- validation


def validate_public_key(public_key: bytes) -> bytes:
    """Return ``public_key`` if it is an uncompressed point on sm2p256v1."""
    if not isinstance(public_key, bytes | bytearray):
        raise InvalidKeyError(f"public key must be bytes, got {type(public_key).__name__}")
    public_key = bytes(public_key)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidKeyError(
            f"public key must be {PUBLIC_KEY_SIZE} bytes (04||X||Y), got {len(public_key)}"
        )
    if public_key[0] != 0x04:
        raise InvalidKeyError(
            f"public key must start with 0x04 (uncompressed), got 0x{public_key[0]:02x}"
        )
    _check_point(public_key)
    return public_key


@lru_cache(maxsize=4096)
def _check_point(public_key: bytes) -> None:
    # Cached: validators check the same few keys millions of times.
    x = int.from_bytes(public_key[1:33], "big")
    y = int.from_bytes(public_key[33:], "big")
    if not (0 <= x < P and 0 <= y < P):
        raise InvalidKeyError("public key coordinates are not reduced modulo p")
    if (y * y - (x * x * x + A * x + B)) % P != 0:
        raise InvalidKeyError("public key is not a point on the SM2 curve")


def validate_private_key(private_key: bytes) -> int:
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != PRIVATE_KEY_SIZE:
        raise InvalidKeyError(f"private key must be {PRIVATE_KEY_SIZE} bytes")
    d = int.from_bytes(private_key, "big")
    # d = n-1 is excluded: SM2 signing inverts (1 + d) mod n.
    if not 1 <= d <= N - 2:
        raise InvalidKeyError("private key is out of range [1, n-2]")
    return d


def split_signature(signature: bytes) -> tuple[int, int]:
    """Parse a raw ``r||s`` signature, rejecting lengths and values out of range."""
    if not isinstance(signature, bytes | bytearray):
        raise InvalidSignatureError(f"signature must be bytes, got {type(signature).__name__}")
    if len(signature) != SIGNATURE_SIZE:
        raise InvalidSignatureError(
            f"signature must be {SIGNATURE_SIZE} bytes (r||s), got {len(signature)}"
        )
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not 1 <= r <= N - 1:
        raise InvalidSignatureError("signature r is outside [1, n-1]")
    if not 1 <= s <= N - 1:
        raise InvalidSignatureError("signature s is outside [1, n-1]")
    return r, s


def join_signature(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --------------------------------------------------------------------------- DER


def _der_int(v: int) -> bytes:
    body = v.to_bytes((v.bit_length() + 8) // 8, "big")  # keeps a leading 0 when the top bit is set
    return b"\x02" + bytes([len(body)]) + body


def signature_to_der(signature: bytes) -> bytes:
    r, s = split_signature(signature)
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def signature_from_der(der: bytes) -> bytes:
    """Strict DER ``SEQUENCE { INTEGER r, INTEGER s }`` to raw ``r||s``."""

    def fail(why: str) -> InvalidSignatureError:
        return InvalidSignatureError(f"bad DER signature: {why}")

    if len(der) < 8 or der[0] != 0x30:
        raise fail("not a SEQUENCE")
    if der[1] != len(der) - 2:
        raise fail("SEQUENCE length does not match the data")
    pos = 2
    values = []
    for name in ("r", "s"):
        if pos + 2 > len(der) or der[pos] != 0x02:
            raise fail(f"{name} is not an INTEGER")
        ln = der[pos + 1]
        body = der[pos + 2 : pos + 2 + ln]
        if ln == 0 or len(body) != ln or ln > 33:
            raise fail(f"{name} has a bad length")
        if body[0] & 0x80:
            raise fail(f"{name} is negative")
        if ln > 1 and body[0] == 0 and not body[1] & 0x80:
            raise fail(f"{name} is not minimally encoded")
        values.append(int.from_bytes(body, "big"))
        pos += 2 + ln
    if pos != len(der):
        raise fail("trailing bytes")
    r, s = values
    if not (1 <= r < N and 1 <= s < N):
        raise InvalidSignatureError("bad DER signature: r or s outside [1, n-1]")
    return join_signature(r, s)


# --------------------------------------------------------------------------- Z_A and e


@lru_cache(maxsize=4096)
def z_a(public_key: bytes, signer_id: bytes = DEFAULT_SIGNER_ID) -> bytes:
    """``Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA)``."""
    validate_public_key(public_key)
    entl = len(signer_id) * 8
    if entl > 0xFFFF:
        raise InvalidKeyError("signer id is longer than 8191 bytes")
    return sm3(entl.to_bytes(2, "big") + signer_id + _CURVE_BYTES + public_key[1:])


def message_digest(
    public_key: bytes, message: bytes, signer_id: bytes = DEFAULT_SIGNER_ID
) -> bytes:
    """``e = SM3(Z_A || M)``, the value SM2 actually signs."""
    return sm3(z_a(public_key, signer_id) + message)


# --------------------------------------------------------------------------- backends


class Backend(Protocol):
    name: str

    def public_from_private(self, private_key: bytes) -> bytes: ...

    def sign_digest(self, private_key: bytes, digest: bytes, nonce: int | None = None) -> bytes: ...

    def verify_digest(self, public_key: bytes, digest: bytes, signature: bytes) -> bool: ...


def _random_nonce() -> int:
    return secrets.randbelow(N - 1) + 1


class PureBackend:
    """``gmssl``'s pure-Python SM2; accepts an explicit nonce (used for test vectors)."""

    name = "gmssl"

    def __init__(self) -> None:
        try:
            from gmssl import sm2 as gm
        except ImportError as exc:  # pragma: no cover - gmssl is a hard dependency
            raise BackendUnavailableError("the gmssl package is not installed") from exc
        self._gm = gm

    def _crypt(self, private_hex: str, public_hex: str) -> object:
        c = self._gm.CryptSM2(private_key=private_hex, public_key="")
        # Not through the constructor: it strips a "04" prefix with lstrip("04"), which
        # also eats the leading 0s and 4s of an x coordinate that starts with byte 0x04.
        c.public_key = public_hex
        return c

    def public_from_private(self, private_key: bytes) -> bytes:
        d = validate_private_key(private_key)
        c = self._crypt(f"{d:064x}", "")
        point = c._kg(d, self._gm.default_ecc_table["g"])  # type: ignore[attr-defined]
        return b"\x04" + bytes.fromhex(point)

    def sign_digest(self, private_key: bytes, digest: bytes, nonce: int | None = None) -> bytes:
        d = validate_private_key(private_key)
        c = self._crypt(f"{d:064x}", "")
        while True:
            k = nonce if nonce is not None else _random_nonce()
            # gmssl picks k with random.choice when none is given; never let it.
            sig_hex = c.sign(digest, f"{k:064x}")  # type: ignore[attr-defined]
            if sig_hex is not None:
                return bytes.fromhex(sig_hex)
            if nonce is not None:
                raise InvalidSignatureError("the given nonce yields r = 0 or r + k = n")

    def verify_digest(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        c = self._crypt("", public_key[1:].hex())
        return bool(c.verify(signature.hex(), digest))  # type: ignore[attr-defined]


class PyxBackend:
    """GmSSL's C implementation through ``gmssl_pyx`` (digest API)."""

    name = "gmssl_pyx"

    def __init__(self) -> None:
        try:
            import gmssl_pyx
        except ImportError as exc:  # pragma: no cover - depends on the platform's wheels
            raise BackendUnavailableError("the gmssl_pyx package is not installed") from exc
        self._g = gmssl_pyx
        self._pure = PureBackend()

    def public_from_private(self, private_key: bytes) -> bytes:
        # gmssl_pyx has no point multiplication API; derivation is rare (key load only).
        return self._pure.public_from_private(private_key)

    def sign_digest(self, private_key: bytes, digest: bytes, nonce: int | None = None) -> bytes:
        if nonce is not None:
            raise BackendUnavailableError("gmssl_pyx draws its own nonce; use the gmssl backend")
        validate_private_key(private_key)
        der = self._g.sm2_sign_sm3_digest(private_key, digest)
        return signature_from_der(der)

    def verify_digest(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        try:
            return bool(
                self._g.sm2_verify_sm3_digest(public_key[1:], digest, signature_to_der(signature))
            )
        except self._g.GmsslInnerError:
            return False


class OpenSSLBackend:
    """Verification through OpenSSL's libcrypto (``certificates.sm2_openssl``): it releases
    the GIL for the check and is faster per check than GmSSL here. Signing stays with
    GmSSL's C code (its fixed-base tables make it the faster signer) or, without it, the
    pure backend with a ``secrets`` nonce."""

    name = "openssl"

    def __init__(self) -> None:
        from certificates.sm2_openssl import OpenSSLVerifier

        self._verifier = OpenSSLVerifier()
        try:
            self._signer: Backend = get_backend("gmssl_pyx")
        except BackendUnavailableError:
            self._signer = get_backend("gmssl")

    def public_from_private(self, private_key: bytes) -> bytes:
        return self._signer.public_from_private(private_key)

    def sign_digest(self, private_key: bytes, digest: bytes, nonce: int | None = None) -> bytes:
        return self._signer.sign_digest(private_key, digest, nonce)

    def verify_digest(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        try:
            return self._verifier.verify_der(public_key, digest, signature_to_der(signature))
        except BackendUnavailableError:
            # An internal libcrypto failure (memory, say) must not turn into a wrong
            # verdict or an exception in a node's loop: this check goes to GmSSL instead.
            return self._signer.verify_digest(public_key, digest, signature)


_BACKENDS: dict[str, Backend] = {}
_UNAVAILABLE: dict[str, BackendUnavailableError] = {}
_PREFERENCE = ("openssl", "gmssl_pyx", "gmssl")


def get_backend(name: str | None = None) -> Backend:
    """The named backend, or the fastest available one."""
    if name is None:
        for candidate in _PREFERENCE:
            try:
                return get_backend(candidate)
            except BackendUnavailableError:
                continue
        raise BackendUnavailableError("no SM2 backend is available")
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name in _UNAVAILABLE:
        # Loading is tried once: a missing library stays missing for this process.
        raise _UNAVAILABLE[name]
    factories: dict[str, type] = {
        "openssl": OpenSSLBackend,
        "gmssl_pyx": PyxBackend,
        "gmssl": PureBackend,
    }
    if name not in factories:
        raise BackendUnavailableError(
            f"unknown SM2 backend {name!r}; use {', '.join(_PREFERENCE)}"
        )
    try:
        backend: Backend = factories[name]()
    except BackendUnavailableError as exc:
        _UNAVAILABLE[name] = exc
        raise
    _BACKENDS[name] = backend
    return backend


def available_backends() -> list[str]:
    names = []
    for name in _PREFERENCE:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names


# --------------------------------------------------------------------------- keys


def key_id(public_key: bytes) -> bytes:
    """First 16 bytes of SM3(public key); shown in hex."""
    return sm3(validate_public_key(public_key))[:16]


@dataclass(frozen=True)
class PublicKey:
    data: bytes
    signer_id: bytes = DEFAULT_SIGNER_ID

    def __post_init__(self) -> None:
        validate_public_key(self.data)

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError as exc:
            raise InvalidKeyError("public key is not valid hex") from exc
        return cls(raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.data)

    def hex(self) -> str:
        return self.data.hex()

    def verify(self, message: bytes, signature: bytes, backend: str | None = None) -> bool:
        return verify(self.data, message, signature, signer_id=self.signer_id, backend=backend)


@dataclass(frozen=True)
class PrivateKey:
    data: bytes = field(repr=False)
    public: PublicKey

    @classmethod
    def from_bytes(cls, data: bytes, signer_id: bytes = DEFAULT_SIGNER_ID) -> PrivateKey:
        validate_private_key(data)
        pub = get_backend("gmssl").public_from_private(data)
        return cls(bytes(data), PublicKey(pub, signer_id))

    @classmethod
    def generate(cls, signer_id: bytes = DEFAULT_SIGNER_ID) -> PrivateKey:
        # secrets draws d uniformly in [1, n-2], the range GB/T 32918 allows.
        return cls.from_bytes((secrets.randbelow(N - 2) + 1).to_bytes(32, "big"), signer_id)

    def sign(self, message: bytes, backend: str | None = None) -> bytes:
        return sign(self.data, self.public.data, message, self.public.signer_id, backend=backend)


def sign(
    private_key: bytes,
    public_key: bytes,
    message: bytes,
    signer_id: bytes = DEFAULT_SIGNER_ID,
    *,
    backend: str | None = None,
    nonce: int | None = None,
) -> bytes:
    """Sign ``message``; returns raw ``r||s``. ``nonce`` is for test vectors only."""
    e = message_digest(public_key, message, signer_id)
    return get_backend(backend).sign_digest(private_key, e, nonce)


def verify(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    signer_id: bytes = DEFAULT_SIGNER_ID,
    *,
    backend: str | None = None,
) -> bool:
    """True iff ``signature`` is a valid SM2 signature of ``message``.

    Malformed keys raise ``InvalidKeyError``; a malformed signature (bad length,
    r or s out of range) is a failed verification, never an exception, since a
    peer may send anything.
    """
    validate_public_key(public_key)
    try:
        split_signature(signature)
    except InvalidSignatureError:
        return False
    e = message_digest(public_key, message, signer_id)
    return get_backend(backend).verify_digest(public_key, e, signature)
