"""An operator's mistakes are one clear line and a non-zero exit, never a traceback.

Covers ``node run`` with an unusable ``[api] host`` or a damaged consensus WAL or
evidence log, ``network init`` with a bad host or a bad argument (nothing is left
behind, so a corrected re-run on the same --out works), ``audit`` given a node's
data_dir, and ``scripts/cluster.sh`` given a relative DIR.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.chain import Chain
from ledger.store import LevelDBStore
from node.cli import cli
from node.clock import ManualClock
from node.consensus.wal import frame
from node.errors import NetInitError
from node.netinit import NetworkPlan, init_network
from tests.crash_child import grow
from tests.ledger_fixtures import ISSUER_A, TYPE_DIPLOMA, make_genesis

REPO = Path(__file__).resolve().parents[1]
PASS = "operator-test-passphrase"


def certledger(*args: str, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("certledger")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "node.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**os.environ, **(env or {})}, check=False)


def one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), text
    assert "Traceback" not in text
    return lines[0]


# --------------------------------------------------------------------------- node run


@pytest.mark.parametrize("host", ["999.1.1.1", "localhost.invalid"])
def test_node_run_with_an_unusable_api_host_is_one_line(tmp_path: Path, host: str) -> None:
    init_network(NetworkPlan(1, kdf_iterations=1000), tmp_path / "net", ManualClock(), PASS)
    cfg = tmp_path / "net" / "node-1.toml"
    text = cfg.read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^host = ".*"$', f'host = "{host}"', text)
    assert n == 1
    cfg.write_text(text, encoding="utf-8")
    res = certledger("node", "run", "--config", str(cfg),
                     env={"CERTLEDGER_PASSPHRASE": PASS})
    assert res.returncode != 0
    line = one_error_line(res.stderr)
    assert host in line and "26601" in line and "node-1.toml" in line, line
    # Nothing was opened: the node's data directory is not even created.
    assert not (tmp_path / "net" / "data").exists()


# --------------------------------------------------------------------------- network init


def init_args(out: Path, *extra: str) -> list[str]:
    return ["network", "init", "--validators", "4", "--out", str(out),
            "--kdf-iterations", "1000", *extra]


@pytest.mark.parametrize("hosts", [
    "http://x,b,c,d", "a,b/c,c,d", "a:26601,b,c,d", "a,b,c,d e", "999.1.1.1",
    "1.2.3,b,c,d", "-a,b,c,d", "a..b,b,c,d", "fe80::1%eth0", "[::1]", "a_b,b,c,d",
])
def test_network_init_refuses_a_bad_host_before_writing(tmp_path: Path, hosts: str) -> None:
    out = tmp_path / "net"
    res = CliRunner().invoke(cli, init_args(out, "--hosts", hosts),
                             env={"CERTLEDGER_PASSPHRASE": PASS})
    assert res.exit_code != 0, res.output
    line = one_error_line(res.output)
    assert "--hosts" in line, line
    assert not out.exists()


def test_network_init_accepts_hostnames_and_ipv4(tmp_path: Path) -> None:
    plan = NetworkPlan(4, hosts=("10.0.0.1", "node-2.example.org", "Node3", "localhost"),
                       kdf_iterations=1000)
    summary = init_network(plan, tmp_path / "net", ManualClock(), PASS)
    assert [v["url"] for v in summary["validators"]] == [
        "http://10.0.0.1:26601", "http://node-2.example.org:26601", "http://Node3:26601",
        "http://localhost:26601"]


@pytest.mark.parametrize("bad", [
    ["--kdf-iterations", "0"],
    ["--chain-id", ""],
    ["--chain-id", "x" * 65],
    ["--issuers", f"11220000013544541K:Uni:{TYPE_DIPLOMA}"],
    ["--issuers", f"{ISSUER_A}:Uni:NOT-A-TYPE"],
])
@pytest.mark.parametrize("pre_existing", [False, True])
def test_a_failed_network_init_leaves_nothing_behind(tmp_path: Path, bad: list[str],
                                                     pre_existing: bool) -> None:
    out = tmp_path / "deep" / "net"
    if pre_existing:
        out.mkdir(parents=True)
    runner = CliRunner()
    res = runner.invoke(cli, init_args(out, *bad), env={"CERTLEDGER_PASSPHRASE": PASS})
    assert res.exit_code != 0, res.output
    one_error_line(res.output)
    if pre_existing:
        assert out.is_dir() and not list(out.iterdir())  # kept, and still empty
    else:
        assert not (tmp_path / "deep").exists()
    res = runner.invoke(cli, init_args(out, "--issuers", f"{ISSUER_A}:Uni:{TYPE_DIPLOMA}"),
                        env={"CERTLEDGER_PASSPHRASE": PASS})
    assert res.exit_code == 0, res.output
    assert (out / "network.json").is_file() and (out / "node-4.toml").is_file()


@pytest.mark.parametrize("pre_existing", [False, True])
def test_a_failure_while_writing_removes_only_what_this_run_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pre_existing: bool) -> None:
    (tmp_path / "sibling.txt").write_text("not ours")
    out = tmp_path / "a" / "net"
    if pre_existing:
        out.mkdir(parents=True)

    def boom(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("node.netinit.render_config", boom)
    with pytest.raises(OSError, match="No space left"):
        init_network(NetworkPlan(2, kdf_iterations=1000), out, ManualClock(), PASS)
    if pre_existing:
        assert out.is_dir() and not list(out.iterdir())
    else:
        assert not (tmp_path / "a").exists()
    expected = ["a", "sibling.txt"] if pre_existing else ["sibling.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


def test_a_non_empty_out_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "net"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(NetInitError, match="not empty"):
        init_network(NetworkPlan(1, kdf_iterations=1000), out, ManualClock(), PASS)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


# --------------------------------------------------------------------------- audit


@pytest.fixture
def node_data_dir(tmp_path: Path) -> Path:
    """A node's data_dir as ``node run`` lays it out: the store in its ``chain``."""
    data = tmp_path / "data" / "node-1"
    chain = Chain.create(LevelDBStore(data / "chain"), make_genesis())
    grow(chain, 2, per_block=3)
    chain.close()
    (data / "consensus.wal").write_bytes(b"")
    return data


