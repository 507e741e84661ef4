"""A fault-injecting TCP proxy for tests: put it between two nodes and break the link.

``FaultProxy(target=(host, port))`` listens on ``listen`` (default loopback, a
free port: read ``.port``) and forwards each accepted connection to ``target``
with two pump threads, one per direction. Faults can be changed while traffic
flows:

* ``delay_ms`` — every chunk waits this long before it is forwarded, in each
  direction (so a request/response round trip gains about twice the delay);
* ``drop`` — probability, drawn from the injected ``random.Random``, that a
  chunk is lost. TCP cannot lose bytes mid-stream and stay usable, so a lost
  chunk also tears its connection down: to the sender that is exactly a lost
  message on a flaky link;
* ``cut(mode)`` — close every open connection, then until ``heal()`` either
  reset new ones at once (``"refuse"``: fast failures) or accept them and never
  answer (``"blackhole"``: the client waits for its timeout, like a partition).

Blocking sockets are woken for shutdown with ``shutdown(SHUT_RDWR)``; the accept
loop polls a short timeout. ``stop()`` closes everything and joins every thread
within its bound.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CutMode = Literal["refuse", "blackhole"]
_ACCEPT_POLL = 0.05
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ProxyStats:
    accepted: int
    active: int
    refused: int
    blackholed: int
    dropped: int
    bytes_forwarded: int


class _Link:
    """One proxied connection: the client side and the target side."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._pumps_left = 2

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for s in (self.client, self.upstream):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv
            s.close()

    def pump_done(self) -> None:
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.close()


class FaultProxy:
    def __init__(
        self,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        rng: random.Random | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.target = target
        self.listen = listen
        #: Runtime-settable faults (plain attribute reads are atomic in CPython).
        self.delay_ms: float = 0.0
        self.drop: float = 0.0
        self._rng = rng if rng is not None else random.Random(0)
        self._rng_lock = threading.Lock()
        self._connect_timeout = connect_timeout
        self._cut: CutMode | None = None
        self._lsock: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._held: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepted = self._refused = self._blackholed = 0
        self._dropped = self._bytes = 0

    # ------------------------------------------------------------------ control

    @property
    def port(self) -> int:
        if self._lsock is None:
            raise RuntimeError("proxy not started")
        port: int = self._lsock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, handy as a peer or node URL."""
        return f"http://{self.listen[0]}:{self.port}"

    def start(self) -> FaultProxy:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(self.listen)
        lsock.listen(128)
        lsock.settimeout(_ACCEPT_POLL)  # so the accept loop sees stop() promptly
        self._lsock = lsock
        self._spawn(self._accept_loop, "proxy-accept")
        return self

    @property
    def cut_mode(self) -> CutMode | None:
        """How the link is cut now, or None while it forwards."""
        return self._cut

    def cut(self, mode: CutMode = "refuse") -> None:
        """Partition: close open connections; refuse or blackhole new ones until heal()."""
        if mode not in ("refuse", "blackhole"):
            raise ValueError(f"cut mode must be 'refuse' or 'blackhole', not {mode!r}")
        with self._lock:
            self._cut = mode
            links = list(self._links)
        for link in links:
            link.close()

    def heal(self) -> None:
        """Forward new connections again; blackholed clients are released (closed)."""
        with self._lock:
            self._cut = None
            held, self._held = self._held, []
        for s in held:
            s.close()

    def stop(self, timeout: float = 2.0) -> bool:
        """Close every socket and join every thread; True when all ended in time."""
        self._stopping.set()
        if self._lsock is not None:
            self._lsock.close()
        with self._lock:
            links = list(self._links)
            held, self._held = self._held, []
        for link in links:
            link.close()
        for s in held:
            s.close()
        deadline = time.monotonic() + timeout
        while True:
            # Re-read the list: a connection thread may have spawned its pump meanwhile.
            with self._lock:
                alive = [
                    t for t in self._threads if t.is_alive() and t is not threading.current_thread()
                ]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                return not alive
            alive[0].join(left)

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                accepted=self._accepted,
                active=len(self._links),
                refused=self._refused,
                blackholed=self._blackholed,
                dropped=self._dropped,
                bytes_forwarded=self._bytes,
            )

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ threads

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            # Forget finished threads so a long test does not grow the list forever.
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._lsock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._lsock.accept()
            except TimeoutError:
                continue
            except OSError:  # listening socket closed by stop()
                return
            with self._lock:
                mode = self._cut
                if mode == "blackhole":
                    self._blackholed += 1
                    self._held.append(conn)  # never read, never answered
                elif mode == "refuse":
                    self._refused += 1
                else:
                    self._accepted += 1
            if mode == "refuse":
                # Linger 0 makes close() send RST: the client fails at once.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif mode is None:
                self._spawn(self._serve, "proxy-conn", conn)

    def _serve(self, client: socket.socket) -> None:
        link = _Link(client)
        try:
            link.upstream = socket.create_connection(self.target, timeout=self._connect_timeout)
            link.upstream.settimeout(None)
        except OSError:
            link.close()  # target down: the client sees its connection closed
            return
        with self._lock:
            if self._stopping.is_set() or self._cut is not None:
                link.close()  # a cut or stop raced with this connection
                return
            self._links.add(link)
        self._spawn(self._pump, "proxy-up", link, link.client, link.upstream)
        self._pump(link, link.upstream, link.client)

    def _lose(self) -> bool:
        p = self.drop
        if p <= 0:
            return False
        with self._rng_lock:
            return self._rng.random() < p

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not link.closed:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    link.close()
                    return
                if not data:
                    # Half-close: pass the EOF on, keep the other direction open.
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                delay = self.delay_ms
                if delay > 0 and self._stopping.wait(delay / 1000.0):
                    link.close()
                    return
                if self._lose():
                    with self._lock:
                        self._dropped += 1
                    link.close()
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    link.close()
                    return
                with self._lock:
                    self._bytes += len(data)
        finally:
            link.pump_done()
            if link.closed:
                with self._lock:
                    self._links.discard(link)
