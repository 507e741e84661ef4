"""JSON views of ledger objects for the node API (bytes as lowercase hex).

Each view carries both the readable fields and, where a client must re-hash
something, the exact canonical bytes (``header_bytes``, ``record_bytes``), so a
light client checks what it was sent instead of re-encoding it: SM3 of
``header_bytes`` is the block hash the commit certificate signs; SM3 of
``record_bytes`` is the SMT leaf value under ``state_key`` = SM3(b"cert:" + id)
(for an issuer, ``issuer_json``: SM3(b"issuer:" + code)).

``state_batch_body`` answers many keys at once (``POST /v1/state/batch``): one
header + commit + validators, then per key only its record bytes and SMT proof, all
against that one state root (``Chain.prove_many``: one head for every key) - a
verifier gathering concurrent look-ups pays the HTTP round trip and the
header/commit/validators once per batch, not per key. The per-height part is the
same for every answer at a height, so it is built once (``height_json``) - its JSON
text too, and the validator set is looked up only then - and reused until the head
moves: a batch answer is that text plus each key's record and proof
(``state_batch_body``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from certificates.hashing import sm3
from ledger.block import Block, BlockHeader
from ledger.chain import Chain, StateProof
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.records import CertRecord, IssuerRecord, cert_key, issuer_key


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def header_json(h: BlockHeader) -> dict[str, Any]:
    out = {k: _plain(v) for k, v in h.to_value().items()}
    out["hash"] = h.hash.hex()
    return out


def commit_json(c: CommitCertificate) -> dict[str, Any]:
    return {"height": c.height, "round": c.round, "block_hash": c.block_hash.hex(),
            "signatures": [{"key_id": s.key_id.hex(), "signature": s.signature.hex()}
                           for s in c.signatures]}


def validators_json(vs: ValidatorSet) -> dict[str, Any]:
    return {"hash": vs.hash.hex(), "quorum": vs.quorum,
            "validators": [{"name": v.name, "key_id": v.key_id.hex(),
                            "public_key": v.public_key.hex(), "address": v.address}
                           for v in vs.validators]}


def block_json(block: Block, commit: CommitCertificate | None) -> dict[str, Any]:
    return {"height": block.height, "hash": block.hash.hex(),
            "header": header_json(block.header), "header_bytes": block.header.encode().hex(),
            "tx_ids": [t.hex() for t in block.tx_ids],
            "commit": None if commit is None else commit_json(commit)}


def record_json(rec: CertRecord) -> dict[str, Any]:
    out = {f.name: _plain(getattr(rec, f.name)) for f in dataclasses.fields(rec)}
    out["type"], out["issuer"] = rec.type, rec.issuer
    return out


def _state_proof_json(logical_key: bytes, proof: StateProof, validators: ValidatorSet
                      ) -> dict[str, Any]:
    """The proof part shared by every state route: record bytes, SMT proof, header, commit."""
    return {
        "record_bytes": None if proof.record is None else proof.record.hex(),
        "state_key": sm3(logical_key).hex(),
        "proof": proof.proof.to_bytes().hex(),
        **height_json(proof, validators),
    }


def certificate_json(cert_id: str, proof: StateProof, validators: ValidatorSet
                     ) -> dict[str, Any]:
    """Everything a light client needs: record, SMT proof, header, commit, signers."""
    rec = None if proof.record is None else CertRecord.from_bytes(proof.record)
    return {
        "id": cert_id,
        "found": rec is not None,
        "record": None if rec is None else record_json(rec),
        **_state_proof_json(cert_key(cert_id), proof, validators),
    }


def issuer_record_json(rec: IssuerRecord) -> dict[str, Any]:
    return {"code": rec.code, "name": rec.name, "active": rec.active, "types": list(rec.types),
            "supervises": list(rec.supervises),
            "keys": [{"key_id": k.key_id.hex(), "public_key": k.public_key.hex(),
                      "valid_from_height": k.valid_from_height,
                      "retired_at_height": k.retired_at_height} for k in rec.keys]}


def issuer_json(code: str, proof: StateProof, validators: ValidatorSet) -> dict[str, Any]:
    """``certificate_json``'s shape for an issuer record (its keys, types, status)."""
    rec = None if proof.record is None else IssuerRecord.from_bytes(proof.record)
    return {
        "code": code,
        "found": rec is not None,
        "record": None if rec is None else issuer_record_json(rec),
        **_state_proof_json(issuer_key(code), proof, validators),
    }


