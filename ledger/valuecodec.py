"""How the LevelDB store keeps its two bulky, compressible value families small.

LevelDB's own compression (snappy) is off for the ledger: it recompresses every table each
time a compaction rewrites it, and at 1M certificates that was a third of the CPU of
applying a block, spent mostly on SMT nodes (hashes, which do not compress). Instead the
two families that do compress are compressed once, with zstd, when a batch is written, and
decompressed when read; everything else is stored as it is.

* **Blocks** (``b/``): one zstd frame each (~1/6 of the block).
* **State records** (``r/``): one record alone barely compresses, but the records a batch
  writes share most of their bytes (issuer, type, signer key, tx id, heights, the id's
  prefix). So they are compressed in groups of up to ``GROUP_RECORDS``: one zstd frame per
  group, stored once under ``schema.codec_group(id)`` (``x/``), where ``id`` is the first
  8 bytes of SM3 of the group's first record. Each ``r/`` value then only points into its
  group. zstd's cost is mostly per frame (~3 us, whatever the parameters), so one frame per
  record cost 3 us a record; a group of 64 costs ~0.5 us a record and takes less room.

An encoded value is a tag byte and a body: ``RAW`` + the value; ``FRAME`` + a zstd frame;
``GROUP`` + group id + the record's index in it (one byte). A group decodes to a count
(2 bytes), the end offset of each record (4 bytes each) and the records back to back.
Frames are magic-less and carry their content size. A group id already stored with other
bytes (a 2**-64 event, or the same first record written twice) makes that group's records
raw, never wrong. Groups are never deleted: a record rewritten later (a revocation) leaves
its old copy in the group, which the group's other records still use.

What ``decode`` cannot read back (an unknown tag, a missing group, a broken frame or group,
an index past the group's end) is a ``CorruptStoreError``. The hashes the chain checks
(block hash, SMT leaf of a record) are over the decoded bytes, so audit sees through the
encoding.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import accumulate
from typing import Final

import zstandard as zstd

from certificates.hashing import sm3
from ledger import schema
from ledger.errors import CorruptStoreError, StorageError

RAW: Final = b"\x00"
FRAME: Final = b"\x01"
GROUP: Final = b"\x03"
GROUP_ID_SIZE: Final = 8
#: Records per group. Compressing costs ~0.44 us a record at 64 (1.0 at 16, 0.37 at 128);
#: a read of one record decompresses its whole group (~6 us at 64, ~10 at 128).
GROUP_RECORDS: Final = 64
#: Fewer records than this in a batch are stored raw: a frame would cost more than it saves.
MIN_GROUP_RECORDS: Final = 4
#: zstd level 1: as small as level 3 on blocks and records, and faster (twice, on blocks).
LEVEL: Final = 1
#: Decoded groups kept (~10 KB each): records are read in runs (a batch's revocations, a
#: walk in write order), and a random proof pays one decompress.
CACHED_GROUPS: Final = 256

_FORMAT = zstd.FORMAT_ZSTD1_MAGICLESS
_PARAMS = zstd.ZstdCompressionParameters.from_level(
    LEVEL, format=_FORMAT, write_content_size=1, write_checksum=0, write_dict_id=0)
_BLOCK, _RECORD = schema.BLOCK_PREFIX, schema.RECORD_PREFIX
_RESERVED = schema.CODEC_PREFIX
_COUNT = struct.Struct(">H")
_END = struct.Struct(">I")
_INDEX = [bytes([i]) for i in range(GROUP_RECORDS)]
_POINTER_SIZE = 1 + GROUP_ID_SIZE + 1


def reserved_key_error(key: bytes) -> StorageError:
    """What a caller's write of a key in the codec's family gets: the store owns it, and a
    caller's value there would be read as a group of records (or hidden from walks)."""
    return StorageError(
        f"key {key!r} is in the family {_RESERVED!r}, which the store keeps for its record "
        "compression groups; nothing of the batch was written")


def _pack_group(values: list[bytes]) -> bytes:
    ends = accumulate(map(len, values))
    return (_COUNT.pack(len(values)) + struct.pack(f">{len(values)}I", *ends)
            + b"".join(values))


