"""RFC 9162 Merkle tree: roots, inclusion and consistency proofs, pure verifiers.

The tree has the RFC 6962/9162 shape: leaf = H(0x00 || data), node = H(0x01 || left || right),
and a range of n > 1 leaves splits at the largest power of two below n. ``MerkleTree`` builds it
bottom-up, pairing nodes level by level and carrying an odd last node up unchanged, which yields
that same shape in O(n) hashes; it keeps the levels so every proof afterwards costs O(log n).
The verify functions are pure and use the bit walks of RFC 9162 sections 2.1.3.2 and 2.1.4.2.
The hash is injected through ``Hasher``: SM3 in certledger, SHA-256 only to check the shape
against published vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from certificates.errors import MerkleError, RootMismatchError
from certificates.hashing import DIGEST_SIZE, sm3

__all__ = [
    "SHA256_HASHER",
    "SM3_HASHER",
    "Hasher",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "root",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


@dataclass(frozen=True)
class Hasher:
    """RFC 9162 tree hashing over one hash function."""

    hash_fn: Callable[[bytes], bytes]
    digest_size: int

    def empty_root(self) -> bytes:
        return self.hash_fn(b"")

    def hash_leaf(self, data: bytes) -> bytes:
        return self.hash_fn(_LEAF_PREFIX + data)

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        return self.hash_fn(_NODE_PREFIX + left + right)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


SM3_HASHER = Hasher(sm3, DIGEST_SIZE)
SHA256_HASHER = Hasher(_sha256, 32)


def _split(n: int) -> int:
    """Largest power of two strictly below ``n`` (n >= 2): the RFC 9162 split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str, hasher: Hasher) -> None:
    if len(value) != hasher.digest_size:
        raise MerkleError(f"{what} has {len(value)} bytes, expected {hasher.digest_size}")


def _check_proof_hashes(proof: Sequence[bytes], kind: str, hasher: Hasher) -> None:
    for i, element in enumerate(proof):
        _check_hash(element, f"{kind} proof hash {i}", hasher)


def _next_level(level: Sequence[bytes], hasher: Hasher) -> list[bytes]:
    hash_children = hasher.hash_children
    parents = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        # Carrying the odd node up unchanged is what makes bottom-up pairing
        # agree with the RFC's power-of-two split.
        parents.append(level[-1])
    return parents


class MerkleTree:
    """A tree built once over leaf hashes; answers roots and proofs for it and its prefixes.

    ``levels[k][j]`` is the root of leaves ``[j * 2**k, min((j + 1) * 2**k, size))``, so every
    subtree the RFC decomposition asks for is a lookup, except right-edge subtrees of a
    prefix smaller than the tree, which cost O(log n) hashes.
    """

    def __init__(self, leaf_hashes: Sequence[bytes], hasher: Hasher = SM3_HASHER) -> None:
        self._hasher = hasher
        level = list(leaf_hashes)
        for i, leaf_hash in enumerate(level):
            _check_hash(leaf_hash, f"leaf hash {i}", hasher)
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = _next_level(level, hasher)
            self._levels.append(level)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    @property
    def hasher(self) -> Hasher:
        return self._hasher

    @property
    def root(self) -> bytes:
        return self.root_at(self.size)

    def leaf_hash(self, index: int) -> bytes:
        _check_index(index, self.size)
        return self._levels[0][index]

    def root_at(self, size: int) -> bytes:
        """Root of the tree made of the first ``size`` leaves."""
        self._check_size(size)
        return self._subtree(0, size) if size else self._hasher.empty_root()

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 PATH for leaf ``index`` in the tree of the first ``size`` leaves."""
        size = self.size if size is None else size
        self._check_size(size)
        _check_index(index, size)
        if size == self.size:
            # Hot path (one proof per leaf of a batch): walk the stored levels.
            proof = []
            for level in self._levels[:-1]:
                sibling = index ^ 1
                if sibling < len(level):
                    proof.append(level[sibling])
                index >>= 1
            return proof
        siblings = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                siblings.append(self._subtree(start + k, end))
                end = start + k
            else:
                siblings.append(self._subtree(start, start + k))
                start += k
        siblings.reverse()
        return siblings

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 PROOF(old_size, D[new_size]); empty when old_size is 0 or new_size."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        _check_sizes(old_size, new_size)
        if old_size in (0, new_size):
            return []
        # Iterative SUBPROOF: descend while the old tree is not a whole subtree, collecting
        # the siblings top-down; the RFC lists them bottom-up.
        siblings = []
        start, end, m, whole_old_tree = 0, new_size, old_size, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                siblings.append(self._subtree(start + k, end))
                end = start + k
            else:
                siblings.append(self._subtree(start, start + k))
                start, m, whole_old_tree = start + k, m - k, False
        siblings.reverse()
        return siblings if whole_old_tree else [self._subtree(start, end), *siblings]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise MerkleError(f"tree size {size} out of range 0..{self.size}")

    def _subtree(self, start: int, end: int) -> bytes:
        # Ranges from the RFC decomposition start at a multiple of the smallest power of two
        # >= their length, so a whole block or a block cut by the tree's edge is stored.
        k = (end - start - 1).bit_length()
        if start + (1 << k) == end or end == self.size:
            return self._levels[k][start >> k]
        half = 1 << (k - 1)
        return self._hasher.hash_children(
            self._subtree(start, start + half), self._subtree(start + half, end)
        )


def _check_index(index: int, size: int) -> None:
    if index < 0:
        raise MerkleError(f"leaf index {index} is negative")
    if index >= size:
        raise MerkleError(f"leaf index {index} out of range for tree size {size}")


def _check_sizes(old_size: int, new_size: int) -> None:
    if old_size < 0:
        raise MerkleError(f"old tree size {old_size} is negative")
    if old_size > new_size:
        raise MerkleError(f"old tree size {old_size} exceeds new tree size {new_size}")


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes], hasher: Hasher = SM3_HASHER) -> bytes:
    """RFC 9162 MTH over already-hashed leaves, in O(n) hashes."""
    if not leaf_hashes:
        return hasher.empty_root()
    level: Sequence[bytes] = leaf_hashes
    while len(level) > 1:
        level = _next_level(level, hasher)
    return level[0]


def root(leaves: Sequence[bytes], hasher: Hasher = SM3_HASHER) -> bytes:
    """RFC 9162 MTH over leaf data."""
    return root_from_leaf_hashes([hasher.hash_leaf(d) for d in leaves], hasher)


def inclusion_proof(
    index: int, leaf_hashes: Sequence[bytes], hasher: Hasher = SM3_HASHER
) -> list[bytes]:
    """RFC 9162 PATH(index, D[n]). For many proofs build one ``MerkleTree`` instead."""
    return MerkleTree(leaf_hashes, hasher).inclusion_proof(index)


def consistency_proof(
    old_size: int, new_size: int, leaf_hashes: Sequence[bytes], hasher: Hasher = SM3_HASHER
) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[new_size]) over the first ``new_size`` leaf hashes."""
    _check_sizes(old_size, new_size)
    if new_size > len(leaf_hashes):
        raise MerkleError(f"new tree size {new_size} exceeds the {len(leaf_hashes)} leaves given")
    return MerkleTree(leaf_hashes[:new_size], hasher).consistency_proof(old_size)


