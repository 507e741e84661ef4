"""The load driver of ``certledger bench cluster``, run in its own spawned process.

How it works: ``run_driver(spec)`` spawns a process (its own interpreter and GIL, so the
parent's bookkeeping never stalls it) that reads the pre-signed txs from the files the
parent wrote and runs the phases ``node.bench_cluster`` describes - *single* (closed loop
with at most ``max_inflight`` uncommitted txs), *latency* (open loop at half that peak)
and *batch* (closed loop of ``cert.issue_batch`` txs) - over kept-alive ``http.client``
connections round-robin across the validators. A ``_Watcher`` thread polls
``/v1/blocks/<next height>`` on one validator; a tx counts as committed when the block
holding it is first seen. A 429 ``busy`` answer is retried after the pause the node asks
for (at most ``MAX_PAUSE``) and counted. The result (or a traceback) comes back over a
pipe, and the parent waits for it with a bound.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing as mp
import re
import resource
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack

from certificates.hashing import sm3
from ledger.tx import IssueBatchBody, Transaction
from node.threadcpu import stat_cpu_seconds

MAX_PAUSE = 0.5  # longest pause a busy node can impose on one driver thread


@dataclass(frozen=True)
class DriverSpec:
    urls: list[str]
    pids: list[int]  # the validators', to read the CPU time they use
    singles_file: str
    batches_file: str
    single_s: float
    batch_s: float
    latency_s: float
    latency_reserve: int = 500  # single txs kept back from the first phase for the last
    max_inflight: int = 2000
    batch_inflight: int = 6
    workers: int = 16
    drain_s: float = 30.0


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc), or None."""
    try:
        return sum(stat_cpu_seconds(f"/proc/{pid}/stat") for pid in pids)
    except (OSError, IndexError, ValueError):
        return None


_THREAD_CPU = re.compile(r'^certledger_thread_cpu_seconds\{role="([^"]+)"\} (\S+)$', re.M)


def _thread_cpu(urls: list[str]) -> dict[str, float] | None:
    """CPU seconds so far by thread role, summed over the validators (their /metrics,
    ``node.threadcpu``), or None if one cannot say."""
    out: dict[str, float] = {}
    for url in urls:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                          timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()
        found = _THREAD_CPU.findall(body.decode("utf-8", "replace")) if status == 200 else []
        if not found:
            return None
        for name, value in found:
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _per_record(before: dict[str, float] | None, after: dict[str, float] | None,
                done: int) -> dict[str, float] | None:
    """Milliseconds of validator CPU per committed record, by thread role."""
    if before is None or after is None or not done:
        return None
    return {k: round(1000 * (after[k] - before.get(k, 0.0)) / done, 4)
            for k in sorted(after, key=lambda k: before.get(k, 0.0) - after[k])}


def _retry_after(resp: http.client.HTTPResponse) -> float:
    """Seconds a 429 asks us to wait (the node's ms hint, else Retry-After), capped."""
    if resp.status != 429:
        return 0.0
    for name, scale in (("X-Retry-After-Ms", 0.001), ("Retry-After", 1.0)):
        try:
            return min(MAX_PAUSE, float(resp.getheader(name) or "") * scale)
        except ValueError:
            continue
    return 0.02


