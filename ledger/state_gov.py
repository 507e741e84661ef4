"""The ``gov.*`` rules: issuers, their keys and types, supervision and validator changes,
each signed by an admin and approved by m of the n admins (``state_base._gov_auth``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final

from certificates import sm2
from certificates.errors import CertificatesError, IdentifierError
from ledger.commit import Validator, ValidatorSet
from ledger.errors import ValidatorSetError
from ledger.records import (
    VALIDATORS_KEY,
    AdminsRecord,
    IssuerKey,
    IssuerRecord,
    ValidatorsRecord,
    check_issuer_code,
    check_type_code,
    encode_key_owner,
    issuer_key,
    key_owner_key,
)
from ledger.state_base import (
    BlockContext,
    Handler,
    Overlay,
    SigCache,
    _admins,
    _check_key,
    _check_sig,
    _gov_auth,
    _load_issuer,
    _reject,
    _validators,
)
from ledger.tx import (
    GrantSupervisionBody,
    IssuerTypesBody,
    RegisterIssuerBody,
    RotateKeyBody,
    SetIssuerActiveBody,
    SetValidatorsBody,
    Transaction,
)

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


GOV_HANDLERS: Final[dict[str, Handler]] = {
    "gov.register_issuer": _register_issuer,
    "gov.grant_types": _issuer_types,
    "gov.revoke_types": _issuer_types,
    "gov.rotate_issuer_key": _rotate_issuer_key,
    "gov.set_issuer_active": _set_issuer_active,
    "gov.grant_supervision": _grant_supervision,
    "gov.set_validators": _set_validators,
}
