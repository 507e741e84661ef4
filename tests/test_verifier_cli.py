"""The verifier over real HTTP: node API -> HttpSource -> light client, and the CLI commands.

A node API (``node.api``) serves the test chain on a loopback port; the verifier
reads it exactly as it would read a running validator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from certificates.disclosure import present
from ledger.records import cert_key, issuer_key
from network.testing import WsgiServer
from node.cli import cli
from tests.ledger_fixtures import make_genesis
from tests.test_verifier_qr import scan
from tests.verifier_fixtures import World, build_world
from verifier.errors import UnsupportedError
from verifier.lightclient import LightClient, check_state
from verifier.sources import HttpSource
from verifier.trust import TrustedState, load_trust


def node_app(world: World) -> Any:
    from node.api import ApiDeps, create_app
    from node.metrics import NodeMetrics

    deps = ApiDeps(chain=world.chain, submit=lambda raw: None,  # type: ignore[arg-type,return-value]
                   pending=lambda tid: False, status=lambda: {}, metrics=NodeMetrics(),
                   inbox=None,  # type: ignore[arg-type]
                   max_tx_body=1 << 20, max_consensus_body=1 << 20, max_sync_bytes=1 << 20)
    return create_app(deps)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture(scope="module")
def node(world: World) -> Iterator[str]:
    with WsgiServer(node_app(world)) as server:
        yield server.url


@pytest.fixture
def files(world: World, tmp_path: Path) -> Path:
    make_genesis().write(tmp_path / "genesis.json")
    for label, c in world.wallets.items():
        (tmp_path / f"{label}.wallet.json").write_text(json.dumps(c.to_wallet_dict()))
        (tmp_path / f"{label}.presentation.json").write_text(
            json.dumps(present(c, ["name", "degree"]).to_json_dict()))
    return tmp_path


def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert res.exit_code == code, res.output + res.stderr
    out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
    return out


# --------------------------------------------------------------------------- HttpSource


def test_http_source_reads_the_node_api(world: World, node: str) -> None:
    trusted = TrustedState.from_genesis(make_genesis())
    src = HttpSource(node)
    found = src.state(cert_key(world.wallets["valid"].document.id))
    assert check_state(found, trusted).record is not None
    absent = src.state(cert_key(world.wallets["unissued"].document.id))
    assert absent.record is None and check_state(absent, trusted).record is None
    latest = src.latest()
    assert latest is not None
    lc = LightClient(trusted, [HttpSource("http://127.0.0.1:9"), src])
    ev = lc.evidence(world.wallets["valid"].document.id, world.wallets["valid"].document.issuer)
    assert ev.issuer is not None and ev.certificate.source == node
    assert lc.freshest_height == world.chain.head_height


def test_a_node_without_the_issuer_route_is_unsupported(world: World) -> None:
    """An older node API (no /v1/issuers): the verifier falls back to its trust bundle."""
    from flask import Flask

    trusted = TrustedState.from_genesis(make_genesis())
    with WsgiServer(node_app(world)) as real, WsgiServer(Flask("old-node")) as old:
        with pytest.raises(UnsupportedError):
            HttpSource(old.url).state(issuer_key(world.wallets["valid"].document.issuer))
        src = HttpSource(real.url)

        class NoIssuerRoute:  # the real node for certificates, a plain 404 for issuers
            name = real.url

            def state(self, key: bytes) -> Any:
                if key.startswith(b"issuer:"):
                    return HttpSource(old.url).state(key)
                return src.state(key)

            def latest(self) -> Any:
                return src.latest()

        doc = world.wallets["valid"].document
        ev = LightClient(trusted, [NoIssuerRoute()]).evidence(doc.id, doc.issuer)
        assert ev.issuer is None and ev.certificate.record is not None


def test_http_source_with_the_issuer_route(world: World, node: str, tmp_path: Path) -> None:
    from tests.ledger_fixtures import ISSUER_A, UNREGISTERED

    trusted = TrustedState.from_genesis(make_genesis())
    src = HttpSource(node)
    assert check_state(src.state(issuer_key(ISSUER_A)), trusted).record is not None
    assert check_state(src.state(issuer_key(UNREGISTERED)), trusted).record is None
    lc = LightClient(trusted, [src])
    doc = world.wallets["valid"].document
    ev = lc.evidence(doc.id, doc.issuer)
    assert ev.issuer is not None and ev.issuer.record is not None
    from tests.verifier_fixtures import NOW
    from verifier.logic import verify

    v = verify(present(world.wallets["valid"], ["name"]), ev, lc.trusted, NOW)
    assert v.valid
    assert "[block " in v.checks[5].detail  # issuer_authorized, from the proven record
    # A trust bundle with issuer records proven under its header.
    make_genesis().write(tmp_path / "genesis.json")
    out = run("trust", "export", "--node", node, "--genesis",
              str(tmp_path / "genesis.json"), "--out", str(tmp_path / "b.json"))
    assert ISSUER_A in out["proved_issuers"]
    bundle = json.loads((tmp_path / "b.json").read_text())
    assert all(i["proof"] for i in bundle["issuers"])
    assert load_trust(tmp_path / "b.json").issuers[ISSUER_A].active


# --------------------------------------------------------------------------- CLI


def test_verify_against_nodes_then_offline(world: World, node: str, files: Path) -> None:
    genesis = str(files / "genesis.json")
    v = run("verify", str(files / "valid.presentation.json"), "--node", node, "--trust", genesis,
            "--save-evidence", str(files / "ev.json"))
    assert v["valid"] is True
    v = run("verify", str(files / "revoked.wallet.json"), "--node", node, "--trust", genesis,
            code=1)
    assert [c["name"] for c in v["checks"] if not c["ok"]] == ["status"]
    # Offline: the saved evidence, checked against a trust bundle exported from the node.
    b = run("trust", "export", "--node", "http://127.0.0.1:9", "--node", node, "--genesis",
            genesis, "--out", str(files / "bundle.json"))
    assert b["height"] == world.chain.head_height
    assert load_trust(files / "bundle.json").height == world.chain.head_height
    v = run("verify", str(files / "valid.presentation.json"), "--offline", "--trust",
            str(files / "bundle.json"), "--evidence", str(files / "ev.json"))
    assert v["valid"] is True
    v = run("verify", str(files / "valid.presentation.json"), "--offline", "--trust",
            str(files / "bundle.json"), code=1)
    assert "commit_certificate" in [c["name"] for c in v["checks"] if not c["ok"]]


def test_verify_usage_errors(files: Path) -> None:
    res = CliRunner().invoke(cli, ["verify", str(files / "valid.presentation.json")])
    assert res.exit_code == 2 and "--verifier" in res.output
    res = CliRunner().invoke(cli, ["verify", "NOT-A-PAYLOAD", "--offline", "--trust",
                                   str(files / "genesis.json")])
    assert res.exit_code == 1 and "Error:" in res.output and "Traceback" not in res.output


def test_qr_command_and_the_page(world: World, node: str, files: Path) -> None:
    from verifier.app import VerifierDeps, create_app
    from verifier.audit import AuditLog
    from verifier.auth import KeyStore, RateLimiter
    from verifier.metrics import VerifierMetrics
    from verifier.service import VerificationService

    trusted = TrustedState.from_genesis(make_genesis())
    lc = LightClient(trusted, [HttpSource(node)])
    keys = KeyStore(files / "keys.json")
    app = create_app(VerifierDeps(VerificationService(lc), keys, AuditLog(files / "a.db"),
                                  RateLimiter(10, 10), RateLimiter(10, 10), VerifierMetrics()))
    with WsgiServer(app) as verifier:
        out = run("qr", str(files / "valid.wallet.json"), "--disclose", "name,degree",
                  "--verifier", verifier.url, "--out", str(files / "code"))
        assert out["qr_version"] <= 15 and out["payload_bytes"] <= 400
        url = scan((files / "code.png").read_bytes())
        assert url == out["url"] and (files / "code.svg").exists()
        import requests

        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and "有效 VALID" in page.text
        # The remote verify command, through the verifier service with a department key.
        key = run("verifier", "add-key", "--data", str(files), "--department", "gd-hrss")
        v = run("verify", url, "--verifier", verifier.url, "--purpose", "入学资格审核",
                env={"CERTLEDGER_API_KEY": key["api_key"]})
        assert v["valid"] is True
        res = CliRunner().invoke(cli, ["verify", url, "--verifier", verifier.url, "--purpose",
                                       "x"], env={"CERTLEDGER_API_KEY": "clk_bad"})
        assert res.exit_code == 1 and "401" in res.output, res.output
