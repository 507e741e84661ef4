"""Commit certificate checking through the injected ``Verifier``.

Same rules as ``ledger.commit.CommitCertificate.verify`` - distinct validators
of the height's set, each signature over the precommit sign-bytes, at least a
quorum - but the signature check goes through the core's ``Verifier``, so the
simulator's fast stand-in and the node's SM2 use one code path. With the SM2
verifier the two functions accept exactly the same certificates (tested).
"""

from __future__ import annotations

from ledger.commit import CommitCertificate, ValidatorSet
from node.consensus.messages import Verifier


def commit_problem(
    cert: CommitCertificate,
    chain_id: str,
    validators: ValidatorSet,
    verifier: Verifier,
    *,
    height: int,
    block_hash: bytes,
) -> str | None:
    """None if ``cert`` proves ``block_hash`` at ``height``, else what is wrong."""
    if cert.height != height:
        return f"certificate is for height {cert.height}, expected {height}"
    if cert.block_hash != block_hash:
        return f"certificate is for block {cert.block_hash.hex()[:16]}, not {block_hash.hex()[:16]}"
    msg = cert.sign_bytes(chain_id)
    seen: set[bytes] = set()
    for cs in cert.signatures:
        v = validators.by_key_id.get(cs.key_id)
        if v is None:
            return f"signature by {cs.key_id.hex()}, which is not a validator at height {height}"
        if cs.key_id in seen:
            return f"validator {v.name!r} is counted twice"
        seen.add(cs.key_id)
        if not verifier.verify(v.public_key, msg, cs.signature):
            return f"bad signature by validator {v.name!r}"
    if len(seen) < validators.quorum:
        return f"{len(seen)} signatures, needs {validators.quorum} of {len(validators)}"
    return None
