"""The issuer commands (node/cli_issuer.py) against a real 4-validator cluster.

One cluster serves the whole module (tests/cluster.py: real ``certledger node run``
processes on loopback). Commands run in-process through click's CliRunner with
the cluster's passphrase in the environment, except one that runs the installed
entry point to show a user mistake is one line on stderr. Every wait is bounded
(``--wait-timeout``); the chain is checked through the node API, not the CLI.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from certificates import keystore, sm2
from certificates.document import CommittedDocument
from certificates.identifiers import CertificateId
from network.testing import free_port
from node.cli import cli
from tests.cluster import ISSUER, PASSPHRASE, TYPE, Cluster

pytestmark = pytest.mark.integration
T0 = 1_782_864_000  # 2026-07-01, epoch seconds as documents carry them


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.create(tmp_path_factory.mktemp("issuer-cli")) as c:
        c.start()
        yield c


def cid(serial: str, version: int = 1) -> str:
    return str(CertificateId.build(TYPE, ISSUER, serial, version))


def document(serial: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": cid(serial, version), "type": TYPE, "issuer": ISSUER,
            "holder": f"holder-{serial}", "fields": {"name": "李明", "degree": "工学学士"},
            "issued_at": T0, "valid_from": T0, "valid_until": None, "supersedes": None,
            **extra}


def run(net: Cluster | None, *args: str, ok: bool = True) -> Result:
    env = {keystore.PASSPHRASE_ENV: PASSPHRASE, "CERTLEDGER_NODE": ""}
    argv = list(args)
    if net is not None and args[0] != "tx" and "--key" not in argv:
        argv += ["--key", str(net.dir / "keys" / f"issuer-{ISSUER}.key")]
    if net is not None and "--node" not in argv:  # failover order: node-2 first
        argv += ["--node", net.url("node-2"), "--node", net.url("node-1")]
    result = CliRunner().invoke(cli, argv, env=env)
    if ok:
        assert result.exit_code == 0, (argv, result.output, result.stderr)
    else:
        assert result.exit_code != 0, (argv, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    return result


def out(result: Result) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def record(net: Cluster, cert_id: str) -> dict[str, Any]:
    """The record as node-3 holds it, once node-3 has what node-2 (asked by the CLI) has."""
    net.wait_height(net.heights(["node-2"])["node-2"], timeout=20, names=["node-3"])
    body: dict[str, Any] = net.get("node-3", f"/v1/certificates/{cert_id}").json()
    return body


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- happy paths


def test_issue_wait_tx_status_and_retry(net: Cluster, tmp_path: Path) -> None:
    doc = write(tmp_path / "diploma.json", document("CLI001"))
    got = out(run(net, "issue", str(doc), "--wait", "--wait-timeout", "30"))
    assert got["status"] == "committed" and got["height"] >= 1 and got["id"] == cid("CLI001")
    wallet = tmp_path / "diploma.wallet.json"  # the default: beside the document
    assert got["wallet"] == str(wallet)
    assert stat.S_IMODE(wallet.stat().st_mode) == 0o600
    committed = CommittedDocument.from_wallet_dict(json.loads(wallet.read_text()))
    assert committed.digest.hex() == got["digest"]
    rec = record(net, got["id"])
    assert rec["found"] and rec["record"]["digest"] == got["digest"]
    assert rec["record"]["status"] == "issued"

    st = out(run(net, "tx", "status", got["tx_id"]))
    assert st["status"] == "committed" and st["height"] == got["height"]

    # A retry reuses the wallet's salts (same digest), so the ledger sees the same id again.
    again = run(net, "issue", str(doc), ok=False)
    assert "duplicate_id" in again.stderr


def test_issue_batch_csv(net: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "type", "issuer", "holder", "issued_at", "valid_from",
                    "valid_until", "name", "major"])
        for i in range(50):
            w.writerow([cid(f"CSV{i:03d}"), TYPE, ISSUER, f"h{i}", T0, T0,
                        "" if i % 2 else T0 + 86_400, f"学生{i}", "" if i % 3 else "数学"])
    got = out(run(net, "issue-batch", str(path), "--wallet-dir", str(tmp_path / "w"),
                  "--batch-size", "20", "--wait", "--wait-timeout", "30"))
    assert got["certificates"] == 50 and got["status"] == "committed"
    assert [t["records"] for t in got["transactions"]] == [20, 20, 10]
    wallets = sorted((tmp_path / "w").iterdir())
    assert len(wallets) == 50
    for i in (0, 1, 49):
        w = CommittedDocument.from_wallet_dict(
            json.loads((tmp_path / "w" / f"{cid(f'CSV{i:03d}')}.json").read_text()))
        assert ("major" in w.document.fields) == (i % 3 == 0)
        assert w.document.valid_until == (None if i % 2 else T0 + 86_400)
        rec = record(net, w.document.id)
        assert rec["record"]["digest"] == w.digest.hex()


def test_issue_batch_jsonl(net: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    lines = [json.dumps(document(f"JSL{i:03d}"), ensure_ascii=False) for i in range(50)]
    path.write_text("\n".join(lines[:25]) + "\n\n" + "\n".join(lines[25:]) + "\n",
                    encoding="utf-8")
    got = out(run(net, "issue-batch", str(path), "--wallet-dir", str(tmp_path / "w"),
                  "--wait", "--wait-timeout", "30"))
    assert got["certificates"] == 50 and len(got["transactions"]) == 1
    h = got["transactions"][0]["height"]
    assert record(net, cid("JSL049"))["record"]["issued_height"] == h


def test_suspend_reinstate_revoke(net: Cluster, tmp_path: Path) -> None:
    doc = write(tmp_path / "lic.json", document("ST001"))
    c = out(run(net, "issue", str(doc), "--wait"))["id"]
    for cmd, status in (("suspend", "suspended"), ("reinstate", "issued"),
                        ("revoke", "revoked")):
        args = [cmd, c, "--wait", "--wait-timeout", "30"]
        if cmd != "reinstate":
            args += ["--reason", f"{cmd} for test"]
        got = out(run(net, *args))
        assert got["kind"] == f"cert.{cmd}" and got["status"] == "committed"
        assert record(net, c)["record"]["status"] == status
    assert record(net, c)["record"]["status_reason"] == "revoke for test"
    bad = run(net, "reinstate", c, ok=False)  # revoked is final
    assert "illegal_status_change" in bad.stderr


def test_supersede(net: Cluster, tmp_path: Path) -> None:
    old = out(run(net, "issue", str(write(tmp_path / "v1.json", document("SUP1"))),
                  "--wait"))["id"]
    new_doc = write(tmp_path / "v2.json", document("SUP1", version=2))
    got = out(run(net, "supersede", old, str(new_doc), "--wallet-out",
                  str(tmp_path / "new.wallet.json"), "--wait"))
    assert got["id"] == cid("SUP1", 2) and got["supersedes"] == old
    wallet = CommittedDocument.from_wallet_dict(
        json.loads((tmp_path / "new.wallet.json").read_text()))
    assert wallet.document.supersedes == old  # filled in before the salts were drawn
    assert record(net, old)["record"]["status"] == "superseded"
    assert record(net, got["id"])["record"]["digest"] == wallet.digest.hex()
    other = write(tmp_path / "v3.json", document("SUP2", version=2, supersedes=cid("SUP9")))
    assert "not" in run(net, "supersede", old, str(other), ok=False).stderr



def test_issue_batch_refused_part_way(net: Cluster, tmp_path: Path) -> None:
    """A new id, one already on the chain, a new one, one per transaction: the first is
    accepted and said so, the refused row and the row never sent keep no wallet."""
    taken = out(run(net, "issue", str(write(tmp_path / "t.json", document("PART2"))),
                    "--wait", "--wait-timeout", "30"))["id"]
    path = tmp_path / "part.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "type", "issuer", "holder", "issued_at", "valid_from",
                    "valid_until", "name"])
        for c in (cid("PART1"), taken, cid("PART3")):
            w.writerow([c, TYPE, ISSUER, "h", T0, T0, "", "x"])
    wallets = tmp_path / "w"
    r = run(net, "issue-batch", str(path), "--wallet-dir", str(wallets), "--batch-size", "1",
            ok=False)
    got = out(r)
    assert "HTTP 409 duplicate_id" in r.stderr and "1 earlier transaction(s)" in r.stderr
    assert got["transactions"][0]["tx_id"] in r.stderr and got["accepted_certificates"] == 1
    assert {p.name for p in wallets.iterdir()} == {f"{cid('PART1')}.json"}
    tid = got["transactions"][0]["tx_id"]
    assert out(run(net, "tx", "status", tid)).get("status") in ("pending", "committed")


# --------------------------------------------------------------------------- user mistakes


def test_bad_files_name_the_line(net: Cluster, tmp_path: Path) -> None:
    header = "id,type,issuer,holder,issued_at,valid_from,valid_until,name\n"
    good = f"{cid('BAD1')},{TYPE},{ISSUER},h,{T0},{T0},,x\n"
    cases = {
        "row.csv": (header + good + f"{cid('BAD2')},{TYPE},{ISSUER},h,soon,{T0},,x\n",
                    "line 3: issued_at must be an integer"),
        "short.csv": (header + good + f"{cid('BAD2')},{TYPE}\n", "line 3: 2 values"),
        "head.csv": ("id,type,issuer,name\n" + good, "line 1: the header lacks holder"),
        "ident.csv": (header + f"1.2.156.3005.2.X,{TYPE},{ISSUER},h,{T0},{T0},,x\n", "line 2"),
        "dup.csv": (header + good + good, "line 3: id"),
        "doc.jsonl": (json.dumps(document("J1")) + "\n{not json\n", "line 2: not JSON"),
        "field.jsonl": (json.dumps({**document("J2"), "fields": {"Bad": 1}}) + "\n",
                        "line 1: field name"),
        "x.txt": ("whatever", "expected a .jsonl or .csv"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        r = run(net, "issue-batch", str(path), "--wallet-dir", str(tmp_path / "w"), ok=False)
        assert message in r.stderr, (name, r.stderr)
    assert not (tmp_path / "w").exists()  # nothing written before the input was sound
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert "not a JSON document" in run(net, "issue", str(broken), ok=False).stderr


def test_node_errors_are_one_line(net: Cluster, tmp_path: Path) -> None:
    doc = write(tmp_path / "d.json", document("NET1"))
    dead = f"http://127.0.0.1:{free_port()}"
    r = run(net, "issue", str(doc), "--node", dead, ok=False)
    assert dead in r.stderr and "no node answered" in r.stderr

    stranger = tmp_path / "stranger.key"  # a key no genesis registered
    keystore.write_key_file(stranger, sm2.PrivateKey.generate(), PASSPHRASE, iterations=1000)
    r = run(net, "issue", str(doc), "--key", str(stranger), "--node", net.url("node-1"),
            "--wallet-out", str(tmp_path / "s.wallet.json"), ok=False)
    assert "HTTP 422 unknown_signer" in r.stderr

    assert "unknown_tx" in run(net, "tx", "status", "ab" * 32, ok=False).stderr
    assert "64 hex characters" in run(net, "tx", "status", "xyz", ok=False).stderr
    r = run(net, "revoke", "1.2.156.3005.2.NOPE", "--reason", "x", ok=False)
    assert "dot-separated parts" in r.stderr

    env = {**os.environ, keystore.PASSPHRASE_ENV: "wrong"}
    proc = subprocess.run(  # the installed entry point, as an issuer would run it
        [sys.executable, "-c", "import sys; from node.cli import main; sys.exit(main())",
         "suspend", cid("NET1"), "--reason", "r", "--node", net.url("node-1"), "--key",
         str(net.dir / "keys" / f"issuer-{ISSUER}.key")],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "Error: wrong passphrase, or the key file was altered"]
