"""Creating a waitress server for a busy API: the node's, the verifier's and the tests'.

``create_server(app, **kw)`` is ``waitress.create_server`` with one adjustment that
matters under load, ``send_bytes``:

waitress (since 1.3) sends a response from the worker thread as soon as a byte of it is
buffered (``send_bytes = 1``), inside ``write_soon``, holding the channel's output lock.
That ``send`` releases the GIL; the loop thread takes it, finds the channel writable
(bytes buffered while its task still runs), cannot take the lock to flush them, and goes
back to ``select``, which answers at once: the socket is writable. So the loop spins,
holding the GIL between selects, while the worker waits for the GIL to finish its
response - up to a switch interval (5 ms) each time. With ``send_bytes`` above every
small answer the worker only buffers, and the loop sends the whole response in one
``send`` when the task ends. Large answers (a node's block sync) are still sent by the
worker as they are written, ``SEND_BYTES`` at a time.

The trade-off: an app that writes part of an answer (under ``SEND_BYTES``) and then waits
before the rest leaves those bytes buffered while its task runs, and the loop spins for
the wait instead. None of ours does: every route answers one whole body.

Measured on the verifier bench (three alternating pairs on two cores): 880 / 752 / 878
verifications/s with p99 28 / 42 / 27 ms, against 584 / 603 / 584 and 94 / 92 / 84 ms
with waitress's default; the verifier's CPU per verification 1.01-1.15 ms against
1.58-1.63 (docs/benchmarks.md, Verifier).

waitress calls ``send_bytes`` deprecated ("will be removed in a future release") and warns
when it is passed: that one warning is silenced here, and a waitress without the setting
is served with its own default.

Some requests never reach the app: waitress itself refuses a body over
``max_request_body_size`` (413), headers over their limit (431) and broken framing - a
bad chunk size, a non-numeric Content-Length - (400), and answers in plain text. Our
APIs promise every client the same error shape, so the server's channels use
``JsonErrorTask``, which answers those with ``{"error": {"code", "message"}}`` (the
status and the connection close are waitress's, unchanged). ``channel_class`` and
``error_task_class`` are the class attributes waitress provides for this.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import waitress
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

#: Bytes buffered before a worker thread sends (waitress's default before 1.3; now 1).
SEND_BYTES = 18_000


#: waitress's refusals by status -> our error code (the app uses the same names).
_CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large",
          500: "internal", 501: "not_implemented"}


class JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress ships no type hints
    """waitress's own error answer, as JSON in the APIs' error shape."""

    def execute(self) -> None:
        err = self.request.error
        code = _CODES.get(err.code, "bad_request" if err.code < 500 else "internal")
        body = json.dumps({"error": {"code": code, "message": f"{err.reason}: {err.body}"}},
                          ensure_ascii=False).encode("utf-8")
        self.status = f"{err.code} {err.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
    error_task_class = JsonErrorTask


def create_server(app: Any, **kw: Any) -> Any:
    """``waitress.create_server(app, **kw)`` with ``send_bytes`` = ``SEND_BYTES`` unless
    ``kw`` sets it, answering waitress's own refusals as JSON."""
    if hasattr(Adjustments, "send_bytes"):
        kw.setdefault("send_bytes", SEND_BYTES)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="send_bytes", category=DeprecationWarning)
        server = waitress.create_server(app, **kw)
    # One listener gives the server itself; several give a MultiSocketServer whose map
    # holds one server per listener.
    for s in [server, *getattr(server, "map", {}).values()]:
        if isinstance(s, BaseWSGIServer):
            s.channel_class = JsonErrorChannel
    return server
