"""Whatever a caller sends, the verifier answers it: never a 500, always the error shape.

Hypothesis mutates real request bodies (a presentation, a wallet, a QR payload) one
place at a time - a value of another type, a deleted or added key, random text - and
also sends bodies that are not JSON objects at all. Every answer must be a verdict
(200, audited exactly once) or a 4xx carrying ``{"error": {"code", "message"}}``
(nothing audited). The public QR page and the status and audit queries get random
text the same way and must answer 200 or 4xx, never 5xx.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates.disclosure import present
from tests.fuzzing import at, places, values
from tests.ledger_fixtures import make_genesis
from tests.verifier_fixtures import NOW, ChainSource, World, build_world
from verifier.app import VerifierDeps, create_app
from verifier.audit import AuditLog
from verifier.auth import KeyStore, RateLimiter
from verifier.lightclient import LightClient
from verifier.metrics import VerifierMetrics
from verifier.qr import encode_payload, to_base41
from verifier.service import VerificationService
from verifier.trust import TrustedState

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

JSON = values(floats=True, text_size=40, max_leaves=12)


class Service:
    def __init__(self, world: World, data: Path) -> None:
        self.world = world
        keys = KeyStore(data / "keys.json")
        _, self.key = keys.create("gd-hrss")
        self.audit = AuditLog(data / "audit.sqlite3", clock=lambda: NOW)
        lc = LightClient(TrustedState.from_genesis(make_genesis()), [ChainSource(world.chain)],
                         refresh_interval=None)
        metrics = VerifierMetrics()
        unlimited = RateLimiter(1e9, 1e9)
        deps = VerifierDeps(VerificationService(lc, clock=lambda: NOW, metrics=metrics), keys,
                            self.audit, unlimited, unlimited, metrics)
        self.client = create_app(deps).test_client()
        self.headers = {"Authorization": f"Bearer {self.key}"}
        valid = world.wallets["valid"]
        self.presentation = present(valid, ["name", "degree"]).to_json_dict()
        self.wallet = valid.to_wallet_dict()
        self.qr = to_base41(encode_payload(present(valid, ["name"])))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(build_world(), tmp_path_factory.mktemp("verifier-fuzz"))
    yield s
    s.audit.close()


def _mutate(value: Any, data: st.DataObject) -> Any:
    """A deep copy of ``value`` changed at one place."""
    value = json.loads(json.dumps(value))
    path = data.draw(st.sampled_from(places(value)[1:] or [()]), label="path")
    if not path:
        return data.draw(JSON, label="whole")
    parent, last = at(value, path)
    action = data.draw(st.sampled_from(["replace", "delete", "add", "text"]), label="action")
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8), label="new key")] = data.draw(JSON, label="new")
    elif action == "text":
        parent[last] = data.draw(st.text(max_size=60), label="text")
    else:
        parent[last] = data.draw(JSON, label="value")
    return value


def _check_verify_answer(service: Service, resp: Any, before: int) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    after = service.audit.count()
    if resp.status_code == 200:
        assert isinstance(body["valid"], bool)
        assert after == before + 1  # an answered verification is audited once
    else:
        assert 400 <= resp.status_code < 500
        err = body["error"]
        assert set(err) == {"code", "message"}
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]
        assert after == before  # a refused request leaves no row


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["presentation", "wallet", "anchor-junk"]))
def test_a_mutated_body_gets_a_verdict_or_a_4xx(service: Service, data: st.DataObject,
                                                kind: str) -> None:
    if kind == "presentation":
        body: Any = {"purpose": "人才引进", "presentation": _mutate(service.presentation, data)}
    elif kind == "wallet":
        body = {"purpose": "人才引进", "wallet": _mutate(service.wallet, data)}
    else:
        body = {"purpose": "人才引进", "presentation": service.presentation,
                "anchor": data.draw(JSON, label="anchor")}
    if data.draw(st.booleans(), label="mutate the envelope too"):
        body = _mutate(body, data)
    before = service.audit.count()
    resp = service.client.post("/v1/verify", json=body, headers=service.headers)
    _check_verify_answer(service, resp, before)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                     st.text(max_size=200).map(lambda t: json.dumps(
                         {"purpose": "核验", "qr": t}).encode())))
def test_any_bytes_posted_get_a_verdict_or_a_4xx(service: Service, raw: bytes) -> None:
    before = service.audit.count()
    resp = service.client.post("/v1/verify", data=raw, headers={
        **service.headers, "Content-Type": "application/json"})
    _check_verify_answer(service, resp, before)


@SETTINGS
@given(text=st.text(max_size=120), cut=st.integers(0, 200))
def test_the_qr_page_answers_any_path_with_html(service: Service, text: str, cut: int) -> None:
    for payload in (text, service.qr[:cut] + text):
        # A phone's browser follows redirects (werkzeug merges doubled slashes with one).
        resp = service.client.get("/q/" + urllib.parse.quote(payload, safe=""),
                                  follow_redirects=True)
        assert resp.status_code in (200, 400, 404), resp.status_code
        assert resp.content_type.startswith("text/html")


@SETTINGS
@given(cert_id=st.text(min_size=1, max_size=80), purpose=st.text(max_size=30),
       params=st.dictionaries(st.sampled_from(["department", "since", "until",
                                               "certificate_id", "limit", "format"]),
                              st.text(max_size=20), max_size=4))
def test_status_and_audit_queries_never_fail_on_input(service: Service, cert_id: str,
                                                      purpose: str,
                                                      params: dict[str, str]) -> None:
    quoted = urllib.parse.quote(cert_id, safe="")
    status = service.client.get(f"/v1/certificates/{quoted}/status",
                                query_string={"purpose": purpose}, headers=service.headers)
    audit = service.client.get("/v1/audit", query_string=params, headers=service.headers)
    for resp in (status, audit):
        assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
        if resp.status_code >= 400:
            assert set(resp.get_json()["error"]) == {"code", "message"}


def test_unicode_digits_are_a_400_not_a_500(service: Service) -> None:
    # str.isdigit() holds for '¹', which int() refuses: the fast path and the audit query.
    resp = service.client.get("/v1/audit", query_string={"since": "¹"}, headers=service.headers)
    assert resp.status_code == 400 and set(resp.get_json()["error"]) == {"code", "message"}
    before = service.audit.count()
    resp = service.client.post("/v1/verify", data=b"{}", headers={
        **service.headers, "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": "\xb9"})
    _check_verify_answer(service, resp, before)
