"""Benchmark of the consensus core: vote events per CPU second (n = 4, fake signer).

``python -m node.consensus.bench [--heights N]`` prints one JSON object. It
drives one validator through N heights: per height one proposal (or our own
value when we are the proposer) and a prevote and a precommit from each of the
other three validators, all signed beforehand, so the time measured is the
core's: admission (including signature verification through the Verifier
interface), vote bookkeeping, the rules, and signing our own votes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from certificates import sm2
from certificates.hashing import sm3
from ledger.commit import Validator, ValidatorSet, VoteType
from node.consensus.context import Context
from node.consensus.core import step
from node.consensus.events import Commit, Event, ProposalReceived, ValueReady, VoteReceived
from node.consensus.messages import Proposal, Vote
from node.consensus.restore import start
from node.consensus.signing import FakeSigner, FakeVerifier

CHAIN = "bench"


def _validators(n: int) -> tuple[ValidatorSet, list[FakeSigner]]:
    pubs = [sm2.PrivateKey.from_bytes(sm3(b"bench-%d" % i)).public.data for i in range(n)]
    vs = ValidatorSet.of(Validator(f"v{i}", pk) for i, pk in enumerate(pubs))
    return vs, [FakeSigner(v.public_key) for v in vs.validators]


def script_for(heights: int) -> tuple[Context, list[Event]]:
    """The events one validator (v0 of four) sees over ``heights`` fault-free heights."""
    vs, signers = _validators(4)
    me = signers[0]
    ctx = Context(CHAIN, me, FakeVerifier(), lambda h: vs, lambda h, v: True, sm3)
    events: list[Event] = []
    for h in range(1, heights + 1):
        value = h.to_bytes(8, "big") * 25
        vid = sm3(value)
        proposer = vs.proposer(h, 0).key_id
        if proposer == me.key_id:
            events.append(ValueReady(h, 0, value))
        else:
            p = Proposal(h, 0, vid, value, -1, proposer)
            signer = next(s for s in signers if s.key_id == proposer)
            events.append(ProposalReceived(replace(p, signature=signer.sign(p.sign_bytes(CHAIN)))))
        vtypes: tuple[VoteType, ...] = ("prevote", "precommit")
        for vtype in vtypes:
            for other in signers[1:]:
                v = Vote(vtype, h, 0, vid, other.key_id)
                events.append(VoteReceived(replace(v, signature=other.sign(v.sign_bytes(CHAIN)))))
    return ctx, events


def run(heights: int) -> dict[str, float]:
    ctx, script = script_for(heights)
    state, _ = start(ctx, 1)
    commits = 0
    t0 = time.process_time()
    for ev in script:
        state, effects = step(state, ev)
        commits += sum(isinstance(e, Commit) for e in effects)
    cpu = time.process_time() - t0
    votes = sum(isinstance(e, VoteReceived) for e in script)
    if commits != heights:
        raise SystemExit(f"benchmark broken: {commits} commits for {heights} heights")
    return {
        "validators": 4,
        "heights": heights,
        "vote_events": votes,
        "events": len(script),
        "cpu_s": round(cpu, 4),
        "vote_events_per_cpu_s": round(votes / cpu),
        "events_per_cpu_s": round(len(script) / cpu),
        "heights_per_cpu_s": round(heights / cpu),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heights", type=int, default=5000)
    args = ap.parse_args()
    print(json.dumps(run(args.heights)))


if __name__ == "__main__":
    main()
