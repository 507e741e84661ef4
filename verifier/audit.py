"""The verification audit log: append-only SQLite with a hash chain, queryable, CSV export.

One row per verification: when, who (department and key id), which certificate id,
the stated purpose (申请事由), the result (``valid``, ``invalid``, ``error``, or for a
status query the status) and the names of the checks that failed - never a field
value, a salt or a hash of one, so the log holds nothing personal beyond the
purpose the department itself wrote.

Append-only by construction: SQLite triggers abort any UPDATE or DELETE, and each
row carries ``hash = SM3(prev_hash || canonical row)``, so ``verify_chain`` finds a
row edited or removed behind the triggers' back (say, with another tool).

Durability with group commit: ``append`` returns only once its row is committed
with ``synchronous = FULL`` (WAL journal), so a verification the caller was told
about is on disk. An fsync costs milliseconds, so rows are not committed one by
one: the first waiting thread becomes the *leader*, writes every row queued so
far in one transaction (one fsync), and wakes the others whose rows it carried.
The hash chain is extended in memory in queue order; if a commit fails, every
row of that batch (and any queued behind it) is reported failed and the chain
head is reloaded from the database, so the log on disk never has a gap.
``append_many`` queues several rows at once (a batch of verifications, see
``verifier.pipeline``), so they always go in the same transaction.

The leader writes the queue as ONE multi-row ``INSERT`` (an autocommit statement is
its own transaction), not ``BEGIN`` + ``executemany`` + ``COMMIT``: the sqlite3
module releases the GIL around every step, reset and parameter count, about three
times per row, and each release wakes another of the service's threads for
nothing. Only a queue longer than ``_CHUNK`` rows takes several statements, inside
``BEGIN IMMEDIATE`` ... ``COMMIT`` so that it still commits or fails as a whole.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from certificates import canonical
from certificates.hashing import sm3
from verifier.errors import AuditError

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    department TEXT NOT NULL,
    key_id TEXT NOT NULL,
    certificate_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    result TEXT NOT NULL,
    failed_checks TEXT NOT NULL,
    channel TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_department_time ON audit (department, time_ms);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_ms);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
GENESIS_HASH: Final = bytes(32)
MAX_QUERY: Final = 10_000


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time_ms: int
    department: str
    key_id: str
    certificate_id: str
    purpose: str
    result: str
    failed_checks: str  # comma-separated check names
    channel: str  # api, status, qr

    def row(self) -> tuple[int, int, str, str, str, str, str, str, str]:
        # Not dataclasses.astuple: it deep-copies every value, on every verification.
        return (self.seq, self.time_ms, self.department, self.key_id, self.certificate_id,
                self.purpose, self.result, self.failed_checks, self.channel)

    def row_hash(self, prev_hash: bytes) -> bytes:
        return sm3(prev_hash + canonical.encode(list(self.row())))

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["failed_checks"] = [c for c in self.failed_checks.split(",") if c]
        return d


@dataclass(frozen=True)
class Row:
    """What a caller appends: an ``AuditEntry`` less the seq and time the log assigns."""

    department: str
    key_id: str
    certificate_id: str
    purpose: str
    result: str
    failed_checks: tuple[str, ...] = ()
    channel: str = "api"


COLUMNS: Final = tuple(f.name for f in fields(AuditEntry))


#: Rows per INSERT statement: 11 parameters a row stays under SQLite's oldest limit of
#: 999 parameters a statement.
_CHUNK: Final = 90


@lru_cache(maxsize=_CHUNK)
def _insert(rows: int) -> str:
    one = f"({', '.join('?' * (len(COLUMNS) + 2))})"
    return (f"INSERT INTO audit ({', '.join(COLUMNS)}, prev_hash, hash) "
            f"VALUES {', '.join([one] * rows)}")


class AuditLog:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()  # the in-memory chain head and the queue
        self._db_lock = threading.Lock()  # the connection (one writer, the leader)
        self._done = threading.Condition(threading.Lock())
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc}") from exc
        self._seq, self._head = self._load_head()
        # Tickets number appends in queue order, never reused (unlike seq after a failure).
        self._queue: list[tuple[int, tuple[Any, ...]]] = []
        self._next_ticket = 1
        self._written = 0  # every ticket <= this is settled (committed or failed)
        self._failed: list[tuple[int, int, str]] = []  # (first, last, why), recent only
        self._writing = False  # a leader is writing (under _done)

    def _load_head(self) -> tuple[int, bytes]:
        try:
            row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                                   ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit log {self.path}: {exc}") from exc
        return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))

    def append(self, *, department: str, key_id: str, certificate_id: str, purpose: str,
               result: str, failed_checks: Sequence[str] = (), channel: str = "api"
               ) -> AuditEntry:
        """Append one row; returns once it is committed (AuditError if it could not be)."""
        return self.append_many([Row(department, key_id, certificate_id, purpose, result,
                                     tuple(failed_checks), channel)])[0]

    def append_many(self, rows: Sequence[Row]) -> list[AuditEntry]:
        """Append rows in this order, in one transaction (AuditError if it could not be)."""
        if not rows:
            return []
        out = []
        with self._lock:
            time_ms = int(self._clock() * 1000)
            first = self._next_ticket
            for r in rows:
                entry = AuditEntry(self._seq + 1, time_ms, r.department, r.key_id,
                                   r.certificate_id, r.purpose, r.result,
                                   ",".join(r.failed_checks), r.channel)
                digest = entry.row_hash(self._head)
                self._queue.append((self._next_ticket, (*entry.row(), self._head, digest)))
                self._next_ticket += 1
                self._seq, self._head = entry.seq, digest
                out.append(entry)
            last = self._next_ticket - 1
        # One writer takes the whole queue at once, so these rows commit or fail together.
        self._settle(first, last)
        return out

    def _settle(self, first: int, ticket: int) -> None:
        """Wait until tickets ``first..ticket`` are written, writing the queue ourselves if
        nobody is."""
        with self._done:
            while self._written < ticket and self._writing:
                self._done.wait()
            lead = self._written < ticket
            if lead:
                self._writing = True
        if lead:
            try:
                with self._db_lock:
                    self._write_queue()  # our row is queued, so this settles it
            finally:
                with self._done:
                    self._writing = False
                    self._done.notify_all()
        with self._done:
            for lo, hi, why in self._failed:
                if lo <= ticket and first <= hi:
                    raise AuditError(f"cannot write the audit log: {why}")

    def _write_queue(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        why = None
        chunks = [batch[i:i + _CHUNK] for i in range(0, len(batch), _CHUNK)]
        try:
            if len(chunks) == 1:
                self._insert(batch)
            else:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for chunk in chunks:
                        self._insert(chunk)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            why = str(exc)
        last = batch[-1][0]
        if why is not None:
            # Rows queued behind the failed ones chain onto them: fail those too, and
            # restart the chain from what is on disk.
            with self._lock:
                last = self._next_ticket - 1
                self._queue = []
                self._seq, self._head = self._load_head()
        with self._done:
            if why is not None:
                self._failed = [*self._failed[-15:], (batch[0][0], last, why)]
            self._written = max(self._written, last)

    def _insert(self, rows: list[tuple[int, tuple[Any, ...]]]) -> None:
        self._db.execute(_insert(len(rows)), [v for _, row in rows for v in row])

    def query(self, *, department: str | None = None, since_ms: int | None = None,
              until_ms: int | None = None, certificate_id: str | None = None,
              limit: int = 1000) -> list[AuditEntry]:
        where, args = [], []
        for column, op, value in (("department", "=", department), ("time_ms", ">=", since_ms),
                                  ("time_ms", "<=", until_ms),
                                  ("certificate_id", "=", certificate_id)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM audit"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY seq LIMIT ?")
        with self._db_lock:
            rows = self._db.execute(sql, (*args, max(1, min(limit, MAX_QUERY)))).fetchall()
        return [AuditEntry(*r) for r in rows]

    def count(self) -> int:
        with self._db_lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def verify_chain(self) -> int:
        """Recheck every row's hash link; the number of rows, or AuditError naming the first bad."""
        prev = GENESIS_HASH
        n = 0
        with self._db_lock:
            cur = self._db.execute(f"SELECT {', '.join(COLUMNS)}, prev_hash, hash FROM audit "
                                   "ORDER BY seq")
            for row in cur:
                entry = AuditEntry(*row[:len(COLUMNS)])
                n += 1
                if entry.seq != n or bytes(row[-2]) != prev or entry.row_hash(prev) != row[-1]:
                    raise AuditError(f"audit log hash chain is broken at row {n} "
                                     f"(seq {entry.seq}): rows were changed or removed")
                prev = bytes(row[-1])
        return n

    def close(self) -> None:
        with self._db_lock:
            self._db.close()


def to_csv(entries: Sequence[AuditEntry]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for e in entries:
        # A leading =, +, - or @ would run as a formula in a spreadsheet: quote it away.
        w.writerow(["'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
                    for v in astuple(e)])
    return out.getvalue()
