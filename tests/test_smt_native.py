"""The SMT's C batch update (ledger/_smtcore.c) against the Python reference (ledger.smt_update).

Both run on the same stored tree, batch after batch: the same root, the same writes and the
same deletes every time, whatever the keys' shapes, the deletes, the cache depth or updates
pending on top of each other. Then what only C can get wrong: a corrupt or missing record is
an SMTError (never a crash or a read past a record's end), bad arguments are refused, and no
reference leaks on either path. ``test_the_comparison_catches_a_wrong_hash`` shows that the
comparison itself fails an implementation that hashes one kind of node wrongly.

The C update's two shortcuts (``node_key`` as a bytes prefix, ``sm3=None`` for GmSSL's C SM3
registered through ``set_sm3``) are compared the same way, and ``set_sm3`` is shown to
refuse functions that miss the published SM3 vectors.
"""

from __future__ import annotations

import ctypes
import gc
import random
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certificates.hashing import sm3
from ledger import smt_update
from ledger.smt import CACHE_ALL, SMTError, SparseMerkleTree
from ledger.smt_records import _ROOT_ID

try:
    from tests.vectors import load_vectors
except ImportError:  # pragma: no cover - run from inside tests/
    from vectors import load_vectors  # type: ignore[no-redef]

# Every test but the first needs the C update; the first fails when it is missing, so a
# skip below never hides a broken build.
needs_c = pytest.mark.skipif(not smt_update.NATIVE, reason="the C update is not built: "
                             "see test_the_c_update_is_built")

PREFIX = b"s/"
node_key = PREFIX.__add__
Hasher = Callable[[bytes], bytes]


def test_the_c_update_is_built() -> None:
    # Not skipped: scripts/test.sh installs with a compiler at hand, so the C update must be
    # there, and every other test here must have run.
    assert smt_update.NATIVE, "ledger/_smtcore.c was not built by the install (see setup.py)"


def _run(impl: str, store: dict[bytes, bytes], overlay: dict[bytes, bytes | None],
         batch: dict[bytes, bytes | None], cache_depth: int, hasher: Hasher | None = sm3,
         ) -> tuple[bytes, dict[bytes, bytes | None], list[bytes]]:
    """One batch through one implementation, reading ``overlay`` over ``store``. For "c",
    ``hasher=None`` takes both shortcuts: the C SM3 and the key prefix instead of a call."""
    keys = sorted(batch)
    vals = [batch[k] for k in keys]

    def read(skey: bytes) -> bytes | None:
        return overlay[skey] if skey in overlay else store.get(skey)

    old = read(node_key(_ROOT_ID))
    deleted: list[bytes] = []
    missing = lambda skey: SMTError(f"missing {skey.hex()}")  # noqa: E731
    if impl == "c":
        assert smt_update._smtcore is not None
        root, writes = smt_update._smtcore.batch_update(
            keys, vals, old, PREFIX if hasher is None else node_key, read, read,
            lambda skey, t: read(skey), cache_depth, missing, deleted, hasher, SMTError)
    else:
        root, writes = smt_update.batch_update(
            keys, vals, old, node_key=node_key, read=read, hit=read,
            fetch=lambda skey, t: read(skey), cache_depth=cache_depth, missing=missing,
            deleted=deleted)
    return root, dict(writes), deleted


