"""Whatever a client or a peer sends the node's HTTP API, it answers in the error shape.

The app is wired in-process as ``node.runtime`` wires it - a real mempool behind
``POST /v1/transactions``, a real ``Inbox`` behind ``POST /v1/consensus`` - over the
verifier fixtures' chain. Hypothesis sends:

* transactions as JSON changed at one place, as msgpack cut or with bytes changed, and
  arbitrary bytes under several content types: each is admitted (202, then pending) or
  refused with a 4xx ``{"error": {"code", "message"}}``;
* peer batches of arbitrary bytes, and batches of envelopes *validly sealed by a
  validator* around arbitrary payloads of every kind: each is 202 or a 4xx, and
  consensus only ever hears decoded proposals and votes;
* random path and query values for every read route: never a 5xx.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.hashing import sm3
from ledger.state import BlockContext
from network.envelope import seal, seal_batch
from node.api import MSGPACK, ApiDeps, create_app
from node.consensus.messages import Proposal, Vote
from node.errors import WireError
from node.mempool import AddResult, Mempool
from node.metrics import NodeMetrics
from node.peers import Inbox
from node.wire import (
    KIND_CONSENSUS,
    KIND_TXS,
    cover_messages,
    decode_messages,
    decode_txs,
    encode_messages,
    encode_txs,
    tx_ids,
)
from tests.fuzzing import at, places, values
from tests.ledger_fixtures import (
    CHAIN_ID,
    GENESIS_TIME,
    VALIDATOR_NAMES,
    anchor,
    batch_tx,
    issue_tx,
    key,
)
from tests.sim.script import proposal, value, vote
from tests.verifier_fixtures import build_world

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
REFUSALS = {400, 404, 405, 409, 413, 415, 422, 429}
JSON = values()


class Node:
    def __init__(self) -> None:
        self.chain = build_world().chain
        self.pool = Mempool(_View(self.chain), CHAIN_ID, max_txs=10_000, max_bytes=1 << 26,
                            max_tx_bytes=1 << 20, sig_cache={}, monotonic=lambda: 0.0)
        self.heard: list[Any] = []
        self.peer_txs: list[tuple[bytes, bytes]] = []  # (raw tx, its id) from the inbox
        self.validators = {key(n).public.key_id: key(n).public.data for n in VALIDATOR_NAMES}
        self.inbox = Inbox(CHAIN_ID, lambda: self.validators, self.heard.extend,
                           self.peer_txs.extend, lambda reason, n: None,
                           max_envelope_bytes=1 << 20, max_batch_bytes=1 << 21)
        self.client = create_app(ApiDeps(
            chain=self.chain, submit=self.submit, pending=self.pool.__contains__,
            status=lambda: {"height": self.chain.head_height}, metrics=NodeMetrics(),
            inbox=self.inbox, max_tx_body=1 << 20, max_consensus_body=1 << 21,
            max_sync_bytes=1 << 20)).test_client()
        self.seq = 0

    def submit(self, raw: bytes) -> AddResult:
        h = self.chain.head_height + 1
        return self.pool.add(raw, BlockContext(CHAIN_ID, h, GENESIS_TIME + h * 1000 + 60_000),
                             gossip=True)

    def sealed(self, kind: str, payload: bytes) -> bytes:
        self.seq += 1
        covers: list[bytes] | None = None
        try:  # both kinds are covered: seal as a peer would, where the payload decodes
            if kind == KIND_TXS:
                covers = tx_ids(decode_txs(payload, 1 << 21))
            elif kind == KIND_CONSENSUS:
                covers = cover_messages(decode_messages(payload, 1 << 21))
        except WireError:
            covers = []
        return seal(CHAIN_ID, kind, payload, key(VALIDATOR_NAMES[self.seq % 4]), self.seq,
                    covers=covers)


class _View:
    def __init__(self, chain: Any) -> None:
        self.get = chain.record


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    yield Node()


def _answer_ok(resp: Any) -> None:
    assert resp.status_code < 500, resp.get_data(as_text=True)[:300]
    if resp.status_code >= 400:
        assert resp.status_code in REFUSALS, resp.status_code
        err = resp.get_json()["error"]
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]


def _change(v: Any, data: st.DataObject) -> Any:
    v = json.loads(json.dumps(v))
    place = data.draw(st.sampled_from(places(v)), label="place")
    if not place:
        return data.draw(JSON, label="whole")
    parent, last = at(v, place)
    if data.draw(st.booleans(), label="delete"):
        del parent[last]
    else:
        parent[last] = data.draw(JSON, label="value")
    return v


SAMPLES = [issue_tx(anchor("F1")), batch_tx([anchor("F2"), anchor("F3")])]


@SETTINGS
@given(which=st.sampled_from([0, 1]), data=st.data())
def test_a_changed_json_tx_is_admitted_or_refused(node: Node, which: int,
                                                  data: st.DataObject) -> None:
    body = _change(SAMPLES[which].to_json(), data)
    resp = node.client.post("/v1/transactions", json=body)
    _answer_ok(resp)
    if resp.status_code == 202:
        assert node.pool.__contains__(bytes.fromhex(resp.get_json()["tx_id"]))


@SETTINGS
@given(which=st.sampled_from([0, 1]), cut=st.integers(0, 400),
       flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
       ctype=st.sampled_from([MSGPACK, "application/json", "text/plain", "",
                              "application/msgpack; charset=x"]))
def test_changed_or_arbitrary_bytes_are_admitted_or_refused(
        node: Node, which: int, cut: int, flips: list[tuple[int, int]], ctype: str) -> None:
    raw = bytearray(SAMPLES[which].to_bytes()[:cut] if cut else SAMPLES[which].to_bytes())
    for pos, x in flips:
        if raw:
            raw[pos % len(raw)] ^= x
    resp = node.client.post("/v1/transactions", data=bytes(raw),
                            headers={"Content-Type": ctype} if ctype else {})
    _answer_ok(resp)


PAYLOADS = {
    KIND_CONSENSUS: encode_messages([proposal(1, 0, value(1, b"A")),
                                     vote("prevote", 1, 0, value(1, b"A"), 1)]),
    KIND_TXS: encode_txs([t.to_bytes() for t in SAMPLES]),
    "other/v9": b"\x90",
}


@SETTINGS
@given(kind=st.sampled_from(sorted(PAYLOADS)), data=st.data(),
       junk=st.lists(st.binary(max_size=40), max_size=2))
def test_sealed_junk_from_a_validator_is_accepted_or_refused(
        node: Node, kind: str, data: st.DataObject, junk: list[bytes]) -> None:
    v: Any = canonical.decode(PAYLOADS[kind])
    payload = canonical.encode(_change_canonical(v, data))
    before = len(node.heard)
    resp = node.client.post("/v1/consensus", data=seal_batch(
        [node.sealed(kind, payload), *junk]), content_type="application/octet-stream")
    _answer_ok(resp)
    assert all(isinstance(m, Proposal | Vote) for m in node.heard[before:])
    # gossiped txs are handed on only with the ids their envelope's signature covered
    assert all(tx_id == sm3(raw) for raw, tx_id in node.peer_txs)


def _change_canonical(v: Any, data: st.DataObject) -> Any:
    # As _change, with byte strings (canonical values are not all JSON): items may be cut.
    place = data.draw(st.sampled_from(places(v)), label="place")
    if not place:
        return data.draw(JSON | st.binary(max_size=30), label="whole")
    parent, last = at(v, place)
    old = parent[last]
    if isinstance(old, bytes) and data.draw(st.booleans(), label="cut"):
        parent[last] = old[:data.draw(st.integers(0, len(old)), label="to")]
    else:
        parent[last] = data.draw(JSON | st.binary(max_size=30), label="value")
    return v


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_peer_bytes_are_refused(node: Node, raw: bytes) -> None:
    _answer_ok(node.client.post("/v1/consensus", data=raw,
                                content_type="application/octet-stream"))


@SETTINGS
@given(text=st.text(min_size=1, max_size=70), start=st.text(max_size=8),
       limit=st.text(max_size=8))
def test_read_routes_never_fail_on_input(node: Node, text: str, start: str, limit: str) -> None:
    part = urllib.parse.quote(text, safe="")
    for path in (f"/v1/transactions/{part}", f"/v1/blocks/{part}",
                 f"/v1/certificates/{part}", f"/v1/issuers/{part}",
                 "/v1/sync/blocks?" + urllib.parse.urlencode({"from": start, "limit": limit}),
                 "/v1/status", "/metrics"):
        _answer_ok(node.client.get(path))


def test_unicode_digits_are_a_400_not_a_500(node: Node) -> None:
    # str.isdigit() holds for '¹' and '²', which int() refuses.
    resp = node.client.get("/v1/blocks/%C2%B9")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_height"
    resp = node.client.post("/v1/state/batch", data=b"{}", content_type="application/json",
                            environ_overrides={"CONTENT_LENGTH": "\xb9"})
    _answer_ok(resp)
