"""Key-value storage: one interface, a memory and a LevelDB implementation.

``KVStore`` is deliberately small: point reads, ordered iteration, and writes *only*
through ``write(WriteBatch)``, which is atomic (all or nothing) and, with ``sync=True``,
durable before it returns. The chain writes a block, its commit, its state changes and its
indexes as one batch, so after a crash the store sits at a block boundary.

``prepare(batch)`` splits a write in two: what needs the interpreter runs on the calling
thread, and the step it returns makes the batch durable (all or nothing) and may run on
another thread. Why: plyvel's ``WriteBatch.put`` releases the GIL around every put, so the
~50k puts of a block, made on a writer thread while another thread runs Python or a long C
call that holds the GIL, wait for it ~50k times: a block write of 63 ms of CPU took 180 ms
beside the next block's apply. Prepared where the GIL is at hand, only LevelDB's own write
(log, fsync, memtable; the GIL released once) is left to overlap other work.

``WriteBatch`` keeps the last operation per key (a dict), so a later put or delete of the
same key replaces an earlier one, and the pending value of a key can be read back; the
chain uses that as its overlay while it builds a block's batch.

``LevelDBStore`` wraps plyvel. It opens with ``paranoid_checks`` and reads with
``verify_checksums``, so a damaged table is reported instead of silently read as missing
data; every plyvel failure becomes ``StorageError`` (lock held, I/O) or
``CorruptStoreError`` (checksum or structure), with the path and what to do in the message.
LevelDB's own compression is off: blocks and state records are zstd-encoded on write and
decoded on read by ``ledger.valuecodec`` (why, and the format, are there), invisibly to
callers; its record groups (``x/``) are left out of a walk of the whole key space, and a
caller's write into that family is refused by both stores (``StorageError``).
"""

from __future__ import annotations

import bisect
import os
import re
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import suppress
from functools import partial
from itertools import starmap
from pathlib import Path
from typing import Any, Protocol

import plyvel

from ledger import schema
from ledger.errors import CorruptStoreError, SchemaVersionError, StorageError
from ledger.valuecodec import ValueCodec, reserved_key_error


