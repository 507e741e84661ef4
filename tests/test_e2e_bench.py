"""``certledger bench verifier`` runs end to end (briefly) and prints its JSON.

Only the shape is checked: the figures depend on the machine (see
docs/benchmarks.md for measured ones).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from node.cli_bench import interpreter
from tests.cluster import ROOT

pytestmark = pytest.mark.integration


def test_bench_verifier_smoke() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "node.cli", "bench", "verifier", "--json", "--seconds", "2",
         "--clients", "4", "--certificates", "100", "--verifier-threads", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
        check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("verifications_per_s", "latency_ms_p50", "latency_ms_p99", "clients",
                "cpu_count"):
        assert isinstance(out[key], int | float), (key, out)
    assert out["clients"] == 4 and out["verifications_per_s"] > 0 and out["errors"] == 0, out
    assert out["latency_ms_p50"] <= out["latency_ms_p99"]
    assert out["interpreter"] == interpreter()
