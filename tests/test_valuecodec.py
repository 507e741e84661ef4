"""LevelDB's value encoding (ledger/valuecodec.py): invisible to readers, smaller on disk,
and any part of it that is lost or damaged is reported as corruption, never misread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest
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


def test_a_batch_of_records_shares_one_dictionary_and_takes_less_room(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    records = {rkey(i): record(i) for i in range(200)}
    block = b"".join(records.values())
    write(store, {**records, schema.block(1): block, schema.meta_head_height(): b"\x01"})
    assert all(store.get(k) == v for k, v in records.items())
    assert store.get(schema.block(1)) == block
    store.close()
    stored = raw_values(tmp_path / "db", b"r/")
    assert {v[:1] for v in stored.values()} == {valuecodec.DICT}
    assert len({v[1:9] for v in stored.values()}) == 1
    assert sum(map(len, stored.values())) < 0.6 * sum(map(len, records.values()))
    dicts = raw_values(tmp_path / "db", schema.CODEC_DICT_PREFIX)
    assert list(dicts.values()) == [next(iter(records.values()))]
    stored_block = raw_values(tmp_path / "db", b"b/")[schema.block(1)]
    assert stored_block[:1] == valuecodec.FRAME and len(stored_block) < len(block)


def test_a_walk_of_the_whole_store_decodes_and_hides_the_dictionaries(ldb: LevelDBStore) -> None:
    records = {rkey(i): record(i) for i in range(10)}
    write(ldb, {**records, b"s/x": b"node", schema.block(3): b"block bytes"})
    whole = dict(ldb.iterate())
    assert whole == {**records, b"s/x": b"node", schema.block(3): b"block bytes"}
    assert dict(ldb.iterate(schema.RECORD_PREFIX)) == records
    assert list(ldb.iterate(schema.CODEC_DICT_PREFIX))  # asked for by name: there


def test_small_batches_are_stored_raw(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    few = {rkey(i): record(i) for i in range(valuecodec.MIN_DICT_RECORDS - 1)}
    write(store, few)
    assert dict(store.iterate(schema.RECORD_PREFIX)) == few
    store.close()
    assert {v[:1] for v in raw_values(tmp_path / "db", b"r/").values()} == {valuecodec.RAW}
    assert not raw_values(tmp_path / "db", schema.CODEC_DICT_PREFIX)


def test_a_dictionary_id_taken_by_other_bytes_makes_the_batch_raw(tmp_path: Path) -> None:
    records = {rkey(i): record(i) for i in range(8)}
    ref = next(iter(records.values()))
    taken = schema.codec_dict(sm3(ref)[: valuecodec.DICT_ID_SIZE])
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(taken, b"some other dictionary")
    db.close()
    store = LevelDBStore(tmp_path / "db")
    write(store, records)
    assert all(store.get(k) == v for k, v in records.items())
    store.close()
    assert {v[:1] for v in raw_values(tmp_path / "db", b"r/").values()} == {valuecodec.RAW}
    assert raw_values(tmp_path / "db", b"x/")[taken] == b"some other dictionary"


@pytest.mark.parametrize("damage", ["missing dictionary", "bad frame", "unknown tag"])
def test_an_undecodable_value_is_corruption_naming_the_key(tmp_path: Path, damage: str) -> None:
    store = LevelDBStore(tmp_path / "db")
    write(store, {rkey(i): record(i) for i in range(8)})
    store.close()
    db = plyvel.DB(str(tmp_path / "db"))
    stored = db.get(rkey(3))
    assert stored is not None
    if damage == "missing dictionary":
        db.delete(schema.codec_dict(stored[1:9]))
        why = "compression dictionary"
    elif damage == "bad frame":
        db.put(rkey(3), stored[:9] + b"\xff" * 12)
        why = "zstd frame"
    else:
        db.put(rkey(3), b"\x07" + stored[1:])
        why = "unknown encoding tag 07"
    db.close()
    store = LevelDBStore(tmp_path / "db", create=False)
    try:
        with pytest.raises(CorruptStoreError, match=f"r/{rkey(3)[2:].hex()}.*{why}"):
            store.get(rkey(3))
        with pytest.raises(CorruptStoreError):
            dict(store.iterate(schema.RECORD_PREFIX))
    finally:
        store.close()


def test_audit_reports_a_store_whose_dictionary_is_gone(tmp_path: Path) -> None:
    chain = Chain.create(LevelDBStore(tmp_path / "db"), make_genesis())
    grow(chain, 3, per_block=6)
    chain.close()
    db = plyvel.DB(str(tmp_path / "db"))
    dicts = list(db.iterator(prefix=schema.CODEC_DICT_PREFIX, include_value=False))
    assert len(dicts) >= 3  # one per block of records
    db.delete(dicts[0])
    db.close()
    report = audit(tmp_path / "db")
    assert not report.ok
    assert "dictionary" in report.summary()


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
    with pytest.raises(SchemaVersionError, match="schema version 1 is not 2"):
        LevelDBStore(tmp_path / "db", create=False)
    report = audit(tmp_path / "db")
    assert not report.ok and "schema version 1 is not 2" in report.summary()
