"""The consensus thread's duties, driven by hand (no threads, a manual clock, real SM2).

The node under test is validator 0 of the fixture network (tests/ledger_fixtures.py);
the other three are played by this test, which signs their proposals and votes and
builds their blocks on a replica chain. Checked here:

* a tx in the mempool is proposed by nobody but committed through a peer's block,
  and leaves the mempool when the block commits;
* WAL before broadcast: every message we signed was appended to the WAL before the
  envelope carrying it was handed to the transport;
* a proposal for the *next* height that arrives before we decide is held until our
  commit has run, and then judged valid (the core alone would judge it against a
  chain still missing its parent, and prevote nil);
* messages far ahead kick block sync; a next-height proposal from the wrong proposer
  is not held;
* an idle chain waits for transactions: with an empty mempool our round-0 propose
  timeout is held back by ``empty_block_interval_ms`` (so we do not time out a
  proposer that is only waiting for txs), and a tx arriving starts it at once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ledger.block import Block
from ledger.chain import Chain
from ledger.commit import Validator
from ledger.state import BlockContext
from ledger.store import MemoryStore
from network.envelope import SeqCounter, open_envelope
from node.clock import ManualClock
from node.config import NodeConfig
from node.consensus.context import Context
from node.consensus.events import ProposalReceived, VoteReceived
from node.consensus.messages import Message, Proposal, Step, Vote
from node.consensus.signing import Sm2Signer, Sm2Verifier
from node.consensus.wal import MemoryStorage, Wal
from node.effects import ConsensusLoop
from node.ledger_app import LedgerApp
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.peers import Outbox
from node.wire import KIND_CONSENSUS, consensus_cover
from tests.crash_child import sign_commit
from tests.ledger_fixtures import CHAIN_ID, GENESIS_TIME, anchor, issue_tx, key, make_genesis

#: Consensus envelopes are a covered kind (node.wire).
COVERS = {KIND_CONSENSUS: consensus_cover(1 << 22)}


class Recorder:
    """Stands in for the transport and the WAL storage; logs the order of both."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def broadcast(self, data: bytes) -> None:
        self.events.append(("send", data))


class RecordingStorage(MemoryStorage):
    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def append(self, data: bytes) -> None:
        super().append(data)
        self.rec.events.append(("wal", data))


class Harness:
    def __init__(self, tmp: Path) -> None:
        genesis = make_genesis()
        self.vs = genesis.validators
        self.me = self.vs.validators[0]
        self.chain = Chain.create(MemoryStore(), genesis, sig_cache={})
        self.replica = Chain.create(MemoryStore(), genesis)
        self.clock = ManualClock(wall_ms=GENESIS_TIME + 60_000)
        cfg = NodeConfig(name="t", data_dir=tmp, key_file=tmp / "k", genesis=tmp / "g")
        self.app = LedgerApp(self.chain, cfg.block, cfg.consensus.max_clock_drift_ms,
                             self.clock.time_ms)
        self.mempool = Mempool(_View(self.chain), CHAIN_ID, max_txs=100, max_bytes=1 << 20,
                               max_tx_bytes=1 << 16, sig_cache={}, monotonic=self.clock.monotonic)
        self.rec = Recorder()
        self.wal = Wal(RecordingStorage(self.rec))
        outbox = Outbox(CHAIN_ID, key(self.me.name), self.rec, SeqCounter(1),  # type: ignore[arg-type]
                        1 << 22)
        ctx = Context(CHAIN_ID, Sm2Signer(key(self.me.name)), Sm2Verifier(),
                      self.app.validators_for, self.app.valid, self.app.value_id_of,
                      cfg.consensus.timeouts())
        self.future_kicks = 0
        self.metrics = NodeMetrics()

        def fatal(exc: BaseException) -> None:
            raise exc

        def kick() -> None:
            self.future_kicks += 1

        self.loop = ConsensusLoop(ctx, self.app, self.wal, outbox, self.mempool, self.metrics,
                                  self.clock, cfg, on_fatal=fatal, on_future=kick)
        self.loop.boot()

    def proposer(self, height: int, round_: int = 0) -> Validator:
        return self.vs.proposer(height, round_)

    def others(self) -> list[Validator]:
        return [v for v in self.vs.validators if v != self.me]

    def proposal(self, height: int, txs: list[bytes], proposer: Validator | None = None
                 ) -> Proposal:
        proposer = proposer or self.proposer(height)
        block = self.replica.propose_block(txs, GENESIS_TIME + height * 1000, proposer.key_id)
        p = Proposal(height, 0, block.hash, block.encode(), -1, proposer.key_id)
        return dataclasses.replace(p, signature=key(proposer.name).sign(p.sign_bytes(CHAIN_ID)))

    def replica_commit(self, p: Proposal) -> None:
        from ledger.block import Block

        block = Block.decode(p.value)
        self.replica.commit_block(block, sign_commit(block, [v.name for v in self.others()]))

    def vote(self, v: Validator, kind: str, p: Proposal) -> Vote:
        vote = Vote(kind, p.height, 0, p.value_id, v.key_id)  # type: ignore[arg-type]
        return dataclasses.replace(vote, signature=key(v.name).sign(vote.sign_bytes(CHAIN_ID)))

    def sent(self) -> list[Message]:
        out: list[Message] = []
        keys = {v.key_id: v.public_key for v in self.vs.validators}
        for kind, data in self.rec.events:
            if kind == "send":
                out += open_envelope(data, CHAIN_ID, keys, covers=COVERS).decoded
        return out

    def my_vote(self, height: int, kind: str) -> Vote | None:
        for m in self.sent():
            if isinstance(m, Vote) and (m.height, m.type, m.validator) == (
                    height, kind, self.me.key_id):
                return m
        return None


