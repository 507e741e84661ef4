"""Consensus messages, evidence and WAL entries: frozen data, nothing else.

A ``Proposal`` carries the opaque value (a serialized block) together with its
32-byte ``value_id`` (the block hash); votes carry only the ``value_id`` or
``None`` for nil. Signatures cover canonical sign-bytes built in one place:

* votes use ``ledger.commit.vote_sign_bytes``, so 2f+1 precommit signatures
  collected here are *directly* a ``CommitCertificate`` the ledger and the
  verifier's light client can check;
* proposals use ``canonical.sign_bytes(DOMAIN_PROPOSAL, chain_id, {...})`` over
  (height, round, value_id, pol_round) - the value itself is bound through its
  id, which the core recomputes with the app's ``value_id_of``.

``Signer`` and ``Verifier`` are the only crypto the core sees: the node passes
SM2, the simulator and the benchmark a fast keyed-hash stand-in
(``node.consensus.signing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Protocol

from certificates import canonical
from ledger.commit import VoteType, vote_sign_bytes


class Step(IntEnum):
    """Alg.1 L4: step_p; ordered, because L36 tests ``step >= prevote``."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class Signer(Protocol):
    """Our validator key: signs sign-bytes, returns a 64-byte signature."""

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


# Every validator signs the same bytes for the same vote, so n votes share one
# encoding: caching it is most of the cost of checking a vote with a fast verifier.
_vote_bytes = lru_cache(maxsize=8192)(vote_sign_bytes)


@lru_cache(maxsize=1024)
def proposal_sign_bytes(
    chain_id: str, height: int, round_: int, value_id: bytes, pol_round: int
) -> bytes:
    return canonical.sign_bytes(
        canonical.DOMAIN_PROPOSAL,
        chain_id,
        {"height": height, "round": round_, "value_id": value_id, "pol_round": pol_round},
    )


@dataclass(frozen=True, slots=True)
class Proposal:
    """⟨PROPOSAL, h, r, v, vr⟩ signed by ``proposer`` (a validator key id)."""

    height: int
    round: int
    value_id: bytes
    value: bytes
    pol_round: int
    proposer: bytes
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        return proposal_sign_bytes(chain_id, self.height, self.round, self.value_id,
                                   self.pol_round)


@dataclass(frozen=True, slots=True)
class Vote:
    """⟨PREVOTE|PRECOMMIT, h, r, id(v)|nil⟩ signed by ``validator`` (a key id)."""

    type: VoteType
    height: int
    round: int
    value_id: bytes | None
    validator: bytes
    signature: bytes = b""

    def sign_bytes(self, chain_id: str) -> bytes:
        return _vote_bytes(chain_id, self.type, self.height, self.round, self.value_id)


Message = Proposal | Vote


@dataclass(frozen=True, slots=True)
class DuplicateVote:
    """Two signed votes by one validator for one (h, r, type) and different values."""

    first: Vote
    second: Vote


@dataclass(frozen=True, slots=True)
class DuplicateProposal:
    """Two signed proposals by the proposer of one (h, r) for different values."""

    first: Proposal
    second: Proposal


Misbehaviour = DuplicateVote | DuplicateProposal


# ----------------------------------------------------------------------------- WAL entries
# Besides our own signed Proposal/Vote messages the WAL keeps the two facts a
# restarted node needs and cannot rebuild from its own messages.


@dataclass(frozen=True, slots=True)
class RoundStarted:
    """We entered (height, round): restart resumes here, not in an earlier round."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class ValidValue:
    """Alg.1 L42-43 happened in ``round`` for ``proposal``'s value.

    Persisted before the precommit that locks on it (L38-40), so a restarted
    node has the locked value's payload and can re-propose it (L15-16), and with
    ``prevotes``, the 2f+1 prevotes of that polka (the POL). Others accept the
    re-proposal only once they hold the POL (L28), and they may have it from
    nowhere else: its prevotes can include one of a validator that has since gone
    silent and that reached only us. A restart that kept the lock but lost the POL
    would leave the correct validators unable to decide while that one is away.
    """

    round: int
    proposal: Proposal
    prevotes: tuple[Vote, ...] = ()  # () in entries written before the POL was kept


WalEntry = Proposal | Vote | RoundStarted | ValidValue


def entry_height(entry: WalEntry) -> int:
    if isinstance(entry, ValidValue):
        return entry.proposal.height
    return entry.height
