"""Hostile peer messages at one validator of a real four-validator cluster.

Each kind of bad message is POSTed straight to ``/v1/consensus`` of one node (the
victim) and must be dropped, counted in ``/metrics`` under its reason, and leave
the cluster committing:

* an envelope signed by a key outside the validator set (``envelope_unknown_sender``),
  and an authentic envelope relaying a vote signed by such a key
  (``consensus_not_validator``) or a vote with a forged signature
  (``consensus_bad_signature``);
* a replayed old vote: a real precommit taken from a stored commit certificate,
  sealed once by a validator's own key (from the network directory) and sent
  three times - the first copy is authentic (its vote is old: ``consensus_old_height``),
  the other two are replays (``envelope_stale``);
* malformed bodies (``envelope_malformed``), among them an envelope sealed by a
  validator's key around a payload that does not decode (the signature covers what is
  decoded from the payload, so it cannot be authenticated: ``envelope_malformed``);
* an oversized body (413, ``envelope_oversized``) and an oversized envelope inside
  a batch (``envelope_oversized``);
* a validator signing two prevotes for one step: counted (``certledger_evidence_total``)
  and served by ``GET /v1/evidence`` as a record whose two signatures the test checks
  itself, still served after the victim is SIGKILLed and restarted.

The validator whose key seals the replay is stopped first and restarted after:
its sequence numbers start from the wall clock in nanoseconds, so ours (taken
while it is down) sit between its old and new ones and never make its real
messages look replayed. Every wait is bounded; only our own pids are signalled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from certificates import canonical, sm2
from ledger.commit import vote_sign_bytes
from network.envelope import seal, seal_batch
from node.consensus.messages import Vote
from node.evidence import EvidenceRecord, check
from node.wire import KIND_CONSENSUS, cover_messages, encode_messages
from tests.cluster import Cluster

pytestmark = pytest.mark.integration

VICTIM = "node-2"
SEALER = "node-4"  # its key seals the replayed envelope while it is stopped
MSGPACK = {"Content-Type": "application/msgpack"}
DROPPED = "certledger_dropped_messages_total"
#: node.runtime: the consensus body limit is max(envelope limit + 1 KiB, 16 MiB), and the
#: HTTP server (waitress) takes up to 1 MiB more before it refuses on its own.
BODY_LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.create(tmp_path_factory.mktemp("faults-messages")) as c:
        c.start()
        c.wait_height(2, timeout=40)
        yield c


def drops(c: Cluster, name: str = VICTIM) -> dict[str, float]:
    prefix = f'{DROPPED}{{reason="'
    return {k[len(prefix):-2]: v for k, v in c.metrics(name).items() if k.startswith(prefix)}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) != before.get(k, 0)}


def drops_reach(c: Cluster, before: dict[str, float], least: dict[str, int],
                timeout: float = 15.0) -> dict[str, float]:
    """The drop counts since ``before`` once each reason in ``least`` has reached its count.

    Envelopes are judged on the HTTP thread, but the votes inside an accepted one are judged
    by the consensus thread after the 202, so their counters move a little later.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = delta(before, drops(c))
        if all(got.get(k, 0) >= n for k, n in least.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def send(c: Cluster, body: bytes, name: str = VICTIM) -> requests.Response:
    return c.post(name, "/v1/consensus", data=body, headers=MSGPACK, timeout=60)


def keeps_committing(c: Cluster) -> None:
    """Every running node commits two more heights, and they all agree."""
    names = list(c.procs)
    c.wait_height(max(c.heights(names).values()) + 2, timeout=30, names=names)
    c.assert_agreement(names)
    assert c.status(VICTIM)["consensus"]["running"]


def vote(c: Cluster, key: sm2.PrivateKey, height: int, round_: int = 0,
         value_id: bytes | None = None, *, forge: bool = False) -> Vote:
    sig = key.sign(vote_sign_bytes(c.chain_id, "prevote", height, round_, value_id))
    return Vote("prevote", height, round_, value_id, key.public.key_id,
                b"\x01" * 64 if forge else sig)


def test_outsider_envelope_is_dropped_as_unknown_sender(cluster: Cluster) -> None:
    c = cluster
    outsider = sm2.PrivateKey.generate()
    h = int(c.status(VICTIM)["consensus"]["height"])
    body = seal_batch([seal(c.chain_id, KIND_CONSENSUS, encode_messages([vote(c, outsider, h)]),
                            outsider, time.time_ns())])
    before = drops(c)
    r = send(c, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "rejected" and "unknown_sender" in r.text
    assert delta(before, drops(c)).get("envelope_unknown_sender") == 1
    keeps_committing(c)


def test_malformed_bodies_are_dropped(cluster: Cluster) -> None:
    c = cluster
    before = drops(c)
    bodies = [
        b"\xff\xfe not msgpack at all",  # the batch does not decode
        canonical.encode({"not": "a list"}),  # decodes, but is no batch
        seal_batch([b"\x93\x01\x02\x03"]),  # a batch whose envelope is no envelope map
    ]
    for body in bodies:
        r = send(c, body)
        assert r.status_code == 400, (body[:20], r.text)
        assert r.json()["error"]["code"] in ("malformed", "rejected"), r.text
    assert delta(before, drops(c)).get("envelope_malformed") == len(bodies)
    keeps_committing(c)


def test_oversized_bodies_are_dropped(cluster: Cluster) -> None:
    c = cluster
    before = drops(c)
    # A body over the consensus limit: refused from its Content-Length, never parsed.
    r = send(c, b"\x00" * (BODY_LIMIT + 64 * 1024))
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large", r.text
    # A batch within the body limit holding one envelope over the envelope limit.
    outsider = sm2.PrivateKey.generate()
    big = seal(c.chain_id, KIND_CONSENSUS, b"\x00" * (BODY_LIMIT * 2 // 3), outsider, 1)
    r = send(c, seal_batch([big]))
    assert r.status_code == 400 and "oversized" in r.text, r.text
    assert delta(before, drops(c)).get("envelope_oversized") == 2
    keeps_committing(c)


def test_replayed_old_vote_and_bad_relayed_votes(cluster: Cluster) -> None:
    c = cluster
    key = c.validator_key(SEALER)
    outsider = sm2.PrivateKey.generate()
    assert c.stop([SEALER]) == {SEALER: 0}
    # A real, old precommit: one of the signatures of a stored commit certificate, from
    # below the victim's own head. (The cluster's highest head may be a height the victim
    # is still deciding, and a vote it already has there counts as a duplicate instead.)
    old = c.wait_height(2, names=[VICTIM])[VICTIM] - 1
    commit = c.get(VICTIM, f"/v1/blocks/{old}").json()["commit"]
    sig = commit["signatures"][0]
    captured = Vote("precommit", old, commit["round"], bytes.fromhex(commit["block_hash"]),
                    bytes.fromhex(sig["key_id"]), bytes.fromhex(sig["signature"]))
    envelope = seal(c.chain_id, KIND_CONSENSUS, encode_messages([captured]), key,
                    time.time_ns(), covers=cover_messages([captured]))

    before = drops(c)
    first = send(c, seal_batch([envelope]))
    assert first.status_code == 202 and first.json()["accepted"] == 1, first.text
    for _ in range(2):  # the same bytes again: replays
        again = send(c, seal_batch([envelope]))
        assert again.status_code == 400, again.text
        assert "stale" in again.text, again.text
    got = drops_reach(c, before, {"consensus_old_height": 1})
    assert got.get("envelope_stale") == 2, got
    assert got.get("consensus_old_height", 0) >= 1, got  # the first copy: decided already

    # Authentic envelopes from a validator carrying bad content. The votes are for the
    # next height, so they are judged (buffered for it) even if a block lands meanwhile.
    h = int(c.status(VICTIM)["consensus"]["height"]) + 1
    node1 = c.validator_key("node-1")
    before = drops(c)
    bad = [
        [vote(c, outsider, h)],  # a vote by a key outside the set
        [vote(c, node1, h, round_=0, value_id=b"\x07" * 32, forge=True)],
    ]
    for msgs in bad:
        r = send(c, seal_batch([seal(c.chain_id, KIND_CONSENSUS, encode_messages(msgs), key,
                                     time.time_ns(), covers=cover_messages(msgs))]))
        assert r.status_code == 202, r.text  # the envelope itself is authentic
    # A payload that does not decode, sealed by the same key: its cover cannot be taken.
    r = send(c, seal_batch([seal(c.chain_id, KIND_CONSENSUS, b"\xc1 no such msgpack", key,
                                 time.time_ns(), covers=[])]))
    assert r.status_code == 400 and "malformed" in r.text, r.text
    got = drops_reach(c, before, {"consensus_not_validator": 1, "consensus_bad_signature": 1,
                                  "envelope_malformed": 1})
    assert got.get("consensus_not_validator", 0) >= 1, got
    assert got.get("consensus_bad_signature", 0) >= 1, got
    assert got.get("envelope_malformed") == 1, got
    keeps_committing(c)

    # The sealer comes back with fresh sequence numbers; the four of them go on.
    c.restart(SEALER)
    top = max(c.heights([n for n in c.names if n != SEALER]).values())
    c.wait_height(top + 1, timeout=40, names=[SEALER])
    keeps_committing(c)


def test_a_double_vote_is_kept_as_checkable_evidence_across_a_restart(cluster: Cluster) -> None:
    c = cluster
    key = c.validator_key(SEALER)
    assert c.stop([SEALER]) == {SEALER: 0}  # its sequence numbers, as above
    x = bytes(range(32))
    evidence_before = c.metrics(VICTIM).get("certledger_evidence_total", 0)

    def served(h: int) -> list[dict[str, Any]]:
        body = c.get(VICTIM, "/v1/evidence").json()
        assert body["chain_id"] == c.chain_id and body["not_kept"] == 0, body
        return [e for e in body["evidence"] if e["height"] == h]

    # Two prevotes by the sealer for one step: a block id and nil. For the next height,
    # so they are judged (buffered for it) even if a block lands meanwhile; a fresh
    # height again only if the victim decided two heights before the pair arrived (then
    # the pair is old, and nothing is evidence). A node that never keeps it fails all.
    for _ in range(3):
        h = int(c.status(VICTIM)["consensus"]["height"]) + 1
        pair = [vote(c, key, h, 0, x), vote(c, key, h, 0, None)]
        r = send(c, seal_batch([seal(c.chain_id, KIND_CONSENSUS, encode_messages(pair), key,
                                     time.time_ns(), covers=cover_messages(pair))]))
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 10
        while not (mine := served(h)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if mine:
            break
    assert len(mine) == 1, mine
    assert mine[0]["validator"] == SEALER and mine[0]["kind"] == "prevote", mine
    rec = EvidenceRecord.from_json(mine[0])
    check(rec, c.chain_id)  # the reader needs no trust in the node: both signatures hold
    assert {rec.first.value_id, rec.second.value_id} == {x, None}
    assert rec.key_id == key.public.key_id
    assert c.metrics(VICTIM)["certledger_evidence_total"] == evidence_before + 1
    keeps_committing(c)

    # Kept on disk: the victim restarted (SIGKILL, no clean stop) still serves it.
    c.kill(VICTIM)
    c.restart(VICTIM)
    assert served(h) == mine
    consensus = c.status(VICTIM)["consensus"]
    assert consensus["evidence_kept"] >= 1 and consensus["evidence"] == 0, consensus

    c.restart(SEALER)
    top = max(c.heights([n for n in c.names if n != SEALER]).values())
    c.wait_height(top + 1, timeout=40, names=[SEALER])
    keeps_committing(c)
