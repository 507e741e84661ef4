"""Test support: a WSGI app on a real loopback port, and bounded waiting.

``WsgiServer(app).start()`` serves ``app`` with waitress on ``127.0.0.1`` (a
free port unless one is given) in a daemon thread; ``stop()`` closes the
listener *and* every open keep-alive connection from inside waitress's own
loop thread (via its trigger), so the loop ends at once instead of waiting for
idle channels to time out, and the worker threads are joined within a bound.

``wait_until(condition, timeout)`` polls instead of sleeping and hoping, and
fails with a message when the deadline passes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from network.serving import create_server
from network.wsgi import stop_waitress


class WsgiServer:
    def __init__(self, app: Any, port: int = 0, *, threads: int = 4) -> None:
        self._app = app
        self._want_port = port
        self._threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = self._server.effective_port
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WsgiServer:
        self._server = create_server(
            self._app, host="127.0.0.1", port=self._want_port, threads=self._threads
        )
        self._thread = threading.Thread(target=self._server.run, name="wsgi-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> bool:
        """True when the loop thread ended within ``timeout`` seconds."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return True
        return stop_waitress(server, thread, timeout)

    def __enter__(self) -> WsgiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(
    condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll ``condition`` until truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    """A port that was free a moment ago (for servers that must start *later*)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
