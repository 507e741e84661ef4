"""The OpenSSL SM2 verifier: the same verdicts as GmSSL, its known-answer gate, its key
cache, and that it lets other threads run while it checks."""

from __future__ import annotations

import ctypes
import random
import threading

import pytest

from certificates import sm2, sm2_openssl
from certificates.errors import BackendUnavailableError
from tests.vectors import load_vectors

SM2V = load_vectors()["sm2_sign"]


def _verifier() -> sm2_openssl.OpenSSLVerifier:
    return sm2_openssl.OpenSSLVerifier()


def test_the_known_answer_constants_are_the_published_vector() -> None:
    assert sm2_openssl._KAT_PUBLIC.hex().upper() == SM2V["public_key"].upper()
    assert sm2_openssl._KAT_E.hex() == SM2V["e"]
    assert (sm2_openssl._KAT_R + sm2_openssl._KAT_S).hex().upper() == SM2V["r"] + SM2V["s"]


def test_same_verdicts_as_gmssl_on_good_and_damaged_signatures() -> None:
    rng = random.Random(20261123)
    keys = [sm2.PrivateKey.generate() for _ in range(5)]
    for i in range(300):
        key = keys[i % len(keys)]
        msg = rng.randbytes(rng.randrange(0, 200))
        sig = key.sign(msg, backend="gmssl_pyx")
        damaged = bytearray(sig)
        damaged[rng.randrange(64)] ^= 1 << rng.randrange(8)
        other = keys[(i + 1) % len(keys)].public.data
        for pub, m, s in (
            (key.public.data, msg, sig),
            (key.public.data, msg + b"x", sig),
            (key.public.data, msg, bytes(damaged)),
            (other, msg, sig),
        ):
            want = sm2.verify(pub, m, s, backend="gmssl")
            assert sm2.verify(pub, m, s, backend="openssl") is want, f"case {i}"
            assert want is (pub == key.public.data and m == msg and s == sig)


def test_a_library_that_fails_the_known_answer_test_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A libcrypto that checks an SM2-curve key as ECDSA says "no" to the published SM2
    # signature; simulate it by verifying against a wrong digest.
    monkeypatch.setattr(sm2_openssl, "_KAT_E", bytes(31) + b"\x01")
    with pytest.raises(BackendUnavailableError, match="known-answer"):
        _verifier()


def test_a_missing_library_is_unavailable_not_a_crash() -> None:
    with pytest.raises(BackendUnavailableError, match="libcrypto"):
        sm2_openssl.OpenSSLVerifier("libcrypto-that-does-not-exist.so.0")


def test_keys_past_the_cache_size_are_parsed_per_call_and_still_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sm2_openssl, "KEY_CACHE_SIZE", 2)
    v = _verifier()  # the known-answer test has cached one key already
    keys = [sm2.PrivateKey.generate() for _ in range(4)]
    for key in keys * 2:
        e = sm2.message_digest(key.public.data, b"m")
        der = sm2.signature_to_der(key.sign(b"m"))
        assert v.verify_der(key.public.data, e, der)
        assert not v.verify_der(key.public.data, bytes(32), der)
    assert len(v._keys) == 2


def test_an_internal_failure_falls_back_to_gmssl_not_a_wrong_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = sm2.get_backend("openssl")
    key = sm2.PrivateKey.generate()
    sig = key.sign(b"m")

    def broken(*_: object) -> bool:
        raise BackendUnavailableError("libcrypto could not start an SM2 verification")

    monkeypatch.setattr(backend._verifier, "verify_der", broken)  # type: ignore[attr-defined]
    assert sm2.verify(key.public.data, b"m", sig, backend="openssl")
    assert not sm2.verify(key.public.data, b"n", sig, backend="openssl")


def test_only_the_long_call_releases_the_gil() -> None:
    # ctypes releases the GIL around a foreign call unless the function comes from a PyDLL
    # (FUNCFLAG_PYTHONAPI). The check itself (~0.4-1 ms) must release it so other threads
    # run meanwhile; the few-microsecond calls around it must not, or every check would
    # queue twice more for the GIL behind other threads.
    lib = _verifier()._lib
    holds_gil = ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
    assert not lib.verify._flags_ & holds_gil
    for short in (lib.d2i_pubkey, lib.ctx_new, lib.verify_init, lib.ctx_free, lib.pkey_free):
        assert short._flags_ & holds_gil, short.__name__


def test_checks_in_two_threads_agree_with_one() -> None:
    # Keys are parsed and cached under a lock; many threads checking the same new keys at
    # once must all get the right verdicts.
    v = _verifier()
    keys = [sm2.PrivateKey.generate() for _ in range(8)]
    cases = []
    for key in keys:
        e = sm2.message_digest(key.public.data, b"m")
        der = sm2.signature_to_der(key.sign(b"m"))
        cases.append((key.public.data, e, der, True))
        cases.append((key.public.data, bytes(32), der, False))
    errors: list[str] = []
    start = threading.Barrier(4)

    def work() -> None:
        start.wait(timeout=10)
        for pub, e, der, want in cases * 3:
            if v.verify_der(pub, e, der) is not want:
                errors.append(pub.hex()[:8])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(v._keys) == 1 + len(keys)
