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

import dataclasses
import re
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple, Protocol

import msgpack

from certificates import sm2
from certificates.errors import CertificatesError, IdentifierError
from certificates.identifiers import ISO7064_ALPHABET, ROOT_CODE, CertificateId
from ledger.commit import Validator, ValidatorSet
from ledger.errors import LedgerError, MalformedTxError, TxRejected, ValidatorSetError
from ledger.records import (
    ADMINS_KEY,
    CERT_PREFIX,
    VALIDATORS_KEY,
    AdminsRecord,
    CertRecord,
    IssuerKey,
    IssuerRecord,
    ValidatorsRecord,
    cert_key,
    check_issuer_code,
    check_type_code,
    decode_key_owner,
    encode_cert,
    encode_key_owner,
    encode_tx_marker,
    issuer_key,
    key_owner_key,
    tx_key,
)
from ledger.tx import (
    MAX_BATCH,
    Anchor,
    GovBody,
    GrantSupervisionBody,
    IssueBatchBody,
    IssueBody,
    IssuerTypesBody,
    RegisterIssuerBody,
    RotateKeyBody,
    SetIssuerActiveBody,
    SetValidatorsBody,
    StatusBody,
    SupersedeBody,
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


def _validators(view: StateView) -> ValidatorsRecord:
    data = view.get(VALIDATORS_KEY)
    if data is None:
        raise LedgerError("state has no validator set: was it initialised from a genesis?")
    return ValidatorsRecord.from_bytes(data)


def _begin_block(ov: Overlay, height: int) -> ValidatorSet:
    rec = _validators(ov)
    if rec.pending is not None and rec.pending_height is not None \
            and rec.pending_height <= height:
        rec = ValidatorsRecord(rec.pending)
        ov.put(VALIDATORS_KEY, rec.to_bytes())
    return rec.current


Handler = Callable[[Overlay, Transaction, BlockContext, "SigCache | None"], tuple[str, ...]]


def _apply(
    ov: Overlay, tx: Transaction, ctx: BlockContext, index: int, cache: SigCache | None
) -> TxResult:
    try:
        if tx.chain_id != ctx.chain_id:
            raise _reject("wrong_chain_id", f"tx is for chain {tx.chain_id!r}, "
                          f"this is {ctx.chain_id!r}")
        marker = tx_key(tx.id)
        if ov.get(marker) is not None:
            raise _reject("duplicate_tx", "this transaction was already applied (replay)")
        subjects = _HANDLERS[tx.kind](ov, tx, ctx, cache)
    except TxRejected as exc:
        raise TxRejected(exc.reason, exc.detail, index=index, tx_id=tx.id) from exc
    ov.put(marker, encode_tx_marker(ctx.height, index))
    return TxResult(index, tx.id, tx.kind, subjects)


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


# --------------------------------------------------------------------------- identifiers

def _iso_table() -> list[list[int]]:
    # ISO/IEC 7064 MOD 37,36 as a state machine over bytes: table[p][byte] is the next
    # state. "." keeps the state (so "SERIAL.VERSION" can be fed as is); any other
    # byte outside 0-9A-Z leads to the dead state -1.
    table = [[-1] * 256 for _ in range(37)] + [[-1] * 256]
    for p in range(1, 37):
        for value, ch in enumerate(ISO7064_ALPHABET):
            table[p][ord(ch)] = ((p + value) % 36 or 36) * 2 % 37
        table[p][ord(".")] = p
    return table


_ISO_NEXT: Final = _iso_table()
_TAIL: Final = r"[0-9A-Z]{1,40}\.(?!000)[0-9]{3}\.[0-9A-Z]"


def _iso_run(p: int, data: bytes) -> int:
    t = _ISO_NEXT
    for c in data:
        p = t[p][c]
    return p


@lru_cache(maxsize=4096)
def _id_matcher(type_code: str, issuer_code: str
                ) -> tuple[Callable[[str], re.Match[str] | None], int, int]:
    """(fullmatch of a valid id with these codes, ISO 7064 state after the codes, prefix
    length). The codes are shared by every record of a batch: computed once."""
    prefix = f"{ROOT_CODE}.{type_code}.{issuer_code}."
    p = _iso_run(36, (type_code + issuer_code).encode("utf-8"))
    if p < 0 or "." in type_code + issuer_code:
        return (lambda _: None), -1, 0  # not codes at all: never a fast match
    return re.compile(re.escape(prefix) + _TAIL).fullmatch, p, len(prefix)


def id_ok(cert_id: str, type_code: str, issuer_code: str) -> bool:
    """True iff ``cert_id`` is a valid identifier whose type and issuer parts are these
    codes (same verdict as ``CertificateId.parse`` plus comparing the parts)."""
    match, p, n = _id_matcher(type_code, issuer_code)
    if match(cert_id) is None:
        return False
    p = _iso_run(p, cert_id[n:-2].encode("ascii"))
    return ISO7064_ALPHABET[(1 - p) % 36] == cert_id[-1]


def id_problem(cert_id: str, type_code: str, issuer_code: str) -> str | None:
    """None if ``id_ok``; else why not (the slow parser explains)."""
    if id_ok(cert_id, type_code, issuer_code):
        return None
    try:
        cid = CertificateId.parse(cert_id)
    except IdentifierError as exc:
        return str(exc)
    if str(cid) != cert_id:
        return f"identifier {cert_id!r} is not in its canonical form {str(cid)!r}"
    return (f"identifier {cert_id!r} names type {cid.type_code} and issuer {cid.issuer_code}, "
            f"the record says type {type_code} and issuer {issuer_code}")


def _anchor_problem(a: Anchor, issuer: IssuerRecord) -> tuple[str, str] | None:
    if a.issuer != issuer.code:
        return "issuer_mismatch", f"record issuer {a.issuer} is not the signer's {issuer.code}"
    if a.type not in issuer.type_set:
        return "type_not_granted", f"issuer {issuer.code} may not issue type {a.type}"
    msg = id_problem(a.id, a.type, a.issuer)
    if msg is not None:
        return "bad_identifier", msg
    if a.valid_until is not None and a.valid_from > a.valid_until:
        return "bad_validity", f"valid_from {a.valid_from} is after valid_until {a.valid_until}"
    return None


def _new_cert(ov: Overlay, a: Anchor, ctx: BlockContext, tx: Transaction,
              batch_index: int | None) -> None:
    key = CERT_PREFIX + a.id.encode("ascii")  # a valid id is ASCII
    if ov.get(key) is not None:
        raise _reject("duplicate_id", f"certificate {a.id} already exists")
    h = ctx.height
    ov.updates[key] = encode_cert(
        a.id, a.digest, a.valid_from, a.valid_until, a.supersedes, "issued", h, h, None, None,
        tx.signer_key_id, tx.id, batch_index,
    )


def _load_cert(view: StateView, cert_id: str) -> CertRecord:
    data = view.get(cert_key(cert_id))
    if data is None:
        raise _reject("unknown_certificate", f"no certificate {cert_id!r}")
    return CertRecord.from_bytes(data)


# --------------------------------------------------------------------------- cert.*


def _issue(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
           ) -> tuple[str, ...]:
    assert isinstance(tx.body, IssueBody)
    a = tx.body.anchor
    issuer = _issuer_signer(ov, tx, ctx, cache)
    problem = _anchor_problem(a, issuer)
    if problem is not None:
        raise _reject(*problem)
    if a.supersedes is not None:
        raise _reject("supersede_mismatch", "cert.issue cannot supersede; use cert.supersede")
    _new_cert(ov, a, ctx, tx, None)
    return (a.id,)


def _issue_batch(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                 ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, IssueBatchBody)
    if not body.records:
        raise _reject("empty_batch", "a batch needs at least one record")
    if len(body.records) > MAX_BATCH:
        raise _reject("batch_too_large", f"{len(body.records)} records, limit {MAX_BATCH}")
    issuer = _issuer_signer(ov, tx, ctx, cache)  # the one signature check of the batch
    if body.issuer != issuer.code:
        raise _reject("issuer_mismatch", f"batch issuer {body.issuer} is not the signer's "
                      f"{issuer.code}")
    # The hot loop: the checks of _anchor_problem and _new_cert inlined; on any failure
    # those functions run again to name the reason. Records are encoded as in
    # records.encode_cert (a test holds them equal) with one Packer for the batch.
    code, granted, h = issuer.code, issuer.type_set, ctx.height
    kid, tid = tx.signer_key_id, tx.id
    upd, base_get = ov.updates, ov.base.get
    pack = msgpack.Packer(use_bin_type=True).pack
    t, alphabet = _ISO_NEXT, ISO7064_ALPHABET
    matchers: dict[str, tuple[Callable[[str], re.Match[str] | None], int, int]] = {}
    skip = len(CERT_PREFIX)
    for i, a in enumerate(body.records):
        cid, typ, vu = a.id, a.type, a.valid_until
        m = matchers.get(typ)
        if m is None:
            m = matchers[typ] = _id_matcher(typ, code)
        ok = (a.issuer == code and typ in granted and a.supersedes is None
              and (vu is None or a.valid_from <= vu) and m[0](cid) is not None)
        if ok:
            key = CERT_PREFIX + cid.encode("ascii")
            p = m[1]
            for c in key[skip + m[2]:-2]:  # "SERIAL.VERSION": after b"cert:" + prefix
                p = t[p][c]
            ok = alphabet[(1 - p) % 36] == cid[-1]
        if not ok:
            problem = _anchor_problem(a, issuer) or (
                "supersede_mismatch", "a batch record cannot supersede")
            raise _reject(problem[0], f"records[{i}] {cid}: {problem[1]}")
        if (upd[key] if key in upd else base_get(key)) is not None:
            raise _reject("duplicate_id", f"records[{i}]: certificate {cid} already exists")
        upd[key] = pack([0, cid, a.digest, a.valid_from, vu, None, h, h, None, None, kid, tid, i])
    return tuple(a.id for a in body.records)


_TRANSITIONS: Final = {
    "cert.revoke": (("issued", "suspended"), "revoked"),
    "cert.suspend": (("issued",), "suspended"),
    "cert.reinstate": (("suspended",), "issued"),
}


def _change_status(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                   ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, StatusBody)
    issuer = _issuer_signer(ov, tx, ctx, cache)
    rec = _load_cert(ov, body.id)
    if rec.issuer != issuer.code and rec.issuer not in issuer.supervises:
        raise _reject("not_authorized", f"{issuer.code} neither issued nor supervises the "
                      f"issuer {rec.issuer} of {rec.id}")
    allowed, new = _TRANSITIONS[tx.kind]
    if rec.status not in allowed:
        raise _reject("illegal_status_change", f"{rec.id} is {rec.status}; {tx.kind} needs "
                      f"{' or '.join(allowed)}")
    ov.put(cert_key(rec.id), rec.with_status(new, ctx.height, body.reason).to_bytes())
    return (rec.id,)


def _supersede(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
               ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, SupersedeBody)
    issuer = _issuer_signer(ov, tx, ctx, cache)
    old = _load_cert(ov, body.id)
    if old.issuer != issuer.code:
        raise _reject("not_authorized", f"only {old.issuer} may supersede {old.id}")
    if old.status != "issued":
        raise _reject("illegal_status_change", f"{old.id} is {old.status}, not issued")
    new = body.new
    if new.supersedes != body.id:
        raise _reject("supersede_mismatch", f"new record supersedes {new.supersedes!r}, "
                      f"not {body.id!r}")
    problem = _anchor_problem(new, issuer)
    if problem is not None:
        raise _reject(*problem)
    _new_cert(ov, new, ctx, tx, None)
    ov.put(cert_key(old.id), old.with_status("superseded", ctx.height, None, new.id).to_bytes())
    return (old.id, new.id)


# --------------------------------------------------------------------------- gov.*


def _check_codes(issuer_code: str | None, types: Sequence[str] = ()) -> None:
    try:
        if issuer_code is not None:
            check_issuer_code(issuer_code)
        for t in types:
            check_type_code(t)
    except IdentifierError as exc:
        raise _reject("bad_identifier", str(exc)) from exc


def _new_key(ov: Overlay, admins: AdminsRecord, public_key: bytes) -> bytes:
    try:
        kid = sm2.key_id(public_key)
    except CertificatesError as exc:
        raise _reject("malformed", f"body.public_key: {exc}") from exc
    if ov.get(key_owner_key(kid)) is not None or kid in admins.by_key_id:
        raise _reject("key_in_use", f"key {kid.hex()} is already registered")
    return kid


def _put_issuer(ov: Overlay, rec: IssuerRecord) -> tuple[str, ...]:
    ov.put(issuer_key(rec.code), rec.to_bytes())
    return (rec.code,)


def _register_issuer(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                     ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, RegisterIssuerBody)
    admins = _gov_auth(ov, tx, cache)
    _check_codes(body.code, body.types)
    if ov.get(issuer_key(body.code)) is not None:
        raise _reject("issuer_exists", f"issuer {body.code} is already registered")
    kid = _new_key(ov, admins, body.public_key)
    ov.put(key_owner_key(kid), encode_key_owner(body.code))
    return _put_issuer(ov, IssuerRecord(
        body.code, body.name, (IssuerKey(body.public_key, ctx.height),), tuple(sorted(body.types))
    ))


def _issuer_types(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                  ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, IssuerTypesBody)
    _gov_auth(ov, tx, cache)
    issuer = _load_issuer(ov, body.code)
    _check_codes(None, body.types)
    if tx.kind == "gov.grant_types":
        types = issuer.type_set | set(body.types)
    else:
        missing = set(body.types) - issuer.type_set
        if missing:
            raise _reject("type_not_granted", f"{body.code} was never granted {sorted(missing)}")
        types = issuer.type_set - set(body.types)
    return _put_issuer(ov, dataclasses.replace(issuer, types=tuple(sorted(types))))


def _rotate_issuer_key(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                       ) -> tuple[str, ...]:
    """Admins (m-of-n) or the issuer itself, with its current key, may rotate: an agency
    can replace its key without a governance round, and admins can replace a lost one."""
    body = tx.body
    assert isinstance(body, RotateKeyBody)
    admins = _admins(ov)
    if tx.signer_key_id in admins.by_key_id:
        _gov_auth(ov, tx, cache)
        issuer = _load_issuer(ov, body.code)
    else:
        issuer = _load_issuer(ov, body.code)
        key = issuer.key(tx.signer_key_id)
        if key is None:
            raise _reject("not_admin", "a key rotation is signed by an admin or by the issuer")
        if body.approvals:
            raise _reject("malformed", "a rotation by the issuer itself carries no approvals")
        _check_sig(tx, key.public_key, cache)
        _check_key(issuer, key, ctx.height)
    kid = _new_key(ov, admins, body.public_key)
    h = ctx.height
    retired = [dataclasses.replace(k, retired_at_height=h) if k.retired_at_height is None
               else k for k in issuer.keys]
    keys = (*retired, IssuerKey(body.public_key, h))
    ov.put(key_owner_key(kid), encode_key_owner(issuer.code))
    return _put_issuer(ov, dataclasses.replace(issuer, keys=keys))


def _set_issuer_active(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                       ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, SetIssuerActiveBody)
    _gov_auth(ov, tx, cache)
    issuer = _load_issuer(ov, body.code)
    return _put_issuer(ov, dataclasses.replace(issuer, active=body.active))


def _grant_supervision(ov: Overlay, tx: Transaction, ctx: BlockContext,
                       cache: SigCache | None) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, GrantSupervisionBody)
    _gov_auth(ov, tx, cache)
    if body.supervisor == body.supervised:
        raise _reject("malformed", "an issuer cannot supervise itself")
    sup = _load_issuer(ov, body.supervisor)
    _load_issuer(ov, body.supervised)
    codes = tuple(sorted(set(sup.supervises) | {body.supervised}))
    return _put_issuer(ov, dataclasses.replace(sup, supervises=codes))


