"""A minimal keep-alive POST client for the peer senders, shaped like ``requests.Session``.

Why: a peer sender POSTs a batch many times a second, and ``requests`` (adapters,
hooks, proxies from the environment, cookie jars) cost about a millisecond of CPU
per call - 12 % of a validator's interpreter time under load. ``http.client`` on
one persistent connection does the same POST for a fraction of that.

Only what ``network.transport.PeerSender`` uses is provided: ``post(url, data=,
headers=, timeout=)`` returning an object with ``status_code`` and ``close()``, and
``close()``. Failures are raised as ``requests`` exceptions (``Timeout``,
``ConnectionError``) so the sender's retry logic and ``describe_failure`` treat
them exactly as before. The body of every answer is read in full, so the
connection can carry the next request.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass

import requests

from network.urls import BadURL, split_http_url

Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class PostResponse:
    status_code: int

    def close(self) -> None:
        pass


class KeepAliveSession:
    def __init__(self) -> None:
        self._conn: http.client.HTTPConnection | None = None
        self._target: tuple[str, str, int] | None = None

    def post(self, url: str, data: bytes, headers: dict[str, str],
             timeout: Timeout) -> PostResponse:
        try:
            parts = split_http_url(url)
        except BadURL as exc:
            raise requests.exceptions.InvalidURL(f"cannot POST: {exc}") from exc
        target = (parts.scheme, parts.host, parts.effective_port)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if self._conn is None or self._target != target:
            self.close()
            cls = (http.client.HTTPSConnection if target[0] == "https"
                   else http.client.HTTPConnection)
            self._conn, self._target = cls(target[1], target[2], timeout=connect), target
        conn = self._conn
        try:
            if conn.sock is None:
                conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(read)
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.will_close:
                self.close()
            return PostResponse(resp.status)
        except TimeoutError as exc:  # socket.timeout is TimeoutError since Python 3.10
            self.close()
            raise requests.Timeout(f"{url}: timed out") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise requests.ConnectionError(f"{url}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