class WriteBatch:
    """Pending puts and deletes; applied by ``KVStore.write`` as one atomic batch."""

    __slots__ = ("ops", "runs")

    def __init__(self) -> None:
        #: key -> value, or None for a delete. Insertion order is irrelevant to the result.
        self.ops: dict[bytes, bytes | None] = {}
        #: Lists of (key, value-or-None) whose keys are distinct from every other op's (see
        #: ``add_run``), kept as the caller built them.
        self.runs: list[Collection[tuple[bytes, bytes | None]]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops[key] = value

    def delete(self, key: bytes) -> None:
        self.ops[key] = None

    def add_run(self, pairs: Collection[tuple[bytes, bytes | None]]) -> None:
        """Add ``(key, value)`` pairs (None = delete) that no other op of this batch touches,
        each key once — a block's SMT node writes, under their own prefix. Kept as a list:
        merging ~50k pairs into ``ops`` cost as much as handing them to the store. Runs are
        stored as they are: blocks and records (which ``LevelDBStore`` encodes) go in ``ops``."""
        self.runs.append(pairs)

    def items(self) -> Iterator[tuple[bytes, bytes | None]]:
        """Every op: ``ops``, then the runs."""
        yield from self.ops.items()
        for run in self.runs:
            yield from run

    def __len__(self) -> int:
        return len(self.ops) + sum(map(len, self.runs))

    def __contains__(self, key: bytes) -> bool:
        return self.pending(key)[0]

    def pending(self, key: bytes) -> tuple[bool, bytes | None]:
        """``(True, value-or-None)`` if the batch touches ``key``, else ``(False, None)``."""
        if key in self.ops:
            return True, self.ops[key]
        for run in self.runs:  # rare (tests, tools): a scan
            for k, v in run:
                if k == key:
                    return True, v
        return False, None


class KVStore(Protocol):
    """The storage interface of the ledger. Writes happen only through ``write``."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with keys starting with ``prefix`` and ``>= start``, in key order."""
        ...

    def write(self, batch: WriteBatch, sync: bool = True) -> None: ...

    def prepare(self, batch: WriteBatch, sync: bool = True) -> Callable[[], None]:
        """Everything ``write`` does before its durable step; that step is returned, and
        nothing is stored until it runs. A failure here has written nothing."""
        ...

    def close(self) -> None: ...


_RESERVED = schema.CODEC_PREFIX


def _prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class MemoryStore:
    """A dict with a lazily sorted key list: tests, audit re-execution, overlays."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] | None = None
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the memory store is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._data.get(key)

    def iterate(
        self, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        if self._sorted is None:
            self._sorted = sorted(self._data)
        keys = self._sorted
        lo = prefix if start is None or start < prefix else start
        i = bisect.bisect_left(keys, lo)
        data = self._data
        # Snapshot semantics are not promised; iterate over a copy of the matching keys so a
        # write during iteration cannot invalidate the walk.
        end = _prefix_end(prefix)
        j = len(keys) if end is None else bisect.bisect_left(keys, end)
        for key in keys[i:j]:
            value = data.get(key)
            if value is not None:
                yield key, value

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self._check_open()
        # The family LevelDB keeps for its record groups is refused here too, so code that
        # works on one store works on the other.
        for key in batch.ops:
            if key[:2] == _RESERVED:
                raise reserved_key_error(key)
        data = self._data
        added = False
        for key, value in batch.items():
            if value is None:
                if data.pop(key, None) is not None:
                    added = True
            else:
                if key not in data:
                    added = True
                data[key] = value
        if added:
            self._sorted = None

    def prepare(self, batch: WriteBatch, sync: bool = True) -> Callable[[], None]:
        self._check_open()
        return partial(self.write, batch, sync)  # a subclass's write (tests: a failing disk)

    def close(self) -> None:
        self._closed = True

    def __len__(self) -> int:
        return len(self._data)


def _classify(exc: Exception, path: Path, action: str) -> StorageError:
    """Turn a plyvel error into our typed errors with a message that says what to do."""
    text = str(exc)
    # An I/O error on a table file (".ldb"/".sst": e.g. a read past the end of a truncated
    # table) means the stored data cannot be read back: that is corruption, not a lock.
    table_io = isinstance(exc, plyvel.IOError) and (".ldb" in text or ".sst" in text)
    if isinstance(exc, plyvel.CorruptionError) or "orruption" in text or table_io:
        return CorruptStoreError(
            f"LevelDB store at {path} is corrupt ({action}: {text}); restore it from a backup "
            "or re-sync the node — it will not be served"
        )
    if "IO error: lock " in text and ("unavailable" in text or "held" in text):
        return StorageError(
            f"LevelDB store at {path} is locked by another process ({text}); stop the node or "
            "audit that is using this data directory first"
        )
    return StorageError(f"LevelDB store at {path}: {action} failed: {text}")


class LevelDBStore:
    """A plyvel database; every error is a ``StorageError`` naming the path."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True, *,
                 check_tables: bool = True, **options: Any) -> None:
        """Open (or create) the store. ``check_tables`` runs ``check_tables()`` after opening;
        ``options`` override the plyvel options below (tests shrink the tables)."""
        self.path = Path(path)
        if not create and not (self.path / "CURRENT").is_file():
            raise StorageError(
                f"no LevelDB store at {self.path}; create one first (or check the data directory)"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        opts: dict[str, Any] = {
            # Larger tables and a block cache keep 1M-certificate stores at a few dozen
            # files and keep the SMT's upper nodes in memory across blocks. A 32 MiB write
            # buffer applies 1M certificates as fast as 64 (16-256 were measured: a larger
            # one moves CPU from compaction to the write), leaves less uncompacted data on
            # disk (381 against 423 B per certificate at 1M), and half the log to replay
            # after a crash.
            "write_buffer_size": 32 * 1024 * 1024,
            "max_file_size": 32 * 1024 * 1024,
            "lru_cache_size": 128 * 1024 * 1024,
            "bloom_filter_bits": 10,
            "compression": None,  # ledger.valuecodec compresses what compresses
            **options,
        }
        try:
            self._db: plyvel.DB | None = plyvel.DB(
                str(self.path), create_if_missing=create, paranoid_checks=True, **opts
            )
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "open") from exc
        self._codec = ValueCodec(self._get_raw, str(self.path))
        self._written = False
        try:
            if check_tables:
                self.check_tables()
            self._check_version()
        except StorageError:
            self.close()
            raise

    def _check_version(self) -> None:
        """Values are encoded as this schema version says: a store of another version is
        refused before anything is decoded (it would read as damage)."""
        try:
            version = self._get_raw(schema.meta_schema_version())
        except CorruptStoreError:
            return  # damage, not another version: the reads that need the key report it
        if version is not None and version != schema.encode_height(schema.SCHEMA_VERSION):
            raise SchemaVersionError.found(int.from_bytes(version, "big"),
                                           schema.SCHEMA_VERSION)

    def check_tables(self) -> None:
        """Refuse a store whose live table files are missing, truncated or footer-less.

        LevelDB opens tables lazily, so a table cut short (a bad copy, a full disk) would
        only surface when a read reaches it, possibly long after start. LevelDB lists its
        live tables with their sizes ("leveldb.sstables"); comparing those sizes with the
        files and checking each file's trailing magic number finds that damage at open for
        the cost of one stat and one 8-byte read per table (a few dozen at 1M certificates).
        Files LevelDB does not list (outputs of a compaction cut short by a crash) are
        ignored: LevelDB deletes them itself.
        """
        db = self._open_db()
        try:
            listing = db.get_property(b"leveldb.sstables") or b""
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "list tables") from exc
        for number, size in _LIVE_TABLE.findall(listing):
            name = f"{int(number):06d}.ldb"
            table = self.path / name
            if not table.exists() and (self.path / f"{int(number):06d}.sst").exists():
                table = self.path / f"{int(number):06d}.sst"
            try:
                with table.open("rb") as f:
                    actual = f.seek(0, os.SEEK_END)
                    f.seek(max(actual - 8, 0))
                    tail = f.read(8)
            except OSError as exc:
                raise CorruptStoreError(
                    f"LevelDB store at {self.path} is corrupt: table {table.name} cannot be read "
                    f"({exc}); restore the data directory from a backup or re-sync the node"
                ) from exc
            if actual != int(size) or tail != _TABLE_MAGIC:
                raise CorruptStoreError(
                    f"LevelDB store at {self.path} is corrupt: table {table.name} is truncated "
                    f"or damaged ({actual} bytes, expected {int(size)}); restore the data "
                    "directory from a backup or re-sync the node — it will not be served"
                )

    def _open_db(self) -> plyvel.DB:
        if self._db is None:
            raise StorageError(f"LevelDB store at {self.path} is closed")
        return self._db

    def _get_raw(self, key: bytes) -> bytes | None:
        db = self._open_db()
        try:
            value: bytes | None = db.get(key, verify_checksums=True)
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "read") from exc
        return value

    def get(self, key: bytes) -> bytes | None:
        value = self._get_raw(key)
        return None if value is None else self._codec.decode(key, value)

    def iterate(
        self, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        db = self._open_db()
        lo = prefix if start is None or start < prefix else start
        end = _prefix_end(prefix)
        family = prefix[:2] if len(prefix) >= 2 else None
        decode = self._codec.decode
        try:
            if end is None:
                it = db.iterator(start=lo or None, verify_checksums=True)
            else:
                it = db.iterator(start=lo, stop=end, verify_checksums=True)
            with it:
                if family is None:  # a walk across families: decode, hide the record groups
                    hidden = schema.CODEC_PREFIX
                    for key, value in it:
                        if key[:2] != hidden:
                            yield key, decode(key, value)
                elif family in _ENCODED:
                    for key, value in it:
                        yield key, decode(key, value)
                else:  # the SMT's preload walks millions of nodes: no per-item work
                    yield from it
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "iterate") from exc

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self.prepare(batch, sync)()

    def prepare(self, batch: WriteBatch, sync: bool = True) -> Callable[[], None]:
        db = self._open_db()
        ops = self._codec.encode(batch.ops)
        try:
            wb = db.write_batch(sync=sync)
            # A block is ~60k operations: run the puts from C (map) rather than a Python loop.
            # Deletes (None values) are rare: a put of None raises TypeError, and only then
            # is a fresh batch filled in two passes (puts, then deletes — each key appears
            # once, so the order between the passes is irrelevant). Scanning the values for
            # None first cost as much as the puts.
            try:
                deque(starmap(wb.put, ops), maxlen=0)
                for run in batch.runs:
                    deque(starmap(wb.put, run), maxlen=0)
            except TypeError:
                wb = db.write_batch(sync=sync)
                self._put_and_delete(wb, ops)
                for run in batch.runs:
                    self._put_and_delete(wb, run)
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "write") from exc
        return partial(self._write_prepared, wb)

    def _write_prepared(self, wb: Any) -> None:
        self._open_db()  # closed since it was prepared: refuse, as write would
        try:
            wb.write()
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "write") from exc
        self._written = True

    @staticmethod
    def _put_and_delete(wb: Any, ops: Iterable[tuple[bytes, bytes | None]]) -> None:
        deleted = []
        put = wb.put
        for key, value in ops:
            if value is None:
                deleted.append(key)
            else:
                put(key, value)
        deque(map(wb.delete, deleted), maxlen=0)

    def compact(self) -> None:
        """Move everything from the log into tables (tests use it to reach the .ldb files)."""
        db = self._open_db()
        try:
            # Explicit bounds: plyvel's argument-less call compacts an empty range here.
            db.compact_range(start=b"", stop=b"\xff" * 64)
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "compact") from exc

    def close(self) -> None:
        if self._db is not None:
            if self._written:
                # LevelDB replays its log into a table at the next open, before anything is
                # served: up to a 32 MiB memtable. Write it out now; a compaction of a range
                # that holds no key does only that.
                with suppress(plyvel.Error):  # the log still holds it all
                    self._db.compact_range(start=_NO_KEY, stop=_NO_KEY + b"\x00")
            self._db.close()
            self._db = None

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Sorts after every key of ``ledger.schema`` (all start with an ASCII letter).
_NO_KEY = b"\xff\xfe"
#: The families whose values ``ledger.valuecodec`` encodes.
_ENCODED = frozenset({schema.BLOCK_PREFIX, schema.RECORD_PREFIX})

#: Last 8 bytes of every LevelDB table (table/format.h, kTableMagicNumber, little endian).
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
#: A live table in the "leveldb.sstables" property: " <file number>:<size>[<key range>]".
_LIVE_TABLE = re.compile(rb"^ (\d+):(\d+)\[", re.MULTILINE)


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes used by the files of a store directory (for benchmarks and status)."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
