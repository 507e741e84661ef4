"""Department API keys (hashed at rest), the purpose rule, and a per-department rate limit.

API keys
--------
A key reads ``clk_<key id: 16 hex>_<secret: 43 base64url chars, 32 random bytes>``.
The store (a JSON file, written atomically with mode 0600) keeps per key its id,
department, role (``department`` or ``admin``), a 16-byte random salt and
``SM3("certledger/api-key/v1" || salt || secret)``; never the secret. A request
names its key id, so checking it is one lookup and one constant-time compare. A
single salted hash suffices because the secret is 256 random bits: stretching
(PBKDF2) protects guessable passwords, which these are not, and would cost every
request milliseconds.

Keys added or revoked by ``certledger verifier add-key`` (another process) while the
service runs are picked up without a restart: the file is stat()ed, and re-read if
it changed, when a request names a key id we do not know (so a new key works at
its first request) and otherwise at most every ``recheck`` seconds (0.1 s), so a
revocation takes effect within that. Not on every request: a stat() releases the
GIL, which under load wakes another of the service's threads for nothing.

Purpose
-------
Every verification states why (申请事由): ``check_purpose`` refuses an empty purpose
(400 ``missing_purpose``), one over 200 characters (400 ``purpose_too_long``) and
one holding a control character other than ordinary whitespace (400
``bad_purpose``); runs of whitespace are collapsed to one space.

The department name ``public`` is reserved (any case): the public QR page is audited
under it, so a key of that department could read those rows.

Rate limit
----------
``RateLimiter`` keeps one token bucket per department (``rate`` tokens a second,
up to ``burst``); the clock is injected so tests advance time by hand.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from certificates import jsonio
from certificates.hashing import sm3
from verifier.errors import AuthError, InputError, RateLimitedError, VerifierError

log = logging.getLogger(__name__)
KEYS_FORMAT: Final = "certledger/verifier-keys/v1"
_DOMAIN: Final = b"certledger/api-key/v1"
_KEY_RE: Final = re.compile(r"clk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DEPARTMENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ROLES: Final = ("department", "admin")
#: Departments no key may have: the public QR page is audited as department "public".
RESERVED_DEPARTMENTS: Final = frozenset({"public"})
MAX_PURPOSE: Final = 200


@dataclass(frozen=True)
class Principal:
    """Who is asking: a department's key, an admin key, or the public QR page."""

    key_id: str
    department: str
    role: str = "department"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


PUBLIC: Final = Principal("none", "public", "public")


@dataclass(frozen=True)
class _Entry:
    key_id: str
    department: str
    role: str
    salt: str
    hash: str
    label: str = ""
    created_ms: int = 0
    revoked: bool = False


def _digest(salt: bytes, secret: str) -> bytes:
    return sm3(_DOMAIN + salt + secret.encode("ascii"))


def check_department(department: str) -> str:
    if not isinstance(department, str) or not _DEPARTMENT_RE.fullmatch(department):
        raise InputError(f"department {department!r} must be 1-64 of A-Z a-z 0-9 _ . - "
                         "(starting with a letter or digit)")
    if department.lower() in RESERVED_DEPARTMENTS:
        raise InputError(f"department {department!r} is reserved: the public QR page is "
                         "audited under it")
    return department


#: Whitespace a purpose may hold (collapsed to one space); any other control character
#: (C0, DEL, C1 - including the separators str.split() also takes for whitespace) is refused.
_PURPOSE_SPACE: Final = frozenset(" \t\n\r\x0b\x0c")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_purpose(purpose: object) -> str:
    if not isinstance(purpose, str) or not purpose.strip():
        raise MissingPurposeError("state the purpose of this verification (申请事由) in "
                                  "'purpose'")
    for m in _CONTROL_RE.finditer(purpose):
        if m.group() not in _PURPOSE_SPACE:
            raise BadPurposeError(f"purpose contains the control character "
                                  f"U+{ord(m.group()):04X} at position {m.start()}")
    text = " ".join(purpose.split())
    if len(text) > MAX_PURPOSE:
        raise PurposeTooLongError(f"purpose is {len(text)} characters, limit is {MAX_PURPOSE}")
    return text


