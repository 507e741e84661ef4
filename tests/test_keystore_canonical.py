"""Key files at rest and canonical encoding."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from certificates import canonical, keystore, sm2
from certificates.errors import EncodingError, KeystoreError

FAST = 1_000  # iterations: the KDF cost is not what these tests are about


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = sm2.PrivateKey.generate()
    path = tmp_path / "issuer.key"
    info = keystore.write_key_file(path, key, "correct horse", label="univ", iterations=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert info.key_id_hex == key.public.key_id.hex()
    loaded = keystore.load_key_file(path, "correct horse")
    assert loaded.data == key.data and loaded.public == key.public
    assert keystore.read_key_info(path).label == "univ"
    # Private key bytes never appear in the file in clear.
    assert key.data.hex() not in path.read_text()


def test_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keystore.write_key_file(path, sm2.PrivateKey.generate(), "pw", iterations=FAST)
    before = path.read_bytes()
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        keystore.write_key_file(path, sm2.PrivateKey.generate(), "pw", iterations=FAST)
    assert path.read_bytes() == before


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keystore.write_key_file(path, sm2.PrivateKey.generate(), "right", iterations=FAST)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        keystore.load_key_file(path, "wrong")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("public_key", None, "key_id does not match|bad public key"),
        ("label", "other", "wrong passphrase, or the key file was altered"),
        ("kdf", {"name": "pbkdf2-hmac-sm3", "iterations": 1000, "salt": "00" * 16},
         "wrong passphrase, or the key file was altered"),
        ("format", "x", "not a certledger key file"),
        ("ciphertext", "zz", "not hex"),
    ],
)
def test_tampered_key_file_is_refused(tmp_path: Path, field: str, value: object,
                                      message: str) -> None:
    path = tmp_path / "k"
    keystore.write_key_file(path, sm2.PrivateKey.generate(), "pw", iterations=FAST)
    data = json.loads(path.read_text())
    data[field] = value if value is not None else sm2.PrivateKey.generate().public.hex()
    path.write_text(json.dumps(data))
    with pytest.raises(KeystoreError, match=message):
        keystore.load_key_file(path, "pw")


def test_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        keystore.load_key_file(tmp_path / "missing", "pw")
    (tmp_path / "junk").write_text("{not json")
    with pytest.raises(KeystoreError, match="cannot read key file"):
        keystore.read_key_info(tmp_path / "junk")


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_TEST_PW", "from-env")
    assert keystore.passphrase_from_env_or_prompt("CL_TEST_PW") == "from-env"


def test_no_passphrase_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CL_TEST_PW", raising=False)

    def no_tty(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(keystore.getpass, "getpass", no_tty)
    monkeypatch.setattr(keystore, "_has_terminal", lambda: True)
    with pytest.raises(KeystoreError, match="set CL_TEST_PW"):
        keystore.passphrase_from_env_or_prompt("CL_TEST_PW")


def test_without_a_terminal_the_piped_line_is_read_without_warnings(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CL_TEST_PW", raising=False)
    monkeypatch.setattr(keystore, "_has_terminal", lambda: False)

    def must_not_prompt(prompt: str = "") -> str:
        raise AssertionError("getpass warns when it cannot prompt on a terminal")

    monkeypatch.setattr(keystore.getpass, "getpass", must_not_prompt)
    monkeypatch.setattr("sys.stdin", io.StringIO("piped pass\nrest\n"))
    assert keystore.passphrase_from_env_or_prompt("CL_TEST_PW", confirm=True) == "piped pass"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(KeystoreError, match="set CL_TEST_PW"):
        keystore.passphrase_from_env_or_prompt("CL_TEST_PW")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(KeystoreError, match="must not be empty"):
        keystore.passphrase_from_env_or_prompt("CL_TEST_PW")
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------- canonical

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(values)
def test_canonical_round_trip(value: object) -> None:
    data = canonical.encode(value)
    assert canonical.encode(canonical.decode(data)) == data


@given(st.dictionaries(st.text(max_size=6), st.integers(0, 10), min_size=2, max_size=6))
def test_map_order_does_not_matter(d: dict[str, int]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    try:
        assert canonical.encode(d) == canonical.encode(reversed_d)
    except EncodingError as exc:  # two keys equal after NFC
        assert "duplicate" in str(exc)


# Everything normalize meets: exact and non-exact types, out-of-range and unencodable
# values, NFD text and keys that collide after NFC, tuples, bytearrays.
awkward = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**65) | st.text(max_size=6)
    | st.sampled_from(["e\u0301", "\u00e9", "\ud800", "张三"]) | st.binary(max_size=4)
    | st.binary(max_size=4).map(bytearray) | st.floats(allow_nan=False) | st.just({1}),
    lambda children: st.lists(children, max_size=4) | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=4) | st.sampled_from(["e\u0301", "\u00e9"]),
                      children, max_size=4)
    | st.dictionaries(st.integers(0, 3), children, max_size=2),
    max_leaves=12,
)


def _outcome(f: object, value: object) -> tuple[str, object]:
    try:
        out = f(value)  # type: ignore[operator]
    except EncodingError as exc:
        return "error", str(exc)
    except ValueError as exc:  # a lone surrogate in a map key: both raise it
        return "value-error", type(exc).__name__
    return "ok", (out, msgpack.packb(out, use_bin_type=True) if _packable(out) else None)


def _packable(value: object) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError):
        return False
    return True


# ... and what it meets most: exact built-in types, ASCII map keys (the fast path).
ascii_text = st.text(st.characters(max_codepoint=127), max_size=6)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=6)
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(ascii_text, children, max_size=5),
    max_leaves=12,
)


@given(awkward | plain)
def test_the_fast_normalisation_equals_the_general_one(value: object) -> None:
    # normalize takes a fast path for exact built-in types; it must give exactly what
    # the general path gives, value and encoding, or the same error.
    assert _outcome(canonical.normalize, value) == _outcome(
        lambda v: canonical._normalize(v, "$"), value)


def test_nfc_normalisation() -> None:
    nfd = "e\u0301"  # e + combining acute
    assert canonical.encode({"name": nfd}) == canonical.encode({"name": "\u00e9"})


def test_non_canonical_bytes_are_refused() -> None:
    with pytest.raises(EncodingError, match="not canonical"):
        canonical.decode(msgpack.packb({"b": 1, "a": 2}))
    # 1 written as a 64-bit integer instead of a fixint
    with pytest.raises(EncodingError, match="not canonical"):
        canonical.decode(b"\xcf" + (1).to_bytes(8, "big"))
    with pytest.raises(EncodingError, match="not valid msgpack"):
        canonical.decode(b"\xc1")
    with pytest.raises(EncodingError, match="not valid msgpack"):
        canonical.decode(canonical.encode([1, 2])[:-1] + b"")  # truncated array
    with pytest.raises(EncodingError, match="not valid msgpack"):
        canonical.decode(canonical.encode({"a": 1}) + b"\x00")  # trailing bytes


@pytest.mark.parametrize(
    ("value", "message"),
    [(1.5, "float"), ({1: 2}, "not a string"), (2**64, "64-bit"), ({"a": {3}}, "set")],
)
def test_unencodable_values_are_named(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        canonical.encode(value)


def test_sign_bytes_separate_domains_and_chains() -> None:
    v = {"x": 1}
    a = canonical.sign_bytes(canonical.DOMAIN_VOTE, "chain-a", v)
    assert a != canonical.sign_bytes(canonical.DOMAIN_VOTE, "chain-b", v)
    assert a != canonical.sign_bytes(canonical.DOMAIN_PROPOSAL, "chain-a", v)
    assert b"certledger/vote/v1" in a and b"chain-a" in a
    with pytest.raises(EncodingError, match="certledger/"):
        canonical.sign_bytes("vote", "chain-a", v)
    with pytest.raises(EncodingError, match="chain id"):
        canonical.sign_bytes(canonical.DOMAIN_VOTE, "", v)

