"""Shared ledger test helpers: deterministic keys, a genesis, tx builders, a harness.

Keys are derived from their names (``key("issuer-a")``), so every run and every
test module sees the same keys and state roots. ``LedgerHarness`` holds a state
dict built from the genesis, applies blocks at increasing heights and checks that
a rejected block leaves the state root unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pytest

from certificates import canonical
from certificates.hashing import sm3
from certificates.identifiers import CertificateId, uscc_check_char
from certificates.sm2 import PrivateKey
from ledger.commit import Validator, ValidatorSet
from ledger.errors import TxRejected
from ledger.genesis import Genesis, GenesisIssuer
from ledger.records import CertRecord, IssuerRecord, cert_key, issuer_key
from ledger.state import BlockContext, BlockEffects, apply_block, check_tx
from ledger.tx import Anchor, Body, Transaction, gov_tx

CHAIN_ID = "certledger-test"
GENESIS_TIME = 1_735_689_600_000  # 2025-01-01T00:00:00Z in ms
BLOCK_MS = 1_000


def uscc(first17: str) -> str:
    return first17 + uscc_check_char(first17)


ISSUER_A = "11220000013544541J"  # a university
ISSUER_B = uscc("12440100MB2C3D4E5")  # a market-regulation bureau
SUPERVISOR = uscc("11440000MB0000001")  # provincial authority supervising B
UNREGISTERED = uscc("12110000MB9999991")
TYPE_DIPLOMA = "11100000000013338W032"
TYPE_LICENSE = uscc("11100000MB0000007") + "001"
TYPE_OTHER = uscc("11100000MB0000012") + "005"

ADMIN_NAMES = ("admin-0", "admin-1", "admin-2")
VALIDATOR_NAMES = ("val-0", "val-1", "val-2", "val-3")


@cache
def key(name: str) -> PrivateKey:
    """A deterministic SM2 key named ``name`` (test use only)."""
    return PrivateKey.from_bytes(sm3(b"certledger-test-key/" + name.encode()))


def admins(n: int = 2) -> list[PrivateKey]:
    return [key(a) for a in ADMIN_NAMES[:n]]


def validator_set(names: Sequence[str] = VALIDATOR_NAMES) -> ValidatorSet:
    return ValidatorSet.of(
        Validator(n, key(n).public.data, f"127.0.0.1:{7000 + i}") for i, n in enumerate(names)
    )


@cache
def make_genesis() -> Genesis:
    return Genesis(
        chain_id=CHAIN_ID,
        genesis_time=GENESIS_TIME,
        validators=validator_set(),
        admins=tuple(key(a).public.data for a in ADMIN_NAMES),
        threshold=2,
        issuers=(
            GenesisIssuer(ISSUER_A, "某某大学", key("issuer-a").public.data,
                          (TYPE_DIPLOMA, TYPE_LICENSE)),
            GenesisIssuer(ISSUER_B, "某市市场监督管理局", key("issuer-b").public.data,
                          (TYPE_LICENSE,)),
            GenesisIssuer(SUPERVISOR, "某省市场监督管理局", key("supervisor").public.data,
                          (TYPE_LICENSE,), (ISSUER_B,)),
        ),
    )


# --------------------------------------------------------------------------- builders


def cert_id(serial: str, issuer: str = ISSUER_A, type_code: str = TYPE_DIPLOMA,
            version: int = 1) -> str:
    return str(CertificateId.build(type_code, issuer, serial, version))


def anchor(serial: str, issuer: str = ISSUER_A, type_code: str = TYPE_DIPLOMA, *,
           version: int = 1, valid_from: int = GENESIS_TIME,
           valid_until: int | None = GENESIS_TIME + 365 * 86_400_000,
           supersedes: str | None = None, cid: str | None = None) -> Anchor:
    cid = cid or cert_id(serial, issuer, type_code, version)
    return Anchor(cid, type_code, issuer, sm3(cid.encode()), valid_from, valid_until, supersedes)


def issue_tx(a: Anchor, signer: str = "issuer-a", chain_id: str = CHAIN_ID) -> Transaction:
    return Transaction.create("cert.issue", a.to_value(), key(signer), chain_id)


def batch_tx(records: Sequence[Anchor], issuer: str = ISSUER_A, signer: str = "issuer-a"
             ) -> Transaction:
    body = {"issuer": issuer, "records": [a.to_value() for a in records]}
    return Transaction.create("cert.issue_batch", body, key(signer), CHAIN_ID)


def status_tx(kind: str, cid: str, signer: str = "issuer-a", reason: str = "") -> Transaction:
    return Transaction.create(f"cert.{kind}", {"id": cid, "reason": reason}, key(signer),
                              CHAIN_ID)


def supersede_tx(old_id: str, new: Anchor, signer: str = "issuer-a") -> Transaction:
    return Transaction.create("cert.supersede", {"id": old_id, "new": new.to_value()},
                              key(signer), CHAIN_ID)


def gov(kind: str, body: Body | Mapping[str, Any], n_admins: int = 2) -> Transaction:
    """A governance tx approved by the first ``n_admins`` admins (threshold is 2)."""
    return gov_tx(f"gov.{kind}", body, admins(n_admins), CHAIN_ID)


def state_root(state: Mapping[bytes, bytes]) -> bytes:
    """A simple commitment to a whole state dict (tests only; the chain uses the SMT)."""
    return sm3(canonical.encode([[k, state[k]] for k in sorted(state)]))


# --------------------------------------------------------------------------- harness


class LedgerHarness:
    """A state dict plus a height; ``commit`` applies a block, ``reject`` expects failure."""

    def __init__(self, genesis: Genesis | None = None) -> None:
        self.genesis = genesis or make_genesis()
        self.state: dict[bytes, bytes] = self.genesis.initial_state()
        self.height = 0
        self.sig_cache: dict[bytes, bool] = {}

    def ctx(self, height: int | None = None) -> BlockContext:
        h = self.height + 1 if height is None else height
        return BlockContext(self.genesis.chain_id, h, self.genesis.genesis_time + h * BLOCK_MS)

    def commit(self, *txs: Transaction | bytes) -> BlockEffects:
        effects = apply_block(self.state, txs, self.ctx(), sig_cache=self.sig_cache)
        for k, v in effects.updates.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        self.height += 1
        return effects

    def reject(self, *txs: Transaction | bytes, reason: str) -> TxRejected:
        """Assert the block fails with ``reason`` and leaves the state as it was."""
        before = state_root(self.state)
        with pytest.raises(TxRejected) as info:
            apply_block(self.state, txs, self.ctx())
        assert info.value.reason == reason, str(info.value)
        assert state_root(self.state) == before
        if len(txs) == 1:  # the mempool path agrees
            with pytest.raises(TxRejected) as single:
                check_tx(self.state, txs[0], self.ctx())
            assert single.value.reason == reason
        return info.value

    def cert(self, cid: str) -> CertRecord:
        return CertRecord.from_bytes(self.state[cert_key(cid)])

    def issuer(self, code: str) -> IssuerRecord:
        return IssuerRecord.from_bytes(self.state[issuer_key(code)])


def signed(kind: str, body: Body, signer: str, chain_id: str = CHAIN_ID,
           nonce: bytes = b"\x01" * 16) -> Transaction:
    """Sign a body as given, skipping ``create``'s normalisation (for huge or odd bodies)."""
    k = key(signer)
    unsigned = Transaction(1, chain_id, kind, body, k.public.key_id, nonce, b"\x00" * 64)
    return dataclasses.replace(unsigned, signature=k.sign(unsigned.sign_bytes()))


