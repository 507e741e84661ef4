"""Four real validator processes on loopback (tests/cluster.py): the whole system.

One run covers: start-up and steady commits; certificate transactions submitted
to different nodes (JSON and msgpack) committed everywhere; /v1/status and
/metrics; junk to /v1/consensus and /v1/transactions answered with 4xx, counted,
and harmless; a validator stopped with SIGTERM (exit 0) while the other three
(still a quorum) go on, then restarted and caught up through block sync; and at
the end identical block hashes and state roots on every node. Every wait is
bounded; cleanup signals only the pids this test started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from certificates import canonical, sm2
from ledger.tx import Transaction
from network.envelope import seal, seal_batch
from network.testing import free_port
from node.wire import KIND_CONSENSUS, encode_messages
from tests.cluster import Cluster

pytestmark = pytest.mark.integration
MSGPACK = {"Content-Type": "application/msgpack"}


def submit(c: Cluster, name: str, tx: Transaction, as_json: bool) -> None:
    if as_json:
        r = c.post(name, "/v1/transactions", json=tx.to_json())
    else:
        r = c.post(name, "/v1/transactions", data=tx.to_bytes(), headers=MSGPACK)
    assert r.status_code == 202, (name, r.status_code, r.text)
    assert r.json() == {"tx_id": tx.id.hex(), "status": "pending", "new": True}


def wait_committed(c: Cluster, txs: list[Transaction], names: list[str],
                   timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for tx in txs:
        for n in names:
            while c.get(n, f"/v1/transactions/{tx.id.hex()}").json().get("status") \
                    != "committed":
                assert time.monotonic() < deadline, f"{tx.id.hex()} not committed on {n}"
                time.sleep(0.1)


def dropped(c: Cluster, name: str) -> dict[str, float]:
    out = {}
    for line in c.get(name, "/metrics").text.splitlines():
        if line.startswith("certledger_dropped_messages_total{") or \
                line.startswith("certledger_rejected_txs_total{"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_four_validator_cluster(tmp_path: Path) -> None:
    with Cluster.create(tmp_path, validators=4) as c:
        c.start()
        names = c.names
        c.wait_height(2, timeout=40)

        # Certificates through the API of every node, both encodings.
        txs = [c.issue_tx(f"CLU{i}") for i in range(12)]
        for i, tx in enumerate(txs):
            submit(c, names[i % 4], tx, as_json=i % 2 == 0)
        wait_committed(c, txs, names)

        # Each node says at start which SM2 check and SMT update it runs: OpenSSL's SM2
        # (it releases the GIL) and the C update, on an install that built it.
        for n in names:
            started = [json.loads(line) for line in c.log(n, 100_000).splitlines()
                       if '"node started"' in line]
            assert [(s["sm2_verify"], s["smt_update"]) for s in started] == [("openssl", "c")]

        # Status and metrics.
        for n in names:
            s = c.status(n)
            assert s["node"] == n and s["is_validator"] and s["peers_up"] == 3
            assert len(s["validators"]) == 4 and s["mempool"]["size"] >= 0
            text = c.get(n, "/metrics").text
            assert "certledger_committed_txs_total" in text
            assert "certledger_commit_latency_seconds_count" in text

        # Junk at one node: 4xx JSON, counted, and the cluster keeps going.
        victim = names[2]
        junk = [
            c.post(victim, "/v1/consensus", data=b"\xff\xfe junk"),
            c.post(victim, "/v1/consensus", data=canonical.encode([b"x", b"y"])),
            c.post(victim, "/v1/consensus", data=seal_batch([seal(
                c.chain_id, KIND_CONSENSUS, b"", sm2.PrivateKey.generate(), 1)])),
            c.post(victim, "/v1/consensus", data=seal_batch([canonical.encode({
                "v": 1, "chain": c.chain_id, "sender": bytes.fromhex(
                    c.summary["validators"][0]["key_id"]), "seq": 7, "kind": KIND_CONSENSUS,
                "payload": encode_messages([]), "sig": b"\x01" * 64})])),  # a forged signature
            c.post(victim, "/v1/transactions", data=b"\x80", headers=MSGPACK),
            c.post(victim, "/v1/transactions", data=b"[]",
                   headers={"Content-Type": "application/json"}),
        ]
        for r in junk:
            assert 400 <= r.status_code < 500 and r.json()["error"]["code"], r.text
        counts = dropped(c, victim)
        assert counts.get('certledger_dropped_messages_total{reason="envelope_malformed"}', 0) >= 2
        assert counts.get(
            'certledger_dropped_messages_total{reason="envelope_unknown_sender"}', 0) >= 1
        assert counts.get(
            'certledger_dropped_messages_total{reason="envelope_bad_signature"}', 0) >= 1
        assert counts.get('certledger_rejected_txs_total{reason="malformed"}', 0) >= 2
        # GmSSL reports failed verifications on fd 2; `node run` sends that to /dev/null.
        assert "sm2" not in (c.dir / "logs" / f"{victim}.out").read_text()
        h = max(c.heights().values())
        c.wait_height(h + 2, timeout=30)

        # One validator stops (graceful: exit 0); three of four are still a quorum.
        assert c.stop([names[3]]) == {names[3]: 0}
        more = [c.issue_tx(f"CLULATE{i}") for i in range(4)]
        for i, tx in enumerate(more):
            submit(c, names[i % 3], tx, as_json=False)
        wait_committed(c, more, names[:3])
        ahead = max(c.heights(names[:3]).values())

        # It comes back and catches up on the heights it missed (block sync + WAL).
        c.start([names[3]])
        c.wait_height(ahead + 1, timeout=40)
        wait_committed(c, more, [names[3]], timeout=20)

        # Agreement: the same blocks, hence the same state roots, everywhere.
        common = min(c.heights().values())
        hashes = {n: [c.get(n, f"/v1/blocks/{k}").json()["hash"] for k in range(1, common + 1)]
                  for n in names}
        assert all(hs == hashes[names[0]] for hs in hashes.values())
        roots = {c.get(n, f"/v1/blocks/{common}").json()["header"]["state_root"] for n in names}
        assert len(roots) == 1

        codes = c.stop()
        assert codes == {n: 0 for n in names}, {n: c.log(n) for n in names}
        for n in names:
            log = (c.dir / "logs" / f"{n}.log").read_text()
            # Next-height proposals are held until our commit (node.effects): never refused.
            assert "refusing proposed block" not in log and '"level": "error"' not in log, n


def test_cluster_script_start_status_stop(tmp_path: Path) -> None:
    """scripts/cluster.sh on a one-validator network: start, status, stop (own pids only)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "cluster.sh"
    net = tmp_path / "net"
    env = {**os.environ, "VALIDATORS": "1", "KDF_ITERATIONS": "1000",
           "BASE_PORT": str(free_port()), "STOP_TIMEOUT": "10"}
    env.pop("CERTLEDGER_PASSPHRASE", None)  # use the generated dev passphrase in net/env

    def run(cmd: str) -> str:
        res = subprocess.run([str(script), cmd, str(net)], env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    try:
        assert "node-1 started" in run("start")
        pid = int((net / "pids" / "node-1.pid").read_text())
        deadline = time.monotonic() + 30
        while "height 0 " in (out := run("status")) or "no answer" in out:
            assert time.monotonic() < deadline, out
            time.sleep(0.3)
        assert "node-1: running" in out
    finally:
        stopped = run("stop")
    assert "node-1 stopped" in stopped and not list((net / "pids").iterdir())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text()
    assert "node-1: stopped" in run("status")
