"""Byzantine validators: an honest core behind a lying mouth.

A Byzantine node runs the ordinary core (so it knows the height, round and
proposals and can lie plausibly) with its own knobs (``no_lock`` turns off its
locking), and rewrites what leaves it, according to its behaviours:

* ``equivocate``    - each proposal goes to a random half of the peers, a
  second proposal for another value (often invalid) to the rest;
* ``double_vote``   - each vote goes to a random half, a conflicting vote
  (nil <-> a value) to the rest;
* ``invalid_value`` - the blocks it proposes are mostly ones the app rejects;
* ``bad_sig``       - copies of its messages with broken signatures, and
  votes forged in honest validators' names;
* ``junk``          - validly signed votes for future heights and far-off
  rounds, and proposals whose value does not match the signed id;
* ``replay``        - re-sends old messages of anyone to anyone;
* ``bad_sync``      - answers block sync with a forged block and certificate;
* ``silent``        - never starts;
* ``stops``         - crashes for good at a random time before GST, so whatever it
  sent until then (a prevote in a POL, say) reached only whom it reached.

It signs its lies itself, outside the core, so the core's double-sign guard
(which it would otherwise obey) is no obstacle.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ledger.commit import make_commit
from node.consensus.context import Context
from node.consensus.messages import Message, Proposal, Vote
from tests.sim import app
from tests.sim.messages import SyncRequest, SyncResponse
from tests.sim.node import SimNode

if TYPE_CHECKING:
    from tests.sim.world import World


class ByzantineNode(SimNode):
    def __init__(self, world: World, idx: int, ctx: Context, behaviours: frozenset[str]) -> None:
        super().__init__(world, idx, ctx)
        self.behaviours = behaviours

    def boot(self) -> None:
        if "silent" not in self.behaviours:
            super().boot()

    def app_value(self, height: int) -> bytes:
        rng = self.w.rng
        bad = "invalid_value" in self.behaviours and rng.random() < 0.7
        return app.make_value(height, rng, valid=not bad)

    def _sign(self, m: Message) -> Message:
        assert self.ctx.signer is not None
        return replace(m, signature=self.ctx.signer.sign(m.sign_bytes(app.CHAIN_ID)))

    def broadcast(self, msg: Message) -> None:
        w, b = self.w, self.behaviours
        w.remember(msg)
        if isinstance(msg, Proposal) and "equivocate" in b:
            value = app.make_value(msg.height, w.rng, valid=w.rng.random() < 0.5)
            alt: Message = self._sign(replace(msg, value=value, value_id=app.value_id_of(value)))
        elif isinstance(msg, Vote) and "double_vote" in b:
            alt = self._sign(replace(msg, value_id=self._other_value(msg)))
        else:
            for dst in range(w.n):
                w.send(self.idx, dst, msg)
            return
        w.remember(alt)
        for dst in range(w.n):
            w.send(self.idx, dst, msg if w.rng.random() < 0.5 else alt)

    def _other_value(self, v: Vote) -> bytes | None:
        if v.value_id is not None:
            return None
        rl = self.state.log.peek(v.round) if self.state is not None else None
        if rl is not None and rl.proposal is not None:
            return rl.proposal.value_id
        return self.w.rng.randbytes(32)

    def gossip(self) -> None:
        super().gossip()
        s, w = self.state, self.w
        if s is None:
            return
        rng, b, me = w.rng, self.behaviours, self.ctx.key_id
        assert me is not None
        dst = rng.randrange(w.n)
        if "bad_sig" in b:
            victim = rng.choice(w.validators.validators).key_id
            forged = Vote("prevote", s.height, s.round, rng.randbytes(32), victim,
                          rng.randbytes(64))
            w.send(self.idx, dst, forged)
            own = Vote("precommit", s.height, s.round, None, me)
            w.send(self.idx, dst, replace(self._sign(own), signature=rng.randbytes(64)))
        if "junk" in b:
            h = s.height + rng.choice((0, 1, 2, 7, 1000))
            r = s.round + rng.choice((0, 1, 3, 60, 10**9))
            junk = Vote(rng.choice(("prevote", "precommit")), h, r, rng.randbytes(32), me)
            w.send(self.idx, dst, self._sign(junk))
            value = app.make_value(s.height, rng)
            lie = Proposal(s.height, s.round, rng.randbytes(32), value, -1, me)
            w.send(self.idx, dst, self._sign(lie))
        if "replay" in b and w.history:
            for _ in range(3):
                w.send(self.idx, rng.randrange(w.n), rng.choice(w.history))

    def answer_sync(self, req: SyncRequest) -> None:
        if "bad_sync" not in self.behaviours:
            super().answer_sync(req)
            return
        rng = self.w.rng
        value = app.make_value(req.height, rng)
        vid = app.value_id_of(value)
        if rng.random() < 0.5:  # everyone's name, garbage signatures
            sigs = [(v.key_id, rng.randbytes(64)) for v in self.w.validators.validators]
        else:  # only our own genuine signature: far from a quorum
            assert self.ctx.signer is not None
            pc = Vote("precommit", req.height, 0, vid, self.ctx.signer.key_id)
            sigs = [(pc.validator, self.ctx.signer.sign(pc.sign_bytes(app.CHAIN_ID)))]
        cert = make_commit(req.height, 0, vid, sigs)
        self.w.send(self.idx, req.requester, SyncResponse(req.height, value, cert))
