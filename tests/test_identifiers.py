"""Certificate identifiers and unified social credit codes against the shared vectors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from certificates.errors import IdentifierError
from certificates.identifiers import (
    ROOT_CODE,
    USCC_ALPHABET,
    CertificateId,
    is_valid_uscc,
    iso7064_mod37_36_check_char,
    parse_certificate_id,
    uscc_check_char,
    validate_uscc,
)

try:
    from tests.vectors import load_vectors
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from vectors import load_vectors  # type: ignore[no-redef,import-not-found]

VECTORS: dict[str, Any] = load_vectors()
CERT_IDS: dict[str, Any] = VECTORS["certificate_identifiers"]
USCCS: dict[str, Any] = VECTORS["unified_social_credit_codes"]

VALID_IDS: list[str] = CERT_IDS["valid"]
BAD_CHECK_IDS: list[str] = CERT_IDS["invalid_check_character"]

GOOD = "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F"
TYPE = "11100000000013338W032"
ISSUER = "11220000013544541J"
SERIAL = "2430599"
UPPER_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _split(text: str) -> list[str]:
    assert text.startswith(ROOT_CODE + ".")
    return text[len(ROOT_CODE) + 1 :].split(".")


def test_vectors_are_present() -> None:
    assert len(VALID_IDS) >= 6
    assert len(BAD_CHECK_IDS) >= 2
    assert USCCS["valid"] and USCCS["invalid"]


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("text", VALID_IDS)
def test_valid_vector_parses_and_round_trips(text: str) -> None:
    cid = parse_certificate_id(text)
    type_code, issuer, serial, version, check = _split(text)
    assert (cid.type_code, cid.issuer_code, cid.serial, cid.version, cid.check) == (
        type_code,
        issuer,
        serial,
        version,
        check,
    )
    assert str(cid) == text
    assert CertificateId.parse(str(cid)) == cid
    assert CertificateId.parse(f"  {text}\n") == cid
    assert cid.type_uscc == type_code[:18]
    assert cid.body == type_code + issuer + serial + version


@pytest.mark.parametrize("text", VALID_IDS)
def test_build_reproduces_vector_check_char(text: str) -> None:
    type_code, issuer, serial, version, check = _split(text)
    assert iso7064_mod37_36_check_char(type_code + issuer + serial + version) == check
    cid = CertificateId.build(type_code, issuer, serial, version)
    assert cid.check == check
    assert str(cid) == text
    assert CertificateId.build(type_code, issuer, serial, int(version)) == cid


@pytest.mark.parametrize("text", BAD_CHECK_IDS)
def test_invalid_check_character_rejected(text: str) -> None:
    *body_parts, check = _split(text)
    expected = iso7064_mod37_36_check_char("".join(body_parts))
    assert expected != check
    with pytest.raises(IdentifierError) as exc:
        parse_certificate_id(text)
    msg = str(exc.value)
    assert "check character" in msg
    assert f"is {check!r}, expected {expected!r}" in msg


def test_specific_check_message() -> None:
    with pytest.raises(IdentifierError, match=r"check character is 'G', expected 'F'"):
        parse_certificate_id(GOOD[:-1] + "G")


@pytest.mark.parametrize("code", USCCS["valid"])
def test_valid_uscc(code: str) -> None:
    assert validate_uscc(code) == code
    assert is_valid_uscc(code)
    assert uscc_check_char(code[:17]) == code[17]


@pytest.mark.parametrize("code", USCCS["invalid"])
def test_invalid_uscc(code: str) -> None:
    assert not is_valid_uscc(code)
    with pytest.raises(IdentifierError, match="unified social credit code"):
        validate_uscc(code)


def test_uscc_messages() -> None:
    with pytest.raises(IdentifierError, match=r"last char 'K', expected 'J'"):
        validate_uscc("11220000013544541K")
    with pytest.raises(IdentifierError, match=r"must be 18 characters .*got 17"):
        validate_uscc("91610800064834709")
    with pytest.raises(IdentifierError, match=r"invalid character 'I' at position 17"):
        validate_uscc("9161080006483470IT")
    with pytest.raises(IdentifierError, match="lowercase"):
        validate_uscc("11220000013544541j")
    assert not is_valid_uscc(None)
    assert not is_valid_uscc(112200000135445410)


# --------------------------------------------------------------------------- the optional checks


def test_type_code_uscc_is_enforced_and_vectors_pass() -> None:
    for text in VALID_IDS:
        assert is_valid_uscc(_split(text)[0][:18])
    bad_type = "11100000000013338X032"
    with pytest.raises(
        IdentifierError,
        match=r"type code '11100000000013338X032'.*fails the GB 32100 check: "
        r"last char 'X', expected 'W'",
    ):
        CertificateId.build(bad_type, ISSUER, SERIAL)


def test_issuer_uscc_is_enforced_when_18_chars_and_vectors_pass() -> None:
    issuers = [_split(text)[1] for text in VALID_IDS]
    assert any(len(i) != 18 for i in issuers)  # e.g. the division code 340100
    for issuer in issuers:
        if len(issuer) == 18:
            assert is_valid_uscc(issuer)
    with pytest.raises(
        IdentifierError,
        match=r"issuer code '11220000013544541K' fails the GB 32100 check: "
        r"last char 'K', expected 'J'",
    ):
        CertificateId.build(TYPE, "11220000013544541K", SERIAL)
    # Non-18-character administrative codes are accepted as is, any upper alphanumerics
    # (letters outside the GB 32100 alphabet included).
    assert CertificateId.build(TYPE, "340100", SERIAL).issuer_code == "340100"
    assert CertificateId.build(TYPE, "34010O", SERIAL).issuer_code == "34010O"


# --------------------------------------------------------------------------- renewal


def test_next_version() -> None:
    base = parse_certificate_id(
        "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U"
    )
    renewed = base.next_version()
    assert str(renewed) == (
        "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.002.S"
    )
    assert renewed.version == "002"
    assert renewed.version_number == 2
    assert renewed.next_version().version == "003"
    assert base.version == "001"  # frozen, unchanged


def test_next_version_past_999() -> None:
    last = CertificateId.build(TYPE, ISSUER, SERIAL, 999)
    assert last.version == "999"
    with pytest.raises(IdentifierError, match=r"version 999 is already the maximum 999"):
        last.next_version()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", r"certificate identifier is empty"),
        ("   \t ", r"certificate identifier is empty"),
        (
            GOOD.replace("1.2.156.3005.2", "1.2.156.3005.3", 1),
            r"must start with root code '1\.2\.156\.3005\.2', got '1\.2\.156\.3005\.3'",
        ),
        ("2.11100000000013338W032.11220000013544541J", r"must start with root code"),
        (
            "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001",
            r"expected 5 dot-separated parts after the root .*got 4",
        ),
        (GOOD + ".X", r"expected 5 dot-separated parts after the root .*got 6"),
        (
            "1.2.156.3005.2.11100000000013338W032..2430599.001.F",
            r"issuer code is empty",
        ),
        (
            "1.2.156.3005.2.11100000000013338W032.11220000013544541J..001.F",
            r"serial is empty",
        ),
        (
            "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.",
            r"check character is empty",
        ),
        (GOOD.lower(), r"lowercase .*must be upper case"),
        (GOOD[:-1] + "f", r"check character 'f' contains lowercase 'f'"),
        (
            GOOD.replace("11100000000013338W032", "11100000000013338w032"),
            r"type code '11100000000013338w032' contains lowercase 'w' at position 18",
        ),
        (
            GOOD.replace(".001.", ".01."),
            r"version must be 3 digits, got '01'",
        ),
        (GOOD.replace(".001.", ".0A1."), r"version must be 3 digits, got '0A1'"),
        (GOOD.replace(".001.", ".000."), r"version must be between 001 and 999, got '000'"),
        (
            GOOD.replace("W032", "W32"),
            r"type code '11100000000013338W32' must be 21 characters .*got 20",
        ),
        (
            GOOD.replace("W032", "W0321"),
            r"type code '11100000000013338W0321' must be 21 characters .*got 22",
        ),
        (
            GOOD.replace("W032", "W03A"),
            r"type code '11100000000013338W03A' must end in 3 digits .*got '03A'",
        ),
        (
            GOOD.replace("541J", "541K"),
            r"issuer code '11220000013544541K' fails the GB 32100 check: "
            r"last char 'K', expected 'J'",
        ),
        (GOOD.replace("2430599", "2430-599"), r"serial '2430-599' contains invalid character '-'"),
        (GOOD.replace("2430599", "2430 599"), r"serial '2430 599' contains invalid character ' '"),
        (GOOD.replace("2430599", "1" * 41), r"serial '1{41}' must be at most 40 characters"),
        (GOOD.replace(ISSUER, "3" * 33), r"issuer code '3{33}' must be at most 32 characters"),
        (GOOD.replace("2430599", "２430599"), r"serial '２430599' contains invalid character '２'"),
        (GOOD[:-1] + "FF", r"check character must be exactly 1 character, got 'FF'"),
        (GOOD[:-1] + "#", r"check character '#' contains invalid character '#'"),
    ],
)
def test_bad_input_rejected_with_specific_message(text: str, pattern: str) -> None:
    with pytest.raises(IdentifierError, match=pattern):
        parse_certificate_id(text)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"version": "01"}, r"version must be 3 digits, got '01'"),
        ({"version": 0}, r"version must be between 1 and 999, got 0"),
        ({"version": 1000}, r"version must be between 1 and 999, got 1000"),
        ({"version": True}, r"version must be an int or a 3-digit string, got bool"),
        ({"type_code": ""}, r"type code is empty"),
        ({"issuer_code": ""}, r"issuer code is empty"),
        ({"serial": ""}, r"serial is empty"),
        ({"serial": "abc"}, r"serial 'abc' contains lowercase 'a'"),
        ({"issuer_code": "３40100"}, r"issuer code '３40100' contains invalid character '３'"),
    ],
)
def test_build_rejects_bad_parts(kwargs: dict[str, Any], pattern: str) -> None:
    args: dict[str, Any] = {
        "type_code": TYPE,
        "issuer_code": ISSUER,
        "serial": SERIAL,
        "version": 1,
    }
    args.update(kwargs)
    with pytest.raises(IdentifierError, match=pattern):
        CertificateId.build(**args)


def test_direct_construction_is_validated() -> None:
    good = parse_certificate_id(GOOD)
    with pytest.raises(IdentifierError, match=r"check character is 'G', expected 'F'"):
        dataclasses.replace(good, check="G")
    with pytest.raises(IdentifierError, match=r"version must be 3 digits, got '1'"):
        CertificateId(TYPE, ISSUER, SERIAL, "1", "F")
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.version = "002"  # type: ignore[misc]


def test_iso7064_rejects_bad_input() -> None:
    with pytest.raises(IdentifierError, match="empty"):
        iso7064_mod37_36_check_char("")
    with pytest.raises(IdentifierError, match=r"contains lowercase 'a'"):
        iso7064_mod37_36_check_char("a1")
    with pytest.raises(IdentifierError, match=r"must be 17 characters, got 16"):
        uscc_check_char("1" * 16)


# --------------------------------------------------------------------------- properties


@st.composite
def usccs(draw: st.DrawFn) -> str:
    first17 = draw(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
    return first17 + uscc_check_char(first17)


@st.composite
def issuer_codes(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(usccs())
    code = draw(st.text(alphabet=UPPER_ALNUM, min_size=1, max_size=32))
    assume(len(code) != 18)
    return code


@st.composite
def parts(draw: st.DrawFn) -> tuple[str, str, str, int]:
    type_code = draw(usccs()) + draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    issuer = draw(issuer_codes())
    serial = draw(st.text(alphabet=UPPER_ALNUM, min_size=1, max_size=40))
    version = draw(st.integers(min_value=1, max_value=999))
    return type_code, issuer, serial, version


@given(parts())
def test_build_parses_back_equal(p: tuple[str, str, str, int]) -> None:
    type_code, issuer, serial, version = p
    cid = CertificateId.build(type_code, issuer, serial, version)
    assert parse_certificate_id(str(cid)) == cid
    assert cid.version == f"{version:03d}"
    assert cid.type_uscc == type_code[:18]


@given(parts(), st.data())
def test_single_substitution_is_detected(p: tuple[str, str, str, int], data: st.DataObject) -> None:
    type_code, issuer, serial, version = p
    cid = CertificateId.build(type_code, issuer, serial, version)
    fields = [cid.type_code, cid.issuer_code, cid.serial, cid.version]
    body = cid.body
    pos = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="position")
    new_char = data.draw(
        st.sampled_from(UPPER_ALNUM).filter(lambda c: c != body[pos]), label="replacement"
    )
    # MOD 37,36 detects every single substitution.
    altered_body = body[:pos] + new_char + body[pos + 1 :]
    assert iso7064_mod37_36_check_char(altered_body) != cid.check
    # Re-split at the same boundaries and parse with the original check character.
    altered_fields = []
    start = 0
    for f in fields:
        altered_fields.append(altered_body[start : start + len(f)])
        start += len(f)
    text = ".".join([ROOT_CODE, *altered_fields, cid.check])
    with pytest.raises(IdentifierError):
        parse_certificate_id(text)


# --------------------------------------------------------------------------- remembered codes


def test_remembered_codes_never_let_a_bad_one_through() -> None:
    """Valid type and issuer codes are cached; a bad one fails every time, the same way,
    even right after the good one it differs from by a character was accepted."""
    bad_issuer = GOOD.replace("541J", "541K")
    bad_type = GOOD.replace("13338W", "13338X")
    for _ in range(3):
        assert str(parse_certificate_id(GOOD)) == GOOD
        with pytest.raises(IdentifierError, match=r"issuer code '11220000013544541K' fails"):
            parse_certificate_id(bad_issuer)
        with pytest.raises(IdentifierError, match=r"type code '11100000000013338X032'"):
            parse_certificate_id(bad_type)


@pytest.mark.parametrize("field", ["type_code", "issuer_code"])
def test_a_code_that_is_not_a_string_is_named_not_hashed(field: str) -> None:
    parts: dict[str, Any] = {"type_code": TYPE, "issuer_code": ISSUER, "serial": SERIAL,
                             "version": "001", "check": "F"}
    parts[field] = [TYPE]  # unhashable: must still get the identifier error
    with pytest.raises(IdentifierError, match="must be a string, got list"):
        CertificateId(**parts)
