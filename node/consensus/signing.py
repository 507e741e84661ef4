"""Signer and Verifier implementations: SM2 for the node, a fast stand-in for tests.

``Sm2Signer``/``Sm2Verifier`` wrap ``certificates.sm2``: with them, commit
certificates produced by the core verify with ``CommitCertificate.verify``.

``FakeSigner``/``FakeVerifier`` are for the simulator and the benchmark only:
the "signature" is BLAKE2b keyed with the *public* key over the message, so
anyone can forge one. That is fine where every participant is our own code
(the simulated Byzantine validators forge nothing unless told to, and then
the checker knows), and it is ~1000x faster than SM2, which is what lets the
simulator run thousands of seeds. Never wire it into a node.
"""

from __future__ import annotations

import hashlib

from certificates import sm2

SIGNATURE_SIZE = 64


class Sm2Signer:
    def __init__(self, key: sm2.PrivateKey) -> None:
        self._key = key
        self._key_id = key.public.key_id

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


class Sm2Verifier:
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return sm2.verify(public_key, message, signature)


def fake_signature(public_key: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(message, key=public_key[:64], digest_size=SIGNATURE_SIZE).digest()


class FakeSigner:
    """INSECURE keyed-hash signer for simulation and benchmarks (see module header)."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self._key_id = sm2.key_id(public_key)

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return fake_signature(self.public_key, message)


class FakeVerifier:
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return signature == fake_signature(public_key, message)
