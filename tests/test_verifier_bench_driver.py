"""The verifier bench's load driver (verifier/bench_driver.py) against small local servers.

What it reports must be what happened: only 200 answers that say ``"valid":true`` are
verified, every other answer (a failed check, another status, a dropped connection) is an
error and the first one is named, the bodies go round-robin so certificates stay distinct,
latencies include the server's time, and a connection the server drops is reopened.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from network.testing import WsgiServer
from verifier.bench_driver import DriverSpec, FramingError, drive, frame

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
VALID = b'{"valid":true,"checks":[]}'


def _spec(url: str, bodies: Path, *, clients: int = 4, seconds: float = 0.6) -> DriverSpec:
    return DriverSpec(url=url, api_key="k1.secret", bodies=str(bodies), clients=clients,
                      seconds=seconds, warmup=0.1)


def _bodies(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "bodies.jsonl"
    path.write_bytes(b"\n".join(json.dumps({"n": i}).encode() for i in range(n)) + b"\n")
    return path


def _app(answer: Callable[[dict[str, Any]], tuple[str, bytes]], seen: list[int],
         delay: float = 0.0) -> App:
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        assert environ["HTTP_AUTHORIZATION"] == "Bearer k1.secret"
        assert environ["PATH_INFO"] == "/v1/verify" and environ["REQUEST_METHOD"] == "POST"
        with lock:
            seen.append(body["n"])
        if delay:
            time.sleep(delay)
        status, out = answer(body)
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(out)))])
        return [out]

    return app


def test_frame_waits_for_a_whole_response_and_refuses_what_it_cannot_frame() -> None:
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    for cut in (10, len(whole) - 6, len(whole) - 1):
        assert frame(whole[:cut]) is None
    assert frame(whole + b"HTTP/1.1") == (200, b"hello", len(whole))
    assert frame(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")[:2] == (404, b"")  # type: ignore[index]
    for bad, why in [(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length"),
                     (b"SSH-2.0 hello\r\nContent-Length: 0\r\n\r\n", "status line"),
                     (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length")]:
        with pytest.raises(FramingError, match=why):
            frame(bad)
    with pytest.raises(FramingError, match="end of headers"):
        frame(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000)


def test_only_valid_answers_count_and_the_first_error_is_named(tmp_path: Path) -> None:
    # Body n is valid unless n % 5 == 0 (a failed check) or n % 7 == 0 (a 500): 6 of 20.
    def answer(body: dict[str, Any]) -> tuple[str, bytes]:
        n = body["n"]
        if n % 7 == 0:
            return "500 Internal Server Error", b'{"error":{"code":"internal"}}'
        if n % 5 == 0:
            return "200 OK", b'{"valid":false,"checks":[]}'
        return "200 OK", b'{"valid":true,"checks":[]}'

    seen: list[int] = []
    server = WsgiServer(_app(answer, seen), threads=4).start()
    try:
        out = drive(_spec(server.url, _bodies(tmp_path, 20), clients=4, seconds=1.0))
    finally:
        server.stop()
    assert out["verified"] > 20 and out["errors"] > 5, out
    # Round-robin: client k sends bodies k, k + 4, k + 8... (mod 20), so within each lane
    # the counts differ by at most one, and every body was sent.
    for lane in range(4):
        counts = [seen.count(n) for n in range(lane, 20, 4)]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1, (lane, counts)
    bad = sum(1 for n in seen if n % 7 == 0 or n % 5 == 0)
    assert bad / len(seen) == pytest.approx(out["errors"] / (out["verified"] + out["errors"]),
                                            abs=0.08)
    assert out["first_error"].startswith(('{"valid":false', '{"error"')), out
    assert out["verifications_per_s"] == round(out["verified"] / 1.0, 1)


def test_latency_includes_the_servers_time(tmp_path: Path) -> None:
    seen: list[int] = []
    server = WsgiServer(_app(lambda b: ("200 OK", VALID), seen, delay=0.03),
                        threads=2).start()
    try:
        out = drive(_spec(server.url, _bodies(tmp_path, 10), clients=2))
    finally:
        server.stop()
    assert out["errors"] == 0 and out["verified"] >= 10, out
    assert 30 <= out["latency_ms_p50"] <= out["latency_ms_p99"], out


class _ClosingServer:
    """A raw HTTP/1.1 server on 127.0.0.1 that answers every POST with VALID and closes
    the connection after every ``close_every``-th answer (waitress will not let a WSGI
    app do that)."""

    def __init__(self, close_every: int) -> None:
        self.close_every = close_every
        self.served = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    buf = buf[length:]
                    with self._lock:
                        self.served += 1
                        close = self.served % self.close_every == 0
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(VALID), VALID))
                except OSError:
                    return
                if close:
                    return

    def stop(self) -> None:
        self._stop.set()
        self._accept.join(5)
        for t in self._threads:
            t.join(5)
        self._sock.close()


def test_a_dropped_connection_is_an_error_and_is_reopened(tmp_path: Path) -> None:
    # Every fourth answer closes its connection: the request the driver then sends on it
    # finds it closed - an error, never a silent retry - and the driver goes on with a
    # new connection.
    server = _ClosingServer(close_every=4)
    try:
        out = drive(_spec(server.url, _bodies(tmp_path, 10), clients=2))
    finally:
        server.stop()
    assert out["verified"] > 20, out
    assert out["errors"] >= 1, out
    assert "closed" in out["first_error"] or "Error" in out["first_error"], out
    assert server.served >= out["verified"] + 1, (server.served, out)


def test_a_verifier_that_is_not_there_is_errors_not_a_hang(tmp_path: Path) -> None:
    server = WsgiServer(_app(lambda b: ("200 OK", b"{}"), []), threads=1).start()
    url = server.url
    server.stop()  # the port is closed now: every connect is refused
    t0 = time.perf_counter()
    out = drive(_spec(url, _bodies(tmp_path, 3), clients=2, seconds=0.3))
    assert time.perf_counter() - t0 < 5
    assert out["verified"] == 0 and out["errors"] > 0, out
    assert "Refused" in out["first_error"] or "refused" in out["first_error"], out
