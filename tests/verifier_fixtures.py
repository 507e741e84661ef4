"""Shared world for the verifier tests: a real chain with real commits, and nodes around it.

``build_world()`` commits, on a ``MemoryStore`` chain with the fixture validators'
SM2 commit signatures, certificates in every state the verifier must tell apart
(valid, revoked, suspended, expired, superseded and its successor), with their
wallets (document + salts). ``ChainSource`` serves a chain as a light-client
source; ``Tampering`` wraps a source and forges its answers in one chosen way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from certificates.document import CommittedDocument, Document, commit
from ledger.block import BlockHeader
from ledger.chain import Chain
from ledger.commit import CommitCertificate, make_commit, vote_sign_bytes
from ledger.records import CertRecord
from ledger.store import MemoryStore
from ledger.tx import Anchor
from tests.crash_child import commit_next
from tests.ledger_fixtures import (
    ISSUER_A,
    TYPE_DIPLOMA,
    UNREGISTERED,
    cert_id,
    issue_tx,
    key,
    make_genesis,
    status_tx,
    supersede_tx,
)
from verifier.errors import SourceError
from verifier.evidence import StateEvidence

NOW = 1_800_000_000  # 2027-01-15, Unix seconds
VALID_FROM = 1_700_000_000
VALID_UNTIL = 1_900_000_000

FIELDS = {
    "name": "王小明",
    "degree": "工学学士 Bachelor of Engineering",
    "major": "软件工程",
    "id_number": "440106199901011234",
    "graduation_date": "2026-06-30",
    "student_number": "S2022004417",
}
HOLDER = "holder-440106-xyz"


def document(serial: str, *, issuer: str = ISSUER_A, version: int = 1,
             valid_until: int | None = VALID_UNTIL, supersedes: str | None = None,
             fields: dict[str, object] | None = None, name: str | None = None) -> Document:
    f = dict(FIELDS)
    if name is not None:
        f["name"] = name
    f.update(fields or {})
    return Document(
        id=cert_id(serial, issuer, TYPE_DIPLOMA, version), type=TYPE_DIPLOMA, issuer=issuer,
        holder=HOLDER, fields=f,  # type: ignore[arg-type]
        issued_at=VALID_FROM, valid_from=VALID_FROM, valid_until=valid_until,
        supersedes=supersedes)


def salts_of(n: int) -> Callable[[int], bytes]:
    counter = iter(range(10_000))
    return lambda size: bytes([n, next(counter)]) * (size // 2)


def anchor_of(c: CommittedDocument) -> Anchor:
    d = c.document
    return Anchor(d.id, d.type, d.issuer, c.digest, d.valid_from, d.valid_until, d.supersedes)


@dataclass
class World:
    chain: Chain
    wallets: dict[str, CommittedDocument] = field(default_factory=dict)
    heights: dict[str, int] = field(default_factory=dict)  # chain height after each step


def build_world() -> World:
    chain = Chain.create(MemoryStore(), make_genesis())
    w = World(chain)

    def wallet(label: str, doc: Document) -> CommittedDocument:
        c = commit(doc, salts_of(len(w.wallets) + 1))
        w.wallets[label] = c
        return c

    names = {"valid": "王小明", "revoked": "李雷", "suspended": "韩梅梅", "expired": "赵四",
             "old": "钱五"}
    txs = []
    for i, (label, serial) in enumerate((("valid", "V1"), ("revoked", "R1"),
                                         ("suspended", "S1"), ("expired", "E1"),
                                         ("old", "O1"))):
        until = VALID_FROM + 1000 if label == "expired" else VALID_UNTIL
        c = wallet(label, document(serial, valid_until=until, name=names[label],
                                   fields={"student_number": f"S20220044{i}"}))
        txs.append(issue_tx(anchor_of(c)))
    commit_next(chain, txs)
    w.heights["issued"] = chain.head_height
    old = w.wallets["old"].document
    new = wallet("new", document("O1", version=2, supersedes=old.id, name="钱五"))
    commit_next(chain, [status_tx("revoke", w.wallets["revoked"].document.id, reason="学历造假"),
                        status_tx("suspend", w.wallets["suspended"].document.id),
                        supersede_tx(old.id, anchor_of(new))])
    # Not on the chain: never issued, and one from an issuer that is not registered.
    wallet("unissued", document("U1", name="孙七"))
    wallet("unknown_issuer", document("X1", issuer=UNREGISTERED, name="周八"))
    for _ in range(3):  # a few empty blocks so that an early copy can be stale
        commit_next(chain, [])
    w.heights["head"] = chain.head_height
    return w


def replica(chain: Chain, upto: int) -> Chain:
    """Another node holding the same blocks up to height ``upto`` only."""
    other = Chain.create(MemoryStore(), make_genesis())
    for h in range(1, upto + 1):
        block, c = chain.block(h), chain.commit(h)
        assert block is not None and c is not None
        other.commit_block(block, c)
    return other


class ChainSource:
    """A chain served as a light-client source (what the node API would send)."""

    def __init__(self, chain: Chain, name: str = "node") -> None:
        self.chain, self._name = chain, name
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    def state(self, key: bytes) -> StateEvidence:
        self.calls += 1
        p = self.chain.prove(key)
        return StateEvidence(key, p.record, p.proof.to_bytes(), p.header.encode(), p.commit,
                             self.chain.validator_set(p.header.height), self._name)

    def latest(self) -> tuple[bytes, CommitCertificate] | None:
        h = self.chain.head_header
        c = self.chain.commit(self.chain.head_height)
        return None if h is None or c is None else (h.encode(), c)


def forge_status(ev: StateEvidence) -> StateEvidence:
    """The record rewritten to say "issued" (the proof no longer matches)."""
    assert ev.record is not None
    rec = CertRecord.from_bytes(ev.record)
    return dataclasses.replace(ev, record=rec.with_status("issued", rec.status_height, None)
                               .to_bytes())


def forge_commit(ev: StateEvidence, signers: tuple[str, ...] = ("x-0", "x-1", "x-2")
                 ) -> StateEvidence:
    """A header with a forged state root, "committed" by keys that are not validators."""
    h = BlockHeader.decode(ev.header)
    fake = dataclasses.replace(h, state_root=bytes(32))
    msg = vote_sign_bytes(h.chain_id, "precommit", h.height, 0, fake.hash)
    c = make_commit(h.height, 0, fake.hash, [(key(n).public.key_id, key(n).sign(msg))
                                            for n in signers])
    return dataclasses.replace(ev, header=fake.encode(), commit=c)


def drop_signatures(ev: StateEvidence, keep: int = 2) -> StateEvidence:
    c = ev.commit
    return dataclasses.replace(ev, commit=dataclasses.replace(c, signatures=c.signatures[:keep]))


class Tampering:
    """A source whose answers pass through ``forge`` (a Byzantine or broken node)."""

    def __init__(self, inner: ChainSource, forge: Callable[[StateEvidence], StateEvidence] | None,
                 name: str = "byzantine") -> None:
        self.inner, self.forge, self._name = inner, forge, name

    @property
    def name(self) -> str:
        return self._name

    def state(self, key: bytes) -> StateEvidence:
        if self.forge is None:
            raise SourceError("connection refused")
        return dataclasses.replace(self.forge(self.inner.state(key)), source=self._name)

    def latest(self) -> tuple[bytes, CommitCertificate] | None:
        return self.inner.latest()
