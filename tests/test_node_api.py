"""The node API and runtime in-process: a one-validator network (it decides alone).

One validator (quorum 1) commits blocks by itself, so the whole runtime - consensus
thread, WAL, mempool, chain, HTTP API - runs here without other processes. A second,
non-validator node follows it through block sync only. Junk of every kind is thrown
at the public and internal endpoints: each answer is a 4xx JSON error, it is
counted in /metrics, and the node keeps committing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests

from certificates import canonical, keystore, sm2
from certificates.hashing import sm3
from certificates.identifiers import CertificateId
from ledger.block import BlockHeader
from ledger.chain import verify_state_proof
from ledger.commit import CommitCertificate, CommitSig, Validator, ValidatorSet
from ledger.records import cert_key
from ledger.smt import SMTProof
from ledger.tx import Transaction
from network.envelope import seal, seal_batch
from network.testing import wait_until
from node.clock import SystemClock
from node.config import load_config
from node.netinit import IssuerSpec, NetworkPlan, init_network, with_consensus
from node.runtime import Node
from node.wire import KIND_CONSENSUS, KIND_TXS, encode_txs
from tests.cluster import FAST, ISSUER, PASSPHRASE, TYPE, Cluster

MSGPACK = {"Content-Type": "application/msgpack"}


class Net:
    def __init__(self, base: Path) -> None:
        plan = with_consensus(NetworkPlan(1, (IssuerSpec(ISSUER, "某某大学", (TYPE,)),),
                                          chain_id="certledger-test-api", kdf_iterations=1000,
                                          ports=(0,), log_to_files=False), **FAST)
        self.dir = base / "net"
        self.summary = init_network(plan, self.dir, SystemClock(), PASSPHRASE)
        self.cfg = load_config(self.dir / "node-1.toml")
        self.key = keystore.load_key_file(self.cfg.key_file, PASSPHRASE)
        self.helper = Cluster(self.dir, self.summary)  # tx builders only; no processes
        self.node = self.start()

    def start(self) -> Node:
        return Node(self.cfg, self.key, clock=SystemClock(), rng=random.Random(1)).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}"

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kw)

    def wait_height(self, h: int, timeout: float = 15) -> None:
        wait_until(lambda: self.node.chain.head_height >= h, timeout, 0.05, f"height {h}")

    def metric(self, line_start: str) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(tmp_path_factory.mktemp("api"))
    try:
        n.wait_height(1)
        yield n
    finally:
        n.node.stop()


def error(resp: requests.Response) -> tuple[int, str]:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()["error"]
    assert body["message"]
    return resp.status_code, body["code"]


def test_submit_commit_and_query(net: Net) -> None:
    t1, t2 = net.helper.issue_tx("API1"), net.helper.issue_tx("API2")
    r = net.post("/v1/transactions", json=t1.to_json())
    assert r.status_code == 202 and r.json()["status"] == "pending", r.text
    assert r.json()["tx_id"] == t1.id.hex()
    r = net.post("/v1/transactions", data=t2.to_bytes(), headers=MSGPACK)
    assert r.status_code == 202, r.text
    wait_until(lambda: net.get(f"/v1/transactions/{t2.id.hex()}").json()["status"]
               == "committed", 15, 0.05, "t2 committed")
    st = net.get(f"/v1/transactions/{t1.id.hex()}").json()
    assert st["status"] == "committed"
    # Re-submitting a committed tx: the ledger's replay reason, as a conflict.
    assert error(net.post("/v1/transactions", data=t1.to_bytes(), headers=MSGPACK)) == (
        409, "duplicate_tx")
    block = net.get(f"/v1/blocks/{st['height']}").json()
    assert t1.id.hex() in block["tx_ids"]
    assert sm3(bytes.fromhex(block["header_bytes"])).hex() == block["hash"]
    assert net.get("/v1/blocks/latest").json()["height"] >= st["height"]
    assert net.metric("certledger_committed_txs_total") >= 2


def _check_light_client(body: dict[str, Any], cert_id: str) -> None:
    """What a verifier does with GET /v1/certificates: trust nothing but the validator keys."""
    header = BlockHeader.decode(bytes.fromhex(body["header_bytes"]))
    c = body["commit"]
    commit = CommitCertificate(c["height"], c["round"], bytes.fromhex(c["block_hash"]), tuple(
        CommitSig(bytes.fromhex(s["key_id"]), bytes.fromhex(s["signature"]))
        for s in c["signatures"]))
    vs = ValidatorSet.of(Validator(v["name"], bytes.fromhex(v["public_key"]))
                         for v in body["validators"]["validators"])
    commit.verify(header.chain_id, vs, height=header.height, block_hash=header.hash)
    record = None if body["record_bytes"] is None else bytes.fromhex(body["record_bytes"])
    verify_state_proof(cert_key(cert_id), record, SMTProof.from_bytes(
        bytes.fromhex(body["proof"])), header.state_root)


def test_certificate_proof_for_a_light_client(net: Net) -> None:
    tx = net.helper.issue_tx("PROOF1")
    cert_id = tx.body.to_value()["id"]
    assert net.post("/v1/transactions", data=tx.to_bytes(), headers=MSGPACK).status_code == 202
    wait_until(lambda: net.get(f"/v1/certificates/{cert_id}").status_code == 200, 15, 0.05)
    body = net.get(f"/v1/certificates/{cert_id}").json()
    assert body["found"] and body["record"]["status"] == "issued"
    assert body["record"]["issuer"] == ISSUER
    _check_light_client(body, cert_id)
    # Absent: 404, with a non-inclusion proof that checks out too.
    missing = str(CertificateId.build(TYPE, ISSUER, "NOPE9", 1))
    r = net.get(f"/v1/certificates/{missing}")
    assert error(r) == (404, "unknown_certificate")
    _check_light_client(r.json(), missing)
    assert error(net.get("/v1/certificates/not-an-id")) == (400, "bad_identifier")


def test_status_and_metrics(net: Net) -> None:
    s = net.get("/v1/status").json()
    assert s["chain_id"] == "certledger-test-api" and s["is_validator"]
    assert s["height"] >= 1 and len(s["last_block_hash"]) == 64 and len(s["state_root"]) == 64
    assert s["step"] in ("propose", "prevote", "precommit") and s["validators"][0]["name"]
    assert s["mempool"] == {"size": s["mempool"]["size"], "bytes": s["mempool"]["bytes"]}
    text = net.get("/metrics").text
    for name in ("certledger_height", "certledger_round", "certledger_mempool_size",
                 "certledger_committed_txs_total", "certledger_commit_latency_seconds_bucket",
                 "certledger_peers_up", "certledger_dropped_messages_total"):
        assert name in text, name


def _envelope(chain_id: str, key: sm2.PrivateKey, kind: str, payload: bytes) -> bytes:
    return seal(chain_id, kind, payload, key, 1)


def test_junk_is_refused_counted_and_harmless(net: Net) -> None:
    h0 = net.node.chain.head_height
    chain_id = net.node.chain_id
    stranger = sm2.PrivateKey.generate()
    cases = [
        net.post("/v1/consensus", data=b"\x00\x01junk"),
        net.post("/v1/consensus", data=canonical.encode({"not": "a list"})),
        net.post("/v1/consensus", data=seal_batch([])),
        net.post("/v1/consensus", data=seal_batch([b"garbage"])),
        net.post("/v1/consensus", data=seal_batch(
            [_envelope(chain_id, stranger, KIND_CONSENSUS, b"")])),
        net.post("/v1/consensus", data=seal_batch(
            [_envelope("other-chain", net.key, KIND_CONSENSUS, b"")])),
        net.post("/v1/consensus", data=b"\x00" * (net.node.max_consensus_body + 10)),
        net.get("/v1/consensus"),
        net.post("/v1/transactions", data=b"\xc1\xc1", headers=MSGPACK),
        net.post("/v1/transactions", data=b"{not json", headers={
            "Content-Type": "application/json"}),
        net.post("/v1/transactions", json={"kind": "cert.issue"}),
        net.post("/v1/transactions", json=[1, 2, 3]),
        net.post("/v1/transactions", data=b"x", headers={"Content-Type": "text/plain"}),
        net.post("/v1/transactions", data=b"\x00" * (net.node.cfg.api.max_body_bytes + 1),
                 headers=MSGPACK),
        net.get("/v1/transactions/zz"),
        net.get(f"/v1/transactions/{'ab' * 32}"),
        net.get("/v1/blocks/-1"),
        net.get("/v1/blocks/999999999"),
        net.get("/v1/sync/blocks?from=x"),
        net.get("/v1/sync/blocks?from=0&limit=5"),
        net.get("/v1/nowhere"),
    ]
    codes = [error(r) for r in cases]
    assert codes[0][0] == 400 and codes[6] == (413, "too_large") and codes[7][0] == 405
    assert codes[4] == (400, "rejected") and codes[12] == (415, "unsupported_media_type")
    assert codes[13] == (413, "too_large") and codes[15] == (404, "unknown_tx")
    # An undecodable payload sealed by a real validator's key is counted too. Both kinds
    # are covered (their signatures cover what is decoded from the payload), so it cannot
    # even be authenticated: malformed, beside an authentic envelope that is accepted.
    ok = net.post("/v1/consensus", data=seal_batch(
        [seal(chain_id, KIND_CONSENSUS, b"\xc1", net.key, 2**40, covers=[]),
         seal(chain_id, KIND_TXS, b"\xc1", net.key, 2**40 + 1, covers=[]),
         seal(chain_id, KIND_TXS, encode_txs([]), net.key, 2**40 + 2, covers=[])]))
    assert ok.status_code == 202
    assert ok.json() == {"accepted": 1, "rejected": {"malformed": 2}}
    # A forged transaction: bad signature, the ledger's reason code.
    good = net.helper.issue_tx("FORGED")
    forged = replace(good, signature=bytes(64 - 1) + b"\x01")
    assert error(net.post("/v1/transactions", data=forged.to_bytes(), headers=MSGPACK)) == (
        422, "bad_signature")
    text = net.get("/metrics").text
    for label in ("envelope_malformed", "envelope_unknown_sender", "envelope_wrong_chain",
                  "envelope_oversized", "http_404", "http_405"):
        assert f'certledger_dropped_messages_total{{reason="{label}"}}' in text, label
    for label in ("malformed", "bad_signature", "unsupported_media_type", "too_large"):
        assert f'certledger_rejected_txs_total{{reason="{label}"}}' in text, label
    net.wait_height(h0 + 2)  # still deciding


def test_text_that_utf8_cannot_hold_is_a_400_naming_the_field(net: Net) -> None:
    j = net.helper.issue_tx("SURROGATE").to_json()
    for field, changed in (("chain_id", {**j, "chain_id": "x\ud800"}),
                           ("body.id", {**j, "body": {**j["body"], "id": "\udcff"}})):
        resp = net.post("/v1/transactions", json=changed)
        assert error(resp) == (400, "malformed"), field
        assert "lone surrogate" in resp.json()["error"]["message"]
    assert net.get("/v1/status").status_code == 200


def test_numbers_in_paths_and_queries_are_plain_decimals(net: Net) -> None:
    # int() also reads Arabic-Indic digits, underscores and spaces: a client's typo or a
    # probe, never a height.
    for query in ("from=\u0661", "from=1_0", "from=%201%20", "from=1&limit=+5", "from=0x1"):
        assert error(net.get(f"/v1/sync/blocks?{query}")) == (400, "bad_query"), query
    for height in ("\u0661", "1_0", "+1"):
        assert error(net.get(f"/v1/blocks/{height}")) == (400, "bad_height"), height
    assert net.get("/v1/sync/blocks?from=1&limit=2").status_code == 200


def test_msgpack_tx_json_round_trip_and_status_endpoint_pending(net: Net) -> None:
    tx: Transaction = net.helper.issue_tx("PEND1")
    r = net.post("/v1/transactions", data=tx.to_bytes(), headers=MSGPACK)
    assert r.status_code == 202
    s = net.get(f"/v1/transactions/{tx.id.hex()}").json()
    assert s["status"] in ("pending", "committed")
    again = net.post("/v1/transactions", data=tx.to_bytes(), headers=MSGPACK)
    assert again.status_code in (202, 409)  # pending: idempotent; committed: duplicate


def test_sync_serves_and_an_observer_catches_up(net: Net, tmp_path: Path) -> None:
    net.wait_height(3)
    raw = net.get("/v1/sync/blocks?from=1&limit=2")
    assert raw.headers["Content-Type"] == "application/msgpack"
    body = msgpack.unpackb(raw.content)
    assert body["head"] >= 3 and len(body["blocks"]) == 2
    # A follower with its own (non-validator) key and the validator as its only peer.
    key_file = tmp_path / "observer.key"
    keystore.write_key_file(key_file, sm2.PrivateKey.generate(), PASSPHRASE, iterations=1000)
    cfg = replace(net.cfg, name="observer", data_dir=tmp_path / "data", key_file=key_file,
                  peers={"node-1": net.url}, api=replace(net.cfg.api, port=0))
    obs = Node(cfg, keystore.load_key_file(key_file, PASSPHRASE), clock=SystemClock(),
               rng=random.Random(2)).start()
    try:
        target = net.node.chain.head_height
        wait_until(lambda: obs.chain.head_height >= target, 20, 0.05, "observer caught up")
        assert obs.chain.block(target) == net.node.chain.block(target)
        assert not obs.status()["is_validator"]
        # The counter moves just after the head (the commit's mempool update comes between).
        wait_until(lambda: obs.metrics.committed_blocks.value("sync") >= target, 5, 0.02,
                   "sync commits counted")
    finally:
        obs.stop()


def test_restart_resumes_from_disk(net: Net) -> None:
    net.node.stop()
    before = net.node.chain.head_height  # what was committed when it stopped
    net.node = net.start()  # same data directory: chain reopened and checked, WAL replayed
    assert net.node.chain.head_height == before
    net.wait_height(before + 2)
