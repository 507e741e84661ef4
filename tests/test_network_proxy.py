"""The fault-injecting proxy in front of a local TCP echo server."""

from __future__ import annotations

import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from network.proxy import FaultProxy
from network.testing import free_port, wait_until


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield str(host), int(port)
    server.shutdown()
    server.server_close()
    thread.join(2)
    assert not thread.is_alive()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    p = FaultProxy(echo, rng=random.Random(3)).start()
    yield p
    assert p.stop(timeout=2.0)


def connect(p: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", p.port), timeout=timeout)


def echoes(sock: socket.socket, data: bytes = b"ping") -> bool:
    """True when ``data`` comes back; False when the connection is closed or reset."""
    try:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                return False
            got += chunk
        return got == data
    except (ConnectionResetError, BrokenPipeError):
        return False


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        assert echoes(a, b"hello") and echoes(b, b"world")
        big = bytes(range(256)) * 2000
        assert echoes(a, big)
    wait_until(lambda: proxy.stats().active == 0, what="links closed after the clients left")
    st = proxy.stats()
    assert st.accepted == 2 and st.bytes_forwarded >= 2 * (10 + len(big))


def test_delay_is_applied_each_way_and_settable_at_runtime(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        proxy.delay_ms = 150
        began = time.monotonic()
        assert echoes(s)
        assert time.monotonic() - began >= 0.29
        proxy.delay_ms = 0
        began = time.monotonic()
        assert echoes(s)
        assert time.monotonic() - began < 0.25


def test_cut_refuse_closes_links_and_resets_new_ones_until_heal(proxy: FaultProxy) -> None:
    with connect(proxy) as old:
        assert echoes(old)
        proxy.cut()
        assert not echoes(old)
    try:  # the reset may beat connect() itself, or arrive on the first read
        with connect(proxy) as new:
            assert not echoes(new)
    except ConnectionResetError:
        pass
    assert proxy.stats().refused == 1
    proxy.heal()
    with connect(proxy) as again:
        assert echoes(again)


def test_cut_blackhole_swallows_until_heal(proxy: FaultProxy) -> None:
    proxy.cut("blackhole")
    with connect(proxy, timeout=0.3) as s:
        s.sendall(b"anyone?")
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert proxy.stats().blackholed == 1
        proxy.heal()  # the held connection is released, closed
        s.settimeout(2.0)
        assert not echoes(s)
    with connect(proxy) as again:
        assert echoes(again)


def test_drop_is_drawn_from_the_injected_random(proxy: FaultProxy) -> None:
    proxy.drop = 1.0
    with connect(proxy) as s:
        assert not echoes(s)
    proxy.drop = 0.5
    outcomes = []
    for _ in range(12):  # one connection at a time, so draws happen in a fixed order
        with connect(proxy) as s:
            outcomes.append(echoes(s))
    # Replay: connection 0 used one draw; each later one draws per chunk forwarded
    # (out, then back if out survived).
    replay = random.Random(3)
    replay.random()
    expected = []
    for _ in range(12):
        expected.append(replay.random() >= 0.5 and replay.random() >= 0.5)
    assert outcomes == expected
    assert True in outcomes and False in outcomes
    assert proxy.stats().dropped == 1 + expected.count(False)


def test_target_down_closes_the_client(echo: tuple[str, int]) -> None:
    with FaultProxy(("127.0.0.1", free_port())) as p, connect(p) as s:
        assert not echoes(s)


def test_stop_is_bounded_with_open_connections(echo: tuple[str, int]) -> None:
    p = FaultProxy(echo).start()
    p.delay_ms = 10_000  # a pump thread is parked in a long delay
    port = p.port
    clients = [connect(p) for _ in range(3)]
    clients[0].sendall(b"stuck")
    wait_until(lambda: p.stats().active == 3, what="three links")
    began = time.monotonic()
    assert p.stop(timeout=2.0)
    assert time.monotonic() - began < 1.0
    for c in clients:
        assert not echoes(c)
        c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0)
