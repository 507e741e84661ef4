"""The container walk of ``canonical.decode``: large inputs of few parts are checked
without re-encoding, and it accepts exactly what re-encoding accepts."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.errors import EncodingError

BIG = bytes(range(256)) * 300  # 76,800 bytes: past WALK_MIN_BYTES, a bin32 on the wire
BIG_BIN = b"\xc6" + struct.pack(">I", len(BIG)) + BIG


def _slow(data: bytes) -> tuple[str, Any]:
    """What the general path (unpack, re-encode, compare) says about ``data``."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception:  # msgpack's many error types: all mean "refused"
        return "refused", None
    try:
        ok = canonical.encode(value) == data
    except (EncodingError, ValueError):
        ok = False
    return ("ok", value) if ok else ("refused", None)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=6)
    | st.sampled_from(["e\u0301", "\u00e9", "张三"]) | st.binary(max_size=300),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=4) | st.sampled_from(["\u00e9", "z", "é"]),
                      children, max_size=5),
    max_leaves=16,
)


@given(values)
def test_the_walk_accepts_every_canonical_encoding(value: Any) -> None:
    data = canonical.encode(value)
    walked = canonical._walk(data)
    assert walked is not canonical._NOT_WALKED
    assert walked == canonical.decode(data) == _slow(data)[1]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(canonical.encode(draw(values)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if how == "insert" or not data:
            data.insert(where, byte)
        elif how == "flip":
            data[min(where, len(data) - 1)] ^= byte or 1
        else:
            del data[min(where, len(data) - 1)]
    return bytes(data)


# Re-encodings the walk must see through: msgpack's own choices that canonical forbids.
@st.composite
def foreign(draw: st.DrawFn) -> bytes:
    value = draw(values)
    if draw(st.booleans()) and isinstance(value, dict):
        value = dict(reversed(list(value.items())))  # key order as given, not sorted
    return bytes(msgpack.packb(value, use_bin_type=draw(st.booleans())))


@settings(max_examples=400)
@given(damaged() | foreign())
def test_the_walk_never_accepts_what_re_encoding_refuses(data: bytes) -> None:
    walked = canonical._walk(data)
    if walked is not canonical._NOT_WALKED:
        assert _slow(data) == ("ok", walked)


def _map(*pairs: bytes) -> bytes:
    return bytes([0x80 | (len(pairs) // 2)]) + b"".join(pairs)


def _s(text: str) -> bytes:
    raw = text.encode("utf-8")
    return bytes([0xA0 | len(raw)]) + raw


GOOD = _map(_s("a"), BIG_BIN, _s("b"), b"\x01")

# Each breaks one rule of the canonical form around a large bin.
NOT_CANONICAL = {
    "keys out of order": _map(_s("b"), b"\x01", _s("a"), BIG_BIN),
    "a key twice": _map(_s("a"), b"\x01", _s("a"), BIG_BIN),
    "a wide integer": _map(_s("a"), BIG_BIN, _s("b"), b"\xcf" + (1).to_bytes(8, "big")),
    "a wide bin header": _map(_s("a"), BIG_BIN, _s("b"), b"\xc6\x00\x00\x00\x01x"),
    "a wide str header": _map(_s("a"), BIG_BIN, _s("b"), b"\xd9\x01x"),
    "a wide array header": b"\xdc\x00\x02" + BIG_BIN + b"\x01",
    "a wide map header": b"\xde\x00\x02" + GOOD[1:],
    "an NFD key": _map(_s("e\u0301"), BIG_BIN),
    "an NFD string": _map(_s("a"), BIG_BIN, _s("b"), _s("e\u0301")),
    "a float": _map(_s("a"), BIG_BIN, _s("b"), msgpack.packb(1.5)),
    "a byte after the value": GOOD + b"\x00",
    "a missing byte": GOOD[:-1],
}


def test_a_large_canonical_input_is_walked() -> None:
    assert len(GOOD) >= canonical.WALK_MIN_BYTES
    assert canonical.encode({"a": BIG, "b": 1}) == GOOD
    assert canonical._walk(GOOD) == {"a": BIG, "b": 1} == canonical.decode(GOOD)


@pytest.mark.parametrize("fault", sorted(NOT_CANONICAL))
def test_a_large_input_breaking_one_rule_is_refused(fault: str) -> None:
    data = NOT_CANONICAL[fault]
    assert len(data) >= canonical.WALK_MIN_BYTES
    assert canonical._walk(data) is canonical._NOT_WALKED
    with pytest.raises(EncodingError):
        canonical.decode(data)


def test_many_small_parts_go_the_general_way() -> None:
    items = list(range(canonical.WALK_MIN_BYTES))  # ~190 KB of small integers
    data = canonical.encode(items)
    assert canonical._walk(data) is canonical._NOT_WALKED  # over the walk's budget
    assert canonical.decode(data) == items
