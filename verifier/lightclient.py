"""The light client: checks what nodes say instead of believing it.

Asking nodes (``LightClient``)
------------------------------
Concurrent look-ups are batched (``verifier.coalesce``): those queued while one is in
flight go together, one request per node asked (``state_many``; a source without it is
asked key by key), and each key's answer is checked on its own - a node lying about one
key is refused for that key only, and only that key is asked of the next node.

The light client asks its sources (nodes) one at a time, starting with the one
that last answered well - or, with ``spread``, with each node in turn (so the
nodes share a busy verifier's load), skipping for ``cooldown`` seconds a node
whose last answer failed (it is still asked when every other node fails too).
An answer that fails any check, or whose header is *stale* (more than ``max_lag``
heights below the freshest committed height seen, or older than ``max_age_ms``
when set), is refused and the next node is asked;
each refusal is kept, and when every node has failed ``NoTrustworthyAnswerError``
names each one and why. The freshest height only ever comes from verified
headers (answers and, every ``refresh_interval`` seconds, each node's latest
block), so a lying node can make itself look stale but never make others do so.
A source or a check that fails on a node's answer with an exception nobody
foresaw (a bug that answer found) is logged and counts as that node's refusal:
one node's bytes never fail the verification outright while another node can
still answer it.

Caches
------
* **Issuer records**: an issuer's checked answer is reused for later certificates
  while its block is at most ``issuer_max_lag`` blocks (default 1) below the block
  of the certificate answer it goes with (and within ``max_lag`` of the freshest
  block seen) - the same staleness a lagging node could legally show, far tighter
  than ``max_lag``. So one node look-up per verification, not two.

The checks of one answer (``check_state``, ``check_header``, ``check_proof``) and their
commit/proof caches are in ``verifier.checks``; they are re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.block import BlockHeader
from ledger.commit import CommitCertificate, ValidatorSet
from ledger.records import cert_key, issuer_key
from verifier.checks import (
    CheckedState,
    check_header,
    check_proof,
    check_state,
    decode_header,
)
from verifier.coalesce import Coalescer
from verifier.errors import (
    EvidenceError,
    NoTrustworthyAnswerError,
    SourceError,
    UnsupportedError,
    VerifierError,
)
from verifier.evidence import Evidence, StateEvidence
from verifier.sources import state_per_key
from verifier.trust import TrustedState

__all__ = ["CheckedState", "EvidenceSource", "LightClient", "check_header", "check_proof",
           "check_state", "decode_header"]

log = logging.getLogger(__name__)
_ISSUER_CACHE_LIMIT = 1024
#: How long a queued look-up waits for its batch: every node may be tried in turn.
_BATCH_WAIT = 60.0


class EvidenceSource(Protocol):
    """A node, seen from the light client."""

    @property
    def name(self) -> str: ...

    def state(self, key: bytes) -> StateEvidence:
        """The node's answer for a logical key; SourceError (UnsupportedError) on failure."""
        ...

    def latest(self) -> tuple[bytes, CommitCertificate] | None:
        """The node's head header bytes and commit, or None if it cannot say."""
        ...

    # Optional: ``state_many(keys) -> [StateEvidence | SourceError, ...]``, one request
    # for many keys (``HttpSource``); without it a batch is asked with ``state`` per key.


# --------------------------------------------------------------------------- pure checks


