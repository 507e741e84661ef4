"""NodeClient against fake node APIs on loopback: failover, error bodies, content types."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from flask import Flask, Response, jsonify, request

from network.client import NodeClient
from network.errors import NodeRequestError, NodeUnavailableError
from network.testing import WsgiServer, free_port


class FakeNode:
    """Enough of the node API (DESIGN §7) to exercise the client; ``mode`` breaks it."""

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        self.mode = mode
        self.hits = 0
        app = Flask(name)
        app.before_request(self._before)
        app.add_url_rule("/v1/status", "status", lambda: jsonify(node=self.name, height=5))
        app.add_url_rule("/v1/transactions", "submit", self._submit, methods=["POST"])
        app.add_url_rule("/v1/transactions/<tx_id>", "tx", self._tx)
        app.add_url_rule("/v1/blocks/<height>", "block", self._block)
        app.add_url_rule("/v1/certificates/<path:cert_id>", "cert", self._cert)
        self.app = app

    def _before(self) -> Any:
        self.hits += 1
        if self.mode == "503":
            return jsonify(error={"code": "not_ready", "message": "syncing"}), 503
        if self.mode == "junk":
            return Response(b"\xff not json", status=200, content_type="application/json")
        return None

    def _submit(self) -> Any:
        if request.content_type != "application/msgpack":
            return jsonify(error={"code": "bad_content_type", "message": "msgpack"}), 415
        if request.get_data() == b"bad":
            msg = "signature does not verify"
            return jsonify(error={"code": "invalid_tx", "message": msg}), 400
        return jsonify(tx_id="ab" * 32, status="pending", node=self.name), 202

    def _tx(self, tx_id: str) -> Any:
        if tx_id == "missing":
            return Response("<html>not here</html>", status=404, content_type="text/html")
        return jsonify(tx_id=tx_id, status="committed", height=3)

    def _block(self, height: str) -> Any:
        body = msgpack.packb({"height": height, "hash": b"\x01" * 32}, use_bin_type=True)
        return Response(body, content_type="application/msgpack")

    def _cert(self, cert_id: str) -> Any:
        return jsonify(id=cert_id, record={"status": "issued"}, proof={}, header={}, commit={})


Start = Callable[[FakeNode], tuple[FakeNode, WsgiServer]]


@pytest.fixture
def nodes() -> Iterator[Start]:
    """Serve fake nodes on free loopback ports; all are stopped after the test."""
    started: list[tuple[FakeNode, WsgiServer]] = []

    def start(node: FakeNode) -> tuple[FakeNode, WsgiServer]:
        started.append((node, WsgiServer(node.app, threads=2).start()))
        return started[-1]

    yield start
    for _, server in started:
        assert server.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_fails_over_to_the_second_url_and_remembers_it(nodes: Start) -> None:
    live, server = nodes(FakeNode("live"))
    with NodeClient([dead_url(), server.url], timeout=2.0) as c:
        assert c.status() == {"node": "live", "height": 5}
        assert c.current_url == server.url
        assert c.tx_status("cd" * 32)["status"] == "committed"
        assert live.hits == 2


def test_5xx_and_junk_bodies_fail_over_too(nodes: Start) -> None:
    busy, busy_srv = nodes(FakeNode("busy", mode="503"))
    junk, junk_srv = nodes(FakeNode("junk", mode="junk"))
    live, live_srv = nodes(FakeNode("live"))
    c = NodeClient([busy_srv.url, junk_srv.url, live_srv.url], timeout=2.0)
    assert c.status()["node"] == "live"
    assert c.status()["node"] == "live"  # the good node is now tried first
    assert (busy.hits, junk.hits, live.hits) == (1, 1, 2)


def test_4xx_becomes_node_request_error_without_failover(nodes: Start) -> None:
    _, s1 = nodes(FakeNode("first"))
    second, s2 = nodes(FakeNode("second"))
    c = NodeClient([s1.url, s2.url])
    with pytest.raises(NodeRequestError) as info:
        c.submit_tx(b"bad")
    err = info.value
    assert (err.status, err.code, err.message) == (400, "invalid_tx", "signature does not verify")
    assert s1.url in str(err) and "invalid_tx" in str(err)
    assert second.hits == 0
    # A 4xx without the JSON error shape still yields a usable error.
    with pytest.raises(NodeRequestError) as info:
        c.tx_status("missing")
    assert info.value.status == 404 and info.value.code == "http_404"
    assert "not here" in info.value.message


def test_every_url_down_names_each_one_and_why(nodes: Start) -> None:
    _, busy = nodes(FakeNode("busy", mode="503"))
    dead = dead_url()
    with socket.socket() as hole:  # accepts the handshake, never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(4)
        silent = f"http://127.0.0.1:{hole.getsockname()[1]}"
        c = NodeClient([dead, busy.url, silent], timeout=0.3)
        with pytest.raises(NodeUnavailableError) as info:
            c.status()
    text = str(info.value)
    assert [url for url, _ in info.value.attempts] == [dead, busy.url, silent]
    assert f"{dead} (connection failed: Connection refused)" in text
    assert "HTTP 503 not_ready: syncing" in text
    assert f"{silent} (timed out)" in text


def test_submit_sends_msgpack_and_decodes_msgpack_answers(nodes: Start) -> None:
    _, server = nodes(FakeNode("n"))
    c = NodeClient([server.url])
    assert c.submit_tx(b"\x81\xa1a\x01") == {"tx_id": "ab" * 32, "status": "pending", "node": "n"}
    assert c.block(7) == {"height": "7", "hash": b"\x01" * 32}
    assert c.block()["height"] == "latest"
    with pytest.raises(ValueError):
        c.block(-1)


def test_certificate_ids_stay_one_path_segment(nodes: Start) -> None:
    _, server = nodes(FakeNode("n"))
    c = NodeClient(server.url)  # a lone URL is accepted too
    cid = "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F"
    assert c.certificate(cid)["id"] == cid
    assert c.certificate("a/../b?x=1")["id"] == "a/../b?x=1"
