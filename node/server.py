"""Serving the API with waitress, on a thread, with a stop that really stops.

``HttpServer(app, host, port)`` binds at construction (so a port conflict fails
the start with a clear error, and port 0 picks a free one: read ``.port``),
serves on a daemon thread, and ``stop()`` closes the listener and every open
keep-alive connection, lets the worker threads finish and ends the loop, within a
bound (``network.wsgi.stop_waitress``, shared with ``network.testing.WsgiServer``).

Request bodies here are large (a batch tx is ~1 MB, a proposal a few MB), so two
waitress defaults meant for small requests are raised: ``recv_bytes`` (8 KiB per
``recv``, i.e. ~130 trips through waitress' Python loop per MB) to 256 KiB, and
``inbuf_overflow`` (bodies above 512 KiB spooled to a temporary file, then read
back) to 4 MiB. Together they cut the server's CPU per 1 MB POST from ~5 ms to ~1 ms
here. A body above 4 MiB is still spooled, so memory stays bounded by the
connection limit times 4 MiB. ``network.serving`` adds the adjustment that stops
waitress's loop thread spinning while a worker sends a small answer.
"""

from __future__ import annotations

import threading
from typing import Any

from network.serving import create_server
from network.wsgi import stop_waitress
from node.errors import NodeError

#: Bytes per socket read (waitress: 8 KiB).
RECV_BYTES = 256 * 1024
#: Bodies up to this stay in memory (waitress: 512 KiB); larger go to a temporary file.
INBUF_OVERFLOW = 4 * 1024 * 1024


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, *, threads: int = 8,
                 max_body: int = 64 * 1024 * 1024) -> None:
        try:
            self._server: Any = create_server(
                app, host=host, port=port, threads=threads,
                # waitress' own ceiling; the app answers oversize bodies with JSON first.
                max_request_body_size=max_body, ident="certledger",
                recv_bytes=RECV_BYTES, inbuf_overflow=INBUF_OVERFLOW)
        except OSError as exc:
            raise NodeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.host = host
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.effective_port
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> bool:
        """Close the listener and every connection, let the workers finish, end the
        loop (``network.wsgi``); True when it ended within ``timeout`` seconds."""
        return stop_waitress(self._server, self._thread, timeout)
