"""``certledger bench validator``: one validator's batch path, in process, step by step.

The cluster bench runs four validators on shared cores, so a change worth a few percent of
a validator's CPU disappears in its noise. This bench runs the same code without processes,
sockets or consensus: two chains on LevelDB in a temporary directory, a proposer and a
validator, each with the node's mempool (wired as ``node.runtime`` wires it: the chain
reuses the pool's decoded txs, the pool reads the chain through ``ChainView``). Each
block of ``batches`` pre-signed batch txs of ``per_batch`` records goes:

* **admit**: every batch into the validator's mempool (decode, signature, rules);
* **validate**: the proposer's encoded block decoded and validated by the validator
  (``LedgerApp`` does the same: ``Block.decode`` with the pool's tx ids, then
  ``Chain.validate_block``);
* **commit**: ``Chain.commit_block`` (the synced write, the tree's cache);
* **update**: the mempool's ``update`` after the commit.

Each step's wall time on the validator is divided by the records it handled; the report
gives the median over the blocks after ``warmup``. ``process_cpu_us_per_cert`` is the CPU
of the whole process (both chains, all threads) per certificate: the proposer's share
included, so it is an upper bound, but it is the figure that other load on the machine moves
least. Compare builds in alternating runs.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ledger.bench import BenchNetwork
from ledger.block import Block
from ledger.chain import Chain
from ledger.state import BlockContext
from ledger.store import LevelDBStore
from node.mempool import Mempool
from node.runtime import ChainView

STEPS = ("admit", "validate", "commit", "update")


def _node(root: str, name: str, net: BenchNetwork) -> tuple[Chain, Mempool]:
    cache: dict[bytes, bool] = {}
    chain = Chain.create(LevelDBStore(f"{root}/{name}"), net.genesis, sig_cache=cache)
    pool = Mempool(ChainView(chain), chain.chain_id, max_txs=10_000, max_bytes=1 << 30,
                   max_tx_bytes=8 << 20, sig_cache=cache, monotonic=time.monotonic)
    chain.known_txs = pool.decoded
    return chain, pool


def run(blocks: int = 12, batches: int = 3, per_batch: int = 5000, *, warmup: int = 2,
        say: Callable[[str], None] | None = None) -> dict[str, Any]:
    if blocks <= warmup:
        raise ValueError(f"blocks ({blocks}) must exceed warmup ({warmup})")
    net = BenchNetwork()
    txs = [net.batch(i * per_batch, per_batch).to_bytes() for i in range(blocks * batches)]
    if say is not None:
        say(f"{len(txs)} batches of {per_batch} signed")
    root = tempfile.mkdtemp(prefix="certledger-bench-validator-")
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    try:
        proposer, p_pool = _node(root, "proposer", net)
        validator, v_pool = _node(root, "validator", net)
        try:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for b in range(blocks):
                height = validator.head_height + 1
                ctx = BlockContext(validator.chain_id, height, 0)
                admit = 0.0
                for raw in txs[b * batches:(b + 1) * batches]:
                    p_pool.add(raw, ctx, gossip=False)
                    t = time.perf_counter()
                    v_pool.add(raw, ctx, gossip=False)
                    admit += time.perf_counter() - t
                block = net.propose(proposer, p_pool.reap(batches, 1 << 30))
                data = block.encode()
                t = time.perf_counter()
                received = Block.decode(data, v_pool.id_of)
                validator.validate_block(received)
                validate = time.perf_counter() - t
                commit = net.sign_commit(block)
                proposer.commit_block(block, commit)
                t = time.perf_counter()
                written = validator.commit_block(received, commit)
                committed = time.perf_counter() - t
                ids = list(block.tx_ids)
                after = BlockContext(validator.chain_id, height + 1, 0)
                p_pool.update(ids, after)
                t = time.perf_counter()
                v_pool.update(ids, after, written)
                update = time.perf_counter() - t
                for step, seconds in zip(STEPS, (admit, validate, committed, update),
                                         strict=True):
                    times[step].append(seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            proposer.close()
            validator.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_block = batches * per_batch
    certs = blocks * per_block
    report: dict[str, Any] = {
        "blocks": blocks, "certs_per_block": per_block, "warmup_blocks": warmup,
    }
    for step in STEPS:
        report[f"{step}_us_per_cert"] = round(
            statistics.median(times[step][warmup:]) * 1e6 / per_block, 2)
    report["validator_us_per_cert"] = round(sum(report[f"{s}_us_per_cert"] for s in STEPS), 2)
    report["process_cpu_us_per_cert"] = round(cpu * 1e6 / certs, 1)
    report["wall_us_per_cert"] = round(wall * 1e6 / certs, 1)
    return report
