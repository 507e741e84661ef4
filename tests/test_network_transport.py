"""Peer transport against real HTTP servers on loopback (waitress in a thread)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask, request

from certificates import canonical
from network.testing import WsgiServer, free_port, wait_until
from network.transport import Backoff, SenderConfig, Transport


class Peer:
    """A fake validator endpoint recording every batch; answers ``statuses`` in turn."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.batches: list[list[bytes]] = []
        self.posts = 0
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        self.app = Flask("peer")
        self.app.add_url_rule("/v1/consensus", "consensus", self._consensus, methods=["POST"])

    def _consensus(self) -> tuple[str, int]:
        assert request.content_type == "application/msgpack"
        items = canonical.decode(request.get_data())
        with self.lock:
            self.posts += 1
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.batches.append(items)
        return "", status

    def received(self) -> list[bytes]:
        with self.lock:
            return [m for b in self.batches for m in b]


@pytest.fixture
def peer() -> Iterator[tuple[Peer, WsgiServer]]:
    p = Peer()
    server = WsgiServer(p.app).start()
    yield p, server
    assert server.stop()


def msgs(n: int, prefix: str = "m") -> list[bytes]:
    return [f"{prefix}{i:04d}".encode() for i in range(n)]


class RecordingSleep:
    """Injected sleep: records each back-off, pauses a hair so a dead peer is not spun on."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._pause = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self._pause.wait(0.005)


def test_delivers_in_order_in_batches(peer: tuple[Peer, WsgiServer]) -> None:
    p, server = peer
    t = Transport({"a": server.url}, config=SenderConfig(batch_max_messages=20))
    for m in msgs(50):  # queued before start, so batching is deterministic
        t.send("a", m)
    with t:
        # The peer records a batch before it answers: wait for the sender's books too.
        wait_until(lambda: t.stats().sent == 50, what="50 messages")
        assert p.received() == msgs(50)
        assert [len(b) for b in p.batches] == [20, 20, 10]
        st = t.stats()
        assert st.sent == 50 and st.peers_up == ["a"] and st.failures == {"a": 0}
        assert st.peers["a"].batches == 3 and st.peers["a"].last_ok_at is not None
        t.send("a", b"later")  # the thread also wakes for messages sent while idle
        wait_until(lambda: p.received()[-1:] == [b"later"], what="late message")


def test_batches_respect_the_byte_budget(peer: tuple[Peer, WsgiServer]) -> None:
    p, server = peer
    t = Transport({"a": server.url}, config=SenderConfig(batch_max_bytes=100))
    sent = [b"x" * 40] * 5 + [b"y" * 300, b"z" * 10]
    for m in sent:
        t.send("a", m)
    with t:
        wait_until(lambda: len(p.received()) == len(sent))
    # A message bigger than the budget still travels, alone.
    assert [len(b) for b in p.batches] == [2, 2, 1, 1, 1]
    assert p.received() == sent


def test_peer_down_backs_off_then_reconnects_and_delivers_once() -> None:
    port = free_port()
    p = Peer()
    sleep = RecordingSleep()
    cfg = SenderConfig(backoff_base=0.05, backoff_cap=0.4, timeout=(0.5, 2.0))
    t = Transport({"a": f"http://127.0.0.1:{port}"}, rng=random.Random(7), config=cfg, sleep=sleep)
    with t:
        for m in msgs(5):
            t.send("a", m)
        wait_until(lambda: t.stats().failures["a"] >= 5, what="failed attempts")
        assert t.stats().peers_up == []
        assert t.stats().peers["a"].last_error == "connection failed: Connection refused"
        server = WsgiServer(p.app, port).start()
        try:
            wait_until(lambda: t.stats().sent == 5, what="delivery after the peer came up")
            assert p.received() == msgs(5)  # in order, and exactly once
            assert t.stats().peers_up == ["a"]
            # Restart the peer: the sender's pooled connection is dead; it must reconnect.
            assert server.stop()
            for m in msgs(3, "n"):
                t.send("a", m)
            wait_until(lambda: t.stats().peers_up == [], what="peer seen down again")
            server = WsgiServer(p.app, port).start()
            wait_until(lambda: t.stats().sent == 8, what="delivery after restart")
            assert p.received() == msgs(5) + msgs(3, "n")
        finally:
            assert server.stop()
    # Back-off is exactly what the seeded source dictates: replay it.
    seeded = Backoff(random.Random(random.Random(7).getrandbits(64)), 0.05, 0.4)
    first_outage = sleep.delays[: t.stats().failures["a"]]
    assert first_outage[:5] == [seeded.next_delay() for _ in range(5)]
    assert all(0.025 <= d <= 0.4 for d in sleep.delays)
    assert max(sleep.delays) > 0.2  # it really grew towards the cap


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(random.Random(1), base=0.1, cap=1.0)
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    b.reset()
    assert b.next_delay() <= 0.1
    again = Backoff(random.Random(1), base=0.1, cap=1.0)
    assert [again.next_delay() for _ in range(8)] == delays


def test_5xx_is_retried_and_4xx_is_dropped() -> None:
    p = Peer(statuses=[503, 500, 200, 400])
    sleep = RecordingSleep()
    with WsgiServer(p.app) as server, Transport({"a": server.url}, sleep=sleep) as t:
        t.send("a", b"first")
        wait_until(lambda: p.received() == [b"first"])
        assert len(sleep.delays) == 2 and t.stats().failures == {"a": 2}
        t.send("a", b"refused")
        wait_until(lambda: t.stats().dropped.get("rejected") == 1)
        t.send("a", b"after")
        wait_until(lambda: t.stats().sent == 2)
        assert p.received() == [b"first", b"after"]
        assert p.posts == 5  # the 400 was not retried
        assert len(sleep.delays) == 2 and t.stats().peers_up == ["a"]


@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", slice(7, 12)), ("drop_newest", slice(0, 5))]
)
def test_bounded_queue_drops_are_counted(
    peer: tuple[Peer, WsgiServer], overflow: str, kept: slice
) -> None:
    p, server = peer
    cfg = SenderConfig(queue_limit=5, overflow=overflow)  # type: ignore[arg-type]
    t = Transport({"a": server.url}, config=cfg)
    for m in msgs(12):
        t.send("a", m)
    assert t.stats().dropped == {"queue_full": 7}
    assert t.stats().peers["a"].queued == 5
    with t:
        wait_until(lambda: len(p.received()) == 5)
    assert p.received() == msgs(12)[kept]


def test_one_dead_peer_does_not_hold_up_the_others(peer: tuple[Peer, WsgiServer]) -> None:
    p, server = peer
    dead = f"http://127.0.0.1:{free_port()}"
    with Transport({"live": server.url, "dead": dead}, sleep=RecordingSleep()) as t:
        for m in msgs(10):
            t.broadcast(m)
        wait_until(lambda: len(p.received()) == 10)
        assert p.received() == msgs(10)
        wait_until(lambda: t.stats().peers_up == ["live"])
        dead_stats = t.stats().peers["dead"]
        assert dead_stats.sent == 0 and dead_stats.failures > 0


def test_drops_that_are_not_network_failures_are_counted(peer: tuple[Peer, WsgiServer]) -> None:
    _, server = peer
    t = Transport({"a": server.url}, config=SenderConfig(max_message_bytes=10))
    t.send("nobody", b"x")
    t.send("a", b"x" * 11)
    t.stop()
    t.send("a", b"late")
    assert t.stats().dropped == {"unknown_peer": 1, "too_large": 1, "stopped": 1}


def test_stop_interrupts_a_long_backoff() -> None:
    cfg = SenderConfig(backoff_base=30.0, backoff_cap=60.0)
    t = Transport({"a": f"http://127.0.0.1:{free_port()}"}, config=cfg)
    t.start()
    t.send("a", b"x")
    wait_until(lambda: t.stats().failures["a"] == 1)
    began = time.monotonic()
    assert t.stop(timeout=2.0)
    assert time.monotonic() - began < 1.0
    assert t.stats().dropped == {"stopped": 1}


def test_stop_is_bounded_while_a_request_hangs() -> None:
    # A listener that never accepts: the TCP handshake completes (backlog), no answer ever.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        t = Transport({"a": url}, config=SenderConfig(timeout=(0.5, 0.5)))
        t.start()
        t.send("a", b"x")
        wait_until(lambda: t.stats().peers["a"].queued == 0, what="request in flight")
        began = time.monotonic()
        assert t.stop(timeout=2.0)  # the in-flight request ends by its own timeout
        assert time.monotonic() - began < 1.5


def test_peers_can_join_and_leave(peer: tuple[Peer, WsgiServer]) -> None:
    p, server = peer
    with Transport({}) as t:
        t.send("new", b"too early")
        t.add_peer("new", server.url + "/")
        assert t.peers() == ["new"]
        t.broadcast(b"hello")
        wait_until(lambda: t.stats().sent == 1)
        t.remove_peer("new")
        t.send("new", b"gone")
        assert t.peers() == [] and p.received() == [b"hello"]
        assert t.stats().dropped == {"unknown_peer": 2}
        assert t.stats().sent == 1  # totals survive the peer's removal
