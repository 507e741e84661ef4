"""The verifier's Prometheus metrics (text exposition format 0.0.4), no client library.

Counters and one latency histogram, updated where things happen (any thread,
one lock); ``render()`` writes them for ``GET /metrics``. Gauges (trusted and
freshest heights) are read through callbacks at scrape time.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import ClassVar

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class VerifierMetrics:
    COUNTERS: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "certledger_verifier_verifications_total":
            ("Verifications by channel and result.", ("channel", "result")),
        "certledger_verifier_failed_checks_total":
            ("Failed checks by check name.", ("check",)),
        "certledger_verifier_node_rejections_total":
            ("Node answers refused by the light client, by node and reason.",
             ("node", "reason")),
        "certledger_verifier_requests_total":
            ("HTTP requests by endpoint and status.", ("endpoint", "status")),
        "certledger_verifier_rate_limited_total":
            ("Requests refused by the per-department rate limit.", ("department",)),
    }
    HISTOGRAM = "certledger_verifier_verification_seconds"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[tuple[str, ...], float]] = {n: {} for n in self.COUNTERS}
        self._hist = [0] * len(_BUCKETS)
        self._hist_sum = 0.0
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def inc(self, name: str, *labels: str, amount: float = 1) -> None:
        with self._lock:
            values = self._counts[name]
            values[labels] = values.get(labels, 0) + amount

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._hist[bisect.bisect_left(_BUCKETS, seconds)] += 1
            self._hist_sum += seconds

    def value(self, name: str, *labels: str) -> float:
        with self._lock:
            return self._counts[name].get(labels, 0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (help_, label_names) in self.COUNTERS.items():
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
                for labels, v in sorted(self._counts[name].items()):
                    pairs = ",".join(f'{k}="{_esc(x)}"' for k, x in zip(label_names, labels,
                                                                          strict=True))
                    lines.append(f"{name}{{{pairs}}} {_num(v)}" if pairs else f"{name} {_num(v)}")
            h = self.HISTOGRAM
            lines += [f"# HELP {h} Time to verify one certificate, evidence fetch included.",
                      f"# TYPE {h} histogram"]
            total = 0
            for bound, n in zip(_BUCKETS, self._hist, strict=True):
                total += n
                lines.append(f'{h}_bucket{{le="{_num(bound)}"}} {total}')
            lines += [f"{h}_sum {_num(self._hist_sum)}", f"{h}_count {total}"]
        for name, (help_, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {_num(read())}"]
        return "\n".join(lines) + "\n"
