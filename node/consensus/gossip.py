"""What a node re-sends periodically: the paper's gossip assumption, made concrete.

Algorithm 1 is live only if every message a correct process sent or received
before GST reaches every correct process eventually. The network may have lost
them, so the runtime re-sends, every gossip interval, ``to_gossip(state)``:

* what we signed at the current height in this round and the previous one
  (stragglers need them to reach the quorums that move rounds), plus every
  proposal and every non-nil vote we signed (a POL or a commit may need them);
* the proposal and the 2f+1 prevotes of the highest round in which we saw a
  polka for the proposed value. This relays other validators' votes, which
  is what releases locks: a node locked in round r accepts a re-proposal
  from round vr >= r only once it holds the 2f+1 prevotes of vr (Alg.1 L28-29).
  Without it a Byzantine validator that shows its prevote to some nodes only
  can keep correct nodes locked in different rounds forever.

The receiving side discards exact re-sends before checking signatures, so the
cost is a few dictionary lookups per message. That holds for votes; a proposal
carries its whole block, so the runtime sends the proposals of this list only to
peers that may lack them (``node.resend``: once per peer per round, again only
after a back-off to a peer that has not voted for the value).
"""

from __future__ import annotations

from node.consensus.messages import Message
from node.consensus.state import ConsensusState


def to_gossip(s: ConsensusState) -> list[Message]:
    low = s.round - 1
    out: list[Message] = [
        m for (_, r, kind), m in s.signed.items()
        if r >= low or kind == "proposal" or m.value_id is not None
    ]
    me = s.ctx.key_id
    for r in sorted(s.log.rounds, reverse=True):
        rl = s.log.rounds[r]
        for p in rl.proposals():
            if rl.prevotes.count(p.value_id) >= s.quorum:
                if p.proposer != me:
                    out.append(p)
                out += [v for v in rl.prevotes.for_value(p.value_id) if v.validator != me]
                return out
    return out
