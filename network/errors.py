"""Exception hierarchy for the network package (one root, typed reasons).

``NetworkError`` is the root. ``EnvelopeError`` carries a stable ``reason``
string that the node uses as a metrics label and the tests match on; the
client errors name every node tried and why, so an operator reading one line
knows which URL to look at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import requests

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_SNIPPET = 200


class NetworkError(Exception):
    """Root of every error raised by ``network``."""

    code = "network_error"


class EnvelopeError(NetworkError):
    """A peer message was refused; ``reason`` says why, ``detail`` says what exactly."""

    code = "invalid_envelope"

    #: The stable reasons. Metrics and logs key on these; adding one is an API change.
    REASONS = frozenset(
        {"malformed", "bad_signature", "unknown_sender", "oversized", "wrong_chain", "stale"}
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown envelope rejection reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"envelope rejected ({reason}){': ' + detail if detail else ''}")


class NodeUnavailableError(NetworkError):
    """No node URL gave a usable answer (connection error, timeout, 5xx, junk body)."""

    code = "node_unavailable"

    def __init__(self, attempts: Sequence[tuple[str, str]]) -> None:
        self.attempts = list(attempts)
        tried = "; ".join(f"{url} ({why})" for url, why in self.attempts) or "no URLs configured"
        super().__init__(
            f"no node answered: {tried}. Check that a node is running and reachable, "
            "or pass more node URLs"
        )


class NodeRequestError(NetworkError):
    """A node answered with a 4xx: the request itself is wrong, so no failover.

    ``code`` is the node's own error code (e.g. ``duplicate_tx``), not a class tag,
    because that is what a caller branches on.
    """

    code = "node_request_error"

    def __init__(self, status: int, code: str, message: str, url: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        where = f" from {url}" if url else ""
        super().__init__(f"node refused the request{where}: HTTP {status} {code}: {message}")


def describe_failure(exc: BaseException) -> str:
    """A short reason for a failed request ("connection failed: Connection refused").

    urllib3 buries the useful part at the end of a long chain of wrappers.
    """
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = _ERRNO.search(str(exc))
    detail = found.group(1).strip() if found else str(exc)[:_SNIPPET] or type(exc).__name__
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {detail}"
    return detail
