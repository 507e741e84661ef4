"""One script per rule of Algorithm 1 (Buchman, Kwon, Milosevic 2018).

Each script is a list of ``Expect(event, exact effects, resulting round
state)`` lines played against the pure core (``tests/sim/script.py`` has the
four-validator fixture: we are v2; at height 1 the round-r proposer is
v(1+r)%4, at height 3 it is v(3+r)%4, so at height 3 rounds 0-2 are others').
Expected effects are written out in full, signatures included - the fake
signer is deterministic - so a script fails if a rule does anything extra,
anything less, or anything in another order (persist before broadcast).
"""

from __future__ import annotations

from ledger.commit import VoteType, make_commit
from node.consensus import (
    Commit,
    CommittedBlockFromSync,
    ConsensusState,
    Effect,
    Evidence,
    PersistWal,
    ProposalReceived,
    RequestValue,
    RoundStarted,
    RoundState,
    Step,
    TimeoutFired,
    ValidValue,
    ValueReady,
    Vote,
    VoteReceived,
    start,
    step,
)
from node.consensus.messages import DuplicateProposal, DuplicateVote
from tests.sim.script import (
    KEY,
    ME,
    SIGNERS,
    Expect,
    context,
    play,
    proposal,
    sent,
    timeout,
    value,
    vid,
    vote,
)

A, B, C = value(1, b"A"), value(1, b"B"), value(1, b"C")
A3, B3 = value(3, b"A"), value(3, b"B")
PRE: VoteType = "prevote"
PC: VoteType = "precommit"
S = Step


def pol(v: bytes, *by: int) -> tuple[Vote, ...]:
    """The POL a ValidValue entry keeps: the round-0 prevotes for ``v`` at height 1, in
    the order the node logged them (its own first when it prevoted ``v``)."""
    return tuple(vote(PRE, 1, 0, v, b) for b in by)


def fresh(height: int = 1, **kw: object) -> ConsensusState:
    s, _ = start(context(**kw), height)
    return s


def locked(height: int, v: bytes, r: int, **kw: object) -> ConsensusState:
    """A state locked on ``v`` in round ``r`` (as after L36-41 there)."""
    s = fresh(height, **kw)
    s.locked_value_id, s.locked_round = vid(v), r
    return s


def ev_vote(t: VoteType, h: int, r: int, v: bytes | None, by: int) -> VoteReceived:
    return VoteReceived(vote(t, h, r, v, by))


# ----------------------------------------------------------------------------- L10-21


def test_l10_l11_21_start_round_not_proposer_schedules_timeout_propose() -> None:
    # Alg.1 L10 upon start do StartRound(0); L21 schedule OnTimeoutPropose.
    s, effects = start(context(), 1)
    assert effects == [PersistWal(RoundStarted(1, 0)), timeout(1, 0, S.PROPOSE)]
    assert s.snapshot() == RoundState(1, 0, S.PROPOSE)


def test_l14_19_proposer_asks_app_then_proposes_fresh_value() -> None:
    # Alg.1 L14-19: proposer without validValue: getValue() (RequestValue), then broadcast
    # ⟨PROPOSAL, h, r, v, -1⟩; its own proposal then drives L22 like anyone's.
    s, effects = start(context(), 2)  # height 2, round 0: we propose
    assert effects == [PersistWal(RoundStarted(2, 0)), RequestValue(2, 0), timeout(2, 0, S.PROPOSE)]
    c2 = value(2, b"C")
    play(s, [Expect(ValueReady(2, 0, c2),
                    [*sent(proposal(2, 0, c2, by=ME)), *sent(vote(PRE, 2, 0, c2))],
                    RoundState(2, 0, S.PREVOTE))])


