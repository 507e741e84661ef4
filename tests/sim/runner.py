"""Running many seeds, in parallel processes, and summarising them.

Seeds are independent worlds, so they are farmed out to a process pool
(``jobs``); each result is reduced to a picklable ``Summary`` row. A run is
still reproducible one seed at a time: every failure carries its replay
command.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tests.sim.world import SimOptions, run_seed


@dataclass(frozen=True)
class SeedOutcome:
    seed: int
    ok: bool
    kinds: tuple[str, ...]
    report: str
    events: int
    time_ms: int
    heights: int
    counters: tuple[tuple[str, int], ...]
    crash_plans: int  # crash faults in this seed's plan


def run_one(args: tuple[int, SimOptions]) -> SeedOutcome:
    seed, opts = args
    r = run_seed(seed, opts)
    return SeedOutcome(
        seed, r.ok, tuple(sorted({v.kind for v in r.violations})), "" if r.ok else r.report(),
        r.events, r.time_ms, r.heights, tuple(sorted(r.counters.items())), len(r.plan.crashes),
    )


@dataclass
class Summary:
    options: SimOptions
    seeds: int = 0
    failed: list[SeedOutcome] = field(default_factory=list)
    events: int = 0
    virtual_ms: int = 0
    heights: int = 0
    seeds_with_crashes: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, o: SeedOutcome) -> None:
        self.seeds += 1
        self.events += o.events
        self.virtual_ms += o.time_ms
        self.heights += o.heights
        self.seeds_with_crashes += o.crash_plans > 0
        for k, v in o.counters:
            self.counters[k] = self.counters.get(k, 0) + v
        if not o.ok:
            self.failed.append(o)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.failed:
            for k in o.kinds:
                out[k] = out.get(k, 0) + 1
        return out

    def render(self) -> str:
        o = self.options
        c = self.counters
        lines = [
            f"n={o.validators} byzantine={o.byzantine} profile={o.profile}"
            + (f" mutation={o.mutation}" if o.mutation else "")
            + f" crypto={o.crypto}: {self.seeds} seeds, {len(self.failed)} failed"
            + (f" {self.kinds()}" if self.failed else ""),
            f"  committed heights {self.heights}, virtual time {self.virtual_ms / 1000:.0f}s, "
            f"events {self.events}, wall {self.wall_s:.1f}s",
            f"  seeds with crash faults {self.seeds_with_crashes}: crashes {c.get('crashes', 0)}, "
            f"after persist/before send {c.get('crash_after_persist', 0)}, "
            f"torn WAL writes {c.get('crash_torn_write', 0)}",
            f"  evidence {c.get('evidence', 0)}, bad signatures dropped "
            f"{c.get('dropped_bad_signature', 0)}, forged syncs rejected "
            f"{c.get('rejected_sync', 0)}, guard refusals {c.get('guard_refused', 0)}",
        ]
        return "\n".join(lines)


def run_many(
    seeds: Iterable[int], opts: SimOptions, *, jobs: int | None = None,
    stop_after_failures: int | None = None,
) -> Summary:
    summary = Summary(opts)
    t0 = time.monotonic()
    for o in _outcomes(list(seeds), opts, jobs):
        summary.add(o)
        if stop_after_failures is not None and len(summary.failed) >= stop_after_failures:
            break
    summary.wall_s = time.monotonic() - t0
    return summary


def _outcomes(seeds: list[int], opts: SimOptions, jobs: int | None) -> Iterator[SeedOutcome]:
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    work = [(s, opts) for s in seeds]
    if jobs <= 1 or len(seeds) < 8:
        yield from map(run_one, work)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(run_one, work, chunksize=8)
