"""``certledger qr``, ``verify``, ``verifier run|add-key|keys`` and ``trust export``.

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
* ``verifier run`` serves the verification service with waitress; ``verifier add-key``
  creates a department (or admin) API key, printed once; ``verifier list-keys`` and
  ``verifier revoke-key KEY_ID`` list (without secrets) and revoke them.
* ``trust export`` writes a trust bundle: the latest committed header and its commit,
  checked against the genesis validators, plus issuer records.

Errors of the verifier, the network and the ledger print one line and exit non-zero.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
import requests

from certificates import jsonio, keystore
from certificates.disclosure import present
from certificates.document import CommittedDocument
from certificates.errors import CertificatesError
from certificates.identifiers import CertificateId, validate_uscc
from ledger.errors import LedgerError
from ledger.records import IssuerRecord, cert_key, issuer_key
from network.errors import NetworkError
from network.urls import BadURL, split_http_url
from node.cli_types import FiniteFloat
from node.config import cannot_listen
from verifier.errors import VerifierError
from verifier.evidence import Evidence, evidence_from_json, evidence_to_json
from verifier.lightclient import LightClient
from verifier.logic import subject_of
from verifier.logic import verify as verify_logic
from verifier.qr import DEFAULT_MAX_VERSION, encode_payload, make_qr, payload_url, write_qr
from verifier.service import SavedEvidence, VerificationService, parse_shown
from verifier.sources import HttpSource
from verifier.trust import IssuerProof, TrustedState, bundle_to_json, load_trust

if TYPE_CHECKING:
    from verifier.auth import KeyStore

F = TypeVar("F", bound=Callable[..., Any])
_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _one_line(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VerifierError, NetworkError, CertificatesError, LedgerError) as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper  # type: ignore[return-value]


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


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=1))


def _url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL with a host (None if it is one)."""
    try:
        split_http_url(value)
    except BadURL as exc:
        return str(exc)
    return None


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An http(s) URL with a host, as a QR code or a request needs it."""
    if value is not None:
        problem = _url_problem(value)
        if problem is not None:
            raise click.BadParameter(problem, ctx, param)
    return value


def _node_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
               ) -> tuple[str, ...]:
    """Each ``--node``: an http(s) URL with a host."""
    for value in values:
        problem = _url_problem(value)
        if problem is not None:
            raise click.BadParameter(problem, ctx, param)
    return values



# --------------------------------------------------------------------------- qr


@click.command("qr")
@click.argument("wallet", type=_IN)
@click.option("--disclose", required=True, callback=_disclose,
              help="Comma-separated fields to reveal ($holder for the holder).")
@click.option("--verifier", "verifier_url", required=True, callback=_http_url,
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
@_one_line
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
    _echo({"id": committed.document.id, "url": payload_url(verifier_url, data),
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
@click.option("--verifier", "verifier_url", callback=_http_url,
              help="Ask this verifier service.")
@click.option("--purpose", help="Why you verify (申请事由); required with --verifier.")
@click.option("--api-key-env", default="CERTLEDGER_API_KEY", show_default=True)
@click.option("--node", "nodes", multiple=True, callback=_node_urls,
              help="Check against these nodes (repeat).")
@click.option("--trust", "trust_file", type=_IN, help="Trust bundle or genesis file.")
@click.option("--offline", is_flag=True, help="No network: use --evidence and --trust.")
@click.option("--evidence", "evidence_file", type=_IN, help="Saved evidence (offline).")
@click.option("--save-evidence", type=_OUT, help="With --node: save the evidence used.")
@click.option("--anchor", "anchor_file", type=_IN, help="Signed anchor JSON to check too.")
@_one_line
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
    _echo(verdict)
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


# --------------------------------------------------------------------------- verifier


@click.group("verifier")
def verifier_group() -> None:
    """Run the verification service and manage its department API keys."""


@verifier_group.command("run")
@click.option("--trust", "trust_file", required=True, type=_IN, help="Trust bundle or genesis.")
@click.option("--node", "nodes", multiple=True, required=True, callback=_node_urls,
              help="Node URL (repeat).")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="keys.json, audit log.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--rate", type=FiniteFloat(0, min_open=True), default=20.0,
              show_default=True, help="Verifications/s per department.")
@click.option("--burst", type=FiniteFloat(1), default=100.0,
              show_default=True)
@click.option("--max-lag", default=5, show_default=True, help="Blocks a node may lag.")
@click.option("--max-age", type=float, default=None,
              help="Refuse evidence whose block is older than this many seconds.")
@click.option("--spread/--no-spread", default=True, show_default=True,
              help="Ask the nodes in turn (share the load) rather than the last good one.")
@click.option("--node-cooldown", type=float, default=10.0, show_default=True,
              help="With --spread: seconds a node that failed is asked only after the others.")
@_one_line
def run_cmd(trust_file: Path, nodes: tuple[str, ...], data_dir: Path, host: str, port: int,
            threads: int, rate: float, burst: float, max_lag: int, max_age: float | None,
            spread: bool, node_cooldown: float) -> None:
    """Serve the verifier (waitress) until interrupted."""
    from network.serving import create_server
    from verifier.app import VerifierDeps, create_app
    from verifier.audit import AuditLog
    from verifier.auth import KeyStore, RateLimiter
    from verifier.metrics import VerifierMetrics

    problem = cannot_listen(host, port)
    if problem is not None:
        raise click.ClickException(problem)
    data_dir.mkdir(parents=True, exist_ok=True)
    trusted = load_trust(trust_file)
    lc = LightClient(trusted, [HttpSource(u) for u in nodes], max_lag=max_lag,
                     max_age_ms=None if max_age is None else int(max_age * 1000),
                     spread=spread, cooldown=node_cooldown)
    metrics = VerifierMetrics()
    metrics.gauges["certledger_verifier_freshest_height"] = (
        "Freshest committed height verified.", lambda: lc.freshest_height)
    keys = KeyStore(data_dir / "keys.json")
    deps = VerifierDeps(VerificationService(lc, metrics=metrics), keys,
                        AuditLog(data_dir / "audit.sqlite3"), RateLimiter(rate, burst),
                        RateLimiter(rate * 5, burst * 5), metrics)
    if not keys.list():
        click.echo(f"no API keys yet: certledger verifier add-key --data {data_dir} "
                   "--department CODE", err=True)
    _echo({"verifier": f"http://{host}:{port}", "chain_id": trusted.chain_id,
           "nodes": list(nodes)})
    logging.basicConfig()  # as waitress.serve does: its "Serving on" line and errors
    server = create_server(create_app(deps), host=host, port=port, threads=threads)
    server.print_listen("Serving on http://{}:{}")
    server.run()


@verifier_group.command("add-key")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--department", required=True)
@click.option("--admin", is_flag=True, help="An admin key (reads every department's audit).")
@click.option("--label", default="")
@_one_line
def add_key_cmd(data_dir: Path, department: str, admin: bool, label: str) -> None:
    """Create an API key; it is printed once and stored only as a salted SM3 hash."""
    from verifier.auth import KeyStore

    data_dir.mkdir(parents=True, exist_ok=True)
    principal, key = KeyStore(data_dir / "keys.json").create(
        department, "admin" if admin else "department", label)
    _echo({"key_id": principal.key_id, "department": department, "role": principal.role,
           "api_key": key})


def _key_store(data_dir: Path) -> KeyStore:
    """The API key store of a verifier data directory that has one."""
    from verifier.auth import KeyStore

    path = data_dir / "keys.json"
    if not path.is_file():
        raise click.ClickException(f"no API key store {path}: create a key with "
                                   "certledger verifier add-key first")
    return KeyStore(path)


@verifier_group.command("list-keys")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@_one_line
def list_keys_cmd(data_dir: Path) -> None:
    """List the API keys (id, department, role, label, created, revoked; no secrets)."""
    _echo({"keys": _key_store(data_dir).list()})


@verifier_group.command("revoke-key")
@click.argument("key_id")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@_one_line
def revoke_key_cmd(key_id: str, data_dir: Path) -> None:
    """Revoke API key KEY_ID; a running verifier refuses it within 0.1 s."""
    _key_store(data_dir).revoke(key_id)
    _echo({"key_id": key_id, "revoked": True})


# --------------------------------------------------------------------------- trust export


def _issuer_codes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                  ) -> tuple[str, ...]:
    """Each ``--issuer``: a valid unified social credit code."""
    for value in values:
        try:
            validate_uscc(value)
        except CertificatesError as exc:
            raise click.BadParameter(f"issuer {value!r} is not a valid unified social credit "
                                     f"code: {exc}", ctx, param) from exc
    return values


@click.group("trust")
def trust_group() -> None:
    """Trust bundles for verifiers (validator set, issuer keys, a committed header)."""


@trust_group.command("export")
@click.option("--node", "nodes", multiple=True, required=True, callback=_node_urls,
              help="Node URL (repeat).")
@click.option("--genesis", "genesis_file", required=True, type=_IN)
@click.option("--out", required=True, type=_OUT)
@click.option("--issuer", "issuers", multiple=True, callback=_issuer_codes,
              help="Also prove this issuer (repeat).")
@_one_line
def export_cmd(nodes: tuple[str, ...], genesis_file: Path, out: Path,
               issuers: tuple[str, ...]) -> None:
    """Write a trust bundle from the freshest verified head among NODEs."""
    trusted = load_trust(genesis_file)
    lc = LightClient(trusted, [HttpSource(u) for u in nodes], refresh_interval=None)
    head, ev = lc.head(cert_key(_probe_id(trusted)))
    header, commit, vs = head.header, ev.commit, head.validators
    src = HttpSource(ev.source)
    proofs: dict[str, IssuerProof] = {}
    records = dict(trusted.issuers)
    for code in sorted(set(trusted.issuers) | set(issuers)):
        asked = code in issuers and code not in trusted.issuers
        try:
            iev = src.state(issuer_key(code))
            checked = lc.check(iev)
        except VerifierError as exc:
            if asked:  # nothing to fall back on: the bundle would silently lack it
                raise click.ClickException(f"issuer {code} could not be proved by node "
                                           f"{ev.source}: {exc}") from exc
            continue  # a node API without issuer proofs: keep the genesis record
        if checked.record is None and code in issuers:
            raise click.ClickException(f"issuer {code} is not registered on chain "
                                       f"{trusted.chain_id} (node {ev.source} proved it "
                                       "absent)")
        # Only under the bundle's validator set, so the bundle can check it on load.
        if checked.record is not None and checked.validators.hash == vs.hash:
            proofs[code] = IssuerProof(checked.record, iev.proof, iev.header, iev.commit)
            records[code] = IssuerRecord.from_bytes(checked.record)
        elif asked:
            raise click.ClickException(f"issuer {code} could not be proved under the "
                                       "validator set of the exported head; try again")
    state = TrustedState(trusted.chain_id, vs, header.height, header, commit, records,
                         header.height, trusted.genesis_hash)
    out.write_text(json.dumps(bundle_to_json(state, proofs), indent=1) + "\n", encoding="utf-8")
    _echo({"bundle": str(out), "chain_id": trusted.chain_id, "height": header.height,
           "node": ev.source, "issuers": sorted(records), "proved_issuers": sorted(proofs)})


def _probe_id(trusted: TrustedState) -> str:
    """A well-formed certificate id to ask nodes about (its absence proves the head too)."""
    for code, rec in sorted(trusted.issuers.items()):
        if rec.types:
            return str(CertificateId.build(rec.types[0], code, "TRUSTPROBE"))
    return str(CertificateId.build("11100000000013338W032", "11220000013544541J", "TRUSTPROBE"))


def register(cli: click.Group) -> None:
    cli.add_command(qr_cmd)
    cli.add_command(verify_cmd)
    cli.add_command(verifier_group)
    cli.add_command(trust_group)
