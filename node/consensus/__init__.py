"""Tendermint-style BFT consensus: a pure core, its WAL, and nothing that does I/O.

* ``restore.start(ctx, height, wal_entries)`` -> (state, effects): a node at a
  height, fresh (Alg.1 L10) or resumed from its WAL.
* ``core.step(state, event)`` -> (state, effects): everything else.
* ``events``: the events it consumes and the effects it asks the runtime to run.
* ``context``: what is injected (keys, validator sets, the app's validity check,
  timeouts); ``messages``: proposals, votes, evidence, WAL entries.
* ``intake`` (message admission), ``votebook`` (tallies), ``restore`` (resume).
* ``gossip.to_gossip(state)``: what the runtime re-sends periodically.
* ``wal``: the append-only, fsync'd, torn-write-tolerant log of what we signed.
* ``certs.commit_problem``: commit certificate check through the ``Verifier``.
* ``signing``: SM2 signer/verifier (and an insecure fast stand-in for tests).
* ``bench``: ``python -m node.consensus.bench``.

The runtime (a thread in the node, or ``tests/sim``) feeds events and carries
out effects in order; see ``docs/simulation.md`` for how it is tested.
"""

from __future__ import annotations

from node.consensus.context import Context, Timeouts
from node.consensus.core import step
from node.consensus.events import (
    Broadcast,
    Commit,
    CommittedBlockFromSync,
    Effect,
    Event,
    Evidence,
    PersistWal,
    ProposalReceived,
    RequestValue,
    ScheduleTimeout,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from node.consensus.messages import (
    DuplicateProposal,
    DuplicateVote,
    Message,
    Misbehaviour,
    Proposal,
    RoundStarted,
    Signer,
    Step,
    ValidValue,
    Verifier,
    Vote,
    WalEntry,
)
from node.consensus.restore import start
from node.consensus.state import ConsensusState, RoundState, Stats

__all__ = [
    "Broadcast",
    "Commit",
    "CommittedBlockFromSync",
    "ConsensusState",
    "Context",
    "DuplicateProposal",
    "DuplicateVote",
    "Effect",
    "Event",
    "Evidence",
    "Message",
    "Misbehaviour",
    "PersistWal",
    "Proposal",
    "ProposalReceived",
    "RequestValue",
    "RoundStarted",
    "RoundState",
    "ScheduleTimeout",
    "Signer",
    "Stats",
    "Step",
    "TimeoutFired",
    "Timeouts",
    "ValidValue",
    "ValueReady",
    "Verifier",
    "Vote",
    "VoteReceived",
    "WalEntry",
    "start",
    "step",
]
