"""The C check of encoded SMT proofs against the Python rule it speeds up.

``ledger.smt_update.verify_encoded_proof`` asks ``_smtcore.proof_root`` first and accepts
when the root it computes is the expected one; anything else goes to
``ledger.smt_proof.verify_proof``, which names the defect. So the one thing C must never do
is accept what the Python rule refuses. Here every outcome - accepted, or the error's type
and message - is compared between the two on valid proofs, on every one-bit flip,
truncation and extension of them, on garbage and on the hand-made malformed cases of
``tests/test_smt.py``; ``test_the_comparison_catches_a_check_that_accepts_too_much`` shows
the comparison failing a C check that skips a rule. (Removing C's "inclusion claimed, but
an other leaf follows" rule fails two tests here. Two rules cannot change an outcome alone:
a proof whose last sibling is empty, or whose other leaf is off the key's path, leads to
another root, which C's comparison refuses anyway; C checks them all the same.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import smt_update
from ledger.smt import EMPTY_ROOT, SMTProof, verify_encoded_proof, verify_proof
from tests.test_smt import POOL, _flip, build, contents_st, keys_st

needs_c = pytest.mark.skipif(not smt_update.NATIVE_SM3, reason="the C update with GmSSL's "
                             "SM3 is not here: see tests/test_smt_native.py")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[str, str] | None  # None: accepted; else the error's type and message
Check = Callable[[bytes, bytes, bytes | None, bytes], None]


def python_rule(root: bytes, key: bytes, value: bytes | None, proof: bytes) -> None:
    verify_proof(root, key, value, SMTProof.from_bytes(proof))


def outcome(check: Check, root: bytes, key: bytes, value: bytes | None, proof: bytes
            ) -> Outcome:
    try:
        check(root, key, value, proof)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


def agree(root: bytes, key: bytes, value: bytes | None, proof: bytes,
          check: Check = verify_encoded_proof) -> Outcome:
    """Both outcomes, required equal; returns it."""
    want = outcome(python_rule, root, key, value, proof)
    assert outcome(check, root, key, value, proof) == want, (key.hex(), proof.hex())
    return want


def damaged(encoded: bytes) -> list[bytes]:
    """Every one-bit flip, every truncation, and a few extensions of ``encoded``."""
    out = []
    for pos in range(len(encoded) * 8):
        b = bytearray(encoded)
        b[pos >> 3] ^= 0x80 >> (pos & 7)
        out.append(bytes(b))
    out += [encoded[:n] for n in range(len(encoded))]
    out += [encoded + b"\x00", encoded + b"\x11" * 32, encoded + b"\x22" * 64]
    # The other-leaf flag turned on with a leaf appended, or off with the leaf cut off.
    if encoded[0] == 0:
        out += [b"\x01" + encoded[1:] + leaf for leaf in (b"\x22" * 64, encoded[-32:] * 2)]
    else:
        out.append(b"\x00" + encoded[1:-64])
    return out


@needs_c
@FAST
@given(contents_st, keys_st)
def test_valid_proofs_lead_to_the_same_root(contents: dict[bytes, bytes], key: bytes) -> None:
    _, tree = build(contents)
    encoded = tree.prove(key).to_bytes()
    value = contents.get(key)
    assert smt_update._smtcore.proof_root(key, value, encoded) == tree.root
    assert agree(tree.root, key, value, encoded) is None
    # The wrong claim about the same proof: refused alike.
    other = None if value is not None else b"\x01" * 32
    assert agree(tree.root, key, other, encoded) is not None
    if value is not None:
        assert agree(tree.root, key, bytes(a ^ 1 for a in value), encoded) is not None
    assert agree(bytes(32) if tree.root != bytes(32) else b"\x01" * 32,
                 key, value, encoded) is not None


@needs_c
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(contents_st.filter(bool), keys_st)
def test_damaged_proofs_get_the_same_outcome(contents: dict[bytes, bytes], key: bytes) -> None:
    _, tree = build(contents)
    value = contents.get(key)
    for bad in damaged(tree.prove(key).to_bytes()):
        agree(tree.root, key, value, bad)


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda b: b"\x00\x00\x10" + b, st.binary(max_size=80))
       | st.builds(lambda b: b"\x01\x00\x08\x80" + b, st.binary(min_size=96, max_size=96)),
       st.sampled_from(POOL), st.none() | st.binary(min_size=32, max_size=32))
def test_garbage_gets_the_same_outcome(data: bytes, key: bytes, value: bytes | None) -> None:
    agree(EMPTY_ROOT, key, value, data)


S = b"\x11" * 32
Z = EMPTY_ROOT


@needs_c
def test_the_hand_made_malformed_cases_get_the_same_outcome() -> None:
    contents = {k: b"\x05" * 32 for k in POOL[:6]}
    _, tree = build(contents)
    key, value, root = POOL[0], b"\x05" * 32, tree.root
    good = tree.prove(key)
    cases: list[tuple[bytes, bytes | None, SMTProof]] = [
        (key, value, SMTProof(good.siblings, (POOL[1], value))),  # inclusion claimed
        (key, None, SMTProof(good.siblings, (key, value))),  # absence claimed, own leaf
        (key, None, SMTProof((S,), (_flip(key, 0), value))),  # leaf off the key's path
        (key, None, SMTProof((S,), (_flip(key, 1), value))),  # on it: only the root differs
        (key, None, SMTProof((S, Z))),  # last sibling empty
        (key, value, SMTProof((S, Z))),
        (key, None, SMTProof(())),  # the empty tree's proof
    ]
    outcomes = [agree(root, k, v, p.to_bytes()) for k, v, p in cases]
    assert all(o is not None for o in outcomes)
    assert agree(EMPTY_ROOT, key, None, SMTProof(()).to_bytes()) is None
    for data in (b"", b"\x00\x00", b"\x02\x00\x00", b"\x00\x01\x01" + bytes(33),
                 b"\x00\x00\x01\x7f" + S, b"\x00\x00\x01\x80", b"\x00\x00\x01\x80" + S + b"x",
                 b"\x00\x00\x01\x80" + Z, b"\x01\x00\x00" + bytes(63)):
        assert agree(root, key, None, data) is not None


def test_arguments_the_c_check_does_not_take_go_to_the_python_rule() -> None:
    _, tree = build({k: b"\x05" * 32 for k in POOL[:4]})
    key = POOL[0]
    encoded = tree.prove(key).to_bytes()
    assert outcome(verify_encoded_proof, tree.root, key, b"\x05" * 32, encoded) is None
    # A bytearray proof, a short key, a short value: C declines, Python decides.
    assert outcome(verify_encoded_proof, tree.root, key, b"\x05" * 32,
                   bytearray(encoded)) is None  # type: ignore[arg-type]
    for k, v in ((key[:31], b"\x05" * 32), (key, b"\x05" * 5)):
        got = outcome(verify_encoded_proof, tree.root, k, v, encoded)
        assert got is not None and got == outcome(python_rule, tree.root, k, v, encoded)
    assert outcome(lambda *a: verify_encoded_proof(*a, native=False),
                   tree.root, key, b"\x05" * 32, encoded) is None


@needs_c
def test_the_comparison_catches_a_check_that_accepts_too_much() -> None:
    # A C check that does not bind the claimed value: it also accepts when the proof's
    # path leads to the root for absence. Shown a false inclusion claim, it accepts.
    contents = {k: b"\x05" * 32 for k in POOL[:6]}
    _, tree = build(contents)
    key = POOL[7]
    assert key not in contents
    proof = tree.prove(key).to_bytes()
    claim = b"\x01" * 32

    def unbound(root: bytes, k: bytes, v: bytes | None, p: bytes) -> None:
        if root in (smt_update._smtcore.proof_root(k, v, p),
                    smt_update._smtcore.proof_root(k, None, p)):
            return
        verify_proof(root, k, v, SMTProof.from_bytes(p))

    with pytest.raises(AssertionError):
        agree(tree.root, key, claim, proof, check=unbound)
    assert agree(tree.root, key, claim, proof) is not None  # the real one refuses it
    assert agree(tree.root, key, None, proof) is None
