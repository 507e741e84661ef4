"""The node API's two busiest routes served ahead of Flask, as plain WSGI.

Under single-transaction load a validator answers one ``POST /v1/transactions`` per tx
from clients and about as many ``POST /v1/consensus`` from its peers (votes, proposals,
gossiped txs). Flask's per-request machinery (request and response objects, routing,
context locals) cost ~160 us of CPU per request here, next to ~550 us for the SM2 check
a tx needs: about a twentieth of a validator's CPU per committed tx, in four validators.

``FastPaths`` serves the usual form of those two requests - a declared length within the
route's limit, and for a tx the msgpack body - through the same outcome functions as the
Flask routes (``node.api.submit_outcome`` / ``consensus_outcome``: same statuses, bodies,
headers and metrics). Anything else (JSON txs, a missing or oversized length, other
routes) goes to Flask untouched, which refuses or serves it as before. An unexpected
error is a logged 500 with the API's error body, as Flask's handler gives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Outcome = tuple[int, dict[str, Any], dict[str, str]]
OutcomeOf = Callable[[Any, bytes], Outcome]

MSGPACK = "application/msgpack"

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 409: "Conflict",
            413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class FastPaths:
    """WSGI middleware: the routes above here, everything else to ``flask_wsgi``."""

    def __init__(self, flask_wsgi: Any, deps: Any, submit: OutcomeOf,
                 consensus: OutcomeOf) -> None:
        self.flask_wsgi, self.deps = flask_wsgi, deps
        # path -> (outcome function, body limit, the one content type served, or None)
        self._routes: dict[str, tuple[OutcomeOf, int, str | None]] = {
            "/v1/transactions": (submit, deps.max_tx_body, MSGPACK),
            "/v1/consensus": (consensus, deps.max_consensus_body, None),
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)  # type: ignore[no-any-return]
        outcome, limit, mime = route
        length = environ.get("CONTENT_LENGTH") or ""
        if not (length.isascii() and length.isdigit()) or int(length) > limit or (
                mime is not None and mime != (environ.get("CONTENT_TYPE") or "")
                .split(";", 1)[0].strip().lower()):
            return self.flask_wsgi(environ, start_response)  # type: ignore[no-any-return]
        data = environ["wsgi.input"].read(int(length))
        try:
            status, body, headers = outcome(self.deps, data)
        except Exception:  # a bug: answered like Flask's handler for it
            log.exception("unhandled error in POST %s", environ.get("PATH_INFO"))
            status, headers = 500, {}
            body = {"error": {"code": "internal", "message": "internal error; see the node log"}}
        out = json.dumps(body, separators=(",", ":")).encode()
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(out))), *headers.items()])
        return [out]
