"""Stopping a waitress server while a worker has just pulled its trigger.

waitress's ``pull_trigger(thunk)`` appends the thunk, then writes to its trigger pipe. A
worker that just answered a request pulls the same trigger, so the loop thread can run
our closing thunk - which closes the trigger too - before our own write, which then
fails with EBADF. Both servers (the node's and the tests') must stop cleanly anyway.
The race is forced here: our first write is let through and the loop is waited for
before the real write runs.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
import requests

from network.testing import WsgiServer, wait_until
from node.server import HttpServer


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _lose_the_race(trigger: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the next pull's write land after the loop has already run the thunk."""
    real = trigger._physical_pull
    seen: list[str] = []

    def pull() -> None:
        real()  # the "worker's" byte: wakes the loop, which runs every queued thunk
        wait_until(lambda: trigger._closed, 5, 0.01, "the loop ran close_all")
        try:
            real()  # our own write, after close_all closed the pipe
        except OSError as exc:
            seen.append(errno.errorcode.get(exc.errno or 0, "?"))
            raise

    monkeypatch.setattr(trigger, "_physical_pull", pull)
    return seen


def test_the_node_server_stops_when_the_loop_closes_the_trigger_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = HttpServer(_app, "127.0.0.1", 0, threads=2)
    server.start()
    assert requests.get(f"http://127.0.0.1:{server.port}/", timeout=5).text == "ok"
    seen = _lose_the_race(server._server.trigger, monkeypatch)
    assert server.stop(timeout=5)
    assert seen == ["EBADF"]  # the race happened, and stop() absorbed it


def test_the_test_server_stops_when_the_loop_closes_the_trigger_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = WsgiServer(_app).start()
    assert requests.get(server.url, timeout=5).text == "ok"
    assert server._server is not None
    seen = _lose_the_race(server._server.trigger, monkeypatch)
    assert server.stop(timeout=5)
    assert seen == ["EBADF"]


def test_another_write_error_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the closed-trigger case is expected; a failure on an open trigger is a bug.
    server = HttpServer(_app, "127.0.0.1", 0, threads=2)
    server.start()
    trigger = server._server.trigger

    def broken() -> None:
        raise OSError(errno.EIO, "simulated")

    monkeypatch.setattr(trigger, "_physical_pull", broken)
    try:
        with pytest.raises(OSError, match="simulated"):
            server.stop(timeout=1)
    finally:
        monkeypatch.undo()
        trigger.pull_trigger()  # the queued close_all runs now, and the loop ends
        server._thread.join(5)
    assert not server._thread.is_alive()
