"""``scripts/demo.sh`` in a temporary copy of the repository, three times.

1. ``DEMO_EXIT_AFTER_SETUP=1``: a new network, the diplomas (a small ``DEMO_DIPLOMAS``
   to keep the test short), the licence, the revocation, wallets, QR PNGs, a key.
2. The same again: it resumes - nothing is created or issued twice.
3. Serving: the printed URLs answer (VALID / NOT VALID pages, the sample POST), and
   Ctrl-C (SIGINT to the process group, as a terminal sends it) stops every process.

The copy shares this checkout's ``.venv`` (a symlink), so no install happens here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from network.testing import free_port
from tests.cluster import ROOT

pytestmark = pytest.mark.integration

_SKIP = {".git", ".venv", "demo-data", ".mypy_cache", ".ruff_cache", ".pytest_cache",
         ".hypothesis", "__pycache__", "certledger.egg-info"}


def _copy_repo(dst: Path) -> Path:
    # scripts/_venv.sh reinstalls when pyproject.toml, setup.py or the C source it builds
    # changed since the last install; in the copy that would point this checkout's
    # editable install at a temporary directory.
    stamp = ROOT / ".venv" / ".certledger-installed"
    sources = ("pyproject.toml", "setup.py", "ledger/_smtcore.c", "ledger/_smtcore_records.h",
               "ledger/_idcheck.c", "ledger/_anchors.c")  # scripts/_venv.sh's list, in order
    want = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in sources)).hexdigest()
    if not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.fail(".venv was not installed from the current pyproject.toml: run "
                    "scripts/test.sh (the demo's copy of the repository shares the .venv)")
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in _SKIP])
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst


def _base_port() -> int:
    for _ in range(50):
        base = free_port()
        if base < 60000 and all(_free(p) for p in range(base, base + 4)):
            return base
    raise AssertionError("no 4 consecutive free ports")


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ours(repo: Path) -> list[str]:
    """Command lines of processes still running from this copy's demo-data."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(repo / "demo-data") in cmd and "demo.sh" not in cmd:
                out.append(cmd)
    return out


def _sigint_as_in_a_terminal() -> None:
    # A script started from a terminal gets Ctrl-C; one whose parent ignores SIGINT (a
    # test run that is itself a shell's background job) starts with it ignored, and bash
    # cannot trap a signal ignored on entry. The test is about the terminal case.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_runs_resumes_and_serves(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k != "CERTLEDGER_PASSPHRASE"}
    env.update(DEMO_DIPLOMAS="50", DEMO_KDF_ITERATIONS="1000", DEMO_BASE_PORT=str(_base_port()),
               DEMO_EXIT_AFTER_SETUP="1", PYTHONUNBUFFERED="1")

    def run(port: int) -> str:
        res = subprocess.run(["bash", str(repo / "scripts" / "demo.sh")], cwd=repo,
                             env={**env, "DEMO_VERIFIER_PORT": str(port)}, capture_output=True,
                             text=True, timeout=240, stdin=subprocess.DEVNULL, check=False)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert not _ours(repo), "processes left running after DEMO_EXIT_AFTER_SETUP"
        return res.stdout

    first = run(free_port())
    assert "creating a 4-validator network" in first
    assert "issuing 50 diplomas" in first and "revoking diploma" in first
    data = repo / "demo-data"
    for name in ("diploma-valid", "diploma-revoked", "licence"):
        assert (data / "qr" / f"{name}.png").stat().st_size > 500
        assert (data / "wallets" / f"{name}.json").exists()
    assert len(list((data / "wallets" / "diplomas").glob("*.json"))) == 50
    assert (data / "net" / "data").is_dir() and (data / "verifier" / "audit.sqlite3").exists()
    key = (data / "verifier" / "department.key").read_text().strip()
    assert key.startswith("clk_")

    second = run(free_port())
    assert "resuming the network" in second and "creating" not in second
    for done in ("50 diplomas already on the chain", "business licence already on the chain",
                 "already revoked"):
        assert done in second, second
    assert (data / "verifier" / "department.key").read_text().strip() == key

    # Serving until Ctrl-C.
    port = free_port()
    proc = subprocess.Popen(["bash", str(repo / "scripts" / "demo.sh")], cwd=repo,
                            env={**env, "DEMO_VERIFIER_PORT": str(port),
                                 "DEMO_EXIT_AFTER_SETUP": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any("serving until Ctrl-C" in line for line in lines):
            line = proc.stdout.readline().decode(errors="replace")
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        text = "".join(lines)
        urls = dict(re.findall(r"^\s+(valid diploma|revoked diploma|business licence)\s+(\S+)$",
                               text, re.M))
        assert set(urls) == {"valid diploma", "revoked diploma", "business licence"}, text
        page = requests.get(urls["valid diploma"], timeout=30).text
        assert "有效 VALID" in page
        assert "无效 NOT VALID" in requests.get(urls["revoked diploma"], timeout=30).text
        assert "有效 VALID" in requests.get(urls["business licence"], timeout=30).text
        r = requests.post(f"http://127.0.0.1:{port}/v1/verify", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"purpose": "入学资格审核", "qr": urls["valid diploma"]})
        assert r.status_code == 200 and r.json()["valid"] is True
        assert _ours(repo)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 10
    while _ours(repo) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours(repo), _ours(repo)
