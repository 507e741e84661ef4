"""issue-batch stopped part-way, and input files the batch reader must accept or name.

A fake node (no cluster): ``node.cli_issuer._client`` is replaced by an object that
keeps the anchored ids and refuses a batch the way the ledger does (HTTP 409
duplicate_id), or times out. What is checked is what the operator is left with:
the JSON summary on stdout (what was accepted), one error line saying so, and which
wallets exist afterwards (none for a refused or never-sent batch, unless it existed
before the run; all of them when the outcome is unknown).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from certificates import keystore, sm2
from certificates.document import CommittedDocument
from certificates.errors import DocumentError
from ledger.tx import Transaction
from network.errors import NodeRequestError, NodeUnavailableError
from node import cli_issuer, issuer_files
from node.cli import cli
from tests.ledger_fixtures import ISSUER_A, TYPE_DIPLOMA, cert_id
from tests.test_document import make_document

PASS = "fake-node-passphrase"
T0 = 1_782_864_000
HEADER = ["id", "type", "issuer", "holder", "issued_at", "valid_from", "valid_until", "name"]


class FakeNode:
    """Just enough of ``NodeClient`` for issue-batch."""

    current_url = "http://fake-node"

    def __init__(self, on_chain: set[str] | None = None, fail_on: str | None = None) -> None:
        self.on_chain = set(on_chain or ())
        self.fail_on = fail_on  # an id whose batch times out (outcome unknown)
        self.accepted: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"chain_id": "fake-chain"}

    def submit_tx(self, raw: bytes) -> dict[str, Any]:
        tx = Transaction.from_bytes(raw)
        ids = [str(r.id) for r in tx.body.records]  # type: ignore[union-attr]
        if self.fail_on in ids:
            raise NodeUnavailableError([(self.current_url, "timed out")])
        for i, rid in enumerate(ids):
            if rid in self.on_chain:
                raise NodeRequestError(409, "duplicate_id", f"records[{i}]: certificate {rid} "
                                       "already exists", url=self.current_url)
        self.on_chain.update(ids)
        self.accepted.append(tx.id.hex())
        return {"tx_id": tx.id.hex(), "status": "pending"}

    def tx_status(self, tx_id: str) -> dict[str, Any]:
        return {"status": "committed", "height": 1}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuer.key"
    keystore.write_key_file(path, sm2.PrivateKey.generate(), PASS, iterations=1000)
    return path


def ids(*serials: str) -> list[str]:
    return [str(cert_id(s)) for s in serials]


def write_csv(path: Path, cert_ids: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i, c in enumerate(cert_ids):
            w.writerow([c, TYPE_DIPLOMA, ISSUER_A, f"h{i}", T0, T0, "", f"n{i}"])
    return path


def issue_batch(node: FakeNode, monkeypatch: pytest.MonkeyPatch, key_file: Path, file: Path,
                wallets: Path, *extra: str) -> Result:
    monkeypatch.setattr(cli_issuer, "_client", lambda nodes, timeout: node)
    return CliRunner().invoke(
        cli, ["issue-batch", str(file), "--key", str(key_file), "--wallet-dir", str(wallets),
              "--node", node.current_url, *extra],
        env={keystore.PASSPHRASE_ENV: PASS})


def error_line(res: Result) -> str:
    assert res.exit_code == 1, (res.exit_code, res.output, res.exc_info)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0]


def summary(res: Result) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(res.stdout)
    return value


def wallet_names(wallets: Path) -> set[str]:
    return {p.stem for p in wallets.iterdir()} if wallets.exists() else set()


# --------------------------------------------------------------------------- defect 1


def test_refused_batch_mid_run_reports_progress_and_leaves_no_stray_wallets(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new1, taken, new2 = ids("FAIL001", "FAIL002", "FAIL003")
    node = FakeNode(on_chain={taken})
    wallets = tmp_path / "w"
    res = issue_batch(node, monkeypatch, key_file, write_csv(tmp_path / "b.csv",
                      [new1, taken, new2]), wallets, "--batch-size", "1")
    line = error_line(res)
    assert "HTTP 409 duplicate_id" in line
    assert "1 earlier transaction(s) with 1 certificate(s) were already accepted" in line
    assert node.accepted[0] in line and "were not submitted" in line
    got = summary(res)
    assert got["status"] == "incomplete" and got["accepted_certificates"] == 1
    assert [t["tx_id"] for t in got["transactions"]] == node.accepted
    assert got["transactions"][0]["first_id"] == new1
    assert got["failed"]["outcome"] == "refused" and got["failed"]["first_id"] == taken
    assert got["not_submitted"] == 1
    # Only the accepted certificate has a wallet: no fresh salts for the id on the chain
    # (they could never verify), none for the row never sent.
    assert wallet_names(wallets) == {new1}


def test_rerun_of_an_issued_file_into_a_fresh_dir_writes_no_wallets(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cids = ids("RERUN01", "RERUN02", "RERUN03")
    node = FakeNode(on_chain=set(cids))
    wallets = tmp_path / "fresh"
    res = issue_batch(node, monkeypatch, key_file, write_csv(tmp_path / "b.csv", cids), wallets)
    line = error_line(res)
    assert "duplicate_id" in line and "no earlier transaction was accepted" in line
    assert "3 wallet(s) this run wrote for it were removed" in line
    assert summary(res)["transactions"] == []
    assert wallet_names(wallets) == set()


def test_wallets_from_before_the_run_are_never_removed(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cids = ids("KEEP001", "KEEP002")
    file = write_csv(tmp_path / "b.csv", cids)
    wallets = tmp_path / "w"
    first = issue_batch(FakeNode(), monkeypatch, key_file, file, wallets)
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in wallets.iterdir()}
    extra = ids("KEEP003")
    node = FakeNode(on_chain=set(cids))  # a retry of the same file plus one new row
    res = issue_batch(node, monkeypatch, key_file, write_csv(tmp_path / "c.csv", cids + extra),
                      wallets)
    assert "duplicate_id" in error_line(res)
    assert {p.name: p.read_bytes() for p in wallets.iterdir()} == before  # reused, kept


def test_unknown_outcome_keeps_the_wallets(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cids = ids("UNK0001", "UNK0002", "UNK0003", "UNK0004")
    node = FakeNode(fail_on=cids[2])
    wallets = tmp_path / "w"
    res = issue_batch(node, monkeypatch, key_file, write_csv(tmp_path / "b.csv", cids),
                      wallets, "--batch-size", "2")
    line = error_line(res)
    assert "no node answered" in line and "may or may not have been committed" in line
    assert "2 earlier transaction(s)" not in line and "1 earlier transaction(s)" in line
    got = summary(res)
    assert got["failed"]["outcome"] == "unknown" and got["failed"]["tx_id"] in line
    assert got["not_submitted"] == 0
    assert wallet_names(wallets) == set(cids)  # the timed-out batch may have landed
    for c in cids:  # and each wallet is a sound one
        CommittedDocument.from_wallet_dict(json.loads((wallets / f"{c}.json").read_text()))


def test_a_wallet_for_another_document_stops_the_run_before_anything_is_sent(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cids = ids("PRE0001", "PRE0002", "PRE0003")
    wallets = tmp_path / "w"
    wallets.mkdir()
    (wallets / f"{cids[2]}.json").write_text("{}", encoding="utf-8")  # not a wallet for it
    node = FakeNode()
    res = issue_batch(node, monkeypatch, key_file, write_csv(tmp_path / "b.csv", cids),
                      wallets, "--batch-size", "1")
    assert res.exit_code != 0 and res.stdout == ""
    assert node.accepted == [] and wallet_names(wallets) == {cids[2]}


# --------------------------------------------------------------------------- defects 2, 3


def _jsonl_line(serial: str) -> str:
    doc = {"id": str(cert_id(serial)), "type": TYPE_DIPLOMA, "issuer": ISSUER_A,
           "holder": "h", "fields": {"name": "李明"}, "issued_at": T0, "valid_from": T0,
           "valid_until": None, "supersedes": None}
    return json.dumps(doc, ensure_ascii=False) + "\n"


def test_jsonl_with_a_bom_is_read_like_a_csv_with_one(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + (_jsonl_line("BOM0001") + _jsonl_line("BOM0002"))
                     .encode("utf-8"))
    docs = issuer_files.read_documents(path)
    assert [d.id for d in docs] == ids("BOM0001", "BOM0002")
    csv_path = write_csv(tmp_path / "bom.csv", ids("BOM0003"))
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    assert [d.id for d in issuer_files.read_documents(csv_path)] == ids("BOM0003")


def test_jsonl_bom_elsewhere_than_the_start_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mid.jsonl"
    path.write_text(_jsonl_line("BOM0004") + "\ufeff" + _jsonl_line("BOM0005"), encoding="utf-8")
    with pytest.raises(DocumentError, match="line 2"):
        issuer_files.read_documents(path)


def test_csv_field_over_the_limit_names_its_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", ids("BIG0001"))
    with path.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow([str(cert_id("BIG0002")), TYPE_DIPLOMA, ISSUER_A, "h", T0, T0,
                                 "", "x" * (csv.field_size_limit() + 1)])
    with pytest.raises(DocumentError, match=r"big\.csv line 3: bad CSV: field larger") as e:
        issuer_files.read_documents(path)
    assert "\n" not in str(e.value)


def test_csv_header_over_the_limit_names_line_1(tmp_path: Path) -> None:
    path = tmp_path / "head.csv"
    path.write_text(",".join(HEADER) + "," + "y" * (csv.field_size_limit() + 1) + "\n",
                    encoding="utf-8")
    with pytest.raises(DocumentError, match=r"head\.csv line 1: bad CSV: field larger"):
        issuer_files.read_documents(path)


# --------------------------------------------------------------------------- issue, supersede


class RefusingNode:
    """A node that refuses every transaction outright (HTTP 409), or times out."""

    current_url = "http://fake-node"

    def __init__(self, timeout: bool = False) -> None:
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return {"chain_id": "fake-chain"}

    def submit_tx(self, raw: bytes) -> dict[str, Any]:
        if self.timeout:
            raise NodeUnavailableError([(self.current_url, "timed out")])
        raise NodeRequestError(409, "duplicate_id", "certificate already exists",
                               url=self.current_url)


@pytest.mark.parametrize("command", ["issue", "supersede"])
@pytest.mark.parametrize("timeout", [False, True])
def test_issue_and_supersede_leave_no_wallet_for_a_refused_tx(
        tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch, command: str,
        timeout: bool) -> None:
    doc = make_document(id=ids("SINGLE1")[0])
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc.to_json_dict()), encoding="utf-8")
    wallet = tmp_path / "doc.wallet.json"
    node = RefusingNode(timeout)
    monkeypatch.setattr(cli_issuer, "_client", lambda nodes, seconds: node)
    args = ([command, str(path)] if command == "issue"
            else [command, ids("OLD0001")[0], str(path)])
    res = CliRunner().invoke(cli, [*args, "--key", str(key_file), "--wallet-out", str(wallet),
                                   "--node", RefusingNode.current_url],
                             env={keystore.PASSPHRASE_ENV: PASS})
    assert res.exit_code == 1, res.output
    # Refused: the fresh salts match nothing on the chain. Unknown (a timeout): the tx
    # may have landed, and its wallet is the only copy of its salts.
    assert wallet.exists() == timeout, res.output
    if not timeout:  # a wallet from before the run is the holder's: never removed
        committed_with = issuer_files.committed_with_wallet(
            doc if command == "issue" else replace(doc, supersedes=ids("OLD0001")[0]), wallet)
        res = CliRunner().invoke(cli, [*args, "--key", str(key_file), "--wallet-out",
                                       str(wallet), "--node", RefusingNode.current_url],
                                 env={keystore.PASSPHRASE_ENV: PASS})
        assert res.exit_code == 1 and wallet.exists()
        assert CommittedDocument.from_wallet_dict(json.loads(wallet.read_text())) == \
            committed_with