def _set_validators(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                    ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, SetValidatorsBody)
    _gov_auth(ov, tx, cache)
    try:
        new = ValidatorSet.of(Validator(v.name, v.public_key, v.address)
                              for v in body.validators)
    except ValidatorSetError as exc:
        raise _reject("invalid_validator_set", str(exc)) from exc
    rec = _validators(ov)
    if rec.pending is not None:
        raise _reject("invalid_validator_set", "a validator change is already pending until "
                      f"height {rec.pending_height}")
    ov.put(VALIDATORS_KEY, ValidatorsRecord(rec.current, new, ctx.height + 2).to_bytes())
    return tuple(v.name for v in new.validators)


_HANDLERS: Final[dict[str, Handler]] = {
    "cert.issue": _issue,
    "cert.issue_batch": _issue_batch,
    "cert.revoke": _change_status,
    "cert.suspend": _change_status,
    "cert.reinstate": _change_status,
    "cert.supersede": _supersede,
    "gov.register_issuer": _register_issuer,
    "gov.grant_types": _issuer_types,
    "gov.revoke_types": _issuer_types,
    "gov.rotate_issuer_key": _rotate_issuer_key,
    "gov.set_issuer_active": _set_issuer_active,
    "gov.grant_supervision": _grant_supervision,
    "gov.set_validators": _set_validators,
}
