"""Checking one node answer, purely: header, commit certificate, state proof.

Checking one answer (``check_state``, pure but for a cache)
----------------------------------------------------------
1. **header**: the header bytes decode canonically, are for our chain, and their
   SM3 is the block hash the commit names (so nothing is re-encoded).
2. **commit_certificate**: 2f+1 distinct validators of the set that signs that
   height precommitted (chain id, height, round, block hash)
   (``CommitCertificate.verify``). The set is found by the header's
   ``validators_hash`` among the sets we trust. If it is a set we do not know yet
   (a ``gov.set_validators`` since our trust anchor), we accept the set the node
   offers only when its hash is the header's ``validators_hash`` *and* more than
   1/3 of the set we trust signed the same commit - Tendermint's skipping
   verification: with fewer than 1/3 of our trusted set faulty, one honest
   validator we know vouches for the header, hence for the set it names. Otherwise
   the answer is refused with a reason that says to refresh the trust bundle.
3. **state_proof**: the SMT proof shows SM3(record) under SM3(logical key) in the
   header's ``state_root``, or - for "no such record" - that nothing is there.

Caches
------
* **Commits, by block**: the SM2 signatures verified for a block (per validator
  set, block hash and round) are remembered, so the next answer from the same
  block - any node's commit for it, each node holding its own quorum of
  precommits - costs only the SM2 verifications of signatures not seen before: a
  quorum of distinct signers of the set, each signature verified over the same
  (chain, height, round, block hash), is exactly what ``CommitCertificate.verify``
  establishes. If a new signature fails, ``CommitCertificate.verify`` checks the
  whole commit again, and its error names the bad signature. A commit whose exact
  signatures already verified for that set, block and round is then one look-up:
  every answer of a node at one height carries the same commit.
* **Decoded headers and checked proofs**, by their bytes: ``logic.verify``
  re-derives every check from the raw answer, which then costs dictionary look-ups.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from certificates import sm2
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.block import BlockHeader
from ledger.commit import CommitCertificate, CommitSig, ValidatorSet
from ledger.errors import LedgerError
from ledger.smt import verify_encoded_proof
from verifier.errors import (
    EvidenceError,
)
from verifier.evidence import StateEvidence, decode_header_bytes
from verifier.trust import TrustedState

_CACHE_LIMIT = 1024
#: (chain id, validator set hash, block hash, round) -> (key id, signature) pairs verified.
_commit_cache: OrderedDict[tuple[str, bytes, bytes, int], frozenset[tuple[bytes, bytes]]] = \
    OrderedDict()
_cache_lock = threading.Lock()
#: (chain id, set hash, block hash, round, signatures) of commits that verified, exactly.
_exact_commits: OrderedDict[tuple[str, bytes, bytes, int, tuple[CommitSig, ...]], None] = \
    OrderedDict()
_PROOF_LIMIT = 8192
_proof_cache: OrderedDict[tuple[bytes, bytes | None, bytes, bytes], None] = OrderedDict()


@dataclass(frozen=True)
class CheckedState:
    """An answer that passed every check: the record (None: proven absent) and its header."""

    key: bytes
    record: bytes | None
    header: BlockHeader
    validators: ValidatorSet
    new_set: bool  # the validator set was learned from this answer (skipping verification)
    source: str


def clear_caches() -> None:
    """Forget every commit and proof verified (tests that count SM2 verifications)."""
    with _cache_lock:
        _commit_cache.clear()
        _exact_commits.clear()
        _proof_cache.clear()


def decode_header(data: bytes, chain_id: str) -> BlockHeader:
    try:
        header = decode_header_bytes(bytes(data))
    except LedgerError as exc:
        raise EvidenceError("header", f"header is malformed: {exc}") from exc
    if header.chain_id != chain_id:
        raise EvidenceError("header", f"header is for chain {header.chain_id!r}, not {chain_id!r}")
    return header


def _verify_commit_cached(chain_id: str, vs: ValidatorSet, header: BlockHeader,
                          commit: CommitCertificate) -> None:
    exact = (chain_id, vs.hash, header.hash, commit.round, commit.signatures)
    with _cache_lock:
        if exact in _exact_commits:  # these very signatures, verified for this block
            return
    _verify_commit(chain_id, vs, header, commit)
    with _cache_lock:
        _exact_commits[exact] = None
        while len(_exact_commits) > _CACHE_LIMIT:
            _exact_commits.popitem(last=False)


def _verify_commit(chain_id: str, vs: ValidatorSet, header: BlockHeader,
                   commit: CommitCertificate) -> None:
    key = (chain_id, vs.hash, header.hash, commit.round)
    sigs = [(s.key_id, s.signature) for s in commit.signatures]
    with _cache_lock:
        known = _commit_cache.get(key)
        if known is not None:
            _commit_cache.move_to_end(key)
    if known is not None and len(sigs) >= vs.quorum and len({k for k, _ in sigs}) == len(sigs) \
            and all(k in vs.by_key_id for k, _ in sigs) and _verify_new(chain_id, vs, commit,
                                                                       known):
        # A quorum of distinct signatures of the set, each verified now or before for this
        # block: another node's commit for a block seen costs only its new signatures.
        new = frozenset(sigs) - known
    else:
        new = frozenset(sigs)
        try:
            commit.verify(chain_id, vs, height=header.height, block_hash=header.hash)
        except LedgerError as exc:
            raise EvidenceError("commit_certificate", str(exc)) from exc
    if not new:
        return
    with _cache_lock:
        _commit_cache[key] = (_commit_cache.get(key) or frozenset()) | new
        _commit_cache.move_to_end(key)
        while len(_commit_cache) > _CACHE_LIMIT:
            _commit_cache.popitem(last=False)


def _verify_new(chain_id: str, vs: ValidatorSet, commit: CommitCertificate,
                known: frozenset[tuple[bytes, bytes]]) -> bool:
    """True when every signature of ``commit`` not in ``known`` verifies (False: recheck all,
    so that the ledger's own check names what is wrong)."""
    msg = None
    for cs in commit.signatures:
        if (cs.key_id, cs.signature) in known:
            continue
        msg = msg or commit.sign_bytes(chain_id)
        try:
            if not sm2.verify(vs.by_key_id[cs.key_id].public_key, msg, cs.signature):
                return False
        except CertificatesError:
            return False
    return True


def _trusted_signers(chain_id: str, trusted: ValidatorSet, commit: CommitCertificate) -> int:
    """How many validators of ``trusted`` validly signed ``commit`` (each counted once)."""
    msg = commit.sign_bytes(chain_id)
    seen: set[bytes] = set()
    for cs in commit.signatures:
        v = trusted.by_key_id.get(cs.key_id)
        if v is None or cs.key_id in seen:
            continue
        try:
            if sm2.verify(v.public_key, msg, cs.signature):
                seen.add(cs.key_id)
        except CertificatesError:
            continue
    return len(seen)


def check_header(header_bytes: bytes, commit: CommitCertificate, trusted: TrustedState,
                 offered: ValidatorSet | None = None) -> tuple[BlockHeader, ValidatorSet, bool]:
    """Steps 1-2: the header and its commit; returns (header, signing set, set is new)."""
    header = decode_header(header_bytes, trusted.chain_id)
    if commit.height != header.height or commit.block_hash != header.hash:
        raise EvidenceError(
            "commit_certificate",
            f"commit is for height {commit.height} block {commit.block_hash.hex()[:16]}…, "
            f"the header is height {header.height} block {header.hash.hex()[:16]}…")
    vs = trusted.set_for(header.validators_hash)
    if vs is not None:
        _verify_commit_cached(trusted.chain_id, vs, header, commit)
        return header, vs, False
    why = (f"header {header.height} is signed by validator set "
           f"{header.validators_hash.hex()[:16]}…, which this verifier does not trust "
           f"(it trusts {trusted.validators.hash.hex()[:16]}… since height {trusted.height})")
    if offered is None or offered.hash != header.validators_hash:
        raise EvidenceError("commit_certificate",
                            why + "; the node did not offer that set: refresh the trust bundle "
                                  "(certledger trust export)")
    old = trusted.validators
    signed = _trusted_signers(trusted.chain_id, old, commit)
    if 3 * signed <= len(old):
        raise EvidenceError(
            "commit_certificate",
            why + f"; only {signed} of the {len(old)} trusted validators signed it (more than "
                  "1/3 must): refresh the trust bundle (certledger trust export)")
    _verify_commit_cached(trusted.chain_id, offered, header, commit)
    return header, offered, True


def check_proof(key: bytes, record: bytes | None, proof_bytes: bytes, header: BlockHeader) -> None:
    """Step 3: ``record`` (or its absence) is the state under ``key`` at ``header``."""
    memo = (key, record, proof_bytes, header.state_root)
    with _cache_lock:
        if memo in _proof_cache:
            return
    try:
        verify_encoded_proof(header.state_root, sm3(key),
                             None if record is None else sm3(record), proof_bytes)
    except LedgerError as exc:
        claim = "absence" if record is None else "record"
        what = key.decode("utf-8", "replace")
        raise EvidenceError("state_proof", f"the {claim} proof for {what} does not match the "
                                           f"state root of block {header.height}: {exc}") from exc
    with _cache_lock:
        _proof_cache[memo] = None
        while len(_proof_cache) > _PROOF_LIMIT:
            _proof_cache.popitem(last=False)


def check_state(ev: StateEvidence, trusted: TrustedState) -> CheckedState:
    """All three checks on one answer; EvidenceError names the first that fails."""
    header, vs, new = check_header(ev.header, ev.commit, trusted, ev.validators)
    check_proof(ev.key, ev.record, ev.proof, header)
    return CheckedState(ev.key, ev.record, header, vs, new, ev.source)


# --------------------------------------------------------------------------- the client
