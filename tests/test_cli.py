"""The certledger CLI: the offline certificate flow and its error handling."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.cli_bench import interpreter

SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "samples" / "diploma.json"
ENV = {"CERTLEDGER_PASSPHRASE": "test-pass"}


def run(*args: str, ok: bool = True) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args), env=ENV, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output + res.stderr
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture()
def issued(tmp_path: Path) -> Path:
    run("keys", "gen", "--out", str(tmp_path / "k.key"), "--iterations", "1000", "--label", "U")
    run("cert", "digest", str(SAMPLE), "--wallet-out", str(tmp_path / "w.json"))
    run("cert", "sign", str(tmp_path / "w.json"), "--key", str(tmp_path / "k.key"),
        "--chain-id", "c1", "--out", str(tmp_path / "a.json"))
    return tmp_path


def test_keys_gen_show(tmp_path: Path) -> None:
    _, out, _ = run("keys", "gen", "--out", str(tmp_path / "k"), "--iterations", "1000")
    info = json.loads(out)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    _, out2, _ = run("keys", "show", str(tmp_path / "k"))
    assert json.loads(out2)["key_id"] == info["key_id"] and len(info["key_id"]) == 32


def test_offline_flow_valid(issued: Path) -> None:
    _, out, _ = run("cert", "present", str(issued / "w.json"), "--disclose", "name,degree",
                    "--out", str(issued / "p.json"))
    assert json.loads(out)["bytes"] < 400
    _, out, _ = run("cert", "check", str(issued / "p.json"), "--anchor", str(issued / "a.json"),
                    "--issuer-key", str(issued / "k.key"), "--chain-id", "c1")
    verdict = json.loads(out)
    assert verdict["valid"] is True
    assert set(verdict["disclosed"]) == {"name", "degree"}
    assert "110101199003071234" not in (issued / "p.json").read_text()  # id number hidden


def test_digest_is_stable_for_a_wallet(issued: Path) -> None:
    _, a, _ = run("cert", "digest", str(issued / "w.json"))
    _, b, _ = run("cert", "digest", str(issued / "w.json"))
    assert a == b and len(json.loads(a)["digest"]) == 64


@pytest.mark.parametrize(
    ("tamper", "failing"),
    [("value", "integrity"), ("chain", "issuer_signature"), ("key", "issuer_signature")],
)
def test_offline_flow_detects_tampering(issued: Path, tamper: str, failing: str) -> None:
    run("cert", "present", str(issued / "w.json"), "--disclose", "name,degree",
        "--out", str(issued / "p.json"))
    chain, key = "c1", str(issued / "k.key")
    if tamper == "value":
        text = (issued / "p.json").read_text(encoding="utf-8").replace("李明", "王明")
        (issued / "p.json").write_text(text, encoding="utf-8")
    elif tamper == "chain":
        chain = "other-chain"
    else:
        run("keys", "gen", "--out", str(issued / "other.key"), "--iterations", "1000")
        key = str(issued / "other.key")
    code, out, _ = run("cert", "check", str(issued / "p.json"), "--anchor",
                       str(issued / "a.json"), "--issuer-key", key, "--chain-id", chain, ok=False)
    verdict = json.loads(out)
    assert code == 1 and verdict["valid"] is False
    assert [c["name"] for c in verdict["checks"] if not c["ok"]] == [failing]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "show", "{tmp}/missing"], "does not exist"),
        (["cert", "digest", "{tmp}/junk.json", "--wallet-out", "{tmp}/w"], "not a JSON document"),
        (["cert", "digest", "{tmp}/bad_id.json", "--wallet-out", "{tmp}/w"], "check character"),
        (["cert", "present", "{tmp}/w.json", "--disclose", "nope", "--out", "{tmp}/p"], "nope"),
        (["cert", "sign", "{tmp}/w.json", "--key", "{tmp}/junk.json", "--chain-id", "c",
          "--out", "{tmp}/a"], "key file"),
    ],
)
def test_user_mistakes_are_one_line_and_nonzero(issued: Path, args: list[str],
                                                message: str) -> None:
    (issued / "junk.json").write_text("{not json")
    doc = json.loads(SAMPLE.read_text(encoding="utf-8"))
    doc["id"] = doc["id"][:-1] + ("M" if doc["id"][-1] != "M" else "N")
    (issued / "bad_id.json").write_text(json.dumps(doc))
    argv = [a.replace("{tmp}", str(issued)) for a in args]
    code, out, err = run(*argv, ok=False)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), err
    assert message in lines[0]
    assert "Traceback" not in out + err


HOSTILE_JSON = {"deep": "[" * 100_000, "long-number": "1" * 5_000}


@pytest.mark.parametrize("kind", sorted(HOSTILE_JSON))
@pytest.mark.parametrize(
    "args",
    [
        ["keys", "show", "{bad}.json"],
        ["cert", "digest", "{bad}.json", "--wallet-out", "{tmp}/w2"],
        ["cert", "present", "{bad}.json", "--disclose", "name", "--out", "{tmp}/p"],
        ["verify", "{bad}.json", "--offline", "--trust", "{bad}.json"],
        ["verify", "{tmp}/w.json", "--offline", "--trust", "{bad}.json"],
        ["verifier", "run", "--trust", "{bad}.json", "--data", "{tmp}/d", "--port", "1",
         "--node", "http://127.0.0.1:9"],
        ["issue", "{bad}.json", "--key", "{tmp}/k.key", "--node", "http://127.0.0.1:9"],
        ["issue-batch", "{bad}.jsonl", "--key", "{tmp}/k.key", "--node", "http://127.0.0.1:9",
         "--wallet-dir", "{tmp}/wd"],
    ],
)
def test_hostile_json_files_are_one_line_errors(issued: Path, kind: str,
                                                args: list[str]) -> None:
    # json.loads raises RecursionError (deep nesting) and a plain ValueError (an integer
    # past Python's digit limit) besides JSONDecodeError: each must still be one line.
    bad = issued / kind
    for suffix in (".json", ".jsonl"):
        bad.with_suffix(suffix).write_text(HOSTILE_JSON[kind] + "\n")
    argv = [a.replace("{bad}", str(bad)).replace("{tmp}", str(issued)) for a in args]
    code, out, err = run(*argv, ok=False)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("Error:"), err
    assert "Traceback" not in out + err and "set_int_max_str_digits" not in err


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("certledger")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "node.cli"]
    res = subprocess.run([*cmd, "keys", "show", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **ENV}, check=False)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "does not exist" in res.stderr


def test_bench_crypto_json_shape() -> None:
    _, out, _ = run("bench", "crypto", "--json", "--seconds", "0.1")
    data = json.loads(out)
    assert data["cpu_count"] >= 1
    assert data["interpreter"] == interpreter()
    names = [b["backend"] for b in data["backends"]]
    assert names == ["openssl", "gmssl_pyx", "gmssl"]
    for b in data["backends"]:
        assert set(b) == {"backend", "sm2_sign_per_s", "sm2_verify_per_s", "sm3_mb_per_s"}
        assert all(b[k] > 0 for k in ("sm2_sign_per_s", "sm2_verify_per_s", "sm3_mb_per_s"))


def test_a_bad_csv_time_is_named_and_shown_short(tmp_path: Path) -> None:
    from certificates.errors import DocumentError
    from node.issuer_files import read_documents

    path = tmp_path / "batch.csv"
    path.write_text("id,type,issuer,holder,issued_at,valid_from,valid_until,name\n"
                    f"x,t,i,h,{'1' * 5_000},1,,n\n")
    with pytest.raises(DocumentError) as info:
        read_documents(path)
    message = str(info.value)
    assert "line 2: issued_at must be an integer" in message and len(message) < 300


def test_network_init_refuses_a_zero_empty_block_interval(tmp_path: Path) -> None:
    # A config the node would refuse at start must not be written in the first place.
    code, _, err = run("network", "init", "--validators", "4", "--out", str(tmp_path / "n"),
                       "--empty-block-ms", "0", "--kdf-iterations", "1000", ok=False)
    assert code != 0 and "--empty-block-ms" in err
    assert not (tmp_path / "n").exists()


def test_interpreter_names_the_running_build() -> None:
    import platform

    text = interpreter()
    assert text.startswith(f"{platform.python_implementation()} {platform.python_version()} (")
    assert platform.python_compiler() in text and platform.python_build()[1] in text
