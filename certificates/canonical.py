"""Canonical encoding and sign-bytes: the only place signed bytes are built.

Values are encoded as msgpack after a normalising pass:

* maps: string keys only, sorted by their UTF-8 bytes, no duplicates;
* strings: Unicode NFC (so 张三 typed on two keyboards hashes the same);
* integers: signed 64-bit range; msgpack's shortest form is unique per value,
  which is what makes the encoding deterministic;
* bytes stay bytes (``bin``), lists stay lists; tuples become lists;
* floats, None-as-key, sets and other types are refused: they have no single
  canonical form, or no place in a certificate.

``decode`` accepts only canonical input: it re-encodes and compares, so a peer
cannot smuggle two encodings of one value past a signature check. A large input made of
few, large parts (a block holds a few ~1 MB transactions; a proposal, its envelope and the
batch of envelopes each wrap one block) is instead checked by walking its containers:
every header must have its shortest form, map keys must be canonical strings in strictly
increasing UTF-8 order, every ``bin`` must carry its shortest length header, and every
other item must equal its own canonical encoding. The walk reads the headers in place and
copies out only the items, as unpacking does: it accepts exactly what re-encoding accepts
without copying the large byte strings twice more (re-encoding a 3 MB proposal took ~2 ms
at each of five nested layers; the walk ~0.3). Anything it does not accept, or an input
with too many parts for the walk to pay, goes the general way, which names the fault.

``sign_bytes(domain, chain_id, value)`` prefixes a domain tag and the chain id
so a signature made for one purpose or chain is worthless in any other.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Mapping
from typing import Any

import msgpack

from certificates.errors import EncodingError

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

#: Domain tags; one per kind of signed object. Adding one is an API change.
DOMAIN_ANCHOR = "certledger/anchor/v1"
DOMAIN_BATCH = "certledger/batch/v1"
DOMAIN_TX = "certledger/tx/v1"
DOMAIN_PRESENTATION = "certledger/presentation/v1"
DOMAIN_VOTE = "certledger/vote/v1"
DOMAIN_PROPOSAL = "certledger/proposal/v1"
DOMAIN_ENVELOPE = "certledger/envelope/v1"
DOMAIN_REQUEST = "certledger/request/v1"


class _Slow(Exception):
    """Off the fast path: normalise the whole value the general way."""


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (U+D800-U+DFFF): JSON can spell one and a
    shell argument can carry one (undecodable bytes), and UTF-8 - so no canonical
    encoding - cannot hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def normalize(value: Any) -> Any:
    """Return the canonical Python form of ``value`` or raise EncodingError."""
    try:
        return _fast(value)
    except _Slow:
        return _normalize(value, "$")


def _fast(v: Any) -> Any:
    # Values made of exact built-in types with ASCII map keys - what decoded msgpack and
    # our own records hold - normalise without building an error path per element (a
    # verification normalises a few hundred). An ASCII string is already NFC, and for
    # ASCII keys string order is UTF-8 byte order. Anything else, or anything wrong,
    # goes to _normalize, which gives the same result or names the bad element.
    t = type(v)
    if t is str:
        return v if v.isascii() else unicodedata.normalize("NFC", v)
    if t is bytes or v is None or t is bool:
        return v
    if t is int:
        if INT_MIN <= v <= INT_MAX:
            return v
        raise _Slow
    if t is list or t is tuple:
        return [_fast(x) for x in v]
    if t is dict:
        items = {}
        for k, x in v.items():
            if type(k) is not str or not k.isascii():
                raise _Slow
            items[k] = _fast(x)
        # Keys are unique, so sorting the pairs never compares two values.
        return dict(sorted(items.items()))
    raise _Slow


def _normalize(value: Any, _path: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(f"{_path}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_normalize(v, f"{_path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        items: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodingError(f"{_path}: map key {k!r} is not a string")
            nk = unicodedata.normalize("NFC", k)
            if nk in items:
                raise EncodingError(f"{_path}: duplicate map key {nk!r} after NFC normalisation")
            items[nk] = _normalize(v, f"{_path}.{nk}")
        return dict(sorted(items.items(), key=lambda kv: kv[0].encode("utf-8")))
    raise EncodingError(f"{_path}: type {type(value).__name__} has no canonical encoding")


def encode(value: Any) -> bytes:
    """Canonical bytes of ``value``."""
    try:
        out: bytes = msgpack.packb(normalize(value), use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        raise EncodingError(f"cannot encode value: {exc}") from exc
    return out


def decode(data: bytes, *, max_len: int = 64 * 1024 * 1024) -> Any:
    """Decode canonical bytes; refuses anything that is not exactly ``encode(value)``."""
    if not isinstance(data, bytes | bytearray):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_len:
        raise EncodingError(f"encoded value is {len(data)} bytes, limit is {max_len}")
    data = bytes(data)  # once: a bytearray would be copied at every use below
    if len(data) >= WALK_MIN_BYTES:
        walked = _walk(data)
        if walked is not _NOT_WALKED:
            return walked
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as exc:  # msgpack raises several unrelated types on junk
        raise EncodingError(f"not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if encode(value) != data:
        raise EncodingError("encoding is not canonical (key order, NFC or integer width)")
    return value


#: Inputs from this size on are first tried by the container walk (see the header).
WALK_MIN_BYTES = 64 * 1024
#: The walk's budget: this many items, plus one per this many bytes of input. Past it the
#: items are small, and msgpack's re-encoding in C is the cheaper check.
_WALK_ITEMS, _WALK_BYTES_PER_ITEM = 64, 4096
_NOT_WALKED: Any = object()
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
#: Sizes of the scalars whose size the first byte gives (nil, booleans, integers).
_SCALAR_SIZE = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2,
                0xD1: 3, 0xD2: 5, 0xD3: 9} | dict.fromkeys([*range(0x80), *range(0xE0, 0x100)], 1)


#: (kind, width of the length) of the sized items whose first byte is not a fix- form:
#: arrays 16/32, maps 16/32, bin 8/16/32, str 8/16/32 (kinds as ``_sized`` gives them).
_SIZED = {0xDC: (0, 2), 0xDD: (0, 4), 0xDE: (1, 2), 0xDF: (1, 4), 0xC4: (2, 1), 0xC5: (2, 2),
          0xC6: (2, 4), 0xD9: (3, 1), 0xDA: (3, 2), 0xDB: (3, 4)}


def _header_len(n: int) -> int:
    """The shortest header of an array or map of ``n`` items (fix, 16, 32)."""
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def _sized(data: bytes, pos: int) -> tuple[int, int, int]:
    """(kind, length, header length) of the container, bin or str at ``pos``: kind 0 array,
    1 map, 2 bin, 3 str; kind -1 for anything else."""
    b = data[pos]
    if 0x80 <= b <= 0xBF:  # fixmap, fixarray, fixstr
        return (1, b & 0x0F, 1) if b < 0x90 else (0, b & 0x0F, 1) if b < 0xA0 else (3, b & 0x1F, 1)
    kind, width = _SIZED.get(b, (-1, 0))
    if kind < 0:
        return -1, 0, 0
    if width == 1:
        return kind, data[pos + 1], 2
    return kind, (_U16 if width == 2 else _U32).unpack_from(data, pos + 1)[0], 1 + width


def _walk(data: bytes) -> Any:
    """``data``'s value if the container walk accepts it, else ``_NOT_WALKED``. The bytes
    are read in place: only the items themselves are copied out, as unpacking copies them."""
    budget = [_WALK_ITEMS + len(data) // _WALK_BYTES_PER_ITEM]
    try:
        value, end = _walk_item(data, 0, budget)
    except Exception:  # any doubt (junk, not canonical, unencodable) goes the general
        return _NOT_WALKED  # way, which gives the error its proper message
    return value if end == len(data) else _NOT_WALKED


def _walk_item(data: bytes, pos: int, budget: list[int]) -> tuple[Any, int]:
    budget[0] -= 1
    kind, n, head = _sized(data, pos)
    if kind == 2:  # bin: taken as it is, if its header is the shortest
        end = pos + head + n
        if end > len(data) or head != (2 if n < 0x100 else 3 if n < 0x10000 else 5):
            raise _Slow
        return data[pos + head:end], end
    if kind in (0, 1):
        if n > budget[0] or head != _header_len(n):
            raise _Slow
        pos += head
        if kind == 0:
            items = []
            for _ in range(n):
                item, pos = _walk_item(data, pos, budget)
                items.append(item)
            return items, pos
        out: dict[str, Any] = {}
        previous = b""
        for i in range(n):
            key, end = _scalar(data, pos)
            if type(key) is not str:
                raise _Slow
            key_bytes = key.encode("utf-8")
            # Strictly increasing: sorted as encode sorts, and no key twice.
            if i and key_bytes <= previous:
                raise _Slow
            previous = key_bytes
            out[key], pos = _walk_item(data, end, budget)
        return out, pos
    return _scalar(data, pos)


def _scalar(data: bytes, pos: int) -> tuple[Any, int]:
    """A str, nil, boolean or integer at ``pos``, unpacked by msgpack and required to be
    its own canonical encoding (shortest form; NFC for a str)."""
    kind, n, head = _sized(data, pos)
    size = head + n if kind == 3 else _SCALAR_SIZE[data[pos]]  # KeyError: not a scalar
    raw = data[pos:pos + size]
    value = msgpack.unpackb(raw, raw=False)
    if len(raw) != size or encode(value) != raw:
        raise _Slow
    return value, pos + size


def sign_bytes(domain: str, chain_id: str, value: Any) -> bytes:
    """``len(domain) || domain || len(chain_id) || chain_id || canonical(value)``.

    Length prefixes keep the three parts unambiguous whatever they contain.
    """
    if not domain.startswith("certledger/"):
        raise EncodingError(f"domain tag {domain!r} must start with 'certledger/'")
    if not chain_id:
        raise EncodingError("chain id must not be empty")
    d = domain.encode("utf-8")
    c = unicodedata.normalize("NFC", chain_id).encode("utf-8")
    if len(d) > 255 or len(c) > 255:
        raise EncodingError("domain tag and chain id must each be at most 255 bytes")
    return len(d).to_bytes(1, "big") + d + len(c).to_bytes(1, "big") + c + encode(value)
