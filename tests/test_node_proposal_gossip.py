"""Proposal re-sends: once per peer per round, again only to a peer showing no sign of it.

Driven by hand like tests/test_node_consensus_loop.py (manual clock, no threads):
the node under test is validator 0 of the fixture network, its peers are named as
the other validators, and the transport records what goes to whom. Checked here:

* a gossip tick relays the polka proposal of another validator to the peers that
  have not voted for it, and a second tick at once sends it to nobody while the
  votes still go to everyone;
* after the back-off it goes again, to the peers still without a vote for it only,
  and the back-off doubles; a peer whose vote arrives is never sent it again;
* ``ProposalResends`` alone: our own broadcast counts as the first send, the back-off
  is capped, old heights are forgotten.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ledger.chain import Chain
from ledger.commit import Validator
from ledger.store import MemoryStore
from network.envelope import SeqCounter, open_envelope
from node.clock import ManualClock
from node.config import ConsensusConfig, NodeConfig
from node.consensus.context import Context
from node.consensus.events import ProposalReceived, TimeoutFired, VoteReceived
from node.consensus.messages import Message, Proposal, Step, Vote
from node.consensus.signing import Sm2Signer, Sm2Verifier
from node.consensus.wal import MemoryStorage, Wal
from node.effects import ConsensusLoop, GossipTick
from node.ledger_app import LedgerApp
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.peers import Outbox
from node.resend import ProposalResends
from node.wire import KIND_CONSENSUS, consensus_cover
from tests.ledger_fixtures import CHAIN_ID, GENESIS_TIME, key, make_genesis

GOSSIP_S = 1.0

#: Consensus envelopes are a covered kind (node.wire).
COVERS = {KIND_CONSENSUS: consensus_cover(1 << 22)}


class PeerRecorder:
    """Stands in for the transport: what was sent to which peer."""

    def __init__(self, peers: list[str]) -> None:
        self.peers = peers
        self.sent: list[tuple[str, bytes]] = []

    def broadcast(self, data: bytes) -> None:
        self.sent += [(p, data) for p in self.peers]

    def send(self, peer: str, data: bytes) -> None:
        self.sent.append((peer, data))


class _View:
    def __init__(self, chain: Chain) -> None:
        self.get = chain.record


class Harness:
    def __init__(self, tmp: Path) -> None:
        genesis = make_genesis()
        self.vs = genesis.validators
        self.me = self.vs.validators[0]
        self.others = [v for v in self.vs.validators if v != self.me]
        self.chain = Chain.create(MemoryStore(), genesis, sig_cache={})
        self.replica = Chain.create(MemoryStore(), genesis)
        self.clock = ManualClock(wall_ms=GENESIS_TIME + 60_000)
        cfg = NodeConfig(name=self.me.name, data_dir=tmp, key_file=tmp / "k", genesis=tmp / "g",
                         peers={v.name: f"http://{v.name}.invalid" for v in self.others},
                         consensus=ConsensusConfig(gossip_interval_ms=int(GOSSIP_S * 1000)))
        self.app = LedgerApp(self.chain, cfg.block, cfg.consensus.max_clock_drift_ms,
                             self.clock.time_ms)
        mempool = Mempool(_View(self.chain), CHAIN_ID, max_txs=100, max_bytes=1 << 20,
                          max_tx_bytes=1 << 16, sig_cache={}, monotonic=self.clock.monotonic)
        self.rec = PeerRecorder([v.name for v in self.others])
        outbox = Outbox(CHAIN_ID, key(self.me.name), self.rec, SeqCounter(1),  # type: ignore[arg-type]
                        1 << 22)
        ctx = Context(CHAIN_ID, Sm2Signer(key(self.me.name)), Sm2Verifier(),
                      self.app.validators_for, self.app.valid, self.app.value_id_of,
                      cfg.consensus.timeouts())
        self.metrics = NodeMetrics()

        def fatal(exc: BaseException) -> None:
            raise exc

        self.loop = ConsensusLoop(ctx, self.app, Wal(MemoryStorage()), outbox, mempool,
                                  self.metrics, self.clock, cfg, on_fatal=fatal)
        self.loop.boot()

    def proposal(self, height: int) -> Proposal:
        proposer = self.vs.proposer(height, 0)
        block = self.replica.propose_block([], GENESIS_TIME + height * 1000, proposer.key_id)
        p = Proposal(height, 0, block.hash, block.encode(), -1, proposer.key_id)
        return dataclasses.replace(p, signature=key(proposer.name).sign(p.sign_bytes(CHAIN_ID)))

    def vote(self, v: Validator, kind: str, p: Proposal) -> Vote:
        vote = Vote(kind, p.height, 0, p.value_id, v.key_id)  # type: ignore[arg-type]
        return dataclasses.replace(vote, signature=key(v.name).sign(vote.sign_bytes(CHAIN_ID)))

    def take(self) -> dict[str, list[Message]]:
        """What each peer was sent since the last call."""
        keys = {v.key_id: v.public_key for v in self.vs.validators}
        out: dict[str, list[Message]] = {v.name: [] for v in self.others}
        for peer, data in self.rec.sent:
            out[peer] += open_envelope(data, CHAIN_ID, keys, covers=COVERS).decoded
        self.rec.sent.clear()
        return out

    def tick(self) -> dict[str, list[Message]]:
        self.take()
        self.loop.handle(GossipTick())
        return self.take()


def proposals_to(sent: dict[str, list[Message]]) -> dict[str, int]:
    return {peer: sum(isinstance(m, Proposal) for m in msgs) for peer, msgs in sent.items()}


@pytest.fixture()
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    assert harness.vs.proposer(1, 0) != harness.me
    return harness


def test_proposal_goes_once_per_peer_then_only_to_peers_without_it(h: Harness) -> None:
    p1 = h.proposal(1)
    h.loop.handle(ProposalReceived(p1))
    # A polka for p1 without us precommitting yet would need our prevote: we have it
    # (we prevoted p1); two more prevotes make 2f+1, so to_gossip relays p1.
    voters = h.others[:2]
    silent = h.others[2]
    for v in voters:
        h.loop.handle(VoteReceived(h.vote(v, "prevote", p1)))
    first = h.tick()
    # The voters hold p1 (they prevoted it): only the silent peer is sent it.
    assert proposals_to(first) == {voters[0].name: 0, voters[1].name: 0, silent.name: 1}
    # Votes still go to everyone on every tick.
    assert all(any(isinstance(m, Vote) for m in msgs) for msgs in first.values())
    again = h.tick()
    assert sum(proposals_to(again).values()) == 0
    assert all(any(isinstance(m, Vote) for m in msgs) for msgs in again.values())
    # After the back-off (2 gossip intervals) it goes again to the silent peer only...
    h.clock.advance(2 * GOSSIP_S)
    assert proposals_to(h.tick())[silent.name] == 1
    # ...and the back-off has doubled: 2 s later nothing, 4 s later again.
    h.clock.advance(2 * GOSSIP_S)
    assert sum(proposals_to(h.tick()).values()) == 0
    h.clock.advance(2 * GOSSIP_S)
    assert proposals_to(h.tick())[silent.name] == 1
    assert h.metrics.proposal_resends.value() == 3
    # Once the silent peer votes for p1 it is never sent p1 again.
    h.loop.handle(VoteReceived(h.vote(silent, "prevote", p1)))
    h.clock.advance(60)
    assert sum(proposals_to(h.tick()).values()) == 0


def test_resends_alone_backoff_cap_and_forgetting(h: Harness) -> None:
    r = ProposalResends(["a", "b"], base_s=1.0, cap_s=4.0)
    p = h.proposal(1)
    assert h.loop.state is not None
    s = h.loop.state
    r.sent_to_all(p, now=0.0)  # our own broadcast is the first send
    assert r.due(s, p, {}, now=0.5) == []
    assert r.due(s, p, {}, now=1.0) == ["a", "b"]  # back-off 1 s over, now 2 s
    assert r.due(s, p, {}, now=2.5) == []
    assert r.due(s, p, {}, now=3.0) == ["a", "b"]  # now 4 s, the cap
    assert r.due(s, p, {}, now=7.0) == ["a", "b"]  # stays 4 s
    assert r.due(s, p, {}, now=10.9) == []
    assert r.due(s, p, {}, now=11.0) == ["a", "b"]
    r.forget_below(2)
    assert r.tracked() == 0


def test_node_proposing_sends_its_block_once(h: Harness) -> None:
    """Our own proposal: sent with the Broadcast effect, not again by the next ticks."""
    s = h.loop.state
    assert s is not None
    # Find a round of height 1 that we propose, and jump there by timeouts.
    r = next(r for r in range(8) if h.vs.proposer(1, r) == h.me)
    for rr in range(r):
        for step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
            h.loop.handle(TimeoutFired(1, rr, step))
        if h.loop.state is not None and h.loop.state.round > rr:
            continue
        # Precommit timeout needs 2f+1 precommits of any kind to be armed: give nil ones.
        for v in h.others[:2]:
            nil = Vote("precommit", 1, rr, None, v.key_id)
            h.loop.handle(VoteReceived(dataclasses.replace(
                nil, signature=key(v.name).sign(nil.sign_bytes(CHAIN_ID)))))
        h.loop.handle(TimeoutFired(1, rr, Step.PRECOMMIT))
    assert h.loop.state is not None and h.loop.state.round == r
    sent = h.take()
    assert proposals_to(sent) == {v.name: 1 for v in h.others}  # the broadcast itself
    assert sum(proposals_to(h.tick()).values()) == 0
    assert sum(proposals_to(h.tick()).values()) == 0
