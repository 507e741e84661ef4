"""KVStore contract: MemoryStore and LevelDBStore pass the same tests; schema keys sort."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import schema
from ledger.errors import CorruptStoreError, StorageError
from ledger.store import KVStore, LevelDBStore, MemoryStore, WriteBatch


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    s: KVStore = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield s
    s.close()


def put_all(store: KVStore, items: dict[bytes, bytes]) -> None:
    b = WriteBatch()
    for k, v in items.items():
        b.put(k, v)
    store.write(b)


def test_get_missing_is_none(store: KVStore) -> None:
    assert store.get(b"nope") is None


def test_put_get_delete(store: KVStore) -> None:
    put_all(store, {b"a": b"1", b"b": b""})
    assert store.get(b"a") == b"1"
    assert store.get(b"b") == b""  # an empty value is a value, not a missing key
    b = WriteBatch()
    b.delete(b"a")
    b.delete(b"never-there")
    store.write(b)
    assert store.get(b"a") is None
    assert store.get(b"b") == b""


def test_batch_last_operation_per_key_wins(store: KVStore) -> None:
    b = WriteBatch()
    b.put(b"k", b"1")
    b.delete(b"k")
    b.put(b"j", b"x")
    b.put(b"j", b"y")
    assert b.pending(b"k") == (True, None)
    assert b.pending(b"j") == (True, b"y")
    assert b.pending(b"z") == (False, None)
    store.write(b)
    assert store.get(b"k") is None
    assert store.get(b"j") == b"y"


def test_runs_are_written_with_the_batch(store: KVStore) -> None:
    """A run (a list of pairs under their own keys) is part of the atomic batch: puts and
    deletes, seen by ``len``, ``in`` and ``pending`` like the other operations."""
    put_all(store, {b"s/old": b"x", b"s/keep": b"k"})
    b = WriteBatch()
    b.put(b"r/1", b"one")
    b.add_run([(b"s/a", b"A"), (b"s/b", b"B")])
    assert len(b) == 3 and b"s/b" in b and b.pending(b"s/a") == (True, b"A")
    store.write(b)
    assert [store.get(k) for k in (b"r/1", b"s/a", b"s/b", b"s/keep")] == [b"one", b"A", b"B", b"k"]
    # A delete inside a run (the LevelDB store then fills its batch in two passes).
    b = WriteBatch()
    b.add_run([(b"s/c", b"C"), (b"s/old", None)])
    b.put(b"r/2", b"two")
    assert b.pending(b"s/old") == (True, None) and b.pending(b"s/zz") == (False, None)
    store.write(b)
    assert store.get(b"s/old") is None
    assert [store.get(k) for k in (b"s/c", b"r/2", b"s/a")] == [b"C", b"two", b"A"]


def test_iterate_prefix_and_start_in_key_order(store: KVStore) -> None:
    keys = [b"a/1", b"a/3", b"a/2", b"b/1", b"a", b"a/\xff\xff", b"c"]
    put_all(store, {k: k.upper() for k in keys})
    assert [k for k, _ in store.iterate()] == sorted(keys)
    assert list(store.iterate(b"a/")) == [
        (k, k.upper()) for k in sorted(keys) if k.startswith(b"a/")
    ]
    assert [k for k, _ in store.iterate(b"a/", start=b"a/2")] == [b"a/2", b"a/3", b"a/\xff\xff"]
    # A start before the prefix is clamped to the prefix.
    assert [k for k, _ in store.iterate(b"b/", start=b"a")] == [b"b/1"]
    assert [k for k, _ in store.iterate(start=b"b")] == [b"b/1", b"c"]
    assert list(store.iterate(b"zz")) == []


def test_iterate_prefix_of_ff_bytes(store: KVStore) -> None:
    put_all(store, {b"\xff\xff": b"1", b"\xff\xff\x00": b"2", b"\xfe": b"3"})
    assert [k for k, _ in store.iterate(b"\xff")] == [b"\xff\xff", b"\xff\xff\x00"]


def test_write_during_iteration_does_not_break_the_walk(store: KVStore) -> None:
    put_all(store, {b"p/1": b"1", b"p/2": b"2"})
    seen = []
    for k, _ in store.iterate(b"p/"):
        seen.append(k)
        put_all(store, {b"q/" + k: b"x"})
    assert seen == [b"p/1", b"p/2"]


def test_closed_store_refuses(store: KVStore) -> None:
    store.close()
    with pytest.raises(StorageError):
        store.get(b"a")
    with pytest.raises(StorageError):
        store.write(WriteBatch())


def test_the_codec_family_is_refused_and_nothing_is_written(store: KVStore) -> None:
    b = WriteBatch()
    b.put(b"r/a", b"record")
    b.put(schema.CODEC_PREFIX + b"\x00" * 8, b"not a group")
    with pytest.raises(StorageError, match="record compression groups"):
        store.write(b)
    assert store.get(b"r/a") is None
    assert list(store.iterate()) == []
    d = WriteBatch()
    d.delete(schema.CODEC_PREFIX)
    with pytest.raises(StorageError, match="record compression groups"):
        store.write(d)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.one_of(st.binary(min_size=1, max_size=4),
                      # now and then a key in the family the stores keep for themselves
                      st.binary(max_size=2).map(lambda b: schema.CODEC_PREFIX + b)),
            st.one_of(st.none(), st.binary(max_size=8)),
        ),
        max_size=30,
    ),
    prefix=st.binary(max_size=2),
)
def test_stores_agree_with_a_dict(tmp_path_factory: pytest.TempPathFactory,
                                  ops: list[tuple[bytes, bytes | None]], prefix: bytes) -> None:
    model: dict[bytes, bytes] = {}
    mem = MemoryStore()
    ldb = LevelDBStore(tmp_path_factory.mktemp("db"))
    try:
        for i in range(0, len(ops), 7):
            b = WriteBatch()
            after = dict(model)
            for k, v in ops[i : i + 7]:
                if v is None:
                    b.delete(k)
                    after.pop(k, None)
                else:
                    b.put(k, v)
                    after[k] = v
            if any(k.startswith(schema.CODEC_PREFIX) for k, _ in ops[i : i + 7]):
                # The codec's family is the store's own: refused, nothing written.
                for s in (mem, ldb):
                    with pytest.raises(StorageError, match="record compression groups"):
                        s.write(b)
                continue
            model = after
            mem.write(b)
            ldb.write(b, sync=False)
        want = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
        assert list(mem.iterate(prefix)) == want
        assert list(ldb.iterate(prefix)) == want
    finally:
        ldb.close()


# --------------------------------------------------------------------------- LevelDB only


def test_leveldb_persists_across_reopen(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "db")
    put_all(s, {b"k": b"v"})
    s.close()
    s2 = LevelDBStore(tmp_path / "db", create=False)
    assert s2.get(b"k") == b"v"
    s2.compact()
    assert s2.get(b"k") == b"v"
    s2.close()


def test_leveldb_close_leaves_no_log_to_replay(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "db")
    items = {b"s/%06d" % i: os.urandom(100) for i in range(20_000)}  # ~2 MB, in the log
    put_all(s, items)
    assert sum(p.stat().st_size for p in (tmp_path / "db").glob("*.log")) > 1_000_000
    s.close()
    # The memtable went to a table at close: the next open has nothing to replay.
    assert sum(p.stat().st_size for p in (tmp_path / "db").glob("*.log")) < 4096
    s2 = LevelDBStore(tmp_path / "db", create=False)
    assert dict(s2.iterate(b"s/")) == items
    s2.close()


def test_leveldb_missing_dir_without_create(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no LevelDB store"):
        LevelDBStore(tmp_path / "absent", create=False)


def _hold_lock(path: str, ready: multiprocessing.synchronize.Event,
               done: multiprocessing.synchronize.Event) -> None:
    s = LevelDBStore(path)
    ready.set()
    done.wait(10)
    s.close()


def test_leveldb_lock_held_is_a_storage_error(tmp_path: Path) -> None:
    # LevelDB's lock is a per-process fcntl lock: a second opener in this process fails too,
    # but use another process to mirror two nodes sharing a directory.
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path / "db"), ready, done))
    p.start()
    try:
        assert ready.wait(20)
        with pytest.raises(StorageError, match="locked by another process"):
            LevelDBStore(tmp_path / "db")
    finally:
        done.set()
        p.join(10)


def test_leveldb_corrupt_table_is_detected(tmp_path: Path) -> None:
    s = LevelDBStore(tmp_path / "db")
    put_all(s, {b"k%05d" % i: b"value-%05d" % i * 4 for i in range(2000)})
    s.compact()
    s.close()
    tables = sorted((tmp_path / "db").glob("*.ldb"))
    assert tables
    raw = bytearray(tables[0].read_bytes())
    raw[100] ^= 0xFF  # inside the first data block
    tables[0].write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match="corrupt"):
        s2 = LevelDBStore(tmp_path / "db")
        try:
            for _ in s2.iterate():
                pass
        finally:
            s2.close()


# --------------------------------------------------------------------------- schema


def test_height_keys_sort_numerically() -> None:
    heights = [0, 1, 255, 256, 65536, 2**40]
    keys = [schema.block(h) for h in heights]
    assert keys == sorted(keys)
    assert all(schema.decode_height(k[len(schema.BLOCK_PREFIX) :]) == h
               for k, h in zip(keys, heights, strict=True))
    with pytest.raises(ValueError):
        schema.encode_height(-1)


def test_schema_families_do_not_overlap() -> None:
    prefixes = schema.PREFIXES
    assert len(set(prefixes)) == len(prefixes)
    for a in prefixes:
        for b in prefixes:
            assert a == b or not a.startswith(b)
    metas = [schema.meta_schema_version(), schema.meta_genesis(), schema.meta_head_height(),
             schema.meta_smt_root(), schema.meta_genesis_state_root()]
    assert len(set(metas)) == len(metas)
    assert all(k.startswith(schema.META_PREFIX) for k in metas)


def test_schema_keys_round_trip() -> None:
    assert schema.decode_tx_location(schema.encode_tx_location(7, 3)) == (7, 3)
    k = schema.issuer_certificate("11220000013544541J", "1.2.156.3005.2.X")
    assert k.startswith(schema.issuer_certificates_prefix("11220000013544541J"))
    assert schema.certificate_id_from_issuer_key(k) == "1.2.156.3005.2.X"
    assert schema.smt_node(b"\x01\x02") == b"s/\x01\x02"
    assert schema.record_for(b"cert:x") == schema.record(schema.state_key_hash(b"cert:x"))
