"""HTTP client for the node API (DESIGN §7), used by the CLI and the verifier.

``NodeClient(urls)`` talks to any of several nodes. Each call starts with the
node that answered last and, on a connection error, a timeout, a 5xx, a 408 or
429, or a body it cannot decode, moves on to the next URL. When every URL has
failed it raises ``NodeUnavailableError`` naming each one and why. A 4xx is the
caller's mistake and would be the same on every node, so it is raised at once as
``NodeRequestError(status, code, message)`` from the ``{"error": {...}}`` body.

Retrying a POST on another node is safe: a transaction's id is the hash of its
signed bytes and a node refuses a duplicate, so it cannot be applied twice.

Responses are JSON unless ``Content-Type`` says ``application/msgpack``. The
client does not trust what it reads: the verifier checks proofs and commit
certificates itself (DESIGN §8); this module only moves bytes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import msgpack
import requests

from network.errors import NodeRequestError, NodeUnavailableError, describe_failure

MSGPACK = "application/msgpack"
JSON = "application/json"
#: Statuses worth trying another node for, besides 5xx.
_RETRY_4XX = frozenset({408, 429})
#: Cap on how much of an unexpected body goes into an error message.
_SNIPPET = 200


def _decode_body(resp: requests.Response) -> Any:
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype == MSGPACK:
        return msgpack.unpackb(resp.content, raw=False, strict_map_key=False)
    return json.loads(resp.content) if resp.content else None


def _error_fields(resp: requests.Response) -> tuple[str, str]:
    """(code, message) from ``{"error": {"code", "message"}}``, or a fallback."""
    try:
        body = _decode_body(resp)
        err = body["error"]
        return str(err["code"]), str(err["message"])
    except Exception:  # any other shape: report the status and a bit of the body
        text = resp.content[:_SNIPPET].decode("utf-8", "replace").strip()
        return f"http_{resp.status_code}", text or resp.reason or "no message"


class NodeClient:
    """Failover client for the public node API."""

    def __init__(
        self,
        urls: Sequence[str],
        timeout: float | tuple[float, float] = 5.0,
        *,
        accept: str = JSON,
        session: requests.Session | None = None,
    ) -> None:
        if isinstance(urls, str):  # a lone string would be iterated letter by letter
            urls = [urls]
        if not urls:
            raise ValueError("NodeClient needs at least one node URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self.accept = accept
        self._session = session if session is not None else requests.Session()
        self._preferred = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ API

    def submit_tx(self, tx_bytes: bytes) -> dict[str, Any]:
        """POST /v1/transactions with the canonical msgpack transaction."""
        return self._object("POST", "/v1/transactions", tx_bytes, MSGPACK)

    def tx_status(self, tx_id_hex: str) -> dict[str, Any]:
        return self._object("GET", f"/v1/transactions/{_seg(tx_id_hex)}")

    def block(self, height: int | Literal["latest"] = "latest") -> dict[str, Any]:
        if height != "latest" and (not isinstance(height, int) or height < 0):
            raise ValueError(f"block height must be a non-negative integer or 'latest': {height!r}")
        return self._object("GET", f"/v1/blocks/{height}")

    def certificate(self, cert_id: str) -> dict[str, Any]:
        """Record + state proof + header + commit, as the node encoded them."""
        return self._object("GET", f"/v1/certificates/{_seg(cert_id)}")

    def status(self) -> dict[str, Any]:
        return self._object("GET", "/v1/status")

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ machinery

    @property
    def current_url(self) -> str:
        """The node that answered last (tried first next time)."""
        return self.urls[self._preferred]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        want_object: bool = False,
    ) -> Any:
        """One call with failover; returns the decoded body of the first good answer.

        With ``want_object`` a body that is not a map counts as a failed node.
        """
        with self._lock:
            start = self._preferred
        attempts: list[tuple[str, str]] = []
        n = len(self.urls)
        for i in range(n):
            index = (start + i) % n
            base = self.urls[index]
            headers = {"Accept": self.accept}
            if content_type is not None:
                headers["Content-Type"] = content_type
            try:
                resp = self._session.request(
                    method, base + path, data=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                attempts.append((base, describe_failure(exc)))
                continue
            if resp.status_code >= 500 or resp.status_code in _RETRY_4XX:
                code, message = _error_fields(resp)
                attempts.append((base, f"HTTP {resp.status_code} {code}: {message}"))
                continue
            if resp.status_code >= 400:
                code, message = _error_fields(resp)
                raise NodeRequestError(resp.status_code, code, message, url=base + path)
            try:
                value = _decode_body(resp)
            except Exception as exc:  # a node sending junk is as good as down
                attempts.append((base, f"undecodable {resp.status_code} body: {exc}"))
                continue
            if want_object and not isinstance(value, dict):
                attempts.append((base, f"answered with {type(value).__name__}, not an object"))
                continue
            with self._lock:
                self._preferred = index
            return value
        raise NodeUnavailableError(attempts)

    def _object(
        self, method: str, path: str, body: bytes | None = None, ctype: str | None = None
    ) -> dict[str, Any]:
        value: dict[str, Any] = self.request(method, path, body, ctype, want_object=True)
        return value


def _seg(text: str) -> str:
    """One URL path segment: nothing in an id may add a path component or a query."""
    if not text:
        raise ValueError("identifier must not be empty")
    return quote(text, safe="")
