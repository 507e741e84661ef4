"""Electronic certificate (电子证照) identifiers and unified social credit codes.

A certificate identifier has the form::

    根代码.证照类型代码.颁发机构代码.流水号.版本号.校验位
    1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F

* root code: always ``1.2.156.3005.2`` (``ROOT_CODE``);
* type code: 21 characters, an 18-character unified social credit code (USCC,
  GB 32100-2015) of the defining authority followed by 3 digits; the USCC's
  check character is verified;
* issuer code: 1..32 upper-case alphanumerics, normally an 18-character USCC
  (verified whenever the code is 18 characters long) but sometimes another
  administrative code such as a 6-digit division code (``340100``);
* serial: 1..40 upper-case alphanumerics;
* version: exactly 3 digits, ``001``..``999``, bumped on renewal;
* check character: ISO/IEC 7064 MOD 37,36 (hybrid system, alphabet ``0-9A-Z``)
  over type + issuer + serial + version with the dots removed.

Parsing is strict: only surrounding whitespace is stripped and upper case is
required. Every rejection raises ``IdentifierError`` naming the part, what was
expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from certificates.errors import IdentifierError

__all__ = [
    "ISSUER_CODE_MAX_LEN",
    "ROOT_CODE",
    "SERIAL_MAX_LEN",
    "TYPE_CODE_LEN",
    "USCC_ALPHABET",
    "USCC_LEN",
    "CertificateId",
    "is_valid_uscc",
    "iso7064_mod37_36_check_char",
    "parse_certificate_id",
    "uscc_check_char",
    "validate_uscc",
]

ROOT_CODE: Final = "1.2.156.3005.2"

ISO7064_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ISO_VALUES: Final = {c: i for i, c in enumerate(ISO7064_ALPHABET)}
_DIGITS: Final = frozenset("0123456789")
_UPPER_ALNUM: Final = frozenset(ISO7064_ALPHABET)

USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUES: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_LEN: Final = 18

TYPE_CODE_LEN: Final = 21
ISSUER_CODE_MAX_LEN: Final = 32
SERIAL_MAX_LEN: Final = 40
VERSION_LEN: Final = 3
VERSION_MAX: Final = 999

_PART_NAMES: Final = ("type code", "issuer code", "serial", "version", "check character")


# --------------------------------------------------------------------------- helpers


def _require_str(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise IdentifierError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_charset(what: str, value: str, allowed: frozenset[str], allowed_desc: str) -> None:
    """Reject lowercase (with a dedicated message) and any character outside ``allowed``."""
    for pos, ch in enumerate(value):
        if ch in allowed:
            continue
        if ch.isascii() and ch.islower():
            raise IdentifierError(
                f"{what} {value!r} contains lowercase {ch!r} at position {pos + 1}; "
                "identifiers must be upper case"
            )
        raise IdentifierError(
            f"{what} {value!r} contains invalid character {ch!r} at position {pos + 1}; "
            f"expected {allowed_desc}"
        )


# --------------------------------------------------------------------------- ISO/IEC 7064


def iso7064_mod37_36_check_char(s: str) -> str:
    """ISO/IEC 7064 MOD 37,36 check character of ``s`` (alphabet ``0-9A-Z``).

    Hybrid system with M = 36, M + 1 = 37; detects every single substitution
    and every adjacent transposition.
    """
    s = _require_str("check input", s)
    if not s:
        raise IdentifierError("check input is empty; nothing to compute a check character over")
    _check_charset("check input", s, _UPPER_ALNUM, "upper-case letters A-Z and digits 0-9")
    p = 36
    for ch in s:
        p = (p + _ISO_VALUES[ch]) % 36 or 36
        p = (p * 2) % 37
    return ISO7064_ALPHABET[(1 - p) % 36]


# --------------------------------------------------------------------------- USCC (GB 32100)


def uscc_check_char(first17: str) -> str:
    """GB 32100-2015 check character for the first 17 characters of a USCC."""
    first17 = _require_str("unified social credit code prefix", first17)
    if len(first17) != USCC_LEN - 1:
        raise IdentifierError(
            f"unified social credit code prefix must be {USCC_LEN - 1} characters, "
            f"got {len(first17)} ({first17!r})"
        )
    _check_charset(
        "unified social credit code prefix",
        first17,
        frozenset(USCC_ALPHABET),
        f"characters from the GB 32100 alphabet {USCC_ALPHABET} (no I, O, S, V, Z)",
    )
    total = sum(_USCC_VALUES[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    value = 31 - total % 31
    return USCC_ALPHABET[0 if value == 31 else value]


def _validate_uscc(code: str, what: str) -> str:
    code = _require_str(what, code)
    if len(code) != USCC_LEN:
        raise IdentifierError(
            f"{what} {code!r} must be {USCC_LEN} characters (GB 32100), got {len(code)}"
        )
    _check_charset(
        what,
        code,
        frozenset(USCC_ALPHABET),
        f"characters from the GB 32100 alphabet {USCC_ALPHABET} (no I, O, S, V, Z)",
    )
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        raise IdentifierError(
            f"{what} {code!r} fails the GB 32100 check: last char {code[17]!r}, "
            f"expected {expected!r}"
        )
    return code


def validate_uscc(code: str) -> str:
    """Return ``code`` if it is a valid unified social credit code, else raise."""
    return _validate_uscc(code, "unified social credit code")


def is_valid_uscc(code: object) -> bool:
    """True if ``code`` is a string holding a valid unified social credit code."""
    if not isinstance(code, str):
        return False
    try:
        validate_uscc(code)
    except IdentifierError:
        return False
    return True


# --------------------------------------------------------------------------- parts


def _check_type_code(value: str) -> None:
    value = _require_str("type code", value)
    if not value:
        raise IdentifierError("type code is empty")
    if len(value) != TYPE_CODE_LEN:
        raise IdentifierError(
            f"type code {value!r} must be {TYPE_CODE_LEN} characters "
            f"(18-character unified social credit code + 3 digits), got {len(value)}"
        )
    _check_charset("type code", value, _UPPER_ALNUM, "upper-case letters A-Z and digits 0-9")
    suffix = value[USCC_LEN:]
    if not all(c in _DIGITS for c in suffix):
        raise IdentifierError(
            f"type code {value!r} must end in 3 digits after its unified social credit code, "
            f"got {suffix!r}"
        )
    _validate_uscc(value[:USCC_LEN], f"type code {value!r}: unified social credit code")


def _check_issuer_code(value: str) -> None:
    value = _require_str("issuer code", value)
    if not value:
        raise IdentifierError("issuer code is empty")
    if len(value) > ISSUER_CODE_MAX_LEN:
        raise IdentifierError(
            f"issuer code {value!r} must be at most {ISSUER_CODE_MAX_LEN} characters, "
            f"got {len(value)}"
        )
    _check_charset("issuer code", value, _UPPER_ALNUM, "upper-case letters A-Z and digits 0-9")
    if len(value) == USCC_LEN:
        _validate_uscc(value, "issuer code")


# A registry has few type and issuer codes, each in every identifier, and checking them
# (alphabet, GB 32100 check character) was most of parsing one - which a verifier does per
# verification. So the valid ones are remembered (a bounded LRU). A code that fails raises
# and is never stored, so its error is the same every time; only a str is looked up, so
# anything else still gets _require_str's error rather than lru_cache's TypeError.
_valid_type_code = lru_cache(maxsize=1024)(_check_type_code)
_valid_issuer_code = lru_cache(maxsize=4096)(_check_issuer_code)


def _validate_type_code(value: str) -> None:
    (_valid_type_code if type(value) is str else _check_type_code)(value)


def _validate_issuer_code(value: str) -> None:
    (_valid_issuer_code if type(value) is str else _check_issuer_code)(value)


def _validate_serial(value: str) -> None:
    value = _require_str("serial", value)
    if not value:
        raise IdentifierError("serial is empty")
    if len(value) > SERIAL_MAX_LEN:
        raise IdentifierError(
            f"serial {value!r} must be at most {SERIAL_MAX_LEN} characters, got {len(value)}"
        )
    _check_charset("serial", value, _UPPER_ALNUM, "upper-case letters A-Z and digits 0-9")


def _validate_version(value: str) -> None:
    value = _require_str("version", value)
    if len(value) != VERSION_LEN or not all(c in _DIGITS for c in value):
        raise IdentifierError(f"version must be {VERSION_LEN} digits, got {value!r}")
    if value == "000":
        raise IdentifierError(f"version must be between 001 and {VERSION_MAX}, got {value!r}")


def _format_version(version: int | str) -> str:
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise IdentifierError(
            f"version must be an int or a 3-digit string, got {type(version).__name__}"
        )
    if isinstance(version, int):
        if not 1 <= version <= VERSION_MAX:
            raise IdentifierError(f"version must be between 1 and {VERSION_MAX}, got {version}")
        return f"{version:03d}"
    _validate_version(version)
    return version


def _validate_check_char(value: str) -> None:
    value = _require_str("check character", value)
    if len(value) != 1:
        raise IdentifierError(f"check character must be exactly 1 character, got {value!r}")
    _check_charset(
        "check character", value, _UPPER_ALNUM, "an upper-case letter A-Z or a digit 0-9"
    )


# --------------------------------------------------------------------------- identifier


@dataclass(frozen=True)
class CertificateId:
    """A validated certificate identifier; construction validates every part."""

    type_code: str
    issuer_code: str
    serial: str
    version: str
    check: str

    def __post_init__(self) -> None:
        _validate_type_code(self.type_code)
        _validate_issuer_code(self.issuer_code)
        _validate_serial(self.serial)
        _validate_version(self.version)
        _validate_check_char(self.check)
        expected = iso7064_mod37_36_check_char(self.body)
        if self.check != expected:
            raise IdentifierError(
                f"check character is {self.check!r}, expected {expected!r} "
                f"(ISO/IEC 7064 MOD 37,36 over {self.body!r})"
            )

    @property
    def body(self) -> str:
        """Type + issuer + serial + version without dots: the check character's input."""
        return f"{self.type_code}{self.issuer_code}{self.serial}{self.version}"

    @property
    def type_uscc(self) -> str:
        """Unified social credit code embedded in the type code (its first 18 chars)."""
        return self.type_code[:USCC_LEN]

    @property
    def version_number(self) -> int:
        return int(self.version)

    def __str__(self) -> str:
        return ".".join(
            (ROOT_CODE, self.type_code, self.issuer_code, self.serial, self.version, self.check)
        )

    @classmethod
    def parse(cls, text: str) -> CertificateId:
        """Parse the full dotted form; only surrounding whitespace is stripped."""
        text = _require_str("certificate identifier", text).strip()
        if not text:
            raise IdentifierError("certificate identifier is empty")
        root_parts = ROOT_CODE.split(".")
        parts = text.split(".")
        root = ".".join(parts[: len(root_parts)])
        if root != ROOT_CODE:
            raise IdentifierError(
                f"certificate identifier {text!r} must start with root code {ROOT_CODE!r}, "
                f"got {root!r}"
            )
        rest = parts[len(root_parts) :]
        if len(rest) != len(_PART_NAMES):
            raise IdentifierError(
                f"expected {len(_PART_NAMES)} dot-separated parts after the root {ROOT_CODE!r} "
                f"(type code.issuer code.serial.version.check character), got {len(rest)} "
                f"in {text!r}"
            )
        for name, value in zip(_PART_NAMES, rest, strict=True):
            if not value:
                raise IdentifierError(f"{name} is empty in {text!r}")
        type_code, issuer_code, serial, version, check = rest
        return cls(type_code, issuer_code, serial, version, check)

    @classmethod
    def build(
        cls, type_code: str, issuer_code: str, serial: str, version: int | str = 1
    ) -> CertificateId:
        """Validate the parts and compute the check character."""
        version_str = _format_version(version)
        _validate_type_code(type_code)
        _validate_issuer_code(issuer_code)
        _validate_serial(serial)
        check = iso7064_mod37_36_check_char(f"{type_code}{issuer_code}{serial}{version_str}")
        return cls(type_code, issuer_code, serial, version_str, check)

    def next_version(self) -> CertificateId:
        """The renewed identifier: version + 1 with a recomputed check character."""
        if self.version_number >= VERSION_MAX:
            raise IdentifierError(
                f"cannot renew {str(self)!r}: version {self.version} is already the "
                f"maximum {VERSION_MAX}"
            )
        return CertificateId.build(
            self.type_code, self.issuer_code, self.serial, self.version_number + 1
        )


def parse_certificate_id(text: str) -> CertificateId:
    """Parse a full dotted certificate identifier (see ``CertificateId.parse``)."""
    return CertificateId.parse(text)
