"""LevelDB's value encoding (ledger/valuecodec.py): invisible to readers, smaller on disk,
and any part of it that is lost or damaged is reported as corruption, never misread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest
import zstandard as zstd
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates.hashing import sm3
from ledger import schema, valuecodec
from ledger.audit import audit
from ledger.chain import Chain
from ledger.errors import CorruptStoreError, SchemaVersionError
from ledger.store import LevelDBStore, MemoryStore, WriteBatch
from tests.crash_child import grow
from tests.ledger_fixtures import make_genesis


def record(i: int) -> bytes:
    # Shaped like a batch's certificate records: a shared prefix, a unique digest and index.
    return (b"\x9d\x00\xd9H1.2.156.3005.2.11100000000013338W032.11220000013544541J.B"
            + b"%09d" % i + b".001.H\xc4 " + os.urandom(32) + b"\xcf\x00\x00\x01\x94" * 6
            + i.to_bytes(2, "big"))


def rkey(i: int) -> bytes:
    return schema.record(i.to_bytes(32, "big"))


def raw_values(path: Path, prefix: bytes) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator(prefix=prefix))
    finally:
        db.close()


@pytest.fixture
def ldb(tmp_path: Path) -> Iterator[LevelDBStore]:
    s = LevelDBStore(tmp_path / "db")
    yield s
    s.close()


def write(store: LevelDBStore | MemoryStore, items: dict[bytes, bytes | None]) -> None:
    b = WriteBatch()
    for k, v in items.items():
        if v is None:
            b.delete(k)
        else:
            b.put(k, v)
    store.write(b)


def pointers(path: Path) -> dict[bytes, bytes]:
    return raw_values(path, schema.RECORD_PREFIX)


def test_a_batch_of_records_is_stored_in_even_groups_and_takes_less_room(
        tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    records = {rkey(i): record(i) for i in range(200)}
    block = b"".join(records.values())
    write(store, {**records, schema.block(1): block, schema.meta_head_height(): b"\x01"})
    assert all(store.get(k) == v for k, v in records.items())
    assert store.get(schema.block(1)) == block
    store.close()
    stored = pointers(tmp_path / "db")
    assert {v[:1] for v in stored.values()} == {valuecodec.GROUP}
    # 200 records: four groups of 50 (never 64 + 64 + 64 + 8), each record by its index
    by_group: dict[bytes, list[int]] = {}
    for v in stored.values():
        by_group.setdefault(v[1:9], []).append(v[9])
    assert sorted(map(sorted, by_group.values())) == [list(range(50))] * 4
    groups = raw_values(tmp_path / "db", schema.CODEC_PREFIX)
    assert set(groups) == {schema.codec_group(g) for g in by_group}
    on_disk = sum(map(len, stored.values())) + sum(map(len, groups.values()))
    assert on_disk < 0.6 * sum(map(len, records.values()))
    stored_block = raw_values(tmp_path / "db", b"b/")[schema.block(1)]
    assert stored_block[:1] == valuecodec.FRAME and len(stored_block) < len(block)


def test_a_walk_of_the_whole_store_decodes_and_hides_the_groups(ldb: LevelDBStore) -> None:
    records = {rkey(i): record(i) for i in range(10)}
    write(ldb, {**records, b"s/x": b"node", schema.block(3): b"block bytes"})
    whole = dict(ldb.iterate())
    assert whole == {**records, b"s/x": b"node", schema.block(3): b"block bytes"}
    assert dict(ldb.iterate(schema.RECORD_PREFIX)) == records
    assert list(ldb.iterate(schema.CODEC_PREFIX))  # asked for by name: there


def test_small_batches_are_stored_raw(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    few = {rkey(i): record(i) for i in range(valuecodec.MIN_GROUP_RECORDS - 1)}
    write(store, few)
    assert dict(store.iterate(schema.RECORD_PREFIX)) == few
    store.close()
    assert {v[:1] for v in pointers(tmp_path / "db").values()} == {valuecodec.RAW}
    assert not raw_values(tmp_path / "db", schema.CODEC_PREFIX)


def group_key_of(first: bytes) -> bytes:
    return schema.codec_group(sm3(first)[: valuecodec.GROUP_ID_SIZE])


def test_a_group_id_taken_by_other_bytes_makes_the_group_raw(tmp_path: Path) -> None:
    records = {rkey(i): record(i) for i in range(8)}
    taken = group_key_of(next(iter(records.values())))
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(taken, b"some other group")
    db.close()
    store = LevelDBStore(tmp_path / "db")
    write(store, records)
    assert all(store.get(k) == v for k, v in records.items())
    store.close()
    assert {v[:1] for v in pointers(tmp_path / "db").values()} == {valuecodec.RAW}
    assert raw_values(tmp_path / "db", b"x/")[taken] == b"some other group"


def test_two_groups_of_one_batch_with_the_same_id_do_not_overwrite_each_other(
        tmp_path: Path) -> None:
    # Records 0 and 64 are equal, so both groups of this batch would take the same id: the
    # second is not written yet when the first is, so the store alone cannot tell.
    values = [record(i) for i in range(128)]
    values[64] = values[0]
    records = {rkey(i): v for i, v in enumerate(values)}
    store = LevelDBStore(tmp_path / "db")
    write(store, records)
    assert all(store.get(k) == v for k, v in records.items())
    store.close()
    tags = [pointers(tmp_path / "db")[rkey(i)][:1] for i in range(128)]
    assert tags == [valuecodec.GROUP] * 64 + [valuecodec.RAW] * 64
    assert list(raw_values(tmp_path / "db", b"x/")) == [group_key_of(values[0])]


def test_the_same_group_written_again_is_shared(tmp_path: Path) -> None:
    records = {rkey(i): record(i) for i in range(8)}
    store = LevelDBStore(tmp_path / "db")
    write(store, records)
    write(store, {rkey(i + 100): v for i, v in enumerate(records.values())})
    assert [store.get(rkey(i + 100)) for i in range(8)] == list(records.values())
    store.close()
    assert {v[:1] for v in pointers(tmp_path / "db").values()} == {valuecodec.GROUP}
    assert len(raw_values(tmp_path / "db", b"x/")) == 1


def fake_group(ends: list[int], data: bytes) -> bytes:
    """A well-formed zstd frame holding a group whose offsets are ``ends``."""
    body = len(ends).to_bytes(2, "big") + b"".join(e.to_bytes(4, "big") for e in ends) + data
    return zstd.ZstdCompressor(compression_params=zstd.ZstdCompressionParameters.from_level(
        1, format=zstd.FORMAT_ZSTD1_MAGICLESS, write_content_size=1)).compress(body)


@pytest.mark.parametrize("damage", ["missing group", "bad frame", "unknown tag",
                                    "index past the end", "offsets past the end",
                                    "offsets backwards", "short pointer"])
def test_an_undecodable_value_is_corruption_naming_the_key(tmp_path: Path, damage: str) -> None:
    store = LevelDBStore(tmp_path / "db")
    write(store, {rkey(i): record(i) for i in range(8)})
    store.close()
    db = plyvel.DB(str(tmp_path / "db"))
    stored = db.get(rkey(3))
    assert stored is not None and stored[:1] == valuecodec.GROUP
    group = schema.codec_group(stored[1:9])
    if damage == "missing group":
        db.delete(group)
        why = "compression group x/.* is missing"
    elif damage == "bad frame":
        db.put(group, b"\xff" * 12)
        why = "zstd frame"
    elif damage == "unknown tag":
        db.put(rkey(3), b"\x07" + stored[1:])
        why = "unknown encoding tag 07"
    elif damage == "index past the end":
        db.put(rkey(3), stored[:9] + b"\x08")
        why = "past the end of group .*record 8 of 8"
    elif damage == "offsets past the end":  # record 3 ends after the group's bytes
        db.put(group, fake_group([1, 2, 3, 99, 99, 99, 99, 99], b"abcdefgh"))
        why = "is malformed"
    elif damage == "offsets backwards":  # record 3 ends before it starts
        db.put(group, fake_group([1, 2, 5, 4, 6, 7, 8, 8], b"abcdefgh"))
        why = "is malformed"
    else:
        db.put(rkey(3), stored[:9])
        why = "group pointer is 9 bytes, not 10"
    db.close()
    store = LevelDBStore(tmp_path / "db", create=False)
    try:
        with pytest.raises(CorruptStoreError, match=f"r/{rkey(3)[2:].hex()}.*{why}"):
            store.get(rkey(3))
        with pytest.raises(CorruptStoreError):
            dict(store.iterate(schema.RECORD_PREFIX))
    finally:
        store.close()


def test_reads_of_one_group_decompress_it_once(ldb: LevelDBStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    records = {rkey(i): record(i) for i in range(200)}
    write(ldb, records)
    codec = ldb._codec
    codec._groups.clear()
    frames: list[bytes] = []
    real = codec._plain

    class Counting:
        def decompress(self, data: bytes) -> bytes:
            frames.append(data)
            return real.decompress(data)

    monkeypatch.setattr(codec, "_plain", Counting())
    assert dict(ldb.iterate(schema.RECORD_PREFIX)) == records
    assert [ldb.get(k) for k in records] == list(records.values())
    assert len(frames) == 4


def test_audit_reports_a_store_whose_group_is_gone(tmp_path: Path) -> None:
    chain = Chain.create(LevelDBStore(tmp_path / "db"), make_genesis())
    grow(chain, 3, per_block=6)
    chain.close()
    db = plyvel.DB(str(tmp_path / "db"))
    groups = list(db.iterator(prefix=schema.CODEC_PREFIX, include_value=False))
    assert len(groups) >= 3  # one per block of records
    db.delete(groups[0])
    db.close()
    report = audit(tmp_path / "db")
    assert not report.ok
    assert "compression group" in report.summary()


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(
    st.sampled_from([b"r/", b"b/", b"s/", b"i/"]), st.integers(0, 12),
    st.one_of(st.none(), st.integers(0, 30))), max_size=12), max_size=6))
def test_leveldb_reads_back_what_a_memory_store_holds(
        tmp_path_factory: pytest.TempPathFactory,
        batches: list[list[tuple[bytes, int, int | None]]]) -> None:
    mem = MemoryStore()
    ldb = LevelDBStore(tmp_path_factory.mktemp("db"))
    try:
        for ops in batches:
            items: dict[bytes, bytes | None] = {}
            for prefix, k, v in ops:
                items[prefix + bytes([k])] = None if v is None else record(v)[: 40 + v]
            write(mem, items)
            write(ldb, items)
            for prefix in (b"", b"r/", b"b/", b"s/"):
                assert list(ldb.iterate(prefix)) == list(mem.iterate(prefix))
        for prefix, k, _ in (op for ops in batches for op in ops):
            assert ldb.get(prefix + bytes([k])) == mem.get(prefix + bytes([k]))
    finally:
        ldb.close()


def test_a_store_of_another_schema_version_is_refused_before_any_value_is_decoded(
        tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(schema.meta_schema_version(), schema.encode_height(1))
    db.put(schema.block(1), b"\\x82 a block as version 1 stored it")  # no encoding tag
    db.close()
    refused = f"schema version 1 is not {schema.SCHEMA_VERSION}"
    with pytest.raises(SchemaVersionError, match=refused):
        LevelDBStore(tmp_path / "db", create=False)
    report = audit(tmp_path / "db")
    assert not report.ok and refused in report.summary()
