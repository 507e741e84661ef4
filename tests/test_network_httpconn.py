"""The peer senders' POST client: one kept-alive connection, failures as ``requests`` errors.

* consecutive POSTs reuse one TCP connection (the server sees one client port) and
  the body and status make it through;
* a refused connection is ``requests.ConnectionError`` with the errno text the
  sender's log shows; a server that does not answer in time is ``requests.Timeout``;
  after either, the next POST opens a fresh connection and succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import requests

from network.errors import describe_failure
from network.httpconn import KeepAliveSession
from network.testing import WsgiServer, free_port


class App:
    def __init__(self) -> None:
        self.ports: list[str] = []
        self.bodies: list[bytes] = []
        self.stall = threading.Event()

    def __call__(self, environ: dict[str, Any],
                 start: Callable[[str, list[tuple[str, str]]], Any]) -> Iterable[bytes]:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(environ["wsgi.input"].read(n))
        self.ports.append(environ["REMOTE_PORT"])
        if self.stall.is_set():
            self.stall.clear()
            threading.Event().wait(2)  # longer than the client's read timeout below
        start("202 Accepted", [("Content-Type", "application/json")])
        return [b'{"accepted": 1}']


def test_posts_share_one_connection_and_failures_are_requests_errors() -> None:
    app = App()
    with WsgiServer(app) as srv:
        s = KeepAliveSession()
        url = srv.url + "/v1/consensus"
        for body in (b"one", b"two", b"three"):
            r = s.post(url, data=body, headers={"Content-Type": "application/msgpack"},
                       timeout=(1.0, 5.0))
            assert r.status_code == 202
        assert app.bodies == [b"one", b"two", b"three"]
        assert len(set(app.ports)) == 1  # kept alive
        app.stall.set()
        with pytest.raises(requests.Timeout):
            s.post(url, data=b"slow", headers={}, timeout=(1.0, 0.3))
        assert s.post(url, data=b"four", headers={}, timeout=(1.0, 5.0)).status_code == 202
        assert app.ports[-1] != app.ports[0]  # a fresh connection after the failure
        s.close()
    dead = f"http://127.0.0.1:{free_port()}/v1/consensus"  # nobody listens there
    with pytest.raises(requests.ConnectionError) as err:
        KeepAliveSession().post(dead, data=b"x", headers={}, timeout=(1.0, 1.0))
    assert describe_failure(err.value) == "connection failed: Connection refused"
