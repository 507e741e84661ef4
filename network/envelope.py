"""Signed envelopes for validator-to-validator messages.

Wire form of one envelope (canonical msgpack map)::

    {"v": 1, "chain": chain_id, "sender": key_id(16), "seq": int,
     "kind": str, "payload": bytes, "sig": r||s (64)}

``sig`` is the sender's SM2 signature over
``canonical.sign_bytes(DOMAIN_ENVELOPE, chain_id, {sender, seq, kind, payload})``,
so an envelope cannot be replayed on another chain or re-labelled as another kind.

Covered kinds: for some kinds the receiver must hash the payload's parts anyway (tx
gossip: every tx's id is the SM3 of its bytes, and admission needs it). Hashing the whole
payload once more for the signature would double that work, so for those kinds the
signature covers ``{sender, seq, kind, covers}`` instead, where ``covers`` is what the
kind's *cover* function derives from the payload (the list of tx ids) - bound to the
payload as firmly as the payload itself, by SM3. A cover may leave out a part that the
receiver binds another way before using it: consensus messages leave out a proposal's
value (a whole block), which must hash to the signed value id (``node.wire``), and hashing
it for that is the work the cover saves. Sender and receiver agree on the covered
kinds (``seal(..., covers=...)``; ``open_envelope(..., covers={kind: cover})``); an
envelope sealed one way and opened the other fails its signature check. A cover also
returns the payload decoded, which the opened ``Envelope`` carries (``decoded``), so
nothing is decoded or hashed twice.

``open_envelope`` checks, cheapest first, so junk costs no signature check:
size (before any decoding) → canonical decoding and shape → chain id → sender in
the validator set → the kind's cover, if any → signature. Each refusal is an
``EnvelopeError`` with a stable ``reason``. Anything a peer can send raises only
``EnvelopeError``.

Replay: ``ReplayGuard`` remembers the highest ``seq`` accepted per sender and
refuses anything at or below it as ``stale`` (optionally with a small window
for late arrivals). Feed it only envelopes whose
signature has been checked, or a forger could push a sender's mark up and
silence it. Senders number messages with a ``SeqCounter`` started from a value
that grows across restarts (the node uses wall-clock nanoseconds), so a
restarted validator is not taken for a replayer.

Batches: one HTTP body carries a canonical list of envelope byte strings. Each
envelope is opened on its own; a bad one is dropped with its reason and the rest
are kept.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from certificates import canonical, sm2
from certificates.errors import CertificatesError
from network.errors import EnvelopeError

VERSION = 1
KEY_ID_SIZE = 16
SEQ_MAX = 2**63 - 1
KIND_MAX_CHARS = 64
#: Default bound on one envelope; consensus messages are far smaller, blocks travel by sync.
DEFAULT_MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
#: Default bound on one HTTP body of batched envelopes.
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024

_FIELDS = frozenset({"v", "chain", "sender", "seq", "kind", "payload", "sig"})


@dataclass(frozen=True)
class Envelope:
    chain_id: str
    sender_key_id: bytes
    seq: int
    kind: str
    payload: bytes
    signature: bytes
    #: A covered kind's payload as its cover decoded it (None for other kinds).
    decoded: Any = field(default=None, compare=False, repr=False)


#: A covered kind's cover: the payload -> (what the signature covers instead of it, never
#: None; the payload decoded). It raises ``EnvelopeError`` ("malformed") for a payload it
#: cannot read.
Cover = Callable[[bytes], tuple[Any, Any]]


def _signed_part(chain_id: str, sender: bytes, seq: int, kind: str, payload: bytes,
                 covers: Any = None) -> bytes:
    body: dict[str, Any] = {"sender": sender, "seq": seq, "kind": kind}
    if covers is None:
        body["payload"] = payload
    else:
        body["covers"] = covers
    return canonical.sign_bytes(canonical.DOMAIN_ENVELOPE, chain_id, body)


def seal(chain_id: str, kind: str, payload: bytes, key: sm2.PrivateKey, seq: int, *,
         covers: Any = None) -> bytes:
    """Sign and encode one envelope. Bad arguments are a programming error: ValueError.

    ``covers``: for a covered kind (see the header), what its cover derives from
    ``payload``; the signature then covers that instead of the payload (None: the payload
    itself)."""
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq must be an integer in [0, 2**63-1], got {seq!r}")
    if not kind or len(kind) > KIND_MAX_CHARS:
        raise ValueError(f"kind must be 1..{KIND_MAX_CHARS} characters, got {kind!r}")
    sender = key.public.key_id
    sig = key.sign(_signed_part(chain_id, sender, seq, kind, bytes(payload), covers))
    return canonical.encode(
        {
            "v": VERSION,
            "chain": chain_id,
            "sender": sender,
            "seq": seq,
            "kind": kind,
            "payload": bytes(payload),
            "sig": sig,
        }
    )


def _parse(data: bytes, max_bytes: int) -> Envelope:
    """Size, canonical decoding and shape; no keys involved."""
    if not isinstance(data, bytes | bytearray):
        raise EnvelopeError("malformed", f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise EnvelopeError("oversized", f"{len(data)} bytes, limit is {max_bytes}")
    try:
        raw: Any = canonical.decode(bytes(data), max_len=max_bytes)
    except CertificatesError as exc:
        raise EnvelopeError("malformed", str(exc)) from exc
    if not isinstance(raw, dict) or set(raw) != _FIELDS:
        raise EnvelopeError("malformed", "not a map with exactly the envelope fields")
    v, chain, sender, seq = raw["v"], raw["chain"], raw["sender"], raw["seq"]
    kind, payload, sig = raw["kind"], raw["payload"], raw["sig"]
    if v != VERSION or isinstance(v, bool):
        raise EnvelopeError("malformed", f"unsupported envelope version {v!r}")
    if not isinstance(chain, str) or not chain:
        raise EnvelopeError("malformed", "chain id must be a non-empty string")
    if not isinstance(sender, bytes) or len(sender) != KEY_ID_SIZE:
        raise EnvelopeError("malformed", f"sender must be {KEY_ID_SIZE} bytes")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
        raise EnvelopeError("malformed", "seq must be an integer in [0, 2**63-1]")
    if not isinstance(kind, str) or not 0 < len(kind) <= KIND_MAX_CHARS:
        raise EnvelopeError("malformed", f"kind must be a string of 1..{KIND_MAX_CHARS} chars")
    if not isinstance(payload, bytes):
        raise EnvelopeError("malformed", "payload must be bytes")
    if not isinstance(sig, bytes) or len(sig) != sm2.SIGNATURE_SIZE:
        raise EnvelopeError("malformed", f"signature must be {sm2.SIGNATURE_SIZE} bytes")
    return Envelope(chain, sender, seq, kind, payload, sig)


def open_envelope(
    data: bytes,
    chain_id: str,
    known_keys: Mapping[bytes, bytes],
    max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
    covers: Mapping[str, Cover] | None = None,
) -> Envelope:
    """Decode and authenticate one envelope.

    ``known_keys`` maps key id (16 bytes) to public key (65 bytes) for the
    current validator set. Raises ``EnvelopeError`` with the reason on refusal.
    The keys are trusted configuration: an invalid one in ``known_keys`` raises
    ``InvalidKeyError`` (a setup error, not a peer's fault). ``covers`` names the
    covered kinds and their covers (see the header).
    """
    env = _parse(data, max_bytes)
    if env.chain_id != chain_id:
        raise EnvelopeError("wrong_chain", f"envelope is for chain {env.chain_id!r}")
    public = known_keys.get(env.sender_key_id)
    if public is None:
        raise EnvelopeError("unknown_sender", f"key {env.sender_key_id.hex()} is not a validator")
    cover = None if covers is None else covers.get(env.kind)
    covered: Any = None
    if cover is not None:
        covered, decoded = cover(env.payload)
        env = dataclasses.replace(env, decoded=decoded)
    message = _signed_part(chain_id, env.sender_key_id, env.seq, env.kind, env.payload, covered)
    if not sm2.verify(public, message, env.signature):
        raise EnvelopeError("bad_signature", f"from key {env.sender_key_id.hex()}")
    return env


class ReplayGuard:
    """Per-sender replay filter; anything already seen, or too old, is ``stale``.

    With ``window=0`` (the default) it keeps the highest accepted ``seq`` per
    sender and refuses anything at or below it: right when each sender seals
    and sends from one thread, as the consensus thread does. With ``window=w``
    it also accepts a late envelope within ``w`` below the highest, once (the
    IPsec anti-replay scheme), for senders that seal on several threads and so
    may enqueue slightly out of order.

    Memory is at most ``window + 1`` integers per sender that passed the
    signature check, i.e. bounded by the validator set. Thread-safe.
    """

    def __init__(self, window: int = 0) -> None:
        if window < 0:
            raise ValueError("window must be >= 0")
        self.window = window
        self._highest: dict[bytes, int] = {}
        self._recent: dict[bytes, set[int]] = {}
        self._lock = threading.Lock()

    def check(self, env: Envelope) -> None:
        """Accept ``env`` (recording its seq) or raise ``EnvelopeError("stale")``."""
        sender, seq = env.sender_key_id, env.seq
        with self._lock:
            top = self._highest.get(sender)
            recent = self._recent.setdefault(sender, set())
            if top is not None and (seq <= top - self.window or seq in recent or seq == top):
                raise EnvelopeError(
                    "stale", f"seq {seq} from {sender.hex()} was seen or is too old (top {top})"
                )
            if top is None or seq > top:
                self._highest[sender] = seq
                floor = seq - self.window
                # Keep only what can still be asked about: (seq - window, seq).
                self._recent[sender] = {s for s in recent if s > floor}
                if top is not None and top > floor:
                    self._recent[sender].add(top)
            else:
                recent.add(seq)

    def highest(self, sender_key_id: bytes) -> int | None:
        with self._lock:
            return self._highest.get(sender_key_id)

    def forget(self, sender_key_id: bytes) -> None:
        """Drop a sender's marks (it left the validator set)."""
        with self._lock:
            self._highest.pop(sender_key_id, None)
            self._recent.pop(sender_key_id, None)


class SeqCounter:
    """Thread-safe, strictly increasing sequence numbers for ``seal``."""

    def __init__(self, start: int) -> None:
        if not 0 <= start < SEQ_MAX:
            raise ValueError(f"start must be in [0, 2**63-1), got {start}")
        self._next = start
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            if self._next > SEQ_MAX:
                raise OverflowError("envelope sequence numbers exhausted")
            value = self._next
            self._next += 1
            return value


# --------------------------------------------------------------------------- batches


def seal_batch(envelopes: Sequence[bytes]) -> bytes:
    """One HTTP body: the canonical list of already-sealed envelopes."""
    return canonical.encode([bytes(e) for e in envelopes])


@dataclass(frozen=True)
class OpenedBatch:
    """Envelopes that passed, in order, and the reason for each one dropped."""

    accepted: list[Envelope] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def open_batch(
    data: bytes,
    chain_id: str,
    known_keys: Mapping[bytes, bytes],
    max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    guard: ReplayGuard | None = None,
    covers: Mapping[str, Cover] | None = None,
) -> OpenedBatch:
    """Open every envelope of a batch body; one bad envelope does not poison the rest.

    The body as a whole must be a canonical list of byte strings no larger than
    ``max_batch_bytes``, else ``EnvelopeError`` ("oversized"/"malformed"): with
    no list there is nothing to salvage. ``guard``, when given, is consulted
    after the signature check so only authentic envelopes move a sender's mark. ``covers``
    as for ``open_envelope``.
    """
    if not isinstance(data, bytes | bytearray):
        raise EnvelopeError("malformed", f"expected bytes, got {type(data).__name__}")
    if len(data) > max_batch_bytes:
        raise EnvelopeError("oversized", f"batch is {len(data)} bytes, limit {max_batch_bytes}")
    try:
        items: Any = canonical.decode(bytes(data), max_len=max_batch_bytes)
    except CertificatesError as exc:
        raise EnvelopeError("malformed", f"batch: {exc}") from exc
    if not isinstance(items, list):
        raise EnvelopeError("malformed", "batch is not a list")
    out = OpenedBatch()
    for item in items:
        try:
            if not isinstance(item, bytes):
                raise EnvelopeError("malformed", "batch item is not a byte string")
            env = open_envelope(item, chain_id, known_keys, max_bytes, covers)
            if guard is not None:
                guard.check(env)
        except EnvelopeError as exc:
            out.rejected.append(exc.reason)
            continue
        out.accepted.append(env)
    return out
