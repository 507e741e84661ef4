"""What every state rule shares: views, results, rejections and the signer checks.

``StateView`` is anything with ``get(key) -> bytes | None``; an ``Overlay`` layers pending
writes over one. A view may also have ``get_many(keys)``, the same answers as a list:
``get_many(view, keys)`` uses it where present, so a batch's thousands of reads cross
each layer once instead of once per key (about a microsecond a key). ``_reject`` builds a
``TxRejected`` with one of the stable ``REASONS``. The signer checks verify each signature
at most once per apply (``SigCache``, keyed by tx id, and by tx id + admin key id for
governance approvals). ``ledger.state`` runs the rules of ``ledger.state_cert`` and
``ledger.state_gov`` on top of this.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from ledger.commit import ValidatorSet
from ledger.errors import LedgerError, TxRejected
from ledger.records import (
    ADMINS_KEY,
    VALIDATORS_KEY,
    AdminsRecord,
    IssuerKey,
    IssuerRecord,
    ValidatorsRecord,
    decode_key_owner,
    issuer_key,
    key_owner_key,
)
from ledger.tx import (
    GovBody,
    Transaction,
    verify_approval,
    verify_signature,
)

REASONS: Final = frozenset({
    "malformed", "wrong_chain_id", "bad_signature", "unknown_signer", "unknown_issuer",
    "issuer_inactive", "key_not_valid_at_height", "type_not_granted", "issuer_mismatch",
    "bad_identifier", "duplicate_id", "duplicate_tx", "illegal_status_change",
    "not_authorized", "unknown_certificate", "bad_validity", "batch_too_large", "empty_batch",
    "insufficient_approvals", "not_admin", "invalid_validator_set", "supersede_mismatch",
    # beyond the original list: registering an existing issuer code / a key already in use
    "issuer_exists", "key_in_use",
})

SigCache = MutableMapping[bytes, bool]


class StateView(Protocol):
    def get(self, key: bytes, /) -> bytes | None: ...


def get_many(view: StateView, keys: Sequence[bytes]) -> list[bytes | None]:
    """``[view.get(k) for k in keys]``, through ``view.get_many`` where it has one."""
    many: Callable[[Sequence[bytes]], list[bytes | None]] | None = getattr(
        view, "get_many", None)
    if many is not None:
        return many(keys)
    get = view.get
    return [get(k) for k in keys]


def merged(keys: Sequence[bytes], mine: dict[bytes, bytes | None],
           base: Callable[[Sequence[bytes]], list[bytes | None]]) -> list[bytes | None]:
    """Answers for ``keys``: from ``mine`` where it has the key, else one ``base`` call for
    the rest (the common case: ``mine`` holds none of them, and ``base``'s list is it)."""
    if not mine:
        return base(keys)
    rest = [k for k in keys if k not in mine]
    if len(rest) == len(keys):
        return base(keys)
    if not rest:
        return [mine[k] for k in keys]
    got = iter(base(rest))
    return [mine[k] if k in mine else next(got) for k in keys]


class Overlay:
    """A view plus pending writes; reads see the writes first."""

    __slots__ = ("base", "updates")

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.updates: dict[bytes, bytes | None] = {}

    def get(self, key: bytes, /) -> bytes | None:
        if key in self.updates:
            return self.updates[key]
        return self.base.get(key)

    def get_many(self, keys: Sequence[bytes], /) -> list[bytes | None]:
        base = self.base
        return merged(keys, self.updates, lambda rest: get_many(base, rest))

    def put(self, key: bytes, value: bytes | None) -> None:
        self.updates[key] = value


class BlockContext(NamedTuple):
    chain_id: str
    height: int
    time_ms: int


Context = BlockContext | tuple[str, int, int]


@dataclass(frozen=True)
class TxResult:
    index: int
    tx_id: bytes
    kind: str
    subjects: tuple[str, ...]  # certificate ids or issuer codes the tx changed


@dataclass(frozen=True)
class TxEffects:
    updates: dict[bytes, bytes | None]
    result: TxResult


@dataclass(frozen=True)
class BlockEffects:
    """What a block changes; ``updates`` values None would mean deletion (none today)."""

    updates: dict[bytes, bytes | None]
    results: tuple[TxResult, ...]
    validators: ValidatorSet  # signs this block (its header's validators_hash)
    next_validators: ValidatorSet  # signs the next one (next_validators_hash)


def _reject(reason: str, message: str) -> TxRejected:
    assert reason in REASONS, reason
    return TxRejected(reason, message)


def _validators(view: StateView) -> ValidatorsRecord:
    data = view.get(VALIDATORS_KEY)
    if data is None:
        raise LedgerError("state has no validator set: was it initialised from a genesis?")
    return ValidatorsRecord.from_bytes(data)


Handler = Callable[[Overlay, Transaction, BlockContext, "SigCache | None"], tuple[str, ...]]


# --------------------------------------------------------------------------- signers


def _check_sig(tx: Transaction, public_key: bytes, cache: SigCache | None) -> None:
    ok = cache.get(tx.id) if cache is not None else None
    if ok is None:
        ok = verify_signature(tx, public_key)
        if cache is not None:
            cache[tx.id] = ok
    if not ok:
        raise _reject("bad_signature", f"signature by key {tx.signer_key_id.hex()} is invalid")


def _load_issuer(view: StateView, code: str) -> IssuerRecord:
    data = view.get(issuer_key(code))
    if data is None:
        raise _reject("unknown_issuer", f"no issuer with code {code!r} is registered")
    return IssuerRecord.from_bytes(data)


def _check_key(issuer: IssuerRecord, key: IssuerKey, height: int) -> None:
    if not key.valid_at(height):
        raise _reject(
            "key_not_valid_at_height",
            f"key {key.key_id.hex()} of {issuer.code} is valid for heights "
            f"[{key.valid_from_height}, {key.retired_at_height or 'open'}), not {height}",
        )
    if not issuer.active:
        raise _reject("issuer_inactive", f"issuer {issuer.code} is deactivated")


def _issuer_signer(ov: Overlay, tx: Transaction, ctx: BlockContext,
                   cache: SigCache | None) -> IssuerRecord:
    """The issuer whose key signed ``tx``, after signature, key and activity checks."""
    owner = ov.get(key_owner_key(tx.signer_key_id))
    if owner is None:
        raise _reject("unknown_signer", f"key {tx.signer_key_id.hex()} belongs to no issuer")
    issuer = _load_issuer(ov, decode_key_owner(owner))
    key = issuer.key(tx.signer_key_id)
    if key is None:  # the owner index and the record disagree: corrupt state
        raise LedgerError(f"issuer {issuer.code} lacks indexed key {tx.signer_key_id.hex()}")
    _check_sig(tx, key.public_key, cache)
    _check_key(issuer, key, ctx.height)
    return issuer


def _admins(view: StateView) -> AdminsRecord:
    data = view.get(ADMINS_KEY)
    if data is None:
        raise LedgerError("state has no admins record: was it initialised from a genesis?")
    return AdminsRecord.from_bytes(data)


def _gov_auth(ov: Overlay, tx: Transaction, cache: SigCache | None) -> AdminsRecord:
    """Envelope signed by an admin, and at least ``threshold`` valid admin approvals."""
    admins = _admins(ov)
    pub = admins.by_key_id.get(tx.signer_key_id)
    if pub is None:
        raise _reject("not_admin", f"key {tx.signer_key_id.hex()} is not an admin key")
    _check_sig(tx, pub, cache)
    assert isinstance(tx.body, GovBody)
    for kid, sig in tx.body.approvals:
        apub = admins.by_key_id.get(kid)
        if apub is None:
            raise _reject("not_admin", f"approval by {kid.hex()}, which is not an admin key")
        ck = tx.id + kid
        ok = cache.get(ck) if cache is not None else None
        if ok is None:
            ok = verify_approval(tx, apub, sig)
            if cache is not None:
                cache[ck] = ok
        if not ok:
            raise _reject("bad_signature", f"approval by admin {kid.hex()} is invalid")
    if len(tx.body.approvals) < admins.threshold:
        raise _reject("insufficient_approvals", f"{len(tx.body.approvals)} admin approvals, "
                      f"{admins.threshold} of {len(admins.keys)} needed")
    return admins
