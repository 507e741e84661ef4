"""``certledger bench cluster`` end to end, briefly: the JSON it prints, not its speed.

One short run (3 s of load) starts four real validators in a temp dir, drives them
from a separate process and stops them. The figures depend on the machine and on
whatever else runs on it, so this only checks the shape of the report, that every
figure is positive, and that the ceiling and ratio follow from the measured numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from node.cli_bench import interpreter

pytestmark = pytest.mark.integration

KEYS = {"validators", "single_tx_per_s", "batch_certs_per_s", "commit_latency_ms_p50",
        "commit_latency_ms_p99", "sm2_verify_per_s", "cpu_count", "ceiling_single_tx_per_s",
        "ratio_to_ceiling"}


def test_bench_cluster_report() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from node.cli import main; sys.exit(main())",
         "bench", "cluster", "--json", "--seconds", "3"],
        capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report) >= KEYS, sorted(KEYS - set(report))
    assert report["validators"] == 4 and report["cpu_count"] == os.cpu_count()
    for key in KEYS - {"validators", "cpu_count"}:
        assert isinstance(report[key], int | float) and report[key] > 0, (key, report)
    assert report["commit_latency_ms_p50"] <= report["commit_latency_ms_p99"]
    assert report["interpreter"] == interpreter()
    ceiling = report["cpu_count"] * report["sm2_verify_per_s"] / 4
    assert report["ceiling_single_tx_per_s"] == pytest.approx(ceiling, rel=1e-3)
    ratio = report["single_tx_per_s"] / report["ceiling_single_tx_per_s"]
    assert report["ratio_to_ceiling"] == pytest.approx(ratio, abs=2e-3)
    detail = report["detail"]
    assert detail["single"]["submitted"] > 0 and detail["batch"]["submitted"] > 0
    assert detail["latency"]["sent"] > 0 and not detail["single"]["errors"]
    assert "bench [" in proc.stderr  # progress goes to stderr, the JSON alone to stdout
    roles = detail["single"]["node_thread_cpu_ms_per_record"]
    assert roles is not None and "consensus" in roles and "waitress" in roles
    if detail["single"]["node_cpu_ms_per_record"]:  # the roles split that CPU, no more
        assert sum(roles.values()) == pytest.approx(
            detail["single"]["node_cpu_ms_per_record"], rel=0.25, abs=0.5)
    spent = detail["batch"]["node_cpu_ms_per_record"]
    if spent:  # a 3 s run may commit its batches before the CPU window opens
        assert report["batch_cpu_bound_certs_per_s"] == pytest.approx(
            report["cpu_count"] * 1000 / spent, rel=1e-3)


def test_batch_cpu_bound_rate_follows_the_cpu_per_record() -> None:
    from node.bench_cluster import _cpu_rate

    assert _cpu_rate({"node_cpu_ms_per_record": 0.25}, 2) == 8000.0
    assert _cpu_rate({"node_cpu_ms_per_record": 0.5}, 4) == 8000.0
    assert _cpu_rate({"node_cpu_ms_per_record": None}, 2) is None
    assert _cpu_rate({}, 2) is None
