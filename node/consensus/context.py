"""Everything the core is given rather than reaching for: keys, app, time budget.

The core is a function of (state, event); whatever it needs from the outside
world is injected here once, as plain callables and frozen values:

* ``signer`` / ``verifier`` - SM2 in the node, a keyed-hash stand-in in the
  simulator and the benchmark;
* ``validators_for(height)`` - the validator set that decides ``height`` (the
  ledger applies changes at height+2, so it is known one height ahead);
* ``valid(height, value)`` - the app's verdict on a proposed block; it must be
  pure (same answer every time), the core caches it per value id;
* ``value_id_of(value)`` - the block hash; a proposal whose ``value_id`` does
  not match its value is dropped, so ``id(v)`` in votes always names ``v``;
* ``timeouts`` - ``base + round * delta`` per step (Alg.1 timeoutX(round)),
  growing so that after GST some round is long enough for everyone.

``unsafe_*`` switches exist only so the simulator can prove that its checker
catches a broken protocol; the node's configuration never sets them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.commit import ValidatorSet
from node.consensus.messages import Signer, Step, Verifier


@dataclass(frozen=True)
class Timeouts:
    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500

    def duration(self, step: Step, round_: int) -> int:
        if step is Step.PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if step is Step.PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        return self.precommit_ms + round_ * self.precommit_delta_ms


@dataclass(frozen=True)
class Context:
    chain_id: str
    signer: Signer | None  # None: follow consensus without voting (an observer)
    verifier: Verifier
    validators_for: Callable[[int], ValidatorSet]
    valid: Callable[[int, bytes], bool]
    value_id_of: Callable[[bytes], bytes]
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Messages for rounds beyond round_p + round_window are dropped: they would
    # let one Byzantine validator make us store unbounded junk. Honest rounds
    # cannot run that far ahead of a live node (a round ends only after 2f+1
    # precommits, so f+1 honest validators are in it).
    round_window: int = 100
    unsafe_no_locking: bool = False  # ignore lockedValue/lockedRound at L23 and L29
    unsafe_quorum_2f: bool = False  # count 2f instead of 2f+1 as a quorum

    @property
    def key_id(self) -> bytes | None:
        return self.signer.key_id if self.signer is not None else None
