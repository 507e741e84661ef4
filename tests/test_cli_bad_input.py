"""Bad command-line input: one ``Error: ...`` line on stderr naming what is wrong, no traceback.

Usage errors (a missing option or argument, a value out of range, a file that does
not exist) exit with status 2; every other user mistake exits non-zero too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from certificates import keystore, sm2
from certificates.disclosure import present
from certificates.errors import DocumentError
from node.cli import cli
from node.issuer_files import committed_with_wallet
from tests.ledger_fixtures import ISSUER_A, TYPE_DIPLOMA, cert_id, make_genesis
from tests.test_document import make_document
from tests.verifier_fixtures import build_world
from verifier.qr import encode_payload, payload_url, to_base41, to_base64url

TX = "ab" * 32
DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"CERTLEDGER_PASSPHRASE": "x"},
                              prog_name="certledger")


def one_error_line(res: Result, code: int | None = 2) -> str:
    """The single ``Error:`` line a failed command printed on stderr."""
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert res.exit_code != 0, res.output
    if code is not None:
        assert res.exit_code == code, (res.exit_code, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.output + res.stderr
    return lines[0]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuer.key"
    path.write_text("{}")  # never read: the usage errors come first
    return path


def _cid() -> str:
    return str(cert_id("BADINPUT1", ISSUER_A, TYPE_DIPLOMA))


# --------------------------------------------------------------------------- 1. timeouts


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "0.0", "x"])
def test_timeout_must_be_a_finite_positive_number(value: str) -> None:
    line = one_error_line(invoke("tx", "status", TX, "--node", DEAD, f"--timeout={value}"))
    assert "--timeout" in line


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_wait_timeout_must_be_a_finite_positive_number(value: str, key_file: Path) -> None:
    res = invoke("revoke", _cid(), "--reason", "r", "--key", str(key_file), "--node", DEAD,
                 "--wait", f"--wait-timeout={value}")
    assert "--wait-timeout" in one_error_line(res)


def test_a_good_timeout_is_still_accepted() -> None:
    res = invoke("tx", "status", TX, "--node", DEAD, "--timeout", "0.5")
    assert "no node answered" in one_error_line(res, code=1)
    res = invoke("tx", "status", TX, "--node", DEAD, "--timeout", "2")
    assert "no node answered" in one_error_line(res, code=1)


# --------------------------------------------------------------------------- 2. required


@pytest.mark.parametrize("command", ["revoke", "suspend"])
def test_a_missing_reason_is_named(command: str, key_file: Path) -> None:
    line = one_error_line(invoke(command, _cid(), "--key", str(key_file), "--node", DEAD))
    assert "Missing option" in line and "--reason" in line


def test_no_required_option_has_an_explicit_none_default() -> None:
    import click

    def walk(cmd: click.Command) -> list[str]:
        bad = [f"{cmd.name} {p.name}" for p in cmd.params
               if p.required and getattr(p, "_default_explicit", False) and p.default is None]
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                bad += walk(sub)
        return bad

    assert walk(cli) == []


# --------------------------------------------------------------------------- 3. verify FILE


def test_verify_names_a_file_that_does_not_exist(tmp_path: Path) -> None:
    for missing in (tmp_path / "nope.json", tmp_path / "sub" / "nope", Path("nope.json")):
        line = one_error_line(invoke("verify", str(missing), "--offline"), code=None)
        assert f"no such file: {missing}" in line, line


def test_verify_names_a_file_that_is_not_json(tmp_path: Path) -> None:
    for name, text in (("p.json", "{not json"), ("p.txt", "{not json"),
                       ("q.json", "NOT-A-PAYLOAD"), ("e.json", "")):
        path = tmp_path / name
        path.write_text(text)
        line = one_error_line(invoke("verify", str(path), "--offline"), code=None)
        assert f"{path} is not valid JSON" in line, line
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe{\x00")
    line = one_error_line(invoke("verify", str(binary), "--offline"), code=None)
    assert str(binary) in line and "UTF-8" in line, line
    line = one_error_line(invoke("verify", str(tmp_path), "--offline"), code=None)
    assert f"{tmp_path} is not a file" in line, line


def test_verify_still_takes_qr_payloads_as_text_files_and_urls(tmp_path: Path) -> None:
    world = build_world()
    make_genesis().write(tmp_path / "genesis.json")
    data = encode_payload(present(world.wallets["valid"], ["name"]))
    (tmp_path / "payload.txt").write_text(to_base41(data) + "\n")
    (tmp_path / "url.txt").write_text(payload_url("https://v.example", data))
    shown = [str(tmp_path / "payload.txt"), str(tmp_path / "url.txt"), to_base41(data),
             to_base64url(data), payload_url("https://v.example/", data)]
    for arg in shown:
        res = invoke("verify", arg, "--offline", "--trust", str(tmp_path / "genesis.json"))
        # No evidence: NOT VALID (exit 1), but the payload was read and checked.
        assert res.exit_code == 1, (arg, res.output, res.stderr)
        verdict = json.loads(res.stdout)
        assert verdict["disclosed"]["name"] == "王小明", verdict


# --------------------------------------------------------------------------- 4. usage


@pytest.mark.parametrize(("argv", "named"), [
    (["verify"], "SHOWN"),
    (["tx", "status"], "TX_ID"),
    (["issue", "/no/such/doc.json", "--key", __file__], "DOCUMENT"),
    (["tx", "status", TX, "--bogus"], "--bogus"),
    (["issue-batch", "x.csv", "--batch-size", "0"], "--batch-size"),
    (["--bogus"], "--bogus"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_are_one_line(argv: list[str], named: str) -> None:
    assert named in one_error_line(invoke(*argv))


def test_help_is_unchanged() -> None:
    res = invoke("tx", "status", "--help")
    assert res.exit_code == 0 and res.stdout.startswith("Usage: certledger tx status")
    assert "--timeout" in res.stdout
    res = invoke("tx")  # a group without its subcommand still shows its help
    assert "Usage: certledger tx" in res.output and "status" in res.output


# --------------------------------------------------------------------------- text UTF-8 cannot hold


@pytest.mark.parametrize("command", ["revoke", "suspend"])
def test_a_reason_with_undecodable_bytes_is_one_line(tmp_path: Path, command: str) -> None:
    """A shell argument with bytes that are not UTF-8 reaches Python as a lone surrogate
    (surrogateescape); it is refused as malformed before anything is sent."""
    key = tmp_path / "real.key"
    keystore.write_key_file(key, sm2.PrivateKey.generate(), "x", iterations=1000)
    reason = b"bad\xff".decode("utf-8", "surrogateescape")
    line = one_error_line(invoke(command, _cid(), "--reason", reason, "--key", str(key),
                                 "--chain-id", "certledger-local", "--node", DEAD), code=1)
    assert "body.reason" in line and "surrogate" in line


# --------------------------------------------------------------------------- wallets


def test_a_wallet_for_another_version_of_the_same_document_says_so(tmp_path: Path) -> None:
    """An issue that failed after writing the wallet, then a supersede of the same document
    (its supersedes link now set) to the same path: the message must not read as if the
    wallet held some other certificate."""
    wallet = tmp_path / "doc.wallet.json"
    first = make_document()
    committed_with_wallet(first, wallet)
    assert committed_with_wallet(first, wallet).document == first  # a retry reuses it
    with pytest.raises(DocumentError) as info:
        committed_with_wallet(make_document(supersedes=_cid()), wallet)
    assert "another version of" in str(info.value) and "supersedes" in str(info.value)
    with pytest.raises(DocumentError) as info:
        committed_with_wallet(make_document(id=_cid()), wallet)
    assert "another document" in str(info.value)


# --------------------------------------------------------------------------- qr options


def test_qr_needs_an_http_verifier_url_and_a_real_qr_version(tmp_path: Path) -> None:
    wallet = tmp_path / "w.json"
    wallet.write_text("{}")  # never read: the options are checked first
    base = ("qr", str(wallet), "--disclose", "name", "--out", str(tmp_path / "q"))
    for url in ("notaurl", "ftp://v.example", "http://", "127.0.0.1:8080"):
        line = one_error_line(invoke(*base, "--verifier", url))
        assert "--verifier" in line and "http:// or https://" in line, (url, line)
    for version in ("0", "41", "-3"):
        line = one_error_line(invoke(*base, "--verifier", "http://v.example",
                                     "--max-version", version))
        assert "--max-version" in line, (version, line)
    line = one_error_line(invoke("verify", "x", "--verifier", "v.example", "--purpose", "p"))
    assert "--verifier" in line