def test_l15_16_proposer_reproposes_valid_value_with_valid_round() -> None:
    # Alg.1 L15-16: validValue != nil: propose it with vr = validRound (then L28 for ourselves).
    s = fresh()
    pa = proposal(1, 0, A)
    s = play(s, [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A)), RoundState(1, 0, S.PREVOTE)),
        Expect(ev_vote(PRE, 1, 0, A, 0), []),
        Expect(ev_vote(PRE, 1, 0, A, 1),  # polka: L34 timeout, L36 lock + precommit
               [timeout(1, 0, S.PREVOTE), PersistWal(ValidValue(0, pa, pol(A, ME, 0, 1))),
                *sent(vote(PC, 1, 0, A))],
               RoundState(1, 0, S.PRECOMMIT, vid(A), 0, vid(A), 0)),
        Expect(ev_vote(PC, 1, 0, None, 0), []),
        Expect(ev_vote(PC, 1, 0, None, 1), [timeout(1, 0, S.PRECOMMIT)]),
        Expect(TimeoutFired(1, 0, S.PRECOMMIT),  # L65 -> StartRound(1): we propose A, vr=0
               [PersistWal(RoundStarted(1, 1)), *sent(proposal(1, 1, A, pol=0, by=ME)),
                *sent(vote(PRE, 1, 1, A))],
               RoundState(1, 1, S.PREVOTE, vid(A), 0, vid(A), 0)),
    ])


# ----------------------------------------------------------------------------- L22-27


def test_l22_27_prevote_valid_fresh_proposal() -> None:
    play(fresh(), [Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A)),
                          RoundState(1, 0, S.PREVOTE))])


def test_l22_27_prevote_nil_for_invalid_value() -> None:
    bad = value(1, b"A", valid=False)
    play(fresh(), [Expect(ProposalReceived(proposal(1, 0, bad)), sent(vote(PRE, 1, 0, None)),
                          RoundState(1, 0, S.PREVOTE))])


def test_l22_27_prevote_nil_when_locked_on_another_value() -> None:
    s = locked(3, A3, 0)
    play(s, [
        Expect(ev_vote(PRE, 3, 1, None, 0), []),
        Expect(ev_vote(PRE, 3, 1, None, 1),  # L55: f+1 in round 1 -> StartRound(1)
               [PersistWal(RoundStarted(3, 1)), timeout(3, 1, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 1, B3)),  # locked on A: nil; then L34 and L44
               [*sent(vote(PRE, 3, 1, None)), timeout(3, 1, S.PREVOTE),
                *sent(vote(PC, 3, 1, None))],
               RoundState(3, 1, S.PRECOMMIT, vid(A3), 0)),
    ])


def test_l22_27_prevote_locked_value_again() -> None:
    s = locked(3, A3, 0)
    play(s, [
        Expect(ev_vote(PRE, 3, 1, None, 0), []),
        Expect(ev_vote(PRE, 3, 1, None, 1), [PersistWal(RoundStarted(3, 1)),
                                             timeout(3, 1, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 1, A3)),
               [*sent(vote(PRE, 3, 1, A3)), timeout(3, 1, S.PREVOTE)],
               RoundState(3, 1, S.PREVOTE, vid(A3), 0)),
    ])


# ----------------------------------------------------------------------------- L28-33


def test_l28_33_pol_from_later_round_releases_lock() -> None:
    # Locked on A in round 0; B got 2f+1 prevotes in round 1 and is re-proposed in round 2
    # with vr=1: lockedRound 0 <= vr, so we prevote B.
    s = locked(3, A3, 0)
    play(s, [
        Expect(ev_vote(PRE, 3, 1, B3, 0), []),
        Expect(ev_vote(PRE, 3, 1, B3, 1), [PersistWal(RoundStarted(3, 1)),
                                           timeout(3, 1, S.PROPOSE)]),
        Expect(ev_vote(PRE, 3, 1, B3, 3), []),
        Expect(ev_vote(PRE, 3, 2, None, 0), []),
        Expect(ev_vote(PRE, 3, 2, None, 1), [PersistWal(RoundStarted(3, 2)),
                                             timeout(3, 2, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 2, B3, pol=1)),
               [*sent(vote(PRE, 3, 2, B3)), timeout(3, 2, S.PREVOTE)],
               RoundState(3, 2, S.PREVOTE, vid(A3), 0)),
    ])


