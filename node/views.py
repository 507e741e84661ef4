"""JSON views of ledger objects for the node API (bytes as lowercase hex).

Each view carries both the readable fields and, where a client must re-hash
something, the exact canonical bytes (``header_bytes``, ``record_bytes``), so a
light client checks what it was sent instead of re-encoding it: SM3 of
``header_bytes`` is the block hash the commit certificate signs; SM3 of
``record_bytes`` is the SMT leaf value under ``state_key`` = SM3(b"cert:" + id)
(for an issuer, ``issuer_json``: SM3(b"issuer:" + code)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from certificates.hashing import sm3
from ledger.block import Block, BlockHeader
from ledger.chain import StateProof
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
        "height": proof.header.height,
        "state_root": proof.header.state_root.hex(),
        "header": header_json(proof.header),
        "header_bytes": proof.header.encode().hex(),
        "commit": commit_json(proof.commit),
        "validators": validators_json(validators),
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
