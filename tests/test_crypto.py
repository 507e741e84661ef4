"""SM3 / SM2 against the published vectors, across backends and against OpenSSL."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from gmssl import func as gm_func
from gmssl import sm3 as pure_sm3

from certificates import sm2
from certificates.errors import BackendUnavailableError, InvalidKeyError, InvalidSignatureError
from certificates.hashing import sm3, sm3_openssl
from tests.vectors import load_vectors

SM2V = load_vectors()["sm2_sign"]
BACKENDS = sm2.available_backends()


def test_every_backend_available() -> None:
    # libcrypto ships with Python's ssl module and gmssl_pyx is a declared dependency on
    # Linux; either missing is a broken install, not a reason to run slower unnoticed.
    assert BACKENDS == ["openssl", "gmssl_pyx", "gmssl"]
    assert sm2.get_backend().name == "openssl"


@pytest.mark.parametrize("case", load_vectors()["sm3"]["cases"], ids=lambda c: c["digest"][:8])
def test_sm3_vectors_every_implementation(case: dict[str, str]) -> None:
    msg = case["message_ascii"].encode("ascii")
    assert sm3(msg).hex() == case["digest"]
    assert sm3_openssl(msg).hex() == case["digest"]
    assert pure_sm3.sm3_hash(gm_func.bytes_to_list(msg)) == case["digest"]


def test_sm2_curve_constants_match_vectors() -> None:
    curve = SM2V["curve"]
    assert tuple(
        int(curve[k], 16) for k in ("p", "a", "b", "n", "gx", "gy")
    ) == (sm2.P, sm2.A, sm2.B, sm2.N, sm2.GX, sm2.GY)


def test_sm2_vector_z_a_and_e() -> None:
    pub = bytes.fromhex(SM2V["public_key"])
    assert sm2.z_a(pub, SM2V["signer_id_ascii"].encode()).hex() == SM2V["z_a"]
    assert sm2.message_digest(pub, SM2V["message_ascii"].encode()).hex() == SM2V["e"]


def test_sm2_vector_public_key_derivation() -> None:
    key = sm2.PrivateKey.from_bytes(bytes.fromhex(SM2V["private_key"]))
    assert key.public.data.hex().upper() == SM2V["public_key"].upper()


def test_sm2_vector_reproduced_bit_exact_with_given_nonce() -> None:
    sig = sm2.sign(
        bytes.fromhex(SM2V["private_key"]),
        bytes.fromhex(SM2V["public_key"]),
        SM2V["message_ascii"].encode(),
        backend="gmssl",
        nonce=int(SM2V["nonce_k"], 16),
    )
    assert sig.hex().upper() == SM2V["r"] + SM2V["s"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sm2_vector_verifies_under_each_backend(backend: str) -> None:
    pub = bytes.fromhex(SM2V["public_key"])
    sig = bytes.fromhex(SM2V["r"] + SM2V["s"])
    msg = SM2V["message_ascii"].encode()
    assert sm2.verify(pub, msg, sig, backend=backend)
    assert not sm2.verify(pub, msg + b"!", sig, backend=backend)
    bad = bytearray(sig)
    bad[10] ^= 1
    assert not sm2.verify(pub, msg, bytes(bad), backend=backend)


def test_fast_backend_refuses_caller_nonce() -> None:
    key = sm2.PrivateKey.generate()
    with pytest.raises(BackendUnavailableError, match="nonce"):
        sm2.sign(key.data, key.public.data, b"m", backend="gmssl_pyx", nonce=5)


def test_pure_backend_never_uses_gmssl_default_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    # gmssl's default nonce comes from random.choice; if it were used, seeding the
    # global random would make two signatures identical.
    key = sm2.PrivateKey.generate()
    random.seed(1)
    s1 = key.sign(b"same message", backend="gmssl")
    random.seed(1)
    s2 = key.sign(b"same message", backend="gmssl")
    assert s1 != s2
    assert key.public.verify(b"same message", s1) and key.public.verify(b"same message", s2)


@pytest.mark.parametrize(
    ("signer", "checker"),
    [
        ("gmssl_pyx", "gmssl"),
        ("gmssl", "gmssl_pyx"),
        ("gmssl", "openssl"),
        ("gmssl_pyx", "openssl"),
    ],
)
def test_cross_backend_200_messages(signer: str, checker: str) -> None:
    rng = random.Random(20261122)
    key = sm2.PrivateKey.generate()
    for i in range(200):
        msg = rng.randbytes(rng.randrange(0, 300))
        sig = key.sign(msg, backend=signer)
        assert sm2.verify(key.public.data, msg, sig, backend=checker), f"message {i}"


@pytest.mark.parametrize("checker", ["gmssl", "gmssl_pyx", "openssl"])
def test_a_public_key_whose_x_starts_with_byte_04_verifies(checker: str) -> None:
    # gmssl's CryptSM2 strips a "04" prefix with lstrip("04"), which ate the first digits of
    # this key's x coordinate (0x042c3d...): the pure backend raised TypeError in verify.
    key = sm2.PrivateKey.from_bytes(bytes.fromhex("115c7528b7f6".rjust(64, "0")))
    assert key.public.data[:2] == b"\x04\x04"
    for signer in ("gmssl", "gmssl_pyx"):
        sig = key.sign(b"certledger", backend=signer)
        assert sm2.verify(key.public.data, b"certledger", sig, backend=checker)
        assert not sm2.verify(key.public.data, b"certledger!", sig, backend=checker)


def test_custom_signer_id_changes_z_a_and_is_checked() -> None:
    key = sm2.PrivateKey.generate(signer_id=b"alice@agency")
    sig = key.sign(b"msg")
    assert key.public.verify(b"msg", sig)
    assert not sm2.verify(key.public.data, b"msg", sig)  # default id: different Z_A


# ----------------------------------------------------------------- OpenSSL interop

OPENSSL = shutil.which("openssl")


def _openssl_sm2_supported() -> bool:
    if OPENSSL is None:
        return False
    res = subprocess.run(
        [OPENSSL, "genpkey", "-algorithm", "SM2"], capture_output=True, timeout=30, check=False
    )
    return res.returncode == 0


needs_openssl = pytest.mark.skipif(
    not _openssl_sm2_supported(), reason="no openssl command with SM2 support on this machine"
)


def _openssl_key(tmp: Path) -> tuple[Path, Path, bytes, bytes]:
    keyf, pubf = tmp / "key.pem", tmp / "pub.pem"
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "SM2", "-out", keyf], check=True, timeout=30)
    subprocess.run([OPENSSL, "pkey", "-in", keyf, "-pubout", "-out", pubf], check=True, timeout=30)
    der = subprocess.run(
        [OPENSSL, "pkey", "-in", keyf, "-outform", "DER", "-traditional"],
        check=True, capture_output=True, timeout=30,
    ).stdout
    # SEC1 ECPrivateKey: 30 len 02 01 01 04 20 <d:32> ... a1 .. 03 42 00 04 X Y
    d_at = der.index(b"\x04\x20", 5) + 2
    d = der[d_at : d_at + 32]
    pub = der[der.rindex(b"\x03\x42\x00") + 3 :][:65]
    return keyf, pubf, d, pub


@needs_openssl
def test_openssl_signature_verifies_here(tmp_path: Path) -> None:
    keyf, _pubf, d, pub = _openssl_key(tmp_path)
    assert sm2.PrivateKey.from_bytes(d).public.data == pub
    msg = tmp_path / "msg"
    msg.write_bytes("电子证照 interop".encode())
    subprocess.run(
        [OPENSSL, "pkeyutl", "-sign", "-inkey", keyf, "-rawin", "-in", msg, "-out",
         tmp_path / "sig.der", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678"],
        check=True, timeout=30,
    )
    raw = sm2.signature_from_der((tmp_path / "sig.der").read_bytes())
    for backend in BACKENDS:
        assert sm2.verify(pub, msg.read_bytes(), raw, backend=backend)


@needs_openssl
def test_signature_made_here_verifies_in_openssl(tmp_path: Path) -> None:
    _keyf, pubf, d, _pub = _openssl_key(tmp_path)
    key = sm2.PrivateKey.from_bytes(d)
    msg = tmp_path / "msg"
    msg.write_bytes(b"certledger -> openssl")
    for backend in BACKENDS:
        der = sm2.signature_to_der(key.sign(msg.read_bytes(), backend))
        (tmp_path / "sig.der").write_bytes(der)
        res = subprocess.run(
            [OPENSSL, "pkeyutl", "-verify", "-pubin", "-inkey", pubf, "-rawin", "-in", msg,
             "-sigfile", tmp_path / "sig.der", "-digest", "sm3",
             "-pkeyopt", "distid:1234567812345678"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert res.returncode == 0 and "Verified Successfully" in res.stdout, (backend, res)


# ----------------------------------------------------------------- bad input


def test_malformed_public_keys_are_named() -> None:
    good = bytes.fromhex(SM2V["public_key"])
    with pytest.raises(InvalidKeyError, match="65 bytes"):
        sm2.validate_public_key(good[:-1])
    with pytest.raises(InvalidKeyError, match="0x04"):
        sm2.validate_public_key(b"\x02" + good[1:])
    off = bytearray(good)
    off[-1] ^= 1
    with pytest.raises(InvalidKeyError, match="not a point on the SM2 curve"):
        sm2.validate_public_key(bytes(off))
    with pytest.raises(InvalidKeyError, match="not reduced"):
        sm2.validate_public_key(b"\x04" + b"\xff" * 64)
    with pytest.raises(InvalidKeyError, match="not valid hex"):
        sm2.PublicKey.from_hex("04zz")
    with pytest.raises(InvalidKeyError, match="public key"):
        sm2.verify(good[:10], b"m", b"\x01" * 64)


def test_malformed_private_keys_are_named() -> None:
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        sm2.PrivateKey.from_bytes(b"\x01" * 31)
    with pytest.raises(InvalidKeyError, match="out of range"):
        sm2.PrivateKey.from_bytes(b"\x00" * 32)
    with pytest.raises(InvalidKeyError, match="out of range"):
        sm2.PrivateKey.from_bytes((sm2.N - 1).to_bytes(32, "big"))


def test_malformed_signatures() -> None:
    with pytest.raises(InvalidSignatureError, match="64 bytes"):
        sm2.split_signature(b"\x01" * 63)
    with pytest.raises(InvalidSignatureError, match="r is outside"):
        sm2.split_signature(b"\x00" * 32 + b"\x01" * 32)
    with pytest.raises(InvalidSignatureError, match="s is outside"):
        sm2.split_signature(b"\x01" * 32 + sm2.N.to_bytes(32, "big"))
    key = sm2.PrivateKey.generate()
    # Out-of-range r, s: a failed verification, not a crash, whatever the backend.
    for backend in BACKENDS:
        assert not sm2.verify(key.public.data, b"m", b"\x00" * 64, backend=backend)
        assert not sm2.verify(key.public.data, b"m", sm2.N.to_bytes(32, "big") * 2, backend=backend)
        assert not sm2.verify(key.public.data, b"m", b"short", backend=backend)


def test_der_round_trip_and_strictness() -> None:
    key = sm2.PrivateKey.generate()
    for i in range(50):
        raw = key.sign(bytes([i]))
        assert sm2.signature_from_der(sm2.signature_to_der(raw)) == raw
    der = sm2.signature_to_der(key.sign(b"x"))
    with pytest.raises(InvalidSignatureError, match="trailing"):
        sm2.signature_from_der(der[:1] + bytes([der[1] + 1]) + der[2:] + b"\x00")
    with pytest.raises(InvalidSignatureError, match="SEQUENCE"):
        sm2.signature_from_der(b"\x31" + der[1:])
    assert sm2.signature_from_der(bytes.fromhex("3006020101020101")) == (b"\0" * 31 + b"\1") * 2
    with pytest.raises(InvalidSignatureError, match="minimally"):
        sm2.signature_from_der(bytes.fromhex("300702020001020101"))
    with pytest.raises(InvalidSignatureError, match="negative"):
        sm2.signature_from_der(bytes.fromhex("3006020181020101"))


def test_key_id_is_first_16_bytes_of_sm3_of_public_key() -> None:
    pub = bytes.fromhex(SM2V["public_key"])
    assert sm2.key_id(pub) == sm3(pub)[:16]
    assert len(sm2.PublicKey(pub).key_id.hex()) == 32
