"""The simulated world: a virtual clock, a seeded network, nodes, a checker.

Everything that happens is an entry ``(time, seq, kind, node, data)`` in one
heap; the run pops them in order and the clock jumps to each entry's time -
no real time passes, and ties are broken by insertion order, so a run is a
pure function of its seed. All randomness (the fault plan, delays, drops,
blocks, Byzantine choices) comes from one ``random.Random(seed)``, and no code
iterates over a set or hashes a str where the order could leak into a choice.

The network, before GST: a message is dropped if a partition separates its
ends or with probability ``drop``, else delivered after a uniform random delay
(so messages overtake each other), and sometimes delivered twice. After GST:
no loss, delays of at most 50 ms.

The run ends when every honest node has committed ``heights_after_gst``
heights beyond the highest height any honest node had at GST (success), at the
first safety violation, or when the liveness budget of virtual time after
GST runs out (a liveness violation).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from node.consensus.context import Context, Timeouts
from node.consensus.messages import Message
from node.consensus.state import ConsensusState
from tests.sim import app
from tests.sim.byzantine import ByzantineNode
from tests.sim.checker import Checker, Violation
from tests.sim.faults import Crash, FaultPlan
from tests.sim.node import TIMER, VALUE, SimNode

DELIVER, GOSSIP, SYNC, CRASH, ARM, RESTART, GST, STOP = 0, 3, 4, 5, 6, 7, 8, 9
GOSSIP_MS, SYNC_MS = 300, 600
TIMEOUTS = Timeouts(400, 100, 200, 100, 200, 100)
MUTATIONS = ("no-locking", "quorum-2f", "no-wal", "no-pol")
HISTORY = 4000  # messages kept for replay attacks


@dataclass(frozen=True)
class SimOptions:
    validators: int = 4
    byzantine: int = 1
    profile: str = "mixed"
    mutation: str | None = None
    crypto: str = "fake"
    heights_after_gst: int = 2
    max_events: int = 2_000_000

    def replay_command(self, seed: int) -> str:
        cmd = f"python -m tests.sim --validators {self.validators} --byzantine {self.byzantine}"
        if self.profile != "mixed":
            cmd += f" --profile {self.profile}"
        if self.mutation:
            cmd += f" --mutation {self.mutation}"
        if self.crypto != "fake":
            cmd += f" --crypto {self.crypto}"
        if self.heights_after_gst != 2:
            cmd += f" --heights {self.heights_after_gst}"
        return cmd + f" --seed {seed}"


@dataclass
class Result:
    seed: int
    options: SimOptions
    plan: FaultPlan
    violations: list[Violation]
    time_ms: int
    events: int
    heights: int  # lowest committed height among honest nodes at the end
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def replay(self) -> str:
        return self.options.replay_command(self.seed)

    def report(self) -> str:
        lines = [f"seed {self.seed} FAILED: replay with: {self.replay}", self.plan.describe()]
        return "\n".join(lines + [f"  {v}" for v in self.violations[:10]])


class World:
    def __init__(self, seed: int, opts: SimOptions) -> None:
        self.seed, self.opts = seed, opts
        self.rng = random.Random(seed)
        n = self.n = opts.validators
        self.plan = FaultPlan.generate(self.rng, n, opts.byzantine, profile=opts.profile,
                                       heights_after_gst=opts.heights_after_gst)
        self.validators = app.validator_set(n)
        byz = self.plan.behaviours
        self.honest = frozenset(i for i in range(n) if i not in byz)
        self.checker = Checker(self.validators, self.honest, app.verifier(opts.crypto),
                               crypto=opts.crypto)
        self.nodes: list[SimNode] = []
        for i in range(n):
            if i in byz:
                ctx = self._context(i, no_lock="no_lock" in byz[i], quorum_2f=False)
                self.nodes.append(ByzantineNode(self, i, ctx, byz[i]))
            else:
                ctx = self._context(i, no_lock=opts.mutation == "no-locking",
                                    quorum_2f=opts.mutation == "quorum-2f")
                self.nodes.append(SimNode(self, i, ctx))
        self.now = 0
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self.history: list[Message] = []
        self._keep_history = any("replay" in b for b in byz.values())
        self.counters: dict[str, int] = {}

    def _context(self, i: int, *, no_lock: bool, quorum_2f: bool) -> Context:
        vs = self.validators
        return Context(app.CHAIN_ID, app.signer(self.n, i, self.opts.crypto),
                       app.verifier(self.opts.crypto), lambda h: vs, app.is_valid,
                       app.value_id_of, TIMEOUTS, unsafe_no_locking=no_lock,
                       unsafe_quorum_2f=quorum_2f)

    # ------------------------------------------------------------------ services for nodes

    def push(self, t: int, kind: int, node: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, kind, node, data))

    def count(self, name: str, k: int) -> None:
        if k:
            self.counters[name] = self.counters.get(name, 0) + k

    def remember(self, msg: Message) -> None:
        if self._keep_history:
            self.history.append(msg)
            if len(self.history) > HISTORY:
                del self.history[: HISTORY // 2]

    def absorb_stats(self, s: ConsensusState) -> None:
        st = s.stats
        self.count("dropped_bad_signature", st.bad_signature)
        self.count("dropped_old_height", st.old_height)
        self.count("rejected_sync", st.bad_sync)
        self.count("guard_refused", st.guard_refused)

    def send(self, src: int, dst: int, payload: Any) -> None:
        if src == dst:
            return
        p, rng, now = self.plan, self.rng, self.now
        self.counters["sent"] = self.counters.get("sent", 0) + 1
        if now < p.gst_ms:
            if any(part.separates(now, src, dst) for part in p.partitions) or (
                p.drop and rng.random() < p.drop
            ):
                return
            lo, hi = p.delay_ms
        else:
            lo, hi = p.post_gst_delay_ms
        self.push(now + rng.randint(lo, hi), DELIVER, dst, payload)
        if p.duplicate and now < p.gst_ms and rng.random() < p.duplicate:
            self.push(now + rng.randint(lo, 2 * hi), DELIVER, dst, payload)

    def crash(self, node: SimNode, c: Crash) -> None:
        node.crash()
        self.count("crashes", 1)
        self.push(min(self.now + c.down_ms, max(self.plan.gst_ms, self.now + 1)), RESTART,
                  node.idx, None)

    # ------------------------------------------------------------------ the run

    def run(self) -> Result:
        p, nodes, honest = self.plan, self.nodes, sorted(self.honest)
        for node in nodes:
            node.boot()
            self.push(self.rng.randint(1, GOSSIP_MS), GOSSIP, node.idx, None)
            self.push(self.rng.randint(1, SYNC_MS), SYNC, node.idx, None)
        for c in p.crashes:
            self.push(c.at_ms, CRASH if c.mode == "now" else ARM, c.node, c)
        for node in nodes:
            if isinstance(node, ByzantineNode) and "stops" in node.behaviours:
                # Any time up to GST: what it sent until then reached only whom it reached.
                self.push(self.rng.randint(0, p.gst_ms), STOP, node.idx, None)
        self.push(p.gst_ms, GST, -1, None)
        target = deadline = -1
        events = 0
        checker = self.checker
        while self._queue:
            t, _, kind, idx, data = heapq.heappop(self._queue)
            self.now = t
            events += 1
            if kind == DELIVER:
                nodes[idx].deliver(data)
            elif kind in (TIMER, VALUE):
                node = nodes[idx]
                if node.up and node.incarnation == data[0]:
                    node.handle(data[1])
            elif kind == GOSSIP:
                nodes[idx].gossip()
                self.push(t + GOSSIP_MS + self.rng.randint(0, 100), GOSSIP, idx, None)
            elif kind == SYNC:
                nodes[idx].sync_poll()
                self.push(t + SYNC_MS + self.rng.randint(0, 200), SYNC, idx, None)
            elif kind == CRASH:
                if nodes[idx].up:
                    self.crash(nodes[idx], data)
            elif kind == ARM:
                if nodes[idx].up:
                    nodes[idx].armed = data
            elif kind == RESTART:
                self.count("restarts", 1)
                nodes[idx].boot()
            elif kind == STOP:
                nodes[idx].crash()  # for good: no restart is scheduled
                self.count("stopped", 1)
            elif kind == GST:
                for node in nodes:
                    node.armed = None
                target = max(len(nodes[i].ledger) for i in honest) + p.heights_after_gst
                deadline = t + p.liveness_budget_ms
            if checker.stopped:
                break
            if target >= 0 and all(len(nodes[i].ledger) >= target for i in honest):
                break
            if 0 <= deadline < t:
                self._liveness_failure(target)
                break
            if events >= self.opts.max_events:
                checker.violations.append(Violation("liveness", t, "event budget exhausted"))
                break
        for node in nodes:
            if node.state is not None:
                self.absorb_stats(node.state)
        return Result(self.seed, self.opts, p, checker.violations, self.now, events,
                      min(len(nodes[i].ledger) for i in honest), self.counters)

    def _liveness_failure(self, target: int) -> None:
        lag = {i: len(self.nodes[i].ledger) for i in sorted(self.honest)}
        self.checker.violations.append(Violation(
            "liveness", self.now, f"after GST honest nodes did not all reach height {target} "
            f"within {self.plan.liveness_budget_ms}ms: committed heights {lag}"))


def run_seed(seed: int, opts: SimOptions) -> Result:
    return World(seed, opts).run()
