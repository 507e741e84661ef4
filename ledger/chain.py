"""The chain: a store holding blocks, commits and the authenticated state, kept consistent.

How it works
------------
* **State** lives under ``r/`` + SM3(logical key) (record bytes) and is authenticated by the
  sparse Merkle tree of ``ledger.smt`` (key SM3(logical key), value SM3(record)), whose nodes
  live under ``s/``. The SMT keeps only the latest version, so old versions are pruned by
  construction. ``ledger.state.apply_block`` computes a block's changes against a read-only
  view of the records; the chain turns them into record and SMT writes.
* **One batch per block.** ``commit_block`` verifies the commit certificate against the
  validator set of that height, validates the block (or reuses the validation it just did),
  then writes block, commit, records, SMT nodes, indexes and the new head in one
  ``WriteBatch(sync=True)``: after a crash the store is at a block boundary.
* **Open refuses a damaged store** (``CorruptStoreError`` naming the height):
  ``ledger.chain_open`` checks the schema version, genesis, the head block and its commit,
  and every state key the head block wrote against the SMT, in O(head block); older damage
  is found by ``ledger.audit``.
* **Validation first, then a cached result.** ``propose_block``/``validate_block`` leave the
  SMT holding the uncommitted update (its overlay) and remember it by block hash, so the
  usual propose -> commit and validate -> commit paths apply each block once. Any other
  block for the same height rolls that update back first. Txs the node has already
  decoded (``known_txs``, its mempool) are not parsed again.
* **Validator sets** come from state (``gov:validators``; a change at h takes effect at h+2):
  header h carries the hash of the set that signs h and of the one that signs h+1; every set
  named by a header is stored under ``v/`` + hash, so old commits stay checkable.

* **Pipelined commits** (``commit_block(..., durable=False)``, for applying blocks in bulk):
  the block's batch is prepared on the caller's thread and written (synced, atomic) by the
  writer thread while the caller applies the next block; the head moves at once. At most
  one write is in flight: the next commit, ``wait_durable`` and every read of stored
  blocks, indexes or proofs wait for it first, and the record view reads the batch in
  flight before the store, so applying the next block sees this one. A write that fails
  takes the chain back to the last durable block (dropping a block staged on top) and is
  raised by whichever of those waits. The store still moves one whole block at a time, in
  order. A commit is pipelined only while the SMT's cache holds every record: otherwise
  the tree would read nodes from a store the block has not reached yet.

Threads: one lock serialises commits with the reads that must see one version (proofs).
Proofs read the committed tree through the chain tree's record cache (every SMT record is
kept in memory and refreshed by each commit). The record view answers "does this key
exist" from an in-memory filter of the stored record keys before asking the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, KeysView, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from certificates import canonical
from certificates.hashing import sm3
from ledger import schema
from ledger.block import (
    Block,
    BlockHeader,
    compute_tx_root,
    decode_commit,
    decode_header_of_block,
    encode_commit,
)
from ledger.chain_open import corrupt, open_store, stored_validators
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.errors import (
    InvalidBlockError,
    LedgerError,
    StorageError,
    TxRejected,
)
from ledger.genesis import Genesis
from ledger.records import CERT_PREFIX, CertRecord, cert_key
from ledger.recordview import HASHES_KEPT, RecordView
from ledger.smt import (
    EMPTY_ROOT,
    SMTProof,
    SparseMerkleTree,
    Writes,
    verify_proof,
)
from ledger.smt_update import NATIVE
from ledger.smt_worker import SMTWorker
from ledger.state import BlockContext, BlockEffects, Overlay, apply_block, apply_tx, validators_at
from ledger.store import KVStore, WriteBatch
from ledger.tx import Transaction

_SIG_CACHE_LIMIT = 200_000


class StateProof(NamedTuple):
    """A record (None: absent), its SMT proof, and the committed header + commit it is under."""

    record: bytes | None
    proof: SMTProof
    header: BlockHeader
    commit: CommitCertificate


def verify_state_proof(logical_key: bytes, record: bytes | None, proof: SMTProof,
                       state_root: bytes) -> None:
    """Pure check that ``record`` (or absence) is the state under ``state_root``; ProofError."""
    verify_proof(state_root, sm3(logical_key), None if record is None else sm3(record), proof)


@dataclass
class _Prepared:
    """A block's effects applied to the SMT overlay, not yet written."""

    block_hash: bytes
    effects: BlockEffects
    root: bytes
    smt_writes: Writes
    key_hashes: dict[bytes, bytes]  # logical key -> SM3(logical key)


