"""``certledger bench …``: benchmarks that print JSON."""

from __future__ import annotations

import json

import click


@click.group()
def bench() -> None:
    """Measure speed; each command prints one JSON object."""


@bench.command("crypto")
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
@click.option("--seconds", default=2.0, show_default=True, help="Minimum seconds per figure.")
def crypto(as_json: bool, seconds: float) -> None:
    """SM2 sign/verify per second and SM3 MB/s for each backend."""
    from certificates import bench as crypto_bench

    if seconds < 0.1:
        raise click.BadParameter("must be at least 0.1", param_hint="--seconds")
    click.echo(json.dumps(crypto_bench.run(seconds)))
