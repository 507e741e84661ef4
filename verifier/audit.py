"""The verification audit log: append-only SQLite with a hash chain, queryable, CSV export.

One row per verification: when, who (department and key id), which certificate id,
the stated purpose (申请事由), the result (``valid``, ``invalid``, ``error``, or for a
status query the status) and the names of the checks that failed - never a field
value, a salt or a hash of one, so the log holds nothing personal beyond the
purpose the department itself wrote.

Append-only by construction: SQLite triggers abort any UPDATE or DELETE, and each
row carries ``hash = SM3(prev_hash || canonical row)``, so ``verify_chain`` finds a
row edited or removed behind the triggers' back (say, with another tool). Writes
are serialised by a lock on one connection and committed one by one, so a row the
caller was told about is on disk.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
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

    def row_hash(self, prev_hash: bytes) -> bytes:
        return sm3(prev_hash + canonical.encode(list(astuple(self))))

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["failed_checks"] = [c for c in self.failed_checks.split(",") if c]
        return d


COLUMNS: Final = tuple(f.name for f in fields(AuditEntry))


class AuditLog:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA synchronous = FULL")
            row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                                   ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc}") from exc
        self._seq: int = 0 if row is None else int(row[0])
        self._head: bytes = GENESIS_HASH if row is None else bytes(row[1])

    def append(self, *, department: str, key_id: str, certificate_id: str, purpose: str,
               result: str, failed_checks: Sequence[str] = (), channel: str = "api"
               ) -> AuditEntry:
        with self._lock:
            entry = AuditEntry(self._seq + 1, int(self._clock() * 1000), department, key_id,
                               certificate_id, purpose, result, ",".join(failed_checks), channel)
            digest = entry.row_hash(self._head)
            try:
                self._db.execute(
                    f"INSERT INTO audit ({', '.join(COLUMNS)}, prev_hash, hash) "
                    f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))})",
                    (*astuple(entry), self._head, digest))
            except sqlite3.Error as exc:
                raise AuditError(f"cannot write the audit log: {exc}") from exc
            self._seq, self._head = entry.seq, digest
            return entry

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
        with self._lock:
            rows = self._db.execute(sql, (*args, max(1, min(limit, MAX_QUERY)))).fetchall()
        return [AuditEntry(*r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def verify_chain(self) -> int:
        """Recheck every row's hash link; the number of rows, or AuditError naming the first bad."""
        prev = GENESIS_HASH
        n = 0
        with self._lock:
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
        with self._lock:
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
