"""Blocks: canonical round trips, hash coverage, tx_root, strict decoding."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates import canonical
from certificates.hashing import sm3
from certificates.merkle import SM3_HASHER, root_from_leaf_hashes
from ledger.block import (
    Block,
    BlockHeader,
    compute_tx_root,
    decode_commit,
    decode_header_of_block,
    encode_commit,
    tx_id,
)
from ledger.commit import make_commit
from ledger.errors import BlockDecodeError


def header(**over: object) -> BlockHeader:
    fields: dict[str, object] = {
        "chain_id": "test-chain",
        "height": 5,
        "prev_hash": b"\x01" * 32,
        "time_ms": 1_700_000_000_000,
        "proposer": b"\x02" * 16,
        "round": 0,
        "tx_root": compute_tx_root([]),
        "state_root": b"\x03" * 32,
        "validators_hash": b"\x04" * 32,
        "next_validators_hash": b"\x05" * 32,
    }
    fields.update(over)
    return BlockHeader(**fields)  # type: ignore[arg-type]


def block(txs: tuple[bytes, ...] = (b"tx-a", b"tx-b", b"tx-c")) -> Block:
    return Block(header(tx_root=compute_tx_root([sm3(t) for t in txs])), txs)


def test_round_trip() -> None:
    b = block()
    data = b.encode()
    again = Block.decode(data)
    assert again == b
    assert again.hash == b.hash == sm3(b.header.encode())
    assert BlockHeader.decode(b.header.encode()) == b.header
    assert again.computed_tx_root() == b.header.tx_root


def test_every_header_field_changes_the_hash() -> None:
    base = header()
    changes: dict[str, object] = {
        "chain_id": "other-chain",
        "height": 6,
        "prev_hash": b"\x09" * 32,
        "time_ms": base.time_ms + 1,
        "proposer": b"\x09" * 16,
        "round": 1,
        "tx_root": b"\x09" * 32,
        "state_root": b"\x09" * 32,
        "validators_hash": b"\x09" * 32,
        "next_validators_hash": b"\x09" * 32,
    }
    assert set(changes) == {f.name for f in dataclasses.fields(BlockHeader)}
    hashes = {base.hash}
    for name, value in changes.items():
        hashes.add(dataclasses.replace(base, **{name: value}).hash)  # type: ignore[arg-type]
    assert len(hashes) == len(changes) + 1


def test_tx_root_is_rfc9162_over_tx_ids() -> None:
    txs = [b"t%d" % i for i in range(7)]
    ids = [tx_id(t) for t in txs]
    assert ids == [sm3(t) for t in txs]
    assert compute_tx_root(ids) == root_from_leaf_hashes([SM3_HASHER.hash_leaf(i) for i in ids])
    assert compute_tx_root([]) == sm3(b"")
    # Order matters: a reordered block has a different root.
    assert compute_tx_root(ids[::-1]) != compute_tx_root(ids)


def test_empty_block_round_trips() -> None:
    b = block(())
    assert Block.decode(b.encode()) == b
    assert b.tx_ids == ()


def _mutated_header_bytes(**over: object) -> bytes:
    value = header().to_value()
    value.update(over)
    return canonical.encode({k: v for k, v in value.items() if v is not None})


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"prev_hash": b"\x01" * 31}, "prev_hash must be 32 bytes"),
        ({"proposer": b"\x01" * 32}, "proposer must be 16 bytes"),
        ({"state_root": "00" * 32}, "state_root must be 32 bytes"),
        ({"height": 0}, "height is 0"),
        ({"height": True}, "height must be an integer"),
        ({"round": -1}, "round is -1"),
        ({"v": 2}, "version"),
        ({"chain_id": ""}, "chain_id"),
        ({"extra": 1}, "unexpected \\['extra'\\]"),
        ({"tx_root": None}, "missing \\['tx_root'\\]"),
    ],
)
def test_header_decode_rejects(over: dict[str, object], match: str) -> None:
    with pytest.raises(BlockDecodeError, match=match):
        BlockHeader.decode(_mutated_header_bytes(**over))


def test_non_canonical_bytes_are_rejected() -> None:
    value = header().to_value()
    # Keys in insertion (not sorted) order: valid msgpack, not canonical.
    unsorted = msgpack.packb(dict(reversed(list(value.items()))), use_bin_type=True)
    with pytest.raises(BlockDecodeError, match="not canonically encoded"):
        BlockHeader.decode(unsorted)
    with pytest.raises(BlockDecodeError, match="not canonically encoded"):
        Block.decode(block().encode() + b"\x00")
    with pytest.raises(BlockDecodeError):
        Block.decode(b"\xc1garbage")


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        {"header": {}, "txs": []},
        {"header": header().to_value(), "txs": [b""]},
        {"header": header().to_value(), "txs": ["text"]},
        {"header": header().to_value(), "txs": b"x"},
        {"header": header().to_value(), "txs": [], "more": 1},
    ],
)
def test_block_decode_rejects_shapes(value: object) -> None:
    with pytest.raises(BlockDecodeError):
        Block.decode(canonical.encode(value))


def test_commit_round_trip_and_strictness() -> None:
    sigs = [(b"\x02" * 16, b"\x05" * 64), (b"\x01" * 16, b"\x06" * 64)]
    cc = make_commit(3, 1, b"\x07" * 32, sigs)
    assert decode_commit(encode_commit(cc)) == cc
    bad = cc.to_value()
    bad["signatures"][0][1] = b"\x05" * 63
    with pytest.raises(BlockDecodeError, match="wrong field lengths"):
        decode_commit(canonical.encode(bad))
    bad = cc.to_value()
    bad["height"] = "3"
    with pytest.raises(BlockDecodeError, match="integers"):
        decode_commit(canonical.encode(bad))
    with pytest.raises(BlockDecodeError):
        decode_commit(canonical.encode({"height": 3}))


@settings(max_examples=60, deadline=None)
@given(
    txs=st.lists(st.binary(min_size=1, max_size=40), max_size=20),
    height=st.integers(1, 2**63 - 1),
    time_ms=st.integers(0, 2**63 - 1),
    round_=st.integers(0, 1000),
)
def test_round_trip_property(txs: list[bytes], height: int, time_ms: int, round_: int) -> None:
    t = tuple(txs)
    b = Block(header(height=height, time_ms=time_ms, round=round_,
                     tx_root=compute_tx_root([sm3(x) for x in t])), t)
    again = Block.decode(b.encode())
    assert again == b and again.hash == b.hash


def test_header_of_an_encoded_block() -> None:
    b = block()
    assert decode_header_of_block(b.encode()) == b.header
    # A header that is valid msgpack but not canonical (unsorted keys) is refused.
    value = b.header.to_value()
    raw = msgpack.packb({"header": dict(reversed(list(value.items()))), "txs": list(b.txs)},
                        use_bin_type=True)
    with pytest.raises(BlockDecodeError, match="not canonically encoded"):
        decode_header_of_block(raw)
    for junk in (b"", b"\xc1", canonical.encode({"txs": [], "header": 1}), canonical.encode([1])):
        with pytest.raises(BlockDecodeError):
            decode_header_of_block(junk)