class LightClient:
    """Asks nodes for evidence and keeps only what checks out (see the module header)."""

    def __init__(self, trusted: TrustedState, sources: Sequence[EvidenceSource], *,
                 max_lag: int = 5, max_age_ms: int | None = None,
                 refresh_interval: float | None = 30.0, issuer_max_lag: int | None = 1,
                 spread: bool = False, cooldown: float = 10.0, batch: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        if not sources:
            raise VerifierError("the light client needs at least one node")
        self.sources = list(sources)
        self.max_lag = max_lag
        self.max_age_ms = max_age_ms
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._trusted = trusted
        self._freshest = trusted.height
        self._preferred = 0
        self._last_refresh: float | None = None
        self._lock = threading.Lock()
        # (source index, key kind) a node said it does not serve: not asked again.
        self._unsupported: set[tuple[int, bytes]] = set()
        self.spread, self.cooldown = spread, cooldown
        self._turn = 0
        self._failed_until: dict[int, float] = {}  # source index -> end of its cooldown
        #: issuer code -> its last checked answer (None: issuer_max_lag None, no caching).
        self.issuer_max_lag = issuer_max_lag
        self._issuers: dict[str, tuple[StateEvidence, CheckedState]] = {}
        #: (source name, check or failure) of every refused answer, for metrics.
        self.on_reject: Callable[[str, str], None] | None = None
        #: Gathers concurrent look-ups into one request per node (None: batch < 2).
        self.batcher: Coalescer[tuple[bytes, bool], _Outcome] | None = None
        if batch >= 2:
            self.batcher = Coalescer(self._ask_many, max_batch=batch,
                                     wait_timeout=_BATCH_WAIT)
        #: Look-up rounds (each one request per node asked) and the keys they carried,
        #: through ``batcher`` or ``evidence_many`` alike (for metrics).
        self.lookups = 0
        self.looked_up_keys = 0

    @property
    def trusted(self) -> TrustedState:
        return self._trusted

    @property
    def freshest_height(self) -> int:
        return self._freshest

    def check(self, ev: StateEvidence) -> CheckedState:
        """``check_state`` plus staleness; adopts a newly verified validator set."""
        checked = check_state(ev, self._trusted)
        h = checked.header
        if h.height + self.max_lag < self._freshest:
            raise EvidenceError("stale", f"block {h.height} is more than {self.max_lag} blocks "
                                         f"behind the freshest committed block seen "
                                         f"({self._freshest})")
        if self.max_age_ms is not None:
            age = int(self._clock() * 1000) - h.time_ms
            if age > self.max_age_ms:
                raise EvidenceError("stale", f"block {h.height} is {age / 1000:.0f} s old, "
                                             f"more than {self.max_age_ms / 1000:.0f} s")
        self._learn(checked.header, checked.validators, checked.new_set)
        return checked

    def _learn(self, header: BlockHeader, vs: ValidatorSet, new_set: bool) -> None:
        with self._lock:
            if new_set:
                self._trusted = self._trusted.adopt(vs, header.height)
            self._freshest = max(self._freshest, header.height)

    def refresh(self) -> None:
        """Learn the freshest committed height from every node's verified head."""
        self._last_refresh = self._clock()
        for src in self.sources:
            try:
                latest = src.latest()
                if latest is None:
                    continue
                header, vs, new = check_header(latest[0], latest[1], self._trusted)
            except VerifierError as exc:
                self._rejected(src.name, exc)
                continue
            self._learn(header, vs, new)

    def head(self, probe: bytes) -> tuple[CheckedState, StateEvidence]:
        """The freshest committed header any node proves, with the answer that proved it.

        Each node is asked for the state under ``probe`` (any key; absence is fine): unlike
        ``latest()``, a state answer carries the validator set, so a changed set is
        followed (see ``check_header``).
        """
        best: tuple[CheckedState, StateEvidence] | None = None
        attempts: list[tuple[str, str]] = []
        for src in self.sources:
            try:
                ev = src.state(probe)
                checked = self.check(ev)
            except (EvidenceError, SourceError) as exc:
                attempts.append((src.name, self._rejected(src.name, exc)))
                continue
            if best is None or checked.header.height > best[0].header.height:
                best = (checked, ev)
        if best is None:
            raise NoTrustworthyAnswerError("the chain head", attempts)
        return best

    def _maybe_refresh(self) -> None:
        if self.refresh_interval is None:
            return
        last = self._last_refresh
        if last is None or self._clock() - last >= self.refresh_interval:
            self.refresh()

    def _order(self, n: int) -> list[int]:
        """The order to ask the sources in (see the module header)."""
        if not self.spread:
            start = self._preferred % n
            return [(start + i) % n for i in range(n)]
        with self._lock:
            self._turn += 1
            turn = self._turn
        order = [(turn + i) % n for i in range(n)]
        if not self._failed_until:
            return order
        now = self._clock()
        cooling = {i for i, until in self._failed_until.items() if until > now}
        return [i for i in order if i not in cooling] + [i for i in order if i in cooling]

    def _rejected(self, source: str, exc: VerifierError, index: int | None = None) -> str:
        if index is not None and self.spread:
            self._failed_until[index] = self._clock() + self.cooldown
        reason = exc.check if isinstance(exc, EvidenceError) else exc.code
        if self.on_reject is not None:
            self.on_reject(source, reason)
        return str(exc)

    def state(self, key: bytes, *, optional: bool = False) -> CheckedState | None:
        """The first answer for ``key`` that checks out, trying every node in turn.

        With ``optional``, None when no node serves this kind of key (and none lied).
        """
        got = self._first_good(key, optional)
        return None if got is None else got[1]

    def evidence(self, cert_id: str, issuer_code: str) -> Evidence:
        """Checked evidence for a certificate and its issuer, ready for ``logic.verify``.

        The raw answers are returned (not the checked ones) so that ``logic.verify``
        derives every check itself and reports each by name; that is cheap, since the
        commit check is cached.
        """
        self._maybe_refresh()
        cert = self._first_good(cert_key(cert_id), False)
        assert cert is not None
        issuer = self._cached_issuer(issuer_code, cert[1].header.height)
        if issuer is None:
            issuer = self._first_good(issuer_key(issuer_code), True)
            if issuer is not None:
                self._remember_issuer(issuer_code, issuer)
        return Evidence(cert[0], None if issuer is None else issuer[0])

    def evidence_many(self, wanted: Sequence[tuple[str, str]]) -> list[Evidence | VerifierError]:
        """``evidence`` for many (certificate id, issuer code) pairs at once, each its own
        result or error: the certificates in one look-up (one request per node asked),
        then the issuers not cached fresh enough for them in another.

        For a caller that already gathers concurrent verifications (``verifier.pipeline``):
        it asks the nodes directly, not through ``batcher``.
        """
        self._maybe_refresh()
        certs = self._ask_many([(cert_key(c), False) for c, _ in wanted])
        issuers: dict[str, tuple[StateEvidence, CheckedState] | None] = {}
        missing: list[str] = []
        asked: list[_Outcome] = []
        for (_, code), got in zip(wanted, certs, strict=True):
            if got.error is None and got.got is not None and code not in issuers:
                cached = self._cached_issuer(code, got.got[1].header.height)
                issuers[code] = cached
                if cached is None:
                    missing.append(code)
        if missing:
            asked = self._ask_many([(issuer_key(c), True) for c in missing])
            for code, got in zip(missing, asked, strict=True):
                if got.error is None:
                    issuers[code] = got.got
                    if got.got is not None:
                        self._remember_issuer(code, got.got)
        out: list[Evidence | VerifierError] = []
        for (_, code), got in zip(wanted, certs, strict=True):
            if got.error is not None or got.got is None:
                out.append(got.error or NoTrustworthyAnswerError(code, []))
                continue
            issuer = issuers.get(code)
            if issuer is None and code in missing:
                failed = asked[missing.index(code)].error
                if failed is not None:
                    out.append(failed)
                    continue
            out.append(Evidence(got.got[0], None if issuer is None else issuer[0]))
        return out

    def _remember_issuer(self, code: str, got: tuple[StateEvidence, CheckedState]) -> None:
        if self.issuer_max_lag is None:
            return
        with self._lock:
            if len(self._issuers) >= _ISSUER_CACHE_LIMIT:
                self._issuers.clear()
            self._issuers[code] = got

    def _cached_issuer(self, code: str, height: int
                       ) -> tuple[StateEvidence, CheckedState] | None:
        if self.issuer_max_lag is None:
            return None
        with self._lock:
            got = self._issuers.get(code)
        if got is None:
            return None
        h = got[1].header.height
        fresh = h + self.issuer_max_lag >= height and h + self.max_lag >= self._freshest
        return got if fresh else None

    def _first_good(self, key: bytes, optional: bool
                    ) -> tuple[StateEvidence, CheckedState] | None:
        if self.batcher is None:
            return self._ask_many([(key, optional)])[0].unwrap()
        return self.batcher.get((key, optional)).unwrap()

    def _ask_many(self, wanted: Sequence[tuple[bytes, bool]]) -> list[_Outcome]:
        """For each (key, optional): the first answer that checks out, trying node by node.

        One request per node carries every key still unanswered (``state_many``); each
        key's answer is checked on its own, so a node that lies about one key is
        refused for that key and the next node is asked for it.
        """
        n = len(self.sources)
        with self._lock:
            self.lookups += 1
            self.looked_up_keys += len(wanted)
        attempts: list[list[tuple[str, str]]] = [[] for _ in wanted]
        unsupported, lies = [0] * len(wanted), [0] * len(wanted)
        done: dict[int, tuple[StateEvidence, CheckedState]] = {}
        for index in self._order(n):
            src = self.sources[index]
            todo = [i for i in range(len(wanted)) if i not in done]
            if not todo:
                break
            ask = []
            for i in todo:
                if (index, _kind(wanted[i][0])) in self._unsupported:
                    unsupported[i] += 1
                    attempts[i].append((src.name, "does not serve this kind of evidence"))
                else:
                    ask.append(i)
            if not ask:
                continue
            try:
                answers = _state_many(src, [wanted[i][0] for i in ask])
            except SourceError as exc:  # the whole request failed
                answers = [exc] * len(ask)
            except Exception as exc:
                # A node's answer that breaks a source in a way nobody foresaw is that
                # node's failure, not every verification's: log it and ask the next one.
                log.exception("evidence source %s failed unexpectedly", src.name)
                answers = [SourceError(f"unexpected {type(exc).__name__}: {exc}")] * len(ask)
            good = False
            for i, ans in zip(ask, answers, strict=True):
                try:
                    if isinstance(ans, Exception):
                        raise ans
                    done[i] = (ans, self.check(ans))
                    good = True
                except UnsupportedError as exc:
                    unsupported[i] += 1
                    self._unsupported.add((index, _kind(wanted[i][0])))
                    attempts[i].append((src.name, self._rejected(src.name, exc)))
                except EvidenceError as exc:
                    lies[i] += 1
                    attempts[i].append((src.name, self._rejected(src.name, exc, index)))
                except SourceError as exc:
                    attempts[i].append((src.name, self._rejected(src.name, exc, index)))
                except Exception as exc:
                    # Checks that fail on an answer in a way nobody foresaw refuse that
                    # answer; they must not fail the other keys or the other nodes.
                    # It counts as evidence that failed its checks (no trust-bundle fallback).
                    log.exception("checking evidence from %s failed unexpectedly", src.name)
                    lies[i] += 1
                    why = SourceError(f"its answer could not be checked: "
                                      f"{type(exc).__name__}: {exc}")
                    attempts[i].append((src.name, self._rejected(src.name, why, index)))
            if good:
                self._preferred = index
                if self._failed_until:
                    self._failed_until.pop(index, None)
        out = []
        for i, (key, optional) in enumerate(wanted):
            if i in done:
                out.append(_Outcome(done[i]))
            elif optional and unsupported[i] and not lies[i]:
                # Optional evidence (issuer records) falls back to the trust bundle when
                # nodes do not serve it or cannot be reached - but not when a node sent
                # evidence that fails its checks and none sent any that passes.
                out.append(_Outcome(None))
            else:
                out.append(_Outcome(None, NoTrustworthyAnswerError(
                    key.decode("utf-8", "replace"), attempts[i])))
        return out


@dataclass(frozen=True)
class _Outcome:
    """One key's result from ``_ask_many``: checked evidence, None (optional), or an error."""

    got: tuple[StateEvidence, CheckedState] | None
    error: NoTrustworthyAnswerError | None = None

    def unwrap(self) -> tuple[StateEvidence, CheckedState] | None:
        if self.error is not None:
            raise self.error
        return self.got


def _kind(key: bytes) -> bytes:
    return key.split(b":", 1)[0]


def _state_many(src: EvidenceSource, keys: list[bytes]) -> Sequence[StateEvidence | SourceError]:
    """The source's batch look-up, or one ``state`` call per key for a source without one."""
    many = getattr(src, "state_many", None)
    if many is not None:
        got: Sequence[StateEvidence | SourceError] = many(keys)
        return got
    return state_per_key(src.state, keys)
