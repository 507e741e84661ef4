"""scripts/demo_docs.py ``wait``: the demo's wait for its processes' HTTP endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from network.testing import free_port
from tests.cluster import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import demo_docs


def test_wait_gives_up_as_soon_as_a_watched_process_has_exited(
        capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Exited but not reaped, like a demo node its shell has not waited for: a zombie.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        url = f"http://127.0.0.1:{free_port()}/v1/status"
        started = time.monotonic()
        assert demo_docs.main(["wait", f"--pids={proc.pid}", "30", url]) == 1
        assert time.monotonic() - started < 10  # not the 30 s deadline
        assert f"process {proc.pid} has exited" in capsys.readouterr().err
    finally:
        proc.wait()


def test_wait_without_an_answer_ends_at_its_deadline(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        url = f"http://127.0.0.1:{free_port()}/v1/status"
        started = time.monotonic()
        assert demo_docs.main(["wait", f"--pids={proc.pid}", "1", url]) == 1
        assert 1 <= time.monotonic() - started < 10
        assert capsys.readouterr().err.strip() == f"{url} did not answer"
    finally:
        proc.kill()
        proc.wait()
