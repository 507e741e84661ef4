"""Compact presentations for QR codes: hidden leaves folded into subtree hashes.

A ``certificates.disclosure.Presentation`` sends one 32-byte hash per hidden
leaf. A verifier needs far less: the certificate digest is an RFC 9162 Merkle
root, and any node of that tree whose leaves are all hidden can be sent as its
one hash. ``CompactPresentation`` does exactly that:

* the leaves are the presentation's, in leaf order: ``$holder`` at 0, ``$meta``
  at 1 (always recomputed from the meta and its salt), then the fields;
* *revealed* leaves are ``$meta`` and the disclosed ones, each sent with its leaf
  index; the tree shape follows from the leaf count alone;
* walking the tree from the root (``_cover``), a node whose range holds no
  revealed leaf is one hidden hash, sent in walk order; otherwise the walk
  descends. So leaf count + revealed indices fix which hashes come, and the
  encoding of a presentation is unique.

For a 9-leaf diploma revealing two fields this sends 5 hashes instead of 6.
``digest()`` recomputes the same root as the full presentation (tested).

Wire form (canonical msgpack; ``id`` and ``supersedes`` without the root code)::

    [id, issued_at, valid_from, valid_until, supersedes, meta_salt, leaf_count,
     [[index, name, salt, value], ...], hidden hashes (bin, 32*k)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Final

from certificates import canonical
from certificates.disclosure import Disclosed, Presentation
from certificates.document import (
    DIGEST_SIZE,
    HOLDER,
    MAX_FIELDS,
    META,
    SALT_SIZE,
    DocumentMeta,
    FieldValue,
    check_field_name,
    check_field_value,
    check_holder,
    leaf_hash,
)
from certificates.errors import CertificatesError
from certificates.identifiers import ROOT_CODE, CertificateId
from certificates.merkle import SM3_HASHER, root_from_leaf_hashes
from verifier.errors import PayloadError

_ROOT_PREFIX: Final = ROOT_CODE + "."
MAX_COMPACT_BYTES: Final = 64 * 1024
META_INDEX: Final = 1


def _split(n: int) -> int:
    """RFC 9162: the largest power of two smaller than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def _cover(lo: int, hi: int, revealed: frozenset[int]) -> Iterator[tuple[int, int]]:
    """The maximal tree nodes [lo, hi) with no revealed leaf, left to right."""
    if not any(lo <= i < hi for i in revealed):
        yield lo, hi
        return
    if hi - lo == 1:
        return
    k = _split(hi - lo)
    yield from _cover(lo, lo + k, revealed)
    yield from _cover(lo + k, hi, revealed)


@lru_cache(maxsize=4096)
def cover(n: int, revealed: frozenset[int]) -> tuple[tuple[int, int], ...]:
    """``_cover`` of the whole tree; the same few shapes come again and again."""
    return tuple(_cover(0, n, revealed))