def compare(batches: list[dict[bytes, bytes | None]], *, cache_depth: int, commit_every: int,
            hasher: Hasher | None = sm3) -> int:
    """Run ``batches`` through both; fail at the first difference. Returns the tree's size."""
    store: dict[bytes, bytes] = {}
    overlay: dict[bytes, bytes | None] = {}
    for i, batch in enumerate(batches):
        ref = _run("py", store, overlay, batch, cache_depth)
        got = _run("c", store, overlay, batch, cache_depth, hasher)
        assert got[0] == ref[0], f"batch {i}: root {got[0].hex()} != {ref[0].hex()}"
        odd = sorted(set(got[1].items()) ^ set(ref[1].items()), key=repr)[:2]
        assert got[1] == ref[1], f"batch {i}: writes differ at {odd}"
        assert sorted(got[2]) == sorted(ref[2]), f"batch {i}: deletes differ"
        overlay.update(ref[1])
        if (i + 1) % commit_every == 0:  # persisted: the overlay folds into the store
            for k, v in overlay.items():
                if v is None:
                    store.pop(k, None)
                else:
                    store[k] = v
            overlay.clear()
    return len(store)


def _flip(key: bytes, bit: int) -> bytes:
    return (int.from_bytes(key, "big") ^ (1 << (255 - bit))).to_bytes(32, "big")


