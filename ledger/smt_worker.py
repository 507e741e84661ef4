"""Half of each sparse-Merkle-tree update in a second process, so a block uses two cores.

Why: at a million keys the SMT update is more than half of applying a block, and it is
pure Python (a dict look-up, a few slices and an SM3 call per branch on a key's path) that
threads cannot spread: the GIL serialises it. A child process can. It keeps its own copy,
the *mirror*, of every record in the root's right subtree (storage positions whose path
starts with bit 1) and computes that half of each batch with the very code the tree runs
(``ledger.smt_update.right_half_update``) while the tree computes the left half; the tree
then merges the worker's writes and hashes the root. Roots and writes are exactly those of a
single-process update; ``tests/test_smt_worker.py`` compares them batch by batch.

The mirror must equal the tree's records in that half, so the tree (``SparseMerkleTree``)
keeps to these rules, and anything else makes it *deactivate* the worker (drop the mirror)
and do the work itself:

* the worker is *activated* only when the tree's cache holds every committed record
  (``CACHE_ALL``, preloaded or built from empty), nothing is pending, the root is a branch at
  depth 0 with a stored branch on its right, and a batch brings at least ``min_keys`` keys
  to that half: the half's records are copied to the mirror then;
* while it is active, every batch with keys in the right half goes to the worker (if the
  root's shape no longer allows that, it is deactivated first), and after each update the
  root must still be a depth-0 branch (a side that emptied makes the other rise, which moves
  records across the boundary);
* ``commit`` and ``rollback`` are forwarded in order; ``revert_commit`` deactivates it.

Protocol: pickled tuples on one pipe, strictly in order; only ``update`` is answered::

    ("load", [(key, record), ...])    ("update", keys, values, top)  -> ("ok", sub, writes,
    ("commit",)   ("rollback",)       deleted) | ("error", message)   ("drop",)  ("stop",)

A worker that fails (an error reply, a crash, no reply within ``reply_timeout``) is stopped
for good: the tree computes the half itself and goes on single-process. The worker is a
fresh interpreter (``python -m ledger.smt_worker``: it inherits no thread or lock of the
node and never re-imports the caller's main module); it ignores SIGINT (its parent decides
when it stops) and exits when its socket closes, so it never outlives its parent.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from bisect import bisect_left
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ledger.smt_proof import SMTError
from ledger.smt_records import _Sub, fold_writes, no_hit
from ledger.smt_update import RightHalf, right_half_update

__all__ = ["SMTWorker"]

_STOP_WAIT_S = 5.0


def _in_right_half(skey: bytes, plen: int) -> bool:
    """Whether the record under storage key ``skey`` (prefix of ``plen`` bytes, then the
    position's heap index) sits in the root's right subtree."""
    i = int.from_bytes(skey[plen:], "big")
    return i > 1 and i >> (i.bit_length() - 2) == 3


def _serve(conn: Connection, prefix: bytes) -> None:
    """The worker process: keep the mirror, answer updates, until ``stop`` or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    node_key = prefix.__add__
    mirror: dict[bytes, bytes] = {}
    pending: dict[bytes, bytes | None] = {}
    deleted: list[bytes] = []

    def fetch(skey: bytes, t: int) -> bytes | None:
        return pending[skey] if skey in pending else mirror.get(skey)

    def missing(skey: bytes) -> SMTError:
        return SMTError(f"SMT node {skey.hex()} is not in the worker's mirror")

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        if op == "update":
            _, keys, vals, top = msg
            gone: list[bytes] = []
            try:
                # A pending write may shadow a mirror record: read through pending first.
                hit = mirror.get if not pending else no_hit
                sub, writes = right_half_update(keys, vals, top, node_key=node_key, hit=hit,
                                                fetch=fetch, missing=missing, deleted=gone)
            except Exception as exc:  # reported to the tree, which takes over
                reply: tuple[object, ...] = ("error", f"{type(exc).__name__}: {exc}")
            else:
                pending.update(writes)
                deleted.extend(gone)
                reply = ("ok", sub, writes, gone)
            try:
                conn.send(reply)
            except OSError:  # the parent is gone (or gave up on this worker)
                return
        elif op == "commit":
            fold_writes(mirror, pending, deleted)
            pending, deleted = {}, []
        elif op == "rollback":
            pending, deleted = {}, []
        elif op == "load":
            mirror, pending, deleted = dict(msg[1]), {}, []
        elif op == "drop":
            mirror, pending, deleted = {}, {}, []
        else:  # "stop"
            return


class SMTWorker:
    """The tree's side of the worker (see the module header); one tree at a time."""

    def __init__(self, *, min_keys: int = 512, reply_timeout: float = 120.0) -> None:
        self.min_keys = min_keys
        self.reply_timeout = reply_timeout
        self.active = False
        #: Set once the worker failed: the tree computes everything itself from then on.
        self.broken: str | None = None
        #: Batches whose right half the worker computed (for tests and metrics).
        self.delegated = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._prefix: bytes | None = None
        self._waiting = False  # an update was sent and its reply not read yet

    # ------------------------------------------------------------------ the tree's calls

    def plan(self, keys: list[bytes], vals: list[bytes | None], old: bytes | None, *,
             node_key: Callable[[bytes], bytes], records: dict[bytes, bytes] | None,
             deleted: list[bytes]) -> RightHalf | None:
        """Before a batch update of sorted ``keys`` on a tree whose root record is ``old``:
        start the worker on the right half and return what hands its result to
        ``batch_update``, or None (the tree does it all). ``records`` is the tree's complete
        committed cache when nothing is pending (else None): activation copies from it."""
        if self.broken is not None:
            return None
        # The root's right child must be a stored branch below a depth-0 root branch.
        shaped = old is not None and _depth0_branch(old) and not old[65] & 2
        mid = _first_right(keys)
        if mid == len(keys):
            return None
        if not shaped:
            if self.active:
                self.deactivate()  # the tree writes in the right half itself
            return None
        if not self.active:
            if records is None or len(keys) - mid < self.min_keys:
                return None
            self._activate(node_key, records)
            if not self.active:
                return None
        assert old is not None
        if not self._send(("update", keys[mid:], vals[mid:], old[33:65])):
            return None
        self._waiting = True

        def take(writes: dict[bytes, bytes | None]) -> _Sub:
            reply = self._recv()
            self._waiting = False
            if reply is None or reply[0] != "ok":
                if reply is not None:  # an error reply (no reply: _recv has failed it)
                    self._fail(reply[1])
                raise SMTError(f"SMT worker failed: {self.broken}")
            _, sub, w, gone = reply
            writes.update(w)
            deleted.extend(gone)
            self.delegated += 1
            return sub  # type: ignore[no-any-return]

        return take

    def after(self, root_record: bytes | None) -> None:
        """After the tree's update, whose new root record is ``root_record``."""
        if self._waiting:  # never taken (cannot happen with a depth-0 root): drop it all
            self.abandon()
        elif self.active and not (root_record is not None and _depth0_branch(root_record)):
            self.deactivate()

    def abandon(self) -> None:
        """The tree's update raised: it keeps none of its writes, so neither may the
        mirror. Reads the worker's reply if it is still due, then drops the mirror."""
        if self._waiting:
            self._recv()
            self._waiting = False
        self.deactivate()

    def commit(self) -> None:
        if self.active:
            self._send(("commit",))

    def rollback(self) -> None:
        if self.active:
            self._send(("rollback",))

    def deactivate(self) -> None:
        """Drop the mirror; a later batch may activate the worker again."""
        if self.active:
            self.active = False
            self._send(("drop",))

    def close(self) -> None:
        """Stop the worker process (waits a few seconds, then kills it)."""
        self.active = False
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):  # it is gone already
                conn.send(("stop",))
            conn.close()
        if proc is not None:
            try:
                proc.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_WAIT_S)

    # ------------------------------------------------------------------ process and pipe

    def _activate(self, node_key: Callable[[bytes], bytes], records: dict[bytes, bytes]) -> None:
        prefix = node_key(b"")
        if self._prefix not in (None, prefix) or node_key(b"\x01") != prefix + b"\x01":
            return  # storage keys are not prefix + position: the worker cannot build them
        if self._conn is None:
            ours, theirs = socket.socketpair()
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "ledger.smt_worker", str(theirs.fileno()),
                     prefix.hex()], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            except OSError as exc:
                ours.close()
                self._fail(f"cannot start the worker: {exc}")
                return
            finally:
                theirs.close()
            self._conn, self._prefix = Connection(ours.detach()), prefix
        plen = len(prefix)
        half = [(k, v) for k, v in records.items() if _in_right_half(k, plen)]
        self.active = self._send(("load", half))

    # A message cut short (an error, or Ctrl-C mid-send) or a reply left unread would put
    # the stream out of step, and a later update could take an earlier one's reply: so any
    # failure on the pipe ends the worker for good.

    def _send(self, msg: tuple[Any, ...]) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as exc:
            self._fail(f"cannot reach the worker: {exc}")
            return False
        except BaseException:
            self._fail("interrupted while sending to the worker")
            raise
        return True

    def _recv(self) -> tuple[Any, ...] | None:
        conn = self._conn
        if conn is None:
            return None
        try:
            if conn.poll(self.reply_timeout):
                reply: tuple[Any, ...] = conn.recv()
                return reply
            self._fail(f"no reply within {self.reply_timeout} s")
        except (EOFError, OSError) as exc:
            self._fail(f"the worker is gone: {exc!r}")
        except BaseException:
            self._fail("interrupted while waiting for the worker")
            raise
        return None

    def _fail(self, why: str) -> None:
        self.broken = why
        self.active = False
        self._waiting = False
        if self._proc is not None:
            self._proc.kill()  # it may be mid-message: no orderly stop
        self.close()


def _depth0_branch(rec: bytes) -> bool:
    """Whether a root record is a branch at depth 0 (not a lone leaf, not below a chain)."""
    return len(rec) > 64 and rec[66] == 0


def _first_right(keys: list[bytes]) -> int:
    """Index of the first sorted key whose first bit is 1."""
    return bisect_left(keys, b"\x80")


if __name__ == "__main__":  # the worker process: ``python -m ledger.smt_worker FD PREFIX``
    _serve(Connection(int(sys.argv[1])), bytes.fromhex(sys.argv[2]))
