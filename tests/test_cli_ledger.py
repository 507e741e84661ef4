"""``certledger audit`` and ``certledger bench ledger`` wiring."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import bench, schema
from ledger.block import Block
from ledger.chain import Chain
from ledger.store import LevelDBStore, WriteBatch
from ledger.tx import Transaction
from node.cli import cli
from node.cli_bench import interpreter


def test_audit_passes_on_a_sound_chain_and_names_a_bad_height(tmp_path: Path) -> None:
    bench.run(5000, 5000, proofs=10, data_dir=str(tmp_path), keep=True)
    chain_dir = tmp_path / "chain"
    ok = CliRunner().invoke(cli, ["audit", str(chain_dir)])
    assert ok.exit_code == 0, ok.output
    # Drop block 1's commit certificate: audit must fail and name height 1.
    store = LevelDBStore(chain_dir)
    batch = WriteBatch()
    batch.delete(schema.commit(1))
    store.write(batch)
    store.close()
    bad = CliRunner().invoke(cli, ["audit", str(chain_dir)])
    assert bad.exit_code != 0
    assert "height 1" in bad.output


def test_audit_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["audit", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "is not a directory" in res.output


def test_bench_ledger_json_shape() -> None:
    args = ["bench", "ledger", "--json", "--certs", "5000", "--proofs", "50"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for key in ("certs", "apply_certs_per_s", "proof_per_s", "proof_verify_per_s",
                "proof_bytes_avg", "disk_bytes_per_cert", "reopen_s"):
        assert data[key] > 0, key
    assert data["interpreter"] == interpreter()


def test_bench_ledger_builds_the_whole_load_before_the_first_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Built between blocks, the issuer's transactions gave LevelDB's compaction untimed
    # room: every transaction must exist before the first block is proposed.
    events: list[str] = []
    build, propose = bench.BenchNetwork.batch, bench.BenchNetwork.propose

    def logged_build(self: bench.BenchNetwork, first: int, count: int) -> Transaction:
        events.append("build")
        return build(self, first, count)

    def logged_propose(self: bench.BenchNetwork, chain: Chain,
                       txs: Sequence[Transaction]) -> Block:
        events.append("propose")
        return propose(self, chain, txs)

    monkeypatch.setattr(bench.BenchNetwork, "batch", logged_build)
    monkeypatch.setattr(bench.BenchNetwork, "propose", logged_propose)
    seen: list[tuple[int, int]] = []
    result = bench.run(3000, 1000, proofs=10, progress=lambda done, n: seen.append((done, n)))
    assert events == ["build"] * 3 + ["propose"] * 3
    assert seen == [(1000, 3000), (2000, 3000), (3000, 3000)]
    assert result["apply_certs_per_s"] > 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_bench_ledger_times_the_loop_up_to_the_last_block_stored(
        monkeypatch: pytest.MonkeyPatch, pipelined: bool) -> None:
    # Pipelined, the last commit returns with its write under way: the loop's clock must
    # stop only once that write is done, as every other block's was before the next.
    events: list[str] = []
    propose, wait_durable, clock = bench.BenchNetwork.propose, Chain.wait_durable, time.perf_counter

    def logged_propose(self: bench.BenchNetwork, chain: Chain,
                       txs: Sequence[Transaction]) -> Block:
        events.append("propose")
        return propose(self, chain, txs)

    def logged_wait(self: Chain) -> None:
        events.append("stored")
        wait_durable(self)

    def logged_clock() -> float:
        events.append("clock")
        return clock()

    monkeypatch.setattr(bench.BenchNetwork, "propose", logged_propose)
    monkeypatch.setattr(Chain, "wait_durable", logged_wait)
    monkeypatch.setattr(bench.time, "perf_counter", logged_clock)
    result = bench.run(2000, 1000, proofs=10, pipelined=pipelined)
    assert result["commit"] == ("pipelined" if pipelined else "durable")
    last = len(events) - events[::-1].index("propose")
    # After the last proposal: the block's own end time, the wait, the loop's end time.
    assert events[last:last + 3] == ["clock", "stored", "clock"]
