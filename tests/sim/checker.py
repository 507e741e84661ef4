"""Invariants checked after every step of a simulated run.

Safety, checked as it happens (each commit, each message sent):

* agreement   - no two honest nodes commit different values at one height;
* validity    - every value an honest node commits passes the app's check
  and hashes to the committed value id;
* certificate - every commit certificate an honest node stores proves its
  block: 2f+1 distinct validators' precommit signatures, checked through the
  same ``Verifier`` the nodes use (with ``crypto="sm2"`` also through the
  ledger's own ``CommitCertificate.verify``);
* order       - an honest node commits heights 1, 2, 3, ... in order;
* double-sign - no honest validator ever sent two different signed messages
  for one (height, round, step); every message any honest node sends is
  looked at, including re-sends after a crash;
* evidence    - every piece of evidence an honest node's core reports names a
  Byzantine validator (never an honest one, crashed and restarted or not), and
  the record the node would keep of it (``node.evidence.record_of``) proves
  itself under ``node.evidence.check`` with the nodes' own ``Verifier``.

Liveness is judged by the runner: after GST every honest node must commit
``heights_after_gst`` more heights within the plan's budget of virtual time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.commit import ValidatorSet
from ledger.errors import CommitError
from node.consensus.certs import commit_problem
from node.consensus.events import Commit
from node.consensus.messages import DuplicateVote, Message, Misbehaviour, Proposal, Verifier
from node.evidence import EvidenceError, check, record_of
from tests.sim import app

#: Violations that end a run at once; the others are recorded and the run goes on
#: (a broken quorum yields bad certificates first and forks a little later).
STOPPING = frozenset({"agreement", "validity", "double-sign", "false-evidence"})


@dataclass(frozen=True)
class Violation:
    kind: str
    time_ms: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind} @ {self.time_ms}ms] {self.detail}"


class Checker:
    def __init__(self, validators: ValidatorSet, honest: frozenset[int], verifier: Verifier,
                 *, crypto: str) -> None:
        self.validators = validators
        self.honest = honest
        self.verifier = verifier
        self.crypto = crypto
        self.decided: dict[int, tuple[bytes, int]] = {}  # height -> (value id, first node)
        self.signed: dict[tuple[bytes, int, int, str], Message] = {}
        self.violations: list[Violation] = []
        self.stopped = False

    def _fail(self, kind: str, now: int, detail: str) -> None:
        self.violations.append(Violation(kind, now, detail))
        if kind in STOPPING:
            self.stopped = True

    def on_send(self, node: int, msg: Message, now: int) -> None:
        if node not in self.honest:
            return
        if isinstance(msg, Proposal):
            key = (msg.proposer, msg.height, msg.round, "proposal")
        else:
            key = (msg.validator, msg.height, msg.round, msg.type)
        prev = self.signed.setdefault(key, msg)
        if prev is not msg and _content(prev) != _content(msg):
            self._fail("double-sign", now, f"node {node} signed {key[3]} at h={key[1]} "
                       f"r={key[2]} twice: {_content(prev)} and {_content(msg)}")

    def on_evidence(self, node: int, m: Misbehaviour, now: int) -> None:
        if node not in self.honest:
            return
        signer = m.first.validator if isinstance(m, DuplicateVote) else m.first.proposer
        index = {v.key_id: i for i, v in enumerate(self.validators.validators)}.get(signer)
        if index is None:
            self._fail("evidence", now, f"node {node} reported evidence against a key "
                       f"outside the validator set: {signer.hex()}")
            return
        if index in self.honest:
            self._fail("false-evidence", now, f"node {node} reported honest validator "
                       f"{index} for {type(m).__name__} at h={m.first.height} "
                       f"r={m.first.round}")
        rec = record_of(m, self.validators.validators[index].public_key, now)
        try:
            check(rec, app.CHAIN_ID, self.verifier.verify)
        except EvidenceError as exc:
            self._fail("evidence", now, f"node {node}'s evidence against {index} does not "
                       f"prove itself: {exc}")

    def on_commit(self, node: int, c: Commit, height_before: int, now: int) -> None:
        if node not in self.honest:
            return
        if c.height != height_before + 1:
            self._fail("order", now, f"node {node} committed h={c.height} after h={height_before}")
        first = self.decided.setdefault(c.height, (c.value_id, node))
        if first[0] != c.value_id:
            self._fail("agreement", now,
                       f"h={c.height}: node {first[1]} committed {first[0].hex()[:12]}, "
                       f"node {node} committed {c.value_id.hex()[:12]}")
        if not app.is_valid(c.height, c.value) or app.value_id_of(c.value) != c.value_id:
            self._fail("validity", now, f"node {node} committed an invalid value at h={c.height}")
        problem = commit_problem(c.certificate, app.CHAIN_ID, self.validators, self.verifier,
                                 height=c.height, block_hash=c.value_id)
        if problem is None and self.crypto == "sm2":
            try:
                c.certificate.verify(app.CHAIN_ID, self.validators, height=c.height,
                                     block_hash=c.value_id)
            except CommitError as exc:
                problem = str(exc)
        if problem is not None:
            self._fail("certificate", now, f"node {node} h={c.height}: {problem}")


def _content(m: Message) -> str:
    """What a signature commits to, besides (signer, height, round, step)."""
    vid = m.value_id.hex()[:12] if m.value_id is not None else "nil"
    return f"{vid}/pol={m.pol_round}" if isinstance(m, Proposal) else vid
