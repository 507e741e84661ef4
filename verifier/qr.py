"""QR payloads: compact bytes, URL-safe text, holder-signed short-lived presentations, images.

Payload bytes
-------------
``tag (1 byte) || body``:

* ``0x91``: body = a ``CompactPresentation`` (``verifier.compact``);
* ``0x92``: body = canonical ``[compact presentation bytes, expires, signature]``: a
  *short-lived* presentation. ``expires`` is Unix seconds; ``signature`` is the
  holder's SM2 signature over ``sign_bytes(DOMAIN_PRESENTATION, chain_id,
  {"expires", "presentation": SM3(compact bytes)})``, made with the holder key
  whose public key the issuer committed as the field ``holder_key`` (bytes: 65
  uncompressed or 33 compressed) when the wallet was made. The presentation must
  disclose that field; the verifier checks the signature with it and refuses the
  presentation after ``expires`` (check ``presentation_expiry``). A copied QR is
  thus useless after a few minutes, and its disclosed set cannot be altered.

Text and URL
------------
A QR holds ``<verifier>/q/<text>``. Base64url text is 4/3 of the bytes, in QR
*byte* mode (8 bits a character): a 352-byte two-field diploma would need QR
version 17. So the QR uses **base41**: two bytes in three characters from
``0-9 A-Z $ * + - .``, all in QR *alphanumeric* mode (5.5 bits a character) and
all legal, unescaped, in a URL path (RFC 3986 pchar): the same diploma fits
version 15 at level M. ``/q/`` also accepts base64url, which is the form to
paste into text (it always starts with ``k``, from the tag, so a text with a
lower-case letter or ``_`` is base64url, anything else base41).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import segno

from certificates import canonical, sm2
from certificates.disclosure import Presentation
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from verifier.compact import CompactPresentation
from verifier.errors import PayloadError

TAG_PLAIN: Final = 0x91
TAG_SIGNED: Final = 0x92
HOLDER_KEY_FIELD: Final = "holder_key"
MAX_PAYLOAD_BYTES: Final = 4096
DEFAULT_MAX_VERSION: Final = 15
ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$*+-."
_VALUES: Final = {c: i for i, c in enumerate(ALPHABET)}
_B: Final = len(ALPHABET)
#: ASCII byte -> base41 digit, 0xFF for a byte outside the alphabet (``bytes.translate``).
_DIGITS: Final = bytes(_VALUES.get(chr(b), 0xFF) for b in range(256))
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


# --------------------------------------------------------------------------- payload bytes


@dataclass(frozen=True)
class QrPayload:
    presentation: CompactPresentation
    body: bytes  # the compact presentation bytes the holder signature covers
    expires: int | None = None
    signature: bytes | None = None


def holder_sign_bytes(chain_id: str, body: bytes, expires: int) -> bytes:
    return canonical.sign_bytes(canonical.DOMAIN_PRESENTATION, chain_id,
                                {"expires": expires, "presentation": sm3(body)})


def encode_payload(presentation: Presentation | CompactPresentation, *,
                   expires: int | None = None, holder_key: sm2.PrivateKey | None = None,
                   chain_id: str | None = None) -> bytes:
    """Payload bytes; with ``expires`` the holder key and chain id sign them."""
    cp = (presentation if isinstance(presentation, CompactPresentation)
          else CompactPresentation.from_presentation(presentation))
    body = cp.to_bytes()
    if expires is None:
        return bytes([TAG_PLAIN]) + body
    if holder_key is None or chain_id is None:
        raise PayloadError("a short-lived presentation needs the holder key and the chain id")
    committed = cp.disclosed().get(HOLDER_KEY_FIELD)
    if not isinstance(committed, bytes) or _public_key(committed) != holder_key.public.data:
        raise PayloadError(f"a short-lived presentation must disclose the {HOLDER_KEY_FIELD!r} "
                           "field, and it must be the public key of the holder key given")
    signature = holder_key.sign(holder_sign_bytes(chain_id, body, expires))
    return bytes([TAG_SIGNED]) + canonical.encode([body, expires, signature])


def decode_payload(data: bytes) -> QrPayload:
    if not data or len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"QR payload must be 1..{MAX_PAYLOAD_BYTES} bytes")
    tag, rest = data[0], bytes(data[1:])
    if tag == TAG_PLAIN:
        return QrPayload(CompactPresentation.from_bytes(rest), rest)
    if tag != TAG_SIGNED:
        raise PayloadError(f"unsupported QR payload version tag 0x{tag:02x}")
    try:
        value = canonical.decode(rest, max_len=MAX_PAYLOAD_BYTES)
    except CertificatesError as exc:
        raise PayloadError(f"signed QR payload: {exc}") from exc
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], bytes)
            and type(value[1]) is int and isinstance(value[2], bytes) and len(value[2]) == 64):
        raise PayloadError("signed QR payload must be [presentation, expires, signature]")
    body, expires, signature = value
    return QrPayload(CompactPresentation.from_bytes(body), body, expires, signature)


def verify_holder_signature(payload: QrPayload, chain_id: str) -> None:
    """Raise PayloadError unless the committed holder key signed this payload."""
    if payload.expires is None or payload.signature is None:
        raise PayloadError("the presentation is not holder-signed")
    committed = payload.presentation.disclosed().get(HOLDER_KEY_FIELD)
    if not isinstance(committed, bytes):
        raise PayloadError(f"the presentation does not disclose {HOLDER_KEY_FIELD!r}, "
                           "so its holder signature cannot be checked")
    message = holder_sign_bytes(chain_id, payload.body, payload.expires)
    try:
        ok = sm2.verify(_public_key(committed), message, payload.signature)
    except CertificatesError as exc:
        raise PayloadError(f"committed holder key is not an SM2 public key: {exc}") from exc
    if not ok:
        raise PayloadError("holder signature does not verify under the committed holder key")


def _public_key(data: bytes) -> bytes:
    """A 65-byte SM2 public key from its 65-byte or 33-byte (compressed) form."""
    if len(data) == 33 and data[0] in (2, 3):
        x = int.from_bytes(data[1:], "big")
        p = sm2.P
        y = pow((x * x * x + sm2.A * x + sm2.B) % p, (p + 1) // 4, p)  # p = 3 mod 4
        if (y * y - (x * x * x + sm2.A * x + sm2.B)) % p:
            raise PayloadError("compressed holder key is not on the SM2 curve")
        if y & 1 != data[0] & 1:
            y = p - y
        data = b"\x04" + data[1:] + y.to_bytes(32, "big")
    try:
        return sm2.validate_public_key(data)
    except CertificatesError as exc:
        raise PayloadError(f"holder key: {exc}") from exc


def compress_public_key(public_key: bytes) -> bytes:
    """The 33-byte form of a 65-byte SM2 public key (for the ``holder_key`` field)."""
    sm2.validate_public_key(public_key)
    return bytes([2 | (public_key[-1] & 1)]) + public_key[1:33]


# --------------------------------------------------------------------------- text


def to_base41(data: bytes) -> str:
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] << 8 | data[i + 1]
        out += [ALPHABET[n % _B], ALPHABET[n // _B % _B], ALPHABET[n // (_B * _B)]]
    if len(data) % 2:
        n = data[-1]
        out += [ALPHABET[n % _B], ALPHABET[n // _B]]
    return "".join(out)


def from_base41(text: str) -> bytes:
    if len(text) % 3 == 1:
        raise PayloadError("base41 text has a length that no byte string gives")
    raw = text.encode("utf-8")
    digits = raw.translate(_DIGITS)
    if len(raw) != len(text) or 0xFF in digits:
        bad = next(c for c in text if c not in _VALUES)
        raise PayloadError(f"base41 text has the character {bad!r}")
    full = len(digits) - len(digits) % 3
    out = _triples(digits[:full])
    if full < len(digits):
        n = digits[full] + digits[full + 1] * _B
        if n > 0xFF:
            raise PayloadError("base41 text encodes a value above one byte")
        out += bytes((n,))
    return out


def _triples(digits: bytes) -> bytes:
    """Each digit triple (a, b, c) as the 2 bytes of a + 41 b + 41² c, big-endian.

    Run on every QR scan, so done on whole byte strings rather than triple by triple:
    the digits go into the low byte of 4-byte lanes of three big integers, and
    A + 41 B + 1681 C sums every lane at once - a lane holds at most 68,920 < 2**32, so
    no carry crosses lanes - and the lanes' two low bytes are the output.
    """
    k = len(digits) // 3
    lanes = []
    for j in range(3):
        buf = bytearray(4 * k)
        buf[3::4] = digits[j::3]
        lanes.append(int.from_bytes(buf, "big"))
    total = (lanes[0] + lanes[1] * _B + lanes[2] * (_B * _B)).to_bytes(4 * k, "big")
    if any(total[1::4]):  # byte 0 is always 0; byte 1 set: a triple above two bytes
        raise PayloadError("base41 text encodes a value above two bytes")
    out = bytearray(2 * k)
    out[0::2], out[1::2] = total[2::4], total[3::4]
    return bytes(out)


def to_base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    """Payload bytes from its text (base41 or base64url), a ``…/q/<text>`` URL, or junk."""
    text = text.strip()
    for marker in ("/q/", "/Q/"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    text = text.split("?", 1)[0].split("#", 1)[0]
    if len(text) > 2 * MAX_PAYLOAD_BYTES:
        raise PayloadError("QR payload text is too long")
    if "_" in text or text != text.upper():  # a lower-case letter: base64url, not base41
        if not _BASE64URL.fullmatch(text):
            raise PayloadError("base64url text has characters outside its alphabet")
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise PayloadError(f"bad base64url text: {exc}") from exc
        if to_base64url(data) != text:
            raise PayloadError("base64url text is not in its canonical form")
        return data
    return from_base41(text)


def payload_url(verifier_url: str, data: bytes) -> str:
    return f"{verifier_url.rstrip('/')}/q/{to_base41(data)}"


# --------------------------------------------------------------------------- images


def make_qr(verifier_url: str, data: bytes, max_version: int = DEFAULT_MAX_VERSION) -> Any:
    """A ``segno`` QR code (level M) for the payload URL, refused above ``max_version``."""
    prefix = f"{verifier_url.rstrip('/')}/q/"
    # Two segments: the URL prefix in byte mode, the base41 text in alphanumeric mode.
    segments: Any = [(prefix, None), (to_base41(data), None)]
    qr = segno.make(segments, error="m", boost_error=False)
    if int(qr.version) > max_version:
        raise PayloadError(
            f"the QR code would be version {qr.version} ({len(data)} payload bytes), above "
            f"{max_version}: phones scan it poorly; disclose fewer fields")
    return qr


def write_qr(qr: Any, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``PREFIX.png`` and ``PREFIX.svg``; returns both paths."""
    png, svg = Path(f"{prefix}.png"), Path(f"{prefix}.svg")
    qr.save(str(png), kind="png", scale=6, border=4)
    qr.save(str(svg), kind="svg", scale=6, border=4)
    return png, svg