class _Inflight(NamedTuple):
    """A pipelined block's write, and the durable head to go back to if it fails."""

    written: Future[None]
    keys: KeysView[bytes]  # the logical keys the block wrote
    height: int
    header: BlockHeader | None
    commit: CommitCertificate | None
    root: bytes


def _encode_validators(vs: ValidatorSet) -> bytes:
    return canonical.encode(vs.to_value())


class Chain:
    """Open with ``Chain.open(store)`` (checks integrity) or ``Chain.create(store, genesis)``."""

    def __init__(self, store: KVStore, *, sig_cache: dict[bytes, bool] | None = None,
                 smt_worker: bool = False, smt_native: bool = True) -> None:
        """Prefer ``open``/``create``; this runs the same integrity check as ``open``.
        ``smt_native`` runs the SMT's C batch update where it is built
        (``ledger.smt_update.NATIVE``). ``smt_worker`` computes half of each large SMT
        update in a second process (``ledger.smt_worker``): worth it where a core is free
        for it, and only without the C update, which beats the two processes alone; with
        it, no worker is started."""
        self._store = store
        self._lock = threading.RLock()
        self._view = RecordView(store)
        self._sig_cache: dict[bytes, bool] = {} if sig_cache is None else sig_cache
        self._pending: _Prepared | None = None
        self._inflight: _Inflight | None = None
        # Runs each block's synced write while this thread refreshes the SMT's record cache
        # (LevelDB releases the GIL for the write; the refresh is ~5% of a block's apply).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="chain-write")
        #: tx id -> that tx already decoded (the node's mempool), or None: blocks then
        #: reuse it instead of parsing their txs again.
        self.known_txs: Callable[[bytes], Transaction | None] | None = None
        opened = open_store(store)  # refuses a damaged store (ledger.chain_open)
        self._genesis, self._head_height, self._root = opened.genesis, opened.head, opened.root
        self._tree = opened.tree
        self._tree.native = smt_native
        native = smt_native and NATIVE
        self._smt_worker = SMTWorker() if smt_worker and not native else None
        if self._smt_worker is not None:
            self._tree.attach_worker(self._smt_worker)
        self._view.set_filter(opened.known)
        self._head_header: BlockHeader | None = opened.header
        self._head_commit: CommitCertificate | None = opened.commit

    # ------------------------------------------------------------------ open / create

    @classmethod
    def open(cls, store: KVStore, *, sig_cache: dict[bytes, bool] | None = None,
             smt_worker: bool = False, smt_native: bool = True) -> Chain:
        return cls(store, sig_cache=sig_cache, smt_worker=smt_worker, smt_native=smt_native)

    @classmethod
    def create(cls, store: KVStore, genesis: Genesis, *,
               sig_cache: dict[bytes, bool] | None = None, smt_worker: bool = False,
               smt_native: bool = True) -> Chain:
        """Initialise an empty store with the genesis state (height 0)."""
        if next(iter(store.iterate()), None) is not None:
            raise StorageError("the store already holds data: open it instead of creating it")
        state = genesis.initial_state()
        tree = SparseMerkleTree(store.get, schema.smt_node, EMPTY_ROOT)
        hashes = {k: sm3(k) for k in state}
        root, writes = tree.update({hashes[k]: sm3(v) for k, v in state.items()})
        b = WriteBatch()
        b.put(schema.meta_schema_version(), schema.encode_height(schema.SCHEMA_VERSION))
        b.put(schema.meta_genesis(), genesis.dumps().encode("utf-8"))
        for k, v in state.items():
            b.put(schema.record(hashes[k]), v)
        for key, rec in writes:
            if rec is not None:
                b.put(key, rec)
        for h in (1, 2):
            vs = validators_at(state, h)
            b.put(schema.validators(vs.hash), _encode_validators(vs))
        b.put(schema.meta_genesis_state_root(), root)
        b.put(schema.meta_smt_root(), root)
        b.put(schema.meta_head_height(), schema.encode_height(0))
        b.put(schema.meta_head_footprint(), b"".join(hashes.values()))
        store.write(b, sync=True)
        return cls(store, sig_cache=sig_cache, smt_worker=smt_worker, smt_native=smt_native)

    @classmethod
    def open_or_create(cls, store: KVStore, genesis: Genesis) -> Chain:
        """What a node does at start: create on an empty store, else open and match genesis."""
        if next(iter(store.iterate()), None) is None:
            return cls.create(store, genesis)
        chain = cls.open(store)
        if chain.genesis.hash != genesis.hash:
            raise StorageError(
                f"the data directory holds chain {chain.genesis.chain_id!r} from another genesis "
                f"({chain.genesis.hash.hex()[:16]}…, configured {genesis.hash.hex()[:16]}…)")
        return chain

    # ------------------------------------------------------------------ head and queries

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    @property
    def chain_id(self) -> str:
        return self._genesis.chain_id

    @property
    def store(self) -> KVStore:
        return self._store

    @property
    def smt_update(self) -> str:
        """Which SMT batch update runs: "c" (``ledger/_smtcore.c``), "python+worker" or
        "python" - the same roots and writes, at different speeds (for the node's log)."""
        if self._tree.native and NATIVE:
            return "c"
        return "python+worker" if self._smt_worker is not None else "python"

    @property
    def head_height(self) -> int:
        return self._head_height

    @property
    def head_header(self) -> BlockHeader | None:
        """None at height 0 (only the genesis state exists)."""
        return self._head_header

    @property
    def head_hash(self) -> bytes:
        """Hash of the head block; the genesis hash at height 0 (block 1's prev_hash)."""
        return self._genesis.hash if self._head_header is None else self._head_header.hash

    @property
    def state_root(self) -> bytes:
        """Committed state root (the head header's state_root; the genesis root at 0)."""
        return self._root

    def block(self, height: int) -> Block | None:
        data = self.block_bytes(height)
        return None if data is None else Block.decode(data)

    def header(self, height: int) -> BlockHeader | None:
        """A committed header without decoding its block's transactions."""
        data = self.block_bytes(height)
        return None if data is None else decode_header_of_block(data)

    def block_bytes(self, height: int) -> bytes | None:
        self._stored()
        return self._store.get(schema.block(height)) if height >= 1 else None

    def commit(self, height: int) -> CommitCertificate | None:
        self._stored()
        data = self._store.get(schema.commit(height)) if height >= 1 else None
        return None if data is None else decode_commit(data)

    def height_of(self, block_hash: bytes) -> int | None:
        self._stored()
        data = self._store.get(schema.block_hash(block_hash))
        return None if data is None else schema.decode_height(data)

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        self._stored()
        data = self._store.get(schema.tx(tx_id))
        return None if data is None else schema.decode_tx_location(data)

    def transaction(self, tx_id: bytes) -> bytes | None:
        loc = self.tx_location(tx_id)
        block = None if loc is None else self.block(loc[0])
        return None if block is None or loc is None else block.txs[loc[1]]

    def record(self, logical_key: bytes) -> bytes | None:
        return self._view.get(logical_key)

    def records(self, logical_keys: Sequence[bytes]) -> list[bytes | None]:
        """``record`` of each key (``StateView.get_many``)."""
        return self._view.get_many(logical_keys)

    def certificate(self, cert_id: str) -> CertRecord | None:
        data = self._view.get(cert_key(cert_id))
        return None if data is None else CertRecord.from_bytes(data)

    def certificates_by_issuer(self, issuer: str, start: str | None = None,
                               limit: int = 100) -> list[str]:
        prefix = schema.issuer_certificates_prefix(issuer)
        first = None if start is None else schema.issuer_certificate(issuer, start)
        self._stored()
        out = []
        for key, _ in self._store.iterate(prefix, first):
            out.append(schema.certificate_id_from_issuer_key(key))
            if len(out) >= limit:
                break
        return out

    def prove(self, logical_key: bytes) -> StateProof:
        """Record + SMT proof under the head header, with the head's commit certificate."""
        return self.prove_many((logical_key,))[0]

    def prove_many(self, logical_keys: Sequence[bytes]) -> list[StateProof]:
        """``prove`` for each key, all under the same head (one hold of the lock)."""
        with self._lock:
            self._settle()
            header, commit = self._head_header, self._head_commit
            if header is None or commit is None:
                raise LedgerError("no block is committed yet: nothing to prove against")
            # A tree on the committed root (the chain's own may hold a staged block), read
            # through the chain tree's committed records; its own cache is off.
            tree = SparseMerkleTree(self._tree.get_committed, schema.smt_node, self._root,
                                    cache_depth=-1)
            get, out = self._store.get, []
            for key in logical_keys:
                kh = sm3(key)
                out.append(StateProof(get(schema.record(kh)), tree.prove(kh), header, commit))
            return out

    def prove_certificate(self, cert_id: str) -> StateProof:
        return self.prove(cert_key(cert_id))

    def validator_set(self, height: int) -> ValidatorSet:
        """The set that signs block ``height``; known up to head + 2."""
        with self._lock:
            head = self._head_height
            if 1 <= height <= head:
                header = self.header(height)  # waits for a write in flight (stored reads)
                if header is None:
                    raise corrupt(height, "block is missing")
                return stored_validators(self._store, header.validators_hash, height)
            if head < height <= head + 2:
                return validators_at(self._view, height)
            raise LedgerError(f"no validator set for height {height} (head is {head})")

    # ------------------------------------------------------------------ blocks

    def _min_time(self, height: int) -> int:
        hdr = self._head_header
        return self._genesis.genesis_time if hdr is None else hdr.time_ms + 1

    def _ctx(self, height: int, time_ms: int) -> BlockContext:
        return BlockContext(self._genesis.chain_id, height, time_ms)

    def _rollback(self) -> None:
        if self._pending is not None:
            self._tree.rollback()
            self._pending = None

    def _stage(self, block_hash: bytes, effects: BlockEffects) -> _Prepared:
        """Apply ``effects`` to the SMT overlay (rolling back any other staged block)."""
        self._rollback()
        known = self._view.hashes
        hashes = {k: known.get(k) or sm3(k) for k in effects.updates}
        if len(known) >= HASHES_KEPT:
            self._view.hashes = {}
        items = {hashes[k]: None if v is None else sm3(v) for k, v in effects.updates.items()}
        root, writes = self._tree.update(items)
        self._pending = _Prepared(block_hash, effects, root, writes, hashes)
        return self._pending

    def propose_block(
        self, txs: Iterable[bytes | Transaction], time_ms: int, proposer: bytes, round_: int = 0,
        *, on_reject: Callable[[bytes, TxRejected], None] | None = None,
    ) -> Block:
        """Build the next block from the txs that apply, in order; the rest are dropped
        (``on_reject(tx_id, error)`` is told why). ``time_ms`` is raised to keep block times
        strictly increasing."""
        with self._lock:
            height = self._head_height + 1
            ctx = self._ctx(height, max(time_ms, self._min_time(height)))
            begin = apply_block(self._view, (), ctx)  # start-of-block changes (validator sets)
            ov = Overlay(self._view)
            ov.updates.update(begin.updates)
            kept: list[bytes] = []
            ids: list[bytes] = []
            results = []
            for tx in txs:
                # A decoded tx knows its id (SM3 of its bytes); a batch tx is ~1 MB to hash.
                if isinstance(tx, Transaction):
                    raw, tid = tx.to_bytes(), tx.id
                else:
                    raw, tid = tx, sm3(tx)
                    tx = self._decoded(tid, raw)
                try:
                    eff = apply_tx(ov, tx, ctx, sig_cache=self._sig_cache, index=len(kept))
                except TxRejected as exc:
                    if on_reject is not None:
                        on_reject(tid, exc)
                    continue
                ov.updates.update(eff.updates)
                results.append(eff.result)
                kept.append(raw)
                ids.append(tid)
            effects = BlockEffects(ov.updates, tuple(results), begin.validators,
                                   validators_at(ov, height + 1))
            staged = self._stage(b"", effects)
            header = BlockHeader(
                chain_id=ctx.chain_id, height=height, prev_hash=self.head_hash,
                time_ms=ctx.time_ms, proposer=proposer, round=round_,
                tx_root=compute_tx_root(ids), state_root=staged.root,
                validators_hash=effects.validators.hash,
                next_validators_hash=effects.next_validators.hash,
            )
            staged.block_hash = header.hash
            self._trim_sig_cache()
            return Block.with_ids(header, tuple(kept), tuple(ids))

    def _decoded(self, tx_id: bytes, raw: bytes) -> Transaction | bytes:
        # Same id, same bytes (SM3): the known tx is exactly what parsing raw would give.
        known = self.known_txs
        tx = None if known is None else known(tx_id)
        return raw if tx is None else tx

    def validate_block(self, block: Block) -> None:
        """Raise ``InvalidBlockError`` (``.rule`` names the rule) unless ``block`` is the valid
        next block; on success its effects stay staged for ``commit_block``."""
        with self._lock:
            self._validate(block)

    def _validate(self, block: Block) -> _Prepared:
        if self._pending is not None and self._pending.block_hash == block.hash:
            return self._pending
        hdr, height = block.header, self._head_height + 1

        def bad(rule: str, what: str) -> InvalidBlockError:
            return InvalidBlockError(f"block {hdr.height}: {what}", rule)

        if hdr.chain_id != self.chain_id:
            raise bad("chain_id", f"chain id {hdr.chain_id!r} is not {self.chain_id!r}")
        if hdr.height != height:
            raise bad("height", f"height {hdr.height} is not the next height {height}")
        if hdr.prev_hash != self.head_hash:
            raise bad("prev_hash", f"prev_hash {hdr.prev_hash.hex()[:16]}… is not the head "
                                   f"{self.head_hash.hex()[:16]}…")
        if hdr.time_ms < self._min_time(height):
            raise bad("time", f"time {hdr.time_ms} is not after the previous block's "
                              f"({self._min_time(height) - 1})")
        if block.computed_tx_root() != hdr.tx_root:
            raise bad("tx_root", "tx_root does not match the transactions")
        vs = validators_at(self._view, height)
        if hdr.validators_hash != vs.hash:
            raise bad("validators_hash", "validators_hash is not the hash of this height's set")
        if hdr.proposer not in vs.by_key_id:
            raise bad("proposer", f"proposer {hdr.proposer.hex()} is not a validator")
        txs = [self._decoded(i, raw) for i, raw in zip(block.tx_ids, block.txs, strict=True)]
        try:
            effects = apply_block(self._view, txs, self._ctx(height, hdr.time_ms),
                                  sig_cache=self._sig_cache)
        except TxRejected as exc:
            raise bad("tx_rejected", str(exc)) from exc
        finally:
            self._trim_sig_cache()
        if hdr.next_validators_hash != effects.next_validators.hash:
            raise bad("next_validators_hash", "next_validators_hash is not the next set's hash")
        staged = self._stage(block.hash, effects)
        if staged.root != hdr.state_root:
            self._rollback()
            raise bad("state_root", f"state_root {hdr.state_root.hex()[:16]}… differs from the "
                                    f"state after its transactions ({staged.root.hex()[:16]}…)")
        return staged

    def commit_block(self, block: Block, commit: CommitCertificate, *,
                     signatures_checked: bool = False, durable: bool = True) -> KeysView[bytes]:
        """Verify ``commit`` for ``block``, validate it, and persist it in one synced batch.

        ``signatures_checked``: the caller verified every signature of ``commit`` over its
        sign bytes (a node's consensus core does, for the votes it counts and for a
        synced block's commit); its signers, their quorum, height and block hash are
        still checked here. ``durable=False`` pipelines the commit (see the module's
        header): it returns once the write is under way, not done. Returns the logical
        state keys the block wrote (the mempool re-checks only the pending txs that read
        one of them)."""
        with self._lock:
            self._settle()
            height = self._head_height + 1
            if block.height != height:
                raise InvalidBlockError(
                    f"block {block.height}: height is not the next height {height}", "height")
            commit.verify(self.chain_id, validators_at(self._view, height), height=height,
                          block_hash=block.hash, signatures=not signatures_checked)
            staged = self._validate(block)
            batch = self._batch(block, commit, staged)
            # Prepared here, where the GIL is at hand (``KVStore.prepare`` says why); a
            # failure so far has written nothing and leaves the block staged.
            write = self._store.prepare(batch, True)
            # Before the write: the filter may over-report (harmless), never under-report.
            self._view.learn(staged.key_hashes.values())
            keys = staged.effects.updates.keys()
            if not durable and self._tree.complete:
                self._inflight = _Inflight(self._writer.submit(write), keys, self._head_height,
                                           self._head_header, self._head_commit, self._root)
                self._view.inflight = batch.ops
                self._view.forget(keys)
                self._tree.commit()
                self._pending = None
                self._head_height, self._head_header = height, block.header
                self._head_commit, self._root = commit, staged.root
                return keys
            written = self._writer.submit(write)
            # While the write runs, move the tree's overlay into its cache; undone below if
            # the write fails, so nothing is served that the store did not get.
            self._tree.commit()
            self._pending = None
            interrupted = self._await_write(written, self._root)
            self._view.forget(keys)
            self._head_height, self._head_header, self._head_commit = height, block.header, commit
            self._root = staged.root
            if interrupted is not None:
                raise interrupted  # after the head moved: the block is stored
            return keys

    def wait_durable(self) -> None:
        """Return once every committed block is stored; raise the error of a pipelined
        write that failed (the chain is then back at the last stored block)."""
        with self._lock:
            self._settle()

    def _stored(self) -> None:
        """Before a read of stored blocks or indexes: wait for a pipelined write."""
        if self._inflight is not None:
            with self._lock:
                self._settle()

    def _settle(self) -> None:
        """Wait for the pipelined write in flight (with the lock held). If it failed, the
        chain goes back to the head before it, a block staged on top is dropped, and the
        write's error is raised."""
        inflight = self._inflight
        if inflight is None:
            return
        try:
            interrupted = self._await_write(inflight.written, None)
        except BaseException:
            self._inflight = None
            self._view.inflight = None
            self._rollback()
            self._tree.revert_commit(inflight.root)
            self._view.forget(inflight.keys)
            self._head_height, self._head_header = inflight.height, inflight.header
            self._head_commit, self._root = inflight.commit, inflight.root
            raise
        self._inflight = None
        self._view.inflight = None
        if interrupted is not None:
            raise interrupted

    def _await_write(self, written: Future[None], root: bytes | None) -> BaseException | None:
        """Wait for a block's write. If it failed, put the tree back at ``root`` (unless
        None: the caller does) and raise its error. An interrupt (Ctrl-C) while it runs does
        not stop it: wait on, so the chain follows what the store holds, and return the
        interrupt for the caller to raise after."""
        interrupted: BaseException | None = None
        while True:
            try:
                written.result()
                return interrupted
            except BaseException as exc:
                if not written.done():  # interrupted waiting; the write goes on
                    interrupted = interrupted or exc
                    continue
                if written.exception() is None:  # it was stored; exc was an interrupt
                    return interrupted or exc
                if root is not None:
                    self._tree.revert_commit(root)
                raise

    def _batch(self, block: Block, commit: CommitCertificate, staged: _Prepared) -> WriteBatch:
        height, eff = block.height, staged.effects
        b = WriteBatch()
        put = b.put
        put(schema.block(height), block.encode())
        put(schema.commit(height), encode_commit(commit))
        put(schema.block_hash(block.hash), schema.encode_height(height))
        for i, tid in enumerate(block.tx_ids):
            put(schema.tx(tid), schema.encode_tx_location(height, i))
        hashes, rec_prefix = staged.key_hashes, schema.RECORD_PREFIX
        idx_prefix, cert_len, ops = schema.ISSUER_INDEX_PREFIX, len(CERT_PREFIX), b.ops
        # The hot loop (a record per certificate): fill the batch's dict directly, where a
        # None value is a delete, as WriteBatch.delete would store it.
        for key, value in eff.updates.items():
            ops[rec_prefix + hashes[key]] = value
            if value is not None and key[:cert_len] == CERT_PREFIX:
                # cert id = 1.2.156.3005.2.TYPE.ISSUER.…: index by the issuer part. Status
                # changes re-put the same empty entry, which is harmless.
                cid = key[cert_len:]
                ops[idx_prefix + cid.split(b".", 7)[6] + b"\x00" + cid] = b""
        b.add_run(staged.smt_writes)
        for vs in (eff.validators, eff.next_validators):
            put(schema.validators(vs.hash), _encode_validators(vs))
        put(schema.meta_head_height(), schema.encode_height(height))
        put(schema.meta_smt_root(), staged.root)
        put(schema.meta_head_footprint(), b"".join(hashes.values()))
        return b

    def _trim_sig_cache(self) -> None:
        if len(self._sig_cache) > _SIG_CACHE_LIMIT:
            self._sig_cache.clear()

    def close(self) -> None:
        with self._lock:
            try:
                self._settle()  # a pipelined write still in flight; its error is raised
            finally:
                self._rollback()
                self._writer.shutdown()
                if self._smt_worker is not None:
                    self._smt_worker.close()
                self._store.close()


def block_sequence(chain: Chain, start: int = 1, end: int | None = None
                   ) -> Iterable[tuple[Block, CommitCertificate]]:
    """Committed blocks with their commits from ``start`` to ``end`` (sync, audit, export)."""
    last = chain.head_height if end is None else min(end, chain.head_height)
    for h in range(max(start, 1), last + 1):
        block, commit = chain.block(h), chain.commit(h)
        if block is None or commit is None:
            raise corrupt(h, "block or commit is missing")
        yield block, commit


__all__: Sequence[str] = ("Chain", "StateProof", "block_sequence", "verify_state_proof")
