"""The one rule for a node or client URL, shared by every place that takes one.

A usable URL is http or https, has a host, and has a port in range if it names one.
``urlsplit`` only raises for some of that (a broken IPv6 literal), and ``.port`` raises
for an out-of-range port only when read, so each check is spelled out here once.
Callers wrap the reason in their own typed error with their own context.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class BadURL(ValueError):
    """``str(error)`` says what is wrong with the URL, quoting it."""


@dataclass(frozen=True)
class HttpURL:
    scheme: str  # "http" or "https"
    host: str
    port: int | None  # None: the scheme's default
    path: str
    query: str

    @property
    def https(self) -> bool:
        return self.scheme == "https"

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (443 if self.https else 80)


def split_http_url(value: str) -> HttpURL:
    """The parts of an http(s) URL with a host and a valid port; BadURL otherwise."""
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError for a port out of range
    except ValueError as exc:  # 'http://[::1' : "Invalid IPv6 URL"
        raise BadURL(f"{value!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadURL(f"{value!r} is not an http:// or https:// URL with a host")
    return HttpURL(parts.scheme, parts.hostname, port, parts.path, parts.query)
