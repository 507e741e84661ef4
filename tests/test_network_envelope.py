"""Signed peer envelopes: round trip, every rejection reason, batches, replay, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates import canonical, sm2
from certificates.hashing import sm3
from network.envelope import (
    Envelope,
    ReplayGuard,
    SeqCounter,
    open_batch,
    open_envelope,
    seal,
    seal_batch,
)
from network.errors import EnvelopeError

CHAIN = "certledger-test"
KEY_A = sm2.PrivateKey.from_bytes(bytes.fromhex("11" * 32))
KEY_B = sm2.PrivateKey.from_bytes(bytes.fromhex("22" * 32))
OUTSIDER = sm2.PrivateKey.from_bytes(bytes.fromhex("33" * 32))
KNOWN = {k.public.key_id: k.public.data for k in (KEY_A, KEY_B)}
MAX = 64 * 1024
#: One good envelope, sealed once: the fuzz tests mutate it.
GOOD = seal(CHAIN, "vote", b"prevote h=7 r=0", KEY_A, 41)


def reason_of(data: bytes, chain: str = CHAIN) -> str:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(data, chain, KNOWN, MAX)
    return info.value.reason


def resealed(**changes: object) -> bytes:
    """GOOD with fields replaced but the original signature kept."""
    raw = canonical.decode(GOOD)
    raw.update(changes)
    return canonical.encode(raw)


def test_round_trip() -> None:
    env = open_envelope(GOOD, CHAIN, KNOWN, MAX)
    assert env == Envelope(
        CHAIN, KEY_A.public.key_id, 41, "vote", b"prevote h=7 r=0", env.signature
    )
    assert len(env.signature) == 64
    # Canonical: the same inputs seal to a decodable, byte-stable structure.
    assert canonical.encode(canonical.decode(GOOD)) == GOOD


def test_oversized_is_refused_before_decoding() -> None:
    # Junk that would be "malformed" if decoded: size is checked first.
    assert reason_of(b"\xc1" * (MAX + 1)) == "oversized"
    assert reason_of(seal(CHAIN, "block", b"x" * MAX, KEY_A, 1)) == "oversized"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        canonical.encode([1, 2]),
        canonical.encode({"v": 1}),
        # Non-canonical: same map, keys out of order.
        b"\x82\xa1b\x01\xa1a\x02",
    ],
)
def test_malformed_bytes(data: bytes) -> None:
    assert reason_of(data) == "malformed"


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 2},
        {"v": True},
        {"sender": b"short"},
        {"seq": -1},
        {"seq": "7"},
        {"seq": True},
        {"kind": ""},
        {"kind": "k" * 65},
        {"payload": "text"},
        {"sig": b"\x00" * 63},
        {"chain": ""},
        {"extra": 1},
    ],
)
def test_malformed_fields(changes: dict[str, object]) -> None:
    assert reason_of(resealed(**changes)) == "malformed"


def test_wrong_chain() -> None:
    assert reason_of(GOOD, chain="another-chain") == "wrong_chain"
    other = seal("another-chain", "vote", b"x", KEY_A, 1)
    assert reason_of(other) == "wrong_chain"


def test_unknown_sender() -> None:
    assert reason_of(seal(CHAIN, "vote", b"x", OUTSIDER, 1)) == "unknown_sender"


def test_bad_signature() -> None:
    # Every signed field matters, and a signature cannot be moved to another sender.
    assert reason_of(resealed(payload=b"prevote h=7 r=1")) == "bad_signature"
    assert reason_of(resealed(seq=42)) == "bad_signature"
    assert reason_of(resealed(kind="proposal")) == "bad_signature"
    assert reason_of(resealed(sender=KEY_B.public.key_id)) == "bad_signature"
    sig = canonical.decode(GOOD)["sig"]
    assert reason_of(resealed(sig=bytes([sig[0] ^ 1]) + sig[1:])) == "bad_signature"
    assert reason_of(resealed(sig=b"\x00" * 64)) == "bad_signature"  # r = s = 0


def test_seal_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        seal(CHAIN, "vote", b"", KEY_A, -1)
    with pytest.raises(ValueError):
        seal(CHAIN, "", b"", KEY_A, 1)


def test_replay_guard_marks_stale() -> None:
    guard = ReplayGuard()
    e1 = open_envelope(seal(CHAIN, "vote", b"a", KEY_A, 5), CHAIN, KNOWN, MAX)
    e2 = open_envelope(seal(CHAIN, "vote", b"b", KEY_A, 9), CHAIN, KNOWN, MAX)
    eb = open_envelope(seal(CHAIN, "vote", b"c", KEY_B, 1), CHAIN, KNOWN, MAX)
    guard.check(e1)
    guard.check(e2)
    guard.check(eb)  # senders are tracked separately
    for env in (e1, e2):  # a replay, and an older message arriving late
        with pytest.raises(EnvelopeError) as info:
            guard.check(env)
        assert info.value.reason == "stale"
    assert guard.highest(KEY_A.public.key_id) == 9
    guard.forget(KEY_A.public.key_id)
    guard.check(e1)


def _env(seq: int, key: sm2.PrivateKey = KEY_A) -> Envelope:
    # The guard only looks at sender and seq; no need to sign thousands of these.
    return Envelope(CHAIN, key.public.key_id, seq, "vote", b"", b"\x00" * 64)


def test_replay_guard_window_accepts_late_arrivals_once() -> None:
    guard = ReplayGuard(window=4)
    for seq in (10, 8, 12, 9, 11):
        guard.check(_env(seq))
    for seq in (8, 12, 11, 7, 3):  # seen, or older than the window below 12
        with pytest.raises(EnvelopeError):
            guard.check(_env(seq))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 6), st.lists(st.integers(0, 40), max_size=60))
def test_replay_guard_matches_a_model_that_remembers_everything(
    window: int, seqs: list[int]
) -> None:
    guard = ReplayGuard(window=window)
    seen: set[int] = set()
    for seq in seqs:
        fresh = seq not in seen and (not seen or seq > max(seen) - window)
        try:
            guard.check(_env(seq))
        except EnvelopeError as exc:
            assert exc.reason == "stale" and not fresh
        else:
            assert fresh
            seen.add(seq)


def test_seq_counter_is_strictly_increasing() -> None:
    c = SeqCounter(1_700_000_000_000_000_000)
    values = [c.next() for _ in range(5)]
    assert values == sorted(set(values)) and values[0] == 1_700_000_000_000_000_000


def test_batch_keeps_good_envelopes_and_names_the_bad() -> None:
    items = [
        seal(CHAIN, "vote", b"1", KEY_A, 1),
        b"garbage",
        seal(CHAIN, "vote", b"2", KEY_A, 2),
        seal(CHAIN, "vote", b"3", OUTSIDER, 3),
        resealed(payload=b"tampered"),
        seal("other", "vote", b"4", KEY_B, 4),
        seal(CHAIN, "vote", b"1 again", KEY_A, 1),  # replay within the batch
        seal(CHAIN, "vote", b"5", KEY_B, 5),
    ]
    out = open_batch(seal_batch(items), CHAIN, KNOWN, MAX, guard=ReplayGuard())
    assert [e.payload for e in out.accepted] == [b"1", b"2", b"5"]
    assert out.rejected == ["malformed", "unknown_sender", "bad_signature", "wrong_chain", "stale"]


def test_batch_that_is_not_a_list_of_bytes() -> None:
    for body in (b"\xc1", canonical.encode({"a": 1})):
        with pytest.raises(EnvelopeError) as info:
            open_batch(body, CHAIN, KNOWN, MAX)
        assert info.value.reason == "malformed"
    with pytest.raises(EnvelopeError) as info:
        open_batch(seal_batch([GOOD] * 10), CHAIN, KNOWN, MAX, max_batch_bytes=100)
    assert info.value.reason == "oversized"
    out = open_batch(canonical.encode([1, GOOD]), CHAIN, KNOWN, MAX)
    assert out.rejected == ["malformed"] and len(out.accepted) == 1


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_envelope_error(data: bytes) -> None:
    try:
        open_envelope(data, CHAIN, KNOWN, MAX)
    except EnvelopeError as exc:
        assert exc.reason in EnvelopeError.REASONS


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@FUZZ
@given(mutations())
def test_mutated_envelopes_never_pass_or_crash(data: bytes) -> None:
    try:
        env = open_envelope(data, CHAIN, KNOWN, MAX)
    except EnvelopeError as exc:
        assert exc.reason in EnvelopeError.REASONS
        return
    # The only mutation allowed to pass is one that changed nothing signed.
    assert (env.sender_key_id, env.seq, env.kind, env.payload) == (
        KEY_A.public.key_id,
        41,
        "vote",
        b"prevote h=7 r=0",
    )


@FUZZ
@given(st.lists(st.one_of(st.just(GOOD), mutations(), st.binary(max_size=50)), max_size=6))
def test_batches_of_junk_only_raise_envelope_error(items: list[bytes]) -> None:
    out = open_batch(seal_batch(items), CHAIN, KNOWN, MAX)
    assert len(out.accepted) + len(out.rejected) == len(items)
    assert len(out.accepted) >= items.count(GOOD)


# ---------------------------------------------------------------- covered kinds


def parts_cover(payload: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """A cover like tx gossip's: the payload is a list of parts, the signature covers
    their hashes, and the parts come back with their hashes."""
    try:
        parts = canonical.decode(payload)
    except Exception as exc:
        raise EnvelopeError("malformed", "not a list of parts") from exc
    if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
        raise EnvelopeError("malformed", "not a list of parts")
    ids = [sm3(p) for p in parts]
    return ids, list(zip(parts, ids, strict=True))


PARTS = [b"tx one", b"tx two", b"tx three"]
COVERS = {"parts": parts_cover}


def covered(parts: list[bytes], covers: list[bytes] | None = None, seq: int = 5,
            key: sm2.PrivateKey = KEY_A) -> bytes:
    return seal(CHAIN, "parts", canonical.encode(parts), key, seq,
                covers=[sm3(p) for p in parts] if covers is None else covers)


def test_a_covered_kind_is_signed_over_its_cover_and_carries_the_decoded_payload() -> None:
    env = open_envelope(covered(PARTS), CHAIN, KNOWN, MAX, COVERS)
    assert env.decoded == [(p, sm3(p)) for p in PARTS]
    assert env.payload == canonical.encode(PARTS)


def test_a_covered_payload_changed_after_sealing_fails_its_signature() -> None:
    # the sender's covers name the original parts; the payload carries another
    forged = covered([b"tx one", b"tx 2", b"tx three"], covers=[sm3(p) for p in PARTS])
    with pytest.raises(EnvelopeError) as info:
        open_envelope(forged, CHAIN, KNOWN, MAX, COVERS)
    assert info.value.reason == "bad_signature"


def test_sealed_one_way_and_opened_the_other_fails_its_signature() -> None:
    plain = seal(CHAIN, "parts", canonical.encode(PARTS), KEY_A, 5)
    for data, covers in ((plain, COVERS), (covered(PARTS), None)):
        with pytest.raises(EnvelopeError) as info:
            open_envelope(data, CHAIN, KNOWN, MAX, covers)
        assert info.value.reason == "bad_signature"
    assert open_envelope(plain, CHAIN, KNOWN, MAX).decoded is None  # not covered: no decode


def test_a_cover_runs_only_for_a_known_sender_and_its_refusal_is_malformed() -> None:
    calls: list[bytes] = []

    def spy(payload: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
        calls.append(payload)
        return parts_cover(payload)

    outsider = covered(PARTS, key=OUTSIDER)
    with pytest.raises(EnvelopeError) as info:
        open_envelope(outsider, CHAIN, KNOWN, MAX, {"parts": spy})
    assert info.value.reason == "unknown_sender" and calls == []
    junk = seal(CHAIN, "parts", b"\xc1", KEY_A, 6, covers=[])
    batch = open_batch(seal_batch([junk, covered(PARTS, seq=7)]), CHAIN, KNOWN, MAX,
                       covers={"parts": spy})
    assert batch.rejected == ["malformed"] and len(batch.accepted) == 1
    assert batch.accepted[0].decoded == [(p, sm3(p)) for p in PARTS]
