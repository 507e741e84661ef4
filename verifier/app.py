"""The verifier's HTTP service: a Flask app factory, two blueprints, dependencies injected.

``create_app(deps)`` builds the app over a ``VerifierDeps`` (the verification
service, API keys, audit log, rate limiter, metrics, clock); ``waitress`` serves
it (``certledger verifier run``). Routes::

    POST /v1/verify                   department key; JSON {purpose, presentation | wallet
                                      | qr, [anchor], [department]} -> verdict
    GET  /v1/certificates/<id>/status department key; ?purpose=… -> proven status
    GET  /v1/audit                    admin key: any department; a department key: its own
                                      (another's is 403); ?department, since, until
                                      (ms or ISO 8601), certificate_id, limit, format=csv
    GET  /q/<payload>  (and /Q/…)     public HTML page for a scanned QR; audited as
                                      department "public", purpose "qr-scan"
    GET  /metrics, /healthz

``POST /v1/verify`` is answered by ``verify_request``, which ``verifier.fastpath``
calls ahead of Flask for the usual request (JSON of a declared length) and the
Flask route calls for any other; the answers are the same.

Errors are ``{"error": {"code", "message"}}``: 400 bad input or missing purpose, 401
no or bad key, 403 another department's resource, 429 over the department's rate,
503 no node gave trustworthy evidence. Every verification - valid, invalid, or
failed for want of evidence - is written to the audit log exactly once *before*
the answer is sent; if the log cannot be written, the answer is a 500.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from certificates import jsonio
from certificates.anchor import SignedAnchor
from verifier.audit import MAX_QUERY, AuditLog, to_csv
from verifier.auth import PUBLIC, KeyStore, Principal, RateLimiter, check_purpose
from verifier.errors import ForbiddenError, InputError, RateLimitedError, VerifierError
from verifier.fastpath import FastRoute
from verifier.logic import Subject, Verdict, subject_of
from verifier.metrics import VerifierMetrics
from verifier.pages import render_error, render_verdict
from verifier.pipeline import AuditedVerifier, Job
from verifier.service import VerificationService, check_cert_id, parse_qr, parse_shown

log = logging.getLogger(__name__)
QR_PURPOSE = "qr-scan"
MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class VerifierDeps:
    service: VerificationService
    keys: KeyStore
    audit: AuditLog
    limiter: RateLimiter
    public_limiter: RateLimiter
    metrics: VerifierMetrics
    clock: Callable[[], float] = time.time


def _deps() -> VerifierDeps:
    deps: VerifierDeps = current_app.extensions["certledger-verifier"]
    return deps


def _principal(deps: VerifierDeps, environ: Mapping[str, Any]) -> Principal:
    header = environ.get("HTTP_AUTHORIZATION", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    return deps.keys.authenticate(token or environ.get("HTTP_X_API_KEY"))


def _limit(deps: VerifierDeps, principal: Principal, limiter: RateLimiter) -> None:
    try:
        limiter.take(principal.department)
    except RateLimitedError:
        deps.metrics.inc("certledger_verifier_rate_limited_total", principal.department)
        raise


def _audited_verify(deps: VerifierDeps, principal: Principal, purpose: str, shown: Subject,
                    anchor: SignedAnchor | None, channel: str) -> Verdict:
    """Verify and write one audit row, whatever the outcome."""
    cert_id = shown.meta.id
    try:
        verdict = deps.service.verify(shown, anchor, channel)
    except VerifierError as exc:
        deps.audit.append(department=principal.department, key_id=principal.key_id,
                          certificate_id=cert_id, purpose=purpose, result="error",
                          failed_checks=(exc.code,), channel=channel)
        raise
    deps.audit.append(department=principal.department, key_id=principal.key_id,
                      certificate_id=cert_id, purpose=purpose,
                      result="valid" if verdict.valid else "invalid",
                      failed_checks=verdict.failed, channel=channel)
    return verdict


def _error_parts(exc: VerifierError) -> tuple[int, Any, list[tuple[str, str]]]:
    headers = []
    if isinstance(exc, RateLimitedError):
        headers.append(("Retry-After", str(max(1, round(exc.retry_after)))))
    return exc.status, {"error": {"code": exc.code, "message": str(exc)}}, headers


def verify_request(deps: VerifierDeps, verifier: AuditedVerifier, environ: Mapping[str, Any],
                   body: object) -> tuple[int, Any, list[tuple[str, str]]]:
    """``POST /v1/verify``: (status, JSON payload, extra headers); never raises.

    Shared by the Flask route and ``verifier.fastpath``, so both answer alike.
    """
    try:
        principal = _principal(deps, environ)
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object")
        department = body.get("department")
        if department is not None and department != principal.department and \
                not principal.is_admin:
            raise ForbiddenError(f"this key belongs to department {principal.department!r}, "
                                 f"not {department!r}")
        purpose = check_purpose(body.get("purpose"))
        shown, anchor = parse_shown(body)
        _limit(deps, principal, deps.limiter)
        # Gathered with concurrent requests: one node look-up and one audit commit for all.
        return 200, verifier.verify(Job(principal, purpose, shown, anchor, "api")).to_json(), []
    except VerifierError as exc:
        return _error_parts(exc)
    except Exception:
        log.exception("unhandled error in POST /v1/verify")
        return 500, {"error": {"code": "internal",
                               "message": "internal error; see the verifier log"}}, []


# --------------------------------------------------------------------------- department API

api = Blueprint("api", __name__)


def _json_or_none() -> Any:
    """The body as ``request.get_json(silent=True)`` reads it, through the same JSON reader
    as the fast path (``certificates.jsonio``: no lone surrogates), so both refuse alike."""
    if not request.is_json:
        return None
    try:
        return jsonio.loads(request.get_data(cache=False))
    except ValueError:
        return None


@api.post("/v1/verify")
def verify_route() -> Any:
    # Reached when verifier.fastpath hands a request over (no length, not JSON...).
    status, payload, headers = verify_request(
        _deps(), current_app.extensions["certledger-pipeline"], request.environ,
        _json_or_none())
    resp = jsonify(payload)
    resp.status_code = status
    for name, value in headers:
        resp.headers[name] = value
    return resp


@api.get("/v1/certificates/<path:cert_id>/status")
def status_route(cert_id: str) -> Any:
    deps = _deps()
    principal = _principal(deps, request.environ)
    purpose = check_purpose(request.args.get("purpose") or request.headers.get("X-Purpose"))
    cert_id = check_cert_id(cert_id)
    _limit(deps, principal, deps.limiter)
    try:
        out = deps.service.status(cert_id)
    except VerifierError as exc:
        deps.audit.append(department=principal.department, key_id=principal.key_id,
                          certificate_id=cert_id, purpose=purpose, result="error",
                          failed_checks=(exc.code,), channel="status")
        raise
    result = out.get("status") or ("not_found" if out.get("proven") else "unproven")
    deps.audit.append(department=principal.department, key_id=principal.key_id,
                      certificate_id=cert_id, purpose=purpose, result=str(result),
                      channel="status")
    return jsonify(out)


#: The largest time (ms) SQLite can hold: its INTEGER is signed 64-bit.
_MAX_MS = (1 << 63) - 1
AUDIT_FORMATS = ("json", "csv")


def _time_arg(name: str) -> int | None:
    text = request.args.get(name)
    if not text:
        return None
    if text.isascii() and text.isdigit():  # str.isdigit() also holds for '¹'
        # (int() refuses over 4300 digits: anything over 19 is out of range anyway)
        ms = int(text) if len(text) <= 19 else _MAX_MS + 1
    else:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise InputError(f"{name} must be Unix milliseconds or an ISO 8601 time") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        ms = int(when.timestamp() * 1000)
    if not -_MAX_MS <= ms <= _MAX_MS:
        raise InputError(f"{name} is out of range: at most {_MAX_MS} (Unix milliseconds)")
    return ms


def _limit_arg() -> int:
    text = request.args.get("limit", "1000")
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or \
            not 1 <= int(text) <= MAX_QUERY:
        raise InputError(f"limit must be an integer from 1 to {MAX_QUERY}")
    return int(text)


@api.get("/v1/audit")
def audit_route() -> Any:
    principal = _principal(_deps(), request.environ)
    department = request.args.get("department")
    if not principal.is_admin:
        if department not in (None, principal.department):
            raise ForbiddenError(f"a key of department {principal.department!r} may read only "
                                 "its own audit entries")
        department = principal.department
    limit = _limit_arg()
    fmt = request.args.get("format", "json")
    if fmt not in AUDIT_FORMATS:
        raise InputError(f"format must be one of {', '.join(AUDIT_FORMATS)}, not {fmt!r}")
    entries = _deps().audit.query(department=department, since_ms=_time_arg("since"),
                                  until_ms=_time_arg("until"),
                                  certificate_id=request.args.get("certificate_id"), limit=limit)
    if fmt == "csv":
        return Response(to_csv(entries), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=audit.csv"})
    return jsonify(entries=[e.to_json() for e in entries])


# --------------------------------------------------------------------------- public

public = Blueprint("public", __name__)


@public.get("/q/")
@public.get("/Q/")
def empty_qr_page() -> Any:
    """A link cut short before its payload: the phone still gets a page that says so."""
    return qr_page("")


@public.get("/q/<payload:payload>")
@public.get("/Q/<payload:payload>")
def qr_page(payload: str) -> Any:
    deps = _deps()
    try:
        shown = subject_of(parse_qr(payload))
        _limit(deps, PUBLIC, deps.public_limiter)
        verdict = _audited_verify(deps, PUBLIC, QR_PURPOSE, shown, None, "qr")
    except VerifierError as exc:
        return Response(render_error(str(exc)), status=exc.status,
                        content_type="text/html; charset=utf-8")
    return Response(render_verdict(verdict.to_json()), content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


@public.get("/healthz")
def healthz() -> Any:
    svc = _deps().service
    provider: Any = svc.provider
    return jsonify(status="ok", chain_id=provider.trusted.chain_id,
                   trusted_height=provider.trusted.height,
                   freshest_height=getattr(provider, "freshest_height", None))


@public.get("/metrics")
def metrics() -> Any:
    return Response(_deps().metrics.render(), content_type="text/plain; version=0.0.4")


# --------------------------------------------------------------------------- factory


def _error(status: int, code: str, message: str) -> Response:
    resp = jsonify(error={"code": code, "message": message})
    resp.status_code = status
    return resp


class _PayloadConverter(PathConverter):
    """Everything after ``/q/``, newlines included (``path`` stops at one): whatever a
    scanner hands over reaches the page, which then says what is wrong with it."""

    regex = r"[\s\S]+"
    part_isolating = False  # slashes too: werkzeug would infer True from this regex


def create_app(deps: VerifierDeps) -> Flask:
    app = Flask("certledger.verifier")
    app.url_map.converters["payload"] = _PayloadConverter
    app.extensions["certledger-verifier"] = deps
    pipeline = AuditedVerifier(deps.service, deps.audit)
    app.extensions["certledger-pipeline"] = pipeline
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(api)
    app.register_blueprint(public)
    # The hot route skips Flask's per-request machinery (see verifier.fastpath).
    app.wsgi_app = FastRoute(  # type: ignore[method-assign]
        app.wsgi_app, "/v1/verify", partial(verify_request, deps, pipeline),
        lambda status: deps.metrics.inc("certledger_verifier_requests_total", "/v1/verify",
                                        str(status)), max_body=MAX_BODY)

    @app.after_request
    def count(resp: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        deps.metrics.inc("certledger_verifier_requests_total", rule, str(resp.status_code))
        return resp

    @app.errorhandler(VerifierError)
    def verifier_error(exc: VerifierError) -> Response:
        status, payload, headers = _error_parts(exc)
        resp = jsonify(payload)
        resp.status_code = status
        for name, value in headers:
            resp.headers[name] = value
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 400, code, exc.description or code)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error; see the verifier log")

    return app