def test_l28_33_pol_older_than_lock_gets_nil() -> None:
    # Locked on A in round 1; B re-proposed with vr=0 < lockedRound: prevote nil (L32).
    s = locked(3, A3, 1)
    play(s, [
        Expect(ev_vote(PRE, 3, 0, B3, 0), []),
        Expect(ev_vote(PRE, 3, 0, B3, 1), []),
        Expect(ev_vote(PRE, 3, 0, B3, 3), []),
        Expect(ev_vote(PRE, 3, 1, None, 0), []),
        Expect(ev_vote(PRE, 3, 1, None, 1), [PersistWal(RoundStarted(3, 1)),
                                             timeout(3, 1, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 1, B3, pol=0)),
               [*sent(vote(PRE, 3, 1, None)), timeout(3, 1, S.PREVOTE),
                *sent(vote(PC, 3, 1, None))],
               RoundState(3, 1, S.PRECOMMIT, vid(A3), 1)),
    ])


def test_l28_waits_for_the_pol() -> None:
    # A re-proposal (vr >= 0) without 2f+1 prevotes of vr in hand: no rule fires yet.
    s = fresh(3)
    s = play(s, [
        Expect(ev_vote(PRE, 3, 1, None, 0), []),
        Expect(ev_vote(PRE, 3, 1, None, 1), [PersistWal(RoundStarted(3, 1)),
                                             timeout(3, 1, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 1, B3, pol=0)), [], RoundState(3, 1, S.PROPOSE)),
        Expect(ev_vote(PRE, 3, 0, B3, 0), []),
        Expect(ev_vote(PRE, 3, 0, B3, 1), []),
        Expect(ev_vote(PRE, 3, 0, B3, 3),  # the POL is complete: L28 fires now
               [*sent(vote(PRE, 3, 1, B3)), timeout(3, 1, S.PREVOTE)],
               RoundState(3, 1, S.PREVOTE)),
    ])


# ----------------------------------------------------------------------------- L34-48


def test_l34_35_any_2f1_prevotes_schedule_timeout_prevote_once() -> None:
    play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PRE, 1, 0, None, 0), []),
        Expect(ev_vote(PRE, 1, 0, B, 1), [timeout(1, 0, S.PREVOTE)], RoundState(1, 0, S.PREVOTE)),
        Expect(ev_vote(PRE, 1, 0, C, 3), []),  # "for the first time"
    ])


def test_l36_43_polka_in_prevote_step_locks_and_precommits() -> None:
    pa = proposal(1, 0, A)
    play(fresh(), [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PRE, 1, 0, A, 0), []),
        Expect(ev_vote(PRE, 1, 0, A, 3),
               [timeout(1, 0, S.PREVOTE), PersistWal(ValidValue(0, pa, pol(A, ME, 0, 3))),
                *sent(vote(PC, 1, 0, A))],
               RoundState(1, 0, S.PRECOMMIT, vid(A), 0, vid(A), 0)),
    ])


def test_l36_43_polka_after_precommit_only_updates_valid_value() -> None:
    pa = proposal(1, 0, A)
    play(fresh(), [
        Expect(TimeoutFired(1, 0, S.PROPOSE), sent(vote(PRE, 1, 0, None))),
        Expect(ev_vote(PRE, 1, 0, A, 0), []),
        Expect(ev_vote(PRE, 1, 0, A, 1), [timeout(1, 0, S.PREVOTE)]),
        Expect(TimeoutFired(1, 0, S.PREVOTE), sent(vote(PC, 1, 0, None)),
               RoundState(1, 0, S.PRECOMMIT)),
        Expect(ProposalReceived(pa), []),
        Expect(ev_vote(PRE, 1, 0, A, 3), [PersistWal(ValidValue(0, pa, pol(A, 0, 1, 3)))],
               RoundState(1, 0, S.PRECOMMIT, None, -1, vid(A), 0)),
    ])


def test_l36_requires_a_valid_value() -> None:
    bad = value(1, b"X", valid=False)
    play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, bad)), sent(vote(PRE, 1, 0, None))),
        Expect(ev_vote(PRE, 1, 0, bad, 0), []),
        Expect(ev_vote(PRE, 1, 0, bad, 1), [timeout(1, 0, S.PREVOTE)]),
        Expect(ev_vote(PRE, 1, 0, bad, 3), [], RoundState(1, 0, S.PREVOTE)),
    ])


