"""Tx gossip in two tiers (``node.txgossip``): a take goes to the next proposers at once,
and every peer gets what it lacks at the spread, each tx once."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from certificates.hashing import sm3
from ledger.commit import Validator, ValidatorSet
from node.txgossip import TxGossip, next_proposers
from tests.ledger_fixtures import key

PEERS = ["a", "b", "c"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[list[bytes], list[bytes], list[str] | None]] = []

    def broadcast_txs(self, txs: Sequence[bytes], ids: Sequence[bytes] | None = None,
                      to: Collection[str] | None = None) -> None:
        self.sent.append((list(txs), list(ids or []), None if to is None else sorted(to)))

    def take(self) -> list[tuple[list[bytes], list[str] | None]]:
        out = [(txs, to) for txs, _, to in self.sent]
        self.sent.clear()
        return out

    def received(self) -> dict[str, list[bytes]]:
        got: dict[str, list[bytes]] = {p: [] for p in PEERS}
        for txs, _, to in self.sent:
            for p in PEERS if to is None else to:
                got[p].extend(txs)
        return got


def take(*names: str) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), sm3(n.encode())) for n in names]


def gossip(sender: Sender, clock: Clock, targets: list[list[str]], spread_s: float = 0.5,
           max_bytes: int = 1 << 20, committed: Collection[bytes] = ()) -> TxGossip:
    """A gossip whose next proposers are ``targets[0]`` (replace it to move them), and
    whose pool no longer holds the txs whose ids are in ``committed``."""
    return TxGossip(sender, PEERS, lambda: targets[0], lambda tid: tid not in committed,
                    clock, spread_s, max_bytes)


def test_a_take_goes_to_the_next_proposers_only_until_the_spread() -> None:
    sender, clock, targets = Sender(), Clock(), [["b"]]
    g = gossip(sender, clock, targets)
    g.step(take("t1", "t2"))
    assert sender.take() == [([b"t1", b"t2"], ["b"])]
    assert sender.sent == [] and abs(g.wait_s(1.0) - 0.5) < 1e-9
    clock.now += 0.3
    g.step([])
    assert sender.sent == [] and abs(g.wait_s(1.0) - 0.2) < 1e-9
    clock.now += 0.2
    g.step([])
    # One envelope (one signature) for both peers that lacked them; b gets nothing twice.
    assert sender.take() == [([b"t1", b"t2"], ["a", "c"])]
    clock.now += 5
    g.step([])
    assert sender.sent == [] and g.wait_s(1.0) == 1.0  # nothing kept: nothing due


def test_each_peer_gets_each_tx_once_whoever_is_next() -> None:
    sender, clock, targets = Sender(), Clock(), [["a"]]
    g = gossip(sender, clock, targets)
    g.step(take("t1"))
    targets[0] = ["b", "c"]  # the next height's proposers
    clock.now += 0.1
    g.step(take("t2"))
    # t1 is still pending: the new next proposers get it with t2, in one envelope.
    assert sender.take() == [([b"t1"], ["a"]), ([b"t1", b"t2"], ["b", "c"])]
    targets[0] = []  # we propose next: nobody gets t3 before the spread
    clock.now += 0.1
    g.step(take("t3"))
    assert sender.sent == []
    clock.now += 0.25
    g.step([])
    assert sender.sent == []  # not due yet
    clock.now += 0.1
    g.step([])
    assert sender.take() == [([b"t2", b"t3"], ["a"]), ([b"t3"], ["b", "c"])]
    clock.now += 5
    g.step([])
    assert sender.sent == []


def test_a_proposer_that_becomes_next_gets_only_what_is_still_pending() -> None:
    sender, clock, targets, committed = Sender(), Clock(), [["a"]], set()
    g = gossip(sender, clock, targets, committed=committed)
    g.step(take("t1", "t2"))
    assert sender.take() == [([b"t1", b"t2"], ["a"])]
    g.step([])
    assert sender.sent == []  # a has them: nothing again
    committed.add(sm3(b"t1"))  # a's block carried t1 and left t2 out
    targets[0] = ["b"]
    clock.now += 0.05
    g.step([])
    ids = [tid for _, tids, _ in sender.sent for tid in tids]
    assert sender.take() == [([b"t2"], ["b"])] and ids == [sm3(b"t2")]


def test_the_spread_is_counted_from_the_first_tx_it_keeps() -> None:
    sender, clock, targets = Sender(), Clock(), [["a"]]
    g = gossip(sender, clock, targets)
    clock.now += 10  # a quiet spell
    g.step(take("t1"))
    assert sender.take() == [([b"t1"], ["a"])]  # not spread at once: it just came
    clock.now += 0.49
    g.step(take("t2"))
    assert sender.take() == [([b"t2"], ["a"])]
    clock.now += 0.01
    g.step([])
    assert sender.take() == [([b"t1", b"t2"], ["b", "c"])]


def test_what_a_block_carried_before_the_spread_is_not_spread() -> None:
    sender, clock, targets, committed = Sender(), Clock(), [["a"]], set()
    g = gossip(sender, clock, targets, committed=committed)
    g.step(take("t1", "t2"))
    committed.add(sm3(b"t1"))  # the next proposer's block carried t1
    clock.now += 0.5
    g.step([])
    assert sender.take() == [([b"t1", b"t2"], ["a"]), ([b"t2"], ["b", "c"])]
    g.step(take("t3"))
    assert sender.take() == [([b"t3"], ["a"])]
    committed.add(sm3(b"t3"))
    clock.now += 0.5
    g.step([])
    assert sender.sent == []  # nothing left to spread: no envelope


def test_the_spread_splits_its_envelopes_at_the_byte_limit() -> None:
    sender, clock, targets = Sender(), Clock(), [[]]
    g = gossip(sender, clock, targets, max_bytes=5)
    g.step(take("t1", "t2", "big-tx", "t3"))
    assert sender.sent == []
    g.spread()
    assert sender.take() == [([b"t1", b"t2"], PEERS), ([b"big-tx"], PEERS), ([b"t3"], PEERS)]


def test_without_tiers_every_take_goes_to_every_peer_at_once() -> None:
    sender, clock, targets = Sender(), Clock(), [["a"]]
    g = gossip(sender, clock, targets, spread_s=0)
    g.step(take("t1"))
    g.step([])
    assert sender.take() == [([b"t1"], None)]
    clock.now += 5
    g.step([])
    assert sender.sent == [] and g.wait_s(0.5) == 0.5


def test_a_target_that_is_not_a_peer_is_not_sent_to() -> None:
    sender, clock, targets = Sender(), Clock(), [["a", "stranger"]]
    g = gossip(sender, clock, targets)
    g.step(take("t1"))
    assert sender.take() == [([b"t1"], ["a"])]


def validators(*names: str) -> ValidatorSet:
    return ValidatorSet.of(Validator(n, key(n).public.data) for n in names)


def test_next_proposers_are_this_round_and_the_next_one() -> None:
    vs = validators("v1", "v2", "v3", "v4")
    order = [v.name for v in vs.validators]
    me = order[0]
    peers = [n for n in order if n != me]
    for height in range(1, 9):
        for round_ in range(3):
            want = {vs.proposer(height, round_).name, vs.proposer(height, round_ + 1).name,
                    vs.proposer(height + 1, 0).name}
            got = next_proposers(vs, vs, height, round_, peers)
            assert got == sorted(want - {me})
            if round_ == 0:  # round-robin: round 1's proposer is the next height's first
                assert len(want) == 2 and len(got) <= 2
    # With the set changing at the next height, that height's own first proposer counts.
    nxt = validators("v1", "v2", "v3", "v5")
    h = next(h for h in range(1, 9)
             if nxt.proposer(h + 1, 0).name == "v5" and vs.proposer(h, 0).name != "v5")
    assert "v5" in next_proposers(vs, nxt, h, 0, [*peers, "v5"])
