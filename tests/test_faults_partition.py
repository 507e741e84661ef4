"""A 2|2 network partition of a real four-validator cluster, made with FaultProxies.

Every directed peer link runs through its own ``network.proxy.FaultProxy``
(``Cluster.proxy_links``), so the test can cut exactly the links between
{node-1, node-2} and {node-3, node-4} while clients still reach every API. With
n = 4 neither half holds a quorum (3): heights must stop (at most the one block
already decided when the links went down may still land) and no two nodes may
ever hold different blocks at one height. Once healed, commits must resume
within 5 s. Every wait is bounded; only pids this module started are signalled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.integration

SETTLE = 3.0  # s after the cut for a block decided before it to land (sync within a side)
HALTED_FOR = 5.0  # s during which no height may change
RESUME_WITHIN = 5.0  # s after heal()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.create(tmp_path_factory.mktemp("faults-partition")) as c:
        c.proxy_links()
        c.start()
        c.wait_height(2, timeout=40)
        yield c


def _same_blocks(c: Cluster) -> None:
    """No divergence: the same hash at every height the nodes have in common."""
    c.assert_agreement(c.names)


def test_two_two_partition_halts_without_divergence_then_resumes(cluster: Cluster) -> None:
    c = cluster
    left, right = c.names[:2], c.names[2:]
    # Peer traffic really flows through the proxies (the configs were rewritten).
    assert all(p.stats().accepted > 0 for p in c.links.values()), {
        k: p.stats() for k, p in c.links.items()}
    txs = [c.issue_tx(f"PART{i:03d}") for i in range(8)]

    c.partition(left, right)  # blackhole: peers' requests hang until their timeout
    cut_at = time.monotonic()
    top_at_cut = max(c.heights().values())

    # Transactions still reach each side's mempools; they must not commit while split.
    c.submit_all(txs[:4], left)
    c.submit_all(txs[4:], right)

    # Let anything decided before the cut land, then watch for HALTED_FOR seconds.
    while time.monotonic() - cut_at < SETTLE:
        time.sleep(0.2)
    frozen = c.heights()
    assert max(frozen.values()) <= top_at_cut + 1, (top_at_cut, frozen)
    watch_until = time.monotonic() + HALTED_FOR
    while time.monotonic() < watch_until:
        now = c.heights()
        assert now == frozen, f"a height moved during a 2|2 partition: {frozen} -> {now}"
        time.sleep(0.25)
    _same_blocks(c)
    for n in c.names:
        for tx in txs:
            body = c.get(n, f"/v1/transactions/{tx.id.hex()}").json()
            assert body.get("status") != "committed", (n, body)
    cut_stats = {k: p.stats() for k, p in c.links.items()}
    assert sum(s.blackholed for s in cut_stats.values()) > 0, cut_stats

    c.heal()
    healed_at = time.monotonic()
    top = max(frozen.values())
    c.wait_height(top + 1, timeout=RESUME_WITHIN, names=c.names)
    resumed = time.monotonic() - healed_at
    print(f"2|2 partition: frozen at {frozen}, commits resumed {resumed:.2f}s after heal")

    # The transactions submitted on both sides during the split now commit everywhere.
    c.wait_txs([t.id for t in txs], c.names, timeout=30)
    _same_blocks(c)
    common = min(c.heights().values())
    roots = {c.get(n, f"/v1/blocks/{common}").json()["header"]["state_root"] for n in c.names}
    assert len(roots) == 1, roots
