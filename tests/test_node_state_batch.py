"""``POST /v1/state/batch``: many keys, one header + commit + validators, a proof per key.

The node API app is served over the verifier fixtures' in-memory chain (no
consensus needed to read it). A light client's checks - commit certificate against
the genesis validator set, each SMT proof against the one header's state root -
must pass for every entry, found or absent; bad input of every kind is a 4xx
JSON error, oversize included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from certificates.identifiers import CertificateId
from ledger.records import cert_key, issuer_key
from node.api import ApiDeps, create_app
from node.metrics import NodeMetrics
from node.views import MAX_BATCH_KEYS
from tests.ledger_fixtures import ISSUER_A, TYPE_DIPLOMA, UNREGISTERED, make_genesis
from tests.verifier_fixtures import World, build_world
from verifier.evidence import batch_from_json
from verifier.lightclient import check_state
from verifier.trust import TrustedState


def node_app(world: World) -> Any:
    def unused(*_: Any) -> Any:
        raise AssertionError("not used by the state routes")

    return create_app(ApiDeps(chain=world.chain, submit=unused, pending=unused, status=unused,
                              metrics=NodeMetrics(), inbox=unused,  # type: ignore[arg-type]
                              max_tx_body=64 * 1024, max_consensus_body=64 * 1024,
                              max_sync_bytes=1024 * 1024))


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture
def client(world: World) -> FlaskClient:
    c: FlaskClient = node_app(world).test_client()
    return c


def post(client: FlaskClient, body: Any) -> Any:
    return client.post("/v1/state/batch", data=json.dumps(body),
                       content_type="application/json")


def error(resp: Any) -> tuple[int, str]:
    assert 400 <= resp.status_code < 600 and resp.is_json, (resp.status_code, resp.data[:200])
    err = resp.get_json()["error"]
    assert err["message"]
    return resp.status_code, err["code"]


def test_one_header_and_a_checked_proof_per_key(world: World, client: FlaskClient) -> None:
    ids = [world.wallets[label].document.id for label in ("valid", "revoked", "unissued")]
    ids.append(ids[0])  # a duplicate is answered twice, in request order
    codes = [ISSUER_A, UNREGISTERED]
    r = post(client, {"certificates": ids, "issuers": codes})
    assert r.status_code == 200, r.data
    body = r.get_json()
    assert body["height"] == world.chain.head_height
    assert [e["id"] for e in body["certificates"]] == ids
    assert [e["code"] for e in body["issuers"]] == codes
    assert [e["found"] for e in body["certificates"] + body["issuers"]] == \
        [True, True, False, True, True, False]
    keys = [cert_key(i) for i in ids] + [issuer_key(c) for c in codes]
    trusted = TrustedState.from_genesis(make_genesis())
    evidence = batch_from_json(body, keys, "node")
    for key, ev in zip(keys, evidence, strict=True):
        assert not isinstance(ev, Exception), ev
        checked = check_state(ev, trusted)  # commit certificate + SMT proof, or absence
        assert checked.key == key and checked.header.height == body["height"]
        assert (checked.record is None) == (key in (cert_key(ids[2]), issuer_key(codes[1])))
    # The same answer as the single route gives, for the same key.
    single = client.get(f"/v1/certificates/{ids[0]}").get_json()
    assert single["record_bytes"] == body["certificates"][0]["record_bytes"]
    assert single["proof"] == body["certificates"][0]["proof"]
    assert single["header_bytes"] == body["header_bytes"]


def test_bad_input_is_a_400(client: FlaskClient, world: World) -> None:
    good = world.wallets["valid"].document.id
    assert error(client.post("/v1/state/batch", data=b"{nope",
                             content_type="application/json")) == (400, "malformed")
    assert error(client.post("/v1/state/batch", data=b"\xff\xfe",
                             content_type="application/json")) == (400, "malformed")
    assert error(client.post("/v1/state/batch", data=b"[]", content_type="text/plain")) == (
        415, "unsupported_media_type")
    for body in ([good], "x", None, {"certificates": good}, {"certificates": [1]},
                 {"issuers": [None]}, {"certificates": [good], "extra": 1}):
        assert error(post(client, body)) == (400, "bad_batch"), body
    assert error(post(client, {})) == (400, "bad_batch_size")
    assert error(post(client, {"certificates": [], "issuers": []})) == (400, "bad_batch_size")
    assert error(post(client, {"certificates": [good, "not-an-id"]})) == (400, "bad_identifier")
    assert error(post(client, {"issuers": ["lower-case"]})) == (400, "bad_issuer_code")
    assert error(post(client, {"issuers": ["91110000000000000X"]})) == (400, "bad_issuer_code")
    assert error(client.get("/v1/state/batch")) == (405, "method_not_allowed")
    # Still serving after all that.
    assert post(client, {"certificates": [good]}).status_code == 200


def test_oversize_batches_are_refused(client: FlaskClient) -> None:
    ids = [str(CertificateId.build(TYPE_DIPLOMA, ISSUER_A, f"N{i:05d}", 1))
           for i in range(MAX_BATCH_KEYS + 1)]
    assert error(post(client, {"certificates": ids})) == (413, "bad_batch_size")
    assert error(post(client, {"certificates": ids[:-2], "issuers": [ISSUER_A] * 2})) == (
        413, "bad_batch_size")
    r = post(client, {"certificates": ids[:MAX_BATCH_KEYS]})  # the limit itself is fine
    assert r.status_code == 200 and len(r.get_json()["certificates"]) == MAX_BATCH_KEYS
    huge = json.dumps({"certificates": ["x" * 1000] * 80})  # > 64 KiB before any parsing
    assert error(client.post("/v1/state/batch", data=huge,
                             content_type="application/json")) == (413, "too_large")


def test_fast_route_answers_as_flask_and_follows_the_head() -> None:
    """POST /v1/state/batch ahead of Flask: the same bytes; a new block, a new header."""
    from tests.crash_child import commit_next

    w = build_world()  # its own chain: this test adds a block
    fast = node_app(w)
    slow = node_app(w)
    slow.wsgi_app = slow.wsgi_app.flask_wsgi
    ids = [w.wallets[label].document.id for label in ("valid", "unissued")]
    body = {"certificates": ids, "issuers": [ISSUER_A]}
    a, b = post(fast.test_client(), body), post(slow.test_client(), body)
    assert a.status_code == b.status_code == 200 and a.get_data() == b.get_data()
    assert a.headers["Content-Type"] == "application/json"
    for bad in ({"certificates": ["nope"]}, {}):  # refusals are Flask's, from either
        assert error(post(fast.test_client(), bad)) == error(post(slow.test_client(), bad))
    height = w.chain.head_height
    commit_next(w.chain, [])
    got = post(fast.test_client(), body).get_json()
    assert got["height"] == height + 1 and got["commit"]["height"] == height + 1
    trusted = TrustedState.from_genesis(make_genesis())
    keys = [cert_key(i) for i in ids] + [issuer_key(ISSUER_A)]
    for ev in batch_from_json(got, keys, "node"):
        assert not isinstance(ev, Exception)
        assert check_state(ev, trusted).header.height == height + 1
