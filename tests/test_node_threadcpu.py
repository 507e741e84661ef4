"""Per-thread-role CPU for /metrics (``node.threadcpu``) and the bench driver's reading."""

from __future__ import annotations

import threading
import time

import pytest

from node.bench_driver import _THREAD_CPU, _per_record
from node.metrics import NodeMetrics
from node.threadcpu import cpu_seconds_by_role, role


def test_roles_drop_the_instance_number() -> None:
    assert role("waitress-13") == "waitress"
    assert role("peer-sender-node-2") == "peer-sender"
    assert role("chain-write_0") == "chain-write"
    assert role("consensus") == "consensus"
    assert role("Thread-7 (worker)") == "unnamed"


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds  # this thread's own CPU: no wall-clock guess
    while time.thread_time() < end:
        sum(range(1000))


def test_a_busy_thread_s_cpu_is_counted_under_its_role() -> None:
    before = cpu_seconds_by_role()
    if not before:
        pytest.skip("no /proc on this system")  # the metric is then empty, by design
    done = threading.Event()
    t = threading.Thread(target=lambda: (burn(0.3), done.wait(10)), name="burner-7")
    t.start()
    try:
        deadline = time.monotonic() + 10
        during: dict[str, float] = {}
        while time.monotonic() < deadline:
            during = cpu_seconds_by_role()
            if during.get("burner", 0.0) >= 0.25:  # the kernel counts in ticks
                break
            time.sleep(0.02)
        assert during.get("burner", 0.0) >= 0.25
        assert "burner" not in before and "MainThread" in during
        assert all(v >= 0 for v in during.values())
    finally:
        done.set()
        t.join(10)
    after = cpu_seconds_by_role()
    assert "burner" not in after and after["other"] >= 0.25  # an ended thread's time


def test_the_driver_reads_what_the_node_exposes() -> None:
    m = NodeMetrics()
    m.labelled_gauge("certledger_thread_cpu_seconds", "help", "role",
                     lambda: {"consensus": 1.5, "chain-write": 0.25, "other": 2.0})
    found = dict(_THREAD_CPU.findall(m.render()))
    assert found == {"consensus": "1.5", "chain-write": "0.25", "other": "2"}
    per = _per_record({"consensus": 1.0, "other": 1.0}, {"consensus": 1.5, "other": 3.0,
                                                          "chain-write": 0.2}, 100)
    assert per == {"other": 20.0, "consensus": 5.0, "chain-write": 2.0}
    assert list(per) == ["other", "consensus", "chain-write"]  # largest first
    assert _per_record(None, {"a": 1.0}, 10) is None
