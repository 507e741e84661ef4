"""Selective-disclosure presentations of a committed certificate.

A ``Presentation`` carries the ``$meta`` leaf (always disclosed) with its salt,
and one entry per other leaf, in leaf order: ``Disclosed(name, salt, value)``
for a revealed leaf, ``Hidden(leaf_hash)`` for the rest. A verifier rehashes
the disclosed leaves, keeps the hidden hashes as they are, rebuilds the Merkle
root and compares it with the anchored certificate digest. Hidden entries
carry no name: a QR payload stays small and says nothing but how many leaves
are hidden.

Leaf order puts ``$holder`` first and ``$meta`` second (``$`` sorts before
every field name), so ``entries[0]`` is always the holder leaf and the
``$meta`` leaf is re-inserted at index 1. To reveal the holder, pass
``"$holder"`` to ``present`` (not ``"holder"``, which may be an ordinary field).

Wire form (``to_bytes``), canonical msgpack with positional arrays::

    [1, id, issued_at, valid_from, valid_until, supersedes, meta_salt, entries]

``id`` and ``supersedes`` drop the constant root ``1.2.156.3005.2.``; type and
issuer are not sent since the id contains them. ``entries`` holds
``[name, salt, value]`` per disclosed leaf and, per maximal run of k hidden
leaves, one ``bin`` of their k concatenated 32-byte hashes. ``from_bytes`` and
``from_json_dict`` accept nothing else and raise ``DisclosureError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any, Final

from certificates import canonical
from certificates.document import (
    DIGEST_SIZE,
    HOLDER,
    MAX_FIELDS,
    META,
    SALT_SIZE,
    CommittedDocument,
    DocumentMeta,
    FieldValue,
    check_field_name,
    check_field_value,
    check_holder,
    field_value_from_json,
    field_value_to_json,
    hex_bytes,
    leaf_hash,
    strict_keys,
)
from certificates.errors import CertificatesError, DisclosureError, RootMismatchError
from certificates.identifiers import ROOT_CODE, CertificateId
from certificates.merkle import root_from_leaf_hashes

WIRE_VERSION: Final = 1
JSON_FORMAT: Final = "certledger/presentation/v1"
MAX_PRESENTATION_BYTES: Final = 2 * 1024 * 1024
_ROOT_PREFIX: Final = ROOT_CODE + "."


@dataclass(frozen=True)
class Disclosed:
    """A revealed leaf: the verifier rehashes ``[name, salt, value]``."""

    name: str
    salt: bytes
    value: FieldValue


@dataclass(frozen=True)
class Hidden:
    """A withheld leaf: only its hash, not even its name."""

    leaf_hash: bytes


Entry = Disclosed | Hidden


@contextmanager
def _as_disclosure_error(where: str) -> Iterator[None]:
    # Document and identifier checks are reused here; callers expect one error type.
    try:
        yield
    except DisclosureError:
        raise
    except CertificatesError as exc:
        raise DisclosureError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Presentation:
    """``$meta`` and its salt, plus every other leaf in leaf order (holder first)."""

    meta: DocumentMeta
    meta_salt: bytes
    entries: tuple[Entry, ...]

    def validate(self) -> None:
        """Raise DisclosureError unless the presentation is well formed."""
        if not isinstance(self.meta, DocumentMeta):
            raise DisclosureError(f"meta must be a DocumentMeta, got {type(self.meta).__name__}")
        _check_salt(self.meta_salt, "meta salt")
        if not isinstance(self.entries, tuple):
            raise DisclosureError(f"entries must be a tuple, got {type(self.entries).__name__}")
        if len(self.entries) < 2:
            raise DisclosureError(
                f"{len(self.entries)} entries: need the {HOLDER} leaf and at least one field"
            )
        if len(self.entries) > MAX_FIELDS + 1:
            raise DisclosureError(f"{len(self.entries)} entries, limit is {MAX_FIELDS + 1}")
        previous = b""
        for i, entry in enumerate(self.entries):
            if isinstance(entry, Hidden):
                if not isinstance(entry.leaf_hash, bytes) or len(entry.leaf_hash) != DIGEST_SIZE:
                    raise DisclosureError(
                        f"entry {i}: hidden leaf hash must be {DIGEST_SIZE} bytes"
                    )
                continue
            if not isinstance(entry, Disclosed):
                raise DisclosureError(f"entry {i}: expected Disclosed or Hidden")
            name = entry.name
            with _as_disclosure_error(f"entry {i}"):
                if i == 0:
                    if name != HOLDER:
                        raise DisclosureError(f"entry 0 is the {HOLDER} leaf, got {name!r}")
                    check_holder(entry.value)
                else:
                    check_field_value(check_field_name(name), entry.value)
            _check_salt(entry.salt, f"entry {i} ({name!r}) salt")
            key = name.encode("utf-8")
            if key <= previous:
                raise DisclosureError(
                    f"entry {i}: disclosed name {name!r} is duplicated or out of leaf order"
                )
            previous = key

    def leaf_hashes(self) -> list[bytes]:
        """All leaf hashes in leaf order, ``$meta`` re-inserted at index 1."""
        self.validate()
        hashes = [
            e.leaf_hash if isinstance(e, Hidden) else leaf_hash(e.name, e.salt, e.value)
            for e in self.entries
        ]
        hashes.insert(1, leaf_hash(META, self.meta_salt, self.meta.canonical_value()))
        return hashes

    def digest(self) -> bytes:
        """The certificate digest these entries commit to."""
        return root_from_leaf_hashes(self.leaf_hashes())

    def disclosed(self) -> dict[str, FieldValue]:
        """Disclosed leaf name -> value, in leaf order (the holder under ``$holder``)."""
        return {e.name: e.value for e in self.entries if isinstance(e, Disclosed)}

    @property
    def holder(self) -> str | None:
        value = self.disclosed().get(HOLDER)
        return value if isinstance(value, str) else None

    def to_bytes(self) -> bytes:
        self.validate()
        m = self.meta
        return canonical.encode(
            [
                WIRE_VERSION,
                m.id.removeprefix(_ROOT_PREFIX),
                m.issued_at,
                m.valid_from,
                m.valid_until,
                None if m.supersedes is None else m.supersedes.removeprefix(_ROOT_PREFIX),
                self.meta_salt,
                _pack_entries(self.entries),
            ]
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> Presentation:
        if not isinstance(data, bytes | bytearray):
            raise DisclosureError(f"presentation must be bytes, got {type(data).__name__}")
        with _as_disclosure_error("presentation bytes"):
            value = canonical.decode(bytes(data), max_len=MAX_PRESENTATION_BYTES)
        if not isinstance(value, list) or len(value) != 8:
            raise DisclosureError("presentation bytes: expected an array of 8 items")
        version, short_id, issued_at, valid_from, valid_until, short_sup, meta_salt, raw = value
        if type(version) is not int or version != WIRE_VERSION:
            raise DisclosureError(f"presentation bytes: unsupported version {version!r}")
        if not isinstance(short_id, str) or (
            short_sup is not None and not isinstance(short_sup, str)
        ):
            raise DisclosureError("presentation bytes: id and supersedes must be strings")
        full_id = _ROOT_PREFIX + short_id
        full_sup = None if short_sup is None else _ROOT_PREFIX + short_sup
        with _as_disclosure_error("presentation meta"):
            cid = CertificateId.parse(full_id)
            meta = DocumentMeta(
                str(cid), cid.type_code, cid.issuer_code, issued_at, valid_from, valid_until,
                full_sup,
            )  # fmt: skip
        # One presentation, one encoding: parse() would forgive surrounding whitespace.
        if (meta.id, meta.supersedes) != (full_id, full_sup):
            raise DisclosureError("presentation bytes: id or supersedes is not in canonical form")
        entries = _unpack_entries(raw)
        presentation = cls(meta, _check_salt(meta_salt, "meta salt"), entries)
        presentation.validate()
        return presentation

    def to_json_dict(self) -> dict[str, Any]:
        self.validate()
        return {
            "format": JSON_FORMAT,
            "meta": self.meta.canonical_value(),
            "meta_salt": self.meta_salt.hex(),
            "entries": [
                {"hidden": e.leaf_hash.hex()}
                if isinstance(e, Hidden)
                else {"name": e.name, "salt": e.salt.hex(), "value": field_value_to_json(e.value)}
                for e in self.entries
            ],
        }

    @classmethod
    def from_json_dict(cls, obj: object) -> Presentation:
        keys = ("format", "meta", "meta_salt", "entries")
        d = strict_keys(obj, keys, "presentation", DisclosureError)
        if d["format"] != JSON_FORMAT:
            raise DisclosureError(f"presentation: format must be {JSON_FORMAT!r}")
        with _as_disclosure_error("presentation"):
            meta = DocumentMeta.from_json_dict(d["meta"], "presentation.meta")
        if not isinstance(d["entries"], list):
            raise DisclosureError("presentation.entries: expected an array")
        entries: list[Entry] = []
        for i, item in enumerate(d["entries"]):
            what = f"presentation.entries[{i}]"
            if isinstance(item, dict) and "hidden" in item:
                e = strict_keys(item, ("hidden",), what, DisclosureError)
                entries.append(Hidden(hex_bytes(e["hidden"], DIGEST_SIZE, what, DisclosureError)))
                continue
            e = strict_keys(item, ("name", "salt", "value"), what, DisclosureError)
            entries.append(
                Disclosed(
                    e["name"],
                    hex_bytes(e["salt"], SALT_SIZE, f"{what}.salt", DisclosureError),
                    field_value_from_json(e["value"], f"{what}.value", DisclosureError),
                )
            )
        meta_salt = hex_bytes(d["meta_salt"], SALT_SIZE, "presentation.meta_salt", DisclosureError)
        presentation = cls(meta, meta_salt, tuple(entries))
        presentation.validate()
        return presentation


def _pack_entries(entries: tuple[Entry, ...]) -> list[Any]:
    # A run of consecutive hidden leaves travels as one bin of 32*k bytes: two
    # bytes of msgpack header saved per hash, and the QR code is that much smaller.
    packed: list[Any] = []
    for e in entries:
        if isinstance(e, Disclosed):
            packed.append([e.name, e.salt, e.value])
        elif packed and isinstance(packed[-1], bytes):
            packed[-1] += e.leaf_hash
        else:
            packed.append(e.leaf_hash)
    return packed


def _unpack_entries(raw: object) -> tuple[Entry, ...]:
    if not isinstance(raw, list):
        raise DisclosureError("presentation bytes: entries must be an array")
    entries: list[Entry] = []
    for i, item in enumerate(raw):
        if isinstance(item, list) and len(item) == 3:
            entries.append(Disclosed(*item))
            continue
        if not isinstance(item, bytes) or not item or len(item) % DIGEST_SIZE:
            raise DisclosureError(
                f"entry item {i}: expected [name, salt, value] or {DIGEST_SIZE}*k bytes of hashes"
            )
        # Runs must be maximal so that one presentation has exactly one encoding.
        if i and isinstance(raw[i - 1], bytes):
            raise DisclosureError(f"entry item {i}: adjacent runs of hidden hashes must be merged")
        entries.extend(Hidden(item[j : j + DIGEST_SIZE]) for j in range(0, len(item), DIGEST_SIZE))
    return tuple(entries)


def _check_salt(salt: object, what: str) -> bytes:
    if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
        raise DisclosureError(f"{what} must be {SALT_SIZE} bytes")
    return salt


def present(committed: CommittedDocument, disclose: Iterable[str]) -> Presentation:
    """Reveal the leaves named in ``disclose`` (field names, or ``"$holder"``)."""
    if isinstance(disclose, str | bytes):
        raise DisclosureError("disclose must be a collection of names, not a single string")
    wanted = set(disclose)
    names = committed.leaf_names()
    unknown = sorted(str(n) for n in wanted - set(names))
    if unknown:
        raise DisclosureError(
            f"cannot disclose {', '.join(map(repr, unknown))}: no such field in "
            f"{committed.document.id} (leaves: {', '.join(names)})"
        )
    values = committed.document.leaf_values()
    entries: list[Entry] = []
    for name, h in zip(names, committed.leaf_hashes(), strict=True):
        if name == META:
            continue
        if name in wanted:
            entries.append(Disclosed(name, committed.salts[name], values[name]))
        else:
            entries.append(Hidden(h))
    return Presentation(committed.document.meta, committed.salts[META], tuple(entries))


def verify_presentation(presentation: Presentation, expected_digest: bytes) -> None:
    """Raise RootMismatchError unless ``presentation`` reproduces ``expected_digest``."""
    if not isinstance(expected_digest, bytes) or len(expected_digest) != DIGEST_SIZE:
        raise DisclosureError(f"expected digest must be {DIGEST_SIZE} bytes")
    calculated = presentation.digest()
    if not compare_digest(calculated, expected_digest):
        raise RootMismatchError(expected_digest, calculated)
