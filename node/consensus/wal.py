"""Write-ahead log of our own consensus messages, fsync'd before they are sent.

File format: a sequence of records, each ``len (u32 BE) | crc32 (u32 BE) |
payload`` where the CRC covers the length bytes and the payload, and the
payload is one canonical WAL entry (``node.consensus.codec``). CRC-32 is
enough here: it detects torn and garbled writes, not tampering - whoever can
write our data directory can do far worse than edit the WAL.

Torn writes: a crash during ``append`` can leave only a *prefix* of the last
record (or, on some file systems, a zero-filled tail). On open, a short or
checksum-failing record that runs to the end of the file, or an all-zero tail,
is cut off: that message was never fsync'd, so it was never sent, and forgetting
it is safe. A bad record followed by more data is not a torn write; opening
refuses with ``WalCorruptError`` rather than guess.

Compaction (after each commit) drops the entries of decided heights. Every
validator logs the proposal it saw a polka for, whole block included, so the log
is a few MB at each height: ``Wal`` keeps the height and size of each record it
opened or appended, and compacts from that index - usually by emptying the file -
instead of reading it back and decoding every entry to learn its height.

Storage is a three-method interface so the simulator can keep the WAL in
memory, where it survives a simulated crash (the object outlives the node),
and can tear a write on purpose.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Protocol

from node.consensus import codec
from node.consensus.errors import WalCorruptError
from node.consensus.messages import WalEntry, entry_height

HEADER = 8
MAX_RECORD = 64 * 1024 * 1024  # a proposal carries a block; blocks are far smaller


class WalStorage(Protocol):
    def read(self) -> bytes: ...

    def append(self, data: bytes) -> None:
        """Append ``data``; durable (fsync'd) when this returns."""

    def replace(self, data: bytes) -> None:
        """Atomically replace the whole content (compaction, cutting a torn tail)."""


def frame(payload: bytes) -> bytes:
    n = len(payload).to_bytes(4, "big")
    # The CRC runs on over the payload: no copy of a several-MB proposal just to hash it.
    return n + zlib.crc32(payload, zlib.crc32(n)).to_bytes(4, "big") + payload


def unframe(data: bytes) -> tuple[list[bytes], int]:
    """Records in ``data`` and the length of its intact prefix (< len(data) if torn)."""
    out: list[bytes] = []
    pos, size = 0, len(data)
    while pos < size:
        if not any(data[pos:]):
            break  # zero-filled tail of an interrupted append
        if size - pos < HEADER:
            break  # torn inside the header
        n = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + HEADER + n
        if end > size:
            break  # torn inside the payload
        crc = int.from_bytes(data[pos + 4 : pos + HEADER], "big")
        if n > MAX_RECORD or zlib.crc32(data[pos : pos + 4] + data[pos + HEADER : end]) != crc:
            if end == size:
                break  # the last record, garbled by the crash that tore it
            raise WalCorruptError(
                f"WAL record at byte {pos} fails its checksum and {size - end} bytes follow it: "
                "this is damage, not a torn write; restore the data directory from a backup"
            )
        out.append(data[pos + HEADER : end])
        pos = end
    return out, pos


class Wal:
    """Append-only log over a ``WalStorage``; opening it recovers from a torn tail."""

    def __init__(self, storage: WalStorage) -> None:
        self._storage = storage
        data = storage.read()
        payloads, good = unframe(data)
        self.torn_bytes = len(data) - good
        if self.torn_bytes:
            # Cut the torn record now, or the next append would sit behind garbage.
            storage.replace(data[:good])
        #: What the log held when opened: hand it to ``start`` to resume the height.
        self.recovered: list[WalEntry] = [codec.decode(p) for p in payloads]
        #: (height, framed size) of each record in the storage, in order.
        self._index = [(entry_height(e), HEADER + len(p))
                       for e, p in zip(self.recovered, payloads, strict=True)]

    def append(self, entry: WalEntry) -> None:
        record = frame(codec.encode(entry))
        self._storage.append(record)
        self._index.append((entry_height(entry), len(record)))

    def compact(self, keep_from_height: int) -> None:
        """Drop entries of decided heights (after the block itself is durable)."""
        keep = [h >= keep_from_height for h, _ in self._index]
        if all(keep):
            return
        if not any(keep):
            self._storage.replace(b"")
            self._index = []
            return
        data = self._storage.read()
        if len(data) != sum(n for _, n in self._index):
            # Not what this object wrote (a failed append left a partial record):
            # learn the heights the slow way, from the records themselves.
            payloads, _ = unframe(data)
            entries = [(entry_height(codec.decode(p)), frame(p)) for p in payloads]
        else:
            entries, pos = [], 0
            for h, n in self._index:
                entries.append((h, data[pos:pos + n]))
                pos += n
        kept = [(h, rec) for h, rec in entries if h >= keep_from_height]
        self._storage.replace(b"".join(rec for _, rec in kept))
        self._index = [(h, len(rec)) for h, rec in kept]


class FileStorage:
    """A WAL file: O_APPEND writes, fsync on every append, atomic replace by rename."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def read(self) -> bytes:
        return self.path.read_bytes()

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def replace(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename itself durable
        finally:
            os.close(dfd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        os.close(self._fd)


class MemoryStorage:
    """In-memory WAL for tests and the simulator; outlives the node that writes it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.appends = 0

    def read(self) -> bytes:
        return bytes(self.data)

    def append(self, data: bytes) -> None:
        self.data += data
        self.appends += 1

    def append_torn(self, data: bytes, keep: int) -> None:
        """Simulate a crash during ``append``: only ``keep`` bytes reached the disk."""
        self.data += data[:keep]

    def replace(self, data: bytes) -> None:
        self.data = bytearray(data)