def test_l44_46_2f1_nil_prevotes_precommit_nil() -> None:
    play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PRE, 1, 0, None, 0), []),
        Expect(ev_vote(PRE, 1, 0, None, 1), [timeout(1, 0, S.PREVOTE)]),
        Expect(ev_vote(PRE, 1, 0, None, 3), sent(vote(PC, 1, 0, None)),
               RoundState(1, 0, S.PRECOMMIT)),
    ])


def test_l47_48_any_2f1_precommits_schedule_timeout_precommit_once() -> None:
    play(fresh(), [
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, None, 1), []),
        Expect(ev_vote(PC, 1, 0, B, 3), [timeout(1, 0, S.PRECOMMIT)], RoundState(1, 0, S.PROPOSE)),
        Expect(ev_vote(PC, 1, 0, C, 3), [Evidence(DuplicateVote(vote(PC, 1, 0, B, 3),
                                                                vote(PC, 1, 0, C, 3)))]),
    ])


# ----------------------------------------------------------------------------- L49-56


def test_l49_54_decide_then_next_height_round_0() -> None:
    pa = proposal(1, 0, A)
    cert = make_commit(1, 0, vid(A), [(KEY[i], vote(PC, 1, 0, A, i).signature) for i in (0, 1, 3)])
    play(fresh(), [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, A, 1), []),
        Expect(ev_vote(PC, 1, 0, A, 3),  # decide; height 2 round 0 is ours to propose
               [Commit(1, 0, vid(A), A, cert), PersistWal(RoundStarted(2, 0)),
                RequestValue(2, 0), timeout(2, 0, S.PROPOSE)],
               RoundState(2, 0, S.PROPOSE)),
    ])


def test_l49_decides_for_an_earlier_round() -> None:
    # Locked and precommitted A in round 0, moved on to round 1; the round-0 precommits
    # arrive late and still decide (L49 has any round r, not just round_p).
    pa = proposal(1, 0, A)
    sigs = [(KEY[i], vote(PC, 1, 0, A, i).signature) for i in (0, ME, 3)]
    play(fresh(), [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PRE, 1, 0, A, 0), []),
        Expect(ev_vote(PRE, 1, 0, A, 1), [timeout(1, 0, S.PREVOTE),
                                          PersistWal(ValidValue(0, pa, pol(A, ME, 0, 1))),
                                          *sent(vote(PC, 1, 0, A))]),
        Expect(ev_vote(PRE, 1, 2, None, 0), []),
        Expect(ev_vote(PRE, 1, 2, None, 1), [PersistWal(RoundStarted(1, 2)),
                                             timeout(1, 2, S.PROPOSE)],
               RoundState(1, 2, S.PROPOSE, vid(A), 0, vid(A), 0)),
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, A, 3),
               [Commit(1, 0, vid(A), A, make_commit(1, 0, vid(A), sigs)),
                PersistWal(RoundStarted(2, 0)), RequestValue(2, 0), timeout(2, 0, S.PROPOSE)],
               RoundState(2, 0, S.PROPOSE)),
    ])


def test_l49_decides_the_other_proposal_of_an_equivocating_proposer() -> None:
    # v1 sent us A but others B; we prevoted A. L49 holds for *any* ⟨PROPOSAL, h, r, v⟩
    # with 2f+1 precommits for id(v), so the second proposal (kept as evidence) decides.
    pa, pb = proposal(1, 0, A), proposal(1, 0, B)
    cert = make_commit(1, 0, vid(B), [(KEY[i], vote(PC, 1, 0, B, i).signature) for i in (0, 1, 3)])
    play(fresh(), [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A))),
        Expect(ProposalReceived(pb), [Evidence(DuplicateProposal(pa, pb))]),
        Expect(ev_vote(PC, 1, 0, B, 0), []),
        Expect(ev_vote(PC, 1, 0, B, 1), []),
        Expect(ev_vote(PC, 1, 0, B, 3),
               [Commit(1, 0, vid(B), B, cert), PersistWal(RoundStarted(2, 0)),
                RequestValue(2, 0), timeout(2, 0, S.PROPOSE)],
               RoundState(2, 0, S.PROPOSE)),
    ])


