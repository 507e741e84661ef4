"""The citizen's QR page in a real browser: headless Chromium renders ``/q/<payload>``.

A verifier service (the Flask app under waitress, as ``verifier run`` serves it)
reads a node API over HTTP; Chromium opens the page for a valid and for a revoked
certificate, and the rendered DOM must say VALID / 有效 or NOT VALID / 无效. A
screenshot at a phone's width (412 px) is taken of each; with
``CERTLEDGER_UPDATE_SCREENSHOTS=1`` they are copied to ``docs/screenshots/``.

Skipped, saying why, where Chromium is not installed (``scripts/test.sh`` installs
Debian's ``chromium`` package when it can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certificates.disclosure import present
from network.testing import WsgiServer
from tests.cluster import ROOT
from tests.ledger_fixtures import make_genesis
from tests.test_verifier_cli import node_app
from tests.verifier_fixtures import World, build_world
from verifier.qr import encode_payload, payload_url

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package "
                                                "'chromium'; scripts/test.sh installs it)"),
]
SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture(scope="module")
def verifier(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from verifier.app import VerifierDeps, create_app
    from verifier.audit import AuditLog
    from verifier.auth import KeyStore, RateLimiter
    from verifier.lightclient import LightClient
    from verifier.metrics import VerifierMetrics
    from verifier.service import VerificationService
    from verifier.sources import HttpSource
    from verifier.trust import TrustedState

    data = tmp_path_factory.mktemp("verifier")
    with WsgiServer(node_app(world)) as node:
        lc = LightClient(TrustedState.from_genesis(make_genesis()), [HttpSource(node.url)])
        app = create_app(VerifierDeps(VerificationService(lc), KeyStore(data / "keys.json"),
                                      AuditLog(data / "audit.sqlite3"), RateLimiter(50, 50),
                                      RateLimiter(50, 50), VerifierMetrics()))
        with WsgiServer(app) as server:
            yield server.url


def chromium(url: str, tmp: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp / 'profile'}", *extra, url]
    res = subprocess.run(args, capture_output=True, timeout=90, stdin=subprocess.DEVNULL,
                         check=False, cwd=tmp)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    return res.stdout.decode("utf-8", errors="replace")


@pytest.mark.parametrize(("label", "shot", "verdict", "absent"), [
    ("valid", "q-valid.png", "有效 VALID", "无效"),
    ("revoked", "q-revoked.png", "无效 NOT VALID", "有效 VALID"),
])
def test_qr_page_in_chromium(world: World, verifier: str, tmp_path: Path, label: str,
                             shot: str, verdict: str, absent: str) -> None:
    url = payload_url(verifier, encode_payload(present(world.wallets[label], ["name",
                                                                              "degree"])))
    dom = chromium(url, tmp_path, "--dump-dom")
    assert verdict in dom and absent not in dom.split("<footer", 1)[0], dom[:2000]
    assert world.wallets[label].document.fields["name"] in dom
    if label == "revoked":
        assert "已撤销 revoked" in dom
    png = tmp_path / shot
    chromium(url, tmp_path, f"--screenshot={png}", "--window-size=412,900",
             "--hide-scrollbars")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if os.environ.get("CERTLEDGER_UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, SHOTS / shot)