class _View:
    def __init__(self, chain: Chain) -> None:
        self.get = chain.record


@pytest.fixture()
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    assert harness.proposer(1) != harness.me and harness.proposer(2) != harness.me
    return harness


def test_next_height_proposal_is_held_until_our_commit(h: Harness) -> None:
    tx = issue_tx(anchor("LOOP1"))
    h.mempool.add(tx.to_bytes(), BlockContext(CHAIN_ID, 1, GENESIS_TIME), gossip=False)
    p1 = h.proposal(1, [tx.to_bytes()])
    h.replica_commit(p1)
    p2 = h.proposal(2, [])
    h.loop.handle(ProposalReceived(p1))
    mine = h.my_vote(1, "prevote")
    assert mine is not None and mine.value_id == p1.value_id
    # The next height's proposal arrives before we decide: held, not given to the core.
    h.loop.handle(ProposalReceived(p2))
    assert h.loop.state is not None and not h.loop.state.next_height
    others = h.others()
    for v in others[:2]:
        h.loop.handle(VoteReceived(h.vote(v, "prevote", p1)))
    assert h.my_vote(1, "precommit") is not None
    for v in others[:2]:
        h.loop.handle(VoteReceived(h.vote(v, "precommit", p1)))
    # Decided and committed; the held proposal was judged against block 1: a real prevote.
    assert h.chain.head_height == 1 and h.chain.block(1) is not None
    assert tx.id not in h.mempool and h.metrics.committed_txs.value() == 1
    prevote2 = h.my_vote(2, "prevote")
    assert prevote2 is not None and prevote2.value_id == p2.value_id
    assert h.loop.snapshot.height == 2


def test_wal_before_broadcast(h: Harness) -> None:
    p1 = h.proposal(1, [])
    h.loop.handle(ProposalReceived(p1))
    for v in h.others()[:2]:
        h.loop.handle(VoteReceived(h.vote(v, "prevote", p1)))
    keys = {v.key_id: v.public_key for v in h.vs.validators}
    walled = 0
    own_sent = 0
    for kind, data in h.rec.events:
        if kind == "wal":
            walled += 1
        else:
            msgs = open_envelope(data, CHAIN_ID, keys, covers=COVERS).decoded
            own_sent += sum(isinstance(m, Vote) and m.validator == h.me.key_id for m in msgs)
            # RoundStarted entries are in the WAL too, so it is ahead: never behind.
            assert walled >= own_sent
    assert own_sent >= 2  # prevote and precommit


