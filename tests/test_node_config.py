"""Node config parsing (strict, errors name the key) and ``network init``."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from certificates import keystore
from ledger.genesis import Genesis
from node.cli import cli
from node.clock import ManualClock
from node.config import ConsensusConfig, NodeConfig, load_config, parse_config, render_config
from node.consensus.messages import Step
from node.errors import ConfigError, NetInitError
from node.netinit import IssuerSpec, NetworkPlan, init_network
from tests.ledger_fixtures import ISSUER_A, ISSUER_B, TYPE_DIPLOMA, TYPE_LICENSE

MINIMAL = """
[node]
name = "n1"
data_dir = "data"
key_file = "keys/v.key"
genesis = "genesis.json"

[api]
port = 9000
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.name == "n1" and cfg.api.port == 9000 and cfg.api.host == "127.0.0.1"
    assert cfg.data_dir == tmp_path.resolve() / "data"
    assert cfg.key_file == tmp_path.resolve() / "keys" / "v.key"
    assert cfg.passphrase_env == "CERTLEDGER_PASSPHRASE" and cfg.log_file is None
    assert cfg.consensus == ConsensusConfig() and dict(cfg.peers) == {}
    assert cfg.consensus.timeouts().duration(Step.PROPOSE, 2) == 3000 + 2 * 500


@pytest.mark.parametrize(("extra", "needle"), [
    ("[consensus]\npropose_timeout_msx = 5\n", "unknown key consensus.propose_timeout_msx"),
    ("[consensus]\npropose_timeout_ms = \"5\"\n", "consensus.propose_timeout_ms must be"),
    ("[consensus]\nprevote_timeout_ms = 0\n", "consensus.prevote_timeout_ms must be"),
    ("[mempool]\nmax_txs = -1\n", "mempool.max_txs must be"),
    ("[mempool]\ngossip_linger_ms = 5000\n", "mempool.gossip_linger_ms must be an integer in [0"),
    ("[mempool]\ngossip_spread_ms = 20000\n", "mempool.gossip_spread_ms must be an integer in [0"),
    ("[block]\nmax_bytes = 1.5\n", "block.max_bytes must be"),
    ("[block]\nsmt_worker = \"yes\"\n", "block.smt_worker must be true or false"),
    ("[peers]\nn2 = \"ftp://x\"\n", "peers.n2 must be an http(s) base URL"),
    ("[peers]\nn2 = \"http://10.0.0.2:99999\"\n", "Port out of range"),
    ("[peers]\nn2 = \"http://[::1\"\n", "peers.n2 must be an http(s) base URL"),
    ("[peers]\nn1 = \"http://127.0.0.1:1\"\n", "peers.n1 names this node itself"),
    ("[extra]\nx = 1\n", "unknown section [extra]"),
    ("[consensus]\nempty_block_interval_ms = 0\n", "consensus.empty_block_interval_ms must be"),
])
def test_bad_values_name_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL + extra))
    assert needle in str(info.value) and "node.toml" in str(info.value)


def test_smt_worker_is_off_by_default_and_reaches_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ledger.chain
    from node.runtime import open_chain
    from tests.ledger_fixtures import make_genesis

    assert load_config(write(tmp_path, MINIMAL)).block.smt_worker is False
    cfg = load_config(write(tmp_path, MINIMAL + "[block]\nsmt_worker = true\n"))
    assert cfg.block.smt_worker is True
    assert "smt_worker = true" in render_config(cfg, tmp_path)
    # With the C SMT update built, a configured worker is not started (it would only slow
    # the update); without it, the worker runs.
    for native, started in ((True, False), (False, True)):
        monkeypatch.setattr(ledger.chain, "NATIVE", native)
        chain = open_chain(cfg, make_genesis(), {})
        try:
            assert (chain._smt_worker is not None) is started
        finally:
            chain.close()


def test_gossip_linger_defaults_to_50_ms_and_can_be_set(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).mempool.gossip_linger_ms == 50
    cfg = load_config(write(tmp_path, MINIMAL + "[mempool]\ngossip_linger_ms = 0\n"))
    assert cfg.mempool.gossip_linger_ms == 0
    assert "gossip_linger_ms = 0" in render_config(cfg, tmp_path)


def test_gossip_spread_defaults_to_500_ms_and_0_turns_the_tiers_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).mempool.gossip_spread_ms == 500
    cfg = load_config(write(tmp_path, MINIMAL + "[mempool]\ngossip_spread_ms = 0\n"))
    assert cfg.mempool.gossip_spread_ms == 0
    assert "gossip_spread_ms = 0" in render_config(cfg, tmp_path)


def test_missing_and_unknown_node_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing required key node.genesis"):
        load_config(write(tmp_path, MINIMAL.replace('genesis = "genesis.json"\n', "")))
    with pytest.raises(ConfigError, match=r"unknown key node.colour"):
        load_config(write(tmp_path, MINIMAL.replace("[node]\n", "[node]\ncolour = 1\n")))
    with pytest.raises(ConfigError, match=r"node.log_level must be one of"):
        load_config(write(tmp_path, MINIMAL.replace("[node]\n",
                                                    "[node]\nlog_level = 'loud'\n")))
    with pytest.raises(ConfigError, match="missing section \\[api\\]"):
        load_config(write(tmp_path, MINIMAL.split("[api]")[0]))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_render_round_trips(tmp_path: Path) -> None:
    cfg = NodeConfig(name="node-7", data_dir=tmp_path / "d", key_file=tmp_path / "k.key",
                     genesis=tmp_path / "g.json", log_file=tmp_path / "logs" / "x.log",
                     peers={"node-8": "http://10.0.0.8:26601", "odd name": "http://h:1"})
    text = render_config(cfg, tmp_path)
    back = parse_config(tomllib.loads(text), tmp_path)
    assert back == cfg


