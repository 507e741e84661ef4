"""The waitress adjustments every server of ours is created with (``network.serving``)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import requests
from waitress.adjustments import Adjustments

from network.serving import SEND_BYTES, create_server
from network.testing import WsgiServer


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
