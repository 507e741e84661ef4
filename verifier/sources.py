"""Nodes as evidence sources over HTTP (the node API of DESIGN §7).

``HttpSource(url)`` asks one node; the light client holds several and decides
which answer to keep, so this module does no failover of its own and trusts
nothing it reads (``lightclient`` checks it all).

* ``state_many(keys)`` -> ``POST /v1/state/batch``: the light client's batch of the
  keys of concurrent verifications in ONE request (one header + commit +
  validators, then a record and SMT proof per key), split back into one
  ``StateEvidence`` per key - each checked by the light client exactly as a single
  answer is. A node without the batch route (404/405 not from our API) is asked
  one key at a time from then on, as below.
* ``state(b"cert:" + id)``  -> ``GET /v1/certificates/<id>``: 200 with the record,
  or 404 ``unknown_certificate`` whose body carries the absence proof. The shared
  ``NodeClient`` raises on a 404 and keeps only its code and message, so this
  module reads that endpoint itself, over ``http.client`` with one keep-alive
  connection per thread: it is on every verification's path, and ``requests``
  costs about a millisecond a call here (proxy look-ups in the environment,
  adapters, hooks) - as much as the node's own work.
* ``state(b"issuer:" + code)`` -> ``GET /v1/issuers/<code>``, the same JSON shape. A
  node without that route answers a plain 404 and is reported as
  ``UnsupportedError``: the verifier then uses its trust bundle's issuer records.
* ``latest()`` -> ``GET /v1/blocks/latest`` through ``network.client.NodeClient``:
  the head header bytes and its commit, for the light client's freshness check.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import orjson
import requests

from certificates import jsonio
from ledger.commit import CommitCertificate
from ledger.records import CERT_PREFIX, ISSUER_PREFIX
from network.client import NodeClient
from network.errors import NetworkError
from network.urls import BadURL, split_http_url
from verifier.errors import SourceError, UnsupportedError
from verifier.evidence import StateEvidence, batch_from_json, commit_from_json, state_from_json

_MAX_BODY = 4 * 1024 * 1024  # a full batch (256 keys, ~2 KB each) fits with room
_JSON = {"Accept": "application/json", "Content-Type": "application/json"}
_ACCEPT = {"Accept": "application/json"}


def state_per_key(state: Callable[[bytes], StateEvidence], keys: Sequence[bytes]
                  ) -> list[StateEvidence | SourceError]:
    """One ``state`` call per key, each key's failure kept as its own answer (the shape of
    a batch answer, for a source or node without the batch route)."""
    out: list[StateEvidence | SourceError] = []
    for k in keys:
        try:
            out.append(state(k))
        except SourceError as exc:
            out.append(exc)
    return out


class _NoBatchRoute(UnsupportedError):
    """The node does not serve POST /v1/state/batch (an older node)."""


class HttpSource:
    """One node's public API."""

    def __init__(self, url: str, *, session: requests.Session | None = None,
                 timeout: float = 5.0, batch: bool = True) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session if session is not None else requests.Session()
        self._client = NodeClient([self.url], timeout, session=self._session)
        try:
            parts = split_http_url(self.url)
        except BadURL as exc:
            raise SourceError(f"node URL must be http(s)://host[:port]: {exc}") from exc
        self._https = parts.https
        self._host, self._port = parts.host, parts.port
        self._prefix = parts.path
        self._local = threading.local()
        self.batching = batch  # False once the node showed it has no batch route

    @property
    def name(self) -> str:
        return self.url

    def state_many(self, keys: list[bytes]) -> list[StateEvidence | SourceError]:
        """The node's answers for many keys, one result (or error) per key, in order.

        ``SourceError`` when the request as a whole fails.
        """
        if self.batching and all(k.startswith((CERT_PREFIX, ISSUER_PREFIX)) for k in keys):
            try:
                return self._batch(keys)
            except _NoBatchRoute:
                self.batching = False
        return state_per_key(self.state, keys)

    def _batch(self, keys: list[bytes]) -> list[StateEvidence | SourceError]:
        certs = [k for k in keys if k.startswith(CERT_PREFIX)]
        issuers = [k for k in keys if k.startswith(ISSUER_PREFIX)]
        if len(certs) + len(issuers) != len(keys):
            raise AssertionError("a batch holds certificate and issuer keys only")
        asked = {"certificates": [k[len(CERT_PREFIX):].decode("utf-8") for k in certs],
                 "issuers": [k[len(ISSUER_PREFIX):].decode("utf-8") for k in issuers]}
        status, content = self._request("POST", "/v1/state/batch",
                                        json.dumps(asked).encode(), _JSON)
        try:
            # orjson: the hot path's answer (~8 proofs) parses in a fifth of json's time.
            # It refuses more than json (NaN, integers past 64 bits, nesting past 1,024),
            # none of which a node's answer holds; a refusal is an unreadable answer.
            body = orjson.loads(content) if content else None
        except ValueError:  # orjson.JSONDecodeError is one
            body = None
        if status in (404, 405) and _error_code(body) != "no_blocks":
            raise _NoBatchRoute(f"{self.url} does not serve POST /v1/state/batch ({status})")
        if status == 404:
            raise SourceError("the node has not committed any block yet")
        if status != 200 or body is None:
            raise SourceError(f"batch: HTTP {status} {_error_code(body)}")
        got = dict(zip(certs + issuers, batch_from_json(body, certs + issuers, self.url),
                       strict=True))
        return [got[k] for k in keys]

    def state(self, key: bytes) -> StateEvidence:
        """The node's answer for one key, on its own (``GET /v1/certificates|issuers/…``)."""
        if key.startswith(CERT_PREFIX):
            path, found_codes = "/v1/certificates/", {"unknown_certificate"}
        elif key.startswith(ISSUER_PREFIX):
            path, found_codes = "/v1/issuers/", {"unknown_issuer"}
        else:
            raise UnsupportedError(f"no endpoint for state key {key[:16]!r}")
        ident = key.split(b":", 1)[1].decode("utf-8")
        body, status = self._get(path + quote(ident, safe=""))
        if status == 404:
            code = _error_code(body)
            if code == "no_blocks":
                raise SourceError("the node has not committed any block yet")
            if code not in found_codes:
                # Not an absence proof: the route itself is missing on this node.
                raise UnsupportedError(f"{self.url} does not serve {path}… (404 {code})")
        elif status != 200:
            raise SourceError(f"HTTP {status} {_error_code(body)}")
        return state_from_json(body, key, self.url)

    def latest(self) -> tuple[bytes, CommitCertificate] | None:
        try:
            block = self._client.block("latest")
        except NetworkError as exc:
            raise SourceError(str(exc)) from exc
        commit, header = block.get("commit"), block.get("header_bytes")
        if commit is None or not isinstance(header, str):
            return None
        try:
            return bytes.fromhex(header), commit_from_json(commit)
        except ValueError as exc:
            raise SourceError(f"latest block: {exc}") from exc

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] = _ACCEPT) -> tuple[int, bytes]:
        # A kept-alive connection the node has closed fails on first use: one retry on a
        # fresh one (every request here only reads, so repeating it is harmless).
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                length = resp.getheader("Content-Length")
                if length is not None and length.isascii() and length.isdigit() \
                        and int(length) > _MAX_BODY:
                    self._drop()
                    raise SourceError(f"answer of {length} bytes is too large")
                data = resp.read(_MAX_BODY + 1)
                if len(data) > _MAX_BODY:
                    self._drop()
                    raise SourceError(f"answer of more than {_MAX_BODY} bytes is too large")
                if resp.will_close:
                    self._drop()
                return resp.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, http.client.CannotSendRequest) as exc:
                self._drop()
                if attempt == 2:
                    raise SourceError(f"{self.url}: connection lost: {exc}") from exc
            except TimeoutError as exc:
                self._drop()
                raise SourceError(f"{self.url}: no answer within {self.timeout:g}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise SourceError(f"{self.url}: {exc.__class__.__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _get(self, path: str) -> tuple[Any, int]:
        status, content = self._request("GET", path)
        try:
            body = jsonio.loads(content) if content else None
        except ValueError:
            body = None
        if body is None and status == 200:
            raise SourceError("HTTP 200 with a body that is not JSON")
        return body, status

    def close(self) -> None:
        self._drop()
        self._session.close()


def _error_code(body: Any) -> str:
    try:
        return str(body["error"]["code"])
    except (KeyError, TypeError):
        return "no error code"
