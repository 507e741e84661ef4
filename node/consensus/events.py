"""Inputs (events) and outputs (effects) of the consensus state machine.

The core never performs I/O: it returns effects as data and the runtime (the
node's consensus thread, or the simulator) carries them out **in order**. The
one ordering rule that safety depends on: a ``PersistWal`` is emitted before
the ``Broadcast`` of the message it records, and the runtime must have made it
durable (fsync) before that message leaves the process. A crash in between
leaves a signed-but-unsent message, which restart re-sends unchanged.

Value validation is a *synchronous, injected pure callback*
(``Context.valid(height, value)``) rather than an event round-trip: the ledger
can decide validity of a block against its parent state without I/O, and a
synchronous answer keeps every rule of Algorithm 1 a single step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.commit import CommitCertificate
from node.consensus.messages import Message, Misbehaviour, Proposal, Step, Vote, WalEntry

# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    proposal: Proposal


@dataclass(frozen=True, slots=True)
class VoteReceived:
    vote: Vote


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class ValueReady:
    """The app's answer to ``RequestValue``: the block we propose (Alg.1 L18 getValue)."""

    height: int
    round: int
    value: bytes


@dataclass(frozen=True, slots=True)
class CommittedBlockFromSync:
    """A block fetched from a peer with its commit certificate (catch-up)."""

    height: int
    value: bytes
    certificate: CommitCertificate


Event = ProposalReceived | VoteReceived | TimeoutFired | ValueReady | CommittedBlockFromSync

# ----------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Deliver ``TimeoutFired(height, round, step)`` after ``duration_ms``."""

    height: int
    round: int
    step: Step
    duration_ms: int


@dataclass(frozen=True, slots=True)
class PersistWal:
    """Append ``entry`` to the WAL and fsync before executing the next effect."""

    entry: WalEntry


@dataclass(frozen=True, slots=True)
class Commit:
    """Height ``height`` is decided: store ``value`` with ``certificate`` atomically.

    The runtime must make the block durable before it lets the core sign anything
    at ``height + 1`` (the effects that follow in the same list).
    """

    height: int
    round: int
    value_id: bytes
    value: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class RequestValue:
    """We propose at (height, round): the app answers with ``ValueReady``."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """A validator equivocated; the node keeps and publishes ``misbehaviour``."""

    misbehaviour: Misbehaviour


Effect = Broadcast | ScheduleTimeout | PersistWal | Commit | RequestValue | Evidence
