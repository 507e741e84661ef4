"""Nodes as evidence sources over HTTP (the node API of DESIGN §7).

``HttpSource(url)`` asks one node; the light client holds several and decides
which answer to keep, so this module does no failover of its own and trusts
nothing it reads (``lightclient`` checks it all).

* ``state(b"cert:" + id)``  -> ``GET /v1/certificates/<id>``: 200 with the record,
  or 404 ``unknown_certificate`` whose body carries the absence proof. The shared
  ``NodeClient`` raises on a 404 and keeps only its code and message, so this
  module reads that endpoint through its own ``requests`` session.
* ``state(b"issuer:" + code)`` -> ``GET /v1/issuers/<code>``, the same JSON shape. A
  node without that route answers a plain 404 and is reported as
  ``UnsupportedError``: the verifier then uses its trust bundle's issuer records.
* ``latest()`` -> ``GET /v1/blocks/latest`` through ``network.client.NodeClient``:
  the head header bytes and its commit, for the light client's freshness check.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import requests

from ledger.commit import CommitCertificate
from ledger.records import CERT_PREFIX, ISSUER_PREFIX
from network.client import NodeClient
from network.errors import NetworkError, describe_failure
from verifier.errors import SourceError, UnsupportedError
from verifier.evidence import StateEvidence, commit_from_json, state_from_json

_MAX_BODY = 4 * 1024 * 1024


class HttpSource:
    """One node's public API."""

    def __init__(self, url: str, *, session: requests.Session | None = None,
                 timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session if session is not None else requests.Session()
        self._client = NodeClient([self.url], timeout, session=self._session)

    @property
    def name(self) -> str:
        return self.url

    def state(self, key: bytes) -> StateEvidence:
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

    def _get(self, path: str) -> tuple[Any, int]:
        try:
            resp = self._session.get(self.url + path, timeout=self.timeout,
                                     headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise SourceError(describe_failure(exc)) from exc
        if len(resp.content) > _MAX_BODY:
            raise SourceError(f"answer of {len(resp.content)} bytes is too large")
        try:
            body = json.loads(resp.content) if resp.content else None
        except ValueError:
            body = None
        if body is None and resp.status_code == 200:
            raise SourceError("HTTP 200 with a body that is not JSON")
        return body, resp.status_code

    def close(self) -> None:
        self._session.close()


def _error_code(body: Any) -> str:
    try:
        return str(body["error"]["code"])
    except (KeyError, TypeError):
        return "no error code"