def test_l55_56_f_plus_1_messages_of_a_later_round_skip_to_it() -> None:
    play(fresh(3), [
        Expect(ev_vote(PC, 3, 5, None, 1), [], RoundState(3, 0, S.PROPOSE)),  # f = 1: not yet
        Expect(ev_vote(PC, 3, 5, None, 1), []),  # the same sender twice is still one
        Expect(ProposalReceived(proposal(3, 5, A3)),  # proposer of round 5 is v0: 2 senders
               [PersistWal(RoundStarted(3, 5)), timeout(3, 5, S.PROPOSE),
                *sent(vote(PRE, 3, 5, A3))],
               RoundState(3, 5, S.PREVOTE)),
    ])


# ----------------------------------------------------------------------------- L57-67


def test_l57_60_timeout_propose_prevotes_nil() -> None:
    play(fresh(), [Expect(TimeoutFired(1, 0, S.PROPOSE), sent(vote(PRE, 1, 0, None)),
                          RoundState(1, 0, S.PREVOTE))])


def test_l61_64_timeout_prevote_precommits_nil() -> None:
    play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(TimeoutFired(1, 0, S.PREVOTE), sent(vote(PC, 1, 0, None)),
               RoundState(1, 0, S.PRECOMMIT)),
    ])


def test_l65_67_timeout_precommit_starts_next_round() -> None:
    play(fresh(), [
        Expect(TimeoutFired(1, 0, S.PRECOMMIT),
               [PersistWal(RoundStarted(1, 1)), RequestValue(1, 1), timeout(1, 1, S.PROPOSE)],
               RoundState(1, 1, S.PROPOSE)),
        Expect(ValueReady(1, 1, C), [*sent(proposal(1, 1, C, by=ME)), *sent(vote(PRE, 1, 1, C))],
               RoundState(1, 1, S.PREVOTE)),
    ])


def test_l58_62_66_stale_timeouts_do_nothing() -> None:
    s = play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(TimeoutFired(1, 0, S.PROPOSE), []),  # L58: step is no longer propose
        Expect(TimeoutFired(0, 0, S.PRECOMMIT), []),  # L66: another height
        Expect(TimeoutFired(1, 3, S.PREVOTE), [], RoundState(1, 0, S.PREVOTE)),  # another round
    ])
    assert s.stats.stale_timeout == 3


def test_timeouts_grow_linearly_with_the_round() -> None:
    t = context().timeouts
    assert [t.duration(S.PROPOSE, r) for r in range(3)] == [300, 400, 500]
    assert [t.duration(S.PRECOMMIT, r) for r in range(3)] == [200, 300, 400]


# ------------------------------------------------------------------------- guard, evidence, past


def test_double_sign_guard_refuses_a_second_value_for_one_step() -> None:
    s = fresh()
    s.signed[(1, 0, "prevote")] = vote(PRE, 1, 0, None)  # as if signed before a restart
    s, effects = step(s, ProposalReceived(proposal(1, 0, A)))
    assert effects == [] and s.step is S.PREVOTE  # the step advances, nothing new is signed
    assert s.stats.guard_refused == 1
    assert s.log.round(0).prevotes.votes[KEY[ME]].value_id is None


def test_conflicting_votes_are_evidence_and_both_count() -> None:
    s = play(fresh(), [
        Expect(ev_vote(PRE, 1, 0, A, 0), []),
        Expect(ev_vote(PRE, 1, 0, B, 0),
               [Evidence(DuplicateVote(vote(PRE, 1, 0, A, 0), vote(PRE, 1, 0, B, 0)))]),
        Expect(ev_vote(PRE, 1, 0, A, 0), []),  # a re-send is not new evidence
    ])
    assert s.evidence == [DuplicateVote(vote(PRE, 1, 0, A, 0), vote(PRE, 1, 0, B, 0))]
    pv = s.log.round(0).prevotes
    assert (pv.count(vid(A)), pv.count(vid(B)), pv.total) == (1, 1, 1)