# --------------------------------------------------------------------------- batches

#: Most keys one batch may ask for: bounds the node's work and the answer (~2 KB a key).
MAX_BATCH_KEYS = 256
_height_lock = threading.Lock()
#: By block hash: (commit, the per-height dict, the same as JSON object members).
_height_cache: dict[bytes, tuple[CommitCertificate, dict[str, Any], str]] = {}


def _height_entry(proof: StateProof, validators: Callable[[], ValidatorSet]
                  ) -> tuple[CommitCertificate, dict[str, Any], str]:
    with _height_lock:
        got = _height_cache.get(proof.header.hash)
    # The same commit object: a node could later hold another commit for the same block.
    if got is not None and got[0] is proof.commit:
        return got
    out = {"height": proof.header.height, "state_root": proof.header.state_root.hex(),
           "header": header_json(proof.header), "header_bytes": proof.header.encode().hex(),
           "commit": commit_json(proof.commit), "validators": validators_json(validators())}
    entry = (proof.commit, out, _compact(out)[1:-1])
    with _height_lock:
        if len(_height_cache) >= 8:  # the head and a few before it; older ones are not asked
            _height_cache.clear()
        _height_cache[proof.header.hash] = entry
    return entry


def height_json(proof: StateProof, validators: ValidatorSet) -> dict[str, Any]:
    """Header (+ bytes), commit and validators of a proof's height, built once per head.

    The dict is shared between answers: callers copy it, never change it.
    """
    return _height_entry(proof, lambda: validators)[1]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _prove_all(chain: Chain, keys: Sequence[bytes]) -> dict[bytes, StateProof]:
    """A proof per distinct key, all under one head."""
    todo = list(dict.fromkeys(keys))
    return dict(zip(todo, chain.prove_many(todo), strict=True))


def _entry(name: str, ident: str, proof: StateProof) -> dict[str, Any]:
    record = proof.record
    return {name: ident, "found": record is not None,
            "record_bytes": None if record is None else record.hex(),
            "proof": proof.proof.to_bytes().hex()}


def state_batch_body(chain: Chain, cert_ids: Sequence[str], issuer_codes: Sequence[str]
                     ) -> bytes:
    """Records (or absence) + SMT proofs for many keys under one header, commit, validators.

    The JSON answer of ``POST /v1/state/batch``: the per-height members (``height_json``,
    encoded once per head, as is the validator set looked up) then ``certificates`` and
    ``issuers``, an entry per asked key in request order holding ``id`` (or ``code``),
    ``found``, ``record_bytes`` (None if absent: ``proof`` is then an absence proof) and
    ``proof``; SM3 of the key is the client's to compute. Ids and codes must be valid
    already. LedgerError when nothing is committed.
    """
    ckeys, ikeys = [cert_key(c) for c in cert_ids], [issuer_key(c) for c in issuer_codes]
    proofs = _prove_all(chain, ckeys + ikeys)
    first = next(iter(proofs.values()))
    _, _, head = _height_entry(first, lambda: chain.validator_set(first.header.height))
    certs = [_entry("id", c, proofs[k]) for c, k in zip(cert_ids, ckeys, strict=True)]
    issuers = [_entry("code", c, proofs[k]) for c, k in zip(issuer_codes, ikeys, strict=True)]
    return (f'{{{head},"certificates":{_compact(certs)},"issuers":{_compact(issuers)}}}'
            ).encode()
