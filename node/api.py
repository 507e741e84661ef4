"""The node's HTTP API: a Flask app factory, two blueprints, dependencies injected.

``create_app(deps)`` builds the app; ``deps`` (``ApiDeps``) holds the chain, the
mempool submission function, the status and metrics sources and the peer inbox,
so tests can serve the API over any of them. Handlers only read the chain and
hand work to other parts: admission runs in the mempool, peer messages go to the
consensus queue.

Public blueprint::

    POST /v1/transactions            JSON Transaction.to_json(), or raw canonical bytes
                                     with Content-Type application/msgpack
                                     -> 202 {"tx_id", "status": "pending"}; 429 ``busy``
                                     with Retry-After when the backlog is full; the
                                     msgpack form is served ahead of Flask
                                     (``node.fastpath``, same answers)
    GET  /v1/transactions/<id>       pending | committed (height, index) | 404
    GET  /v1/blocks/<height|latest>  header (+ its bytes), tx ids, commit
    GET  /v1/certificates/<id>       record + SMT proof + header + commit + validators;
                                     404 (with the absence proof) if there is none
    GET  /v1/issuers/<code>          issuer record (keys, types, active) + SMT proof + header
                                     + commit + validators; 404 ``unknown_issuer`` with
                                     the absence proof
    POST /v1/state/batch             JSON {"certificates": [id...], "issuers": [code...]}
                                     (1..256 keys) -> one header + commit + validators and,
                                     per key in request order, record bytes + SMT proof
                                     (an absence proof for an unknown one); the usual
                                     request is served ahead of Flask (``node.fastpath``)
    GET  /v1/status                  height, round, step, hashes, validators, peers, mempool
    GET  /v1/evidence                validators seen signing two votes (or proposals) for
                                     one step: both signatures, for anyone to check
                                     (``node.evidence.check``)
    GET  /metrics                    Prometheus text

Internal blueprint (validator to validator)::

    POST /v1/consensus               a batch of signed envelopes -> 202 {"accepted", ...}
                                     (served ahead of Flask, ``node.fastpath``)
    GET  /v1/sync/blocks?from=H&limit=N   committed blocks + commits (msgpack)

Every error is a 4xx (or, for a bug, 500) with ``{"error": {"code", "message"}}``;
the code of a refused transaction is the ledger's reason (``bad_signature``,
``duplicate_id``...). Nothing a client or peer sends can raise past the handlers.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from certificates import jsonio
from certificates.errors import IdentifierError
from certificates.identifiers import ISSUER_CODE_MAX_LEN, CertificateId, is_valid_uscc
from ledger.block import Block
from ledger.chain import Chain
from ledger.errors import LedgerError, MalformedTxError, TxRejected
from ledger.records import issuer_key
from ledger.tx import Transaction
from network.errors import EnvelopeError
from node.admission import Busy
from node.errors import MempoolError
from node.fastpath import FastPaths, Outcome
from node.mempool import AddResult
from node.metrics import NodeMetrics
from node.peers import Inbox
from node.sync import serve_blocks
from node.views import (
    MAX_BATCH_KEYS,
    block_json,
    certificate_json,
    issuer_json,
    state_batch_body,
)

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
_ISSUER_CODE = re.compile(f"[0-9A-Z]{{1,{ISSUER_CODE_MAX_LEN}}}")
_CONFLICT = frozenset({"duplicate_tx", "duplicate_id"})
#: A batch of MAX_BATCH_KEYS certificate ids (~70 bytes each) fits with room to spare.
_BATCH_BODY = 64 * 1024


@dataclass(frozen=True)
class ApiDeps:
    chain: Chain
    submit: Callable[[bytes], AddResult]
    pending: Callable[[bytes], bool]
    status: Callable[[], dict[str, Any]]
    metrics: NodeMetrics
    inbox: Inbox
    max_tx_body: int
    max_consensus_body: int
    max_sync_bytes: int
    #: A block this node committed lately, already decoded with its tx ids (or None):
    #: clients following the chain ask for the newest blocks, and decoding one from the
    #: store means SM3 over every tx (~6 ms per MB) again.
    recent_block: Callable[[int], Block | None] = lambda height: None
    #: ``{"chain_id", "evidence": [record...], "not_kept"}`` (``node.evidence``)
    evidence: Callable[[], dict[str, Any]] = lambda: {"evidence": [], "not_kept": 0}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _deps() -> ApiDeps:
    deps: ApiDeps = current_app.extensions["certledger"]
    return deps


def _body(limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` (before reading it if we can)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"body is {request.content_length} bytes, "
                                         f"limit is {limit}")
    # Read exactly the declared length when there is one: werkzeug allocates the size
    # asked for, and limit + 1 would zero a 16 MB buffer for every 300-byte vote.
    want = request.content_length if request.content_length is not None else limit + 1
    data = request.stream.read(want)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"body exceeds {limit} bytes")
    return data


def _hex_id(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(400, "bad_id", f"{what} must be 64 hex characters")
    return raw


# --------------------------------------------------------------------------- public

public = Blueprint("public", __name__)


@public.post("/v1/transactions")
def submit_tx() -> Any:
    deps = _deps()
    ctype = (request.mimetype or "application/json").lower()
    try:
        data = _body(deps.max_tx_body)
        if ctype == MSGPACK:
            raw = data
        elif ctype == "application/json":
            try:
                obj = jsonio.loads(data)
            except ValueError as exc:
                raise ApiError(400, "malformed", f"body is not JSON: {exc}") from exc
            raw = Transaction.from_json(obj).to_bytes()
        else:
            raise ApiError(415, "unsupported_media_type",
                           f"send application/json or {MSGPACK}, not {ctype}")
    except MalformedTxError as exc:
        deps.metrics.rejected_txs.inc(1, "malformed")
        raise ApiError(400, "malformed", str(exc), field=exc.field) from exc
    except ApiError as exc:
        deps.metrics.rejected_txs.inc(1, exc.code)
        raise
    return _respond(*submit_outcome(deps, raw))


def submit_outcome(deps: ApiDeps, raw: bytes) -> Outcome:
    """Status, JSON body and extra headers of submitting ``raw`` (this route and its fast
    path, ``node.fastpath``, answer alike)."""
    try:
        res = deps.submit(raw)
    except MalformedTxError as exc:
        deps.metrics.rejected_txs.inc(1, "malformed")
        return _failure(400, "malformed", str(exc), field=exc.field)
    except TxRejected as exc:
        deps.metrics.rejected_txs.inc(1, exc.reason)
        return _failure(409 if exc.reason in _CONFLICT else 422, exc.reason, exc.detail)
    except Busy as exc:
        # Back-pressure, not a verdict on the tx: the client should send it again soon.
        status, body, _ = _failure(429, exc.code, str(exc))
        return status, body, {"Retry-After": str(max(1, math.ceil(exc.retry_after))),
                              "X-Retry-After-Ms": str(int(exc.retry_after * 1000))}
    except MempoolError as exc:
        deps.metrics.rejected_txs.inc(1, exc.code)
        return _failure(exc.status, exc.code, str(exc))
    return 202, {"tx_id": res.tx_id.hex(), "status": "pending", "new": res.added}, {}


def _failure(status: int, code: str, message: str, **extra: Any) -> Outcome:
    return status, {"error": {"code": code, "message": message}, **extra}, {}


def _respond(status: int, body: dict[str, Any] | bytes, headers: dict[str, str]) -> Response:
    resp = Response(body, content_type="application/json") if isinstance(body, bytes) \
        else jsonify(body)
    resp.status_code = status
    resp.headers.update(headers)
    return resp


@public.get("/v1/transactions/<tx_id>")
def tx_status(tx_id: str) -> Any:
    deps = _deps()
    tid = _hex_id(tx_id, "transaction id")
    for _ in range(2):  # it may move from the mempool to a block between the two looks
        loc = deps.chain.tx_location(tid)
        if loc is not None:
            block = deps.chain.block(loc[0])
            return jsonify(tx_id=tid.hex(), status="committed", height=loc[0], index=loc[1],
                           block_hash=None if block is None else block.hash.hex())
        if deps.pending(tid):
            return jsonify(tx_id=tid.hex(), status="pending")
    raise ApiError(404, "unknown_tx", f"transaction {tid.hex()} is neither pending nor committed")


def _decimal(text: str) -> int | None:
    """A non-negative integer written in plain ASCII digits (at most 19), else None: int()
    alone would also read Arabic-Indic digits, underscores, signs and spaces."""
    if text.isascii() and text.isdigit() and len(text) < 20:
        return int(text)
    return None


@public.get("/v1/blocks/<height>")
def get_block(height: str) -> Any:
    chain = _deps().chain
    if height == "latest":
        h = chain.head_height
    elif (number := _decimal(height)) is not None:
        h = number
    else:
        raise ApiError(400, "bad_height", "height must be a non-negative integer or 'latest'")
    block = _deps().recent_block(h) or chain.block(h)
    if block is None:
        raise ApiError(404, "unknown_block", f"no block at height {h} (head is "
                                             f"{chain.head_height})")
    return jsonify(block_json(block, chain.commit(h)))


@public.get("/v1/certificates/<path:cert_id>")
def get_certificate(cert_id: str) -> Any:
    chain = _deps().chain
    try:
        CertificateId.parse(cert_id)
    except IdentifierError as exc:
        raise ApiError(400, "bad_identifier", str(exc)) from exc
    try:
        proof = chain.prove_certificate(cert_id)
    except LedgerError as exc:  # nothing committed yet
        raise ApiError(404, "no_blocks", str(exc)) from exc
    body = certificate_json(cert_id, proof, chain.validator_set(proof.header.height))
    if not body["found"]:
        raise ApiError(404, "unknown_certificate",
                       f"certificate {cert_id} is not on the chain (absence proof included)",
                       **body)
    return jsonify(body)


def _check_issuer_code(code: str) -> None:
    if not _ISSUER_CODE.fullmatch(code) or (len(code) == 18 and not is_valid_uscc(code)):
        raise ApiError(400, "bad_issuer_code", f"issuer code {code[:40]!r} must be 1-"
                                               f"{ISSUER_CODE_MAX_LEN} of 0-9 A-Z (a unified "
                                               "social credit code has a valid check char)")


@public.get("/v1/issuers/<code>")
def get_issuer(code: str) -> Any:
    chain = _deps().chain
    _check_issuer_code(code)
    try:
        proof = chain.prove(issuer_key(code))
    except LedgerError as exc:  # nothing committed yet
        raise ApiError(404, "no_blocks", str(exc)) from exc
    body = issuer_json(code, proof, chain.validator_set(proof.header.height))
    if not body["found"]:
        error = {"code": "unknown_issuer",
                 "message": f"issuer {code} is not registered (absence proof included)"}
        return jsonify(error=error, **body), 404
    return jsonify(body)


def _str_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "bad_batch", f"{name!r} must be a list of strings")
    return value


def _batch_answer(chain: Chain, data: bytes) -> bytes:
    """``POST /v1/state/batch`` for a JSON body already read; ApiError if refused."""
    try:
        body = jsonio.loads(data)
    except ValueError as exc:
        raise ApiError(400, "malformed", f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not set(body) <= {"certificates", "issuers"}:
        raise ApiError(400, "bad_batch", 'send an object with "certificates" and/or "issuers"')
    cert_ids, codes = _str_list(body, "certificates"), _str_list(body, "issuers")
    if not 1 <= len(cert_ids) + len(codes) <= MAX_BATCH_KEYS:
        raise ApiError(413 if cert_ids or codes else 400, "bad_batch_size",
                       f"ask for 1 to {MAX_BATCH_KEYS} keys, not {len(cert_ids) + len(codes)}")
    for i, cert_id in enumerate(cert_ids):
        try:
            CertificateId.parse(cert_id)
        except IdentifierError as exc:
            raise ApiError(400, "bad_identifier", f"certificates[{i}]: {exc}") from exc
    for code in codes:
        _check_issuer_code(code)
    try:
        return state_batch_body(chain, cert_ids, codes)
    except LedgerError as exc:  # nothing committed yet
        raise ApiError(404, "no_blocks", str(exc)) from exc


@public.post("/v1/state/batch")
def state_batch() -> Any:
    """Many state look-ups in one answer (a verifier coalescing concurrent verifications)."""
    if (request.mimetype or "application/json").lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    return _respond(*batch_outcome(_deps(), _body(_BATCH_BODY)))


def batch_outcome(deps: ApiDeps, data: bytes) -> Outcome:
    """``POST /v1/state/batch`` for a JSON body already read (its fast path's answer)."""
    try:
        return 200, _batch_answer(deps.chain, data), {}
    except ApiError as exc:
        return _failure(exc.status, exc.code, exc.message, **exc.extra)


@public.get("/v1/status")
def status() -> Any:
    return jsonify(_deps().status())


@public.get("/v1/evidence")
def evidence() -> Any:
    return jsonify(_deps().evidence())


@public.get("/metrics")
def metrics() -> Any:
    return Response(_deps().metrics.render(), content_type="text/plain; version=0.0.4")


# --------------------------------------------------------------------------- internal

internal = Blueprint("internal", __name__)


@internal.post("/v1/consensus")
def consensus() -> Any:
    deps = _deps()
    try:
        data = _body(deps.max_consensus_body)
    except ApiError:
        deps.metrics.dropped.inc(1, "envelope_oversized")
        raise
    return _respond(*consensus_outcome(deps, data))


def consensus_outcome(deps: ApiDeps, data: bytes) -> Outcome:
    """Status, JSON body and headers of handing a peer's envelopes to the inbox."""
    try:
        got = deps.inbox.receive(data)
    except EnvelopeError as exc:
        return _failure(400, exc.reason, str(exc))
    if got.accepted == 0:
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(got.rejected.items()))
        return _failure(400, "rejected" if reasons else "empty_batch",
                        f"no envelope accepted ({reasons or 'empty batch'})")
    return 202, {"accepted": got.accepted, "rejected": got.rejected}, {}


