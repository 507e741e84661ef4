"""The waitress adjustments every server of ours is created with (``network.serving``)."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from waitress.adjustments import Adjustments

from network.serving import SEND_BYTES, create_server
from network.testing import WsgiServer
from network.wsgi import stop_waitress


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = b'{"ok":true}'
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def test_small_answers_are_buffered_until_the_task_ends() -> None:
    # waitress's default since 1.3 (1) is what made its loop thread spin: see the module header.
    assert Adjustments.send_bytes < SEND_BYTES
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = create_server(_app, host="127.0.0.1", port=0)
    try:
        assert server.adj.send_bytes == SEND_BYTES
        assert not [w for w in caught if "send_bytes" in str(w.message)], caught
    finally:
        server.close()


def test_a_caller_may_set_send_bytes_itself() -> None:
    server = create_server(_app, host="127.0.0.1", port=0, send_bytes=1)
    try:
        assert server.adj.send_bytes == 1
    finally:
        server.close()


def test_answers_arrive_whole_on_a_kept_alive_connection() -> None:
    with WsgiServer(_app) as srv, requests.Session() as s:
        assert srv._server is not None and srv._server.adj.send_bytes == SEND_BYTES
        for _ in range(20):
            resp = s.get(srv.url + "/", timeout=5)
            assert resp.status_code == 200 and resp.json() == {"ok": True}


def test_an_answer_written_in_parts_with_a_pause_still_arrives_whole() -> None:
    # Bytes below SEND_BYTES wait for the task's end; the first part must not be lost or
    # held past it.
    def paused(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        yield b"01234"
        time.sleep(0.2)
        yield b"56789"

    with WsgiServer(paused) as srv:
        resp = requests.get(srv.url + "/", timeout=5)
        assert resp.status_code == 200 and resp.content == b"0123456789"


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; read the answer until the server closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("request_bytes", "status", "code", "says"), [
    (b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
     + b"x" * 5000, 413, "too_large", "Request Entity Too Large"),
    (b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nxx\r\n0\r\n\r\n", 400, "bad_request", "Bad Request"),
    (b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
     400, "bad_request", "Content-Length"),
    # Just over the limit, so that waitress reads it all before closing (unread bytes
    # would make the close a reset).
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1200 + b"\r\n\r\n",
     431, "headers_too_large", "Request Header Fields Too Large"),
])
def test_waitress_refusals_answer_in_the_api_error_shape(
    request_bytes: bytes, status: int, code: str, says: str,
) -> None:
    # These never reach the app: waitress answers them itself, in plain text by default.
    server = create_server(_app, host="127.0.0.1", port=0, max_request_body_size=1000,
                           max_request_header_size=1000)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        got, headers, body = _raw(server.effective_port, request_bytes)
    finally:
        assert stop_waitress(server, thread, 5.0)
    assert got == status and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and says in error["message"], error
    assert headers.get("connection") == "close"
