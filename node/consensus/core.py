"""Tendermint's Algorithm 1 as a step function: ``step(state, event) -> (state, effects)``.

Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus" (2018). Each
branch below names the lines of Algorithm 1 it implements (``# Alg.1 L22-27``).

How a step runs: the event handler checks and records the input (a message
goes through ``node.consensus.intake``: signature, sender, height, round
window), then ``advance`` re-evaluates the "upon" rules that the new input
can enable, in a loop until none fires - a rule that moves the step or the
round may enable another (a quorum of prevotes that arrived while we were
still in propose). Our own proposal and votes are recorded in the log as we
sign them, as if delivered to ourselves, so they count towards quorums.

Deviations from the paper, all on the liveness side:

* The proposer also schedules timeoutPropose while it waits for the app's
  value (RequestValue -> ValueReady), so a slow app cannot wedge it in propose.
* Restart resumes the last round of the WAL (``node.consensus.restore``) and
  keeps every message we signed: the double-sign guard makes a re-run rule
  re-use what we signed instead of signing something new.
* Messages beyond ``Context.round_window`` rounds ahead are dropped (memory bound).
* Only the first valid proposal of a round is used; a second one from the same
  proposer is evidence. (The paper lets either trigger a rule; keeping one is
  what every implementation does, and a correct proposer sends only one.)
"""

from __future__ import annotations

