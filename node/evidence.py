"""Evidence of equivocation: kept on disk, served, and checkable by anyone.

A validator that signs two different votes for one (height, round, type), or a
proposer that signs two different proposals for one (height, round), has broken the
protocol, and the two signatures prove it to anyone who knows its public key. The
consensus core finds such pairs (``node.consensus.intake``) and emits an
``Evidence`` effect; this module keeps what it found so that operators can act on it:

* **Record.** ``EvidenceRecord`` holds what the two signatures cover and nothing
  else: the validator's public key, height, round, the vote type (or ``proposal``),
  and for each side the value id (None for a nil vote), the POL round (proposals)
  and the signature. A proposal's block is not kept: its signature covers only the
  block's id (``node.consensus.messages.proposal_sign_bytes``).
* **Checkable.** ``check(record, chain_id)`` rebuilds both sign-bytes (domain tag and
  chain id included) and verifies both signatures under the record's key. A reader of
  ``GET /v1/evidence`` therefore trusts no node: a forged record fails the check, and
  whether the key belongs to a validator is for the reader's own validator set.
* **Durable.** Each new record is appended to ``evidence.log`` in the data directory,
  framed and fsync'd like the consensus WAL (``node.consensus.wal``); a restart reads
  it back, a torn last record is cut. Evidence must outlive the crash of the node that
  saw it, or a misbehaving validator could count on restarts to erase it.
* **Bounded.** One record per (validator, height, round, type): the core may see the
  same pair again after a restart, and a validator may sign more than two values. At
  most ``PER_VALIDATOR`` records per validator are kept (the first ones: proof
  enough), the rest only counted, so a Byzantine validator cannot fill the disk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from ledger.commit import vote_sign_bytes
from node.consensus.errors import WalCorruptError
from node.consensus.messages import DuplicateVote, Misbehaviour
from node.consensus.messages import proposal_sign_bytes as _proposal_sign_bytes
from node.consensus.wal import FileStorage, MemoryStorage, frame, unframe
from node.errors import NodeError

#: Records kept per validator; later ones are counted in ``EvidenceLog.not_kept``.
PER_VALIDATOR = 64
_VERSION = 1
_ASIDE = "move the file aside to start the node (its evidence is then lost to this node)"
Kind = Literal["prevote", "precommit", "proposal"]
_KINDS: tuple[Kind, ...] = ("prevote", "precommit", "proposal")


class EvidenceError(NodeError):
    """An evidence record that does not decode, or whose signatures do not prove it."""


@dataclass(frozen=True, slots=True)
class Signed:
    """One side of the pair: what was signed, and the signature."""

    value_id: bytes | None
    signature: bytes
    pol_round: int = -1  # proposals only


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    kind: Kind
    public_key: bytes
    height: int
    round: int
    first: Signed
    second: Signed
    seen_at_ms: int  # this node's wall clock when it first saw the pair

    @property
    def key(self) -> tuple[bytes, int, int, str]:
        return self.public_key, self.height, self.round, self.kind

    @property
    def key_id(self) -> bytes:
        return sm2.key_id(self.public_key)

    def sign_bytes(self, chain_id: str, side: Signed) -> bytes:
        if self.kind == "proposal":
            if side.value_id is None:
                raise EvidenceError("a proposal's value id cannot be nil")
            return _proposal_sign_bytes(chain_id, self.height, self.round, side.value_id,
                                        side.pol_round)
        return vote_sign_bytes(chain_id, self.kind, self.height, self.round, side.value_id)

    def encode(self) -> bytes:
        return canonical.encode({
            "v": _VERSION, "kind": self.kind, "public_key": self.public_key,
            "height": self.height, "round": self.round, "seen_at_ms": self.seen_at_ms,
            "first": _side_map(self.first), "second": _side_map(self.second)})

    @classmethod
    def decode(cls, data: bytes) -> EvidenceRecord:
        try:
            m = canonical.decode(data, max_len=4096)
            if not isinstance(m, dict) or m.get("v") != _VERSION:
                raise EvidenceError(f"not an evidence record of version {_VERSION}")
            kind = m["kind"]
            if kind not in _KINDS:
                raise EvidenceError(f"unknown evidence kind {kind!r}")
            rec = cls(kind, _bytes(m["public_key"]), _int(m["height"]), _int(m["round"]),
                      _side(m["first"]), _side(m["second"]), _int(m["seen_at_ms"]))
        except (CertificatesError, KeyError, TypeError) as exc:
            raise EvidenceError(f"malformed evidence record: {exc}") from exc
        return rec

    def to_json(self, names: dict[bytes, str]) -> dict[str, Any]:
        """The API's form: hex bytes, the validator's name where this node knows it."""
        def side(s: Signed) -> dict[str, Any]:
            out: dict[str, Any] = {"value_id": None if s.value_id is None else s.value_id.hex(),
                                   "signature": s.signature.hex()}
            if self.kind == "proposal":
                out["pol_round"] = s.pol_round
            return out
        return {"kind": self.kind, "validator": names.get(self.key_id),
                "key_id": self.key_id.hex(), "public_key": self.public_key.hex(),
                "height": self.height, "round": self.round, "seen_at_ms": self.seen_at_ms,
                "first": side(self.first), "second": side(self.second)}

    @classmethod
    def from_json(cls, d: Any) -> EvidenceRecord:
        """Inverse of ``to_json`` (for readers of the API); ``EvidenceError`` if malformed."""
        def hexbytes(v: Any) -> bytes:
            if not isinstance(v, str):
                raise EvidenceError(f"expected hex, got {type(v).__name__}")
            try:
                return bytes.fromhex(v)
            except ValueError as exc:
                raise EvidenceError(f"bad hex: {v[:40]!r}") from exc

        def side(s: Any) -> Signed:
            if not isinstance(s, dict):
                raise EvidenceError("each side must be an object")
            vid = s.get("value_id")
            return Signed(None if vid is None else hexbytes(vid), hexbytes(s.get("signature")),
                          _int(s.get("pol_round", -1)))
        if not isinstance(d, dict) or d.get("kind") not in _KINDS:
            raise EvidenceError("not an evidence record")
        return cls(d["kind"], hexbytes(d.get("public_key")), _int(d.get("height")),
                   _int(d.get("round")), side(d.get("first")), side(d.get("second")),
                   _int(d.get("seen_at_ms")))


def record_of(m: Misbehaviour, public_key: bytes, seen_at_ms: int) -> EvidenceRecord:
    """The record for what the core found; ``public_key`` is the signer's (the core
    names validators by key id, and the check needs the key itself)."""
    if isinstance(m, DuplicateVote):
        a, b = m.first, m.second
        return EvidenceRecord(a.type, public_key, a.height, a.round,
                              Signed(a.value_id, a.signature), Signed(b.value_id, b.signature),
                              seen_at_ms)
    p, q = m.first, m.second
    return EvidenceRecord("proposal", public_key, p.height, p.round,
                          Signed(p.value_id, p.signature, p.pol_round),
                          Signed(q.value_id, q.signature, q.pol_round), seen_at_ms)


def check(rec: EvidenceRecord, chain_id: str,
          verify: Callable[[bytes, bytes, bytes], bool] = sm2.verify) -> None:
    """Raise ``EvidenceError`` unless ``rec`` proves equivocation by ``rec.public_key``:
    two different statements for one (height, round, type), both signed by that key."""
    if rec.kind not in _KINDS or rec.height < 1 or rec.round < 0:
        raise EvidenceError(f"{rec.kind} at height {rec.height}, round {rec.round} is no "
                            "consensus step")
    a, b = rec.first, rec.second
    if (a.value_id, a.pol_round) == (b.value_id, b.pol_round):
        raise EvidenceError("both sides sign the same statement: that is no equivocation")
    try:
        sm2.validate_public_key(rec.public_key)
    except CertificatesError as exc:
        raise EvidenceError(f"bad public key: {exc}") from exc
    for name, side in (("first", a), ("second", b)):
        if not verify(rec.public_key, rec.sign_bytes(chain_id, side), side.signature):
            raise EvidenceError(f"the {name} signature does not verify under key "
                                f"{rec.key_id.hex()} for chain {chain_id!r}")


class EvidenceLog:
    """The node's evidence: in memory for serving, appended to storage as it comes."""

    def __init__(self, storage: FileStorage | MemoryStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        where = getattr(storage, "path", "evidence log")
        data = storage.read()
        try:
            payloads, good = unframe(data)
            records = [EvidenceRecord.decode(p) for p in payloads]
        except WalCorruptError as exc:
            raise EvidenceError(f"{where}: a record before the last fails its checksum, which "
                                f"is damage, not a torn write; {_ASIDE}") from exc
        except EvidenceError as exc:
            raise EvidenceError(f"{where}: {exc}; {_ASIDE}") from exc
        #: bytes of a torn last record cut at open (a crash during an append)
        self.torn_bytes = len(data) - good
        if self.torn_bytes:
            storage.replace(data[:good])
        self._records: list[EvidenceRecord] = []
        self._seen: set[tuple[bytes, int, int, str]] = set()
        self._per_key: dict[bytes, int] = {}
        #: records not kept: a validator past ``PER_VALIDATOR``
        self.not_kept = 0
        for rec in records:
            self._remember(rec)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EvidenceLog:
        return cls(FileStorage(Path(path)))

    def _remember(self, rec: EvidenceRecord) -> None:
        self._records.append(rec)
        self._seen.add(rec.key)
        self._per_key[rec.public_key] = self._per_key.get(rec.public_key, 0) + 1

    def add(self, rec: EvidenceRecord) -> bool:
        """Keep ``rec`` (durably) unless it repeats a kept one or its validator has
        ``PER_VALIDATOR`` already; True if kept. Not thread-safe against itself: one
        writer (the consensus thread); readers may call ``records`` at any time."""
        if rec.key in self._seen:
            return False
        if self._per_key.get(rec.public_key, 0) >= PER_VALIDATOR:
            self.not_kept += 1
            return False
        self._storage.append(frame(rec.encode()))
        with self._lock:
            self._remember(rec)
        return True

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[EvidenceRecord]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        if isinstance(self._storage, FileStorage):
            self._storage.close()


def _side_map(s: Signed) -> dict[str, Any]:
    return {"value_id": s.value_id, "signature": s.signature, "pol_round": s.pol_round}


def _side(m: Any) -> Signed:
    if not isinstance(m, dict):
        raise EvidenceError("each side must be a map")
    vid = m["value_id"]
    return Signed(None if vid is None else _bytes(vid), _bytes(m["signature"]),
                  _int(m["pol_round"]))


def _bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):
        raise EvidenceError(f"expected bytes, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise EvidenceError(f"expected an integer, got {type(v).__name__}")
    return v
