"""How the LevelDB store keeps its two bulky, compressible value families small.

LevelDB's own compression (snappy) is off for the ledger: it recompresses every table each
time a compaction rewrites it, and at 1M certificates that was a third of the CPU of
applying a block, spent mostly on SMT nodes (hashes, which do not compress). Instead the
two families that do compress are compressed once, with zstd, when a batch is written, and
decompressed when read; everything else is stored as it is.

* **Blocks** (``b/``): one zstd frame each (~1/6 of the block).
* **State records** (``r/``): one record alone barely compresses, but the records a batch
  writes share most of their bytes (issuer, type, signer key, tx id, heights, the id's
  prefix). So each is compressed against a dictionary: the batch's first record, stored
  once under ``schema.codec_dict(id)`` (``x/``), where ``id`` is the first 8 bytes of its
  SM3. A record then takes about half its size.

An encoded value is a tag byte and a body: ``RAW`` + the value; ``FRAME`` + a zstd frame;
``DICT`` + dictionary id + a zstd frame made with that dictionary. Frames are magic-less
and carry their content size. A dictionary id already stored with other bytes (a 2**-64
event) makes that batch's records raw, never wrong. What ``decode`` cannot read back (an
unknown tag, a missing dictionary, a broken frame) is a ``CorruptStoreError``. The hashes
the chain checks (block hash, SMT leaf of a record) are over the decoded bytes, so audit
sees through the encoding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import zstandard as zstd

from certificates.hashing import sm3
from ledger import schema
from ledger.errors import CorruptStoreError, StorageError

RAW: Final = b"\x00"
FRAME: Final = b"\x01"
DICT: Final = b"\x02"
DICT_ID_SIZE: Final = 8
#: Fewer records than this in a batch are stored raw: a dictionary would cost more.
MIN_DICT_RECORDS: Final = 4
#: zstd level 1: as small as level 3 on blocks and records, and faster (twice, on blocks).
LEVEL: Final = 1
#: Dictionary decompressors kept, one per batch that wrote records (~24 KB each once used):
#: 1,024 cover 5M batch-issued certificates, so random proofs seldom rebuild one (~14 us).
CACHED_DICTS: Final = 1024

_FORMAT = zstd.FORMAT_ZSTD1_MAGICLESS
_PARAMS = zstd.ZstdCompressionParameters.from_level(
    LEVEL, format=_FORMAT, write_content_size=1, write_checksum=0, write_dict_id=0)
_BLOCK, _RECORD = schema.BLOCK_PREFIX, schema.RECORD_PREFIX
_DICT = schema.CODEC_DICT_PREFIX


def reserved_key_error(key: bytes) -> StorageError:
    """What a caller's write of a key in the dictionaries' family gets: the store owns it,
    and a caller's value there would be read as a dictionary (or hidden from walks)."""
    return StorageError(
        f"key {key!r} is in the family {_DICT!r}, which the store keeps for its compression "
        "dictionaries; nothing of the batch was written")


def _dict(data: bytes) -> zstd.ZstdCompressionDict:
    return zstd.ZstdCompressionDict(data, dict_type=zstd.DICT_TYPE_RAWCONTENT)


class ValueCodec:
    """Encodes a batch's values for LevelDB and decodes what is read back.

    ``get_raw`` reads a stored value as it is (to find dictionaries); ``where`` names the
    store in errors. Decoding may run on many threads (the node's API); zstd contexts are
    not shared between threads, so a lock guards them."""

    def __init__(self, get_raw: Callable[[bytes], bytes | None], where: str) -> None:
        self._get_raw = get_raw
        self._where = where
        self._lock = threading.Lock()
        self._frames = zstd.ZstdCompressor(compression_params=_PARAMS)
        self._plain = zstd.ZstdDecompressor(format=_FORMAT)
        self._dicts: OrderedDict[bytes, zstd.ZstdDecompressor] = OrderedDict()

    # ------------------------------------------------------------------ writing

    def encode(self, ops: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes | None]]:
        """``ops`` as stored pairs: blocks and records encoded, dictionaries added. A key
        in the dictionaries' own family raises ``StorageError`` (before anything is written)."""
        out: list[tuple[bytes, bytes | None]] = []
        records: list[tuple[bytes, bytes]] = []
        append = out.append
        for key, value in ops.items():
            prefix = key[:2]
            if value is None or (prefix != _RECORD and prefix != _BLOCK):
                if prefix == _DICT:
                    raise reserved_key_error(key)
                append((key, value))
            elif prefix == _RECORD:
                records.append((key, value))
            else:
                append((key, self._encode_block(value)))
        if records:
            out.extend(self._encode_records(records))
        return out

    def _encode_block(self, value: bytes) -> bytes:
        with self._lock:
            return FRAME + self._frames.compress(value)

    def _encode_records(self, records: list[tuple[bytes, bytes]]
                        ) -> Iterable[tuple[bytes, bytes | None]]:
        if len(records) < MIN_DICT_RECORDS:
            return [(k, RAW + v) for k, v in records]
        ref = records[0][1]
        dict_id = sm3(ref)[:DICT_ID_SIZE]
        dict_key = schema.codec_dict(dict_id)
        stored = self._get_raw(dict_key)
        if stored is not None and stored != ref:
            return [(k, RAW + v) for k, v in records]
        compress = zstd.ZstdCompressor(dict_data=_dict(ref), compression_params=_PARAMS).compress
        head = DICT + dict_id
        out: list[tuple[bytes, bytes | None]] = [(k, head + compress(v)) for k, v in records]
        if stored is None:
            out.append((dict_key, ref))
        return out

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
            if tag == FRAME:
                with self._lock:
                    return self._plain.decompress(value[1:])
            if tag == DICT and len(value) > 1 + DICT_ID_SIZE:
                dict_id = value[1 : 1 + DICT_ID_SIZE]
                with self._lock:
                    return self._decompressor(key, dict_id).decompress(
                        value[1 + DICT_ID_SIZE :])
        except (zstd.ZstdError, MemoryError) as exc:
            raise self._corrupt(key, f"its zstd frame does not decode ({exc})") from exc
        raise self._corrupt(key, f"unknown encoding tag {tag.hex() or 'none'}")

    def _decompressor(self, key: bytes, dict_id: bytes) -> zstd.ZstdDecompressor:
        d = self._dicts.get(dict_id)
        if d is not None:
            self._dicts.move_to_end(dict_id)
            return d
        ref = self._get_raw(schema.codec_dict(dict_id))
        if ref is None:
            raise self._corrupt(key, f"its compression dictionary x/{dict_id.hex()} is missing")
        d = zstd.ZstdDecompressor(dict_data=_dict(ref), format=_FORMAT)
        self._dicts[dict_id] = d
        if len(self._dicts) > CACHED_DICTS:
            self._dicts.popitem(last=False)
        return d

    def _corrupt(self, key: bytes, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"LevelDB store at {self._where} is corrupt: the value of {key[:2].decode()}"
            f"{key[2:].hex()} cannot be read back: {why}; restore it from a backup or re-sync "
            "the node — it will not be served")
