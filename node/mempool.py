"""The mempool: transactions admitted but not yet committed, in arrival order.

How it works:

* **Admission** (``add``) refuses a tx larger than a block could hold, and a peer's tx
  (whose id its gossip envelope gave) that a block has carried, before decoding it;
  decodes the tx, answers an id already pending as a duplicate (idempotent), then
  checks it with
  ``ledger.state.apply_tx`` against the *committed state plus every pending tx*
  (an ``Overlay`` holding their effects), so two pending txs issuing one id, or a
  revocation of a certificate issued by a pending tx, are judged as the block will
  judge them. The tx's effects join the overlay.
* **Signatures once, rules once.** The SM2 check is the expensive part of a single
  tx (~1 ms). It runs first, *outside* the lock, through a pre-check against the
  committed state (``ledger.state.precheck_tx``: chain, replay, signer, signature -
  not the kind's rules, which for a 5,000-record batch cost as much again and run
  once, in the overlay check) that fills the shared ``sig_cache`` (tx id ->
  verdict). The same dict is handed to the ``Chain``, so neither the overlay check
  nor block validation verifies that signature again. A pre-check failure that
  pending txs cannot change (malformed, bad signature, wrong chain, replay) is
  final at once.
* **Decoded once, hashed once.** ``decoded(tx_id)`` hands the ``Chain`` the pending tx
  already decoded, so validating or proposing a block does not parse it again (a batch
  tx is ~1 MB of msgpack); ``reap`` hands the proposer decoded txs, which know their
  ids; ``id_of(raw)`` gives a block decoder the id of pending tx bytes by a dict lookup
  (Python's hash of the bytes and one comparison) instead of SM3 over ~1 MB again.
* **Committed reads once per commit.** The overlay reads the committed state through a
  ``_Remembered`` view made afresh at every ``update``, so the hundreds of pending txs an
  update re-checks read their signer's records from LevelDB once, not once each.
* **Bounds**: ``max_txs`` and ``max_bytes``; a full pool refuses new txs
  (``MempoolFull``, HTTP 429) rather than evicting admitted ones, whose submitters
  were told "pending".
* **Reaping** for a proposal takes txs in arrival order up to the block limits.
* **After a commit** (``update``) the committed txs leave, and the others are
  re-checked in order against the new state; those that no longer apply (their
  certificate was issued by someone else's tx, their issuer was deactivated) are
  dropped and reported. Each entry remembers the state keys its check read and the
  effects it had, so a certificate tx none of whose keys the block (or an earlier
  pending tx that was dropped or re-checked) wrote keeps its effects; only its
  signer's key is re-checked against the new height, the one rule that moves
  without a write. A 5,000-record batch is thus re-checked for ~5,000 set lookups
  instead of its full rules at every commit while it waits. Without the block's
  written keys (``written=None``) everything is re-checked.
* **Gossip**: txs admitted from clients are queued for the gossip thread
  (``take_gossip``: envelopes go at most one per ``linger``, so under load one signed
  envelope carries many txs, while a tx after a quiet spell goes at once;
  ``node.txgossip`` decides who gets them when); txs that came from peers are not
  re-sent (the mesh is full).

Thread-safety: one lock guards the pool; the consensus thread reaps and updates,
HTTP and peer threads add.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger.errors import LedgerError, TxRejected
from ledger.records import tx_key
from ledger.state import (
    BlockContext,
    Overlay,
    SigCache,
    StateView,
    TxEffects,
    apply_tx,
    precheck_tx,
)
from ledger.state_base import get_many, merged
from ledger.tx import Transaction
from node.errors import MempoolFull, TxTooLarge

#: Rejections no pending transaction can change: final after the lock-free pre-check.
_FINAL = frozenset({"malformed", "bad_signature", "wrong_chain_id", "duplicate_tx"})


@dataclass
class _Entry:
    tx: Transaction
    raw: bytes
    admitted_at: float  # monotonic seconds, for the commit-latency histogram
    reads: frozenset[bytes]  # state keys its last check read (below its own writes)
    writes: dict[bytes, bytes | None]  # that check's effects, layered into the overlay


class _Reads:
    """A state view that remembers every key read through it."""

    __slots__ = ("base", "keys")

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.keys: set[bytes] = set()

    def get(self, key: bytes, /) -> bytes | None:
        self.keys.add(key)
        return self.base.get(key)

    def get_many(self, keys: Sequence[bytes], /) -> list[bytes | None]:
        self.keys.update(keys)
        return get_many(self.base, keys)


class _Remembered:
    """The committed state, each key read from it once per commit (a dict of the answers).

    Under load every commit re-checks hundreds of pending txs, each reading its signer's
    key-owner and issuer records (LevelDB reads and decodes) that hardly any block writes.
    A fresh one is made at every ``update``; it is read only under the pool's lock (the
    overlay's checks), never by the lock-free pre-check. An answer it keeps after a commit,
    until that commit's ``update``, is safe: a check made on it is re-run by that update
    whenever the block wrote one of the keys it read."""

    __slots__ = ("_base", "_get", "_seen")

    def __init__(self, base: StateView) -> None:
        self._base = base
        self._get = base.get
        self._seen: dict[bytes, bytes | None] = {}

    def get(self, key: bytes, /) -> bytes | None:
        seen = self._seen
        if key in seen:
            return seen[key]
        value = seen[key] = self._get(key)
        return value

    def get_many(self, keys: Sequence[bytes], /) -> list[bytes | None]:
        # A batch's record ids are read once each: not kept (the dict is for the few
        # signer and issuer records every tx reads).
        base = self._base
        return merged(keys, self._seen, lambda rest: get_many(base, rest))


def _check(view: StateView, tx: Transaction, ctx: BlockContext, cache: SigCache
           ) -> tuple[TxEffects, frozenset[bytes]]:
    reads = _Reads(view)
    eff = apply_tx(reads, tx, ctx, sig_cache=cache)
    return eff, frozenset(reads.keys)


@dataclass(frozen=True)
class AddResult:
    tx_id: bytes
    added: bool  # False: it was already pending


class Mempool:
    def __init__(self, view: StateView, chain_id: str, *, max_txs: int, max_bytes: int,
                 max_tx_bytes: int, sig_cache: SigCache,
                 monotonic: Callable[[], float]) -> None:
        self._view = view
        self._chain_id = chain_id
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_tx_bytes = max_tx_bytes
        self.sig_cache = sig_cache
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._gossip_ready = threading.Condition(self._lock)
        self._entries: dict[bytes, _Entry] = {}
        self._ids: dict[bytes, bytes] = {}  # raw tx -> its id, for id_of
        self._bytes = 0
        self._overlay = Overlay(_Remembered(view))
        self._vanished: set[bytes] = set()  # writes of txs removed since the last update
        self._gossip: deque[bytes] = deque()
        self._gossip_bytes = 0
        self._gossip_woken = False
        self._last_gossip = float("-inf")  # when take_gossip last returned txs
        self._listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._entries

    def decoded(self, tx_id: bytes) -> Transaction | None:
        """The pending tx with this id, decoded (for ``Chain.known_txs``; any thread)."""
        e = self._entries.get(tx_id)
        return None if e is None else e.tx

    def id_of(self, raw: bytes) -> bytes | None:
        """``SM3(raw)`` if ``raw`` is exactly a pending tx's bytes, else None (any thread).

        Equal bytes have the same SM3, so the id computed on admission stands."""
        return self._ids.get(raw)

    def on_new_tx(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (without the lock) after a tx is admitted."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ admission

    def add(self, raw: bytes, ctx: BlockContext, *, gossip: bool,
            tx_id: bytes | None = None) -> AddResult:
        """Admit ``raw`` or raise ``MalformedTxError`` / ``TxRejected`` / ``MempoolError``.

        ``ctx`` is the context of the next block (chain id, its height, now). ``tx_id``:
        SM3 of ``raw`` when the caller has computed it already (a peer's gossip, whose
        envelope signature covers the ids); it is not hashed again.
        """
        if len(raw) > self.max_tx_bytes:
            raise TxTooLarge(f"transaction is {len(raw)} bytes; a block holds at most "
                             f"{self.max_tx_bytes}")
        if tx_id is not None and tx_id not in self._entries and self._view.get(
                tx_key(tx_id)) is not None:
            # A peer's spread (node.txgossip) often brings what a block has carried since:
            # refuse it as the rules would, but before decoding (a batch is ~1 MB to decode).
            raise TxRejected("duplicate_tx", "this transaction was already applied (replay)",
                             tx_id=tx_id)
        tx = Transaction.from_bytes(raw)
        if tx_id is not None:
            tx.__dict__["id"] = tx_id  # Transaction.id is a cached SM3 of these very bytes
        if tx.id in self._entries:
            return AddResult(tx.id, False)
        try:
            precheck_tx(self._view, tx, ctx, sig_cache=self.sig_cache)  # outside the lock
        except TxRejected as exc:
            if exc.reason in _FINAL:
                raise
        with self._lock:
            if tx.id in self._entries:
                return AddResult(tx.id, False)
            if len(self._entries) >= self.max_txs or self._bytes + len(raw) > self.max_bytes:
                raise MempoolFull(f"mempool is full ({len(self._entries)} txs, {self._bytes} "
                                  "bytes): retry later")
            eff, reads = _check(self._overlay, tx, ctx, self.sig_cache)
            self._overlay.updates.update(eff.updates)
            raw = tx.to_bytes()  # the very bytes tx.id was computed from
            self._entries[tx.id] = _Entry(tx, raw, self._monotonic(), reads, eff.updates)
            self._ids[raw] = tx.id
            self._bytes += len(raw)
            if gossip:
                self._gossip.append(raw)
                self._gossip_bytes += len(raw)
                self._gossip_ready.notify_all()
        for listener in self._listeners:
            listener()
        return AddResult(tx.id, True)

    # ------------------------------------------------------------------ proposals

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Pending txs (decoded) in arrival order, as many as fit the block limits."""
        out: list[Transaction] = []
        size = 0
        with self._lock:
            for e in self._entries.values():
                if len(out) >= max_txs:
                    break
                if size + len(e.raw) > max_bytes:
                    continue  # a smaller one further on may still fit
                out.append(e.tx)
                size += len(e.raw)
        return out

    def remove(self, tx_ids: Iterable[bytes]) -> None:
        """Drop txs (e.g. the proposer found they no longer apply); the overlay is rebuilt
        at the next ``update``."""
        with self._lock:
            for tid in tx_ids:
                e = self._entries.pop(tid, None)
                if e is not None:
                    self._bytes -= len(e.raw)
                    self._ids.pop(e.raw, None)
                    self._vanished.update(e.writes)  # txs that read them must be re-checked

    def update(self, committed: Iterable[bytes], ctx: BlockContext,
               written: Iterable[bytes] | None = None
               ) -> tuple[dict[bytes, float], dict[bytes, str]]:
        """A block was committed: remove its txs, re-check the rest in order.

        ``written``: the state keys the block wrote (None: re-check every pending tx).
        Returns (committed tx id -> its admission time, for those that were pending here;
        dropped tx id -> why it no longer applies).
        """
        admitted: dict[bytes, float] = {}
        dropped: dict[bytes, str] = {}
        with self._lock:
            changed = None if written is None else {*written, *self._vanished}
            self._vanished = set()
            for tid in committed:
                e = self._entries.pop(tid, None)
                if e is not None:
                    admitted[tid] = e.admitted_at
                    self._bytes -= len(e.raw)
                    self._ids.pop(e.raw, None)
            overlay = Overlay(_Remembered(self._view))
            for tid, e in list(self._entries.items()):
                try:
                    if changed is not None and e.tx.kind.startswith("cert.") \
                            and e.reads.isdisjoint(changed):
                        precheck_tx(overlay, e.tx, ctx, sig_cache=self.sig_cache)
                        overlay.updates.update(e.writes)
                        continue
                    eff, e.reads = _check(overlay, e.tx, ctx, self.sig_cache)
                except TxRejected as exc:
                    dropped[tid] = exc.reason
                except LedgerError as exc:  # state trouble: keep the pool sane, say why
                    dropped[tid] = exc.code
                else:
                    if changed is not None:  # its effects may differ: later readers re-check
                        changed.update(e.writes)
                        changed.update(eff.updates)
                    e.writes = eff.updates
                    overlay.updates.update(eff.updates)
                    continue
                if changed is not None:
                    changed.update(e.writes)
                del self._entries[tid]
                self._bytes -= len(e.raw)
                self._ids.pop(e.raw, None)
            self._overlay = overlay
        return admitted, dropped

    def admitted_at(self, tx_id: bytes) -> float | None:
        e = self._entries.get(tx_id)
        return None if e is None else e.admitted_at

    # ------------------------------------------------------------------ gossip

    def take_gossip(self, max_bytes: int, timeout: float, linger: float = 0.0) -> list[bytes]:
        """Wait up to ``timeout`` s for client txs to gossip; returns up to ``max_bytes``.

        Envelopes are spaced: once a tx is there, wait until ``linger`` s have passed since
        the last txs were taken (or until ``max_bytes`` are queued). Every gossip envelope
        costs each peer an SM2 verify, so under load one envelope should carry many txs,
        not the one or two that arrived this instant; but a tx arriving after a quiet
        spell goes at once instead of waiting for company that may not come (the wait is
        commit latency).
        """
        with self._gossip_ready:
            if not self._gossip:
                self._gossip_ready.wait(timeout)
            if self._gossip and linger > 0:
                deadline = self._last_gossip + linger
                while self._gossip_bytes < max_bytes and not self._gossip_woken:
                    left = deadline - self._monotonic()
                    if left <= 0 or not self._gossip_ready.wait(left):
                        break  # timed out (also ends the wait under a test's manual clock)
            self._gossip_woken = False
            out: list[bytes] = []
            size = 0
            while self._gossip and (not out or size + len(self._gossip[0]) <= max_bytes):
                raw = self._gossip.popleft()
                out.append(raw)
                size += len(raw)
            self._gossip_bytes -= size
            if out:
                self._last_gossip = self._monotonic()
            return out

    def wake_gossip(self) -> None:
        """Return a waiting ``take_gossip`` at once (shutdown)."""
        with self._gossip_ready:
            self._gossip_woken = True
            self._gossip_ready.notify_all()
