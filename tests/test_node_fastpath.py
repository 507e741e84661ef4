"""The node API's fast paths (``node.fastpath``) answer exactly as the Flask routes do.

Two apps over the same scripted dependencies: the node's app, and the same app with the
fast paths taken off. Every outcome of a tx submission and of a peer's envelopes - each
refusal, back-pressure, a bug - and a state batch's refusals must give the same status,
body, headers and metrics through both, and the usual requests must not reach Flask at
all. (A state batch that is answered needs a chain: ``tests/test_node_state_batch.py``.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from ledger.errors import MalformedTxError, TxRejected
from network.errors import EnvelopeError
from node.admission import Busy
from node.api import ApiDeps, create_app
from node.errors import MempoolFull
from node.mempool import AddResult
from node.metrics import NodeMetrics
from node.peers import Received

MSGPACK = {"Content-Type": "application/msgpack"}
TX_ID = bytes(range(32))


def _raise(exc: BaseException) -> Callable[[bytes], Any]:
    def f(_: bytes) -> Any:
        raise exc
    return f


SUBMITS: dict[str, Callable[[bytes], Any]] = {
    "added": lambda raw: AddResult(TX_ID, True),
    "already pending": lambda raw: AddResult(TX_ID, False),
    "malformed": _raise(MalformedTxError("body", "records must be a list")),
    "bad signature": _raise(TxRejected("bad_signature", "signature by key 00 is invalid")),
    "duplicate id": _raise(TxRejected("duplicate_id", "certificate exists")),
    "busy": _raise(Busy("the node has enough pending work", 0.25)),
    "mempool full": _raise(MempoolFull("the mempool holds 10 txs")),
    "a bug": _raise(RuntimeError("boom")),
}

RECEIVES: dict[str, Callable[[bytes], Any]] = {
    "accepted": lambda data: Received(3, {"stale": 1}),
    "all rejected": lambda data: Received(0, {"bad_signature": 2}),
    "empty": lambda data: Received(0, {}),
    "not an envelope": _raise(EnvelopeError("malformed", "not msgpack")),
    "a bug": _raise(KeyError("boom")),
}


class _Inbox:
    def __init__(self, receive: Callable[[bytes], Any]) -> None:
        self.receive = receive


def _apps(submit: Callable[[bytes], Any] = SUBMITS["added"],
          receive: Callable[[bytes], Any] = RECEIVES["accepted"]
          ) -> tuple[Flask, Flask, list[str]]:
    """(with fast paths, without, the paths that reached Flask in the first)."""
    def deps() -> ApiDeps:
        return ApiDeps(chain=None, submit=submit, pending=lambda tx_id: False,  # type: ignore[arg-type]
                       status=dict, metrics=NodeMetrics(), inbox=_Inbox(receive),  # type: ignore[arg-type]
                       max_tx_body=1024, max_consensus_body=4096, max_sync_bytes=1024)
    fast, plain = create_app(deps()), create_app(deps())
    plain.wsgi_app = plain.wsgi_app.flask_wsgi  # type: ignore[attr-defined,method-assign]
    reached: list[str] = []
    flask_wsgi = fast.wsgi_app.flask_wsgi  # type: ignore[attr-defined]

    def spy(environ: dict[str, Any], start_response: Any) -> Any:
        reached.append(environ["PATH_INFO"])
        return flask_wsgi(environ, start_response)

    fast.wsgi_app.flask_wsgi = spy  # type: ignore[attr-defined]
    return fast, plain, reached


def _answer(app: Flask, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, ...]:
    resp = app.test_client().post(path, data=body, headers=headers)
    extra = {k: resp.headers[k] for k in ("Retry-After", "X-Retry-After-Ms") if k in resp.headers}
    deps: ApiDeps = app.extensions["certledger"]
    metrics = [line for line in deps.metrics.render().splitlines()
               if line.startswith(("certledger_rejected", "certledger_dropped"))]
    return resp.status_code, resp.get_json(), resp.mimetype, extra, metrics


@pytest.mark.parametrize("case", sorted(SUBMITS))
def test_a_submitted_tx_gets_the_flask_routes_answer(case: str) -> None:
    fast, plain, reached = _apps(submit=SUBMITS[case])
    got = _answer(fast, "/v1/transactions", os.urandom(300), MSGPACK)
    assert got == _answer(plain, "/v1/transactions", os.urandom(300), MSGPACK)
    assert reached == []  # served without Flask
    status, body = got[0], got[1]
    assert status == {"added": 202, "already pending": 202, "malformed": 400,
                      "bad signature": 422, "duplicate id": 409, "busy": 429,
                      "mempool full": 429, "a bug": 500}[case]
    assert ("error" in body) == (status >= 400) and got[2] == "application/json"
    if case == "busy":
        assert got[3] == {"Retry-After": "1", "X-Retry-After-Ms": "250"}
    if case == "malformed":
        assert body["field"] == "body"


@pytest.mark.parametrize("case", sorted(RECEIVES))
def test_peer_envelopes_get_the_flask_routes_answer(case: str) -> None:
    fast, plain, reached = _apps(receive=RECEIVES[case])
    got = _answer(fast, "/v1/consensus", b"\x93\x01\x02\x03", MSGPACK)
    assert got == _answer(plain, "/v1/consensus", b"\x93\x01\x02\x03", MSGPACK)
    assert reached == []
    assert got[0] == {"accepted": 202, "all rejected": 400, "empty": 400,
                      "not an envelope": 400, "a bug": 500}[case]


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    ("/v1/transactions", b"{}", {"Content-Type": "application/json"}, 400),  # JSON: Flask's
    ("/v1/transactions", os.urandom(2000), MSGPACK, 413),  # over max_tx_body
    ("/v1/consensus", os.urandom(5000), MSGPACK, 413),  # over max_consensus_body
    ("/v1/transactions", b"x", {"Content-Type": "text/plain"}, 415),
])
def test_other_requests_go_to_flask_and_get_its_answer(
        path: str, body: bytes, headers: dict[str, str], status: int) -> None:
    fast, plain, reached = _apps()
    got = _answer(fast, path, body, headers)
    assert got == _answer(plain, path, body, headers)
    assert got[0] == status and reached == [path]


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    (b'{"certificates": []}', 400),
    (b'{"certificates": ["not an id"]}', 400),
    (b'{"other": 1}', 400),
])
def test_a_refused_state_batch_gets_the_flask_routes_answer(body: bytes, status: int) -> None:
    fast, plain, reached = _apps()
    json_ = {"Content-Type": "application/json"}
    got = _answer(fast, "/v1/state/batch", body, json_)
    assert got == _answer(plain, "/v1/state/batch", body, json_)
    assert reached == [] and got[0] == status and "error" in got[1]
