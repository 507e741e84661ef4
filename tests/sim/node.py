"""A simulated node: the consensus core plus the runtime duties of a real node.

The runtime executes the core's effects in order, exactly as the node's
consensus thread must: ``PersistWal`` appends to the WAL (an in-memory
``MemoryStorage`` owned by this object, so it survives a simulated crash),
``Broadcast`` hands the message to the network, ``ScheduleTimeout`` and
``RequestValue`` become future events on the virtual clock, ``Commit`` appends
to the node's ledger (also durable across crashes) and compacts the WAL.

Two background duties stand in for the node's peer layer:

* gossip - every ~300 ms the node re-sends ``node.consensus.gossip.to_gossip``:
  its own recent messages and the proof of the highest polka it saw, the
  paper's assumption that messages of correct processes are eventually
  delivered even when the network dropped them before GST;
* block sync - every ~600 ms it asks a random peer for the block after its
  last one; the answer arrives as ``CommittedBlockFromSync``.

A crash drops the in-memory consensus state; restart rebuilds it with
``start(ctx, len(ledger) + 1, wal.recovered)``. An armed crash fires right
after the WAL append of the node's next signed message and before its send
(mode ``after_persist``) or in the middle of that append (mode ``torn``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.consensus import codec
from node.consensus.context import Context
from node.consensus.core import step
from node.consensus.events import (
    Broadcast,
    Commit,
    CommittedBlockFromSync,
    Effect,
    Event,
    Evidence,
    PersistWal,
    ProposalReceived,
    RequestValue,
    ScheduleTimeout,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from node.consensus.gossip import to_gossip
from node.consensus.messages import Message, Proposal, ValidValue, Vote
from node.consensus.restore import start
from node.consensus.state import ConsensusState
from node.consensus.wal import MemoryStorage, Wal, frame
from tests.sim import app
from tests.sim.faults import Crash
from tests.sim.messages import SyncRequest, SyncResponse

if TYPE_CHECKING:
    from tests.sim.world import World

TIMER, VALUE = 1, 2  # event kinds, shared with world.py


class SimNode:
    def __init__(self, world: World, idx: int, ctx: Context) -> None:
        self.w = world
        self.idx = idx
        self.ctx = ctx
        self.storage = MemoryStorage()
        self.wal: Wal | None = None
        self.ledger: list[Commit] = []
        self.state: ConsensusState | None = None
        self.up = False
        self.incarnation = 0
        self.armed: Crash | None = None

    # ------------------------------------------------------------------ lifecycle

    def boot(self) -> None:
        self.wal = Wal(self.storage)
        self.w.count("torn_bytes_cut", self.wal.torn_bytes)
        entries = [] if self.w.opts.mutation == "no-wal" else self.wal.recovered
        if self.w.opts.mutation == "no-pol":  # the WAL as it was before it kept the POL
            entries = [ValidValue(e.round, e.proposal) if isinstance(e, ValidValue) else e
                       for e in entries]
        self.up = True
        self.incarnation += 1
        self.state, effects = start(self.ctx, len(self.ledger) + 1, entries)
        self.execute(effects)

    def crash(self) -> None:
        if self.state is not None:
            self.w.absorb_stats(self.state)
        self.up, self.state, self.wal, self.armed = False, None, None, None

    # ------------------------------------------------------------------ inputs

    def handle(self, event: Event) -> None:
        if self.state is None:
            return
        self.state, effects = step(self.state, event)
        self.execute(effects)

    def deliver(self, payload: object) -> None:
        if not self.up:
            return
        if isinstance(payload, Vote):
            self.handle(VoteReceived(payload))
        elif isinstance(payload, Proposal):
            self.handle(ProposalReceived(payload))
        elif isinstance(payload, SyncRequest):
            self.answer_sync(payload)
        elif isinstance(payload, SyncResponse):
            self.handle(CommittedBlockFromSync(payload.height, payload.value, payload.certificate))

    def answer_sync(self, req: SyncRequest) -> None:
        if req.height <= len(self.ledger):
            c = self.ledger[req.height - 1]
            self.w.send(self.idx, req.requester, SyncResponse(c.height, c.value, c.certificate))

    def gossip(self) -> None:
        if self.up and self.state is not None:
            for m in to_gossip(self.state):
                self.broadcast(m)

    def sync_poll(self) -> None:
        if self.up:
            peer = self.w.rng.randrange(self.w.n - 1)
            peer += peer >= self.idx  # any node but ourselves
            self.w.send(self.idx, peer, SyncRequest(self.idx, len(self.ledger) + 1))

    def app_value(self, height: int) -> bytes:
        return app.make_value(height, self.w.rng)

    # ------------------------------------------------------------------ effects

    def broadcast(self, msg: Message) -> None:
        w = self.w
        w.checker.on_send(self.idx, msg, w.now)
        w.remember(msg)
        for dst in range(w.n):
            if dst != self.idx:
                w.send(self.idx, dst, msg)

    def execute(self, effects: list[Effect]) -> None:
        w = self.w
        for eff in effects:
            if not self.up:
                return  # crashed half-way through: the rest never happened
            if isinstance(eff, PersistWal):
                assert self.wal is not None
                entry = eff.entry
                if self.armed is not None and isinstance(entry, Proposal | Vote):
                    self._crash_while_persisting(entry, self.armed)
                    return
                self.wal.append(entry)
            elif isinstance(eff, Broadcast):
                self.broadcast(eff.message)
            elif isinstance(eff, ScheduleTimeout):
                ev = TimeoutFired(eff.height, eff.round, eff.step)
                w.push(w.now + eff.duration_ms, TIMER, self.idx, (self.incarnation, ev))
            elif isinstance(eff, Commit):
                assert self.wal is not None
                w.checker.on_commit(self.idx, eff, len(self.ledger), w.now)
                self.ledger.append(eff)
                self.wal.compact(eff.height + 1)  # the block is durable: its WAL is not needed
            elif isinstance(eff, RequestValue):
                ev2 = ValueReady(eff.height, eff.round, self.app_value(eff.height))
                w.push(w.now + w.rng.randint(0, 30), VALUE, self.idx, (self.incarnation, ev2))
            elif isinstance(eff, Evidence):
                w.count("evidence", 1)
                w.checker.on_evidence(self.idx, eff.misbehaviour, w.now)

    def _crash_while_persisting(self, entry: Proposal | Vote, crash: Crash) -> None:
        if crash.mode == "torn":
            record = frame(codec.encode(entry))
            self.storage.append_torn(record, self.w.rng.randrange(len(record)))
            self.w.count("crash_torn_write", 1)
        else:
            assert self.wal is not None
            self.wal.append(entry)
            self.w.count("crash_after_persist", 1)
        self.w.crash(self, crash)
