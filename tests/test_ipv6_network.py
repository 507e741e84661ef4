"""A network on IPv6 addresses: network init writes bracketed URLs, and a node listens and
answers on an IPv6 address (its loopback, ::1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

from network.testing import free_port
from node.clock import ManualClock
from node.config import ApiConfig, NodeConfig, load_config
from node.netinit import NetworkPlan, init_network

PASS = "ipv6-test-passphrase"


def test_init_brackets_ipv6_hosts_in_addresses_and_urls(tmp_path: Path) -> None:
    plan = NetworkPlan(3, hosts=("2001:db8::7", "10.0.0.2", "2001:db8::9"), kdf_iterations=1000)
    summary = init_network(plan, tmp_path / "net", ManualClock(), PASS)
    assert [v["url"] for v in summary["validators"]] == [
        "http://[2001:db8::7]:26601", "http://10.0.0.2:26601", "http://[2001:db8::9]:26601"]
    assert summary["validators"][0]["address"] == "[2001:db8::7]:26601"
    cfg = load_config(tmp_path / "net" / "node-1.toml")
    assert cfg.api.host == "2001:db8::7"  # what the server binds: no brackets
    assert cfg.api_url == "http://[2001:db8::7]:26601"
    assert cfg.peers == {"node-2": "http://10.0.0.2:26601", "node-3": "http://[2001:db8::9]:26601"}
    raw = tomllib.loads((tmp_path / "net" / "node-3.toml").read_text())
    assert raw["api"]["host"] == "2001:db8::9"


@pytest.mark.parametrize("host, url", [
    ("::1", "http://[::1]:7"), ("::", "http://[::1]:7"), ("0.0.0.0", "http://127.0.0.1:7"),
    ("10.1.2.3", "http://10.1.2.3:7"), ("node1.example.org", "http://node1.example.org:7"),
])
def test_the_api_url_of_a_listening_address(host: str, url: str) -> None:
    cfg = NodeConfig("n", Path("d"), Path("k"), Path("g"), api=ApiConfig(host=host, port=7))
    assert cfg.api_url == url


def test_a_node_serves_on_ipv6_loopback(tmp_path: Path) -> None:
    port = free_port()
    plan = NetworkPlan(1, hosts=("::1",), base_port=port, kdf_iterations=1000,
                       issuers=())
    init_network(plan, tmp_path / "net", ManualClock(), PASS)
    exe = Path(sys.executable).with_name("certledger")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "node.cli"]
    config = tmp_path / "net" / "node-1.toml"
    log = tmp_path / "node.log"
    with log.open("wb") as sink:  # a file, not a pipe nobody drains
        proc = subprocess.Popen([*cmd, "node", "run", "--config", str(config)],
                                env={**os.environ, "CERTLEDGER_PASSPHRASE": PASS},
                                stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = requests.get(f"http://[::1]:{port}/v1/status", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert status is not None, log.read_text(errors="replace")
        assert status.status_code == 200 and status.json()["chain_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0