class MissingPurposeError(InputError):
    code = "missing_purpose"


class PurposeTooLongError(InputError):
    code = "purpose_too_long"


class BadPurposeError(InputError):
    code = "bad_purpose"


class KeyStoreError(VerifierError):
    """The API key store cannot be read: a fault of the server, not of the request."""

    code = "key_store_unavailable"
    status = 503


#: Seconds a look at the key file holds for keys we know (see the module header).
RECHECK: Final = 0.1


class KeyStore:
    """API keys by id; ``path`` None keeps them in memory (tests)."""

    def __init__(self, path: str | Path | None = None, *, recheck: float = RECHECK,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = None if path is None else Path(path)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self.recheck, self._clock = recheck, clock
        self._checked = float("-inf")  # when _maybe_reload last looked at the file
        self._maybe_reload()

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        self._checked = self._clock()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp:
            self._load()
            self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = jsonio.read(self.path)
            if data.get("format") != KEYS_FORMAT:
                raise ValueError(f"'format' must be {KEYS_FORMAT!r}")
            self._entries = {e["key_id"]: _Entry(**e) for e in data["keys"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"cannot read the API key store {self.path}: {exc}") from exc

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"format": KEYS_FORMAT, "keys": [asdict(e) for e in self._entries.values()]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def create(self, department: str, role: str = "department", label: str = "",
               now_ms: int | None = None) -> tuple[Principal, str]:
        """A new key; returns the principal and the key text, shown this once only."""
        check_department(department)
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}")
        key_id, secret = secrets.token_hex(8), base64.urlsafe_b64encode(
            secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        salt = secrets.token_bytes(16)
        entry = _Entry(key_id, department, role, salt.hex(), _digest(salt, secret).hex(), label,
                       int(time.time() * 1000) if now_ms is None else now_ms)
        with self._lock:
            self._maybe_reload()
            self._entries[key_id] = entry
            self._save()
        return Principal(key_id, department, role), f"clk_{key_id}_{secret}"

    def revoke(self, key_id: str) -> None:
        with self._lock:
            self._maybe_reload()
            entry = self._entries.get(key_id)
            if entry is None:
                raise InputError(f"no API key {key_id}")
            self._entries[key_id] = _Entry(**{**asdict(entry), "revoked": True})
            self._save()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._maybe_reload()
        return [{k: v for k, v in asdict(e).items() if k not in ("salt", "hash")}
                for e in self._entries.values()]

    def authenticate(self, token: str | None) -> Principal:
        """The principal of a presented key; AuthError (401) for none or a bad one."""
        if not token:
            raise AuthError("an API key is required: send 'Authorization: Bearer <key>'")
        m = _KEY_RE.fullmatch(token.strip())
        if m is None:
            raise AuthError("the API key is malformed")
        key_id = m.group(1)
        if key_id not in self._entries or self._clock() - self._checked >= self.recheck:
            with self._lock:
                try:
                    self._maybe_reload()
                except KeyStoreError as exc:
                    # The caller is told it is our fault, not where our files are.
                    log.error("%s", exc)
                    raise KeyStoreError("the API key store cannot be read; see the verifier "
                                        "log") from exc
        entry = self._entries.get(key_id)
        # Hash even for an unknown id, so the hash check's timing does not tell which ids
        # exist. (An unknown id also costs a look at the key file; ids are 64 random bits,
        # so that tells a prober nothing it could use.)
        salt = bytes.fromhex(entry.salt) if entry is not None else bytes(16)
        good = bytes.fromhex(entry.hash) if entry is not None else bytes(32)
        if not hmac.compare_digest(_digest(salt, m.group(2)), good) or entry is None:
            raise AuthError("the API key is not valid")
        if entry.revoked:
            raise AuthError("the API key has been revoked")
        return Principal(entry.key_id, entry.department, entry.role)


class RateLimiter:
    """A token bucket per department: ``rate`` per second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # department -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, department: str) -> None:
        """Spend one token of ``department``; RateLimitedError if it has none."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(department, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[department] = (tokens, now)
                raise RateLimitedError(department, (1 - tokens) / self.rate)
            self._buckets[department] = (tokens - 1, now)
