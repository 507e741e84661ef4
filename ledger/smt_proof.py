"""Sparse Merkle tree proofs: the encoding and the pure check, shared by nodes and verifiers.

The hashing rule is ``ledger.smt``'s: ``EMPTY_ROOT`` (32 zero bytes) for an empty subtree,
``SM3(0x00 || key || value)`` for a lone leaf, ``SM3(0x01 || left || right)`` for the rest.

Proofs
------
``SMTProof.siblings[j]`` is the hash of the sibling at depth ``j + 1`` of the path to the key;
the path ends at depth ``len(siblings)`` at the key's own leaf (inclusion), at an empty subtree
or at the leaf of another key sharing those bits (``other_leaf``; both prove absence).
``verify_proof`` hashes from that end up to the root. It refuses a proof whose last sibling is
empty (a compact tree would have put the end one level higher); every defect raises
``ProofError``, a wrong root its subclass ``SMTRootMismatchError``. Encoding (``to_bytes``)::

    flags (1: 0x01 if other_leaf follows) | depth L (2, big endian, <= 256)
    | bitmap (ceil(L/8) bytes, bit j MSB-first = sibling j non-empty, padding bits zero)
    | the non-empty siblings (32 bytes each, none all-zero) | other key || other value (64)
"""

from __future__ import annotations

from dataclasses import dataclass

from certificates.errors import RootMismatchError
from certificates.hashing import sm3
from ledger.errors import LedgerError

__all__ = ["EMPTY_ROOT", "ProofError", "SMTError", "SMTProof", "SMTRootMismatchError",
           "verify_proof"]

EMPTY_ROOT = bytes(32)
_Z = EMPTY_ROOT
_LEAF = b"\x00"
_NODE = b"\x01"


class SMTError(LedgerError):
    """Bad argument (key or value not 32 bytes) or a store that does not hold the tree."""

    code = "smt_error"


class ProofError(SMTError):
    """A proof is malformed or does not prove the claim."""

    code = "invalid_smt_proof"


class SMTRootMismatchError(ProofError, RootMismatchError):
    """A well-formed proof recomputes another root; ``expected``/``calculated`` carry both.

    It is both a ``ProofError`` (ledger callers) and ``certificates.errors.RootMismatchError``
    (code that handles every Merkle proof alike).
    """

    code = "smt_root_mismatch"

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        RootMismatchError.__init__(self, expected, calculated)


def _key_int(key: bytes, err: type[SMTError] = SMTError) -> int:
    if not isinstance(key, bytes) or len(key) != 32:
        raise err(f"SMT key must be 32 bytes, got {_describe(key)}")
    return int.from_bytes(key, "big")


def _check_value(value: bytes, what: str, err: type[SMTError] = SMTError) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise err(f"SMT {what} must be 32 bytes, got {_describe(value)}")


def _describe(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__


@dataclass(frozen=True)
class SMTProof:
    """Siblings from depth 1 down to the end of the key's path, and the leaf found there
    when it belongs to another key (absence). See the module header for the encoding."""

    siblings: tuple[bytes, ...]
    other_leaf: tuple[bytes, bytes] | None = None

    def to_bytes(self) -> bytes:
        depth = len(self.siblings)
        if depth > 256:
            raise ProofError(f"proof has {depth} siblings, at most 256")
        bitmap, present = 0, []
        for j, sibling in enumerate(self.siblings):
            _check_value(sibling, f"proof sibling {j}", ProofError)
            bitmap <<= 1
            if sibling != _Z:
                bitmap |= 1
                present.append(sibling)
        size = (depth + 7) >> 3
        head = bytes([self.other_leaf is not None]) + depth.to_bytes(2, "big")
        out = head + (bitmap << (size * 8 - depth)).to_bytes(size, "big") + b"".join(present)
        if self.other_leaf is not None:
            key, value = self.other_leaf
            _key_int(key, ProofError)
            _check_value(value, "proof leaf value", ProofError)
            out += key + value
        return out

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SMTProof:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ProofError(f"SMT proof must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 3:
            raise ProofError(f"SMT proof is {len(data)} bytes, shorter than its 3-byte header")
        flags, depth = data[0], int.from_bytes(data[1:3], "big")
        if flags > 1:
            raise ProofError(f"SMT proof has unknown flags {flags:#04x}")
        if depth > 256:
            raise ProofError(f"SMT proof depth {depth} exceeds 256")
        size = (depth + 7) >> 3
        bitmap = int.from_bytes(data[3 : 3 + size], "big")
        pad = size * 8 - depth
        if bitmap & ((1 << pad) - 1):
            raise ProofError("SMT proof bitmap has padding bits set")
        expected = 3 + size + 32 * bitmap.bit_count() + 64 * flags
        if len(data) != expected:
            raise ProofError(f"SMT proof is {len(data)} bytes, its header announces {expected}")
        siblings, off = [], 3 + size
        for j in range(depth):
            if (bitmap >> (size * 8 - 1 - j)) & 1:
                sibling = data[off : off + 32]
                if sibling == _Z:
                    raise ProofError(f"SMT proof sibling {j} is marked non-empty but is zero")
                siblings.append(sibling)
                off += 32
            else:
                siblings.append(_Z)
        other = (data[off : off + 32], data[off + 32 : off + 64]) if flags else None
        return cls(tuple(siblings), other)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: SMTProof) -> None:
    """Check that under ``root`` the tree maps ``key`` to ``value`` (``None``: holds no key).

    Raises ``ProofError`` naming the defect, ``SMTRootMismatchError`` if the proof is well
    formed but leads to another root.
    """
    _check_value(root, "root", ProofError)
    k = _key_int(key, ProofError)
    siblings, other = proof.siblings, proof.other_leaf
    if not isinstance(siblings, tuple):
        raise ProofError(f"SMT proof siblings must be a tuple, got {type(siblings).__name__}")
    if other is not None and not (isinstance(other, tuple) and len(other) == 2):
        raise ProofError("SMT proof's other leaf must be a (key, value) pair")
    depth = len(siblings)
    if depth > 256:
        raise ProofError(f"SMT proof has {depth} siblings, at most 256")
    for j, sibling in enumerate(siblings):
        _check_value(sibling, f"proof sibling {j}", ProofError)
    if value is not None:
        _check_value(value, "value", ProofError)
        if other is not None:
            raise ProofError("inclusion claimed but the SMT proof ends at another key's leaf")
        h = sm3(_LEAF + key + value)
    elif other is None:
        h = _Z
    else:
        other_key, other_value = other
        o = _key_int(other_key, ProofError)
        _check_value(other_value, "proof leaf value", ProofError)
        if o == k:
            raise ProofError("absence claimed but the SMT proof ends at the key's own leaf")
        if (o ^ k) >> (256 - depth):
            raise ProofError(f"SMT proof's leaf is not on the key's path at depth {depth}")
        h = sm3(_LEAF + other_key + other_value)
    if depth and siblings[-1] == _Z:
        raise ProofError("SMT proof's last sibling is empty: the path would end one level up")
    for j in range(depth - 1, -1, -1):
        sibling = siblings[j]
        h = sm3(_NODE + sibling + h) if (k >> (255 - j)) & 1 else sm3(_NODE + h + sibling)
    if h != root:
        raise SMTRootMismatchError(root, h)
