"""Crash safety: SIGKILL a process committing blocks, 20 times; the store stays at a boundary.

The child (``tests/crash_child.py``) commits blocks in a loop and prints each height after
its synced write returns: with durable commits, and with pipelined ones (each block's write
runs while the next block is applied). The test waits a seeded random number of blocks plus a random
sub-block delay, so kills land anywhere in the cycle (applying, hashing, inside the LevelDB
write), then kills the child by its pid. After each kill the store must open (the integrity
check passes), hold every block the child reported, hold the head block with all of its
state and nothing of the block after it, and pass a full audit.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.chain import Chain
from ledger.store import LevelDBStore
from tests.crash_child import serial
from tests.ledger_fixtures import cert_id

SEED = 20240611
KILLS = 20
PER_BLOCK = 10
REPO = Path(__file__).resolve().parents[1]


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the crash child stopped reporting progress"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            assert line, f"the crash child exited early with code {proc.poll()}"
            return line.strip()


def _run_and_kill(path: Path, rng: random.Random, mode: str) -> int:
    """Start the child, let it commit a few blocks, SIGKILL it; the last height it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", str(path), str(PER_BLOCK), mode],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        start = _read_line(proc, deadline)
        assert start.startswith("start "), start
        reported = int(start.split()[1])
        for _ in range(rng.randint(0, 4)):
            reported = int(_read_line(proc, deadline))
        time.sleep(rng.uniform(0, 0.04))  # about one block: lands anywhere in its cycle
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Heights printed before the kill landed were committed (synced) too.
        assert proc.stdout is not None
        for line in proc.stdout.read().split():
            reported = int(line)
        return reported
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("mode", ["durable", "pipelined"])
def test_sigkill_leaves_the_store_at_a_block_boundary(tmp_path: Path, mode: str) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "db"
    last = 0
    for round_ in range(KILLS):
        reported = _run_and_kill(path, rng, mode)
        store = LevelDBStore(path, create=False)
        try:
            chain = Chain.open(store)  # the integrity check at open must pass
            head = chain.head_height
            where = f"({mode}, seed {SEED}, kill {round_}, head {head}, reported {reported})"
            assert head >= reported >= last, where
            assert chain.block(head + 1) is None and chain.commit(head + 1) is None, where
            if head:
                # The head block is there with all of its state, the next one not at all.
                assert all(chain.certificate(cert_id(serial(head, i))) is not None
                           for i in range(PER_BLOCK)), where
                assert chain.certificate(cert_id(serial(head + 1, 0))) is None, where
        finally:
            store.close()
        report = audit(path)
        assert report.ok, f"{report.summary()} {where}"
        last = head
    assert last > KILLS  # the child made progress between kills