# --------------------------------------------------------------------------- network init


def test_init_network_writes_a_consistent_network(tmp_path: Path) -> None:
    plan = NetworkPlan(4, (IssuerSpec(ISSUER_A, "某某大学", (TYPE_DIPLOMA, TYPE_LICENSE)),
                           IssuerSpec(ISSUER_B, "市场监管局", (TYPE_LICENSE,))),
                       base_port=27100, kdf_iterations=1000)
    out = tmp_path / "net"
    summary = init_network(plan, out, ManualClock(), None)
    genesis = Genesis.from_file(out / "genesis.json")
    assert genesis.hash.hex() == summary["genesis_hash"]
    assert len(genesis.validators) == 4 and genesis.threshold == 2 and len(genesis.admins) == 3
    assert [i.code for i in genesis.issuers] == [ISSUER_A, ISSUER_B]
    env = (out / "env").read_text()
    assert stat.S_IMODE((out / "env").stat().st_mode) == 0o600
    passphrase = env.strip().splitlines()[-1].split("=", 1)[1]
    keys = sorted(p.name for p in (out / "keys").iterdir())
    assert len(keys) == 4 + 3 + 2
    for name in keys:
        assert stat.S_IMODE((out / "keys" / name).stat().st_mode) == 0o600
    for i, v in enumerate(summary["validators"]):
        cfg = load_config(out / v["config"])
        assert cfg.api.port == 27100 + i and cfg.api.host == "127.0.0.1"
        assert set(cfg.peers) == {f"node-{j + 1}" for j in range(4)} - {cfg.name}
        key = keystore.load_key_file(cfg.key_file, passphrase)
        assert key.public.key_id in genesis.validators.by_key_id
        assert genesis.validators.by_key_id[key.public.key_id].address == f"127.0.0.1:{27100 + i}"
    with pytest.raises(NetInitError, match="not empty"):
        init_network(plan, out, ManualClock(), None)


def test_init_network_hosts_and_checks(tmp_path: Path) -> None:
    plan = NetworkPlan(3, hosts=("10.0.0.1", "10.0.0.2", "10.0.0.1"), base_port=26601,
                       kdf_iterations=1000)
    summary = init_network(plan, tmp_path / "n", ManualClock(), "given-passphrase")
    assert [v["address"] for v in summary["validators"]] == [
        "10.0.0.1:26601", "10.0.0.2:26601", "10.0.0.1:26602"]
    assert not (tmp_path / "n" / "env").exists() and summary["env_file"] is None
    with pytest.raises(NetInitError, match="hosts"):
        init_network(NetworkPlan(3, hosts=("a", "b")), tmp_path / "m", ManualClock(), "p")
    with pytest.raises(NetInitError, match="code:name:type1,type2"):
        IssuerSpec.parse("no-colons")
    with pytest.raises(NetInitError, match="grants no certificate types"):
        IssuerSpec.parse(f"{ISSUER_A}:Name: ,")


def test_cli_network_init_and_bad_issuer(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CERTLEDGER_PASSPHRASE": ""}
    res = runner.invoke(cli, ["network", "init", "--validators", "1", "--out",
                              str(tmp_path / "ok"), "--kdf-iterations", "1000", "--issuers",
                              f"{ISSUER_A}:Uni:{TYPE_DIPLOMA}"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ok" / "network.json").read_text())["issuers"][0]["code"] \
        == ISSUER_A
    res = runner.invoke(cli, ["network", "init", "--validators", "1", "--out",
                              str(tmp_path / "bad"), "--kdf-iterations", "1000", "--issuers",
                              f"11220000013544541K:Uni:{TYPE_DIPLOMA}"], env=env)
    assert res.exit_code != 0 and "GB 32100" in res.output and "Traceback" not in res.output


def test_node_run_with_bad_config_is_one_line(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + "[consensus]\nbogus = 1\n")
    res = CliRunner().invoke(cli, ["node", "run", "--config", str(p)],
                             env={**os.environ, "CERTLEDGER_PASSPHRASE": "x"})
    assert res.exit_code != 0 and "unknown key consensus.bogus" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("text", "needle"), [
    ("a = " + "[" * 100_000, "nested too deeply"),
    ("x = " + "1" * 5_000, "more than 4,300 digits"),
])
def test_a_hostile_config_file_is_a_config_error(tmp_path: Path, text: str, needle: str) -> None:
    # tomllib raises RecursionError and Python's digit-limit ValueError besides its own.
    path = tmp_path / "node.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(path)
    res = CliRunner().invoke(cli, ["node", "run", "--config", str(path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.strip()][-1].startswith("Error:")
