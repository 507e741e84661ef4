"""Corruption is refused at open and reported by audit at the height it belongs to."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger import schema
from ledger.audit import audit, audit_main
from ledger.chain import Chain
from ledger.errors import CorruptStoreError
from ledger.records import cert_key
from ledger.smt import SparseMerkleTree
from ledger.store import LevelDBStore, MemoryStore, WriteBatch
from tests.crash_child import grow, serial
from tests.ledger_fixtures import ISSUER_A, cert_id, make_genesis

HEAD = 5


@dataclass
class Built:
    path: Path
    snapshots: list[dict[bytes, bytes]]  # whole store after each height 0..HEAD

    def last_written(self, prefix: bytes, height: int) -> list[bytes]:
        """Keys under ``prefix`` written at ``height`` and unchanged since."""
        before, at, end = self.snapshots[height - 1], self.snapshots[height], self.snapshots[-1]
        return sorted(k for k, v in at.items() if k.startswith(prefix) and before.get(k) != v
                      and end.get(k) == v)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Built:
    path = tmp_path_factory.mktemp("pristine") / "db"
    store = LevelDBStore(path)
    chain = Chain.create(store, make_genesis())
    snapshots = [dict(store.iterate())]
    for _ in range(HEAD):
        grow(chain, 1, per_block=5)
        snapshots.append(dict(store.iterate()))
    chain.close()
    return Built(path, snapshots)


@pytest.fixture
def built(pristine: Built, tmp_path: Path) -> Built:
    """A private copy of the pristine store, free to damage."""
    shutil.copytree(pristine.path, tmp_path / "db")
    return Built(tmp_path / "db", pristine.snapshots)


def damage(path: Path, put: dict[bytes, bytes] | None = None, delete: tuple[bytes, ...] = ()
           ) -> None:
    store = LevelDBStore(path, create=False)
    b = WriteBatch()
    for k, v in (put or {}).items():
        b.put(k, v)
    for k in delete:
        b.delete(k)
    store.write(b)
    store.close()


def flip(value: bytes, pos: int) -> bytes:
    return value[:pos] + bytes([value[pos] ^ 0x01]) + value[pos + 1 :]


def assert_refused_at_open(path: Path, height: int) -> None:
    store = LevelDBStore(path, create=False, check_tables=False)
    try:
        with pytest.raises(CorruptStoreError, match=f"height {height}") as info:
            Chain.open(store)
        assert info.value.height == height
    finally:
        store.close()


def assert_audit_fails_at(path: Path, height: int) -> str:
    report = audit(path)
    assert not report.ok
    assert report.bad_height == height, report.summary()
    out = io.StringIO()
    assert audit_main(path, out) == 1
    assert f"audit FAILED at height {height}" in out.getvalue()
    return report.reason


def test_clean_store_passes(built: Built) -> None:
    report = audit(built.path)
    assert report.ok, report.summary()
    assert (report.head_height, report.blocks_checked) == (HEAD, HEAD)
    out = io.StringIO()
    assert audit_main(built.path, out) == 0
    assert out.getvalue().startswith("audit OK: height 5")
    with LevelDBStore(built.path, create=False) as store:
        assert Chain.open(store).head_height == HEAD


# --------------------------------------------------------------------------- damage at the head


def _head_block_flip(b: Built, pos: int) -> None:
    key = schema.block(HEAD)
    damage(b.path, put={key: flip(b.snapshots[-1][key], pos)})


HEAD_DAMAGE: dict[str, Callable[[Built], None]] = {
    "block byte in the header": lambda b: _head_block_flip(b, 40),
    "block byte in a transaction": lambda b: _head_block_flip(
        b, len(b.snapshots[-1][schema.block(HEAD)]) - 30),
    "commit deleted": lambda b: damage(b.path, delete=(schema.commit(HEAD),)),
    "commit byte": lambda b: damage(b.path, put={schema.commit(HEAD): flip(
        b.snapshots[-1][schema.commit(HEAD)], 100)}),
    "state record deleted": lambda b: damage(
        b.path, delete=(b.last_written(schema.RECORD_PREFIX, HEAD)[0],)),
    "state record byte": lambda b: damage(b.path, put={
        (k := max(b.last_written(schema.RECORD_PREFIX, HEAD), key=lambda k: len(
            b.snapshots[-1][k]))): flip(b.snapshots[-1][k], 20)}),
    "SMT node deleted": lambda b: damage(b.path, delete=(max(
        b.last_written(schema.SMT_PREFIX, HEAD), key=len),)),
    # The root's node id is the shortest (the SMT keys nodes by position).
    "SMT root node deleted": lambda b: damage(b.path, delete=(min(
        (k for k in b.snapshots[-1] if k.startswith(schema.SMT_PREFIX)), key=len),)),
    "head height moved back": lambda b: damage(
        b.path, put={schema.meta_head_height(): schema.encode_height(HEAD - 1)}),
}


@pytest.mark.parametrize("case", sorted(HEAD_DAMAGE))
def test_damage_at_the_head_is_refused_at_open_and_by_audit(built: Built, case: str) -> None:
    HEAD_DAMAGE[case](built)
    # Moving the head back leaves block HEAD above it: reported at HEAD (open: the old head's
    # state root no longer matches the stored SMT root).
    open_height = HEAD - 1 if case == "head height moved back" else HEAD
    assert_refused_at_open(built.path, open_height)
    assert_audit_fails_at(built.path, HEAD)


def _moved_nodes(before: dict[bytes, bytes], after: dict[bytes, bytes], root: bytes
                 ) -> set[bytes]:
    """SMT nodes the head block wrote that no path of a key it changed reads."""
    written = {k for k, v in after.items()
               if k.startswith(schema.SMT_PREFIX) and before.get(k) != v}
    footprint = after[schema.meta_head_footprint()]
    read: set[bytes] = set()

    def get(key: bytes) -> bytes | None:
        read.add(key)
        return after.get(key)

    tree = SparseMerkleTree(get, schema.smt_node, root, cache_depth=-1)
    for i in range(0, len(footprint), 32):
        tree.get_value(footprint[i : i + 32])
    return written - read


def test_a_node_the_head_block_moved_off_every_changed_path_is_checked_at_open() -> None:
    """An insert that splits the edge above a branch moves that branch's node down, off
    every changed key's path (``tests/test_smt.py::
    test_check_paths_finds_a_moved_node_that_no_path_reads``). Most blocks here move one."""
    store = MemoryStore()
    chain = Chain.create(store, make_genesis())
    moved: set[bytes] = set()
    for _ in range(20):
        before = dict(store.iterate())
        grow(chain, 1, per_block=5)
        after = dict(store.iterate())
        moved = _moved_nodes(before, after, chain.state_root)
        if moved:
            break
    assert moved, "no block of 20 moved a node: the test data no longer exercises this"
    head = chain.head_height
    for key in moved:
        for damaged_value in (None, flip(after[key], 40)):
            damaged = MemoryStore()
            b = WriteBatch()
            for k, v in after.items():
                if k != key:
                    b.put(k, v)
            if damaged_value is not None:
                b.put(key, damaged_value)
            damaged.write(b)
            with pytest.raises(CorruptStoreError, match=f"height {head}"):
                Chain.open(damaged)


def test_block_above_the_head(built: Built) -> None:
    damage(built.path, put={schema.block(HEAD + 1): built.snapshots[-1][schema.block(HEAD)]})
    assert_refused_at_open(built.path, HEAD + 1)
    assert "above the head" in assert_audit_fails_at(built.path, HEAD + 1)


# --------------------------------------------------------------------------- older damage


OLD = 2

OLD_DAMAGE: dict[str, Callable[[Built], None]] = {
    "block byte": lambda b: damage(b.path, put={schema.block(OLD): flip(
        b.snapshots[-1][schema.block(OLD)], 60)}),
    "block deleted": lambda b: damage(b.path, delete=(schema.block(OLD),)),
    "commit deleted": lambda b: damage(b.path, delete=(schema.commit(OLD),)),
    "state record deleted": lambda b: damage(b.path, delete=(
        schema.record_for(cert_key(cert_id(serial(OLD, 3)))),)),
    "tx index deleted": lambda b: damage(b.path, delete=(
        b.last_written(schema.TX_PREFIX, OLD)[0],)),
    "issuer index deleted": lambda b: damage(b.path, delete=(
        schema.issuer_certificate(ISSUER_A, cert_id(serial(OLD, 2))),)),
    "block-hash index value": lambda b: damage(b.path, put={
        b.last_written(schema.BLOCK_HASH_PREFIX, OLD)[0]: schema.encode_height(OLD + 1)}),
}


@pytest.mark.parametrize("case", sorted(OLD_DAMAGE))
def test_older_damage_is_reported_at_its_height(built: Built, case: str) -> None:
    OLD_DAMAGE[case](built)
    assert_audit_fails_at(built.path, OLD)


def test_older_smt_node_deleted_is_reported_at_its_height(built: Built) -> None:
    # Which tree nodes survive from an old height depends on the (random) tx ids the
    # state also keys, so take the oldest height below the head that still has one.
    heights = [h for h in range(1, HEAD) if built.last_written(schema.SMT_PREFIX, h)]
    assert heights, "no SMT node written below the head survives to it"
    h = heights[0]
    damage(built.path, delete=(built.last_written(schema.SMT_PREFIX, h)[0],))
    assert_audit_fails_at(built.path, h)


# --------------------------------------------------------------------------- tables and files


def test_truncated_table_files(tmp_path: Path) -> None:
    """Every table of a multi-table store: truncated -> refused at open, audit names a height."""
    path = tmp_path / "db"
    # Small buffers and tables (LevelDB's minimums) so the data spreads over several tables.
    store = LevelDBStore(path, write_buffer_size=64 * 1024, max_file_size=1 << 20)
    chain = Chain.create(store, make_genesis())
    grow(chain, 12, per_block=500)
    store.compact()
    chain.close()
    tables = sorted(path.glob("*.ldb"))
    assert len(tables) >= 2, [t.stat().st_size for t in tables]
    for table in tables:
        original = table.read_bytes()
        table.write_bytes(original[: len(original) // 2])
        try:
            with pytest.raises(CorruptStoreError, match=f"table {table.name} is truncated"):
                LevelDBStore(path, create=False)
            report = audit(path)
            assert not report.ok and report.bad_height is not None, report.summary()
            assert table.name in report.reason
            assert audit_main(path, io.StringIO()) == 1
        finally:
            table.write_bytes(original)
    assert audit(path).ok


def test_unopenable_directories(tmp_path: Path, built: Built) -> None:
    out = io.StringIO()
    assert audit_main(tmp_path / "nothing-here", out) == 2
    assert "no LevelDB store" in out.getvalue()
    with LevelDBStore(built.path, create=False):  # a running node holds the lock
        out = io.StringIO()
        assert audit_main(built.path, out) == 2
        assert "locked" in out.getvalue()
