"""The node API's busiest POST routes served ahead of Flask, as plain WSGI.

Under single-transaction load a validator answers one ``POST /v1/transactions`` per tx
from clients and about as many ``POST /v1/consensus`` from its peers (votes, proposals,
gossiped txs); a verifier sends one ``POST /v1/state/batch`` per batch of verifications.
Flask's per-request machinery (request and response objects, routing, context locals)
cost ~160 us of CPU per request here, next to ~550 us for the SM2 check a tx needs:
about a twentieth of a validator's CPU per committed tx, in four validators.

``FastPaths`` serves the usual form of such a request - a declared length within the
route's limit and, where the route names one, its content type - through the same
outcome function as the Flask route (``node.api.submit_outcome``, ``consensus_outcome``,
``batch_outcome``: same statuses, bodies, headers and metrics). Anything else (JSON txs,
a missing or oversized length, other routes) goes to Flask untouched, which refuses or
serves it as before. An unexpected error is a logged 500 with the API's error body, as
Flask's handler gives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

#: (status, body: a JSON object, or JSON already encoded, extra headers)
Outcome = tuple[int, dict[str, Any] | bytes, dict[str, str]]
OutcomeOf = Callable[[Any, bytes], Outcome]
#: path -> (outcome function, body limit, the one content type served, or None: any)
Routes = dict[str, tuple[OutcomeOf, int, str | None]]

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


class FastPaths:
    """WSGI middleware: ``routes`` served here, everything else by ``flask_wsgi``."""

    def __init__(self, flask_wsgi: Any, deps: Any, routes: Routes) -> None:
        self.flask_wsgi, self.deps, self._routes = flask_wsgi, deps, routes

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
        out = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        start_response(_STATUS_LINES.get(status, f"{status} Error"),
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(out))), *headers.items()])
        return [out]
