"""WAL compaction from the in-memory index: no reading back, no decoding of blocks.

Every validator logs the polka proposal (a whole block) at each height and compacts
after the commit. Checked here: dropping everything neither reads the storage nor
decodes an entry; a partial compaction keeps exactly the undecided records, byte for
byte, again without decoding; an index that no longer matches the storage (a failed
append left a partial record) falls back to reading the records themselves.
"""

from __future__ import annotations

import pytest

import node.consensus.wal as walmod
from node.consensus import codec
from node.consensus.errors import WalCorruptError
from node.consensus.messages import Proposal, RoundStarted, ValidValue, Vote
from node.consensus.wal import MemoryStorage, Wal, frame

BLOCK = b"\x07" * 200_000


def entries() -> list[RoundStarted | Proposal | Vote | ValidValue]:
    p1 = Proposal(1, 0, b"\x01" * 32, BLOCK, -1, b"\x02" * 16, b"\x03" * 64)
    p2 = Proposal(2, 0, b"\x04" * 32, BLOCK, -1, b"\x02" * 16, b"\x03" * 64)
    return [RoundStarted(1, 0), p1, Vote("prevote", 1, 0, p1.value_id, b"\x02" * 16,
                                         b"\x05" * 64), ValidValue(0, p1),
            RoundStarted(2, 0), p2, ValidValue(0, p2)]


class Watched(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        return super().read()


def _refuse(data: bytes) -> object:
    raise AssertionError("compaction decoded a WAL entry")


@pytest.fixture()
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walmod.codec, "decode", _refuse)


def test_dropping_every_entry_reads_and_decodes_nothing(no_decode: None) -> None:
    s = Watched()
    wal = Wal(s)
    for e in entries()[:4]:
        wal.append(e)
    reads = s.reads
    wal.compact(2)
    assert s.reads == reads and s.data == b""
    wal.compact(3)  # nothing left: nothing done
    assert s.reads == reads


def test_partial_compaction_keeps_the_undecided_records_byte_for_byte(
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = MemoryStorage()
    wal = Wal(s)
    for e in entries():
        wal.append(e)
    kept = b"".join(frame(codec.encode(e)) for e in entries()[4:])
    with monkeypatch.context() as m:
        m.setattr(walmod.codec, "decode", _refuse)
        wal.compact(2)
    assert bytes(s.data) == kept
    assert Wal(s).recovered == entries()[4:]
    wal.append(RoundStarted(3, 0))  # the index follows appends after a compaction
    wal.compact(3)
    assert Wal(s).recovered == [RoundStarted(3, 0)]


def test_an_index_out_of_step_with_the_storage_falls_back_to_the_records() -> None:
    s = MemoryStorage()
    wal = Wal(s)
    for e in entries():
        wal.append(e)
    torn = frame(codec.encode(RoundStarted(9, 0)))
    s.append_torn(torn, len(torn) // 2)  # a failed append: the index never saw it
    wal.compact(2)
    assert Wal(s).recovered == entries()[4:]


def test_damage_the_index_cannot_explain_is_refused_not_rewritten() -> None:
    s = MemoryStorage()
    wal = Wal(s)
    for e in entries()[:4]:
        wal.append(e)
    torn = frame(codec.encode(RoundStarted(9, 0)))
    s.append_torn(torn, len(torn) // 2)  # a failed append, and the node carried on
    for e in entries()[4:]:
        wal.append(e)
    with pytest.raises(WalCorruptError):
        wal.compact(2)
