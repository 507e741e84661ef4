"""``certledger qr`` and ``verify``: the holder's and the checker's side of verification
(the operator's - ``verifier run|add-key|list-keys|revoke-key`` and ``trust export`` - is
``node/cli_verifier.py``).

* ``qr WALLET --disclose a,b --verifier URL --out PREFIX`` writes PREFIX.png and
  PREFIX.svg: a QR code of ``<verifier>/q/<payload>`` (level M, version <= 15 by
  default). ``--expires 10m --holder-key KEY --chain-id ID`` makes a short-lived,
  holder-signed presentation (the wallet must commit the holder's public key as
  the field ``holder_key``; see ``verifier/qr.py``).
* ``verify FILE|PAYLOAD`` checks a presentation, wallet or QR payload/URL: through a
  verifier service (``--verifier URL``, API key from ``$CERTLEDGER_API_KEY``), with
  the built-in light client against nodes (``--node URL --trust FILE``), or with no
  network (``--offline --trust BUNDLE --evidence FILE``, evidence saved earlier with
  ``--save-evidence``). Prints the verdict as JSON; exit 1 when NOT VALID.

Errors of the verifier, the network and the ledger print one line and exit non-zero.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Final

import click
import requests

from certificates import jsonio, keystore
from certificates.disclosure import present
from certificates.document import CommittedDocument
from node.cli_types import check_http_url, check_node_urls, echo_json, one_line
from verifier.evidence import Evidence, evidence_from_json, evidence_to_json
from verifier.lightclient import LightClient
from verifier.logic import subject_of
from verifier.logic import verify as verify_logic
from verifier.qr import DEFAULT_MAX_VERSION, encode_payload, make_qr, payload_url, write_qr
from verifier.service import SavedEvidence, VerificationService, parse_shown
from verifier.sources import HttpSource
from verifier.trust import load_trust

_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


#: The longest a short-lived QR may live: it exists to stop a copied code being replayed
#: for long, and a year is already far longer than any use shows it for.
MAX_EXPIRES: Final = 366 * 86400


def _duration(ctx: click.Context, param: click.Parameter, text: str | None) -> int | None:
    """``--expires``: a positive duration of at most ``MAX_EXPIRES`` seconds, in seconds."""
    if text is None:
        return None
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise click.BadParameter(f"{text!r}: use a number with s, m, h or d (e.g. 10m)",
                                 ctx, param)
    digits = m.group(1).lstrip("0") or "0"
    seconds = int(digits) * _UNITS[m.group(2)] if len(digits) <= 12 else MAX_EXPIRES + 1
    if not 0 < seconds <= MAX_EXPIRES:
        raise click.BadParameter(f"{text!r}: must be more than 0 and at most 366d", ctx, param)
    return seconds


def _disclose(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise click.BadParameter(f"{value!r} names no field: give comma-separated field "
                                 "names (e.g. name,degree)", ctx, param)
    return names


def _json(path: Path) -> Any:
    try:
        return jsonio.read(path)
    except ValueError as exc:
        raise click.ClickException(f"{path} is not a JSON file: {exc}") from exc


# --------------------------------------------------------------------------- qr


@click.command("qr")
@click.argument("wallet", type=_IN)
@click.option("--disclose", required=True, callback=_disclose,
              help="Comma-separated fields to reveal ($holder for the holder).")
@click.option("--verifier", "verifier_url", required=True, callback=check_http_url,
              help="Base URL of the verifier.")
@click.option("--out", required=True, type=_OUT, help="Writes OUT.png and OUT.svg.")
@click.option("--expires", default=None, callback=_duration,
              help="Short-lived: valid for this long (10m, 1h; at most 366d).")
@click.option("--holder-key", type=_IN, help="Holder key file (for --expires).")
@click.option("--chain-id", help="Chain id the holder signature is bound to (for --expires).")
@click.option("--max-version", type=click.IntRange(1, 40), default=None,
              help=f"Largest QR version allowed [default {DEFAULT_MAX_VERSION}; 20 with "
                   "--expires, whose signature and key need ~140 more bytes].")
@click.option("--passphrase-env", default=keystore.PASSPHRASE_ENV, show_default=True)
@one_line
def qr_cmd(wallet: Path, disclose: list[str], verifier_url: str, out: Path,
           expires: int | None,
           holder_key: Path | None, chain_id: str | None, max_version: int | None,
           passphrase_env: str) -> None:
    """Write a QR code (PNG and SVG) that opens the verifier page for WALLET."""
    for given, name in ((holder_key, "--holder-key"), (chain_id, "--chain-id")):
        if given is not None and expires is None:
            raise click.UsageError(f"{name} only goes with --expires (a short-lived QR)")
    committed = CommittedDocument.from_wallet_dict(_json(wallet))
    names = list(disclose)
    until = None
    key = None
    if expires is not None:
        if holder_key is None or chain_id is None:
            raise click.UsageError("--expires needs --holder-key and --chain-id")
        key = keystore.load_key_file(holder_key,
                                     keystore.passphrase_from_env_or_prompt(passphrase_env))
        until = int(time.time()) + expires
        if "holder_key" not in names:
            names.append("holder_key")
    data = encode_payload(present(committed, names), expires=until, holder_key=key,
                          chain_id=chain_id)
    limit = max_version if max_version is not None else (
        20 if expires is not None else DEFAULT_MAX_VERSION)
    qr = make_qr(verifier_url, data, limit)
    png, svg = write_qr(qr, out)
    echo_json({"id": committed.document.id, "url": payload_url(verifier_url, data),
           "payload_bytes": len(data), "qr_version": qr.version, "error_level": "M",
           "png": str(png), "svg": str(svg), "expires": until})


# --------------------------------------------------------------------------- verify


def _looks_like_path(arg: str) -> bool:
    """Whether ``arg`` names a file, not QR payload text or a ``…/q/<text>`` URL.

    Payload text (base41 ``0-9 A-Z $ * + - .``, or base64url) has no path separator
    and does not end in ``.json``; a URL has ``://`` or ``/q/``.
    """
    if arg.lower().endswith(".json"):
        return True
    if "://" in arg or "/q/" in arg or "/Q/" in arg:
        return False
    return any(sep in arg for sep in {"/", os.sep, os.altsep or "/"})


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long (a pasted payload), a NUL byte, ...
        return False


def _shown_body(arg: str) -> dict[str, Any]:
    """A request-like body from a file (presentation, wallet, body) or payload text/URL."""
    path = Path(arg)
    if not _exists(path):
        if _looks_like_path(arg):
            raise click.ClickException(f"no such file: {arg}")
        return {"qr": arg}
    if not path.is_file():
        raise click.ClickException(f"{arg} is not a file")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{arg} is not UTF-8 text: {exc}") from exc
    try:
        obj = jsonio.loads(text)
    except ValueError as exc:
        # A file may hold the QR payload text or URL; a .json file, or one that starts
        # like JSON (payload text never does), is a document that failed to parse.
        if arg.lower().endswith(".json") or not text or text[0] in "{[\"":
            raise click.ClickException(f"{arg} is not valid JSON: {exc}") from exc
        return {"qr": text}
    if isinstance(obj, dict) and obj.get("format") == "certledger/wallet/v1":
        return {"wallet": obj}
    if isinstance(obj, dict) and obj.get("format") == "certledger/presentation/v1":
        return {"presentation": obj}
    if isinstance(obj, dict):
        return obj
    raise click.ClickException(f"{arg}: expected a presentation, a wallet or a QR payload")


@click.command("verify")
@click.argument("shown")
@click.option("--verifier", "verifier_url", callback=check_http_url,
              help="Ask this verifier service.")
@click.option("--purpose", help="Why you verify (申请事由); required with --verifier.")
@click.option("--api-key-env", default="CERTLEDGER_API_KEY", show_default=True)
@click.option("--node", "nodes", multiple=True, callback=check_node_urls,
              help="Check against these nodes (repeat).")
@click.option("--trust", "trust_file", type=_IN, help="Trust bundle or genesis file.")
@click.option("--offline", is_flag=True, help="No network: use --evidence and --trust.")
@click.option("--evidence", "evidence_file", type=_IN, help="Saved evidence (offline).")
@click.option("--save-evidence", type=_OUT, help="With --node: save the evidence used.")
@click.option("--anchor", "anchor_file", type=_IN, help="Signed anchor JSON to check too.")
@one_line
def verify_cmd(shown: str, verifier_url: str | None, purpose: str | None, api_key_env: str,
               nodes: tuple[str, ...], trust_file: Path | None, offline: bool,
               evidence_file: Path | None, save_evidence: Path | None,
               anchor_file: Path | None) -> None:
    """Verify SHOWN: a presentation or wallet file, or a QR payload or URL."""
    body = _shown_body(shown)
    if anchor_file is not None:
        body["anchor"] = _json(anchor_file)
    if verifier_url is not None:
        verdict = _remote(verifier_url, body, purpose, os.environ.get(api_key_env))
    else:
        if trust_file is None:
            raise click.UsageError("pass --verifier URL, or --trust FILE with --node or "
                                   "--offline")
        trusted = load_trust(trust_file)
        item, anchor = parse_shown(body)
        if offline:
            saved: dict[str, Evidence] = {}
            subject_id, issuer = _ids(item)
            if evidence_file is not None:
                saved[subject_id] = evidence_from_json(_json(evidence_file), subject_id, issuer)
            if not saved:
                click.echo("no --evidence given: only what needs no chain state can pass",
                           err=True)
                verdict = verify_logic(item, None, trusted, time.time(), anchor=anchor).to_json()
            else:
                verdict = VerificationService(SavedEvidence(trusted, saved)).verify(
                    item, anchor).to_json()
        else:
            if not nodes:
                raise click.UsageError("pass --node URL (repeat for several), or --offline")
            lc = LightClient(trusted, [HttpSource(u) for u in nodes])
            subject_id, issuer = _ids(item)
            ev = lc.evidence(subject_id, issuer)
            if save_evidence is not None:
                save_evidence.write_text(json.dumps(evidence_to_json(ev), indent=1) + "\n")
            verdict = verify_logic(item, ev, lc.trusted, time.time(), anchor=anchor).to_json()
    echo_json(verdict)
    if not verdict.get("valid"):
        raise SystemExit(1)


def _ids(item: Any) -> tuple[str, str]:
    meta = subject_of(item).meta
    return meta.id, meta.issuer


def _remote(url: str, body: dict[str, Any], purpose: str | None, key: str | None
            ) -> dict[str, Any]:
    if not purpose:
        raise click.UsageError("--purpose is required: every verification states why")
    if not key:
        raise click.UsageError("set the API key in $CERTLEDGER_API_KEY (or --api-key-env)")
    try:
        resp = requests.post(url.rstrip("/") + "/v1/verify", json={**body, "purpose": purpose},
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)
        out: dict[str, Any] = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise click.ClickException(f"verifier {url} did not answer: {exc}") from exc
    if resp.status_code != 200:
        err = out.get("error", {}) if isinstance(out, dict) else {}
        raise click.ClickException(f"verifier refused (HTTP {resp.status_code} "
                                   f"{err.get('code')}): {err.get('message')}")
    return out


def register(cli: click.Group) -> None:
    cli.add_command(qr_cmd)
    cli.add_command(verify_cmd)
