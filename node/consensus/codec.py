"""Canonical encoding of consensus messages and WAL entries.

One msgpack map per object (``certificates.canonical``), tagged with ``"k"``.
Decoding is strict - wrong types or missing fields raise ``CodecError`` - since
the same functions read peers' messages and our own WAL.
"""

from __future__ import annotations

from typing import Any

from certificates import canonical
from certificates.errors import EncodingError
from node.consensus.errors import CodecError
from node.consensus.messages import Proposal, RoundStarted, ValidValue, Vote, WalEntry


def to_value(obj: WalEntry) -> dict[str, Any]:
    if isinstance(obj, Vote):
        return {"k": "vote", "type": obj.type, "height": obj.height, "round": obj.round,
                "value_id": obj.value_id, "validator": obj.validator, "signature": obj.signature}
    if isinstance(obj, Proposal):
        return {"k": "proposal", "height": obj.height, "round": obj.round,
                "value_id": obj.value_id, "value": obj.value, "pol_round": obj.pol_round,
                "proposer": obj.proposer, "signature": obj.signature}
    if isinstance(obj, RoundStarted):
        return {"k": "round", "height": obj.height, "round": obj.round}
    return {"k": "valid", "round": obj.round, "proposal": to_value(obj.proposal),
            "prevotes": [to_value(v) for v in obj.prevotes]}


def _int(v: dict[str, Any], name: str) -> int:
    x = v[name]
    if not isinstance(x, int) or isinstance(x, bool):
        raise CodecError(f"field {name!r} must be an integer, got {type(x).__name__}")
    return x


def _bytes(v: dict[str, Any], name: str, *, nullable: bool = False) -> Any:
    x = v[name]
    if x is None and nullable:
        return None
    if not isinstance(x, bytes):
        raise CodecError(f"field {name!r} must be bytes, got {type(x).__name__}")
    return x


def _kind(v: Any) -> Any:
    return v.get("k") if isinstance(v, dict) else None


def from_value(v: Any) -> WalEntry:
    if not isinstance(v, dict):
        raise CodecError(f"expected a map, got {type(v).__name__}")
    try:
        kind = v["k"]
        if kind == "vote":
            vtype = v["type"]
            if vtype not in ("prevote", "precommit"):
                raise CodecError(f"unknown vote type {vtype!r}")
            return Vote(vtype, _int(v, "height"), _int(v, "round"),
                        _bytes(v, "value_id", nullable=True), _bytes(v, "validator"),
                        _bytes(v, "signature"))
        if kind == "proposal":
            return Proposal(_int(v, "height"), _int(v, "round"), _bytes(v, "value_id"),
                            _bytes(v, "value"), _int(v, "pol_round"), _bytes(v, "proposer"),
                            _bytes(v, "signature"))
        if kind == "round":
            return RoundStarted(_int(v, "height"), _int(v, "round"))
        if kind == "valid":
            # The kind is checked before decoding an inner map, so a nested entry
            # cannot make decoding recurse.
            if _kind(v["proposal"]) != "proposal":
                raise CodecError("a valid-value entry must hold a proposal")
            p = from_value(v["proposal"])
            # Absent in entries written before the POL was kept: read them as none.
            raw = v.get("prevotes", [])
            if not isinstance(raw, list):
                raise CodecError("a valid-value entry's prevotes must be a list")
            prevotes = []
            for x in raw:
                vote = from_value(x) if _kind(x) == "vote" else None
                if not isinstance(vote, Vote) or vote.type != "prevote":
                    raise CodecError("a valid-value entry's prevotes must be prevotes")
                prevotes.append(vote)
            if not isinstance(p, Proposal):  # cannot happen: the kind was checked
                raise CodecError("a valid-value entry must hold a proposal")
            return ValidValue(_int(v, "round"), p, tuple(prevotes))
    except KeyError as exc:
        raise CodecError(f"missing field {exc.args[0]!r}") from exc
    raise CodecError(f"unknown kind {v.get('k')!r}")


def encode(obj: WalEntry) -> bytes:
    return canonical.encode(to_value(obj))


def decode(data: bytes) -> WalEntry:
    try:
        return from_value(canonical.decode(data))
    except EncodingError as exc:
        raise CodecError(str(exc)) from exc
