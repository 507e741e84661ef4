"""``certledger bench validator``: the in-process validator bench runs and reports its steps.

Only the shape and internal consistency are checked: the figures depend on the machine
(docs/benchmarks.md has measured ones).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from node import bench_validator
from node.cli_bench import bench, interpreter


def test_run_reports_every_step_per_certificate() -> None:
    said: list[str] = []
    out = bench_validator.run(blocks=4, batches=2, per_batch=60, warmup=1, say=said.append)
    assert out["blocks"] == 4 and out["certs_per_block"] == 120 and out["warmup_blocks"] == 1
    steps = [out[f"{s}_us_per_cert"] for s in bench_validator.STEPS]
    assert all(v > 0 for v in steps), out
    assert out["validator_us_per_cert"] == pytest.approx(sum(steps), abs=0.05)
    assert out["process_cpu_us_per_cert"] > 0 and out["wall_us_per_cert"] > 0
    assert said and "8 batches of 60" in said[0]


def test_run_refuses_fewer_blocks_than_the_warmup() -> None:
    with pytest.raises(ValueError, match="must exceed warmup"):
        bench_validator.run(blocks=2, warmup=2)


def test_cli_prints_one_json_object_and_refuses_bad_options() -> None:
    runner = CliRunner()
    res = runner.invoke(bench, ["validator", "--blocks", "3", "--batches", "1",
                                "--per-batch", "40"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["certs_per_block"] == 40 and out["interpreter"] == interpreter()
    bad = runner.invoke(bench, ["validator", "--blocks", "2"])
    assert bad.exit_code == 2 and "--blocks" in bad.output