def test_audit_accepts_a_nodes_data_dir_and_its_store(node_data_dir: Path) -> None:
    for target in (node_data_dir, node_data_dir / "chain"):
        res = CliRunner().invoke(cli, ["audit", str(target)])
        assert res.exit_code == 0, res.output
        assert "audit OK: height 2" in res.output


def test_audit_of_a_directory_without_a_store_is_one_line(tmp_path: Path) -> None:
    res = certledger("audit", str(tmp_path))
    assert res.returncode == 2
    line = one_error_line(res.stderr + res.stdout)
    assert str(tmp_path) in line and "no LevelDB store" in line, line
    assert "create one first" not in line


def test_audit_of_a_locked_store_says_what_to_stop(node_data_dir: Path) -> None:
    with LevelDBStore(node_data_dir / "chain", create=False):  # a running node holds it
        res = CliRunner().invoke(cli, ["audit", str(node_data_dir)])
    assert res.exit_code == 2
    assert "stop the node or audit that is using this data directory first" in res.output


def test_readme_audit_example_matches_the_layout_network_init_writes(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^certledger audit (\S+)", readme, re.M)
    assert m, "README has no audit example"
    init = re.search(r"certledger network init .*--out (\S+)", readme)
    assert init
    summary = init_network(NetworkPlan(1, kdf_iterations=1000), tmp_path / init.group(1),
                           ManualClock(), PASS)
    cfg = (tmp_path / init.group(1) / summary["validators"][0]["config"]).read_text()
    data_dir = re.search(r'(?m)^data_dir = "(.*)"$', cfg)
    assert data_dir
    assert Path(m.group(1)) == Path(init.group(1)) / data_dir.group(1)


# --------------------------------------------------------------------------- cluster.sh


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """scripts/cluster.sh in a throw-away checkout whose _venv.sh only does what matters
    here (``cd`` to the checkout), with a fake ``certledger`` that logs its arguments."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "cluster.sh", root / "scripts" / "cluster.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    (root / "scripts" / "_venv.sh").write_text(
        'ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"\ncd "$ROOT"\n'
        f'PATH="{bin_dir}:$PATH"\n')
    fake = bin_dir / "certledger"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >>"{calls}"\n'
        'if [ "$1 $2" = "network init" ]; then\n'
        '  while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
        '  echo "{}" >"$out/network.json"\n'
        "fi\n")
    fake.chmod(0o755)
    return root / "scripts" / "cluster.sh", calls


def test_cluster_script_resolves_a_relative_dir_against_the_callers_cwd(
        tmp_path: Path) -> None:
    script, calls = fake_checkout(tmp_path)
    caller = tmp_path / "caller"
    caller.mkdir()

    def run(cmd: str) -> str:
        res = subprocess.run([str(script), cmd, "net"], cwd=caller, capture_output=True,
                             text=True, timeout=30, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    run("status")
    assert (caller / "net").is_dir()
    assert "no pids in " + str(caller / "net") in run("stop")
    shutil.rmtree(caller / "net")
    run("start")
    assert re.search(rf"--out {re.escape(str(caller / 'net'))}(\s|$)", calls.read_text())
    assert (caller / "net" / "network.json").is_file()
    assert not (script.parents[1] / "net").exists()


@pytest.mark.parametrize("name", ["consensus.wal", "evidence.log"])
def test_node_run_with_a_damaged_log_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    # Two records, the first one garbled: damage, not a torn last write.
    init_network(NetworkPlan(1, kdf_iterations=1000), tmp_path / "net", ManualClock(), PASS)
    cfg = tmp_path / "net" / "node-1.toml"
    data_dir = tmp_path / "net" / "data" / "node-1"
    data_dir.mkdir(parents=True)
    first, second = bytearray(frame(b"\x01" * 40)), frame(b"\x02" * 40)
    first[12] ^= 0xFF
    (data_dir / name).write_bytes(bytes(first) + second)
    res = certledger("node", "run", "--config", str(cfg), env={"CERTLEDGER_PASSPHRASE": PASS})
    assert res.returncode != 0
    line = one_error_line(res.stderr)
    assert str(data_dir / name) in line and "not a torn write" in line, line
