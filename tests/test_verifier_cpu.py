"""What keeps the busy verifier's CPU per verification down, each kept honest.

* Jobs that queue while a batch runs wait for its audit commit and leave together (one
  node request and one fsync for all); with none queued, the next batch may start
  during the commit.
* The audit log commits a queue as one INSERT statement (every sqlite3 call releases
  the GIL), and a queue too long for one statement still commits or fails whole.
* API keys: a key added by another process works at its first request, a revocation
  takes effect within ``recheck`` seconds, and a known key does not stat() the file
  on every request.
* A coalescer waiter's gate opens once, however often it is woken.

Every wait is bounded.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from network.testing import wait_until
from tests.test_verifier_batch import _job, _pipeline
from tests.verifier_fixtures import ChainSource, World, build_world
from verifier.audit import _CHUNK, AuditLog, Row
from verifier.auth import KeyStore
from verifier.coalesce import _Waiter
from verifier.errors import AuditError, AuthError


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


# --------------------------------------------------------------------------- batches


def test_queued_jobs_wait_for_the_commit_and_then_leave_in_one_batch(
        world: World, tmp_path: Path) -> None:
    source = ChainSource(world.chain)
    first_asked, release = threading.Event(), threading.Event()
    real_state = source.state

    def slow_state(key: bytes) -> Any:
        first_asked.set()
        assert release.wait(10)  # hold the first look-up until the others queued
        return real_state(key)

    source.state = slow_state  # type: ignore[method-assign]
    verifier, lc, audit = _pipeline(world, tmp_path, source)
    batcher = verifier._batcher
    seen: list[tuple[int, bool]] = []
    real_append = audit.append_many

    def append_many(rows: list[Row]) -> Any:
        with batcher._lock:  # the lead is not passed on while the first batch commits
            seen.append((len(batcher._queue), any(w.lead for w in batcher._queue)))
        return real_append(rows)

    audit.append_many = append_many
    verdicts: dict[int, Any] = {}

    def run(i: int) -> None:
        if i:
            wait_until(first_asked.is_set, 10, 0.001, "first look-up sent")
        verdicts[i] = verifier.verify(_job(world, "valid", i))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: batcher.queued == 2, 10, 0.001, "two jobs queued")
    release.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert all(v.valid for v in verdicts.values()) and len(verdicts) == 3
    assert seen[0] == (2, False)
    # The first job alone (its certificate, then its issuer), then the two together.
    assert (batcher.batches, batcher.keys, lc.lookups) == (2, 3, 3)
    assert audit.verify_chain() == 3


def test_with_nothing_queued_the_next_batch_starts_during_the_commit(
        world: World, tmp_path: Path) -> None:
    verifier, _, audit = _pipeline(world, tmp_path)
    committing, second_done = threading.Event(), threading.Event()
    real_append = audit.append_many
    overlapped: list[bool] = []

    def append_many(rows: list[Row]) -> Any:
        if not committing.is_set():  # the first batch's commit waits for the second job
            committing.set()
            overlapped.append(second_done.wait(10))
        return real_append(rows)

    audit.append_many = append_many
    first = threading.Thread(target=verifier.verify, args=(_job(world, "valid", 0),),
                             daemon=True)
    first.start()
    assert committing.wait(10)
    assert verifier.verify(_job(world, "revoked", 1)).failed == ["status"]
    second_done.set()
    first.join(10)
    assert not first.is_alive() and overlapped == [True]
    assert [r.purpose for r in audit.query()] == ["purpose 1", "purpose 0"]
    assert audit.verify_chain() == 2


# --------------------------------------------------------------------------- audit log


def _rows(n: int, purpose: str = "核验") -> list[Row]:
    return [Row("dept", "0123456789abcdef", f"cert-{i}", purpose, "valid") for i in range(n)]


def test_a_commit_is_one_insert_statement(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.sqlite3")
    statements: list[str] = []
    audit._db.set_trace_callback(statements.append)
    audit.append_many(_rows(7))
    assert [s.split()[0] for s in statements] == ["INSERT"]
    statements.clear()
    audit.append_many(_rows(2 * _CHUNK + 1))  # too long for one statement: one transaction
    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "INSERT",
                                                  "COMMIT"]
    audit._db.set_trace_callback(None)
    assert audit.count() == 2 * _CHUNK + 8 == audit.verify_chain()
    assert [e.certificate_id for e in audit.query(limit=9)] == \
        [f"cert-{i}" for i in range(7)] + ["cert-0", "cert-1"]


def test_a_long_queue_commits_or_fails_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    audit = AuditLog(path)
    audit.append_many(_rows(3))
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER boom BEFORE INSERT ON audit WHEN NEW.purpose = 'boom' "
               "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    db.commit()
    db.close()
    rows = _rows(_CHUNK + 5)
    rows[_CHUNK + 2] = _rows(1, "boom")[0]  # in the second statement: the first is undone
    with pytest.raises(AuditError, match="boom"):
        audit.append_many(rows)
    assert audit.count() == 3
    audit.append_many(_rows(2))  # the chain goes on from what is on disk
    assert audit.verify_chain() == 5


# --------------------------------------------------------------------------- API keys


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_keys_from_another_process_are_picked_up_without_a_stat_per_request(
        tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "keys.json"
    serving = KeyStore(path, recheck=0.1, clock=clock)
    other = KeyStore(path)  # `certledger verifier add-key` in another process
    principal, key = other.create("gd-hrss")
    assert serving.authenticate(key) == principal  # a new key: at its first request
    looks = 0
    real = serving._maybe_reload

    def counted() -> None:
        nonlocal looks
        looks += 1
        real()

    serving._maybe_reload = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert serving.authenticate(key) == principal
    assert looks == 0
    other.revoke(principal.key_id)
    assert serving.authenticate(key) == principal  # known key, within recheck
    clock.t += 0.15
    with pytest.raises(AuthError, match="revoked"):
        serving.authenticate(key)
    assert looks == 1
    with pytest.raises(AuthError, match="not valid"):  # an unknown id looks again
        serving.authenticate("clk_0123456789abcdef_" + "A" * 43)
    assert looks == 2


# --------------------------------------------------------------------------- coalescer


def test_a_waiters_gate_opens_once_however_often_it_is_woken() -> None:
    w: _Waiter[int, int] = _Waiter(1)
    assert not w.wait(0)
    w.wake()
    w.wake()  # given the lead, then woken by its own batch: harmless
    assert w.wait(0)
    assert not w.wait(0)
