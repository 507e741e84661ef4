"""Admission of proposals and votes: everything a message must pass to be counted.

Order of checks, cheapest first, so junk costs little: shape (rounds, lengths),
height (older heights are ignored - we never act on the past; the next height
is checked and buffered; anything further is dropped), the round window,
membership and proposer, an exact-duplicate short cut (gossip re-sends the same
signed message often), then the signature, then for proposals that the value
hashes to its ``value_id``. Each rejection bumps a counter in ``state.stats``.

A validly signed vote that conflicts with one we already hold from the same
validator for the same (height, round, type) is evidence of equivocation: it is
kept (``state.evidence``) and announced (an ``Evidence`` effect); it still
counts for its own value (see ``votebook`` for why that is safe and needed).
Messages for the next height are checked and buffered, different statements from
one signer included (up to the same cap), so a conflict sent ahead of its height
is found when the buffer is replayed.
"""

from __future__ import annotations

from ledger.commit import VOTE_TYPES, ValidatorSet
from node.consensus.events import Effect, Evidence
from node.consensus.messages import (
    DuplicateProposal,
    DuplicateVote,
    Message,
    Misbehaviour,
    Proposal,
    Vote,
)
from node.consensus.state import MAX_EVIDENCE, ConsensusState
from node.consensus.votebook import ADDED, CONFLICT, DUPLICATE, MAX_CONFLICTS, RoundLog

ID_SIZE = 32


def admit_vote(s: ConsensusState, v: Vote) -> bool:
    """True if ``v`` is for the current height and may be counted."""
    if v.height != s.height:
        _other_height(s, v)
        return False
    return _check_vote(s, s.validators, v, s.round)


def admit_proposal(s: ConsensusState, p: Proposal) -> bool:
    if p.height != s.height:
        _other_height(s, p)
        return False
    return _check_proposal(s, s.validators, p, s.round)


def add_vote(s: ConsensusState, rl: RoundLog, v: Vote, out: list[Effect]) -> bool:
    """Count ``v`` in its round; False if nothing was counted (a duplicate)."""
    proposed = rl.proposal.value_id if rl.proposal is not None else None
    status, prev = rl.votes(v.type).add(v, proposed)
    if status == ADDED:
        return True
    if status == DUPLICATE or prev is None:
        s.stats.duplicate += 1
        return False
    _evidence(s, DuplicateVote(prev, v), out)
    return status == CONFLICT


def add_second_proposal(s: ConsensusState, rl: RoundLog, p: Proposal, out: list[Effect]) -> bool:
    """The proposer of the round already proposed: a re-send, or equivocation.

    True if ``p`` was kept as an alternative proposal (see ``votebook``).
    """
    first = rl.proposal
    assert first is not None
    if (first.value_id, first.pol_round) == (p.value_id, p.pol_round) or p.value_id in rl.others:
        s.stats.duplicate += 1
        return False
    _evidence(s, DuplicateProposal(first, p), out)
    if p.value_id == first.value_id or len(rl.others) >= MAX_CONFLICTS:
        return False
    rl.others[p.value_id] = p
    return True


def _evidence(s: ConsensusState, ev: Misbehaviour, out: list[Effect]) -> None:
    s.stats.equivocation += 1
    s.evidence.append(ev)
    if len(s.evidence) > MAX_EVIDENCE:
        del s.evidence[0]
    out.append(Evidence(ev))


def _other_height(s: ConsensusState, m: Message) -> None:
    if m.height < s.height:
        s.stats.old_height += 1  # decided already: never re-vote on the past
        return
    if m.height != s.height + 1:
        s.stats.future_dropped += 1  # too far ahead to check; block sync catches us up
        return
    if isinstance(m, Proposal):
        key = ("proposal", m.proposer, m.round)
    else:
        key = (m.type, m.validator, m.round)
    held = s.next_height.get(key, [])
    if any(_statement(h) == _statement(m) for h in held) or len(held) >= MAX_CONFLICTS:
        s.stats.duplicate += 1  # a re-send (or re-signing) of what is held, or past the cap
        return
    # validators_for(h+1) is known at height h: the ledger applies changes at h+2.
    vs = s.next_validators
    if vs is None:
        vs = s.next_validators = s.ctx.validators_for(m.height)
    ok = _check_proposal(s, vs, m, 0) if isinstance(m, Proposal) else _check_vote(s, vs, m, 0)
    if ok:
        s.next_height.setdefault(key, []).append(m)
        s.stats.buffered += 1


def _statement(m: Message) -> tuple[bytes | None, int]:
    """What a signer asserts: two different statements for one key are equivocation."""
    return (m.value_id, m.pol_round) if isinstance(m, Proposal) else (m.value_id, -1)


def _check_vote(s: ConsensusState, vs: ValidatorSet, v: Vote, base_round: int) -> bool:
    stats = s.stats
    if v.round < 0 or v.type not in VOTE_TYPES or (
        v.value_id is not None and len(v.value_id) != ID_SIZE
    ):
        stats.malformed += 1
        return False
    if v.round > base_round + s.ctx.round_window:
        stats.round_window_dropped += 1
        return False
    val = vs.by_key_id.get(v.validator)
    if val is None:
        stats.not_validator += 1
        return False
    if v.height == s.height:
        rl = s.log.peek(v.round)
        if rl is not None:
            vset = rl.votes(v.type)
            if vset.votes.get(v.validator) == v or vset.extra.get((v.validator, v.value_id)) == v:
                stats.duplicate += 1  # an exact re-send: no need to verify it again
                return False
    if not s.ctx.verifier.verify(val.public_key, v.sign_bytes(s.ctx.chain_id), v.signature):
        stats.bad_signature += 1
        return False
    return True


def _check_proposal(s: ConsensusState, vs: ValidatorSet, p: Proposal, base_round: int) -> bool:
    stats = s.stats
    if p.round < 0 or not -1 <= p.pol_round < p.round or len(p.value_id) != ID_SIZE:
        stats.malformed += 1
        return False
    if p.round > base_round + s.ctx.round_window:
        stats.round_window_dropped += 1
        return False
    proposer = vs.proposer(p.height, p.round)
    if p.proposer != proposer.key_id:
        if p.proposer in vs.by_key_id:
            stats.wrong_proposer += 1
        else:
            stats.not_validator += 1
        return False
    if p.height == s.height:
        rl = s.log.peek(p.round)
        if rl is not None and rl.has(p):
            stats.duplicate += 1
            return False
    if not s.ctx.verifier.verify(proposer.public_key, p.sign_bytes(s.ctx.chain_id), p.signature):
        stats.bad_signature += 1
        return False
    if s.ctx.value_id_of(p.value) != p.value_id:
        stats.malformed += 1  # the signed id does not name this value
        return False
    return True