def sample_txs() -> dict[str, Transaction]:
    """One well-formed transaction of every kind (not all of them apply to one state)."""
    a1, a2 = anchor("2430599"), anchor("2430600", valid_until=None)
    new_key = key("issuer-new").public.data
    return {
        "cert.issue": issue_tx(a1),
        "cert.issue_batch": batch_tx([a1, a2]),
        "cert.revoke": status_tx("revoke", a1.id, reason="学历造假"),
        "cert.suspend": status_tx("suspend", a1.id, reason="under review"),
        "cert.reinstate": status_tx("reinstate", a1.id),
        "cert.supersede": supersede_tx(
            a1.id, anchor("2430599", version=2, supersedes=a1.id)),
        "gov.register_issuer": gov("register_issuer", {
            "code": UNREGISTERED, "name": "某县民政局", "public_key": new_key,
            "types": [TYPE_LICENSE]}),
        "gov.grant_types": gov("grant_types", {"code": ISSUER_B, "types": [TYPE_OTHER]}),
        "gov.revoke_types": gov("revoke_types", {"code": ISSUER_A, "types": [TYPE_LICENSE]}),
        "gov.rotate_issuer_key": gov("rotate_issuer_key", {
            "code": ISSUER_A, "public_key": new_key}),
        "gov.set_issuer_active": gov("set_issuer_active", {"code": ISSUER_B, "active": False}),
        "gov.grant_supervision": gov("grant_supervision", {
            "supervisor": SUPERVISOR, "supervised": ISSUER_A}),
        "gov.set_validators": gov("set_validators", {"validators": [
            {"name": n, "public_key": key(n).public.data, "address": ""}
            for n in ("val-0", "val-1", "val-2", "val-4")]}),
    }
