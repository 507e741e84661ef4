"""The consensus state of one node: Algorithm 1's variables plus bookkeeping.

``ConsensusState`` holds h_p, round_p, step_p, lockedValue/lockedRound and
validValue/validRound (Alg.1 L2-9), the messages received at the current
height, the double-sign guard and counters. ``step`` (node.consensus.core)
takes ownership of a state and returns it updated - the way Malachite's
``apply(state, input)`` consumes a moved value - so the hot path never copies
vote tables; ``clone()`` gives an independent copy when a caller (a test) wants
to keep the old one. ``snapshot()`` is the frozen view tests compare against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ledger.commit import ValidatorSet
from node.consensus.context import Context
from node.consensus.messages import Message, Misbehaviour, Proposal, Step
from node.consensus.votebook import HeightLog

#: How much evidence a state keeps before dropping the oldest (the runtime
#: drains it from the Evidence effects; this only bounds a node nobody drains).
MAX_EVIDENCE = 1000


@dataclass
class Stats:
    """Why messages were dropped or ignored; exported as node metrics."""

    bad_signature: int = 0
    not_validator: int = 0
    wrong_proposer: int = 0
    malformed: int = 0
    old_height: int = 0
    future_dropped: int = 0
    round_window_dropped: int = 0
    buffered: int = 0
    duplicate: int = 0
    equivocation: int = 0
    guard_refused: int = 0
    bad_sync: int = 0
    stale_timeout: int = 0


@dataclass(frozen=True)
class RoundState:
    height: int
    round: int
    step: Step
    locked_value_id: bytes | None = None
    locked_round: int = -1
    valid_value_id: bytes | None = None
    valid_round: int = -1


# (height, round, "proposal" | "prevote" | "precommit")
GuardKey = tuple[int, int, str]


@dataclass(eq=False)
class ConsensusState:
    ctx: Context
    height: int
    validators: ValidatorSet
    round: int = 0
    step: Step = Step.PROPOSE
    locked_value_id: bytes | None = None  # Alg.1 L6 (the id names the value: see Context)
    locked_round: int = -1  # L7
    valid: Proposal | None = None  # L8: the proposal that carried validValue
    valid_round: int = -1  # L9
    log: HeightLog = field(default_factory=HeightLog)
    # Verified messages for height+1, keyed (kind, sender, round): a node a little
    # behind must not lose the next height's first votes while it finishes this one.
    # Up to MAX_CONFLICTS different statements per key, like the vote book, so an
    # equivocation sent ahead of its height is still found (as evidence) on replay.
    next_height: dict[tuple[str, bytes, int], list[Message]] = field(default_factory=dict)
    next_validators: ValidatorSet | None = None  # validators_for(height + 1), once asked
    # Double-sign guard: what we signed at the current height. A key present
    # here is never signed again with any value.
    signed: dict[GuardKey, Message] = field(default_factory=dict)
    valid_cache: dict[bytes, bool] = field(default_factory=dict)
    evidence: list[Misbehaviour] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    last_decision: tuple[int, bytes] | None = None  # (height, value id): decision_p
    quorum: int = 0
    weak_quorum: int = 0

    def __post_init__(self) -> None:
        self.set_validators(self.validators)

    def set_validators(self, vs: ValidatorSet) -> None:
        self.validators = vs
        self.quorum = vs.quorum - (1 if self.ctx.unsafe_quorum_2f else 0)
        self.weak_quorum = vs.max_faulty + 1  # f+1: at least one of them is correct

    @property
    def is_validator(self) -> bool:
        key = self.ctx.key_id
        return key is not None and key in self.validators.by_key_id

    def snapshot(self) -> RoundState:
        return RoundState(
            self.height, self.round, self.step, self.locked_value_id, self.locked_round,
            self.valid.value_id if self.valid is not None else None, self.valid_round,
        )

    def clone(self) -> ConsensusState:
        # The context (callables, keys) is shared, never copied.
        return copy.deepcopy(self, memo={id(self.ctx): self.ctx})