@internal.get("/v1/sync/blocks")
def sync_blocks() -> Any:
    deps = _deps()
    start = _decimal(request.args.get("from", ""))
    limit = _decimal(request.args.get("limit", "20"))
    if start is None or limit is None:
        raise ApiError(400, "bad_query", "from and limit must be integers")
    if start < 1 or not 1 <= limit <= 1000:
        raise ApiError(400, "bad_query", "from must be >= 1 and limit in 1..1000")
    body = serve_blocks(deps.chain, start, limit, deps.max_sync_bytes)
    return Response(body, content_type=MSGPACK)


# --------------------------------------------------------------------------- factory


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    return _respond(*_failure(status, code, message, **extra))


def create_app(deps: ApiDeps) -> Flask:
    app = Flask("certledger.node")
    app.extensions["certledger"] = deps
    # Hard ceiling for any body; each route enforces its own, smaller limit.
    app.config["MAX_CONTENT_LENGTH"] = max(deps.max_tx_body, deps.max_consensus_body)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(public)
    app.register_blueprint(internal)
    app.wsgi_app = FastPaths(app.wsgi_app, deps, {  # type: ignore[method-assign]
        "/v1/transactions": (submit_outcome, deps.max_tx_body, MSGPACK),
        "/v1/consensus": (consensus_outcome, deps.max_consensus_body, None),
        "/v1/state/batch": (batch_outcome, _BATCH_BODY, "application/json"),
    })

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        deps.metrics.dropped.inc(1, f"http_{exc.code}")
        return _error(exc.code or 400, code, exc.description or code)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; see the node log")

    return app
