"""The hot route, ``POST /v1/verify``, as plain WSGI in front of Flask.

Why: under load a verification costs about a millisecond of Python in the
verifier, and Flask's per-request machinery (request and app contexts, URL
matching, signals, the response object) was a quarter of it. So
``FastRoute(flask_wsgi, path, handle, count)`` wraps ``app.wsgi_app``:

* a ``POST`` to ``path`` whose body is JSON (``application/json``) of a declared
  length of at most ``max_body`` bytes is read here, parsed once, and given to
  ``handle(environ, body) -> (status, payload, headers)`` - the same function the
  Flask route calls, so both answer alike - and the payload is written with the
  bytes ``flask.jsonify`` writes (compact, ``ensure_ascii`` off, a final newline),
  encoded by ``orjson`` (a verdict: 27 us through ``json``, under 2 through
  ``orjson``). The two agree byte for byte on every value a payload holds -
  strings, integers of 64 bits, booleans, null, lists and string-keyed maps (tested);
  they would differ only in how some floats are written (``1e-07`` against
  ``1e-7``), and no payload carries one (certificate values refuse floats). What
  ``orjson`` refuses (a wider integer, a non-string key) goes through ``json``;
* anything else - another route or method, no length, an oversize body, another
  media type - goes to Flask untouched, whose own route and error handlers
  answer it as before (413, 400, 405...).

``handle`` never raises: it turns every error into its JSON answer itself (it
owns the audit log's exactly-once rule, so nothing here may run it twice).
``count(status)`` keeps the per-route request metric Flask's ``after_request``
keeps for the other routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from certificates import jsonio

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Handler = Callable[[Mapping[str, Any], object], tuple[int, Any, list[tuple[str, str]]]]

_REASONS = {200: "OK", 400: "BAD REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN",
            404: "NOT FOUND", 413: "REQUEST ENTITY TOO LARGE", 429: "TOO MANY REQUESTS",
            500: "INTERNAL SERVER ERROR", 502: "BAD GATEWAY", 503: "SERVICE UNAVAILABLE"}
# Only for what orjson refuses; such a payload is never a verdict.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_body(payload: Any) -> bytes:
    """``payload`` as Flask's ``jsonify`` sends it (with the app's ``ensure_ascii`` off)."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError is one
        return (_encode(payload) + "\n").encode("utf-8")


def _is_json(content_type: str) -> bool:
    # werkzeug's Request.is_json: application/json or application/*+json.
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/")
                                          and mime.endswith("+json"))


class FastRoute:
    def __init__(self, flask_wsgi: WSGIApp, path: str, handle: Handler,
                 count: Callable[[int], None], *, max_body: int) -> None:
        self.flask_wsgi, self.path, self.handle, self.count = flask_wsgi, path, handle, count
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        # isascii: str.isdigit() also holds for '¹', which int() refuses.
        if not (length.isascii() and length.isdigit()) or int(length) > self.max_body \
                or not _is_json(environ.get("CONTENT_TYPE") or ""):
            return self.flask_wsgi(environ, start_response)
        data = environ["wsgi.input"].read(int(length))
        try:
            body = jsonio.loads(data)
        except ValueError:
            body = None  # as Flask's get_json(silent=True): the handler refuses it
        status, payload, headers = self.handle(environ, body)
        out = json_body(payload)
        start_response(f"{status} {_REASONS.get(status, 'UNKNOWN')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(out))), *headers])
        self.count(status)
        return [out]
