"""Per-height bookkeeping of proposals and votes, with O(1) quorum questions.

Every rule of Algorithm 1 asks "do 2f+1 (or f+1) distinct validators say X in
round r?". ``VoteSet`` answers from running tallies kept as votes arrive, so a
vote costs a few dict operations however many validators there are:

* ``votes``  - validator key id -> the first vote it sent;
* ``extra``  - (validator, value id) -> a *conflicting* vote (equivocation);
* ``tally``  - value id (or None for nil) -> number of distinct validators
  that voted for it;
* ``total``  - number of distinct validators that voted at all ("2f+1
  ⟨PREVOTE, ∗⟩").

An equivocating validator counts once in the tally of *each* value it voted
for, as in the paper, where "2f+1 ⟨PREVOTE, h, r, id(v)⟩" is the set of
processes that sent that message. This is safe - two quorums for different
values still share an honest validator, and honest validators vote once - and
it is needed for liveness: if we counted only the first vote we saw, a
validator that told half the network "nil" and half "v" could leave honest
nodes permanently disagreeing about whether round r had a polka, and those
locked in r would never be released. Conflicting votes are capped per
validator (``MAX_CONFLICTS``) so a flood of them costs bounded memory; nil and
the round's proposed value are always admitted, being the only values that
can matter to a rule.

``RoundLog`` groups one round: the first proposal from its proposer (the one we
prevote on, L22/L28), any other proposals the same proposer signed for that
round (equivocation: kept, capped, because L36 and L49 hold for *any* proposal
⟨PROPOSAL, h, r, v⟩ with a quorum for id(v), and a node that saw the "wrong"
one first must still be able to lock and decide on the value others chose),
both vote sets, the distinct senders of anything (for the f+1 round-skip rule,
L55) and the once-only flags of L34, L36 and L47 ("for the first time").
"""

from __future__ import annotations

from node.consensus.messages import Proposal, Vote

#: add() outcomes: counted; already held; counted and an equivocation; an
#: equivocation beyond the cap (evidence, not counted).
ADDED, DUPLICATE, CONFLICT, CONFLICT_DROPPED = 0, 1, 2, 3
MAX_CONFLICTS = 8


class VoteSet:
    __slots__ = ("extra", "tally", "total", "votes")

    def __init__(self) -> None:
        self.votes: dict[bytes, Vote] = {}
        self.extra: dict[tuple[bytes, bytes | None], Vote] = {}
        self.tally: dict[bytes | None, int] = {}
        self.total = 0

    def add(self, vote: Vote, proposed: bytes | None = None) -> tuple[int, Vote | None]:
        """Record ``vote``; returns (outcome, the validator's first vote if it differs).

        ``proposed`` is the value id of the round's proposal, admitted past the cap.
        """
        prev = self.votes.get(vote.validator)
        if prev is None:
            self.votes[vote.validator] = vote
            self.tally[vote.value_id] = self.tally.get(vote.value_id, 0) + 1
            self.total += 1
            return ADDED, None
        vid = vote.value_id
        if prev.value_id == vid or (vote.validator, vid) in self.extra:
            return DUPLICATE, None
        if vid is not None and vid != proposed and (
            sum(1 for k in self.extra if k[0] == vote.validator) >= MAX_CONFLICTS
        ):
            return CONFLICT_DROPPED, prev
        self.extra[(vote.validator, vid)] = vote
        self.tally[vid] = self.tally.get(vid, 0) + 1
        return CONFLICT, prev

    def count(self, value_id: bytes | None) -> int:
        return self.tally.get(value_id, 0)

    def for_value(self, value_id: bytes | None) -> list[Vote]:
        """The votes (one per validator) that make up ``tally[value_id]``."""
        out = [v for v in self.votes.values() if v.value_id == value_id]
        return out + [v for (_, vid), v in self.extra.items() if vid == value_id]

    def signatures_for(self, value_id: bytes) -> list[tuple[bytes, bytes]]:
        return [(v.validator, v.signature) for v in self.for_value(value_id)]


class RoundLog:
    __slots__ = ("done_l34", "done_l36", "done_l47", "others", "precommits", "prevotes",
                 "proposal", "senders")

    def __init__(self) -> None:
        self.proposal: Proposal | None = None
        self.others: dict[bytes, Proposal] = {}  # value id -> a conflicting proposal
        self.prevotes = VoteSet()
        self.precommits = VoteSet()
        self.senders: set[bytes] = set()
        self.done_l34 = False
        self.done_l36 = False
        self.done_l47 = False

    def votes(self, vote_type: str) -> VoteSet:
        return self.prevotes if vote_type == "prevote" else self.precommits

    def proposals(self) -> list[Proposal]:
        """Every proposal of this round, the first one first."""
        if self.proposal is None:
            return []
        return [self.proposal, *self.others.values()] if self.others else [self.proposal]

    def has(self, p: Proposal) -> bool:
        return self.proposal == p or self.others.get(p.value_id) == p


class HeightLog:
    """All rounds of one height; rounds are created on first use."""

    __slots__ = ("rounds",)

    def __init__(self) -> None:
        self.rounds: dict[int, RoundLog] = {}

    def round(self, r: int) -> RoundLog:
        rl = self.rounds.get(r)
        if rl is None:
            rl = self.rounds[r] = RoundLog()
        return rl

    def peek(self, r: int) -> RoundLog | None:
        return self.rounds.get(r)
