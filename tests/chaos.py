"""Randomised faults on a real cluster, and the checker that judges what clients saw.

How it works
------------
* ``History`` is the checker, a pure record of observations with no I/O, so its rules
  can be tested on made-up histories (tests/test_chaos_checker.py). It takes:

  - ``block(node, height, hash)``: a node served this block (read through its sync
    endpoint while faults ran). Two hashes at one height, from any nodes at any times,
    is **divergence**;
  - ``height(node, h)``: a node reported this committed height. A node that later
    reports a lower one (after a SIGKILL and restart, say) **lost committed blocks**;
  - ``told(tx_id, height, block_hash, node)``: a client was told the tx is committed
    there. Two different answers for one tx is a **contradiction**;
  - ``final(chains)``: every node's whole chain after healing. Every told tx must be at
    its told height, in the told block, on **every** node (**lost tx** otherwise), and
    the final chains are checked for divergence like any observation.

  - ``stalls(windows, commit_times, within)``: liveness. ``windows`` are the stretches
    the nemesis kept a quorum (2f+1 nodes) running and linked both ways with no lost
    bytes; ``commit_times`` is each height's first commit (wall clock, from the node
    logs). More than ``within`` seconds inside a window without a commit is a
    **stall**: safety alone would pass a cluster that never recovers from a fault until
    everything is repaired, or one that halts whenever a crashed node's turn to propose
    comes.

  ``violations`` lists what broke, one line each; the run asserts it is empty.
* ``Nemesis`` draws one fault at a time from an injected ``random.Random`` (so a seed
  replays a schedule): SIGKILL a node (at most ``max_down`` down at once, more than f
  so that halting and resuming is exercised too), SIGTERM one (it must exit 0), start
  a dead one, a partition into two random sides (refusing or blackholing), one-way
  cuts of random directed links, slow and lossy links (delay, dropped chunks), heal.
  ``calm`` heals everything and starts every node, then may kill or cut off one (f = 1
  faulty), and holds long enough for the liveness rule to apply. ``split`` starts every
  node and then splits them evenly (neither side a quorum) for ``split_s``: long enough
  for each side to decide a height of its own if quorums were too small, which a random
  partition, often uneven or with a node down on one side, does only by chance. Each
  kind comes once, in a random order, before the draws are free, and the run goes on
  past its time until all have come. ``log`` keeps what it did and when, for the
  failure message, and ``windows`` the stretches in which a quorum was up and linked
  (wall clock, so they compare with the commit times in the node logs).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations, pairwise

from network.proxy import CutMode
from tests.cluster import Cluster


@dataclass(frozen=True)
class Window:
    """From ``start`` to ``end`` (epoch s) ``quorum`` was running and linked both ways."""

    start: float
    end: float
    quorum: tuple[str, ...]


@dataclass
class History:
    blocks: dict[int, tuple[str, str]] = field(default_factory=dict)  # h -> (hash, node)
    top: dict[str, int] = field(default_factory=dict)  # node -> highest height reported
    answers: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # tx -> (h, hash, node)
    violations: list[str] = field(default_factory=list)

    def block(self, node: str, height: int, block_hash: str) -> None:
        seen = self.blocks.setdefault(height, (block_hash, node))
        if seen[0] != block_hash:
            self.violations.append(f"divergence at height {height}: {seen[1]} served "
                                   f"{seen[0][:16]}, {node} served {block_hash[:16]}")

    def height(self, node: str, h: int) -> None:
        before = self.top.get(node, 0)
        if h < before:
            self.violations.append(f"{node} lost committed blocks: it reported height "
                                   f"{before}, then {h}")
        self.top[node] = max(before, h)

    def told(self, tx_id: str, height: int, block_hash: str, node: str) -> None:
        seen = self.answers.setdefault(tx_id, (height, block_hash, node))
        if seen[:2] != (height, block_hash):
            self.violations.append(f"tx {tx_id[:16]}: {seen[2]} said committed at "
                                   f"{seen[0]} ({seen[1][:16]}), {node} at {height} "
                                   f"({block_hash[:16]})")

    def final(self, chains: dict[str, list[tuple[str, list[str]]]]) -> None:
        """``chains``: node -> its blocks from height 1, each (hash, [tx id hex])."""
        for node, blocks in chains.items():
            self.height(node, len(blocks))
            for h, (block_hash, _) in enumerate(blocks, start=1):
                self.block(node, h, block_hash)
        for tx_id, (h, block_hash, told_by) in sorted(self.answers.items()):
            for node, blocks in sorted(chains.items()):
                if h > len(blocks):
                    self.violations.append(f"lost tx {tx_id[:16]}: {told_by} told it "
                                           f"committed at {h}, {node} ends at {len(blocks)}")
                elif blocks[h - 1][0] != block_hash or tx_id not in blocks[h - 1][1]:
                    self.violations.append(f"lost tx {tx_id[:16]}: {told_by} told it "
                                           f"committed at {h} ({block_hash[:16]}), {node} "
                                           f"holds {blocks[h - 1][0][:16]} there without it")

    def stalls(self, windows: list[Window], commit_times: dict[int, float],
               within: float) -> list[float]:
        """Apply the liveness rule: inside a window, from its start to its end, no stretch
        longer than ``within`` passes without a commit. Returns each judged window's
        longest such stretch (for the run's report)."""
        longest = []
        times = sorted(commit_times.values())
        for w in windows:
            if w.end - w.start < within:
                continue  # too short to promise anything
            marks = [w.start, *(t for t in times if w.start < t <= w.end), w.end]
            gaps = [(b - a, a) for a, b in pairwise(marks)]
            gap, since = max(gaps)
            if gap > within:
                self.violations.append(
                    f"stall: {'+'.join(w.quorum)} were up and linked for "
                    f"{w.end - w.start:.1f} s, but no height committed for {gap:.1f} s "
                    f"(from {since - w.start:.1f} s into that), more than {within} s")
            longest.append(gap)
        return longest


@dataclass
class Nemesis:
    cluster: Cluster
    rng: random.Random
    max_down: int = 2
    #: how long ``calm`` holds: the liveness bound plus a margin
    calm_s: float = 15.0
    #: how long ``split`` holds: enough rounds of the tests' timeouts, from a high round, that
    #: each side of a wrongly small quorum has a proposer of its own in one of them
    split_s: float = 12.0
    t0: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    #: wall clock for the windows (epoch s, as the node logs stamp commits)
    clock: Callable[[], float] = time.time
    _open: tuple[float, tuple[str, ...]] | None = None
    #: exit codes of nodes stopped with SIGTERM (each should be 0)
    stop_codes: list[tuple[str, int]] = field(default_factory=list)
    owed: set[str] = field(default_factory=lambda: {
        "partition", "one_way", "flaky", "heal", "kill", "term", "start", "calm", "split"})

    @property
    def down(self) -> list[str]:
        return [n for n in self.cluster.names if n not in self.cluster.procs]

    def note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.1f}s {what}")

    def linked_quorum(self) -> tuple[str, ...]:
        """The largest set of running nodes, at least a quorum, whose links to each
        other all pass every byte (delay allowed); () when there is none."""
        c = self.cluster
        n = len(c.names)
        need = n - (n - 1) // 3

        def clean(a: str, b: str) -> bool:
            link = c.links[(a, b)]
            return link.cut_mode is None and link.drop == 0

        up = sorted(c.procs)
        for size in range(len(up), need - 1, -1):
            for group in combinations(up, size):
                if all(clean(a, b) for a in group for b in group if a != b):
                    return group
        return ()

    def _track(self, before: float) -> None:
        """Close the open window at ``before`` (the step's start) unless the same quorum
        is still linked; open one now if a quorum is (a new or changed quorum may owe a
        round timeout or a catch-up, so its clock starts afresh)."""
        q = self.linked_quorum()
        if self._open is not None and self._open[1] == q:
            return
        if self._open is not None:
            self.windows.append(Window(self._open[0], before, self._open[1]))
            self._open = None
        if q:
            self._open = (self.clock(), q)

    def close(self) -> None:
        """End the open window now (call when the run stops watching)."""
        now = self.clock()
        self._track(now)
        if self._open is not None:
            self.windows.append(Window(self._open[0], now, self._open[1]))
            self._open = None

    def step(self) -> float:
        """Apply one randomly drawn fault (or repair); returns how long to let it act.
        A partition is held longer (2-6 s, several rounds of the tests' timeouts), so
        both sides of a split get the time they would need to decide a height each if
        quorums were too small."""
        before = self.clock()
        try:
            return self._step()
        finally:
            self._track(before)

    def _step(self) -> float:
        c, rng = self.cluster, self.rng
        up, down = list(c.procs), self.down
        # Partitions are drawn most: a split is where a wrong quorum would show.
        choices = ["partition", "partition", "partition", "one_way", "flaky", "heal", "heal",
                   "calm", "split"]
        if len(down) < self.max_down:
            choices += ["kill", "kill", "term"]
        if down:
            choices += ["start", "start", "start"]
        # Every kind of fault once (in a random order) before any is drawn again, so a
        # short run still covers them all.
        owed = [op for op in dict.fromkeys(choices) if op in self.owed]
        op = rng.choice(owed or choices)
        self.owed.discard(op)
        if op == "kill":
            name = rng.choice(up)
            c.kill(name)
            self.note(f"SIGKILL {name}")
        elif op == "term":
            name = rng.choice(up)
            code = c.stop([name], timeout=15)[name]
            self.stop_codes.append((name, code))
            self.note(f"SIGTERM {name}: exit {code}")
        elif op == "start":
            name = rng.choice(down)
            c.restart(name, timeout=30)
            self.note(f"start {name}")
        elif op == "partition":
            names = list(c.names)
            rng.shuffle(names)
            # At least half the splits are even (2|2: neither side holds a quorum).
            cut = len(names) // 2 if rng.random() < 0.5 else rng.randint(1, len(names) - 1)
            mode: CutMode = rng.choice(["refuse", "blackhole"])
            self._heal_links()
            c.partition(names[:cut], names[cut:], mode=mode)
            self.note(f"partition {sorted(names[:cut])} | {sorted(names[cut:])} ({mode})")
            return rng.uniform(2.0, 6.0)
        elif op == "one_way":
            self._heal_links()
            links = rng.sample(sorted(c.links), rng.randint(1, 4))
            for link in links:
                c.links[link].cut(rng.choice(["refuse", "blackhole"]))
            self.note("one-way cuts " + ", ".join(f"{a}->{b}" for a, b in links))
        elif op == "flaky":
            self._heal_links()
            links = rng.sample(sorted(c.links), rng.randint(2, len(c.links)))
            # Slow, lossy or both: never neither (that draw would be a heal in disguise).
            delay, drop = rng.choice([(0, 0.05), (0, 0.2), (20, 0.0), (80, 0.0), (200, 0.0),
                                      (20, 0.05), (80, 0.2), (200, 0.05)])
            for link in links:
                c.links[link].delay_ms, c.links[link].drop = delay, drop
            self.note(f"{len(links)} links slow {delay} ms, lossy {drop}")
        elif op == "split":
            # Every node running, so both sides hold as many voters as they can.
            self._calm()
            names = list(c.names)
            rng.shuffle(names)
            half = len(names) // 2
            mode = rng.choice(["refuse", "blackhole"])
            c.partition(names[:half], names[half:], mode=mode)
            self.note(f"split {sorted(names[:half])} | {sorted(names[half:])} ({mode}) "
                      f"for {self.split_s} s")
            return self.split_s
        elif op == "calm":
            # Liveness is promised with up to f nodes faulty, not only with none.
            self._calm()
            odd, how = rng.choice(c.names), rng.choice(["none", "down", "cut off"])
            if how == "down":
                c.kill(odd)
            elif how == "cut off":
                c.partition([odd], [n for n in c.names if n != odd], mode="blackhole")
            self.note(f"calm for {self.calm_s} s" + ("" if how == "none" else
                                                      f", {odd} {how}"))
            return self.calm_s
        else:
            self._heal_links()
            self.note("heal")
        return rng.uniform(0.5, 2.5)

    def _heal_links(self) -> None:
        for proxy in self.cluster.links.values():
            proxy.delay_ms, proxy.drop = 0.0, 0.0
        self.cluster.heal()

    def _calm(self) -> None:
        self._heal_links()
        for name in self.down:
            self.cluster.restart(name, timeout=30)

    def repair(self) -> None:
        """Heal every link and start every node that is down."""
        before = self.clock()
        self._calm()
        self._track(before)
        self.note("repaired: links healed, every node running")
