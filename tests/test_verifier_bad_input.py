"""Bad input to the verifier: 4xx with ``{"error": {"code", "message"}}`` over HTTP (never
a 500, never a server path), one ``Error: ...`` line from the CLI (never a traceback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from network.testing import WsgiServer
from tests.ledger_fixtures import ISSUER_A, UNREGISTERED, make_genesis
from tests.test_cli_bad_input import invoke, one_error_line
from tests.test_verifier_app import Env, error_code
from tests.test_verifier_cli import node_app
from tests.verifier_fixtures import World, build_world
from verifier.auth import KeyStore, check_purpose
from verifier.errors import AuthError, InputError, NoTrustworthyAnswerError, SourceError
from verifier.service import SavedEvidence
from verifier.sources import HttpSource
from verifier.trust import TrustedState

BAD_URL = "http://[::1"


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@pytest.fixture
def env(world: World, tmp_path: Path) -> Iterator[Env]:
    e = Env(world, tmp_path)
    yield e
    e.audit.close()


@pytest.fixture(scope="module")
def node(world: World) -> Iterator[str]:
    with WsgiServer(node_app(world)) as server:
        yield server.url


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    path = tmp_path / "genesis.json"
    make_genesis().write(path)
    return path


def _audit(env: Env, query: str) -> object:
    return env.client.get(f"/v1/audit?{query}",
                          headers={"Authorization": f"Bearer {env.admin_key}"})


# --------------------------------------------------------------------------- 1. audit query


@pytest.mark.parametrize("query, name", [
    ("since=9223372036854775808", "since"),
    ("until=99999999999999999999999999", "until"),
    ("limit=0", "limit"), ("limit=-5", "limit"), ("limit=10001", "limit"),
    ("limit=99999999999999999999999999", "limit"),
    ("since=" + "9" * 5000, "since"), ("limit=" + "9" * 5000, "limit"),
    ("format=xml", "format"), ("format=", "format"),
])
def test_audit_query_out_of_range_is_400(env: Env, query: str, name: str) -> None:
    assert env.verify("valid", env.gd_key).status_code == 200
    resp = _audit(env, query)
    assert resp.status_code == 400, (query, resp.status_code)  # type: ignore[attr-defined]
    assert error_code(resp) == "bad_input"
    assert name in resp.get_json()["error"]["message"]  # type: ignore[attr-defined]


def test_audit_query_good_values_still_work(env: Env) -> None:
    assert env.verify("valid", env.gd_key).status_code == 200
    for query in ("limit=1", "limit=10000", "since=0&until=9223372036854775807",
                  "format=json", "format=csv"):
        assert _audit(env, query).status_code == 200, query  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- 2. reserved


@pytest.mark.parametrize("name", ["public", "PUBLIC", "Public"])
def test_add_key_refuses_the_public_department(tmp_path: Path, name: str) -> None:
    line = one_error_line(invoke("verifier", "add-key", "--data", str(tmp_path),
                                 "--department", name), code=1)
    assert "public" in line.lower() and "reserved" in line
    assert not (tmp_path / "keys.json").exists()


# --------------------------------------------------------------------------- 3. run options


@pytest.mark.parametrize("option, value", [
    ("--rate", "nan"), ("--rate", "inf"), ("--rate", "-1"), ("--rate", "0"),
    ("--burst", "0"), ("--burst", "0.5"), ("--threads", "0"), ("--threads", "-1"),
    ("--port", "70000"), ("--port", "-5"), ("--port", "0"),
])
def test_verifier_run_option_ranges(tmp_path: Path, genesis: Path, option: str,
                                    value: str) -> None:
    res = invoke("verifier", "run", "--trust", str(genesis), "--node", "http://127.0.0.1:9",
                 "--data", str(tmp_path / "d"), option, value)
    assert option in one_error_line(res)


def test_verifier_run_refuses_a_host_it_cannot_listen_on(tmp_path: Path, genesis: Path
                                                         ) -> None:
    res = invoke("verifier", "run", "--trust", str(genesis), "--node", "http://127.0.0.1:9",
                 "--data", str(tmp_path / "d"), "--host", "999.1.1.1")
    line = one_error_line(res, code=1)
    assert "999.1.1.1" in line and "cannot listen" in line


# --------------------------------------------------------------------------- 4. node URLs


def test_http_source_refuses_a_malformed_url() -> None:
    for url in (BAD_URL, "http://127.0.0.1:99999"):
        with pytest.raises(SourceError, match="node URL"):
            HttpSource(url)


def test_malformed_node_urls_are_one_line(tmp_path: Path, genesis: Path) -> None:
    shown = tmp_path / "p.json"
    shown.write_text("{}")
    for args in (("trust", "export", "--node", BAD_URL, "--genesis", str(genesis), "--out",
                  str(tmp_path / "b.json")),
                 ("verifier", "run", "--trust", str(genesis), "--node", BAD_URL, "--data",
                  str(tmp_path / "d")),
                 ("verify", str(shown), "--node", BAD_URL, "--trust", str(genesis)),
                 ("verify", str(shown), "--verifier", BAD_URL, "--purpose", "p")):
        line = one_error_line(invoke(*args))
        assert BAD_URL in line, (args, line)


# --------------------------------------------------------------------------- 5. key store


def test_a_corrupt_key_store_is_a_server_fault_without_the_path(env: Env) -> None:
    assert env.verify("valid", env.gd_key).status_code == 200
    path = env.data / "keys.json"
    path.write_text("{not json")
    resp = env.verify("valid", env.gd_key[:4] + "0" * 16 + env.gd_key[20:])  # unknown id
    assert resp.status_code == 503, resp.get_json()
    assert error_code(resp) == "key_store_unavailable"
    message = resp.get_json()["error"]["message"]
    assert str(env.data) not in message and "keys.json" not in message


# --------------------------------------------------------------------------- 6. trust export


def test_trust_export_refuses_an_issuer_it_cannot_prove(tmp_path: Path, genesis: Path,
                                                        node: str) -> None:
    base = ("trust", "export", "--node", node, "--genesis", str(genesis), "--out",
            str(tmp_path / "b.json"))
    line = one_error_line(invoke(*base, "--issuer", "zz"), code=None)
    assert "'zz'" in line and "not a valid" in line
    line = one_error_line(invoke(*base, "--issuer", UNREGISTERED), code=None)
    assert UNREGISTERED in line and "not registered" in line
    assert not (tmp_path / "b.json").exists()
    res = invoke(*base, "--issuer", ISSUER_A)
    assert res.exit_code == 0, res.output
    assert ISSUER_A in json.loads(res.stdout)["proved_issuers"]


# --------------------------------------------------------------------------- 7. purpose


def test_a_purpose_too_long_has_its_own_code(env: Env) -> None:
    resp = env.verify("valid", env.gd_key, purpose="x" * 201)
    assert resp.status_code == 400 and error_code(resp) == "purpose_too_long"
    assert env.verify("valid", env.gd_key, purpose="x" * 200).status_code == 200


@pytest.mark.parametrize("purpose", ["a\x00b", "a\x07b", "a\x1bb", "a\x7fb", "a\x85b",
                                     "a\x9fb", "a\x1cb"])
def test_a_purpose_with_control_characters_is_refused(env: Env, purpose: str) -> None:
    resp = env.verify("valid", env.gd_key, purpose=purpose)
    assert resp.status_code == 400 and error_code(resp) == "bad_purpose"
    assert "control character" in resp.get_json()["error"]["message"]
    assert env.audit.count() == 0


def test_ordinary_whitespace_in_a_purpose_is_collapsed() -> None:
    assert check_purpose(" 人才\t引进\r\n落户\x0b\x0c ") == "人才 引进 落户"
    with pytest.raises(InputError):
        check_purpose("x\x00")


# --------------------------------------------------------------------------- 8. qr options


def _qr(tmp_path: Path, *args: str) -> str:
    wallet = tmp_path / "w.json"
    wallet.write_text("{}")  # never read: the options are checked first
    key = tmp_path / "holder.key"
    key.write_text("{}")
    return one_error_line(invoke("qr", str(wallet), "--verifier", "http://v.example", "--out",
                                 str(tmp_path / "q"), *[a.replace("KEY", str(key))
                                                        for a in args]))


@pytest.mark.parametrize("value", ["0", "0s", "0m", "99999999999999d", "367d", "x", ""])
def test_qr_expires_must_be_positive_and_bounded(tmp_path: Path, value: str) -> None:
    line = _qr(tmp_path, "--disclose", "name", "--expires", value, "--holder-key", "KEY",
               "--chain-id", "c")
    assert "--expires" in line


@pytest.mark.parametrize("value", ["", ",,", " , "])
def test_qr_disclose_must_name_a_field(tmp_path: Path, value: str) -> None:
    assert "--disclose" in _qr(tmp_path, "--disclose", value)


def test_qr_holder_key_needs_expires(tmp_path: Path) -> None:
    line = _qr(tmp_path, "--disclose", "name", "--holder-key", "KEY")
    assert "--holder-key" in line and "--expires" in line
    line = _qr(tmp_path, "--disclose", "name", "--chain-id", "c")
    assert "--chain-id" in line and "--expires" in line


# --------------------------------------------------------------------------- key management


def test_keys_are_listed_without_secrets_and_revoked_by_id(tmp_path: Path) -> None:
    made = invoke("verifier", "add-key", "--data", str(tmp_path), "--department", "gd-hrss",
                  "--label", "intake desk")
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    listed = invoke("verifier", "list-keys", "--data", str(tmp_path))
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.stdout)["keys"]
    assert entry["key_id"] == key["key_id"] and entry["department"] == "gd-hrss"
    assert entry["label"] == "intake desk" and entry["revoked"] is False
    assert key["api_key"] not in listed.stdout and "hash" not in entry and "salt" not in entry
    revoked = invoke("verifier", "revoke-key", "--data", str(tmp_path), key["key_id"])
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout) == {"key_id": key["key_id"], "revoked": True}
    [entry] = json.loads(invoke("verifier", "list-keys", "--data", str(tmp_path)).stdout)["keys"]
    assert entry["revoked"] is True
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(key["api_key"])


def test_revoking_an_unknown_key_or_store_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(invoke("verifier", "revoke-key", "--data", str(tmp_path),
                                 "0123456789abcdef"), code=None)
    assert "keys.json" in line or "no API key" in line
    invoke("verifier", "add-key", "--data", str(tmp_path), "--department", "gd-hrss")
    line = one_error_line(invoke("verifier", "revoke-key", "--data", str(tmp_path),
                                 "0123456789abcdef"), code=None)
    assert "no API key 0123456789abcdef" in line
    line = one_error_line(invoke("verifier", "list-keys", "--data", str(tmp_path / "none")),
                          code=None)
    assert "none" in line


def test_offline_evidence_failures_do_not_point_at_node_urls() -> None:
    """Offline, no node was asked: the error's hint is about the saved evidence."""
    saved = SavedEvidence(TrustedState.from_genesis(make_genesis()), {})
    with pytest.raises(NoTrustworthyAnswerError) as info:
        saved.evidence("1.2.156.3005.2.X", ISSUER_A)
    text = str(info.value)
    assert "node URLs" not in text and "--save-evidence" in text, text
    assert text.startswith("no saved evidence gave trustworthy evidence"), text