from ledger.commit import VoteType, make_commit
from node.consensus import intake
from node.consensus.certs import commit_problem
from node.consensus.events import (
    Broadcast,
    Commit,
    CommittedBlockFromSync,
    Effect,
    Event,
    PersistWal,
    ProposalReceived,
    RequestValue,
    ScheduleTimeout,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from node.consensus.messages import Proposal, RoundStarted, Step, ValidValue, Vote
from node.consensus.state import ConsensusState
from node.consensus.votebook import ADDED, HeightLog, RoundLog, VoteSet

PREVOTE: VoteType = "prevote"
PRECOMMIT: VoteType = "precommit"


def step(s: ConsensusState, event: Event) -> tuple[ConsensusState, list[Effect]]:
    """Apply one event; returns the (same, updated) state and the effects to run in order."""
    out: list[Effect] = []
    if isinstance(event, VoteReceived):
        v = event.vote
        if intake.admit_vote(s, v):
            accept_vote(s, v, out)
    elif isinstance(event, ProposalReceived):
        p = event.proposal
        if intake.admit_proposal(s, p):
            accept_proposal(s, p, out)
    elif isinstance(event, TimeoutFired):
        _on_timeout(s, event, out)
    elif isinstance(event, ValueReady):
        _on_value_ready(s, event, out)
    elif isinstance(event, CommittedBlockFromSync):
        _on_sync(s, event, out)
    else:  # pragma: no cover - the Event union is closed
        raise TypeError(f"not a consensus event: {event!r}")
    return s, out


# ----------------------------------------------------------------------------- intake results


def accept_proposal(s: ConsensusState, p: Proposal, out: list[Effect]) -> None:
    """Record a checked proposal for the current height and run the rules."""
    rl = s.log.round(p.round)
    if rl.proposal is None:
        rl.proposal = p
        rl.senders.add(p.proposer)
    elif not intake.add_second_proposal(s, rl, p, out):
        return
    advance(s, out, p.round)


def accept_vote(s: ConsensusState, v: Vote, out: list[Effect]) -> None:
    """Record a checked vote for the current height and run the rules."""
    rl = s.log.round(v.round)
    if intake.add_vote(s, rl, v, out):
        rl.senders.add(v.validator)
        advance(s, out, v.round)


# ----------------------------------------------------------------------------- the rules


def advance(s: ConsensusState, out: list[Effect], r: int) -> None:
    """Fire every enabled upon-rule, given that something changed in round ``r``."""
    h = s.height
    while s.height == h:
        if _decide(s, r, out) or (r != s.round and _decide(s, s.round, out)):
            return  # the new height has run its own rules
        if r > s.round and len(s.log.round(r).senders) >= s.weak_quorum:
            # Alg.1 L55-56: f+1 validators are in a later round, so a correct one is.
            start_round(s, r, out)
            continue
        if not _current_round_rules(s, out):
            return


def _current_round_rules(s: ConsensusState, out: list[Effect]) -> bool:
    """Rules about round_p; True if one changed the step (others may now fire)."""
    h, r, q = s.height, s.round, s.quorum
    rl = s.log.round(r)
    p = rl.proposal
    if s.step is Step.PROPOSE and p is not None:
        if p.pol_round == -1:
            # Alg.1 L22-27: a fresh proposal; prevote it unless locked on another value.
            unlocked = s.locked_round == -1 or s.locked_value_id == p.value_id
            ok = _valid(s, p) and (unlocked or s.ctx.unsafe_no_locking)
            _vote(s, PREVOTE, p.value_id if ok else None, out)
            s.step = Step.PREVOTE
            return True
        pol = s.log.peek(p.pol_round)
        if pol is not None and pol.prevotes.count(p.value_id) >= q:
            # Alg.1 L28-33: a re-proposal backed by 2f+1 prevotes in round vr < round_p;
            # a lock from round <= vr yields to it (it is at least as recent).
            unlocked = s.locked_round <= p.pol_round or s.locked_value_id == p.value_id
            ok = _valid(s, p) and (unlocked or s.ctx.unsafe_no_locking)
            _vote(s, PREVOTE, p.value_id if ok else None, out)
            s.step = Step.PREVOTE
            return True
    if s.step is Step.PREVOTE and not rl.done_l34 and rl.prevotes.total >= q:
        # Alg.1 L34-35: 2f+1 prevotes of any kind, first time: wait a bounded time more.
        rl.done_l34 = True
        out.append(ScheduleTimeout(h, r, Step.PREVOTE, s.ctx.timeouts.duration(Step.PREVOTE, r)))
    polka = None if rl.done_l36 or s.step < Step.PREVOTE else _with_quorum(s, rl, rl.prevotes)
    if polka is not None:
        # Alg.1 L36-43: a polka for a proposed valid v in this round, first time.
        rl.done_l36 = True
        s.valid, s.valid_round = polka, r  # L42-43
        if s.is_validator:
            # Persisted before the precommit: a restart must be able to re-propose v,
            # and to show the POL that lets the others accept it (see ValidValue).
            pol_votes = tuple(rl.prevotes.for_value(polka.value_id))
            out.append(PersistWal(ValidValue(r, polka, pol_votes)))
        if s.step is Step.PREVOTE:
            s.locked_value_id, s.locked_round = polka.value_id, r  # L38-39
            _vote(s, PRECOMMIT, polka.value_id, out)  # L40
            s.step = Step.PRECOMMIT  # L41
            return True
    if s.step is Step.PREVOTE and rl.prevotes.count(None) >= q:
        # Alg.1 L44-46: 2f+1 prevotes for nil.
        _vote(s, PRECOMMIT, None, out)
        s.step = Step.PRECOMMIT
        return True
    if not rl.done_l47 and rl.precommits.total >= q:
        # Alg.1 L47-48: 2f+1 precommits of any kind, first time.
        rl.done_l47 = True
        out.append(
            ScheduleTimeout(h, r, Step.PRECOMMIT, s.ctx.timeouts.duration(Step.PRECOMMIT, r))
        )
    return False


def _decide(s: ConsensusState, r: int, out: list[Effect]) -> bool:
    """Alg.1 L49-54: proposal of round r plus 2f+1 precommits for it: decide."""
    rl = s.log.peek(r)
    if rl is None or rl.proposal is None:
        return False
    p = _with_quorum(s, rl, rl.precommits)  # L49-50
    if p is None:
        return False
    cert = make_commit(s.height, r, p.value_id, rl.precommits.signatures_for(p.value_id))
    out.append(Commit(s.height, r, p.value_id, p.value, cert))  # L51
    s.last_decision = (s.height, p.value_id)
    enter_height(s, s.height + 1, out)  # L52-54
    return True


def _with_quorum(s: ConsensusState, rl: RoundLog, votes: VoteSet) -> Proposal | None:
    """A valid proposal of the round whose value has 2f+1 of ``votes``, if any."""
    for p in rl.proposals():
        if votes.count(p.value_id) >= s.quorum and _valid(s, p):
            return p
    return None


def enter_height(s: ConsensusState, height: int, out: list[Effect]) -> None:
    """Alg.1 L52-54: next height, locks reset, StartRound(0); then buffered messages."""
    s.height = height
    s.set_validators(s.ctx.validators_for(height))
    s.next_validators = None
    s.locked_value_id, s.locked_round, s.valid, s.valid_round = None, -1, None, -1  # L53
    s.log = HeightLog()
    s.valid_cache = {}
    s.signed = {k: m for k, m in s.signed.items() if k[0] >= height}  # the past is closed
    buffered, s.next_height = s.next_height, {}
    start_round(s, 0, out)  # L54
    advance(s, out, 0)
    for m in (m for held in buffered.values() for m in held):
        if s.height != height:
            break  # decided again on the way; the rest is for a height that is over
        if isinstance(m, Proposal):
            accept_proposal(s, m, out)
        else:
            accept_vote(s, m, out)


def start_round(s: ConsensusState, r: int, out: list[Effect]) -> None:
    """Alg.1 L11-21: StartRound(round). Callers run ``advance`` afterwards."""
    h = s.height
    s.round, s.step = r, Step.PROPOSE  # L12-13
    if s.is_validator:
        out.append(PersistWal(RoundStarted(h, r)))
    if s.validators.proposer(h, r).key_id == s.ctx.key_id:  # L14
        signed = s.signed.get((h, r, "proposal"))
        if isinstance(signed, Proposal):
            _propose(s, signed.value, signed.pol_round, out)  # resumed: what we signed stands
            return
        if s.valid is not None:
            _propose(s, s.valid.value, s.valid_round, out)  # L15-16, L19
            return
        out.append(RequestValue(h, r))  # L18: getValue(); ValueReady continues at L19
    # L21 (the proposer too while it waits for its value: see the module header)
    out.append(ScheduleTimeout(h, r, Step.PROPOSE, s.ctx.timeouts.duration(Step.PROPOSE, r)))


# ----------------------------------------------------------------------------- other events


def _on_timeout(s: ConsensusState, ev: TimeoutFired, out: list[Effect]) -> None:
    if ev.height != s.height or ev.round != s.round:
        s.stats.stale_timeout += 1
        return
    if ev.step is Step.PROPOSE and s.step is Step.PROPOSE:
        _vote(s, PREVOTE, None, out)  # Alg.1 L57-60: OnTimeoutPropose
        s.step = Step.PREVOTE
    elif ev.step is Step.PREVOTE and s.step is Step.PREVOTE:
        _vote(s, PRECOMMIT, None, out)  # Alg.1 L61-64: OnTimeoutPrevote
        s.step = Step.PRECOMMIT
    elif ev.step is Step.PRECOMMIT:
        start_round(s, s.round + 1, out)  # Alg.1 L65-67: OnTimeoutPrecommit
    else:
        s.stats.stale_timeout += 1
        return
    advance(s, out, s.round)


def _on_value_ready(s: ConsensusState, ev: ValueReady, out: list[Effect]) -> None:
    h, r = s.height, s.round
    if (ev.height, ev.round) != (h, r) or s.step is not Step.PROPOSE:
        return  # the round moved on while the app was building the block
    if s.validators.proposer(h, r).key_id != s.ctx.key_id or (h, r, "proposal") in s.signed:
        return
    if s.valid is not None:
        _propose(s, s.valid.value, s.valid_round, out)  # Alg.1 L15-16, L19
    else:
        _propose(s, ev.value, -1, out)  # Alg.1 L18-19
    advance(s, out, r)


def _on_sync(s: ConsensusState, ev: CommittedBlockFromSync, out: list[Effect]) -> None:
    """Catch-up: adopt a block decided by 2f+1 precommits without voting on it."""
    if ev.height != s.height:
        # Older: already decided here. Newer: its parent is missing; sync goes in order.
        s.stats.old_height += ev.height < s.height
        return
    value_id = s.ctx.value_id_of(ev.value)
    problem = commit_problem(ev.certificate, s.ctx.chain_id, s.validators, s.ctx.verifier,
                             height=s.height, block_hash=value_id)
    if problem is not None or not _valid_value(s, value_id, ev.value):
        s.stats.bad_sync += 1
        return
    out.append(Commit(s.height, ev.certificate.round, value_id, ev.value, ev.certificate))
    s.last_decision = (s.height, value_id)
    enter_height(s, s.height + 1, out)


# ----------------------------------------------------------------------------- signing


def _propose(s: ConsensusState, value: bytes, pol_round: int, out: list[Effect]) -> None:
    """Alg.1 L19: broadcast ⟨PROPOSAL, h, r, v, vr⟩, at most one per (h, r)."""
    assert s.ctx.signer is not None  # only the proposer, a validator, gets here
    h, r = s.height, s.round
    p = s.signed.get((h, r, "proposal"))
    if not isinstance(p, Proposal):
        vid, me = s.ctx.value_id_of(value), s.ctx.signer.key_id
        unsigned = Proposal(h, r, vid, value, pol_round, me)
        p = Proposal(h, r, vid, value, pol_round, me,
                     s.ctx.signer.sign(unsigned.sign_bytes(s.ctx.chain_id)))
        s.signed[(h, r, "proposal")] = p
        out.append(PersistWal(p))  # durable before it leaves (events.py)
        out.append(Broadcast(p))
    elif p.value != value:
        s.stats.guard_refused += 1  # resumed: the proposal we signed before stands
    rl = s.log.round(r)
    if rl.proposal is None:
        rl.proposal = p
        rl.senders.add(p.proposer)


def _vote(
    s: ConsensusState, vote_type: VoteType, value_id: bytes | None, out: list[Effect]
) -> None:
    """Broadcast our vote for (h_p, round_p) - or re-use the one already signed there."""
    if not s.is_validator:
        return
    assert s.ctx.signer is not None
    h, r = s.height, s.round
    key = (h, r, vote_type)
    v = s.signed.get(key)
    if not isinstance(v, Vote):
        me = s.ctx.signer.key_id
        sig = s.ctx.signer.sign(Vote(vote_type, h, r, value_id, me).sign_bytes(s.ctx.chain_id))
        v = Vote(vote_type, h, r, value_id, me, sig)
        s.signed[key] = v
        out.append(PersistWal(v))  # durable before it leaves (events.py)
        out.append(Broadcast(v))
    elif v.value_id != value_id:
        s.stats.guard_refused += 1  # we already said something else here; stick to it
    rl = s.log.round(r)
    if rl.votes(vote_type).add(v)[0] == ADDED:
        rl.senders.add(v.validator)


def _valid(s: ConsensusState, p: Proposal) -> bool:
    return _valid_value(s, p.value_id, p.value)


def _valid_value(s: ConsensusState, value_id: bytes, value: bytes) -> bool:
    ok = s.valid_cache.get(value_id)
    if ok is None:
        ok = s.valid_cache[value_id] = bool(s.ctx.valid(s.height, value))
    return ok
