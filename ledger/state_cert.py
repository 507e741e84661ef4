"""The ``cert.*`` rules: issue, batch issue, status changes and supersession.

Batch issuance is the hot path: identifier checks reuse the ISO 7064 state of the shared
``type.issuer`` prefix (``_id_matcher``) and fall back to ``CertificateId.parse`` only to
explain a rejection; records are packed as ``records.encode_cert`` packs them.

A batch is checked at least twice on a validator: on admission to the mempool, then in
the block (proposed or received) on the block's state. The per-record checks that read
no state (issuer, granted type, identifier with its check character, validity order,
no supersession) depend only on the records and on the issuer's code and granted types,
so once they all pass, the decoded tx remembers that (``Transaction.memo``) under exactly
those inputs, with the records' state keys. A later check with the same issuer code and
types runs only what the state decides - each id still unused - and the encoding; a
changed grant or code runs everything again. The ids are then looked up in one bulk read
(``state_base.get_many``); a batch that fails it is walked record by record, as before,
to name the first record at fault. The records' encoding is remembered too, in parts: a
record is ``encode_cert``'s 13-element array, and all of it but the two heights it carries
(issued, status) is fixed by the tx, so the parts before and after them are packed once and
each check joins them around its height (0.13 us a record, against 0.84 for packing it
whole; admission and the block often run at different heights).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final

import msgpack

from certificates.errors import IdentifierError
from certificates.identifiers import ISO7064_ALPHABET, ROOT_CODE, CertificateId
from ledger.records import (
    CERT_PREFIX,
    CertRecord,
    IssuerRecord,
    cert_key,
    encode_cert,
)
from ledger.state_base import (
    BlockContext,
    Handler,
    Overlay,
    SigCache,
    StateView,
    _issuer_signer,
    _reject,
    get_many,
)
from ledger.tx import (
    MAX_BATCH,
    Anchor,
    IssueBatchBody,
    IssueBody,
    StatusBody,
    SupersedeBody,
    Transaction,
)

try:
    from ledger import _idcheck
except ImportError:  # built by the install where a compiler is at hand (setup.py)
    _idcheck = None  # type: ignore[assignment]

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


def check_batch_shape(body: IssueBatchBody) -> None:
    """A batch's shape, checked before its signer (so every check path names the same
    reason first)."""
    if not body.records:
        raise _reject("empty_batch", "a batch needs at least one record")
    if len(body.records) > MAX_BATCH:
        raise _reject("batch_too_large", f"{len(body.records)} records, limit {MAX_BATCH}")


_BATCH_MEMO: Final = "cert.issue_batch/stateless"
_PARTS_MEMO: Final = "cert.issue_batch/parts"
#: The header of encode_cert's 13-element array (a fixarray), in place of a 6-element one.
_RECORD_HEAD: Final = b"\x9d"


def _batch_keys(body: IssueBatchBody, issuer: IssuerRecord) -> tuple[bytes, ...]:
    """Every record's state key, after the checks that read no state (see the header);
    raises the first record's rejection."""
    keys = _batch_keys_native(body.records, issuer)
    return keys if keys is not None else _batch_keys_checked(body, issuer)


def _batch_keys_native(records: tuple[Anchor, ...], issuer: IssuerRecord
                       ) -> tuple[bytes, ...] | None:
    """The keys of a batch whose records share one type and all pass, with the identifiers
    checked in C (``ledger/_idcheck.c``); None when that module is not built, the types
    differ, or any record fails (``_batch_keys_checked`` then finds and names it)."""
    if _idcheck is None or not records:
        return None
    code, typ = issuer.code, records[0].type
    if typ not in issuer.type_set:
        return None
    state = _id_matcher(typ, code)[1]
    if state < 0:
        return None
    for a in records:
        vu = a.valid_until
        if (a.type != typ or a.issuer != code or a.supersedes is not None
                or (vu is not None and a.valid_from > vu)):
            return None
    ids = [a.id for a in records]
    if _idcheck.first_invalid(ids, f"{ROOT_CODE}.{typ}.{code}.".encode("ascii"), state) >= 0:
        return None
    return tuple([CERT_PREFIX + i.encode("ascii") for i in ids])


