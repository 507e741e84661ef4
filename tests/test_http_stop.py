"""Stopping a waitress server on a thread (``network.wsgi.stop_waitress``) without racing
waitress's own threads, for the node's server and the tests' one.

Two races, each forced here rather than hoped for:

* a worker that finishes a request while the server stops pulls the trigger; if the
  trigger is already closed, waitress logs the EBADF as an error (seen in a cluster
  test's node log). The workers must be gone before the trigger closes;
* ``pull_trigger(thunk)`` queues the thunk, then writes to wake the loop. If a worker's
  byte wakes the loop first, the thunk runs before that write; when the thunk closed the
  trigger, the write fails with EBADF (seen once in CI). ``stop`` must absorb it.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from network.testing import WsgiServer, wait_until
from node.server import HttpServer

Stopper = Callable[[], bool]


class SlowApp:
    """Answers ``/slow`` only when released, so a request is in flight during stop."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") == "/slow":
            self.inside.set()
            self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


@pytest.fixture(params=["node", "tests"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any, Stopper, SlowApp]]:
    app = SlowApp()
    if request.param == "node":
        node = HttpServer(app, "127.0.0.1", 0, threads=2)
        node.start()
        yield f"http://127.0.0.1:{node.port}", node._server, node.stop, app
    else:
        test = WsgiServer(app, threads=2).start()
        yield test.url, test._server, test.stop, app
    app.release.set()


def test_a_request_in_flight_finishes_before_the_trigger_closes(
    server: tuple[str, Any, Stopper, SlowApp], caplog: pytest.LogCaptureFixture
) -> None:
    url, waitress_server, stop, app = server
    assert requests.get(url + "/", timeout=5).text == "ok"
    caplog.set_level(logging.INFO, logger="waitress")
    answer: list[object] = []

    def slow() -> None:
        try:
            answer.append(requests.get(url + "/slow", timeout=10).status_code)
        except requests.RequestException as exc:
            answer.append(exc)

    client = threading.Thread(target=slow)
    client.start()
    assert app.inside.wait(5)
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(stop()))
    stopper.start()
    # The connections close first; the trigger must stay open while a worker is busy.
    wait_until(lambda: len(waitress_server._map) == 1, 5, 0.01, "connections closed")
    assert not waitress_server.trigger._closed
    app.release.set()  # the worker ends its request and pulls the trigger
    stopper.join(10)
    client.join(10)
    assert result == [True]
    assert waitress_server.trigger._closed and not waitress_server._map
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_wake_up_write_that_loses_to_the_loop_is_absorbed(
    server: tuple[str, Any, Stopper, SlowApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, waitress_server, stop, _ = server
    assert requests.get(url + "/", timeout=5).text == "ok"
    trigger = waitress_server.trigger
    real = trigger._physical_pull
    failed: list[str] = []

    def pull() -> None:
        # A "worker's" byte first, then ours only after the loop has run every queued
        # thunk - the order that makes our write hit a trigger its thunk closed.
        real()
        wait_until(lambda: not trigger.thunks, 5, 0.01, "the loop ran the thunks")
        try:
            real()
        except OSError as exc:
            failed.append(errno.errorcode.get(exc.errno or 0, "?"))
            raise

    monkeypatch.setattr(trigger, "_physical_pull", pull)
    assert stop()
    assert failed == ["EBADF"]  # the race happened on the closing thunk, and was absorbed


def test_a_write_error_on_an_open_trigger_still_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    node = HttpServer(SlowApp(), "127.0.0.1", 0, threads=2)
    node.start()
    trigger = node._server.trigger
    real = trigger._physical_pull

    def broken() -> None:
        raise OSError(errno.EIO, "simulated")

    monkeypatch.setattr(trigger, "_physical_pull", broken)
    try:
        with pytest.raises(OSError, match="simulated"):
            node.stop(timeout=1)
    finally:
        monkeypatch.undo()
        real()  # the queued thunk runs now
        trigger.pull_trigger(trigger.close)
        node._thread.join(5)
    assert not node._thread.is_alive()
