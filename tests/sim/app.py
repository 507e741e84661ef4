"""The simulated application: validator keys, blocks, validity, crypto choice.

Values are small "blocks": a 2-byte mark (``ok`` for valid, ``NO`` for a block
an honest ledger would reject), the height, and random bytes from the seeded
RNG. ``is_valid`` is the app's pure validity predicate; honest nodes must never
commit a value it rejects, and a block is only valid at its own height (so a
replayed block from another height is invalid).

Keys are real SM2 keys derived from fixed seeds (the validator set must hold
points on the curve), but by default messages are signed with the fast
keyed-hash stand-in (``node.consensus.signing.FakeSigner``); ``crypto="sm2"``
signs and verifies with SM2 for end-to-end checks of commit certificates.
"""

from __future__ import annotations

import random
from functools import cache

from certificates import sm2
from certificates.hashing import sm3
from ledger.commit import Validator, ValidatorSet
from node.consensus.messages import Signer, Verifier
from node.consensus.signing import FakeSigner, FakeVerifier, Sm2Signer, Sm2Verifier

CHAIN_ID = "certledger-sim"
VALID, INVALID = b"ok", b"NO"


@cache
def _keys(n: int) -> tuple[sm2.PrivateKey, ...]:
    keys = [sm2.PrivateKey.from_bytes(sm3(b"certledger-sim-validator-%d" % i)) for i in range(n)]
    # Node i owns the i-th validator of the (key-id sorted) set.
    return tuple(sorted(keys, key=lambda k: k.public.key_id))


@cache
def validator_set(n: int) -> ValidatorSet:
    return ValidatorSet.of(Validator(f"v{i}", k.public.data) for i, k in enumerate(_keys(n)))


def signer(n: int, i: int, crypto: str) -> Signer:
    if crypto == "sm2":
        return Sm2Signer(_keys(n)[i])
    return FakeSigner(validator_set(n).validators[i].public_key)


def verifier(crypto: str) -> Verifier:
    return Sm2Verifier() if crypto == "sm2" else FakeVerifier()


def make_value(height: int, rng: random.Random, *, valid: bool = True) -> bytes:
    return (VALID if valid else INVALID) + height.to_bytes(8, "big") + rng.randbytes(22)


def is_valid(height: int, value: bytes) -> bool:
    return (
        len(value) == 32 and value[:2] == VALID and int.from_bytes(value[2:10], "big") == height
    )


value_id_of = sm3
