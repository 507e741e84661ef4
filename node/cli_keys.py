"""``certledger keys gen|show``: SM2 key files encrypted at rest."""

from __future__ import annotations

import json
from pathlib import Path

import click

from certificates import keystore, sm2


@click.group()
def keys() -> None:
    """Create and inspect SM2 key files (SM4-GCM encrypted, mode 0600)."""


@keys.command("gen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", default="", help="A name to remember the key by.")
@click.option(
    "--passphrase-env",
    default=keystore.PASSPHRASE_ENV,
    show_default=True,
    help="Environment variable holding the passphrase (else you are prompted).",
)
@click.option("--iterations", default=keystore.DEFAULT_ITERATIONS, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def gen(out: Path, label: str, passphrase_env: str, iterations: int, force: bool) -> None:
    """Generate a key pair and write it, encrypted, to OUT."""
    passphrase = keystore.passphrase_from_env_or_prompt(passphrase_env, confirm=True)
    info = keystore.write_key_file(
        out, sm2.PrivateKey.generate(), passphrase, label=label, iterations=iterations,
        overwrite=force,
    )
    _print_info(info)


@keys.command("show")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
def show(key_file: Path) -> None:
    """Print a key file's key id and public key (no passphrase needed)."""
    _print_info(keystore.read_key_info(key_file))


def _print_info(info: keystore.KeyFile) -> None:
    out = {"key_file": str(info.path), "key_id": info.key_id_hex,
           "public_key": info.public_key.hex(), "label": info.label}
    click.echo(json.dumps(out, ensure_ascii=False))