@st.composite
def batch_runs(draw: st.DrawFn) -> list[dict[bytes, bytes | None]]:
    """Batches over a pool of keys with shared prefixes, long chains and bit-255 neighbours,
    so that every branch of the recursion (chains left, leaves split, sides emptied) runs."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    base = rng.randbytes(32)
    bits = draw(st.lists(st.integers(0, 255), min_size=1, max_size=12))
    pool = list(dict.fromkeys(
        [base, bytes(32), b"\xff" * 32, *(_flip(base, b) for b in bits),
         *(rng.randbytes(32) for _ in range(draw(st.integers(0, 40))))]))
    runs = []
    for _ in range(draw(st.integers(1, 8))):
        keys = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        runs.append({k: None if draw(st.integers(0, 3)) == 0 else rng.randbytes(32)
                     for k in keys})
    return runs


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=batch_runs(), cache_depth=st.sampled_from([-1, 0, 4, CACHE_ALL]),
       commit_every=st.integers(1, 3), shortcuts=st.booleans())
def test_same_roots_writes_and_deletes_as_the_reference(
    runs: list[dict[bytes, bytes | None]], cache_depth: int, commit_every: int,
    shortcuts: bool,
) -> None:
    compare(runs, cache_depth=cache_depth, commit_every=commit_every,
            hasher=None if shortcuts else sm3)


@needs_c
def test_large_batches_with_deletes_match_the_reference() -> None:
    # Trees of thousands of keys, as a block builds them, with updates and deletes mixed in.
    rng = random.Random(11)
    live: list[bytes] = []
    runs: list[dict[bytes, bytes | None]] = []
    for _ in range(8):
        batch: dict[bytes, bytes | None] = {rng.randbytes(32): rng.randbytes(32)
                                            for _ in range(1500)}
        for k in rng.sample(live, min(len(live), 400)):
            batch[k] = None if rng.random() < 0.5 else rng.randbytes(32)
        live = [k for k in {*live, *batch} if batch.get(k, b"") is not None]
        runs.append(batch)
    for hasher in (sm3, None):  # the Python SM3 and node_key called back, then the shortcuts
        assert compare(runs, cache_depth=CACHE_ALL, commit_every=1,
                       hasher=hasher) == len(live) - 1


def _gmssl_exports_sm3() -> bool:
    from gmssl_pyx import gmsslext

    lib = ctypes.CDLL(gmsslext.__file__)
    return all(hasattr(lib, name) for name in ("sm3_init", "sm3_update", "sm3_finish"))


@needs_c
def test_the_c_sm3_is_registered_and_is_sm3() -> None:
    # Where gmssl_pyx exports GmSSL's SM3 functions (2.1.0 does), the C update must hash
    # through them, without calling back, and what it computes must be SM3. A gmssl_pyx
    # without them is the one case the fallback (calling sm3 back) is expected.
    if not _gmssl_exports_sm3():
        pytest.skip("this gmssl_pyx exports no sm3_init/sm3_update/sm3_finish: the C update "
                    "calls certificates.hashing.sm3 back instead")
    assert smt_update.NATIVE_SM3, "GmSSL's C SM3 was not registered (see _register_c_sm3)"
    core = smt_update._smtcore
    assert core is not None
    for case in load_vectors()["sm3"]["cases"]:
        assert core.sm3(case["message_ascii"].encode()).hex() == case["digest"]
    rng = random.Random(5)
    for n in [*range(0, 200), 1000, 4096, 100_001]:  # every padding case, several blocks
        data = rng.randbytes(n)
        assert core.sm3(data) == sm3(data), n


def _hash_functions(digest: Callable[[bytes], bytes]) -> tuple[list[Any], list[int]]:
    """sm3_init / sm3_update / sm3_finish as C callbacks over ``digest`` (kept alive by the
    caller), and the list their calls are counted in."""
    pending: dict[int, bytearray] = {}
    calls: list[int] = []
    init_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    update_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    finish_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)

    def init(ctx: int) -> None:
        pending[ctx] = bytearray()

    def update(ctx: int, data: int, n: int) -> None:
        pending[ctx] += ctypes.string_at(data, n)

    def finish(ctx: int, out: int) -> None:
        calls.append(1)
        ctypes.memmove(out, digest(bytes(pending.pop(ctx))), 32)

    return [init_t(init), update_t(update), finish_t(finish)], calls


def _address(fn: Any) -> int:
    addr = ctypes.cast(fn, ctypes.c_void_p).value
    assert addr is not None
    return addr


@needs_c
def test_set_sm3_refuses_functions_that_miss_the_vectors() -> None:
    if not _gmssl_exports_sm3():  # the test puts GmSSL's functions back at the end
        pytest.skip("this gmssl_pyx exports no sm3_init/sm3_update/sm3_finish")
    core = smt_update._smtcore
    assert core is not None and smt_update.NATIVE_SM3
    try:
        # The broken rule: a digest that is not SM3 (one bit off) is refused and the
        # registered functions stay; so is one that ignores its input.
        for wrong in (lambda d: bytes([sm3(d)[0] ^ 1]) + sm3(d)[1:], lambda d: sm3(b"")):
            fns, calls = _hash_functions(wrong)
            assert core.set_sm3(*map(_address, fns)) is False
            assert calls, "the vectors were not even tried"
            assert core.sm3(b"abc") == sm3(b"abc")
        # A right one is taken, and batch_update(sm3=None) then hashes through it.
        fns, calls = _hash_functions(sm3)
        assert core.set_sm3(*map(_address, fns)) is True
        calls.clear()
        batch = {sm3(b"%d" % i): sm3(b"v%d" % i) for i in range(50)}
        assert compare([batch], cache_depth=CACHE_ALL, commit_every=1, hasher=None) == 49
        assert len(calls) >= 99  # 50 leaves and 49 branches at least
        with pytest.raises(ValueError, match="NULL"):
            core.set_sm3(0, 0, 0)
    finally:
        assert smt_update._register_c_sm3()
    assert core.sm3(b"abc") == sm3(b"abc")


def test_the_key_prefix_shortcut_is_only_taken_for_prefix_add() -> None:
    assert smt_update._key_prefix(PREFIX.__add__) == PREFIX
    for other in (b"x".join, lambda nid: PREFIX + nid, str(PREFIX).__add__):
        assert smt_update._key_prefix(other) is other  # type: ignore[arg-type]


@needs_c
def test_the_comparison_catches_a_wrong_hash() -> None:
    # A C update handed an SM3 that gets chain nodes (one child empty) wrong must be caught.
    def wrong(data: bytes) -> bytes:
        if len(data) == 65 and data[0] == 1 and bytes(32) in (data[1:33], data[33:65]):
            return sm3(data + b"!")
        return sm3(data)

    shared = bytes(31) + b"\x01"
    runs: list[dict[bytes, bytes | None]] = [{shared: sm3(b"a"), _flip(shared, 250): sm3(b"b")}]
    compare(runs, cache_depth=CACHE_ALL, commit_every=1)  # the real hash agrees
    with pytest.raises(AssertionError, match="root"):
        compare(runs, cache_depth=CACHE_ALL, commit_every=1, hasher=wrong)


def _built(n: int) -> tuple[dict[bytes, bytes], bytes]:
    store: dict[bytes, bytes] = {}
    tree = SparseMerkleTree(store.get, node_key)
    root, writes = tree.update({sm3(b"%d" % i): sm3(b"v%d" % i) for i in range(n)})
    store.update((k, v) for k, v in writes if v is not None)
    return store, root


@needs_c
@pytest.mark.parametrize("damage", ["truncated", "flags", "depth above its position",
                                    "a leaf where a branch is", "not bytes", "missing"])
def test_a_damaged_record_is_an_smt_error_not_a_crash(damage: str) -> None:
    store, root = _built(200)
    # Every non-root record, damaged in turn; the root is checked by the tree on open.
    targets = [k for k in store if k != node_key(_ROOT_ID)]
    batch = {sm3(b"%d" % i): sm3(b"new") for i in range(200)}
    for skey in targets:
        bad: dict[bytes, object] = dict(store)
        rec = store[skey]
        if damage == "truncated":
            bad[skey] = rec[:-1]
        elif damage == "flags":
            bad[skey] = rec[:65] + bytes([7]) + rec[66:]
        elif damage == "depth above its position":
            bad[skey] = rec[:66] + b"\x00" + rec[67:]
        elif damage == "a leaf where a branch is":
            bad[skey] = rec[-64:] if len(rec) >= 131 else bytes(64)
        elif damage == "not bytes":
            bad[skey] = bytearray(rec)
        else:
            del bad[skey]
        tree = SparseMerkleTree(bad.get, node_key, root, native=True)  # type: ignore[arg-type]
        with pytest.raises((SMTError, TypeError)) as info:
            tree.update(batch)
        assert info.type is SMTError or damage == "not bytes"


@needs_c
def test_bad_arguments_are_refused() -> None:
    core = smt_update._smtcore
    assert core is not None
    a, b, v = sm3(b"a"), sm3(b"b"), sm3(b"v")
    lo, hi = sorted((a, b))

    def call(keys: list[bytes], vals: list[bytes | None]) -> object:
        return core.batch_update(keys, vals, None, node_key, {}.get, {}.get,
                                 lambda k, t: None, CACHE_ALL, SMTError, [], sm3, SMTError)

    for keys, vals, message in [
        ([hi, lo], [v, v], "sorted"), ([lo, lo], [v, v], "sorted"), ([], [], "non-empty"),
        ([lo], [v, v], "one value"), ([lo[:31]], [v], "32 bytes"), ([lo], [v + b"x"], "32 bytes"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(keys, vals)
    root, writes = call([lo, hi], [v, None])
    assert root == sm3(b"\x00" + lo + v) and writes == {node_key(_ROOT_ID): lo + v}


@needs_c
def test_no_reference_leaks_on_success_or_failure() -> None:
    # Every record and storage key the store holds keeps its reference count through 50
    # updates that succeed and 50 that fail half-way down (a truncated record).
    store, root = _built(300)
    skey = max(k for k in store if k != node_key(_ROOT_ID))
    broken = dict(store)
    broken[skey] = store[skey][:-1]
    batch = {sm3(b"%d" % i): sm3(b"again") for i in range(300)}  # every record on a path

    def refs() -> int:
        gc.collect()
        return sum(sys.getrefcount(k) + sys.getrefcount(r) for k, r in store.items())

    before = refs()
    for _ in range(50):
        SparseMerkleTree(store.get, node_key, root).update(batch)
        with pytest.raises(SMTError):
            SparseMerkleTree(broken.get, node_key, root, cache_depth=-1).update(batch)
    assert refs() == before
