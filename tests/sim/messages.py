"""Simulator-only network payloads: block sync request and answer."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.commit import CommitCertificate


@dataclass(frozen=True, slots=True)
class SyncRequest:
    requester: int
    height: int


@dataclass(frozen=True, slots=True)
class SyncResponse:
    height: int
    value: bytes
    certificate: CommitCertificate
