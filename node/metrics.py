"""Prometheus metrics without a client library: counters, gauges, histograms, text format.

A ``Registry`` holds metric families; ``render()`` produces the text exposition
format (version 0.0.4) served at ``GET /metrics``. Counters and histograms are
updated where things happen (any thread; each family has a lock). Gauges read
live values through a callback at scrape time (height, mempool size, peers up),
so nothing has to remember to keep them current.

``NodeMetrics`` declares the node's metrics in one place, with their help text.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping

LabelValues = tuple[str, ...]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    """A monotonic count; ``extra`` adds counts kept elsewhere (read at scrape time)."""

    def __init__(self, name: str, help_: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames = name, help_, labels
        self._values: dict[LabelValues, float] = {}
        self._lock = threading.Lock()
        self.extra: Callable[[], Mapping[LabelValues, float]] | None = None

    def inc(self, amount: float = 1, *labels: str) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0)

    def samples(self) -> dict[LabelValues, float]:
        with self._lock:
            out = dict(self._values)
        if self.extra is not None:
            for lv, v in self.extra().items():
                out[lv] = out.get(lv, 0) + v
        return out

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        values = self.samples()
        if not values and not self.labelnames:
            values = {(): 0}
        for lv, v in sorted(values.items()):
            out.append(f"{self.name}{_labels(self.labelnames, lv)} {_num(v)}")
        return out


class Gauge:
    """A value read at scrape time; the callback returns {label values: value}."""

    def __init__(self, name: str, help_: str, read: Callable[[], Mapping[LabelValues, float]],
                 labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labelnames, self._read = name, help_, labels, read

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for lv, v in sorted(self._read().items()):
            out.append(f"{self.name}{_labels(self.labelnames, lv)} {_num(v)}")
        return out


class Histogram:
    def __init__(self, name: str, help_: str, buckets: Iterable[float]) -> None:
        self.name, self.help = name, help_
        self.bounds = sorted(buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        running = 0
        for bound, c in zip([*self.bounds, float("inf")], counts, strict=True):
            running += c
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        out += [f"{self.name}_sum {_num(total)}", f"{self.name}_count {n}"]
        return out


Metric = Counter | Gauge | Histogram


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def add(self, metric: Metric) -> None:
        self._metrics.append(metric)

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines += m.render()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)


class NodeMetrics:
    """Every metric the node exports; gauges are wired by the runtime (``gauge``)."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.committed_txs = Counter("certledger_committed_txs_total",
                                     "Transactions in blocks committed by this node")
        self.committed_blocks = Counter("certledger_committed_blocks_total",
                                        "Blocks committed by this node", ("source",))
        self.commit_latency = Histogram(
            "certledger_commit_latency_seconds",
            "Time from a transaction's admission to this node's mempool to its commit",
            LATENCY_BUCKETS)
        self.block_time = Histogram("certledger_block_interval_seconds",
                                    "Time between consecutive commits at this node",
                                    LATENCY_BUCKETS)
        self.dropped = Counter("certledger_dropped_messages_total",
                               "Peer messages and requests dropped, by reason", ("reason",))
        self.rejected_txs = Counter("certledger_rejected_txs_total",
                                    "Transactions refused or evicted by the mempool, by reason",
                                    ("reason",))
        self.received_txs = Counter("certledger_received_txs_total",
                                    "Transactions admitted to the mempool, by source",
                                    ("source",))
        self.evidence = Counter("certledger_evidence_total",
                                "Equivocations by validators observed by this node")
        self.sync_fetches = Counter("certledger_sync_requests_total",
                                    "Block-sync requests to peers, by outcome", ("outcome",))
        self.proposal_resends = Counter(
            "certledger_proposal_resends_total",
            "Proposals (with their block) sent again to a peer that showed no sign of it")
        for m in (self.committed_txs, self.committed_blocks, self.commit_latency,
                  self.block_time, self.dropped, self.rejected_txs, self.received_txs,
                  self.evidence, self.sync_fetches, self.proposal_resends):
            r.add(m)

    def gauge(self, name: str, help_: str, read: Callable[[], float]) -> None:
        self.registry.add(Gauge(name, help_, lambda: {(): read()}))

    def labelled_gauge(self, name: str, help_: str, label: str,
                       read: Callable[[], Mapping[str, float]]) -> None:
        self.registry.add(Gauge(name, help_, lambda: {(k,): v for k, v in read().items()},
                                (label,)))

    def render(self) -> str:
        return self.registry.render()
