"""The genesis file: the chain's id, first validators, admins and issuers.

A JSON file (keys as lowercase hex)::

    {"chain_id": "certledger-gd", "genesis_time": 1735689600000,
     "validators": [{"name": "v1", "public_key": "04…", "address": "10.0.0.1:7001"}],
     "admins": ["04…", "04…", "04…"], "threshold": 2,
     "issuers": [{"code": "…", "name": "…", "public_key": "04…", "types": ["…"],
                  "supervises": []}]}

Loading is strict: unknown or missing fields, bad hex, keys off the curve, invalid
codes, duplicates and a threshold outside 1..len(admins) raise ``GenesisError``
naming the entry. ``initial_state()`` is the state before block 1 (issuer keys are
valid from height 0); ``hash`` binds a chain to the exact genesis it started from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from certificates import canonical, jsonio, sm2
from certificates.errors import CertificatesError
from certificates.hashing import sm3
from ledger.commit import Validator, ValidatorSet
from ledger.errors import GenesisError, LedgerError
from ledger.records import (
    ADMINS_KEY,
    VALIDATORS_KEY,
    AdminsRecord,
    IssuerKey,
    IssuerRecord,
    ValidatorsRecord,
    check_issuer_code,
    check_type_code,
    encode_key_owner,
    issuer_key,
    key_owner_key,
)


@dataclass(frozen=True)
class GenesisIssuer:
    code: str
    name: str
    public_key: bytes
    types: tuple[str, ...]
    supervises: tuple[str, ...] = ()


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: int  # Unix epoch milliseconds
    validators: ValidatorSet
    admins: tuple[bytes, ...]
    threshold: int
    issuers: tuple[GenesisIssuer, ...] = field(default=())

    def __post_init__(self) -> None:
        _validate(self)

    @cached_property
    def hash(self) -> bytes:
        return sm3(canonical.encode(self._value(js=False)))

    def initial_state(self) -> dict[bytes, bytes]:
        """Logical key -> record bytes, the state the first block applies to."""
        state = {
            ADMINS_KEY: AdminsRecord(self.admins, self.threshold).to_bytes(),
            VALIDATORS_KEY: ValidatorsRecord(self.validators).to_bytes(),
        }
        for i in self.issuers:
            rec = IssuerRecord(i.code, i.name, (IssuerKey(i.public_key, 0),),
                               tuple(sorted(i.types)), True, tuple(sorted(i.supervises)))
            state[issuer_key(i.code)] = rec.to_bytes()
            state[key_owner_key(sm2.key_id(i.public_key))] = encode_key_owner(i.code)
        return state

    # ---- JSON

    def _value(self, js: bool) -> dict[str, Any]:
        def b(x: bytes) -> Any:
            return x.hex() if js else x

        return {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "validators": [{"name": v.name, "public_key": b(v.public_key),
                            "address": v.address} for v in self.validators.validators],
            "admins": [b(k) for k in self.admins],
            "threshold": self.threshold,
            "issuers": [{"code": i.code, "name": i.name, "public_key": b(i.public_key),
                         "types": list(i.types), "supervises": list(i.supervises)}
                        for i in self.issuers],
        }

    def to_json(self) -> dict[str, Any]:
        return self._value(js=True)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def from_json(cls, obj: Any) -> Genesis:
        top = _fields(obj, "genesis", {"chain_id", "genesis_time", "validators", "admins",
                                       "threshold", "issuers"})
        specs = []
        for n, x in enumerate(_list(top["validators"], "validators")):
            p = f"validators[{n}]"
            v = _fields(x, p, {"name", "public_key"}, {"address"})
            specs.append(Validator(
                _str(v["name"], p + ".name"), _key(v["public_key"], p + ".public_key"),
                _str(v.get("address", ""), p + ".address", empty=True),
            ))
        try:
            validators = ValidatorSet.of(specs)
        except LedgerError as exc:
            raise GenesisError(f"genesis validators: {exc}") from exc
        issuers = []
        for n, x in enumerate(_list(top["issuers"], "issuers")):
            p = f"issuers[{n}]"
            i = _fields(x, p, {"code", "name", "public_key", "types"}, {"supervises"})
            issuers.append(GenesisIssuer(
                _str(i["code"], p + ".code"), _str(i["name"], p + ".name"),
                _key(i["public_key"], p + ".public_key"),
                tuple(_str(t, f"{p}.types") for t in _list(i["types"], p + ".types")),
                tuple(_str(t, f"{p}.supervises")
                      for t in _list(i.get("supervises", []), p + ".supervises")),
            ))
        threshold = top["threshold"]
        if type(threshold) is not int:
            raise GenesisError("genesis threshold must be an integer")
        genesis_time = top["genesis_time"]
        if type(genesis_time) is not int or genesis_time < 0:
            raise GenesisError("genesis_time must be a non-negative integer (Unix ms)")
        return cls(
            _str(top["chain_id"], "chain_id"), genesis_time, validators,
            tuple(_key(k, f"admins[{n}]") for n, k in enumerate(_list(top["admins"], "admins"))),
            threshold, tuple(issuers),
        )

    @classmethod
    def loads(cls, text: str) -> Genesis:
        try:
            obj = jsonio.loads(text)
        except ValueError as exc:
            raise GenesisError(f"genesis is not valid JSON: {exc}") from exc
        return cls.from_json(obj)

    @classmethod
    def from_file(cls, path: str | Path) -> Genesis:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise GenesisError(f"cannot read genesis file {path}: {exc}") from exc
        try:
            return cls.loads(text)
        except GenesisError as exc:
            raise GenesisError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------- validation


def _fields(obj: Any, where: str, required: set[str], optional: frozenset[str] | set[str]
            = frozenset()) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise GenesisError(f"{where} must be a JSON object")
    missing = required - set(obj)
    unknown = set(obj) - required - set(optional)
    if missing:
        raise GenesisError(f"{where} is missing {sorted(missing)}")
    if unknown:
        raise GenesisError(f"{where} has unknown fields {sorted(unknown)}")
    return obj


def _list(obj: Any, where: str) -> list[Any]:
    if not isinstance(obj, list):
        raise GenesisError(f"{where} must be a JSON list")
    return obj


def _str(obj: Any, where: str, empty: bool = False) -> str:
    if not isinstance(obj, str) or (not obj and not empty):
        raise GenesisError(f"{where} must be a{'' if empty else ' non-empty'} string")
    return obj


def _key(obj: Any, where: str) -> bytes:
    try:
        return sm2.PublicKey.from_hex(_str(obj, where)).data
    except CertificatesError as exc:
        raise GenesisError(f"{where}: {exc}") from exc


def _validate(g: Genesis) -> None:
    if not isinstance(g.chain_id, str) or not 1 <= len(g.chain_id) <= 64:
        raise GenesisError("chain_id must be 1..64 characters")
    if not g.admins:
        raise GenesisError("genesis needs at least one admin key")
    if len(set(g.admins)) != len(g.admins):
        raise GenesisError("admins lists the same key twice")
    if not 1 <= g.threshold <= len(g.admins):
        raise GenesisError(f"threshold {g.threshold} must be between 1 and the number of "
                           f"admins ({len(g.admins)})")
    try:
        for k in g.admins:
            sm2.validate_public_key(k)
    except CertificatesError as exc:
        raise GenesisError(f"admin key: {exc}") from exc
    codes = [i.code for i in g.issuers]
    seen_keys = {sm2.key_id(k) for k in g.admins}
    for i in g.issuers:
        where = f"issuer {i.code!r}"
        if codes.count(i.code) > 1:
            raise GenesisError(f"duplicate issuer code {i.code!r}")
        try:
            check_issuer_code(i.code)
            for t in i.types:
                check_type_code(t)
            kid = sm2.key_id(i.public_key)
        except CertificatesError as exc:
            raise GenesisError(f"{where}: {exc}") from exc
        if kid in seen_keys:
            raise GenesisError(f"{where}: its key is already used by an admin or another issuer")
        seen_keys.add(kid)
        if len(set(i.types)) != len(i.types):
            raise GenesisError(f"{where}: types lists a type twice")
        for s in i.supervises:
            if s not in codes or s == i.code:
                raise GenesisError(f"{where}: supervises {s!r}, which is not another issuer")
