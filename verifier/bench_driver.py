"""The load driver of ``certledger bench verifier``: one thread, one selector, keep-alive sockets.

How it works
------------
The driver runs in its own process (``drive_main``; the spec as JSON in argv[1], the result
as JSON on stdout). It opens ``clients`` keep-alive connections and keeps exactly one
``POST /v1/verify`` in flight on each - a closed loop, as wrk or h2load drive a server.
Every request's bytes are built before the clock starts (the bodies round-robin over the
connections, so the certificates stay distinct). One selector wakes the loop when any
connection has bytes; the loop reads them, and once a whole response is in (status line,
headers, ``Content-Length`` bytes of body) it takes the time, judges the answer and sends
that connection's next request at once.

Why not a thread per client: each response would then wait for the driver's own GIL
before it is timed, so the driver's queueing would be added to the latencies it
reports, and 16 Python threads with ``http.client`` cost the shared cores ~0.3 ms of CPU
per request, which the verifier and the nodes then lack.

An answer counts as verified only if it is HTTP 200 and its body starts with
``{"valid":true,``; anything else - another status, a failed check, a broken or closed
connection (which is then reopened), a response the parser cannot frame - is an error,
and the first one is kept for the report. Only requests sent and answered inside the
measured window (after ``warmup``) count; the rate divides by the window's length.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOOD_PREFIX = b'{"valid":true,'
_MAX_HEAD = 64 * 1024  # a response head larger than this is an error, not a wait


@dataclass(frozen=True)
class DriverSpec:
    url: str
    api_key: str
    bodies: str  # a file: one request body per line
    clients: int
    seconds: float
    warmup: float


class FramingError(ValueError):
    """A response the driver cannot frame (no Content-Length, a bad status line...)."""


def frame(buf: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """``(status, body, length consumed)`` of the first whole response in ``buf``, or None
    while it is incomplete. Raises ``FramingError`` for a response without a usable
    ``Content-Length`` (the verifier always sends one)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise FramingError(f"no end of headers in {len(buf)} bytes")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise FramingError(f"bad status line {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise FramingError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
    if length is None:
        raise FramingError("a response without Content-Length")
    total = end + 4 + length
    if len(buf) < total:
        return None
    return int(parts[1]), bytes(buf[end + 4 : total]), total


class _Client:
    __slots__ = ("buf", "next", "sent_at", "sock")

    def __init__(self, first: int) -> None:
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.sent_at = 0.0
        self.next = first


def drive(spec: DriverSpec) -> dict[str, Any]:
    """Drive the verifier for ``spec.warmup + spec.seconds``; the figures of the window."""
    bodies = Path(spec.bodies).read_bytes().splitlines()
    if not bodies:
        raise ValueError(f"no request bodies in {spec.bodies}")
    host, port_s = spec.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    port = int(port_s)
    head = (f"POST /v1/verify HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {spec.api_key}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()
    requests = [head + b"%d\r\n\r\n" % len(b) + b for b in bodies]
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    ok = errors = 0
    first_error: list[str] = []
    clients = [_Client(k) for k in range(spec.clients)]
    start = time.perf_counter() + 0.05
    measure_from, end = start + spec.warmup, start + spec.warmup + spec.seconds

    def send(c: _Client) -> None:
        c.sent_at = time.perf_counter()
        if c.sock is None:
            sock = socket.create_connection((host, port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(sock, selectors.EVENT_READ, c)
            c.sock = sock
        req = requests[c.next % len(requests)]
        c.next += spec.clients
        c.sock.sendall(req)  # ~1 KB into an idle socket's buffer: never waits

    def done(c: _Client, good: bool, what: bytes | str) -> None:
        nonlocal ok, errors
        now = time.perf_counter()
        if c.sent_at >= measure_from and now <= end:
            latencies.append(now - c.sent_at)
            ok += good
            errors += not good
        if not good and not first_error:
            text = what if isinstance(what, str) else what[:300].decode(errors="replace")
            first_error.append(text)

    def reopen(c: _Client) -> None:
        if c.sock is not None:
            sel.unregister(c.sock)
            c.sock.close()
            c.sock = None
        c.buf.clear()

    def start_next(c: _Client) -> None:
        try:
            send(c)
        except OSError as exc:
            done(c, False, repr(exc))
            reopen(c)  # retried by the loop below

    cpu0 = time.process_time()
    while time.perf_counter() < start:
        time.sleep(0.001)
    for c in clients:
        start_next(c)
    retry_at = 0.0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if now >= retry_at and len(sel.get_map()) < len(clients):
            retry_at = now + 0.01  # connections that failed to open: at most every 10 ms
            for c in clients:
                if c.sock is None:
                    start_next(c)
        for key, _ in sel.select(timeout=min(0.01, end - now)):
            c = key.data
            try:
                assert c.sock is not None
                data = c.sock.recv(65536)
                if not data:
                    raise ConnectionError("the verifier closed the connection")
                c.buf += data
                framed = frame(c.buf)
                if framed is None:
                    continue
                status, body, used = framed
                del c.buf[:used]
            except (OSError, FramingError) as exc:
                done(c, False, repr(exc))
                reopen(c)
            else:
                done(c, status == 200 and body.startswith(GOOD_PREFIX), body)
            start_next(c)
    cpu = time.process_time() - cpu0
    for c in clients:
        reopen(c)
    sel.close()
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {"verifications_per_s": round(ok / spec.seconds, 1),
            "latency_ms_p50": pct(0.50), "latency_ms_p99": pct(0.99),
            "verified": ok, "errors": errors,
            "first_error": first_error[0] if first_error else None, "cpu_s": cpu}


def drive_main() -> None:
    """Entry point of the driver process: the spec as JSON in argv[1], the result on stdout."""
    spec = DriverSpec(**json.loads(sys.argv[1]))
    print(json.dumps(drive(spec)), flush=True)
