"""The consensus thread: owns the state machine, feeds it events, runs its effects in order.

Everything else (HTTP handlers, the peer inbox, timers, block sync, the mempool)
only puts items on this thread's ``queue.Queue``; nothing but this thread touches
the ``ConsensusState`` or stages blocks in the chain. One loop iteration takes one
item: a consensus event goes through ``core.step`` and the returned effects run in
order before the next item, exactly as ``tests/sim/node.py`` drives the core:

* ``PersistWal``: appended to the WAL and fsync'd. Broadcasts are collected and sent
  after the effects that precede them, so a message never leaves before the WAL
  entry recording it is durable (the core emits PersistWal before Broadcast).
* ``Broadcast``: sealed in signed envelopes, one per batch (``node.peers.Outbox``).
  Every gossip tick re-sends our recent votes to all peers, but a proposal (with its
  block) only to peers that may lack it (``node.resend``).
* ``ScheduleTimeout``: a timer that later puts ``TimeoutFired`` on the queue.
* ``RequestValue``: build a block from the mempool - at once if it holds txs or the
  round is not the height's first, else after ``empty_block_interval_ms`` or as soon
  as a tx arrives - then ``ValueReady``.
* **An idle chain waits for transactions** (Tendermint's
  ``create_empty_blocks_interval``, which holds every validator, not only the
  proposer): a height's first propose timeout, scheduled while our mempool is
  empty, is pushed back by ``empty_block_interval_ms`` and started for real as
  soon as a tx arrives here. So an idle network makes one empty block per
  interval instead of one per second, and no validator times out on a proposer
  that is only waiting for transactions - the interval may exceed the propose
  timeout. The late timer, if it still fires, finds the step moved on and is
  ignored by the core (Alg.1 L57 needs step = propose).
* ``Commit``: ``Chain.commit_block`` (one synced batch), WAL compaction, mempool
  update; only then do the effects after it (the next height's votes) run.
* ``Evidence``: counted, and handed to ``on_evidence`` (the runtime keeps it on disk
  and serves it, ``node.evidence``).

Proposals for the *next* height are held here, not given to the core, until our
commit of the current height has run: the core would otherwise judge them (and
cache the verdict) while the chain still lacks their parent block.

A failure inside the loop is a bug or a broken disk: the loop stops and tells the
runtime (``on_fatal``), which shuts the node down with a non-zero exit status.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ledger.state import BlockContext
from node.clock import Clock
from node.config import NodeConfig
from node.consensus import core, gossip, restore
from node.consensus.context import Context
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
from node.consensus.messages import Message, Misbehaviour, Proposal, Step
from node.consensus.state import ConsensusState
from node.consensus.wal import Wal
from node.ledger_app import LedgerApp
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.peers import Outbox
from node.resend import ProposalResends
from node.timers import Timers

log = logging.getLogger("certledger.consensus")

#: Bound on messages waiting in the queue from peers; beyond it they are dropped
#: (gossip re-sends what matters). Internal items (timeouts) are never dropped.
PEER_QUEUE_LIMIT = 10_000
HELD_ROUNDS = 4  # next-height proposals beyond round 3 are not held (gossip re-sends them)
HELD_LIMIT = 8
_BLOCK_OVERHEAD = 1024  # header and framing, kept free when reaping txs for a block


@dataclass(frozen=True)
class BuildValue:
    height: int
    round: int


@dataclass(frozen=True)
class GossipTick:
    pass


@dataclass(frozen=True)
class TxsAvailable:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Snapshot:
    """What the API shows of consensus; replaced (never mutated) after every item."""

    height: int = 0
    round: int = 0
    step: str = "propose"
    stats: dict[str, int] = field(default_factory=dict)
    evidence: int = 0
    running: bool = False


class ConsensusLoop:
    def __init__(self, ctx: Context, app: LedgerApp, wal: Wal, outbox: Outbox,
                 mempool: Mempool, metrics: NodeMetrics, clock: Clock, cfg: NodeConfig, *,
                 on_fatal: Callable[[BaseException], None],
                 on_future: Callable[[], None] = lambda: None,
                 on_commit: Callable[[int], None] = lambda h: None,
                 on_evidence: Callable[[Misbehaviour], None] = lambda m: None) -> None:
        self.ctx, self.app, self.wal, self.outbox = ctx, app, wal, outbox
        self.mempool, self.metrics, self.clock, self.cfg = mempool, metrics, clock, cfg
        self._on_fatal, self._on_future, self._on_commit = on_fatal, on_future, on_commit
        self._on_evidence = on_evidence
        self.queue: queue.Queue[Any] = queue.Queue()
        self.timers = Timers(clock, self.queue.put)
        self.state: ConsensusState | None = None
        self.snapshot = Snapshot()
        self._held: dict[tuple[int, bytes], Proposal] = {}
        self._immediate: deque[Any] = deque()
        self._want: tuple[int, int] | None = None  # (height, round) we must propose for
        self._signalled = threading.Event()
        #: Our round-0 propose timeout held back while the mempool is empty, with its
        #: own duration: started when a tx arrives (see the module header).
        self._deferred: tuple[TimeoutFired, float] | None = None
        self._last_commit_at: float | None = None
        self._source = "consensus"
        gossip_s = cfg.consensus.gossip_interval_ms / 1000
        self._resends = ProposalResends(cfg.peers, base_s=2 * gossip_s, cap_s=16 * gossip_s)
        self._thread = threading.Thread(target=self._run, name="consensus", daemon=True)
        mempool.on_new_tx(self._tx_arrived)

    # ------------------------------------------------------------------ other threads

    def offer(self, event: Event) -> bool:
        """Queue a peer's message unless the queue is flooded (then it is dropped)."""
        if self.queue.qsize() >= PEER_QUEUE_LIMIT:
            self.metrics.dropped.inc(1, "queue_full")
            return False
        self.queue.put(event)
        return True

    def offer_messages(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.offer(ProposalReceived(m) if isinstance(m, Proposal) else VoteReceived(m))

    def _tx_arrived(self) -> None:
        waiting = self._want is not None or self._deferred is not None
        if waiting and not self._signalled.is_set():
            self._signalled.set()
            self.queue.put(TxsAvailable())

    def start(self) -> None:
        self.timers.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        self.queue.put(Stop())
        self._thread.join(timeout)
        self.timers.stop()
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def boot(self) -> None:
        """Start (or resume from the WAL) the height after the chain's head."""
        head = self.app.chain.head_height
        self.state, effects = restore.start(self.ctx, head + 1, self.wal.recovered)
        log.info("consensus started at height %d round %d (%d WAL entries)",
                 self.state.height, self.state.round, len(self.wal.recovered))
        self._execute(effects)
        self._publish(running=True)
        self.timers.schedule(self.cfg.consensus.gossip_interval_ms / 1000, GossipTick())

    def handle(self, item: Any) -> None:
        """One queue item, then its follow-ups (our value, released proposals)."""
        self._handle(item)
        while self._immediate:
            self._handle(self._immediate.popleft())
        self._publish(running=True)

    def _run(self) -> None:
        try:
            self.boot()
            while not isinstance(item := self.queue.get(), Stop):
                self.handle(item)
        except BaseException as exc:
            log.exception("consensus thread failed; stopping the node")
            self._publish(running=False)
            self._on_fatal(exc)
            return
        self._publish(running=False)

    def _handle(self, item: Any) -> None:
        if isinstance(item, BuildValue):
            if self._want == (item.height, item.round):
                self._build()
        elif isinstance(item, TxsAvailable):
            self._signalled.clear()
            self._start_deferred()
            if self._want is not None:
                self._build()
        elif isinstance(item, GossipTick):
            self._gossip()
            self.timers.schedule(self.cfg.consensus.gossip_interval_ms / 1000, GossipTick())
        else:
            self._step(item)

    def _step(self, event: Event) -> None:
        s = self.state
        assert s is not None
        if isinstance(event, ProposalReceived | VoteReceived):
            m = event.proposal if isinstance(event, ProposalReceived) else event.vote
            if m.height > s.height + 1:
                self._on_future()  # peers are ahead: fetch the blocks we missed
            elif isinstance(m, Proposal) and m.height == s.height + 1:
                self._hold(m)
                return
        before = s.height
        sync = isinstance(event, CommittedBlockFromSync)
        self._source = "sync" if sync else "consensus"
        self.app.check_time = not sync  # a committed block's time was judged by 2f+1
        try:
            self.state, effects = core.step(s, event)
            self._execute(effects)
        finally:
            self.app.check_time = True
        if self.state.height != before:
            held, self._held = self._held, {}
            self._immediate.extend(ProposalReceived(p) for p in held.values()
                                   if p.height == self.state.height)

    def _hold(self, p: Proposal) -> None:
        """Keep a next-height proposal until our commit has run (see the module header).

        Bounded: only the designated proposer of an early round, a few candidates each
        (the signature is unchecked until the core sees it, so a forger could otherwise
        take the slot of the real one). Anything dropped here is re-sent by gossip.
        """
        if p.round >= HELD_ROUNDS or len(self._held) >= HELD_LIMIT:
            self.metrics.dropped.inc(1, "held_full")
            return
        expected = self.app.validators_for(p.height).proposer(p.height, p.round).key_id
        if p.proposer != expected:
            self.metrics.dropped.inc(1, "consensus_wrong_proposer")
            return
        if self.app.value_id_of(p.value) != p.value_id:
            # A value changed on the way (its signature does not cover it) must not take
            # the slot the real proposal, re-sent, would need.
            self.metrics.dropped.inc(1, "held_malformed")
            return
        self._held.setdefault((p.round, p.value_id), p)

    def _gossip(self) -> None:
        """Re-send votes to everyone; a proposal only to peers that may lack it
        (``node.resend``: once per peer per round, then on evidence and back-off)."""
        s = self.state
        assert s is not None
        msgs = gossip.to_gossip(s)
        votes = [m for m in msgs if not isinstance(m, Proposal)]
        if votes:
            self.outbox.broadcast_messages(votes)
        self._resends.forget_below(s.height)
        now = self.clock.monotonic()
        peer_of = {v.key_id: v.name for v in s.validators.validators if v.name in self.cfg.peers}
        groups: dict[tuple[str, ...], list[Message]] = {}
        for p in msgs:
            if isinstance(p, Proposal):
                due = self._resends.due(s, p, peer_of, now)
                if due:
                    groups.setdefault(tuple(due), []).append(p)
        for peers, props in groups.items():
            self.metrics.proposal_resends.inc(len(peers) * len(props))
            self.outbox.broadcast_messages(props, to=peers)

    # ------------------------------------------------------------------ effects

    def _execute(self, effects: list[Effect]) -> None:
        out: list[Message] = []
        for eff in effects:
            if isinstance(eff, PersistWal):
                self.wal.append(eff.entry)  # fsync'd before anything after it runs
            elif isinstance(eff, Broadcast):
                out.append(eff.message)
            elif isinstance(eff, ScheduleTimeout):
                self._schedule_timeout(eff)
            elif isinstance(eff, Commit):
                self._flush(out)
                self._commit(eff)
            elif isinstance(eff, RequestValue):
                self._request_value(eff)
            elif isinstance(eff, Evidence):
                self.metrics.evidence.inc()
                self._on_evidence(eff.misbehaviour)
        self._flush(out)

    def _flush(self, out: list[Message]) -> None:
        if out:
            self.outbox.broadcast_messages(out)
            now = self.clock.monotonic()
            for m in out:
                if isinstance(m, Proposal):
                    self._resends.sent_to_all(m, now)
            out.clear()

    def _schedule_timeout(self, eff: ScheduleTimeout) -> None:
        fired = TimeoutFired(eff.height, eff.round, eff.step)
        delay = eff.duration_ms / 1000
        if eff.step is Step.PROPOSE and eff.round == 0:
            # Flag first, then look: a tx admitted in between sees the flag and signals.
            self._deferred = (fired, delay)
            if not len(self.mempool):
                idle = self.cfg.consensus.empty_block_interval_ms / 1000
                self.timers.schedule(idle + delay, fired)  # no tx came: the backstop
                return
            self._deferred = None
        self.timers.schedule(delay, fired)

    def _start_deferred(self) -> None:
        """A tx arrived: run the held-back propose timeout from now, if still current."""
        held, self._deferred = self._deferred, None
        s = self.state
        if held is None or s is None:
            return
        fired, delay = held
        if (fired.height, fired.round) == (s.height, s.round) and s.step is Step.PROPOSE:
            self.timers.schedule(delay, fired)

    def _request_value(self, eff: RequestValue) -> None:
        self._want = (eff.height, eff.round)
        # Waiting for transactions is for round 0 only (as Tendermint's
        # create_empty_blocks_interval): a later round means the earlier ones failed, and
        # waiting would only add to the time the height is stuck (a dead proposer).
        if len(self.mempool) or eff.round > 0:
            self._immediate.append(BuildValue(eff.height, eff.round))
        else:
            delay = self.cfg.consensus.empty_block_interval_ms / 1000
            self.timers.schedule(delay, BuildValue(eff.height, eff.round))

    def _build(self) -> None:
        s, want = self.state, self._want
        assert s is not None
        self._want = None
        if want != (s.height, s.round) or s.step is not Step.PROPOSE:
            return  # the round moved on while we waited for transactions
        limits = self.cfg.block
        txs = self.mempool.reap(limits.max_txs, limits.max_bytes - _BLOCK_OVERHEAD)
        key_id = self.ctx.key_id
        assert key_id is not None
        value, dropped = self.app.build(s.height, s.round, txs, key_id)
        if dropped:
            self.mempool.remove(dropped)
            self.metrics.rejected_txs.inc(len(dropped), "no_longer_applies")
        self._immediate.append(ValueReady(s.height, s.round, value))

    def _commit(self, eff: Commit) -> None:
        block, written = self.app.commit(eff.value, eff.certificate)
        self.wal.compact(eff.height + 1)  # the block is durable: its WAL entries are not needed
        now = self.clock.monotonic()
        ctx = BlockContext(self.ctx.chain_id, eff.height + 1, self.clock.time_ms())
        admitted, dropped = self.mempool.update(block.tx_ids, ctx, written)
        m = self.metrics
        m.committed_blocks.inc(1, self._source)
        m.committed_txs.inc(len(block.txs))
        for at in admitted.values():
            m.commit_latency.observe(now - at)
        if self._last_commit_at is not None:
            m.block_time.observe(now - self._last_commit_at)
        self._last_commit_at = now
        for reason in dropped.values():
            m.rejected_txs.inc(1, reason)
        log.info("committed block", extra={"fields": {
            "height": eff.height, "round": eff.round, "hash": block.hash.hex(),
            "txs": len(block.txs), "source": self._source, "dropped": len(dropped)}})
        self._on_commit(eff.height)

    def _publish(self, *, running: bool) -> None:
        s = self.state
        if s is None:
            self.snapshot = Snapshot(running=running)
            return
        self.snapshot = Snapshot(s.height, s.round, s.step.name.lower(), asdict(s.stats),
                                 len(s.evidence), running)
