"""``--wait`` sends a lost transaction again (node/cli_issuer.py ``wait_committed``).

A node that accepts a tx (202) and crashes before gossiping it loses it: mempools are
not durable. A fake node (no cluster) plays that: it answers ``pending`` for the first
submissions it is told to lose and then forgets them, so ``/v1/transactions/<id>``
answers ``unknown_tx``. The CLI must send the *same signed bytes* again and report
the resend, must not resend a tx the node knows, must stop at once with one error
line when the resent tx is refused, and must stay bounded by ``--wait-timeout``. The
last test does it for real: four nodes, the one holding the only copy SIGKILLed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from certificates import keystore, sm2
from certificates.identifiers import CertificateId
from ledger.tx import Transaction
from network.errors import NodeRequestError
from node import cli_issuer
from node.cli import cli
from tests.cluster import ISSUER, PASSPHRASE, ROOT, TYPE, Cluster
from tests.test_document import make_document
from tests.test_issue_batch_failures import ids, write_csv

PASS = "fake-node-passphrase"
_CLI = "import sys; from node.cli import main; sys.exit(main())"


class LossyNode:
    """Just enough of ``NodeClient``: loses the first ``lose`` submissions."""

    current_url = "http://fake-node"

    def __init__(self, lose: int = 0, refuse_resend: str | None = None) -> None:
        self.lose = lose
        self.refuse_resend = refuse_resend  # error code for any submission after the first
        self.received: list[bytes] = []
        self.kept: set[str] = set()

    def status(self) -> dict[str, Any]:
        return {"chain_id": "fake-chain"}

    def submit_tx(self, raw: bytes) -> dict[str, Any]:
        tid = Transaction.from_bytes(raw).id.hex()
        self.received.append(raw)
        if self.refuse_resend and len(self.received) > 1:
            raise NodeRequestError(409, self.refuse_resend, "certificate already exists",
                                   url=self.current_url)
        if self.lose > 0:
            self.lose -= 1  # accepted, then lost with the node's mempool
        else:
            self.kept.add(tid)
        return {"tx_id": tid, "status": "pending"}

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        if tx_id in self.kept:
            return {"status": "committed", "height": 7}
        raise NodeRequestError(404, "unknown_tx", f"no transaction {tx_id}",
                               url=self.current_url)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuer.key"
    keystore.write_key_file(path, sm2.PrivateKey.generate(), PASS, iterations=1000)
    return path


@pytest.fixture(autouse=True)
def quick_resend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_issuer, "_RESEND_AFTER_S", 0.05)


def run(node: LossyNode, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setattr(cli_issuer, "_client", lambda nodes, timeout: node)
    return CliRunner().invoke(cli, [*args, "--node", node.current_url, "--wait"],
                              env={keystore.PASSPHRASE_ENV: PASS})


def issue(node: LossyNode, monkeypatch: pytest.MonkeyPatch, key_file: Path, tmp_path: Path,
          *extra: str) -> Result:
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(make_document().to_json_dict(), ensure_ascii=False),
                   encoding="utf-8")
    return run(node, monkeypatch, "issue", str(doc), "--key", str(key_file), *extra)


def test_a_tx_the_node_keeps_is_not_sent_again(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LossyNode()
    res = issue(node, monkeypatch, key_file, tmp_path)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["status"] == "committed" and "resent" not in out
    assert len(node.received) == 1


def test_a_lost_tx_is_sent_again_with_the_same_bytes(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LossyNode(lose=2)
    res = issue(node, monkeypatch, key_file, tmp_path)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["status"] == "committed" and out["height"] == 7 and out["resent"] == 2
    assert len(node.received) == 3 and len(set(node.received)) == 1
    assert out["tx_id"] == Transaction.from_bytes(node.received[0]).id.hex()


def test_a_lost_batch_is_sent_again_and_only_it(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LossyNode(lose=1)
    csv_path = write_csv(tmp_path / "b.csv", ids("RS0001", "RS0002", "RS0003"))
    res = run(node, monkeypatch, "issue-batch", str(csv_path), "--key", str(key_file),
              "--wallet-dir", str(tmp_path / "w"), "--batch-size", "2")
    assert res.exit_code == 0, res.output
    txs = json.loads(res.stdout)["transactions"]
    assert [t.get("resent") for t in txs] == [1, None]
    assert [t["status"] for t in txs] == ["committed", "committed"]
    assert len(node.received) == 3 and node.received[0] == node.received[2]


def test_a_resent_tx_that_is_refused_stops_the_wait_at_once(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LossyNode(lose=1, refuse_resend="duplicate_id")
    res = issue(node, monkeypatch, key_file, tmp_path, "--wait-timeout", "60")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "was dropped before it committed" in lines[0], res.stderr
    assert "duplicate_id" in lines[0] or "already exists" in lines[0], lines[0]
    assert len(node.received) == 2


def test_a_tx_lost_every_time_still_ends_at_the_wait_timeout(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = LossyNode(lose=10_000)
    res = issue(node, monkeypatch, key_file, tmp_path, "--wait-timeout", "1")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "not committed within 1s" in lines[0], res.stderr
    assert "unknown, resent" in lines[0]
    assert len(node.received) >= 2 and len(set(node.received)) == 1


# --------------------------------------------------------------------------- real nodes


def cluster_document(serial: str) -> dict[str, Any]:
    t0 = 1_782_864_000
    return {"id": str(CertificateId.build(TYPE, ISSUER, serial, 1)), "type": TYPE,
            "issuer": ISSUER, "holder": f"holder-{serial}", "fields": {"name": "李明"},
            "issued_at": t0, "valid_from": t0, "valid_until": None, "supersedes": None}


@pytest.mark.integration
def test_the_node_holding_the_only_copy_dies_and_the_certificate_still_commits(
        tmp_path: Path) -> None:
    """node-1 takes the tx but cannot pass it on (its outgoing peer links are cut), then
    is SIGKILLed: the tx is gone. ``issue --wait`` fails over to node-2, finds the tx
    unknown there, sends it again, and it commits on the other three."""
    with Cluster.create(tmp_path / "net") as c:
        c.proxy_links()
        c.start()
        c.wait_height(1, timeout=40)
        for dst in ("node-2", "node-3", "node-4"):
            c.links[("node-1", dst)].cut("refuse")
        doc = tmp_path / "doc.json"
        serial = "RESEND0001"
        doc.write_text(json.dumps(cluster_document(serial), ensure_ascii=False),
                       encoding="utf-8")
        argv = ["issue", str(doc), "--key", str(c.dir / "keys" / f"issuer-{ISSUER}.key"),
                "--node", c.url("node-1"), "--node", c.url("node-2"), "--timeout", "3",
                "--wait", "--wait-timeout", "90"]
        env = {**os.environ, keystore.PASSPHRASE_ENV: PASSPHRASE, "CERTLEDGER_NODE": ""}
        proc = subprocess.Popen([sys.executable, "-c", _CLI, *argv], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while c.metrics("node-1").get("certledger_mempool_size", 0) < 1:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "node-1 never held the tx"
                time.sleep(0.05)
            c.kill("node-1")
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 0, stderr.decode()
        out = json.loads(stdout)
        assert out["status"] == "committed" and out["resent"] >= 1, out
        committed = c.get("node-3", f"/v1/transactions/{out['tx_id']}").json()
        assert committed["status"] == "committed", committed