class _Conn:
    """One keep-alive HTTP/1.1 connection (http.client: far less CPU per call than requests)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._c: http.client.HTTPConnection | None = None
        self.retry_after = 0.0  # the pause a 429 ``busy`` answer asked for

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/msgpack"} if body is not None else {}
        for attempt in (0, 1):  # a keep-alive connection the server closed: reconnect once
            if self._c is None:
                self._c = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self._c.request(method, path, body=body, headers=headers)
                resp = self._c.getresponse()
                self.retry_after = _retry_after(resp)
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self._c.close()
                self._c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class _Watcher(threading.Thread):
    """Follows the chain on one validator; notes when each of our txs is first seen."""

    def __init__(self, url: str, weights: dict[str, int]) -> None:
        super().__init__(name="block-watcher", daemon=True)
        self._conn = _Conn(url)
        self._weights = weights
        status, body = self._conn.request("GET", "/v1/status")
        self.height = int(json.loads(body)["height"]) if status == 200 else 0
        self.seen: dict[str, float] = {}
        self.blocks: list[tuple[float, int]] = []  # (seen at, records of ours in it)
        self.count = 0  # our txs seen committed
        self.stop = threading.Event()
        #: Seconds between polls: the resolution of commit times, and a request a node
        #: serves each time; coarse while measuring throughput, fine for latency.
        self.interval = 0.05

    def run(self) -> None:
        while not self.stop.is_set():
            status, body = self._conn.request("GET", f"/v1/blocks/{self.height + 1}")
            if status != 200:
                self.stop.wait(self.interval)
                continue
            now = time.perf_counter()
            ids = [i for i in json.loads(body)["tx_ids"] if i in self._weights]
            for i in ids:
                self.seen.setdefault(i, now)
            self.blocks.append((now, sum(self._weights[i] for i in ids)))
            self.count += len(ids)
            self.height += 1


def _rate(blocks: list[tuple[float, int]], start: float, warm: float, end: float) -> float:
    """Records per second over the blocks seen in [start + warm, end]: between the first
    and last such block, so the partial intervals at the edges do not count."""
    window = [b for b in blocks if start + warm <= b[0] <= end]
    while window and window[-1][1] == 0:  # the load ran out: idle blocks are not the rate
        window.pop()
    if len(window) >= 3:
        return sum(w for _, w in window[1:]) / (window[-1][0] - window[0][0])
    done = [b for b in blocks if b[0] >= start and b[1]]  # a very short phase: all of it
    return sum(w for _, w in done) / (done[-1][0] - start) if done else 0.0


class _Driver:
    def __init__(self, spec: DriverSpec) -> None:
        self.spec = spec
        singles = msgpack.unpackb(Path(spec.singles_file).read_bytes())
        batches = msgpack.unpackb(Path(spec.batches_file).read_bytes())
        self.singles = [(sm3(raw).hex(), raw) for raw in singles]
        self.batches = [(sm3(raw).hex(), raw) for raw in batches]
        weights = {tid: 1 for tid, _ in self.singles}
        for tid, raw in self.batches:
            body = Transaction.from_bytes(raw).body
            weights[tid] = len(body.records) if isinstance(body, IssueBatchBody) else 1
        self.watcher = _Watcher(spec.urls[0], weights)
        self.sent: dict[str, float] = {}

    def run(self) -> dict[str, Any]:
        s = self.spec
        self.watcher.start()
        try:
            cut = max(0, len(self.singles) - s.latency_reserve)
            single = self._saturate(self.singles[:cut], s.single_s, s.workers, s.max_inflight)
            # Latency before batches: a batch backlog still draining would leak into it.
            latency = self._paced(self.singles[cut:], single["rate"] / 2, s.latency_s)
            self.watcher.interval = 0.05
            batch = self._saturate(self.batches, s.batch_s, len(s.urls), s.batch_inflight)
        finally:
            self.watcher.stop.set()
            self.watcher.join(5)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        return {"single": single, "batch": batch, "latency": latency,
                "driver_cpu_s": round(cpu.ru_utime + cpu.ru_stime, 2)}

    def _drain(self, ids: list[str]) -> float:
        deadline = time.perf_counter() + self.spec.drain_s
        while time.perf_counter() < deadline and any(i not in self.watcher.seen for i in ids):
            time.sleep(0.05)
        return sum(i not in self.watcher.seen for i in ids)

    def _saturate(self, txs: list[tuple[str, bytes]], seconds: float, workers: int,
                  max_inflight: int) -> dict[str, Any]:
        """Closed loop: as fast as the cluster takes them, at most ``max_inflight`` pending."""
        lock = threading.Lock()
        state = {"next": 0, "slots": 0, "busy": 0, "peak_inflight": 0}
        errors: Counter[str] = Counter()
        sent: list[str] = []
        base = self.watcher.count
        start = time.perf_counter()
        deadline = start + seconds

        def work() -> None:
            conns = [_Conn(u) for u in self.spec.urls]
            while (i := take()) is not None:
                tid, raw = txs[i]
                ok = False
                while not ok and time.perf_counter() < deadline:
                    t = time.perf_counter()
                    conn = conns[i % len(conns)]
                    status, body = conn.request("POST", "/v1/transactions", raw)
                    if status in (429, 503):  # a busy node: back-pressure, not failure
                        with lock:
                            state["busy"] += 1
                        time.sleep(conn.retry_after or 0.02)
                        continue
                    ok = status == 202
                    if not ok:
                        with lock:
                            errors[f"{status} {body[:80]!r}"] += 1
                        break
                with lock:
                    if ok:
                        self.sent[tid] = t
                        sent.append(tid)
                        inflight = state["slots"] - (self.watcher.count - base)
                        state["peak_inflight"] = max(state["peak_inflight"], inflight)
                    else:
                        state["slots"] -= 1

        def take() -> int | None:
            """The next tx to send once a slot is free (at most max_inflight pending)."""
            while time.perf_counter() < deadline:
                with lock:
                    if state["next"] >= len(txs):
                        return None
                    if state["slots"] - (self.watcher.count - base) < max_inflight:
                        state["next"] += 1
                        state["slots"] += 1
                        return state["next"] - 1
                time.sleep(0.002)
            return None

        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        # The validators' CPU is read over the whole phase, drain included, against every
        # record it committed: a window inside the phase would count the work on the txs
        # in flight at one edge and not at the other, which with 15,000-record blocks moved
        # the figure by a sixth with one block more or less in the window.
        roles0, cpu0 = _thread_cpu(self.spec.urls), _cpu_seconds(self.spec.pids)
        for t in threads:
            t.start()
        warm = seconds * 0.2
        time.sleep(warm)
        for t in threads:
            t.join()
        end = max(deadline, time.perf_counter())
        missing = self._drain(sent)
        cpu1, roles1 = _cpu_seconds(self.spec.pids), _thread_cpu(self.spec.urls)
        blocks = [b for b in self.watcher.blocks if start <= b[0] <= end]
        done = sum(w for t, w in self.watcher.blocks if t >= start)
        return {"rate": _rate(self.watcher.blocks, start, warm, end),
                # What the validators burnt per committed record for this phase's load:
                # unlike the rate, it hardly moves when other work shares the machine.
                "node_cpu_ms_per_record": round(1000 * (cpu1 - cpu0) / done, 4)
                if cpu0 is not None and cpu1 is not None and done else None,
                # The same by thread role (largest first): where that CPU went.
                "node_thread_cpu_ms_per_record": _per_record(roles0, roles1, done),
                "blocks": len(blocks), "max_block": max((w for _, w in blocks), default=0),
                "seconds": round(end - start, 2), "submitted": len(sent),
                "exhausted": state["next"] >= len(txs), "uncommitted_after_drain": missing,
                "busy_retries": state["busy"], "peak_inflight": state["peak_inflight"],
                "errors": dict(errors)}

    def _paced(self, txs: list[tuple[str, bytes]], rate: float, seconds: float
               ) -> dict[str, Any]:
        """Open loop at ``rate`` tx/s: each tx has its send time, whatever came before."""
        rate = max(rate, 1.0)
        self.watcher.interval = 0.01
        n = min(len(txs), max(1, int(rate * seconds)))
        lock = threading.Lock()
        nxt, busy = [0], [0]
        errors: Counter[str] = Counter()
        t0 = time.perf_counter() + 0.05

        def work() -> None:
            conns = [_Conn(u) for u in self.spec.urls]
            while True:
                with lock:
                    i = nxt[0]
                    if i >= n:
                        return
                    nxt[0] += 1
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                tid, raw = txs[i]
                t = time.perf_counter()
                conn = conns[i % len(conns)]
                status, body = conn.request("POST", "/v1/transactions", raw)
                # A busy node is honoured (the latency still runs from the first try).
                while status in (429, 503) and time.perf_counter() - t < self.spec.drain_s:
                    with lock:
                        busy[0] += 1
                    time.sleep(conn.retry_after or 0.02)
                    status, body = conn.request("POST", "/v1/transactions", raw)
                with lock:
                    if status == 202:
                        self.sent[tid] = t
                    else:
                        errors[f"{status} {body[:80]!r}"] += 1

        threads = [threading.Thread(target=work, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [tid for tid, _ in txs[:n] if tid in self.sent]
        missing = self._drain(ids)
        bound = self.spec.drain_s
        lat = sorted((self.watcher.seen[i] - self.sent[i]) if i in self.watcher.seen else bound
                     for i in ids)

        def q(p: float) -> float:
            return 1000 * lat[min(len(lat) - 1, max(0, math.ceil(p * len(lat)) - 1))] if lat else 0

        return {"rate_target": round(rate, 1), "sent": len(ids),
                "send_seconds": round(time.perf_counter() - t0, 2), "missing": missing,
                "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0),
                "busy_retries": busy[0], "errors": dict(errors)}


def _drive_main(spec: DriverSpec, out: Connection) -> None:
    try:
        out.send(_Driver(spec).run())
    except BaseException:  # the parent reports it; a traceback here would go nowhere
        out.send({"error": traceback.format_exc()})
    finally:
        out.close()


def run_driver(spec: DriverSpec) -> dict[str, Any]:
    """Run the phases in a separate (spawned) process; returns its result, bounded in time."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_drive_main, args=(spec, send), name="bench-driver", daemon=True)
    proc.start()
    send.close()
    limit = spec.single_s + spec.batch_s + spec.latency_s + 3 * spec.drain_s + 120
    try:
        if not recv.poll(limit):
            raise RuntimeError(f"the load driver did not finish within {limit:.0f}s")
        result: dict[str, Any] = recv.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()  # our own child, by its handle
            proc.join(5)
    if "error" in result:
        raise RuntimeError(f"the load driver failed:\n{result['error']}")
    return result
