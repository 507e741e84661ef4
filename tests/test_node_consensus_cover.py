"""Consensus envelopes (``consensus/v2``): the signature covers every message but not a
proposal's value, which the receiver ties to the signed ``value_id`` instead (the core's
``value_id_of`` check, ``tests/test_consensus_rules.py``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import network.envelope
from certificates import canonical
from network.envelope import SeqCounter, open_envelope, seal, seal_batch
from node.consensus import codec
from node.consensus.messages import Message, Proposal
from node.peers import Inbox, Outbox
from node.wire import KIND_CONSENSUS, consensus_cover, cover_messages, encode_messages
from tests.ledger_fixtures import key
from tests.sim.script import proposal, value, vid, vote
from tests.test_node_tx_gossip import Sent

CHAIN = "certledger-test"
SENDER = key("validator-consensus-cover")
KNOWN = {SENDER.public.key_id: SENDER.public.data}
MAX = 1 << 22
COVERS = {KIND_CONSENSUS: consensus_cover(MAX)}
BIG = value(3, b"B") + bytes(1 << 20)  # a value the size of a block of batches


def messages() -> list[Message]:
    return [proposal(3, 0, BIG), vote("prevote", 3, 0, BIG), vote("precommit", 3, 0, None)]


def inbox(heard: list[Message], drops: dict[str, int]) -> Inbox:
    def count(reason: str, n: int) -> None:
        drops[reason] = drops.get(reason, 0) + n
    return Inbox(CHAIN, lambda: KNOWN, heard.extend, lambda _: None, count,
                 max_envelope_bytes=MAX, max_batch_bytes=2 * MAX)


def with_payload(msgs: list[Any], seq: int, covers: list[bytes]) -> bytes:
    return seal(CHAIN, KIND_CONSENSUS, encode_messages(msgs), SENDER, seq, covers=covers)


def test_messages_travel_and_the_signature_leaves_the_value_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    signed: list[int] = []
    real = network.envelope._signed_part

    def spy(*args: Any) -> bytes:
        part = real(*args)
        signed.append(len(part))
        return part

    monkeypatch.setattr(network.envelope, "_signed_part", spy)
    sent = Sent()
    Outbox(CHAIN, SENDER, sent, SeqCounter(1), MAX).broadcast_messages(  # type: ignore[arg-type]
        messages())
    (env,) = sent.envelopes
    opened = open_envelope(env, CHAIN, KNOWN, MAX, COVERS)
    assert opened.kind == KIND_CONSENSUS == "consensus/v2"
    assert opened.decoded == messages()
    # Sealing and opening each signed a few hundred bytes, not the 1 MB value.
    assert len(signed) == 2 and max(signed) < 2_000, signed
    heard: list[Message] = []
    drops: dict[str, int] = {}
    assert inbox(heard, drops).receive(seal_batch(sent.envelopes)).accepted == 1
    assert heard == messages() and drops == {}


def test_the_cover_of_a_proposal_is_its_encoding_without_the_value() -> None:
    p, v = messages()[:2]
    covers = cover_messages([p, v])
    fields = codec.to_value(p)
    assert canonical.decode(covers[0]) == {k: x for k, x in fields.items() if k != "value"}
    assert covers[1] == codec.encode(v)


def test_changed_signed_fields_fail_the_signature_but_a_changed_value_is_left_to_the_core(
        ) -> None:
    msgs = messages()
    covers = cover_messages(msgs)
    p = msgs[0]
    assert isinstance(p, Proposal)
    other_value = replace(p, value=value(3, b"other"))  # same value_id, another value
    envelopes = [
        with_payload([replace(p, value_id=bytes(32)), *msgs[1:]], 1, covers),
        with_payload([replace(p, round=1), *msgs[1:]], 2, covers),
        with_payload([msgs[0], replace(msgs[1], round=1), msgs[2]], 3, covers),
        seal(CHAIN, KIND_CONSENSUS, encode_messages(msgs), SENDER, 4),  # signed the payload
        with_payload([other_value, *msgs[1:]], 5, covers),
    ]
    heard: list[Message] = []
    drops: dict[str, int] = {}
    received = inbox(heard, drops).receive(seal_batch(envelopes))
    assert drops == {"envelope_bad_signature": 4}
    # The value is not covered: the envelope passes, and the core drops the proposal
    # because its signed value_id is not the id of this value.
    assert received.accepted == 1 and heard == [other_value, *msgs[1:]]
    got = heard[0]
    assert isinstance(got, Proposal) and got.value_id == p.value_id != vid(got.value)


@pytest.mark.parametrize("payload", [b"\xc1", canonical.encode([b"\x00junk"]),
                                     canonical.encode({"not": "a list"})])
def test_a_payload_that_does_not_decode_cannot_be_authenticated(payload: bytes) -> None:
    heard: list[Message] = []
    drops: dict[str, int] = {}
    env = seal(CHAIN, KIND_CONSENSUS, payload, SENDER, 1, covers=[])
    assert inbox(heard, drops).receive(seal_batch([env])).accepted == 0
    assert heard == [] and drops == {"envelope_malformed": 1}
