"""Resuming a height from the WAL after a crash.

The WAL holds, for the current height, every proposal and vote we signed (each
made durable before it was sent), the rounds we entered and the values we saw
a polka for. From them:

* the double-sign guard is refilled with every message we signed, so no rule
  can make us sign a different value for one (height, round, step) again;
* the lock is the value of our highest-round non-nil precommit: Alg.1 L38-40
  lock exactly when they precommit, so that is lockedValue/lockedRound;
* validValue/validRound come from the latest ``ValidValue`` entry (it carries
  the block, so we can re-propose it, L15-16); each entry's proposal and POL
  prevotes go back in the log, so gossip relays the POL as before the crash
  (other validators may hold it from nowhere else);
* the round is the highest one we entered or signed in; the step follows from
  what we signed in it (a precommit means precommit, a prevote means prevote).

Every signed message is put back in the log (it counts towards quorums) and
broadcast again: the crash may have come after ``PersistWal`` and before the
``Broadcast``, and re-sending the *same* signed message is always safe.
"""

from __future__ import annotations

from node.consensus.context import Context
from node.consensus.core import advance, start_round
from node.consensus.events import Broadcast, Effect
from node.consensus.messages import (
    Proposal,
    RoundStarted,
    Step,
    ValidValue,
    Vote,
    WalEntry,
    entry_height,
)
from node.consensus.state import ConsensusState


def start(
    ctx: Context, height: int, wal: tuple[WalEntry, ...] | list[WalEntry] = ()
) -> tuple[ConsensusState, list[Effect]]:
    """A node at ``height`` (the ledger's last committed height + 1).

    Alg.1 L10 "upon start do StartRound(0)" - or, when the WAL holds entries for
    this height, resume where we stopped (see node.consensus.restore).
    """
    s = ConsensusState(ctx, height, ctx.validators_for(height))
    out: list[Effect] = []
    mine = [e for e in wal if entry_height(e) == height]
    if mine:
        resume(s, mine, out)
    else:
        start_round(s, 0, out)
    advance(s, out, s.round)
    return s, out


def resume(s: ConsensusState, entries: list[WalEntry], out: list[Effect]) -> None:
    """Rebuild round state for ``s.height`` from its WAL entries (in WAL order)."""
    h = s.height
    round_ = 0
    for e in entries:
        if isinstance(e, RoundStarted):
            round_ = max(round_, e.round)
        elif isinstance(e, ValidValue):
            if e.round >= s.valid_round:
                s.valid, s.valid_round = e.proposal, e.round
            rl = s.log.round(e.round)
            if rl.proposal is None:
                rl.proposal = e.proposal
                rl.senders.add(e.proposal.proposer)
            for v in e.prevotes:
                rl.votes(v.type).add(v)
                rl.senders.add(v.validator)
        elif isinstance(e, Proposal):
            s.signed.setdefault((h, e.round, "proposal"), e)
            round_ = max(round_, e.round)
        else:
            s.signed.setdefault((h, e.round, e.type), e)
            round_ = max(round_, e.round)
            if e.type == "precommit" and e.value_id is not None and e.round > s.locked_round:
                s.locked_value_id, s.locked_round = e.value_id, e.round
    for m in s.signed.values():
        rl = s.log.round(m.round)
        if isinstance(m, Vote):
            rl.votes(m.type).add(m)
            rl.senders.add(m.validator)
        elif rl.proposal is None:
            rl.proposal = m
            rl.senders.add(m.proposer)
        out.append(Broadcast(m))
    s.round = round_
    if (h, round_, "precommit") in s.signed:
        s.step = Step.PRECOMMIT
    elif (h, round_, "prevote") in s.signed:
        s.step = Step.PREVOTE
    else:
        start_round(s, round_, out)