def test_bad_signatures_strangers_and_wrong_proposers_are_dropped() -> None:
    from dataclasses import replace

    s = play(fresh(), [
        Expect(VoteReceived(replace(vote(PRE, 1, 0, A, 0), signature=bytes(64))), []),
        Expect(VoteReceived(replace(vote(PRE, 1, 0, A, 0), validator=bytes(16))), []),
        Expect(ProposalReceived(proposal(1, 0, A, by=3)), []),  # v1 proposes round 0
        Expect(ProposalReceived(replace(proposal(1, 0, A), value=B)), []),  # id is not B's
    ], )
    st = s.stats
    assert (st.bad_signature, st.not_validator, st.wrong_proposer, st.malformed) == (1, 1, 1, 1)
    assert s.log.round(0).proposal is None


def test_past_heights_are_ignored_never_revoted() -> None:
    s = play(fresh(), [
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, A, 1), []),
    ])
    s, effects = step(s, ev_vote(PC, 1, 0, A, 3))
    assert isinstance(effects[0], Commit) and s.height == 2
    play(s, [
        Expect(ProposalReceived(proposal(1, 1, B)), []),
        Expect(TimeoutFired(1, 1, S.PROPOSE), []),
        Expect(ev_vote(PRE, 1, 5, B, 0), []),
        Expect(ev_vote(PRE, 1, 5, B, 1), [], RoundState(2, 0, S.PROPOSE)),
    ])
    assert s.stats.old_height == 3


def test_next_height_messages_are_buffered_and_replayed() -> None:
    a2 = value(2, b"A")
    s = play(fresh(), [
        Expect(ev_vote(PRE, 2, 0, a2, 0), []),
        Expect(ev_vote(PRE, 2, 0, a2, 1), []),
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, A, 1), []),
    ])
    assert s.stats.buffered == 2
    s, _ = step(s, ev_vote(PC, 1, 0, A, 3))
    assert s.height == 2 and s.log.round(0).prevotes.count(vid(a2)) == 2


def test_an_equivocation_sent_ahead_of_its_height_is_evidence_when_it_starts() -> None:
    a2, b2 = value(2, b"A"), value(2, b"B")
    s = play(fresh(), [
        Expect(ev_vote(PRE, 2, 0, a2, 0), []),
        Expect(ev_vote(PRE, 2, 0, b2, 0), []),  # the same validator, another value
        Expect(ev_vote(PRE, 2, 0, a2, 0), []),  # a re-send: held once
        Expect(ProposalReceived(proposal(1, 0, A)), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PC, 1, 0, A, 0), []),
        Expect(ev_vote(PC, 1, 0, A, 1), []),
    ])
    assert s.stats.buffered == 2 and s.evidence == []
    s, effects = step(s, ev_vote(PC, 1, 0, A, 3))
    dup = DuplicateVote(vote(PRE, 2, 0, a2, 0), vote(PRE, 2, 0, b2, 0))
    assert s.height == 2 and Evidence(dup) in effects and s.evidence == [dup]
    pv = s.log.round(0).prevotes
    assert (pv.count(vid(a2)), pv.count(vid(b2))) == (1, 1)  # both count, as at the height


def test_round_window_bounds_what_is_stored() -> None:
    s = play(fresh(), [Expect(ev_vote(PRE, 1, 10_000, A, 0), [])])
    assert s.stats.round_window_dropped == 1 and 10_000 not in s.log.rounds


def test_sync_block_with_good_certificate_advances_without_voting() -> None:
    sigs = [(KEY[i], vote(PC, 1, 2, A, i).signature) for i in (0, 1, 3)]
    cert = make_commit(1, 2, vid(A), sigs)
    play(fresh(), [
        Expect(CommittedBlockFromSync(1, A, make_commit(1, 2, vid(A), sigs[:2])), []),  # 2 < 3
        Expect(CommittedBlockFromSync(1, B, cert), []),  # certificate is for another block
        Expect(CommittedBlockFromSync(1, A, cert),
               [Commit(1, 2, vid(A), A, cert), PersistWal(RoundStarted(2, 0)), RequestValue(2, 0),
                timeout(2, 0, S.PROPOSE)],
               RoundState(2, 0, S.PROPOSE)),
        Expect(CommittedBlockFromSync(1, A, cert), []),  # the past: ignored
    ])


# ----------------------------------------------------------------------------- unsafe knobs


