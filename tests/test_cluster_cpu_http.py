"""``node.server``: large request bodies are read in big chunks and kept in memory.

A 3 MB body (a proposal's size) is posted to an ``HttpServer`` on a free loopback
port. It must arrive intact, reach the app as an in-memory stream (waitress' default
spools anything above 512 KiB to a temporary file and reads it back), and be read
from the socket in reads larger than waitress' default 8 KiB.
"""

from __future__ import annotations

import http.client
import io
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from waitress import wasyncore

from certificates.hashing import sm3
from node.server import INBUF_OVERFLOW, HttpServer

BODY = os.urandom(3 * 1024 * 1024)


class App:
    def __init__(self) -> None:
        self.streams: list[str] = []

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        self.streams.append(type(stream).__name__)
        data = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        start("200 OK", [("Content-Type", "application/octet-stream")])
        return [sm3(data)]


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every socket read waitress makes."""
    sizes: list[int] = []
    lock = threading.Lock()
    real = wasyncore.dispatcher.recv

    def recv(self: wasyncore.dispatcher, buffer_size: int) -> bytes:
        data: bytes = real(self, buffer_size)
        with lock:
            sizes.append(len(data))
        return data

    monkeypatch.setattr(wasyncore.dispatcher, "recv", recv)
    return sizes


def test_a_large_body_is_read_in_big_chunks_and_kept_in_memory(reads: list[int]) -> None:
    assert len(BODY) < INBUF_OVERFLOW
    app = App()
    server = HttpServer(app, "127.0.0.1", 0, threads=2)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/", BODY, {"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == sm3(BODY)
        conn.close()
    finally:
        assert server.stop()
    assert app.streams == [io.BytesIO.__name__]  # not a spooled temporary file
    assert sum(reads) >= len(BODY)
    assert max(reads) > 8192  # waitress' default read size would cap every read here
