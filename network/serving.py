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
"""

from __future__ import annotations

import warnings
from typing import Any

import waitress
from waitress.adjustments import Adjustments

#: Bytes buffered before a worker thread sends (waitress's default before 1.3; now 1).
SEND_BYTES = 18_000


def create_server(app: Any, **kw: Any) -> Any:
    """``waitress.create_server(app, **kw)`` with ``send_bytes`` = ``SEND_BYTES`` unless
    ``kw`` sets it."""
    if hasattr(Adjustments, "send_bytes"):
        kw.setdefault("send_bytes", SEND_BYTES)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="send_bytes", category=DeprecationWarning)
        return waitress.create_server(app, **kw)
