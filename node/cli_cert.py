"""``certledger cert digest|sign|present|check``: certificates without a network.

The flow an issuer and a holder follow offline:

1. ``digest DOC`` salts every field of a document (JSON), writes the holder's
   wallet (document + salts) and prints the certificate digest;
2. ``sign WALLET`` builds the anchor record (no personal data) and signs it
   with the issuer's key file;
3. ``present WALLET --disclose a,b`` writes a presentation revealing only a, b;
4. ``check PRESENTATION --anchor A --issuer-key K`` recomputes the digest from
   the presentation and checks it against the signed anchor; prints named
   checks as JSON and exits 1 when any fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from certificates import jsonio, keystore
from certificates.anchor import SignedAnchor
from certificates.disclosure import Presentation, present
from certificates.document import CommittedDocument, Document, commit
from certificates.errors import CertificatesError, DocumentError, KeystoreError
from certificates.sm2 import PublicKey

_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(dir_okay=False, path_type=Path)


def _read_json(path: Path, what: str) -> Any:
    try:
        return jsonio.read(path)
    except ValueError as exc:
        raise DocumentError(f"{path} is not a JSON {what}: {exc}") from exc


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _load_wallet(path: Path) -> CommittedDocument:
    return CommittedDocument.from_wallet_dict(_read_json(path, "wallet"))


def _public_key(spec: str) -> PublicKey:
    """A key file path, or a public key in hex."""
    path = Path(spec)
    if path.is_file():
        return keystore.read_key_info(path).public_key
    try:
        return PublicKey.from_hex(spec)
    except CertificatesError as exc:
        raise KeystoreError(
            f"--issuer-key {spec!r} is neither a key file nor a public key"
        ) from exc


@click.group()
def cert() -> None:
    """Commit, sign, present and check certificates offline."""


@cert.command("digest")
@click.argument("document", type=_IN)
@click.option("--wallet-out", type=_OUT, help="Write the holder wallet (document + salts).")
def digest_cmd(document: Path, wallet_out: Path | None) -> None:
    """Print the digest of DOCUMENT (a document or a wallet JSON file).

    A plain document gets fresh salts; pass --wallet-out to keep them, since the
    digest cannot be reproduced without them.
    """
    data = _read_json(document, "document")
    if isinstance(data, dict) and "salts" in data:
        committed = CommittedDocument.from_wallet_dict(data)
    else:
        committed = commit(Document.from_json_dict(data))
        if wallet_out is None:
            raise click.UsageError("a plain document needs --wallet-out to keep its salts")
    if wallet_out is not None:
        _write_json(wallet_out, committed.to_wallet_dict())
    click.echo(json.dumps({"id": committed.document.id, "digest": committed.digest.hex()}))


@cert.command("sign")
@click.argument("wallet", type=_IN)
@click.option("--key", "key_file", required=True, type=_IN, help="Issuer key file.")
@click.option("--chain-id", required=True, help="The chain the anchor is meant for.")
@click.option("--out", required=True, type=_OUT)
@click.option("--passphrase-env", default=keystore.PASSPHRASE_ENV, show_default=True)
def sign_cmd(wallet: Path, key_file: Path, chain_id: str, out: Path, passphrase_env: str) -> None:
    """Sign WALLET's anchor record (id, type, issuer, digest, validity) with the issuer key."""
    committed = _load_wallet(wallet)
    key = keystore.load_key_file(key_file, keystore.passphrase_from_env_or_prompt(passphrase_env))
    signed = committed.anchor_record().sign(key, chain_id)
    _write_json(out, signed.to_json_dict())
    click.echo(json.dumps({"id": committed.document.id, "anchor": str(out),
                           "key_id": key.public.key_id.hex()}))


@cert.command("present")
@click.argument("wallet", type=_IN)
@click.option("--disclose", required=True, help="Comma-separated field names to reveal.")
@click.option("--out", required=True, type=_OUT)
def present_cmd(wallet: Path, disclose: str, out: Path) -> None:
    """Write a presentation of WALLET revealing only the --disclose fields."""
    names = [n.strip() for n in disclose.split(",") if n.strip()]
    presentation = present(_load_wallet(wallet), names)
    _write_json(out, presentation.to_json_dict())
    click.echo(json.dumps({"presentation": str(out), "disclosed": sorted(names),
                           "bytes": len(presentation.to_bytes())}))


@cert.command("check")
@click.argument("presentation", type=_IN)
@click.option("--anchor", "anchor_file", required=True, type=_IN, help="Signed anchor JSON.")
@click.option("--issuer-key", required=True, help="Issuer key file or public key hex.")
@click.option("--chain-id", required=True)
def check_cmd(presentation: Path, anchor_file: Path, issuer_key: str, chain_id: str) -> None:
    """Check PRESENTATION against a signed anchor; exit 1 if any check fails."""
    pres = Presentation.from_json_dict(_read_json(presentation, "presentation"))
    anchor = SignedAnchor.from_json_dict(_read_json(anchor_file, "anchor"))
    checks: list[dict[str, Any]] = []

    def check(name: str, fn: Any) -> None:
        try:
            fn()
        except CertificatesError as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
        else:
            checks.append({"name": name, "ok": True, "detail": ""})

    def same_certificate() -> None:
        if pres.meta.id != anchor.record.id:
            raise DocumentError(
                f"presentation is for {pres.meta.id}, anchor for {anchor.record.id}"
            )

    def integrity() -> None:
        from certificates.disclosure import verify_presentation

        verify_presentation(pres, anchor.record.digest)

    check("same_certificate", same_certificate)
    check("integrity", integrity)
    check("issuer_signature", lambda: anchor.verify(_public_key(issuer_key), chain_id))
    valid = all(c["ok"] for c in checks)
    click.echo(json.dumps({"valid": valid, "checks": checks, "id": pres.meta.id,
                           "disclosed": {k: _jsonable(v) for k, v in pres.disclosed().items()}},
                          ensure_ascii=False))
    if not valid:
        raise SystemExit(1)


def _jsonable(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value
