"""A restarted validator keeps the POL of its lock, so the others can still decide.

Found by the chaos test on real processes (tests/test_faults_chaos.py, seed 9): with one
validator cut off and the other three up and linked for 15 s, no height committed. The
schedule below replays what happened, on the pure core with four validators, one
height:

1. Round 0: v0 proposes B; v1 never sees the proposal. v0's prevote for B reaches v2
   alone. v2 sees the polka (v0, v2, v3) and locks on B; v1 and v3 do not (they lack
   v0's prevote), so round 0 ends without a decision.
2. v0 goes silent for good (cut off: f = 1). v2 crashes and restarts from its WAL.
3. v1, v2, v3 talk with no loss and timely timeouts.

v2 is locked on B: it prevotes nil for any new value. v1 and v3 accept B again (L28)
only with the round-0 POL, and v0's prevote in it exists only in v2's memory - which
the restart wiped unless the WAL kept it. So the three must decide when the WAL keeps
the POL (``ValidValue.prevotes``), and cannot when it does not: the second test strips
the POL on restart, as the WAL was before, and shows the same schedule then never
decides, which is what makes this a test of the fix and not of the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from certificates.hashing import sm3
from node.consensus import (
    Broadcast,
    Commit,
    ConsensusState,
    Context,
    Effect,
    Event,
    Message,
    PersistWal,
    Proposal,
    ProposalReceived,
    RequestValue,
    ScheduleTimeout,
    TimeoutFired,
    ValidValue,
    ValueReady,
    VoteReceived,
    codec,
    start,
    step,
)
from node.consensus.gossip import to_gossip
from node.consensus.signing import FakeVerifier
from node.consensus.wal import MemoryStorage, Wal, frame
from tests.sim import app
from tests.sim.script import SIGNERS, TIMEOUTS, VS, value

H = 4  # the round-r proposer at height 4 is v(4 + r) % 4: v0 in round 0
QUIET = 0  # v0: cut off after round 0
RESTARTED = 2  # v2: holds the only copy of v0's prevote, then restarts
MAX_ROUND = 12


def context(i: int) -> Context:
    return Context(app.CHAIN_ID, SIGNERS[i], FakeVerifier(), lambda h: VS, app.is_valid, sm3,
                   TIMEOUTS)


@dataclass
class Node:
    i: int
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    outbox: list[Message] = field(default_factory=list)
    timers: list[TimeoutFired] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    state: ConsensusState | None = None

    def boot(self, strip_pol: bool = False) -> None:
        entries = Wal(self.storage).recovered
        if strip_pol:  # the WAL as it was before it kept the POL
            entries = [ValidValue(e.round, e.proposal) if isinstance(e, ValidValue) else e
                       for e in entries]
        self.outbox, self.timers = [], []
        self.state, effects = start(context(self.i), H, entries)
        self.run(effects)

    def feed(self, event: Event) -> None:
        assert self.state is not None
        self.state, effects = step(self.state, event)
        self.run(effects)

    def run(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, PersistWal):
                self.storage.append(frame(codec.encode(e.entry)))
            elif isinstance(e, Broadcast):
                self.outbox.append(e.message)
            elif isinstance(e, ScheduleTimeout):
                self.timers.append(TimeoutFired(e.height, e.round, e.step))
            elif isinstance(e, RequestValue):
                self.feed(ValueReady(e.height, e.round, value(e.height, b"v%d" % self.i)))
            elif isinstance(e, Commit):
                self.commits.append(e)

    def receive(self, m: Message) -> None:
        self.feed(ProposalReceived(m) if isinstance(m, Proposal) else VoteReceived(m))

    def fire_next_timer(self) -> bool:
        """Fire the earliest pending timeout of the current round or later (older ones
        are stale and would do nothing); False if there is none."""
        assert self.state is not None
        live = [t for t in self.timers if t.round >= self.state.round]
        if not live:
            return False
        t = min(live, key=lambda t: (t.round, t.step))
        self.timers.remove(t)
        self.feed(t)
        return True


def _round0(nodes: list[Node]) -> None:
    """Step 1 of the module docstring, message by message."""
    v0, v1, v2, v3 = nodes
    proposal, v0_prevote = v0.outbox[:2]  # v0 proposed B and prevoted it
    assert isinstance(proposal, Proposal) and proposal.round == 0
    v0.outbox.clear()
    v2.receive(proposal)
    v3.receive(proposal)
    v1.fire_next_timer()  # no proposal: v1 prevotes nil
    v2.receive(v0_prevote)  # ... and reaches v2 only
    for _ in range(3):  # every other round-0 message reaches everyone
        for src in (v1, v2, v3, v0):
            msgs, src.outbox = src.outbox, []
            for m in msgs:
                for dst in nodes:
                    if dst is not src:
                        dst.receive(m)
        for n in (v1, v3):
            n.fire_next_timer()  # L34 timeout prevote: precommit nil
    assert v2.state is not None and v2.state.locked_round == 0
    assert v1.state is not None and v1.state.locked_round == -1
    assert v3.state is not None and v3.state.locked_round == -1
    assert not any(n.commits for n in nodes), "round 0 must end undecided"


def play(strip_pol: bool) -> tuple[int | None, list[Node]]:
    """The whole schedule; returns the round v1, v2, v3 decided in, or None when they
    did not within ``MAX_ROUND`` rounds or came to a halt with no timeout left to fire."""
    nodes = [Node(i) for i in range(4)]
    for n in nodes:
        n.boot()
    _round0(nodes)
    live = [n for n in nodes if n.i != QUIET]
    nodes[RESTARTED].boot(strip_pol=strip_pol)  # crash: everything in memory is gone
    for _ in range(10 * MAX_ROUND):  # each pass fires a timeout, so this bounds the run
        # A timely network: everything sent (and the gossip) arrives before any timeout.
        for _ in range(4):
            for src in live:
                assert src.state is not None
                msgs, src.outbox = src.outbox + to_gossip(src.state), []
                for m in msgs:
                    for dst in live:
                        if dst is not src:
                            dst.receive(m)
        decided = [n.commits[0] for n in live if n.commits]
        if len(decided) == len(live):
            assert len({c.value for c in decided}) == 1
            return decided[0].round, nodes
        if min(n.state.round for n in live if n.state is not None) > MAX_ROUND:
            return None, nodes
        fired = [n.fire_next_timer() for n in live]  # every node's, not just the first's
        if not any(fired):
            return None, nodes  # nothing left to happen: halted for good
    raise AssertionError("the schedule neither decided nor halted")


def test_three_linked_validators_decide_after_the_locked_one_restarts() -> None:
    decided_round, nodes = play(strip_pol=False)
    assert decided_round is not None, [n.state.snapshot() for n in nodes if n.state]
    assert decided_round <= 3  # by v2's own round as proposer at the latest


def test_without_the_pol_in_the_wal_the_same_schedule_never_decides() -> None:
    decided_round, nodes = play(strip_pol=True)
    assert decided_round is None
    # v2, still locked on B, re-proposes it in round 2 with pol_round 0, but no one -
    # not even v2 - holds that POL any more: nobody can prevote it, and all three wait.
    v2 = nodes[RESTARTED].state
    assert v2 is not None and v2.locked_round == 0
    assert all(n.commits == [] for n in nodes)
