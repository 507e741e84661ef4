"""``certledger audit DATA_DIR``: re-check a whole data directory from its genesis.

How it works
------------
The audit trusts nothing in the store but the genesis it holds (``m/g``). It builds a
*replica*: a fresh ``Chain`` on a ``MemoryStore`` created from that genesis, then feeds it
every stored block with its stored commit, in height order, through the same
``Chain.commit_block`` a node uses. That re-checks, per height, the hash chain (prev_hash),
the commit certificate against the validator set of that height, the tx_root, the block
time, the validator hashes, that every transaction applies, and the state_root (the SMT root
recomputed from scratch). The first failure is reported with its height.

If every block replays, the replica's store must equal the audited store key for key: same
records, SMT nodes, indexes and metadata. A difference (a deleted state record or SMT node, a
flipped byte in an index) is mapped to the height that last wrote the key: by the key or
value for blocks, commits and indexes, and for state keys by a second replay that watches
just the differing keys. So damage anywhere is reported at the height it belongs to.

The replica lives in memory (roughly 1 KB per certificate); use a machine that can hold it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from ledger import schema
from ledger.block import Block, decode_commit
from ledger.chain import Chain
from ledger.errors import CorruptStoreError, GenesisError, LedgerError, StorageError
from ledger.genesis import Genesis
from ledger.store import KVStore, LevelDBStore, MemoryStore, WriteBatch

_MAX_DIFFS = 64


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    head_height: int | None  # what the store claims
    blocks_checked: int  # blocks that replayed cleanly
    bad_height: int | None = None  # first height found bad (None: ok, or not attributable)
    reason: str = ""
    keys_compared: int = 0
    opened: bool = True  # False: the directory could not be opened as a store at all

    def summary(self) -> str:
        if self.ok:
            return (f"audit OK: height {self.head_height}, {self.blocks_checked} blocks replayed "
                    f"from genesis (hash chain, commits, tx roots, state roots); "
                    f"{self.keys_compared} stored keys match the replay")
        where = "" if self.bad_height is None else f" at height {self.bad_height}"
        return f"audit FAILED{where}: {self.reason}"


class _Bad(Exception):
    def __init__(self, height: int | None, reason: str) -> None:
        super().__init__(reason)
        self.height, self.reason = height, reason


def audit(data_dir: str | os.PathLike[str]) -> AuditReport:
    """Audit the LevelDB store in ``data_dir`` (it must not be open in a running node)."""
    note = ""
    try:
        store = LevelDBStore(data_dir, create=False, check_tables=False)
    except StorageError as exc:
        return AuditReport(False, None, 0, None, str(exc), opened=False)
    try:
        try:
            store.check_tables()
        except CorruptStoreError as exc:
            note = f"{exc}. "  # keep going: the walk below names the heights that are lost
        report = audit_store(store)
    finally:
        store.close()
    if note and report.ok:  # the damaged table held nothing the audit needed: still damage
        return AuditReport(False, report.head_height, report.blocks_checked, None, note)
    return dataclasses.replace(report, reason=note + report.reason) if note else report


def audit_store(store: KVStore) -> AuditReport:
    head: int | None = None
    checked = 0
    try:
        genesis, head = _read_meta(store)
        replica = Chain.create(MemoryStore(), genesis)
        if store.get(schema.meta_genesis_state_root()) != replica.state_root:
            raise _Bad(0, "the stored genesis state root is not the root of the genesis state")
        for block, commit_bytes in _stored_blocks(store, head):
            try:
                replica.commit_block(block, decode_commit(commit_bytes))
            except LedgerError as exc:
                raise _Bad(block.height, str(exc)) from exc
            checked += 1
        compared = _compare(store, replica.store, genesis, head)
    except _Bad as bad:
        return AuditReport(False, head, checked, bad.height, bad.reason)
    except CorruptStoreError as exc:  # an unreadable table outside the block walk
        return AuditReport(False, head, checked, exc.height, str(exc))
    return AuditReport(True, head, checked, keys_compared=compared)


def _read_meta(store: KVStore) -> tuple[Genesis, int]:
    try:
        version = store.get(schema.meta_schema_version())
        raw_genesis = store.get(schema.meta_genesis())
        raw_head = store.get(schema.meta_head_height())
    except CorruptStoreError as exc:
        # Without the genesis nothing above it can be re-verified: height 0 is the first bad.
        raise _Bad(0, f"store metadata (schema, genesis, head) is unreadable: {exc}") from exc
    if version != schema.encode_height(schema.SCHEMA_VERSION):
        raise _Bad(None, f"schema version {version!r} is not {schema.SCHEMA_VERSION} "
                         "(or not a certledger store)")
    if raw_genesis is None or raw_head is None:
        raise _Bad(0, "the stored genesis or head height is missing")
    try:
        genesis = Genesis.loads(raw_genesis.decode("utf-8"))
    except (GenesisError, UnicodeDecodeError) as exc:
        raise _Bad(0, f"the stored genesis does not load: {exc}") from exc
    try:
        return genesis, schema.decode_height(raw_head)
    except ValueError as exc:
        raise _Bad(None, f"head height: {exc}") from exc


def _stored_blocks(store: KVStore, head: int) -> Iterator[tuple[Block, bytes]]:
    """Blocks 1..head with their commit bytes; a block above the head is damage too."""
    for height in itertools.count(1):
        try:
            raw = store.get(schema.block(height))
            commit = store.get(schema.commit(height))
        except CorruptStoreError as exc:
            raise _Bad(height, f"block or commit is unreadable: {exc}") from exc
        if raw is None:
            if height <= head:
                raise _Bad(height, "the block is missing")
            return
        if height > head:
            raise _Bad(height, f"a block is stored above the head height {head}")
        if commit is None:
            raise _Bad(height, "the commit certificate is missing")
        try:
            block = Block.decode(raw)
        except LedgerError as exc:
            raise _Bad(height, f"stored block does not decode: {exc}") from exc
        if block.height != height:
            raise _Bad(height, f"the block stored at height {height} says {block.height}")
        yield block, commit


def _diff(a: KVStore, b: KVStore) -> tuple[int, list[tuple[bytes, bytes | None, bytes | None]]]:
    """Keys whose values differ between ``a`` and ``b`` (merged sorted walk)."""
    diffs: list[tuple[bytes, bytes | None, bytes | None]] = []
    count = 0
    ia, ib = a.iterate(), b.iterate()
    ka = next(ia, None)
    kb = next(ib, None)
    while (ka is not None or kb is not None) and len(diffs) < _MAX_DIFFS:
        count += 1
        if kb is None or (ka is not None and ka[0] < kb[0]):
            assert ka is not None
            diffs.append((ka[0], ka[1], None))
            ka = next(ia, None)
        elif ka is None or kb[0] < ka[0]:
            diffs.append((kb[0], None, kb[1]))
            kb = next(ib, None)
        else:
            if ka[1] != kb[1]:
                diffs.append((ka[0], ka[1], kb[1]))
            ka, kb = next(ia, None), next(ib, None)
    return count, diffs


def _compare(store: KVStore, replica: KVStore, genesis: Genesis, head: int) -> int:
    unreadable = ""
    try:
        count, diffs = _diff(store, replica)
    except CorruptStoreError as exc:
        # Part of the store cannot be read: find which of the keys it should hold are lost.
        unreadable, count = f" ({exc})", 0
        diffs = []
        for key, value in replica.iterate():
            try:
                store.get(key)
            except CorruptStoreError:
                diffs.append((key, None, value))
                if len(diffs) >= _MAX_DIFFS:
                    break
        if not diffs:
            raise _Bad(None, f"the store has unreadable data{unreadable}") from exc
    if not diffs:
        return count
    heights: dict[bytes, int] = {}
    unplaced = []
    for key, ours, theirs in diffs:
        h = _height_from(key, ours, theirs, head)
        if h is None:
            unplaced.append(key)
        else:
            heights[key] = h
    if unplaced:
        heights.update(_last_writes(store, genesis, head, set(unplaced)))
    key, ours, theirs = min(diffs, key=lambda d: (heights.get(d[0], head), d[0]))
    what = ("is unreadable" if unreadable else "is missing" if ours is None
            else "should not exist" if theirs is None else "has a wrong value")
    raise _Bad(heights.get(key, head), f"stored key {_show(key)} {what} "
                                       f"({len(diffs)} differing keys found){unreadable}")


def _height_from(key: bytes, ours: bytes | None, theirs: bytes | None, head: int) -> int | None:
    prefix = key[:2]
    if prefix in (schema.BLOCK_PREFIX, schema.COMMIT_PREFIX):
        return _try_height(key[2:])
    if prefix in (schema.BLOCK_HASH_PREFIX, schema.TX_PREFIX):
        for value in (theirs, ours):
            h = None if value is None else _try_height(value[:8])
            if h is not None:
                return h
        return None
    if key in (schema.meta_schema_version(), schema.meta_genesis(),
               schema.meta_genesis_state_root()):
        return 0
    if prefix == schema.META_PREFIX:
        return head
    return None  # state, SMT, issuer index, validator sets: ask the replay


def _try_height(data: bytes) -> int | None:
    try:
        return schema.decode_height(data)
    except ValueError:
        return None


class _WatchingStore(MemoryStore):
    """A MemoryStore that notes the head height of the last batch touching watched keys."""

    def __init__(self, watched: set[bytes]) -> None:
        super().__init__()
        self.watched = watched
        self.last: dict[bytes, int] = {}

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        super().write(batch, sync)
        raw = batch.ops.get(schema.meta_head_height())
        height = 0 if raw is None else schema.decode_height(raw)
        for key in self.watched.intersection(k for k, _ in batch.items()):
            self.last[key] = height


def _last_writes(store: KVStore, genesis: Genesis, head: int, keys: set[bytes]
                 ) -> dict[bytes, int]:
    watch = _WatchingStore(keys)
    replica = Chain.create(watch, genesis)
    for block, commit in _stored_blocks(store, head):
        replica.commit_block(block, decode_commit(commit))
    return watch.last


def _show(key: bytes) -> str:
    names = {schema.RECORD_PREFIX: "state record", schema.SMT_PREFIX: "SMT node",
             schema.ISSUER_INDEX_PREFIX: "issuer index", schema.VALIDATORS_PREFIX:
             "validator set", schema.TX_PREFIX: "tx index", schema.BLOCK_HASH_PREFIX:
             "block-hash index", schema.BLOCK_PREFIX: "block", schema.COMMIT_PREFIX: "commit",
             schema.META_PREFIX: "meta"}
    rest = key[2:]
    shown = (rest.replace(b"\x00", b" ").decode("ascii", "replace")
             if key[:2] == schema.ISSUER_INDEX_PREFIX else rest.hex())
    return f"{names.get(key[:2], 'key')} {key[:2].decode('ascii', 'replace')}{shown}"


def audit_main(data_dir: str | os.PathLike[str], out: TextIO | None = None) -> int:
    """CLI entry: print one summary line; 0 if the store is sound, 1 if damaged (the line
    names the first bad height), 2 if it cannot be opened at all."""
    report = audit(data_dir)
    print(report.summary(), file=out or sys.stdout)
    if report.ok:
        return 0
    return 1 if report.opened else 2
