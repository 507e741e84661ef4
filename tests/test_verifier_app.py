"""The verifier's HTTP service: auth (401/403/400), audit exactly once, QR page, CSV, metrics.

Also: the verifier's data files never contain a field value of the certificates
it verified.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import Client

from certificates.disclosure import present
from tests.ledger_fixtures import make_genesis
from tests.verifier_fixtures import HOLDER, NOW, ChainSource, Tampering, World, build_world
from verifier.app import VerifierDeps, create_app
from verifier.audit import AuditLog
from verifier.auth import KeyStore, RateLimiter
from verifier.errors import AuditError
from verifier.fastpath import FastRoute
from verifier.lightclient import LightClient
from verifier.metrics import VerifierMetrics
from verifier.qr import encode_payload, to_base41, to_base64url
from verifier.service import VerificationService
from verifier.trust import TrustedState


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


class Env:
    def __init__(self, world: World, data: Path, sources: list[Any] | None = None) -> None:
        self.world, self.data = world, data
        self.keys = KeyStore(data / "keys.json")
        self.gd, self.gd_key = self.keys.create("gd-hrss", label="广东人社厅")
        self.sh, self.sh_key = self.keys.create("sh-edu")
        self.admin, self.admin_key = self.keys.create("ops", role="admin")
        self.audit = AuditLog(data / "audit.sqlite3", clock=lambda: NOW)
        self.tick = FakeClock()
        lc = LightClient(TrustedState.from_genesis(make_genesis()),
                         sources or [ChainSource(world.chain)], refresh_interval=None)
        self.metrics = VerifierMetrics()
        svc = VerificationService(lc, clock=lambda: NOW, metrics=self.metrics)
        deps = VerifierDeps(svc, self.keys, self.audit, RateLimiter(1, 5, self.tick),
                            RateLimiter(1, 5, self.tick), self.metrics)
        self.app = create_app(deps)
        self.client: FlaskClient = self.app.test_client()

    def verify(self, label: str, key: str | None = None, *, purpose: str | None = "人才引进落户",
               disclose: tuple[str, ...] = ("name", "degree"), **extra: Any) -> Any:
        body: dict[str, Any] = {"presentation": present(self.world.wallets[label], disclose)
                                .to_json_dict(), **extra}
        if purpose is not None:
            body["purpose"] = purpose
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return self.client.post("/v1/verify", json=body, headers=headers)


@pytest.fixture
def env(world: World, tmp_path: Path) -> Iterator[Env]:
    e = Env(world, tmp_path)
    yield e
    e.audit.close()


def error_code(resp: Any) -> str:
    return str(resp.get_json()["error"]["code"])


# --------------------------------------------------------------------------- auth


def test_no_key_is_401(env: Env) -> None:
    resp = env.verify("valid")
    assert resp.status_code == 401 and error_code(resp) == "unauthorized"
    for bad in ("nonsense", env.gd_key[:-1] + ("A" if env.gd_key[-1] != "A" else "B"),
                "clk_0123456789abcdef_" + "A" * 43):
        assert env.verify("valid", bad).status_code == 401
    assert env.audit.count() == 0


def test_revoked_key_is_401(env: Env) -> None:
    env.keys.revoke(env.sh.key_id)
    again = KeyStore(env.data / "keys.json")  # persisted
    resp = env.verify("valid", env.sh_key)
    assert resp.status_code == 401 and "revoked" in resp.get_json()["error"]["message"]
    assert again.list()[1]["revoked"] is True


def test_key_store_keeps_no_secret(env: Env) -> None:
    text = (env.data / "keys.json").read_text()
    for key in (env.gd_key, env.sh_key, env.admin_key):
        assert key[21:] not in text
    assert (env.data / "keys.json").stat().st_mode & 0o777 == 0o600


def test_missing_purpose_is_400(env: Env) -> None:
    for purpose in (None, "", "   "):
        resp = env.verify("valid", env.gd_key, purpose=purpose)
        assert resp.status_code == 400 and error_code(resp) == "missing_purpose"
    assert env.verify("valid", env.gd_key, purpose="x" * 201).status_code == 400
    assert env.audit.count() == 0


def test_bad_body_is_400(env: Env) -> None:
    h = {"Authorization": f"Bearer {env.gd_key}"}
    for body in ({"purpose": "p"}, {"purpose": "p", "qr": "!!!"},
                 {"purpose": "p", "presentation": {"format": "x"}},
                 {"purpose": "p", "qr": "AAA", "wallet": {}}):
        resp = env.client.post("/v1/verify", json=body, headers=h)
        assert resp.status_code == 400, body
        assert set(resp.get_json()["error"]) == {"code", "message"}
    assert env.client.post("/v1/verify", data="[]", headers=h).status_code == 400


def test_text_utf8_cannot_hold_is_400_not_500(env: Env) -> None:
    """JSON can spell a lone surrogate ("\\ud800"); no field of it may reach the audit log
    or a hash. Both ways in: the fast path and the Flask route behind it."""
    body = {"presentation": present(env.world.wallets["valid"], ("name",)).to_json_dict(),
            "purpose": "x\ud800"}
    data = json.dumps(body).encode()  # ASCII: the surrogate as its escape
    h = {"Authorization": f"Bearer {env.gd_key}", "Content-Type": "application/json"}
    fast = env.app.wsgi_app
    assert isinstance(fast, FastRoute)
    behind = Client(fast.flask_wsgi)  # what the fast path hands over, as it would
    for client in (env.client, behind):
        resp = client.post("/v1/verify", headers=h, data=data)
        assert resp.status_code == 400, (client, resp.status_code)
        assert set(resp.get_json()["error"]) == {"code", "message"}
    assert env.audit.count() == 0
    ok = json.dumps({**body, "purpose": "\U0001f600 emoji as a surrogate pair"}).encode()
    assert env.client.post("/v1/verify", data=ok, headers=h).status_code == 200


def test_other_departments_resource_is_403(env: Env) -> None:
    resp = env.verify("valid", env.gd_key, department="sh-edu")
    assert resp.status_code == 403 and error_code(resp) == "forbidden"
    assert env.verify("valid", env.gd_key, department="gd-hrss").status_code == 200
    h = {"Authorization": f"Bearer {env.gd_key}"}
    assert env.client.get("/v1/audit?department=sh-edu", headers=h).status_code == 403
    assert env.client.get("/v1/audit?department=gd-hrss", headers=h).status_code == 200
    admin = {"Authorization": f"Bearer {env.admin_key}"}
    assert env.client.get("/v1/audit?department=sh-edu", headers=admin).status_code == 200


# --------------------------------------------------------------------------- verify + audit


def test_verify_valid_and_audit_once(env: Env) -> None:
    resp = env.verify("valid", env.gd_key)
    assert resp.status_code == 200
    v = resp.get_json()
    assert v["valid"] is True and v["certificate"]["status"] == "issued"
    assert v["disclosed"]["name"] == "王小明"
    assert [c["name"] for c in v["checks"]][:3] == ["commit_certificate", "state_proof",
                                                     "anchored"]
    rows = env.audit.query()
    assert len(rows) == 1
    row = rows[0]
    assert (row.department, row.key_id, row.purpose, row.result, row.failed_checks,
            row.channel) == ("gd-hrss", env.gd.key_id, "人才引进落户", "valid", "", "api")
    assert row.certificate_id == env.world.wallets["valid"].document.id


def test_verify_revoked_names_the_check(env: Env) -> None:
    v = env.verify("revoked", env.gd_key, anchor=None).get_json()
    assert v["valid"] is False
    assert [c["name"] for c in v["checks"] if not c["ok"]] == ["status"]
    (row,) = env.audit.query()
    assert row.result == "invalid" and row.failed_checks == "status"


def test_no_trustworthy_node_is_503_and_audited_once(world: World, tmp_path: Path) -> None:
    from tests.verifier_fixtures import forge_status

    env = Env(world, tmp_path, [Tampering(ChainSource(world.chain), forge_status)])
    resp = env.verify("revoked", env.gd_key)
    assert resp.status_code == 503 and error_code(resp) == "no_trustworthy_node"
    (row,) = env.audit.query()
    assert row.result == "error" and row.failed_checks == "no_trustworthy_node"
    assert 'reason="state_proof"' in env.client.get("/metrics").get_data(as_text=True)


def test_rate_limit_per_department(env: Env) -> None:
    for _ in range(5):
        assert env.verify("valid", env.gd_key).status_code == 200
    resp = env.verify("valid", env.gd_key)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert env.verify("valid", env.sh_key).status_code == 200  # another department's bucket
    env.tick.t += 1.0
    assert env.verify("valid", env.gd_key).status_code == 200
    assert env.audit.count() == 7  # refused requests are not verifications


def test_status_endpoint(env: Env) -> None:
    h = {"Authorization": f"Bearer {env.sh_key}"}
    cid = env.world.wallets["revoked"].document.id
    assert env.client.get(f"/v1/certificates/{cid}/status", headers=h).status_code == 400
    out = env.client.get(f"/v1/certificates/{cid}/status?purpose=复核", headers=h).get_json()
    assert out["proven"] and out["found"] and out["status"] == "revoked"
    unissued = env.world.wallets["unissued"].document.id
    out = env.client.get(f"/v1/certificates/{unissued}/status?purpose=复核",
                         headers=h).get_json()
    assert out["proven"] and out["found"] is False
    assert [r.result for r in env.audit.query()] == ["revoked", "not_found"]
    assert env.client.get("/v1/certificates/junk/status?purpose=x",
                          headers=h).status_code == 400


def test_audit_query_and_csv(env: Env) -> None:
    env.verify("valid", env.gd_key)
    env.verify("expired", env.sh_key, purpose="=cmd|' /C calc'!A0")
    admin = {"Authorization": f"Bearer {env.admin_key}"}
    all_rows = env.client.get("/v1/audit", headers=admin).get_json()["entries"]
    assert [r["department"] for r in all_rows] == ["gd-hrss", "sh-edu"]
    assert all_rows[1]["failed_checks"] == ["validity_period"]
    mine = env.client.get("/v1/audit", headers={"Authorization": f"Bearer {env.gd_key}"})
    assert [r["department"] for r in mine.get_json()["entries"]] == ["gd-hrss"]
    none = env.client.get(f"/v1/audit?since={NOW * 1000 + 1}", headers=admin).get_json()
    assert none["entries"] == []
    some = env.client.get("/v1/audit?since=2027-01-01T00:00:00&until=2027-12-31",
                          headers=admin).get_json()
    assert len(some["entries"]) == 2
    resp = env.client.get("/v1/audit?format=csv", headers=admin)
    assert resp.content_type.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0][:3] == ["seq", "time_ms", "department"]
    assert len(rows) == 3 and rows[2][5].startswith("'=")  # no spreadsheet formula
    assert env.audit.verify_chain() == 2


def test_audit_log_is_append_only(env: Env) -> None:
    env.verify("valid", env.gd_key)
    env.verify("revoked", env.gd_key)
    db = sqlite3.connect(env.data / "audit.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET result = 'valid' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    # Behind the triggers' back: the hash chain notices.
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET result = 'valid' WHERE seq = 2")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="row 2"):
        AuditLog(env.data / "audit.sqlite3").verify_chain()


# --------------------------------------------------------------------------- QR page


def test_qr_page(env: Env) -> None:
    data = encode_payload(present(env.world.wallets["valid"], ["name", "degree"]))
    for path in (f"/q/{to_base41(data)}", f"/Q/{to_base41(data)}", f"/q/{to_base64url(data)}"):
        resp = env.client.get(path)
        assert resp.status_code == 200 and resp.content_type.startswith("text/html")
        html = resp.get_data(as_text=True)
        assert "有效 VALID" in html and "王小明" in html and "无效" not in html
    rows = env.audit.query()
    assert len(rows) == 3
    assert {(r.department, r.purpose, r.channel) for r in rows} == {("public", "qr-scan", "qr")}
    bad = encode_payload(present(env.world.wallets["revoked"], ["name"]))
    html = env.client.get(f"/q/{to_base41(bad)}").get_data(as_text=True)
    assert "无效 NOT VALID" in html and "已撤销" in html
    resp = env.client.get("/q/NOT-A-PAYLOAD")
    assert resp.status_code == 400 and "无法核验" in resp.get_data(as_text=True)
    assert env.audit.count() == 4


def test_a_cut_or_garbled_qr_link_still_gets_the_html_page(env: Env) -> None:
    good = to_base41(encode_payload(present(env.world.wallets["valid"], ["name"])))
    for path in ("/q/", "/Q/", f"/q/{good[:-5]}%0A", f"/q/{good[:20]}/{good[20:]}"):
        resp = env.client.get(path)
        assert resp.status_code == 400, path
        assert resp.content_type.startswith("text/html")
        assert "无法核验" in resp.get_data(as_text=True)
    assert env.audit.count() == 0  # nothing was verified


def test_qr_page_escapes_values(env: Env) -> None:
    from tests.verifier_fixtures import document
    from verifier.qr import payload_url

    doc = document("V1", name="<script>alert(1)</script>")
    from certificates.document import commit

    data = encode_payload(present(commit(doc), ["name"]))
    html = env.client.get(payload_url("http://x", data).removeprefix("http://x")
                          ).get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_metrics_and_health(env: Env) -> None:
    env.verify("valid", env.gd_key)
    env.verify("revoked", env.gd_key)
    text = env.client.get("/metrics").get_data(as_text=True)
    assert 'certledger_verifier_verifications_total{channel="api",result="valid"} 1' in text
    assert 'certledger_verifier_failed_checks_total{check="status"} 1' in text
    assert "certledger_verifier_verification_seconds_count 2" in text
    h = env.client.get("/healthz").get_json()
    assert h["status"] == "ok" and h["freshest_height"] == env.world.chain.head_height


# --------------------------------------------------------------------------- no raw fields


def test_data_files_hold_no_field_values(env: Env) -> None:
    h = {"Authorization": f"Bearer {env.gd_key}"}
    for c in env.world.wallets.values():
        env.tick.t += 10  # stay under the rate limit
        env.client.post("/v1/verify", json={"purpose": "核验", "wallet": c.to_wallet_dict()},
                        headers=h)
        data = encode_payload(present(c, ["name", "degree", "$holder"]))
        env.client.get(f"/q/{to_base41(data)}")
    assert env.audit.count() == 2 * len(env.world.wallets)
    env.audit.close()
    values = {HOLDER}
    for c in env.world.wallets.values():
        values |= {str(v) for v in c.document.fields.values()}
    blobs = [p.read_bytes() for p in env.data.rglob("*") if p.is_file()]
    assert blobs
    for value in values:
        for blob in blobs:
            assert value.encode("utf-8") not in blob, value


# --------------------------------------------------------------------------- fast path


def test_fast_path_answers_exactly_as_the_flask_route(world: World, tmp_path: Path) -> None:
    """POST /v1/verify ahead of Flask (verifier.fastpath) and through Flask: same answers."""
    for d in ("fast", "slow"):
        (tmp_path / d).mkdir()
    fast, slow = Env(world, tmp_path / "fast"), Env(world, tmp_path / "slow")
    slow.app.wsgi_app = slow.app.wsgi_app.flask_wsgi  # type: ignore[attr-defined]
    answers = []
    for e in (fast, slow):
        h = {"Authorization": f"Bearer {e.gd_key}"}
        body = {"purpose": "人才引进落户",
                "presentation": present(world.wallets["revoked"], ("name",)).to_json_dict()}
        got = [e.client.post("/v1/verify", json=body, headers=h),
               e.verify("valid", e.gd_key), e.verify("valid"),  # no key: 401
               e.client.post("/v1/verify", json=[1], headers=h),  # not an object: 400
               e.client.post("/v1/verify", data=b"{nope", headers=h,
                             content_type="application/json"),
               *[e.verify("valid", e.gd_key) for _ in range(4)]]  # the last is over the limit
        answers.append([(r.status_code, r.headers.get("Content-Type"),
                         r.headers.get("Retry-After"), r.get_data()) for r in got])
        text = e.client.get("/metrics").get_data(as_text=True)
        assert 'requests_total{endpoint="/v1/verify",status="429"} 1' in text
        assert e.audit.count() == 5  # the 5 verifications answered 200, each once
        e.audit.close()
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == [200, 200, 401, 400, 400, 200, 200, 200, 429]
    assert answers[0][-1][2] == "1"


def test_requests_the_fast_path_does_not_take_still_work(env: Env) -> None:
    h = {"Authorization": f"Bearer {env.gd_key}"}
    body = json.dumps({"purpose": "p", "presentation": present(
        env.world.wallets["valid"], ("name",)).to_json_dict()})
    # No JSON media type: Flask's route refuses it, as before.
    assert env.client.post("/v1/verify", data=body, headers=h).status_code == 400
    # Too large: Flask's 413.
    big = env.client.post("/v1/verify", data=b"x" * (300 * 1024), headers=h,
                          content_type="application/json")
    assert big.status_code == 413 and error_code(big) == "request_entity_too_large"
    # A JSON media type with parameters is JSON.
    r = env.client.post("/v1/verify", data=body, headers=h,
                        content_type="application/json; charset=utf-8")
    assert r.status_code == 200 and r.get_json()["valid"] is True
    assert env.audit.count() == 1
