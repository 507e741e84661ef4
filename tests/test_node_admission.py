"""Admission: back-pressure (429 ``busy`` + Retry-After), one gate, peers' txs off the handler.

* past the backlog a client tx is refused with ``Busy`` and admission resumes once
  the backlog shrinks;
* only ``max_waiting`` client submissions queue at the gate, the next is told busy,
  and only one admission runs at a time;
* peers' txs are queued and admitted by the worker thread; overflow is counted;
* the HTTP route answers ``Busy`` with 429, ``{"error": {"code": "busy"}}`` and
  Retry-After (plus the millisecond hint the bench driver uses);
* the bench driver reads that pause.
"""

from __future__ import annotations

import http.client
import threading
from typing import Any, cast

import pytest

from network.testing import wait_until
from node.admission import Admission, Busy
from node.api import ApiDeps, create_app
from node.bench_driver import _retry_after
from node.mempool import AddResult, Mempool
from node.metrics import NodeMetrics


class FakePool:
    """What admission reads of the mempool: its size in txs and bytes."""

    def __init__(self) -> None:
        self.n = 0
        self.size_bytes = 0

    def __len__(self) -> int:
        return self.n


class Recorder:
    def __init__(self) -> None:
        self.client: list[bytes] = []
        self.peer: list[bytes] = []
        self.drops: dict[str, int] = {}
        self.inside = 0
        self.most_inside = 0
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def add_client(self, raw: bytes) -> AddResult:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.release.wait(10)
        with self.lock:
            self.inside -= 1
            self.client.append(raw)
        return AddResult(raw.ljust(32, b"\0"), True)

    def add_peer(self, raw: bytes, tx_id: bytes) -> None:
        self.release.wait(10)
        assert tx_id == b"id:" + raw  # handed on with its tx
        self.peer.append(raw)

    def count(self, reason: str, n: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def make(pool: FakePool, rec: Recorder, **kw: Any) -> Admission:
    opts: dict[str, Any] = {"backlog_txs": 3, "backlog_bytes": 1000, "max_waiting": 2,
                            "retry_after_s": 0.05, **kw}
    return Admission(cast(Mempool, pool), add_client=rec.add_client, add_peer=rec.add_peer,
                     count_drop=rec.count, **opts)


def test_backlog_full_is_busy_and_admission_resumes() -> None:
    pool, rec = FakePool(), Recorder()
    adm = make(pool, rec)
    assert adm.submit(b"a").added
    pool.n = 3  # the backlog limit
    with pytest.raises(Busy) as err:
        adm.submit(b"b")
    assert err.value.status == 429 and err.value.code == "busy"
    assert err.value.retry_after == 0.05 and "3 transactions pending" in str(err.value)
    pool.n, pool.size_bytes = 0, 1000  # bytes count too
    with pytest.raises(Busy):
        adm.submit(b"b")
    pool.size_bytes = 0  # a commit emptied the pool: admitted again
    assert adm.submit(b"b").added
    assert rec.client == [b"a", b"b"] and rec.drops == {"admission_busy": 2}


def test_one_admission_at_a_time_and_bounded_waiting() -> None:
    pool, rec = FakePool(), Recorder()
    adm = make(pool, rec, max_waiting=2)
    rec.release.clear()  # the first admission blocks inside the gate
    results: list[object] = []

    def submit(raw: bytes) -> None:
        try:
            results.append(adm.submit(raw))
        except Busy as exc:
            results.append(exc)

    first = threading.Thread(target=submit, args=(b"1",))
    first.start()
    wait_until(lambda: rec.inside == 1, 5, 0.01, "first admission inside the gate")
    waiters = [threading.Thread(target=submit, args=(raw,)) for raw in (b"2", b"3")]
    for t in waiters:
        t.start()
    # Both counted as waiting at the gate: the next one is told busy at once.
    wait_until(lambda: adm._waiting == 2, 5, 0.01, "two submissions waiting")
    with pytest.raises(Busy, match="already waiting"):
        adm.submit(b"4")
    rec.release.set()
    for t in [first, *waiters]:
        t.join(10)
    assert sorted(rec.client) == [b"1", b"2", b"3"] and rec.most_inside == 1
    assert all(isinstance(r, AddResult) for r in results)


def test_peer_txs_are_admitted_by_the_worker_and_overflow_counted() -> None:
    pool, rec = FakePool(), Recorder()
    adm = make(pool, rec, peer_queue_txs=3)
    rec.release.clear()
    adm.start()
    try:
        adm.offer_peer_txs([(b"p1", b"id:p1")])  # returns at once although admission blocks
        wait_until(lambda: adm.peer_backlog() == 0, 5, 0.01, "worker took p1")
        adm.offer_peer_txs([(p, b"id:" + p) for p in (b"p2", b"p3", b"p4", b"p5")])  # room: 3
        assert rec.drops == {"peer_txs_backlog": 1}
        rec.release.set()
        wait_until(lambda: len(rec.peer) == 4, 5, 0.01, "peer txs admitted")
        assert rec.peer == [b"p1", b"p2", b"p3", b"p4"]
    finally:
        rec.release.set()
        adm.stop()


def test_api_answers_busy_with_429_and_retry_after() -> None:
    def busy(raw: bytes) -> AddResult:
        raise Busy("node busy: 9 transactions pending (limit 3); retry in 0.2s", 0.2)

    deps = ApiDeps(chain=cast(Any, None), submit=busy, pending=lambda _: False,
                   status=dict, metrics=NodeMetrics(), inbox=cast(Any, None),
                   max_tx_body=1 << 16, max_consensus_body=1 << 20, max_sync_bytes=1 << 20)
    client = create_app(deps).test_client()
    resp = client.post("/v1/transactions", data=b"\x90",
                       headers={"Content-Type": "application/msgpack"})
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "busy"
    assert resp.headers["Retry-After"] == "1" and resp.headers["X-Retry-After-Ms"] == "200"


class _Resp:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self._h = status, headers

    def getheader(self, name: str) -> str | None:
        return self._h.get(name)


def test_bench_driver_reads_the_pause() -> None:
    def pause(status: int, **h: str) -> float:
        return _retry_after(cast(http.client.HTTPResponse, _Resp(status, h)))

    assert pause(202) == 0.0
    assert pause(429, **{"X-Retry-After-Ms": "200", "Retry-After": "1"}) == pytest.approx(0.2)
    assert pause(429, **{"Retry-After": "1"}) == 0.5  # capped
    assert pause(429) == 0.02
