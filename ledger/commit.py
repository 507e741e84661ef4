"""Validator sets, vote sign-bytes and commit certificates.

Consensus (``node``) signs votes with ``vote_sign_bytes`` and the ledger, the
verifier's light client and ``audit`` check commit certificates with
``CommitCertificate.verify``: both sides build the signed bytes here, so they
cannot drift apart. Every validator has voting power 1; with n = 3f+1 the
quorum is n - f = 2f+1 (for n not of that form, the largest f with 3f < n).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.errors import CommitError, ValidatorSetError

VoteType = Literal["prevote", "precommit"]
VOTE_TYPES: tuple[VoteType, ...] = ("prevote", "precommit")


def vote_sign_bytes(
    chain_id: str, vote_type: VoteType, height: int, round_: int, block_hash: bytes | None
) -> bytes:
    """Bytes a validator signs for a vote; ``block_hash`` None is a vote for nil."""
    if vote_type not in VOTE_TYPES:
        raise CommitError(f"unknown vote type {vote_type!r}")
    return canonical.sign_bytes(
        canonical.DOMAIN_VOTE,
        chain_id,
        {"type": vote_type, "height": height, "round": round_, "block_hash": block_hash},
    )


@dataclass(frozen=True)
class Validator:
    name: str
    public_key: bytes
    address: str = ""

    def __post_init__(self) -> None:
        try:
            sm2.validate_public_key(self.public_key)
        except CertificatesError as exc:
            raise ValidatorSetError(f"validator {self.name!r}: {exc}") from exc

    @cached_property
    def key_id(self) -> bytes:
        return sm2.key_id(self.public_key)

    def to_value(self) -> dict[str, Any]:
        return {"name": self.name, "public_key": self.public_key, "address": self.address}


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered (by key id) set of equal-power validators."""

    validators: tuple[Validator, ...]

    def __post_init__(self) -> None:
        if not self.validators:
            raise ValidatorSetError("a validator set needs at least one validator")
        ids = [v.key_id for v in self.validators]
        if len(set(ids)) != len(ids):
            raise ValidatorSetError("a validator set lists the same key twice")
        if ids != sorted(ids):
            object.__setattr__(
                self, "validators", tuple(sorted(self.validators, key=lambda v: v.key_id))
            )

    @classmethod
    def of(cls, validators: Iterable[Validator]) -> ValidatorSet:
        return cls(tuple(validators))

    def __len__(self) -> int:
        return len(self.validators)

    @property
    def max_faulty(self) -> int:
        return (len(self.validators) - 1) // 3

    @property
    def quorum(self) -> int:
        return len(self.validators) - self.max_faulty

    @cached_property
    def by_key_id(self) -> dict[bytes, Validator]:
        return {v.key_id: v for v in self.validators}

    @cached_property
    def hash(self) -> bytes:
        return sm3(canonical.encode([v.to_value() for v in self.validators]))

    def proposer(self, height: int, round_: int) -> Validator:
        """Round-robin proposer, shifted each height so load spreads evenly."""
        return self.validators[(height + round_) % len(self.validators)]

    def to_value(self) -> list[dict[str, Any]]:
        return [v.to_value() for v in self.validators]


@dataclass(frozen=True)
class CommitSig:
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class CommitCertificate:
    """2f+1 precommit signatures for (chain_id, height, round, block_hash)."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]

    def sign_bytes(self, chain_id: str) -> bytes:
        return vote_sign_bytes(chain_id, "precommit", self.height, self.round, self.block_hash)

    def verify(self, chain_id: str, validators: ValidatorSet, *, height: int | None = None,
               block_hash: bytes | None = None, signatures: bool = True) -> None:
        """Raise CommitError unless a quorum of distinct validators signed this block.
        ``signatures=False`` checks all but the SM2 signatures themselves, for a caller
        that has verified each of them already (a node's consensus core)."""
        if height is not None and self.height != height:
            raise CommitError(f"commit is for height {self.height}, expected {height}")
        if block_hash is not None and self.block_hash != block_hash:
            raise CommitError(
                f"commit at height {self.height} is for block {self.block_hash.hex()[:16]}…, "
                f"not {block_hash.hex()[:16]}…"
            )
        msg = self.sign_bytes(chain_id)
        seen: set[bytes] = set()
        for cs in self.signatures:
            v = validators.by_key_id.get(cs.key_id)
            if v is None:
                raise CommitError(
                    f"commit at height {self.height} has a signature by {cs.key_id.hex()}, "
                    "which is not in the validator set"
                )
            if cs.key_id in seen:
                raise CommitError(f"commit at height {self.height} counts {cs.key_id.hex()} twice")
            seen.add(cs.key_id)
            if signatures and not sm2.verify(v.public_key, msg, cs.signature):
                raise CommitError(
                    f"commit at height {self.height}: bad signature by validator {v.name!r}"
                )
        if len(seen) < validators.quorum:
            raise CommitError(
                f"commit at height {self.height} has {len(seen)} signatures, "
                f"needs {validators.quorum} of {len(validators)}"
            )

    def to_value(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash,
            "signatures": [[s.key_id, s.signature] for s in self.signatures],
        }

    @classmethod
    def from_value(cls, value: Any) -> CommitCertificate:
        try:
            sigs = tuple(CommitSig(bytes(k), bytes(s)) for k, s in value["signatures"])
            cc = cls(int(value["height"]), int(value["round"]), bytes(value["block_hash"]), sigs)
        except (KeyError, TypeError, ValueError) as exc:
            raise CommitError(f"malformed commit certificate: {exc!r}") from exc
        if len(cc.block_hash) != 32 or any(
            len(s.key_id) != 16 or len(s.signature) != 64 for s in sigs
        ):
            raise CommitError("malformed commit certificate: wrong field lengths")
        return cc


def make_commit(
    height: int, round_: int, block_hash: bytes, sigs: Sequence[tuple[bytes, bytes]]
) -> CommitCertificate:
    """Build a certificate from (key_id, signature) pairs, sorted for a canonical form."""
    return CommitCertificate(
        height, round_, block_hash, tuple(CommitSig(k, s) for k, s in sorted(sigs))
    )
