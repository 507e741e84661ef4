"""Key-value storage: one interface, a memory and a LevelDB implementation.

``KVStore`` is deliberately small: point reads, ordered iteration, and writes *only*
through ``write(WriteBatch)``, which is atomic (all or nothing) and, with ``sync=True``,
durable before it returns. The chain writes a block, its commit, its state changes and its
indexes as one batch, so after a crash the store sits at a block boundary.

``WriteBatch`` keeps the last operation per key (a dict), so a later put or delete of the
same key replaces an earlier one, and the pending value of a key can be read back; the
chain uses that as its overlay while it builds a block's batch.

``LevelDBStore`` wraps plyvel. It opens with ``paranoid_checks`` and reads with
``verify_checksums``, so a damaged table is reported instead of silently read as missing
data; every plyvel failure becomes ``StorageError`` (lock held, I/O) or
``CorruptStoreError`` (checksum or structure), with the path and what to do in the message.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import plyvel

from ledger.errors import CorruptStoreError, StorageError


class WriteBatch:
    """Pending puts and deletes; applied by ``KVStore.write`` as one atomic batch."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        #: key -> value, or None for a delete. Insertion order is irrelevant to the result.
        self.ops: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.ops[key] = value

    def delete(self, key: bytes) -> None:
        self.ops[key] = None

    def __len__(self) -> int:
        return len(self.ops)

    def __contains__(self, key: bytes) -> bool:
        return key in self.ops

    def pending(self, key: bytes) -> tuple[bool, bytes | None]:
        """``(True, value-or-None)`` if the batch touches ``key``, else ``(False, None)``."""
        if key in self.ops:
            return True, self.ops[key]
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

    def close(self) -> None: ...


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
        data = self._data
        added = False
        for key, value in batch.ops.items():
            if value is None:
                if data.pop(key, None) is not None:
                    added = True
            else:
                if key not in data:
                    added = True
                data[key] = value
        if added:
            self._sorted = None

    def close(self) -> None:
        self._closed = True

    def __len__(self) -> int:
        return len(self._data)


def _classify(exc: Exception, path: Path, action: str) -> StorageError:
    """Turn a plyvel error into our typed errors with a message that says what to do."""
    text = str(exc)
    if isinstance(exc, plyvel.CorruptionError) or "orruption" in text:
        return CorruptStoreError(
            f"LevelDB store at {path} is corrupt ({action}: {text}); restore it from a backup "
            "or re-sync the node — it will not be served"
        )
    if "lock" in text.lower():
        return StorageError(
            f"LevelDB store at {path} is locked by another process ({text}); stop the other "
            "node or audit using this data directory first"
        )
    return StorageError(f"LevelDB store at {path}: {action} failed: {text}")


class LevelDBStore:
    """A plyvel database; every error is a ``StorageError`` naming the path."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self.path = Path(path)
        if not create and not (self.path / "CURRENT").is_file():
            raise StorageError(
                f"no LevelDB store at {self.path}; create one first (or check the data directory)"
            )
        try:
            self._db: plyvel.DB | None = plyvel.DB(
                str(self.path),
                create_if_missing=create,
                paranoid_checks=True,
                # Larger tables and a block cache keep 1M-certificate stores at a few hundred
                # files and keep the SMT's upper nodes in memory across blocks.
                write_buffer_size=64 * 1024 * 1024,
                max_file_size=32 * 1024 * 1024,
                lru_cache_size=128 * 1024 * 1024,
                bloom_filter_bits=10,
                compression="snappy",
            )
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "open") from exc

    def _open_db(self) -> plyvel.DB:
        if self._db is None:
            raise StorageError(f"LevelDB store at {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        db = self._open_db()
        try:
            value: bytes | None = db.get(key, verify_checksums=True)
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "read") from exc
        return value

    def iterate(
        self, prefix: bytes = b"", start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        db = self._open_db()
        lo = prefix if start is None or start < prefix else start
        end = _prefix_end(prefix)
        try:
            if end is None:
                it = db.iterator(start=lo or None, verify_checksums=True)
            else:
                it = db.iterator(start=lo, stop=end, verify_checksums=True)
            with it:
                yield from it
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "iterate") from exc

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        db = self._open_db()
        try:
            wb = db.write_batch(sync=sync)
            for key, value in batch.ops.items():
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)
            wb.write()
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "write") from exc

    def compact(self) -> None:
        """Move everything from the log into tables (tests use it to reach the .ldb files)."""
        db = self._open_db()
        try:
            db.compact_range()
        except plyvel.Error as exc:
            raise _classify(exc, self.path, "compact") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes used by the files of a store directory (for benchmarks and status)."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
