"""The SMT worker (ledger.smt_worker) gives exactly the single-process roots and writes.

Every test drives two trees side by side, one computing alone and one handing the right half
of each batch to a worker process, and compares the root and the write list after every
update, through commits, rollbacks, several pending updates, deletes that reshape the root,
and a worker that dies, errs or holds a stale copy. One worker process serves the module
(spawning one per example would dominate the run time): attaching it to a new tree drops
its copy, and each test checks that the worker did take part.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates.hashing import sm3
from ledger.smt import CACHE_ALL, SparseMerkleTree, verify_proof
from ledger.smt_worker import SMTWorker

PREFIX = b"s/"


@pytest.fixture(scope="module")
def worker() -> Iterator[SMTWorker]:
    w = SMTWorker(min_keys=1, reply_timeout=30.0)
    yield w
    w.close()


class Pair:
    """A tree alone and a tree with the worker, over two dict stores, kept in lockstep."""

    def __init__(self, worker: SMTWorker) -> None:
        self.stores: tuple[dict[bytes, bytes], dict[bytes, bytes]] = ({}, {})
        self.alone = SparseMerkleTree(self.stores[0].get, PREFIX.__add__, cache_depth=CACHE_ALL)
        self.split = SparseMerkleTree(self.stores[1].get, PREFIX.__add__, cache_depth=CACHE_ALL)
        self.split.attach_worker(worker)
        self.pending: list[tuple[list[tuple[bytes, bytes | None]],
                                 list[tuple[bytes, bytes | None]]]] = []
        self.contents: dict[bytes, bytes] = {}
        self.staged: dict[bytes, bytes] = {}

    def update(self, items: dict[bytes, bytes | None]) -> None:
        ra, wa = self.alone.update(items)
        rb, wb = self.split.update(items)
        assert rb == ra
        assert dict(wb) == dict(wa)
        self.pending.append((list(wa), list(wb)))
        for k, v in items.items():
            if v is None:
                self.staged.pop(k, None)
            else:
                self.staged[k] = v

    def commit(self) -> None:
        for wa, wb in self.pending:
            for store, writes in zip(self.stores, (wa, wb), strict=True):
                for k, v in writes:
                    if v is None:
                        store.pop(k, None)
                    else:
                        store[k] = v
        self.pending = []
        self.alone.commit()
        self.split.commit()
        self.contents = dict(self.staged)

    def rollback(self) -> None:
        self.pending = []
        self.alone.rollback()
        self.split.rollback()
        self.staged = dict(self.contents)
        assert self.split.root == self.alone.root


def _key(rng: random.Random) -> bytes:
    return sm3(rng.randbytes(8))


def _batch(rng: random.Random, pair: Pair, size: int, deletes: float) -> dict[bytes, bytes | None]:
    items: dict[bytes, bytes | None] = {}
    live = list(pair.staged)
    for _ in range(size):
        if live and rng.random() < deletes:
            items[rng.choice(live)] = None
        elif live and rng.random() < 0.2:
            items[rng.choice(live)] = _key(rng)  # a status change: same key, new value
        else:
            items[_key(rng)] = _key(rng)
    return items


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1),
       steps=st.lists(st.tuples(st.sampled_from([1, 2, 5, 40, 300]),
                                st.sampled_from([0.0, 0.2, 0.6]),
                                st.sampled_from(["commit", "commit", "rollback", "keep"])),
                      min_size=1, max_size=25))
def test_same_roots_and_writes_as_one_process(
    worker: SMTWorker, seed: int, steps: list[tuple[int, float, str]]
) -> None:
    rng = random.Random(seed)
    pair = Pair(worker)
    before = worker.delegated
    pair.update({_key(rng): _key(rng) for _ in range(400)})
    pair.commit()
    pair.update({_key(rng): _key(rng) for _ in range(50)})  # the worker's first batch
    for size, deletes, then in steps:
        pair.update(_batch(rng, pair, size, deletes))
        if then == "commit":
            pair.commit()
        elif then == "rollback":
            pair.rollback()
    pair.commit()
    assert worker.broken is None
    assert worker.delegated > before  # the worker computed some of it
    # What the split tree serves is the committed contents.
    for key in rng.sample(sorted(pair.contents), min(20, len(pair.contents))):
        assert pair.split.get_value(key) == pair.contents[key]
        verify_proof(pair.split.root, key, pair.contents[key], pair.split.prove(key))


def test_reshaped_root_deactivates_and_reactivates(worker: SMTWorker) -> None:
    rng = random.Random(7)
    pair = Pair(worker)
    _grow(pair, rng, 600, 50)
    assert worker.active
    # Empty the left half: the right branch rises to the root, moving records across the
    # boundary, so the worker's copy no longer matches and it must stand down.
    pair.update({k: None for k in pair.contents if k[0] < 0x80})
    assert not worker.active
    pair.commit()
    # Keys on the left again make the root a depth-0 branch: the worker is loaded afresh.
    before = worker.delegated
    _grow(pair, rng, 400, 100)
    assert worker.active and worker.delegated > before
    assert worker.broken is None


@pytest.fixture
def own_worker() -> Iterator[SMTWorker]:
    """A worker of the test's own: these tests break or kill it."""
    w = SMTWorker(min_keys=1, reply_timeout=30.0)
    yield w
    w.close()
    assert w._proc is None


def _grow(pair: Pair, rng: random.Random, *sizes: int) -> None:
    """Insert batches of fresh keys of ``sizes``, committing each."""
    for n in sizes:
        pair.update({_key(rng): _key(rng) for _ in range(n)})
        pair.commit()


