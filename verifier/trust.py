"""What a verifier trusts before it asks any node: a genesis file or a trust bundle.

``TrustedState`` is the light client's root of trust: the chain id, the validator
set it currently trusts (and every set it has trusted, by hash, so older commits
stay checkable), the height it was trusted at, and fallback issuer records for
nodes that cannot prove issuer state. It is immutable; the light client swaps in
a new one when it learns a new validator set (``adopt``).

Two ways to build one:

* ``TrustedState.from_genesis(genesis)``: the genesis validators and issuers,
  trusted at height 0 (the operator handed the verifier the genesis file);
* a *trust bundle* (``certledger trust export``; ``load_bundle``/``bundle_to_json``):
  a committed header with its commit, the validator set that signed it, and
  issuer records each with an SMT proof under a committed header - its own,
  signed by the same validators, since a live chain's head moves between the
  requests that fetch them - or without one for genesis issuers. Loading
  re-checks all of it, so a bundle that was edited by hand or cut short is
  refused, not half-trusted.

Bundle JSON (bytes as lower-case hex)::

    {"format": "certledger/trust/v1", "chain_id", "genesis_hash", "height",
     "header_bytes", "commit": {...}, "validators": [{"name", "public_key", "address"}],
     "issuers": [{"code", "record_bytes", "proof"|null, "header_bytes"?, "commit"?}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from certificates import jsonio
from certificates.hashing import sm3
from ledger.block import BlockHeader
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.records import IssuerRecord, issuer_key
from ledger.smt import SMTProof, verify_proof
from verifier.errors import SourceError, TrustError
from verifier.evidence import (
    commit_from_json,
    commit_to_json,
    validators_from_json,
    validators_to_json,
)

BUNDLE_FORMAT = "certledger/trust/v1"


@dataclass(frozen=True)
class TrustedState:
    chain_id: str
    validators: ValidatorSet
    height: int = 0
    header: BlockHeader | None = None
    commit: CommitCertificate | None = None
    issuers: Mapping[str, IssuerRecord] = field(default_factory=dict)
    issuers_height: int = 0
    genesis_hash: bytes | None = None
    known_sets: Mapping[bytes, ValidatorSet] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sets = dict(self.known_sets)
        sets.setdefault(self.validators.hash, self.validators)
        object.__setattr__(self, "known_sets", sets)

    def set_for(self, set_hash: bytes) -> ValidatorSet | None:
        return self.known_sets.get(set_hash)

    def adopt(self, validators: ValidatorSet, height: int) -> TrustedState:
        """This state, now also trusting ``validators`` as the set of ``height``."""
        if height < self.height or validators.hash == self.validators.hash:
            sets = dict(self.known_sets)
            sets[validators.hash] = validators
            return replace(self, known_sets=sets)
        sets = dict(self.known_sets)
        sets[validators.hash] = validators
        return replace(self, validators=validators, height=height, known_sets=sets)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> TrustedState:
        state = genesis.initial_state()
        issuers = {i.code: IssuerRecord.from_bytes(state[issuer_key(i.code)])
                   for i in genesis.issuers}
        return cls(genesis.chain_id, genesis.validators, 0, issuers=issuers,
                   genesis_hash=genesis.hash)


# --------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class IssuerProof:
    """An issuer record proven under a committed header (its own: the head moves on)."""

    record: bytes
    proof: bytes
    header: bytes
    commit: CommitCertificate


def bundle_to_json(trusted: TrustedState, issuer_proofs: Mapping[str, IssuerProof]
                   ) -> dict[str, Any]:
    """A trust bundle for ``trusted`` (which must hold a header and commit).

    Issuers of ``trusted.issuers`` without a proof go in unproved (the genesis ones: the
    bundle's author vouches for them as for the genesis file).
    """
    if trusted.header is None or trusted.commit is None:
        raise TrustError("a trust bundle needs a committed header and its commit")
    issuers: list[dict[str, Any]] = []
    for code in sorted(set(trusted.issuers) | set(issuer_proofs)):
        if code in issuer_proofs:
            p = issuer_proofs[code]
            issuers.append({"code": code, "record_bytes": p.record.hex(), "proof": p.proof.hex(),
                            "header_bytes": p.header.hex(), "commit": commit_to_json(p.commit)})
        else:
            issuers.append({"code": code, "record_bytes": trusted.issuers[code].to_bytes().hex(),
                            "proof": None})
    return {
        "format": BUNDLE_FORMAT,
        "chain_id": trusted.chain_id,
        "genesis_hash": None if trusted.genesis_hash is None else trusted.genesis_hash.hex(),
        "height": trusted.header.height,
        "header_bytes": trusted.header.encode().hex(),
        "commit": commit_to_json(trusted.commit),
        "validators": validators_to_json(trusted.validators),
        "issuers": issuers,
    }


def _hex(obj: Mapping[str, Any], name: str) -> bytes:
    value = obj.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        return bytes.fromhex(value)
    except ValueError:
        raise TrustError(f"trust bundle: {name!r} must be a hex string") from None


def load_bundle(obj: object) -> TrustedState:
    """Check a trust bundle end to end and return the state it establishes."""
    if not isinstance(obj, dict) or obj.get("format") != BUNDLE_FORMAT:
        raise TrustError(f"not a trust bundle: 'format' must be {BUNDLE_FORMAT!r}")
    chain_id = obj.get("chain_id")
    if not isinstance(chain_id, str) or not chain_id:
        raise TrustError("trust bundle: 'chain_id' must be a non-empty string")
    try:
        header = BlockHeader.decode(_hex(obj, "header_bytes"))
        commit = commit_from_json(obj.get("commit"))
        validators = validators_from_json(obj.get("validators"))
    except (LedgerError, SourceError) as exc:
        raise TrustError(f"trust bundle: {exc}") from exc
    if header.chain_id != chain_id:
        raise TrustError(f"trust bundle: header is for chain {header.chain_id!r}, "
                         f"not {chain_id!r}")
    if header.validators_hash != validators.hash:
        raise TrustError("trust bundle: the validators are not the set the header names")
    try:
        commit.verify(chain_id, validators, height=header.height, block_hash=header.hash)
    except LedgerError as exc:
        raise TrustError(f"trust bundle: commit does not verify: {exc}") from exc
    issuers: dict[str, IssuerRecord] = {}
    items = obj.get("issuers", [])
    if not isinstance(items, list):
        raise TrustError("trust bundle: 'issuers' must be a list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            raise TrustError("trust bundle: each issuer needs a 'code'")
        code, rec = item["code"], _hex(item, "record_bytes")
        try:
            record = IssuerRecord.from_bytes(rec)
            if item.get("proof") is not None:
                under = _issuer_header(item, header, chain_id, validators)
                proof = SMTProof.from_bytes(_hex(item, "proof"))
                verify_proof(under.state_root, sm3(issuer_key(code)), sm3(rec), proof)
        except (LedgerError, SourceError) as exc:
            raise TrustError(f"trust bundle: issuer {code}: {exc}") from exc
        if record.code != code:
            raise TrustError(f"trust bundle: issuer record under {code} is for {record.code}")
        issuers[code] = record
    genesis_hash = obj.get("genesis_hash")
    return TrustedState(
        chain_id, validators, header.height, header, commit, issuers, header.height,
        None if genesis_hash is None else _hex(obj, "genesis_hash"),
    )


def _issuer_header(item: Mapping[str, Any], header: BlockHeader, chain_id: str,
                   validators: ValidatorSet) -> BlockHeader:
    """The header an issuer proof is under: its own (checked), or the bundle's."""
    if item.get("header_bytes") is None:
        return header
    own = BlockHeader.decode(_hex(item, "header_bytes"))
    if own.chain_id != chain_id or own.validators_hash != validators.hash:
        raise TrustError("its header is for another chain or validator set")
    commit_from_json(item.get("commit")).verify(chain_id, validators, height=own.height,
                                               block_hash=own.hash)
    return own


def load_trust(path: str | Path) -> TrustedState:
    """A trust bundle or a genesis file, whichever ``path`` holds."""
    try:
        obj = jsonio.read(path)
    except (OSError, ValueError) as exc:
        raise TrustError(f"cannot read trust file {path}: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == BUNDLE_FORMAT:
        return load_bundle(obj)
    try:
        return TrustedState.from_genesis(Genesis.from_json(obj))
    except LedgerError as exc:
        raise TrustError(f"{path} is neither a trust bundle nor a genesis file: {exc}") from exc
