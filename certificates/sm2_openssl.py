"""SM2 verification through OpenSSL's libcrypto, the fast path for every check.

How it works: a 65-byte public key is wrapped in a fixed SubjectPublicKeyInfo prefix
(id-ecPublicKey on curve sm2p256v1, OID 1.2.156.10197.1.301) and parsed once with
``d2i_PUBKEY``; OpenSSL 3 gives an SM2 key for that curve, so ``EVP_PKEY_verify`` checks an
SM2 signature (DER ``r, s``) over the 32-byte digest ``e = SM3(Z_A || M)`` that
``certificates.sm2`` computes - OpenSSL adds no Z_A of its own on this call.

Why: GmSSL through ``gmssl_pyx`` holds the GIL for the whole ~1 ms check, so a process
verifies on one core and nothing else of it runs meanwhile. ctypes releases the GIL for
the one long call (``EVP_PKEY_verify``, loaded through ``CDLL``); the short calls around it
go through ``PyDLL`` and keep the GIL, since handing it over for a few microseconds would
only queue the thread behind others. OpenSSL's generic prime-field code is also faster per
check than the GmSSL build in ``gmssl_pyx`` on x86-64 (figures in docs/benchmarks.md).

Keys: parsed keys stay cached for the life of the process (validators and issuers are
few); past ``KEY_CACHE_SIZE`` distinct keys a key is parsed and freed per call. A cached key
is never freed, so a check in another thread can never see a freed key.

Availability: the library is loaded on first use and must pass a known-answer test (the
published sm2p256v1 example verifies, the same signature over another digest does not).
An OpenSSL without SM2, or 1.1.1 (which would check such a key as ECDSA), fails it and the
backend is unavailable; ``certificates.sm2`` then falls back to GmSSL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from certificates.errors import BackendUnavailableError

KEY_CACHE_SIZE = 4096

# SEQUENCE { SEQUENCE { id-ecPublicKey, sm2p256v1 }, BIT STRING (0 unused bits) } header;
# the 65-byte uncompressed point follows.
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")

# The sm2p256v1 signature example (default signer id, message "message digest") that
# ../shared/test-vectors publishes as sm2_sign: public key, e, and the DER of (r, s).
_KAT_PUBLIC = bytes.fromhex(
    "0409F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
_KAT_E = bytes.fromhex("f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640")
_KAT_R = bytes.fromhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3")
_KAT_S = bytes.fromhex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA")

_LIBRARY_NAMES = ("libcrypto.so.3", "libcrypto.3.dylib")


class _LibCrypto:
    def __init__(self, path: str) -> None:
        held = ctypes.PyDLL(path)  # short calls: keep the GIL
        free = ctypes.CDLL(path)  # the long call: release it
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        self.d2i_pubkey = held.d2i_PUBKEY
        self.d2i_pubkey.restype = vp
        self.d2i_pubkey.argtypes = [vp, ctypes.POINTER(cp), ctypes.c_long]
        self.pkey_free = held.EVP_PKEY_free
        self.pkey_free.restype = None
        self.pkey_free.argtypes = [vp]
        self.ctx_new = held.EVP_PKEY_CTX_new
        self.ctx_new.restype = vp
        self.ctx_new.argtypes = [vp, vp]
        self.ctx_free = held.EVP_PKEY_CTX_free
        self.ctx_free.restype = None
        self.ctx_free.argtypes = [vp]
        self.verify_init = held.EVP_PKEY_verify_init
        self.verify_init.restype = ctypes.c_int
        self.verify_init.argtypes = [vp]
        self.verify = free.EVP_PKEY_verify
        self.verify.restype = ctypes.c_int
        self.verify.argtypes = [vp, cp, ctypes.c_size_t, cp, ctypes.c_size_t]
        self.clear_errors = held.ERR_clear_error
        self.clear_errors.restype = None
        self.clear_errors.argtypes = []


def _find_library() -> str:
    for name in _LIBRARY_NAMES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    found = ctypes.util.find_library("crypto")
    if found is None:
        raise BackendUnavailableError("OpenSSL's libcrypto was not found")
    return found


class OpenSSLVerifier:
    """SM2 ``verify_digest`` over libcrypto; see the module header."""

    def __init__(self, library: str | None = None) -> None:
        try:
            self._lib = _LibCrypto(library or _find_library())
        except (OSError, AttributeError) as exc:
            raise BackendUnavailableError(f"libcrypto cannot be used for SM2: {exc}") from exc
        self._keys: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._self_test()

    def _self_test(self) -> None:
        from certificates.sm2 import join_signature, signature_to_der

        der = signature_to_der(
            join_signature(int.from_bytes(_KAT_R, "big"), int.from_bytes(_KAT_S, "big"))
        )
        good = self.verify_der(_KAT_PUBLIC, _KAT_E, der)
        tampered = self.verify_der(_KAT_PUBLIC, bytes(32), der)
        if not good or tampered:
            raise BackendUnavailableError(
                "this libcrypto failed the SM2 known-answer test (no SM2, or keys on the "
                "SM2 curve are checked as ECDSA)"
            )

    def _parse(self, public_key: bytes) -> int:
        der = _SPKI_PREFIX + public_key
        cursor = ctypes.c_char_p(der)
        pkey = self._lib.d2i_pubkey(None, ctypes.byref(cursor), len(der))
        if not pkey:
            self._lib.clear_errors()
            raise BackendUnavailableError("libcrypto refused an SM2 public key")
        return int(pkey)

    def _key(self, public_key: bytes) -> tuple[int, bool]:
        """The parsed key and whether the caller must free it."""
        pkey = self._keys.get(public_key)
        if pkey is not None:
            return pkey, False
        with self._lock:
            pkey = self._keys.get(public_key)
            if pkey is not None:
                return pkey, False
            pkey = self._parse(public_key)
            if len(self._keys) < KEY_CACHE_SIZE:
                self._keys[public_key] = pkey
                return pkey, False
        return pkey, True

    def verify_der(self, public_key: bytes, digest: bytes, signature_der: bytes) -> bool:
        """True iff ``signature_der`` is an SM2 signature of ``digest`` under the key.

        The caller has checked the key (on the curve) and the signature (r, s in range).
        """
        lib = self._lib
        pkey, owned = self._key(public_key)
        ctx = lib.ctx_new(pkey, None)
        try:
            if not ctx or lib.verify_init(ctx) != 1:
                lib.clear_errors()
                raise BackendUnavailableError("libcrypto could not start an SM2 verification")
            ok = bool(lib.verify(ctx, signature_der, len(signature_der), digest, len(digest)) == 1)
            if not ok:
                # A failed check leaves reasons on this thread's error queue; drop them.
                lib.clear_errors()
            return ok
        finally:
            if ctx:
                lib.ctx_free(ctx)
            if owned:
                lib.pkey_free(pkey)
