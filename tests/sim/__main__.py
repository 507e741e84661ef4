"""``python -m tests.sim``: run seeds of the consensus simulation, report violations.

Examples::

    python -m tests.sim --seeds 1000 --validators 4 --byzantine 1
    python -m tests.sim --validators 7 --byzantine 2 --seed 1234      # replay one seed
    python -m tests.sim --seeds 500 --mutation no-locking --profile adversarial

Exit status 1 if any seed violated safety or liveness; each failing seed is
printed with its fault plan, its violations and the command that replays it.
"""

from __future__ import annotations

import argparse
import sys

from tests.sim.runner import run_many
from tests.sim.world import MUTATIONS, SimOptions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="run only this seed (replay)")
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--byzantine", type=int, default=None, help="default: the maximum, (n-1)//3")
    ap.add_argument("--profile", choices=("mixed", "adversarial"), default="mixed")
    ap.add_argument("--mutation", choices=MUTATIONS, help="break the protocol on purpose")
    ap.add_argument("--crypto", choices=("fake", "sm2"), default="fake")
    ap.add_argument("--heights", type=int, default=2, help="heights to commit after GST")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs)")
    ap.add_argument("--max-failures", type=int, default=None, help="stop after this many")
    args = ap.parse_args(argv)
    f = args.byzantine if args.byzantine is not None else (args.validators - 1) // 3
    if 3 * f >= args.validators:
        ap.error(f"{f} Byzantine of {args.validators} is beyond what BFT tolerates (3f < n)")
    opts = SimOptions(args.validators, f, args.profile, args.mutation, args.crypto, args.heights)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    summary = run_many(seeds, opts, jobs=1 if args.seed is not None else args.jobs,
                       stop_after_failures=args.max_failures)
    for o in summary.failed:
        print(o.report, end="\n\n")
    print(summary.render())
    if summary.failed:
        print(f"{len(summary.failed)} failing seed(s); replay each with:")
        for o in summary.failed:
            print(f"  {opts.replay_command(o.seed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
