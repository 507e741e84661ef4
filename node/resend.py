"""Which peers get a proposal again: once per peer per round, more only when they lack it.

``node.consensus.gossip.to_gossip`` says *what* a node keeps re-sending (the
paper's gossip assumption). Votes are a few hundred bytes and go to every peer
every gossip tick. A proposal carries its block - up to 4 MiB - and re-sending it
to every peer every tick cost ~76 MB of peer traffic per 4 MB block and stalled
heights while receivers re-hashed it. So proposals are tracked per
(height, round, value) and per peer:

* the first send (our own ``Broadcast``, or the first tick that relays another
  proposer's polka proposal) goes to every peer and starts a back-off;
* later ticks re-send to a peer only if it shows no sign of holding the proposal
  - no prevote or precommit of its validator for that value in that round - and
  its back-off has run out; the back-off doubles up to a cap, so a dead peer
  costs a re-send every ``cap`` seconds, not every tick;
* entries of past heights are forgotten.

A peer that voted for the value has the proposal (it could not judge it valid
otherwise), so nothing it needs is withheld; a peer that lacks it still gets it
within the back-off, so the gossip assumption holds. Time is injected (the
caller passes ``now``); the module holds no threads.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from node.consensus.messages import Proposal
from node.consensus.state import ConsensusState

ProposalKey = tuple[int, int, bytes]  # (height, round, value id)


@dataclass
class _Sent:
    at: float
    delay: float


class ProposalResends:
    def __init__(self, peers: Collection[str], *, base_s: float, cap_s: float) -> None:
        self._peers = tuple(sorted(peers))
        self.base, self.cap = base_s, max(cap_s, base_s)
        self._sent: dict[ProposalKey, dict[str, _Sent]] = {}

    @staticmethod
    def key(p: Proposal) -> ProposalKey:
        return p.height, p.round, p.value_id

    def sent_to_all(self, p: Proposal, now: float) -> None:
        """Record a broadcast of ``p`` (our own proposal leaving at once)."""
        self._sent[self.key(p)] = {peer: _Sent(now, self.base) for peer in self._peers}

    def due(self, s: ConsensusState, p: Proposal, peer_of: Mapping[bytes, str],
            now: float) -> list[str]:
        """Peers that should get ``p`` now; their back-off is advanced as if it was sent.

        ``peer_of`` maps a validator key id to the peer name it is reached by.
        """
        sent = self._sent.setdefault(self.key(p), {})
        holders = self._holders(s, p, peer_of)
        out: list[str] = []
        for peer in self._peers:
            if peer in holders:
                continue
            st = sent.get(peer)
            if st is None:
                sent[peer] = _Sent(now, self.base)
            elif now - st.at >= st.delay:
                st.at, st.delay = now, min(self.cap, st.delay * 2)
            else:
                continue
            out.append(peer)
        return out

    @staticmethod
    def _holders(s: ConsensusState, p: Proposal, peer_of: Mapping[bytes, str]) -> set[str]:
        rl = s.log.peek(p.round) if p.height == s.height else None
        if rl is None:
            return set()
        voters = [v.validator for v in rl.prevotes.for_value(p.value_id)]
        voters += [v.validator for v in rl.precommits.for_value(p.value_id)]
        return {peer_of[k] for k in voters if k in peer_of}

    def forget_below(self, height: int) -> None:
        for k in [k for k in self._sent if k[0] < height]:
            del self._sent[k]

    def tracked(self) -> int:
        return len(self._sent)
