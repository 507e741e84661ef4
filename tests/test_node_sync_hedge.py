"""Block sync does not wait on a hung peer alone (node/sync.py, ``HEDGE_S``).

Found by the chaos test: a node 17 blocks behind asked a peer that had just been cut
off (connections accepted, nothing answered) and waited out the 10 s read timeout
before asking another, while the other two could not decide without it. Here one peer
is a blackholing proxy, asked first; another answers at once. The answer must be taken
while the hung fetch is still out, a peer that failed must be asked last for a while,
and a peer with a fetch still out is not asked again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from network.proxy import FaultProxy
from network.testing import WsgiServer, free_port
from node.clock import SystemClock
from node.metrics import NodeMetrics
from node.sync import BlockSync
from node.wire import encode_sync


class InOrder(random.Random):
    """Peers in name order: the test decides who is asked first."""

    def shuffle(self, x: Any) -> None:
        """Leave ``x`` in the order it came in."""


@pytest.fixture
def good() -> Iterator[tuple[WsgiServer, list[str]]]:
    asked: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        asked.append(environ["QUERY_STRING"])
        body = encode_sync(0, [])  # head 0: not ahead of a node at height 0
        start_response("200 OK", [("Content-Type", "application/msgpack"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    with WsgiServer(app) as srv:
        yield srv, asked


@pytest.fixture
def hung() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", free_port())) as proxy:
        proxy.cut("blackhole")  # accepts, never answers
        yield proxy


def block_sync(peers: dict[str, str]) -> BlockSync:
    return BlockSync(SimpleNamespace(head_height=0), peers,  # type: ignore[arg-type]
                     rng=InOrder(), clock=SystemClock(), interval_s=60,
                     feed=lambda ev: None, metrics=NodeMetrics(), max_response_bytes=1 << 20)


def test_a_hung_peer_is_not_waited_for_alone(
        good: tuple[WsgiServer, list[str]], hung: FaultProxy) -> None:
    srv, asked = good
    sync = block_sync({"a-hung": hung.url, "b-good": srv.url})
    try:
        assert sync._order() == ["a-hung", "b-good"]
        assert sync.sync_once() is False  # b-good answered: it is not ahead of us
        assert asked == ["from=1&limit=100"]
        # ... while the fetch from a-hung is still out: nobody waited for it.
        assert sync._busy == {"a-hung"}
        assert sync._order() == ["b-good"]  # and it is not asked twice at once
    finally:
        sync.stop()


def test_a_peer_that_failed_is_asked_last_for_a_while(
        good: tuple[WsgiServer, list[str]]) -> None:
    srv, asked = good
    sync = block_sync({"a-down": f"http://127.0.0.1:{free_port()}", "b-good": srv.url})
    try:
        assert sync._order() == ["a-down", "b-good"]
        assert sync.sync_once() is False  # a-down refused at once, b-good answered
        assert asked == ["from=1&limit=100"]
        assert sync._order() == ["b-good", "a-down"]
    finally:
        sync.stop()
