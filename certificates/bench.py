"""Crypto micro-benchmarks: SM2 sign/verify per second and SM3 MB/s per backend.

Each figure is a rate over a loop that runs for at least ``min_seconds`` of
wall time on one thread, so it is a per-core figure. Inputs are fixed before
the clock starts; only the primitive runs inside the loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from certificates import sm2
from certificates.hashing import sm3, sm3_openssl


def _rate(fn: Callable[[], object], min_seconds: float, clock: Callable[[], float]) -> float:
    fn()  # warm caches (Z_A, imports) outside the measured window
    n = 0
    start = clock()
    end = start + min_seconds
    now = start
    while now < end:
        for _ in range(8):
            fn()
        n += 8
        now = clock()
    return n / (now - start)


def _pure_sm3(data: bytes) -> bytes:
    from gmssl import func
    from gmssl import sm3 as pure

    return bytes.fromhex(pure.sm3_hash(func.bytes_to_list(data)))


def bench_backend(
    name: str, min_seconds: float = 2.0, clock: Callable[[], float] = time.perf_counter
) -> dict[str, Any]:
    key = sm2.PrivateKey.generate()
    pub = key.public.data
    msg = b"certledger benchmark message " * 4
    sig = key.sign(msg, backend=name)
    # Each backend is paired with the SM3 of its own library (the OpenSSL backend signs
    # with GmSSL, so its sign figure is GmSSL's); the pure one hashes a small buffer,
    # since 1 MiB would take minutes there.
    if name == "openssl":
        buf = os.urandom(1 << 20)
        sm3_fn: Callable[[bytes], bytes] = sm3_openssl
    elif name == "gmssl_pyx":
        buf = os.urandom(1 << 20)
        sm3_fn = sm3
    else:
        buf = os.urandom(1 << 12)
        sm3_fn = _pure_sm3
    sign_rate = _rate(lambda: sm2.sign(key.data, pub, msg, backend=name), min_seconds, clock)
    verify_rate = _rate(lambda: sm2.verify(pub, msg, sig, backend=name), min_seconds, clock)
    hash_rate = _rate(lambda: sm3_fn(buf), min_seconds, clock) * len(buf) / 1e6
    return {
        "backend": name,
        "sm2_sign_per_s": round(sign_rate, 1),
        "sm2_verify_per_s": round(verify_rate, 1),
        "sm3_mb_per_s": round(hash_rate, 2),
    }


def bench_openssl_sm3(min_seconds: float = 2.0) -> float:
    buf = os.urandom(1 << 20)
    return round(_rate(lambda: sm3_openssl(buf), min_seconds, time.perf_counter), 2)


def run(min_seconds: float = 2.0, backends: list[str] | None = None) -> dict[str, Any]:
    names = backends or sm2.available_backends()
    return {
        "cpu_count": os.cpu_count(),
        "backends": [bench_backend(n, min_seconds) for n in names],
        "openssl_sm3_mb_per_s": bench_openssl_sm3(min_seconds),
    }


def sm2_verify_per_s(min_seconds: float = 2.0, backend: str | None = None) -> float:
    """The machine's SM2 verify rate (fast backend by default), for ceilings and reports."""
    name = backend or sm2.available_backends()[0]
    key = sm2.PrivateKey.generate()
    sig = key.sign(b"ceiling", backend=name)
    return _rate(
        lambda: sm2.verify(key.public.data, b"ceiling", sig, backend=name),
        min_seconds,
        time.perf_counter,
    )