def _batch_keys_checked(body: IssueBatchBody, issuer: IssuerRecord) -> tuple[bytes, ...]:
    """``_batch_keys`` in Python, record by record, naming the first record at fault. The
    checks of ``_anchor_problem`` are inlined; on a failure that function runs to name the
    reason."""
    code, granted = issuer.code, issuer.type_set
    t, alphabet = _ISO_NEXT, ISO7064_ALPHABET
    matchers: dict[str, tuple[Callable[[str], re.Match[str] | None], int, int]] = {}
    skip = len(CERT_PREFIX)
    keys: list[bytes] = []
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
        keys.append(key)
    return tuple(keys)


def _issue_batch(ov: Overlay, tx: Transaction, ctx: BlockContext, cache: SigCache | None
                 ) -> tuple[str, ...]:
    body = tx.body
    assert isinstance(body, IssueBatchBody)
    check_batch_shape(body)
    issuer = _issuer_signer(ov, tx, ctx, cache)  # the one signature check of the batch
    if body.issuer != issuer.code:
        raise _reject("issuer_mismatch", f"batch issuer {body.issuer} is not the signer's "
                      f"{issuer.code}")
    code, granted, h = issuer.code, issuer.type_set, ctx.height
    kid, tid = tx.signer_key_id, tx.id
    upd, base_get = ov.updates, ov.base.get
    pack = msgpack.Packer(use_bin_type=True).pack
    memo = tx.memo.get(_BATCH_MEMO)
    if memo is not None and memo[0] == (code, granted):
        keys = memo[1]
    else:
        keys = _batch_keys(body, issuer)
        tx.memo[_BATCH_MEMO] = ((code, granted), keys)
    # The usual case, read in bulk: no id pending in this overlay, none repeated, none
    # in the state. Otherwise the loop below finds the first offending record and names it.
    if (not any(map(upd.__contains__, keys)) and len(frozenset(keys)) == len(keys)
            and get_many(ov.base, keys).count(None) == len(keys)):
        # Each record is pack([0, id, digest, valid_from, valid_until, None, h, h, None,
        # None, kid, tid, i]): a msgpack array is its header and its items' encodings one
        # after the other, so the parts around the heights are packed once (see the header).
        parts = tx.memo.get(_PARTS_MEMO)
        if parts is None:
            after = pack(None) + pack(None) + pack(kid) + pack(tid)
            parts = tx.memo[_PARTS_MEMO] = (
                [_RECORD_HEAD + pack([0, a.id, a.digest, a.valid_from, a.valid_until, None])[1:]
                 for a in body.records],
                [after + pack(i) for i in range(len(body.records))],
                tuple(a.id for a in body.records))
        heights = pack(h) * 2
        upd.update(zip(keys, [b + heights + e for b, e in zip(parts[0], parts[1], strict=True)],
                       strict=True))
        ids: tuple[str, ...] = parts[2]
        return ids
    for i, (key, a) in enumerate(zip(keys, body.records, strict=True)):
        if (upd[key] if key in upd else base_get(key)) is not None:
            raise _reject("duplicate_id", f"records[{i}]: certificate {a.id} already exists")
        upd[key] = pack([0, a.id, a.digest, a.valid_from, a.valid_until, None, h, h, None, None,
                         kid, tid, i])
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


CERT_HANDLERS: Final[dict[str, Handler]] = {
    "cert.issue": _issue,
    "cert.issue_batch": _issue_batch,
    "cert.revoke": _change_status,
    "cert.suspend": _change_status,
    "cert.reinstate": _change_status,
    "cert.supersede": _supersede,
}
