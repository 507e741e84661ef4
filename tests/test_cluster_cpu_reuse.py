"""Work a validator does once per batch tx is not done again for the same bytes.

A cert.issue_batch tx is ~1 MB; SM3 over it costs ~6 ms. These tests pin what the
node reuses instead of recomputing, and that the reuse never changes an answer:

* a decoded block keeps its canonical bytes, so ``encode`` (the stored form) does not
  re-encode, and the bytes are exactly the input's;
* ``Block.decode(data, known_id)`` hashes only the txs ``known_id`` does not know, and
  an id it is told must be for exactly those bytes: the mempool answers by the bytes;
* the mempool's ``id_of`` knows pending txs only (not after commit, removal, drop);
* ``reap`` hands the proposer decoded txs, so building a block hashes no tx again;
* ``LedgerApp`` decodes a proposed block of pending txs with no SM3 over a tx;
* the API serves a block the node just committed without hashing its txs again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import ledger.block
import ledger.chain
import ledger.commit
from certificates import keystore
from certificates.hashing import sm3
from ledger.block import Block
from ledger.chain import Chain
from ledger.errors import CommitError
from ledger.state import BlockContext
from ledger.store import MemoryStore
from network.testing import wait_until
from node.api import ApiDeps, create_app
from node.clock import SystemClock
from node.config import NodeConfig, load_config
from node.ledger_app import LedgerApp
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.netinit import IssuerSpec, NetworkPlan, init_network, with_consensus
from node.runtime import Node as NodeRuntime
from tests.cluster import FAST, ISSUER, PASSPHRASE, TYPE, Cluster
from tests.crash_child import sign_commit
from tests.ledger_fixtures import (
    CHAIN_ID,
    GENESIS_TIME,
    anchor,
    batch_tx,
    issue_tx,
    key,
    make_genesis,
)

PROPOSER = key("val-0").public.key_id


class _View:
    def __init__(self, chain: Chain) -> None:
        self.get = chain.record


class Counting:
    """Stands in for ``sm3`` in one module and remembers what it hashed."""

    def __init__(self) -> None:
        self.inputs: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        self.inputs.append(bytes(data))
        return sm3(data)


@pytest.fixture()
def block_sm3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    c = Counting()
    monkeypatch.setattr(ledger.block, "sm3", c)
    yield c


@pytest.fixture()
def chain_sm3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counting]:
    c = Counting()
    monkeypatch.setattr(ledger.chain, "sm3", c)
    yield c


class Node:
    """A chain, its mempool and the app over them, wired as ``node.runtime`` does."""

    def __init__(self, tmp: Path, *, reuse: bool = True) -> None:
        sigs: dict[bytes, bool] = {}
        self.chain = Chain.create(MemoryStore(), make_genesis(), sig_cache=sigs)
        self.now_ms = GENESIS_TIME + 60_000
        self.pool = Mempool(_View(self.chain), CHAIN_ID, max_txs=100, max_bytes=1 << 24,
                            max_tx_bytes=1 << 22, sig_cache=sigs,
                            monotonic=lambda: 0.0)
        self.chain.known_txs = self.pool.decoded
        cfg = NodeConfig(name="t", data_dir=tmp, key_file=tmp / "k", genesis=tmp / "g")
        self.app = LedgerApp(self.chain, cfg.block, cfg.consensus.max_clock_drift_ms,
                             lambda: self.now_ms, known_id=self.pool.id_of if reuse else None)

    def ctx(self) -> BlockContext:
        return BlockContext(CHAIN_ID, self.chain.head_height + 1, self.now_ms)


def _txs() -> list[bytes]:
    return [batch_tx([anchor(f"B{i:03d}") for i in range(40)]).to_bytes(),
            issue_tx(anchor("S1")).to_bytes(), issue_tx(anchor("S2")).to_bytes()]


# --------------------------------------------------------------------------- blocks


def test_a_decoded_block_encodes_to_its_own_bytes_without_re_encoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    proposer = Chain.create(MemoryStore(), make_genesis())
    data = proposer.propose_block(_txs(), GENESIS_TIME + 1000, PROPOSER).encode()
    block = Block.decode(data)

    def no_encode(value: object) -> bytes:
        raise AssertionError("a decoded block must not be encoded again")

    monkeypatch.setattr(ledger.block.canonical, "encode", no_encode)
    assert block.encode() == data


def test_decode_hashes_only_the_txs_it_is_not_told(block_sm3: Counting) -> None:
    txs = _txs()
    proposer = Chain.create(MemoryStore(), make_genesis())
    data = proposer.propose_block(txs, GENESIS_TIME + 1000, PROPOSER).encode()
    known = {txs[0]: sm3(txs[0]), txs[2]: sm3(txs[2])}
    block_sm3.inputs.clear()
    block = Block.decode(data, known.get)
    assert block.tx_ids == tuple(sm3(t) for t in txs)
    assert [i for i in block_sm3.inputs if i in txs] == [txs[1]]  # the unknown one only
    assert block.computed_tx_root() == block.header.tx_root


# --------------------------------------------------------------------------- mempool


def test_id_of_knows_pending_bytes_only(tmp_path: Path) -> None:
    n = Node(tmp_path)
    txs = _txs()
    for raw in txs:
        n.pool.add(raw, n.ctx(), gossip=False)
    assert [n.pool.id_of(r) for r in txs] == [sm3(r) for r in txs]
    assert n.pool.id_of(bytes(bytearray(txs[0]))) == sm3(txs[0])  # equal bytes, new object
    assert n.pool.id_of(txs[0][:-1] + b"\x00") is None
    n.pool.remove([sm3(txs[1])])
    assert n.pool.id_of(txs[1]) is None
    n.pool.update([sm3(txs[0])], n.ctx(), written=[])
    assert n.pool.id_of(txs[0]) is None
    assert n.pool.id_of(txs[2]) == sm3(txs[2])


def test_id_of_forgets_a_tx_dropped_on_re_check(tmp_path: Path) -> None:
    n = Node(tmp_path)
    raw = issue_tx(anchor("D1")).to_bytes()
    n.pool.add(raw, n.ctx(), gossip=False)
    # A block elsewhere issued the same certificate: the pending tx no longer applies.
    other = issue_tx(anchor("D1"))
    block = n.chain.propose_block([other.to_bytes()], n.now_ms, PROPOSER)
    n.chain.commit_block(block, sign_commit(block, ["val-0", "val-1", "val-2"]))
    _, dropped = n.pool.update(block.tx_ids, n.ctx(), written=None)
    assert sm3(raw) in dropped and n.pool.id_of(raw) is None


def test_reap_gives_decoded_txs_and_building_hashes_none_of_them(
        tmp_path: Path, chain_sm3: Counting, block_sm3: Counting) -> None:
    n = Node(tmp_path)
    txs = _txs()
    for raw in txs:
        n.pool.add(raw, n.ctx(), gossip=False)
    reaped = n.pool.reap(10, 1 << 24)
    assert [t.to_bytes() for t in reaped] == txs
    chain_sm3.inputs.clear()
    block_sm3.inputs.clear()
    value, dropped = n.app.build(1, 0, reaped, PROPOSER)
    assert not dropped
    hashed = chain_sm3.inputs + block_sm3.inputs
    assert not [i for i in hashed if i in txs]
    assert Block.decode(value).tx_ids == tuple(sm3(t) for t in txs)


@pytest.mark.parametrize("reuse", [True, False])
def test_a_proposed_block_of_pending_txs_is_decoded_without_hashing_them(
        tmp_path: Path, block_sm3: Counting, reuse: bool) -> None:
    n = Node(tmp_path, reuse=reuse)
    txs = _txs()
    for raw in txs:
        n.pool.add(raw, n.ctx(), gossip=False)
    proposer = Chain.create(MemoryStore(), make_genesis())
    value = proposer.propose_block(txs, n.now_ms, PROPOSER).encode()
    block_sm3.inputs.clear()
    assert n.app.value_id_of(value) == Block.decode(value).hash
    assert n.app.valid(1, value)
    hashed = [i for i in block_sm3.inputs if i in txs]
    assert hashed == ([] if reuse else txs)


# --------------------------------------------------------------------------- the node


def test_the_node_wires_the_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  block_sm3: Counting) -> None:
    """Proposals are decoded with the mempool's ids; the API serves committed blocks
    from the app. A one-validator node on a free loopback port, bounded waits."""
    asked: list[bytes] = []
    real = Mempool.id_of

    def id_of(self: Mempool, raw: bytes) -> bytes | None:
        asked.append(raw)
        return real(self, raw)

    monkeypatch.setattr(Mempool, "id_of", id_of)
    plan = with_consensus(NetworkPlan(1, (IssuerSpec(ISSUER, "某某大学", (TYPE,)),),
                                      chain_id="cpu-test", kdf_iterations=1000, ports=(0,),
                                      log_to_files=False), **FAST)
    summary = init_network(plan, tmp_path / "net", SystemClock(), PASSPHRASE)
    cfg = load_config(tmp_path / "net" / "node-1.toml")
    node = NodeRuntime(cfg, keystore.load_key_file(cfg.key_file, PASSPHRASE),
                       clock=SystemClock(), rng=random.Random(1)).start()
    try:
        helper = Cluster(tmp_path / "net", summary)
        raw = helper.issue_tx("CPU1").to_bytes()
        replica = Chain.create(MemoryStore(), node.chain.genesis)
        value = replica.propose_block([raw], node.clock.time_ms(), b"\x02" * 16).encode()
        assert node.app.value_id_of(value) == Block.decode(value).hash
        assert raw in asked

        tx = helper.issue_tx("CPU2")
        node.submit(tx.to_bytes())
        wait_until(lambda: node.chain.tx_location(tx.id) is not None, 20, 0.05, "committed")
        loc = node.chain.tx_location(tx.id)
        assert loc is not None
        block_sm3.inputs.clear()
        got = requests.get(f"http://127.0.0.1:{node.port}/v1/blocks/{loc[0]}", timeout=10)
        assert got.ok and tx.id.hex() in got.json()["tx_ids"]
        assert tx.to_bytes() not in block_sm3.inputs
    finally:
        node.stop()


# --------------------------------------------------------------------------- the API


def _api(n: Node, recent: bool) -> Any:
    def unused(*_: Any) -> Any:
        raise AssertionError("not used by the block route")

    deps = ApiDeps(chain=n.chain, submit=unused, pending=unused, status=unused,
                   metrics=NodeMetrics(), inbox=unused,  # type: ignore[arg-type]
                   max_tx_body=64 * 1024, max_consensus_body=64 * 1024,
                   max_sync_bytes=1024 * 1024,
                   **({"recent_block": n.app.recent_block} if recent else {}))
    return create_app(deps).test_client()


def test_recently_committed_blocks_are_served_without_hashing_their_txs(
        tmp_path: Path, block_sm3: Counting) -> None:
    n = Node(tmp_path)
    txs = _txs()
    for raw in txs:
        n.pool.add(raw, n.ctx(), gossip=False)
    value, _ = n.app.build(1, 0, n.pool.reap(10, 1 << 24), PROPOSER)
    block = Block.decode(value)
    n.app.commit(value, sign_commit(block, ["val-0", "val-1", "val-2"]))
    assert n.app.recent_block(1) is not None and n.app.recent_block(1) == block
    block_sm3.inputs.clear()
    served = _api(n, recent=True).get("/v1/blocks/1").get_json()
    assert not [i for i in block_sm3.inputs if i in txs]
    from_store = _api(n, recent=False).get("/v1/blocks/1").get_json()
    assert [i for i in block_sm3.inputs if i in txs] == txs  # the store path hashes them
    assert served == from_store


def test_only_the_last_few_committed_blocks_are_kept(tmp_path: Path) -> None:
    n = Node(tmp_path)
    for height in range(1, 8):
        n.now_ms += 1000
        value, _ = n.app.build(height, 0, [], PROPOSER)
        n.app.commit(value, sign_commit(Block.decode(value), ["val-0", "val-1", "val-2"]))
    assert [h for h in range(1, 8) if n.app.recent_block(h) is not None] == [4, 5, 6, 7]


def test_the_app_commits_without_verifying_the_certificate_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The core verified each signature of a certificate it decided on (or synced):
    ``LedgerApp.commit`` lets the chain skip those SM2 checks, and no other rule."""
    n = Node(tmp_path)
    verified: list[bytes] = []
    real = ledger.commit.sm2.verify
    monkeypatch.setattr(ledger.commit.sm2, "verify",
                        lambda pk, m, sig: verified.append(m) or real(pk, m, sig))
    value, _ = n.app.build(1, 0, [], PROPOSER)
    n.app.commit(value, sign_commit(Block.decode(value), ["val-0", "val-1", "val-2"]))
    assert n.chain.head_height == 1 and verified == []
    n.now_ms += 1000
    value, _ = n.app.build(2, 0, [], PROPOSER)
    with pytest.raises(CommitError, match="needs 3"):
        n.app.commit(value, sign_commit(Block.decode(value), ["val-0", "val-1"]))