def _inclusion_proof_length(index: int, size: int) -> int:
    # Levels where the paths to the leaf and to the last leaf differ give one sibling each;
    # above them the leaf is on the right edge and gets a left sibling per set bit.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(
    leaf_hash: bytes,
    index: int,
    size: int,
    proof: Sequence[bytes],
    hasher: Hasher = SM3_HASHER,
) -> bytes:
    """Root implied by an inclusion proof (RFC 9162 section 2.1.3.2); MerkleError if malformed."""
    if size <= 0:
        raise MerkleError(f"tree size {size} has no leaves to prove inclusion of")
    _check_index(index, size)
    _check_hash(leaf_hash, "leaf hash", hasher)
    want = _inclusion_proof_length(index, size)
    if len(proof) != want:
        raise MerkleError(
            f"inclusion proof for leaf {index} in tree size {size} has {len(proof)} hashes, "
            f"expected {want}"
        )
    _check_proof_hashes(proof, "inclusion", hasher)
    hash_children = hasher.hash_children
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            # fn == sn with fn even: this node was carried up, skip the levels it has no sibling.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hash_children(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r


def verify_inclusion(
    leaf_hash: bytes,
    index: int,
    size: int,
    proof: Sequence[bytes],
    expected_root: bytes,
    hasher: Hasher = SM3_HASHER,
) -> None:
    """Raise RootMismatchError unless ``proof`` puts ``leaf_hash`` at ``index`` under the root."""
    _check_hash(expected_root, "expected root", hasher)
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof, hasher)
    if calculated != expected_root:
        raise RootMismatchError(expected_root, calculated)


def _consistency_proof_length(old_size: int, new_size: int) -> int:
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    shift = (old_size & -old_size).bit_length() - 1
    # A power-of-two old tree is a node of the new one: its root is not sent, it is known.
    seed = 0 if old_size == 1 << shift else 1
    return seed + inner - shift + border


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    hasher: Hasher = SM3_HASHER,
) -> None:
    """Raise unless ``proof`` shows the tree of ``old_size`` is a prefix of ``new_size``.

    RFC 9162 section 2.1.4.2. Any tree extends the empty one, so for ``old_size == 0`` the
    proof must be empty and ``old_root`` is not looked at.
    """
    _check_sizes(old_size, new_size)
    _check_hash(new_root, "new root", hasher)
    if old_size == 0 or old_size == new_size:
        if proof:
            raise MerkleError(
                f"consistency proof from size {old_size} to {new_size} must be empty, "
                f"got {len(proof)} hashes"
            )
        if old_size and old_root != new_root:
            raise RootMismatchError(old_root, new_root)
        return
    _check_hash(old_root, "old root", hasher)
    want = _consistency_proof_length(old_size, new_size)
    if len(proof) != want:
        raise MerkleError(
            f"consistency proof from size {old_size} to {new_size} has {len(proof)} hashes, "
            f"expected {want}"
        )
    _check_proof_hashes(proof, "consistency", hasher)

    hash_children = hasher.hash_children
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            # A left sibling is in both trees; it rebuilds the old root and the new one.
            fr, sr = hash_children(c, fr), hash_children(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = hash_children(sr, c)
        fn, sn = fn >> 1, sn >> 1

    if fr != old_root:
        err = RootMismatchError(old_root, fr)
        err.add_note(f"the proof does not reproduce the old root (size {old_size})")
        raise err
    if sr != new_root:
        err = RootMismatchError(new_root, sr)
        err.add_note(f"the proof does not reproduce the new root (size {new_size})")
        raise err
