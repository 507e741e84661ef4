"""The state machine: which transactions apply, and what they change.

The state is read through a ``StateView`` (anything with ``get(key) -> bytes |
None``: a dict, the store, an ``Overlay``); nothing here writes to it. Applying
returns the changes as data (``updates``: logical key -> new record bytes) that
``ledger.chain`` commits atomically with the block, or the mempool layers over
its own view. Keys and records are in ``ledger.records``.

* ``apply_block`` applies the transactions in order on an ``Overlay``, so a later
  tx sees an earlier one's effects. A block is valid only if every tx applies:
  the first rejection raises ``TxRejected`` carrying the tx index, and nothing
  is returned. Before the first tx, a validator set that became due at this
  height replaces the current one (``gov.set_validators`` at h takes effect at
  h + 2, as in Tendermint).
* ``apply_tx`` / ``check_tx`` do the same for one tx (the mempool; ``ctx.height``
  is the height of the next block).
* ``precheck_tx`` runs only the part of ``apply_tx`` before the kind's rules: chain
  id, replay, the signer and its signature. The mempool runs it outside its lock to
  fill the signature cache, then ``apply_tx`` once under the lock: the rules of a
  5,000-record batch cost as much as its signature, so they should run once, not
  twice, per admission.

A rejection names a stable ``reason`` (``REASONS``). Checks run cheapest and most
basic first: chain id, replay (``b"tx:" + id`` marks every applied tx), batch
shape, then the signer, its signature, its key's validity at this height, and
the kind's rules. Each signature is verified at most once per apply (a batch has
one); pass ``sig_cache`` (keyed by tx id, values True/False) to skip even that -
a tx id binds the signer's key id, hence the key. Governance approvals are
cached under ``tx id + admin key id``.

Batch issuance is the hot path (about 3 us of CPU per record here, so a
5,000-record batch applies in ~15 ms plus its one signature check): identifier
checks reuse the ISO 7064 state of the shared ``type.issuer`` prefix and fall
back to ``CertificateId.parse`` only to explain a rejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ledger.commit import ValidatorSet
from ledger.errors import MalformedTxError, TxRejected
from ledger.records import (
    VALIDATORS_KEY,
    ValidatorsRecord,
    encode_tx_marker,
    tx_key,
)
from ledger.state_base import (
    REASONS,
    BlockContext,
    BlockEffects,
    Context,
    Handler,
    Overlay,
    SigCache,
    StateView,
    TxEffects,
    TxResult,
    _issuer_signer,
    _reject,
    _validators,
)
from ledger.state_cert import CERT_HANDLERS, check_batch_shape, id_ok, id_problem
from ledger.state_gov import GOV_HANDLERS
from ledger.tx import (
    IssueBatchBody,
    Transaction,
)

__all__ = [
    "REASONS",
    "BlockContext",
    "BlockEffects",
    "Context",
    "Overlay",
    "SigCache",
    "StateView",
    "TxEffects",
    "TxResult",
    "apply_block",
    "apply_tx",
    "check_tx",
    "id_ok",
    "id_problem",
    "precheck_tx",
    "validators_at",
]


# --------------------------------------------------------------------------- entry points


def apply_block(
    view: StateView, txs: Sequence[Transaction | bytes], ctx: Context, *,
    sig_cache: SigCache | None = None,
) -> BlockEffects:
    ctx = BlockContext(*ctx)  # a plain (chain_id, height, time_ms) tuple is fine too
    ov = Overlay(view)
    validators = _begin_block(ov, ctx.height)
    results = []
    for i, raw in enumerate(txs):
        try:
            results.append(_apply(ov, _as_tx(raw), ctx, i, sig_cache))
        except TxRejected as exc:
            raise TxRejected(exc.reason, exc.detail, index=i, tx_id=exc.tx_id) from exc
    next_validators = _validators(ov).set_at(ctx.height + 1)
    return BlockEffects(ov.updates, tuple(results), validators, next_validators)


def apply_tx(
    view: StateView, tx: Transaction | bytes, ctx: Context, *,
    sig_cache: SigCache | None = None, index: int = 0,
) -> TxEffects:
    ctx = BlockContext(*ctx)
    ov = Overlay(view)
    _begin_block(ov, ctx.height)
    result = _apply(ov, _as_tx(tx), ctx, index, sig_cache)
    return TxEffects(ov.updates, result)


def check_tx(
    view: StateView, tx: Transaction | bytes, ctx: Context, *,
    sig_cache: SigCache | None = None,
) -> None:
    apply_tx(view, tx, ctx, sig_cache=sig_cache)


def precheck_tx(
    view: StateView, tx: Transaction | bytes, ctx: Context, *,
    sig_cache: SigCache | None = None,
) -> None:
    """``apply_tx`` up to the kind's rules: raises its ``TxRejected`` for a wrong chain,
    a replay, an unknown or invalid signer key, or a bad signature (filling
    ``sig_cache``). Governance txs are small and rare: they get every check."""
    ctx = BlockContext(*ctx)
    tx = _as_tx(tx)
    if tx.kind not in CERT_HANDLERS:
        check_tx(view, tx, ctx, sig_cache=sig_cache)
        return
    ov = Overlay(view)
    _begin_block(ov, ctx.height)
    _apply(ov, tx, ctx, 0, sig_cache, _cert_signer)


def _cert_signer(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                 ) -> tuple[str, ...]:
    if isinstance(tx.body, IssueBatchBody):
        check_batch_shape(tx.body)
    _issuer_signer(ov, tx, ctx, cache)  # every certificate kind's first check after that
    return ()


def validators_at(view: StateView, height: int) -> ValidatorSet:
    """The set that signs block ``height``, as far as ``view`` (state after height-1) knows."""
    return _validators(view).set_at(height)


def _as_tx(tx: Transaction | bytes) -> Transaction:
    if isinstance(tx, Transaction):
        return tx
    try:
        return Transaction.from_bytes(tx)
    except MalformedTxError as exc:
        raise _reject("malformed", str(exc)) from exc


def _begin_block(ov: Overlay, height: int) -> ValidatorSet:
    rec = _validators(ov)
    if rec.pending is not None and rec.pending_height is not None \
            and rec.pending_height <= height:
        rec = ValidatorsRecord(rec.pending)
        ov.put(VALIDATORS_KEY, rec.to_bytes())
    return rec.current


def _apply(
    ov: Overlay, tx: Transaction, ctx: BlockContext, index: int, cache: SigCache | None,
    handler: Handler | None = None,
) -> TxResult:
    try:
        if tx.chain_id != ctx.chain_id:
            raise _reject("wrong_chain_id", f"tx is for chain {tx.chain_id!r}, "
                          f"this is {ctx.chain_id!r}")
        marker = tx_key(tx.id)
        if ov.get(marker) is not None:
            raise _reject("duplicate_tx", "this transaction was already applied (replay)")
        subjects = (handler or _HANDLERS[tx.kind])(ov, tx, ctx, cache)
    except TxRejected as exc:
        raise TxRejected(exc.reason, exc.detail, index=index, tx_id=tx.id) from exc
    ov.put(marker, encode_tx_marker(ctx.height, index))
    return TxResult(index, tx.id, tx.kind, subjects)


_HANDLERS: Final[dict[str, Handler]] = {**CERT_HANDLERS, **GOV_HANDLERS}
