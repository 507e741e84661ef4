"""Whatever a peer sends, a node neither crashes nor decides without a quorum.

Two layers, both fed by Hypothesis:

* **The wire decoders** (``node.wire``): random bytes, and real consensus payloads and
  sync responses changed at one place of their decoded structure (a value of another
  type, a deleted or added key, bytes cut short), raise ``WireError`` and nothing else.
* **The consensus core** (``node.consensus.step``): sequences of *validly signed*
  proposals and votes from validators - so they get past the signature check into the
  rules - with any height, round, pol_round, value, id and vote type, mixed with
  timeouts. No step raises, the height never goes back, and every ``Commit`` it emits
  carries a certificate that verifies for its value (a quorum really signed it).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.commit import make_commit
from node.consensus import Commit, ProposalReceived, Step, TimeoutFired, VoteReceived, start, step
from node.consensus.certs import commit_problem
from node.consensus.messages import Proposal, Vote
from node.errors import WireError
from node.wire import decode_messages, decode_sync, decode_txs, encode_messages, encode_sync
from tests.fuzzing import at, places, values
from tests.sim import app
from tests.sim.script import CHAIN, KEY, SIGNERS, VS, context, proposal, value, vote
from tests.verifier_fixtures import build_world

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
MAX = 1 << 22

JSON = values(binary=True, text_size=12)


def _mutated(encoded: bytes, data: st.DataObject, depth: int = 0) -> bytes:
    """``encoded`` (canonical) changed at one place; nested canonical bytes may be entered."""
    v: Any = canonical.decode(encoded)
    place = data.draw(st.sampled_from(places(v)), label="place")
    if not place:
        return canonical.encode(data.draw(JSON, label="whole"))
    parent, last = at(v, place)
    old = parent[last]
    how = data.draw(st.sampled_from(["replace", "delete", "add", "cut", "inner"]), label="how")
    if how == "inner" and isinstance(old, bytes) and depth < 2:
        try:
            canonical.decode(old)
        except CertificatesError:  # not canonical inside: cut it instead
            how = "cut"
        else:
            parent[last] = _mutated(old, data, depth + 1)
    if how == "cut" and isinstance(old, bytes):
        parent[last] = old[: data.draw(st.integers(0, max(0, len(old) - 1)), label="cut")]
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=6), label="key")] = data.draw(JSON, label="new")
    elif how in ("replace", "add", "cut"):
        parent[last] = data.draw(JSON, label="value")
    return canonical.encode(v)


def _messages() -> bytes:
    a = value(1, b"A")
    return encode_messages([proposal(1, 0, a), vote("prevote", 1, 0, a, 0),
                            vote("precommit", 1, 2, None, 3)])


_WORLD: list[Any] = []


def _sync_response() -> bytes:
    if not _WORLD:
        _WORLD.append(build_world())
    chain = _WORLD[0].chain
    blocks = []
    for h in (1, 2):
        raw, commit = chain.block_bytes(h), chain.commit(h)
        assert raw is not None and commit is not None
        blocks.append((raw, commit))
    return encode_sync(chain.head_height, blocks)


def _decodes_or_wire_error(decode: Any, payload: bytes) -> None:
    with suppress(WireError):  # the one error a peer's bytes may cause
        decode(payload, MAX)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_random_bytes_are_a_wire_error(raw: bytes) -> None:
    for decode in (decode_messages, decode_txs, decode_sync):
        _decodes_or_wire_error(decode, raw)


@SETTINGS
@given(data=st.data())
def test_a_changed_consensus_payload_is_decoded_or_a_wire_error(data: st.DataObject) -> None:
    _decodes_or_wire_error(decode_messages, _mutated(_messages(), data))


@SETTINGS
@given(data=st.data())
def test_a_changed_sync_response_is_decoded_or_a_wire_error(data: st.DataObject) -> None:
    _decodes_or_wire_error(decode_sync, _mutated(_sync_response(), data))


# --------------------------------------------------------------------------- the core

# Signed messages are canonical: their integers stay within 64 bits (larger ones cannot
# even be encoded, let alone signed).
heights = st.integers(-3, 5) | st.integers(-(2**63), 2**63 - 1)
rounds = st.integers(-3, 6) | st.integers(-(2**63), 2**63 - 1)
ids = st.binary(min_size=32, max_size=32) | st.binary(max_size=40)


@st.composite
def signed_message(draw: st.DrawFn) -> Proposal | Vote:
    by = draw(st.integers(0, len(SIGNERS) - 1))
    h, r = draw(heights), draw(rounds)
    if draw(st.booleans()):
        honest = draw(st.booleans())
        val = value(max(h, 0) % 2**60, draw(st.sampled_from([b"A", b"B"])),
                    valid=draw(st.booleans())) if honest else draw(st.binary(max_size=60))
        vid = sm3(val) if honest else draw(ids)
        m: Proposal | Vote = Proposal(h, r, vid, val, draw(rounds), KEY[by])
    else:
        t = draw(st.sampled_from(["prevote", "precommit"]))  # other types cannot be signed
        vid_or_nil = draw(st.none() | ids | st.sampled_from(
            [sm3(value(1, b"A")), sm3(value(1, b"B"))]))
        m = Vote(t, h, r, vid_or_nil, KEY[by])  # type: ignore[arg-type]
    return replace(m, signature=SIGNERS[by].sign(m.sign_bytes(CHAIN)))


_A = value(1, b"A")
#: An honest round 0 at height 1 for value A, by validators 0, 1 and 3 (we are 2): mixed
#: into the junk, so that many sequences do decide and the quorum assertion has teeth.
HONEST = [ProposalReceived(proposal(1, 0, _A))] + [
    VoteReceived(vote(t, 1, 0, _A, by)) for t in ("prevote", "precommit") for by in (0, 1, 3)]

events = st.lists(
    signed_message().map(lambda m: ProposalReceived(m) if isinstance(m, Proposal)
                         else VoteReceived(m))
    | st.sampled_from(HONEST)
    | st.builds(TimeoutFired, heights, rounds, st.sampled_from(list(Step))),
    max_size=40,
)


def _run(evs: list[Any]) -> list[Commit]:
    s, _ = start(context(), 1)
    commits = []
    for ev in evs:
        before = s.height
        s, effects = step(s, ev)
        assert s.height >= before
        for eff in effects:
            if isinstance(eff, Commit):
                assert eff.value_id == sm3(eff.value) and app.is_valid(eff.height, eff.value)
                assert commit_problem(eff.certificate, CHAIN, VS, context().verifier,
                                      height=eff.height, block_hash=eff.value_id) is None
                commits.append(eff)
    return commits


@SETTINGS
@given(evs=events)
def test_signed_junk_never_crashes_the_core_or_decides_without_a_quorum(evs: list[Any]) -> None:
    _run(evs)


@SETTINGS
@given(junk=events, seed=st.randoms(use_true_random=False))
def test_the_honest_round_decides_through_any_junk(junk: list[Any], seed: Any) -> None:
    # The junk cannot stop a round that has its quorum: the property above is not vacuous.
    evs = junk + HONEST
    seed.shuffle(evs)
    assert [c.value_id for c in _run(evs)] == [sm3(_A)]


def test_the_core_check_catches_a_commit_without_a_quorum() -> None:
    # What the property above asserts must be able to fail: one signature is no quorum.
    a = value(1, b"A")
    one = vote("precommit", 1, 0, a, 0)
    cert = make_commit(1, 0, sm3(a), [(one.validator, one.signature)])
    assert commit_problem(cert, CHAIN, VS, context().verifier, height=1,
                          block_hash=sm3(a)) is not None
