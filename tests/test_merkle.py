"""Merkle tree: published SHA-256 vectors, a slow RFC reference, and proof properties."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certificates.errors import MerkleError, RootMismatchError
from certificates.hashing import sm3
from certificates.merkle import (
    SHA256_HASHER,
    SM3_HASHER,
    Hasher,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    root,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

try:
    from tests.vectors import load_vectors
except ImportError:  # tests/ is not a package: pytest puts tests/ itself on sys.path
    from vectors import load_vectors  # type: ignore[no-redef]

MERKLE_VECTORS: dict[str, Any] = load_vectors()["rfc6962_sha256_merkle"]

MAX_SIZE = 300
LEAVES = [SM3_HASHER.hash_leaf(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]
BIG_TREE = MerkleTree(LEAVES)
FAST = settings(max_examples=150, deadline=None)


# --- Slow reference: the recursive definitions of RFC 9162 section 2.1, over leaf hashes. ---


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes], h: Hasher = SM3_HASHER) -> bytes:
    n = len(leaves)
    if n == 0:
        return h.empty_root()
    if n == 1:
        return leaves[0]
    k = _k(n)
    return h.hash_children(ref_mth(leaves[:k], h), ref_mth(leaves[k:], h))


def ref_path(m: int, leaves: Sequence[bytes], h: Hasher = SM3_HASHER) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, leaves[:k], h), ref_mth(leaves[k:], h)]
    return [*ref_path(m - k, leaves[k:], h), ref_mth(leaves[:k], h)]


def ref_proof(m: int, leaves: Sequence[bytes], h: Hasher = SM3_HASHER) -> list[bytes]:
    def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [ref_mth(d, h)]
        k = _k(n)
        if m <= k:
            return [*subproof(m, d[:k], b), ref_mth(d[k:], h)]
        return [*subproof(m - k, d[k:], False), ref_mth(d[:k], h)]

    return subproof(m, leaves, True)


# The same recursions, recording only which side each hash goes on. Two (index, size) pairs
# with the same shape make the verifier do the same hashing, so a proof for one verifies as
# the other: a Merkle proof does not bind the tree size beyond its shape.


def path_shape(m: int, n: int) -> tuple[str, ...]:
    if n == 1:
        return ()
    k = _k(n)
    return (*path_shape(m, k), "R") if m < k else (*path_shape(m - k, n - k), "L")


def proof_shape(m: int, n: int, b: bool = True) -> tuple[str, ...]:
    if m == n:
        return () if b else ("seed",)
    k = _k(n)
    return (*proof_shape(m, k, b), "R") if m <= k else (*proof_shape(m - k, n - k, False), "L")


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def raises_merkle(fn: Callable[[], None]) -> bool:
    try:
        fn()
    except MerkleError:  # RootMismatchError is a MerkleError
        return True
    return False


# --- Published vectors (SHA-256) fix the tree shape. ---


def test_vectors_roots_by_size() -> None:
    data = [bytes.fromhex(x) for x in MERKLE_VECTORS["leaf_inputs_hex"]]
    leaf_hashes = [SHA256_HASHER.hash_leaf(d) for d in data]
    tree = MerkleTree(leaf_hashes, SHA256_HASHER)
    roots = MERKLE_VECTORS["roots_by_size"]
    assert len(roots) == len(data) + 1
    for size, want in enumerate(roots):
        assert root(data[:size], SHA256_HASHER).hex() == want
        assert root_from_leaf_hashes(leaf_hashes[:size], SHA256_HASHER).hex() == want
        assert tree.root_at(size).hex() == want
        assert ref_mth(leaf_hashes[:size], SHA256_HASHER).hex() == want


def test_vectors_leaf_and_node_hash() -> None:
    leaf = MERKLE_VECTORS["leaf_L123456"]
    assert SHA256_HASHER.hash_leaf(leaf["input_ascii"].encode()).hex() == leaf["leaf_hash"]
    node = MERKLE_VECTORS["node_N123_N456"]
    got = SHA256_HASHER.hash_children(node["left_ascii"].encode(), node["right_ascii"].encode())
    assert got.hex() == node["node_hash"]


def test_sm3_hasher_domain_separation() -> None:
    assert SM3_HASHER.digest_size == 32
    assert SM3_HASHER.empty_root() == sm3(b"")
    assert SM3_HASHER.hash_leaf(b"x") == sm3(b"\x00x")
    assert SM3_HASHER.hash_children(b"a", b"b") == sm3(b"\x01ab")


def test_vector_proofs_verify_with_sha256() -> None:
    data = [bytes.fromhex(x) for x in MERKLE_VECTORS["leaf_inputs_hex"]]
    leaf_hashes = [SHA256_HASHER.hash_leaf(d) for d in data]
    roots = [bytes.fromhex(r) for r in MERKLE_VECTORS["roots_by_size"]]
    for n in range(1, len(data) + 1):
        for i in range(n):
            proof = inclusion_proof(i, leaf_hashes[:n], SHA256_HASHER)
            verify_inclusion(leaf_hashes[i], i, n, proof, roots[n], SHA256_HASHER)
        for m in range(n + 1):
            proof = consistency_proof(m, n, leaf_hashes, SHA256_HASHER)
            verify_consistency(m, n, roots[m], roots[n], proof, SHA256_HASHER)


# --- Fast code against the reference. ---


@FAST
@given(st.integers(0, MAX_SIZE))
def test_root_matches_reference(n: int) -> None:
    want = ref_mth(LEAVES[:n])
    assert root_from_leaf_hashes(LEAVES[:n]) == want
    assert MerkleTree(LEAVES[:n]).root == want
    assert BIG_TREE.root_at(n) == want


@FAST
@given(st.data())
def test_inclusion_proof_matches_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    want = ref_path(i, LEAVES[:n])
    assert MerkleTree(LEAVES[:n]).inclusion_proof(i) == want
    assert BIG_TREE.inclusion_proof(i, n) == want
    assert inclusion_proof(i, LEAVES[:n]) == want


@FAST
@given(st.data())
def test_consistency_proof_matches_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX_SIZE), label="new_size")
    m = data.draw(st.integers(1, n), label="old_size")
    want = ref_proof(m, LEAVES[:n])
    assert MerkleTree(LEAVES[:n]).consistency_proof(m) == want
    assert BIG_TREE.consistency_proof(m, n) == want
    assert consistency_proof(m, n, LEAVES) == want


def test_all_proofs_verify_for_small_trees() -> None:
    for n in range(1, 65):
        tree = MerkleTree(LEAVES[:n])
        new_root = tree.root
        for i in range(n):
            proof = tree.inclusion_proof(i)
            assert BIG_TREE.inclusion_proof(i, n) == proof
            verify_inclusion(LEAVES[i], i, n, proof, new_root)
        for m in range(n + 1):
            proof = tree.consistency_proof(m)
            assert BIG_TREE.consistency_proof(m, n) == proof
            verify_consistency(m, n, BIG_TREE.root_at(m), new_root, proof)


# --- Inclusion proofs: verify, and fail on any corruption. ---


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes]:
    n = draw(st.integers(1, MAX_SIZE), label="size")
    i = draw(st.integers(0, n - 1), label="index")
    return i, n, BIG_TREE.inclusion_proof(i, n), BIG_TREE.root_at(n)


@FAST
@given(inclusion_cases(), st.data())
def test_inclusion_flipped_bit_fails(case: tuple[int, int, list[bytes], bytes], data: Any) -> None:
    i, n, proof, expected = case
    verify_inclusion(LEAVES[i], i, n, proof, expected)
    assert root_from_inclusion_proof(LEAVES[i], i, n, proof) == expected
    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(RootMismatchError):
        verify_inclusion(flip(LEAVES[i], bit), i, n, proof, expected)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
        with pytest.raises(RootMismatchError):
            verify_inclusion(LEAVES[i], i, n, bad, expected)


@FAST
@given(inclusion_cases(), st.data())
def test_inclusion_wrong_index_fails(case: tuple[int, int, list[bytes], bytes], data: Any) -> None:
    i, n, proof, expected = case
    other = data.draw(st.integers(-1, n).filter(lambda x: x != i), label="wrong index")
    with pytest.raises(MerkleError):
        verify_inclusion(LEAVES[i], other, n, proof, expected)


@FAST
@given(inclusion_cases(), st.data())
def test_inclusion_wrong_size_fails_unless_same_shape(
    case: tuple[int, int, list[bytes], bytes], data: Any
) -> None:
    i, n, proof, expected = case
    other = data.draw(st.integers(0, 2 * MAX_SIZE).filter(lambda x: x != n), label="wrong size")
    if other > i and path_shape(i, other) == path_shape(i, n):
        verify_inclusion(LEAVES[i], i, other, proof, expected)
    else:
        with pytest.raises(MerkleError):
            verify_inclusion(LEAVES[i], i, other, proof, expected)


def test_inclusion_size_is_bound_only_through_shape() -> None:
    # Leaf 0 of 3 and leaf 0 of 4 both have a right sibling on two levels.
    proof = BIG_TREE.inclusion_proof(0, 3)
    verify_inclusion(LEAVES[0], 0, 4, proof, BIG_TREE.root_at(3))
    with pytest.raises(MerkleError):
        verify_inclusion(LEAVES[0], 0, 5, proof, BIG_TREE.root_at(3))


def test_inclusion_every_bit_of_a_small_proof() -> None:
    n, i = 7, 4
    proof, expected = BIG_TREE.inclusion_proof(i, n), BIG_TREE.root_at(n)
    for j, element in enumerate(proof):
        for bit in range(256):
            bad = [*proof[:j], flip(element, bit), *proof[j + 1 :]]
            with pytest.raises(RootMismatchError):
                verify_inclusion(LEAVES[i], i, n, bad, expected)


# --- Consistency proofs: verify, and fail on any corruption. ---


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes]]:
    n = draw(st.integers(2, MAX_SIZE), label="new_size")
    m = draw(st.integers(1, n - 1), label="old_size")
    return m, n, BIG_TREE.consistency_proof(m, n)


@FAST
@given(consistency_cases(), st.data())
def test_consistency_flipped_bit_fails(case: tuple[int, int, list[bytes]], data: Any) -> None:
    m, n, proof = case
    old, new = BIG_TREE.root_at(m), BIG_TREE.root_at(n)
    verify_consistency(m, n, old, new, proof)
    j = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    bad = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, old, new, bad)
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, flip(old, bit), new, proof)
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, old, flip(new, bit), proof)


@FAST
@given(consistency_cases())
def test_consistency_swapped_roots_fail(case: tuple[int, int, list[bytes]]) -> None:
    m, n, proof = case
    with pytest.raises(RootMismatchError):
        verify_consistency(m, n, BIG_TREE.root_at(n), BIG_TREE.root_at(m), proof)


@FAST
@given(consistency_cases(), st.data())
def test_consistency_wrong_old_size_fails_unless_same_shape(
    case: tuple[int, int, list[bytes]], data: Any
) -> None:
    m, n, proof = case
    old, new = BIG_TREE.root_at(m), BIG_TREE.root_at(n)
    other = data.draw(st.integers(-1, n + 1).filter(lambda x: x != m), label="wrong old size")
    if 0 < other < n and proof_shape(other, n) == proof_shape(m, n):
        verify_consistency(other, n, old, new, proof)
    else:
        assert raises_merkle(lambda: verify_consistency(other, n, old, new, proof))


@FAST
@given(consistency_cases(), st.data())
def test_consistency_wrong_new_size_fails_unless_same_shape(
    case: tuple[int, int, list[bytes]], data: Any
) -> None:
    m, n, proof = case
    old, new = BIG_TREE.root_at(m), BIG_TREE.root_at(n)
    other = data.draw(st.integers(0, 2 * MAX_SIZE).filter(lambda x: x != n), label="wrong size")
    if other > m and proof_shape(m, other) == proof_shape(m, n):
        verify_consistency(m, other, old, new, proof)
    else:
        assert raises_merkle(lambda: verify_consistency(m, other, old, new, proof))


def test_consistency_size_is_bound_only_through_shape() -> None:
    # 4 -> 5 and 4 -> 6 both extend the old tree by one right-hand node.
    proof = BIG_TREE.consistency_proof(4, 5)
    verify_consistency(4, 6, BIG_TREE.root_at(4), BIG_TREE.root_at(5), proof)


def test_consistency_trivial_cases() -> None:
    r3, r5 = BIG_TREE.root_at(3), BIG_TREE.root_at(5)
    verify_consistency(0, 5, b"", r5, [])
    verify_consistency(0, 0, b"", SM3_HASHER.empty_root(), [])
    verify_consistency(5, 5, r5, r5, [])
    with pytest.raises(RootMismatchError):
        verify_consistency(5, 5, r3, r5, [])
    for m, n in ((0, 5), (5, 5)):
        with pytest.raises(MerkleError, match="must be empty, got 1 hashes"):
            verify_consistency(m, n, r5, r5, [r3])


def test_consistency_mismatch_names_the_root() -> None:
    proof = BIG_TREE.consistency_proof(3, 5)
    with pytest.raises(RootMismatchError) as info:
        verify_consistency(3, 5, BIG_TREE.root_at(4), BIG_TREE.root_at(5), proof)
    assert info.value.expected == BIG_TREE.root_at(4)
    assert any("old root" in note for note in info.value.__notes__)
    with pytest.raises(RootMismatchError) as info:
        verify_consistency(3, 5, BIG_TREE.root_at(3), BIG_TREE.root_at(6), proof)
    assert any("new root" in note for note in info.value.__notes__)


# --- Malformed input: MerkleError naming the problem. ---

ROOT7 = BIG_TREE.root_at(7)
PROOF_3_OF_7 = BIG_TREE.inclusion_proof(3, 7)


@pytest.mark.parametrize(
    ("index", "size", "message"),
    [
        (7, 7, "leaf index 7 out of range for tree size 7"),
        (9, 7, "leaf index 9 out of range for tree size 7"),
        (-1, 7, "leaf index -1 is negative"),
        (0, 0, "tree size 0 has no leaves"),
        (0, -3, "tree size -3 has no leaves"),
    ],
)
def test_inclusion_bad_index_or_size(index: int, size: int, message: str) -> None:
    with pytest.raises(MerkleError, match=message) as info:
        verify_inclusion(LEAVES[3], index, size, PROOF_3_OF_7, ROOT7)
    assert not isinstance(info.value, RootMismatchError)


def test_inclusion_wrong_proof_length() -> None:
    with pytest.raises(MerkleError, match="has 2 hashes, expected 3"):
        verify_inclusion(LEAVES[3], 3, 7, PROOF_3_OF_7[:2], ROOT7)
    with pytest.raises(MerkleError, match="has 4 hashes, expected 3"):
        verify_inclusion(LEAVES[3], 3, 7, [*PROOF_3_OF_7, ROOT7], ROOT7)
    with pytest.raises(MerkleError, match="has 1 hashes, expected 0"):
        verify_inclusion(LEAVES[0], 0, 1, [ROOT7], LEAVES[0])


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_inclusion_wrong_hash_lengths(length: int) -> None:
    bad = bytes(length)
    proof = [*PROOF_3_OF_7]
    proof[1] = bad
    with pytest.raises(MerkleError, match=f"inclusion proof hash 1 has {length} bytes, expected"):
        verify_inclusion(LEAVES[3], 3, 7, proof, ROOT7)
    with pytest.raises(MerkleError, match=f"leaf hash has {length} bytes, expected 32"):
        verify_inclusion(bad, 3, 7, PROOF_3_OF_7, ROOT7)
    with pytest.raises(MerkleError, match=f"expected root has {length} bytes, expected 32"):
        verify_inclusion(LEAVES[3], 3, 7, PROOF_3_OF_7, bad)


def test_consistency_malformed() -> None:
    r3, r7 = BIG_TREE.root_at(3), ROOT7
    proof = BIG_TREE.consistency_proof(3, 7)
    assert len(proof) == 4
    with pytest.raises(MerkleError, match="old tree size 8 exceeds new tree size 7"):
        verify_consistency(8, 7, r3, r7, proof)
    with pytest.raises(MerkleError, match="old tree size -1 is negative"):
        verify_consistency(-1, 7, r3, r7, proof)
    with pytest.raises(MerkleError, match="from size 3 to 7 has 3 hashes, expected 4"):
        verify_consistency(3, 7, r3, r7, proof[:3])
    with pytest.raises(MerkleError, match="from size 3 to 7 has 0 hashes, expected 4"):
        verify_consistency(3, 7, r3, r7, [])
    with pytest.raises(MerkleError, match="consistency proof hash 2 has 31 bytes, expected 32"):
        verify_consistency(3, 7, r3, r7, [*proof[:2], proof[2][:31], proof[3]])
    with pytest.raises(MerkleError, match="old root has 31 bytes, expected 32"):
        verify_consistency(3, 7, r3[:31], r7, proof)
    with pytest.raises(MerkleError, match="new root has 33 bytes, expected 32"):
        verify_consistency(3, 7, r3, r7 + b"\x00", proof)


def test_builders_reject_bad_arguments() -> None:
    with pytest.raises(MerkleError, match="leaf hash 1 has 3 bytes, expected 32"):
        MerkleTree([LEAVES[0], b"abc"])
    with pytest.raises(MerkleError, match="leaf index 7 out of range for tree size 7"):
        inclusion_proof(7, LEAVES[:7])
    with pytest.raises(MerkleError, match="leaf index -1 is negative"):
        BIG_TREE.inclusion_proof(-1)
    with pytest.raises(MerkleError, match=r"tree size 301 out of range 0\.\.300"):
        BIG_TREE.root_at(301)
    with pytest.raises(MerkleError, match="new tree size 9 exceeds the 8 leaves given"):
        consistency_proof(3, 9, LEAVES[:8])
    with pytest.raises(MerkleError, match="old tree size 9 exceeds new tree size 8"):
        BIG_TREE.consistency_proof(9, 8)
    assert MerkleTree([]).root == SM3_HASHER.empty_root()
    assert len(MerkleTree(LEAVES[:5])) == 5


# --- Batch scale: one tree of 100,000 leaves. ---


def test_large_tree() -> None:
    n = 100_000
    leaves = [SM3_HASHER.hash_leaf(i.to_bytes(4, "big")) for i in range(n)]
    tree = MerkleTree(leaves)
    assert tree.root == root_from_leaf_hashes(leaves) == ref_mth(leaves)
    proofs = [tree.inclusion_proof(i) for i in range(n)]
    for i in (0, 1, 65_535, 65_536, 99_998, n - 1):
        verify_inclusion(leaves[i], i, n, proofs[i], tree.root)
    assert proofs[77_777] == ref_path(77_777, leaves)
    assert tree.consistency_proof(65_537) == ref_proof(65_537, leaves)
    verify_consistency(65_537, n, tree.root_at(65_537), tree.root, tree.consistency_proof(65_537))
