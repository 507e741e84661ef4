"""Evidence records (``node.evidence``): checkable by anyone, kept once, bounded, durable;
and ``certledger node evidence``, which checks what nodes serve instead of trusting it.

Real SM2 keys sign real vote and proposal sign-bytes; each test that expects ``check``
to refuse changes exactly one thing a forger would change.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from certificates import sm2
from ledger.commit import vote_sign_bytes
from network.testing import WsgiServer
from node.cli import cli
from node.consensus.messages import (
    DuplicateProposal,
    DuplicateVote,
    Proposal,
    Vote,
    proposal_sign_bytes,
)
from node.consensus.wal import MemoryStorage, frame
from node.evidence import (
    PER_VALIDATOR,
    EvidenceError,
    EvidenceLog,
    EvidenceRecord,
    check,
    record_of,
)

CHAIN = "evidence-test"
KEY = sm2.PrivateKey.generate()
OTHER = sm2.PrivateKey.generate()
A, B = b"\xaa" * 32, b"\xbb" * 32


def vote(value_id: bytes | None, *, height: int = 5, round_: int = 1,
         key: sm2.PrivateKey = KEY) -> Vote:
    sig = key.sign(vote_sign_bytes(CHAIN, "precommit", height, round_, value_id))
    return Vote("precommit", height, round_, value_id, key.public.key_id, sig)


def proposal(value_id: bytes, pol_round: int = -1, *, key: sm2.PrivateKey = KEY) -> Proposal:
    sig = key.sign(proposal_sign_bytes(CHAIN, 7, 2, value_id, pol_round))
    return Proposal(7, 2, value_id, b"block bytes, not kept", pol_round, key.public.key_id, sig)


# SM2 signatures are randomised: one signed pair, made once, compares equal to itself.
_DUP = record_of(DuplicateVote(vote(A), vote(None)), KEY.public.data, 1_700_000_000_000)


def dup_vote() -> EvidenceRecord:
    return _DUP


def test_a_double_vote_is_proven_by_its_two_signatures() -> None:
    rec = dup_vote()
    check(rec, CHAIN)
    assert (rec.kind, rec.height, rec.round) == ("precommit", 5, 1)
    assert rec.key_id == KEY.public.key_id
    assert (rec.first.value_id, rec.second.value_id) == (A, None)


def test_a_double_proposal_is_proven_without_its_blocks() -> None:
    rec = record_of(DuplicateProposal(proposal(A), proposal(B, 0)), KEY.public.data, 1)
    check(rec, CHAIN)
    assert rec.kind == "proposal" and (rec.first.pol_round, rec.second.pol_round) == (-1, 0)
    assert b"block bytes" not in rec.encode()
    # The same block with another POL round is two statements as well.
    check(record_of(DuplicateProposal(proposal(A), proposal(A, 1)), KEY.public.data, 1), CHAIN)


@pytest.mark.parametrize("forgery", [
    "other chain", "other key", "value changed", "round changed", "type changed",
    "same statement twice", "signature of another key", "no height",
])
def test_check_refuses_what_the_signatures_do_not_prove(forgery: str) -> None:
    rec = dup_vote()
    chain = CHAIN
    if forgery == "other chain":
        chain = "another-chain"
    elif forgery == "other key":
        rec = replace(rec, public_key=OTHER.public.data)
    elif forgery == "value changed":
        rec = replace(rec, second=replace(rec.second, value_id=B))
    elif forgery == "round changed":
        rec = replace(rec, round=2)
    elif forgery == "type changed":
        rec = replace(rec, kind="prevote")
    elif forgery == "same statement twice":
        rec = replace(rec, second=rec.first)
    elif forgery == "signature of another key":
        rec = replace(rec, second=replace(rec.second, signature=vote(None, key=OTHER).signature))
    elif forgery == "no height":
        rec = replace(rec, height=0)
    with pytest.raises(EvidenceError):
        check(rec, chain)


def test_json_and_disk_forms_round_trip() -> None:
    rec = record_of(DuplicateProposal(proposal(A), proposal(B, 0)), KEY.public.data, 42)
    assert EvidenceRecord.decode(rec.encode()) == rec
    j = rec.to_json({KEY.public.key_id: "node-3"})
    assert j["validator"] == "node-3" and j["first"]["value_id"] == A.hex()
    assert EvidenceRecord.from_json(j) == rec
    v = dup_vote()
    assert EvidenceRecord.from_json(v.to_json({})) == v
    assert v.to_json({})["validator"] is None and "pol_round" not in v.to_json({})["first"]


@pytest.mark.parametrize("bad", [
    b"\xc1", b"\x80", b"\x81\xa1v\x02",  # not canonical, empty map, another version
])
def test_a_bad_stored_record_is_a_typed_error(bad: bytes) -> None:
    with pytest.raises(EvidenceError):
        EvidenceRecord.decode(bad)


@pytest.mark.parametrize("bad", [None, {}, {"kind": "prevote", "public_key": "zz"},
                                 {**dup_vote().to_json({}), "height": "5"}])
def test_a_bad_json_record_is_a_typed_error(bad: object) -> None:
    with pytest.raises(EvidenceError):
        EvidenceRecord.from_json(bad)


def test_the_log_keeps_a_pair_once_and_survives_reopening() -> None:
    storage = MemoryStorage()
    log = EvidenceLog(storage)
    rec = dup_vote()
    assert log.add(rec) is True
    # The core meets the same (validator, height, round, type) again after a restart, or
    # a third value: one record is proof enough.
    assert log.add(replace(rec, seen_at_ms=rec.seen_at_ms + 5)) is False
    assert log.add(record_of(DuplicateVote(vote(A), vote(B)), KEY.public.data, 9)) is False
    other = record_of(DuplicateVote(vote(A, round_=2), vote(B, round_=2)), KEY.public.data, 9)
    assert log.add(other) is True
    assert storage.appends == 2
    again = EvidenceLog(storage)
    assert again.records() == [rec, other] and len(again) == 2 and again.torn_bytes == 0
    assert again.add(rec) is False  # what was kept before a restart still counts


def test_a_torn_last_record_is_cut_and_the_rest_kept() -> None:
    storage = MemoryStorage()
    EvidenceLog(storage).add(dup_vote())
    second = frame(record_of(DuplicateVote(vote(A, round_=3), vote(B, round_=3)),
                             KEY.public.data, 1).encode())
    storage.append_torn(second, len(second) - 3)  # a crash during the append
    log = EvidenceLog(storage)
    assert log.torn_bytes == len(second) - 3 and log.records() == [dup_vote()]
    assert EvidenceLog(storage).torn_bytes == 0  # cut on disk, not only skipped


def test_one_validator_cannot_fill_the_disk() -> None:
    storage = MemoryStorage()
    log = EvidenceLog(storage)
    other = record_of(DuplicateVote(vote(A, key=OTHER), vote(B, key=OTHER)),
                      OTHER.public.data, 1)
    for r in range(PER_VALIDATOR + 10):
        assert log.add(replace(dup_vote(), round=r)) is (r < PER_VALIDATOR)
    assert log.not_kept == 10 and storage.appends == PER_VALIDATOR
    assert log.add(other) is True  # another validator's still is kept


def test_a_file_log_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "evidence.log"
    log = EvidenceLog.open(path)
    log.add(dup_vote())
    log.close()
    reopened = EvidenceLog.open(path)
    assert reopened.records() == [dup_vote()]
    reopened.close()


# ------------------------------------------------------------- certledger node evidence


def _evidence_node(records: list[dict[str, Any]], chain_id: str = CHAIN) -> WsgiServer:
    """A node that serves ``GET /v1/evidence`` only."""
    body = json.dumps({"chain_id": chain_id, "evidence": records, "not_kept": 0}).encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["PATH_INFO"] != "/v1/evidence":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": {"code": "not_found", "message": "no"}}']
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return WsgiServer(app).start()


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["node", "evidence", *args])


@pytest.fixture
def nodes() -> Iterator[Callable[..., str]]:
    started: list[WsgiServer] = []

    def start(records: list[dict[str, Any]], chain_id: str = CHAIN) -> str:
        started.append(_evidence_node(records, chain_id))
        return f"http://127.0.0.1:{started[-1].port}"
    yield start
    for s in started:
        s.stop()


def test_the_cli_gathers_from_several_nodes_and_checks_each_record(
        nodes: Callable[..., str]) -> None:
    prop = record_of(DuplicateProposal(proposal(A), proposal(B, 0)), KEY.public.data, 3)
    one = nodes([dup_vote().to_json({KEY.public.key_id: "node-2"})])
    two = nodes([dup_vote().to_json({}), prop.to_json({})])
    r = _run("--node", one, "--node", two)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["chain_id"] == CHAIN
    assert [e["kind"] for e in out["evidence"]] == ["precommit", "proposal"]
    assert out["evidence"][0]["seen_by"] == [one, two]
    assert out["evidence"][0]["validator"] == "node-2"
    assert out["evidence"][1]["seen_by"] == [two]


def test_the_cli_names_a_node_serving_what_does_not_prove_itself(
        nodes: Callable[..., str]) -> None:
    forged = replace(dup_vote(), second=replace(dup_vote().second, value_id=B))
    good, bad = nodes([dup_vote().to_json({})]), nodes([forged.to_json({})])
    r = _run("--node", good, "--node", bad)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert bad in r.output and "does not prove itself" in r.output
    # Signatures for one chain prove nothing for another.
    r = _run("--node", good, "--chain-id", "another-chain")
    assert r.exit_code == 1 and "another-chain" in r.output, r.output
    r = _run("--node", good, "--node", nodes([], "another-chain"))
    assert r.exit_code == 1 and "is on chain 'another-chain'" in r.output, r.output


def test_the_cli_reports_an_unreachable_node_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        r = _run("--node", f"http://127.0.0.1:{port}")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    r = _run("--node", "ftp://example")
    assert r.exit_code == 2 and "--node" in r.output, r.output


def test_damage_before_the_last_record_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evidence.log"
    log = EvidenceLog.open(path)
    log.add(dup_vote())
    log.add(replace(dup_vote(), round=9))
    log.close()
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record, with a whole record after it
    path.write_bytes(bytes(data))
    with pytest.raises(EvidenceError, match=r"evidence\.log: a record before the last .* aside"):
        EvidenceLog.open(path)
    # A record that frames well but is no evidence record is refused the same way.
    path.write_bytes(frame(b"\x81\xa1v\x02"))
    with pytest.raises(EvidenceError, match=r"evidence\.log: .*version 1.* aside"):
        EvidenceLog.open(path)
