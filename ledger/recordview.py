"""The chain's view of its committed records, as ``ledger.state`` reads them.

Logical key -> ``r/`` + SM3(key) in the store, with three things in front of the store:
the SM3 of keys read lately (staging needs them again), an in-memory filter of the stored
record keys (most reads while applying blocks are of new certificate ids, which a LevelDB
miss would cost 6-20 us to confirm), the membership and governance records (read for
nearly every tx, rarely changed) and, while a pipelined block's write is in flight, that
write's ops (``ledger.chain``'s header says when). ``Chain`` owns one and keeps it in step
with its commits: ``learn`` before a write, ``forget`` after one.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence
from typing import Final

from certificates.hashing import sm3
from ledger import schema
from ledger.chain_open import KNOWN_BYTES
from ledger.records import ISSUER_PREFIX, KEY_PREFIX
from ledger.store import KVStore

#: Bound on the record view's remembered key hashes (~130 bytes each): a few blocks of
#: 5,000-record batches, the gap between a batch's admission and its block.
HASHES_KEPT: Final = 1 << 17
#: Bound on the membership and governance records the record view keeps (a few hundred
#: bytes each; a registry has tens of issuers with a few keys each).
HOT_RECORDS: Final = 4096
_HOT_FAMILIES: Final = (ISSUER_PREFIX, KEY_PREFIX, b"gov:")
_MISSING: Final = object()


class RecordView:
    """``StateView`` over the committed records: logical key -> ``r/`` + SM3(key).

    Membership and governance records (issuers, their keys, validators, admins) are read for
    every tx a validator admits or applies - about ten store reads and group decodes per
    single certificate - and change rarely. They are kept once read (``HOT_RECORDS`` at
    most) and dropped by ``forget`` when a block that wrote them is stored - or, for a
    pipelined commit, as soon as ``inflight`` holds the block's ops, which answer reads
    until the store has them. A reader that raced that commit may hold the old bytes: it
    caches them only if no commit came while it read (``_generation``), so the cache never
    outlives a write."""

    __slots__ = ("_generation", "_get", "_hot", "_hot_lock", "_known", "_store", "hashes",
                 "inflight")

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self._get = store.get
        # A dict used as a set: one of bytes keys and None values is never tracked by the
        # cyclic garbage collector, whereas a set always is, and every full collection then
        # walks its million entries (tens of ms each, ~6% of apply time at 1M records).
        self._known: dict[bytes, None] | None = None
        #: SM3 of the keys read lately: staging needs the same hashes (an SMT key per
        #: changed record), and a validator reads a batch's keys twice (mempool, then
        #: block), a ~1 us SM3 call each. Any thread may add (an entry is a pure function
        #: of its key); the chain starts it afresh at a stage once it holds HASHES_KEPT.
        self.hashes: dict[bytes, bytes] = {}
        self._hot: dict[bytes, bytes | None] = {}
        self._hot_lock = threading.Lock()
        self._generation = 0
        #: The ops of a pipelined block's write still in flight (storage key -> value, None
        #: a delete), read before the store; None when nothing is in flight.
        self.inflight: dict[bytes, bytes | None] | None = None

    def set_filter(self, known: Iterable[bytes]) -> None:
        """The leading ``KNOWN_BYTES`` of the key hash of every record that exists."""
        self._known = dict.fromkeys(known)

    def learn(self, key_hashes: Iterable[bytes]) -> None:
        """Records under these key hashes may exist from now on (call before writing them)."""
        if self._known is not None:
            self._known.update(dict.fromkeys(h[:KNOWN_BYTES] for h in key_hashes))

    def get(self, key: bytes, /) -> bytes | None:
        hot = self._hot.get(key, _MISSING)
        if hot is not _MISSING:
            return hot  # type: ignore[return-value]
        if key.startswith(_HOT_FAMILIES):
            generation = self._generation
            value = self._read(key)
            with self._hot_lock:
                if generation == self._generation and len(self._hot) < HOT_RECORDS:
                    self._hot[key] = value
            return value
        return self._read(key)

    def _read(self, key: bytes) -> bytes | None:
        h = self.hashes.get(key)
        if h is None:
            h = self.hashes[key] = sm3(key)
        # Most lookups while applying blocks are for new certificate ids; a LevelDB miss
        # costs 6-20 us (memtable, level-0 files, levels), a filter lookup well under one.
        known = self._known
        if known is not None and h[:KNOWN_BYTES] not in known:
            return None
        skey = schema.RECORD_PREFIX + h
        inflight = self.inflight
        if inflight is not None:
            value = inflight.get(skey, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]
        return self._get(skey)

    def forget(self, keys: Collection[bytes]) -> None:
        """A block that wrote ``keys`` is stored (or in ``inflight``): later reads must see
        it. (The few kept records are looked up in ``keys``, not the block's ~15,000 keys in
        them.)"""
        with self._hot_lock:
            self._generation += 1
            hot = self._hot
            for key in [k for k in hot if k in keys]:
                del hot[key]

    def get_many(self, keys: Sequence[bytes], /) -> list[bytes | None]:
        """``get`` of each key, in one loop (a batch's record ids)."""
        hashes, known, get, prefix = self.hashes, self._known, self._get, schema.RECORD_PREFIX
        inflight = self.inflight
        out: list[bytes | None] = []
        append = out.append
        for key in keys:
            h = hashes.get(key)
            if h is None:
                h = hashes[key] = sm3(key)
            if known is not None and h[:KNOWN_BYTES] not in known:
                append(None)
            elif inflight is None:
                append(get(prefix + h))
            else:
                value = inflight.get(prefix + h, _MISSING)
                append(get(prefix + h) if value is _MISSING else value)  # type: ignore[arg-type]
        return out
