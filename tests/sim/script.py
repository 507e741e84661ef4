"""A four-validator network for consensus rule tests, with script helpers.

We are validator 2 of ``v0..v3`` (in key-id order). At height 1 the proposer
of round r is validator (1 + r) % 4: v1 in round 0, *us* in round 1, v3 in
round 2. Signatures come from the deterministic ``FakeSigner``, so the exact
effects a rule must produce - signed votes included - can be written out and
compared with ``==``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from certificates.hashing import sm3
from ledger.commit import VoteType
from node.consensus import (
    Broadcast,
    ConsensusState,
    Context,
    Effect,
    Event,
    PersistWal,
    Proposal,
    RoundState,
    ScheduleTimeout,
    Step,
    Timeouts,
    Vote,
    step,
)
from node.consensus.signing import FakeSigner, FakeVerifier
from tests.sim import app

CHAIN = app.CHAIN_ID
VS = app.validator_set(4)
SIGNERS = [FakeSigner(v.public_key) for v in VS.validators]
ME = 2
KEY = [v.key_id for v in VS.validators]
TIMEOUTS = Timeouts(300, 100, 200, 100, 200, 100)


def value(height: int, tag: bytes, *, valid: bool = True) -> bytes:
    """A deterministic app value (``tag`` tells values apart)."""
    return (app.VALID if valid else app.INVALID) + height.to_bytes(8, "big") + tag.ljust(22, b".")


def vid(v: bytes) -> bytes:
    return sm3(v)


def context(**kw: object) -> Context:
    return Context(CHAIN, SIGNERS[ME], FakeVerifier(), lambda h: VS, app.is_valid, sm3,
                   TIMEOUTS, **kw)  # type: ignore[arg-type]


def proposal(h: int, r: int, v: bytes, pol: int = -1, by: int | None = None) -> Proposal:
    by = VS.validators.index(VS.proposer(h, r)) if by is None else by
    p = Proposal(h, r, vid(v), v, pol, KEY[by])
    return replace(p, signature=SIGNERS[by].sign(p.sign_bytes(CHAIN)))


def vote(t: VoteType, h: int, r: int, v: bytes | None, by: int = ME) -> Vote:
    x = Vote(t, h, r, vid(v) if v is not None else None, KEY[by])
    return replace(x, signature=SIGNERS[by].sign(x.sign_bytes(CHAIN)))


def sent(m: Proposal | Vote) -> list[Effect]:
    """What signing and sending our own message looks like: persist, then broadcast."""
    return [PersistWal(m), Broadcast(m)]


def timeout(h: int, r: int, s: Step) -> ScheduleTimeout:
    return ScheduleTimeout(h, r, s, TIMEOUTS.duration(s, r))


@dataclass(frozen=True)
class Expect:
    """One line of a script: feed ``event``, expect exactly ``effects`` and ``state``."""

    event: Event
    effects: Sequence[Effect]
    state: RoundState | None = None


def play(s: ConsensusState, script: Sequence[Expect]) -> ConsensusState:
    for i, line in enumerate(script):
        s, effects = step(s, line.event)
        assert list(effects) == list(line.effects), f"line {i}: {line.event}\n got {effects}"
        if line.state is not None:
            assert s.snapshot() == line.state, f"line {i}: {line.event}\n got {s.snapshot()}"
    return s
