"""The consensus WAL: framing, torn writes, corruption, compaction, replay.

Replay tests drive the real core, persist its ``PersistWal`` effects exactly as
a runtime does, "crash" at chosen points, restart from the WAL alone, and check
that the round state, the lock and the double-sign guard come back - and that a
message persisted but never sent is sent on restart, unchanged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.consensus import (
    Broadcast,
    ConsensusState,
    Effect,
    PersistWal,
    ProposalReceived,
    RoundStarted,
    Step,
    TimeoutFired,
    ValidValue,
    VoteReceived,
    WalEntry,
    codec,
    start,
    step,
)
from node.consensus.errors import CodecError, WalCorruptError
from node.consensus.gossip import to_gossip
from node.consensus.wal import FileStorage, MemoryStorage, Wal, frame, unframe
from tests.sim.script import ME, context, proposal, value, vid, vote

A, B = value(1, b"A"), value(1, b"B")


def entries() -> list[WalEntry]:
    pa = proposal(1, 0, A)
    return [
        RoundStarted(1, 0),
        vote("prevote", 1, 0, A),
        ValidValue(0, pa, (vote("prevote", 1, 0, A), vote("prevote", 1, 0, A, 0),
                           vote("prevote", 1, 0, A, 1))),
        vote("precommit", 1, 0, A),
        RoundStarted(1, 1),
        proposal(1, 1, B, pol=0, by=ME),
        vote("prevote", 1, 1, None),
        RoundStarted(2, 0),
    ]


def test_file_wal_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "wal" / "consensus.wal"
    wal = Wal(FileStorage(path))
    assert wal.recovered == []
    for e in entries():
        wal.append(e)
    assert Wal(FileStorage(path)).recovered == entries()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("storage_kind", ["file", "memory"])
def test_every_torn_tail_is_cut_and_appending_continues(tmp_path: Path, storage_kind: str) -> None:
    good = b"".join(frame(codec.encode(e)) for e in entries()[:-1])
    last = frame(codec.encode(entries()[-1]))
    for keep in range(len(last)):
        if storage_kind == "file":
            path = tmp_path / f"w{keep}"
            path.write_bytes(good + last[:keep])
            storage: FileStorage | MemoryStorage = FileStorage(path)
        else:
            storage = MemoryStorage()
            storage.append(good)
            storage.append_torn(last, keep)
        wal = Wal(storage)
        assert wal.recovered == entries()[:-1]
        assert wal.torn_bytes == keep
        assert storage.read() == good  # cut, so the next append is not behind garbage
        wal.append(RoundStarted(9, 9))
        assert Wal(storage).recovered == [*entries()[:-1], RoundStarted(9, 9)]


def test_garbled_or_zero_filled_last_record_is_a_torn_write() -> None:
    good = b"".join(frame(codec.encode(e)) for e in entries()[:3])
    last = bytearray(frame(codec.encode(entries()[3])))
    last[-1] ^= 0xFF
    for tail in (bytes(last), bytes(40), bytes(len(last))):
        s = MemoryStorage()
        s.append(good + tail)
        assert Wal(s).recovered == entries()[:3]


def test_damage_before_the_last_record_is_refused() -> None:
    data = bytearray(b"".join(frame(codec.encode(e)) for e in entries()))
    data[10] ^= 0x01  # inside the first record's payload
    s = MemoryStorage()
    s.append(bytes(data))
    with pytest.raises(WalCorruptError, match="not a torn write"):
        Wal(s)


def test_a_valid_value_entry_written_before_the_pol_was_kept_still_reads() -> None:
    pa = proposal(1, 0, A)
    old = codec.to_value(ValidValue(0, pa))
    del old["prevotes"]  # the entry as earlier versions wrote it
    assert codec.from_value(old) == ValidValue(0, pa, ())


@pytest.mark.parametrize(("prevotes", "why"), [
    (b"not a list", "must be a list"),
    ([codec.to_value(vote("precommit", 1, 0, A))], "must be prevotes"),
    ([codec.to_value(RoundStarted(1, 0))], "must be prevotes"),
])
def test_a_valid_value_entry_with_a_bad_pol_is_refused(prevotes: object, why: str) -> None:
    v = codec.to_value(ValidValue(0, proposal(1, 0, A)))
    v["prevotes"] = prevotes
    with pytest.raises(CodecError, match=why):
        codec.from_value(v)


def test_nested_valid_value_entries_are_refused_without_recursing() -> None:
    inner: dict[str, object] = codec.to_value(ValidValue(0, proposal(1, 0, A)))
    for _ in range(5000):  # deeper than Python's recursion limit
        inner = {"k": "valid", "round": 0, "proposal": inner, "prevotes": [inner]}
    with pytest.raises(CodecError, match="must hold a proposal"):
        codec.from_value(inner)
    v = codec.to_value(ValidValue(0, proposal(1, 0, A)))
    v["prevotes"] = [inner]
    with pytest.raises(CodecError, match="must be prevotes"):
        codec.from_value(v)


def test_a_well_framed_record_that_is_not_an_entry_is_refused() -> None:
    s = MemoryStorage()
    s.append(frame(b"\x81\xa1k\xa4nope"))
    with pytest.raises(CodecError):
        Wal(s)


def test_compact_keeps_only_undecided_heights() -> None:
    s = MemoryStorage()
    wal = Wal(s)
    for e in entries():
        wal.append(e)
    wal.compact(2)
    assert Wal(s).recovered == [RoundStarted(2, 0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(entries()), max_size=12), st.integers(min_value=0))
def test_any_truncation_recovers_exactly_the_whole_records(
    chosen: list[WalEntry], cut: int
) -> None:
    records = [frame(codec.encode(e)) for e in chosen]
    data = b"".join(records)
    cut %= len(data) + 1
    got, good = unframe(data[:cut])
    whole = 0
    pos = 0
    for r in records:
        if pos + len(r) > cut:
            break
        whole += 1
        pos += len(r)
    assert [codec.decode(p) for p in got] == chosen[:whole]
    assert good == pos


# ----------------------------------------------------------------------------- replay


def run(s: ConsensusState, wal: Wal, events: list[object]) -> tuple[ConsensusState, list[Effect]]:
    """Feed events, persisting PersistWal effects like the runtime; returns all effects."""
    out: list[Effect] = []
    for ev in events:
        s, effects = step(s, ev)  # type: ignore[arg-type]
        for e in effects:
            if isinstance(e, PersistWal):
                wal.append(e.entry)
        out += effects
    return s, out


def started(storage: MemoryStorage) -> tuple[ConsensusState, Wal, list[Effect]]:
    """(Re)start a node at height 1 from whatever ``storage`` holds."""
    wal = Wal(storage)
    s, effects = start(context(), 1, wal.recovered)
    for e in effects:
        if isinstance(e, PersistWal):
            wal.append(e.entry)
    return s, wal, effects


def test_replay_restores_round_lock_valid_value_and_guard() -> None:
    storage = MemoryStorage()
    s, wal, _ = started(storage)
    pa = proposal(1, 0, A)
    s, _ = run(s, wal, [
        ProposalReceived(pa),
        VoteReceived(vote("prevote", 1, 0, A, 0)),
        VoteReceived(vote("prevote", 1, 0, A, 1)),  # polka: lock A, precommit A
        VoteReceived(vote("precommit", 1, 0, None, 0)),
        VoteReceived(vote("precommit", 1, 0, None, 1)),
        TimeoutFired(1, 0, Step.PRECOMMIT),  # round 1: we re-propose A with vr = 0
    ])
    before = s.snapshot()
    assert (before.round, before.locked_round, before.valid_round) == (1, 0, 0)
    # Crash: all in-memory state is lost; restart from the WAL alone.
    s2, _, effects = started(storage)
    assert s2.snapshot() == before
    assert s2.signed == s.signed
    resent = [e.message for e in effects if isinstance(e, Broadcast)]
    assert resent == list(s.signed.values())  # everything we signed goes out again, unchanged
    assert not any(isinstance(e, PersistWal) and not isinstance(e.entry, RoundStarted)
                   for e in effects)  # ... and nothing new was signed


def _locked_then_restarted(strip_pol: bool) -> ConsensusState:
    """Lock on A in round 0 on the prevotes of v0 and v1, move to round 1, crash,
    restart from the WAL (with its POL removed if ``strip_pol``: the old format)."""
    storage = MemoryStorage()
    s, wal, _ = started(storage)
    run(s, wal, [
        ProposalReceived(proposal(1, 0, A)),
        VoteReceived(vote("prevote", 1, 0, A, 0)),
        VoteReceived(vote("prevote", 1, 0, A, 1)),  # polka: ValidValue with the POL, lock
        TimeoutFired(1, 0, Step.PRECOMMIT),
    ])
    if strip_pol:
        kept = [ValidValue(e.round, e.proposal) if isinstance(e, ValidValue) else e
                for e in Wal(storage).recovered]
        storage = MemoryStorage()
        for e in kept:
            storage.append(frame(codec.encode(e)))
    s2, _, _ = started(storage)
    assert (s2.locked_round, s2.valid_round) == (0, 0)
    return s2


def test_a_restarted_node_still_relays_the_pol_of_its_lock() -> None:
    # v0's prevote may have reached us alone, and v0 may be gone: our gossip is then the
    # only way the others get the POL they need to accept our re-proposal of A (L28).
    relayed = to_gossip(_locked_then_restarted(strip_pol=False))
    assert proposal(1, 0, A) in relayed
    assert {vote("prevote", 1, 0, A, i) for i in (0, 1)} <= set(relayed)
    # Without the POL in the WAL the lock survives but the evidence for it does not.
    bare = to_gossip(_locked_then_restarted(strip_pol=True))
    assert not {vote("prevote", 1, 0, A, i) for i in (0, 1)} & set(bare)


def test_crash_between_persist_and_send_resends_the_same_vote() -> None:
    storage = MemoryStorage()
    s, wal, _ = started(storage)
    s, effects = step(s, TimeoutFired(1, 0, Step.PROPOSE))
    nil = vote("prevote", 1, 0, None)
    assert effects == [PersistWal(nil), Broadcast(nil)]
    wal.append(effects[0].entry)  # type: ignore[union-attr]
    # ... and the process dies before the Broadcast.
    s2, _, effects2 = started(storage)
    assert Broadcast(vote("prevote", 1, 0, None)) in effects2
    assert s2.snapshot().step is Step.PREVOTE
    # The proposal turns up now: a fresh node would prevote A; this one must not.
    s2, effects3 = step(s2, ProposalReceived(proposal(1, 0, A)))
    assert effects3 == []
    assert s2.log.round(0).prevotes.votes[s2.ctx.key_id or b""].value_id is None


def test_torn_vote_record_is_forgotten_and_never_was_sent() -> None:
    storage = MemoryStorage()
    s, _, _ = started(storage)
    s, effects = step(s, TimeoutFired(1, 0, Step.PROPOSE))
    record = frame(codec.encode(effects[0].entry))  # type: ignore[union-attr]
    storage.append_torn(record, len(record) // 2)  # crash mid-append: not durable, not sent
    s2, _, effects2 = started(storage)
    assert not any(isinstance(e, Broadcast) for e in effects2)
    assert s2.snapshot().step is Step.PROPOSE and s2.signed == {}
    s2, effects3 = step(s2, ProposalReceived(proposal(1, 0, A)))
    assert Broadcast(vote("prevote", 1, 0, A)) in effects3  # free to vote: nothing was sent


def test_wal_of_a_decided_height_is_not_resumed() -> None:
    storage = MemoryStorage()
    wal = Wal(storage)
    for e in entries()[:4]:
        wal.append(e)
    s, _ = start(context(), 2, Wal(storage).recovered)
    assert s.snapshot().height == 2 and s.signed == {} and s.locked_round == -1
    assert vid(A) not in s.valid_cache