def test_a_stale_copy_is_caught_and_the_tree_computes_alone(own_worker: SMTWorker) -> None:
    # The broken rule: a commit whose writes the worker drops. The stale copy must be
    # refused (its top record no longer hashes to the tree's right child), not used.
    w, rng = own_worker, random.Random(3)
    pair = Pair(w)
    _grow(pair, rng, 500)
    pair.update({_key(rng): _key(rng) for _ in range(100)})
    assert w.active
    w.commit = w.rollback  # type: ignore[method-assign]
    pair.commit()
    del w.commit  # the worker is used again, on its old copy
    pair.update({_key(rng): _key(rng) for _ in range(100)})  # roots still equal
    assert w.broken is not None and "stale" in w.broken
    assert not w.active
    pair.commit()
    _grow(pair, rng, 100)


def test_a_dead_worker_leaves_the_tree_computing_alone(own_worker: SMTWorker) -> None:
    w, rng = own_worker, random.Random(5)
    pair = Pair(w)
    _grow(pair, rng, 500, 100)
    assert w.active and w._proc is not None
    w._proc.kill()
    w._proc.wait(10)
    pair.update({_key(rng): _key(rng) for _ in range(100)})  # roots still equal
    assert w.broken is not None and not w.active
    pair.commit()


def test_an_interrupt_while_waiting_ends_the_worker(own_worker: SMTWorker) -> None:
    # Ctrl-C in the middle of an exchange leaves a reply in the pipe: a later update must
    # never read it as its own, so the worker is stopped and the tree computes alone.
    w, rng = own_worker, random.Random(9)
    pair = Pair(w)
    _grow(pair, rng, 500, 100)
    assert w.active and w._conn is not None

    def poll(timeout: float) -> bool:
        raise KeyboardInterrupt

    w._conn.poll = poll  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        pair.update({_key(rng): _key(rng) for _ in range(100)})
    assert w.broken is not None and "interrupted" in w.broken and w._proc is None
    pair.rollback()
    _grow(pair, rng, 100, 100)  # roots and writes still equal


def test_a_chain_with_the_worker_commits_the_same_blocks() -> None:
    from ledger.bench import BenchNetwork
    from ledger.chain import Chain
    from ledger.store import MemoryStore

    net = BenchNetwork()
    chains = [Chain.create(MemoryStore(), net.genesis, smt_worker=w, smt_native=False)
              for w in (False, True)]
    split = chains[1]
    worker = split._smt_worker
    assert worker is not None
    try:
        for first in range(0, 3600, 1200):  # ~600 keys a block in the right half
            tx = net.batch(first, 1200)
            block = net.propose(chains[0], [tx])
            commit = net.sign_commit(block)
            for chain in chains:
                chain.validate_block(block)  # a follower's path: re-applies the block
                chain.commit_block(block, commit)
        assert split.state_root == chains[0].state_root
        # Not just the root: every stored byte (blocks, records, SMT records) is the same.
        assert dict(split.store.iterate()) == dict(chains[0].store.iterate())
        assert worker.delegated >= 2 and worker.broken is None
        proof = split.prove_certificate(net.cert_id(2500))
        assert proof.record is not None
    finally:
        for chain in chains:
            chain.close()
    assert worker._proc is None  # close() stopped the process


_PARENT = """
import sys, time
from certificates.hashing import sm3
from ledger.smt import CACHE_ALL, SparseMerkleTree
from ledger.smt_worker import SMTWorker
store = {}
tree = SparseMerkleTree(store.get, b"s/".__add__, cache_depth=CACHE_ALL)
worker = SMTWorker(min_keys=1)
tree.attach_worker(worker)
for batch in range(2):
    root, writes = tree.update({sm3(b"%d/%d" % (batch, i)): sm3(b"v") for i in range(300)})
    store.update(writes)
    tree.commit()
assert worker.active and worker._proc is not None
print(worker._proc.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def test_the_worker_does_not_outlive_a_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"worker {pid} still running after its parent was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_the_ledger_bench_counts_the_worker_cpu(tmp_path: Path) -> None:
    from ledger.bench import run

    on = run(2400, per_block=1200, proofs=20, data_dir=str(tmp_path / "on"), smt_native=False)
    off = run(2400, per_block=1200, proofs=20, data_dir=str(tmp_path / "off"),
              smt_worker=False, smt_native=False)
    assert on["smt_worker"] is True and on["smt_worker_cpu_s"] > 0
    assert off["smt_worker"] is False and off["smt_worker_cpu_s"] == 0


def test_a_chain_says_which_smt_update_it_runs() -> None:
    from ledger.bench import BenchNetwork
    from ledger.chain import Chain
    from ledger.store import MemoryStore

    net = BenchNetwork()
    expected = {(True, False): "c", (True, True): "c", (False, False): "python",
                (False, True): "python+worker"}
    for (native, worker), name in expected.items():
        chain = Chain.create(MemoryStore(), net.genesis, smt_worker=worker, smt_native=native)
        try:
            assert chain.smt_update == name, (native, worker)
        finally:
            chain.close()


def test_with_the_c_update_the_ledger_bench_starts_no_worker(tmp_path: Path) -> None:
    from ledger.bench import run
    from ledger.smt_update import NATIVE

    assert NATIVE, "the C SMT update (ledger/_smtcore.c) was not built by the install"
    native = run(2400, per_block=1200, proofs=20, data_dir=str(tmp_path / "c"))
    assert native["smt_native"] is True
    assert native["smt_worker"] is False and native["smt_worker_cpu_s"] == 0