@dataclass(frozen=True)
class CompactPresentation:
    meta: DocumentMeta
    meta_salt: bytes
    leaf_count: int
    entries: tuple[tuple[int, Disclosed], ...]  # disclosed leaves with their indexes
    hashes: tuple[bytes, ...]  # hidden subtree hashes in ``_cover`` order

    # ------------------------------------------------------------------ building

    @classmethod
    def from_presentation(cls, p: Presentation) -> CompactPresentation:
        leaves = p.leaf_hashes()  # validates; $meta re-inserted at index 1
        entries = tuple((i if i == 0 else i + 1, e) for i, e in enumerate(p.entries)
                        if isinstance(e, Disclosed))
        revealed = frozenset([META_INDEX, *(i for i, _ in entries)])
        hashes = tuple(root_from_leaf_hashes(leaves[lo:hi])
                       for lo, hi in cover(len(leaves), revealed))
        return cls(p.meta, p.meta_salt, len(leaves), entries, hashes)

    # ------------------------------------------------------------------ verifying

    def validate(self) -> None:
        """Raise PayloadError unless well formed (names, values, salts, counts, order)."""
        self._validated  # noqa: B018 - a cached property: checked once per object

    @cached_property
    def _validated(self) -> bool:
        n = self.leaf_count
        if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_FIELDS + 2:
            raise PayloadError(f"leaf count {n!r} is outside 3..{MAX_FIELDS + 2}")
        _check_salt(self.meta_salt, "meta salt")
        previous_index, previous_name = -1, b""
        for index, e in self.entries:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n \
                    or index == META_INDEX or index <= previous_index:
                raise PayloadError(f"disclosed leaf index {index!r} is out of range or order")
            try:
                if index == 0:
                    if e.name != HOLDER:
                        raise PayloadError(f"leaf 0 is the {HOLDER} leaf, not {e.name!r}")
                    check_holder(e.value)
                else:
                    check_field_value(check_field_name(e.name), e.value)
            except CertificatesError as exc:
                raise PayloadError(f"disclosed leaf {index}: {exc}") from exc
            _check_salt(e.salt, f"salt of leaf {index}")
            name = e.name.encode("utf-8")
            if name <= previous_name:
                raise PayloadError(f"disclosed name {e.name!r} is out of leaf order")
            previous_index, previous_name = index, name
        want = len(cover(n, self._revealed()))
        if len(self.hashes) != want or any(
                not isinstance(h, bytes) or len(h) != DIGEST_SIZE for h in self.hashes):
            raise PayloadError(f"expected {want} hidden hashes of {DIGEST_SIZE} bytes, "
                               f"got {len(self.hashes)}")
        return True

    def _revealed(self) -> frozenset[int]:
        return frozenset([META_INDEX, *(i for i, _ in self.entries)])

    def digest(self) -> bytes:
        """The certificate digest these leaves and hashes commit to."""
        return self._digest

    @cached_property
    def _digest(self) -> bytes:
        self.validate()
        known = {i: leaf_hash(e.name, e.salt, e.value) for i, e in self.entries}
        known[META_INDEX] = leaf_hash(META, self.meta_salt, self.meta.canonical_value())
        hidden = dict(zip(cover(self.leaf_count, self._revealed()), self.hashes, strict=True))

        def node(lo: int, hi: int) -> bytes:
            if (lo, hi) in hidden:
                return hidden[(lo, hi)]
            if hi - lo == 1:
                return known[lo]
            k = _split(hi - lo)
            return SM3_HASHER.hash_children(node(lo, lo + k), node(lo + k, hi))

        return node(0, self.leaf_count)

    def disclosed(self) -> dict[str, FieldValue]:
        return {e.name: e.value for _, e in self.entries}

    # ------------------------------------------------------------------ wire form

    def to_bytes(self) -> bytes:
        self.validate()
        m = self.meta
        return canonical.encode([
            m.id.removeprefix(_ROOT_PREFIX), m.issued_at, m.valid_from, m.valid_until,
            None if m.supersedes is None else m.supersedes.removeprefix(_ROOT_PREFIX),
            self.meta_salt, self.leaf_count,
            [[i, e.name, e.salt, e.value] for i, e in self.entries],
            b"".join(self.hashes),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactPresentation:
        try:
            value = canonical.decode(bytes(data), max_len=MAX_COMPACT_BYTES)
        except CertificatesError as exc:
            raise PayloadError(f"compact presentation: {exc}") from exc
        if not isinstance(value, list) or len(value) != 9:
            raise PayloadError("compact presentation: expected an array of 9 items")
        short_id, issued_at, valid_from, valid_until, short_sup, salt, n, raw, blob = value
        if not isinstance(short_id, str) or (short_sup is not None
                                             and not isinstance(short_sup, str)):
            raise PayloadError("compact presentation: id and supersedes must be strings")
        full_id = _ROOT_PREFIX + short_id
        full_sup = None if short_sup is None else _ROOT_PREFIX + short_sup
        try:
            parts = full_id.split(".")
            if len(parts) < 7:
                CertificateId.parse(full_id)  # raises, naming what is wrong
            # DocumentMeta parses and checks the id (and its type and issuer parts) itself.
            meta = DocumentMeta(full_id, parts[5], parts[6], issued_at, valid_from,
                                valid_until, full_sup)
        except CertificatesError as exc:
            raise PayloadError(f"compact presentation meta: {exc}") from exc
        if (meta.id, meta.supersedes) != (full_id, full_sup):
            raise PayloadError("compact presentation: id or supersedes is not canonical")
        if not isinstance(raw, list) or not all(isinstance(x, list) and len(x) == 4
                                                for x in raw):
            raise PayloadError("compact presentation: entries must be [index, name, salt, value]")
        if not isinstance(blob, bytes) or len(blob) % DIGEST_SIZE:
            raise PayloadError(f"compact presentation: hashes must be {DIGEST_SIZE}*k bytes")
        if not isinstance(salt, bytes):
            raise PayloadError("compact presentation: meta salt must be bytes")
        entries = tuple((x[0], _disclosed(x[1:])) for x in raw)
        hashes = tuple(blob[j:j + DIGEST_SIZE] for j in range(0, len(blob), DIGEST_SIZE))
        out = cls(meta, salt, n, entries, hashes)
        out.validate()
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """A readable form (for logs and the CLI), not a format to parse back."""
        return {"id": self.meta.id, "leaf_count": self.leaf_count,
                "disclosed": sorted(self.disclosed()), "hidden_hashes": len(self.hashes)}


def _disclosed(item: list[Any]) -> Disclosed:
    name, salt, value = item
    if not isinstance(name, str):
        raise PayloadError("compact presentation: a disclosed name must be a string")
    return Disclosed(name, salt, value)


def _check_salt(salt: object, what: str) -> None:
    if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
        raise PayloadError(f"{what} must be {SALT_SIZE} bytes")