def test_far_future_kicks_sync_and_wrong_proposer_is_not_held(h: Harness) -> None:
    p1 = h.proposal(1, [])
    far = dataclasses.replace(h.vote(h.others()[0], "prevote", p1), height=9)
    h.loop.handle(VoteReceived(far))
    assert h.future_kicks == 1
    wrong = next(v for v in h.others() if v != h.proposer(2))
    h.replica_commit(p1)
    h.loop.handle(ProposalReceived(h.proposal(2, [], proposer=wrong)))
    assert h.metrics.dropped.value("consensus_wrong_proposer") == 1


def _run_timers(h: Harness, seconds: float) -> None:
    """Advance the manual clock and handle every item that comes due, as the thread would."""
    h.clock.advance(seconds)
    h.loop.timers.fire_due()
    while not h.loop.queue.empty():
        h.loop.handle(h.loop.queue.get_nowait())


def test_an_idle_validator_holds_back_its_propose_timeout(h: Harness) -> None:
    c = h.loop.cfg.consensus
    timeout, idle = c.propose_timeout_ms / 1000, c.empty_block_interval_ms / 1000
    assert idle > timeout  # allowed now: the interval holds every validator
    assert len(h.mempool) == 0 and h.loop.state is not None
    # Without the hold-back this node would prevote nil once the propose timeout passed.
    _run_timers(h, timeout + 0.5)
    assert h.my_vote(1, "prevote") is None
    assert h.loop.state.step is Step.PROPOSE
    # No tx came in the whole interval: the backstop fires and the round goes on.
    _run_timers(h, idle)
    nil = h.my_vote(1, "prevote")
    assert nil is not None and nil.value_id is None


def test_a_transaction_starts_the_held_back_timeout(h: Harness) -> None:
    timeout = h.loop.cfg.consensus.propose_timeout_ms / 1000
    _run_timers(h, timeout + 1)
    assert h.my_vote(1, "prevote") is None
    tx = issue_tx(anchor("IDLE1"))
    h.mempool.add(tx.to_bytes(), BlockContext(CHAIN_ID, 1, GENESIS_TIME), gossip=False)
    assert not h.loop.queue.empty()  # the mempool told the loop
    _run_timers(h, 0)
    _run_timers(h, timeout - 0.1)
    assert h.my_vote(1, "prevote") is None  # the full timeout, counted from the tx
    _run_timers(h, 0.2)
    nil = h.my_vote(1, "prevote")  # the proposer never proposed: nil, as before
    assert nil is not None and nil.value_id is None


def _swapped(p: Proposal, txs: list[bytes]) -> Proposal:
    """``p`` with other txs under its block's header, as changed on the way: the
    signature (over the value id, not the value) still holds."""
    block = Block.decode(p.value)
    return dataclasses.replace(p, value=Block(block.header, tuple(txs)).encode())


def test_a_proposal_whose_txs_were_swapped_is_dropped_not_voted_nil(h: Harness) -> None:
    """Judged invalid, it would make us prevote nil for the round; dropped, the real one
    (re-sent) still gets our prevote."""
    real = h.proposal(1, [issue_tx(anchor("SWAP1")).to_bytes()])
    h.loop.handle(ProposalReceived(_swapped(real, [issue_tx(anchor("SWAP2")).to_bytes()])))
    assert h.my_vote(1, "prevote") is None
    assert h.loop.snapshot.stats.get("malformed") == 1
    h.loop.handle(ProposalReceived(real))
    mine = h.my_vote(1, "prevote")
    assert mine is not None and mine.value_id == real.value_id


def test_a_next_height_proposal_with_swapped_txs_is_not_held(h: Harness) -> None:
    """Held first, it would keep the slot of the real one, which arrives after it."""
    p1 = h.proposal(1, [])
    h.replica_commit(p1)
    p2 = h.proposal(2, [issue_tx(anchor("SWAP3")).to_bytes()])
    h.loop.handle(ProposalReceived(p1))
    h.loop.handle(ProposalReceived(_swapped(p2, [issue_tx(anchor("SWAP4")).to_bytes()])))
    assert h.metrics.dropped.value("held_malformed") == 1
    h.loop.handle(ProposalReceived(p2))
    for kind in ("prevote", "precommit"):
        for v in h.others()[:2]:
            h.loop.handle(VoteReceived(h.vote(v, kind, p1)))
    assert h.chain.head_height == 1
    prevote2 = h.my_vote(2, "prevote")
    assert prevote2 is not None and prevote2.value_id == p2.value_id