def test_unsafe_no_locking_prevotes_despite_lock() -> None:
    s = locked(3, A3, 0, unsafe_no_locking=True)
    play(s, [
        Expect(ev_vote(PRE, 3, 1, None, 0), []),
        Expect(ev_vote(PRE, 3, 1, None, 1), [PersistWal(RoundStarted(3, 1)),
                                             timeout(3, 1, S.PROPOSE)]),
        Expect(ProposalReceived(proposal(3, 1, B3)), [*sent(vote(PRE, 3, 1, B3)),
                                                      timeout(3, 1, S.PREVOTE)]),
    ])


def test_unsafe_quorum_2f_counts_two_of_four() -> None:
    pa = proposal(1, 0, A)
    play(fresh(unsafe_quorum_2f=True), [
        Expect(ProposalReceived(pa), sent(vote(PRE, 1, 0, A))),
        Expect(ev_vote(PRE, 1, 0, A, 0),
               [timeout(1, 0, S.PREVOTE), PersistWal(ValidValue(0, pa, pol(A, ME, 0))),
                *sent(vote(PC, 1, 0, A))]),
    ])


def test_observer_without_key_follows_but_never_signs() -> None:
    from dataclasses import replace

    ctx = replace(context(), signer=None)
    s, effects = start(ctx, 1)
    assert effects == [timeout(1, 0, S.PROPOSE)]
    s, effects = step(s, ProposalReceived(proposal(1, 0, A)))
    assert effects == [] and s.step is S.PREVOTE
    assert SIGNERS  # (the fixture's keys are unused here)


# ----------------------------------------------------------------------------- SM2 certificates


def test_sm2_core_certificate_is_a_ledger_commit_certificate() -> None:
    # With SM2 the core's certificate checker and the ledger's CommitCertificate.verify
    # accept and refuse the same certificates.
    from dataclasses import replace as r

    from certificates.hashing import sm3
    from ledger.commit import CommitCertificate
    from ledger.errors import CommitError
    from node.consensus.certs import commit_problem
    from node.consensus.context import Context
    from node.consensus.signing import Sm2Verifier
    from tests.sim import app
    from tests.sim.script import CHAIN, TIMEOUTS, VS

    signers = [app.signer(4, i, "sm2") for i in range(4)]
    ctx = Context(CHAIN, signers[ME], Sm2Verifier(), lambda h: VS, app.is_valid, sm3, TIMEOUTS)
    s, _ = start(ctx, 1)

    p = proposal(1, 0, A)
    p = r(p, signature=signers[KEY.index(p.proposer)].sign(p.sign_bytes(CHAIN)))
    s, _ = step(s, ProposalReceived(p))
    effects: list[Effect] = []
    for i in (0, 1, 3):
        v = vote(PC, 1, 0, A, i)
        s, effects = step(s, VoteReceived(r(v, signature=signers[i].sign(v.sign_bytes(CHAIN)))))
    commit = effects[0]
    assert isinstance(commit, Commit)
    good = commit.certificate

    def both(cert: CommitCertificate) -> tuple[bool, bool]:
        core_ok = commit_problem(cert, CHAIN, VS, Sm2Verifier(), height=1,
                                 block_hash=vid(A)) is None
        try:
            cert.verify(CHAIN, VS, height=1, block_hash=vid(A))
            ledger_ok = True
        except CommitError:
            ledger_ok = False
        return core_ok, ledger_ok

    sigs = good.signatures
    assert both(good) == (True, True)
    assert both(r(good, signatures=sigs[:2])) == (False, False)
    assert both(r(good, signatures=(*sigs[:2], sigs[0]))) == (False, False)
    assert both(r(good, signatures=(*sigs[:2], r(sigs[2], signature=sigs[0].signature)))) == (
        False, False)
    assert both(r(good, round=1)) == (False, False)


def test_bench_runs_and_decides_every_height() -> None:
    # A smoke test only: the figure itself is in docs/simulation.md (no timed tests).
    from node.consensus import bench

    out = bench.run(40)
    assert out["heights"] == 40 and out["vote_events"] == 240
    assert out["vote_events_per_cpu_s"] > 0
