"""Faults as data: one ``FaultPlan`` per seed, drawn from the seed's RNG.

A plan says everything that will go wrong in a run: which validators are
Byzantine and how, message loss, duplication and delay before GST (the global
stabilisation time, after which the network is timely: no loss, delays <= 50
ms), partitions (all healed by GST), and crash-restarts of honest nodes, which
may strike between persisting a signed message and sending it, or tear the
WAL record being written. The plan is printed with every failure, so a
failing seed can be understood as well as replayed.

Profiles bias the draw: ``mixed`` (the default) samples everything;
``adversarial`` always partitions and always makes the Byzantine validators
equivocate and vote for anything - the setting that exposes a broken
protocol fastest (used by the mutation tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

BEHAVIOURS = (
    "silent",  # sends nothing at all
    "equivocate",  # as proposer, different proposals to different peers
    "double_vote",  # conflicting votes to different peers
    "bad_sig",  # corrupted signatures, messages forged in others' names
    "junk",  # validly signed junk for future heights and far rounds
    "replay",  # re-sends old messages of anyone
    "invalid_value",  # proposes blocks the app rejects
    "no_lock",  # ignores its locks (amnesia)
    "bad_sync",  # answers block sync with forged blocks and certificates
    "stops",  # crashes for good before GST (a crash fault): the rest must decide without it
)
CrashMode = Literal["now", "after_persist", "torn"]


@dataclass(frozen=True)
class Partition:
    start_ms: int
    end_ms: int
    groups: tuple[tuple[int, ...], ...]

    def separates(self, now: int, a: int, b: int) -> bool:
        if not self.start_ms <= now < self.end_ms:
            return False
        return not any(a in g and b in g for g in self.groups)


@dataclass(frozen=True)
class Crash:
    node: int
    at_ms: int
    down_ms: int
    # now: crash at at_ms; after_persist: at the first own message persisted after
    # at_ms, before it is sent; torn: likewise, with that WAL record half-written.
    mode: CrashMode


@dataclass(frozen=True)
class FaultPlan:
    n: int
    byzantine: tuple[tuple[int, tuple[str, ...]], ...]
    gst_ms: int
    drop: float
    duplicate: float
    delay_ms: tuple[int, int]
    post_gst_delay_ms: tuple[int, int]
    partitions: tuple[Partition, ...]
    crashes: tuple[Crash, ...]
    heights_after_gst: int
    liveness_budget_ms: int

    @property
    def behaviours(self) -> dict[int, frozenset[str]]:
        return {i: frozenset(b) for i, b in self.byzantine}

    def describe(self) -> str:
        lines = [
            f"n={self.n} gst={self.gst_ms}ms drop={self.drop} dup={self.duplicate} "
            f"delay={self.delay_ms} post_gst_delay={self.post_gst_delay_ms} "
            f"heights_after_gst={self.heights_after_gst}",
            "byzantine: " + (", ".join(f"{i}:{'+'.join(b)}" for i, b in self.byzantine) or "-"),
        ]
        lines += [f"partition {p.start_ms}-{p.end_ms}ms {p.groups}" for p in self.partitions]
        lines += [f"crash node {c.node} at {c.at_ms}ms for {c.down_ms}ms ({c.mode})"
                  for c in self.crashes]
        return "\n".join(lines)

    @classmethod
    def generate(
        cls, rng: random.Random, n: int, f: int, *, profile: str = "mixed",
        heights_after_gst: int = 2,
    ) -> FaultPlan:
        adversarial = profile == "adversarial"
        byz_nodes = sorted(rng.sample(range(n), f))
        byzantine = tuple((i, _behaviours(rng, adversarial)) for i in byz_nodes)
        honest = [i for i in range(n) if i not in byz_nodes]
        gst = rng.randint(1500, 6000)
        partitions = []
        for _ in range(rng.randint(1, 3) if adversarial else rng.choice((0, 0, 1, 2))):
            start = rng.randint(0, gst - 200)
            end = min(gst, start + rng.randint(200, 3000))
            nodes = list(range(n))
            rng.shuffle(nodes)
            groups: tuple[tuple[int, ...], ...]
            if rng.random() < 0.3:
                groups = ((nodes[0],), tuple(sorted(nodes[1:])))  # isolate one node
            else:
                cut = rng.randint(1, n - 1)
                groups = (tuple(sorted(nodes[:cut])), tuple(sorted(nodes[cut:])))
            partitions.append(Partition(start, end, groups))
        crashes = []
        for i in rng.sample(honest, min(len(honest), rng.choice((0, 0, 1, 1, 2)))):
            at = rng.randint(0, gst - 300)
            mode: CrashMode = rng.choice(("now", "after_persist", "after_persist", "torn"))
            crashes.append(Crash(i, at, rng.randint(50, 1500), mode))
        return cls(
            n=n,
            byzantine=byzantine,
            gst_ms=gst,
            drop=rng.choice((0.0, 0.05, 0.2, 0.4)),
            duplicate=rng.choice((0.0, 0.05, 0.2)),
            delay_ms=(1, rng.choice((20, 100, 400, 1200))),
            post_gst_delay_ms=(1, 50),
            partitions=tuple(partitions),
            crashes=tuple(crashes),
            heights_after_gst=heights_after_gst,
            liveness_budget_ms=30_000 + 10_000 * f,
        )


def _behaviours(rng: random.Random, adversarial: bool) -> tuple[str, ...]:
    if adversarial:
        return ("equivocate", "double_vote", "no_lock")
    if rng.random() < 0.2:
        return ("silent",)
    active = [b for b in BEHAVIOURS if b != "silent"]
    return tuple(sorted(rng.sample(active, rng.randint(1, 4)), key=BEHAVIOURS.index))
