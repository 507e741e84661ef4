"""QR payloads: compaction round trips, text codecs, size limits, PNG decode, short-lived ones."""

from __future__ import annotations

import dataclasses
import io
import itertools
import struct
import zlib
from pathlib import Path

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates.disclosure import present
from certificates.document import Document, commit
from certificates.sm2 import PrivateKey
from tests.ledger_fixtures import key, make_genesis
from tests.verifier_fixtures import NOW, ChainSource, World, build_world, document, salts_of
from verifier.compact import CompactPresentation
from verifier.errors import PayloadError
from verifier.lightclient import LightClient
from verifier.logic import CHECK_NAMES, verify
from verifier.qr import (
    compress_public_key,
    decode_payload,
    encode_payload,
    from_base41,
    from_text,
    make_qr,
    payload_url,
    to_base41,
    to_base64url,
    write_qr,
)
from verifier.trust import TrustedState

SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "samples" / "diploma.json"


def diploma() -> Document:
    import json

    return Document.from_json_dict(json.loads(SAMPLE.read_text(encoding="utf-8")))


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, 8-bit grey pixels) of a non-interlaced greyscale PNG (segno's output)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert colour == 0 and interlace == 0 and depth in (1, 8)
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = (w * depth + 7) // 8
    bpp = 1
    prev = bytearray(stride)
    pixels = bytearray()
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        if depth == 8:
            pixels += line
        else:
            pixels += bytes(255 if line[x >> 3] >> (7 - (x & 7)) & 1 else 0 for x in range(w))
    return w, h, bytes(pixels)


def scan(png: bytes) -> str:
    zxingcpp = pytest.importorskip("zxingcpp")
    w, h, pixels = read_png(png)
    # Only QR symbols are looked for: with every format enabled, a 1D reader now and then
    # "finds" a short code (e.g. a Code 39 'C501A') in the QR's module pattern.
    found = zxingcpp.read_barcodes(
        memoryview(pixels).cast("B", (h, w)), formats=zxingcpp.BarcodeFormat.QRCode
    )
    # zxing-cpp now and then reports the one symbol twice (two detector passes over the
    # same finder patterns): one distinct text is what must come back.
    texts = {str(f.text) for f in found}
    assert len(texts) == 1, texts
    return texts.pop()


# --------------------------------------------------------------------------- compaction


def test_every_disclosure_of_the_sample_round_trips() -> None:
    c = commit(diploma())
    names = [n for n in c.leaf_names() if n != "$meta"]
    for r in range(len(names) + 1):
        for chosen in itertools.combinations(names, r):
            p = present(c, chosen)
            cp = CompactPresentation.from_presentation(p)
            back = CompactPresentation.from_bytes(cp.to_bytes())
            assert back == cp and back.digest() == p.digest() == c.digest
            assert back.disclosed() == p.disclosed()
            # At worst a byte more per disclosed leaf (its index), the count and an empty bin.
            assert len(cp.to_bytes()) <= len(p.to_bytes()) + len(chosen) + 3


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_compaction_matches_the_digest(n: int, data: st.DataObject) -> None:
    fields = {f"f{i:02d}": i for i in range(n)}
    c = commit(document("P1", fields=fields), salts_of(7))
    chosen = data.draw(st.sets(st.sampled_from([*c.leaf_names()[2:], "$holder"])))
    p = present(c, chosen)
    cp = CompactPresentation.from_bytes(CompactPresentation.from_presentation(p).to_bytes())
    assert cp.digest() == c.digest


def test_typical_diploma_fits_a_version_15_qr() -> None:
    p = present(commit(diploma()), ["name", "degree"])
    data = encode_payload(p)
    assert len(p.to_bytes()) > 380  # the uncompacted presentation
    assert len(data) <= 400
    for base in ("http://127.0.0.1:8090", "https://verify.example.gov.cn",
                 "https://zwfw-verify.guangdong.gov.cn:8443"):
        qr = make_qr(base, data)
        assert qr.version <= 15 and qr.error == "M"


def test_too_big_for_the_qr_limit_is_refused() -> None:
    c = commit(diploma())
    data = encode_payload(present(c, [n for n in c.leaf_names() if n != "$meta"]))
    with pytest.raises(PayloadError, match="disclose fewer"):
        make_qr("https://verify.example.gov.cn", data, max_version=10)


@pytest.mark.parametrize("mutate", [
    lambda v: [*v[:6], 2, *v[7:]],                       # leaf count too small
    lambda v: [*v[:7], [[1, "name", v[5], "x"]], *v[8:]],  # index of $meta
    lambda v: [*v[:8], v[8][:-32]],                      # a hidden hash missing
    lambda v: [*v[:8], v[8] + bytes(32)],                # one too many
    lambda v: [*v[:7], list(reversed(v[7])), *v[8:]],    # disclosed out of order
    lambda v: [*v[:5], b"short", *v[6:]],                # bad meta salt
    lambda v: v[:8],                                     # missing item
])
def test_malformed_compact_presentations(mutate: object) -> None:
    from certificates import canonical

    cp = CompactPresentation.from_presentation(present(commit(diploma()), ["name", "degree"]))
    value = canonical.decode(cp.to_bytes())
    with pytest.raises(PayloadError):
        CompactPresentation.from_bytes(canonical.encode(mutate(value)))  # type: ignore[operator]


# --------------------------------------------------------------------------- text


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_text_codecs_round_trip(data: bytes) -> None:
    assert from_base41(to_base41(data)) == data
    b41 = to_base41(data)
    assert all(c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$*+-." for c in b41)
    assert segno.make(b41 or "0", error="m").mode in ("alphanumeric", "numeric")


def _slow_from_base41(text: str) -> bytes:
    """The decoder as specified, triple by triple: the reference for the fast one."""
    values = ["0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$*+-.".index(c) for c in text]
    out = b""
    for i in range(0, len(values) - len(values) % 3, 3):
        a, b, c = values[i:i + 3]
        n = a + b * 41 + c * 41 * 41
        if n > 0xFFFF:
            raise PayloadError("above two bytes")
        out += n.to_bytes(2, "big")
    if len(values) % 3 == 2:
        n = values[-2] + values[-1] * 41
        if n > 0xFF:
            raise PayloadError("above one byte")
        out += bytes((n,))
    return out


@settings(max_examples=300)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$*+-.", max_size=400)
       .filter(lambda t: len(t) % 3 != 1))
def test_base41_decoder_matches_the_slow_reference(text: str) -> None:
    """Any text of the alphabet - including triples above 0xFFFF, which must be refused."""
    try:
        want: bytes | None = _slow_from_base41(text)
    except PayloadError:
        want = None
    if want is None:
        with pytest.raises(PayloadError):
            from_base41(text)
    else:
        assert from_base41(text) == want
    # The largest triple that fits and the smallest that does not, at every position.
    edge = ["..." if i == len(text) // 3 else "000" for i in range(len(text) // 3 + 1)]
    with pytest.raises(PayloadError):
        from_base41("".join(edge))
    assert from_base41("ZZZ" * 3) == _slow_from_base41("ZZZ" * 3)
    assert from_base41(to_base41(b"\xff\xff")) == b"\xff\xff"


def test_text_forms_and_urls() -> None:
    data = encode_payload(present(commit(diploma()), ["name"]))
    url = payload_url("https://v.example.gov.cn/", data)
    assert url.startswith("https://v.example.gov.cn/q/")
    b64 = to_base64url(data)
    assert b64[0] == "k"
    for text in (url, to_base41(data), b64, f"https://x/q/{b64}", url + "?utm=1", " " + url):
        assert from_text(text) == data
    for bad in ("AB", "a!b", "ab=", "~~~", "...", "A", b64[:-1] + "_="):
        with pytest.raises(PayloadError):
            from_text(bad)


def test_payload_tags() -> None:
    data = encode_payload(present(commit(diploma()), ["name"]))
    with pytest.raises(PayloadError, match="tag"):
        decode_payload(b"\x01" + data[1:])
    with pytest.raises(PayloadError):
        decode_payload(b"")


# --------------------------------------------------------------------------- images


def test_png_scans_back_to_the_same_payload(tmp_path: Path) -> None:
    p = present(commit(diploma()), ["name", "degree"])
    data = encode_payload(p)
    url = payload_url("https://verify.example.gov.cn", data)
    png, svg = write_qr(make_qr("https://verify.example.gov.cn", data), tmp_path / "code")
    assert svg.read_text().lstrip().startswith("<?xml")
    text = scan(png.read_bytes())
    assert text == url
    back = decode_payload(from_text(text))
    assert back.presentation.digest() == p.digest()


def test_segno_png_in_memory_scans() -> None:
    buf = io.BytesIO()
    segno.make("HELLO-QR", error="m").save(buf, kind="png", scale=4, border=4)
    assert scan(buf.getvalue()) == "HELLO-QR"


# --------------------------------------------------------------------------- short-lived


@pytest.fixture(scope="module")
def signed_world() -> tuple[World, PrivateKey]:
    world = build_world()
    holder = key("holder-1")
    from tests.crash_child import commit_next
    from tests.ledger_fixtures import issue_tx
    from tests.verifier_fixtures import anchor_of

    doc = document("H1", fields={"holder_key": compress_public_key(holder.public.data)})
    c = commit(doc, salts_of(99))
    commit_next(world.chain, [issue_tx(anchor_of(c))])
    world.wallets["holder"] = c
    return world, holder


def _verify_payload(world: World, data: bytes, now: float) -> list[str]:
    trusted = TrustedState.from_genesis(make_genesis())
    lc = LightClient(trusted, [ChainSource(world.chain)], refresh_interval=None)
    payload = decode_payload(from_text(to_base41(data)))
    meta = payload.presentation.meta
    v = verify(payload, lc.evidence(meta.id, meta.issuer), lc.trusted, now)
    assert [c.name for c in v.checks] == list(CHECK_NAMES)
    return v.failed


def test_short_lived_presentation(signed_world: tuple[World, PrivateKey]) -> None:
    world, holder = signed_world
    chain_id = make_genesis().chain_id
    p = present(world.wallets["holder"], ["name", "holder_key"])
    data = encode_payload(p, expires=NOW + 600, holder_key=holder, chain_id=chain_id)
    assert _verify_payload(world, data, NOW) == []
    assert _verify_payload(world, data, NOW + 601) == ["presentation_expiry"]
    # Another holder key, another chain, a stretched expiry: all refused.
    with pytest.raises(PayloadError, match="holder key given"):
        encode_payload(p, expires=NOW + 600, holder_key=key("thief"), chain_id=chain_id)
    other_chain = encode_payload(p, expires=NOW + 600, holder_key=holder, chain_id="other")
    assert _verify_payload(world, other_chain, NOW) == ["presentation_expiry"]
    from certificates import canonical

    body, _, sig = canonical.decode(data[1:])
    stretched = data[:1] + canonical.encode([body, NOW + 10**6, sig])
    assert _verify_payload(world, stretched, NOW + 601) == ["presentation_expiry"]


def test_short_lived_needs_the_holder_key_disclosed(
        signed_world: tuple[World, PrivateKey]) -> None:
    world, holder = signed_world
    with pytest.raises(PayloadError, match="must disclose"):
        encode_payload(present(world.wallets["holder"], ["name"]), expires=NOW + 60,
                       holder_key=holder, chain_id="x")


def test_compressed_key_round_trip() -> None:
    from verifier.qr import _public_key

    for name in ("a", "b", "c", "d"):
        pub = key(name).public.data
        assert _public_key(compress_public_key(pub)) == pub
    with pytest.raises(PayloadError):
        _public_key(b"\x02" + (2).to_bytes(32, "big"))  # x = 2 is on no SM2 point


def test_plain_payload_has_no_expiry(signed_world: tuple[World, PrivateKey]) -> None:
    world, _ = signed_world
    data = encode_payload(present(world.wallets["valid"], ["name"]))
    assert _verify_payload(world, data, NOW) == []
    tampered = dataclasses.replace(decode_payload(data), expires=NOW)
    assert tampered.signature is None