class ValueCodec:
    """Encodes a batch's values for LevelDB and decodes what is read back.

    ``get_raw`` reads a stored value as it is (to find groups); ``where`` names the store
    in errors. Decoding may run on many threads (the node's API); zstd contexts are not
    shared between threads, so a lock guards them and the group cache."""

    def __init__(self, get_raw: Callable[[bytes], bytes | None], where: str) -> None:
        self._get_raw = get_raw
        self._where = where
        self._lock = threading.Lock()
        self._frames = zstd.ZstdCompressor(compression_params=_PARAMS)
        self._plain = zstd.ZstdDecompressor(format=_FORMAT)
        self._groups: OrderedDict[bytes, bytes] = OrderedDict()  # group id -> decoded group

    # ------------------------------------------------------------------ writing

    def encode(self, ops: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes | None]]:
        """``ops`` as stored pairs: blocks and records encoded, groups added. A key in the
        codec's own family raises ``StorageError`` (before anything is written)."""
        out: list[tuple[bytes, bytes | None]] = []
        keys: list[bytes] = []
        values: list[bytes] = []
        append = out.append
        for key, value in ops.items():
            prefix = key[:2]
            if value is None or (prefix != _RECORD and prefix != _BLOCK):
                if prefix == _RESERVED:
                    raise reserved_key_error(key)
                append((key, value))
            elif prefix == _RECORD:
                keys.append(key)
                values.append(value)
            else:
                with self._lock:
                    append((key, FRAME + self._frames.compress(value)))
        n = len(keys)
        if n < MIN_GROUP_RECORDS:
            out.extend(zip(keys, [RAW + v for v in values], strict=True))
            return out
        groups = -(-n // GROUP_RECORDS)
        size = -(-n // groups)  # even groups: no small last one
        written: dict[bytes, bytes] = {}
        for lo in range(0, n, size):
            self._encode_group(keys[lo : lo + size], values[lo : lo + size], written, out)
        return out

    def _encode_group(self, keys: list[bytes], values: list[bytes], written: dict[bytes, bytes],
                      out: list[tuple[bytes, bytes | None]]) -> None:
        """One group's pointers and frame into ``out``; ``written`` holds the groups this
        batch already wrote (not yet readable from the store) by key."""
        with self._lock:
            frame = self._frames.compress(_pack_group(values))
        group_id = sm3(values[0])[:GROUP_ID_SIZE]
        group_key = schema.codec_group(group_id)
        stored = written.get(group_key)
        if stored is None:
            stored = self._get_raw(group_key)
        if stored is not None and stored != frame:
            out.extend(zip(keys, [RAW + v for v in values], strict=True))
            return
        head = GROUP + group_id
        out.extend(zip(keys, map(head.__add__, _INDEX[: len(keys)]), strict=True))
        if stored is None:
            out.append((group_key, frame))
            written[group_key] = frame

    # ------------------------------------------------------------------ reading

    def decode(self, key: bytes, value: bytes) -> bytes:
        """The value stored under ``key`` as the chain wrote it."""
        prefix = key[:2]
        if prefix != _RECORD and prefix != _BLOCK:
            return value
        tag = value[:1]
        try:
            if tag == RAW:
                return value[1:]
            if tag == GROUP:
                if len(value) != _POINTER_SIZE:
                    raise self._corrupt(key, f"its group pointer is {len(value)} bytes, not "
                                        f"{_POINTER_SIZE}")
                return self._record_in_group(key, value[1 : 1 + GROUP_ID_SIZE], value[-1])
            if tag == FRAME:
                with self._lock:
                    return self._plain.decompress(value[1:])
        except (zstd.ZstdError, MemoryError) as exc:
            raise self._corrupt(key, f"its zstd frame does not decode ({exc})") from exc
        raise self._corrupt(key, f"unknown encoding tag {tag.hex() or 'none'}")

    def _record_in_group(self, key: bytes, group_id: bytes, index: int) -> bytes:
        """Record ``index`` of a group. Only the two offsets it needs are read: a random
        proof reads one record of a group, and the checks below are all that keeps a
        damaged group from being sliced wrong (the SMT leaf hash catches damaged bytes)."""
        with self._lock:
            data = self._groups.get(group_id)
            if data is None:
                data = self._load_group(key, group_id)
            else:
                self._groups.move_to_end(group_id)
        size = len(data)
        count = _COUNT.unpack_from(data)[0] if size >= _COUNT.size else 0
        if index >= count:
            raise self._corrupt(key, f"it points past the end of group x/{group_id.hex()} "
                                f"(record {index} of {count})")
        base = _COUNT.size + 4 * count
        if base <= size:
            end = base + _END.unpack_from(data, _COUNT.size + 4 * index)[0]
            start = base + _END.unpack_from(data, _COUNT.size + 4 * index - 4)[0] if index else base
            if base <= start <= end <= size:
                return data[start:end]
        raise self._corrupt(key, f"its compression group x/{group_id.hex()} is malformed")

    def _load_group(self, key: bytes, group_id: bytes) -> bytes:
        frame = self._get_raw(schema.codec_group(group_id))
        if frame is None:
            raise self._corrupt(key, f"its compression group x/{group_id.hex()} is missing")
        data: bytes = self._plain.decompress(frame)
        self._groups[group_id] = data
        if len(self._groups) > CACHED_GROUPS:
            self._groups.popitem(last=False)
        return data

    def _corrupt(self, key: bytes, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"LevelDB store at {self._where} is corrupt: the value of {key[:2].decode()}"
            f"{key[2:].hex()} cannot be read back: {why}; restore it from a backup or re-sync "
            "the node — it will not be served")
